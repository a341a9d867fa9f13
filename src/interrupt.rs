//! Interruptions: on Ctrl-C or SIGTERM imgbuild removes its own temporaries and exits 130 or
//! 143. Every temporary name carries `imgbuild-<pid>-`, so cleanup knows what is its own, and
//! a later run removes what a `kill -9`'d process left (its pid no longer runs).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

static PLACES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Temporaries are created under the read side; cleanup takes the write side and never gives
/// it back (the process exits), so no thread still at work can make a new temporary after
/// cleanup has listed the directories. `true` once cleanup has begun.
static GATE: RwLock<bool> = RwLock::new(false);

/// Run `make`, which creates a temporary or renames one into place, outside any cleanup: once
/// an interrupt is being handled this blocks until the process exits (cleanup keeps the
/// write side), so nothing new appears after the sweep and no output lands after "interrupted".
pub(crate) fn guarded<T>(make: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    let closed = GATE.read().map_err(|_| closed_error())?;
    if *closed {
        return Err(closed_error());
    }
    make()
}

fn closed_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Interrupted,
        "imgbuild is being interrupted",
    )
}

/// The marker in every temporary name this process makes.
pub(crate) fn marker() -> String {
    format!("imgbuild-{}-", std::process::id())
}

/// Remember a directory where this process makes temporaries.
pub(crate) fn watch(dir: &Path) {
    if let Ok(mut p) = PLACES.lock()
        && !p.iter().any(|d| d == dir)
    {
        p.push(dir.to_path_buf());
    }
}

fn remove(path: &Path) {
    if path.is_dir() {
        // A thread may still be adding a file inside the directory while it goes; a second
        // pass removes what that race left.
        for _ in 0..3 {
            if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
                break;
            }
        }
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// Remove this process's temporaries everywhere it made some, and close the gate so that no
/// new temporary appears afterwards. Meant to be followed by the process's exit.
pub(crate) fn cleanup() {
    match GATE.write() {
        Ok(mut closed) => {
            *closed = true;
            // Held until exit: creators block or fail rather than race the sweep.
            std::mem::forget(closed);
        }
        Err(poisoned) => std::mem::forget(poisoned),
    }
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
pub(crate) fn remove_stale(dir: &Path) {
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
