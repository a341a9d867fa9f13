//! Shared libraries resolved the way ld.so would (`DT_RPATH`, `LD_LIBRARY_PATH`, `DT_RUNPATH`,
//! ld.so.conf, the default directories), and the problems a missing library, an old glibc or
//! a missing program interpreter make, each with its fix.

use crate::fs::elf::ElfInfo;
use crate::fs::{Node, RootFs, normalize};

use super::{ImageEnv, Problem};

/// The Debian package that provides `lib` (a soname), when it is one Elixir releases commonly
/// need.
pub(crate) fn debian_package_for(lib: &str) -> Option<&'static str> {
    DEBIAN_PACKAGES
        .iter()
        .find(|(l, _)| *l == lib)
        .map(|(_, p)| *p)
}

/// Debian packages that provide libraries Elixir releases commonly need (bookworm names).
/// Answers "which package" without a package index; runtime packages bring the full one.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("libcrypto.so.3", "libssl3"),
    ("libssl.so.3", "libssl3"),
    ("libcrypto.so.1.1", "libssl1.1"),
    ("libssl.so.1.1", "libssl1.1"),
    ("libstdc++.so.6", "libstdc++6"),
    ("libgcc_s.so.1", "libgcc-s1"),
    ("libtinfo.so.6", "libtinfo6"),
    ("libncursesw.so.6", "libncursesw6"),
    ("libncurses.so.6", "libncurses6"),
    ("libz.so.1", "zlib1g"),
    ("libsystemd.so.0", "libsystemd0"),
    ("libodbc.so.2", "libodbc2"),
    ("libsctp.so.1", "libsctp1"),
    ("libyaml-0.so.2", "libyaml-0-2"),
    ("libsqlite3.so.0", "libsqlite3-0"),
    ("libpq.so.5", "libpq5"),
    ("libvips.so.42", "libvips42"),
    ("libc.so.6", "libc6"),
    ("libm.so.6", "libc6"),
    ("libpthread.so.0", "libc6"),
    ("libdl.so.2", "libc6"),
    ("librt.so.1", "libc6"),
];

