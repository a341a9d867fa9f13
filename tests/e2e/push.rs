//! Push end to end: real registries (plain HTTP, TLS + htpasswd, token auth with an issuer run
//! here), credentials from every source, cross-repository mounts, incremental pushes, faults
//! injected by a proxy, and the pushed images pulled and run by Docker and inspected by skopeo.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::lab::{self, TestResult, fail, json_of, run, stderr, stdout};
use crate::servers::{self, Fault, Proxy, Rule, Seen};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &["docker-registry", "skopeo", "umoci", "debootstrap", "mix"];

/// Run imgbuild expecting failure; returns stderr.
fn expect_failure(cmd: &mut Command) -> Result<String, Failed> {
    let out = cmd
        .output()
        .map_err(|e| fail(format!("run {cmd:?}: {e}")))?;
    if out.status.success() {
        return Err(fail(format!(
            "{cmd:?} succeeded but should have failed:\n{}",
            stdout(&out)
        )));
    }
    if out.status.code() != Some(1) {
        return Err(fail(format!(
            "{cmd:?} exited {:?}, expected 1:\n{}",
            out.status.code(),
            stderr(&out)
        )));
    }
    Ok(stderr(&out))
}

fn digest_by_skopeo(reference: &str, extra: &[&str]) -> Result<String, Failed> {
    let out = run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .args(extra)
        .arg(format!("docker://{reference}")))?;
    Ok(stdout(&out).trim().to_string())
}

/// The registry serves `reference` under the digest a `--json` report printed.
fn assert_served(reference: &str, extra: &[&str], report: &Value) -> TestResult {
    let want = report["digest"].as_str().unwrap_or_default();
    let got = digest_by_skopeo(reference, extra)?;
    if got != want {
        return Err(fail(format!(
            "{reference} has digest {got}, the report said {want}"
        )));
    }
    Ok(())
}

fn count(seen: &[Seen], method: &str, contains: &str) -> usize {
    seen.iter()
        .filter(|s| s.method == method && s.target.contains(contains))
        .count()
}

/// Blob uploads completed through the proxy (the final PUT of each upload).
fn uploads(seen: &[Seen]) -> usize {
    seen.iter()
        .filter(|s| s.method == "PUT" && s.target.contains("/blobs/uploads/") && s.status == 201)
        .count()
}

/// The sample release built on the registry base and pushed through a recording proxy into
/// another repository of the same registry, with an empty cache; also saved with -o.
#[derive(Clone)]
struct Pushed {
    proxy: Proxy,
    seen: Vec<Seen>,
    report: Value,
    tarball: PathBuf,
    /// The image's name on the registry itself (not through the proxy).
    direct: String,
    base_layer: String,
    /// What the tarball build printed (it downloads the base's layers).
    saved_log: String,
}

fn pushed() -> Result<Pushed, Failed> {
    static PUSHED: OnceLock<Result<Pushed, String>> = OnceLock::new();
    PUSHED
        .get_or_init(|| {
            (|| {
                let rel = lab::release()?;
                lab::base_in_registry()?;
                let reg = lab::registry()?;
                let proxy = servers::start_proxy(reg.port)?;
                let dir = lab::fixture_dir("pushed");
                let tarball = dir.join("hello.tar");
                let from = format!("{}/base/debian:bookworm-minbase", proxy.host());
                let (v1, latest) = (
                    format!("{}/app/hello:v1", proxy.host()),
                    format!("{}/app/hello:latest", proxy.host()),
                );
                let cache = dir.join("empty-cache");
                // Push alone: the base's layers are mounted, never fetched.
                let out = run(lab::imgbuild()
                    .env("IMGBUILD_CACHE", &cache)
                    .arg("build")
                    .arg(&rel)
                    .args(["--from", &from, "-t", &v1, "-t", &latest])
                    .args(["--push", "--json"]))?;
                let seen = proxy.seen();
                // The same image saved as a tarball, with a cache of its own (so this build
                // fetches the base's layers and reads them, as a fresh CI runner does).
                let saved = run(lab::imgbuild()
                    .env("IMGBUILD_CACHE", dir.join("save-cache"))
                    .arg("build")
                    .arg(&rel)
                    .args(["--from", &from, "-t", &v1, "-t", &latest])
                    .arg("-o")
                    .arg(&tarball))?;
                let report = json_of(&out)?;
                let base_layer = report["layers"][0]["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                Ok(Pushed {
                    seen,
                    proxy,
                    report,
                    tarball,
                    direct: format!("{}/app/hello:v1", reg.host()),
                    base_layer,
                    saved_log: String::from_utf8_lossy(&saved.stderr).into_owned(),
                })
            })()
            .map_err(|e: Failed| e.message().unwrap_or("push failed").to_string())
        })
        .clone()
        .map_err(|m| fail(format!("shared push failed: {m}")))
}

