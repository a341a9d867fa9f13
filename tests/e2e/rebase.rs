//! `imgbuild rebase`: an image's release moved onto a patched base without rebuilding it. The
//! release layers keep their digests, the new base's layers are below them, the runtime
//! packages are installed again, the image runs, the labels name the new base; a base the
//! release cannot start on is refused with the check's report; a saved tarball rebases with no
//! registry at all.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::lab::{self, TestResult, fail, run};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &[
    "umoci",
    "skopeo",
    "debootstrap",
    "mix",
    "apt-ftparchive",
    "dpkg-scanpackages",
    "gpg",
    "dockerd",
    "docker",
];

/// A copy of `layout`'s image `tag` with one more layer holding /etc/imgbuild-patched, as
/// `apt2`: a "patched" base.
fn patched_base(layout: &Path, tag: &str, dir: &Path) -> Result<PathBuf, Failed> {
    let root = dir.join("patch");
    std::fs::create_dir_all(root.join("etc")).map_err(|e| fail(e.to_string()))?;
    std::fs::write(root.join("etc/imgbuild-patched"), "2026-12-01\n")
        .map_err(|e| fail(e.to_string()))?;
    lab::layout_plus_layer(layout, tag, &dir.join("patched-base"), &root, "apt2")
}

fn raw_manifest(tar: &Path) -> Result<Value, Failed> {
    let out = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}", tar.display()),
    ]))?;
    serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))
}

fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["digest"].as_str().map(String::from))
        .collect()
}

fn rebase(dir: &Path, args: &[&str]) -> Result<std::process::Output, Failed> {
    lab::imgbuild()
        .current_dir(dir)
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .arg("rebase")
        .args(args)
        .output()
        .map_err(|e| fail(e.to_string()))
}

