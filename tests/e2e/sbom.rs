//! The SBOM a scanner can match: a release with a dependency that mix.lock names as a Hex
//! package of another name, built on a debootstrap base; the SBOM taken out of the image holds
//! `pkg:hex`, `pkg:otp`, `pkg:deb` purls and the CPEs of Erlang/OTP and Elixir, and the SPDX
//! validator (`pyspdxtools`, from PyPI's spdx-tools) accepts it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::lab::{self, TestResult, fail, run, stdout};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &["umoci", "debootstrap", "mix", "erl", "tar", "pyspdxtools"];

/// The sample project with a path dependency `tiny_json` 0.3.1, released; then a mix.lock
/// beside it that says `tiny_json` is Hex's `tiny_json_ex` (as a fetched project's would),
/// plus a dev-only Hex package and a Git dependency the release does not hold.
fn project_with_lock(dir: &Path) -> Result<PathBuf, Failed> {
    let proj = dir.join("shop");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/hello");
    let _ = std::fs::remove_dir_all(&proj);
    std::fs::create_dir_all(&proj).map_err(|e| fail(e.to_string()))?;
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(&proj))?;
    let _ = std::fs::remove_dir_all(proj.join("_build"));
    let dep = proj.join("deps_src/tiny_json");
    std::fs::create_dir_all(dep.join("lib")).map_err(|e| fail(e.to_string()))?;
    let write = |p: PathBuf, text: &str| std::fs::write(p, text).map_err(|e| fail(e.to_string()));
    write(
        dep.join("mix.exs"),
        "defmodule TinyJson.MixProject do\n  use Mix.Project\n  def project, do: [app: :tiny_json, version: \"0.3.1\", elixir: \"~> 1.14\"]\n  def application, do: []\nend\n",
    )?;
    write(
        dep.join("lib/tiny_json.ex"),
        "defmodule TinyJson do\n  def encode(x), do: inspect(x)\nend\n",
    )?;
    let mix = std::fs::read_to_string(proj.join("mix.exs")).map_err(|e| fail(e.to_string()))?;
    write(
        proj.join("mix.exs"),
        &mix.replace(
            "deps: [],",
            "deps: [{:tiny_json, path: \"deps_src/tiny_json\"}],",
        ),
    )?;
    run(Command::new("mix")
        .args(["release", "--overwrite", "--quiet"])
        .current_dir(&proj)
        .env("MIX_ENV", "prod"))?;
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    write(
        proj.join("mix.lock"),
        &format!(
            r#"%{{
  "credo": {{:hex, :credo, "1.7.5", "{a}", [:mix], [{{:jason, "~> 1.0", [hex: :jason, repo: "hexpm", optional: false]}}], "hexpm", "{b}"}},
  "heroicons": {{:git, "https://github.com/tailwindlabs/heroicons.git", "88ab3a0d790e6a47404cba02800a6b25d2afae50", [tag: "v2.1.1", sparse: "optimized"]}},
  "tiny_json": {{:hex, :tiny_json_ex, "0.3.1", "{a}", [:mix], [], "hexpm", "{b}"}},
}}
"#
        ),
    )?;
    Ok(proj.join("_build/prod/rel/hello"))
}

/// The OTP release of the `erl` on PATH (the one the release was made with).
fn host_otp_version() -> Result<String, Failed> {
    let out = run(Command::new("erl").args([
        "-noshell",
        "-eval",
        r#"{ok, V} = file:read_file(filename:join([code:root_dir(), "releases", erlang:system_info(otp_release), "OTP_VERSION"])), io:put_chars(string:trim(V)), halt()."#,
    ]))?;
    Ok(stdout(&out).trim().to_string())
}

