//! Runtime packages end to end, with no outside mirror: a local apt repository of real `.deb`
//! files (fetched with `apt-get download`) plus a test CA package made with dpkg-deb, indexed by
//! dpkg-scanpackages and apt-ftparchive, signed with a test key that the test base trusts, and
//! served over loopback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::lab::{self, TestResult, fail, run, stdout};
use crate::servers;

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &[
    "umoci",
    "debootstrap",
    "mix",
    "apt-ftparchive",
    "dpkg-scanpackages",
    "gpg",
    "dpkg-deb",
    "openssl",
];

#[derive(Clone, Debug)]
pub struct Repo {
    /// The repository's files (pool/, dists/).
    pub root: PathBuf,
    pub port: u16,
    /// The base layout that trusts the repository's key, tagged `apt`.
    pub base: PathBuf,
    /// gpg home holding the signing key.
    pub gnupg: PathBuf,
    /// The test CA's certificate (packaged as imgbuild-test-ca) and its TLS material.
    pub tls: servers::Tls,
}

impl Repo {
    pub fn source(&self) -> String {
        format!("http://127.0.0.1:{} stable main", self.port)
    }
    pub fn from(&self) -> String {
        format!("oci:{}:apt", self.base.display())
    }
}

fn sh(script: &str, dir: &Path) -> Result<String, Failed> {
    let out = run(Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .env("GNUPGHOME", dir.join("gnupg")))?;
    Ok(stdout(&out))
}

/// Index and sign the repository at `root` with the key in `gnupg`.
pub fn index_and_sign(root: &Path, gnupg: &Path) -> TestResult {
    let script = format!(
        r#"
mkdir -p dists/stable/main/binary-amd64
dpkg-scanpackages --arch amd64 pool > dists/stable/main/binary-amd64/Packages 2>/dev/null
gzip -9nkf dists/stable/main/binary-amd64/Packages
apt-ftparchive -o APT::FTPArchive::Release::Suite=stable -o APT::FTPArchive::Release::Codename=stable \
  -o APT::FTPArchive::Release::Architectures=amd64 -o APT::FTPArchive::Release::Components=main \
  release dists/stable > Release.tmp
mv Release.tmp dists/stable/Release
GNUPGHOME={g} gpg --batch --yes --pinentry-mode loopback --passphrase '' --clearsign \
  -o dists/stable/InRelease dists/stable/Release
"#,
        g = gnupg.display()
    );
    sh(&script, root).map(|_| ())
}

pub fn repo() -> Result<Repo, Failed> {
    static REPO: OnceLock<Result<Repo, String>> = OnceLock::new();
    REPO.get_or_init(|| make_repo().map_err(|e| e.message().unwrap_or("repo failed").to_string()))
        .clone()
        .map_err(|m| fail(format!("shared apt repository failed: {m}")))
}

