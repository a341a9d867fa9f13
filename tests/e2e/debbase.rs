//! `--from deb:SUITE` end to end against Debian's archive (its URL read from the machine's
//! `/etc/apt/sources.list.d/debian.sources`): the crypto release on a base of nothing but
//! verified packages, built twice to the same bytes, with no shell or package manager in any
//! layer, its packages pinned and listed in the SBOM, checked, and started by Docker through
//! imgbuild's launcher (no shell): it serves and evaluates with crypto's NIF.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::lab::{self, TestResult, fail, run, stderr, stdout};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &["mix", "tar"];

/// Paths that must be in no layer of a deb: image.
pub(crate) const NO_SHELL: &[&str] = &[
    "bin/sh",
    "usr/bin/sh",
    "usr/bin/dash",
    "usr/bin/bash",
    "bin/bash",
    "usr/bin/dpkg",
    "usr/bin/apt",
    "usr/bin/apt-get",
    "usr/bin/perl",
    "usr/bin/busybox",
];

/// (archive, security archive) from the machine's deb822 sources.
pub(crate) fn mirrors() -> Result<(String, String), Failed> {
    let text = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .map_err(|e| fail(format!("/etc/apt/sources.list.d/debian.sources: {e}")))?;
    let (mut main, mut security) = (None, None);
    for stanza in text.split("\n\n") {
        let get = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        let (Some(uris), Some(suites)) = (get("URIs:"), get("Suites:")) else {
            continue;
        };
        let uri = uris
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        if suites.contains("-security") {
            security.get_or_insert(uri);
        } else {
            main.get_or_insert(uri);
        }
    }
    let main = main.ok_or_else(|| fail("no URIs: line in debian.sources"))?;
    let security = security.unwrap_or_else(|| format!("{main}-security"));
    Ok((main, security))
}

/// `imgbuild build` of the crypto release from `from` in `dir` (where imgbuild.lock lives).
fn build(dir: &Path, from: &str, out: &str, extra: &[&str]) -> Result<(String, f64), Failed> {
    let rel = lab::crypto_release()?;
    let (main, security) = mirrors()?;
    let started = Instant::now();
    let o = run(lab::imgbuild()
        .current_dir(dir)
        .arg("build")
        .arg(&rel)
        .args(["--from", from, "--package", "auto"])
        .args(["--deb-mirror", &main, "--deb-security-mirror", &security])
        .args(extra)
        .arg("-o")
        .arg(dir.join(out)))?;
    Ok((stderr(&o), started.elapsed().as_secs_f64()))
}

/// The image tarball unpacked: its manifest's layers (paths of the blobs) and config.
pub(crate) fn layers_of(tar: &Path, dir: &Path) -> Result<(Vec<PathBuf>, Value), Failed> {
    platform_layers(tar, dir, None)
}

/// As [`layers_of`]; in a multi-platform tarball, the image of architecture `arch`.
fn platform_layers(
    tar: &Path,
    dir: &Path,
    arch: Option<&str>,
) -> Result<(Vec<PathBuf>, Value), Failed> {
    let x = dir.join(format!(
        "x-{}",
        tar.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&x);
    std::fs::create_dir_all(&x).map_err(|e| fail(e.to_string()))?;
    run(Command::new("tar").arg("-xf").arg(tar).arg("-C").arg(&x))?;
    let read = |p: PathBuf| -> Result<Value, Failed> {
        serde_json::from_slice(&std::fs::read(&p).map_err(|e| fail(format!("{p:?}: {e}")))?)
            .map_err(|e| fail(e.to_string()))
    };
    let blob = |d: &str| x.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index = read(x.join("index.json"))?;
    let mut manifest = read(blob(
        index["manifests"][0]["digest"].as_str().unwrap_or_default(),
    ))?;
    if let Some(arch) = arch {
        let entry = manifest["manifests"]
            .as_array()
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m["platform"]["architecture"].as_str() == Some(arch))
            })
            .ok_or_else(|| fail(format!("no {arch} image in the index: {manifest}")))?;
        manifest = read(blob(entry["digest"].as_str().unwrap_or_default()))?;
    }
    let config = read(blob(
        manifest["config"]["digest"].as_str().unwrap_or_default(),
    ))?;
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| fail(format!("no layers: {manifest}")))?
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap_or_default()))
        .collect();
    Ok((layers, config))
}

