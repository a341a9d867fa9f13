//! The image-definition flags `build` and `check` share (release, base, platforms, config,
//! packages), merged with `imgbuild.toml` and turned into a [`BuildRequest`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use imgbuild::apt::PackageRequest;
use imgbuild::apt::debian::{DebBase, DebMirror};
use imgbuild::error::{Error, Result};
use imgbuild::layer::Codec;
use imgbuild::mutate::ImageSettings;
use imgbuild::oci::platform::Platform;
use imgbuild::oci::reference::Reference;
use imgbuild::pipeline::{BuildRequest, LauncherMode};
use imgbuild::release;
use imgbuild::secrets;
use imgbuild::source::Source;

use super::common::{DEFAULT_BASE, key_value, port, source_date_epoch, words};
use super::project::ProjectFile;

/// What the image is made of: the release, the base, the platforms, the config, the packages.
#[derive(Args, Debug, Default, Clone)]
pub struct ImageArgs {
    /// The release directory (default: the one release under ./_build/prod/rel/).
    pub release_dir: Option<PathBuf>,
    /// Base image: a registry reference, oci:DIR, oci-archive:PATH, docker-archive:PATH, scratch,
    /// or deb:SUITE (bullseye, bookworm, trixie: a base of that suite's packages alone, no shell)
    /// [default: debian:bookworm-slim].
    #[arg(long)]
    pub from: Option<String>,
    /// Platform to build, os/arch[/variant]; several (comma-separated or repeated) build an
    /// image index, e.g. linux/amd64,linux/arm64 [default: the host's].
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<String>,
    /// An image holding Erlang/OTP for the other platforms (same OTP version as the release):
    /// the release's ERTS and OTP native files are transplanted from it.
    #[arg(long, value_name = "IMAGE")]
    pub otp_from: Option<String>,
    /// A release built natively for a platform, PLATFORM=DIR (repeatable).
    #[arg(long = "release", value_name = "PLATFORM=DIR")]
    pub releases: Vec<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Image label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Manifest annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// Exposed port PORT[/tcp|udp|sctp] (repeatable) [default: 4000/tcp].
    #[arg(long = "expose")]
    pub expose: Vec<String>,
    /// User the container runs as [default: 65534].
    #[arg(long)]
    pub user: Option<String>,
    /// Working directory the release is copied to [default: /app].
    #[arg(long)]
    pub workdir: Option<String>,
    /// Command: a JSON array, or words split on spaces [default: /app/bin/server, else /app/bin/NAME start].
    #[arg(long)]
    pub cmd: Option<String>,
    /// Entrypoint: a JSON array, or words split on spaces [default: none].
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// An application (besides the release's namesake) that belongs in the app layer (repeatable).
    #[arg(long = "app")]
    pub apps: Vec<String>,
    /// Leave releases/COOKIE out of the image (then give RELEASE_COOKIE at run time).
    #[arg(long)]
    pub drop_cookie: bool,
    /// Start the release through imgbuild's launcher (no shell needed; it replaces bin/NAME):
    /// auto when the base has no /bin/sh, always, or never [default: auto].
    #[arg(long, value_parser = ["auto", "always", "never"])]
    pub launcher: Option<String>,
    /// A Debian package to install into the image, NAME or NAME=VERSION (repeatable).
    #[arg(long = "package")]
    pub packages: Vec<String>,
    /// An apt source "[signed-by=KEYRING] URI SUITE COMPONENT..." (repeatable); replaces the
    /// base image's own sources (for mirrors and air-gapped sites).
    #[arg(long = "apt-source")]
    pub apt_sources: Vec<String>,
    /// Resolve the packages again and rewrite imgbuild.lock.
    #[arg(long)]
    pub update_lock: bool,
    #[command(flatten)]
    pub deb: DebMirrorArgs,
    /// Allow an --env or --label KEY that looks like a secret but is not (repeatable).
    #[arg(long = "allow-secret")]
    pub allow_secrets: Vec<String>,
}

