//! End-to-end tests against real peers: docker-registry, Docker Engine, podman, skopeo, umoci,
//! containerd's ctr, and a real Elixir release. Run with `scripts/test` (it installs the tools).

mod apt;
mod check;
mod debbase;
mod debmirror;
mod debug;
mod dist;
mod faults;
mod fleet;
mod guard;
mod hostile;
mod html;
mod lab;
mod launch;
mod mixpkg;
mod model;
mod phoenix;
mod platforms;
mod progress;
mod push;
mod rebase;
mod recipes;
mod runners;
mod sbom;
mod servers;
mod signing;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lab::{TestResult, fail, run, stdout};
use libtest_mimic::Arguments;
use serde_json::Value;

const TOOLS: &[&str] = &["docker-registry", "skopeo", "umoci", "debootstrap", "mix"];

/// The result of building the sample release on the registry base, shared by the loader tests.
#[derive(Clone, Debug)]
struct Built {
    tarball: PathBuf,
    layout: PathBuf,
    report: Value,
}

fn build_json(args: &[&str]) -> Result<Value, libtest_mimic::Failed> {
    let out = run(lab::imgbuild().arg("build").args(args).arg("--json"))?;
    serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("--json output is not JSON: {e}: {}", stdout(&out))))
}

fn built() -> Result<Built, libtest_mimic::Failed> {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            (|| {
                let rel = lab::release()?;
                let base = lab::base_in_registry()?;
                let dir = lab::workdir().join("built");
                let _ = std::fs::create_dir_all(&dir);
                let tarball = dir.join("hello.tar");
                let layout = dir.join("layout");
                let report = build_json(&[
                    rel.to_str().unwrap_or_default(),
                    "--from",
                    &base,
                    "-t",
                    "imgbuild-e2e/hello:0.1.0",
                    "-o",
                    tarball.to_str().unwrap_or_default(),
                    "--oci-layout",
                    layout.to_str().unwrap_or_default(),
                ])?;
                Ok(Built {
                    tarball,
                    layout,
                    report,
                })
            })()
            .map_err(|e: libtest_mimic::Failed| e.message().unwrap_or("build failed").to_string())
        })
        .clone()
        .map_err(|m| fail(format!("shared build failed: {m}")))
}

fn check_body(body: &str) -> TestResult {
    for want in ["hello from imgbuild", "uid=65534", "encoding=utf8"] {
        if !body.contains(want) {
            return Err(fail(format!(
                "the release's answer lacks {want:?}:\n{body}"
            )));
        }
    }
    Ok(())
}

fn test_json_report() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let b = built()?;
    let r = &b.report;
    let digest = r["digest"].as_str().ok_or_else(|| fail("no digest"))?;
    assert_eq!(r["tags"][0], "docker.io/imgbuild-e2e/hello:0.1.0");
    assert_eq!(
        r["output"].as_str().map(PathBuf::from),
        Some(b.tarball.clone())
    );
    let kinds: Vec<&str> = r["layers"]
        .as_array()
        .ok_or_else(|| fail("no layers"))?
        .iter()
        .filter_map(|l| l["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["base", "erts", "deps", "app", "release", "sbom"]);
    // The SBOM: in the image, counted in the report, and a blob of the tarball.
    assert_eq!(r["sbom"]["path"], "/var/lib/db/sbom/hello-0.1.0.spdx.json");
    assert!(
        r["sbom"]["applications"].as_u64().unwrap_or(0) >= 9,
        "{}",
        r["sbom"]
    );
    assert!(
        r["sbom"]["debian_packages"].as_u64().unwrap_or(0) > 50,
        "{}",
        r["sbom"]
    );
    assert!(
        r["check"]["elf_files"].as_u64().unwrap_or(0) >= 10,
        "{}",
        r["check"]
    );
    for l in r["layers"].as_array().into_iter().flatten() {
        assert!(
            l["digest"]
                .as_str()
                .is_some_and(|d| d.starts_with("sha256:"))
                && l["diff_id"].as_str().is_some()
                && l["size"].as_u64() > Some(0)
        );
    }
    // index.json in the tarball points at the manifest the report names.
    let out = run(Command::new("tar")
        .arg("-xOf")
        .arg(&b.tarball)
        .arg("index.json"))?;
    let index: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(index["manifests"][0]["digest"], digest);
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "docker.io/imgbuild-e2e/hello:0.1.0"
    );
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "0.1.0"
    );
    let out = run(Command::new("tar")
        .arg("-xOf")
        .arg(&b.tarball)
        .arg("manifest.json"))?;
    let m: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(m[0]["RepoTags"][0], "docker.io/imgbuild-e2e/hello:0.1.0");
    assert_eq!(m[0]["Layers"].as_array().map(Vec::len), Some(6));
    Ok(())
}

fn test_docker_load_and_run() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "docker"]].concat())? {
        return Ok(());
    }
    let b = built()?;
    let docker = lab::docker()?;
    let out = run(docker.cmd().arg("load").arg("-i").arg(&b.tarball))?;
    assert!(
        stdout(&out).contains("imgbuild-e2e/hello:0.1.0"),
        "{}",
        stdout(&out)
    );
    let (status, body) = lab::run_and_get(&docker, "imgbuild-e2e/hello:0.1.0")?;
    assert!(status.contains("200"), "{status}");
    check_body(&body)?;
    // Ownership and modes as COPY --chown=nobody:root gives, cookie private to the runtime user.
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "--entrypoint",
        "stat",
        "imgbuild-e2e/hello:0.1.0",
        "-c",
        "%n %u:%g %a",
        "/app",
        "/app/bin/server",
        "/app/releases/COOKIE",
        "/app/lib",
    ]))?;
    assert_eq!(
        stdout(&out).trim(),
        "/app 65534:0 755\n/app/bin/server 65534:0 755\n/app/releases/COOKIE 65534:0 400\n/app/lib 65534:0 755"
    );
    let out = run(docker.cmd().args([
        "image",
        "inspect",
        "imgbuild-e2e/hello:0.1.0",
        "--format",
        "{{.Config.User}}|{{.Config.WorkingDir}}|{{json .Config.Cmd}}|{{json .Config.Env}}",
    ]))?;
    let s = stdout(&out);
    assert!(s.starts_with("65534|/app|[\"/app/bin/server\"]|"), "{s}");
    for env in [
        "LANG=C.UTF-8",
        "MIX_ENV=prod",
        "RELEASE_TMP=/tmp",
        "PATH=/usr/local/sbin",
    ] {
        assert!(s.contains(env), "{env} missing from {s}");
    }
    Ok(())
}