/// `tar -tvzf` of one layer.
pub(crate) fn listing(layer: &Path) -> Result<String, Failed> {
    Ok(stdout(&run(Command::new("tar").arg("-tvzf").arg(layer))?))
}

/// One file of a layer.
pub(crate) fn file_in(layer: &Path, path: &str) -> Result<String, Failed> {
    Ok(stdout(&run(Command::new("tar")
        .arg("-xzOf")
        .arg(layer)
        .arg(path))?))
}

/// No shell or package manager in any layer; `/tmp` 1777; passwd with nobody. Returns every
/// layer's listing.
pub(crate) fn assert_shell_less(layers: &[PathBuf]) -> Result<Vec<String>, Failed> {
    let lists: Vec<String> = layers
        .iter()
        .map(|l| listing(l))
        .collect::<Result<_, _>>()?;
    for (i, list) in lists.iter().enumerate() {
        for line in list.lines() {
            let path = line.split_whitespace().nth(5).unwrap_or_default();
            let path = path.trim_start_matches("./").trim_end_matches('/');
            if NO_SHELL.contains(&path) {
                return Err(fail(format!("layer {i} has {path}: {line}")));
            }
        }
    }
    let base = &lists[0];
    let tmp = base
        .lines()
        .find(|l| l.trim_end().ends_with(" tmp/") || l.trim_end().ends_with(" tmp"))
        .ok_or_else(|| fail(format!("no /tmp in the base layer:\n{base}")))?;
    assert!(tmp.starts_with("drwxrwxrwt"), "/tmp: {tmp}");
    let passwd = file_in(&layers[0], "etc/passwd")?;
    assert!(passwd.contains("nobody:x:65534:65534:"), "{passwd}");
    let group = file_in(&layers[0], "etc/group")?;
    assert!(group.contains("nogroup:x:65534:"), "{group}");
    Ok(lists)
}

/// The lock's packages for `arch`: (name, version, architecture, url).
fn locked(dir: &Path, arch: &str) -> Result<Vec<(String, String, String, String)>, Failed> {
    let text = std::fs::read_to_string(dir.join("imgbuild.lock"))
        .map_err(|e| fail(format!("no imgbuild.lock: {e}")))?;
    let v: toml::Value = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let section = if v["architecture"].as_str() == Some(arch) {
        &v
    } else {
        v.get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.iter().find(|s| s["architecture"].as_str() == Some(arch)))
            .ok_or_else(|| fail(format!("no {arch} section in imgbuild.lock:\n{text}")))?
    };
    let s = |p: &toml::Value, k: &str| p[k].as_str().unwrap_or_default().to_string();
    Ok(section["package"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        s(p, "name"),
                        s(p, "version"),
                        s(p, "architecture"),
                        s(p, "url"),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The image serves, and evaluates with crypto's NIF loaded, through the launcher.
fn run_image(docker: &lab::Docker, image: &str) -> TestResult {
    let (status, body) = lab::run_and_get(docker, image)?;
    assert!(status.contains("200"), "{status} {body}");
    // uid 65534, and UTF-8 filename encoding: LANG=C.UTF-8 finds libc-bin's locale.
    crate::check_body(&body)?;
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        image,
        "eval",
        r#":ok = :crypto.start(); [{_, _, v}] = :crypto.info_lib(); IO.puts("crypto-ok #{v}")"#,
    ]))?;
    let said = stdout(&out);
    assert!(
        said.contains("crypto-ok OpenSSL 3"),
        "{said}{}",
        stderr(&out)
    );
    Ok(())
}

