//! The image model's commands against real peers: `pull` for air-gapped bases, `copy` between
//! any source and sink, `build --load` into Docker Engine and podman, and several tags in one
//! tarball kept by every loader (Docker 20.10 and 26, podman 4 and 5, ctr, skopeo).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::{self, TestResult, fail, json_of, run, stderr, stdout};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &["docker-registry", "skopeo", "umoci", "debootstrap", "mix"];

/// Run, expecting exit `code`; returns stderr.
fn expect_exit(cmd: &mut Command, code: i32) -> Result<String, Failed> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(format!("run {cmd:?}: {e}")))?;
    if out.status.code() != Some(code) {
        return Err(fail(format!(
            "{cmd:?} exited {:?}, expected {code}:\nstdout: {}\nstderr: {}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        )));
    }
    Ok(stderr(&out))
}

fn skopeo_digest(transport_ref: &str) -> Result<String, Failed> {
    let out = run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(transport_ref))?;
    Ok(stdout(&out).trim().to_string())
}

fn skopeo_raw(transport_ref: &str) -> Result<Value, Failed> {
    let out = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(transport_ref))?;
    serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("{transport_ref}: {e}")))
}

/// The digest of the exact manifest (or index) bytes a transport serves.
fn skopeo_raw_digest(transport_ref: &str) -> Result<String, Failed> {
    let out = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(transport_ref))?;
    Ok(format!("sha256:{}", crate::sha256_hex(&out.stdout)))
}

