//! The release's shell scripts against the image: their shell, and the commands the
//! `mix release` start scripts call, on the image's PATH.

use super::libs::Ctx;
use super::{DEFAULT_PATH, Problem};

/// Commands the `mix release` start scripts call (see elixir-release-facts).
const SCRIPT_COMMANDS: &[&str] = &[
    "cut", "sed", "grep", "dirname", "basename", "readlink", "cat",
];

impl Ctx<'_> {
    pub(super) fn script_problems(&self, path: &str, text: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let Some(first) = text.lines().next() else {
            return out;
        };
        let Some(shebang) = first.strip_prefix("#!") else {
            return out;
        };
        let interp = shebang.split_whitespace().next().unwrap_or("");
        if interp.is_empty() {
            return out;
        }
        let shell_fix = "use a base with a POSIX shell and coreutils, sed and grep, such as debian:bookworm-slim (distroless and scratch bases have none)";
        if !self.fs.is_executable_file(interp) {
            out.push(Problem {
                file: path.to_string(),
                needs: format!("the shell {interp}"),
                missing: format!("{interp} is not in the image"),
                fix: shell_fix.into(),
            });
            return out;
        }
        let path_var = self.env.path.clone().unwrap_or_else(|| DEFAULT_PATH.into());
        let words: std::collections::BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .collect();
        let missing: Vec<&str> = SCRIPT_COMMANDS
            .iter()
            .copied()
            .filter(|c| words.contains(c))
            .filter(|c| {
                !path_var
                    .split(':')
                    .filter(|d| !d.is_empty())
                    .any(|d| self.fs.is_executable_file(&format!("{d}/{c}")))
            })
            .collect();
        if !missing.is_empty() {
            out.push(Problem {
                file: path.to_string(),
                needs: format!("the commands {}", missing.join(", ")),
                missing: format!("not found on PATH ({path_var})"),
                fix: shell_fix.into(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{base, beam, lib};
    use super::super::{ImageEnv, check};
    use crate::fs::RootFs;

    #[test]
    fn musl_base_and_missing_shell() {
        let mut fs = RootFs::new();
        fs.insert("/lib/ld-musl-x86_64.so.1", lib(&[]));
        let env = ImageEnv::default();
        let r = check(
            &fs,
            &[(
                "/app/erts/bin/beam.smp".into(),
                beam(&["libc.so.6"], "GLIBC_2.2.5"),
            )],
            &[(
                "/app/bin/hello".into(),
                "#!/bin/sh\nset -e\ncut -d x\n".into(),
            )],
            "amd64",
            &env,
        );
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        assert!(r.problems[0].fix.contains("musl"));
        assert!(r.problems[1].needs.contains("/bin/sh"));
        // A shell but no cut or sed on PATH.
        let fs = base();
        let r = check(
            &fs,
            &[],
            &[(
                "/app/bin/hello".into(),
                "#!/bin/sh\ncat x | sed y | cut z\n".into(),
            )],
            "amd64",
            &env,
        );
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].needs.contains("cut, sed") && !r.problems[0].needs.contains("cat"));
    }
}
