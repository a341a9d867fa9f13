//! Interruptions: SIGTERM or Ctrl-C during a build removes the temporaries and exits 143/130;
//! `kill -9` leaves no partial output under the final name, and the next run sweeps up what the
//! killed process left.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::{self, TestResult, fail, run};

type Failed = libtest_mimic::Failed;

/// A copy of the release with 48 MB of incompressible data, so writing its layers takes a while.
fn slow_release(dir: &Path) -> Result<std::path::PathBuf, Failed> {
    let copy = dir.join("hello");
    run(Command::new("cp").arg("-a").arg(lab::release()?).arg(&copy))?;
    let priv_dir = copy.join("lib/hello-0.1.0/priv");
    std::fs::create_dir_all(&priv_dir).map_err(|e| fail(e.to_string()))?;
    run(Command::new("sh").arg("-c").arg(format!(
        "head -c 48M /dev/urandom > {}/noise.bin",
        priv_dir.display()
    )))?;
    Ok(copy)
}

fn temporaries_of(dir: &Path, pid: u32) -> Vec<String> {
    let mark = format!("imgbuild-{pid}-");
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(&mark))
                .collect()
        })
        .unwrap_or_default()
}

/// Start a build and return it once it has a temporary blob in the cache.
fn build_until_writing(dir: &Path, rel: &Path, out: &Path) -> Result<std::process::Child, Failed> {
    let base = format!("oci:{}:bookworm", lab::base_layout()?.display());
    let mut child = lab::imgbuild()
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .arg("build")
        .arg(rel)
        .args(["--from", &base, "--gzip-level", "9", "-o"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while temporaries_of(&dir.join("cache/tmp"), child.id()).is_empty() {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            return Err(fail("the build never wrote a temporary blob"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child)
}

pub fn test_sigterm_and_kill9_leave_nothing() -> TestResult {
    if !lab::require(&["umoci", "debootstrap", "mix"])? {
        return Ok(());
    }
    let dir = lab::scratch_dir("interrupt");
    let rel = slow_release(&dir)?;
    for (signal, code) in [("-TERM", 143), ("-INT", 130)] {
        let out = dir.join("img.tar");
        let mut child = build_until_writing(&dir, &rel, &out)?;
        let pid = child.id();
        run(Command::new("kill").arg(signal).arg(pid.to_string()))?;
        let status = child.wait().map_err(|e| fail(e.to_string()))?;
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut s, &mut err);
        }
        assert_eq!(status.code(), Some(code), "{signal}: {err}");
        assert!(err.contains("interrupted"), "{err}");
        assert!(!out.exists(), "{signal}: output written");
        assert!(
            temporaries_of(&dir.join("cache/tmp"), pid).is_empty(),
            "{signal}: cache temporaries left"
        );
        assert!(
            temporaries_of(&dir, pid).is_empty(),
            "{signal}: output temporaries left"
        );
    }
    // kill -9: no cleanup can run; nothing appears under the final name, and the next run
    // removes what was left.
    let out = dir.join("img.tar");
    let mut child = build_until_writing(&dir, &rel, &out)?;
    let pid = child.id();
    run(Command::new("kill").arg("-KILL").arg(pid.to_string()))?;
    let _ = child.wait();
    assert!(!out.exists(), "kill -9 left output under the final name");
    assert!(
        !temporaries_of(&dir.join("cache/tmp"), pid).is_empty(),
        "nothing to sweep: the test did not interrupt a write"
    );
    let base = format!("oci:{}:bookworm", lab::base_layout()?.display());
    run(lab::imgbuild()
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .arg("check")
        .arg(lab::release()?)
        .args(["--from", &base]))?;
    assert!(
        temporaries_of(&dir.join("cache/tmp"), pid).is_empty(),
        "stale temporaries were not swept"
    );
    Ok(())
}
