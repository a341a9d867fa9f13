//! What the check found: each problem with its fix, the report's text, and the check's failure
//! (one report, or one per platform) as an error carries it.

use serde::Serialize;

/// One reason the image would fail at start.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The file in the image that has the need.
    pub file: String,
    /// What it needs.
    pub needs: String,
    /// What is wrong with the image.
    pub missing: String,
    /// How to fix it.
    pub fix: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub elf_files: usize,
    /// The base's glibc release (from its libc.so.6), when it has one.
    pub glibc: Option<String>,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub(crate) fn render(&self) -> String {
        let mut out = format!(
            "the image would fail at start: {} problem{} in {} ELF file{} checked{}",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" },
            self.elf_files,
            if self.elf_files == 1 { "" } else { "s" },
            self.glibc
                .as_ref()
                .map(|g| format!(" (the image has glibc {g})"))
                .unwrap_or_default()
        );
        for p in &self.problems {
            out.push_str(&format!(
                "\n  {}\n    needs:   {}\n    missing: {}\n    fix:     {}",
                p.file, p.needs, p.missing, p.fix
            ));
        }
        out.push_str("\n(pass --no-check to build anyway)");
        out
    }
}

/// The start-up check's failure, as data: the report of every platform that failed, each with
/// its platform when the build or rebase is for several. Its text is each report's, naming the
/// platform first when there is one, one after another.
#[derive(Clone, Debug)]
pub struct CheckFailure {
    reports: Vec<(Option<String>, CheckReport)>,
}

impl CheckFailure {
    /// The failure of one image, its platform not named.
    pub(crate) fn new(report: CheckReport) -> CheckFailure {
        CheckFailure {
            reports: vec![(None, report)],
        }
    }

    /// The same failure, said of `platform` (a report that names its platform already keeps it).
    pub(crate) fn on_platform(mut self, platform: impl std::fmt::Display) -> CheckFailure {
        for (p, _) in &mut self.reports {
            p.get_or_insert_with(|| platform.to_string());
        }
        self
    }

    /// Several failures (one per platform) as one, in the order given.
    pub(crate) fn join(failures: impl IntoIterator<Item = CheckFailure>) -> CheckFailure {
        CheckFailure {
            reports: failures.into_iter().flat_map(|f| f.reports).collect(),
        }
    }

    /// Each failed report, with its platform when named.
    pub fn reports(&self) -> &[(Option<String>, CheckReport)] {
        &self.reports
    }
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (platform, report)) in self.reports.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if let Some(p) = platform {
                write!(f, "platform {p}: ")?;
            }
            f.write_str(&report.render())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn report(file: &str, glibc: Option<&str>) -> CheckReport {
        CheckReport {
            elf_files: 2,
            glibc: glibc.map(str::to_string),
            problems: vec![Problem {
                file: file.into(),
                needs: "libcrypto.so.3".into(),
                missing: "libcrypto.so.3 is not in the image (searched /lib:/usr/lib)".into(),
                fix: "add the Debian package libssl3 to the image (--package libssl3), or use a base that has it".into(),
            }],
        }
    }

    /// The text of a failure is pinned: it is what `Error::Check` said when it carried the
    /// rendered report (one platform), or the reports joined, each after `platform P: `.
    #[test]
    fn a_failure_reads_as_its_reports() {
        let one = Error::Check(CheckFailure::new(report("/app/crypto.so", Some("2.36"))));
        assert_eq!(
            one.to_string(),
            "the image would fail at start: 1 problem in 2 ELF files checked (the image has glibc 2.36)\n  /app/crypto.so\n    needs:   libcrypto.so.3\n    missing: libcrypto.so.3 is not in the image (searched /lib:/usr/lib)\n    fix:     add the Debian package libssl3 to the image (--package libssl3), or use a base that has it\n(pass --no-check to build anyway)"
        );
        let amd64 = CheckFailure::new(report("/app/a.so", Some("2.36")));
        let arm64 = CheckFailure::new(report("/app/b.so", None));
        let two = Error::Check(CheckFailure::join([
            amd64.on_platform("linux/amd64"),
            arm64.on_platform("linux/arm64"),
        ]));
        assert_eq!(
            two.to_string(),
            "platform linux/amd64: the image would fail at start: 1 problem in 2 ELF files checked (the image has glibc 2.36)\n  /app/a.so\n    needs:   libcrypto.so.3\n    missing: libcrypto.so.3 is not in the image (searched /lib:/usr/lib)\n    fix:     add the Debian package libssl3 to the image (--package libssl3), or use a base that has it\n(pass --no-check to build anyway)\nplatform linux/arm64: the image would fail at start: 1 problem in 2 ELF files checked\n  /app/b.so\n    needs:   libcrypto.so.3\n    missing: libcrypto.so.3 is not in the image (searched /lib:/usr/lib)\n    fix:     add the Debian package libssl3 to the image (--package libssl3), or use a base that has it\n(pass --no-check to build anyway)"
        );
        // The data stays: each platform's report.
        let Error::Check(f) = two else { unreachable!() };
        let platforms: Vec<_> = f.reports().iter().map(|(p, _)| p.as_deref()).collect();
        assert_eq!(platforms, [Some("linux/amd64"), Some("linux/arm64")]);
        // A platform already named is kept.
        let named = CheckFailure::new(report("/app/a.so", None))
            .on_platform("linux/amd64")
            .on_platform("linux/arm64");
        assert!(named.to_string().starts_with("platform linux/amd64: "));
    }
}
