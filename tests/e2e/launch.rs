//! The shell-less start: imgbuild's launcher in place of `bin/NAME`. On the host, the launcher
//! and the release's own scripts (Elixir's, as `mix release` wrote them) are run side by side
//! with a recording `erlexec` for every command and the environments that change what the
//! scripts do; in Docker, the same release in a shell image and a shell-less one reports the same
//! `:init.get_arguments()`, `RELEASE_*` environment, node name and working directory, serves,
//! and evaluates.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::Failed;

use crate::lab::{self, TestResult, fail, run, stderr, stdout};

pub const TOOLS: &[&str] = &["umoci", "debootstrap", "mix", "tar", "script"];

/// Every file path of every layer of the image in an OCI layout, and the content of `want`
/// as the top-most layer holding it has it.
fn layout_files(layout: &Path, want: &str) -> Result<(Vec<String>, Option<Vec<u8>>), Failed> {
    let json = |p: PathBuf| -> Result<serde_json::Value, Failed> {
        Ok(serde_json::from_slice(&std::fs::read(&p)?)?)
    };
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = json(layout.join("index.json"))?;
    let manifest = json(blob(
        index["manifests"][0]["digest"]
            .as_str()
            .ok_or_else(|| fail("index without a manifest"))?,
    ))?;
    let mut paths = Vec::new();
    let mut found = None;
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let d = layer["digest"].as_str().unwrap_or_default();
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(blob(d))?);
        let mut archive = tar::Archive::new(gz);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            if path == want {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                found = Some(bytes);
            }
            paths.push(path);
        }
    }
    Ok((paths, found))
}

/// The bookworm minbase with its shells deleted: a base as distroless ones are.
fn noshell_layout() -> Result<PathBuf, Failed> {
    let dir = lab::workdir();
    let tar = dir.join("bookworm-noshell.tar");
    if !tar.is_file() {
        let tmp = dir.join("bookworm-noshell.tmp");
        std::fs::copy(lab::minbase_rootfs_tar()?, &tmp)?;
        run(Command::new("tar")
            .arg("--delete")
            .arg("-f")
            .arg(&tmp)
            .args([
                "./usr/bin/bash",
                "./usr/bin/dash",
                "./usr/bin/rbash",
                "./usr/bin/sh",
            ]))?;
        std::fs::rename(&tmp, &tar)?;
    }
    lab::layout_of_arch(&tar, &dir.join("noshell-layout"), "noshell", "amd64")
}

