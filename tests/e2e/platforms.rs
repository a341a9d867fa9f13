//! amd64 and arm64 from one runner (`platforms::*`): the amd64 sample release made into an
//! arm64 one by transplanting ERTS from Debian's own arm64 Erlang packages, on a multi-platform
//! Debian base, checked file by file; the refusals that keep a transplant honest.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::lab::{self, TestResult, fail, json_of, run, stdout};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &[
    "docker-registry",
    "skopeo",
    "umoci",
    "debootstrap",
    "mix",
    "dpkg-deb",
];
pub(crate) const EM_AARCH64: u16 = 183;
pub(crate) const EM_X86_64: u16 = 62;

/// How many distinct configs and layers the images of an index tarball name.
fn distinct_blobs(tar: &Path) -> Result<u64, Failed> {
    let file = std::fs::File::open(tar).map_err(|e| fail(e.to_string()))?;
    let mut docs = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(|e| fail(e.to_string()))? {
        let mut entry = entry.map_err(|e| fail(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| fail(e.to_string()))?
            .display()
            .to_string();
        if entry.size() < 1 << 16 {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| fail(e.to_string()))?;
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                docs.insert(name, v);
            }
        }
    }
    let doc = |digest: &Value| {
        let hex = digest.as_str().unwrap_or("").trim_start_matches("sha256:");
        docs.get(&format!("blobs/sha256/{hex}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let top = docs.get("index.json").cloned().unwrap_or(Value::Null);
    let index = doc(&top["manifests"][0]["digest"]);
    let mut seen = std::collections::HashSet::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let image = doc(&m["digest"]);
        seen.insert(image["config"]["digest"].to_string());
        for l in image["layers"].as_array().into_iter().flatten() {
            seen.insert(l["digest"].to_string());
        }
    }
    if seen.len() < 4 {
        return Err(fail(format!(
            "{}: no index with images in it",
            tar.display()
        )));
    }
    Ok(seen.len() as u64)
}

fn read_json(p: &Path) -> Result<Value, Failed> {
    serde_json::from_slice(&std::fs::read(p).map_err(|e| fail(format!("{}: {e}", p.display())))?)
        .map_err(|e| fail(e.to_string()))
}

/// `scripts/arm64-peers`: Debian's arm64 Erlang packages and an arm64 minbase root.
fn arm64_peers() -> Result<PathBuf, Failed> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        run(Command::new("bash").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/arm64-peers")))
            .map(|o| PathBuf::from(stdout(&o).trim()))
            .map_err(|e| e.message().unwrap_or("arm64-peers failed").to_string())
    })
    .clone()
    .map_err(fail)
}

/// An image of Debian's arm64 `erlang-base` and `erlang-crypto` (the same OTP as the host's),
/// as an OCI layout tagged `otp`; with `erts` the ERTS directory is renamed to that version.
pub(crate) fn otp_layout(name: &str, erts: Option<&str>) -> Result<PathBuf, Failed> {
    // Made once per name, whichever test asks first (tests run in parallel).
    static MADE: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().map_err(|_| fail("otp layout lock poisoned"))?;
    if let Some((_, p)) = made.iter().find(|(n, _)| n == name) {
        return Ok(p.clone());
    }
    let layout = make_otp_layout(name, erts)?;
    made.push((name.to_string(), layout.clone()));
    Ok(layout)
}

fn make_otp_layout(name: &str, erts: Option<&str>) -> Result<PathBuf, Failed> {
    let peers = arm64_peers()?;
    let dir = lab::workdir().join(format!("otp-arm64-{name}"));
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&root).map_err(|e| fail(e.to_string()))?;
    for deb in std::fs::read_dir(peers.join("debs"))
        .map_err(|e| fail(e.to_string()))?
        .flatten()
    {
        if deb.path().extension().is_some_and(|x| x == "deb") {
            run(Command::new("dpkg-deb")
                .arg("-x")
                .arg(deb.path())
                .arg(&root))?;
        }
    }
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
    let tar = dir.join("otp.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    lab::layout_of_arch(&tar, &dir.join("layout"), "otp", "arm64")
}

