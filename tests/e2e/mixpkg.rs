//! The Mix package (`integrations/mix`), run by its own ExUnit suite with Debian's Elixir
//! against `scripts/dist`'s real output served from loopback: install with its checksum, a
//! refused checksum, HTTPS with a private CA (`cacerts_path:`) and without it, `mix imgbuild
//! --version`, exit statuses, proxies, and the release step on a
//! fixture app, whose image Docker then runs.

use std::process::Command;

use crate::lab::{self, TestResult, fail, run, stdout};

pub const TOOLS: &[&str] = &[
    "mix",
    "openssl",
    "docker",
    "dockerd",
    "docker-registry",
    "skopeo",
    "umoci",
    "debootstrap",
    "readelf",
    "busybox",
    "sha256sum",
    "tar",
    "gzip",
];

pub fn test_mix_package_suite_and_release_step() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let dist = crate::dist::dist_dir()?;
    let base = lab::base_layout()?;
    let dir = lab::scratch_dir("mixpkg");
    // A copy of the package, so its _build and the fixtures stay out of the source tree.
    let pkg = dir.join("mix");
    run(Command::new("cp")
        .arg("-a")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/mix"))
        .arg(&pkg))?;
    let _ = std::fs::remove_dir_all(pkg.join("_build"));
    let tarball = dir.join("hello-step.tar");
    let out = Command::new("mix")
        .arg("test")
        .current_dir(&pkg)
        .env("MIX_ENV", "test")
        .env("IMGBUILD_DIST_DIR", &dist)
        .env(
            "IMGBUILD_TEST_BASE",
            format!("oci:{}:bookworm", base.display()),
        )
        .env("IMGBUILD_STEP_TARBALL", &tarball)
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()?;
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(fail(format!("the Mix package's tests failed:\n{text}")));
    }
    assert!(text.contains(" 0 failures"), "{text}");
    // The figure the note quotes: `mix release` with and without the step, same run.
    if let Some(line) = text.lines().find(|l| l.contains("release-step timing:")) {
        eprintln!("mixpkg: {}", line.trim());
    } else {
        return Err(fail(format!("no release-step timing line:\n{text}")));
    }
    // The image the release step made runs in Docker.
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&tarball))?;
    let said = stdout(&run(docker.cmd().args([
        "run",
        "--rm",
        "hello-step:1",
        "/app/bin/hello_step",
        "eval",
        "IO.puts(:erlang.system_info(:otp_release))",
    ]))?);
    assert!(said.trim().parse::<u32>().is_ok_and(|v| v >= 24), "{said}");
    Ok(())
}
