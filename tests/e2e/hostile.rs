//! Hostile and broken data: base layers that try to escape the image tree, malformed tar
//! headers, a registry that serves wrong bytes, a cache damaged on disk, and release
//! directories no image can be made from. Each gets one clear error (or is read safely), a
//! non-zero exit where it fails, no panic, and nothing written outside where it belongs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use sha2::Digest as _;

use crate::lab::{self, TestResult, fail, run, stderr};
use crate::servers::{self, Fault, Rule};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &["umoci", "debootstrap", "mix"];

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn io(e: impl std::fmt::Display) -> Failed {
    fail(e.to_string())
}

/// A ustar header written byte by byte, so it can say what the `tar` crate refuses to write
/// (`..` and absolute names, sizes the data does not have, a wrong checksum).
fn raw_header(name: &str, kind: u8, size: u64, link: &str, good_checksum: bool) -> [u8; 512] {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, len: usize, v: &[u8]| {
        h[at..at + v.len().min(len)].copy_from_slice(&v[..v.len().min(len)]);
    };
    put(&mut h, 0, 100, name.as_bytes());
    put(&mut h, 100, 8, b"0000644\0");
    put(&mut h, 108, 8, b"0000000\0");
    put(&mut h, 116, 8, b"0000000\0");
    put(&mut h, 124, 12, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, 12, b"00000000000\0");
    h[156] = kind;
    put(&mut h, 157, 100, link.as_bytes());
    put(&mut h, 257, 8, b"ustar\x0000");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum::<u32>() + u32::from(!good_checksum) * 7;
    put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
    h
}

fn file_entry(name: &str, data: &[u8]) -> Vec<u8> {
    let mut v = raw_header(name, b'0', data.len() as u64, "", true).to_vec();
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

fn link_entry(name: &str, kind: u8, target: &str) -> Vec<u8> {
    raw_header(name, kind, 0, target, true).to_vec()
}

fn end_of_archive(mut v: Vec<u8>) -> Vec<u8> {
    v.extend_from_slice(&[0u8; 1024]);
    v
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, Failed> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).map_err(io)?;
    gz.finish().map_err(io)
}

fn write_blob(layout: &Path, bytes: &[u8]) -> Result<String, Failed> {
    let hex = sha256_hex(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).map_err(io)?;
    Ok(format!("sha256:{hex}"))
}

fn read_json(layout: &Path, digest: &str) -> Result<Value, Failed> {
    let hex = digest.trim_start_matches("sha256:");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).map_err(io)?;
    serde_json::from_slice(&bytes).map_err(io)
}

/// A copy of the bookworm base layout with `tar` (uncompressed bytes) added on top as a gzip
/// layer, or with `gz` as the layer's bytes exactly when given.
fn base_plus_layer(dir: &Path, tar: &[u8], gz: Option<Vec<u8>>) -> Result<String, Failed> {
    let layout = dir.join("layout");
    let _ = std::fs::remove_dir_all(&layout);
    run(Command::new("cp")
        .arg("-a")
        .arg(lab::base_layout()?)
        .arg(&layout))?;
    let mut index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).map_err(io)?)
            .map_err(io)?;
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| fail("no manifest in the base layout"))?
        .to_string();
    let mut manifest = read_json(&layout, &mdigest)?;
    let cdigest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| fail("no config"))?
        .to_string();
    let mut config = read_json(&layout, &cdigest)?;
    let blob = match gz {
        Some(b) => b,
        None => gzip(tar)?,
    };
    let ldigest = write_blob(&layout, &blob)?;
    manifest["layers"]
        .as_array_mut()
        .ok_or_else(|| fail("no layers"))?
        .push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": ldigest,
            "size": blob.len(),
        }));
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .ok_or_else(|| fail("no diff_ids"))?
        .push(json!(format!("sha256:{}", sha256_hex(tar))));
    let config_bytes = serde_json::to_vec(&config).map_err(io)?;
    manifest["config"]["digest"] = json!(write_blob(&layout, &config_bytes)?);
    manifest["config"]["size"] = json!(config_bytes.len());
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(io)?;
    index["manifests"][0]["digest"] = json!(write_blob(&layout, &manifest_bytes)?);
    index["manifests"][0]["size"] = json!(manifest_bytes.len());
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).map_err(io)?,
    )
    .map_err(io)?;
    Ok(format!("oci:{}:bookworm", layout.display()))
}

fn imgbuild_in(dir: &Path, args: &[&str]) -> Result<Output, Failed> {
    lab::imgbuild()
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .args(args)
        .output()
        .map_err(io)
}