pub(super) struct Ctx<'a> {
    pub(super) fs: &'a RootFs,
    pub(super) env: &'a ImageEnv,
    /// ld.so.conf's directories, then the defaults.
    system_dirs: Vec<String>,
    pub(super) glibc: Option<String>,
    debian: bool,
    musl: Option<String>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(fs: &'a RootFs, env: &'a ImageEnv) -> Ctx<'a> {
        let mut system_dirs = Vec::new();
        ld_so_conf(fs, "/etc/ld.so.conf", &mut system_dirs, 0);
        for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
            if !system_dirs.iter().any(|s| s == d) {
                system_dirs.push(d.to_string());
            }
        }
        let mut ctx = Ctx {
            fs,
            env,
            system_dirs,
            glibc: None,
            debian: fs.exists("/etc/debian_version")
                || fs.contents("/var/lib/dpkg/status").is_some(),
            musl: ["/lib", "/usr/lib"]
                .iter()
                .flat_map(|d| fs.list(d))
                .find(|p| {
                    p.rsplit('/')
                        .next()
                        .is_some_and(|n| n.starts_with("ld-musl-"))
                }),
        };
        ctx.glibc =
            ctx.system_dirs
                .iter()
                .find_map(|d| match fs.lookup(&format!("{d}/libc.so.6")) {
                    Some((_, Node::File { elf: Some(e), .. })) => e.glibc_release(),
                    _ => None,
                });
        ctx
    }

    /// Where ld.so would find `lib` for the ELF at `path`: (image path, its ELF info).
    pub(super) fn find_library(
        &self,
        path: &str,
        info: &ElfInfo,
        lib: &str,
    ) -> Option<(String, Option<ElfInfo>)> {
        if lib.contains('/') {
            return self.candidate(&normalize(lib), info);
        }
        let origin = path.rsplit_once('/').map_or("/", |(d, _)| d);
        let expand = |d: &String| {
            d.replace("${ORIGIN}", origin)
                .replace("$ORIGIN", origin)
                .replace("$LIB", if info.is_64 { "lib64" } else { "lib" })
        };
        let mut dirs: Vec<String> = Vec::new();
        if info.runpath.is_empty() {
            dirs.extend(info.rpath.iter().map(expand));
        }
        if let Some(l) = &self.env.ld_library_path {
            dirs.extend(l.split(':').filter(|d| !d.is_empty()).map(str::to_string));
        }
        dirs.extend(info.runpath.iter().map(expand));
        dirs.extend(self.system_dirs.iter().cloned());
        dirs.iter()
            .find_map(|d| self.candidate(&normalize(&format!("{d}/{lib}")), info))
    }

    /// `path` if it is a library the loader would accept for `user` (same machine and class).
    fn candidate(&self, path: &str, user: &ElfInfo) -> Option<(String, Option<ElfInfo>)> {
        match self.fs.lookup(path)? {
            (real, Node::File { elf: Some(e), .. }) => (e.machine == user.machine
                && e.is_64 == user.is_64)
                .then(|| (real, Some(e.clone()))),
            // An ELF file we did not parse: assume the loader takes it. Anything else (a text
            // file, say, reached through a link) the loader refuses.
            (
                real,
                Node::File {
                    elf: None,
                    not_elf: false,
                    ..
                },
            ) => Some((real, None)),
            _ => None,
        }
    }

    pub(super) fn missing_library(&self, path: &str, lib: &str) -> Problem {
        let fix = match (self.debian, debian_package_for(lib)) {
            (true, Some(pkg)) => format!(
                "add the Debian package {pkg} to the image (--package {pkg}), or use a base that has it"
            ),
            (true, None) => format!(
                "add the Debian package that provides {lib} (--package NAME; `apt-file search {lib}` tells which), or use a base that has it"
            ),
            (false, Some(pkg)) => {
                format!("use a base image that has {lib} (Debian's package {pkg} provides it)")
            }
            (false, None) => format!("use a base image that has {lib}"),
        };
        Problem {
            file: path.to_string(),
            needs: lib.to_string(),
            missing: format!(
                "{lib} is not in the image (searched {})",
                self.system_dirs.join(":")
            ),
            fix,
        }
    }

    pub(super) fn version_problem(
        &self,
        path: &str,
        lib: &str,
        found: &str,
        lacking: &[&String],
    ) -> Problem {
        let glibc_needed = lacking
            .iter()
            .filter_map(|v| ElfInfo::glibc_version(v).map(|n| (n, v.as_str())))
            .max()
            .map(|(_, v)| v.trim_start_matches("GLIBC_").to_string());
        let fix = match (&glibc_needed, &self.glibc) {
            (Some(need), Some(have)) => format!(
                "use a base whose glibc is at least {need} (this one has {have}), e.g. debian:bookworm-slim, or build the release on a system with glibc {have}"
            ),
            (Some(need), None) => format!("use a base whose glibc is at least {need}"),
            _ => format!("use a base (or add a package) with a newer {lib}"),
        };
        Problem {
            file: path.to_string(),
            needs: format!(
                "{} from {lib}",
                lacking
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            missing: format!(
                "{found} in the image does not define {}",
                lacking
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix,
        }
    }

    pub(super) fn interpreter_problem(&self, path: &str, interp: &str) -> Problem {
        let fix = match &self.musl {
            Some(m) if interp.contains("ld-linux") => format!(
                "the base uses musl libc ({m}) but the release was built against glibc: use a glibc base such as debian:bookworm-slim, or build the release on Alpine"
            ),
            _ => "use a base with the C library the release was built against, such as debian:bookworm-slim".to_string(),
        };
        Problem {
            file: path.to_string(),
            needs: format!("the program interpreter {interp}"),
            missing: format!("{interp} is not in the image"),
            fix,
        }
    }
}

/// Directories named by an ld.so.conf file and its `include`s (glob patterns with `*`).
fn ld_so_conf(fs: &RootFs, file: &str, out: &mut Vec<String>, depth: u32) {
    if depth > 8 {
        return;
    }
    let Some(bytes) = fs.contents(file) else {
        return;
    };
    let text = String::from_utf8_lossy(bytes).into_owned();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(pattern) = line.strip_prefix("include") {
            for pat in pattern.split_whitespace() {
                let pat = if pat.starts_with('/') {
                    pat.to_string()
                } else {
                    format!("/etc/{pat}")
                };
                let (dir, name) = pat.rsplit_once('/').unwrap_or(("/", &pat));
                for candidate in fs.list(dir) {
                    let base = candidate.rsplit('/').next().unwrap_or("");
                    if glob_match(name, base) {
                        ld_so_conf(fs, &candidate, out, depth + 1);
                    }
                }
            }
            continue;
        }
        for dir in line
            .split([':', ',', ' ', '\t'])
            .filter(|d| d.starts_with('/'))
        {
            let d = normalize(dir);
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob_match(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{base, beam, lib};
    use super::super::{ImageEnv, check};
    use super::*;

    #[test]
    fn finds_missing_libraries_old_glibc_and_wrong_machine() {
        let mut fs = base();
        // ld.so.conf is read from the tree; here the multiarch directory comes from it.
        let conf = b"include /etc/ld.so.conf.d/*.conf\n".to_vec();
        let mut tar = tar::Builder::new(Vec::new());
        for (p, data) in [
            ("etc/ld.so.conf", conf),
            (
                "etc/ld.so.conf.d/x86_64-linux-gnu.conf",
                b"# multiarch\n/usr/lib/x86_64-linux-gnu\n".to_vec(),
            ),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, p, &data[..]).unwrap();
        }
        fs.apply_layer(&tar.into_inner().unwrap()[..], "conf")
            .unwrap();
        let env = ImageEnv::default();
        let ok = beam(&["libc.so.6"], "GLIBC_2.2.5");
        let r = check(
            &fs,
            &[("/app/erts/bin/beam.smp".into(), ok)],
            &[],
            "amd64",
            &env,
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.glibc.as_deref(), Some("2.31"));

        let crypto = beam(&["libcrypto.so.3", "libc.so.6"], "GLIBC_2.2.5");
        let new = beam(&["libc.so.6"], "GLIBC_2.34");
        let mut arm = beam(&[], "GLIBC_2.17");
        arm.machine = goblin::elf::header::EM_AARCH64;
        let r = check(
            &fs,
            &[
                ("/app/lib/crypto/priv/lib/crypto.so".into(), crypto),
                ("/app/erts/bin/beam.smp".into(), new),
                ("/app/erts/bin/arm".into(), arm),
            ],
            &[],
            "amd64",
            &env,
        );
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert!(
            r.problems[0].needs == "libcrypto.so.3"
                && r.problems[0].fix.contains("--package libssl3")
        );
        assert!(
            r.problems[1].needs.contains("GLIBC_2.34")
                && r.problems[1]
                    .fix
                    .contains("at least 2.34 (this one has 2.31)")
        );
        assert!(r.problems[2].needs.contains("AArch64"));
        let text = r.render();
        assert!(
            text.contains("crypto.so") && text.contains("--no-check"),
            "{text}"
        );
    }

    #[test]
    fn origin_runpath_and_globs() {
        let mut fs = base();
        fs.insert("/app/lib/x/priv/libhelper.so", lib(&[]));
        let mut nif = beam(&["libhelper.so"], "GLIBC_2.2.5");
        nif.runpath = vec!["$ORIGIN".into()];
        let r = check(
            &fs,
            &[("/app/lib/x/priv/nif.so".into(), nif)],
            &[],
            "amd64",
            &ImageEnv::default(),
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(glob_match("*.conf", "x86_64-linux-gnu.conf"));
        assert!(!glob_match("*.conf", "README"));
        assert!(glob_match("a*b*c", "aXXbYc"));
    }
}
