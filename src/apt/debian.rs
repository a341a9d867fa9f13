//! The Debian archive as a base (`--from deb:SUITE`): the suites, the archive's public keys that
//! imgbuild carries, the sources a suite is read from, and what a base without a shell or a
//! package manager may install.
//!
//! The keys are Debian's own public keyrings (`debian-archive-keyring`), copied into
//! `src/apt/keys/` by `scripts/refresh-debian-keys`; a mirror signed by a key of its own adds it
//! with `--deb-mirror-key`.

use std::path::PathBuf;

use super::sources::AptSource;
use crate::error::{Error, Result};

/// The Debian suites a `deb:` base can be made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    Bullseye,
    Bookworm,
    Trixie,
}

/// The default archive and its security archive.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
pub const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

impl Suite {
    const ALL: [Suite; 3] = [Suite::Bullseye, Suite::Bookworm, Suite::Trixie];

    /// `bookworm` (or its number, `12`) → the suite; anything else is a usage error naming the
    /// suites there are.
    pub fn parse(s: &str) -> Result<Suite> {
        Suite::ALL
            .into_iter()
            .find(|x| x.name() == s || x.version() == s)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "deb:{s}: unknown Debian suite; use deb:bullseye, deb:bookworm or deb:trixie"
                ))
            })
    }

    /// The code name (`bookworm`).
    pub fn name(self) -> &'static str {
        match self {
            Suite::Bullseye => "bullseye",
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
        }
    }

    /// The release number (`12`): os-release's `VERSION_ID`, and the purls' `distro=debian-12`.
    pub(crate) fn version(self) -> &'static str {
        match self {
            Suite::Bullseye => "11",
            Suite::Bookworm => "12",
            Suite::Trixie => "13",
        }
    }
}

/// Every Debian archive key imgbuild carries (the release keys and the automatic signing keys
/// of each suite's archive and security archive), as OpenPGP keyrings.
const KEYRINGS: &[(&str, &[u8])] = &[
    (
        "bullseye-automatic",
        include_bytes!("keys/debian-archive-bullseye-automatic.gpg"),
    ),
    (
        "bullseye-security-automatic",
        include_bytes!("keys/debian-archive-bullseye-security-automatic.gpg"),
    ),
    (
        "bullseye-stable",
        include_bytes!("keys/debian-archive-bullseye-stable.gpg"),
    ),
    (
        "bookworm-automatic",
        include_bytes!("keys/debian-archive-bookworm-automatic.gpg"),
    ),
    (
        "bookworm-security-automatic",
        include_bytes!("keys/debian-archive-bookworm-security-automatic.gpg"),
    ),
    (
        "bookworm-stable",
        include_bytes!("keys/debian-archive-bookworm-stable.gpg"),
    ),
    (
        "trixie-automatic",
        include_bytes!("keys/debian-archive-trixie-automatic.gpg"),
    ),
    (
        "trixie-security-automatic",
        include_bytes!("keys/debian-archive-trixie-security-automatic.gpg"),
    ),
    (
        "trixie-stable",
        include_bytes!("keys/debian-archive-trixie-stable.gpg"),
    ),
];

/// The carried Debian keys, all of them: Debian signs a suite's `InRelease` with the keys of
/// more than one release (as apt trusts `debian-archive-keyring.gpg` as a whole, so does this).
pub(crate) fn debian_keys() -> Vec<pgp::composed::SignedPublicKey> {
    KEYRINGS
        .iter()
        .flat_map(|(_, bytes)| super::index::keys_from(bytes))
        .collect()
}

/// Where a `deb:` base's packages come from (`--deb-mirror`, `--deb-security-mirror`,
/// `--deb-mirror-key`); each unset one is Debian's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebMirror {
    /// The archive root (`http://deb.debian.org/debian`), for SUITE and SUITE-updates.
    pub url: Option<String>,
    /// The security archive root, for SUITE-security. Unset: `URL-security` when the mirror
    /// ends in `/debian` (as Debian's own mirrors are laid out), else the mirror itself (a local
    /// mirror that serves every suite under one root).
    pub security: Option<String>,
    /// A keyring (binary or armored) of a mirror that signs with its own key, trusted besides
    /// Debian's.
    pub key: Option<PathBuf>,
}