/// `--compression zstd`: zstd layers (and gzip base layers, carried as they are) that podman
/// loads and runs, and skopeo reads; the same build twice gives the same digest.
fn test_zstd_layers_podman_run() -> TestResult {
    if !lab::require(&[TOOLS, &["podman", "runc"]].concat())? {
        return Ok(());
    }
    let rel = lab::release()?;
    let base = lab::base_in_registry()?;
    let dir = lab::scratch_dir("zstd");
    let tarball = dir.join("zstd.tar");
    let mut digests = Vec::new();
    for cache in ["c1", "c2"] {
        let out = run(lab::imgbuild()
            .env("IMGBUILD_CACHE", dir.join(cache))
            .arg("build")
            .arg(&rel)
            .args(["--from", &base, "--compression", "zstd:3", "--json"])
            .args(["-t", "imgbuild-e2e/hello-zstd:1", "-o"])
            .arg(&tarball))?;
        let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
        digests.push(report["digest"].clone());
    }
    assert_eq!(digests[0], digests[1], "zstd builds differ");
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", tarball.display())))?;
    let manifest: Value = serde_json::from_slice(&raw.stdout).map_err(|e| fail(e.to_string()))?;
    let types: Vec<String> = manifest["layers"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|d| d["mediaType"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(types[0].ends_with("tar+gzip"), "{types:?}");
    assert!(
        types[1..].iter().all(|t| t.ends_with("tar+zstd")),
        "{types:?}"
    );
    run(lab::podman().arg("load").arg("-i").arg(&tarball))?;
    let (status, body) = podman_run_and_get("docker.io/imgbuild-e2e/hello-zstd:1")?;
    assert!(status.contains("200"), "{status}");
    check_body(&body)
}

/// Run `image` with podman on a free port, GET `/`, remove the container; a failure carries
/// the container's logs.
fn podman_run_and_get(image: &str) -> Result<(String, String), libtest_mimic::Failed> {
    podman_run_and_get_path(image, "/")
}

/// As `podman_run_and_get`, for another path.
fn podman_run_and_get_path(
    image: &str,
    path: &str,
) -> Result<(String, String), libtest_mimic::Failed> {
    let port = lab::free_port();
    let name = format!("imgbuild-e2e-p{port}");
    run(lab::podman().args([
        "run",
        "-d",
        "--name",
        &name,
        "--network=host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "-e",
        &format!("PORT={port}"),
        "-e",
        "RELEASE_DISTRIBUTION=none",
        image,
    ]))?;
    let answer = lab::http_get(port, path);
    let logs = lab::podman()
        .args(["logs", &name])
        .output()
        .map(|o| format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr)))
        .unwrap_or_default();
    let _ = lab::podman().args(["rm", "-f", &name]).output();
    answer.map_err(|e| {
        fail(format!(
            "{}; container logs:\n{logs}",
            e.message().unwrap_or("")
        ))
    })
}

fn test_podman_load_and_run() -> TestResult {
    if !lab::require(&[TOOLS, &["podman", "runc"]].concat())? {
        return Ok(());
    }
    let b = built()?;
    let out = run(lab::podman().arg("load").arg("-i").arg(&b.tarball))?;
    assert!(
        stdout(&out).contains("docker.io/imgbuild-e2e/hello:0.1.0"),
        "{}",
        stdout(&out)
    );
    let (status, body) = podman_run_and_get("docker.io/imgbuild-e2e/hello:0.1.0")?;
    assert!(status.contains("200"), "{status}");
    check_body(&body)
}

fn test_skopeo_reads_both_transports() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let b = built()?;
    let digest = b.report["digest"].as_str().unwrap_or_default();
    let oci = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", b.tarball.display())))?;
    let oci: Value = serde_json::from_slice(&oci.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(oci["Digest"], digest, "oci-archive: must see our manifest");
    assert_eq!(oci["Layers"].as_array().map(Vec::len), Some(6));
    let dock = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", b.tarball.display())))?;
    let dock: Value = serde_json::from_slice(&dock.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(dock["Layers"].as_array().map(Vec::len), Some(6));
    let cfg = run(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", b.tarball.display())))?;
    let cfg: Value = serde_json::from_slice(&cfg.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(cfg["config"]["User"], "65534");
    assert_eq!(cfg["config"]["WorkingDir"], "/app");
    assert_eq!(cfg["config"]["Cmd"][0], "/app/bin/server");
    assert!(cfg["config"]["ExposedPorts"]["4000/tcp"].is_object());
    assert_eq!(
        cfg["config"]["Labels"]["org.opencontainers.image.title"],
        "hello"
    );
    assert_eq!(
        cfg["config"]["Labels"]["org.opencontainers.image.version"],
        "0.1.0"
    );
    assert_eq!(
        cfg["config"]["Labels"]["org.opencontainers.image.base.digest"],
        b.report["base"]["digest"]
    );
    // One history entry per layer (entries marked empty_layer do not count).
    let layered = cfg["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["empty_layer"] != true)
        .count();
    assert_eq!(layered, 6);
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(6));
    Ok(())
}

fn test_umoci_unpacks_layout() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let b = built()?;
    let dir = lab::scratch_dir("umoci");
    let bundle = dir.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:0.1.0", b.layout.display()))
        .arg(&bundle))?;
    let rootfs = bundle.join("rootfs");
    for p in [
        "app/bin/server",
        "app/bin/hello",
        "app/releases/start_erl.data",
        "app/lib/hello-0.1.0/ebin/hello.app",
        "bin/sh",
    ] {
        if !rootfs.join(p).exists() {
            return Err(fail(format!("{p} missing from the unpacked image")));
        }
    }
    let erts: Vec<_> = std::fs::read_dir(rootfs.join("app"))
        .map_err(|e| fail(e.to_string()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("erts-"))
        .collect();
    assert_eq!(erts.len(), 1);
    let config: Value = serde_json::from_slice(
        &std::fs::read(bundle.join("config.json")).map_err(|e| fail(e.to_string()))?,
    )
    .map_err(|e| fail(e.to_string()))?;
    assert_eq!(config["process"]["args"][0], "/app/bin/server");
    // The SBOM inside the image lists the release's applications and the base's packages.
    let sbom: Value = serde_json::from_slice(
        &std::fs::read(rootfs.join("var/lib/db/sbom/hello-0.1.0.spdx.json"))
            .map_err(|e| fail(format!("SBOM missing from the image: {e}")))?,
    )
    .map_err(|e| fail(e.to_string()))?;
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let pkgs = sbom["packages"].as_array().cloned().unwrap_or_default();
    let has = |name: &str, version_prefix: &str| {
        pkgs.iter().any(|p| {
            p["name"] == name
                && p["versionInfo"]
                    .as_str()
                    .is_some_and(|v| v.starts_with(version_prefix))
        })
    };
    for (name, version) in [
        ("hello", "0.1.0"),
        ("kernel", "8."),
        ("stdlib", "4."),
        ("elixir", "1.14"),
        ("inets", "8."),
        ("erts", "13."),
        ("libc6", "2.36"),
    ] {
        assert!(has(name, version), "{name} {version} missing from the SBOM");
    }
    Ok(())
}

fn test_ctr_imports() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "ctr"]].concat())? {
        return Ok(());
    }
    let b = built()?;
    let docker = lab::docker()?;
    let addr = docker.containerd_socket.display().to_string();
    let out = run(Command::new("ctr")
        .args(["--address", &addr, "-n", "imgbuild-e2e", "images", "import"])
        .arg(&b.tarball))?;
    let s = stdout(&out);
    assert!(s.contains("docker.io/imgbuild-e2e/hello:0.1.0"), "{s}");
    assert!(
        s.contains(b.report["digest"].as_str().unwrap_or("?")),
        "ctr must import our manifest: {s}"
    );
    let out = run(Command::new("ctr").args([
        "--address",
        &addr,
        "-n",
        "imgbuild-e2e",
        "images",
        "check",
    ]))?;
    assert!(stdout(&out).contains("complete"), "{}", stdout(&out));
    Ok(())
}