/// A layout whose `multi` is an index of the amd64 and the arm64 bookworm minbase.
pub(crate) fn multi_base() -> Result<PathBuf, Failed> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        (|| {
            let peers = arm64_peers()?;
            let dir = lab::workdir().join("multi-base");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
            let tar = dir.join("arm64-root.tar");
            run(Command::new("tar")
                .arg("-C")
                .arg(peers.join("root"))
                // Leave out what debootstrap caches, as the amd64 base does (lab::base_layout):
                // it is not part of a base image, and would make the arm64 base twice its size.
                .args([
                    "--exclude=./debootstrap",
                    "--exclude=./var/cache/apt/archives/*.deb",
                    "--exclude=./var/lib/apt/lists/*",
                    "--exclude=./var/log/*",
                    "-cf",
                ])
                .arg(&tar)
                .arg("."))?;
            let arm = lab::layout_of_arch(&tar, &dir.join("arm64"), "bookworm", "arm64")?;
            let layout = dir.join("layout");
            run(Command::new("cp")
                .arg("-a")
                .arg(lab::base_layout()?)
                .arg(&layout))?;
            // Both images' blobs in one layout, and an index over their manifests.
            run(Command::new("sh").arg("-c").arg(format!(
                "cp -n {}/blobs/sha256/* {}/blobs/sha256/",
                arm.display(),
                layout.display()
            )))?;
            let entry = |l: &Path, arch: &str, variant: Option<&str>| -> Result<Value, Failed> {
                let idx = read_json(&l.join("index.json"))?;
                let mut d = idx["manifests"][0].clone();
                d.as_object_mut().map(|o| o.remove("annotations"));
                d["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
                if let Some(v) = variant {
                    d["platform"]["variant"] = v.into();
                }
                Ok(d)
            };
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [entry(&layout, "amd64", None)?, entry(&arm, "arm64", Some("v8"))?],
            });
            let bytes = serde_json::to_vec(&index).map_err(|e| fail(e.to_string()))?;
            let hex = crate::sha256_hex(&bytes);
            std::fs::write(layout.join("blobs/sha256").join(&hex), &bytes)
                .map_err(|e| fail(e.to_string()))?;
            let top = serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": format!("sha256:{hex}"), "size": bytes.len(),
                    "annotations": {"org.opencontainers.image.ref.name": "multi"}}],
            });
            std::fs::write(
                layout.join("index.json"),
                serde_json::to_vec(&top).map_err(|e| fail(e.to_string()))?,
            )
            .map_err(|e| fail(e.to_string()))?;
            Ok(layout)
        })()
        .map_err(|e: Failed| e.message().unwrap_or("multi-base failed").to_string())
    })
    .clone()
    .map_err(fail)
}

/// Every ELF file in a gzip layer blob of `tar` (an image tarball): (path, machine).
pub(crate) fn elf_files(tarball: &Path, digest: &str) -> Result<Vec<(String, u16)>, Failed> {
    let member = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let out = run(Command::new("tar").arg("-xOf").arg(tarball).arg(&member))?;
    let gz = flate2::read::GzDecoder::new(&out.stdout[..]);
    let mut archive = tar::Archive::new(gz);
    let mut found = Vec::new();
    for e in archive.entries().map_err(|e| fail(e.to_string()))? {
        let mut e = e.map_err(|e| fail(e.to_string()))?;
        let path = e
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut head = [0u8; 20];
        if e.header().entry_type().is_file()
            && e.read_exact(&mut head).is_ok()
            && &head[..4] == b"\x7fELF"
        {
            found.push((path, u16::from_le_bytes([head[18], head[19]])));
        }
    }
    Ok(found)
}

fn build(args: &[&str]) -> Result<Value, Failed> {
    json_of(&run(lab::imgbuild().arg("build").arg("--json").args(args))?)
}

fn layer<'a>(report: &'a Value, kind: &str) -> &'a Value {
    report["layers"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["kind"] == kind))
        .unwrap_or(&Value::Null)
}

