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

/// Wait for SIGINT or SIGTERM; returns the exit code for it (130 or 143).
pub async fn signalled() -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers there is nothing to wait for.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    }
}
