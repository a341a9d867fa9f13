//! What the user sees while imgbuild works: a bar per blob on a terminal (indicatif), plain
//! lines on stderr otherwise, nothing with `--quiet`.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Reports steps and per-blob transfers.
pub trait Progress: Send + Sync {
    fn step(&self, message: &str);
    /// A transfer of `size` bytes, labelled e.g. `push sha256:ab12… (app)`.
    fn transfer(&self, label: &str, size: u64) -> Transfer;
}

/// One blob's transfer; `advance` as bytes go, `done` at the end.
#[derive(Clone)]
pub struct Transfer {
    bar: Option<ProgressBar>,
    lines: bool,
    label: String,
}

impl Transfer {
    pub fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    /// Start over (an upload that is retried from the beginning).
    pub fn restart(&self) {
        if let Some(b) = &self.bar {
            b.set_position(0);
        }
    }
    pub fn done(&self, outcome: &str) {
        if let Some(b) = &self.bar {
            b.finish_with_message(outcome.to_string());
        } else if self.lines {
            eprintln!("imgbuild: {} {outcome}", self.label);
        }
    }
}

pub struct Quiet;
impl Progress for Quiet {
    fn step(&self, _: &str) {}
    fn transfer(&self, label: &str, _: u64) -> Transfer {
        Transfer {
            bar: None,
            lines: false,
            label: label.to_string(),
        }
    }
}

pub struct Lines;
impl Progress for Lines {
    fn step(&self, message: &str) {
        eprintln!("imgbuild: {message}");
    }
    fn transfer(&self, label: &str, _: u64) -> Transfer {
        Transfer {
            bar: None,
            lines: true,
            label: label.to_string(),
        }
    }
}

/// Bars on a terminal.
pub struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
}

impl Bars {
    pub fn new() -> Bars {
        let style = ProgressStyle::with_template(
            "{msg:>10} {prefix:40} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            style,
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Bars {
    fn step(&self, message: &str) {
        if self.multi.println(format!("imgbuild: {message}")).is_err() {
            eprintln!("imgbuild: {message}");
        }
    }
    fn transfer(&self, label: &str, size: u64) -> Transfer {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(self.style.clone());
        bar.set_prefix(label.to_string());
        bar.set_message("pushing");
        Transfer {
            bar: Some(bar),
            lines: false,
            label: label.to_string(),
        }
    }
}

/// The reporter for this run: nothing when quiet, bars on a terminal, else lines.
pub fn choose(quiet: bool) -> Box<dyn Progress> {
    if quiet {
        Box::new(Quiet)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines)
    }
}
