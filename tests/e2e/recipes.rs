//! The CI recipe `imgbuild init --ci gitlab` writes, run for real: a Mix project whose
//! `assets.setup` and `assets.deploy` aliases stand in for Phoenix's (a "tool" installed into
//! `_build`, then digested copies and a cache manifest in `priv/static`), the recipe's own
//! shell lines run in order on this machine's Debian Elixir (imgbuild's release archive from
//! `scripts/dist` downloaded from a loopback HTTP server and checked against its sha256, as a
//! runner would; or, in a project that depends on imgbuild's Mix package, installed by
//! `mix imgbuild.install` and run as `mix imgbuild`), and the image the recipe's build line
//! makes serves the digested files from Docker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use yaml_rust2::{Yaml, YamlLoader};

use crate::lab::{self, TestResult, fail, run};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &[
    "mix",
    "python3",
    "curl",
    "sha256sum",
    "dpkg",
    "umoci",
    "debootstrap",
    "dockerd",
    "docker",
    "docker-registry",
    "skopeo",
    "readelf",
    "busybox",
    "tar",
    "gzip",
];

const MIX_EXS: &str = r##"defmodule Shop.MixProject do
  use Mix.Project

  def project do
    [
      app: :shop,
      version: "0.2.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: [],
      aliases: aliases(),
      releases: [shop: [include_executables_for: [:unix]]]
    ]
  end

  def application do
    [mod: {Shop.Application, []}, extra_applications: [:logger, :inets]]
  end

  defp aliases do
    [
      setup: ["deps.get", "assets.setup"],
      "assets.setup": &install_minifier/1,
      "assets.deploy": &deploy/1
    ]
  end

  # Stands in for `tailwind.install`/`esbuild.install`: the tool assets.deploy runs.
  defp install_minifier(_args) do
    File.mkdir_p!("_build/tools")
    File.write!("_build/tools/minify", "strip comments\n")
  end

  # Stands in for `tailwind --minify` and `phx.digest`: a minified, digested copy of the
  # stylesheet and the manifest that maps the logical name to it.
  defp deploy(_args) do
    File.exists?("_build/tools/minify") ||
      Mix.raise("assets.deploy before assets.setup: no _build/tools/minify")

    css = "assets/css/app.css" |> File.read!() |> String.replace(~r{/\*.*?\*/\n?}s, "")
    digest = css |> :erlang.md5() |> Base.encode16(case: :lower)
    name = "assets/app-#{digest}.css"
    File.mkdir_p!("priv/static/assets")
    File.write!(Path.join("priv/static", name), css)

    File.write!(
      "priv/static/cache_manifest.json",
      ~s({"version":1,"latest":{"assets/app.css":"#{name}"}}\n)
    )
  end
end
"##;

const APPLICATION_EX: &str = r#"defmodule Shop.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    port = String.to_integer(System.get_env("PORT", "4000"))
    static = :shop |> Application.app_dir("priv/static") |> String.to_charlist()

    {:ok, _pid} =
      :inets.start(:httpd,
        port: port,
        server_name: ~c"shop",
        server_root: ~c"/tmp",
        document_root: static,
        bind_address: :any,
        modules: [:mod_alias, :mod_get],
        mime_types: [{~c"css", ~c"text/css"}, {~c"json", ~c"application/json"}]
      )

    Supervisor.start_link([], strategy: :one_for_one, name: Shop.Supervisor)
  end
end
"#;

const APP_CSS: &str =
    "/* the source's comment, which the minifier drops */\nbody { color: #c0ffee; }\n";

fn write(path: &Path, text: &str) -> TestResult {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    std::fs::write(path, text).map_err(|e| fail(format!("write {}: {e}", path.display())))
}

