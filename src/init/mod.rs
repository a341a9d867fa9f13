//! `imgbuild init`: an `imgbuild.toml` for a Mix project, written from what the project holds
//! (mix.exs, a built release, the runner stage of a `phx.gen.release --docker` Dockerfile),
//! and on request a CI workflow that builds on pull requests and pushes on the default branch.
//! Nothing is written over an existing file unless asked; every file is written whole or not
//! at all.

pub mod ci;
pub mod dockerfile;

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::release::Release;

use self::ci::Install;
use self::dockerfile::{BuilderStage, RunnerStage};

/// The project file's name (as the CLI reads it).
pub const PROJECT_FILE: &str = "imgbuild.toml";

/// Which CI's workflow to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ci {
    Github,
    Gitlab,
}

#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    /// Replace files that exist.
    pub force: bool,
    pub ci: Option<Ci>,
    /// How the CI job gets imgbuild.
    pub install: Install,
}

/// What `init` found in the project.
#[derive(Clone, Debug, Default)]
pub struct Project {
    pub dir: PathBuf,
    /// The release's name: the Dockerfile's `COPY .../rel/NAME`, mix.exs's first release, or
    /// the application's name.
    pub name: Option<String>,
    /// The version in mix.exs (a literal or a module attribute), or the built release's.
    pub version: Option<String>,
    /// The built release, relative to the project (`_build/prod/rel/NAME`), when present.
    pub release: Option<Release>,
    /// The Dockerfile's runner stage, when there is a Dockerfile.
    pub runner: Option<RunnerStage>,
    /// The Dockerfile's builder stage (the one that runs `mix release`), when there is one.
    pub builder: Option<BuilderStage>,
    /// An `assets/` directory (a Phoenix project with esbuild/tailwind). Without a Dockerfile,
    /// CI builds the assets with the aliases below; an `assets/` they do not build is named.
    pub assets: bool,
    /// mix.exs defines an `"assets.setup"` alias (Phoenix 1.7+: installs esbuild/tailwind).
    pub assets_setup: bool,
    /// mix.exs defines an `"assets.deploy"` alias (builds, minifies and digests the assets).
    pub assets_deploy: bool,
    /// A `mix.lock`: the project has dependencies to fetch (with Hex and rebar).
    pub mix_lock: bool,
    /// mix.exs depends on imgbuild's Mix package (`{:imgbuild, ...}`): CI installs imgbuild
    /// through it.
    pub mix_package: bool,
}

/// What `init` wrote, and what the user should know about the translation.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// Read the Mix project in `dir`.
pub(crate) fn scan(dir: &Path) -> Result<Project> {
    let mix = dir.join("mix.exs");
    let text = match std::fs::read_to_string(&mix) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Input(format!(
                "{} has no mix.exs: run imgbuild init in your Mix project's directory",
                dir.display()
            )));
        }
        Err(e) => return Err(Error::io("read", &mix, e)),
    };
    let docker = match std::fs::read_to_string(dir.join("Dockerfile")) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("read", dir.join("Dockerfile"), e)),
    };
    let runner = docker.as_deref().map(dockerfile::runner_stage);
    let builder = docker.as_deref().and_then(dockerfile::builder_stage);
    let name = runner
        .as_ref()
        .and_then(|r| r.release_name.clone())
        .or_else(|| first_release(&text))
        .or_else(|| mix_atom(&text, "app"));
    let release = name.as_ref().and_then(|n| {
        let d = dir.join("_build/prod/rel").join(n);
        d.join("releases/start_erl.data")
            .is_file()
            .then(|| Release::inspect(&d).ok())
            .flatten()
    });
    let version = mix_version(&text).or_else(|| release.as_ref().map(|r| r.version.clone()));
    Ok(Project {
        dir: dir.to_path_buf(),
        name,
        version,
        release,
        runner,
        builder,
        assets: dir.join("assets").is_dir(),
        assets_setup: mix_alias(&text, "assets.setup"),
        assets_deploy: mix_alias(&text, "assets.deploy"),
        mix_lock: dir.join("mix.lock").is_file(),
        mix_package: mix_dep(&text, "imgbuild"),
    })
}