/// amd64 + arm64 from the amd64 release: an index with both; every ELF file of the arm64 image
/// is aarch64, from Debian's arm64 packages; the amd64 image is the single-platform build's;
/// the platform-independent layers are the same blobs; the build is reproducible.
pub fn test_transplanted_index() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let base = format!("oci:{}:multi", multi_base()?.display());
    let otp = format!("oci:{}:otp", otp_layout("good", None)?.display());
    let dir = lab::scratch_dir("platforms");
    let tar = dir.join("multi.tar");
    let r = rel.to_str().unwrap_or_default();
    let args = |out: &Path| -> Vec<String> {
        [
            r,
            "--from",
            &base,
            "--platform",
            "linux/amd64,linux/arm64",
            "--otp-from",
            &otp,
            "-t",
            "multi/hello:1",
            "-o",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect()
    };
    let summary = dir.join("summary.md");
    let mut a: Vec<String> = args(&tar);
    a.extend(["--summary".to_string(), summary.display().to_string()]);
    let report = build(&a.iter().map(String::as_str).collect::<Vec<_>>())?;
    let index_digest = report["index"].as_str().unwrap_or("?").to_string();
    // The Markdown summary: the index, its platforms, then each platform's own facts.
    let md = std::fs::read_to_string(&summary)?;
    let tag = report["tags"][0].as_str().unwrap_or_default();
    assert!(md.starts_with(&format!("### imgbuild: `{tag}`\n")), "{md}");
    assert!(
        md.contains(&format!("| index | `{index_digest}` |")),
        "{md}"
    );
    assert!(
        md.contains("| platforms | linux/amd64, linux/arm64 |"),
        "{md}"
    );
    for p in report["platforms"].as_array().into_iter().flatten() {
        let head = format!(
            "#### {}: `{}`",
            p["platform"].as_str().unwrap_or("?"),
            p["digest"].as_str().unwrap_or("?")
        );
        let section = md
            .split_once(&head)
            .map(|(_, rest)| rest.split("\n#### ").next().unwrap_or(rest))
            .ok_or_else(|| fail(format!("no section {head}:\n{md}")))?;
        crate::push::assert_image_summary(&format!("{head}{section}"), p)?;
    }
    assert_eq!(report["digest"], index_digest.as_str());
    let platforms = report["platforms"].as_array().cloned().unwrap_or_default();
    assert_eq!(platforms.len(), 2, "{report}");
    let (amd, arm) = (&platforms[0], &platforms[1]);
    assert_eq!(amd["platform"], "linux/amd64");
    assert_eq!(arm["platform"], "linux/arm64");
    assert!(amd.get("transplant").is_none(), "{amd}");
    let files = arm["transplant"]["files"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert!(files >= 10, "{}", arm["transplant"]);
    assert_eq!(arm["transplant"]["otp_root"], "/usr/lib/erlang");
    // skopeo sees an index with both platforms.
    let raw: Value = serde_json::from_slice(
        &run(Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", tar.display())))?
        .stdout,
    )
    .map_err(|e| fail(e.to_string()))?;
    let archs: Vec<&str> = raw["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["platform"]["architecture"].as_str())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"], "{raw}");
    // Every ELF file of the arm64 image's release layers is aarch64; of the amd64 one, x86-64.
    for (image, machine) in [(arm, EM_AARCH64), (amd, EM_X86_64)] {
        for kind in ["erts", "deps", "app", "release"] {
            let d = layer(image, kind)["digest"].as_str().unwrap_or("?");
            for (path, m) in elf_files(&tar, d)? {
                assert_eq!(
                    m, machine,
                    "{path} in the {} {kind} layer",
                    image["platform"]
                );
            }
        }
    }
    assert!(!elf_files(&tar, layer(arm, "erts")["digest"].as_str().unwrap_or("?"))?.is_empty());
    // Shared layers are the same blobs; ERTS differs.
    for kind in ["deps", "app", "release"] {
        assert_eq!(
            layer(amd, kind)["digest"],
            layer(arm, kind)["digest"],
            "{kind}"
        );
    }
    assert_ne!(layer(amd, "erts")["digest"], layer(arm, "erts")["digest"]);
    // The amd64 image is byte for byte the single-platform build.
    let single = build(&[
        r,
        "--from",
        &base,
        "--platform",
        "linux/amd64",
        "-t",
        "multi/hello:1",
        "-o",
        &dir.join("amd64.tar").display().to_string(),
    ])?;
    assert_eq!(single["digest"], amd["digest"]);
    // Reproducible: the same index again, from a cold cache.
    let b: Vec<String> = args(&dir.join("again.tar"));
    let again = json_of(&run(lab::imgbuild()
        .env("IMGBUILD_CACHE", dir.join("cold-cache"))
        .arg("build")
        .arg("--json")
        .args(&b))?)?;
    assert_eq!(again["index"], index_digest.as_str());
    // The OTP image's scan is kept in the cache with the files it took; one of them damaged
    // on disk is noticed and the image scanned again: the same index.
    let scans = dir.join("cold-cache/otp-scans");
    let record = std::fs::read_dir(&scans)
        .map_err(|e| fail(format!("{}: {e}", scans.display())))?
        .flatten()
        .next()
        .ok_or_else(|| fail("no OTP scan kept in the cache"))?;
    let record = read_json(&record.path())?;
    let blob = record["staged"]
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(Value::as_str)
        .and_then(|d| d.strip_prefix("sha256:"))
        .ok_or_else(|| fail(format!("scan record without files: {record}")))?;
    let path = dir.join("cold-cache/blobs/sha256").join(blob);
    let mut bytes = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).map_err(|e| fail(e.to_string()))?;
    let b: Vec<String> = args(&dir.join("damaged.tar"));
    let damaged = json_of(&run(lab::imgbuild()
        .env("IMGBUILD_CACHE", dir.join("cold-cache"))
        .arg("build")
        .arg("--json")
        .args(&b))?)?;
    assert_eq!(damaged["index"], index_digest.as_str());
    // The tarball keeps the whole index: push gives the same index digest as a direct push;
    // inspect shows both platforms; Docker 20.10 loads and runs the host's image; podman
    // loads it; skopeo copies the whole index.
    let reg = lab::registry()?;
    let from_file = format!("{}/multi/from-file:1", reg.host());
    let pushed = json_of(&run(lab::imgbuild()
        .args(["push", "--json"])
        .arg(&tar)
        .arg(&from_file))?)?;
    assert_eq!(pushed["digest"], index_digest.as_str());
    // Each blob is counted (and sent) once, though both platforms share the release's layers.
    let distinct = distinct_blobs(&tar)?;
    let repo = &pushed["repositories"][0];
    let counted: u64 = ["uploaded", "mounted", "existing"]
        .iter()
        .filter_map(|k| repo[*k].as_u64())
        .sum();
    assert_eq!(counted, distinct, "{repo}");
    let direct = format!("{}/multi/direct:1", reg.host());
    let d: Vec<&str> = vec![
        r,
        "--from",
        &base,
        "--platform",
        "linux/amd64,linux/arm64",
        "--otp-from",
        &otp,
        "-t",
        &direct,
        "--push",
    ];
    let direct_report = build(&d)?;
    assert_eq!(direct_report["push"]["digest"], index_digest.as_str());
    let inspected = json_of(&run(
        lab::imgbuild().args(["inspect", "--json", &from_file])
    )?)?;
    assert_eq!(inspected["index"]["digest"], index_digest.as_str());
    assert_eq!(
        inspected["index"]["platforms"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(inspected["platform"], "linux/amd64");
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
    let (status, body) = lab::run_and_get(&docker, "multi/hello:1")?;
    assert!(status.contains("200"), "{status}");
    crate::check_body(&body)?;
    run(lab::podman().arg("load").arg("-i").arg(&tar))?;
    let arch = run(lab::podman().args([
        "image",
        "inspect",
        "--format",
        "{{.Architecture}}",
        "docker.io/multi/hello:1",
    ]))?;
    assert_eq!(stdout(&arch).trim(), "amd64");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--all"])
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!("oci:{}:copied", dir.join("skopeo-copy").display())))?;
    let copied = read_json(&dir.join("skopeo-copy/index.json"))?;
    assert_eq!(copied["manifests"][0]["digest"], index_digest.as_str());
    // `index create` joins per-platform images into the same index.
    let one = |p: &str, name: &str| -> Result<String, Failed> {
        let dest = format!("{}/multi/{name}:1", reg.host());
        run(lab::imgbuild().args(["copy", "--platform", p, &from_file, &dest]))?;
        Ok(dest)
    };
    let (amd_ref, arm_ref) = (
        one("linux/amd64", "only-amd64")?,
        one("linux/arm64", "only-arm64")?,
    );
    let joined = json_of(&run(lab::imgbuild().args([
        "index",
        "create",
        "--json",
        &format!("{}/multi/joined:1", reg.host()),
        "--image",
        &amd_ref,
        "--image",
        &arm_ref,
    ]))?)?;
    assert_eq!(joined["digest"], index_digest.as_str(), "{joined}");
    // The same from imgbuild.toml's `manifests`.
    let project = dir.join("project");
    std::fs::create_dir_all(&project).map_err(|e| fail(e.to_string()))?;
    std::fs::write(
        project.join("imgbuild.toml"),
        format!("manifests = [\"{amd_ref}\", \"{arm_ref}\"]\n"),
    )
    .map_err(|e| fail(e.to_string()))?;
    let from_toml = json_of(&run(lab::imgbuild().current_dir(&project).args([
        "index",
        "create",
        "--json",
        &format!("{}/multi/joined-toml:1", reg.host()),
    ]))?)?;
    assert_eq!(from_toml["digest"], index_digest.as_str(), "{from_toml}");
    let err = lab::imgbuild()
        .args([
            "index",
            "create",
            &format!("{}/multi/twice:1", reg.host()),
            "--image",
            &amd_ref,
            "--image",
            &amd_ref,
        ])
        .output()
        .map_err(|e| fail(e.to_string()))?;
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("two images for linux/amd64"));

    // A base without a platform asked for is named.
    let out = lab::imgbuild()
        .args([
            "build",
            r,
            "--from",
            &base,
            "--platform",
            "linux/amd64,linux/s390x",
            "--otp-from",
            &otp,
            "-o",
        ])
        .arg(dir.join("never.tar"))
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("linux/s390x") && err.contains("has no image for"),
        "{err}"
    );
    assert!(!dir.join("never.tar").exists());

    // Rebase, platform by platform: onto the very base it was built on, the index is the same
    // to the byte (the release layers kept, packages and SBOM made again identically).
    let out = run(lab::imgbuild()
        .arg("rebase")
        .arg(&tar)
        .args(["--from", &base, "-t", "multi/hello:1", "--json", "-o"])
        .arg(dir.join("rebased.tar")))?;
    let rebased: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    let platforms: Vec<&str> = rebased["platforms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["platform"].as_str())
        .collect();
    assert_eq!(platforms.len(), 2, "{rebased}");
    assert!(platforms[1].starts_with("linux/arm64"), "{rebased}");
    assert_eq!(rebased["digest"], index_digest.as_str(), "{rebased}");
    Ok(())
}

