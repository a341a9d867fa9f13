//! Phoenix awareness, tested on what imgbuild reads (the tests cannot build Phoenix itself):
//! a release that carries a `phoenix` application and no `bin/server` gets `PHX_SERVER=true`
//! and serves; its `runtime.exs`'s required variables are named, never valued; with `--cmd`
//! of the user's there is a warning instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::lab::{self, TestResult, fail, run};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &["docker-registry", "skopeo", "umoci", "debootstrap", "mix"];

const RUNTIME_EXS: &str = r#"import Config

if config_env() == :prod do
  database_url =
    System.get_env("DATABASE_URL") ||
      raise "environment variable DATABASE_URL is missing."

  secret_key_base =
    System.get_env("SECRET_KEY_BASE") ||
      raise "environment variable SECRET_KEY_BASE is missing."

  host = System.get_env("PHX_HOST") || "example.com"
end
"#;

/// The sample release as a Phoenix one without `mix phx.gen.release`: a `phoenix` application
/// in `lib/` and the `.rel`, no `bin/server`, a `runtime.exs` that needs two secrets (read at
/// boot: the sample has a config/runtime.exs, so its sys.config names the Config.Reader).
fn phoenix_release(dir: &Path) -> Result<PathBuf, Failed> {
    let rel = dir.join("hello");
    run(Command::new("cp").arg("-a").arg(lab::release()?).arg(&rel))?;
    let ebin = rel.join("lib/phoenix-1.7.14/ebin");
    std::fs::create_dir_all(&ebin).map_err(|e| fail(e.to_string()))?;
    std::fs::write(
        ebin.join("phoenix.app"),
        "{application,phoenix,[{vsn,\"1.7.14\"},{modules,[]},{applications,[kernel,stdlib]}]}.\n",
    )
    .map_err(|e| fail(e.to_string()))?;
    let rel_file = rel.join("releases/0.1.0/hello.rel");
    let text = std::fs::read_to_string(&rel_file).map_err(|e| fail(e.to_string()))?;
    let text = text.replacen("[{kernel,", "[{phoenix,\"1.7.14\",load},{kernel,", 1);
    std::fs::write(&rel_file, text).map_err(|e| fail(e.to_string()))?;
    std::fs::write(rel.join("releases/0.1.0/runtime.exs"), RUNTIME_EXS)
        .map_err(|e| fail(e.to_string()))?;
    std::fs::remove_file(rel.join("bin/server")).map_err(|e| fail(e.to_string()))?;
    // `phx.gen.release`'s migration script (without its server overlay, as some projects do).
    std::fs::write(
        rel.join("bin/migrate"),
        "#!/bin/sh\nset -eu\ncd -P -- \"$(dirname -- \"$0\")\"\nexec ./hello eval Hello.Release.migrate\n",
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(rel)
}

fn config_env(tar: &Path) -> Result<Vec<String>, Failed> {
    let out = run(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("oci-archive:{}", tar.display()),
    ]))?;
    let config: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    Ok(config["config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect())
}

pub fn test_phoenix_without_bin_server_serves() -> TestResult {
    if !lab::require(&[TOOLS, &["dockerd", "docker"]].concat())? {
        return Ok(());
    }
    let base = lab::base_in_registry()?;
    let dir = lab::scratch_dir("phoenix");
    let rel = phoenix_release(&dir)?;
    let tar = dir.join("phx.tar");
    let out = run(lab::imgbuild()
        .arg("build")
        .arg(&rel)
        .args(["--from", &base, "-t", "imgbuild-e2e/phx:1", "--json", "-o"])
        .arg(&tar))?;
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    let notes = report["notes"].to_string();
    assert!(notes.contains("PHX_SERVER=true"), "{report}");
    assert!(
        notes.contains("DATABASE_URL, SECRET_KEY_BASE") && !notes.contains("PHX_HOST"),
        "{notes}"
    );
    let env = config_env(&tar)?;
    assert!(env.iter().any(|e| e == "PHX_SERVER=true"), "{env:?}");
    // No value of runtime.exs's variables went in.
    assert!(
        !env.iter()
            .any(|e| e.starts_with("DATABASE_URL") || e.starts_with("SECRET_KEY_BASE")),
        "{env:?}"
    );
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
    let secrets = [
        ("DATABASE_URL", "ecto://u:p@db/app"),
        ("SECRET_KEY_BASE", "x"),
    ];
    let (status, body) = lab::run_and_get_with(&docker, "imgbuild-e2e/phx:1", "/", &secrets)?;
    assert!(status.contains("200"), "{status} {body}");

    // inspect names the migration command, and --files sizes each own layer's contents.
    let out = run(lab::imgbuild()
        .arg("inspect")
        .arg(&tar)
        .args(["--files", "3", "--json"]))?;
    let found: Value = serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    assert_eq!(found["migrate"], "/app/bin/migrate", "{found}");
    let files = found["files"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = files.iter().filter_map(|f| f["kind"].as_str()).collect();
    assert_eq!(kinds, ["erts", "deps", "app", "release", "sbom"], "{found}");
    let erts = &files[0];
    let largest = erts["largest_files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(largest.len(), 3);
    assert!(
        largest[0]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/bin/beam.smp")),
        "{erts}"
    );
    let sizes: Vec<u64> = largest.iter().filter_map(|f| f["size"].as_u64()).collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    assert!(erts["bytes"].as_u64().unwrap_or(0) > sizes.iter().sum::<u64>());
    assert!(
        erts["largest_dirs"][0]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/app/erts-")),
        "{erts}"
    );
    let out = run(lab::imgbuild().arg("inspect").arg(&tar).arg("--files"))?;
    let text = lab::stdout(&out);
    assert!(text.contains("migrations: /app/bin/migrate"), "{text}");
    assert!(text.contains("beam.smp"), "{text}");

    // A command of the user's: a warning, and PHX_SERVER is left to them.
    let tar2 = dir.join("phx-cmd.tar");
    let out = run(lab::imgbuild()
        .arg("build")
        .arg(&rel)
        .args(["--from", &base, "--cmd", "/app/bin/hello start", "-o"])
        .arg(&tar2))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("its endpoint may not serve"), "{err}");
    let env = config_env(&tar2)?;
    assert!(!env.iter().any(|e| e.starts_with("PHX_SERVER")), "{env:?}");
    Ok(())
}

/// A Dockerfile in the shape `mix phx.gen.release --docker` writes, whose runner stage is the
/// test's base (in the test registry) and whose packages are in the test's apt repository.
fn phoenix_dockerfile(runner_repo: &str) -> String {
    format!(
        r#"ARG ELIXIR_VERSION=1.14.0
ARG OTP_VERSION=25.2.3
ARG DEBIAN_VERSION=bookworm-apt

ARG BUILDER_IMAGE="hexpm/elixir:${{ELIXIR_VERSION}}-erlang-${{OTP_VERSION}}-debian-${{DEBIAN_VERSION}}"
ARG RUNNER_IMAGE="{runner_repo}:${{DEBIAN_VERSION}}"

FROM ${{BUILDER_IMAGE}} as builder

# install build dependencies
RUN apt-get update -y && apt-get install -y build-essential git \
    && apt-get clean && rm -f /var/lib/apt/lists/*_*

WORKDIR /app
ENV MIX_ENV="prod"
COPY mix.exs mix.lock ./
RUN mix deps.get --only $MIX_ENV
COPY lib lib
RUN mix compile
COPY config/runtime.exs config/
RUN mix release

# start a new build stage so that the final image will only contain
# the compiled release and other runtime necessities
FROM ${{RUNNER_IMAGE}}

RUN apt-get update -y && \
  apt-get install -y libstdc++6 openssl locales ca-certificates \
  && apt-get clean && rm -f /var/lib/apt/lists/*_*

# Set the locale
RUN sed -i '/en_US.UTF-8/s/^# //g' /etc/locale.gen && locale-gen

ENV LANG en_US.UTF-8
ENV LANGUAGE en_US:en
ENV LC_ALL en_US.UTF-8

WORKDIR "/app"
RUN chown nobody /app

# set runner ENV
ENV MIX_ENV="prod"
ENV ECTO_IPV6 true

# Only copy the final release from the build stage
COPY --from=builder --chown=nobody:root /app/_build/${{MIX_ENV}}/rel/hello ./

USER nobody

CMD ["/app/bin/server"]
"#
    )
}

fn yaml(path: &Path) -> Result<yaml_rust2::Yaml, Failed> {
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let mut docs = yaml_rust2::YamlLoader::load_from_str(&text)
        .map_err(|e| fail(format!("{}: not valid YAML: {e}", path.display())))?;
    if docs.len() != 1 {
        return Err(fail(format!(
            "{}: {} YAML documents",
            path.display(),
            docs.len()
        )));
    }
    Ok(docs.remove(0))
}

/// `imgbuild init` in a Mix project with a phx.gen.release Dockerfile, then `imgbuild build`
/// with no flags: the image has the Dockerfile's packages (the crypto sample starts only with
/// libssl3), its environment without the locale, and runs. The workflows are valid YAML and
/// build on pull requests, push on the default branch.
pub fn test_init_then_build_runs() -> TestResult {
    if !lab::require(
        &[
            TOOLS,
            &[
                "dockerd",
                "docker",
                "apt-ftparchive",
                "dpkg-scanpackages",
                "gpg",
            ],
        ]
        .concat(),
    )? {
        return Ok(());
    }
    let repo = crate::apt::repo()?;
    let reg = lab::registry()?;
    let dir = lab::scratch_dir("init");
    let project = dir.join("project");
    lab::build_release_env(&project, None, &[("HELLO_WITH_CRYPTO", "1")])?;
    // The runner base: the apt test base, its apt source the test repository, in the registry.
    let src = dir.join("sources");
    std::fs::create_dir_all(src.join("etc/apt")).map_err(|e| fail(e.to_string()))?;
    std::fs::write(
        src.join("etc/apt/sources.list"),
        format!("deb http://127.0.0.1:{} stable main\n", repo.port),
    )
    .map_err(|e| fail(e.to_string()))?;
    let base = lab::layout_plus_layer(&repo.base, "apt", &dir.join("base"), &src, "apt")?;
    let runner_repo = format!("{}/init/debian", reg.host());
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:apt", base.display()))
        .arg(format!("docker://{runner_repo}:bookworm-apt")))?;
    std::fs::write(project.join("Dockerfile"), phoenix_dockerfile(&runner_repo))
        .map_err(|e| fail(e.to_string()))?;

    let init = |args: &[&str]| {
        lab::imgbuild()
            .arg("init")
            .args(args)
            .current_dir(&project)
            .output()
            .map_err(|e| fail(e.to_string()))
    };
    let out = init(&["--ci", "github"])?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("locales"), "{err}");
    let toml_path = project.join("imgbuild.toml");
    let written = std::fs::read_to_string(&toml_path).map_err(|e| fail(e.to_string()))?;
    // A second init refuses, names the file and the flag, and changes nothing.
    let again = init(&[])?;
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{err}");
    assert!(
        err.contains("imgbuild.toml") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&toml_path).map_err(|e| fail(e.to_string()))?,
        written
    );

    // Build with no flags at all: base, packages, env and output from the file.
    let out = run(lab::imgbuild()
        .arg("build")
        .current_dir(&project)
        .env("IMGBUILD_CACHE", dir.join("cache")))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("libssl3"), "{err}");
    let tar = project.join("_build/hello-image.tar");
    let lock =
        std::fs::read_to_string(project.join("imgbuild.lock")).map_err(|e| fail(e.to_string()))?;
    assert!(
        lock.contains("openssl") && lock.contains("libssl3"),
        "{lock}"
    );
    let env = config_env(&tar)?;
    assert!(env.iter().any(|e| e == "ECTO_IPV6=true"), "{env:?}");
    assert!(env.iter().any(|e| e == "LANG=C.UTF-8"), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("LC_ALL")), "{env:?}");
    let docker = lab::docker()?;
    run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
    let (status, body) = lab::run_and_get(&docker, "hello:0.1.0")?;
    assert!(status.contains("200"), "{status} {body}");

    // The GitHub workflow: the Dockerfile's builder image, a build on pull requests, a push
    // with the workflow's token on the default branch only.
    let gh = yaml(&project.join(".github/workflows/image.yml"))?;
    assert_eq!(
        gh["on"]["push"]["branches"][0].as_str(),
        Some("main"),
        "{gh:?}"
    );
    assert!(!gh["on"]["pull_request"].is_badvalue(), "{gh:?}");
    let job = &gh["jobs"]["image"];
    assert_eq!(
        job["container"].as_str(),
        Some("hexpm/elixir:1.14.0-erlang-25.2.3-debian-bookworm-apt")
    );
    let steps = job["steps"].as_vec().ok_or_else(|| fail("no steps"))?;
    let step_run = |s: &yaml_rust2::Yaml| s["run"].as_str().unwrap_or("").to_string();
    let push: Vec<_> = steps
        .iter()
        .filter(|s| step_run(s).contains("--push"))
        .collect();
    assert_eq!(push.len(), 1, "{steps:?}");
    assert_eq!(push[0]["if"].as_str(), Some("github.event_name == 'push'"));
    assert!(step_run(push[0]).starts_with("imgbuild build --push -t"));
    assert!(
        push[0]["env"]["IMGBUILD_PASSWORD"]
            .as_str()
            .is_some_and(|p| p.contains("secrets.GITHUB_TOKEN"))
    );
    let pr = steps
        .iter()
        .find(|s| s["if"].as_str() == Some("github.event_name == 'pull_request'"))
        .ok_or_else(|| fail("no pull request step"))?;
    assert!(step_run(pr).starts_with("imgbuild build -t") && !step_run(pr).contains("--push"));
    assert!(
        steps.iter().any(|s| step_run(s).contains("mix release")),
        "{steps:?}"
    );
    assert!(job["env"]["IMGBUILD_CACHE_REPO"].as_str().is_some());

    // GitLab: two jobs, merge requests build, the default branch pushes with the job's token.
    let out = init(&["--ci", "gitlab", "--force"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gl = yaml(&project.join(".gitlab-ci.yml"))?;
    let script = |job: &str| -> String {
        gl[job]["script"]
            .as_vec()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    assert!(
        script("image:push").contains("imgbuild build --push"),
        "{gl:?}"
    );
    assert!(
        script("image:build").starts_with("imgbuild build -t")
            && !script("image:build").contains("--push")
    );
    assert_eq!(
        gl["image:push"]["rules"][0]["if"].as_str(),
        Some("$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH")
    );
    assert_eq!(
        gl["image:push"]["variables"]["IMGBUILD_PASSWORD"].as_str(),
        Some("$CI_REGISTRY_PASSWORD")
    );
    assert_eq!(gl[".image"]["image"].as_str(), job["container"].as_str());
    Ok(())
}