fn make_repo() -> Result<Repo, Failed> {
    let dir = lab::workdir().join("apt-repo");
    let _ = std::fs::remove_dir_all(&dir);
    let pool = dir.join("root/pool/main");
    std::fs::create_dir_all(&pool).map_err(|e| fail(e.to_string()))?;
    // Real packages from the machine's own Debian sources.
    let debs = lab::workdir().join("apt-debs");
    std::fs::create_dir_all(&debs).map_err(|e| fail(e.to_string()))?;
    let have = std::fs::read_dir(&debs).map(|d| d.count()).unwrap_or(0);
    if have < 3 {
        let download = || {
            run(Command::new("apt-get")
                .args(["download", "libssl3", "openssl", "ca-certificates"])
                .current_dir(&debs))
        };
        if download().is_err() {
            // A fresh machine may have no package lists yet.
            run(Command::new("apt-get").args(["update", "-q"]))?;
            download()?;
        }
    }
    run(Command::new("sh").arg("-c").arg(format!(
        "cp {}/*.deb {}/",
        debs.display(),
        pool.display()
    )))?;
    // A test CA in a package of its own, as a company CA would be shipped.
    let tls = servers::tls_material(&dir.join("tls"))?;
    let pkg = dir.join("ca-pkg");
    let share = pkg.join("usr/share/ca-certificates/imgbuild-test");
    std::fs::create_dir_all(&share).map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(pkg.join("DEBIAN")).map_err(|e| fail(e.to_string()))?;
    std::fs::copy(&tls.ca_cert, share.join("imgbuild-test-ca.crt"))
        .map_err(|e| fail(e.to_string()))?;
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: imgbuild-test-ca\nVersion: 1.0\nArchitecture: all\nMaintainer: imgbuild tests <tests@imgbuild.invalid>\nDepends: ca-certificates\nDescription: test CA for imgbuild\n",
    )
    .map_err(|e| fail(e.to_string()))?;
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&pkg)
        .arg(pool.join("imgbuild-test-ca_1.0_all.deb")))?;
    // The signing key.
    let gnupg = dir.join("gnupg");
    std::fs::create_dir_all(&gnupg).map_err(|e| fail(e.to_string()))?;
    let _ = run(Command::new("chmod").arg("700").arg(&gnupg));
    run(Command::new("gpg")
        .env("GNUPGHOME", &gnupg)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args([
            "--quick-gen-key",
            "imgbuild test repository <repo@imgbuild.invalid>",
            "rsa3072",
            "sign",
            "never",
        ]))?;
    let root = dir.join("root");
    index_and_sign(&root, &gnupg)?;
    let key = run(Command::new("gpg").env("GNUPGHOME", &gnupg).arg("--export"))?.stdout;
    // The base, plus a layer that trusts the key.
    let trust = dir.join("trust");
    std::fs::create_dir_all(trust.join("etc/apt/trusted.gpg.d"))
        .map_err(|e| fail(e.to_string()))?;
    std::fs::write(trust.join("etc/apt/trusted.gpg.d/imgbuild-test.gpg"), key)
        .map_err(|e| fail(e.to_string()))?;
    let base = lab::layout_plus_layer(
        &lab::base_layout()?,
        "bookworm",
        &dir.join("base-layout"),
        &trust,
        "apt",
    )?;
    let port = servers::start_static(&root)?;
    Ok(Repo {
        root,
        port,
        base,
        gnupg,
        tls,
    })
}

pub(crate) fn build(
    repo: &Repo,
    dir: &Path,
    rel: &Path,
    packages: &[&str],
    extra: &[&str],
) -> Result<Value, Failed> {
    let mut c = lab::imgbuild();
    c.current_dir(dir)
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .arg("build")
        .arg(rel)
        .args(["--from", &repo.from(), "--apt-source", &repo.source()])
        .args(extra)
        .arg("--json");
    for p in packages {
        c.args(["--package", p]);
    }
    let out = run(&mut c)?;
    serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("not JSON: {e}: {}", stdout(&out))))
}

fn layer_of(report: &Value, kind: &str) -> String {
    report["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["kind"] == kind)
        .and_then(|l| l["digest"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// `--package auto` on the crypto sample: the check finds crypto.so's libcrypto.so.3 missing,
/// so libssl3 is installed (and said why), pinned in the lock, and `:crypto` answers in Docker.
/// Run again with the lock: the same image.
pub fn test_auto_packages_from_the_check() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "docker"]].concat())? {
        return Ok(());
    }
    let repo = repo()?;
    let rel = lab::crypto_release()?;
    let dir = lab::scratch_dir("apt-auto");
    let tar = dir.join("auto.tar");
    let args = [
        "-t",
        "imgbuild-e2e/crypto-auto:1",
        "-o",
        tar.to_str().unwrap_or_default(),
    ];
    let r = build(&repo, &dir, &rel, &["auto"], &args)?;
    let lock =
        std::fs::read_to_string(dir.join("imgbuild.lock")).map_err(|e| fail(e.to_string()))?;
    assert!(lock.contains("name = \"libssl3\""), "{lock}");
    assert!(lock.contains("requested = [\"libssl3\"]"), "{lock}");
    assert!(!layer_of(&r, "packages").is_empty(), "{r}");
    let again = build(&repo, &dir, &rel, &["auto"], &args)?;
    assert_eq!(again["digest"], r["digest"]);
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
    let (status, body) = lab::run_and_get_path(&docker, "imgbuild-e2e/crypto-auto:1", "/crypto")?;
    assert!(status.contains("200"), "{status} {body}");
    // Said which package and why.
    let out = run(lab::imgbuild()
        .current_dir(&dir)
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .arg("build")
        .arg(&rel)
        .args(["--from", &repo.from(), "--apt-source", &repo.source()])
        .args(["--package", "auto", "--update-lock", "-o"])
        .arg(dir.join("again.tar")))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--package auto: libssl3 (crypto.so needs libcrypto.so.3)"),
        "{err}"
    );
    Ok(())
}

