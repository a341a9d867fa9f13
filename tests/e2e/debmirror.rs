//! `--from deb:SUITE` at an air-gapped site: its own Debian mirror, signed by its own key, on
//! loopback. The mirror holds exactly the `.deb` files a build of the crypto release against
//! Debian's archive pinned (fetched by the URLs of that build's `imgbuild.lock`), laid out as
//! Debian's mirrors are (`debian/` for `bookworm` and `bookworm-updates`, `debian-security/`
//! for `bookworm-security`), indexed by dpkg-scanpackages (`Packages`, `.gz`, `.xz`) and
//! apt-ftparchive, its `InRelease` clear-signed by a gpg key made here. Served by
//! `python3 -m http.server`, which the test stops to prove a warm cache and the lock build
//! offline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;
use sha2::Digest as _;

use crate::lab::{self, TestResult, fail, run, stderr, stdout};
use crate::servers;

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &[
    "mix",
    "curl",
    "dpkg-scanpackages",
    "apt-ftparchive",
    "gpg",
    "gzip",
    "xz",
    "python3",
];

const IMAGE: &str = "imgbuild-e2e/debmirror:1";

/// One package of a lock.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pkg {
    name: String,
    version: String,
    sha256: String,
    url: String,
    filename: String,
}

/// The mirror on disk (not served: each test serves what it needs).
#[derive(Clone, Debug)]
struct Mirror {
    /// Holds `debian/` and `debian-security/`.
    root: PathBuf,
    /// The signing key's public part, binary and armored.
    key: PathBuf,
    key_armored: PathBuf,
    /// What the build against Debian's archive pinned, and so what the mirror holds.
    packages: Vec<Pkg>,
    /// Those of them that came from the security archive.
    security: Vec<String>,
}

fn io(e: impl std::fmt::Display) -> Failed {
    fail(e.to_string())
}

/// The lock's packages (a one-architecture lock).
fn lock_packages(dir: &Path) -> Result<Vec<Pkg>, Failed> {
    let text = std::fs::read_to_string(dir.join("imgbuild.lock"))
        .map_err(|e| fail(format!("no imgbuild.lock in {}: {e}", dir.display())))?;
    let v: toml::Value = toml::from_str(&text).map_err(io)?;
    let s = |p: &toml::Value, k: &str| p[k].as_str().unwrap_or_default().to_string();
    let mut out: Vec<Pkg> = v
        .get("package")
        .and_then(|p| p.as_array())
        .ok_or_else(|| fail(format!("no packages in imgbuild.lock:\n{text}")))?
        .iter()
        .map(|p| Pkg {
            name: s(p, "name"),
            version: s(p, "version"),
            sha256: s(p, "sha256"),
            url: s(p, "url"),
            filename: s(p, "filename"),
        })
        .collect();
    out.sort();
    Ok(out)
}

