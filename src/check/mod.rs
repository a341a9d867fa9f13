//! Refuse images that cannot start: every ELF file of the release is checked against the
//! image it will run in (machine, program interpreter, `DT_NEEDED` libraries resolved the way
//! ld.so would, GNU symbol versions such as `GLIBC_2.34`), and the release's shell scripts
//! against the commands the image has. Problems come with the fix.

mod erts;
mod files;
mod libs;
pub(crate) mod report;
mod scripts;
mod summary;

pub(crate) use erts::base_erts;
pub use files::{LayerFacts, Scripts, add_entries, add_entries_cached, add_layer, release_scripts};
pub(crate) use libs::debian_package_for;
pub use report::{CheckFailure, CheckReport, Problem};
pub(crate) use summary::{
    base_rootfs, cached_summary, keep_summary, summary_bytes, summary_key, summary_of,
};

use crate::fs::elf::{self, ElfInfo};
use crate::fs::{RootFs, normalize};

use libs::Ctx;

/// What the image's environment says about library and command lookup.
#[derive(Clone, Debug, Default)]
pub struct ImageEnv {
    pub path: Option<String>,
    pub ld_library_path: Option<String>,
}

impl ImageEnv {
    pub(crate) fn from_env(env: &[String]) -> ImageEnv {
        let get = |k: &str| {
            env.iter()
                .find_map(|e| e.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .map(str::to_string)
        };
        ImageEnv {
            path: get("PATH"),
            ld_library_path: get("LD_LIBRARY_PATH"),
        }
    }
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The start-up check of a release: [`check`], and for a release built with
/// `include_erts: false` the image's own Erlang ([`base_erts`]), whose ELF files are checked
/// like the release's.
pub(crate) fn check_release(
    fs: &RootFs,
    elves: &[(String, ElfInfo)],
    scripts: &[(String, String)],
    architecture: &str,
    env: &ImageEnv,
    release: &crate::release::Release,
    workdir: &str,
) -> CheckReport {
    if release.includes_erts {
        return check(fs, elves, scripts, architecture, env);
    }
    let start = format!("/{}/bin/{}", workdir.trim_matches('/'), release.name);
    match base_erts(fs, env, release, workdir, &start) {
        Ok(erts) => {
            let all: Vec<_> = elves.iter().cloned().chain(erts).collect();
            check(fs, &all, scripts, architecture, env)
        }
        Err(problem) => {
            let mut report = check(fs, elves, scripts, architecture, env);
            report.problems.insert(0, problem);
            report
        }
    }
}

/// A layer the image adds that replaces a link or a directory of the layers below it (or puts
/// entries under a link, which engines unpack differently) changes what the base is: each is
/// one problem, naming the layer, the path and what was there.
fn replaced_problems(fs: &RootFs) -> Vec<Problem> {
    fs.replaced()
        .iter()
        .map(|r| {
            let layer = if r.layer.is_empty() {
                "a layer this image adds"
            } else {
                r.layer.as_str()
            };
            let fix = match r.was.strip_prefix("a link to ") {
                Some(target) => format!(
                    "put the layer's entries under the link's target ({}) instead of {}; a layer must never replace a link of the base",
                    normalize(&format!("{}/../{target}", r.path)),
                    r.path
                ),
                None => format!(
                    "leave {} a directory in the layer, or move the entry elsewhere",
                    r.path
                ),
            };
            Problem {
                file: r.path.clone(),
                needs: format!("{} as the base has it: {}", r.path, r.was),
                missing: format!(
                    "{layer} has {} there, which replaces it and hides what the base has at {}",
                    r.by, r.path
                ),
                fix,
            }
        })
        .collect()
}

/// Run the start-up check of `elves` (the release's ELF files) and the release's scripts.
pub(crate) fn check(
    fs: &RootFs,
    elves: &[(String, ElfInfo)],
    scripts: &[(String, String)],
    architecture: &str,
    env: &ImageEnv,
) -> CheckReport {
    let replaced = replaced_problems(fs);
    if !replaced.is_empty() {
        // Everything else follows from a replaced link or directory (on a merged-/usr base,
        // a `/lib` directory hides the C library's loader): name the cause, not its effects.
        return CheckReport {
            elf_files: elves.len(),
            glibc: None,
            problems: replaced,
        };
    }
    let ctx = Ctx::new(fs, env);
    let mut problems = Vec::new();
    let expected = elf::machine_for(architecture);
    for (path, info) in elves {
        if let Some(m) = expected
            && info.machine != m
        {
            problems.push(Problem {
                file: path.clone(),
                needs: format!("a {} machine", elf::machine_name(info.machine)),
                missing: format!("the image is for {architecture}"),
                fix: format!(
                    "build the release for {architecture} (on such a machine, or cross-compiled), or build the image for the release's platform with --platform"
                ),
            });
            continue;
        }
        if let Some(interp) = &info.interpreter
            && !fs.exists(interp)
        {
            problems.push(ctx.interpreter_problem(path, interp));
            continue;
        }
        for lib in &info.needed {
            match ctx.find_library(path, info, lib) {
                None => problems.push(ctx.missing_library(path, lib)),
                Some(found) => {
                    let wanted = info
                        .requires
                        .iter()
                        .filter(|(f, _)| f == lib)
                        .flat_map(|(_, v)| v.iter());
                    let mut lacking: Vec<&String> = match &found.1 {
                        Some(def) => wanted.filter(|v| !def.defines.contains(v)).collect(),
                        None => vec![],
                    };
                    lacking.sort_by_key(|v| (ElfInfo::glibc_version(v), v.to_string()));
                    lacking.dedup();
                    if !lacking.is_empty() {
                        problems.push(ctx.version_problem(path, lib, &found.0, &lacking));
                    }
                }
            }
        }
    }
    for (path, text) in scripts {
        problems.extend(ctx.script_problems(path, text));
    }
    CheckReport {
        elf_files: elves.len(),
        glibc: ctx.glibc.clone(),
        problems,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::fs::Node;
    use crate::release::{EntryKind, LayerPlan};

    pub(super) fn lib(defines: &[&str]) -> Node {
        Node::File {
            mode: 0o755,
            elf: Some(ElfInfo {
                machine: goblin::elf::header::EM_X86_64,
                is_64: true,
                defines: defines.iter().map(|s| s.to_string()).collect(),
                ..ElfInfo::default()
            }),
            not_elf: false,
        }
    }

    pub(super) fn base() -> RootFs {
        let mut fs = RootFs::new();
        fs.insert(
            "/etc/debian_version",
            Node::File {
                mode: 0o644,
                elf: None,
                not_elf: true,
            },
        );
        fs.insert(
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            lib(&["GLIBC_2.2.5", "GLIBC_2.31"]),
        );
        fs.insert("/lib", Node::Symlink("usr/lib".into()));
        fs.insert("/lib64/ld-linux-x86-64.so.2", lib(&[]));
        fs.insert(
            "/usr/bin/dash",
            Node::File {
                mode: 0o755,
                elf: None,
                not_elf: false,
            },
        );
        fs.insert("/bin", Node::Symlink("usr/bin".into()));
        fs.insert("/usr/bin/sh", Node::Symlink("dash".into()));
        fs.insert(
            "/usr/bin/cat",
            Node::File {
                mode: 0o755,
                elf: None,
                not_elf: false,
            },
        );
        fs
    }

    pub(super) fn beam(needed: &[&str], glibc: &str) -> ElfInfo {
        ElfInfo {
            machine: goblin::elf::header::EM_X86_64,
            is_64: true,
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            needed: needed.iter().map(|s| s.to_string()).collect(),
            requires: vec![("libc.so.6".into(), vec![glibc.into()])],
            ..ElfInfo::default()
        }
    }

    #[test]
    fn a_layer_that_replaces_a_base_link_is_named_not_the_c_library() {
        // bookworm's libtinfo5 unpacked as it ships, `lib/` a directory, over `/lib -> usr/lib`.
        let mut fs = base();
        let plan = LayerPlan {
            kind: crate::oci::LayerKind::Packages,
            entries: ["lib", "lib/x86_64-linux-gnu"]
                .iter()
                .map(|p| crate::release::Entry {
                    path: p.to_string(),
                    source: None,
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                })
                .collect(),
        };
        let elves = add_entries(&mut fs, &[plan]).unwrap();
        let report = check(
            &fs,
            &[(
                "/app/erts/bin/beam.smp".into(),
                beam(&["libc.so.6"], "GLIBC_2.31"),
            )],
            &[],
            "amd64",
            &ImageEnv::default(),
        );
        assert!(elves.is_empty());
        assert_eq!(report.problems.len(), 1, "{}", report.render());
        let p = &report.problems[0];
        assert_eq!(p.file, "/lib");
        assert!(p.needs.contains("a link to usr/lib"), "{p:?}");
        assert!(
            p.missing.contains("the packages layer has a directory"),
            "{p:?}"
        );
        assert!(p.fix.contains("/usr/lib"), "{p:?}");
        let text = report.render();
        assert!(
            !text.contains("bookworm-slim") && !text.contains("glibc"),
            "{text}"
        );
    }
}