pub fn test_build_push_pull_run() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "docker"]].concat())? {
        return Ok(());
    }
    let p = pushed()?;
    let digest = p.report["digest"].as_str().unwrap_or_default();
    assert_eq!(p.report["push"]["digest"], digest);
    // The build on a fresh cache said what it was doing with the base: one line per layer
    // downloaded, then the read of its files, as a CI log keeps them (a terminal shows bars).
    let base_layers = p.report["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["kind"] == "base")
        .count();
    let log = &p.saved_log;
    let pulled = log
        .lines()
        .filter(|l| l.starts_with("imgbuild: pulling base ") && l.contains(" done: "))
        .count();
    assert!(
        base_layers > 0 && pulled == base_layers,
        "{base_layers} base layers: {log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("imgbuild: reading base ") && l.ends_with(" files")),
        "{log}"
    );
    let tags: Vec<&str> = p.report["push"]["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        tags,
        [
            format!("{}/app/hello:v1", p.proxy.host()),
            format!("{}/app/hello:latest", p.proxy.host())
        ]
    );
    // skopeo sees the digest --json printed, under both tags.
    assert_eq!(digest_by_skopeo(&p.direct, &[])?, digest);
    assert_eq!(
        digest_by_skopeo(&p.direct.replace(":v1", ":latest"), &[])?,
        digest
    );
    // The manifest went up once per tag, after every blob: no manifest PUT precedes a blob PUT.
    // Blobs of the image itself (the SBOM referrer's come after the tags, by design).
    let image_blobs: Vec<String> = p.report["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["digest"].as_str())
        .chain(p.report["config"].as_str())
        .map(|d| d.replace(':', "%3A"))
        .collect();
    let last_blob = p
        .seen
        .iter()
        .rposition(|s| {
            s.target.contains("/blobs/uploads/") && image_blobs.iter().any(|d| s.target.contains(d))
        })
        .unwrap_or(0);
    let first_manifest = p
        .seen
        .iter()
        .position(|s| s.method == "PUT" && s.target.contains("/manifests/"))
        .ok_or_else(|| fail("no manifest PUT seen"))?;
    assert!(
        first_manifest > last_blob,
        "a tag was written before every blob was in place"
    );
    // Two tags, then the SBOM artifact and its tag-schema index (registry 2.8 has no
    // referrers API).
    assert_eq!(count(&p.seen, "PUT", "/manifests/"), 4);
    assert_eq!(p.report["push"]["sbom"]["method"], "tag-schema");
    // The SBOM is found from the image's digest: the tag-schema index lists an SPDX artifact
    // whose subject is the image and whose layer is the document.
    let reg = lab::registry()?;
    let hex = digest.trim_start_matches("sha256:");
    let raw = |reference: &str| -> Result<Value, Failed> {
        let out = run(Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/app/hello{reference}", reg.host())))?;
        serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))
    };
    let index = raw(&format!(":sha256-{hex}"))?;
    let entry = &index["manifests"][0];
    assert_eq!(entry["artifactType"], "application/spdx+json", "{index}");
    let artifact = raw(&format!(
        "@{}",
        entry["digest"].as_str().unwrap_or_default()
    ))?;
    assert_eq!(artifact["subject"]["digest"], digest, "{artifact}");
    assert_eq!(artifact["layers"][0]["digest"], p.report["sbom"]["digest"]);
    let (status, body) = lab::http_get(
        reg.port,
        &format!(
            "/v2/app/hello/blobs/{}",
            artifact["layers"][0]["digest"].as_str().unwrap_or_default()
        ),
    )?;
    assert!(status.contains("200"), "{status}");
    let doc: Value = serde_json::from_str(&body).map_err(|e| fail(e.to_string()))?;
    assert!(
        doc["packages"].as_array().is_some_and(|ps| ps
            .iter()
            .any(|p| p["name"] == "hello" && p["versionInfo"] == "0.1.0")),
        "{doc}"
    );
    // Docker pulls and runs what was pushed.
    let docker = lab::docker()?;
    run(docker.cmd().args(["pull", &p.direct]))?;
    let (status, body) = lab::run_and_get(&docker, &p.direct)?;
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains("hello from imgbuild") && body.contains("uid=65534"),
        "{body}"
    );
    Ok(())
}

pub fn test_mount_from_base_repository_and_no_base_download() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let p = pushed()?;
    let mounts: Vec<&Seen> = p
        .seen
        .iter()
        .filter(|s| s.method == "POST" && s.target.contains("mount="))
        .collect();
    assert!(
        mounts.iter().any(|s| s.status == 201
            && s.target.contains(&p.base_layer.replace(':', "%3A"))
            && s.target.contains("from=base%2Fdebian")),
        "the base layer was not mounted from base/debian: {mounts:?}"
    );
    assert_eq!(p.report["push"]["repositories"][0]["mounted"], 1);
    // Config plus the four release layers were uploaded, the base layer never: the build read
    // it once (the start-up check reads the base's files), the push only mounted it.
    assert_eq!(p.report["push"]["repositories"][0]["uploaded"], 6);
    // Plus the SBOM document and its referrer's empty config.
    assert_eq!(uploads(&p.seen), 8, "{:?}", p.seen);
    let base_hex = p.base_layer.trim_start_matches("sha256:");
    let downloads = count(&p.seen, "GET", base_hex);
    assert!(downloads <= 1, "base layer downloaded {downloads} times");
    let sent: Vec<&Seen> = p
        .seen
        .iter()
        .filter(|s| (s.method == "PUT" || s.method == "PATCH") && s.target.contains(base_hex))
        .collect();
    assert!(sent.is_empty(), "base layer uploaded: {sent:?}");
    Ok(())
}

