//! Reading a release: a `mix release` directory (found under `_build/prod/rel/` when not
//! given) or the files an image holds of one, and its `.rel` file's applications.

use std::fs;
use std::path::{Path, PathBuf};

use super::{AppVersion, Release, erl_term};
use crate::error::{Error, IoContext, Result};

impl Release {
    /// A release as an image holds it (for `rebase`): `texts` has the files under `root` in
    /// the image (`releases/start_erl.data`, `releases/VSN/NAME.rel`); `exists` says whether
    /// a path is in the image.
    pub(crate) fn from_image(
        root: &str,
        texts: &std::collections::BTreeMap<String, String>,
        exists: &dyn Fn(&str) -> bool,
    ) -> Result<Release> {
        let root = root.trim_end_matches('/');
        let not_release = |what: &str| {
            Error::Input(format!(
                "the image's layers hold no mix release under {root}: {what}; rebase takes images that imgbuild built"
            ))
        };
        let data = texts
            .get(&format!("{root}/releases/start_erl.data"))
            .ok_or_else(|| not_release("releases/start_erl.data is missing"))?;
        let mut words = data.split_whitespace();
        let (Some(erts_version), Some(version)) = (words.next(), words.next()) else {
            return Err(not_release("releases/start_erl.data is malformed"));
        };
        let prefix = format!("{root}/releases/{version}/");
        let (rel_path, rel_text) = texts
            .iter()
            .find(|(p, _)| {
                p.strip_prefix(&prefix)
                    .is_some_and(|n| !n.contains('/') && n.ends_with(".rel"))
            })
            .ok_or_else(|| not_release(&format!("releases/{version}/ holds no <name>.rel")))?;
        let name = rel_path[prefix.len()..]
            .trim_end_matches(".rel")
            .to_string();
        let applications = parse_rel_file(rel_text)
            .map_err(|why| Error::Input(format!("cannot read {rel_path} in the image: {why}")))?;
        Ok(Release {
            root: PathBuf::from(root),
            name,
            version: version.to_string(),
            erts_version: erts_version.to_string(),
            includes_erts: exists(&format!("{root}/erts-{erts_version}")),
            applications,
            has_server: exists(&format!("{root}/bin/server")),
        })
    }
}

/// The release directory: the one given, else the single one under `./_build/prod/rel/`.
pub fn locate(given: Option<&Path>, cwd: &Path) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    let rel = cwd.join("_build").join("prod").join("rel");
    let found: Vec<PathBuf> = match fs::read_dir(&rel) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    match found.len() {
        1 => Ok(found.into_iter().next().unwrap_or_default()),
        0 => Err(Error::Usage(format!(
            "no release found under {}: run `MIX_ENV=prod mix release` first, or pass the release directory as an argument",
            rel.display()
        ))),
        _ => {
            let mut names: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
            names.sort();
            Err(Error::Usage(format!(
                "several releases found ({}): pass the one to build as an argument",
                names.join(", ")
            )))
        }
    }
}

impl Release {
    pub fn inspect(dir: &Path) -> Result<Release> {
        let meta = fs::metadata(dir).map_err(|e| {
            Error::Input(format!(
                "release directory {} cannot be read: {e}; pass the path of a `mix release` output such as _build/prod/rel/my_app",
                dir.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(Error::Input(format!(
                "release path {} is not a directory",
                dir.display()
            )));
        }
        let root = fs::canonicalize(dir).ctx("resolve", dir)?;
        let not_release = |what: &str| {
            Error::Input(format!(
                "{} is not a mix release: {what}; build one with `MIX_ENV=prod mix release` and pass _build/prod/rel/<name>",
                root.display()
            ))
        };
        let start_erl = root.join("releases").join("start_erl.data");
        let data = fs::read_to_string(&start_erl)
            .map_err(|_| not_release("releases/start_erl.data is missing"))?;
        let mut words = data.split_whitespace();
        let (erts_version, version) = match (words.next(), words.next()) {
            (Some(e), Some(v)) => (e.to_string(), v.to_string()),
            _ => {
                return Err(not_release(
                    "releases/start_erl.data does not hold \"<erts_vsn> <release_vsn>\"",
                ));
            }
        };
        let rel_dir = root.join("releases").join(&version);
        let rel_file = fs::read_dir(&rel_dir)
            .map_err(|_| not_release(&format!("releases/{version}/ is missing")))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "rel"))
            .ok_or_else(|| not_release(&format!("releases/{version}/ holds no <name>.rel file")))?;
        let name = rel_file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let rel_text = fs::read_to_string(&rel_file).ctx("read", &rel_file)?;
        let applications = parse_rel_file(&rel_text)
            .map_err(|why| Error::Input(format!("cannot read {}: {why}", rel_file.display())))?;
        if !root.join("bin").join(&name).is_file() {
            return Err(not_release(&format!("bin/{name} is missing")));
        }
        let includes_erts = root.join(format!("erts-{erts_version}")).is_dir();
        let has_server = root.join("bin").join("server").is_file();
        Ok(Release {
            root,
            name,
            version,
            erts_version,
            includes_erts,
            applications,
            has_server,
        })
    }
}

/// Parse `{release, {Name, Vsn}, {erts, Vsn}, [{App, Vsn[, Type[, Included]]}, ...]}.`
pub fn parse_rel_file(text: &str) -> std::result::Result<Vec<AppVersion>, String> {
    let term = erl_term::parse(text)?;
    let items = match &term {
        erl_term::Term::Tuple(items) if items.len() == 4 && items[0].atom() == Some("release") => {
            items
        }
        _ => return Err("expected {release, {Name, Vsn}, {erts, Vsn}, [Apps]}".into()),
    };
    let erl_term::Term::List(apps) = &items[3] else {
        return Err("the fourth element is not a list of applications".into());
    };
    apps.iter()
        .map(|app| match app {
            erl_term::Term::Tuple(t) if (2..=4).contains(&t.len()) => {
                match (t[0].atom(), t[1].string()) {
                    (Some(name), Some(vsn)) => Ok(AppVersion {
                        name: name.to_string(),
                        version: vsn.to_string(),
                    }),
                    _ => Err("an application entry is not {Name, \"Vsn\", ...}".to_string()),
                }
            }
            _ => Err("an application entry is not a tuple".to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixture::REL;
    use super::*;

    #[test]
    fn parses_rel_file() {
        let apps = parse_rel_file(REL).unwrap();
        assert_eq!(apps.len(), 4);
        assert_eq!(
            apps[0],
            AppVersion {
                name: "kernel".into(),
                version: "8.5.3".into()
            }
        );
        assert_eq!(apps[2].name, "my-app");
        assert!(parse_rel_file("{release, x}.").is_err());
        assert!(parse_rel_file("{release,").is_err());
        assert!(parse_rel_file(&"[".repeat(10_000)).is_err());
    }

    #[test]
    fn locate_finds_the_single_release() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            locate(None, dir.path())
                .unwrap_err()
                .to_string()
                .contains("no release found")
        );
        fs::create_dir_all(dir.path().join("_build/prod/rel/a")).unwrap();
        assert!(locate(None, dir.path()).unwrap().ends_with("a"));
        fs::create_dir_all(dir.path().join("_build/prod/rel/b")).unwrap();
        assert!(
            locate(None, dir.path())
                .unwrap_err()
                .to_string()
                .contains("several releases")
        );
    }
}
