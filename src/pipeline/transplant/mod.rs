//! The ERTS transplant: the release for another platform made from this one. A release is
//! mostly portable (`.beam` files, boot scripts, `sys.config`, static assets); only its ELF
//! files are not: ERTS (`erts-<vsn>/bin/*`) and NIFs and port programs under `lib/*/priv/`.
//! When all of those come from Erlang/OTP itself, the same OTP version's builds for the target
//! platform, taken from an image that holds that OTP, replace them file for file, and every
//! other byte of the release stays as it is.

mod choose;
mod roles;
mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::fs::elf::machine_for;
use crate::fs::normalize;
use crate::oci::platform::Platform;
use crate::registry::RegistryClient;
use crate::release::{EntryKind, LayerPlan, Release};
use crate::source::{self, Source};

use choose::{Chosen, choose};
use roles::app_of;
use scan::scan_cached;

/// An ELF file of the release: its path relative to the release root, and its machine.
#[derive(Clone, Debug)]
pub struct Native {
    pub rel: String,
    pub machine: u16,
}

/// The ELF machine in a file's header, when it is an ELF file.
pub(crate) fn elf_machine(path: &Path) -> Option<u16> {
    let mut head = [0u8; 20];
    let mut f = std::fs::File::open(path).ok()?;
    f.read_exact(&mut head).ok()?;
    if &head[..4] != b"\x7fELF" {
        return None;
    }
    let m = [head[18], head[19]];
    Some(match head[5] {
        2 => u16::from_be_bytes(m),
        _ => u16::from_le_bytes(m),
    })
}

/// Every ELF file among the planned release layers' files.
pub(crate) fn natives(plans: &[LayerPlan], workdir: &str) -> Vec<Native> {
    let prefix = format!("{}/", workdir.trim_matches('/'));
    plans
        .iter()
        .flat_map(|p| &p.entries)
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .filter_map(|e| {
            let rel = e.path.strip_prefix(&prefix)?;
            let machine = elf_machine(e.source.as_deref()?)?;
            Some(Native {
                rel: rel.to_string(),
                machine,
            })
        })
        .collect()
}

/// The machine a release is built for: its ERTS's, else its first native file's; `None` for
/// a release without native code (which runs anywhere its base's Erlang does).
pub(crate) fn release_machine(natives: &[Native]) -> Option<u16> {
    natives
        .iter()
        .find(|n| n.rel.starts_with("erts-") && n.rel.ends_with("/bin/beam.smp"))
        .or_else(|| natives.first())
        .map(|n| n.machine)
}

/// What the transplant did, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct TransplantReport {
    /// The image the native files came from, and its manifest digest.
    pub from: String,
    pub digest: Option<String>,
    /// Where Erlang/OTP lies in that image (e.g. `/usr/lib/erlang`).
    pub otp_root: String,
    /// Every file replaced, relative to the release root.
    pub files: Vec<String>,
    /// Development tools of the release's ERTS (`ct_run`, `dialyzer`, ...) that the image's
    /// Erlang/OTP lacks, left out of this platform's release; relative to the release root.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

/// The target platform's native files, staged on disk, ready to stand in for the release's.
pub struct Transplant {
    pub report: TransplantReport,
    /// Release-relative path → the file (a blob in the cache) and its size.
    files: BTreeMap<String, (PathBuf, u64)>,
    /// Release-relative paths of the files left out (see [`TransplantReport::left_out`]).
    left_out: BTreeSet<String>,
}