/// With the base's summary in the cache but none of its layers (a runner whose cache kept only
/// the small records), build + push to the base's registry reads no base layer at all: the
/// check and the SBOM run from the summary, the push mounts the layer.
pub fn test_summary_alone_means_no_base_download() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    lab::base_in_registry()?;
    let reg = lab::registry()?;
    let dir = lab::scratch_dir("push-summary");
    let cache = dir.join("cache");
    let from = format!("{}/base/debian:bookworm-minbase", reg.host());
    run(lab::imgbuild()
        .env("IMGBUILD_CACHE", &cache)
        .arg("check")
        .arg(&rel)
        .args(["--from", &from]))?;
    let blobs = cache.join("blobs/sha256");
    let _ = std::fs::remove_dir_all(&blobs);
    std::fs::create_dir_all(&blobs).map_err(|e| fail(e.to_string()))?;
    let proxy = servers::start_proxy(reg.port)?;
    let out = run(lab::imgbuild()
        .env("IMGBUILD_CACHE", &cache)
        .arg("build")
        .arg(&rel)
        .args([
            "--from",
            &format!("{}/base/debian:bookworm-minbase", proxy.host()),
        ])
        .args(["-t", &format!("{}/app/summary:1", proxy.host())])
        .args(["--push", "--json"]))?;
    let report = json_of(&out)?;
    let seen = proxy.seen();
    let base_hex = report["layers"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .to_string();
    assert!(!base_hex.is_empty(), "{report}");
    assert_eq!(
        count(&seen, "GET", &base_hex),
        0,
        "base layer downloaded: {seen:?}"
    );
    assert_eq!(report["push"]["repositories"][0]["mounted"], 1, "{report}");
    assert!(
        report["check"]["elf_files"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(
        report["sbom"]["debian_packages"].as_u64().unwrap_or(0) > 50,
        "the SBOM lost the base's packages: {report}"
    );
    Ok(())
}

pub fn test_incremental_push_uploads_only_changed_layers() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let p = pushed()?;
    let rel2 = lab::build_release(&lab::workdir().join("hello-push-v2"), Some("hello again"))?;
    let dir = lab::scratch_dir("push-v2");
    let proxy = servers::start_proxy(lab::registry()?.port)?;
    // Both runs append their Markdown summary to GITHUB_STEP_SUMMARY, as on GitHub Actions.
    let step_summary = dir.join("step-summary.md");
    let build_and_push = |extra: &[&str]| {
        run(lab::imgbuild()
            .env("IMGBUILD_CACHE", dir.join("cache"))
            .env("GITHUB_STEP_SUMMARY", &step_summary)
            .arg("build")
            .args(extra)
            .arg(&rel2)
            // The same base name as v1 (through the fixture's proxy), so only the code differs.
            .args([
                "--from",
                &format!("{}/base/debian:bookworm-minbase", p.proxy.host()),
            ])
            .args(["-t", &format!("{}/app/hello:v2", proxy.host())])
            .args(["--push", "--json"]))
    };
    let report = json_of(&build_and_push(&[])?)?;
    let seen = proxy.seen();
    let repo = &report["push"]["repositories"][0];
    // app + release layers and the config; base, erts, deps and the SBOM already there.
    assert_eq!(repo["uploaded"], 3, "{repo}");
    assert_eq!(repo["existing"], 4, "{repo}");
    assert_eq!(uploads(&seen), 3, "{seen:?}");
    // The bytes: new ones are the app and release layers and the config; the rest was there.
    let size = |kinds: &[&str]| -> u64 {
        report["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| kinds.contains(&l["kind"].as_str().unwrap_or("")))
            .filter_map(|l| l["size"].as_u64())
            .sum()
    };
    let new = repo["bytes_uploaded"].as_u64().unwrap_or(0);
    assert!(
        new > size(&["app", "release"]) && new < size(&["app", "release"]) + 16384,
        "{repo}"
    );
    assert_eq!(
        repo["bytes_existing"].as_u64(),
        Some(size(&["base", "erts", "deps", "sbom"])),
        "{repo}"
    );
    let changed: Vec<&str> = report["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter(|l| l["kind"] == "app" || l["kind"] == "release")
                .filter_map(|l| l["digest"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for d in changed {
        assert!(
            seen.iter()
                .any(|s| s.method == "PUT" && s.target.contains(&d.replace(':', "%3A"))),
            "changed layer {d} not uploaded"
        );
    }
    let reg = lab::registry()?;
    assert_served(&format!("{}/app/hello:v2", reg.host()), &[], &report)?;

    // Nothing changed: the same build and push again compresses nothing, uploads no blob
    // (no POST, PATCH or blob PUT), and gives the same digest.
    let first_summary = std::fs::read_to_string(&step_summary)?;
    assert_summary(&first_summary, &report)?;
    // A fresh layer cache: every layer but the base's was written by this run.
    assert_eq!(
        first_summary.matches("new: written by this build").count(),
        report["layers"].as_array().map_or(0, |l| l.len()) - 1,
        "{first_summary}"
    );
    assert!(
        first_summary.contains("| `") && first_summary.contains("| 3 | 0 | 4 |"),
        "the push row (3 uploaded, 0 mounted, 4 there):\n{first_summary}"
    );
    let before = proxy.seen().len();
    let summary_file = dir.join("summary.md");
    let again = json_of(&build_and_push(&[
        "--summary",
        summary_file.to_str().unwrap_or_default(),
    ])?)?;
    // --summary FILE holds the same Markdown GITHUB_STEP_SUMMARY got appended.
    let second = std::fs::read_to_string(&summary_file)?;
    assert_summary(&second, &again)?;
    assert_eq!(
        std::fs::read_to_string(&step_summary)?,
        format!("{first_summary}{second}\n"),
        "GITHUB_STEP_SUMMARY is appended to, run after run"
    );
    assert_eq!(
        second.matches("reused: the local layer cache").count(),
        5,
        "{second}"
    );
    assert!(
        second.contains("| 0 | 0 | 7 |"),
        "nothing uploaded:\n{second}"
    );
    assert_eq!(again["digest"], report["digest"]);
    assert_eq!(again["reused_layers"], 5, "{again}");
    assert_eq!(again["push"]["repositories"][0]["uploaded"], 0, "{again}");
    let seen = proxy.seen();
    let writes: Vec<&Seen> = seen[before..]
        .iter()
        .filter(|s| {
            s.target.contains("/blobs/") && matches!(s.method.as_str(), "POST" | "PATCH" | "PUT")
        })
        .collect();
    assert!(
        writes.is_empty(),
        "blob writes on a no-change push: {writes:?}"
    );
    Ok(())
}

/// The Markdown summary of one image's build tells what its `--json` report does: the first
/// tag, the digest, each layer in order with its kind and where it came from, and the check.
pub fn assert_image_summary(md: &str, report: &serde_json::Value) -> TestResult {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let digest = text(&report["digest"]);
    assert!(
        !digest.is_empty() && md.contains(&format!("`{digest}`")),
        "digest {digest} missing:\n{md}"
    );
    for (i, l) in report["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let from = match l["origin"].as_str() {
            None => "the base",
            Some("written") => "new: written by this build",
            Some("cache") => "reused: the local layer cache",
            Some("cache-repo") => "reused: the cache repository",
            Some(o) => return Err(fail(format!("unknown layer origin {o}"))),
        };
        let row = format!("| {} | {} |", i + 1, text(&l["kind"]));
        let line = md.lines().find(|line| line.starts_with(&row));
        assert!(
            line.is_some_and(|line| line.ends_with(&format!("| {from} |"))),
            "layer row {row} … {from} missing:\n{md}"
        );
    }
    if report["check"].is_object() {
        assert!(
            md.contains("| start-up check | passed: the release can start here ("),
            "{md}"
        );
    }
    Ok(())
}

/// [`assert_image_summary`], headed by the first tag.
pub fn assert_summary(md: &str, report: &serde_json::Value) -> TestResult {
    let tag = report["tags"][0].as_str().unwrap_or_default();
    assert!(md.starts_with(&format!("### imgbuild: `{tag}`\n")), "{md}");
    assert_image_summary(md, report)
}

pub fn test_push_tarball_same_digest_elsewhere() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let p = pushed()?;
    let second = lab::start_registry("second")?;
    let dest = format!("{}/mirror/hello:v1", second.host());
    let out = run(lab::imgbuild()
        .arg("push")
        .arg(&p.tarball)
        .arg(&dest)
        .arg("--json"))?;
    let report = json_of(&out)?;
    assert_eq!(report["digest"], p.report["digest"]);
    assert_eq!(report["repositories"][0]["uploaded"], 7);
    assert_served(&dest, &[], &p.report)?;
    // skopeo copies it out again, verifying every blob's digest.
    let copy = lab::scratch_dir("mirror-copy");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{dest}"))
        .arg(format!("oci:{}:x", copy.join("oci").display())))?;
    // Without destinations, the tarball's own names are used: everything is there already.
    let before = p.proxy.seen().len();
    let out = run(lab::imgbuild().arg("push").arg(&p.tarball).arg("--json"))?;
    let report = json_of(&out)?;
    let tags = report["tags"].as_array().cloned().unwrap_or_default();
    assert_eq!(tags.len(), 2, "{report}");
    assert_eq!(report["repositories"][0]["uploaded"], 0);
    assert_eq!(report["repositories"][0]["existing"], 7);
    assert_eq!(uploads(&p.proxy.seen()[before..]), 0);

    // Progress: plain lines when stderr is not a terminal, nothing with --quiet, bars on a
    // terminal (`script` gives the command a pseudo-terminal).
    let out = run(lab::imgbuild()
        .arg("push")
        .arg(&p.tarball)
        .arg(format!("{}/progress/hello:v1", second.host())))?;
    let lines = stderr(&out);
    assert!(
        lines.contains("imgbuild: pushing to")
            && lines.matches(" pushed ").count() >= 7
            && lines.contains("attached SBOM"),
        "{lines}"
    );
    let out = run(lab::imgbuild()
        .arg("push")
        .arg(&p.tarball)
        .arg(format!("{}/progress/hello:v1", second.host()))
        .arg("--quiet"))?;
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "{}",
        stderr(&out)
    );
    if lab::require(&["script"])? {
        let cmd = format!(
            "{} push {} {}/progress-tty/hello:v1",
            env!("CARGO_BIN_EXE_imgbuild"),
            p.tarball.display(),
            second.host()
        );
        let mut tty = Command::new("script");
        tty.args(["-qec", &cmd, "/dev/null"])
            .env("IMGBUILD_CACHE", lab::workdir().join("cache"))
            .env("TERM", "xterm")
            .env("COLUMNS", "160");
        let out = run(&mut tty)?;
        let screen = stdout(&out);
        assert!(
            screen.contains("[==") && screen.contains("pushed"),
            "no progress bars on a terminal:\n{screen}"
        );
    }

    // HTTP_PROXY is honoured (the same mechanism as HTTPS_PROXY), and NO_PROXY bypasses it.
    let forward = servers::start_proxy(second.port)?;
    let via = format!("http://{}", forward.host());
    run(lab::imgbuild()
        .env("HTTP_PROXY", &via)
        .arg("push")
        .arg(&p.tarball)
        .arg(format!("{}/via-proxy/hello:v1", second.host())))?;
    let through = forward.seen();
    assert!(
        count(&through, "PUT", "/v2/via-proxy/hello/manifests/v1") == 1,
        "the push did not go through HTTP_PROXY: {through:?}"
    );
    run(lab::imgbuild()
        .env("HTTP_PROXY", &via)
        .env("NO_PROXY", "127.0.0.1")
        .arg("push")
        .arg(&p.tarball)
        .arg(format!("{}/no-proxy/hello:v1", second.host())))?;
    assert_eq!(forward.seen().len(), through.len(), "NO_PROXY was ignored");
    Ok(())
}

pub fn test_chunked_upload() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let p = pushed()?;
    let reg = lab::registry()?;
    // Push the tarball in 256 KiB chunks through `proxy` into `repo`.
    let chunked_push = |proxy: &Proxy, repo: &str| -> Result<(Value, Vec<Seen>), Failed> {
        let out = run(lab::imgbuild()
            .arg("push")
            .arg(&p.tarball)
            .arg(format!("{}/{repo}:v1", proxy.host()))
            .args(["--chunk-size", "256k", "--json"]))?;
        Ok((json_of(&out)?, proxy.seen()))
    };
    let proxy = servers::start_proxy(reg.port)?;
    let (report, seen) = chunked_push(&proxy, "chunked/hello")?;
    let patches = count(&seen, "PATCH", "/v2/chunked/hello/blobs/uploads/");
    // The ERTS layer alone (about 3 MB) takes a dozen 256 KiB chunks.
    assert!(
        patches > 2 * uploads(&seen) && patches >= 12,
        "only {patches} PATCH requests: {seen:?}"
    );
    assert!(
        seen.iter().all(|s| s.method != "PATCH" || s.status == 202),
        "a chunk was refused: {seen:?}"
    );
    assert_served(&format!("{}/chunked/hello:v1", reg.host()), &[], &report)?;

    // A registry that asks for at least 1 MiB per chunk (OCI-Chunk-Min-Length) gets it.
    let proxy = servers::start_proxy(reg.port)?;
    proxy.set_rules(vec![Rule {
        method: "POST",
        target_contains: "/v2/chunked-min/hello/blobs/uploads/",
        fault: Fault::AddHeader("OCI-Chunk-Min-Length: 1048576"),
        times: u32::MAX,
    }]);
    let (report, seen) = chunked_push(&proxy, "chunked-min/hello")?;
    let larger = count(&seen, "PATCH", "/v2/chunked-min/hello/blobs/uploads/");
    assert!(
        larger * 2 < patches && larger >= uploads(&seen),
        "{larger} PATCH requests with 1 MiB chunks against {patches} with 256 KiB: {seen:?}"
    );
    assert_served(
        &format!("{}/chunked-min/hello:v1", reg.host()),
        &[],
        &report,
    )?;
    Ok(())
}