fn sha256_file(path: &Path) -> Result<String, Failed> {
    let bytes = std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

fn sh(script: &str, dir: &Path, gnupg: &Path) -> Result<String, Failed> {
    Ok(stdout(&run(Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .env("GNUPGHOME", gnupg))?))
}

/// Index one suite of an archive root (every `.deb` under `pool`, which may be absent: an
/// empty index) and clear-sign its Release with the key in `GNUPGHOME`.
fn index_suite(archive: &Path, suite: &str, pool: &str, gnupg: &Path) -> TestResult {
    let script = format!(
        r#"
d=dists/{suite}/main/binary-amd64
mkdir -p $d {pool}
dpkg-scanpackages --arch amd64 {pool} > $d/Packages 2>/dev/null
gzip -9nkf $d/Packages
xz -kf $d/Packages
apt-ftparchive -o APT::FTPArchive::Release::Origin=imgbuild-test -o APT::FTPArchive::Release::Label=imgbuild-test \
  -o APT::FTPArchive::Release::Suite={suite} -o APT::FTPArchive::Release::Codename={suite} \
  -o APT::FTPArchive::Release::Architectures=amd64 -o APT::FTPArchive::Release::Components=main \
  release dists/{suite} > Release.tmp
mv Release.tmp dists/{suite}/Release
gpg --batch --yes --pinentry-mode loopback --passphrase '' --clearsign -o dists/{suite}/InRelease dists/{suite}/Release
"#
    );
    sh(&script, archive, gnupg).map(|_| ())
}

fn mirror() -> Result<Mirror, Failed> {
    static MIRROR: OnceLock<Result<Mirror, String>> = OnceLock::new();
    MIRROR
        .get_or_init(|| {
            make_mirror().map_err(|e| e.message().unwrap_or("mirror failed").to_string())
        })
        .clone()
        .map_err(|m| fail(format!("shared Debian mirror failed: {m}")))
}

fn make_mirror() -> Result<Mirror, Failed> {
    let started = Instant::now();
    let dir = lab::fixture_dir("debmirror-fixture");
    // What a build against Debian's archive pins: the package list of the mirror.
    let (main, security) = crate::debbase::mirrors()?;
    let rel = lab::crypto_release()?;
    run(lab::imgbuild()
        .current_dir(&dir)
        .arg("build")
        .arg(&rel)
        .args(["--from", "deb:bookworm", "--package", "auto"])
        .args(["--deb-mirror", &main, "--deb-security-mirror", &security])
        .arg("-o")
        .arg(dir.join("archive.tar")))?;
    let packages = lock_packages(&dir)?;
    // Exactly those .deb files, by the lock's URLs, kept between runs by their checksum.
    let debs = lab::workdir().join("debmirror-debs");
    std::fs::create_dir_all(&debs).map_err(io)?;
    let root = dir.join("root");
    let mut from_security = Vec::new();
    for p in &packages {
        let (archive, at_security) = if p.url.starts_with(&format!("{security}/")) {
            (root.join("debian-security"), true)
        } else if p.url.starts_with(&format!("{main}/")) {
            (root.join("debian"), false)
        } else {
            return Err(fail(format!("{p:?}: from neither {main} nor {security}")));
        };
        if at_security {
            from_security.push(p.name.clone());
        }
        let file = p.filename.rsplit('/').next().unwrap_or_default();
        let kept = debs.join(file);
        if !kept.is_file() || sha256_file(&kept)? != p.sha256 {
            run(Command::new("curl")
                .args(["-fsS", "--retry", "3", "-o"])
                .arg(&kept)
                .arg(&p.url))?;
        }
        if sha256_file(&kept)? != p.sha256 {
            return Err(fail(format!("{}: not the SHA256 the lock pins", p.url)));
        }
        let dest = archive.join(&p.filename);
        std::fs::create_dir_all(dest.parent().unwrap_or(&archive)).map_err(io)?;
        std::fs::copy(&kept, &dest).map_err(io)?;
    }
    // The site's own key.
    let gnupg = dir.join("gnupg");
    std::fs::create_dir_all(&gnupg).map_err(io)?;
    let _ = run(Command::new("chmod").arg("700").arg(&gnupg));
    run(Command::new("gpg")
        .env("GNUPGHOME", &gnupg)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args([
            "--quick-gen-key",
            "imgbuild test Debian mirror <mirror@imgbuild.invalid>",
            "rsa3072",
            "sign",
            "never",
        ]))?;
    // Debian's layout: bookworm and bookworm-updates (empty here) under debian/,
    // bookworm-security under debian-security/ (its pool is pool/updates/).
    index_suite(&root.join("debian"), "bookworm", "pool", &gnupg)?;
    index_suite(
        &root.join("debian"),
        "bookworm-updates",
        "pool-none",
        &gnupg,
    )?;
    index_suite(
        &root.join("debian-security"),
        "bookworm-security",
        "pool",
        &gnupg,
    )?;
    let key = dir.join("mirror-key.gpg");
    let binary = run(Command::new("gpg").env("GNUPGHOME", &gnupg).arg("--export"))?.stdout;
    std::fs::write(&key, binary).map_err(io)?;
    let key_armored = dir.join("mirror-key.asc");
    let armored = run(Command::new("gpg")
        .env("GNUPGHOME", &gnupg)
        .args(["--export", "--armor"]))?
    .stdout;
    std::fs::write(&key_armored, armored).map_err(io)?;
    eprintln!(
        "debmirror: mirror of {} packages ({} from the security archive: {from_security:?}) made in {:.1} s",
        packages.len(),
        from_security.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Mirror {
        root,
        key,
        key_armored,
        packages,
        security: from_security,
    })
}

/// `python3 -m http.server` serving `root` on a free loopback port: (port, pid).
fn serve(root: &Path, log: &Path) -> Result<(u16, u32), Failed> {
    for _ in 0..5 {
        let port = lab::free_port();
        let pid = lab::spawn(
            Command::new("python3")
                .args(["-m", "http.server", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--directory"])
                .arg(root),
            log,
        )?;
        let listening = lab::wait_for_port(port, "python3 -m http.server").is_ok();
        std::thread::sleep(std::time::Duration::from_millis(300));
        if listening && lab::alive(pid) {
            return Ok((port, pid));
        }
        stop(pid)?;
    }
    Err(fail(format!(
        "python3 -m http.server would not serve {} on a free port",
        root.display()
    )))
}

/// Stop the server `pid` (one this test started) and wait until it is gone.
fn stop(pid: u32) -> TestResult {
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while lab::alive(pid) {
        if Instant::now() > deadline {
            return Err(fail(format!("server {pid} did not stop")));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

/// `imgbuild build` of the crypto release in `dir` (where imgbuild.lock and imgbuild.toml
/// are) with its cache at `cache`; the output whatever it is.
fn build(
    dir: &Path,
    cache: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(Output, f64), Failed> {
    let rel = lab::crypto_release()?;
    let started = Instant::now();
    let out = lab::imgbuild()
        .current_dir(dir)
        .env("IMGBUILD_CACHE", cache)
        .envs(env.iter().copied())
        .arg("build")
        .arg(&rel)
        .args(args)
        .output()
        .map_err(io)?;
    Ok((out, started.elapsed().as_secs_f64()))
}

/// A build that must succeed (with `--json`): its digest.
fn digest_of(what: &str, built: (Output, f64)) -> Result<String, Failed> {
    let (out, secs) = built;
    if !out.status.success() {
        return Err(fail(format!(
            "{what}: exit {:?}\n{}",
            out.status.code(),
            stderr(&out)
        )));
    }
    eprintln!("debmirror: {what}: {secs:.1} s");
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("{what}: not JSON: {e}: {}", stdout(&out))))?;
    v["digest"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| fail(format!("{what}: no digest in {v}")))
}

/// The lock in `dir` pins what the archive build pinned, each from the local mirror:
/// `debian/` for the main archive's, `debian-security/` for the security archive's.
fn assert_lock_from_mirror(dir: &Path, mirror: &Mirror, url: &str) -> TestResult {
    let got = lock_packages(dir)?;
    let key = |p: &Pkg| (p.name.clone(), p.version.clone(), p.sha256.clone());
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        mirror.packages.iter().map(key).collect::<Vec<_>>(),
        "{}: not the archive build's packages",
        dir.display()
    );
    for p in &got {
        let root = if mirror.security.contains(&p.name) {
            format!("{url}-security/")
        } else {
            format!("{url}/")
        };
        assert_eq!(
            p.url,
            format!("{root}{}", p.filename),
            "{}: not from the local mirror",
            p.name
        );
    }
    Ok(())
}

/// Build from the site's mirror with `--deb-mirror` and `--deb-mirror-key`, checked; Docker
/// runs it through the launcher (no shell) and `:crypto` answers. The same image from
/// `IMGBUILD_DEB_MIRROR` (the security root derived from it) with an armored key, and from
/// imgbuild.toml's `deb-mirror`, `deb-security-mirror`, `deb-mirror-key`. Then with the mirror
/// stopped: the lock and the warm cache build the same image offline.
pub fn test_own_mirror_offline() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "docker"]].concat())? {
        return Ok(());
    }
    let mirror = mirror()?;
    let t = lab::scratch_dir("debmirror");
    let cache = t.join("cache");
    let (port, pid) = serve(&mirror.root, &t.join("http.log"))?;
    let url = format!("http://127.0.0.1:{port}/debian");
    let security = format!("{url}-security");
    let common = ["--package", "auto", "-t", IMAGE, "--json"];

    // Flags.
    let flags = t.join("flags");
    std::fs::create_dir_all(&flags).map_err(io)?;
    let key = mirror.key.display().to_string();
    let flag_args: Vec<&str> = [
        &["--from", "deb:bookworm", "--deb-mirror", &url][..],
        &["--deb-security-mirror", &security, "--deb-mirror-key", &key],
        &common,
        &["-o", "out.tar"],
    ]
    .concat();
    let digest = digest_of(
        "--deb-mirror (cold cache)",
        build(&flags, &cache, &flag_args, &[])?,
    )?;
    assert_lock_from_mirror(&flags, &mirror, &url)?;
    let log = std::fs::read_to_string(t.join("http.log")).unwrap_or_default();
    for p in &mirror.packages {
        let archive = if mirror.security.contains(&p.name) {
            "debian-security"
        } else {
            "debian"
        };
        let get = format!("GET /{archive}/{} ", p.filename);
        assert!(log.contains(&get), "no {get:?} in the mirror's log:\n{log}");
    }
    let docker = lab::docker()?;
    run(docker
        .cmd()
        .arg("load")
        .arg("-i")
        .arg(flags.join("out.tar")))?;
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        IMAGE,
        "eval",
        "IO.puts(:crypto.strong_rand_bytes(4) |> byte_size())",
    ]))?;
    assert_eq!(stdout(&out).trim(), "4", "{}", stderr(&out));
    // Started through the launcher: there is no shell to start it with.
    let sh = docker
        .cmd()
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            IMAGE,
            "-c",
            "true",
        ])
        .output()
        .map_err(io)?;
    let said = stderr(&sh);
    assert!(
        !sh.status.success() && said.contains("/bin/sh") && said.contains("no such file"),
        "the image has a /bin/sh: {said}"
    );

    // IMGBUILD_DEB_MIRROR: SUITE-security from URL-security; the key armored.
    let env = t.join("env");
    std::fs::create_dir_all(&env).map_err(io)?;
    let armored = mirror.key_armored.display().to_string();
    let env_args: Vec<&str> = [
        &["--from", "deb:bookworm", "--deb-mirror-key", &armored][..],
        &common,
        &["-o", "out.tar"],
    ]
    .concat();
    let via_env = digest_of(
        "IMGBUILD_DEB_MIRROR",
        build(&env, &cache, &env_args, &[("IMGBUILD_DEB_MIRROR", &url)])?,
    )?;
    assert_eq!(via_env, digest, "IMGBUILD_DEB_MIRROR gave another image");
    assert_lock_from_mirror(&env, &mirror, &url)?;

    // imgbuild.toml, its key path relative to the project directory.
    let file = t.join("toml");
    std::fs::create_dir_all(&file).map_err(io)?;
    std::fs::copy(&mirror.key, file.join("site-mirror.gpg")).map_err(io)?;
    std::fs::write(
        file.join("imgbuild.toml"),
        format!(
            "from = \"deb:bookworm\"\npackages = \"auto\"\ndeb-mirror = \"{url}\"\ndeb-security-mirror = \"{security}\"\ndeb-mirror-key = \"site-mirror.gpg\"\n"
        ),
    )
    .map_err(io)?;
    let via_file = digest_of(
        "imgbuild.toml deb-mirror",
        build(
            &file,
            &cache,
            &["-t", IMAGE, "--json", "-o", "out.tar"],
            &[],
        )?,
    )?;
    assert_eq!(via_file, digest, "imgbuild.toml gave another image");
    assert_lock_from_mirror(&file, &mirror, &url)?;

    // The mirror down: the lock and the warm cache are enough.
    stop(pid)?;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the mirror still answers"
    );
    let lock = std::fs::read(flags.join("imgbuild.lock")).map_err(io)?;
    let offline = digest_of(
        "mirror down, lock and warm cache",
        build(&flags, &cache, &flag_args, &[])?,
    )?;
    assert_eq!(offline, digest, "offline build gave another image");
    assert_eq!(
        std::fs::read(flags.join("imgbuild.lock")).map_err(io)?,
        lock,
        "the offline build rewrote the lock"
    );
    Ok(())
}