/// The refusals: another ERTS version in --otp-from (both versions named); a NIF that is not
/// OTP's (the file named), which builds with --release PLATFORM=DIR; and the check on arm64
/// naming the platform, the file and the package.
pub fn test_transplant_refusals() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let base = format!("oci:{}:multi", multi_base()?.display());
    let dir = lab::scratch_dir("platforms-refused");
    let fails = |args: &[&str], wants: &[&str]| -> TestResult {
        let out = lab::imgbuild()
            .arg("build")
            .args(args)
            .arg("-o")
            .arg(dir.join("never.tar"))
            .output()
            .map_err(|e| fail(e.to_string()))?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) || wants.iter().any(|w| !err.contains(w)) {
            return Err(fail(format!(
                "expected exit 1 naming {wants:?}, got {:?}: {err}",
                out.status.code()
            )));
        }
        assert!(!dir.join("never.tar").exists());
        Ok(())
    };
    let platforms = ["--platform", "linux/amd64,linux/arm64"];
    // Another ERTS version.
    let wrong = format!(
        "oci:{}:otp",
        otp_layout("wrong-erts", Some("99.0"))?.display()
    );
    let r = rel.to_str().unwrap_or_default();
    fails(
        &[&[r, "--from", &base, "--otp-from", &wrong][..], &platforms].concat(),
        &["ERTS 99.0", "ERTS 13.1.5"],
    )?;
    // No --otp-from at all: told what to pass.
    fails(
        &[&[r, "--from", &base][..], &platforms].concat(),
        &["--otp-from", "--release linux/arm64=DIR"],
    )?;

    // A NIF of the project's own: not from OTP, so not transplanted.
    let otp = format!("oci:{}:otp", otp_layout("good", None)?.display());
    let with_nif = dir.join("with-nif");
    run(Command::new("cp").arg("-a").arg(&rel).arg(&with_nif))?;
    let priv_dir = with_nif.join("lib/hello-0.1.0/priv");
    std::fs::create_dir_all(&priv_dir).map_err(|e| fail(e.to_string()))?;
    std::fs::copy("/bin/true", priv_dir.join("native.so")).map_err(|e| fail(e.to_string()))?;
    let n = with_nif.to_str().unwrap_or_default();
    fails(
        &[&[n, "--from", &base, "--otp-from", &otp][..], &platforms].concat(),
        &[
            "lib/hello-0.1.0/priv/native.so",
            "not part of Erlang/OTP",
            "--release linux/arm64=DIR",
        ],
    )?;
    // Built natively for arm64 (here: the same release with arm64 ERTS and an arm64 NIF).
    let arm_rel = dir.join("arm64-release");
    run(Command::new("cp").arg("-a").arg(&with_nif).arg(&arm_rel))?;
    let otp_root = lab::workdir().join("otp-arm64-good/root/usr/lib/erlang");
    let erts_bin = arm_rel.join("erts-13.1.5/bin");
    for e in std::fs::read_dir(&erts_bin)
        .map_err(|e| fail(e.to_string()))?
        .flatten()
    {
        let name = e.file_name();
        for from in [
            otp_root.join("erts-13.1.5/bin").join(&name),
            otp_root.join("bin").join(&name),
        ] {
            if from.is_file() {
                let bytes = std::fs::read(&from).map_err(|e| fail(e.to_string()))?;
                if bytes.starts_with(b"\x7fELF") {
                    std::fs::write(e.path(), bytes).map_err(|e| fail(e.to_string()))?;
                    break;
                }
            }
        }
    }
    let arm_true = arm64_peers()?.join("root/usr/bin/true");
    std::fs::copy(&arm_true, arm_rel.join("lib/hello-0.1.0/priv/native.so"))
        .map_err(|e| fail(e.to_string()))?;
    let native = format!("linux/arm64={}", arm_rel.display());
    let report = build(
        &[
            &[
                n,
                "--from",
                &base,
                "--release",
                &native,
                "--no-check",
                "-o",
                &dir.join("native.tar").display().to_string(),
            ][..],
            &platforms,
        ]
        .concat(),
    )?;
    let arm = &report["platforms"][1];
    assert!(arm.get("transplant").is_none(), "{arm}");
    let nif: Vec<(String, u16)> = elf_files(
        &dir.join("native.tar"),
        layer(arm, "app")["digest"].as_str().unwrap_or("?"),
    )?;
    assert!(
        nif.iter()
            .any(|(p, m)| p.ends_with("priv/native.so") && *m == EM_AARCH64),
        "{nif:?}"
    );

    // The crypto release on arm64 without libssl3: the check names the platform, the file and
    // the package.
    let crypto = lab::crypto_release()?;
    let c = crypto.to_str().unwrap_or_default();
    fails(
        &[
            c,
            "--from",
            &base,
            "--otp-from",
            &otp,
            "--platform",
            "linux/arm64,linux/amd64",
        ],
        &[
            "platform linux/arm64",
            "crypto.so",
            "libcrypto.so.3",
            "--package libssl3",
        ],
    )?;
    Ok(())
}