pub fn test_bookworm_shell_less_reproducible() -> TestResult {
    let dir = lab::scratch_dir("debbase-bookworm");
    // A tag of its own: the tests share one Docker daemon, and phoenix's test loads the
    // default `hello:0.1.0`.
    let tag = ["-t", "hello-bookworm:0.1.0"];
    let (said, first) = build(&dir, "deb:bookworm", "a.tar", &tag)?;
    eprintln!("deb:bookworm build: {first:.1} s\n{said}");
    assert!(said.contains("wrote"), "{said}");
    let lock = std::fs::read(dir.join("imgbuild.lock")).map_err(|e| fail(e.to_string()))?;
    // Again, from the lock: the same bytes, the lock untouched.
    let (said, second) = build(&dir, "deb:bookworm", "b.tar", &tag)?;
    eprintln!("second build (from the lock): {second:.1} s");
    assert!(!said.contains("imgbuild.lock"), "{said}");
    let (a, b) = (
        std::fs::read(dir.join("a.tar")).map_err(|e| fail(e.to_string()))?,
        std::fs::read(dir.join("b.tar")).map_err(|e| fail(e.to_string()))?,
    );
    assert!(a == b, "two builds differ");
    assert_eq!(
        std::fs::read(dir.join("imgbuild.lock")).map_err(|e| fail(e.to_string()))?,
        lock
    );
    // --update-lock resolves again (and writes the lock).
    let (said, _) = build(&dir, "deb:bookworm", "c.tar", &["--update-lock"])?;
    assert!(said.contains("imgbuild.lock"), "{said}");

    let (layers, config) = layers_of(&dir.join("a.tar"), &dir)?;
    assert_shell_less(&layers)?;
    assert_eq!(config["architecture"], "amd64");
    let labels = &config["config"]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.base.name"], "deb:bookworm",
        "{config}"
    );
    assert_eq!(labels["dev.imgbuild.base"], "deb:bookworm", "{config}");
    let sizes: u64 = layers
        .iter()
        .map(|l| std::fs::metadata(l).map(|m| m.len()).unwrap_or(0))
        .sum();

    let pkgs = locked(&dir, "amd64")?;
    let names: Vec<&str> = pkgs.iter().map(|p| p.0.as_str()).collect();
    eprintln!(
        "deb:bookworm: {} packages ({}), layers {sizes} bytes compressed",
        pkgs.len(),
        pkgs.iter()
            .map(|p| format!("{} {}", p.0, p.1))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for want in ["libc6", "libssl3", "libtinfo6", "libstdc++6"] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    for never in [
        "dash",
        "bash",
        "dpkg",
        "apt",
        "perl-base",
        "debconf",
        "coreutils",
    ] {
        assert!(!names.contains(&never), "{never} in {names:?}");
    }
    // The C library and libc-bin (its C.UTF-8 locale), what ERTS and crypto link and their own
    // dependencies (epmd's libsystemd0 brings six): no more.
    assert!(names.contains(&"libc-bin"), "{names:?}");
    assert!(pkgs.len() <= 16, "{names:?}");

    // The SBOM lists each package with its purl.
    let packages_layer = &layers[1];
    assert!(listing(packages_layer)?.contains("usr/lib/x86_64-linux-gnu/libc.so.6"));
    let sbom_layer = layers.last().ok_or_else(|| fail("no layers"))?;
    let doc: Value = serde_json::from_str(&file_in(
        sbom_layer,
        "var/lib/db/sbom/hello-0.1.0.spdx.json",
    )?)
    .map_err(|e| fail(e.to_string()))?;
    let purls: Vec<String> = doc["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["externalRefs"].as_array().into_iter().flatten())
        .filter_map(|r| r["referenceLocator"].as_str())
        .filter(|l| l.starts_with("pkg:deb/"))
        .map(str::to_string)
        .collect();
    for (name, version, ..) in pkgs.iter().filter(|p| p.0 == "libc6" || p.0 == "libssl3") {
        let want = format!("pkg:deb/debian/{name}@{version}?arch=amd64&distro=debian-12");
        assert!(
            purls
                .iter()
                .any(|p| p.starts_with(&want.replace('+', "%2B")) || p.starts_with(&want)),
            "{want} not in {purls:?}"
        );
    }
    assert_eq!(purls.len(), pkgs.len(), "{purls:?}");

    // The start-up check passes: the launcher needs no shell, the packages give every library.
    let rel = lab::crypto_release()?;
    let (main, security) = mirrors()?;
    let out = lab::imgbuild()
        .current_dir(&dir)
        .arg("check")
        .arg(&rel)
        .args(["--from", "deb:bookworm", "--package", "auto"])
        .args(["--deb-mirror", &main, "--deb-security-mirror", &security])
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("imgbuild's launcher"), "{said}");

    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(dir.join("a.tar")))?;
    run_image(&docker, "hello-bookworm:0.1.0")
}