/// A copy of the mirror with `mutate` (a shell script run in its root) applied, served on its
/// own port.
fn broken_copy(mirror: &Mirror, name: &str, mutate: &str) -> Result<(u16, PathBuf), Failed> {
    let dir = lab::scratch_dir(name);
    run(Command::new("cp")
        .arg("-a")
        .arg(&mirror.root)
        .arg(dir.join("root")))?;
    sh(mutate, &dir.join("root"), &dir)?;
    Ok((servers::start_static(&dir.join("root"))?, dir))
}

/// A build from a copy of the mirror that must fail: exit status 1, the error said once on
/// stderr with every `want` in it, no image and no lock written.
fn refused(
    mirror: &Mirror,
    name: &str,
    mutate: &str,
    key: Option<&Path>,
    want: &[&str],
) -> TestResult {
    let (port, dir) = broken_copy(mirror, name, mutate)?;
    let url = format!("http://127.0.0.1:{port}/debian");
    let k = key.map(|k| k.display().to_string());
    let mut args = vec!["--from", "deb:bookworm", "--package", "auto"];
    args.extend(["--deb-mirror", &url, "-o", "out.tar"]);
    if let Some(k) = &k {
        args.extend(["--deb-mirror-key", k]);
    }
    let (out, secs) = build(&dir, &dir.join("cache"), &args, &[])?;
    let err = stderr(&out);
    eprintln!("debmirror: {name}: refused in {secs:.1} s:\n{err}");
    assert_eq!(out.status.code(), Some(1), "{name}: {err}");
    for w in want {
        assert!(err.contains(w), "{name}: {w:?} not in:\n{err}");
    }
    assert_eq!(
        err.matches("error:").count(),
        1,
        "{name}: one error:\n{err}"
    );
    assert!(
        !err.contains("base image"),
        "{name}: a deb: base has none:\n{err}"
    );
    assert!(!dir.join("out.tar").exists(), "{name}: output written");
    assert!(!dir.join("imgbuild.lock").exists(), "{name}: lock written");
    Ok(())
}