/// Copy a release to `dest` with every mtime set to `stamp`.
fn copy_with_mtime(src: &Path, dest: &Path, stamp: &str) -> TestResult {
    let _ = std::fs::remove_dir_all(dest);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    run(Command::new("cp").arg("-a").arg(src).arg(dest))?;
    run(Command::new("find")
        .arg(dest)
        .args(["-exec", "touch", "-h", "-d", stamp, "{}", "+"]))?;
    Ok(())
}

fn test_reproducible_to_the_byte() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let base = lab::base_in_registry()?;
    let dir = lab::scratch_dir("repro");
    copy_with_mtime(&rel, &dir.join("a-copy"), "2001-02-03 04:05:06")?;
    copy_with_mtime(&rel, &dir.join("elsewhere/b"), "2022-12-31 23:59:59")?;
    let mut digests = Vec::new();
    for (i, src) in [dir.join("a-copy"), dir.join("elsewhere/b")]
        .iter()
        .enumerate()
    {
        let out = dir.join(format!("out{i}.tar"));
        // Separate caches: nothing may be shared between the two builds.
        let r = run(lab::imgbuild()
            .env("IMGBUILD_CACHE", dir.join(format!("cache{i}")))
            .args(["build", "--quiet", "--from", &base, "-t", "repro:1", "-o"])
            .arg(&out)
            .arg(src))?;
        digests.push(stdout(&r));
    }
    let a = std::fs::read(dir.join("out0.tar")).map_err(|e| fail(e.to_string()))?;
    let b = std::fs::read(dir.join("out1.tar")).map_err(|e| fail(e.to_string()))?;
    assert_eq!(digests[0], digests[1]);
    if a != b {
        return Err(fail(
            "two builds of the same release gave different tarballs",
        ));
    }
    // SOURCE_DATE_EPOCH sets `created`.
    let r = build_json(&[
        "--from",
        &base,
        "-t",
        "repro:2",
        "-o",
        dir.join("epoch.tar").to_str().unwrap_or_default(),
        rel.to_str().unwrap_or_default(),
    ]);
    let plain = r?;
    let out = run(lab::imgbuild()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--json", "--from", &base, "-t", "repro:2", "-o"])
        .arg(dir.join("epoch2.tar"))
        .arg(&rel))?;
    let with_epoch: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    assert_ne!(plain["digest"], with_epoch["digest"]);
    let cfg = run(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", dir.join("epoch2.tar").display())))?;
    let cfg: Value = serde_json::from_slice(&cfg.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(cfg["created"], "2023-11-14T22:13:20Z");
    Ok(())
}

fn test_one_module_change_touches_only_app_and_release_layers() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let base = lab::base_in_registry()?;
    let dir = lab::scratch_dir("layering");
    let v2_built = lab::build_release(&dir.join("hello-v2"), Some("hello from a changed module"))?;
    // Each release with digested web assets under the application's priv/static.
    let with_assets =
        |src: &Path, name: &str, js: &str| -> Result<PathBuf, libtest_mimic::Failed> {
            let dst = dir.join(name);
            run(Command::new("cp").arg("-a").arg(src).arg(&dst))?;
            let assets = dst.join("lib/hello-0.1.0/priv/static/assets");
            std::fs::create_dir_all(&assets).map_err(|e| fail(e.to_string()))?;
            std::fs::write(assets.join("app.js"), js).map_err(|e| fail(e.to_string()))?;
            std::fs::write(assets.join("logo.svg"), "<svg/>").map_err(|e| fail(e.to_string()))?;
            Ok(dst)
        };
    let v1 = with_assets(&lab::release()?, "v1", "console.log(1)")?;
    let v2 = with_assets(&v2_built, "v2", "console.log(1)")?;
    let v3 = with_assets(&v2_built, "v3", "console.log(2)")?;
    type Layers = (Vec<(String, String)>, u64, String);
    let layers = |rel: &Path, out: &str| -> Result<Layers, libtest_mimic::Failed> {
        let r = build_json(&[
            rel.to_str().unwrap_or_default(),
            "--from",
            &base,
            "-o",
            dir.join(out).to_str().unwrap_or_default(),
        ])?;
        let list = r["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                (
                    l["kind"].as_str().unwrap_or("").to_string(),
                    l["digest"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        Ok((
            list,
            r["reused_layers"].as_u64().unwrap_or(99),
            r["digest"].as_str().unwrap_or("").to_string(),
        ))
    };
    let (a, _, _) = layers(&v1, "v1.tar")?;
    let (b, reused, digest) = layers(&v2, "v2.tar")?;
    // The layer cache: erts, deps and the SBOM were not tarred or compressed again.
    assert!(reused >= 3, "only {reused} layers reused");
    // Nothing changed: every new layer comes from the layer cache, and the image is the same.
    let (_, reused_again, digest_again) = layers(&v2, "v2-again.tar")?;
    assert_eq!(reused_again, 6);
    assert_eq!(digest_again, digest);
    let changed = |x: &[(String, String)], y: &[(String, String)]| -> Vec<String> {
        assert_eq!(x.len(), y.len());
        x.iter()
            .zip(y)
            .filter(|((_, dx), (_, dy))| dx != dy)
            .map(|((k, _), _)| k.clone())
            .collect()
    };
    assert!(
        a.iter().any(|(k, _)| k == "assets"),
        "no assets layer: {a:?}"
    );
    // A module changed: the app and release layers; the assets keep their digest.
    assert_eq!(changed(&a, &b), ["app", "release"]);
    // An asset changed: its layer alone.
    let (c, _, _) = layers(&v3, "v3.tar")?;
    assert_eq!(changed(&b, &c), ["assets"]);
    Ok(())
}

fn test_local_bases() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let layout = lab::base_layout()?;
    let dir = lab::scratch_dir("local-bases");
    let docker_archive = dir.join("base-docker.tar");
    let oci_archive = dir.join("base-oci.tar");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:bookworm", layout.display()))
        .arg(format!(
            "docker-archive:{}:base:bookworm",
            docker_archive.display()
        )))?;
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:bookworm", layout.display()))
        .arg(format!("oci-archive:{}:bookworm", oci_archive.display())))?;
    let mut diff_ids = Vec::new();
    for from in [
        format!("oci:{}:bookworm", layout.display()),
        format!("oci-archive:{}", oci_archive.display()),
        format!("docker-archive:{}", docker_archive.display()),
    ] {
        let r = build_json(&[
            rel.to_str().unwrap_or_default(),
            "--from",
            &from,
            "-o",
            dir.join("out.tar").to_str().unwrap_or_default(),
        ])?;
        let layers = r["layers"].as_array().cloned().unwrap_or_default();
        assert_eq!(layers.len(), 6, "{from}");
        assert!(
            layers
                .iter()
                .all(|l| l["media_type"] == "application/vnd.oci.image.layer.v1.tar+gzip"),
            "{from}: {layers:?}"
        );
        diff_ids.push(
            // The SBOM names the base as given (oci:, oci-archive:, ...), so it differs.
            layers
                .iter()
                .filter(|l| l["kind"] != "sbom")
                .map(|l| l["diff_id"].clone())
                .collect::<Vec<_>>(),
        );
        run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", dir.join("out.tar").display())))?;
    }
    // Whatever the container, the base's content is the same.
    assert!(diff_ids.windows(2).all(|w| w[0] == w[1]));
    Ok(())
}