impl ImageArgs {
    /// The definition with `imgbuild.toml` merged in: a flag wins over the file's value, the
    /// `env`, `labels` and `annotations` maps are merged key by key (a flag's key wins), and a
    /// list given by flags replaces the file's. Two exceptions, as they always were:
    /// `--allow-secret` adds to the file's `allow-secrets`, and `--drop-cookie` can only turn
    /// dropping on. Values are checked for syntax; nothing is read.
    pub(crate) fn merge(&self, project: &ProjectFile) -> Result<ImageDef> {
        // The file's env in key order, then each flag in turn (a flag's key moves to the end).
        let mut env: Vec<(String, String)> = project
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for e in &self.env {
            let (k, v) = key_value("--env", e)?;
            env.retain(|(have, _)| *have != k);
            env.push((k, v));
        }
        let map = |file: &BTreeMap<String, String>, flags: &[String], flag: &str| {
            let mut merged = file.clone();
            for kv in flags {
                let (k, v) = key_value(flag, kv)?;
                merged.insert(k, v);
            }
            Ok::<_, Error>(merged)
        };
        let labels = map(&project.labels, &self.labels, "--label")?;
        let annotations = map(&project.annotations, &self.annotations, "--annotation")?;
        let mut allow_secrets = project.allow_secrets.clone().unwrap_or_default();
        allow_secrets.extend(self.allow_secrets.iter().cloned());
        let expose = replace(&self.expose, &project.expose)
            .map(|ps| ps.iter().map(|p| port(p)).collect::<Result<Vec<_>>>())
            .transpose()?;
        let workdir = self
            .workdir
            .clone()
            .or_else(|| project.workdir.clone())
            .unwrap_or_else(|| "/app".into());
        if !workdir.starts_with('/') {
            return Err(Error::Usage(format!(
                "invalid --workdir {workdir:?}: give an absolute path such as /app"
            )));
        }
        let cmd = match &self.cmd {
            Some(c) => Some(words("--cmd", c)?),
            None => project.cmd.clone(),
        };
        let entrypoint = match &self.entrypoint {
            Some(c) => Some(words("--entrypoint", c)?),
            None => project.entrypoint.clone(),
        };
        let platforms = if !self.platform.is_empty() {
            self.platform.clone()
        } else if let Some(list) = &project.platforms {
            list.clone()
        } else {
            project.platform.iter().cloned().collect()
        };
        Ok(ImageDef {
            release: self.release_dir.clone().or_else(|| project.release.clone()),
            from: (self.from.as_deref())
                .or(project.from.as_deref())
                .unwrap_or(DEFAULT_BASE)
                .to_string(),
            platforms,
            otp_from: self.otp_from.clone().or_else(|| project.otp_from.clone()),
            releases: self.releases.clone(),
            env,
            labels,
            annotations,
            allow_secrets,
            expose,
            user: self.user.clone().or_else(|| project.user.clone()),
            workdir,
            cmd,
            entrypoint,
            apps: replace(&self.apps, &project.apps).unwrap_or_default(),
            drop_cookie: self.drop_cookie || project.drop_cookie.unwrap_or(false),
            packages: replace(&self.packages, &project.packages).unwrap_or_default(),
            apt_sources: replace(&self.apt_sources, &project.apt_sources).unwrap_or_default(),
            update_lock: self.update_lock,
            launcher: match self.launcher.as_deref().or(project.launcher.as_deref()) {
                None | Some("auto") => LauncherMode::Auto,
                Some("always") => LauncherMode::Always,
                Some("never") => LauncherMode::Never,
                Some(other) => {
                    return Err(Error::Usage(format!(
                        "launcher = {other:?} in imgbuild.toml: give \"auto\", \"always\" or \"never\""
                    )));
                }
            },
            deb_mirror: self.deb.merge(project),
        })
    }
}

