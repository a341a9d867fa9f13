//! A fleet of CI runners sharing the registry cache (`--cache-repo`): a runner with an empty
//! local cache reads neither the base nor any layer, compresses nothing and uploads no layer;
//! poisoned entries are noticed, warned about and made again; a read-only cache gets no writes.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::lab::{self, TestResult, fail, json_of, run};
use crate::servers::{self, Seen};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &[
    "docker-registry",
    "skopeo",
    "umoci",
    "debootstrap",
    "mix",
    "curl",
];

/// One runner: its own (empty) cache directory, the shared cache repository.
fn runner(
    cache: &Path,
    rel: &Path,
    from: &str,
    tag: &str,
    extra: &[&str],
) -> Result<Output, Failed> {
    run(lab::imgbuild()
        .env("IMGBUILD_CACHE", cache)
        .arg("build")
        .arg(rel)
        .args(["--from", from, "-t", tag, "--push", "--json"])
        .args(extra))
}

/// Release layers of a report, kind → digest.
fn release_layers(report: &Value) -> Vec<(String, String)> {
    report["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["kind"] != "base" && l["kind"] != "sbom")
        .map(|l| {
            (
                l["kind"].as_str().unwrap_or("").to_string(),
                l["digest"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn hex(d: &str) -> &str {
    d.trim_start_matches("sha256:")
}

/// Layer blobs fetched or sent through the proxy.
fn layer_traffic<'a>(seen: &'a [Seen], digests: &[String]) -> Vec<&'a Seen> {
    seen.iter()
        .filter(|s| {
            digests.iter().any(|d| s.target.contains(hex(d)))
                && ((s.method == "GET" && s.target.contains("/blobs/"))
                    || s.method == "PUT"
                    || s.method == "PATCH")
        })
        .collect()
}

fn curl(args: &[&str]) -> Result<Vec<u8>, Failed> {
    Ok(run(Command::new("curl").args(["-sSf"]).args(args))?.stdout)
}

/// Two runners with empty local caches, one cache repository: the second gets the base's
/// summary and every release layer from it, so it reads no base layer, compresses nothing,
/// moves no layer bytes (mounts only), and makes the same image. Then poisoned entries, and a
/// read-only runner.
pub fn test_two_runners_share_a_cache_repo() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    lab::base_in_registry()?;
    let reg = lab::registry()?;
    let proxy = servers::start_proxy(reg.port)?;
    let dir = lab::scratch_dir("fleet");
    let from = format!("{}/base/debian:bookworm-minbase", proxy.host());
    let cache_repo = format!("{}/fleet/cache", proxy.host());
    let with_cache = ["--cache-repo", cache_repo.as_str()];

    let first = json_of(&runner(
        &dir.join("runner-1"),
        &rel,
        &from,
        &format!("{}/fleet/app-1:1", proxy.host()),
        &with_cache,
    )?)?;
    let layers = release_layers(&first);
    assert!(layers.len() >= 4, "{first}");
    let base_layer = first["layers"][0]["digest"]
        .as_str()
        .unwrap_or("?")
        .to_string();

    let before = proxy.seen().len();
    let second = json_of(&runner(
        &dir.join("runner-2"),
        &rel,
        &from,
        &format!("{}/fleet/app-2:1", proxy.host()),
        &with_cache,
    )?)?;
    let seen: Vec<Seen> = proxy.seen().split_off(before);
    assert_eq!(second["digest"], first["digest"], "another image");
    assert_eq!(first["base"]["summary"], "read", "{first}");
    assert_eq!(second["base"]["summary"], "cache-repo", "{second}");
    // Every release layer came from the cache repository: nothing was tarred or compressed.
    for l in second["layers"].as_array().into_iter().flatten() {
        if l["kind"] != "base" {
            assert_eq!(l["origin"], "cache-repo", "{l}");
        }
    }
    let mut digests: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
    digests.push(base_layer.clone());
    let moved = layer_traffic(&seen, &digests);
    assert!(moved.is_empty(), "layer bytes moved: {moved:?}");
    let mounts = seen
        .iter()
        .filter(|s| s.method == "POST" && s.target.contains("mount=") && s.status == 201)
        .count();
    assert!(mounts > layers.len(), "only {mounts} mounts: {seen:?}");

    // Poisoned: the app layer's entry points at the deps layer's blob (and says so), and the
    // summary's entry at a document that is not a summary. A third runner notices both, warns,
    // makes them here, and the image is the same.
    let app = layers
        .iter()
        .find(|(k, _)| k == "app")
        .map(|(_, d)| d.clone());
    let deps = layers
        .iter()
        .find(|(k, _)| k == "deps")
        .map(|(_, d)| d.clone());
    let (Some(app), Some(deps)) = (app, deps) else {
        return Err(fail(format!("no app or deps layer: {first}")));
    };
    let api = format!("http://{}/v2/fleet/cache", reg.host());
    let tags: Value = serde_json::from_slice(&curl(&[&format!("{api}/tags/list")])?)
        .map_err(|e| fail(e.to_string()))?;
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
    let mut poisoned = 0;
    for tag in tags["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let url = format!("{api}/manifests/{tag}");
        let mut m: Value = serde_json::from_slice(&curl(&["-H", accept, &url])?)
            .map_err(|e| fail(e.to_string()))?;
        let points_at = m["layers"][0]["digest"].as_str().unwrap_or("").to_string();
        if tag.starts_with("imgbuild-layer-") && points_at == app {
            let deps_entry = first["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["digest"] == deps.as_str())
                .cloned()
                .unwrap_or(Value::Null);
            m["layers"][0]["digest"] = deps.clone().into();
            m["layers"][0]["size"] = deps_entry["size"].clone();
            m["layers"][0]["annotations"]["dev.imgbuild.diff-id"] = deps_entry["diff_id"].clone();
        } else if tag.starts_with("imgbuild-summary-") {
            // Any blob of the repository that is not a summary: the app layer's.
            m["layers"][0]["digest"] = app.clone().into();
        } else {
            continue;
        }
        let body = serde_json::to_vec(&m).map_err(|e| fail(e.to_string()))?;
        let file = dir.join("poison.json");
        std::fs::write(&file, &body).map_err(|e| fail(e.to_string()))?;
        curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", file.display()),
            &url,
        ])?;
        poisoned += 1;
    }
    assert_eq!(poisoned, 2, "{tags}");
    let third_out = runner(
        &dir.join("runner-3"),
        &rel,
        &from,
        &format!("{}/fleet/app-3:1", proxy.host()),
        &with_cache,
    )?;
    let third = json_of(&third_out)?;
    let err = String::from_utf8_lossy(&third_out.stderr);
    assert_eq!(
        third["digest"], first["digest"],
        "a poisoned entry changed the image: {err}"
    );
    assert!(err.contains("stale or poisoned entry"), "{err}");
    assert!(err.contains("is not one of its layers"), "{err}");

    // A read-only runner (a pull request) with a changed release: it makes its new layers
    // itself and writes nothing to the cache repository.
    let rel2 = lab::build_release(&dir.join("hello-pr"), Some("hello from a pull request"))?;
    let before = proxy.seen().len();
    let pr = runner(
        &dir.join("runner-pr"),
        &rel2,
        &from,
        &format!("{}/fleet/app-pr:1", proxy.host()),
        &["--cache-repo", &cache_repo, "--cache-repo-readonly"],
    )?;
    json_of(&pr)?;
    let writes: Vec<Seen> = proxy
        .seen()
        .split_off(before)
        .into_iter()
        .filter(|s| {
            s.target.starts_with("/v2/fleet/cache/") && s.method != "GET" && s.method != "HEAD"
        })
        .collect();
    assert!(writes.is_empty(), "a read-only runner wrote: {writes:?}");
    Ok(())
}