/// A registry this test owns and can stop (to prove a later step needs no network).
struct OwnRegistry {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl OwnRegistry {
    fn start(name: &str) -> Result<OwnRegistry, Failed> {
        let port = lab::free_port();
        let dir = lab::scratch_dir(&format!("registry-{name}"));
        std::fs::write(
            dir.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .map_err(|e| fail(e.to_string()))?;
        let log = dir.join("registry.log");
        let file = std::fs::File::create(&log).map_err(|e| fail(e.to_string()))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(file.try_clone().map_err(|e| fail(e.to_string()))?)
            .stderr(file)
            .spawn()
            .map_err(|e| fail(format!("docker-registry: {e}")))?;
        lab::wait_for_port(port, "docker-registry")?;
        Ok(OwnRegistry { child, port, log })
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn push_base(host: &str, repo: &str) -> Result<String, Failed> {
    let layout = lab::base_layout()?;
    let reference = format!("{host}/{repo}");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:bookworm", layout.display()))
        .arg(format!("docker://{reference}")))?;
    Ok(reference)
}

/// `pull` saves a registry base; a build from the saved archive, with the registry gone and
/// an empty cache, gives the same image (same base labels, same digest) as from the registry.
pub fn test_pull_then_build_offline() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let dir = lab::scratch_dir("pull-offline");
    let mut reg = OwnRegistry::start("pull")?;
    let base = push_base(&reg.host(), "base/debian:bookworm")?;
    let from_registry = json_of(&run(lab::imgbuild()
        .args([
            "build",
            "--json",
            "-t",
            "pulled/hello:1",
            "--from",
            &base,
            "-o",
        ])
        .arg(dir.join("a.tar"))
        .arg(&rel))?)?;
    let archive = dir.join("base.tar");
    let pulled = json_of(&run(lab::imgbuild()
        .args(["pull", "--json", &base, "-o"])
        .arg(&archive))?)?;
    assert_eq!(
        pulled["digest"], from_registry["base"]["digest"],
        "{pulled}"
    );
    // skopeo reads the archive and sees the registry's manifest, byte for byte.
    assert_eq!(
        skopeo_digest(&format!("oci-archive:{}", archive.display()))?,
        from_registry["base"]["digest"].as_str().unwrap_or("?")
    );
    let manifest_get = |log: &str| log.matches("GET /v2/base/debian/manifests").count();
    let before = std::fs::read_to_string(&reg.log).unwrap_or_default();
    assert!(
        manifest_get(&before) >= 1,
        "the registry log shows no pull:\n{before}"
    );
    reg.stop();
    let empty_cache = dir.join("empty-cache");
    let from_archive = json_of(&run(lab::imgbuild()
        .env("IMGBUILD_CACHE", &empty_cache)
        .args(["build", "--json", "-t", "pulled/hello:1", "--from"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg("-o")
        .arg(dir.join("b.tar"))
        .arg(&rel))?)?;
    for k in ["name", "digest"] {
        assert_eq!(from_archive["base"][k], from_registry["base"][k]);
    }
    assert_eq!(from_archive["digest"], from_registry["digest"]);
    let after = std::fs::read_to_string(&reg.log).unwrap_or_default();
    assert_eq!(
        after.len(),
        before.len(),
        "the stopped registry was asked for something"
    );
    // A missing tag is one clear error, and leaves no file.
    let mut reg = OwnRegistry::start("pull-missing")?;
    let missing = format!("{}/base/debian:nope", reg.host());
    let err = expect_exit(
        lab::imgbuild()
            .args(["pull", &missing, "-o"])
            .arg(dir.join("missing.tar")),
        1,
    )?;
    assert!(err.contains("not found") && err.contains("nope"), "{err}");
    assert!(!dir.join("missing.tar").exists());
    reg.stop();
    Ok(())
}

/// `copy` registry → archive → registry, registry → same registry (mounts) and → another
/// registry (streamed, nothing on disk): the manifest digest is kept everywhere, the SBOM
/// referrer travels, and crane validates the result.
pub fn test_copy_between_sources_and_sinks() -> TestResult {
    if !lab::require(&[TOOLS, &["crane"]].concat())? {
        return Ok(());
    }
    let rel = lab::release()?;
    let base = lab::base_in_registry()?;
    let dir = lab::scratch_dir("copy");
    let reg = lab::registry()?;
    let other = OwnRegistry::start("copy-other")?;
    let src = format!("{}/model/src:1", reg.host());
    let built = json_of(&run(lab::imgbuild()
        .args(["build", "--json", "--push", "-t", &src, "--from", &base])
        .arg(&rel))?)?;
    let digest = built["digest"].as_str().unwrap_or("?").to_string();
    let hex = digest.trim_start_matches("sha256:");
    let has_sbom = |reference: &str| -> TestResult {
        let index = skopeo_raw(&format!("docker://{reference}:sha256-{hex}"))?;
        let kinds: Vec<&str> = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["artifactType"].as_str())
            .collect();
        if kinds.contains(&"application/spdx+json") {
            Ok(())
        } else {
            Err(fail(format!("{reference} has no SBOM referrer: {index}")))
        }
    };

    // registry → oci-archive → another repository.
    let archive = dir.join("copied.tar");
    run(lab::imgbuild()
        .args(["copy", &src])
        .arg(format!("oci-archive:{}", archive.display())))?;
    assert_eq!(
        skopeo_digest(&format!("oci-archive:{}", archive.display()))?,
        digest
    );
    let from_file = format!("{}/model/from-file:1", reg.host());
    run(lab::imgbuild().arg("copy").arg(&archive).arg(&from_file))?;
    assert_eq!(skopeo_digest(&format!("docker://{from_file}"))?, digest);
    has_sbom(&format!("{}/model/from-file", reg.host()))?;

    // registry → the same registry: every blob mounted, none uploaded.
    let same = format!("{}/model/same:1", reg.host());
    let report = json_of(&run(lab::imgbuild().args(["copy", "--json", &src, &same]))?)?;
    let repo = &report["written"][0]["repositories"][0];
    assert_eq!(repo["uploaded"], 0, "{report}");
    assert!(repo["mounted"].as_u64().unwrap_or(0) >= 7, "{report}");
    assert_eq!(skopeo_digest(&format!("docker://{same}"))?, digest);
    has_sbom(&format!("{}/model/same", reg.host()))?;

    // registry → another registry, with an empty cache: streamed, no layer lands on disk.
    let cache = dir.join("stream-cache");
    let far = format!("{}/model/far:1", other.host());
    run(lab::imgbuild()
        .env("IMGBUILD_CACHE", &cache)
        .args(["copy", &src, &far]))?;
    assert_eq!(skopeo_digest(&format!("docker://{far}"))?, digest);
    has_sbom(&format!("{}/model/far", other.host()))?;
    let on_disk: Vec<String> = std::fs::read_dir(cache.join("blobs/sha256"))
        .map_err(|e| fail(e.to_string()))?
        .filter_map(|e| e.ok())
        .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
        .collect();
    for l in built["layers"].as_array().into_iter().flatten() {
        let d = l["digest"].as_str().unwrap_or("?");
        assert!(
            !on_disk.iter().any(|x| x == d),
            "layer {d} was stored on disk"
        );
    }
    run(Command::new("crane").args(["validate", "--insecure", "--remote", &far]))?;
    run(Command::new("crane").args(["validate", "--insecure", "--remote", &from_file]))?;

    // Bad input: an unknown transport, named with the ones that work.
    for bad in ["docker://x/y:1", "dir:/tmp/x"] {
        let err = expect_exit(lab::imgbuild().args(["copy", &src, bad]), 2)?;
        assert!(err.contains("oci-archive:FILE"), "{err}");
    }
    let err = expect_exit(
        lab::imgbuild().args(["copy", "containers-storage:/x", &far]),
        2,
    )?;
    assert!(err.contains("not supported"), "{err}");
    Ok(())
}

/// A podman API service on a socket this test owns.
struct PodmanService {
    child: Child,
    socket: PathBuf,
}

impl PodmanService {
    fn start() -> Result<PodmanService, Failed> {
        let dir = PathBuf::from(format!("/tmp/imgbuild-e2e-podman-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let socket = dir.join("podman.sock");
        let _ = std::fs::remove_file(&socket);
        let log =
            std::fs::File::create(dir.join("service.log")).map_err(|e| fail(e.to_string()))?;
        let child = lab::podman()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(log.try_clone().map_err(|e| fail(e.to_string()))?)
            .stderr(log)
            .spawn()
            .map_err(|e| fail(format!("podman system service: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err(fail("podman system service made no socket in 30 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(PodmanService { child, socket })
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn load_build(rel: &Path, base: &str, tag: &str, engine: (&str, &str)) -> Command {
    let mut c = lab::imgbuild();
    // A label of this run's own: the engines may hold the same image from other tests (or,
    // for podman's machine-wide store, from an earlier run), and would only be tagged.
    c.env_remove("DOCKER_HOST")
        .env_remove("CONTAINER_HOST")
        .env(engine.0, engine.1)
        .args(["build", "--json", "--load", "-t", tag, "--from", base])
        .args(["--label", &format!("e2e-load-run={}", std::process::id())])
        .arg(rel);
    c
}

/// `--load` streams the image into Docker Engine 20.10 and into podman's API: both run it; a
/// second load sends nothing; an engine that refuses the archive fails the build with its
/// message; no engine at all is one error listing every socket tried, before anything is
/// written.
pub fn test_load_into_engines() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "docker", "podman", "runc"]].concat())? {
        return Ok(());
    }
    let rel = lab::release()?;
    let base = lab::base_in_registry()?;
    let docker = lab::docker()?;
    let tag = "imgbuild-e2e/loaded:1";
    let first = json_of(&run(&mut load_build(
        &rel,
        &base,
        tag,
        ("DOCKER_HOST", &docker.host),
    ))?)?;
    assert_eq!(first["load"]["action"], "loaded", "{first}");
    let (status, body) = lab::run_and_get(&docker, tag)?;
    assert!(status.contains("200"), "{status}");
    crate::check_body(&body)?;
    let again = json_of(&run(&mut load_build(
        &rel,
        &base,
        tag,
        ("DOCKER_HOST", &docker.host),
    ))?)?;
    assert_eq!(again["load"]["action"], "present", "{again}");
    // A new name for the same image: tagged, no archive sent.
    let retag = json_of(&run(&mut load_build(
        &rel,
        &base,
        "imgbuild-e2e/loaded:other",
        ("DOCKER_HOST", &docker.host),
    ))?)?;
    assert_eq!(retag["load"]["action"], "tagged", "{retag}");
    run(docker
        .cmd()
        .args(["image", "inspect", "imgbuild-e2e/loaded:other"]))?;

    // An engine that refuses the archive: Docker answers 200 and reports the failure inside
    // its JSON stream ("cannot load windows image on linux"), which must fail the build.
    let mut windows = lab::imgbuild();
    windows
        .env("DOCKER_HOST", &docker.host)
        .args(["build", "--load", "--no-check", "--from", "scratch"])
        .args([
            "--platform",
            "windows/amd64",
            "-t",
            "imgbuild-e2e/windows:1",
        ])
        .arg(&rel);
    let err = expect_exit(&mut windows, 1)?;
    assert!(
        err.contains("refused the image") && err.contains("windows"),
        "{err}"
    );

    // podman, through its API service.
    let svc = PodmanService::start()?;
    let podman_host = format!("unix://{}", svc.socket.display());
    let ptag = "imgbuild-e2e/podman-loaded:1";
    let loaded = json_of(&run(&mut load_build(
        &rel,
        &base,
        ptag,
        ("CONTAINER_HOST", &podman_host),
    ))?)?;
    assert_eq!(loaded["load"]["action"], "loaded", "{loaded}");
    let (status, body) = crate::podman_run_and_get(&format!("docker.io/{ptag}"))?;
    assert!(status.contains("200"), "{status}");
    crate::check_body(&body)?;
    let again = json_of(&run(&mut load_build(
        &rel,
        &base,
        ptag,
        ("CONTAINER_HOST", &podman_host),
    ))?)?;
    assert_eq!(again["load"]["action"], "present", "{again}");

    // No engine: one error naming every socket tried, and no tarball written.
    let dir = lab::scratch_dir("no-engine");
    let out = dir.join("never.tar");
    let mut none = load_build(
        &rel,
        &base,
        "x/y:1",
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
    );
    none.arg("-o").arg(&out);
    let err = expect_exit(&mut none, 1)?;
    for want in [
        "/nonexistent/docker.sock",
        "/var/run/docker.sock",
        "/run/podman/podman.sock",
    ] {
        assert!(err.contains(want), "{want} missing from: {err}");
    }
    assert!(!out.exists());
    Ok(())
}

/// The Debian trixie root with Docker 26 and podman 5 (`scripts/trixie-lab`).
fn trixie_root() -> Result<PathBuf, Failed> {
    let out =
        run(Command::new("bash").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/trixie-lab")))?;
    Ok(PathBuf::from(stdout(&out).trim()))
}

/// Mounts for a chroot that runs engines: proc, sys, dev, and the root bound onto itself
/// (runc wants a mount point). Undone on drop.
struct Chroot {
    root: PathBuf,
    mounted: Vec<PathBuf>,
}

impl Chroot {
    fn enter(root: &Path) -> Result<Chroot, Failed> {
        let mut c = Chroot {
            root: root.to_path_buf(),
            mounted: vec![],
        };
        let mounts: [(&[&str], PathBuf); 4] = [
            (&["--bind"], root.to_path_buf()),
            (&["-t", "proc", "proc"], root.join("proc")),
            (&["--rbind", "/sys"], root.join("sys")),
            (&["--rbind", "/dev"], root.join("dev")),
        ];
        for (args, target) in mounts {
            let mut cmd = Command::new("mount");
            cmd.args(args);
            if args == ["--bind"] {
                cmd.arg(root);
            }
            run(cmd.arg(&target))?;
            c.mounted.push(target);
        }
        Ok(c)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.root).arg(program);
        c.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        c
    }
}

/// The engines' state a test leaves in the trixie root: podman 5's store, both Docker 26 data
/// roots and the tarball they load. Their vfs stores keep a whole copy of the file system per
/// layer, gigabytes over a few runs.
const ENGINE_STATE: [&str; 4] = [
    "var/lib/containers-e2e",
    "var/lib/docker-e2e-containerd-store",
    "var/lib/docker-e2e-classic-store",
    "tmp/three.tar",
];

impl Drop for Chroot {
    fn drop(&mut self) {
        for m in self.mounted.iter().rev() {
            let _ = Command::new("umount").args(["-R", "-l"]).arg(m).status();
        }
        // Removed only when nothing is mounted inside (a daemon that did not stop).
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for state in ENGINE_STATE {
            let path = self.root.join(state);
            let prefix = path.display().to_string();
            if mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .any(|m| m.starts_with(&prefix))
            {
                continue;
            }
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

/// The names a loader reports for an image, as canonical references.
fn names(lines: &str) -> Vec<String> {
    lines
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("<none>"))
        .map(|l| {
            let l = l.trim_start_matches("docker.io/");
            if l.contains('/') {
                l.to_string()
            } else {
                format!("library/{l}")
            }
        })
        .collect()
}

/// Three `-t` tags in one tarball: every one is loaded by Docker 20.10 and Docker 26's classic
/// store (manifest.json), Docker 26 with the containerd store, podman 4 and 5 and ctr
/// (index.json); skopeo reads the archive by tag.
pub fn test_three_tags_every_loader() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "docker", "podman", "runc", "ctr"]].concat())? {
        return Ok(());
    }
    let rel = lab::release()?;
    let dir = lab::scratch_dir("three-tags");
    let tar = dir.join("three.tar");
    let tags = ["imgbuild-e2e/tags:a", "imgbuild-e2e/tags:b", "other/name:c"];
    let mut cmd = lab::imgbuild();
    cmd.args(["build", "--json", "--from", &lab::base_in_registry()?, "-o"])
        .arg(&tar);
    for t in tags {
        cmd.args(["-t", t]);
    }
    let out = run(cmd.arg(&rel))?;
    // The rule for oci-archive readers is said at build time.
    assert!(stderr(&out).contains("must name one"), "{}", stderr(&out));
    let built = json_of(&out)?;
    let digest = built["digest"].as_str().unwrap_or("?").to_string();
    let config = built["config"].as_str().unwrap_or("?").to_string();
    let want: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    let has_all = |who: &str, got: Vec<String>| -> TestResult {
        for t in &want {
            if !got.contains(t) {
                return Err(fail(format!("{who} lost {t}; it has {got:?}")));
            }
        }
        Ok(())
    };

    // Docker 20.10 (classic store, manifest.json).
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
    let out = run(docker.cmd().args([
        "image",
        "inspect",
        "--format",
        "{{join .RepoTags \"\\n\"}}",
        &config,
    ]))?;
    has_all("docker 20.10", names(&stdout(&out)))?;

    // podman 4 (falls back to manifest.json when index.json names several images).
    run(lab::podman().arg("load").arg("-i").arg(&tar))?;
    let out = run(lab::podman().args([
        "image",
        "inspect",
        "--format",
        "{{join .RepoTags \"\\n\"}}",
        &config,
    ]))?;
    has_all("podman 4", names(&stdout(&out)))?;

    // ctr (index.json, one entry per tag).
    let addr = docker.containerd_socket.display().to_string();
    run(Command::new("ctr")
        .args([
            "--address",
            &addr,
            "-n",
            "imgbuild-tags",
            "images",
            "import",
        ])
        .arg(&tar))?;
    let out = run(Command::new("ctr").args([
        "--address",
        &addr,
        "-n",
        "imgbuild-tags",
        "images",
        "ls",
        "-q",
    ]))?;
    has_all("ctr", names(&stdout(&out)))?;

    // skopeo: by tag (with several tags, oci-archive readers must name one).
    assert_eq!(
        skopeo_digest(&format!("oci-archive:{}:b", tar.display()))?,
        digest
    );
    // docker-archive: readers find every tag in manifest.json.
    assert!(
        !skopeo_digest(&format!(
            "docker-archive:{}:docker.io/other/name:c",
            tar.display()
        ))?
        .is_empty()
    );

    // Docker 26 with the containerd image store, and podman 5, from Debian trixie.
    let root = trixie_root()?;
    let chroot = Chroot::enter(&root)?;
    std::fs::copy(&tar, root.join("tmp/three.tar")).map_err(|e| fail(e.to_string()))?;
    let loaded = run(chroot
        .cmd("podman")
        .args(["--root=/var/lib/containers-e2e", "--storage-driver=vfs"])
        .args(["load", "-i", "/tmp/three.tar"]))?;
    assert!(
        stdout(&loaded).contains("Loaded image"),
        "podman 5 load: {}",
        stdout(&loaded)
    );
    let out = run(chroot.cmd("podman").args([
        "--root=/var/lib/containers-e2e",
        "--storage-driver=vfs",
        "image",
        "inspect",
        "--format",
        "{{join .RepoTags \"\\n\"}}",
        &config,
    ]))?;
    has_all("podman 5", names(&stdout(&out)))?;
    // Docker 26 twice: with the containerd image store (index.json) and with the classic
    // graph-driver store (manifest.json); every tag must survive both.
    let (ctr_store, classic) = ("containerd-store", "classic-store");
    std::fs::write(
        root.join(format!("etc/docker/{classic}.json")),
        "{\"features\": {\"containerd-snapshotter\": false}, \"storage-driver\": \"vfs\"}\n",
    )
    .map_err(|e| fail(e.to_string()))?;
    std::fs::write(
        root.join(format!("etc/docker/{ctr_store}.json")),
        "{\"features\": {\"containerd-snapshotter\": true}}\n",
    )
    .map_err(|e| fail(e.to_string()))?;
    // An image's ID is its manifest's digest in the containerd store, its config's in the
    // classic one.
    let tags = docker26_loads(&chroot, &dir, ctr_store, &digest, |driver| {
        driver.contains("overlayfs") || driver.contains("snapshotter") || driver.contains("native")
    })?;
    has_all(&format!("docker 26 ({ctr_store})"), tags)?;
    let tags = docker26_loads(&chroot, &dir, classic, &config, |driver| {
        driver.starts_with("vfs ")
    })?;
    has_all(&format!("docker 26 ({classic})"), tags)
}

/// Starts Docker 26 in the trixie root with `/etc/docker/{store}.json`, checks its storage
/// driver with `is_store`, loads `/tmp/three.tar` and returns the names it lists for the image
/// whose ID is `id`. The daemon is stopped whatever happens.
fn docker26_loads(
    chroot: &Chroot,
    dir: &Path,
    store: &str,
    id: &str,
    is_store: impl Fn(&str) -> bool,
) -> Result<Vec<String>, Failed> {
    let sock = format!("/run/imgbuild-d26-{store}.sock");
    let mut dockerd = chroot
        .cmd("dockerd")
        .args(["--iptables=false", "--ip-forward=false", "--bridge=none"])
        .arg(format!("--config-file=/etc/docker/{store}.json"))
        .arg(format!("--host=unix://{sock}"))
        .arg(format!("--data-root=/var/lib/docker-e2e-{store}"))
        .arg(format!("--exec-root=/run/docker-e2e-{store}"))
        .arg(format!("--pidfile=/run/docker-e2e-{store}.pid"))
        .stdout(
            std::fs::File::create(dir.join(format!("dockerd26-{store}.log")))
                .map_err(|e| fail(e.to_string()))?,
        )
        .stderr(
            std::fs::File::create(dir.join(format!("dockerd26-{store}.err")))
                .map_err(|e| fail(e.to_string()))?,
        )
        .spawn()
        .map_err(|e| fail(format!("dockerd 26 ({store}): {e}")))?;
    let d26 = |args: &[&str]| {
        let mut c = chroot.cmd("docker");
        c.env("DOCKER_HOST", format!("unix://{sock}")).args(args);
        c
    };
    let result = (|| -> Result<Vec<String>, Failed> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d26(&["info"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join(format!("dockerd26-{store}.err")))
                    .unwrap_or_default();
                return Err(fail(format!("dockerd 26 ({store}) did not start:\n{log}")));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let info = run(&mut d26(&[
            "info",
            "--format",
            "{{.Driver}} {{.ServerVersion}}",
        ]))?;
        let info = stdout(&info);
        assert!(is_store(&info), "not the {store}: {info}");
        run(&mut d26(&["load", "-i", "/tmp/three.tar"]))?;
        let out = run(&mut d26(&[
            "image",
            "ls",
            "--no-trunc",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
        ]))?;
        let listed: Vec<String> = stdout(&out)
            .lines()
            .filter(|l| l.contains(id.get(7..).unwrap_or(id)))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect();
        Ok(names(&listed.join("\n")))
    })();
    let _ = Command::new("kill").arg(dockerd.id().to_string()).status();
    let _ = dockerd.wait();
    result
}

/// A multi-platform index travels whole: layout → registry (`copy`), registry → archive
/// (`pull --all-platforms`), archive → registry (`push`), its digest the same at every step;
/// a build from the archive picks a platform as it would from the registry.
pub fn test_index_travels_whole() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let dir = lab::scratch_dir("index-travels");
    let layout = crate::multi_platform_layout(&dir)?;
    let reg = lab::registry()?;
    let src = format!("oci:{}:multi", layout.display());
    let remote = format!("{}/model/multi:1", reg.host());
    let copied = json_of(&run(
        lab::imgbuild().args(["copy", "--json", &src, &remote])
    )?)?;
    assert_eq!(
        copied["platforms"].as_array().map(Vec::len),
        Some(3),
        "{copied}"
    );
    let digest = copied["digest"].as_str().unwrap_or("?").to_string();
    let raw = skopeo_raw(&format!("docker://{remote}"))?;
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(3), "{raw}");
    assert_eq!(skopeo_raw_digest(&format!("docker://{remote}"))?, digest);

    let archive = dir.join("multi.tar");
    let pulled = json_of(&run(lab::imgbuild()
        .args(["pull", "--json", "--all-platforms", &remote, "-o"])
        .arg(&archive))?)?;
    assert_eq!(pulled["digest"], digest.as_str());
    let raw = skopeo_raw(&format!("oci-archive:{}", archive.display()))?;
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(3), "{raw}");

    let back = format!("{}/model/multi-back:1", reg.host());
    let pushed = json_of(&run(lab::imgbuild()
        .args(["push", "--json"])
        .arg(&archive)
        .arg(&back))?)?;
    assert_eq!(pushed["digest"], digest.as_str());
    assert_eq!(skopeo_raw_digest(&format!("docker://{back}"))?, digest);

    let pick = |from: String| -> Result<Value, Failed> {
        json_of(&run(lab::imgbuild()
            .args([
                "build",
                "--json",
                "--no-check",
                "--platform",
                "linux/arm64",
                "--from",
            ])
            .arg(from)
            .arg("-o")
            .arg(dir.join("arm.tar"))
            .arg(&rel))?)
    };
    let from_registry = pick(remote.clone())?;
    let from_archive = pick(format!("oci-archive:{}", archive.display()))?;
    for k in ["name", "digest"] {
        assert_eq!(from_archive["base"][k], from_registry["base"][k]);
    }
    assert_eq!(from_archive["digest"], from_registry["digest"]);
    Ok(())
}
