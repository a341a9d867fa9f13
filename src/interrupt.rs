//! Interruptions: on Ctrl-C or SIGTERM imgbuild removes its own temporaries and exits 130 or
//! 143. Every temporary name carries `imgbuild-<pid>-`, so cleanup knows what is its own, and
//! a later run removes what a `kill -9`'d process left (its pid no longer runs).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PLACES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The marker in every temporary name this process makes.
pub fn marker() -> String {
    format!("imgbuild-{}-", std::process::id())
}

/// Remember a directory where this process makes temporaries.
pub fn watch(dir: &Path) {
    if let Ok(mut p) = PLACES.lock()
        && !p.iter().any(|d| d == dir)
    {
        p.push(dir.to_path_buf());
    }
}

fn remove(path: &Path) {
    let _ = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
}

/// Remove this process's temporaries everywhere it made some.
pub fn cleanup() {
    let mark = marker();
    let places = PLACES.lock().map(|p| p.clone()).unwrap_or_default();
    for dir in places {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().contains(&mark) {
                remove(&e.path());
            }
        }
    }
}

/// Remove temporaries in `dir` whose process is gone (it was killed before it could clean up).
pub fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .split("imgbuild-")
            .nth(1)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            remove(&e.path());
        }
    }
}

/// Install the SIGINT and SIGTERM handlers now, before any temporary exists, and act on
/// them from a task of their own: remove this process's temporaries and exit 130 or 143.
/// Handling them outside the work means a build busy in a long poll, or one that has not
/// been polled yet, is still interrupted at once. Must be called inside the runtime.
pub fn install() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the default disposition applies; stale temporaries are swept at
        // the next run.
        return;
    };
    tokio::spawn(async move {
        let code = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        cleanup();
        eprintln!("imgbuild: interrupted; temporary files removed, nothing written");
        std::process::exit(code);
    });
}