pub fn test_trixie_shell_less() -> TestResult {
    let dir = lab::scratch_dir("debbase-trixie");
    let (said, secs) = build(&dir, "deb:trixie", "t.tar", &["-t", "hello-trixie:0.1.0"])?;
    eprintln!("deb:trixie build: {secs:.1} s\n{said}");
    let (layers, _) = layers_of(&dir.join("t.tar"), &dir)?;
    let lists = assert_shell_less(&layers)?;
    let os = file_in(&layers[0], "usr/lib/os-release")?;
    assert!(os.contains("VERSION_CODENAME=trixie"), "{os}");
    let pkgs = locked(&dir, "amd64")?;
    let names: Vec<&str> = pkgs.iter().map(|p| p.0.as_str()).collect();
    eprintln!("deb:trixie: {} packages: {names:?}", pkgs.len());
    assert!(names.contains(&"libc6") && names.iter().any(|n| n.starts_with("libssl3")));
    assert!(
        pkgs.iter()
            .all(|p| p.3.contains("_amd64.deb") || p.3.contains("_all.deb"))
    );
    assert!(lists[1].contains("libc.so.6"));
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(dir.join("t.tar")))?;
    run_image(&docker, "hello-trixie:0.1.0")
}

pub fn test_arm64_packages_for_arm64() -> TestResult {
    let dir = lab::scratch_dir("debbase-arm64");
    // One arm64 platform: the amd64 release is not checked (--no-check); what is tested is that
    // the base and its packages are arm64's.
    let (said, _) = build(
        &dir,
        "deb:bookworm",
        "arm.tar",
        &[
            "--platform",
            "linux/arm64",
            "--package",
            "libssl3",
            "--no-check",
        ],
    )?;
    let pkgs = locked(&dir, "arm64")?;
    eprintln!("{said}\narm64: {pkgs:?}");
    let libc = pkgs
        .iter()
        .find(|p| p.0 == "libc6")
        .ok_or_else(|| fail("no libc6 in the arm64 lock"))?;
    assert_eq!(libc.2, "arm64");
    assert!(libc.3.ends_with("_arm64.deb"), "{libc:?}");
    assert!(pkgs.iter().any(|p| p.0 == "libssl3" && p.2 == "arm64"));
    let (layers, config) = layers_of(&dir.join("arm.tar"), &dir)?;
    assert_eq!(config["architecture"], "arm64");
    assert!(!listing(&layers[0])?.contains("lib64"));
    let packages = listing(&layers[1])?;
    assert!(
        packages.contains("usr/lib/aarch64-linux-gnu/libc.so.6"),
        "{packages}"
    );
    assert!(
        packages.contains("usr/lib/ld-linux-aarch64.so.1"),
        "{packages}"
    );
    assert_shell_less(&layers).map(|_| ())
}