/// `mix new shop --sup` in `dir`, then the fixture's mix.exs, endpoint and stylesheet.
fn fixture_project(dir: &Path) -> Result<PathBuf, Failed> {
    run(Command::new("mix")
        .args(["new", "shop", "--sup"])
        .current_dir(dir))?;
    let project = dir.join("shop");
    write(&project.join("mix.exs"), MIX_EXS)?;
    write(&project.join("lib/shop/application.ex"), APPLICATION_EX)?;
    write(&project.join("assets/css/app.css"), APP_CSS)?;
    Ok(project)
}

fn yaml(path: &Path) -> Result<Yaml, Failed> {
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let mut docs = YamlLoader::load_from_str(&text)
        .map_err(|e| fail(format!("{}: not valid YAML: {e}", path.display())))?;
    if docs.len() != 1 {
        return Err(fail(format!(
            "{}: {} documents",
            path.display(),
            docs.len()
        )));
    }
    Ok(docs.remove(0))
}

fn lines(y: &Yaml, what: &str) -> Result<Vec<String>, Failed> {
    y.as_vec()
        .ok_or_else(|| fail(format!("{what} is not a list: {y:?}")))?
        .iter()
        .map(|l| {
            l.as_str()
                .map(str::to_string)
                .ok_or_else(|| fail(format!("{what} holds a non-string: {l:?}")))
        })
        .collect()
}

/// A job's variables, as (name, value).
type Variables = Vec<(String, String)>;

/// The recipe as GitLab runs it: `.image`'s variables, its before_script, then `job`'s script.
fn gitlab_recipe(project: &Path, job: &str) -> Result<(Variables, Vec<String>), Failed> {
    let doc = yaml(&project.join(".gitlab-ci.yml"))?;
    let template = &doc[".image"];
    let vars = template["variables"]
        .as_hash()
        .ok_or_else(|| fail(format!(".image has no variables: {template:?}")))?
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect();
    let mut steps = lines(&template["before_script"], ".image.before_script")?;
    steps.extend(lines(&doc[job]["script"], job)?);
    Ok((vars, steps))
}

/// Run one line of the recipe with `sh -e` in the project, with the job's variables, the
/// lab's imgbuild environment (its cache, no credentials; the real HOME for mix), and `bin`
/// first on PATH, where the install line puts imgbuild.
fn run_line(
    project: &Path,
    line: &str,
    vars: &[(String, String)],
    bin: &Path,
) -> Result<Output, Failed> {
    let mut sh = Command::new("sh");
    sh.arg("-ec").arg(line).current_dir(project);
    let lab_env = lab::imgbuild();
    for (k, v) in lab_env.get_envs() {
        if k == "HOME" {
            continue;
        }
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    sh.env(
        "PATH",
        std::env::join_paths(paths).map_err(|e| fail(e.to_string()))?,
    )
    .env("IMGBUILD_INSTALL_DIR", bin)
    .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    .env("CI_REGISTRY_IMAGE", registry_image(project))
    .env("CI_MERGE_REQUEST_IID", "7");
    sh.stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(format!("run sh -ec {line:?}: {e}")))
}

fn init(project: &Path, url: &str, sha256: &str) -> TestResult {
    run(lab::imgbuild()
        .args(["init", "--ci", "gitlab", "--force", "--imgbuild-url", url])
        .args(["--imgbuild-sha256", sha256])
        .current_dir(project))?;
    Ok(())
}