/// A registry with the referrers API answers the artifact's manifest PUT with `OCI-Subject`;
/// then the SBOM is attached by that alone, and no `sha256-<hex>` fallback tag is written.
/// registry 2.8 has no referrers API and no packaged registry here has one, so the test proxy
/// adds the header the way such a registry would; the registry itself stores the artifact.
pub fn test_referrers_api_registry_gets_no_fallback_tag() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let p = pushed()?;
    let reg = lab::registry()?;
    let proxy = servers::start_proxy(reg.port)?;
    proxy.set_rules(vec![Rule {
        method: "PUT",
        target_contains: "/v2/referrers/hello/manifests/sha256:",
        fault: Fault::AddHeader(
            "OCI-Subject: sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        times: u32::MAX,
    }]);
    let out = run(lab::imgbuild()
        .arg("push")
        .arg(&p.tarball)
        .arg(format!("{}/referrers/hello:v1", proxy.host()))
        .arg("--json"))?;
    let report = json_of(&out)?;
    assert_eq!(report["sbom"]["method"], "referrers-api", "{report}");
    let seen = proxy.seen();
    assert_eq!(
        count(&seen, "PUT", "/manifests/sha256:"),
        1,
        "the SBOM artifact is PUT once by digest: {seen:?}"
    );
    assert_eq!(
        count(&seen, "PUT", "/manifests/sha256-"),
        0,
        "a fallback tag was written for a registry with the referrers API: {seen:?}"
    );
    // The artifact is in the registry, with the image as its subject.
    let artifact = report["sbom"]["digest"].as_str().unwrap_or_default();
    let out = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!(
            "docker://{}/referrers/hello@{artifact}",
            reg.host()
        )))?;
    let manifest: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(
        manifest["subject"]["digest"], report["digest"],
        "{manifest}"
    );
    Ok(())
}