pub fn test_rebase_onto_patched_base() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let repo = crate::apt::repo()?;
    let rel = lab::crypto_release()?;
    let dir = lab::scratch_dir("rebase");
    let old_tar = dir.join("old.tar");
    let built = crate::apt::build(
        &repo,
        &dir,
        &rel,
        &["libssl3"],
        &[
            "-t",
            "imgbuild-e2e/rebase:old",
            "-o",
            old_tar.to_str().unwrap_or_default(),
        ],
    )?;
    let new_base = patched_base(&repo.base, "apt", &dir)?;
    let from = format!("oci:{}:apt2", new_base.display());
    let new_tar = dir.join("new.tar");
    // From the saved tarball, with the new base in a layout: no registry is involved.
    let out = rebase(
        &dir,
        &[
            old_tar.to_str().unwrap_or_default(),
            "--from",
            &from,
            "--apt-source",
            &repo.source(),
            "-t",
            "imgbuild-e2e/rebase:new",
            "-o",
            new_tar.to_str().unwrap_or_default(),
            "--json",
        ],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    let p = &report["platforms"][0];
    assert_eq!(p["found_by"], "history", "{report}");
    assert!(
        p["check"]["elf_files"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(p["packages"].to_string().contains("libssl3"), "{report}");

    // The release's layers are the same blobs; the new base's three layers are below them.
    let old_layers: Vec<(String, String)> = built["layers"]
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
    let kept: Vec<&String> = old_layers
        .iter()
        .filter(|(k, _)| ["erts", "deps", "app", "release"].contains(&k.as_str()))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(kept.len(), 4, "{built}");
    let manifest = raw_manifest(&new_tar)?;
    let new_layers = layer_digests(&manifest);
    let base_manifest = run(Command::new("skopeo").args(["inspect", "--raw", &from]))?;
    let base_manifest: Value =
        serde_json::from_slice(&base_manifest.stdout).map_err(|e| fail(e.to_string()))?;
    let base_layers = layer_digests(&base_manifest);
    assert_eq!(base_layers.len(), 3);
    assert_eq!(new_layers[..3], base_layers[..], "{manifest}");
    // Then packages (made again on the new base), the kept release layers in order, the SBOM.
    assert_eq!(new_layers.len(), 3 + 1 + 4 + 1, "{manifest}");
    for (i, d) in kept.iter().enumerate() {
        assert_eq!(&&new_layers[4 + i], d, "release layer {i} changed");
    }
    let old_sbom = &old_layers
        .last()
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    assert_ne!(&new_layers[8], old_sbom, "the SBOM was not rewritten");
    let annotations = &manifest["annotations"];
    let index: Value = serde_json::from_slice(
        &std::fs::read(new_base.join("index.json")).map_err(|e| fail(e.to_string()))?,
    )
    .map_err(|e| fail(e.to_string()))?;
    let base_digest = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "apt2")
        .and_then(|m| m["digest"].as_str())
        .ok_or_else(|| fail("no apt2 in the new base's index"))?
        .to_string();
    assert_eq!(
        annotations["org.opencontainers.image.base.digest"].as_str(),
        Some(base_digest.as_str()),
        "{manifest}"
    );
    assert!(
        annotations["org.opencontainers.image.base.name"]
            .as_str()
            .is_some_and(|n| n.contains("patched-base")),
        "{manifest}"
    );
    // The rebased image runs and answers a :crypto request.
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&new_tar))?;
    let (status, body) = lab::run_and_get_path(&docker, "imgbuild-e2e/rebase:new", "/crypto")?;
    assert!(status.contains("200"), "{status} {body}");
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        "imgbuild-e2e/rebase:new",
        "/etc/imgbuild-patched",
    ]))?;
    assert_eq!(lab::stdout(&out).trim(), "2026-12-01");

    // From a registry to a registry: only what is new is sent (the new base's extra layer, the
    // SBOM and the config); the release's layers are already there.
    let reg = lab::registry()?;
    let old_ref = format!("{}/rebase/app:old", reg.host());
    let new_ref = format!("{}/rebase/app:new", reg.host());
    run(lab::imgbuild()
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .arg("push")
        .arg(&old_tar)
        .arg(&old_ref))?;
    let out = rebase(
        &dir,
        &[
            &old_ref,
            "--from",
            &from,
            "--apt-source",
            &repo.source(),
            "-t",
            &new_ref,
            "--push",
            "--json",
        ],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let pushed: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(pushed["digest"], report["digest"], "{pushed}");
    let repo_report = &pushed["written"][0]["repositories"][0];
    assert_eq!(repo_report["uploaded"], 3, "{pushed}");
    assert_eq!(repo_report["existing"], 7, "{pushed}");

    // Rebasing again gives the same bytes.
    let again = dir.join("again.tar");
    let out = rebase(
        &dir,
        &[
            old_tar.to_str().unwrap_or_default(),
            "--from",
            &from,
            "--apt-source",
            &repo.source(),
            "-t",
            "imgbuild-e2e/rebase:new",
            "-o",
            again.to_str().unwrap_or_default(),
        ],
    )?;
    assert!(out.status.success());
    assert_eq!(
        lab::stdout(&out).trim(),
        report["digest"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// A base the release cannot start on (bullseye's glibc 2.31) is refused with the check's
/// report, and nothing is written.
pub fn test_rebase_refuses_a_base_it_cannot_start_on() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let dir = lab::scratch_dir("rebase-refused");
    let old_tar = dir.join("old.tar");
    run(lab::imgbuild()
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .arg("build")
        .arg(&rel)
        .args([
            "--from",
            &format!("oci:{}:bookworm", lab::base_layout()?.display()),
        ])
        .args(["-t", "imgbuild-e2e/rebase:plain", "-o"])
        .arg(&old_tar))?;
    let out_tar = dir.join("refused.tar");
    let out = rebase(
        &dir,
        &[
            old_tar.to_str().unwrap_or_default(),
            "--from",
            &format!("oci:{}:bullseye", lab::bullseye_layout()?.display()),
            "-o",
            out_tar.to_str().unwrap_or_default(),
        ],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("would fail at start") && err.contains("GLIBC_2."),
        "{err}"
    );
    assert!(!out_tar.exists());
    // An image imgbuild did not build (the base itself) is refused, naming why.
    let out = rebase(
        &dir,
        &[
            &format!("oci:{}:bookworm", lab::base_layout()?.display()),
            "--from",
            &format!("oci:{}:bullseye", lab::bullseye_layout()?.display()),
            "-o",
            out_tar.to_str().unwrap_or_default(),
        ],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("own layers"), "{err}");
    Ok(())
}

/// The image of `tar` in a layout, tagged `stripped`, its history rewritten as another tool
/// would leave it (no `imgbuild:` entries): only its labels name its base.
fn without_history(tar: &Path, dir: &Path) -> Result<PathBuf, Failed> {
    let layout = dir.join("stripped");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!("oci:{}:stripped", layout.display())))?;
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let read = |p: &Path| -> Result<Value, Failed> {
        serde_json::from_slice(&std::fs::read(p).map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))
    };
    let write = |v: &Value| -> Result<(String, usize), Failed> {
        let bytes = serde_json::to_vec(v).map_err(|e| fail(e.to_string()))?;
        let d = format!("sha256:{}", crate::sha256_hex(&bytes));
        std::fs::write(blob(&d), &bytes).map_err(|e| fail(e.to_string()))?;
        Ok((d, bytes.len()))
    };
    let mut index = read(&layout.join("index.json"))?;
    let m_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut manifest = read(&blob(&m_digest))?;
    let mut config = read(&blob(manifest["config"]["digest"].as_str().unwrap_or("")))?;
    for h in config["history"].as_array_mut().into_iter().flatten() {
        h["created_by"] = "COPY . /app # buildkit".into();
    }
    let (c, n) = write(&config)?;
    manifest["config"]["digest"] = c.into();
    manifest["config"]["size"] = n.into();
    let (m, n) = write(&manifest)?;
    index["manifests"][0]["digest"] = m.into();
    index["manifests"][0]["size"] = n.into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).map_err(|e| fail(e.to_string()))?,
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(layout)
}