fn test_pinned_cached_base_needs_no_network() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let layout = lab::base_layout()?;
    let reg = lab::start_registry("pinned")?;
    let dir = lab::scratch_dir("pinned");
    let reference = format!("{}/base/debian:pinned", reg.host());
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:bookworm", layout.display()))
        .arg(format!("docker://{reference}")))?;
    let out = run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{reference}")))?;
    let pinned = format!("{}/base/debian@{}", reg.host(), stdout(&out).trim());
    let cache = dir.join("cache");
    let build = |out: &str| {
        run(lab::imgbuild()
            .env("IMGBUILD_CACHE", &cache)
            .args(["build", "-q", "--from", &pinned, "-o"])
            .arg(dir.join(out))
            .arg(&rel))
    };
    let first = build("a.tar")?;
    // Take the registry away: the second build must not need it.
    std::fs::remove_dir_all(reg.dir.join("data")).map_err(|e| fail(e.to_string()))?;
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("pkill -f '{}/config.yml'", reg.dir.display()))
        .status();
    let second = build("b.tar")?;
    assert_eq!(stdout(&first), stdout(&second));
    // And an unpinned reference to the vanished registry fails with the host and cause.
    let err = lab::imgbuild()
        .env("IMGBUILD_CACHE", &cache)
        .args(["build", "-q", "--from", &reference, "-o"])
        .arg(dir.join("c.tar"))
        .arg(&rel)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    assert_eq!(err.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        msg.contains(&reg.host()) && msg.contains("unreachable"),
        "{msg}"
    );
    assert!(!dir.join("c.tar").exists());
    Ok(())
}

fn test_bad_input_errors() -> TestResult {
    if !lab::require(&["mix"])? {
        return Ok(());
    }
    let rel = lab::release()?;
    let dir = lab::scratch_dir("errors");
    let out = dir.join("out.tar");
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![
                "build".into(),
                dir.join("missing").display().to_string(),
                "-o".into(),
                out.display().to_string(),
            ],
            1,
            "cannot be read",
        ),
        (
            vec![
                "build".into(),
                dir.display().to_string(),
                "-o".into(),
                out.display().to_string(),
            ],
            1,
            "is not a mix release",
        ),
        (
            vec![
                "build".into(),
                rel.display().to_string(),
                "--env".into(),
                "NOVALUE".into(),
                "-o".into(),
                out.display().to_string(),
            ],
            2,
            "expected KEY=VALUE",
        ),
        (
            vec![
                "build".into(),
                rel.display().to_string(),
                "--env".into(),
                "SECRET_KEY_BASE=abc".into(),
                "-o".into(),
                out.display().to_string(),
            ],
            2,
            "docker run -e SECRET_KEY_BASE",
        ),
        (
            vec![
                "build".into(),
                rel.display().to_string(),
                "--from".into(),
                "Bad Ref".into(),
                "-o".into(),
                out.display().to_string(),
            ],
            2,
            "invalid image reference",
        ),
        (
            vec![
                "build".into(),
                rel.display().to_string(),
                "--platform".into(),
                "linux".into(),
                "-o".into(),
                out.display().to_string(),
            ],
            2,
            "invalid platform",
        ),
        (
            vec![
                "build".into(),
                rel.display().to_string(),
                "--expose".into(),
                "99999".into(),
                "-o".into(),
                out.display().to_string(),
            ],
            2,
            "invalid --expose",
        ),
        (
            vec!["build".into(), rel.display().to_string()],
            2,
            "nothing to write",
        ),
        (
            vec![
                "build".into(),
                rel.display().to_string(),
                "--from".into(),
                "scratch".into(),
                "--platform".into(),
                "linux/amd64".into(),
                "--from".into(),
                "x".into(),
            ],
            2,
            "cannot be used multiple times",
        ),
        (
            vec![
                "build".into(),
                rel.display().to_string(),
                "--from".into(),
                "127.0.0.1:1/nothing:here".into(),
                "-o".into(),
                out.display().to_string(),
            ],
            1,
            "127.0.0.1:1 is unreachable",
        ),
        (
            vec![
                "build".into(),
                rel.display().to_string(),
                "--from".into(),
                format!("oci:{}", dir.join("none").display()),
                "-o".into(),
                out.display().to_string(),
            ],
            1,
            "cannot open",
        ),
    ];
    for (args, code, want) in cases {
        let o = lab::imgbuild()
            .args(&args)
            .output()
            .map_err(|e| fail(e.to_string()))?;
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.code() != Some(code) || !err.contains(want) {
            return Err(fail(format!(
                "imgbuild {args:?}: expected exit {code} and {want:?}, got {:?}: {err}",
                o.status.code()
            )));
        }
        if out.exists() {
            return Err(fail(format!("imgbuild {args:?} left {}", out.display())));
        }
    }
    // A fifo inside the release is named, and no output appears.
    let copy = dir.join("with-fifo");
    run(Command::new("cp").arg("-a").arg(&rel).arg(&copy))?;
    run(Command::new("mkfifo").arg(copy.join("bin/pipe")))?;
    let o = lab::imgbuild()
        .args(["build", "--from", "scratch", "-o"])
        .arg(&out)
        .arg(&copy)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bin/pipe is a fifo"), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| fail(e.to_string()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    Ok(())
}