/// `imgbuild build REL --from FROM -o DIR/img.tar`, which must exit 1 and write nothing;
/// returns its stderr.
fn failed_build(dir: &Path, rel: &str, from: &str) -> Result<String, Failed> {
    let out = dir.join("img.tar");
    let o = imgbuild_in(
        dir,
        &[
            "build",
            rel,
            "--from",
            from,
            "-o",
            &out.display().to_string(),
        ],
    )?;
    let err = stderr(&o);
    if o.status.code() != Some(1) || out.exists() {
        return Err(fail(format!(
            "expected exit 1 and no {}: got {:?}: {err}",
            out.display(),
            o.status.code()
        )));
    }
    Ok(err)
}

/// Every file in the cache hashes to its name: nothing wrong was kept.
fn cache_is_sound(cache: &Path) -> Result<(), Failed> {
    let blobs = cache.join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).map_err(io)?.flatten() {
        let bytes = std::fs::read(e.path()).map_err(io)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if sha256_hex(&bytes) != name {
            return Err(fail(format!("cache holds a wrong blob under {name}")));
        }
    }
    Ok(())
}

/// Names with `..`, absolute names, links out of the root and a file written through a
/// symlinked directory: the check and the build read them inside the image's virtual tree,
/// write nothing outside, and a library that escapes by link resolves inside the image.
pub fn test_escaping_base_layer_stays_inside() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let dir = lab::scratch_dir("hostile-escape");
    let pid = std::process::id();
    let outside = [
        PathBuf::from(format!("/tmp/imgbuild-dotdot-{pid}")),
        PathBuf::from(format!("/tmp/imgbuild-abs-{pid}")),
        PathBuf::from(format!("/tmp/imgbuild-via-link-{pid}")),
    ];
    let mut tar = Vec::new();
    tar.extend(file_entry(
        &format!("../../../../../../../../tmp/imgbuild-dotdot-{pid}"),
        b"escaped",
    ));
    tar.extend(file_entry(&format!("/tmp/imgbuild-abs-{pid}"), b"escaped"));
    tar.extend(link_entry("escape", b'2', "/"));
    tar.extend(file_entry(
        &format!("escape/tmp/imgbuild-via-link-{pid}"),
        b"escaped",
    ));
    // libcrypto by a link that climbs out of the root: inside the image it is /etc/passwd.
    tar.extend(link_entry(
        "usr/lib/x86_64-linux-gnu/libcrypto.so.3",
        b'2',
        "../../../../../../../../../etc/passwd",
    ));
    tar.extend(link_entry("etc/hostlink", b'1', "../../../../etc/shadow"));
    let tar = end_of_archive(tar);
    let from = base_plus_layer(&dir, &tar, None)?;

    // The crypto release still fails its check: the "library" is a text file inside the image.
    let crypto = lab::crypto_release()?;
    let o = imgbuild_in(
        &dir,
        &["check", &crypto.display().to_string(), "--from", &from],
    )?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("libcrypto.so.3"), "{err}");

    // The plain release passes and builds; the hostile layer ships byte for byte.
    let rel = lab::release()?;
    let out = dir.join("img.tar");
    let o = imgbuild_in(
        &dir,
        &[
            "build",
            &rel.display().to_string(),
            "--from",
            &from,
            "-o",
            &out.display().to_string(),
            "--json",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).map_err(io)?;
    let hostile_digest = format!("sha256:{}", sha256_hex(&gzip(&tar)?));
    let layers = report["layers"].as_array().cloned().unwrap_or_default();
    assert!(
        layers.iter().any(|l| l["digest"] == json!(hostile_digest)),
        "the base's own layer must be kept as it is: {report}"
    );
    for p in &outside {
        assert!(!p.exists(), "{} was written on the host", p.display());
    }
    Ok(())
}