fn write_exec(path: &Path, text: &str) -> Result<(), Failed> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Random and time-dependent parts (rem-XXXX-, the runtime config copy's name) made equal.
fn normalized(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let mut s = String::new();
    for line in text.lines() {
        let mut l = line.to_string();
        for pre in ["rem-", "rpc-"] {
            if let Some(i) = l.find(pre)
                && l.len() >= i + pre.len() + 5
                && l.as_bytes()[i + pre.len() + 4] == b'-'
            {
                l.replace_range(i + pre.len()..i + pre.len() + 4, "RAND");
            }
        }
        if let Some(i) = l.find("-0.1.0-") {
            // NAME-VSN-%Y%m%d%H%M%S-RAND.runtime
            let end = (i + 7 + 14 + 5).min(l.len());
            l.replace_range(i + 7..end, "DATE-RAND");
        }
        s.push_str(&l);
        s.push('\n');
    }
    s
}

/// A command line and the environment it runs in.
type Run<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

/// The launcher against the release's own scripts, for every command and the environments
/// that change what they do; each run records erlexec's argv and the environment it got.
pub fn test_scripts_and_launcher_agree() -> TestResult {
    let dir = lab::scratch_dir("launch-agree");
    let app = dir.join("app");
    run(Command::new("cp").arg("-a").arg(lab::release()?).arg(&app))?;
    let env_sh = app.join("releases/0.1.0/env.sh");
    let mut text = std::fs::read_to_string(&env_sh)?;
    text.push_str("export HELLO_FROM_ENV_SH=\"$RELEASE_NAME-$RELEASE_COMMAND\"\nRELEASE_TMP='/tmp/launch-agree-tmp'\n");
    std::fs::write(&env_sh, text)?;
    // The launcher, built for a release installed where this copy is.
    let layout = dir.join("layout");
    let out = run(lab::imgbuild()
        .arg("build")
        .arg(&app)
        .arg("--from")
        .arg(format!("oci:{}:bookworm", lab::base_layout()?.display()))
        .args(["--launcher", "always", "--workdir"])
        .arg(&app)
        .arg("--oci-layout")
        .arg(&layout))?;
    let err = stderr(&out);
    assert!(err.contains("imgbuild's launcher"), "{err}");
    let rel = app.to_string_lossy().trim_start_matches('/').to_string();
    let (_, launcher) = layout_files(&layout, &format!("{rel}/bin/hello"))?;
    let launcher = launcher.ok_or_else(|| fail("no bin/hello in the image"))?;
    assert_eq!(&launcher[..4], b"\x7fELF", "bin/hello is the launcher");
    write_exec(&app.join("bin/hello.launch"), "")?;
    std::fs::write(app.join("bin/hello.launch"), &launcher)?;
    // erlexec and epmd record what they were given.
    let erts = std::fs::read_dir(&app)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("erts-"))
        })
        .ok_or_else(|| fail("no erts-*"))?;
    write_exec(
        &erts.join("bin/erlexec"),
        "#!/bin/sh\nfor a in \"$0\" \"$@\"; do printf 'arg %s\\n' \"$a\"; done\npwd\nenv | grep -E '^(RELEASE_|BINDIR|ROOTDIR|EMU|PROGNAME|PHX_|HELLO_|ELIXIR_)' | sort\n",
    )?;
    let epmd_log = dir.join("epmd.log");
    write_exec(
        &erts.join("bin/epmd"),
        &format!("#!/bin/sh\necho \"$@\" >> {}\n", epmd_log.display()),
    )?;
    let runs: &[Run] = &[
        (&["start"], &[]),
        (
            &["start"],
            &[
                ("RELEASE_DISTRIBUTION", "name"),
                ("RELEASE_NODE", "hello@10.1.2.3"),
            ],
        ),
        (&["start"], &[("RELEASE_DISTRIBUTION", "none")]),
        (
            &["start"],
            &[
                ("RELEASE_COOKIE", "c00kie"),
                ("RELEASE_MODE", "interactive"),
            ],
        ),
        (
            &["start"],
            &[(
                "ELIXIR_ERL_OPTIONS",
                "+S 2:2  -kernel inet_dist_listen_min 9000",
            )],
        ),
        (
            &["start"],
            &[
                ("RELEASE_SYS_CONFIG", "/nonexistent/sys"),
                ("ERL_ROOTDIR", "/opt/x"),
            ],
        ),
        (
            &["start"],
            &[
                ("RELEASE_VM_ARGS", "/etc/vm.args"),
                ("RELEASE_BOOT_SCRIPT", "other"),
            ],
        ),
        (&["start_iex"], &[]),
        (&["eval", "IO.puts(:ok)"], &[]),
        (
            &["eval", "Hello.Release.migrate()"],
            &[("RELEASE_NODE", "x")],
        ),
        (&["eval"], &[]),
        (&["remote"], &[]),
        (
            &["remote"],
            &[
                ("RELEASE_DISTRIBUTION", "name"),
                ("RELEASE_NODE", "hello@h"),
            ],
        ),
        (&["rpc", "IO.puts(1)"], &[]),
        (&["rpc"], &[]),
        (&["stop"], &[]),
        (&["restart"], &[]),
        (&["pid"], &[]),
        (&["version"], &[]),
        (&["version"], &[("RELEASE_NAME", "other")]),
    ];
    let exec = |prog: &Path, args: &[&str], env: &[(&str, &str)]| {
        Command::new(prog)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().copied())
            .current_dir(&dir)
            .output()
    };
    for (args, env) in runs {
        let a = exec(&app.join("bin/hello"), args, env)?;
        let b = exec(&app.join("bin/hello.launch"), args, env)?;
        let (sa, sb) = (normalized(&a.stdout), normalized(&b.stdout));
        assert_eq!(sa, sb, "{args:?} {env:?}: stdout differs");
        assert_eq!(a.status.code(), b.status.code(), "{args:?} {env:?}: status");
        // grep's complaint about a missing sys.config is the shell's own, not the start's.
        if !a.stderr.is_empty() && !a.stderr.starts_with(b"grep: ") {
            assert_eq!(
                normalized(&a.stderr),
                normalized(&b.stderr),
                "{args:?} {env:?}: stderr"
            );
        }
        if args == &["start"] && env.is_empty() {
            assert!(sa.contains("arg -sname\narg hello\n"), "{sa}");
        }
    }
    // The server command is Phoenix's bin/server: PHX_SERVER=true, in bin/, then start; and
    // with no command the launcher runs it.
    let a = exec(&app.join("bin/server"), &[], &[])?;
    for args in [&["server"][..], &[]] {
        let b = exec(&app.join("bin/hello.launch"), args, &[])?;
        assert_eq!(
            normalized(&a.stdout),
            normalized(&b.stdout),
            "server {args:?}"
        );
    }
    // A terminal adds -elixir ansi_enabled true in both.
    let tty = |prog: &Path| {
        Command::new("script")
            .args(["-qec"])
            .arg(format!("{} start", prog.display()))
            .arg("/dev/null")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
    };
    let (a, b) = (
        tty(&app.join("bin/hello"))?,
        tty(&app.join("bin/hello.launch"))?,
    );
    assert!(stdout(&a).contains("ansi_enabled"), "{}", stdout(&a));
    assert_eq!(
        normalized(&a.stdout),
        normalized(&b.stdout),
        "on a terminal"
    );
    // The launcher started epmd for the distributed runs (the scripts leave that to erlexec).
    let epmd = std::fs::read_to_string(&epmd_log).unwrap_or_default();
    assert!(
        epmd.lines().count() >= 3 && epmd.lines().all(|l| l == "-daemon"),
        "{epmd}"
    );
    // A runtime configuration is copied to RELEASE_TMP first, as the scripts do.
    let sys = app.join("releases/0.1.0/sys.config");
    let t = std::fs::read_to_string(&sys)?.replace("RUNTIME_CONFIG=false", "RUNTIME_CONFIG=true");
    std::fs::write(&sys, t)?;
    let _ = std::fs::remove_dir_all("/tmp/launch-agree-tmp");
    let a = exec(&app.join("bin/hello"), &["start"], &[])?;
    let b = exec(&app.join("bin/hello.launch"), &["start"], &[])?;
    assert_eq!(
        normalized(&a.stdout),
        normalized(&b.stdout),
        "runtime config"
    );
    let copies = std::fs::read_dir("/tmp/launch-agree-tmp")?.count();
    assert_eq!(copies, 2, "one copy by each");
    let _ = std::fs::remove_dir_all("/tmp/launch-agree-tmp");
    Ok(())
}

