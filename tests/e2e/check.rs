//! The start-up check on real files: a release that needs libcrypto on a base without it, a
//! bookworm release on a bullseye base (older glibc), an ELF for another machine, and a base
//! with no shell. Each must fail before anything is written, naming the file and the fix.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::lab::{self, TestResult, fail, run, stdout};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &["umoci", "debootstrap", "mix"];

/// Run `imgbuild check`, expecting exit 1; returns stderr.
fn check_fails(rel: &Path, from: &str) -> Result<String, Failed> {
    check_fails_with(rel, from, &[])
}

fn check_fails_with(rel: &Path, from: &str, extra: &[&str]) -> Result<String, Failed> {
    let out = lab::imgbuild()
        .arg("check")
        .arg(rel)
        .args(["--from", from])
        .args(extra)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() != Some(1) {
        return Err(fail(format!(
            "check exited {:?}, expected 1:\n{err}",
            out.status.code()
        )));
    }
    Ok(err)
}

fn bookworm() -> Result<String, Failed> {
    Ok(format!("oci:{}:bookworm", lab::base_layout()?.display()))
}

pub fn test_passes_on_a_good_base() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let out = run(lab::imgbuild()
        .arg("check")
        .arg(&rel)
        .args(["--from", &bookworm()?, "--json"]))?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("not JSON: {e}: {}", stdout(&out))))?;
    assert!(report["elf_files"].as_u64().unwrap_or(0) >= 10, "{report}");
    assert_eq!(report["glibc"], "2.36");
    assert_eq!(report["problems"], serde_json::json!([]));
    Ok(())
}

pub fn test_missing_libcrypto_names_the_package() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::crypto_release()?;
    let err = check_fails(&rel, &bookworm()?)?;
    for want in [
        "crypto.so",
        "libcrypto.so.3",
        "--package libssl3",
        "/app/lib/crypto-",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    // build runs the same check first and writes nothing.
    let dir = lab::scratch_dir("check-crypto");
    let out = dir.join("img.tar");
    let res = lab::imgbuild()
        .arg("build")
        .arg(&rel)
        .args(["--from", &bookworm()?])
        .arg("-o")
        .arg(&out)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    assert_eq!(res.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&res.stderr).contains("libcrypto.so.3"));
    assert!(!out.exists(), "a failed check left an image behind");
    // --no-check builds anyway, and says so.
    let res = run(lab::imgbuild()
        .arg("build")
        .arg(&rel)
        .args(["--from", &bookworm()?, "--no-check"])
        .arg("-o")
        .arg(&out))?;
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("--no-check: the image was not checked"),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(out.is_file());
    Ok(())
}

pub fn test_old_glibc_base_names_the_version() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let from = format!("oci:{}:bullseye", lab::bullseye_layout()?.display());
    let err = check_fails(&rel, &from)?;
    for want in [
        "beam.smp",
        "GLIBC_2.3",
        "this one has 2.31",
        "debian:bookworm-slim",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    Ok(())
}

pub fn test_foreign_machine_fails() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let copy = lab::scratch_dir("check-foreign").join("hello");
    run(Command::new("cp").arg("-a").arg(&rel).arg(&copy))?;
    // An ELF from another architecture: epmd with its e_machine set to AArch64 (183).
    let epmd = std::fs::read_dir(&copy)
        .map_err(|e| fail(e.to_string()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("erts-"))
        })
        .map(|erts| erts.join("bin/epmd"))
        .ok_or_else(|| fail("no erts-* in the release"))?;
    let mut bytes = std::fs::read(&epmd).map_err(|e| fail(e.to_string()))?;
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
    let priv_dir = copy.join("lib/hello-0.1.0/priv");
    std::fs::create_dir_all(&priv_dir).map_err(|e| fail(e.to_string()))?;
    std::fs::write(priv_dir.join("native_helper"), bytes).map_err(|e| fail(e.to_string()))?;
    let err = check_fails(&copy, &bookworm()?)?;
    for want in [
        "/app/lib/hello-0.1.0/priv/native_helper",
        "AArch64",
        "amd64",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    Ok(())
}