/// A `deb:` base: the suite and where its packages come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebBase {
    pub suite: Suite,
    pub mirror: DebMirror,
}

impl DebBase {
    /// The archive roots: (main, security).
    pub(crate) fn roots(&self) -> (String, String) {
        let main = self
            .mirror
            .url
            .as_deref()
            .unwrap_or(DEFAULT_MIRROR)
            .trim_end_matches('/')
            .to_string();
        let security = match (&self.mirror.security, &self.mirror.url) {
            (Some(s), _) => s.trim_end_matches('/').to_string(),
            (None, None) => DEFAULT_SECURITY_MIRROR.to_string(),
            (None, Some(_)) if main.ends_with("/debian") => format!("{main}-security"),
            (None, Some(_)) => main.clone(),
        };
        (main, security)
    }

    /// The suite's sources: SUITE and SUITE-updates from the archive, SUITE-security from the
    /// security archive, `main` only.
    pub(crate) fn sources(&self) -> Vec<AptSource> {
        let (main, security) = self.roots();
        let suite = self.suite.name();
        [
            (main.clone(), suite.to_string()),
            (main, format!("{suite}-updates")),
            (security, format!("{suite}-security")),
        ]
        .into_iter()
        .map(|(uri, suite)| AptSource {
            uri,
            suite,
            components: vec!["main".into()],
            signed_by: None,
        })
        .collect()
    }

    /// What a signature that none of [`DebBase::keys`] verifies calls for: the mirror's key
    /// (with `--deb-mirror-key`, or another one than given), or Debian's keys refreshed.
    pub(crate) fn untrusted_hint(&self) -> String {
        let refresh = "refresh imgbuild's Debian keys (scripts/refresh-debian-keys)";
        match &self.mirror {
            DebMirror { key: Some(key), .. } => format!(
                "The keys tried are Debian's (carried by imgbuild) and those in --deb-mirror-key {}: check that it holds the public key the mirror signs its InRelease with",
                key.display()
            ),
            DebMirror {
                url: None,
                security: None,
                ..
            } => format!(
                "The keys tried are Debian's, carried by imgbuild: if Debian has rotated them, {refresh}"
            ),
            DebMirror { .. } => format!(
                "The keys tried are Debian's, carried by imgbuild: a mirror that signs with a key of its own needs its public key given with --deb-mirror-key FILE (or deb-mirror-key in imgbuild.toml); if it is a copy of Debian's archive, signed by Debian, {refresh}"
            ),
        }
    }

    /// The keys its sources are verified against: Debian's, and the mirror's own if given.
    pub(crate) fn keys(&self) -> Result<Vec<pgp::composed::SignedPublicKey>> {
        let mut keys = debian_keys();
        if let Some(path) = &self.mirror.key {
            let bytes =
                std::fs::read(path).map_err(|e| Error::io("read --deb-mirror-key", path, e))?;
            let own = super::index::keys_from(&bytes);
            if own.is_empty() {
                return Err(Error::Input(format!(
                    "--deb-mirror-key {}: no OpenPGP public key in it (give a keyring, binary or armored)",
                    path.display()
                )));
            }
            keys.extend(own);
        }
        Ok(keys)
    }
}

/// What a base with no shell and no package manager may install.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// Packages unpacked for their data alone: their dependencies are not installed (they
    /// serve the maintainer scripts, which imgbuild does not run).
    pub(crate) data_only: &'static [&'static str],
    /// Shells, package managers and the tools only scripts use: never installed.
    pub(crate) refused: &'static [&'static str],
}

