//! `--debug` end to end: the crypto release from `deb:bookworm` with its debug image beside it.
//! The image is the same bytes with and without `--debug` and has no shell; the debug image is
//! its layers plus one (Debian's busybox-static under /busybox, pinned in imgbuild.lock); Docker
//! loads both, runs a busybox shell in the debug image (and `docker exec`s one into a running
//! debug container), and refuses it in the image.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::debbase::{assert_shell_less, layers_of, listing, mirrors};
use crate::lab::{self, TestResult, fail, json_of, run, stderr, stdout};

pub const TOOLS: &[&str] = &["mix", "tar", "docker-registry", "skopeo"];

/// `imgbuild build --json` of the crypto release on deb:bookworm into `dir/out`.
fn build(dir: &Path, out: &str, extra: &[&str]) -> Result<(Value, String), libtest_mimic::Failed> {
    let rel = lab::crypto_release()?;
    let (main, security) = mirrors()?;
    let o = run(lab::imgbuild()
        .current_dir(dir)
        .arg("build")
        .arg(&rel)
        .args(["--from", "deb:bookworm", "--package", "auto"])
        .args(["--deb-mirror", &main, "--deb-security-mirror", &security])
        .args(["-t", "hello-dbg:0.1.0", "--json"])
        .args(extra)
        .arg("-o")
        .arg(dir.join(out)))?;
    Ok((json_of(&o)?, stderr(&o)))
}