/// What the site's mirror must not get away with: its key not given, or another key given; a
/// `Packages` changed after signing; a `.deb` changed after indexing.
pub fn test_own_mirror_refusals() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let mirror = mirror()?;
    refused(
        &mirror,
        "debmirror-no-key",
        "true",
        None,
        &[
            "/debian/dists/bookworm/InRelease: signature check failed",
            "trusted keys",
            "--deb-mirror-key FILE",
            "deb-mirror-key in imgbuild.toml",
        ],
    )?;
    // A keyring, but not the mirror's: Debian's own bookworm key, as imgbuild carries it.
    let other = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/apt/keys/debian-archive-bookworm-stable.gpg");
    refused(
        &mirror,
        "debmirror-wrong-key",
        "true",
        Some(&other),
        &[
            "/debian/dists/bookworm/InRelease: signature check failed",
            &format!("--deb-mirror-key {}", other.display()),
            "the public key the mirror signs its InRelease with",
        ],
    )?;
    // One byte of the main archive's Packages, compressed again as a mirror sync would.
    let packages = "debian/dists/bookworm/main/binary-amd64/Packages";
    refused(
        &mirror,
        "debmirror-tampered-packages",
        &format!("sed -i '1s/^P/p/' {packages}; gzip -9nkf {packages}; xz -kf --force {packages}"),
        Some(&mirror.key),
        &[&format!("{packages}.xz"), "signed Release"],
    )?;
    let ssl = mirror
        .packages
        .iter()
        .find(|p| p.name == "libssl3")
        .ok_or_else(|| fail("no libssl3 in the mirror"))?;
    let archive = if mirror.security.contains(&ssl.name) {
        "debian-security"
    } else {
        "debian"
    };
    refused(
        &mirror,
        "debmirror-tampered-deb",
        &format!(
            "printf 'X' | dd of='{archive}/{}' bs=1 seek=4000 conv=notrunc 2>/dev/null",
            ssl.filename
        ),
        Some(&mirror.key),
        &[
            &format!("package libssl3 {}", ssl.version),
            "SHA256",
            &format!("sha256:{}", ssl.sha256),
        ],
    )
}