/// An image whose history another tool rewrote: its own layers are found above those of the
/// base its labels name (matched by digest), and it is rebased all the same.
pub fn test_rebase_finds_the_base_by_its_layers() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let rel = lab::release()?;
    let dir = lab::scratch_dir("rebase-labels");
    let old_tar = dir.join("old.tar");
    let built = run(lab::imgbuild()
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .arg("build")
        .arg(&rel)
        .args([
            "--from",
            &format!("oci:{}:bookworm", lab::base_layout()?.display()),
        ])
        .args(["-t", "imgbuild-e2e/rebase:labels", "--json", "-o"])
        .arg(&old_tar))?;
    let built: Value = serde_json::from_slice(&built.stdout).map_err(|e| fail(e.to_string()))?;
    let stripped = without_history(&old_tar, &dir)?;
    let new_base = patched_base(&lab::base_layout()?, "bookworm", &dir)?;
    let out_tar = dir.join("new.tar");
    let out = rebase(
        &dir,
        &[
            &format!("oci:{}:stripped", stripped.display()),
            "--from",
            &format!("oci:{}:apt2", new_base.display()),
            "-o",
            out_tar.to_str().unwrap_or_default(),
            "--json",
        ],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(
        report["platforms"][0]["found_by"], "base-layers",
        "{report}"
    );
    let new_layers = layer_digests(&raw_manifest(&out_tar)?);
    let release: Vec<String> = built["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| ["erts", "deps", "app", "release"].contains(&l["kind"].as_str().unwrap_or("")))
        .filter_map(|l| l["digest"].as_str().map(String::from))
        .collect();
    // The patched base's two layers, the four release layers kept, a new SBOM.
    assert_eq!(new_layers.len(), 2 + 4 + 1, "{report}");
    assert_eq!(new_layers[2..6], release[..], "{report}");
    Ok(())
}

/// A copy of the test repository where libssl3 has a newer version (the same files, its
/// version bumped with dpkg-deb) and the old one is gone: the suite after a security update.
/// Returns the `--apt-source` line and the new version.
fn patched_repo(repo: &crate::apt::Repo, dir: &Path) -> Result<(String, String), Failed> {
    let root = dir.join("repo2");
    let _ = std::fs::remove_dir_all(&root);
    run(Command::new("cp").arg("-a").arg(&repo.root).arg(&root))?;
    let out = run(Command::new("sh")
        .arg("-ec")
        .arg(
            r#"
old=$(ls pool/main/libssl3_*.deb)
rm -rf x && dpkg-deb -R "$old" x
v=$(sed -n 's/^Version: //p' x/DEBIAN/control)
new="$v+imgbuild1"
sed -i "s/^Version: .*/Version: $new/" x/DEBIAN/control
dpkg-deb --root-owner-group -b x "pool/main/libssl3_${new}_amd64.deb" >/dev/null
rm -rf x "$old" dists
echo "$new"
"#,
        )
        .current_dir(&root))?;
    let version = lab::stdout(&out).trim().to_string();
    crate::apt::index_and_sign(&root, &repo.gnupg)?;
    let port = crate::servers::start_static(&root)?;
    Ok((format!("http://127.0.0.1:{port} stable main"), version))
}

fn installed_version(docker: &lab::Docker, tar: &Path, tag: &str) -> Result<String, Failed> {
    run(docker.cmd().arg("load").arg("-i").arg(tar))?;
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "--entrypoint",
        "dpkg-query",
        tag,
        "-W",
        "-f",
        "${Version}",
        "libssl3",
    ]))?;
    Ok(lab::stdout(&out).trim().to_string())
}

