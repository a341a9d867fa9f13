//! What the check found: each problem with its fix, and the report's text.

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
    pub fn render(&self) -> String {
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