pub fn test_gitlab_recipe_builds_the_assets_the_image_serves() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let dir = lab::scratch_dir("recipe");
    let project = fixture_project(&dir)?;

    // imgbuild's release archive (scripts/dist), served over loopback HTTP, checked by the
    // sha256 its checksums.txt gives.
    let served = serve_dist(&dir)?;
    let url = format!("{}/{}", served.base_url, served.archive);
    let sha256 = served.sha256.clone();
    let bytes = served.binary.clone();

    let install_line = |steps: &[String]| -> Result<String, Failed> {
        steps
            .iter()
            .find(|l| l.contains("sha256sum -c"))
            .cloned()
            .ok_or_else(|| fail(format!("no install step checks a sha256: {steps:?}")))
    };

    // A wrong checksum: the install line fails, says why, and installs nothing.
    init(&project, &url, &"0".repeat(64))?;
    let (vars, steps) = gitlab_recipe(&project, "image:build")?;
    let bad_bin = dir.join("bad-bin");
    let out = run_line(&project, &install_line(&steps)?, &vars, &bad_bin)?;
    let err = lab::stderr(&out);
    assert!(!out.status.success(), "a wrong sha256 installed: {err}");
    assert!(err.contains("does not have the sha256"), "{err}");
    assert!(!bad_bin.join("imgbuild").exists());

    // The right one: the recipe, line by line.
    init(&project, &url, &sha256)?;
    let (vars, steps) = gitlab_recipe(&project, "image:build")?;
    assert!(
        steps.iter().all(|l| !l.contains("cargo")),
        "the recipe uses cargo: {steps:?}"
    );
    let mix: Vec<&str> = steps
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("mix "))
        .collect();
    // No Dockerfile: Phoenix 1.8's order with the project's aliases; no mix.lock, no Hex.
    assert_eq!(
        mix,
        [
            "mix deps.get --only prod",
            "mix deps.compile",
            "mix assets.setup",
            "mix compile",
            "mix assets.deploy",
            "mix release --overwrite",
        ]
    );
    assert!(
        vars.contains(&("MIX_ENV".to_string(), "prod".to_string())),
        "{vars:?}"
    );
    use_lab_base(&project)?;
    let bin = dir.join("bin");
    run_lines(&project, &steps, &vars, &bin)?;
    let installed = std::fs::read(bin.join("imgbuild")).map_err(|e| fail(e.to_string()))?;
    assert!(
        installed == bytes,
        "the installed imgbuild is not the one served"
    );
    assert_serves_assets(&project)
}

/// The dist directory served over loopback: its URL, the archive for this machine, the
/// archive's sha256 from checksums.txt, and the binary inside it.
struct Served {
    base_url: String,
    archive: String,
    sha256: String,
    binary: Vec<u8>,
}

fn serve_dist(dir: &Path) -> Result<Served, Failed> {
    let dist = crate::dist::dist_dir()?;
    let archive = format!(
        "imgbuild-{}-{}.tar.gz",
        crate::dist::VERSION,
        crate::dist::TARGET
    );
    let sums = std::fs::read_to_string(dist.join("checksums.txt"))?;
    let sha256 = sums
        .lines()
        .find_map(|l| l.strip_suffix(&format!("  {archive}")))
        .ok_or_else(|| fail(format!("no line for {archive} in checksums.txt:\n{sums}")))?
        .to_string();
    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked)?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(dist.join(&archive))
        .arg("-C")
        .arg(&unpacked))?;
    let binary = std::fs::read(
        unpacked
            .join(archive.trim_end_matches(".tar.gz"))
            .join("imgbuild"),
    )?;
    let port = lab::free_port();
    lab::spawn(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(&dist),
        &dir.join("http.log"),
    )?;
    lab::wait_for_port(port, "python3 -m http.server")?;
    Ok(Served {
        base_url: format!("http://127.0.0.1:{port}"),
        archive,
        sha256,
        binary,
    })
}

/// The image the recipe's merge-request job wrote into `_build/shop-image.tar`: Docker loads
/// it and it serves the digested stylesheet and the cache manifest the release carries.
/// The `CI_REGISTRY_IMAGE` a recipe test's jobs see: one per test (named after its scratch
/// directory), because the tests share one Docker daemon and each removes its image at the
/// end; a shared tag let one test's `docker rmi` take the image another was about to run.
fn registry_image(project: &Path) -> String {
    let scratch = project
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    format!("imgbuild-e2e/{scratch}")
}