/// The SBOM file out of the image tarball's last layer.
fn sbom_from_image(tar: &Path, dir: &Path) -> Result<Vec<u8>, Failed> {
    let x = dir.join("x");
    let _ = std::fs::remove_dir_all(&x);
    std::fs::create_dir_all(&x).map_err(|e| fail(e.to_string()))?;
    run(Command::new("tar").arg("-xf").arg(tar).arg("-C").arg(&x))?;
    let read_json = |p: PathBuf| -> Result<Value, Failed> {
        serde_json::from_slice(&std::fs::read(&p).map_err(|e| fail(format!("{p:?}: {e}")))?)
            .map_err(|e| fail(e.to_string()))
    };
    let blob = |d: &str| x.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index = read_json(x.join("index.json"))?;
    let manifest = read_json(blob(
        index["manifests"][0]["digest"].as_str().unwrap_or_default(),
    ))?;
    let layer = manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["digest"].as_str())
        .ok_or_else(|| fail(format!("no layers: {manifest}")))?;
    let out = x.join("sbom-layer");
    std::fs::create_dir_all(&out).map_err(|e| fail(e.to_string()))?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(blob(layer))
        .arg("-C")
        .arg(&out))?;
    std::fs::read(out.join("var/lib/db/sbom/hello-0.1.0.spdx.json"))
        .map_err(|e| fail(format!("no SBOM in the image's last layer: {e}")))
}

pub fn test_sbom_identifiers_scanners_match() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let dir = lab::scratch_dir("sbom-ids");
    let rel = project_with_lock(&dir)?;
    let base = lab::base_layout()?;
    let tar = dir.join("img.tar");
    run(lab::imgbuild()
        .current_dir(&dir)
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .arg("build")
        .arg(&rel)
        .arg("--from")
        .arg(format!("oci:{}:bookworm", base.display()))
        .arg("--sbom")
        .arg(dir.join("sbom.json"))
        .arg("-o")
        .arg(&tar))?;
    let bytes = sbom_from_image(&tar, &dir)?;
    assert_eq!(
        bytes,
        std::fs::read(dir.join("sbom.json")).map_err(|e| fail(e.to_string()))?,
        "the SBOM in the image is not the one written beside it"
    );
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
    let pkgs = doc["packages"].as_array().cloned().unwrap_or_default();
    let refs = |name: &str| -> Vec<String> {
        pkgs.iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["externalRefs"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|r| r["referenceLocator"].as_str().map(String::from))
            .collect()
    };
    let version = |name: &str| -> String {
        pkgs.iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["versionInfo"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    // The Hex package by mix.lock's name; mix.lock's other entries are not in the image.
    assert_eq!(refs("tiny_json"), ["pkg:hex/tiny_json_ex@0.3.1"], "{doc}");
    assert!(
        !pkgs
            .iter()
            .any(|p| p["name"] == "credo" || p["name"] == "heroicons"),
        "{doc}"
    );
    // Erlang/OTP by its exact release (the host's, which made the release), Elixir, and
    // their applications.
    let otp = host_otp_version()?;
    assert_eq!(version("Erlang/OTP"), otp);
    assert_eq!(
        refs("Erlang/OTP"),
        [
            format!("cpe:2.3:a:erlang:erlang\\/otp:{otp}:*:*:*:*:*:*:*"),
            format!("pkg:github/erlang/otp@OTP-{otp}")
        ],
        "{doc}"
    );
    let elixir = version("elixir");
    assert!(elixir.starts_with("1."), "{doc}");
    assert_eq!(
        refs("Elixir"),
        [
            format!("cpe:2.3:a:elixir-lang:elixir:{elixir}:*:*:*:*:*:*:*"),
            format!("pkg:github/elixir-lang/elixir@v{elixir}")
        ]
    );
    for app in ["kernel", "stdlib", "inets", "logger", "erts"] {
        assert_eq!(
            refs(app),
            [format!("pkg:otp/{app}@{}", version(app))],
            "{app}"
        );
    }
    let debs = pkgs
        .iter()
        .filter(|p| {
            p["SPDXID"]
                .as_str()
                .is_some_and(|i| i.starts_with("SPDXRef-deb-"))
        })
        .collect::<Vec<_>>();
    assert!(debs.len() > 50, "{}", debs.len());
    assert!(debs.iter().all(|p| {
        p["externalRefs"][0]["referenceLocator"]
            .as_str()
            .is_some_and(|l| l.starts_with("pkg:deb/debian/"))
    }));
    // A real SPDX validator accepts it: exit 0 and nothing said.
    let file = dir.join("from-image.spdx.json");
    std::fs::write(&file, &bytes).map_err(|e| fail(e.to_string()))?;
    let out = Command::new("pyspdxtools")
        .arg("-i")
        .arg(&file)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let said = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "pyspdxtools: {said}"
    );
    Ok(())
}