/// A release built with a full Erlang/OTP (Phoenix's builder image, a Debian host with rebar3):
/// its ERTS's `bin/` holds `ct_run`, `dialyzer` and `typer`. Built for amd64 and arm64 with the
/// transplant from Debian's arm64 `erlang-base` and `erlang-crypto`, which have `typer` but no
/// `ct_run` and no `dialyzer`: the build passes (its start-up check included); those two are
/// left out of the arm64 image, named in a warning and in `--json`'s `transplant.left_out`;
/// typer is transplanted; the amd64 image keeps all three. Nothing is run, so no emulator.
pub fn test_transplant_leaves_out_dev_tools() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let base = format!("oci:{}:multi", multi_base()?.display());
    let otp = format!("oci:{}:otp", otp_layout("good", None)?.display());
    let dir = lab::scratch_dir("platforms-dev-tools");
    let full = dir.join("full-otp");
    run(Command::new("cp").arg("-a").arg(&rel).arg(&full))?;
    let erts = std::fs::read_dir(&full)
        .map_err(|e| fail(e.to_string()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("erts-"))
        .ok_or_else(|| fail(format!("{}: no erts-* directory", full.display())))?;
    // What the fixture's OTP holds decides what is left out: make sure it is what this test
    // is about, whatever Erlang packages the host has.
    let otp_bin = lab::workdir().join("otp-arm64-good/root/usr/lib/erlang");
    let has = |tool: &str| {
        otp_bin.join(&erts).join("bin").join(tool).exists()
            || otp_bin.join("bin").join(tool).exists()
    };
    if !has("typer") || has("ct_run") || has("dialyzer") {
        return Err(fail(format!(
            "{}: expected typer and neither ct_run nor dialyzer (Debian's erlang-base and erlang-crypto)",
            otp_bin.display()
        )));
    }
    // The host's own builds of the tools when it has them (a host with rebar3 gave the
    // release them already), else any small x86-64 program under their names: the transplant
    // looks only at a file's place and ELF machine.
    let bin = full.join(&erts).join("bin");
    for tool in ["ct_run", "dialyzer", "typer"] {
        let host = Path::new("/usr/lib/erlang")
            .join(&erts)
            .join("bin")
            .join(tool);
        if !bin.join(tool).exists() {
            let from = if host.is_file() {
                host
            } else {
                PathBuf::from("/bin/true")
            };
            std::fs::copy(&from, bin.join(tool)).map_err(|e| fail(e.to_string()))?;
        }
    }
    let tar = dir.join("multi.tar");
    let out = run(lab::imgbuild()
        .args(["build", "--json"])
        .arg(&full)
        .args([
            "--from",
            &base,
            "--platform",
            "linux/amd64,linux/arm64",
            "--otp-from",
            &otp,
            "-t",
            "multi/full-otp:1",
            "-o",
        ])
        .arg(&tar))?;
    let report = json_of(&out)?;
    let err = lab::stderr(&out);
    let (amd, arm) = (&report["platforms"][0], &report["platforms"][1]);
    assert_eq!(arm["platform"], "linux/arm64", "{report}");
    let left_out = [format!("{erts}/bin/ct_run"), format!("{erts}/bin/dialyzer")];
    assert_eq!(
        arm["transplant"]["left_out"],
        serde_json::json!(left_out),
        "{}",
        arm["transplant"]
    );
    let files: Vec<&str> = arm["transplant"]["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        files.contains(&format!("{erts}/bin/typer").as_str()),
        "{files:?}"
    );
    assert!(amd.get("transplant").is_none(), "{amd}");
    // The warning names the platform and the files, on stderr and in both reports.
    let warning = format!(
        "left out of the release for linux/arm64: {}",
        left_out.join(", ")
    );
    assert!(err.contains(&warning), "{err}");
    for warnings in [&arm["warnings"], &report["warnings"]] {
        let named = warnings
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|w| w.starts_with(&warning) && w.contains("development tools"));
        assert!(named, "{warnings}");
    }
    assert!(
        !amd["warnings"].to_string().contains("left out"),
        "{}",
        amd["warnings"]
    );
    // The arm64 image has no ct_run and no dialyzer, and an AArch64 typer; the amd64 image
    // keeps the three, x86-64.
    let tools = |image: &Value| -> Result<Vec<(String, u16)>, Failed> {
        let d = layer(image, "erts")["digest"].as_str().unwrap_or("?");
        Ok(elf_files(&tar, d)?
            .into_iter()
            .filter_map(|(p, m)| {
                let name = p.rsplit('/').next().unwrap_or_default().to_string();
                ["ct_run", "dialyzer", "typer"]
                    .contains(&name.as_str())
                    .then_some((name, m))
            })
            .collect())
    };
    let mut on_arm = tools(arm)?;
    on_arm.sort();
    assert_eq!(on_arm, [("typer".to_string(), EM_AARCH64)]);
    let mut on_amd = tools(amd)?;
    on_amd.sort();
    assert_eq!(
        on_amd,
        [
            ("ct_run".to_string(), EM_X86_64),
            ("dialyzer".to_string(), EM_X86_64),
            ("typer".to_string(), EM_X86_64)
        ]
    );
    Ok(())
}