/// Where a `deb:SUITE` base's packages come from: build's and rebase's flags.
#[derive(Args, Debug, Default, Clone)]
pub struct DebMirrorArgs {
    /// For a deb:SUITE base: the Debian archive to take the packages from (SUITE and
    /// SUITE-updates) [default: http://deb.debian.org/debian].
    #[arg(long, env = "IMGBUILD_DEB_MIRROR", value_name = "URL")]
    pub deb_mirror: Option<String>,
    /// For a deb:SUITE base: the archive of SUITE-security [default: URL-security when
    /// --deb-mirror ends in /debian, else --deb-mirror itself; without --deb-mirror
    /// http://deb.debian.org/debian-security].
    #[arg(long, env = "IMGBUILD_DEB_SECURITY_MIRROR", value_name = "URL")]
    pub deb_security_mirror: Option<String>,
    /// For a deb:SUITE base: a keyring the mirror signs with, trusted besides Debian's keys
    /// (which imgbuild carries).
    #[arg(long, value_name = "FILE")]
    pub deb_mirror_key: Option<PathBuf>,
}

/// The `deb:` side of a request: for a `deb:SUITE` base, its suite from `mirror`; for any
/// other base, none, and the mirror flags refused unless `--debug` takes its busybox from them.
pub fn deb_base(from: &Source, mirror: &DebMirror, debug: bool) -> Result<Option<DebBase>> {
    match from {
        Source::Deb { suite } => Ok(Some(DebBase {
            suite: *suite,
            mirror: mirror.clone(),
        })),
        _ if *mirror != DebMirror::default() && !debug => Err(Error::Usage(format!(
            "--deb-mirror, --deb-security-mirror and --deb-mirror-key (or deb-mirror in imgbuild.toml) are for a deb:SUITE base or build --debug, not {}",
            from.describe()
        ))),
        _ => Ok(None),
    }
}

impl DebMirrorArgs {
    /// The flags with `imgbuild.toml`'s `deb-mirror`, `deb-security-mirror` and
    /// `deb-mirror-key` under them (a flag wins).
    pub fn merge(&self, project: &ProjectFile) -> DebMirror {
        DebMirror {
            url: (self.deb_mirror.clone()).or_else(|| project.deb_mirror.clone()),
            security: (self.deb_security_mirror.clone())
                .or_else(|| project.deb_security_mirror.clone()),
            key: (self.deb_mirror_key.clone()).or_else(|| project.deb_mirror_key.clone()),
        }
    }
}

/// How the new layers are compressed.
#[derive(Args, Debug, Default, Clone)]
pub struct CompressionArgs {
    /// gzip level for the release layers, 1-9 (the same as --compression gzip:LEVEL).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9), conflicts_with = "compression")]
    pub gzip_level: Option<u32>,
    /// Compression of the new layers: gzip[:1-9] (default gzip:6; every reader takes it) or
    /// zstd[:1-19] (smaller and faster; Docker Engine before 23 cannot load it).
    #[arg(long, value_parser = super::common::parse_compression)]
    pub compression: Option<(Codec, u32)>,
}

impl CompressionArgs {
    /// `--compression`, else `--gzip-level`, else the file's `compression`, else gzip:6.
    pub(crate) fn merge(&self, project: &ProjectFile) -> Result<(Codec, u32)> {
        Ok(
            match (self.compression, self.gzip_level, &project.compression) {
                (Some(c), _, _) => c,
                (None, Some(level), _) => (Codec::Gzip, level),
                (None, None, Some(text)) => imgbuild::layer::parse_compression(text)
                    .map_err(|e| Error::Usage(format!("compression in imgbuild.toml: {e}")))?,
                (None, None, None) => (Codec::Gzip, 6),
            },
        )
    }
}

/// A list: the flags' when any were given, else the file's.
pub(crate) fn replace(flags: &[String], file: &Option<Vec<String>>) -> Option<Vec<String>> {
    if flags.is_empty() {
        file.clone()
    } else {
        Some(flags.to_vec())
    }
}

