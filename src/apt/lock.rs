//! `imgbuild.lock`: the runtime packages pinned, one section per architecture.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ImageError, Result};

pub const LOCK_FILE: &str = "imgbuild.lock";

/// What `imgbuild.lock` pins.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Locked {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
    pub size: u64,
    /// Where it was found; the --apt-source mirrors are tried first (with `filename`).
    pub url: String,
    /// The path below the archive root (`pool/main/o/openssl/...deb`).
    #[serde(default)]
    pub filename: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// The `--package` requests this lock answers, sorted.
    pub requested: Vec<String>,
    pub architecture: String,
    #[serde(default, rename = "package")]
    pub packages: Vec<Locked>,
    /// `--debug`: what the debug image adds (Debian's `busybox-static`), pinned apart from the
    /// runtime packages, which it never joins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub debug: Vec<Locked>,
    /// The same pins for the other architectures of a multi-platform build, one entry each.
    #[serde(
        default,
        rename = "architectures",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub others: Vec<LockFile>,
}

impl LockFile {
    /// The pins for `arch`, when the file has them.
    pub(crate) fn for_arch(&self, arch: &str) -> Option<&LockFile> {
        if self.architecture == arch {
            Some(self)
        } else {
            self.others.iter().find(|o| o.architecture == arch)
        }
    }

    /// Whether this section pins runtime packages (a section may hold the debug pins alone).
    pub(crate) fn pins_packages(&self) -> bool {
        !self.requested.is_empty() || !self.packages.is_empty()
    }

    /// This file with `section` (one architecture's pins) put in place of that architecture's.
    /// A part the section does not pin (its runtime packages, or its debug pins) stays as it
    /// was: a build resolves one part afresh without forgetting the other.
    pub(crate) fn with_section(self, mut section: LockFile) -> LockFile {
        section.others.clear();
        let keep = |section: &mut LockFile, old: &LockFile| {
            if !section.pins_packages() {
                section.requested = old.requested.clone();
                section.packages = old.packages.clone();
            }
            if section.debug.is_empty() {
                section.debug = old.debug.clone();
            }
        };
        if self.architecture == section.architecture {
            keep(&mut section, &self);
            return LockFile {
                others: self.others,
                ..section
            };
        }
        let mut out = self;
        if let Some(old) = out
            .others
            .iter()
            .find(|o| o.architecture == section.architecture)
        {
            keep(&mut section, old);
        }
        out.others
            .retain(|o| o.architecture != section.architecture);
        out.others.push(section);
        out.others
            .sort_by(|a, b| a.architecture.cmp(&b.architecture));
        out
    }

    pub(crate) fn load(path: &Path) -> Result<Option<LockFile>> {
        match std::fs::read_to_string(path) {
            Ok(t) => toml::from_str(&t).map(Some).map_err(|e| {
                Error::Input(format!(
                    "{}: not a valid lock file ({e}); delete it or run with --update-lock",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let body = toml::to_string_pretty(self)
            .map_err(|e| Error::from(ImageError::Package(format!("internal: lock file: {e}"))))?;
        let text = format!(
            "# Written by imgbuild: the runtime packages, pinned. Refresh with --update-lock.\n{body}"
        );
        crate::atomic::write_file(path, text.as_bytes())
    }
}

/// Put each architecture's pins (`sections`, in the order the platforms were asked for) into
/// the lock file at `path`: a section replaces its architecture's old pins, the others stay.
/// A new file's main architecture is the first section's.
pub fn save_sections(path: &Path, sections: Vec<LockFile>) -> Result<()> {
    let mut sections = sections.into_iter();
    let existing = LockFile::load(path)?;
    let Some(first) = existing.or_else(|| sections.next()) else {
        return Ok(());
    };
    let mut file = first;
    for s in sections {
        file = file.with_section(s);
    }
    file.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_file_for_every_architecture() {
        let section = |arch: &str, pkg: &str| LockFile {
            requested: vec!["libssl3".into()],
            architecture: arch.into(),
            packages: vec![Locked {
                name: pkg.into(),
                version: "1".into(),
                architecture: arch.into(),
                sha256: "0".repeat(64),
                size: 1,
                url: String::new(),
                filename: String::new(),
            }],
            debug: vec![],
            others: vec![],
        };
        let file = section("amd64", "a")
            .with_section(section("arm64", "b"))
            .with_section(section("amd64", "c"));
        assert_eq!(file.for_arch("amd64").unwrap().packages[0].name, "c");
        assert_eq!(file.for_arch("arm64").unwrap().packages[0].name, "b");
        assert!(file.for_arch("s390x").is_none());
        let text = toml::to_string_pretty(&file).unwrap();
        let back: LockFile = toml::from_str(&text).unwrap();
        assert_eq!(back, file);
        // A lock of one architecture reads as before.
        let one: LockFile =
            toml::from_str(&toml::to_string_pretty(&section("amd64", "a")).unwrap()).unwrap();
        assert!(one.others.is_empty());

        // Saved in the order of the platforms: a new file's main architecture is the first;
        // an existing file keeps its own and gets the sections put in place.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imgbuild.lock");
        save_sections(&path, vec![section("arm64", "b"), section("amd64", "a")]).unwrap();
        let saved = LockFile::load(&path).unwrap().unwrap();
        assert_eq!(saved.architecture, "arm64");
        assert_eq!(saved.for_arch("amd64").unwrap().packages[0].name, "a");
        save_sections(&path, vec![section("amd64", "c")]).unwrap();
        let saved = LockFile::load(&path).unwrap().unwrap();
        assert_eq!(saved.architecture, "arm64");
        assert_eq!(saved.for_arch("amd64").unwrap().packages[0].name, "c");
        assert_eq!(saved.for_arch("arm64").unwrap().packages[0].name, "b");
        save_sections(&path, vec![]).unwrap();
        assert_eq!(LockFile::load(&path).unwrap().unwrap(), saved);
    }

    #[test]
    fn debug_pins_and_package_pins_are_kept_apart() {
        let pin = |name: &str| Locked {
            name: name.into(),
            version: "1".into(),
            architecture: "amd64".into(),
            sha256: "0".repeat(64),
            size: 1,
            url: String::new(),
            filename: String::new(),
        };
        let packages = LockFile {
            requested: vec!["libssl3".into()],
            architecture: "amd64".into(),
            packages: vec![pin("libssl3")],
            ..Default::default()
        };
        let debug = LockFile {
            architecture: "amd64".into(),
            debug: vec![pin("busybox-static")],
            ..Default::default()
        };
        // A debug-only section keeps the packages; a packages-only one keeps the debug pins.
        let both = packages.clone().with_section(debug.clone());
        assert_eq!(both.packages, packages.packages);
        assert_eq!(both.requested, packages.requested);
        assert_eq!(both.debug, debug.debug);
        let again = both.clone().with_section(packages.clone());
        assert_eq!(again.debug, debug.debug);
        // Another architecture's section: the same, among `others`.
        let arm = |f: LockFile| LockFile {
            architecture: "arm64".into(),
            ..f
        };
        let file = both
            .with_section(arm(packages.clone()))
            .with_section(arm(debug.clone()));
        let a = file.for_arch("arm64").unwrap();
        assert!(a.pins_packages() && a.debug.len() == 1);
        // A debug-only section pins no packages, and round-trips as `[[debug]]`.
        assert!(!debug.pins_packages());
        let text = toml::to_string_pretty(&file).unwrap();
        assert!(text.contains("[[debug]]"), "{text}");
        assert_eq!(toml::from_str::<LockFile>(&text).unwrap(), file);
    }
}
