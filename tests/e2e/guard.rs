//! Every request guarded (`guard::*`): a fault proxy in front of the real registry injects one
//! fault per case, and each test asserts both sides — the fault happened (the proxy's log) and
//! imgbuild survived with the right digest, or failed fast with the right message. Also: kill
//! -9 at random points of cold builds sharing one cache.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::{self, TestResult, fail, json_of, run, stderr, stdout};
use crate::servers::{self, Fault, Proxy, Rule, Seen};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &["docker-registry", "skopeo", "umoci", "debootstrap", "mix"];

fn rule(method: &'static str, target_contains: &'static str, fault: Fault, times: u32) -> Rule {
    Rule {
        method,
        target_contains,
        fault,
        times,
    }
}

fn count(seen: &[Seen], method: &str, status: u16, target: &str) -> usize {
    seen.iter()
        .filter(|s| s.method == method && s.status == status && s.target.contains(target))
        .count()
}

/// A proxy in front of the shared registry, which holds the base.
fn proxy() -> Result<(Proxy, String), Failed> {
    lab::base_in_registry()?;
    let reg = lab::registry()?;
    let proxy = servers::start_proxy(reg.port)?;
    let base = format!("{}/base/debian:bookworm-minbase", proxy.host());
    Ok((proxy, base))
}

/// The digest of the base's (one, large) layer, leaked into a `'static` for proxy rules.
fn base_layer() -> Result<&'static str, Failed> {
    let b = crate::built()?;
    let d = b.report["layers"][0]["digest"]
        .as_str()
        .ok_or_else(|| fail("no base layer in the report"))?
        .to_string();
    Ok(Box::leak(d.into_boxed_str()))
}

/// The probe of a registry is a request like any other: a load balancer that answers 503
/// twice is ridden out.
pub fn test_probe_503_is_retried() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let (proxy, base) = proxy()?;
    proxy.set_rules(vec![rule("GET", "/v2/", Fault::Status(503, None), 2)]);
    let out = run(lab::imgbuild().args(["inspect", "--json", &base]))?;
    let seen = proxy.seen();
    assert_eq!(count(&seen, "GET", 503, "/v2/"), 2, "{seen:?}");
    assert!(json_of(&out)?["digest"].as_str().is_some());
    // A registry that keeps answering 503 is named with the request, the answer and the
    // number of attempts.
    proxy.set_rules(vec![rule(
        "GET",
        "/v2/",
        Fault::Status(503, None),
        u32::MAX,
    )]);
    let out = lab::imgbuild()
        .args([
            "inspect",
            "--retries",
            "2",
            &format!("{}/other/x:1", proxy.host()),
        ])
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&proxy.host())
            && err.contains("503")
            && err.contains("3 attempts")
            && err.contains("--retries"),
        "{err}"
    );
    Ok(())
}

/// Downloads that break off resume with a Range request (206) and are verified by digest; a
/// registry without ranges gets a clean restart; a download that stalls is caught by the idle
/// timeout, not by a whole-request limit.
pub fn test_downloads_resume_restart_and_unstall() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let (proxy, base) = proxy()?;
    let layer = base_layer()?;
    let dir = lab::scratch_dir("guard-downloads");
    let pull = |name: &str, extra: &[&str]| -> Result<(Output, Duration), Failed> {
        let started = Instant::now();
        let out = lab::imgbuild()
            .env("IMGBUILD_CACHE", dir.join(format!("cache-{name}")))
            .args(["pull", "--json", &base, "-o"])
            .arg(dir.join(format!("{name}.tar")))
            .args(extra)
            .output()
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(format!("pull {name} failed: {}", stderr(&out))));
        }
        Ok((out, started.elapsed()))
    };
    let verified = |name: &str| -> TestResult {
        // skopeo re-reads the archive and checks every blob against its digest.
        run(Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!(
                "oci-archive:{}",
                dir.join(format!("{name}.tar")).display()
            ))
            .arg(format!(
                "oci:{}:x",
                dir.join(format!("{name}-check")).display()
            )))?;
        Ok(())
    };

    // Reset after 1 MiB: resumed from byte 1048576 with a 206.
    proxy.set_rules(vec![rule("GET", layer, Fault::CutBody(1 << 20), 1)]);
    pull("resume", &[])?;
    let seen = proxy.seen();
    assert!(
        seen.iter().any(|s| s.method == "GET"
            && s.target.contains(layer)
            && s.status == 206
            && s.range.as_deref() == Some("bytes=1048576-")),
        "no ranged resume: {seen:?}"
    );
    verified("resume")?;

    // No ranges: the ranged request is answered whole (200), and the download starts over.
    let before = proxy.seen().len();
    proxy.set_rules(vec![
        rule("GET", layer, Fault::CutBody(1 << 20), 1),
        rule("GET", layer, Fault::StripRange, u32::MAX),
    ]);
    pull("restart", &[])?;
    let seen = &proxy.seen()[before..];
    assert!(
        seen.iter()
            .any(|s| s.target.contains(layer) && s.status == 200 && s.range.is_some()),
        "no restart: {seen:?}"
    );
    verified("restart")?;

    // Stalled for 30 s after 1 MiB: with a 2 s idle timeout, resumed within seconds.
    let before = proxy.seen().len();
    proxy.set_rules(vec![rule(
        "GET",
        layer,
        Fault::StallBody(1 << 20, Duration::from_secs(30)),
        1,
    )]);
    let (_, took) = pull("stall", &["--idle-timeout", "2"])?;
    assert!(
        took < Duration::from_secs(25),
        "the stall was waited out: {took:?}"
    );
    let seen = &proxy.seen()[before..];
    assert!(
        seen.iter()
            .any(|s| s.target.contains(layer) && s.status == 206),
        "no resume after the stall: {seen:?}"
    );
    verified("stall")?;
    Ok(())
}