/// The image definition, flags and `imgbuild.toml` merged.
#[derive(Debug, PartialEq)]
pub struct ImageDef {
    pub release: Option<PathBuf>,
    pub from: String,
    pub platforms: Vec<String>,
    pub otp_from: Option<String>,
    /// `PLATFORM=DIR`, flags only.
    pub releases: Vec<String>,
    /// In order: the file's by key, then the flags'.
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub allow_secrets: Vec<String>,
    /// Normalised `PORT/proto`.
    pub expose: Option<Vec<String>>,
    pub user: Option<String>,
    pub workdir: String,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub apps: Vec<String>,
    pub drop_cookie: bool,
    pub packages: Vec<String>,
    pub apt_sources: Vec<String>,
    pub update_lock: bool,
    pub launcher: LauncherMode,
    /// `--deb-mirror`, `--deb-security-mirror`, `--deb-mirror-key` (or the file's).
    pub deb_mirror: DebMirror,
}

/// What a build request needs besides the image definition.
pub struct Extras {
    /// `-t` (else the file's `tags`); none: the release's name and version.
    pub tags: Vec<String>,
    pub compression: (Codec, u32),
    pub cache_repo: Option<(String, bool)>,
    /// `--debug`: also the debug image (its busybox from the `deb:` base's suite and mirror,
    /// else bookworm from `--deb-mirror`).
    pub debug: bool,
}