pub fn test_base_without_shell_fails() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    // With the release's own scripts: their shell is missing, and the C library.
    let err = check_fails_with(&rel, "scratch", &["--launcher", "never"])?;
    for want in ["the shell /bin/sh", "/app/bin/hello", "ld-linux"] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    // By default the launcher starts it without a shell: only the C library is missing.
    let err = check_fails(&rel, "scratch")?;
    for want in ["imgbuild's launcher", "ld-linux"] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    assert!(!err.contains("the shell /bin/sh"), "{err}");
    Ok(())
}

/// A base holding Debian's Erlang (the host's `erlang-base` files, the OTP the sample release
/// is built with) on the bookworm minbase, tagged `erlang`; with `erts` its ERTS directory is
/// renamed to that version (another OTP).
fn erlang_base(dir: &Path, packages: &str, erts: Option<&str>) -> Result<String, Failed> {
    let root = dir.join("erlang-root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| fail(e.to_string()))?;
    run(Command::new("sh").arg("-ec").arg(format!(
        "dpkg -L {packages} | grep '^/usr/' | while read -r f; do [ -d \"$f\" ] && [ ! -L \"$f\" ] || printf '%s\\n' \"$f\"; done > {d}/files; tar -C / -cf - -T {d}/files | tar -C {r} -xf -",
        d = dir.display(),
        r = root.display(),
    )))?;
    if let Some(v) = erts {
        let lib = root.join("usr/lib/erlang");
        for e in std::fs::read_dir(&lib)
            .map_err(|e| fail(e.to_string()))?
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with("erts-") {
                std::fs::rename(e.path(), lib.join(format!("erts-{v}")))
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
    }
    let layout = lab::layout_plus_layer(
        &lab::base_layout()?,
        "bookworm",
        &dir.join("erlang-layout"),
        &root,
        "erlang",
    )?;
    Ok(format!("oci:{}:erlang", layout.display()))
}

/// A release built with `include_erts: false`: refused on a base without Erlang and on one
/// with another ERTS (naming both versions); on a base with the same Erlang it passes, its
/// ERTS's ELF files checked too, and the image serves.
pub fn test_release_without_erts_needs_the_bases_erlang() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "docker"]].concat())? {
        return Ok(());
    }
    let dir = lab::scratch_dir("no-erts");
    let rel = lab::build_release_env(&dir.join("project"), None, &[("HELLO_NO_ERTS", "1")])?;
    let has_erts = std::fs::read_dir(&rel)
        .map_err(|e| fail(e.to_string()))?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("erts-"));
    assert!(!has_erts, "the release still has ERTS");
    let data = std::fs::read_to_string(rel.join("releases/start_erl.data"))
        .map_err(|e| fail(e.to_string()))?;
    let erts = data.split_whitespace().next().unwrap_or("").to_string();

    let err = check_fails(&rel, &bookworm()?)?;
    assert!(
        err.contains(&format!("ERTS {erts}")) && err.contains("no erl on the image's PATH"),
        "{err}"
    );
    let err = check_fails(
        &rel,
        &erlang_base(&dir.join("other"), "erlang-base", Some("99.0.1"))?,
    )?;
    assert!(err.contains(&format!("ERTS 99.0.1, not {erts}")), "{err}");
    // The right ERTS, but not the inets application the release boots.
    let err = check_fails(&rel, &erlang_base(&dir.join("bare"), "erlang-base", None)?)?;
    assert!(err.contains("the OTP applications inets-"), "{err}");

    let from = erlang_base(&dir, "erlang-base erlang-inets", None)?;
    let out = run(lab::imgbuild()
        .arg("check")
        .arg(&rel)
        .args(["--from", &from, "--json"]))?;
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    // The base's beam.smp, erlexec, epmd… were checked with the release's own NIFs.
    assert!(report["elf_files"].as_u64().unwrap_or(0) >= 5, "{report}");
    let tar = dir.join("no-erts.tar");
    run(lab::imgbuild()
        .arg("build")
        .arg(&rel)
        .args(["--from", &from, "-t", "imgbuild-e2e/no-erts:1", "-o"])
        .arg(&tar))?;
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
    let (status, body) = lab::run_and_get(&docker, "imgbuild-e2e/no-erts:1")?;
    assert!(status.contains("200"), "{status} {body}");
    Ok(())
}