fn assert_serves_assets(project: &Path) -> TestResult {
    // The release carries the digested files; the image serves them.
    let static_dir = project.join("_build/prod/rel/shop/lib/shop-0.2.0/priv/static");
    let manifest =
        std::fs::read_to_string(static_dir.join("cache_manifest.json")).map_err(|e| {
            fail(format!(
                "the release has no cache manifest (assets.deploy did not run before mix release?): {e}"
            ))
        })?;
    let manifest_json: serde_json::Value =
        serde_json::from_str(&manifest).map_err(|e| fail(e.to_string()))?;
    let digested = manifest_json["latest"]["assets/app.css"]
        .as_str()
        .ok_or_else(|| fail(format!("no assets/app.css in {manifest}")))?
        .to_string();
    let minified = "body { color: #c0ffee; }\n";
    assert!(
        digested.starts_with("assets/app-") && digested.ends_with(".css") && digested.len() == 47,
        "{digested}"
    );
    let tar = project.join("_build/shop-image.tar");
    let image = format!("{}:mr-7", registry_image(project));
    let docker = lab::docker()?;
    let out = run(docker.cmd().arg("load").arg("-i").arg(&tar))?;
    assert!(lab::stdout(&out).contains(&image), "{}", lab::stdout(&out));
    let (status, body) = lab::run_and_get_path(&docker, &image, &format!("/{digested}"))?;
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(body, minified);
    let (status, body) = lab::run_and_get_path(&docker, &image, "/cache_manifest.json")?;
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(body, manifest);
    let _ = docker.cmd().args(["rmi", &image]).output();
    Ok(())
}

/// The image is built onto the test's base: the one setting of imgbuild.toml a user edits for
/// that.
fn use_lab_base(project: &Path) -> TestResult {
    let toml_path = project.join("imgbuild.toml");
    let toml = std::fs::read_to_string(&toml_path).map_err(|e| fail(e.to_string()))?;
    let base = format!("oci:{}:bookworm", lab::base_layout()?.display());
    let toml = toml.replace(
        "from = \"debian:bookworm-slim\"",
        &format!("from = \"{base}\""),
    );
    assert!(toml.contains(&base), "{toml}");
    std::fs::write(&toml_path, toml).map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// Every line of the recipe, in order, as the runner runs them; the first that fails fails
/// the test with its output.
fn run_lines(
    project: &Path,
    steps: &[String],
    vars: &[(String, String)],
    bin: &Path,
) -> TestResult {
    for line in steps {
        let out = run_line(project, line, vars, bin)?;
        if !out.status.success() {
            return Err(fail(format!(
                "the recipe's line failed ({}):\n{line}\nstdout: {}\nstderr: {}",
                out.status,
                lab::stdout(&out),
                lab::stderr(&out)
            )));
        }
    }
    Ok(())
}

/// A project that depends on imgbuild's Mix package (a path dependency on integrations/mix,
/// configured with the version and the loopback base_url of the dist): `init --ci gitlab`
/// installs imgbuild through it, no download line and no sha256 in the recipe; the recipe's
/// lines run, the package installs the served archive's binary under _build, and the image
/// serves the assets.
pub fn test_gitlab_recipe_with_the_mix_package() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let dir = lab::scratch_dir("recipe-mix");
    let project = fixture_project(&dir)?;
    let served = serve_dist(&dir)?;
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/mix");
    let mix_exs = MIX_EXS.replace(
        "deps: [],",
        &format!(
            "deps: [{{:imgbuild, path: {:?}, runtime: false}}],",
            package.display().to_string()
        ),
    );
    assert_ne!(mix_exs, MIX_EXS);
    write(&project.join("mix.exs"), &mix_exs)?;
    write(
        &project.join("config/config.exs"),
        &format!(
            "import Config\n\nconfig :imgbuild,\n  version: {:?},\n  base_url: {:?}\n",
            crate::dist::VERSION,
            served.base_url
        ),
    )?;
    run(lab::imgbuild()
        .args(["init", "--ci", "gitlab", "--force"])
        .current_dir(&project))?;
    let (vars, steps) = gitlab_recipe(&project, "image:build")?;
    assert!(
        steps
            .iter()
            .all(|l| !l.contains("sha256sum") && !l.contains("curl")),
        "the recipe downloads imgbuild itself: {steps:?}"
    );
    let at = |want: &str| steps.iter().position(|l| l.starts_with(want));
    let install = at("mix imgbuild.install --if-missing")
        .ok_or_else(|| fail(format!("no mix imgbuild.install: {steps:?}")))?;
    assert!(
        at("mix deps.compile").is_some_and(|c| c < install),
        "{steps:?}"
    );
    assert!(
        at("mix imgbuild build ").is_some_and(|b| install < b),
        "{steps:?}"
    );
    use_lab_base(&project)?;
    // The imgbuild on PATH (the lab's own build directory) must not be what runs.
    let bin = dir.join("bin");
    run_lines(&project, &steps, &vars, &bin)?;
    assert!(!bin.join("imgbuild").exists());
    let installed =
        std::fs::read(project.join(format!("_build/imgbuild-{}", crate::dist::TARGET)))?;
    assert!(
        installed == served.binary,
        "the Mix package did not install the served archive's binary"
    );
    assert_serves_assets(&project)
}