/// Malformed tar headers and a layer that is not gzip: exit 1 naming the base layer, no
/// output, no panic, and quickly (an 8 GiB size claim is not believed).
pub fn test_malformed_base_layers_fail_cleanly() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let dir = lab::scratch_dir("hostile-malformed");
    let rel = lab::release()?.display().to_string();
    let mut bad_sum = raw_header("etc/bad", b'0', 5, "", false).to_vec();
    bad_sum.extend_from_slice(&[b'x'; 512]);
    let mut huge = raw_header("var/huge", b'0', 8 << 30, "", true).to_vec();
    huge.extend_from_slice(&[0u8; 4096]);
    let mut long_pax = Vec::new();
    let record = format!("path={}\n", "a/".repeat(600_000));
    let len = record.len() + 8;
    let pax = format!("{len} {record}");
    long_pax.extend(raw_header("PaxHeaders/x", b'x', pax.len() as u64, "", true));
    long_pax.extend(pax.as_bytes());
    long_pax.resize(long_pax.len().div_ceil(512) * 512, 0);
    long_pax.extend(file_entry("ignored", b"x"));
    // (what, the layer's tar, its blob bytes when they are not the tar gzipped)
    type Case<'a> = (&'a str, Vec<u8>, Option<Vec<u8>>);
    let cases: Vec<Case> = vec![
        ("bad checksum", end_of_archive(bad_sum), None),
        ("size beyond the data", huge, None),
        (
            "not gzip",
            end_of_archive(file_entry("etc/x", b"x")),
            Some(b"plain bytes".to_vec()),
        ),
    ];
    for (name, tar, gz) in cases {
        let from = base_plus_layer(&dir, &tar, gz)?;
        let started = std::time::Instant::now();
        let err = failed_build(&dir, &rel, &from)
            .map_err(|e| fail(format!("{name}: {}", e.message().unwrap_or(""))))?;
        assert!(
            err.contains("layer 2"),
            "{name}: the layer is not named: {err}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{name}: took {:?}",
            started.elapsed()
        );
    }
    // A 1.2 MB PAX path is read without harm: the build either uses it or refuses it cleanly.
    let from = base_plus_layer(&dir, &end_of_archive(long_pax), None)?;
    let o = imgbuild_in(&dir, &["check", &rel, "--from", &from])?;
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "long PAX path: {:?} {}",
        o.status.code(),
        stderr(&o)
    );
    Ok(())
}

/// A registry (or a proxy in front of it) that serves wrong bytes fails the build with a
/// digest error, and nothing wrong stays in the cache; with the fault gone the build works.
pub fn test_wrong_bytes_from_registry() -> TestResult {
    if !lab::require(&["docker-registry", "skopeo", "umoci", "debootstrap", "mix"])? {
        return Ok(());
    }
    let dir = lab::scratch_dir("hostile-wrong-bytes");
    let base = lab::base_in_registry()?;
    let reg = lab::registry()?;
    let proxy = servers::start_proxy(reg.port)?;
    let via_proxy = base.replacen(&reg.host(), &proxy.host(), 1);
    proxy.set_rules(vec![Rule {
        method: "GET",
        target_contains: "/blobs/sha256:",
        fault: Fault::CorruptBody,
        times: u32::MAX,
    }]);
    let rel = lab::release()?.display().to_string();
    let out = dir.join("img.tar");
    let args = [
        "build",
        &rel,
        "--from",
        &via_proxy,
        "-o",
        &out.display().to_string(),
        "--retries",
        "1",
    ];
    let o = imgbuild_in(&dir, &args)?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("digest") && err.contains("sha256:"),
        "the error must say which digest did not match: {err}"
    );
    assert!(!out.exists());
    cache_is_sound(&dir.join("cache"))?;
    proxy.set_rules(Vec::new());
    let o = imgbuild_in(&dir, &args)?;
    assert!(o.status.success(), "{}", stderr(&o));
    cache_is_sound(&dir.join("cache"))
}

/// A base layer damaged on disk in the cache is detected when it is read and fetched again in
/// the same run; the image is the same as before the damage.
pub fn test_damaged_cache_is_fetched_again() -> TestResult {
    if !lab::require(&["docker-registry", "skopeo", "umoci", "debootstrap", "mix"])? {
        return Ok(());
    }
    let dir = lab::scratch_dir("hostile-damaged-cache");
    let base = lab::base_in_registry()?;
    let rel = lab::release()?.display().to_string();
    let out = dir.join("img.tar");
    let args = [
        "build",
        &rel,
        "--from",
        &base,
        "-o",
        &out.display().to_string(),
        "--json",
    ];
    let first = imgbuild_in(&dir, &args)?;
    assert!(first.status.success(), "{}", stderr(&first));
    let first: Value = serde_json::from_slice(&first.stdout).map_err(io)?;
    let base_layer = first["layers"][0]["digest"]
        .as_str()
        .ok_or_else(|| fail("no layers in the report"))?
        .trim_start_matches("sha256:")
        .to_string();
    // The base's summary is kept, so the next build need not read the base at all; the
    // tarball still takes the layer from the cache, finds it damaged, and fetches it again.
    let trees = std::fs::read_dir(dir.join("cache/trees"))
        .map_err(io)?
        .count();
    assert_eq!(trees, 1, "no cached tree of the base");
    let blob = dir.join("cache/blobs/sha256").join(&base_layer);
    let mut bytes = std::fs::read(&blob).map_err(io)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&blob, &bytes).map_err(io)?;
    let again = imgbuild_in(&dir, &args)?;
    let err = stderr(&again);
    assert!(again.status.success(), "{err}");
    assert!(err.contains("fetching it again"), "{err}");
    let again: Value = serde_json::from_slice(&again.stdout).map_err(io)?;
    assert_eq!(first["digest"], again["digest"]);
    cache_is_sound(&dir.join("cache"))
}