/// An upload the registry stops reading is caught by the idle timeout and sent again.
pub fn test_upload_stall_is_retried() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let (proxy, _) = proxy()?;
    let b = crate::built()?;
    proxy.set_rules(vec![rule(
        "PUT",
        "/v2/guard/stall/blobs/uploads/",
        Fault::StallUpload(1 << 20, Duration::from_secs(40)),
        1,
    )]);
    let started = Instant::now();
    let out = run(lab::imgbuild()
        .args(["push", "--json", "--idle-timeout", "2", "--jobs", "1"])
        .arg(&b.tarball)
        .arg(format!("{}/guard/stall:1", proxy.host())))?;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(35),
        "the stall was waited out: {took:?}"
    );
    let seen = proxy.seen();
    assert_eq!(
        count(&seen, "PUT", 0, "/v2/guard/stall/blobs/uploads/"),
        1,
        "{seen:?}"
    );
    assert_eq!(json_of(&out)?["digest"], b.report["digest"]);
    Ok(())
}

/// A Retry-After far beyond the cap fails at once, naming the registry and the wait; a short
/// one is honoured.
pub fn test_long_retry_after_fails_fast() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let (proxy, base) = proxy()?;
    proxy.set_rules(vec![rule(
        "GET",
        "/manifests/",
        Fault::Status(429, Some(3600)),
        u32::MAX,
    )]);
    let started = Instant::now();
    let out = lab::imgbuild()
        .args(["inspect", &base])
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "it waited");
    assert!(
        err.contains(&proxy.host())
            && err.contains("1 h 0 min")
            && err.contains("--max-retry-wait"),
        "{err}"
    );
    let before = proxy.seen().len();
    proxy.set_rules(vec![rule(
        "GET",
        "/manifests/",
        Fault::Status(429, Some(1)),
        1,
    )]);
    run(lab::imgbuild().args(["inspect", &base]))?;
    assert_eq!(count(&proxy.seen()[before..], "GET", 429, "/manifests/"), 1);
    Ok(())
}

/// Registry quirks, each simulated by the proxy in front of the real registry: a monolithic
/// PUT refused (Artifactory) → PATCH upload; bodies over 4 MiB refused with 413 (GHCR) →
/// 4 MiB chunks; HEAD of a blob answered 404 with no body, or with a body.
pub fn test_registry_quirks() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let (proxy, _) = proxy()?;
    let b = crate::built()?;
    let digest = b.report["digest"].as_str().unwrap_or("?").to_string();
    let push = |repo: &str| -> Result<Value, Failed> {
        json_of(&run(lab::imgbuild()
            .args(["push", "--json"])
            .arg(&b.tarball)
            .arg(format!("{}/{repo}:1", proxy.host())))?)
    };
    let served = |repo: &str| -> TestResult {
        let reg = lab::registry()?;
        let out = run(Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{}/{repo}:1", reg.host())))?;
        assert_eq!(stdout(&out).trim(), digest, "{repo}");
        Ok(())
    };

    proxy.set_rules(vec![rule(
        "PUT",
        "/v2/quirk/patch-only/blobs/uploads/",
        Fault::StatusIfBody(405),
        u32::MAX,
    )]);
    push("quirk/patch-only")?;
    let seen = proxy.seen();
    assert!(
        count(&seen, "PUT", 405, "/v2/quirk/patch-only/") >= 1,
        "{seen:?}"
    );
    assert!(
        count(&seen, "PATCH", 202, "/v2/quirk/patch-only/") >= 1,
        "{seen:?}"
    );
    served("quirk/patch-only")?;

    let before = proxy.seen().len();
    proxy.set_rules(vec![
        rule(
            "PUT",
            "/v2/quirk/capped/blobs/uploads/",
            Fault::TooLargeOver(4 << 20),
            u32::MAX,
        ),
        rule(
            "PATCH",
            "/v2/quirk/capped/blobs/uploads/",
            Fault::TooLargeOver(4 << 20),
            u32::MAX,
        ),
    ]);
    push("quirk/capped")?;
    let seen = &proxy.seen()[before..];
    assert!(
        count(seen, "PUT", 413, "/v2/quirk/capped/") >= 1,
        "{seen:?}"
    );
    assert!(
        count(seen, "PATCH", 202, "/v2/quirk/capped/") >= 10,
        "{seen:?}"
    );
    served("quirk/capped")?;

    for (repo, with_body) in [("quirk/head-bare", false), ("quirk/head-body", true)] {
        let before = proxy.seen().len();
        let target: &'static str = Box::leak(format!("/v2/{repo}/blobs/").into_boxed_str());
        proxy.set_rules(vec![rule(
            "HEAD",
            target,
            Fault::HeadNotFound(with_body),
            u32::MAX,
        )]);
        push(repo)?;
        let seen = &proxy.seen()[before..];
        assert!(count(seen, "HEAD", 404, target) >= 7, "{seen:?}");
        served(repo)?;
    }
    Ok(())
}