/// The transplanted arm64 image runs under QEMU user emulation (binfmt_misc with
/// qemu-user-static): podman takes the arm64 image from the multi-platform tarball and the
/// release answers HTTP, as uid 65534 with UTF-8. (OTP 25's JIT needs `+JPperf true` under
/// Debian's qemu-user 7.2; real arm64 hardware needs nothing.)
pub fn test_arm64_runs_under_qemu() -> TestResult {
    if !lab::require(&[TOOLS, &["qemu-aarch64-static"]].concat())? {
        return Ok(());
    }
    let rel = lab::release()?;
    let base = format!("oci:{}:multi", multi_base()?.display());
    let otp = format!("oci:{}:otp", otp_layout("good", None)?.display());
    let dir = lab::scratch_dir("platforms-qemu");
    let tar = dir.join("multi.tar");
    let r = rel.to_str().unwrap_or_default();
    let t = tar.display().to_string();
    build(&[
        r,
        "--from",
        &base,
        "--platform",
        "linux/amd64,linux/arm64",
        "--otp-from",
        &otp,
        "-t",
        "qemu/hello:1",
        "-o",
        &t,
    ])?;
    let pulled = run(lab::podman()
        .args(["pull", "--quiet", "--platform", "linux/arm64"])
        .arg(format!("oci-archive:{t}")))?;
    let id = stdout(&pulled).trim().to_string();
    let arch = run(lab::podman().args(["image", "inspect", "--format", "{{.Architecture}}", &id]))?;
    assert_eq!(stdout(&arch).trim(), "arm64");
    let port = lab::free_port();
    let name = format!("imgbuild-e2e-arm64-{port}");
    run(lab::podman().args([
        "run",
        "-d",
        "--name",
        &name,
        "--platform",
        "linux/arm64",
        "--network=host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "-e",
        &format!("PORT={port}"),
        "-e",
        "RELEASE_DISTRIBUTION=none",
        "-e",
        "ERL_FLAGS=+JPperf true",
        &id,
    ]))?;
    let answer = lab::http_get(port, "/");
    let logs = lab::podman()
        .args(["logs", &name])
        .output()
        .map(|o| format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr)))
        .unwrap_or_default();
    let _ = lab::podman().args(["rm", "-f", &name]).output();
    let (status, body) =
        answer.map_err(|e| fail(format!("{}; logs:\n{logs}", e.message().unwrap_or(""))))?;
    assert!(status.contains("200"), "{status}");
    crate::check_body(&body)
}