pub fn test_faults_are_retried() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let p = pushed()?;
    let reg = lab::registry()?;
    let proxy = servers::start_proxy(reg.port)?;
    proxy.set_rules(vec![
        Rule {
            method: "POST",
            target_contains: "/v2/faulty/hello/blobs/uploads/",
            fault: Fault::Status(503, None),
            times: 2,
        },
        Rule {
            method: "PUT",
            target_contains: "/v2/faulty/hello/blobs/uploads/",
            fault: Fault::ResetAfter(2 << 20),
            times: 2,
        },
        Rule {
            method: "HEAD",
            target_contains: "/v2/faulty/hello/blobs/",
            fault: Fault::Status(502, None),
            times: 1,
        },
        Rule {
            method: "PUT",
            target_contains: "/v2/faulty/hello/manifests/",
            fault: Fault::Status(429, Some(1)),
            times: 1,
        },
        // Mounts refused outright (the second repository would mount from the first): the
        // push falls back to uploading.
        Rule {
            method: "POST",
            target_contains: "mount=",
            fault: Fault::Status(403, None),
            times: u32::MAX,
        },
    ]);
    let dest = format!("{}/faulty/hello:v1", proxy.host());
    let out = run(lab::imgbuild()
        .arg("push")
        .arg(&p.tarball)
        .arg(&dest)
        .arg(format!("{}/faulty/mirror:v1", proxy.host()))
        .args(["--json", "--jobs", "2"]))?;
    let report = json_of(&out)?;
    let seen = proxy.seen();
    assert_eq!(report["repositories"][1]["mounted"], 0);
    assert_eq!(report["repositories"][1]["uploaded"], 7);
    for (method, status) in [
        ("POST", 503),
        ("PUT", 0),
        ("HEAD", 502),
        ("PUT", 429),
        ("POST", 403),
    ] {
        assert!(
            seen.iter()
                .any(|s| s.method == method && s.status == status),
            "fault {method} {status} never fired: {seen:?}"
        );
    }
    let direct = format!("{}/faulty/hello:v1", reg.host());
    assert_served(&direct, &[], &report)?;
    // Every blob verifies when pulled back.
    let copy = lab::scratch_dir("faulty-copy");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{direct}"))
        .arg(format!("oci:{}:x", copy.join("oci").display())))?;
    Ok(())
}

