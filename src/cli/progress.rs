//! What the user sees while imgbuild works. On a terminal: every line a plain run prints,
//! printed above bars (indicatif) that move while a blob is pushed or a layer written, and
//! cleared when they end. Without a terminal (a CI log): the same lines, and for work still
//! going after a few seconds a progress line every few seconds. With `--quiet`: warnings only.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imgbuild::report::{Reporter, Transfer, TransferView, human_size};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Without a terminal: the first progress line of a transfer after this long…
const FIRST_LINE: Duration = Duration::from_secs(3);
/// …and the next ones this far apart.
const LINE_EVERY: Duration = Duration::from_secs(5);

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

/// One line per step and per finished transfer, and a progress line every few seconds for a
/// transfer that takes a while.
pub struct Lines;
impl Reporter for Lines {
    fn step(&self, message: &str) {
        eprintln!("imgbuild: {message}");
    }
    fn warn(&self, message: &str) {
        warning(message);
    }
    fn transfer(&self, label: &str, size: u64) -> Transfer {
        Transfer::new(Arc::new(Line::new(label, size, Instant::now())))
    }
}

/// A transfer shown as lines: `label: 312.0 MB of 950.0 MB (32%), 45.1 MB/s, about 14s left`.
struct Line {
    label: String,
    total: u64,
    start: Mutex<Instant>,
    done: AtomicU64,
    /// When the next progress line may be printed.
    next: Mutex<Instant>,
}

impl Line {
    fn new(label: &str, total: u64, now: Instant) -> Line {
        Line {
            label: label.to_string(),
            total,
            start: Mutex::new(now),
            done: AtomicU64::new(0),
            next: Mutex::new(now + FIRST_LINE),
        }
    }

    /// The progress line due at `now`, if one is.
    fn due(&self, now: Instant) -> Option<String> {
        let mut next = self.next.lock().ok()?;
        if now < *next {
            return None;
        }
        *next = now + LINE_EVERY;
        let start = *self.start.lock().ok()?;
        Some(progress_line(
            &self.label,
            self.done.load(Ordering::Relaxed),
            self.total,
            now.saturating_duration_since(start),
        ))
    }
}

/// Where a transfer is, for a log: `label: DONE of TOTAL (P%), RATE/s, about Ns left` (the
/// share when the total is known, rate and time left once bytes have moved).
fn progress_line(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let mut line = format!("{label}: {} of {}", human_size(done), human_size(total));
    if let Some(pct) = done.saturating_mul(100).checked_div(total) {
        line.push_str(&format!(" ({pct}%)"));
    }
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 && done > 0 {
        let rate = done as f64 / secs;
        line.push_str(&format!(", {}/s", human_size(rate as u64)));
        if total > done {
            line.push_str(&format!(
                ", about {}s left",
                ((total - done) as f64 / rate).ceil() as u64
            ));
        }
    }
    line
}

impl TransferView for Line {
    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(line) = self.due(Instant::now()) {
            eprintln!("imgbuild: {line}");
        }
    }
    fn restart(&self) {
        self.done.store(0, Ordering::Relaxed);
        if let Ok(mut s) = self.start.lock() {
            *s = Instant::now();
        }
    }
    fn done(&self, outcome: &str) {
        eprintln!("imgbuild: {} {outcome}", self.label);
    }
}

/// Bars on a terminal, with every line a plain run prints above them.
pub struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
}

impl Bars {
    pub(crate) fn new() -> Bars {
        let style = ProgressStyle::with_template(
            "{msg:>8} {prefix:32} [{bar:25}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            style,
        }
    }

    /// A bar showing `verb` and `label`; `line` is what it leaves when it ends (followed by
    /// the outcome), the line a plain run prints.
    fn bar(&self, verb: &str, label: &str, size: u64, line: String) -> Transfer {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(self.style.clone());
        bar.set_prefix(label.to_string());
        bar.set_message(verb.to_string());
        Transfer::new(Arc::new(Bar {
            bar,
            line,
            multi: self.multi.clone(),
        }))
    }
}

/// Prints `line` above the bars (or plainly, when they cannot draw).
fn print_above(multi: &MultiProgress, line: &str) {
    if multi.println(line).is_err() {
        eprintln!("{line}");
    }
}

/// A moving bar; when it ends, the line a plain run prints takes its place.
struct Bar {
    bar: ProgressBar,
    line: String,
    multi: MultiProgress,
}

impl TransferView for Bar {
    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
    fn restart(&self) {
        self.bar.set_position(0);
        self.bar.reset_eta();
    }
    fn done(&self, outcome: &str) {
        self.bar.finish_and_clear();
        self.multi.remove(&self.bar);
        print_above(&self.multi, &format!("{} {outcome}", self.line));
    }
}

impl Reporter for Bars {
    fn step(&self, message: &str) {
        print_above(&self.multi, &format!("imgbuild: {message}"));
    }
    fn warn(&self, message: &str) {
        print_above(&self.multi, &format!("imgbuild: warning: {message}"));
    }
    fn transfer(&self, label: &str, size: u64) -> Transfer {
        self.bar("pushing", label, size, format!("imgbuild: {label}"))
    }
    fn task(&self, verb: &str, label: &str, size: u64) -> Transfer {
        self.bar(verb, label, size, format!("imgbuild: {verb} {label}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_come_a_few_seconds_apart_with_rate_and_time_left() {
        let t0 = Instant::now();
        let line = Line::new("writing layer assets", 1000 << 20, t0);
        line.done.store(100 << 20, Ordering::Relaxed);
        assert_eq!(
            line.due(t0 + Duration::from_secs(1)),
            None,
            "not in the first seconds"
        );
        assert_eq!(
            line.due(t0 + Duration::from_secs(4)).as_deref(),
            Some("writing layer assets: 100.0 MB of 1000.0 MB (10%), 25.0 MB/s, about 36s left")
        );
        assert_eq!(
            line.due(t0 + Duration::from_secs(6)),
            None,
            "one line per few seconds"
        );
        assert!(line.due(t0 + Duration::from_secs(9)).is_some());
        assert_eq!(progress_line("x", 0, 0, Duration::ZERO), "x: 0 B of 0 B");
    }
}