/// Write `imgbuild.toml` (and the CI workflow) for the project in `dir`.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<Written> {
    let project = scan(dir)?;
    let (toml, mut notes) = project_file(&project);
    let mut files = vec![(dir.join(PROJECT_FILE), toml)];
    if let Some(ci) = opts.ci {
        // The project's Mix package installs imgbuild, unless a download was pinned.
        let install = match &opts.install {
            Install::Variables if project.mix_package => Install::Mix,
            other => other.clone(),
        };
        let (path, text, ci_notes) = ci::workflow(ci, &project, &install);
        files.push((dir.join(path), text));
        notes.extend(ci_notes);
    }
    // Every file is refused before any is written: no half-done init.
    let existing: Vec<String> = files
        .iter()
        .filter(|(p, _)| p.exists())
        .map(|(p, _)| p.display().to_string())
        .collect();
    if !opts.force && !existing.is_empty() {
        return Err(Error::Input(format!(
            "{} already exist{}: imgbuild init does not overwrite; pass --force to replace {}",
            existing.join(" and "),
            if existing.len() == 1 { "s" } else { "" },
            if existing.len() == 1 { "it" } else { "them" }
        )));
    }
    for (path, text) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).ctx("create directory", parent)?;
        }
        crate::atomic::write_file(path, text.as_bytes())?;
    }
    Ok(Written {
        files: files.into_iter().map(|(p, _)| p).collect(),
        notes,
    })
}

/// A TOML string (JSON's string syntax is TOML's basic string).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| quoted(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        quoted(k)
    }
}

/// Locale variables that name a locale the `locales` package would have had to generate.
fn needs_locales(key: &str, value: &str) -> bool {
    matches!(key, "LANG" | "LANGUAGE" | "LC_ALL")
        && !matches!(value, "C.UTF-8" | "C.utf8" | "C" | "POSIX")
}

/// The project file's text, and notes on what was translated and why.
pub(crate) fn project_file(p: &Project) -> (String, Vec<String>) {
    let mut notes = Vec::new();
    let runner = p.runner.clone().unwrap_or_default();
    let from_dockerfile = p.runner.is_some();
    let name = p.name.clone().unwrap_or_else(|| "my_app".into());
    let mut out = String::new();
    out.push_str(&format!(
        "# imgbuild.toml: how `imgbuild build` makes the image of {name}.\n\
         # Written by `imgbuild init`{}. Every setting has a flag of the same name that overrides\n\
         # it (`imgbuild build --help`); lists given as flags replace these, maps are merged.\n\n",
        if from_dockerfile {
            " from mix.exs and the runner stage of Dockerfile"
        } else {
            " from mix.exs"
        }
    ));

    out.push_str("# The release `MIX_ENV=prod mix release` makes.\n");
    out.push_str(&format!(
        "{}release = {}\n\n",
        if p.name.is_some() { "" } else { "# " },
        quoted(&format!("_build/prod/rel/{name}"))
    ));

    out.push_str("# The runtime base image (any registry, or oci:DIR, oci-archive:FILE, docker-archive:FILE).\n");
    match runner.from.as_deref() {
        Some(f) if !f.contains('$') => {
            out.push_str("# From the Dockerfile's runner stage, with its Debian release kept.\n");
            out.push_str(&format!("from = {}\n\n", quoted(f)));
        }
        other => {
            if let Some(f) = other {
                notes.push(format!(
                    "the runner stage's FROM {f} depends on a build argument with no default; set `from` in {PROJECT_FILE}"
                ));
            }
            out.push_str("from = \"debian:bookworm-slim\"\n\n");
        }
    }

    let version = p.version.clone().unwrap_or_else(|| "VERSION".to_string());
    out.push_str(&format!(
        "# Image names. Default: the release's name and version ({name}:{version}), read at each\n\
         # build, so a version bump needs no edit here. CI passes its own with -t.\n\
         # tags = [{}]\n\n",
        quoted(&format!("registry.example.com/team/{name}:{version}"))
    ));

    out.push_str(
        "# Where the image is written (a tarball docker, podman, skopeo and ctr load). Add --push to\n\
         # send it to the -t names, or --load to hand it to the local Docker or podman.\n",
    );
    out.push_str(&format!(
        "output = {}\n\n",
        quoted(&format!("_build/{name}-image.tar"))
    ));

    out.push_str(
        "# Runtime Debian packages, installed without apt, root or RUN, and pinned in imgbuild.lock.\n\
         # \"auto\" installs exactly what the start-up check finds missing.\n",
    );
    let mut packages = runner.packages.clone();
    if packages.iter().any(|p| p == "locales") {
        packages.retain(|p| p != "locales");
        notes.push(
            "left out the `locales` package: the image sets LANG=C.UTF-8, which needs none"
                .to_string(),
        );
    }
    if packages.is_empty() {
        out.push_str("packages = \"auto\"\n\n");
    } else {
        out.push_str("# From the Dockerfile's apt-get install (`locales` left out: LANG=C.UTF-8 needs none).\n");
        out.push_str(&format!("packages = {}\n\n", list(&packages)));
    }

    out.push_str(
        "# Several platforms make an image index; arm64 from an amd64 runner needs --otp-from.\n\
         # platforms = [\"linux/amd64\", \"linux/arm64\"]\n\
         # A registry repository that a fleet of CI runners shares as a cache.\n\
         # cache-repo = \"registry.example.com/team/imgbuild-cache\"\n\
         # Sign every pushed image (cosign's key format, COSIGN_PASSWORD).\n\
         # sign-key = \"cosign.key\"\n\n",
    );

    out.push_str("# The runtime config. Defaults, as Phoenix's runner stage has them: port 4000, user\n# 65534 (nobody), /app, and /app/bin/server (else /app/bin/NAME start).\n");
    let default_ports = ["4000/tcp", "4000"];
    match runner.expose.as_slice() {
        [] => out.push_str("# expose = [\"4000/tcp\"]\n"),
        [one] if default_ports.contains(&one.as_str()) => {
            out.push_str("# expose = [\"4000/tcp\"]\n")
        }
        ports => out.push_str(&format!("expose = {}\n", list(ports))),
    }
    match runner.user.as_deref() {
        None | Some("nobody" | "65534" | "nobody:root" | "65534:0") => {
            out.push_str("# user = \"65534\"\n")
        }
        Some(u) => out.push_str(&format!("user = {}\n", quoted(u))),
    }
    let workdir = runner.workdir.clone().unwrap_or_else(|| "/app".into());
    if workdir.trim_end_matches('/') == "/app" {
        out.push_str("# workdir = \"/app\"\n");
    } else {
        out.push_str(&format!("workdir = {}\n", quoted(&workdir)));
    }
    let server = format!("{}/bin/server", workdir.trim_end_matches('/'));
    match &runner.cmd {
        Some(cmd) if *cmd != [server.clone()] => {
            out.push_str(&format!("cmd = {}\n", list(cmd)));
        }
        _ => out.push_str(&format!("# cmd = [{}]\n", quoted(&server))),
    }
    if let Some(ep) = &runner.entrypoint {
        out.push_str(&format!("entrypoint = {}\n", list(ep)));
    }

    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in &runner.env {
        if needs_locales(k, v) {
            notes.push(format!(
                "left out {k}={v}: the image has LANG=C.UTF-8, and {v} would need the locales package"
            ));
        } else if k == "MIX_ENV" && v == "prod" {
            // imgbuild's default.
        } else {
            env.push((k.clone(), v.clone()));
        }
    }
    out.push_str(
        "\n# Environment (LANG=C.UTF-8, MIX_ENV=prod and RELEASE_TMP=/tmp are set already).\n\
         # Secrets (SECRET_KEY_BASE, DATABASE_URL) belong in the container's environment at run\n\
         # time, never here: imgbuild refuses values that look secret.\n[env]\n",
    );
    for (k, v) in &env {
        out.push_str(&format!("{} = {}\n", toml_key(k), quoted(v)));
    }
    if env.is_empty() {
        out.push_str("# PHX_HOST = \"example.com\"\n");
    }
    (out, notes)
}