/// The rules of a `deb:` base. `ca-certificates` needs `openssl` and `debconf` only for
/// `update-ca-certificates` (imgbuild writes the bundle itself); `tzdata` needs `debconf` only
/// to ask for the zone.
pub(crate) const SHELL_LESS: Rules = Rules {
    data_only: &["ca-certificates", "tzdata"],
    refused: &[
        "dash",
        "bash",
        "busybox",
        "zsh",
        "mksh",
        "ksh",
        "posh",
        "yash",
        "dpkg",
        "apt",
        "perl-base",
        "debconf",
        "coreutils",
        "debianutils",
        "sed",
        "grep",
        "findutils",
        "util-linux",
        "init-system-helpers",
        "sensible-utils",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_parse_by_name_or_number() {
        assert_eq!(Suite::parse("bookworm").unwrap(), Suite::Bookworm);
        assert_eq!(Suite::parse("13").unwrap(), Suite::Trixie);
        let err = Suite::parse("sid").unwrap_err().to_string();
        assert!(
            err.contains("deb:bullseye")
                && err.contains("deb:bookworm")
                && err.contains("deb:trixie"),
            "{err}"
        );
        assert!(matches!(Suite::parse(""), Err(Error::Usage(_))));
    }

    #[test]
    fn carried_keys_load() {
        // Every keyring file holds at least one key, and the release keys are among them.
        for (name, bytes) in KEYRINGS {
            assert!(!super::super::index::keys_from(bytes).is_empty(), "{name}");
        }
        assert!(debian_keys().len() >= KEYRINGS.len());
        // A mirror key that is not a key is refused by name.
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("k.gpg");
        std::fs::write(&bad, b"not a key").unwrap();
        let mut base = DebBase {
            suite: Suite::Bookworm,
            mirror: DebMirror {
                key: Some(bad),
                ..Default::default()
            },
        };
        assert!(base.keys().unwrap_err().to_string().contains("no OpenPGP"));
        // A key file that cannot be read is named with the flag, its cause kept.
        base.mirror.key = Some(dir.path().join("missing.gpg"));
        let err = base.keys().unwrap_err();
        assert!(
            err.to_string().starts_with("read --deb-mirror-key ")
                && err.to_string().contains("missing.gpg"),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn an_untrusted_signature_says_what_to_give() {
        let mut base = DebBase {
            suite: Suite::Bookworm,
            mirror: DebMirror::default(),
        };
        let hint = base.untrusted_hint();
        assert!(hint.contains("scripts/refresh-debian-keys"), "{hint}");
        assert!(!hint.contains("--deb-mirror-key"), "{hint}");
        // A mirror (or only a security mirror) without its key: give it.
        for (url, security) in [
            (Some("http://m.local/debian"), None),
            (None, Some("http://s.local")),
        ] {
            base.mirror.url = url.map(Into::into);
            base.mirror.security = security.map(Into::into);
            let hint = base.untrusted_hint();
            assert!(hint.contains("--deb-mirror-key FILE"), "{hint}");
            assert!(hint.contains("deb-mirror-key in imgbuild.toml"), "{hint}");
        }
        // With a key that did not sign it: that key named.
        base.mirror.key = Some("/etc/site/mirror.gpg".into());
        let hint = base.untrusted_hint();
        assert!(
            hint.contains("--deb-mirror-key /etc/site/mirror.gpg"),
            "{hint}"
        );
    }

    #[test]
    fn sources_and_the_security_root() {
        let mut base = DebBase {
            suite: Suite::Bookworm,
            mirror: DebMirror::default(),
        };
        let s = base.sources();
        let pairs: Vec<(&str, &str)> = s
            .iter()
            .map(|s| (s.uri.as_str(), s.suite.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                (DEFAULT_MIRROR, "bookworm"),
                (DEFAULT_MIRROR, "bookworm-updates"),
                (DEFAULT_SECURITY_MIRROR, "bookworm-security"),
            ]
        );
        base.mirror.url = Some("http://mirror.local/debian/".into());
        assert_eq!(
            base.roots(),
            (
                "http://mirror.local/debian".into(),
                "http://mirror.local/debian-security".into()
            )
        );
        base.mirror.url = Some("http://aptly.local/all".into());
        assert_eq!(base.roots().1, "http://aptly.local/all");
        base.mirror.security = Some("http://sec.local/x".into());
        assert_eq!(base.roots().1, "http://sec.local/x");
    }
}