pub fn test_failing_registry_writes_no_tag() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let p = pushed()?;
    let reg = lab::registry()?;
    let proxy = servers::start_proxy(reg.port)?;
    proxy.set_rules(vec![Rule {
        method: "PUT",
        target_contains: "/v2/broken/hello/manifests/",
        fault: Fault::Status(503, None),
        times: u32::MAX,
    }]);
    let err = expect_failure(
        lab::imgbuild()
            .arg("push")
            .arg(&p.tarball)
            .arg(format!("{}/broken/hello:v1", proxy.host()))
            .args(["--retries", "2"]),
    )?;
    assert!(
        err.contains("503") && err.contains("manifests/v1") && err.contains(&proxy.host()),
        "{err}"
    );
    // The blobs may be there, but no tag names the image.
    let tag_check = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/broken/hello:v1", reg.host()))
        .output()
        .map_err(|e| fail(e.to_string()))?;
    assert!(!tag_check.status.success(), "a tag was written");
    let attempts = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "PUT" && s.target.contains("/v2/broken/hello/manifests/"))
        .count();
    assert_eq!(attempts, 3, "one try and two retries");
    Ok(())
}

// ---------- TLS + htpasswd, and every credential source ----------

fn write(path: &Path, text: &str) -> TestResult {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| fail(e.to_string()))?;
    }
    std::fs::write(path, text).map_err(|e| fail(format!("{}: {e}", path.display())))
}

pub fn test_tls_basic_auth_and_credential_sources() -> TestResult {
    if !lab::require(&[TOOLS, &["htpasswd", "openssl", "dockerd", "docker"]].concat())? {
        return Ok(());
    }
    let p = pushed()?;
    let dir = lab::scratch_dir("tls-basic");
    let tls = servers::tls_material(&dir.join("tls"))?;
    let reg = servers::start_tls_basic_registry(&tls, "alice", "s3cret")?;
    let host = reg.host();
    let ca = tls.ca_cert.to_str().unwrap_or_default().to_string();
    let push = |tag: &str| {
        let mut c = lab::imgbuild();
        c.arg("push")
            .arg(&p.tarball)
            .arg(format!("{host}/team/hello:{tag}"))
            .args(["--ca-cert", &ca, "--json"]);
        c
    };

    // Nothing found: the error names the registry, what was searched and the answer.
    let err = expect_failure(&mut push("anon"))?;
    assert!(
        err.contains(&host) && err.contains("401") && err.contains("credentials tried"),
        "{err}"
    );

    // The system trust store's mechanism (SSL_CERT_FILE) works, and without the CA TLS fails.
    let err = expect_failure(
        lab::imgbuild()
            .arg("push")
            .arg(&p.tarball)
            .arg(format!("{host}/team/hello:x")),
    )?;
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A wrong password: login fails, says so, and stores nothing.
    let cfg = dir.join("docker-config");
    let mut login = lab::imgbuild();
    login
        .env("DOCKER_CONFIG", &cfg)
        .args([
            "login",
            &host,
            "-u",
            "alice",
            "--password-stdin",
            "--ca-cert",
            &ca,
        ])
        .stdin(std::process::Stdio::piped());
    let err = {
        let mut child = lab::imgbuild()
            .env("DOCKER_CONFIG", &cfg)
            .args([
                "login",
                &host,
                "-u",
                "alice",
                "--password-stdin",
                "--ca-cert",
                &ca,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        use std::io::Write;
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(b"wrong\n");
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        assert_eq!(out.status.code(), Some(1));
        stderr(&out)
    };
    assert!(err.contains(&host) && err.contains("401"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the password leaked into the error: {err}"
    );
    assert!(
        !cfg.join("config.json").exists(),
        "a failed login stored credentials"
    );

    // 1. `imgbuild login` writes Docker's config.json; push reads it; docker reads it too.
    let mut child = login
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    {
        use std::io::Write;
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(b"s3cret\n");
        }
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    assert!(out.status.success(), "login failed: {}", stderr(&out));
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(cfg.join("config.json")).map_err(|e| fail(e.to_string()))?,
    )
    .map_err(|e| fail(e.to_string()))?;
    use base64::Engine;
    assert_eq!(
        config["auths"][&host]["auth"],
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cfg.join("config.json"))
            .map_err(|e| fail(e.to_string()))?
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let out = run(push("config-json").env("DOCKER_CONFIG", &cfg))?;
    let digest = json_of(&out)?["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(digest, p.report["digest"].as_str().unwrap_or_default());
    let docker = lab::docker()?;
    let mut dcmd = docker.cmd();
    dcmd.arg("--config").arg(&cfg);
    run(dcmd.args(["pull", &format!("{host}/team/hello:config-json")]))?;
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        &format!("{host}/team/hello:config-json"),
        "/app/releases/start_erl.data",
    ]))?;
    assert!(!stdout(&out).trim().is_empty());

    // 2. A credential helper named in credHelpers, found on PATH.
    let bin = dir.join("bin");
    write(
        &bin.join("docker-credential-imgtest"),
        &format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{host}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\necho '{{\"ServerURL\":\"{host}\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}}'\n"
        ),
    )?;
    run(Command::new("chmod")
        .arg("+x")
        .arg(bin.join("docker-credential-imgtest")))?;
    let helper_cfg = dir.join("helper-config");
    write(
        &helper_cfg.join("config.json"),
        &format!(r#"{{"credHelpers":{{"{host}":"imgtest"}}}}"#),
    )?;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(push("helper")
        .env("DOCKER_CONFIG", &helper_cfg)
        .env("PATH", &path))?;
    // The same helper as the default store (credsStore).
    let store_cfg = dir.join("store-config");
    write(
        &store_cfg.join("config.json"),
        r#"{"credsStore":"imgtest"}"#,
    )?;
    run(push("creds-store")
        .env("DOCKER_CONFIG", &store_cfg)
        .env("PATH", &path))?;

    // 3. podman's auth.json.
    let auth_json = dir.join("podman/auth.json");
    write(
        &auth_json,
        &format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        ),
    )?;
    run(push("podman").env("REGISTRY_AUTH_FILE", &auth_json))?;
    // The same file where podman keeps it by default, under XDG_RUNTIME_DIR.
    let runtime_dir = dir.join("podman");
    std::fs::create_dir_all(runtime_dir.join("containers")).map_err(|e| fail(e.to_string()))?;
    std::fs::copy(&auth_json, runtime_dir.join("containers/auth.json"))
        .map_err(|e| fail(e.to_string()))?;
    run(push("podman-runtime-dir")
        .env_remove("REGISTRY_AUTH_FILE")
        .env("XDG_RUNTIME_DIR", &runtime_dir))?;

    // 4. CI variables.
    run(push("ci-vars")
        .env("IMGBUILD_USERNAME", "alice")
        .env("IMGBUILD_PASSWORD", "s3cret"))?;

    // 5. DOCKER_AUTH_CONFIG.
    run(push("auth-config-var").env(
        "DOCKER_AUTH_CONFIG",
        format!(
            r#"{{"auths":{{"https://{host}":{{"auth":"{}"}}}}}}"#,
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        ),
    ))?;

    // A system trust store that holds the CA (SSL_CERT_FILE is how rustls reads it) works
    // without --ca-cert.
    let system = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    let bundle = dir.join("bundle.pem");
    let ca_pem = std::fs::read_to_string(&tls.ca_cert).map_err(|e| fail(e.to_string()))?;
    write(&bundle, &format!("{system}\n{ca_pem}"))?;
    run(lab::imgbuild()
        .arg("push")
        .arg(&p.tarball)
        .arg(format!("{host}/team/hello:trust-store"))
        .env("SSL_CERT_FILE", &bundle)
        .env("IMGBUILD_USERNAME", "alice")
        .env("IMGBUILD_PASSWORD", "s3cret"))?;

    for tag in [
        "config-json",
        "helper",
        "creds-store",
        "podman",
        "ci-vars",
        "auth-config-var",
        "trust-store",
    ] {
        let d = digest_by_skopeo(
            &format!("{host}/team/hello:{tag}"),
            &["--creds", "alice:s3cret"],
        )?;
        assert_eq!(d, digest, "tag {tag}");
    }
    Ok(())
}