/// Tokens: a service that answers only `access_token` (with `issued_at` and a 4 s lifetime)
/// works, and a push that lasts longer than a token gets fresh ones before they lapse.
pub fn test_short_tokens_are_refreshed() -> TestResult {
    if !lab::require(&[TOOLS, &["openssl"]].concat())? {
        return Ok(());
    }
    let b = crate::built()?;
    let (reg, issuer) = servers::start_token_registry_styled(
        "ci",
        "secret",
        "refresh-me",
        servers::TokenStyle {
            access_token_only: true,
            lifetime: 4,
        },
    )?;
    let proxy = servers::start_proxy(reg.port)?;
    // Every blob HEAD takes a second: the push outlives several tokens.
    proxy.set_rules(vec![rule(
        "HEAD",
        "/blobs/",
        Fault::Delay(Duration::from_secs(1)),
        u32::MAX,
    )]);
    let out = run(lab::imgbuild()
        .env("IMGBUILD_USERNAME", "ci")
        .env("IMGBUILD_PASSWORD", "secret")
        .args(["push", "--json", "--jobs", "1"])
        .arg(&b.tarball)
        .arg(format!("{}/short/tokens:1", proxy.host())))?;
    assert_eq!(json_of(&out)?["digest"], b.report["digest"]);
    let requests = issuer.requests();
    assert!(requests.len() >= 3, "tokens were not renewed: {requests:?}");
    let seen = proxy.seen();
    assert_eq!(
        seen.iter()
            .filter(|s| s.status == 401 && s.authorized)
            .count(),
        0,
        "a lapsed token was sent: {seen:?}"
    );
    Ok(())
}

/// `kill -9` at random points of ten cold builds that share one cache, then a clean build:
/// every cached blob hashes to its name, and the image is the one a pristine cache gives.
pub fn test_kill9_cold_builds_share_a_cache() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let layout = lab::base_layout()?;
    let from = format!("oci:{}:bookworm", layout.display());
    let dir = lab::scratch_dir("kill9-cold");
    let cache = dir.join("shared-cache");
    let build = |cache: &Path, out: &str| {
        let mut c = lab::imgbuild();
        c.env("IMGBUILD_CACHE", cache)
            .args([
                "build",
                "--json",
                "--from",
                &from,
                "-t",
                "kill9/hello:1",
                "-o",
            ])
            .arg(dir.join(out))
            .arg(&rel)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    };
    // A pseudo-random schedule (seeded by the clock, printed for a rerun).
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut points = Vec::new();
    for i in 0..10 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = Duration::from_millis(50 + seed % 2500);
        points.push(after.as_millis());
        // The cache is cold only for the first; the rest find what earlier ones finished.
        if i % 3 == 0 {
            let _ = std::fs::remove_dir_all(&cache);
        }
        let mut child = build(&cache, &format!("k{i}.tar"))
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        std::thread::sleep(after);
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = run(&mut build(&cache, "final.tar"))?;
    let shared = json_of(&out)?;
    let pristine = json_of(&run(&mut build(
        &dir.join("pristine-cache"),
        "pristine.tar",
    ))?)?;
    assert_eq!(
        shared["digest"], pristine["digest"],
        "kill points (ms): {points:?}"
    );
    let blobs = cache.join("blobs/sha256");
    let mut checked = 0;
    for e in std::fs::read_dir(&blobs)
        .map_err(|e| fail(e.to_string()))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(e.path()).map_err(|e| fail(e.to_string()))?;
        assert_eq!(
            crate::sha256_hex(&bytes),
            name,
            "kill points (ms): {points:?}"
        );
        checked += 1;
    }
    // Five release layers and the SBOM (the base stays in its layout, read in place).
    assert!(checked >= 6, "only {checked} blobs in the cache");
    Ok(())
}