/// A release that loads :crypto on a base without a shell: the launcher is chosen, no layer
/// has a shell, the image serves in Docker and evaluates; the same release on the shell base
/// starts with the same arguments and environment; an env.sh that needs a shell is refused.
pub fn test_shellless_image_in_docker() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "docker"]].concat())? {
        return Ok(());
    }
    let dir = lab::scratch_dir("launch-docker");
    let rel = lab::crypto_release()?;
    let noshell = format!("oci:{}:noshell", noshell_layout()?.display());
    let shell = format!("oci:{}:bookworm", lab::base_layout()?.display());
    let docker = lab::docker()?;
    let mut images = Vec::new();
    for (name, from) in [("shell", &shell), ("noshell", &noshell)] {
        let tar = dir.join(format!("{name}.tar"));
        let layout = dir.join(format!("{name}-layout"));
        let tag = format!("imgbuild-e2e/launch-{name}:1");
        let out = run(lab::imgbuild()
            .arg("build")
            .arg(&rel)
            .args(["--from", from, "--package", "libssl3", "-t", &tag, "-o"])
            .arg(&tar)
            .arg("--oci-layout")
            .arg(&layout))?;
        let err = stderr(&out);
        let (paths, launcher) = layout_files(&layout, "app/bin/hello")?;
        let launcher = launcher.ok_or_else(|| fail("no app/bin/hello"))?;
        let (_, sbom) = layout_files(&layout, "var/lib/db/sbom/hello-0.1.0.spdx.json")?;
        let sbom: serde_json::Value =
            serde_json::from_slice(&sbom.ok_or_else(|| fail("no SBOM in the image"))?)?;
        let listed = sbom["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "imgbuild-launcher");
        if name == "noshell" {
            // The SBOM names the launcher by the bytes that are in the image.
            let sum = {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(&launcher))
            };
            let p = listed.ok_or_else(|| fail("the SBOM does not list the launcher"))?;
            assert_eq!(p["checksums"][0]["checksumValue"], sum.as_str(), "{p}");
            assert!(err.contains("the base has no /bin/sh"), "{err}");
            assert!(err.contains("bin/server is a script for /bin/sh"), "{err}");
            assert!(launcher.starts_with(b"\x7fELF"));
            for sh in ["usr/bin/sh", "usr/bin/dash", "usr/bin/bash", "bin/sh"] {
                assert!(!paths.iter().any(|p| p == sh), "{sh} is in a layer");
            }
        } else {
            assert!(listed.is_none(), "a shell image lists the launcher");
            assert!(!err.contains("launcher"), "{err}");
            assert!(launcher.starts_with(b"#!/bin/sh"));
        }
        run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
        images.push(tag);
    }
    let dump = |image: &str| -> Result<String, Failed> {
        let out = run(docker.cmd().args([
            "run",
            "--rm",
            "--network=host",
            "-e",
            "HELLO_DUMP_START=1",
            image,
        ]))?;
        let s = stdout(&out);
        assert!(
            s.contains("ARGS ") && s.contains("ENV "),
            "{s}{}",
            stderr(&out)
        );
        Ok(s)
    };
    let (a, b) = (dump(&images[0])?, dump(&images[1])?);
    assert_eq!(a, b, "the shell image and the shell-less one start alike");
    assert!(
        a.contains("sname") && a.contains("NODE \"hello\"") && a.contains("CWD /app/bin"),
        "{a}"
    );
    assert!(a.contains("{\"PHX_SERVER\", \"true\"}"), "{a}");
    // config/runtime.exs ran at boot in both (Config.Reader, as Phoenix releases have it).
    assert!(a.contains("RUNTIME \"from-runtime-exs\""), "{a}");
    // It serves, evaluates (with :crypto's NIF) and tells its version.
    let (status, body) = lab::run_and_get(&docker, &images[1])?;
    assert!(status.contains("200"), "{status} {body}");
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        &images[1],
        "eval",
        "IO.puts(Base.encode16(:crypto.hash(:sha256, \"imgbuild\")))",
    ]))?;
    let hex = stdout(&out).trim().to_string();
    let want = {
        use sha2::Digest;
        hex::encode_upper(sha2::Sha256::digest(b"imgbuild"))
    };
    assert_eq!(hex, want);
    let out = run(docker.cmd().args(["run", "--rm", &images[1], "version"]))?;
    assert_eq!(stdout(&out).trim(), "hello 0.1.0");
    let o = docker
        .cmd()
        .args(["run", "--rm", &images[1], "eval"])
        .output()?;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("EVAL expects an expression"),
        "{}",
        stderr(&o)
    );

    // An env.sh that needs a shell: refused by file and line, nothing written.
    let bad = dir.join("bad-rel");
    run(Command::new("cp").arg("-a").arg(&rel).arg(&bad))?;
    let env_sh = bad.join("releases/0.1.0/env.sh");
    let mut text = std::fs::read_to_string(&env_sh)?;
    let line = text.lines().count() + 1;
    text.push_str("export RELEASE_NODE=hello@$(hostname -i)\n");
    std::fs::write(&env_sh, text)?;
    let out_tar = dir.join("bad.tar");
    let o = lab::imgbuild()
        .arg("build")
        .arg(&bad)
        .args(["--from", &noshell, "--package", "libssl3", "-o"])
        .arg(&out_tar)
        .output()?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("env.sh:{line}")) && err.contains("hostname -i"),
        "{err}"
    );
    assert!(
        err.contains("runtime.exs") && err.contains("--env"),
        "{err}"
    );
    assert!(!out_tar.exists(), "no partial output");
    Ok(())
}