/// Runtime packages per architecture: the `:crypto` release for amd64 and arm64 with
/// `--package libssl3`, resolved from each base's own apt sources (Debian's archive, verified
/// with the base's keyring) for its architecture, pinned in one lock file with an entry per
/// architecture; the arm64 image answers `/crypto` under QEMU.
pub fn test_arm64_packages_and_crypto_under_qemu() -> TestResult {
    if !lab::require(&[TOOLS, &["qemu-aarch64-static"]].concat())? {
        return Ok(());
    }
    let rel = lab::crypto_release()?;
    let base = format!("oci:{}:multi", multi_base()?.display());
    let otp = format!("oci:{}:otp", otp_layout("good", None)?.display());
    let dir = lab::scratch_dir("platforms-crypto");
    let tar = dir.join("crypto.tar");
    // Signed, so the provenance (carried in the tarball) can be read back below.
    let key = dir.join("key.p8");
    run(Command::new("sh").arg("-c").arg(format!(
        "openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out {0} && openssl pkey -in {0} -pubout -out {0}.pub",
        key.display()
    )))?;
    let report = json_of(&run(lab::imgbuild()
        .current_dir(&dir)
        .args([
            "build",
            "--json",
            "--package",
            "libssl3",
            "--from",
            &base,
            "--sign-key",
        ])
        .arg(&key)
        .args(["--platform", "linux/amd64,linux/arm64", "--otp-from", &otp])
        .args(["-t", "crypto/multi:1", "-o"])
        .arg(&tar)
        .arg(&rel))?)?;
    let arm = &report["platforms"][1];
    assert!(
        arm["transplant"]["files"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f
                .as_str()
                .is_some_and(|f| f.ends_with("priv/lib/crypto.so"))),
        "{}",
        arm["transplant"]
    );
    for p in report["platforms"].as_array().into_iter().flatten() {
        assert_eq!(layer(p, "packages")["kind"], "packages", "{p}");
    }
    let arm_pkgs = layer(arm, "packages")["digest"].as_str().unwrap_or("?");
    for (path, m) in elf_files(&tar, arm_pkgs)? {
        assert_eq!(m, EM_AARCH64, "{path} in the arm64 packages layer");
    }
    let lock =
        std::fs::read_to_string(dir.join("imgbuild.lock")).map_err(|e| fail(e.to_string()))?;
    let parsed: toml::Value = toml::from_str(&lock).map_err(|e| fail(format!("{e}: {lock}")))?;
    assert_eq!(parsed["architecture"].as_str(), Some("amd64"), "{lock}");
    assert_eq!(
        parsed["architectures"][0]["architecture"].as_str(),
        Some("arm64"),
        "{lock}"
    );
    assert!(lock.matches("name = \"libssl3\"").count() == 2, "{lock}");

    let pulled = run(lab::podman()
        .args(["pull", "--quiet", "--platform", "linux/arm64"])
        .arg(format!("oci-archive:{}", tar.display())))?;
    let id = stdout(&pulled).trim().to_string();
    let port = lab::free_port();
    let name = format!("imgbuild-e2e-arm64-crypto-{port}");
    run(lab::podman().args([
        "run",
        "-d",
        "--name",
        &name,
        "--platform",
        "linux/arm64",
        "--network=host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "-e",
        &format!("PORT={port}"),
        "-e",
        "RELEASE_DISTRIBUTION=none",
        "-e",
        "ERL_FLAGS=+JPperf true",
        &id,
    ]))?;
    let answer = lab::http_get(port, "/crypto");
    let logs = lab::podman()
        .args(["logs", &name])
        .output()
        .map(|o| format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr)))
        .unwrap_or_default();
    let _ = lab::podman().args(["rm", "-f", &name]).output();
    let (status, body) =
        answer.map_err(|e| fail(format!("{}; logs:\n{logs}", e.message().unwrap_or(""))))?;
    assert!(status.contains("200"), "{status} {body}");
    let want = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"imgbuild"))
    };
    assert!(body.contains(&want), "{body}");
    Ok(())
}
