//! How the library tells its caller what it is doing: one [`Reporter`] receives progress steps,
//! warnings and per-blob transfers. The library never prints; the CLI decides how they look
//! (bars on a terminal, lines otherwise, nothing with `--quiet`).

use std::sync::Arc;

pub trait Reporter: Send + Sync {
    /// A step of the work (`resolving base …`, `layer app …`).
    fn step(&self, message: &str);
    /// Something the user should see even when quiet progress would hide it.
    fn warn(&self, message: &str);
    /// A transfer of `size` bytes, labelled e.g. `ab12cd34ef56 app`.
    fn transfer(&self, label: &str, size: u64) -> Transfer;
    /// Other work on `size` bytes that can take a while, e.g. `writing` `layer assets`: shown
    /// as a transfer is.
    fn task(&self, verb: &str, label: &str, size: u64) -> Transfer {
        self.transfer(&format!("{verb} {label}"), size)
    }
}

/// How one transfer's progress is shown.
pub trait TransferView: Send + Sync {
    fn advance(&self, n: u64);
    /// Start over (an upload retried from the beginning).
    fn restart(&self);
    fn done(&self, outcome: &str);
}

/// One blob's transfer: `advance` as bytes go, `done` at the end. Cheap to clone.
#[derive(Clone, Default)]
pub struct Transfer(Option<Arc<dyn TransferView>>);

impl Transfer {
    pub fn new(view: Arc<dyn TransferView>) -> Transfer {
        Transfer(Some(view))
    }
    pub(crate) fn advance(&self, n: u64) {
        if let Some(v) = &self.0 {
            v.advance(n);
        }
    }
    pub(crate) fn restart(&self) {
        if let Some(v) = &self.0 {
            v.restart();
        }
    }
    pub(crate) fn done(&self, outcome: &str) {
        if let Some(v) = &self.0 {
            v.done(outcome);
        }
    }
}

/// A reporter that shows nothing and collects nothing (library users, tests).
pub struct Silent;

impl Reporter for Silent {
    fn step(&self, _: &str) {}
    fn warn(&self, _: &str) {}
    fn transfer(&self, _: &str, _: u64) -> Transfer {
        Transfer::default()
    }
}

/// A reporter that puts `prefix` before every step and warning of another: the work of one
/// platform among several running at once.
pub struct Prefixed<'a> {
    pub inner: &'a dyn Reporter,
    pub prefix: String,
}

impl Reporter for Prefixed<'_> {
    fn step(&self, message: &str) {
        self.inner.step(&format!("{}{message}", self.prefix));
    }
    fn warn(&self, message: &str) {
        self.inner.warn(&format!("{}{message}", self.prefix));
    }
    fn transfer(&self, label: &str, size: u64) -> Transfer {
        self.inner.transfer(label, size)
    }
    fn task(&self, verb: &str, label: &str, size: u64) -> Transfer {
        self.inner
            .task(verb, &format!("{}{label}", self.prefix), size)
    }
}

/// A byte count for people: `1.5 MB`, `12.0 kB`, `17 B`.
pub fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / 1_048_576.0),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
