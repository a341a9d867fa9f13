//! A standard Phoenix project's first day, on real Debian bases: the runner stage of each
//! Phoenix version's generated Dockerfile (`mix phx.gen.release --docker`) is read by
//! `imgbuild init`, and its packages, as init carries them over into imgbuild.toml, are
//! installed from the suite's own archive (signed with Debian's keys, which the base holds)
//! onto minbase roots made by debootstrap: merged-/usr bookworm and trixie (as Docker's
//! official images are), a bookworm without merged-/usr, and bullseye without it (as Docker's
//! official bullseye images are). The image must pass the start-up check, and Docker and
//! podman must serve from it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::lab::{self, TestResult, fail, run, stdout};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &[
    "umoci",
    "debootstrap",
    "mix",
    "dockerd",
    "docker",
    "podman",
    "runc",
];

/// The shape of each Phoenix version's generated Dockerfile: builder steps and the runner
/// stage's packages, written here from the generator's templates (1.6: `libncurses5` and no
/// `ca-certificates`; 1.7 adds `ca-certificates`; 1.8 moves to `libncurses6`, installs with
/// `--no-install-recommends`, and runs `assets.setup` after `deps.compile`).
fn dockerfile(phoenix: &str) -> String {
    let (debian, packages, install) = match phoenix {
        "1.6" => (
            "bullseye-20210902-slim",
            "libstdc++6 openssl libncurses5 locales",
            "apt-get install -y",
        ),
        "1.7" => (
            "bookworm-20240513-slim",
            "libstdc++6 openssl libncurses5 locales ca-certificates",
            "apt-get install -y",
        ),
        _ => (
            "bookworm-20250428-slim",
            "libstdc++6 openssl libncurses6 locales ca-certificates",
            "apt-get install -y --no-install-recommends",
        ),
    };
    let assets = if phoenix == "1.8" {
        "RUN mix assets.setup\n\nCOPY priv priv\nCOPY lib lib\nRUN mix compile\nCOPY assets assets\nRUN mix assets.deploy\n"
    } else {
        "COPY priv priv\nCOPY lib lib\nCOPY assets assets\nRUN mix assets.deploy\nRUN mix compile\n"
    };
    format!(
        r#"ARG ELIXIR_VERSION=1.14.5
ARG OTP_VERSION=25.3.2
ARG DEBIAN_VERSION={debian}

ARG BUILDER_IMAGE="hexpm/elixir:${{ELIXIR_VERSION}}-erlang-${{OTP_VERSION}}-debian-${{DEBIAN_VERSION}}"
ARG RUNNER_IMAGE="debian:${{DEBIAN_VERSION}}"

FROM ${{BUILDER_IMAGE}} as builder

RUN apt-get update -y && apt-get install -y build-essential git \
    && apt-get clean && rm -f /var/lib/apt/lists/*_*

WORKDIR /app

RUN mix local.hex --force && \
    mix local.rebar --force

ENV MIX_ENV="prod"

COPY mix.exs mix.lock ./
RUN mix deps.get --only $MIX_ENV
RUN mkdir config

COPY config/config.exs config/${{MIX_ENV}}.exs config/
RUN mix deps.compile

{assets}
COPY config/runtime.exs config/

COPY rel rel
RUN mix release

FROM ${{RUNNER_IMAGE}}

RUN apt-get update -y && \
  {install} {packages} \
  && apt-get clean && rm -f /var/lib/apt/lists/*_*

# Set the locale
RUN sed -i '/en_US.UTF-8/s/^# //g' /etc/locale.gen && locale-gen

ENV LANG en_US.UTF-8
ENV LANGUAGE en_US:en
ENV LC_ALL en_US.UTF-8

WORKDIR "/app"
RUN chown nobody /app

ENV MIX_ENV="prod"

COPY --from=builder --chown=nobody:root /app/_build/${{MIX_ENV}}/rel/hello ./

USER nobody

CMD ["/app/bin/server"]
"#
    )
}

/// A project directory holding the sample project's mix.exs and `phoenix`'s Dockerfile, with
/// imgbuild.toml written by `imgbuild init`. Returns the directory and the packages init
/// carried over.
fn project(dir: &Path, phoenix: &str) -> Result<(PathBuf, Vec<String>), Failed> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let mix = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/hello/mix.exs");
    std::fs::copy(&mix, dir.join("mix.exs")).map_err(|e| fail(e.to_string()))?;
    std::fs::write(dir.join("Dockerfile"), dockerfile(phoenix)).map_err(|e| fail(e.to_string()))?;
    run(lab::imgbuild().arg("init").current_dir(dir))?;
    let text =
        std::fs::read_to_string(dir.join("imgbuild.toml")).map_err(|e| fail(e.to_string()))?;
    let file: toml::Table = toml::from_str(&text).map_err(|e| fail(format!("{e}: {text}")))?;
    let packages: Vec<String> = file
        .get("packages")
        .and_then(|p| p.as_array())
        .ok_or_else(|| fail(format!("init wrote no package list:\n{text}")))?
        .iter()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    Ok((dir.to_path_buf(), packages))
}

/// What Phoenix's runner stage installs, less `locales` (init leaves it out: the image has
/// LANG=C.UTF-8, which needs none).
fn carried_over(phoenix: &str) -> Vec<&'static str> {
    match phoenix {
        "1.6" => vec!["libstdc++6", "openssl", "libncurses5"],
        "1.7" => vec!["libstdc++6", "openssl", "libncurses5", "ca-certificates"],
        _ => vec!["libstdc++6", "openssl", "libncurses6", "ca-certificates"],
    }
}

/// `imgbuild build` in the project directory onto `base`, to a tarball: the report, or the
/// failed run's stderr.
fn build(
    project: &Path,
    base: &Path,
    suite: &str,
    tag: &str,
) -> Result<Result<Value, String>, Failed> {
    let tar = project.join("image.tar");
    let out = lab::imgbuild()
        .arg("build")
        .arg(lab::crypto_release()?)
        .arg("--from")
        .arg(format!("oci:{}:{suite}", base.display()))
        .args(["-t", tag, "-o"])
        .arg(&tar)
        .arg("--json")
        .current_dir(project)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Ok(Err(lab::stderr(&out)));
    }
    lab::json_of(&out).map(Ok)
}

/// The entries of the image's packages layer, read from the tarball.
fn packages_layer(tar: &Path, report: &Value) -> Result<Vec<String>, Failed> {
    let digest = report["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["kind"] == "packages")
        .and_then(|l| l["digest"].as_str())
        .ok_or_else(|| fail(format!("no packages layer: {report}")))?;
    let hex = digest.trim_start_matches("sha256:");
    let out = run(Command::new("sh").arg("-ec").arg(format!(
        "tar -xOf {} blobs/sha256/{hex} | tar -tzf -",
        tar.display()
    )))?;
    Ok(stdout(&out)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect())
}

/// Load the tarball into Docker and podman, run it in each, and get `/crypto` (:crypto loads
/// libcrypto.so.3 from the installed openssl's libssl): both must answer with the digest. The
/// image stays loaded in Docker for a look inside.
fn serves(tar: &Path, tag: &str) -> TestResult {
    let want = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"imgbuild"))
    };
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(tar))?;
    let (status, body) = lab::run_and_get_path(&docker, tag, "/crypto")?;
    if !status.contains("200") || !body.contains(&want) {
        return Err(fail(format!("docker run of {tag}: {status} {body}")));
    }
    run(lab::podman().arg("load").arg("-i").arg(tar))?;
    let (status, body) = crate::podman_run_and_get_path(&format!("docker.io/{tag}"), "/crypto")?;
    if !status.contains("200") || !body.contains(&want) {
        return Err(fail(format!("podman run of {tag}: {status} {body}")));
    }
    let _ = lab::podman()
        .args(["rmi", "-f", &format!("docker.io/{tag}")])
        .output();
    Ok(())
}

/// In the image, as root: `script` run by the base's shell; its output.
fn in_image(tag: &str, script: &str) -> Result<String, Failed> {
    let docker = lab::docker()?;
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "--user",
        "0",
        "--entrypoint",
        "/bin/sh",
        tag,
        "-ec",
        script,
    ]))?;
    Ok(stdout(&out))
}

/// Every Phoenix version's runner packages on one base.
fn phoenix_runners_on(suite: &str, merged_usr: bool) -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let base = lab::suite_layout(suite, merged_usr)?;
    let usr = if merged_usr { "merged" } else { "split" };
    for phoenix in ["1.6", "1.7", "1.8"] {
        let dir = lab::scratch_dir(&format!("runner-{suite}-{usr}-{phoenix}"));
        let (project, packages) = project(&dir, phoenix)?;
        assert_eq!(packages, carried_over(phoenix), "phoenix {phoenix}");
        let tag = format!(
            "imgbuild-e2e/runner-{suite}-{usr}:{}",
            phoenix.replace('.', "-")
        );
        let built = build(&project, &base, suite, &tag)?;
        if suite == "trixie" && packages.iter().any(|p| p == "libncurses5") {
            // trixie has no libncurses5 (Phoenix 1.8 moved to libncurses6 for that reason),
            // and the generator's Dockerfile on trixie fails the same way.
            let err = built
                .err()
                .ok_or_else(|| fail("libncurses5 installed on trixie?"))?;
            assert!(
                err.contains("libncurses5") && err.contains("libncurses6"),
                "the refusal names neither the package nor its successor:\n{err}"
            );
            continue;
        }
        let report =
            built.map_err(|e| fail(format!("phoenix {phoenix} on {suite} ({usr}-/usr): {e}")))?;
        let tar = project.join("image.tar");
        let entries = packages_layer(&tar, &report)?;
        if merged_usr {
            // Nothing under the base's links: every path went through them.
            let through: Vec<&String> = entries
                .iter()
                .filter(|e| {
                    ["lib", "bin", "sbin", "lib64"]
                        .iter()
                        .any(|l| e.as_str() == *l || e.starts_with(&format!("{l}/")))
                })
                .collect();
            assert!(
                through.is_empty(),
                "{suite}: the packages layer replaces base links: {through:?}"
            );
        }
        // bookworm's libtinfo5 and libncurses5 ship under /lib: on a split-/usr root they stay.
        if suite == "bookworm" && phoenix != "1.8" {
            let at = if merged_usr { "usr/lib" } else { "lib" };
            let want = format!("{at}/x86_64-linux-gnu/libtinfo.so.5.9");
            assert!(entries.contains(&want), "no {want} in {entries:?}");
        }
        serves(&tar, &tag)?;
        // dpkg's view: every file the package lists is there, through the links, and /lib is
        // still what the base had.
        let ncurses_pkg = carried_over(phoenix)[2];
        let listed = in_image(
            &tag,
            &format!(
                "dpkg-query -W -f '${{Status}}\\n' {ncurses_pkg}; for f in $(dpkg -L {ncurses_pkg}); do [ -e \"$f\" ] || echo \"missing $f\"; done; if [ -L /lib ]; then echo lib-is-a-link; fi"
            ),
        )?;
        assert!(listed.starts_with("install ok installed"), "{listed}");
        assert!(!listed.contains("missing"), "{listed}");
        assert_eq!(listed.contains("lib-is-a-link"), merged_usr, "{listed}");
        let _ = lab::docker()?.cmd().args(["rmi", "-f", &tag]).output();
    }
    Ok(())
}

pub fn test_bookworm_merged_usr() -> TestResult {
    phoenix_runners_on("bookworm", true)
}

pub fn test_trixie_merged_usr() -> TestResult {
    phoenix_runners_on("trixie", true)
}

pub fn test_bookworm_split_usr() -> TestResult {
    phoenix_runners_on("bookworm", false)
}

/// Docker's official bullseye images are not merged-/usr. The packages install as shipped;
/// a release built on bookworm (OTP 25 here, glibc 2.36) cannot start on bullseye's glibc
/// 2.31, and the check says that, not something about links.
pub fn test_bullseye_split_usr() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let base = lab::suite_layout("bullseye", false)?;
    let dir = lab::scratch_dir("runner-bullseye-split");
    let (project, packages) = project(&dir, "1.6")?;
    assert_eq!(packages, carried_over("1.6"));
    let err = build(
        &project,
        &base,
        "bullseye",
        "imgbuild-e2e/runner-bullseye:1-6",
    )?
    .err()
    .ok_or_else(|| fail("a bookworm release passed the check on bullseye"))?;
    assert!(
        err.contains("GLIBC_2.3") && err.contains("glibc 2.31"),
        "{err}"
    );
    assert!(!err.contains("replaces"), "{err}");
    // With the check off, the packages layer is as the packages ship it.
    let tar = project.join("image.tar");
    let out = run(lab::imgbuild()
        .arg("build")
        .arg(lab::crypto_release()?)
        .arg("--from")
        .arg(format!("oci:{}:bullseye", base.display()))
        .args(["--no-check", "-t", "imgbuild-e2e/runner-bullseye:1-6", "-o"])
        .arg(&tar)
        .arg("--json")
        .current_dir(&project))?;
    let entries = packages_layer(&tar, &lab::json_of(&out)?)?;
    assert!(
        entries
            .iter()
            .any(|e| e == "lib/x86_64-linux-gnu/libtinfo.so.5.9"),
        "{entries:?}"
    );
    Ok(())
}

/// A package that ships under /bin (bookworm's busybox-static: `/bin/busybox`) on a
/// merged-/usr base: the file lands in /usr/bin, /bin stays the base's link, and it runs.
/// `locales` with the generator's LANG=en_US.UTF-8 is warned about.
pub fn test_package_under_bin() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let base = lab::suite_layout("bookworm", true)?;
    let dir = lab::scratch_dir("runner-bin-package");
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let tar = dir.join("image.tar");
    let tag = "imgbuild-e2e/runner-busybox:1";
    let out = run(lab::imgbuild()
        .arg("build")
        .arg(lab::crypto_release()?)
        .arg("--from")
        .arg(format!("oci:{}:bookworm", base.display()))
        .args([
            "--package",
            "busybox-static",
            "--package",
            "libssl3",
            "--package",
            "locales",
            "--env",
            "LANG=en_US.UTF-8",
            "-t",
            tag,
            "-o",
        ])
        .arg(&tar)
        .arg("--json")
        .current_dir(&dir))?;
    // locale-gen was not run: the locale Phoenix's Dockerfile sets is not there, and it says so.
    let said = lab::stderr(&out);
    assert!(
        said.contains("locale-gen")
            && said.contains("LANG=en_US.UTF-8")
            && said.contains("LANG=C.UTF-8"),
        "{said}"
    );
    let entries = packages_layer(&tar, &lab::json_of(&out)?)?;
    assert!(
        entries.iter().any(|e| e == "usr/bin/busybox"),
        "{entries:?}"
    );
    assert!(
        !entries.iter().any(|e| e == "bin" || e.starts_with("bin/")),
        "{entries:?}"
    );
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
    let said = in_image(
        tag,
        "readlink /bin; /bin/busybox echo busybox-runs; dpkg -S /bin/busybox",
    )?;
    assert!(
        said.contains("usr/bin") && said.contains("busybox-runs"),
        "{said}"
    );
    assert!(said.contains("busybox-static: /bin/busybox"), "{said}");
    let (status, _) = lab::run_and_get_path(&docker, tag, "/crypto")?;
    assert!(status.contains("200"), "{status}");
    Ok(())
}