pub fn test_libssl3_makes_crypto_start() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "docker"]].concat())? {
        return Ok(());
    }
    let repo = repo()?;
    let rel = lab::crypto_release()?;
    let dir = lab::scratch_dir("apt-crypto");
    let tar = dir.join("crypto.tar");
    let r = build(
        &repo,
        &dir,
        &rel,
        &["libssl3"],
        &[
            "-t",
            "imgbuild-e2e/crypto:1",
            "-o",
            tar.to_str().unwrap_or_default(),
            "--sbom",
            dir.join("sbom.json").to_str().unwrap_or_default(),
        ],
    )?;
    let kinds: Vec<&str> = r["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "base", "base", "packages", "erts", "deps", "app", "release", "sbom"
        ]
    );
    // The lock pins what was resolved.
    let lock =
        std::fs::read_to_string(dir.join("imgbuild.lock")).map_err(|e| fail(e.to_string()))?;
    assert!(
        lock.contains("name = \"libssl3\"") && lock.contains("sha256 = "),
        "{lock}"
    );
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
    let (status, body) = lab::run_and_get_path(&docker, "imgbuild-e2e/crypto:1", "/crypto")?;
    assert!(status.contains("200"), "{status} {body}");
    // sha256("imgbuild"), computed by :crypto inside the container.
    let want = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"imgbuild"))
    };
    assert!(body.contains(&want), "{body}");
    // dpkg in the container sees the package at the locked version.
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "--entrypoint",
        "dpkg-query",
        "imgbuild-e2e/crypto:1",
        "-W",
        "-f",
        "${Package} ${Version} ${Status}\n",
        "libssl3",
    ]))?;
    let line = stdout(&out);
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"libssl3\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .unwrap_or("")
        .trim_matches('"')
        .to_string();
    assert_eq!(
        line.trim(),
        format!("libssl3 {version} install ok installed")
    );
    // The SBOM lists it (the minbase base has no libssl3 of its own).
    let sbom = std::fs::read_to_string(dir.join("sbom.json")).map_err(|e| fail(e.to_string()))?;
    assert!(
        sbom.contains(&format!(
            "pkg:deb/debian/libssl3@{}",
            version.replace('+', "%2B")
        )),
        "libssl3 missing from the SBOM"
    );
    Ok(())
}