/// `releases: [name: [...]]`: the first release's name.
fn first_release(mix: &str) -> Option<String> {
    let at = mix.find("releases:")?;
    let rest = mix[at + "releases:".len()..].trim_start();
    let rest = rest.strip_prefix('[')?.trim_start();
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && rest[name.len()..].starts_with(':')).then_some(name)
}

/// Whether mix.exs defines the alias `name` (`"assets.deploy": [...]` in the aliases keyword
/// list, or the tuple form `{"assets.deploy", ...}`); a mention in another alias's list (a
/// `setup:` alias that runs `"assets.setup"`) or in a comment is not a definition.
fn mix_alias(mix: &str, name: &str) -> bool {
    let key = format!("\"{name}\":");
    let tuple = format!("{{\"{name}\",");
    mix.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .any(|l| {
            let l: String = l.split_whitespace().collect();
            l.contains(&key) || l.contains(&tuple)
        })
}

/// mix.exs lists the dependency `name` (`{:name, ...}`), outside comments.
fn mix_dep(mix: &str, name: &str) -> bool {
    let tuple = format!("{{:{name},");
    mix.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .any(|l| {
            let l: String = l.split_whitespace().collect();
            l.contains(&tuple)
        })
}

/// `key: :atom` in mix.exs.
fn mix_atom(mix: &str, key: &str) -> Option<String> {
    let pat = format!("{key}: :");
    let at = mix.find(&pat)?;
    let name: String = mix[at + pat.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// `version: "1.2.3"`, or `version: @version` with `@version "1.2.3"`.
fn mix_version(mix: &str) -> Option<String> {
    let at = mix.find("version:")?;
    let rest = mix[at + "version:".len()..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        return s.split('"').next().map(str::to_string);
    }
    let attr: String = rest
        .strip_prefix('@')?
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let def = format!("@{attr} \"");
    let at = mix.find(&def)?;
    mix[at + def.len()..].split('"').next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIX: &str = r#"
defmodule MyApp.MixProject do
  use Mix.Project
  @version "0.3.1"
  def project do
    [
      app: :my_app,
      version: @version,
      releases: [my_app_web: [include_executables_for: [:unix]]]
    ]
  end
end
"#;

    #[test]
    fn reads_mix_exs() {
        assert_eq!(mix_version(MIX).as_deref(), Some("0.3.1"));
        assert_eq!(mix_atom(MIX, "app").as_deref(), Some("my_app"));
        assert_eq!(first_release(MIX).as_deref(), Some("my_app_web"));
        assert_eq!(mix_version("version: \"1.0.0\",").as_deref(), Some("1.0.0"));
        assert_eq!(mix_version("version: System.get_env(\"V\")"), None);
    }

    #[test]
    fn reads_asset_aliases() {
        let phoenix = r#"
  defp aliases do
    [
      setup: ["deps.get", "assets.setup", "assets.build"],
      # "assets.deploy": ["phx.digest"],
      "assets.setup": ["tailwind.install --if-missing", "esbuild.install --if-missing"],
      "assets.build": ["tailwind my_app", "esbuild my_app"]
    ]
  end
"#;
        assert!(mix_alias(phoenix, "assets.setup"));
        assert!(mix_alias(phoenix, "assets.build"));
        // Named in `setup:` and in a comment only.
        assert!(!mix_alias(phoenix, "assets.deploy"));
        assert!(mix_alias(
            "[{\"assets.deploy\", [\"phx.digest\"]}]",
            "assets.deploy"
        ));
        assert!(!mix_alias(MIX, "assets.setup"));
        // Dependencies: the Mix package, not a comment, not a longer name.
        let deps = "defp deps do\n  [\n    {:phoenix, \"~> 1.7\"},\n    { :imgbuild, \"~> 0.1\", runtime: false },\n    # {:esbuild, \"~> 0.8\"}\n    {:imgbuild_extra, \"~> 1.0\"}\n  ]\nend\n";
        assert!(mix_dep(deps, "imgbuild"));
        assert!(mix_dep(deps, "phoenix"));
        assert!(!mix_dep(deps, "esbuild"));
        assert!(!mix_dep(deps, "imgbuild_ext"));
    }

    #[test]
    fn project_file_parses_and_translates() {
        let runner = dockerfile::runner_stage(
            "FROM debian:bookworm-20231009-slim\nRUN apt-get install -y libstdc++6 openssl locales\nENV LANG=en_US.UTF-8 MIX_ENV=prod ECTO_IPV6=true \"ODD KEY\"=x\nUSER nobody\nCMD [\"/app/bin/server\"]\n",
        );
        let p = Project {
            name: Some("my_app".into()),
            version: Some("0.3.1".into()),
            runner: Some(runner),
            ..Project::default()
        };
        let (text, notes) = project_file(&p);
        let file: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(file["from"].as_str(), Some("debian:bookworm-20231009-slim"));
        assert_eq!(
            file["packages"].as_array().unwrap(),
            &vec![
                toml::Value::from("libstdc++6"),
                toml::Value::from("openssl")
            ]
        );
        let env = file["env"].as_table().unwrap();
        assert_eq!(env["ECTO_IPV6"].as_str(), Some("true"));
        assert_eq!(env["ODD KEY"].as_str(), Some("x"));
        assert!(!env.contains_key("LANG") && !env.contains_key("MIX_ENV"));
        assert!(!file.contains_key("user") && !file.contains_key("cmd"));
        assert!(notes.iter().any(|n| n.contains("locales")), "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("LANG=en_US.UTF-8")));
        // Without a Dockerfile: the default base and the packages the check asks for.
        let (text, _) = project_file(&Project::default());
        let file: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(file["packages"].as_str(), Some("auto"));
        assert_eq!(file["from"].as_str(), Some("debian:bookworm-slim"));
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            init(dir.path(), &InitOptions::default()),
            Err(Error::Input(_))
        ));
        std::fs::write(dir.path().join("mix.exs"), MIX).unwrap();
        init(dir.path(), &InitOptions::default()).unwrap();
        let e = init(
            dir.path(),
            &InitOptions {
                force: false,
                ci: Some(Ci::Github),
                ..InitOptions::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        // Nothing of the refused run was written.
        assert!(!dir.path().join(".github").exists());
        let w = init(
            dir.path(),
            &InitOptions {
                force: true,
                ci: Some(Ci::Github),
                ..InitOptions::default()
            },
        )
        .unwrap();
        assert_eq!(w.files.len(), 2);
    }
}
