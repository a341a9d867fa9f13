//! What the user sees while imgbuild works: a bar per blob on a terminal (indicatif), plain
//! lines on stderr otherwise, nothing but warnings with `--quiet`.

use std::io::IsTerminal;
use std::sync::Arc;

use imgbuild::report::{Reporter, Transfer, TransferView};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

fn warning(message: &str) {
    eprintln!("imgbuild: warning: {message}");
}

/// Only warnings.
pub struct Quiet;
impl Reporter for Quiet {
    fn step(&self, _: &str) {}
    fn warn(&self, message: &str) {
        warning(message);
    }
    fn transfer(&self, _: &str, _: u64) -> Transfer {
        Transfer::default()
    }
}

/// One line per step and per finished transfer.
pub struct Lines;
impl Reporter for Lines {
    fn step(&self, message: &str) {
        eprintln!("imgbuild: {message}");
    }
    fn warn(&self, message: &str) {
        warning(message);
    }
    fn transfer(&self, label: &str, _: u64) -> Transfer {
        Transfer::new(Arc::new(Line(label.to_string())))
    }
}

struct Line(String);
impl TransferView for Line {
    fn advance(&self, _: u64) {}
    fn restart(&self) {}
    fn done(&self, outcome: &str) {
        eprintln!("imgbuild: {} {outcome}", self.0);
    }
}

/// Bars on a terminal.
pub struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
}

impl Bars {
    pub(crate) fn new() -> Bars {
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

    fn print(&self, line: String) {
        if self.multi.println(&line).is_err() {
            eprintln!("{line}");
        }
    }
}

struct Bar(ProgressBar);
impl TransferView for Bar {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn restart(&self) {
        self.0.set_position(0);
    }
    fn done(&self, outcome: &str) {
        self.0.finish_with_message(outcome.to_string());
    }
}

impl Reporter for Bars {
    fn step(&self, message: &str) {
        self.print(format!("imgbuild: {message}"));
    }
    fn warn(&self, message: &str) {
        self.print(format!("imgbuild: warning: {message}"));
    }
    fn transfer(&self, label: &str, size: u64) -> Transfer {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(self.style.clone());
        bar.set_prefix(label.to_string());
        bar.set_message("pushing");
        Transfer::new(Arc::new(Bar(bar)))
    }
}

/// The reporter for this run: warnings only when quiet, bars on a terminal, else lines.
pub(crate) fn choose(quiet: bool) -> Box<dyn Reporter> {
    if quiet {
        Box::new(Quiet)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines)
    }
}