pub fn test_ca_certificates_bundle() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "docker", "htpasswd"]].concat())? {
        return Ok(());
    }
    let repo = repo()?;
    let rel = lab::release()?;
    let dir = lab::scratch_dir("apt-ca");
    let tar = dir.join("ca.tar");
    build(
        &repo,
        &dir,
        &rel,
        &["imgbuild-test-ca"],
        &[
            "-t",
            "imgbuild-e2e/ca:1",
            "-o",
            tar.to_str().unwrap_or_default(),
        ],
    )?;
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        "imgbuild-e2e/ca:1",
        "/etc/ssl/certs/ca-certificates.crt",
    ]))?;
    let bundle = stdout(&out);
    let ca = std::fs::read_to_string(&repo.tls.ca_cert).map_err(|e| fail(e.to_string()))?;
    assert!(
        bundle.contains(ca.trim()),
        "the test CA is not in the bundle"
    );
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 100,
        "Debian's CAs are missing"
    );
    // A TLS server whose certificate the test CA signed is trusted from inside the container.
    let reg = servers::start_tls_basic_registry(&repo.tls, "u", "p")?;
    // Through the bundle, and through OpenSSL's hashed directory lookup as
    // update-ca-certificates would allow.
    for (flag, place) in [
        ("-CAfile", "/etc/ssl/certs/ca-certificates.crt"),
        ("-CApath", "/etc/ssl/certs"),
    ] {
        let out = run(docker.cmd().args([
            "run",
            "--rm",
            "--network=host",
            "--entrypoint",
            "openssl",
            "imgbuild-e2e/ca:1",
            "s_client",
            "-connect",
            &reg.host(),
            flag,
            place,
            "-verify_return_error",
            "-brief",
        ]))?;
        let said = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert!(said.contains("Verification: OK"), "{flag}: {said}");
    }
    Ok(())
}

pub fn test_lock_reproducible_and_offline() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let repo = repo()?;
    let rel = lab::crypto_release()?;
    let dir = lab::scratch_dir("apt-lock");
    let a = build(
        &repo,
        &dir,
        &rel,
        &["libssl3"],
        &["-o", dir.join("a.tar").to_str().unwrap_or_default()],
    )?;
    // Same lock, a dead source: nothing is fetched, the layer is the same.
    let b = {
        let out = run(lab::imgbuild()
            .current_dir(&dir)
            .env("IMGBUILD_CACHE", dir.join("cache"))
            .arg("build")
            .arg(&rel)
            .args([
                "--from",
                &repo.from(),
                "--apt-source",
                "http://127.0.0.1:9 stable main",
                "--package",
                "libssl3",
                "--json",
                "-o",
            ])
            .arg(dir.join("b.tar")))?;
        serde_json::from_slice::<Value>(&out.stdout).map_err(|e| fail(e.to_string()))?
    };
    assert_eq!(layer_of(&a, "packages"), layer_of(&b, "packages"));
    assert_eq!(a["digest"], b["digest"]);
    // An air-gapped site: the host in the lock is gone, the cache is cold, a mirror serves the
    // same files; the mirror given with --apt-source is used and the digest is the same.
    let lock =
        std::fs::read_to_string(dir.join("imgbuild.lock")).map_err(|e| fail(e.to_string()))?;
    std::fs::write(
        dir.join("imgbuild.lock"),
        lock.replace(&format!("127.0.0.1:{}", repo.port), "127.0.0.1:9"),
    )
    .map_err(|e| fail(e.to_string()))?;
    let mirror = broken_copy(&repo, "apt-mirror", "true")?;
    let out = run(lab::imgbuild()
        .current_dir(&dir)
        .env("IMGBUILD_CACHE", dir.join("cold-cache"))
        .arg("build")
        .arg(&rel)
        .args([
            "--from",
            &repo.from(),
            "--apt-source",
            &format!("http://127.0.0.1:{mirror} stable main"),
            "--package",
            "libssl3",
            "--json",
            "-o",
        ])
        .arg(dir.join("m.tar")))?;
    let m: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(m["digest"], a["digest"]);
    // A request the lock does not answer needs --update-lock.
    let out = lab::imgbuild()
        .current_dir(&dir)
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .arg("build")
        .arg(&rel)
        .args([
            "--from",
            &repo.from(),
            "--apt-source",
            &repo.source(),
            "--package",
            "openssl",
            "-o",
        ])
        .arg(dir.join("c.tar"))
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("--update-lock"),
        "{err}"
    );
    Ok(())
}

/// Build the crypto release with libssl3 from the repository served on `port`, in a fresh
/// cache under `dir`; returns the process output whatever it is.
fn libssl3_from(
    repo: &Repo,
    rel: &Path,
    port: u16,
    dir: &Path,
    out: &Path,
) -> Result<std::process::Output, Failed> {
    lab::imgbuild()
        .current_dir(dir)
        .env("IMGBUILD_CACHE", dir.join("cache"))
        .arg("build")
        .arg(rel)
        .args([
            "--from",
            &repo.from(),
            "--apt-source",
            &format!("http://127.0.0.1:{port} stable main"),
            "--package",
            "libssl3",
            "-o",
        ])
        .arg(out)
        .output()
        .map_err(|e| fail(e.to_string()))
}