// ---------- token auth ----------

pub fn test_token_auth_anonymous_pull_and_authenticated_push() -> TestResult {
    if !lab::require(&[TOOLS, &["openssl"]].concat())? {
        return Ok(());
    }
    let rel = lab::release()?;
    let layout = lab::base_layout()?;
    let (reg, issuer) = servers::start_token_registry("pusher", "pw", "refresh-pusher")?;
    let host = reg.host();
    // The public base, pushed by an authenticated skopeo.
    run(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            "pusher:pw",
        ])
        .arg(format!("oci:{}:bookworm", layout.display()))
        .arg(format!("docker://{host}/public/debian:bookworm")))?;
    let dir = lab::scratch_dir("token");

    // Anonymous: a public base pulls through the Bearer challenge (GET, no credentials).
    let out = run(lab::imgbuild()
        .env("IMGBUILD_CACHE", dir.join("cache-anon"))
        .arg("build")
        .arg(&rel)
        .args(["--from", &format!("{host}/public/debian:bookworm")])
        .arg("-o")
        .arg(dir.join("anon.tar"))
        .arg("--json"))?;
    let anon = json_of(&out)?;
    assert!(
        anon["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let reqs = issuer.requests();
    assert!(
        reqs.iter().any(|r| r.caller == "anonymous"
            && r.granted
                .iter()
                .any(|g| g == "repository:public/debian:pull")),
        "{reqs:?}"
    );
    // Anonymous push is refused with a message naming the registry and what was tried.
    let err = expect_failure(
        lab::imgbuild()
            .arg("push")
            .arg(dir.join("anon.tar"))
            .arg(format!("{host}/private/hello:anon")),
    )?;
    assert!(
        err.contains(&host) && err.contains("credentials tried"),
        "{err}"
    );

    // An identity token in config.json: the OAuth2 refresh-token POST, then push with a mount
    // from the public base (scopes for both repositories).
    let cfg = dir.join("docker-config");
    write(
        &cfg.join("config.json"),
        &format!(r#"{{"auths":{{"{host}":{{"identitytoken":"refresh-pusher"}}}}}}"#),
    )?;
    let before = issuer.requests().len();
    let out = run(lab::imgbuild()
        .env("DOCKER_CONFIG", &cfg)
        .env("IMGBUILD_CACHE", dir.join("cache-push"))
        .arg("build")
        .arg(&rel)
        .args(["--from", &format!("{host}/public/debian:bookworm")])
        .args(["-t", &format!("{host}/private/hello:v1")])
        .args(["--push", "--json"]))?;
    let report = json_of(&out)?;
    let repo = &report["push"]["repositories"][0];
    assert_eq!(repo["mounted"], 1, "{repo}");
    let reqs: Vec<_> = issuer.requests().into_iter().skip(before).collect();
    assert!(reqs.iter().all(|r| r.method == "POST"), "{reqs:?}");
    assert!(
        reqs.iter().any(|r| r
            .granted
            .iter()
            .any(|g| g == "repository:private/hello:pull,push")
            && r.granted
                .iter()
                .any(|g| g == "repository:public/debian:pull")),
        "no token for the push and the mount source together: {reqs:?}"
    );
    // Tokens are reused: a handful of token requests for dozens of registry requests.
    assert!(reqs.len() <= 4, "{} token requests: {reqs:?}", reqs.len());
    assert_eq!(
        digest_by_skopeo(
            &format!("{host}/private/hello:v1"),
            &["--creds", "pusher:pw"]
        )?,
        report["digest"].as_str().unwrap_or_default()
    );

    // Basic credentials (the token GET with a password) push too.
    let out = run(lab::imgbuild()
        .env("IMGBUILD_USERNAME", "pusher")
        .env("IMGBUILD_PASSWORD", "pw")
        .arg("push")
        .arg(dir.join("anon.tar"))
        .arg(format!("{host}/private/hello:basic"))
        .arg("--json"))?;
    assert_eq!(json_of(&out)?["digest"], anon["digest"]);
    assert!(issuer.requests().iter().any(|r| r.caller == "basic:pusher"));
    // A wrong password: the token service's refusal is reported with the source tried.
    let err = expect_failure(
        lab::imgbuild()
            .env("IMGBUILD_USERNAME", "pusher")
            .env("IMGBUILD_PASSWORD", "nope")
            .arg("push")
            .arg(dir.join("anon.tar"))
            .arg(format!("{host}/private/hello:bad")),
    )?;
    assert!(
        err.contains("IMGBUILD_USERNAME") && err.contains("wrong user name or password"),
        "{err}"
    );
    assert!(!err.contains("nope"), "the password leaked: {err}");

    // Blobs redirected to storage on another host: the redirect is followed, the token is
    // not sent along. The "storage" is the main registry, which holds the same base blobs.
    lab::base_in_registry()?;
    let storage = servers::start_proxy(lab::registry()?.port)?;
    let front = servers::start_proxy(reg.port)?;
    front.set_rules(vec![Rule {
        method: "GET",
        target_contains: "/v2/public/debian/blobs/",
        fault: Fault::Redirect {
            origin: format!("http://localhost:{}", storage.port),
            from: "/v2/public/debian/",
            to: "/v2/base/debian/",
        },
        times: u32::MAX,
    }]);
    run(lab::imgbuild()
        .env("DOCKER_CONFIG", &cfg)
        .env("IMGBUILD_CACHE", dir.join("cache-redirect"))
        .arg("build")
        .arg(&rel)
        .args([
            "--from",
            &format!("{}/public/debian:bookworm", front.host()),
        ])
        .arg("-o")
        .arg(dir.join("redirected.tar")))?;
    let redirected: Vec<Seen> = front
        .seen()
        .into_iter()
        .filter(|s| s.status == 307)
        .collect();
    assert!(
        redirected.len() >= 2 && redirected.iter().all(|s| s.authorized),
        "{redirected:?}"
    );
    let fetched = storage.seen();
    assert!(
        count(&fetched, "GET", "/v2/base/debian/blobs/") >= 2,
        "{fetched:?}"
    );
    assert!(
        fetched.iter().all(|s| !s.authorized),
        "credentials followed the redirect to another host: {fetched:?}"
    );
    Ok(())
}

pub fn test_inspect_tarball_and_registry() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let p = pushed()?;
    let reg = lab::registry()?;
    for target in [p.tarball.display().to_string(), p.direct.clone()] {
        let out = run(lab::imgbuild().args(["inspect", &target, "--json"]))?;
        let r = json_of(&out)?;
        assert_eq!(r["digest"], p.report["digest"], "{target}");
        let kinds: Vec<&str> = r["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["kind"].as_str())
            .collect();
        assert_eq!(
            kinds,
            ["base", "erts", "deps", "app", "release", "sbom"],
            "{target}"
        );
        assert_eq!(r["config"]["User"], "65534");
        assert_eq!(r["sbom"]["applications"], p.report["sbom"]["applications"]);
        assert_eq!(
            r["sbom"]["debian_packages"],
            p.report["sbom"]["debian_packages"]
        );
        let text = run(lab::imgbuild().args(["inspect", &target]))?;
        let text = stdout(&text);
        assert!(
            text.contains("release applications") && text.contains("imgbuild: app layer"),
            "{text}"
        );
    }
    let missing = format!("{}/nothing/here:1", reg.host());
    let err = expect_failure(lab::imgbuild().args(["inspect", &missing]))?;
    assert!(err.contains("not found"), "{err}");
    Ok(())
}

/// A push killed in the middle (kill -9) leaves no tag; run again, it completes and verifies.
pub fn test_killed_push_resumes() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let p = pushed()?;
    let reg = lab::registry()?;
    let proxy = servers::start_proxy(reg.port)?;
    let dest = format!("{}/killed/hello:v1", proxy.host());
    let mut child = lab::imgbuild()
        .arg("push")
        .arg(&p.tarball)
        .arg(&dest)
        .args(["--quiet", "--jobs", "1"])
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    // Kill it once the first blob upload has started.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !proxy
        .seen()
        .iter()
        .any(|s| s.method == "POST" && s.target.contains("/v2/killed/hello/blobs/uploads/"))
    {
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            return Err(fail("the push never started an upload"));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    run(Command::new("kill")
        .arg("-KILL")
        .arg(child.id().to_string()))?;
    let _ = child.wait();
    let direct = format!("{}/killed/hello:v1", reg.host());
    let tag = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{direct}"))
        .output()
        .map_err(|e| fail(e.to_string()))?;
    assert!(!tag.status.success(), "a killed push left a tag");
    let out = run(lab::imgbuild()
        .arg("push")
        .arg(&p.tarball)
        .arg(&dest)
        .arg("--json"))?;
    let report = json_of(&out)?;
    assert_served(&direct, &[], &report)?;
    let copy = lab::scratch_dir("killed-copy");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{direct}"))
        .arg(format!("oci:{}:x", copy.join("oci").display())))?;
    Ok(())
}