/// Issue 22: build with packages whose dependencies come along (ca-certificates brings
/// openssl) in a project directory, which writes imgbuild.lock; `rebase` in that directory
/// asks for what the build asked for, installs the lock's pins on the new base (the same
/// bytes each time), and takes a patched package of the suite with --update-lock, which
/// rewrites the lock.
pub fn test_rebase_in_the_project_directory() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let repo = crate::apt::repo()?;
    let rel = lab::crypto_release()?;
    let dir = lab::scratch_dir("rebase-project");
    let old_tar = dir.join("old.tar");
    let old = old_tar.to_str().unwrap_or_default();
    crate::apt::build(
        &repo,
        &dir,
        &rel,
        &["libssl3", "ca-certificates"],
        &["-t", "imgbuild-e2e/rebase-project:old", "-o", old],
    )?;
    let lock_text = || std::fs::read_to_string(dir.join("imgbuild.lock")).unwrap_or_default();
    let lock = lock_text();
    let requested = |text: &str| {
        toml::from_str::<toml::Value>(text)
            .ok()
            .and_then(|v| v.get("requested").cloned())
            .map(|r| r.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        requested(&lock),
        r#"["ca-certificates", "libssl3"]"#,
        "{lock}"
    );
    assert!(lock.contains("name = \"openssl\""), "{lock}");
    // The image records what was asked, apart from what was installed.
    let config =
        run(Command::new("skopeo").args(["inspect", "--config", &format!("oci-archive:{old}")]))?;
    let config: Value = serde_json::from_slice(&config.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(
        config["config"]["Labels"]["dev.imgbuild.packages.requested"], "ca-certificates,libssl3",
        "{config}"
    );

    let new_base = patched_base(&repo.base, "apt", &dir)?;
    let from = format!("oci:{}:apt2", new_base.display());
    let rebase_to = |tar: &str, extra: &[&str]| -> Result<Value, Failed> {
        let mut args = vec![
            old,
            "--from",
            &from,
            "-t",
            "imgbuild-e2e/rebase-project:new",
        ];
        args.extend_from_slice(&["-o", tar, "--json"]);
        args.extend_from_slice(extra);
        let out = rebase(&dir, &args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "rebase {extra:?}: {err}");
        let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
        Ok(report)
    };
    // In the project directory, with its lock: the lock's pins, on the new base.
    let a_tar = dir.join("a.tar");
    let a = rebase_to(
        a_tar.to_str().unwrap_or_default(),
        &["--apt-source", &repo.source()],
    )?;
    let p = &a["platforms"][0];
    assert_eq!(p["packages_from"], "lock", "{a}");
    assert_eq!(
        p["requested"],
        serde_json::json!(["ca-certificates", "libssl3"]),
        "{a}"
    );
    let installed = p["packages"].to_string();
    assert!(
        ["ca-certificates ", "libssl3 ", "openssl "]
            .iter()
            .all(|n| installed.contains(n)),
        "{a}"
    );
    assert_eq!(
        lock_text(),
        lock,
        "a rebase without --update-lock changed the lock"
    );
    let docker = lab::docker()?;
    let pinned = installed_version(&docker, &a_tar, "imgbuild-e2e/rebase-project:new")?;
    assert!(installed.contains(&format!("libssl3 {pinned}")), "{a}");
    let (status, body) =
        lab::run_and_get_path(&docker, "imgbuild-e2e/rebase-project:new", "/crypto")?;
    assert!(status.contains("200"), "{status} {body}");

    // The suite gets a patched libssl3. By default the lock still decides: the same image.
    let (source2, patched) = patched_repo(&repo, &dir)?;
    let b = rebase_to(
        dir.join("b.tar").to_str().unwrap_or_default(),
        &["--apt-source", &source2],
    )?;
    assert_eq!(b["digest"], a["digest"], "{b}");
    let out = rebase(
        &dir,
        &[old, "--from", &from, "--apt-source", &source2, "-o"]
            .into_iter()
            .chain([dir.join("c.tar").to_str().unwrap_or_default()])
            .collect::<Vec<_>>(),
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--update-lock takes the versions"), "{err}");

    // --update-lock: resolved against the patched suite, the lock rewritten, the patched
    // package in the image.
    let u_tar = dir.join("u.tar");
    let u = rebase_to(
        u_tar.to_str().unwrap_or_default(),
        &["--apt-source", &source2, "--update-lock"],
    )?;
    let p = &u["platforms"][0];
    assert_eq!(p["packages_from"], "resolved", "{u}");
    assert!(
        p["packages"]
            .to_string()
            .contains(&format!("libssl3 {patched}")),
        "{u}"
    );
    assert_ne!(u["digest"], a["digest"]);
    let lock2 = lock_text();
    assert!(
        lock2.contains(&format!("version = \"{patched}\"")),
        "{lock2}"
    );
    assert_eq!(requested(&lock2), requested(&lock), "{lock2}");
    assert_eq!(
        installed_version(&docker, &u_tar, "imgbuild-e2e/rebase-project:new")?,
        patched
    );
    // And from now on the lock gives that image again.
    let again = rebase_to(
        dir.join("again.tar").to_str().unwrap_or_default(),
        &["--apt-source", &source2],
    )?;
    assert_eq!(again["digest"], u["digest"]);
    assert_eq!(again["platforms"][0]["packages_from"], "lock");
    Ok(())
}