fn env_path(config: &Value) -> String {
    config["config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or_default()
        .to_string()
}

pub fn test_debug_image_beside_the_image() -> TestResult {
    let dir = lab::scratch_dir("debug-bookworm");
    let (json, said) = build(&dir, "a.tar", &["--debug"])?;
    eprintln!("{said}");
    let debug = &json["debug"];
    let digest = json["digest"].as_str().unwrap_or_default().to_string();
    let debug_digest = debug["digest"].as_str().unwrap_or_default().to_string();
    assert!(
        debug_digest.starts_with("sha256:") && debug_digest != digest,
        "{json}"
    );
    assert_eq!(debug["tags"][0], "docker.io/library/hello-dbg:0.1.0-debug");
    assert_eq!(
        debug["output"].as_str().unwrap_or_default(),
        dir.join("a-debug.tar").display().to_string()
    );
    let layer = &debug["platforms"][0]["layer"];
    assert_eq!(layer["kind"], "debug", "{json}");
    assert_eq!(debug["platforms"][0]["package"], "busybox-static");
    eprintln!(
        "debug layer: {} bytes compressed, busybox-static {}, {} applets",
        layer["size"], debug["platforms"][0]["version"], debug["platforms"][0]["applets"]
    );
    // busybox-static is pinned beside the packages, for amd64.
    let lock =
        std::fs::read_to_string(dir.join("imgbuild.lock")).map_err(|e| fail(e.to_string()))?;
    assert!(
        lock.contains("[[debug]]") && lock.contains("busybox-static_"),
        "{lock}"
    );
    assert!(lock.contains("_amd64.deb"), "{lock}");

    // Without --debug (from the lock): the same image, byte for byte.
    let (plain, _) = build(&dir, "b.tar", &[])?;
    assert_eq!(plain["digest"].as_str().unwrap_or_default(), digest);
    assert!(plain.get("debug").is_none(), "{plain}");
    let (a, b) = (
        std::fs::read(dir.join("a.tar")).map_err(|e| fail(e.to_string()))?,
        std::fs::read(dir.join("b.tar")).map_err(|e| fail(e.to_string()))?,
    );
    assert!(a == b, "the image's tarball differs with --debug");
    assert!(!dir.join("b-debug.tar").exists());
    // Again with --debug, from the lock: the same debug image, the lock untouched.
    let (again, said) = build(&dir, "c.tar", &["--debug"])?;
    assert_eq!(
        again["debug"]["digest"].as_str().unwrap_or_default(),
        debug_digest
    );
    assert!(!said.contains("imgbuild.lock"), "{said}");

    // The image: no shell in any layer, nothing of busybox. The debug image: the same layers
    // and one more, busybox with its links, and /busybox at the end of PATH.
    let (layers, config) = layers_of(&dir.join("a.tar"), &dir)?;
    let lists = assert_shell_less(&layers)?;
    assert!(lists.iter().all(|l| !l.contains("busybox")));
    assert!(!env_path(&config).contains("busybox"), "{config}");
    let (debug_layers, debug_config) = layers_of(&dir.join("a-debug.tar"), &dir)?;
    assert_eq!(debug_layers.len(), layers.len() + 1);
    let name = |p: &Path| p.file_name().map(|n| n.to_os_string());
    for (l, d) in layers.iter().zip(&debug_layers) {
        assert_eq!(name(l), name(d));
    }
    let top = listing(debug_layers.last().ok_or_else(|| fail("no layers"))?)?;
    assert!(top.contains("busybox/busybox"), "{top}");
    assert!(top.contains("busybox/sh -> busybox"), "{top}");
    assert!(top.contains("busybox/ps -> busybox"), "{top}");
    assert!(
        env_path(&debug_config).ends_with(":/busybox"),
        "{debug_config}"
    );
    assert_eq!(
        config["config"]["Entrypoint"], debug_config["config"]["Entrypoint"],
        "the debug image starts the release as the image does"
    );

    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(dir.join("a.tar")))?;
    run(docker
        .cmd()
        .arg("load")
        .arg("-i")
        .arg(dir.join("a-debug.tar")))?;
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "--entrypoint",
        "/busybox/sh",
        "hello-dbg:0.1.0-debug",
        "-c",
        "ls /app/bin && /app/bin/hello version && id -u",
    ]))?;
    let said = stdout(&out);
    assert!(said.contains("hello") && said.contains("0.1.0"), "{said}");
    assert!(said.trim_end().ends_with("65534"), "{said}");
    // docker exec into the running debug image: its release is there to look at.
    let port = lab::free_port();
    let name = format!("imgbuild-e2e-debug-{port}");
    run(docker.cmd().args([
        "run",
        "-d",
        "--name",
        &name,
        "--network=host",
        "-e",
        &format!("PORT={port}"),
        "-e",
        "RELEASE_DISTRIBUTION=none",
        "hello-dbg:0.1.0-debug",
    ]))?;
    let looked = lab::http_get(port, "/").and_then(|_| {
        run(docker
            .cmd()
            .args(["exec", &name, "/busybox/sh", "-c", "ps && ls /app"]))
    });
    let _ = docker.cmd().args(["rm", "-f", &name]).output();
    let ps = stdout(&looked?);
    assert!(ps.contains("beam.smp") && ps.contains("releases"), "{ps}");
    // The image has no busybox to run.
    let refused = docker
        .cmd()
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/busybox/sh",
            "hello-dbg:0.1.0",
            "-c",
            "true",
        ])
        .output()
        .map_err(|e| fail(e.to_string()))?;
    assert!(!refused.status.success(), "{}", stdout(&refused));

    // --push sends the -debug tag too, --load loads it too.
    let reg = lab::registry()?;
    let tag = format!("{}/e2e/hello-dbg:2", reg.host());
    let rel = lab::crypto_release()?;
    let (main, security) = mirrors()?;
    let pushed = json_of(&run(lab::imgbuild()
        .current_dir(&dir)
        .env("DOCKER_HOST", &docker.host)
        .arg("build")
        .arg(&rel)
        .args(["--from", "deb:bookworm", "--package", "auto"])
        .args(["--deb-mirror", &main, "--deb-security-mirror", &security])
        .args(["-t", &tag, "--push", "--load", "--debug", "--json"]))?)?;
    let want = pushed["debug"]["digest"].as_str().unwrap_or_default();
    assert_eq!(want, debug_digest, "the same debug image: {pushed}");
    let seen = run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{tag}-debug")))?;
    let seen: Value = serde_json::from_slice(&seen.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(seen["Digest"].as_str().unwrap_or_default(), want, "{seen}");
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "--entrypoint",
        "/busybox/sh",
        &format!("{tag}-debug"),
        "-c",
        "/app/bin/hello version",
    ]))?;
    assert_eq!(stdout(&out).trim(), "hello 0.1.0");
    Ok(())
}
