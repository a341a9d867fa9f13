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

/// Wait for a spawned imgbuild and fail with its stderr unless it succeeded.
fn succeeded(c: std::process::Child) -> Result<std::process::Output, Failed> {
    let out = c.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Ok(out)
}

/// A full disk: a clear error naming the path and the fix, exit 1, nothing left behind.
pub fn test_disk_full() -> TestResult {
    if !lab::require(&["umoci", "debootstrap", "mix", "mount"])? {
        return Ok(());
    }
    let dir = lab::scratch_dir("disk-full");
    let small = dir.join("small");
    std::fs::create_dir_all(&small).map_err(|e| fail(e.to_string()))?;
    // An 8 MB file system: far less than the image.
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&small))
    .map_err(|e| {
        fail(format!(
            "{} (the test mounts a small tmpfs, which needs root)",
            e.message().unwrap_or("")
        ))
    })?;
    let base = format!("oci:{}:bookworm", lab::base_layout()?.display());
    let out = small.join("img.tar");
    let res = lab::imgbuild()
        .arg("build")
        .arg(lab::release()?)
        .args(["--from", &base, "-o"])
        .arg(&out)
        .output()
        .map_err(|e| fail(e.to_string()));
    let left: Vec<String> = std::fs::read_dir(&small)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let _ = Command::new("umount").arg(&small).status();
    let res = res?;
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(
        err.contains("img.tar") && err.contains("full") && err.contains("IMGBUILD_CACHE"),
        "{err}"
    );
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

/// Two builds sharing one empty cache at the same time: both succeed with the same image.
pub fn test_two_builds_share_a_cache() -> TestResult {
    if !lab::require(&["umoci", "debootstrap", "mix"])? {
        return Ok(());
    }
    let dir = lab::scratch_dir("shared-cache");
    let base = format!("oci:{}:bookworm", lab::base_layout()?.display());
    let rel = lab::release()?;
    let spawn = |n: u32| {
        lab::imgbuild()
            .env("IMGBUILD_CACHE", dir.join("cache"))
            .arg("build")
            .arg(&rel)
            .args(["--from", &base, "--json", "-o"])
            .arg(dir.join(format!("img-{n}.tar")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))
    };
    let children = (0..3).map(spawn).collect::<Result<Vec<_>, _>>()?;
    let mut digests = Vec::new();
    for c in children {
        let out = succeeded(c)?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
        digests.push(v["digest"].as_str().unwrap_or_default().to_string());
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    let a = std::fs::read(dir.join("img-0.tar")).map_err(|e| fail(e.to_string()))?;
    let b = std::fs::read(dir.join("img-2.tar")).map_err(|e| fail(e.to_string()))?;
    assert!(a == b, "the tarballs differ");
    // No temporaries are left in the shared cache.
    let tmp: Vec<_> = std::fs::read_dir(dir.join("cache/tmp"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "{} temporaries left", tmp.len());
    Ok(())
}

/// Load: 20 different images pushed at once to one registry; each pulls back verified.
pub fn test_twenty_concurrent_pushes() -> TestResult {
    if !lab::require(&["docker-registry", "skopeo", "mix"])? {
        return Ok(());
    }
    let dir = lab::scratch_dir("load");
    let reg = lab::start_registry("load")?;
    let rel = lab::release()?;
    let mut images = Vec::new();
    for i in 0..20 {
        let tar = dir.join(format!("img-{i}.tar"));
        let out = run(lab::imgbuild()
            .arg("build")
            .arg(&rel)
            .args([
                "--from",
                "scratch",
                "--no-check",
                "--label",
                &format!("n={i}"),
                "--json",
                "-o",
            ])
            .arg(&tar))?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
        images.push((tar, v["digest"].as_str().unwrap_or_default().to_string()));
    }
    let children = images
        .iter()
        .enumerate()
        .map(|(i, (tar, _))| {
            lab::imgbuild()
                .arg("push")
                .arg(tar)
                .arg(format!("{}/load/app-{i}:1", reg.host()))
                .arg("--quiet")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| fail(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for c in children {
        succeeded(c)?;
    }
    for (i, (_, digest)) in images.iter().enumerate() {
        let copy = dir.join(format!("pulled-{i}"));
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{}/load/app-{i}:1", reg.host()))
            .arg(format!("oci:{}:x", copy.display())))?;
        let out = run(Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{}/load/app-{i}:1", reg.host())))?;
        assert_eq!(crate::lab::stdout(&out).trim(), digest, "image {i}");
    }
    Ok(())
}