/// GitLab with imgbuild's own debug image (`init --ci gitlab --imgbuild-image`): the `release`
/// job's lines run here (the builder image's part), its artifact (`_build/prod/rel/`) is what
/// the image job sees, and the image job's script runs as GitLab runs it: each line by the
/// image's own `sh`, entrypoint emptied, in the project's directory. The image it writes
/// serves the assets.
pub fn test_gitlab_recipe_in_imgbuilds_own_image() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let dir = lab::scratch_dir("recipe-image");
    let project = fixture_project(&dir)?;
    let dist = crate::dist::dist_dir()?;
    let image = format!("imgbuild:{}-debug", crate::dist::VERSION);
    run(lab::imgbuild()
        .args([
            "init",
            "--ci",
            "gitlab",
            "--force",
            "--imgbuild-image",
            &image,
        ])
        .current_dir(&project))?;
    use_lab_base(&project)?;
    let doc = yaml(&project.join(".gitlab-ci.yml"))?;
    let release = &doc["release"];
    let vars: Variables = release["variables"]
        .as_hash()
        .ok_or_else(|| fail(format!("release has no variables: {release:?}")))?
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect();
    let mut steps = lines(&release["before_script"], "release.before_script")?;
    steps.extend(lines(&release["script"], "release.script")?);
    assert!(
        steps.iter().all(|l| !l.contains("imgbuild")),
        "the release job runs imgbuild: {steps:?}"
    );
    run_lines(&project, &steps, &vars, &dir.join("bin"))?;
    assert_eq!(
        lines(&release["artifacts"]["paths"], "release.artifacts.paths")?,
        ["_build/prod/rel/"]
    );
    assert_eq!(
        doc[".image"]["image"]["name"].as_str(),
        Some(image.as_str())
    );

    let docker = lab::docker()?;
    run(docker
        .cmd()
        .arg("load")
        .arg("-i")
        .arg(dist.join(format!("imgbuild-{}-image-debug.tar", crate::dist::VERSION))))?;
    let base = lab::base_layout()?;
    for line in lines(&doc["image:build"]["script"], "image:build.script")? {
        let out = docker
            .cmd()
            .args(["run", "--rm", "--network=host", "--entrypoint", ""])
            .arg("-v")
            .arg(format!("{}:{}", project.display(), project.display()))
            .arg("-v")
            .arg(format!("{}:{}:ro", base.display(), base.display()))
            .arg("-w")
            .arg(&project)
            .arg("-e")
            .arg(format!("CI_REGISTRY_IMAGE={}", registry_image(&project)))
            .args(["-e", "CI_MERGE_REQUEST_IID=7"])
            .args([image.as_str(), "sh", "-c", &line])
            .output()?;
        if !out.status.success() {
            return Err(fail(format!(
                "the image job's line failed in {image} ({}):\n{line}\n{}",
                out.status,
                lab::stderr(&out)
            )));
        }
    }
    assert_serves_assets(&project)
}