impl ImageDef {
    /// The build request: the release found, sources, platforms and tags parsed, secrets
    /// refused. The check runs; nothing is pushed ahead and no SBOM written (build sets those).
    pub fn request(&self, extras: Extras, cwd: &Path) -> Result<BuildRequest> {
        let release_dir = release::locate(self.release.as_deref(), cwd)?;
        let from = Source::parse(&self.from)?;
        let platforms = self.platforms()?;
        let otp_from = self.otp_from.as_deref().map(Source::parse).transpose()?;
        let releases = self.releases(&platforms, cwd)?;
        let tags = tags(&extras.tags, &release_dir)?;
        secrets::refuse_secrets(
            "--env",
            self.env.iter().map(|(k, v)| (k, v)),
            &self.allow_secrets,
        )?;
        secrets::refuse_secrets("--label", self.labels.iter(), &self.allow_secrets)?;
        let settings = ImageSettings {
            env: self.env.clone(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            exposed_ports: self.expose.clone(),
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            cmd: self.cmd.clone(),
            entrypoint: self.entrypoint.clone(),
            epoch: source_date_epoch()?,
        };
        let deb = deb_base(&from, &self.deb_mirror, extras.debug)?;
        let debug = extras.debug.then(|| {
            deb.clone().unwrap_or(DebBase {
                suite: imgbuild::apt::debian::Suite::Bookworm,
                mirror: self.deb_mirror.clone(),
            })
        });
        let cache_repo = match extras.cache_repo {
            Some((repo, readonly)) => Some(Arc::new(
                imgbuild::pipeline::cache_repo::CacheRepo::new(&repo, readonly)?,
            )),
            None => None,
        };
        Ok(BuildRequest {
            release_dir,
            from,
            platform: platforms.first().cloned(),
            platforms,
            otp_from,
            releases,
            tags,
            settings,
            own_apps: self.apps.clone(),
            drop_cookie: self.drop_cookie,
            compression: extras.compression,
            check: true,
            sbom_out: None,
            packages: PackageRequest {
                packages: self.packages.clone(),
                sources: self.apt_sources.clone(),
                lock_path: cwd.join(imgbuild::apt::LOCK_FILE),
                update_lock: self.update_lock,
                deb,
            },
            cache_repo,
            launcher: self.launcher,
            debug,
        })
    }

    /// The platforms, parsed, each once, in order.
    fn platforms(&self) -> Result<Vec<Platform>> {
        let mut platforms: Vec<Platform> = Vec::new();
        for w in self
            .platforms
            .iter()
            .map(|w| w.trim())
            .filter(|w| !w.is_empty())
        {
            let p = Platform::parse(w)?;
            if !platforms.contains(&p) {
                platforms.push(p);
            }
        }
        Ok(platforms)
    }

    /// `--release PLATFORM=DIR`: each platform among those built, each directory a release.
    fn releases(&self, platforms: &[Platform], cwd: &Path) -> Result<Vec<(Platform, PathBuf)>> {
        let mut releases = Vec::new();
        for r in &self.releases {
            let (p, dir) = r.split_once('=').ok_or_else(|| {
                Error::Usage(format!(
                    "invalid --release {r:?}: expected PLATFORM=DIR, e.g. linux/arm64=_build/arm64/rel/my_app"
                ))
            })?;
            let p = Platform::parse(p)?;
            if !platforms.contains(&p) {
                return Err(Error::Usage(format!(
                    "--release {r}: {p} is not among the platforms built (--platform)"
                )));
            }
            releases.push((p, release::locate(Some(Path::new(dir)), cwd)?));
        }
        Ok(releases)
    }
}

/// The tags given, else the release's own name and version.
fn tags(given: &[String], release_dir: &Path) -> Result<Vec<Reference>> {
    let mut tags = given
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>>>()?;
    if tags.iter().any(|t| t.digest.is_some()) {
        return Err(Error::Usage(
            "a tag (-t) cannot carry a digest: give NAME[:TAG]".into(),
        ));
    }
    if tags.is_empty() {
        let rel = release::Release::inspect(release_dir)?;
        let name = rel.name.replace('_', "-").to_ascii_lowercase();
        let tag = if imgbuild::oci::reference::valid_tag(&rel.version) {
            rel.version.replace('+', "_")
        } else {
            "latest".into()
        };
        tags.push(Reference::parse(&format!("{name}:{tag}"))?);
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn file(toml: &str) -> ProjectFile {
        toml::from_str(toml).unwrap()
    }

    /// The image group as `check` parses it (`build` flattens the same group).
    fn image(flags: &[&str]) -> ImageArgs {
        let argv = [&["imgbuild", "check"], flags].concat();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Check(a) => a.image,
            other => panic!("{other:?}"),
        }
    }

    const FILE: &str = r#"
release = "rel/file"
from = "file:base"
platforms = ["linux/amd64", "linux/arm64"]
user = "1000"
workdir = "/srv"
cmd = ["/srv/bin/file", "start"]
packages = ["libssl3", "curl"]
apt-sources = ["http://file.example/debian bookworm main"]
apps = ["file_web"]
expose = ["4000"]
allow-secrets = ["FILE_TOKEN"]
[env]
A = "file"
B = "file"
[labels]
x = "file"
y = "file"
[annotations]
n = "file"
"#;

    #[test]
    fn flags_win() {
        let d = image(&[
            "rel/flag",
            "--from",
            "flag:base",
            "--user",
            "0",
            "--workdir",
            "/opt",
            "--cmd",
            "/opt/run",
            "--platform",
            "linux/arm64",
        ])
        .merge(&file(FILE))
        .unwrap();
        assert_eq!(d.release, Some(PathBuf::from("rel/flag")));
        assert_eq!(d.from, "flag:base");
        assert_eq!(d.user.as_deref(), Some("0"));
        assert_eq!(d.workdir, "/opt");
        assert_eq!(d.cmd, Some(vec!["/opt/run".to_string()]));
        assert_eq!(d.platforms, ["linux/arm64"]);
    }

    #[test]
    fn file_fills() {
        let d = image(&[]).merge(&file(FILE)).unwrap();
        assert_eq!(d.release, Some(PathBuf::from("rel/file")));
        assert_eq!(d.from, "file:base");
        assert_eq!(d.platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(d.user.as_deref(), Some("1000"));
        assert_eq!(d.workdir, "/srv");
        assert_eq!(d.cmd, Some(vec!["/srv/bin/file".into(), "start".into()]));
        assert_eq!(d.packages, ["libssl3", "curl"]);
        assert_eq!(d.apps, ["file_web"]);
        assert_eq!(d.expose, Some(vec!["4000/tcp".to_string()]));
        // One `platform` fills when `platforms` is absent; nothing at all gives the defaults.
        let one = image(&[])
            .merge(&file("platform = \"linux/arm64\"\n"))
            .unwrap();
        assert_eq!(one.platforms, ["linux/arm64"]);
        let none = image(&[]).merge(&ProjectFile::default()).unwrap();
        assert_eq!(
            (none.from.as_str(), none.workdir.as_str()),
            (DEFAULT_BASE, "/app")
        );
        assert!(none.platforms.is_empty() && none.expose.is_none() && none.cmd.is_none());
    }

    #[test]
    fn maps_merge_key_by_key() {
        let d = image(&[
            "-e",
            "B=flag",
            "-e",
            "C=flag",
            "--label",
            "y=flag",
            "--annotation",
            "m=flag",
        ])
        .merge(&file(FILE))
        .unwrap();
        // The file's keys in order, then the flags' (an overridden key moves to the end).
        let env: Vec<(&str, &str)> = d
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, [("A", "file"), ("B", "flag"), ("C", "flag")]);
        assert_eq!(d.labels["x"], "file");
        assert_eq!(d.labels["y"], "flag");
        assert_eq!(d.annotations.len(), 2);
        assert!(image(&["-e", "novalue"]).merge(&file(FILE)).is_err());
    }

    #[test]
    fn lists_replace() {
        let d = image(&[
            "--package",
            "libstdc++6",
            "--apt-source",
            "http://flag/debian bookworm main",
            "--app",
            "flag_web",
            "--expose",
            "53/udp",
        ])
        .merge(&file(FILE))
        .unwrap();
        assert_eq!(d.packages, ["libstdc++6"]);
        assert_eq!(d.apt_sources, ["http://flag/debian bookworm main"]);
        assert_eq!(d.apps, ["flag_web"]);
        assert_eq!(d.expose, Some(vec!["53/udp".to_string()]));
        // The exceptions: allowed secrets add up; a file's drop-cookie holds without the flag.
        let d = image(&["--allow-secret", "FLAG_KEY"])
            .merge(&file(
                "allow-secrets = [\"FILE_TOKEN\"]\ndrop-cookie = true\n",
            ))
            .unwrap();
        assert_eq!(d.allow_secrets, ["FILE_TOKEN", "FLAG_KEY"]);
        assert!(d.drop_cookie);
    }

    #[test]
    fn compression_merge() {
        let flags = |compression, gzip_level| CompressionArgs {
            compression,
            gzip_level,
        };
        let zstd = file("compression = \"zstd:3\"\n");
        assert_eq!(
            flags(Some((Codec::Gzip, 9)), None).merge(&zstd).unwrap(),
            (Codec::Gzip, 9)
        );
        assert_eq!(flags(None, Some(1)).merge(&zstd).unwrap(), (Codec::Gzip, 1));
        assert_eq!(flags(None, None).merge(&zstd).unwrap(), (Codec::Zstd, 3));
        assert_eq!(
            flags(None, None).merge(&ProjectFile::default()).unwrap(),
            (Codec::Gzip, 6)
        );
        let e = flags(None, None)
            .merge(&file("compression = \"lz4\"\n"))
            .unwrap_err();
        assert!(e.to_string().contains("imgbuild.toml"), "{e}");
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let e = image(&["--workdir", "app"])
            .merge(&ProjectFile::default())
            .unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        let e = image(&[]).merge(&file("workdir = \"rel\"\n")).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        assert!(
            image(&["--expose", "80/icmp"])
                .merge(&ProjectFile::default())
                .is_err()
        );
    }
}