/// `podman run` of an arm64 image under QEMU: the host's network, podman's ulimits refused
/// here, and `+JPperf true` for OTP 25's JIT under Debian's qemu-user (LAB.md).
fn podman_arm64(extra: &[&str]) -> Command {
    let mut c = lab::podman();
    c.args(["run", "--platform", "linux/arm64"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(["-e", "ERL_FLAGS=+JPperf true"])
        .args(extra);
    c
}

/// The ELF machine of a file in a gzip layer, if it is an ELF file.
fn elf_machine(layer: &Path, path: &str) -> Result<Option<u16>, Failed> {
    let out = run(Command::new("tar").arg("-xzOf").arg(layer).arg(path))?;
    let head = &out.stdout;
    Ok((head.len() >= 20 && head.starts_with(b"\x7fELF"))
        .then(|| u16::from_le_bytes([head[18], head[19]])))
}

/// amd64 + arm64 from `deb:bookworm` (the arm64 ERTS transplanted from Debian's arm64
/// `erlang-base` and `erlang-crypto`), checked, and the arm64 image run under QEMU: it starts
/// through the aarch64 launcher with no shell in any layer, serves, evaluates with crypto's
/// NIF, answers `version`, and with distribution on (its own epmd, in a network of its own)
/// answers `rpc`. Both platforms' packages are the same versions from the same suite.
pub fn test_arm64_runs_under_qemu() -> TestResult {
    let started = Instant::now();
    let dir = lab::scratch_dir("debbase-qemu");
    let otp = format!(
        "oci:{}:otp",
        crate::platforms::otp_layout("good", None)?.display()
    );
    let (said, secs) = build(
        &dir,
        "deb:bookworm",
        "multi.tar",
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--otp-from",
            &otp,
            "-t",
            "debbase/qemu:1",
        ],
    )?;
    eprintln!("deb:bookworm amd64+arm64 build: {secs:.1} s\n{said}");
    // The start-up check ran (no --no-check) for both, with the launcher as bin/hello.
    for p in ["linux/amd64", "linux/arm64"] {
        assert!(
            said.contains(&format!("{p}: check: hello can start here")),
            "{said}"
        );
        assert!(
            said.contains(&format!(
                "{p}: the base has no /bin/sh: /app/bin/hello is imgbuild's launcher"
            )),
            "{said}"
        );
    }
    let tar = dir.join("multi.tar");

    // One suite for both: the same packages at the same versions, each of its architecture.
    let (amd, arm) = (locked(&dir, "amd64")?, locked(&dir, "arm64")?);
    let versions = |ps: &[(String, String, String, String)]| {
        let mut v: Vec<(String, String)> = ps.iter().map(|p| (p.0.clone(), p.1.clone())).collect();
        v.sort();
        v
    };
    assert_eq!(
        versions(&amd),
        versions(&arm),
        "amd64 and arm64 locks differ"
    );
    for (name, want) in [("libc6", 1), ("libc-bin", 1), ("libssl3", 1)] {
        assert_eq!(arm.iter().filter(|p| p.0 == name).count(), want, "{arm:?}");
    }
    for (pkgs, deb_arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        for p in pkgs {
            assert!(
                p.2 == deb_arch && p.3.ends_with(&format!("_{deb_arch}.deb"))
                    || p.2 == "all" && p.3.ends_with("_all.deb"),
                "{deb_arch}: {p:?}"
            );
        }
    }

    // The arm64 image: no shell in any layer, a bookworm skeleton, the aarch64 launcher as
    // bin/hello, and every ELF file of every layer AArch64 (ERTS, epmd, crypto.so, packages).
    let (layers, config) = platform_layers(&tar, &dir, Some("arm64"))?;
    assert_eq!(config["architecture"], "arm64", "{config}");
    let lists = assert_shell_less(&layers)?;
    let os = file_in(&layers[0], "usr/lib/os-release")?;
    assert!(os.contains("VERSION_CODENAME=bookworm"), "{os}");
    let with_hello = layers
        .iter()
        .zip(&lists)
        .rev()
        .find(|(_, list)| {
            list.lines()
                .any(|l| l.starts_with('-') && l.trim_end().ends_with(" app/bin/hello"))
        })
        .map(|(l, _)| l)
        .ok_or_else(|| fail("no layer has app/bin/hello"))?;
    assert_eq!(
        elf_machine(with_hello, "app/bin/hello")?,
        Some(crate::platforms::EM_AARCH64),
        "/app/bin/hello of the arm64 image is not the aarch64 launcher"
    );
    let mut elves = 0;
    for layer in &layers {
        let digest = layer
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (path, machine) in crate::platforms::elf_files(&tar, &digest)? {
            assert_eq!(machine, crate::platforms::EM_AARCH64, "{path} in {digest}");
            elves += 1;
        }
    }
    assert!(elves > 20, "{elves} ELF files in the arm64 image");
    let (amd_layers, _) = platform_layers(&tar, &dir, Some("amd64"))?;
    let amd_hello = amd_layers
        .iter()
        .rev()
        .find_map(|l| elf_machine(l, "app/bin/hello").ok().flatten());
    assert_eq!(amd_hello, Some(crate::platforms::EM_X86_64));

    // Under QEMU.
    let pulled = run(lab::podman()
        .args(["pull", "--quiet", "--platform", "linux/arm64"])
        .arg(format!("oci-archive:{}", tar.display())))?;
    let id = stdout(&pulled).trim().to_string();
    let result = run_arm64(&id);
    let _ = lab::podman().args(["rmi", "-f", &id]).output();
    result?;
    eprintln!(
        "debbase arm64 under QEMU: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The arm64 image `id` (pulled into podman) under QEMU: version, eval with crypto, HTTP, rpc.
fn run_arm64(id: &str) -> TestResult {
    let arch = run(lab::podman().args(["image", "inspect", "--format", "{{.Architecture}}", id]))?;
    assert_eq!(stdout(&arch).trim(), "arm64");
    let none = ["--rm", "--network=none", "-e", "RELEASE_DISTRIBUTION=none"];
    let out = run(podman_arm64(&none).args([id, "version"]))?;
    assert_eq!(stdout(&out).trim(), "hello 0.1.0", "{}", stderr(&out));
    let out = run(podman_arm64(&none).args([
        id,
        "eval",
        ":ok = :crypto.start(); IO.inspect(:crypto.info_lib()); IO.inspect(:erlang.system_info(:system_architecture))",
    ]))?;
    let said = stdout(&out);
    assert!(said.contains("\"OpenSSL 3."), "{said}{}", stderr(&out));
    assert!(said.contains("aarch64"), "{said}{}", stderr(&out));

    // Serving (the image's own command), on the host's network.
    let port = lab::free_port();
    let name = format!("imgbuild-e2e-debbase-arm64-{port}");
    run(&mut podman_arm64(&[
        "-d",
        "--name",
        &name,
        "--network=host",
        "-e",
        &format!("PORT={port}"),
        "-e",
        "RELEASE_DISTRIBUTION=none",
        id,
    ]))?;
    let answer = lab::http_get(port, "/");
    let logs = container_logs(&name);
    let _ = lab::podman().args(["rm", "-f", &name]).output();
    let (status, body) =
        answer.map_err(|e| fail(format!("{}; logs:\n{logs}", e.message().unwrap_or(""))))?;
    assert!(status.contains("200"), "{status} {body}");
    crate::check_body(&body)?;

    // Distribution on (the launcher starts the arm64 epmd), in a network namespace of its own
    // so that no other test's node or epmd is in the way; `rpc` reaches the node.
    let name = format!("imgbuild-e2e-debbase-arm64-dist-{port}");
    run(&mut podman_arm64(&[
        "-d",
        "--name",
        &name,
        "--network=none",
        id,
    ]))?;
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let mut last = String::new();
    let answered = loop {
        let o = lab::podman()
            .args(["exec", &name, "/app/bin/hello", "rpc"])
            .arg("[{_, _, v}] = :crypto.info_lib(); IO.puts(\"rpc #{node()} #{v}\")")
            .output();
        match o {
            Ok(o) if o.status.success() && stdout(&o).contains("rpc hello@") => {
                break Some(stdout(&o));
            }
            Ok(o) => last = format!("{}{}", stdout(&o), stderr(&o)),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    let epmd = lab::podman()
        .args(["top", &name, "args"])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    let logs = container_logs(&name);
    let _ = lab::podman().args(["rm", "-f", &name]).output();
    let said = answered.ok_or_else(|| {
        fail(format!(
            "rpc did not answer within 120 s: {last}\nprocesses:\n{epmd}\nlogs:\n{logs}"
        ))
    })?;
    assert!(said.contains("OpenSSL 3."), "{said}");
    assert!(
        epmd.lines()
            .any(|l| l.contains("/app/erts-") && l.contains("bin/epmd")),
        "no epmd of the release's ERTS running:\n{epmd}"
    );
    Ok(())
}

fn container_logs(name: &str) -> String {
    lab::podman()
        .args(["logs", name])
        .output()
        .map(|o| format!("{}{}", stdout(&o), stderr(&o)))
        .unwrap_or_default()
}

/// A release that uses :ssl on `deb:bookworm --package auto`: ca-certificates is installed for
/// its data alone (no openssl, no debconf), imgbuild writes the bundle, and the VM reads it.
pub fn test_ssl_release_gets_the_ca_bundle() -> TestResult {
    let dir = lab::scratch_dir("debbase-ssl");
    let rel = lab::ssl_release()?;
    let (main, security) = mirrors()?;
    let tar = dir.join("ssl.tar");
    let o = run(lab::imgbuild()
        .current_dir(&dir)
        .arg("build")
        .arg(&rel)
        .args(["--from", "deb:bookworm", "--package", "auto"])
        .args(["--deb-mirror", &main, "--deb-security-mirror", &security])
        .args(["-t", "hello-ssl:deb", "-o"])
        .arg(&tar))?;
    let said = stderr(&o);
    assert!(
        said.contains("ca-certificates (the release uses :"),
        "{said}"
    );
    let names: Vec<String> = locked(&dir, "amd64")?.into_iter().map(|p| p.0).collect();
    assert!(names.iter().any(|n| n == "ca-certificates"), "{names:?}");
    for never in ["openssl", "debconf", "perl-base", "dash"] {
        assert!(!names.iter().any(|n| n == never), "{never} in {names:?}");
    }
    let (layers, _) = layers_of(&tar, &dir)?;
    assert_shell_less(&layers)?;
    let bundle = file_in(&layers[1], "etc/ssl/certs/ca-certificates.crt")?;
    let certs = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(certs > 100, "{certs} certificates in the bundle");
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "hello-ssl:deb",
        "eval",
        "IO.puts(length(:public_key.cacerts_get()))",
    ]))?;
    let n: usize = stdout(&out)
        .trim()
        .parse()
        .map_err(|e| fail(format!("{e}: {}{}", stdout(&out), stderr(&out))))?;
    assert_eq!(n, certs, "the VM reads the bundle imgbuild wrote");
    Ok(())
}

/// `rebase --from deb:SUITE`: a deb:bookworm image rebased onto deb:bookworm (its lock kept)
/// is the same image to the byte: the packages again from the suite under the shell-less
/// rules and slim, the SBOM naming the launcher by its SHA-256. An image that starts through
/// its /bin/sh scripts (built on a base with a shell) is refused with the way to build it, and
/// nothing is written; the mirror flags with another base are refused.
pub fn test_rebase_onto_deb() -> TestResult {
    let dir = lab::scratch_dir("debbase-rebase");
    let (main, security) = mirrors()?;
    let tag = ["-t", "hello-rebase:0.1.0"];
    build(&dir, "deb:bookworm", "a.tar", &tag)?;
    let built = manifest_digest(&dir.join("a.tar"))?;
    let rebase = |image: &Path, from: &str, out: &Path| {
        lab::imgbuild()
            .current_dir(&dir)
            .arg("rebase")
            .arg(image)
            .args(["--from", from, "--json", "-o"])
            .arg(out)
            .args(["--deb-mirror", &main, "--deb-security-mirror", &security])
            .output()
            .map_err(|e| fail(e.to_string()))
    };
    let out = rebase(&dir.join("a.tar"), "deb:bookworm", &dir.join("r.tar"))?;
    assert!(out.status.success(), "{}", stderr(&out));
    let report = lab::json_of(&out)?;
    assert_eq!(report["digest"], built.as_str(), "{report}");
    assert_eq!(report["platforms"][0]["packages_from"], "lock", "{report}");
    assert_eq!(manifest_digest(&dir.join("r.tar"))?, built);

    // Built on a base with a shell: it starts through bin/hello, a /bin/sh script.
    let shell = dir.join("shell");
    std::fs::create_dir_all(&shell).map_err(|e| fail(e.to_string()))?;
    run(lab::imgbuild()
        .current_dir(&shell)
        .arg("build")
        .arg(lab::crypto_release()?)
        .args([
            "--from",
            &format!("oci:{}:bookworm", lab::base_layout()?.display()),
        ])
        .args(["--package", "auto", "-o"])
        .arg(shell.join("s.tar")))?;
    let refused = dir.join("refused.tar");
    let out = rebase(&shell.join("s.tar"), "deb:bookworm", &refused)?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/bin/sh scripts") && err.contains("--from deb:bookworm --package auto"),
        "{err}"
    );
    assert!(!refused.exists());

    // The mirror flags are for a deb: base.
    let base = format!("oci:{}:bookworm", lab::base_layout()?.display());
    let out = rebase(&dir.join("a.tar"), &base, &refused)?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("are for a deb:SUITE base"), "{err}");
    assert!(!refused.exists());
    Ok(())
}

/// The digest of the one image an image tarball's index names.
fn manifest_digest(tar: &Path) -> Result<String, Failed> {
    let out = run(Command::new("tar").arg("-xOf").arg(tar).arg("index.json"))?;
    let index: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    index["manifests"][0]["digest"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| fail(format!("no manifest in {}: {index}", tar.display())))
}
