//! For each native file of the release, the file of the OTP image that stands in for it, or
//! why there is none.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::roles::{OTP_NATIVE_APPS, Role, app_of, erts_role, is_erts};
use super::scan::Scan;
use super::{Native, elf_machine};
use crate::error::{Error, IoContext, Result};
use crate::fs::elf::machine_name;
use crate::oci::platform::Platform;

/// Where each of the release's native files comes from in a scanned OTP image.
pub(super) struct Chosen {
    /// Where Erlang/OTP lies in the image (`usr/lib/erlang/`).
    pub(super) root: String,
    /// Release-relative path → the staged file and its size.
    pub(super) files: BTreeMap<String, (PathBuf, u64)>,
    /// Development tools the image lacks, left out.
    pub(super) left_out: BTreeSet<String>,
}

/// For each native file of a release with ERTS `erts`, the file standing in for it in `scan`
/// (of an image for `want`, described as `what`), or why there is none: refused, naming every
/// file, unless it is a development tool of ERTS's `bin/`, which is left out.
pub(super) fn choose(
    natives: &[Native],
    erts: &str,
    scan: &Scan,
    want: u16,
    what: &str,
    platform: &Platform,
) -> Result<Chosen> {
    // Native code outside ERTS and applications' priv/ cannot come from OTP.
    let mut refused: Vec<String> = natives
        .iter()
        .filter(|n| !is_erts(&n.rel) && app_of(&n.rel).is_none())
        .map(|n| {
            format!(
                "{}: native code outside ERTS and lib/*/priv cannot be transplanted",
                n.rel
            )
        })
        .collect();
    let Some(root) = scan
        .erts
        .iter()
        .find(|(_, v)| v == erts)
        .map(|(root, _)| root.clone())
    else {
        let found: Vec<String> = scan.erts.iter().map(|(_, v)| v.clone()).collect();
        return Err(Error::Input(if found.is_empty() {
            format!(
                "--otp-from {what} holds no Erlang/OTP for {platform} (no erts-*/bin/beam.smp in it): name an image with Erlang/OTP's ERTS {erts}"
            )
        } else {
            format!(
                "--otp-from {what} holds ERTS {} but the release needs ERTS {erts}: name an image with the same Erlang/OTP version as the release was built with",
                found.join(", ")
            )
        }));
    };
    let mut files = BTreeMap::new();
    let mut left_out = BTreeSet::new();
    for n in natives {
        if !is_erts(&n.rel) && app_of(&n.rel).is_none() {
            continue;
        }
        if let Some((app, vsn)) = app_of(&n.rel) {
            let have = scan.apps.get(&(root.clone(), app.clone()));
            match have {
                None if OTP_NATIVE_APPS.contains(&app.as_str()) => {
                    refused.push(format!(
                        "{}: native code of Erlang/OTP's {app}, which {what} does not hold: add {app} to that image (Debian's package erlang-{}) or leave {app} out of the release",
                        n.rel,
                        app.replace('_', "-")
                    ));
                    continue;
                }
                None => {
                    refused.push(format!(
                        "{}: native code of {app}, which {what} does not hold: it is not part of Erlang/OTP (a dependency's NIF)",
                        n.rel
                    ));
                    continue;
                }
                Some(versions) if !versions.contains(&vsn) => {
                    refused.push(format!(
                        "{}: the release has {app} {vsn}, {what} has {app} {}",
                        n.rel,
                        versions.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                    continue;
                }
                Some(_) => {}
            }
        }
        let full = format!("{root}{}", n.rel);
        // A program of ERTS's bin/ that OTP keeps in its own bin/ or an application's bin/.
        let name = n.rel.rsplit('/').next().unwrap_or_default();
        let elsewhere = || {
            is_erts(&n.rel)
                .then(|| {
                    scan.resolve(&format!("{root}bin/{name}")).or_else(|| {
                        let mut keys: Vec<&String> = scan
                            .staged
                            .keys()
                            .chain(scan.links.keys())
                            .filter(|k| {
                                k.starts_with(&format!("{root}lib/"))
                                    && k.ends_with(&format!("/bin/{name}"))
                            })
                            .collect();
                        keys.sort();
                        keys.first().and_then(|k| scan.resolve(k))
                    })
                })
                .flatten()
        };
        match scan.resolve(&full).or_else(elsewhere) {
            Some(staged) => match elf_machine(&staged) {
                Some(m) if m == want => {
                    let size = std::fs::metadata(&staged).ctx("stat", &staged)?.len();
                    files.insert(n.rel.clone(), (staged, size));
                }
                Some(m) => refused.push(format!(
                    "{}: /{full} in {what} is for {}, not {platform}",
                    n.rel,
                    machine_name(m)
                )),
                None => refused.push(format!("{}: /{full} in {what} is not an ELF file", n.rel)),
            },
            None => match erts_role(&n.rel) {
                // A tool for developers only: this platform's release goes without it.
                Some(Role::Development) => {
                    left_out.insert(n.rel.clone());
                }
                Some(Role::Unknown) => refused.push(format!(
                    "{}: {what} has no /{full} (imgbuild does not know what runs {name}, so it does not leave it out)",
                    n.rel
                )),
                _ => refused.push(format!("{}: {what} has no /{full}", n.rel)),
            },
        }
    }
    if !refused.is_empty() {
        return Err(Error::Input(format!(
            "cannot make the release for {platform} from {what}:\n  {}\nbuild the release natively for {platform} and pass --release {platform}=DIR",
            refused.join("\n  ")
        )));
    }
    Ok(Chosen {
        root,
        files,
        left_out,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const AARCH64: u16 = 183;

    /// A scan of an arm64 OTP image under `usr/lib/erlang/` with ERTS 13.1.5, crypto 5.1.4,
    /// and an ELF header (enough for the transplant) at each of `files` (relative to it).
    fn arm64_scan(dir: &Path, files: &[&str]) -> Scan {
        let mut scan = Scan::default();
        let root = "usr/lib/erlang/";
        scan.erts.push((root.into(), "13.1.5".into()));
        scan.apps.insert(
            (root.into(), "crypto".into()),
            BTreeSet::from(["5.1.4".to_string()]),
        );
        for (i, f) in files.iter().enumerate() {
            let mut head = b"\x7fELF\x02\x01\x01".to_vec();
            head.resize(18, 0);
            head.extend(AARCH64.to_le_bytes());
            let staged = dir.join(i.to_string());
            std::fs::write(&staged, head).unwrap();
            scan.staged.insert(format!("{root}{f}"), staged);
        }
        scan
    }

    fn natives_of(rels: &[&str]) -> Vec<Native> {
        rels.iter()
            .map(|r| Native {
                rel: r.to_string(),
                machine: 62,
            })
            .collect()
    }

    const RELEASE_NATIVES: &[&str] = &[
        "erts-13.1.5/bin/beam.smp",
        "erts-13.1.5/bin/erlexec",
        "erts-13.1.5/bin/heart",
        "erts-13.1.5/bin/typer",
        "erts-13.1.5/bin/ct_run",
        "erts-13.1.5/bin/dialyzer",
        "lib/crypto-5.1.4/priv/lib/crypto.so",
    ];

    #[test]
    fn development_tools_the_image_lacks_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        // Debian's erlang-base and erlang-crypto: typer, but no ct_run and no dialyzer.
        let scan = arm64_scan(
            dir.path(),
            &[
                "erts-13.1.5/bin/beam.smp",
                "erts-13.1.5/bin/erlexec",
                "erts-13.1.5/bin/heart",
                "erts-13.1.5/bin/typer",
                "lib/crypto-5.1.4/priv/lib/crypto.so",
            ],
        );
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let chosen = choose(
            &natives_of(RELEASE_NATIVES),
            "13.1.5",
            &scan,
            AARCH64,
            "oci:otp",
            &arm64,
        )
        .unwrap();
        assert_eq!(chosen.root, "usr/lib/erlang/");
        assert_eq!(
            chosen.left_out,
            BTreeSet::from([
                "erts-13.1.5/bin/ct_run".to_string(),
                "erts-13.1.5/bin/dialyzer".to_string()
            ])
        );
        let files: Vec<&String> = chosen.files.keys().collect();
        assert_eq!(
            files,
            [
                "erts-13.1.5/bin/beam.smp",
                "erts-13.1.5/bin/erlexec",
                "erts-13.1.5/bin/heart",
                "erts-13.1.5/bin/typer",
                "lib/crypto-5.1.4/priv/lib/crypto.so"
            ]
        );
    }

    #[test]
    fn run_time_and_unknown_programs_the_image_lacks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let scan = arm64_scan(
            dir.path(),
            &["erts-13.1.5/bin/beam.smp", "erts-13.1.5/bin/erlexec"],
        );
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let err = choose(
            &natives_of(&[
                "erts-13.1.5/bin/beam.smp",
                "erts-13.1.5/bin/heart",
                "erts-13.1.5/bin/my_tool",
                "erts-13.1.5/bin/ct_run",
                "lib/wx-2.2.1/priv/wxe_driver.so",
            ]),
            "13.1.5",
            &scan,
            AARCH64,
            "oci:otp",
            &arm64,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains(
                "erts-13.1.5/bin/heart: oci:otp has no /usr/lib/erlang/erts-13.1.5/bin/heart"
            ),
            "{err}"
        );
        assert!(
            err.contains("erts-13.1.5/bin/my_tool: oci:otp has no /usr/lib/erlang/erts-13.1.5/bin/my_tool (imgbuild does not know what runs my_tool"),
            "{err}"
        );
        // An OTP application's native code the image lacks stays refused, even wx's.
        assert!(
            err.contains("lib/wx-2.2.1/priv/wxe_driver.so: native code of Erlang/OTP's wx, which oci:otp does not hold: add wx to that image (Debian's package erlang-wx)"),
            "{err}"
        );
        assert!(err.contains("--release linux/arm64=DIR"), "{err}");
        // A development tool is not among the refusals.
        assert!(!err.contains("ct_run"), "{err}");
        // A development tool the image has for another machine is refused, not left out.
        let mut wrong = arm64_scan(dir.path(), &["erts-13.1.5/bin/beam.smp"]);
        wrong.staged.insert(
            "usr/lib/erlang/erts-13.1.5/bin/ct_run".into(),
            std::env::current_exe().unwrap(),
        );
        let err = choose(
            &natives_of(&["erts-13.1.5/bin/beam.smp", "erts-13.1.5/bin/ct_run"]),
            "13.1.5",
            &wrong,
            AARCH64,
            "oci:otp",
            &arm64,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains(
                "erts-13.1.5/bin/ct_run: /usr/lib/erlang/erts-13.1.5/bin/ct_run in oci:otp is for"
            ),
            "{err}"
        );
    }
}