fn test_default_release_and_project_file() -> TestResult {
    if !lab::require(&["mix"])? {
        return Ok(());
    }
    let rel = lab::release()?;
    let dir = lab::scratch_dir("project");
    std::fs::create_dir_all(dir.join("_build/prod/rel")).map_err(|e| fail(e.to_string()))?;
    run(Command::new("cp")
        .arg("-a")
        .arg(&rel)
        .arg(dir.join("_build/prod/rel/hello")))?;
    std::fs::write(
        dir.join("imgbuild.toml"),
        "from = \"scratch\"\ncheck = false\ntags = [\"example.com/team/hello:7\"]\noutput = \"img.tar\"\nexpose = [\"8080\"]\n[env]\nPORT = \"8080\"\n[labels]\nteam = \"core\"\n",
    )
    .map_err(|e| fail(e.to_string()))?;
    let out = run(lab::imgbuild().current_dir(&dir).args([
        "build",
        "--json",
        "--label",
        "team=platform",
        "--env",
        "EXTRA=1",
    ]))?;
    let r: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(r["tags"][0], "example.com/team/hello:7");
    assert!(dir.join("img.tar").is_file());
    let cfg = run(Command::new("tar")
        .arg("-xOf")
        .arg(dir.join("img.tar"))
        .arg(format!(
            "blobs/sha256/{}",
            r["config"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches("sha256:")
        )))?;
    let cfg: Value = serde_json::from_slice(&cfg.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(
        cfg["config"]["Labels"]["team"], "platform",
        "flags override the project file"
    );
    let env: Vec<&str> = cfg["config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        env.contains(&"PORT=8080") && env.contains(&"EXTRA=1") && env.contains(&"LANG=C.UTF-8"),
        "{env:?}"
    );
    assert!(cfg["config"]["ExposedPorts"]["8080/tcp"].is_object());
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A two-platform layout (amd64 + arm64, plus a BuildKit attestation entry) made from the base.
fn multi_platform_layout(dir: &Path) -> Result<PathBuf, libtest_mimic::Failed> {
    let src = lab::base_layout()?;
    let layout = dir.join("multi");
    run(Command::new("cp").arg("-a").arg(&src).arg(&layout))?;
    let read_json = |p: PathBuf| -> Result<Value, libtest_mimic::Failed> {
        serde_json::from_slice(
            &std::fs::read(&p).map_err(|e| fail(format!("{}: {e}", p.display())))?,
        )
        .map_err(|e| fail(e.to_string()))
    };
    let blob = |hex: &str| layout.join("blobs/sha256").join(hex);
    let index = read_json(layout.join("index.json"))?;
    let amd64_desc = index["manifests"][0].clone();
    let amd64_hex = amd64_desc["digest"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("sha256:")
        .to_string();
    let manifest = read_json(blob(&amd64_hex))?;
    let cfg_hex = manifest["config"]["digest"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("sha256:")
        .to_string();
    let mut config = read_json(blob(&cfg_hex))?;
    config["architecture"] = "arm64".into();
    config["variant"] = "v8".into();
    let put = |v: &Value| -> Result<(String, usize), libtest_mimic::Failed> {
        let bytes = serde_json::to_vec(v).map_err(|e| fail(e.to_string()))?;
        let hex = sha256_hex(&bytes);
        std::fs::write(blob(&hex), &bytes).map_err(|e| fail(e.to_string()))?;
        Ok((hex, bytes.len()))
    };
    let (arm_cfg, arm_cfg_size) = put(&config)?;
    let mut arm_manifest = manifest.clone();
    arm_manifest["config"]["digest"] = format!("sha256:{arm_cfg}").into();
    arm_manifest["config"]["size"] = arm_cfg_size.into();
    let (arm_hex, arm_size) = put(&arm_manifest)?;
    let entry = |hex: &str, size: u64, os: &str, arch: &str, variant: Option<&str>| {
        let mut platform = serde_json::json!({"os": os, "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{hex}"), "size": size, "platform": platform})
    };
    let mut attestation = entry(
        &amd64_hex,
        amd64_desc["size"].as_u64().unwrap_or(0),
        "unknown",
        "unknown",
        None,
    );
    attestation["annotations"] =
        serde_json::json!({"vnd.docker.reference.type": "attestation-manifest"});
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            attestation,
            entry(&arm_hex, arm_size as u64, "linux", "arm64", Some("v8")),
            entry(&amd64_hex, amd64_desc["size"].as_u64().unwrap_or(0), "linux", "amd64", None),
        ]
    });
    let (nested_hex, nested_size) = put(&nested)?;
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{nested_hex}"), "size": nested_size,
                       "annotations": {"org.opencontainers.image.ref.name": "multi"}}]
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&top).map_err(|e| fail(e.to_string()))?,
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(layout)
}