/// Release directories no image can be made from: each is one clear error naming the thing.
pub fn test_bad_release_directories() -> TestResult {
    if !lab::require(&["mix", "setpriv", "mknod"])? {
        return Ok(());
    }
    let dir = lab::scratch_dir("hostile-release");
    let rel = lab::release()?;
    let out = dir.join("img.tar");
    let copy = |name: &str| -> Result<PathBuf, Failed> {
        let c = dir.join(name);
        run(Command::new("cp").arg("-a").arg(&rel).arg(&c))?;
        Ok(c)
    };
    let mut cases: Vec<(PathBuf, &str)> = Vec::new();

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).map_err(io)?;
    cases.push((empty, "is not a mix release"));

    let looped = dir.join("looped");
    std::os::unix::fs::symlink(&looped, &looped).map_err(io)?;
    cases.push((looped, "looped"));

    let socket = copy("with-socket")?;
    let _listener =
        std::os::unix::net::UnixListener::bind(socket.join("bin/control.sock")).map_err(io)?;
    cases.push((socket, "bin/control.sock is a socket"));

    let device = copy("with-device")?;
    run(Command::new("mknod")
        .arg(device.join("bin/null"))
        .args(["c", "1", "3"]))?;
    cases.push((device, "bin/null is a"));

    let loop_inside = copy("with-link-loop")?;
    std::os::unix::fs::symlink("loop-b", loop_inside.join("bin/loop-a")).map_err(io)?;
    std::os::unix::fs::symlink("loop-a", loop_inside.join("bin/loop-b")).map_err(io)?;
    cases.push((loop_inside, "bin/loop-a"));

    for (path, want) in &cases {
        let o = imgbuild_in(
            &dir,
            &[
                "build",
                &path.display().to_string(),
                "--from",
                "scratch",
                "--no-check",
                "-o",
                &out.display().to_string(),
            ],
        )?;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", path.display());
        assert!(
            err.contains(want),
            "{}: want {want:?} in: {err}",
            path.display()
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "{}: output written", path.display());
    }

    // A file the builder may not read (root reads everything, so run as nobody). Everything
    // nobody needs (binary, release, cache) goes under /tmp, whose parents anyone may enter.
    let nobody_dir =
        std::env::temp_dir().join(format!("imgbuild-e2e-nobody-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&nobody_dir);
    std::fs::create_dir_all(&nobody_dir).map_err(io)?;
    let unreadable = nobody_dir.join("rel");
    run(Command::new("cp").arg("-a").arg(&rel).arg(&unreadable))?;
    let binary = nobody_dir.join("imgbuild");
    std::fs::copy(env!("CARGO_BIN_EXE_imgbuild"), &binary).map_err(io)?;
    run(Command::new("chmod").args(["-R", "a+rwX"]).arg(&nobody_dir))?;
    run(Command::new("chmod")
        .arg("000")
        .arg(unreadable.join("releases/0.1.0/vm.args")))?;
    let nobody_out = nobody_dir.join("img.tar");
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&binary)
        .env("IMGBUILD_CACHE", nobody_dir.join("cache"))
        .env("HOME", &nobody_dir)
        .args(["build", "--from", "scratch", "--no-check", "-o"])
        .arg(&nobody_out)
        .arg(&unreadable)
        .output()
        .map_err(io)?;
    let err = stderr(&o);
    let written = nobody_out.exists();
    let _ = std::fs::remove_dir_all(&nobody_dir);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("vm.args"),
        "the unreadable file is not named: {err}"
    );
    assert!(!written, "output written");
    Ok(())
}

/// A base whose manifest has a media type imgbuild does not know: named, exit 1.
pub fn test_unknown_manifest_media_type() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let dir = lab::scratch_dir("hostile-media-type");
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).map_err(io)?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(io)?;
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.example.unknown+json"}"#;
    let digest = write_blob(&layout, manifest)?;
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.example.unknown+json",
        "digest": digest, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "x"}}]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).map_err(io)?,
    )
    .map_err(io)?;
    let rel = lab::release()?.display().to_string();
    let err = failed_build(&dir, &rel, &format!("oci:{}:x", layout.display()))?;
    assert!(
        err.contains("application/vnd.example.unknown+json"),
        "{err}"
    );
    Ok(())
}