/// The committed launcher binaries are what `scripts/build-launcher` makes of launcher.c.
pub fn test_launcher_binaries_match_source() -> TestResult {
    if !lab::require(&["gcc", "aarch64-linux-gnu-gcc"])? {
        return Ok(());
    }
    let dir = lab::scratch_dir("launch-rebuild");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(Command::new("bash")
        .arg(root.join("scripts/build-launcher"))
        .env("OUT_DIR", &dir))?;
    for arch in ["x86_64", "aarch64"] {
        let built = std::fs::read(dir.join(format!("launcher-{arch}")))?;
        let committed = std::fs::read(root.join(format!("src/launch/bin/launcher-{arch}")))?;
        assert!(
            built == committed,
            "src/launch/bin/launcher-{arch} is not what launcher.c builds: run scripts/build-launcher and commit"
        );
    }
    Ok(())
}

/// `deb:bookworm` and `deb:trixie` images of the crypto release in podman: they serve, and
/// evaluate with :crypto, through the launcher.
pub fn test_deb_images_in_podman() -> TestResult {
    if !lab::require(&[TOOLS, &["podman", "runc"]].concat())? {
        return Ok(());
    }
    let dir = lab::scratch_dir("launch-podman");
    let rel = lab::crypto_release()?;
    let (main, security) = crate::debbase::mirrors()?;
    for suite in ["bookworm", "trixie"] {
        let tar = dir.join(format!("{suite}.tar"));
        let tag = format!("imgbuild-e2e/deb-{suite}:1");
        run(lab::imgbuild()
            .current_dir(&dir)
            .arg("build")
            .arg(&rel)
            .args(["--from", &format!("deb:{suite}"), "--package", "auto"])
            .args(["--deb-mirror", &main, "--deb-security-mirror", &security])
            .args(["-t", &tag, "-o"])
            .arg(&tar))?;
        let _ = std::fs::remove_file(dir.join("imgbuild.lock"));
        run(lab::podman().arg("load").arg("-i").arg(&tar))?;
        let image = format!("docker.io/{tag}");
        let (status, body) = crate::podman_run_and_get(&image)?;
        assert!(status.contains("200"), "{suite}: {status} {body}");
        // As podman_run_and_get: this machine's podman cannot raise the container's rlimits.
        let limits = [
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        let out = run(lab::podman().args(["run", "--rm"]).args(limits).args([
            &image,
            "eval",
            ":crypto.start(); IO.puts(byte_size(:crypto.strong_rand_bytes(16)))",
        ]))?;
        assert_eq!(stdout(&out).trim(), "16", "{suite}: {}", stderr(&out));
        let o = lab::podman()
            .args(["run", "--rm"])
            .args(limits)
            .args(["--entrypoint", "/bin/sh", &image, "-c", "true"])
            .output()?;
        assert!(!o.status.success(), "{suite}: the image has a shell");
    }
    Ok(())
}