fn test_platform_selection_from_index() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let dir = lab::scratch_dir("platform-selection");
    let layout = multi_platform_layout(&dir)?;
    let from = format!("oci:{}:multi", layout.display());
    let out = dir.join("out.tar");
    let host = build_json(&[
        rel.to_str().unwrap_or_default(),
        "--from",
        &from,
        "-o",
        out.to_str().unwrap_or_default(),
    ])?;
    assert_eq!(
        host["platform"], "linux/amd64",
        "the host's platform is the default"
    );
    // An x86-64 release in an arm64 image cannot start: the check says so.
    let o = lab::imgbuild()
        .arg("build")
        .arg(&rel)
        .args(["--from", &from, "--platform", "linux/arm64", "-o"])
        .arg(&out)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1)
            && err.contains("beam.smp")
            && err.contains("x86-64 (amd64) machine")
            && err.contains("the image is for arm64"),
        "{err}"
    );
    // arm64 with and without the v8 variant is the same platform after normalisation.
    for p in ["linux/arm64", "linux/arm64/v8"] {
        let arm = build_json(&[
            rel.to_str().unwrap_or_default(),
            "--from",
            &from,
            "--platform",
            p,
            "--no-check",
            "-o",
            out.to_str().unwrap_or_default(),
        ])?;
        assert_eq!(arm["platform"], "linux/arm64", "{p}");
        assert_ne!(arm["base"]["digest"], host["base"]["digest"]);
    }
    let o = lab::imgbuild()
        .args(["build", "--from", &from, "--platform", "linux/s390x", "-o"])
        .arg(&out)
        .arg(&rel)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no image for platform linux/s390x")
            && err.contains("linux/arm64")
            && err.contains("linux/amd64")
            && !err.contains("unknown"),
        "{err}"
    );
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    lab::sweep_stale();
    let tests = vec![
        lab::trial("build::json_report_and_tarball_layout", test_json_report).needs(TOOLS),
        lab::trial(
            "launch::scripts_and_launcher_agree",
            launch::test_scripts_and_launcher_agree,
        )
        .needs(launch::TOOLS),
        lab::trial(
            "launch::shellless_image_in_docker",
            launch::test_shellless_image_in_docker,
        )
        .needs(&[launch::TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial(
            "launch::deb_images_in_podman",
            launch::test_deb_images_in_podman,
        )
        .needs(&[launch::TOOLS, &["podman", "runc"]].concat()),
        lab::trial(
            "launch::launcher_binaries_match_source",
            launch::test_launcher_binaries_match_source,
        )
        .needs(&["gcc", "aarch64-linux-gnu-gcc"]),
        lab::trial("build::docker_load_and_run", test_docker_load_and_run)
            .needs(&[TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial("build::podman_load_and_run", test_podman_load_and_run)
            .needs(&[TOOLS, &["podman", "runc"]].concat()),
        lab::trial("build::zstd_layers_podman_run", test_zstd_layers_podman_run)
            .needs(&[TOOLS, &["podman", "runc"]].concat()),
        lab::trial(
            "build::skopeo_reads_both_transports",
            test_skopeo_reads_both_transports,
        )
        .needs(TOOLS),
        lab::trial("build::umoci_unpacks_layout", test_umoci_unpacks_layout).needs(TOOLS),
        lab::trial("build::ctr_imports", test_ctr_imports)
            .needs(&[TOOLS, &["dockerd", "ctr"]].concat()),
        lab::trial(
            "build::reproducible_to_the_byte",
            test_reproducible_to_the_byte,
        )
        .needs(TOOLS),
        lab::trial(
            "build::one_module_change_touches_only_app_and_release_layers",
            test_one_module_change_touches_only_app_and_release_layers,
        )
        .needs(TOOLS),
        lab::trial("build::local_bases", test_local_bases).needs(TOOLS),
        lab::trial(
            "build::platform_selection_from_index",
            test_platform_selection_from_index,
        )
        .needs(TOOLS),
        lab::trial(
            "build::pinned_cached_base_needs_no_network",
            test_pinned_cached_base_needs_no_network,
        )
        .needs(TOOLS),
        lab::trial("build::bad_input_errors", test_bad_input_errors).needs(&["mix"]),
        lab::trial(
            "guard::probe_503_is_retried",
            guard::test_probe_503_is_retried,
        )
        .needs(guard::TOOLS),
        lab::trial(
            "guard::downloads_resume_restart_and_unstall",
            guard::test_downloads_resume_restart_and_unstall,
        )
        .needs(guard::TOOLS),
        lab::trial(
            "guard::upload_stall_is_retried",
            guard::test_upload_stall_is_retried,
        )
        .needs(guard::TOOLS),
        lab::trial(
            "guard::long_retry_after_fails_fast",
            guard::test_long_retry_after_fails_fast,
        )
        .needs(guard::TOOLS),
        lab::trial("guard::registry_quirks", guard::test_registry_quirks).needs(guard::TOOLS),
        lab::trial(
            "guard::short_tokens_are_refreshed",
            guard::test_short_tokens_are_refreshed,
        )
        .needs(&[guard::TOOLS, &["openssl"]].concat()),
        lab::trial(
            "guard::kill9_cold_builds_share_a_cache",
            guard::test_kill9_cold_builds_share_a_cache,
        )
        .needs(guard::TOOLS),
        lab::trial(
            "platforms::transplanted_index",
            platforms::test_transplanted_index,
        )
        .needs(platforms::TOOLS),
        lab::trial(
            "platforms::arm64_runs_under_qemu",
            platforms::test_arm64_runs_under_qemu,
        )
        .needs(&[platforms::TOOLS, &["qemu-aarch64-static"]].concat()),
        lab::trial(
            "platforms::arm64_packages_and_crypto_under_qemu",
            platforms::test_arm64_packages_and_crypto_under_qemu,
        )
        .needs(&[platforms::TOOLS, &["qemu-aarch64-static"]].concat()),
        lab::trial(
            "platforms::transplant_refusals",
            platforms::test_transplant_refusals,
        )
        .needs(platforms::TOOLS),
        lab::trial(
            "platforms::transplant_leaves_out_dev_tools",
            platforms::test_transplant_leaves_out_dev_tools,
        )
        .needs(platforms::TOOLS),
        lab::trial(
            "signing::sign_on_push_and_verify_both_ways",
            signing::test_sign_on_push_and_verify_both_ways,
        )
        .needs(signing::TOOLS),
        lab::trial(
            "model::pull_then_build_offline",
            model::test_pull_then_build_offline,
        )
        .needs(model::TOOLS),
        lab::trial(
            "model::copy_between_sources_and_sinks",
            model::test_copy_between_sources_and_sinks,
        )
        .needs(&[model::TOOLS, &["crane"]].concat()),
        lab::trial("model::load_into_engines", model::test_load_into_engines)
            .needs(&[model::TOOLS, &["dockerd", "docker", "podman", "runc"]].concat()),
        lab::trial(
            "model::index_travels_whole",
            model::test_index_travels_whole,
        )
        .needs(model::TOOLS),
        lab::trial(
            "model::three_tags_every_loader",
            model::test_three_tags_every_loader,
        )
        .needs(
            &[
                model::TOOLS,
                &["dockerd", "docker", "podman", "runc", "ctr"],
            ]
            .concat(),
        ),
        lab::trial(
            "build::default_release_and_project_file",
            test_default_release_and_project_file,
        )
        .needs(&["mix"]),
        lab::trial(
            "check::passes_on_a_good_base",
            check::test_passes_on_a_good_base,
        )
        .needs(check::TOOLS),
        lab::trial(
            "check::missing_libcrypto_names_the_package",
            check::test_missing_libcrypto_names_the_package,
        )
        .needs(check::TOOLS),
        lab::trial(
            "check::old_glibc_base_names_the_version",
            check::test_old_glibc_base_names_the_version,
        )
        .needs(check::TOOLS),
        lab::trial(
            "check::foreign_machine_fails",
            check::test_foreign_machine_fails,
        )
        .needs(check::TOOLS),
        lab::trial(
            "check::base_without_shell_fails",
            check::test_base_without_shell_fails,
        )
        .needs(check::TOOLS),
        lab::trial(
            "check::release_without_erts_needs_the_bases_erlang",
            check::test_release_without_erts_needs_the_bases_erlang,
        )
        .needs(&[check::TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial(
            "debbase::bookworm_shell_less_reproducible",
            debbase::test_bookworm_shell_less_reproducible,
        )
        .needs(&[debbase::TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial(
            "debbase::trixie_shell_less",
            debbase::test_trixie_shell_less,
        )
        .needs(&[debbase::TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial(
            "debmirror::own_mirror_offline",
            debmirror::test_own_mirror_offline,
        )
        .needs(&[debmirror::TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial(
            "debmirror::own_mirror_refusals",
            debmirror::test_own_mirror_refusals,
        )
        .needs(debmirror::TOOLS),
        lab::trial("debbase::rebase_onto_deb", debbase::test_rebase_onto_deb).needs(debbase::TOOLS),
        lab::trial(
            "debbase::arm64_packages_for_arm64",
            debbase::test_arm64_packages_for_arm64,
        )
        .needs(debbase::TOOLS),
        lab::trial(
            "debbase::arm64_runs_under_qemu",
            debbase::test_arm64_runs_under_qemu,
        )
        .needs(
            &[
                debbase::TOOLS,
                &[
                    "umoci",
                    "debootstrap",
                    "dpkg-deb",
                    "qemu-aarch64-static",
                    "podman",
                    "runc",
                ],
            ]
            .concat(),
        ),
        lab::trial(
            "debbase::ssl_release_gets_the_ca_bundle",
            debbase::test_ssl_release_gets_the_ca_bundle,
        )
        .needs(&[debbase::TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial(
            "debug::debug_image_beside_the_image",
            debug::test_debug_image_beside_the_image,
        )
        .needs(&[debug::TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial(
            "apt::libssl3_makes_crypto_start",
            apt::test_libssl3_makes_crypto_start,
        )
        .needs(&[apt::TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial(
            "apt::auto_packages_from_the_check",
            apt::test_auto_packages_from_the_check,
        )
        .needs(&[apt::TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial(
            "phoenix::without_bin_server_serves",
            phoenix::test_phoenix_without_bin_server_serves,
        )
        .needs(&[phoenix::TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial(
            "phoenix::init_then_build_runs",
            phoenix::test_init_then_build_runs,
        )
        .needs(
            &[
                phoenix::TOOLS,
                &[
                    "dockerd",
                    "docker",
                    "apt-ftparchive",
                    "dpkg-scanpackages",
                    "gpg",
                ],
            ]
            .concat(),
        ),
        lab::trial(
            "rebase::onto_patched_base",
            rebase::test_rebase_onto_patched_base,
        )
        .needs(rebase::TOOLS),
        lab::trial(
            "rebase::refuses_a_base_it_cannot_start_on",
            rebase::test_rebase_refuses_a_base_it_cannot_start_on,
        )
        .needs(rebase::TOOLS),
        lab::trial(
            "rebase::finds_the_base_by_its_layers",
            rebase::test_rebase_finds_the_base_by_its_layers,
        )
        .needs(rebase::TOOLS),
        lab::trial(
            "rebase::in_the_project_directory",
            rebase::test_rebase_in_the_project_directory,
        )
        .needs(rebase::TOOLS),
        lab::trial(
            "sbom::identifiers_scanners_match",
            sbom::test_sbom_identifiers_scanners_match,
        )
        .needs(sbom::TOOLS),
        lab::trial(
            "apt::ca_certificates_bundle",
            apt::test_ca_certificates_bundle,
        )
        .needs(&[apt::TOOLS, &["dockerd", "docker", "htpasswd"]].concat()),
        lab::trial(
            "apt::lock_reproducible_and_offline",
            apt::test_lock_reproducible_and_offline,
        )
        .needs(apt::TOOLS),
        lab::trial("apt::tampering_is_refused", apt::test_tampering_is_refused).needs(apt::TOOLS),
        lab::trial(
            "runners::phoenix_packages_on_bookworm_merged_usr",
            runners::test_bookworm_merged_usr,
        )
        .needs(runners::TOOLS),
        lab::trial(
            "runners::phoenix_packages_on_trixie_merged_usr",
            runners::test_trixie_merged_usr,
        )
        .needs(runners::TOOLS),
        lab::trial(
            "runners::phoenix_packages_on_bookworm_split_usr",
            runners::test_bookworm_split_usr,
        )
        .needs(runners::TOOLS),
        lab::trial(
            "runners::phoenix_packages_on_bullseye_split_usr",
            runners::test_bullseye_split_usr,
        )
        .needs(runners::TOOLS),
        lab::trial(
            "runners::package_under_bin",
            runners::test_package_under_bin,
        )
        .needs(runners::TOOLS),
        lab::trial(
            "apt::detached_release_signature",
            apt::test_detached_release_signature,
        )
        .needs(apt::TOOLS),
        lab::trial(
            "faults::sigterm_and_kill9_leave_nothing",
            faults::test_sigterm_and_kill9_leave_nothing,
        )
        .needs(&["umoci", "debootstrap", "mix"]),
        lab::trial("faults::disk_full", faults::test_disk_full).needs(&[
            "umoci",
            "debootstrap",
            "mix",
            "mount",
        ]),
        lab::trial(
            "faults::two_builds_share_a_cache",
            faults::test_two_builds_share_a_cache,
        )
        .needs(&["umoci", "debootstrap", "mix"]),
        lab::trial(
            "faults::twenty_concurrent_pushes",
            faults::test_twenty_concurrent_pushes,
        )
        .needs(&["docker-registry", "skopeo", "mix"]),
        lab::trial(
            "progress::bars_and_log_lines_for_a_large_layer",
            progress::test_progress_of_a_large_layer,
        )
        .needs(progress::TOOLS),
        lab::trial(
            "dist::artifacts_checksums_and_own_image",
            dist::test_artifacts_and_own_image,
        )
        .needs(dist::TOOLS),
        lab::trial(
            "mixpkg::mix_package_suite_and_release_step",
            mixpkg::test_mix_package_suite_and_release_step,
        )
        .needs(mixpkg::TOOLS),
        lab::trial(
            "inspect::html_page_of_a_real_image_in_chromium",
            html::test_page_of_a_real_image_in_chromium,
        )
        .needs(html::TOOLS),
        lab::trial("push::build_push_pull_run", push::test_build_push_pull_run)
            .needs(&[push::TOOLS, &["dockerd", "docker"]].concat()),
        lab::trial(
            "push::mount_from_base_repository_and_no_base_download",
            push::test_mount_from_base_repository_and_no_base_download,
        )
        .needs(push::TOOLS),
        lab::trial(
            "push::summary_alone_means_no_base_download",
            push::test_summary_alone_means_no_base_download,
        )
        .needs(push::TOOLS),
        lab::trial(
            "push::incremental_push_uploads_only_changed_layers",
            push::test_incremental_push_uploads_only_changed_layers,
        )
        .needs(push::TOOLS),
        lab::trial(
            "push::tarball_same_digest_elsewhere",
            push::test_push_tarball_same_digest_elsewhere,
        )
        .needs(&[push::TOOLS, &["script"]].concat()),
        lab::trial("push::chunked_upload", push::test_chunked_upload).needs(push::TOOLS),
        lab::trial(
            "push::inspect_tarball_and_registry",
            push::test_inspect_tarball_and_registry,
        )
        .needs(push::TOOLS),
        lab::trial("push::faults_are_retried", push::test_faults_are_retried).needs(push::TOOLS),
        lab::trial(
            "push::referrers_api_registry_gets_no_fallback_tag",
            push::test_referrers_api_registry_gets_no_fallback_tag,
        )
        .needs(push::TOOLS),
        lab::trial("push::killed_push_resumes", push::test_killed_push_resumes).needs(push::TOOLS),
        lab::trial(
            "fleet::two_runners_share_a_cache_repo",
            fleet::test_two_runners_share_a_cache_repo,
        )
        .needs(fleet::TOOLS),
        lab::trial(
            "push::failing_registry_writes_no_tag",
            push::test_failing_registry_writes_no_tag,
        )
        .needs(push::TOOLS),
        lab::trial(
            "push::tls_basic_auth_and_credential_sources",
            push::test_tls_basic_auth_and_credential_sources,
        )
        .needs(&[push::TOOLS, &["htpasswd", "openssl", "dockerd", "docker"]].concat()),
        lab::trial(
            "push::token_auth_anonymous_pull_and_authenticated_push",
            push::test_token_auth_anonymous_pull_and_authenticated_push,
        )
        .needs(&[push::TOOLS, &["openssl"]].concat()),
        lab::trial(
            "hostile::escaping_base_layer_stays_inside",
            hostile::test_escaping_base_layer_stays_inside,
        )
        .needs(hostile::TOOLS),
        lab::trial(
            "hostile::malformed_base_layers_fail_cleanly",
            hostile::test_malformed_base_layers_fail_cleanly,
        )
        .needs(hostile::TOOLS),
        lab::trial(
            "hostile::wrong_bytes_from_registry",
            hostile::test_wrong_bytes_from_registry,
        )
        .needs(&["docker-registry", "skopeo", "umoci", "debootstrap", "mix"]),
        lab::trial(
            "hostile::damaged_cache_is_fetched_again",
            hostile::test_damaged_cache_is_fetched_again,
        )
        .needs(&["docker-registry", "skopeo", "umoci", "debootstrap", "mix"]),
        lab::trial(
            "hostile::bad_release_directories",
            hostile::test_bad_release_directories,
        )
        .needs(&["mix", "setpriv", "mknod"]),
        lab::trial(
            "hostile::unknown_manifest_media_type",
            hostile::test_unknown_manifest_media_type,
        )
        .needs(hostile::TOOLS),
        lab::trial(
            "recipes::gitlab_recipe_builds_the_assets_the_image_serves",
            recipes::test_gitlab_recipe_builds_the_assets_the_image_serves,
        )
        .needs(recipes::TOOLS),
        lab::trial(
            "recipes::gitlab_recipe_with_the_mix_package",
            recipes::test_gitlab_recipe_with_the_mix_package,
        )
        .needs(recipes::TOOLS),
        lab::trial(
            "recipes::gitlab_recipe_in_imgbuilds_own_image",
            recipes::test_gitlab_recipe_in_imgbuilds_own_image,
        )
        .needs(recipes::TOOLS),
    ];
    let conclusion = libtest_mimic::run(&args, lab::trials(tests));
    lab::shutdown();
    lab::conclude(&args, &conclusion);
    conclusion.exit();
}
