//! `imgbuild.toml`: the project file in the current directory. It holds the same settings as
//! the flags; flags override it (maps are merged key by key, lists are replaced).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use imgbuild::error::{Error, Result};

pub const FILE_NAME: &str = imgbuild::init::PROJECT_FILE;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProjectFile {
    pub release: Option<PathBuf>,
    pub from: Option<String>,
    pub tags: Option<Vec<String>>,
    pub output: Option<PathBuf>,
    pub oci_layout: Option<PathBuf>,
    pub platform: Option<String>,
    /// Several platforms (an index), as `--platform a,b`.
    pub platforms: Option<Vec<String>>,
    /// An image with Erlang/OTP for the other platforms, as `--otp-from`.
    pub otp_from: Option<String>,
    /// The registry cache shared by a fleet of runners, as `--cache-repo`.
    pub cache_repo: Option<String>,
    /// `true`: read the cache repository, never write it, as `--cache-repo-readonly`.
    pub cache_repo_readonly: Option<bool>,
    /// The images `imgbuild index create` joins when no `--image` is given.
    pub manifests: Option<Vec<String>>,
    /// The key `--sign-key` names.
    pub sign_key: Option<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub expose: Option<Vec<String>>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// Applications besides the release's namesake that go into the app layer.
    pub apps: Option<Vec<String>>,
    pub drop_cookie: Option<bool>,
    /// `auto`, `always` or `never`: see `--launcher`.
    pub launcher: Option<String>,
    /// `true`: also the debug image (busybox under /busybox, tags `TAG-debug`), as `--debug`.
    pub debug: Option<bool>,
    /// Runtime Debian packages, `NAME` or `NAME=VERSION`; `"auto"` (or `"auto"` in the list):
    /// those the start-up check finds missing.
    #[serde(default, deserialize_with = "one_or_many")]
    pub packages: Option<Vec<String>>,
    /// apt sources (`URI SUITE COMPONENT...`) replacing the base image's.
    pub apt_sources: Option<Vec<String>>,
    /// For a `deb:SUITE` base: the Debian archive, as `--deb-mirror`.
    pub deb_mirror: Option<String>,
    /// For a `deb:SUITE` base: the security archive, as `--deb-security-mirror`.
    pub deb_security_mirror: Option<String>,
    /// For a `deb:SUITE` base: the mirror's own keyring, as `--deb-mirror-key`.
    pub deb_mirror_key: Option<PathBuf>,
    /// `false` skips the start-up check, as `--no-check` does.
    pub check: Option<bool>,
    /// `gzip[:LEVEL]` or `zstd[:LEVEL]`, as `--compression`.
    pub compression: Option<String>,
    /// Env or label keys that look secret but are not.
    pub allow_secrets: Option<Vec<String>>,
    pub insecure_registries: Option<Vec<String>>,
    pub ca_certs: Option<Vec<PathBuf>>,
}

/// A string, or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

impl ProjectFile {
    /// Load `imgbuild.toml` from `dir` if it exists.
    pub(crate) fn load(dir: &Path) -> Result<ProjectFile> {
        let path = dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProjectFile::default()),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ProjectFile::load(dir.path()).unwrap().from.is_none());
        std::fs::write(
            dir.path().join(FILE_NAME),
            "from = \"debian:bookworm\"\ntags = [\"a:1\"]\n[env]\nPORT = \"8080\"\n",
        )
        .unwrap();
        let p = ProjectFile::load(dir.path()).unwrap();
        assert_eq!(p.from.as_deref(), Some("debian:bookworm"));
        assert_eq!(p.packages, None);
        assert_eq!(p.env.get("PORT").map(String::as_str), Some("8080"));
        std::fs::write(dir.path().join(FILE_NAME), "packages = \"auto\"\n").unwrap();
        let p = ProjectFile::load(dir.path()).unwrap();
        assert_eq!(p.packages, Some(vec!["auto".to_string()]));
        std::fs::write(dir.path().join(FILE_NAME), "form = \"typo\"\n").unwrap();
        let e = ProjectFile::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