/// A copy of the repository with `mutate` applied, served on its own port.
fn broken_copy(repo: &Repo, name: &str, mutate: &str) -> Result<u16, Failed> {
    let dir = lab::scratch_dir(name);
    run(Command::new("cp")
        .arg("-a")
        .arg(&repo.root)
        .arg(dir.join("root")))?;
    sh(mutate, &dir.join("root"))?;
    servers::start_static(&dir.join("root"))
}

pub fn test_tampering_is_refused() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let repo = repo()?;
    let rel = lab::crypto_release()?;
    let gnupg = repo.gnupg.display().to_string();
    let cases = [
        (
            "apt-tampered-deb",
            // Flip bytes inside the .deb after it was indexed.
            "f=$(ls pool/main/libssl3_*.deb); printf 'XXXX' | dd of=$f bs=1 seek=2000 conv=notrunc 2>/dev/null".to_string(),
            "does not match its digest",
        ),
        (
            "apt-tampered-packages",
            "printf '\\nPackage: evil\\nVersion: 1\\n' >> dists/stable/main/binary-amd64/Packages; gzip -9nkf dists/stable/main/binary-amd64/Packages".to_string(),
            "signed Release file",
        ),
        (
            "apt-unknown-key",
            format!("export GNUPGHOME=$(mktemp -d); gpg --batch --pinentry-mode loopback --passphrase '' --quick-gen-key 'someone else <x@invalid>' rsa3072 sign never; gpg --batch --yes --pinentry-mode loopback --passphrase '' --clearsign -o dists/stable/InRelease dists/stable/Release; : {gnupg}"),
            "signature check failed",
        ),
    ];
    for (name, mutate, want) in cases {
        let port = broken_copy(&repo, name, &mutate)?;
        let dir = lab::scratch_dir(&format!("{name}-build"));
        let out = dir.join("x.tar");
        let res = libssl3_from(&repo, &rel, port, &dir, &out)?;
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(
            res.status.code() == Some(1) && err.contains(want),
            "{name}: {err}"
        );
        assert!(!out.exists(), "{name}: output written");
    }
    Ok(())
}

/// A repository without InRelease: Release and its detached Release.gpg, as older or simpler
/// repositories publish. A good signature passes, one by an unknown key does not.
pub fn test_detached_release_signature() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let repo = repo()?;
    let rel = lab::crypto_release()?;
    let sign = |homedir: &str| {
        format!(
            "rm dists/stable/InRelease; GNUPGHOME={homedir} gpg --batch --yes --pinentry-mode loopback --passphrase '' --armor --detach-sign -o dists/stable/Release.gpg dists/stable/Release"
        )
    };
    let good = broken_copy(
        &repo,
        "apt-detached",
        &sign(&repo.gnupg.display().to_string()),
    )?;
    let stranger = format!(
        "export G=$(mktemp -d); GNUPGHOME=$G gpg --batch --pinentry-mode loopback --passphrase '' --quick-gen-key 'someone else <x@invalid>' rsa3072 sign never; {}",
        sign("$G")
    );
    let bad = broken_copy(&repo, "apt-detached-unknown", &stranger)?;
    for (port, ok) in [(good, true), (bad, false)] {
        let dir = lab::scratch_dir(&format!("apt-detached-{port}"));
        let res = libssl3_from(&repo, &rel, port, &dir, &dir.join("x.tar"))?;
        let err = String::from_utf8_lossy(&res.stderr);
        if ok {
            assert!(res.status.success(), "{err}");
        } else {
            assert!(
                res.status.code() == Some(1) && err.contains("Release.gpg: signature check failed"),
                "{err}"
            );
        }
    }
    Ok(())
}
