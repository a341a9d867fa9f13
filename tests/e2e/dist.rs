//! The release artifacts of `scripts/dist`: the archive a user downloads, its checksums, and
//! imgbuild's own image, which Docker runs and which builds and pushes an image from inside a
//! container.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::lab::{self, TestResult, fail, run, stdout};

pub const TOOLS: &[&str] = &[
    "docker",
    "dockerd",
    "docker-registry",
    "skopeo",
    "umoci",
    "debootstrap",
    "mix",
    "readelf",
    "busybox",
    "sha256sum",
    "tar",
    "gzip",
];

/// The crate's version, as the artifacts name it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The host's target triple (the archive every test machine here can run).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// `scripts/dist` run once, into the lab's directory; shared by the Mix package's tests.
pub fn dist_dir() -> Result<PathBuf, libtest_mimic::Failed> {
    static DIST: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIST.get_or_init(|| {
        let dir = lab::workdir().join("dist");
        let out = Command::new("bash")
            .arg(repo().join("scripts/dist"))
            .env("DIST_DIR", &dir)
            .env("IMGBUILD_DIST_TARGETS", TARGET)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .map_err(|e| format!("scripts/dist did not start: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/dist failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir)
    })
    .clone()
    .map_err(fail)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sha256_lines(dir: &Path) -> Result<String, libtest_mimic::Failed> {
    Ok(std::fs::read_to_string(dir.join("checksums.txt"))?)
}

pub fn test_artifacts_and_own_image() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let dist = dist_dir()?;
    let archive = format!("imgbuild-{VERSION}-{TARGET}.tar.gz");
    let image_tar = format!("imgbuild-{VERSION}-image.tar");
    let debug_tar = format!("imgbuild-{VERSION}-image-debug.tar");
    // checksums.txt names every other file, and sha256sum agrees with it.
    let sums = sha256_lines(&dist)?;
    let mut named: Vec<&str> = sums
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, f)| f))
        .collect();
    named.sort();
    let mut want = vec![archive.as_str(), image_tar.as_str(), debug_tar.as_str()];
    want.sort();
    assert_eq!(named, want, "{sums}");
    run(Command::new("sha256sum")
        .args(["--check", "--strict", "checksums.txt"])
        .current_dir(&dist))?;

    // The archive: one directory with the binary, LICENSE and README.md.
    let listing = stdout(&run(Command::new("tar")
        .arg("-tzvf")
        .arg(dist.join(&archive)))?);
    let top = format!("imgbuild-{VERSION}-{TARGET}");
    let mut names: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("{top}/"),
            format!("{top}/LICENSE"),
            format!("{top}/README.md"),
            format!("{top}/imgbuild"),
        ],
        "{listing}"
    );
    assert!(
        listing.lines().all(|l| l.contains("0/0")),
        "owned by root: {listing}"
    );
    let unpacked = lab::scratch_dir("dist-unpack");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(dist.join(&archive))
        .arg("-C")
        .arg(&unpacked))?;
    let bin = unpacked.join(&top).join("imgbuild");
    // Static: no program interpreter, so it runs on any Linux and in a scratch image.
    let headers = stdout(&run(Command::new("readelf").arg("-lW").arg(&bin))?);
    assert!(
        !headers.contains("INTERP"),
        "the binary asks for a dynamic loader:\n{headers}"
    );
    // --version names the version and the commit.
    let head = stdout(&run(Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo()))?);
    let version = stdout(&run(Command::new(&bin).arg("--version"))?);
    assert!(
        version
            .trim()
            .starts_with(&format!("imgbuild {VERSION} (commit {}", head.trim())),
        "{version}"
    );

    // The same sources give the same bytes: scripts/dist again (the build is cached).
    let again = lab::scratch_dir("dist-again");
    let out = Command::new("bash")
        .arg(repo().join("scripts/dist"))
        .env("DIST_DIR", &again)
        .env("IMGBUILD_DIST_TARGETS", TARGET)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_lines(&again)?, sums, "a second dist differs");

    // The image: Docker loads it and runs `--version`; it holds three files and nothing else.
    let docker = lab::docker()?;
    run(docker
        .cmd()
        .arg("load")
        .arg("-i")
        .arg(dist.join(&image_tar)))?;
    let tag = format!("imgbuild:{VERSION}");
    let inside = stdout(&run(docker.cmd().args(["run", "--rm", &tag, "--version"]))?);
    assert_eq!(inside.trim(), version.trim());
    let config: Value = serde_json::from_str(&stdout(&run(docker
        .cmd()
        .args(["image", "inspect", &tag]))?))
    .map_err(|e| fail(e.to_string()))?;
    assert_eq!(
        config[0]["Config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/imgbuild"])
    );
    assert_eq!(
        config[0]["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1)
    );

    // Inside that container: a build of the sample release on the lab's base, pushed to the
    // lab's registry (no shell needed); skopeo sees the digest the container printed, and Docker runs it.
    let rel = lab::release()?;
    let layout = lab::base_layout()?;
    let reg = lab::registry()?;
    // By name, not address: the static binary resolves `localhost` through the container's
    // /etc/hosts, as it resolves a registry's name through DNS.
    let target = format!("localhost:{}/inside/hello:1", reg.port);
    let out = run(docker.cmd().args(["run", "--rm", "--network=host"]).args([
        "-v",
        &format!("{}:/rel:ro", rel.display()),
        "-v",
        &format!("{}:/base:ro", layout.display()),
        &tag,
        "build",
        "/rel",
        "--from",
        "oci:/base:bookworm",
        "-t",
        &target,
        "--push",
        "--json",
    ]))?;
    let report: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("{e}: {}", stdout(&out))))?;
    let digest = report["digest"].as_str().unwrap_or_default();
    assert!(digest.starts_with("sha256:"), "{report}");
    let seen = stdout(&run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{target}")))?);
    assert_eq!(seen.trim(), digest);
    run(docker.cmd().args(["pull", &target]))?;
    let (status, _) = lab::run_and_get(&docker, &target)?;
    assert!(status.contains("200"), "{status}");
    Ok(())
}