/// Read `otp_from` for `platform` and stage, for each of the release's native files, the file
/// at the same place in the image's Erlang/OTP. Refuses (naming every file) native code that
/// does not come from OTP, another ERTS version, or another version of an OTP application.
pub(crate) async fn prepare(
    natives: &[Native],
    release: &Release,
    otp_from: &Source,
    platform: &Platform,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<Transplant> {
    let want = machine_for(&platform.architecture).ok_or_else(|| {
        Error::Input(format!(
            "cannot transplant to {platform}: imgbuild does not know its ELF machine"
        ))
    })?;
    let apps: BTreeSet<String> = natives
        .iter()
        .filter_map(|n| app_of(&n.rel).map(|(a, _)| a))
        .collect();
    let image = source::read_image(otp_from, Some(platform), cache, client).await?;
    let mut local = Vec::new();
    for l in &image.layers {
        local.push(source::localize(&l.blob, cache, client).await?);
    }
    let what = otp_from.describe();
    let (layers, w, c) = (image.layers.clone(), what.clone(), cache.clone());
    let scan = crate::blocking(move || scan_cached(&layers, &local, &apps, &c, &w)).await?;
    let Chosen {
        root,
        files,
        left_out,
    } = choose(natives, &release.erts_version, &scan, want, &what, platform)?;
    Ok(Transplant {
        report: TransplantReport {
            from: image.origin.name.clone(),
            digest: image.origin.digest.as_ref().map(ToString::to_string),
            otp_root: format!("/{}", root.trim_end_matches('/')),
            files: files.keys().cloned().collect(),
            left_out: left_out.iter().cloned().collect(),
        },
        files,
        left_out,
    })
}

impl Transplant {
    /// Point the release layers' native files at the staged ones, and take out the files left
    /// out (with any symbolic link of the release to one of them).
    pub(crate) fn apply(&self, plans: &mut [LayerPlan], workdir: &str) {
        let prefix = format!("{}/", workdir.trim_matches('/'));
        let gone = |e: &crate::release::Entry| -> bool {
            let Some(rel) = e.path.strip_prefix(&prefix) else {
                return false;
            };
            match &e.kind {
                EntryKind::File { .. } => self.left_out.contains(rel),
                EntryKind::Symlink { target } if !target.starts_with('/') => {
                    let parent = rel.rsplit_once('/').map_or("", |(d, _)| d);
                    let to = normalize(&format!("{parent}/{target}"));
                    self.left_out.contains(to.trim_start_matches('/'))
                }
                _ => false,
            }
        };
        for p in plans.iter_mut() {
            p.entries.retain(|e| !gone(e));
        }
        for e in plans.iter_mut().flat_map(|p| p.entries.iter_mut()) {
            let Some(rel) = e.path.strip_prefix(&prefix) else {
                continue;
            };
            if let Some((staged, size)) = self.files.get(rel) {
                e.source = Some(staged.clone());
                e.kind = EntryKind::File { size: *size };
            }
        }
    }

    /// The warning for the files left out of `platform`'s release, if any.
    pub(crate) fn warning(&self, platform: &Platform) -> Option<String> {
        if self.report.left_out.is_empty() {
            return None;
        }
        Some(format!(
            "left out of the release for {platform}: {}: development tools (no release start, eval or remote runs them) that came with the Erlang/OTP the release was built with; {} has no build of them for {platform}",
            self.report.left_out.join(", "),
            self.report.from
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_out_files_leave_the_layers_with_their_links() {
        let file = |path: &str| crate::release::Entry {
            path: path.into(),
            source: Some(PathBuf::from("/nowhere")),
            kind: EntryKind::File { size: 1 },
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        let link = |path: &str, target: &str| crate::release::Entry {
            kind: EntryKind::Symlink {
                target: target.into(),
            },
            source: None,
            ..file(path)
        };
        let mut plans = vec![LayerPlan {
            kind: crate::oci::LayerKind::Erts,
            entries: vec![
                file("app/erts-13.1.5/bin/beam.smp"),
                file("app/erts-13.1.5/bin/ct_run"),
                file("app/erts-13.1.5/bin/dialyzer"),
                link("app/erts-13.1.5/bin/ct", "ct_run"),
                link("app/bin/ct_run", "../erts-13.1.5/bin/ct_run"),
                link("app/bin/erl", "../erts-13.1.5/bin/erl"),
            ],
        }];
        let staged = PathBuf::from("/cache/beam");
        let t = Transplant {
            report: TransplantReport {
                from: "oci:otp".into(),
                digest: None,
                otp_root: "/usr/lib/erlang".into(),
                files: vec!["erts-13.1.5/bin/beam.smp".into()],
                left_out: vec![
                    "erts-13.1.5/bin/ct_run".into(),
                    "erts-13.1.5/bin/dialyzer".into(),
                ],
            },
            files: BTreeMap::from([("erts-13.1.5/bin/beam.smp".to_string(), (staged.clone(), 7))]),
            left_out: BTreeSet::from([
                "erts-13.1.5/bin/ct_run".to_string(),
                "erts-13.1.5/bin/dialyzer".to_string(),
            ]),
        };
        t.apply(&mut plans, "/app");
        let paths: Vec<&str> = plans[0].entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["app/erts-13.1.5/bin/beam.smp", "app/bin/erl"]);
        assert_eq!(plans[0].entries[0].source.as_ref(), Some(&staged));
        assert_eq!(plans[0].entries[0].kind, EntryKind::File { size: 7 });
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let warning = t.warning(&arm64).unwrap();
        assert!(
            warning.starts_with("left out of the release for linux/arm64: erts-13.1.5/bin/ct_run, erts-13.1.5/bin/dialyzer: development tools"),
            "{warning}"
        );
        assert!(
            warning.contains("oci:otp has no build of them for linux/arm64"),
            "{warning}"
        );
        let json = serde_json::to_value(&t.report).unwrap();
        assert_eq!(
            json["left_out"],
            serde_json::json!(["erts-13.1.5/bin/ct_run", "erts-13.1.5/bin/dialyzer"])
        );
        // Nothing left out: no warning, and no `left_out` in the report.
        let none = Transplant {
            report: TransplantReport {
                left_out: Vec::new(),
                ..t.report.clone()
            },
            files: BTreeMap::new(),
            left_out: BTreeSet::new(),
        };
        assert_eq!(none.warning(&arm64), None);
        assert!(
            serde_json::to_value(&none.report)
                .unwrap()
                .get("left_out")
                .is_none()
        );
    }

    #[test]
    fn reads_the_machine_of_this_binary() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            elf_machine(&exe),
            machine_for(&Platform::host().architecture)
        );
        assert_eq!(elf_machine(Path::new("/etc/hostname")), None);
    }
}
