//! The CI workflow `imgbuild init --ci` writes: the release is built in the Dockerfile's builder
//! image (the same Erlang, on the same Debian release as the runtime base, so the start-up
//! check passes) by the builder stage's own `mix` steps, in its order (the asset build
//! included), with `deps` and `_build` cached by `mix.lock`; imgbuild is downloaded and
//! checked against a pinned sha256, then builds the image. On pull or merge requests it only
//! builds; on the default branch it pushes, with the CI's own registry credentials, through the
//! registry cache when one is configured.

use std::path::{Path, PathBuf};

use super::{Ci, Project};
use crate::error::{Error, Result};

/// The builder used when no Dockerfile names one: an Elixir image on Debian bookworm, the
/// default base's release.
const DEFAULT_BUILDER: &str = "elixir:1.17";

/// The build tools installed when no Dockerfile names its own.
const DEFAULT_BUILD_PACKAGES: &[&str] = &["build-essential", "git"];

/// How the CI job gets imgbuild. Never a tool the job's image may lack (`cargo`): a download
/// whose sha256 is checked before it runs, by the recipe's own lines or by the project's Mix
/// package (as Phoenix's esbuild and tailwind packages install their tools).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Install {
    /// The URL and sha256 from the CI variables `IMGBUILD_URL` and `IMGBUILD_SHA256`, read when
    /// the job runs; the job fails, naming them, when either is unset.
    #[default]
    Variables,
    /// A pinned download, written into the recipe.
    Pinned { url: String, sha256: String },
    /// The project's Mix package (`{:imgbuild, ...}` in mix.exs): `mix imgbuild.install
    /// --if-missing` once the dependencies are fetched (the archive checked against the
    /// `checksums.txt` of the package's `base_url`), and `mix imgbuild` runs it.
    Mix,
    /// imgbuild's own image (`imgbuild:VERSION-debug` from `scripts/dist`, pushed where the CI
    /// pulls from): GitLab only. The release is built in a job of its own and handed on as an
    /// artifact; the image jobs run in imgbuild's image.
    Image { reference: String },
}

impl Install {
    /// imgbuild's own image, by a reference the recipe can quote.
    pub fn image(reference: &str) -> Result<Install> {
        let r = reference.trim();
        if r.is_empty()
            || r.chars()
                .any(|c| c.is_whitespace() || c.is_control() || "'\"`\\$#{}".contains(c))
        {
            return Err(Error::Input(format!(
                "--imgbuild-image {reference:?} is not an image reference the recipe can quote: give REGISTRY/REPO:TAG of imgbuild's debug image (imgbuild:VERSION-debug from the release, pushed to your registry)"
            )));
        }
        Ok(Install::Image {
            reference: r.to_string(),
        })
    }

    /// A pinned download of `url`, whose bytes must have the sha256 `sha256` (64 hex digits).
    pub fn pinned(url: &str, sha256: &str) -> Result<Install> {
        let url = url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(Error::Input(format!(
                "--imgbuild-url {url:?} is not an http(s) URL: give the address the CI job downloads imgbuild from (a release archive imgbuild-VERSION-TARGET.tar.gz, or the binary)"
            )));
        }
        // The URL is written into shell and YAML, and GitHub expands `${{ }}` in `run:`.
        if let Some(c) = url
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || "'\"`\\$".contains(*c))
        {
            return Err(Error::Input(format!(
                "--imgbuild-url {url:?} holds {c:?}, which the recipe cannot quote: percent-encode it"
            )));
        }
        let sha256 = sha256.trim().to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Input(format!(
                "--imgbuild-sha256 {sha256:?} is not a sha256 (64 hex digits): give the archive's line in the release's checksums.txt (or `sha256sum` of the file at the URL)"
            )));
        }
        Ok(Install::Pinned {
            url: url.to_string(),
            sha256,
        })
    }
}

/// What the CI job runs before imgbuild builds the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipe {
    /// The job's image: the Dockerfile's builder image.
    pub builder: String,
    pub mix_env: String,
    /// The build tools' Debian packages (the builder stage's `apt-get install`).
    pub packages: Vec<String>,
    /// The `mix` commands, in the order the builder stage runs them.
    pub mix: Vec<String>,
    /// Whether `mix` is the Dockerfile's builder stage's (else mix.exs's aliases chose it).
    pub from_dockerfile: bool,
}

/// The recipe for `p`: the builder stage's `mix` commands in its order, or, without a
/// Dockerfile, the steps of Phoenix 1.8's builder stage that the project has (Hex and rebar
/// with a mix.lock; the asset aliases mix.exs defines). 1.8's order also builds a 1.6 or 1.7
/// project's assets: digesting after `mix compile` is as good as before it.
pub(crate) fn recipe(p: &Project) -> (Recipe, Vec<String>) {
    let mut notes = Vec::new();
    let builder = match p.runner.as_ref().and_then(|r| r.builder.clone()) {
        Some(b) if !b.contains('$') => b,
        _ => {
            notes.push(format!(
                "no Dockerfile names the image the release is built in; the CI job uses {DEFAULT_BUILDER}: use an image with your Elixir and Erlang on the base's Debian release"
            ));
            DEFAULT_BUILDER.to_string()
        }
    };
    let stage = p.builder.as_ref();
    let mix_env = stage
        .and_then(|b| b.mix_env.clone())
        .unwrap_or_else(|| "prod".to_string());
    if mix_env != "prod" {
        notes.push(format!(
            "the builder stage sets MIX_ENV={mix_env}: set `release = \"_build/{mix_env}/rel/NAME\"` in {}",
            super::PROJECT_FILE
        ));
    }
    let packages = match stage {
        Some(b) if !b.packages.is_empty() => b.packages.clone(),
        _ => DEFAULT_BUILD_PACKAGES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let mix = match stage {
        Some(b) => {
            for other in &b.other {
                notes.push(format!(
                    "the builder stage's `{other}` is not in the CI recipe (it replays only mix commands): add it if the release needs it"
                ));
            }
            b.mix.iter().map(|m| overwriting(m)).collect()
        }
        None => {
            let mut mix = Vec::new();
            if p.mix_lock {
                mix.push("mix local.hex --force".to_string());
                mix.push("mix local.rebar --force".into());
            }
            mix.push(format!("mix deps.get --only {mix_env}"));
            mix.push("mix deps.compile".into());
            if p.assets_setup {
                mix.push("mix assets.setup".into());
            }
            mix.push("mix compile".into());
            if p.assets_deploy {
                mix.push("mix assets.deploy".into());
            } else if p.assets {
                notes.push(
                    "the project has assets/ but mix.exs defines no \"assets.deploy\" alias: the CI recipe builds no assets; add the alias (Phoenix's runs tailwind, esbuild and phx.digest)".to_string(),
                );
            }
            mix.push("mix release --overwrite".into());
            mix
        }
    };
    (
        Recipe {
            builder,
            mix_env,
            packages,
            mix,
            from_dockerfile: stage.is_some(),
        },
        notes,
    )
}

/// `mix release` as a CI job with a cached `_build` must run it: a release left by an earlier
/// job would make it ask before overwriting, and a job has no one to answer.
fn overwriting(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    if words.get(1) == Some(&"release") && !words.contains(&"--overwrite") {
        format!("{command} --overwrite")
    } else {
        command.to_string()
    }
}

/// The workflow's path (relative to the project), its text, and notes for the user.
pub(crate) fn workflow(ci: Ci, p: &Project, install: &Install) -> (PathBuf, String, Vec<String>) {
    let (recipe, mut notes) = recipe(p);
    notes.push(match install {
        Install::Variables => "the CI job downloads imgbuild from the CI variable IMGBUILD_URL and checks it against IMGBUILD_SHA256: set both (or run init with --imgbuild-url and --imgbuild-sha256 to write them into the recipe)".to_string(),
        Install::Pinned { url, .. } => format!("the CI job downloads imgbuild from {url} and checks its sha256"),
        Install::Image { reference } => format!("the release is built in the job `release` and handed to the image jobs, which run in {reference} (imgbuild's debug image, with a shell for GitLab's script)"),
        Install::Mix => "the CI job installs imgbuild with the project's Mix package (mix imgbuild.install --if-missing: the version and base_url of config :imgbuild, the archive checked against checksums.txt) and runs it as mix imgbuild".to_string(),
    });
    let script = install_script(install);
    match ci {
        Ci::Github => (
            PathBuf::from(".github/workflows/image.yml"),
            github(&recipe, &script, install, &default_branch(&p.dir)),
            notes,
        ),
        Ci::Gitlab => (
            PathBuf::from(".gitlab-ci.yml"),
            match install {
                Install::Image { reference } => gitlab_in_image(&recipe, reference),
                _ => gitlab(&recipe, &script, install),
            },
            notes,
        ),
    }
}

/// The shell lines that install imgbuild: download (curl, else wget, else curl installed with
/// apt-get), check the sha256, install into `$IMGBUILD_INSTALL_DIR` (default /usr/local/bin).
/// One subshell, so that its `set -e` and variables stay inside.
pub(crate) fn install_script(install: &Install) -> String {
    let source = match install {
        Install::Variables => concat!(
            "url=\"${IMGBUILD_URL:-}\"\n",
            "sum=\"${IMGBUILD_SHA256:-}\"\n",
            "if [ -z \"$url\" ] || [ -z \"$sum\" ]; then\n",
            "  echo \"imgbuild: the CI variables IMGBUILD_URL and IMGBUILD_SHA256 must be set: where the job downloads the imgbuild binary, and its sha256 (or write both into the recipe with imgbuild init --imgbuild-url URL --imgbuild-sha256 HEX)\" >&2\n",
            "  exit 1\n",
            "fi\n"
        )
        .to_string(),
        Install::Pinned { url, sha256 } => format!("url='{url}'\nsum='{sha256}'\n"),
        Install::Mix => return "mix imgbuild.install --if-missing\n".to_string(),
        Install::Image { .. } => return String::new(),
    };
    let body = format!(
        "set -e\n\
         {source}\
         dir=\"${{IMGBUILD_INSTALL_DIR:-/usr/local/bin}}\"\n\
         tmp=\"$(mktemp)\"\n\
         trap 'rm -f \"$tmp\"' EXIT\n\
         if command -v curl >/dev/null 2>&1; then\n\
         \x20 curl -fsSL --retry 3 -o \"$tmp\" \"$url\"\n\
         elif command -v wget >/dev/null 2>&1; then\n\
         \x20 wget -q -O \"$tmp\" \"$url\"\n\
         else\n\
         \x20 apt-get update -y && apt-get install -y --no-install-recommends curl ca-certificates\n\
         \x20 curl -fsSL --retry 3 -o \"$tmp\" \"$url\"\n\
         fi\n\
         if ! echo \"$sum  $tmp\" | sha256sum -c - >/dev/null; then\n\
         \x20 echo \"imgbuild: $url does not have the sha256 $sum: the download is damaged or not the release pinned; fix the URL or the checksum\" >&2\n\
         \x20 exit 1\n\
         fi\n\
         mkdir -p \"$dir\"\n\
         case \"$url\" in\n\
         \x20 *.tar.gz|*.tgz)\n\
         \x20   x=\"$(mktemp -d)\"\n\
         \x20   tar -xzf \"$tmp\" -C \"$x\"\n\
         \x20   install -m 755 \"$x\"/imgbuild-*/imgbuild \"$dir/imgbuild\"\n\
         \x20   rm -rf \"$x\" ;;\n\
         \x20 *) install -m 755 \"$tmp\" \"$dir/imgbuild\" ;;\n\
         esac\n"
    );
    let indented: String = body.lines().map(|l| format!("  {l}\n")).collect();
    format!("(\n{indented})\n")
}

/// Where the mix steps come from, for the workflow's header comment.
fn origin(recipe: &Recipe) -> &'static str {
    if recipe.from_dockerfile {
        "The mix steps are the Dockerfile builder stage's, in its order."
    } else {
        "The mix steps are Phoenix 1.8's builder stage's, with the asset aliases mix.exs defines."
    }
}

/// The build tools, installed only when missing (a job image that has them is not touched).
fn build_tools(packages: &[String]) -> String {
    let list = packages.join(" ");
    format!(
        "dpkg -s {list} >/dev/null 2>&1 || {{ apt-get update -y && apt-get install -y {list}; }}"
    )
}

/// `text` as the lines of a YAML block scalar indented by `indent` spaces.
fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}

fn github(recipe: &Recipe, install_script: &str, install: &Install, branch: &str) -> String {
    let mix_steps: String = recipe
        .mix
        .iter()
        .map(|m| {
            format!(
                "      - name: {}\n        run: {}\n",
                yaml_single_quoted(m),
                yaml_single_quoted(m)
            )
        })
        .collect();
    let install_env = match install {
        Install::Variables => {
            "        env:\n          IMGBUILD_URL: ${{ vars.IMGBUILD_URL }}\n          IMGBUILD_SHA256: ${{ vars.IMGBUILD_SHA256 }}\n"
        }
        Install::Pinned { .. } | Install::Mix | Install::Image { .. } => "",
    };
    let variables_doc = match install {
        Install::Variables => {
            "\n# IMGBUILD_URL and IMGBUILD_SHA256 say where the job downloads imgbuild and its checksum."
        }
        // GitHub runs a job's steps in one container: the CLI refuses an image there.
        Install::Pinned { .. } | Install::Image { .. } => "",
        Install::Mix => {
            "\n# imgbuild is installed by the project's Mix package (config :imgbuild, version and base_url)."
        }
    };
    // A download comes first; the Mix package's installer once the dependencies are there.
    let download = format!(
        "      - name: Install imgbuild\n{install_env}        run: |\n{}",
        block(install_script, 10)
    );
    let (before, after) = match install {
        Install::Mix => (
            String::new(),
            format!(
                "      - name: Install imgbuild\n        run: {}\n",
                install_script.trim()
            ),
        ),
        _ => (download, String::new()),
    };
    let imgbuild = command(install);
    format!(
        r#"# Builds the image on pull requests, and builds and pushes it on {branch}.
# Written by `imgbuild init --ci github`. Credentials are the workflow's own GITHUB_TOKEN (for
# ghcr.io); set the repository variable IMGBUILD_CACHE_REPO to share a registry cache between
# runners. The run's summary page shows what was built (digest, tags, each layer new or reused,
# bytes pushed, the start-up check, packages, SBOM): imgbuild appends it to GITHUB_STEP_SUMMARY.{variables_doc}
# {origin}
name: image

on:
  push:
    branches: [{branch}]
  pull_request:

permissions:
  contents: read
  packages: write

jobs:
  image:
    runs-on: ubuntu-latest
    # The release is built where the Dockerfile built it: the same Erlang, on the base's Debian.
    container: {builder}
    env:
      MIX_ENV: {mix_env}
      IMGBUILD_CACHE_REPO: ${{{{ vars.IMGBUILD_CACHE_REPO }}}}
    steps:
      - uses: actions/checkout@v4
      - name: Build tools
        run: {tools}
{before}      - name: Cache deps and _build
        uses: actions/cache@v4
        with:
          path: |
            deps
            _build
          key: ${{{{ runner.os }}}}-mix-${{{{ hashFiles('mix.lock') }}}}
          restore-keys: |
            ${{{{ runner.os }}}}-mix-
{mix_steps}{after}      - name: Image name
        run: echo "IMAGE=ghcr.io/$(echo "$GITHUB_REPOSITORY" | tr '[:upper:]' '[:lower:]')" >> "$GITHUB_ENV"
      - name: Build the image
        if: github.event_name == 'pull_request'
        run: {imgbuild} build -t "$IMAGE:pr-${{{{ github.event.number }}}}"
      - name: Build and push the image
        if: github.event_name == 'push'
        env:
          IMGBUILD_USERNAME: ${{{{ github.actor }}}}
          IMGBUILD_PASSWORD: ${{{{ secrets.GITHUB_TOKEN }}}}
        run: {imgbuild} build --push -t "$IMAGE:${{{{ github.sha }}}}" -t "$IMAGE:latest"
"#,
        builder = recipe.builder,
        origin = origin(recipe),
        mix_env = yaml_single_quoted(&recipe.mix_env),
        tools = yaml_single_quoted(&build_tools(&recipe.packages)),
    )
}

fn gitlab(recipe: &Recipe, install_script: &str, install: &Install) -> String {
    let mix_steps: String = recipe
        .mix
        .iter()
        .map(|l| format!("    - {}\n", yaml_single_quoted(l)))
        .collect();
    let variables = match install {
        Install::Variables => " (the CI/CD variables IMGBUILD_URL and IMGBUILD_SHA256)",
        _ => "",
    };
    // A download comes first; the Mix package's installer once the dependencies are there.
    let (before, after) = match install {
        Install::Mix => (
            String::new(),
            format!(
                "    # imgbuild, installed by the project's Mix package (checked against checksums.txt).\n    - {}\n",
                install_script.trim()
            ),
        ),
        _ => (
            format!(
                "    # imgbuild, downloaded and checked against its sha256{variables}.\n    - |\n{}",
                block(install_script, 6)
            ),
            String::new(),
        ),
    };
    let imgbuild = command(install);
    format!(
        r#"# Builds the image on merge requests, and builds and pushes it on the default branch.
# Written by `imgbuild init --ci gitlab`. Credentials are the job's own CI_REGISTRY_USER and
# CI_REGISTRY_PASSWORD (the project's container registry); set the CI/CD variable
# IMGBUILD_CACHE_REPO to share a registry cache between runners.
# {origin}
stages: [image]

.image:
  stage: image
  # The release is built where the Dockerfile built it: the same Erlang, on the base's Debian.
  image: {builder}
  variables:
    MIX_ENV: {mix_env}
  # Dependencies and compiled code, kept between pipelines until mix.lock changes.
  cache:
    key:
      files: [mix.lock]
    paths: [deps/, _build/]
  before_script:
    - {tools}
{before}{mix_steps}{after}
image:build:
  extends: .image
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
  script:
    - {imgbuild} build -t "$CI_REGISTRY_IMAGE:mr-$CI_MERGE_REQUEST_IID"

image:push:
  extends: .image
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
  variables:
    IMGBUILD_USERNAME: $CI_REGISTRY_USER
    IMGBUILD_PASSWORD: $CI_REGISTRY_PASSWORD
  script:
    - {imgbuild} build --push -t "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHA" -t "$CI_REGISTRY_IMAGE:latest"
"#,
        builder = recipe.builder,
        origin = origin(recipe),
        mix_env = yaml_single_quoted(&recipe.mix_env),
        tools = yaml_single_quoted(&build_tools(&recipe.packages)),
    )
}

/// The GitLab pipeline whose image jobs run in imgbuild's own image: the release is built in
/// the builder image by the job `release` and handed on as an artifact (`_build/ENV/rel/`).
fn gitlab_in_image(recipe: &Recipe, reference: &str) -> String {
    let mix_steps: String = recipe
        .mix
        .iter()
        .map(|l| format!("    - {}\n", yaml_single_quoted(l)))
        .collect();
    format!(
        r#"# Builds the release, then the image on merge requests, and builds and pushes it on the
# default branch. Written by `imgbuild init --ci gitlab --imgbuild-image`. Credentials are the
# job's own CI_REGISTRY_USER and CI_REGISTRY_PASSWORD (the project's container registry); set
# the CI/CD variable IMGBUILD_CACHE_REPO to share a registry cache between runners.
# {origin}
stages: [release, image]

release:
  stage: release
  # The release is built where the Dockerfile built it: the same Erlang, on the base's Debian.
  image: {builder}
  variables:
    MIX_ENV: {mix_env}
  # Dependencies and compiled code, kept between pipelines until mix.lock changes.
  cache:
    key:
      files: [mix.lock]
    paths: [deps/, _build/]
  before_script:
    - {tools}
  script:
{mix_steps}  artifacts:
    paths: [{rel}]
    expire_in: 1 day

# imgbuild's own image; its entrypoint is imgbuild, so GitLab's shell is asked for instead.
.image:
  stage: image
  image:
    name: {image}
    entrypoint: [""]
  needs: [release]
  variables:
    GIT_DEPTH: "1"

image:build:
  extends: .image
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
  script:
    - imgbuild build -t "$CI_REGISTRY_IMAGE:mr-$CI_MERGE_REQUEST_IID"

image:push:
  extends: .image
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
  variables:
    IMGBUILD_USERNAME: $CI_REGISTRY_USER
    IMGBUILD_PASSWORD: $CI_REGISTRY_PASSWORD
  script:
    - imgbuild build --push -t "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHA" -t "$CI_REGISTRY_IMAGE:latest"
"#,
        builder = recipe.builder,
        origin = origin(recipe),
        mix_env = yaml_single_quoted(&recipe.mix_env),
        tools = yaml_single_quoted(&build_tools(&recipe.packages)),
        rel = yaml_single_quoted(&format!("_build/{}/rel/", recipe.mix_env)),
        image = yaml_single_quoted(reference),
    )
}

/// How the recipe runs imgbuild: through the Mix package's task when it installed it.
fn command(install: &Install) -> &'static str {
    match install {
        Install::Mix => "mix imgbuild",
        _ => "imgbuild",
    }
}

/// A YAML single-quoted scalar (quotes doubled).
fn yaml_single_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The repository's default branch, from git's record of the remote's HEAD, else the branch
/// checked out, else `main`.
fn default_branch(dir: &Path) -> String {
    let read = |p: &str| std::fs::read_to_string(dir.join(".git").join(p)).ok();
    read("refs/remotes/origin/HEAD")
        .and_then(|t| {
            t.trim()
                .strip_prefix("ref: refs/remotes/origin/")
                .map(str::to_string)
        })
        .or_else(|| {
            read("HEAD").and_then(|t| {
                t.trim()
                    .strip_prefix("ref: refs/heads/")
                    .map(str::to_string)
            })
        })
        .filter(|b| {
            !b.is_empty()
                && b.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        })
        .unwrap_or_else(|| "main".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::dockerfile::{self, shapes};
    use yaml_rust2::{Yaml, YamlLoader};

    const SUM: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn from_dockerfile(text: &str) -> Project {
        Project {
            runner: Some(dockerfile::runner_stage(text)),
            builder: dockerfile::builder_stage(text),
            ..Project::default()
        }
    }

    fn parse(text: &str) -> Yaml {
        let mut docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    fn strs(y: &Yaml) -> Vec<String> {
        y.as_vec()
            .unwrap_or_else(|| panic!("not a list: {y:?}"))
            .iter()
            .map(|s| s.as_str().unwrap_or_else(|| panic!("{s:?}")).to_string())
            .collect()
    }

    /// The GitHub job's steps, as (name, run) pairs, and the job.
    fn github_steps(text: &str) -> (Yaml, Vec<Yaml>) {
        let doc = parse(text);
        let job = doc["jobs"]["image"].clone();
        let steps = job["steps"].as_vec().cloned().unwrap_or_default();
        (job, steps)
    }

    fn mix_of(runs: &[String]) -> Vec<String> {
        runs.iter()
            .filter(|r| r.starts_with("mix "))
            .cloned()
            .collect()
    }

    fn assert_install(script: &str) {
        assert!(script.contains("sha256sum -c"), "{script}");
        assert!(!script.contains("cargo"), "{script}");
    }

    #[test]
    fn replays_each_phoenix_builder_in_its_order() {
        let install = Install::pinned("https://dl.example.com/imgbuild-0.1.0", SUM).unwrap();
        for (text, steps) in shapes::with_mix_steps() {
            let want: Vec<String> = steps
                .into_iter()
                .chain(["mix release --overwrite"])
                .map(String::from)
                .collect();
            let p = from_dockerfile(&text);

            let (path, gh, notes) = workflow(Ci::Github, &p, &install);
            // Phoenix's builder stage has nothing the recipe leaves out.
            assert!(
                !notes.iter().any(|n| n.contains("not in the CI recipe")),
                "{notes:?}"
            );
            assert_eq!(path, Path::new(".github/workflows/image.yml"));
            assert!(!gh.contains("cargo"), "{gh}");
            let (job, steps) = github_steps(&gh);
            assert_eq!(
                job["container"].as_str(),
                Some("hexpm/elixir:1.17.3-erlang-27.1.2-debian-bookworm-20241016-slim")
            );
            assert_eq!(job["env"]["MIX_ENV"].as_str(), Some("prod"));
            let runs: Vec<String> = steps
                .iter()
                .map(|s| s["run"].as_str().unwrap_or_default().to_string())
                .collect();
            assert_eq!(mix_of(&runs), want, "{gh}");
            // Each mix step is its own step, named by its command.
            for s in steps
                .iter()
                .filter(|s| s["run"].as_str().is_some_and(|r| r.starts_with("mix ")))
            {
                assert_eq!(s["name"], s["run"]);
            }
            // The cache, restored before the first mix step and keyed by mix.lock.
            let cache_at = steps
                .iter()
                .position(|s| s["uses"].as_str() == Some("actions/cache@v4"))
                .unwrap();
            let first_mix = runs.iter().position(|r| r.starts_with("mix ")).unwrap();
            assert!(cache_at < first_mix);
            let with = &steps[cache_at]["with"];
            assert_eq!(
                with["path"].as_str().map(|p| p.lines().collect::<Vec<_>>()),
                Some(vec!["deps", "_build"])
            );
            assert_eq!(
                with["key"].as_str(),
                Some("${{ runner.os }}-mix-${{ hashFiles('mix.lock') }}")
            );
            assert_eq!(
                with["restore-keys"].as_str().map(str::trim),
                Some("${{ runner.os }}-mix-")
            );
            // imgbuild is installed (pinned, checked) before the build steps.
            let install_at = steps
                .iter()
                .position(|s| s["name"].as_str() == Some("Install imgbuild"))
                .unwrap();
            assert!(install_at < first_mix);
            assert_install(&runs[install_at]);
            assert!(runs[install_at].contains("url='https://dl.example.com/imgbuild-0.1.0'"));
            assert!(runs[install_at].contains(&format!("sum='{SUM}'")));
            assert!(steps[install_at]["env"].is_badvalue());
            // The build tools the builder stage installs.
            assert!(
                runs.iter()
                    .any(|r| r.starts_with("dpkg -s build-essential git ")),
                "{runs:?}"
            );

            let (path, gl, _) = workflow(Ci::Gitlab, &p, &install);
            assert_eq!(path, Path::new(".gitlab-ci.yml"));
            assert!(!gl.contains("cargo"), "{gl}");
            let doc = parse(&gl);
            let template = &doc[".image"];
            let before = strs(&template["before_script"]);
            assert_eq!(mix_of(&before), want, "{gl}");
            assert_eq!(template["variables"]["MIX_ENV"].as_str(), Some("prod"));
            assert_eq!(strs(&template["cache"]["key"]["files"]), ["mix.lock"]);
            assert_eq!(strs(&template["cache"]["paths"]), ["deps/", "_build/"]);
            let install_at = before.iter().position(|l| l.contains("sha256sum")).unwrap();
            assert!(install_at < before.iter().position(|l| l.starts_with("mix ")).unwrap());
            assert_install(&before[install_at]);
            for job in ["image:build", "image:push"] {
                assert_eq!(doc[job]["extends"].as_str(), Some(".image"));
            }
        }
    }

    #[test]
    fn without_a_dockerfile_the_aliases_decide() {
        let mut p = Project {
            assets_setup: true,
            assets_deploy: true,
            mix_lock: true,
            ..Project::default()
        };
        let (r, notes) = recipe(&p);
        assert_eq!(
            r.mix,
            [
                "mix local.hex --force",
                "mix local.rebar --force",
                "mix deps.get --only prod",
                "mix deps.compile",
                "mix assets.setup",
                "mix compile",
                "mix assets.deploy",
                "mix release --overwrite"
            ]
        );
        assert_eq!(r.builder, DEFAULT_BUILDER);
        assert_eq!(r.packages, ["build-essential", "git"]);
        assert!(
            notes.iter().any(|n| n.contains(DEFAULT_BUILDER)),
            "{notes:?}"
        );
        // No mix.lock: no Hex to install; assets/ with no alias to build it is named.
        p = Project {
            assets: true,
            ..Project::default()
        };
        let (r, notes) = recipe(&p);
        assert_eq!(
            r.mix,
            [
                "mix deps.get --only prod",
                "mix deps.compile",
                "mix compile",
                "mix release --overwrite"
            ]
        );
        assert!(
            notes.iter().any(|n| n.contains("assets.deploy")),
            "{notes:?}"
        );
        // A builder step that is not mix is named, not dropped silently.
        let (_, notes) = recipe(&from_dockerfile(
            "FROM elixir AS build\nRUN cd assets && npm ci\nRUN mix release\nFROM debian\n",
        ));
        assert!(
            notes
                .iter()
                .any(|n| n.contains("`npm ci` is not in the CI recipe")),
            "{notes:?}"
        );
    }

    #[test]
    fn variables_install_names_what_is_missing() {
        let (_, gh, notes) = workflow(Ci::Github, &Project::default(), &Install::Variables);
        assert!(
            notes.iter().any(|n| n.contains("IMGBUILD_SHA256")),
            "{notes:?}"
        );
        let (_, steps) = github_steps(&gh);
        let step = steps
            .iter()
            .find(|s| s["name"].as_str() == Some("Install imgbuild"))
            .unwrap();
        assert_eq!(
            step["env"]["IMGBUILD_URL"].as_str(),
            Some("${{ vars.IMGBUILD_URL }}")
        );
        assert_eq!(
            step["env"]["IMGBUILD_SHA256"].as_str(),
            Some("${{ vars.IMGBUILD_SHA256 }}")
        );
        let script = step["run"].as_str().unwrap();
        assert_install(script);
        // Run with neither variable: it fails before any download, naming both.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env_remove("IMGBUILD_URL")
            .env_remove("IMGBUILD_SHA256")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("IMGBUILD_URL")
                && err.contains("IMGBUILD_SHA256")
                && err.contains("--imgbuild-url"),
            "{err}"
        );
    }

    /// A project with the Mix package: imgbuild is installed by `mix imgbuild.install` after
    /// the dependencies are fetched and compiled, and run as `mix imgbuild`; no download line.
    #[test]
    fn the_mix_package_installs_and_runs_imgbuild() {
        let p = Project {
            mix_lock: true,
            mix_package: true,
            ..Project::default()
        };
        let (_, gh, notes) = workflow(Ci::Github, &p, &Install::Mix);
        assert!(notes.iter().any(|n| n.contains("Mix package")), "{notes:?}");
        assert!(
            !gh.contains("sha256sum") && !gh.contains("IMGBUILD_URL"),
            "{gh}"
        );
        let (_, steps) = github_steps(&gh);
        let runs: Vec<&str> = steps
            .iter()
            .map(|s| s["run"].as_str().unwrap_or_default())
            .collect();
        let at = |want: &str| runs.iter().position(|r| r.starts_with(want)).unwrap();
        let install = at("mix imgbuild.install --if-missing");
        assert!(at("mix deps.compile") < install && install < at("mix imgbuild build"));
        assert_eq!(
            runs.iter().filter(|r| r.contains(" build ")).count(),
            2,
            "{runs:?}"
        );
        assert!(
            runs.iter()
                .filter(|r| r.contains(" build "))
                .all(|r| r.starts_with("mix imgbuild build ")),
            "{runs:?}"
        );

        let (_, gl, _) = workflow(Ci::Gitlab, &p, &Install::Mix);
        let doc = parse(&gl);
        let before = strs(&doc[".image"]["before_script"]);
        let install = before
            .iter()
            .position(|l| l == "mix imgbuild.install --if-missing")
            .unwrap();
        let compiled = before.iter().position(|l| l == "mix deps.compile").unwrap();
        assert!(compiled < install, "{before:?}");
        assert!(!gl.contains("sha256sum"), "{gl}");
        for job in ["image:build", "image:push"] {
            let script = strs(&doc[job]["script"]);
            assert!(script[0].starts_with("mix imgbuild build "), "{script:?}");
        }
    }

    /// GitLab with imgbuild's own image: a release job in the builder image hands the release on
    /// as an artifact; the image jobs run in imgbuild's image with GitLab's shell as entrypoint.
    #[test]
    fn gitlab_in_imgbuilds_own_image() {
        let p = Project {
            mix_lock: true,
            ..Project::default()
        };
        let install = Install::image("registry.example.com/tools/imgbuild:0.1.0-debug").unwrap();
        let (_, gl, notes) = workflow(Ci::Gitlab, &p, &install);
        assert!(
            notes.iter().any(|n| n.contains("job `release`")),
            "{notes:?}"
        );
        let doc = parse(&gl);
        assert_eq!(strs(&doc["stages"]), ["release", "image"]);
        let release = &doc["release"];
        assert_eq!(release["image"].as_str(), Some(DEFAULT_BUILDER));
        let script = strs(&release["script"]);
        assert_eq!(
            script.last().map(String::as_str),
            Some("mix release --overwrite")
        );
        assert_eq!(strs(&release["artifacts"]["paths"]), ["_build/prod/rel/"]);
        let image = &doc[".image"];
        assert_eq!(
            image["image"]["name"].as_str(),
            Some("registry.example.com/tools/imgbuild:0.1.0-debug")
        );
        assert_eq!(strs(&image["image"]["entrypoint"]), [""]);
        assert_eq!(strs(&image["needs"]), ["release"]);
        assert!(
            !gl.contains("sha256sum") && !gl.contains("mix imgbuild"),
            "{gl}"
        );
        for job in ["image:build", "image:push"] {
            assert_eq!(doc[job]["extends"].as_str(), Some(".image"));
            assert!(strs(&doc[job]["script"])[0].starts_with("imgbuild build "));
        }
        for bad in ["", "a b", "x/${{y}}", "r/'q'"] {
            assert!(Install::image(bad).is_err(), "{bad:?}");
        }
    }

    /// The download line installs a release archive's binary as it does a bare binary.
    #[test]
    fn a_release_archive_is_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("imgbuild-9.9.9-x86_64-unknown-linux-gnu");
        std::fs::create_dir(&top).unwrap();
        std::fs::write(top.join("imgbuild"), "#!/bin/sh\necho fake\n").unwrap();
        let archive = dir
            .path()
            .join("imgbuild-9.9.9-x86_64-unknown-linux-gnu.tar.gz");
        let ok = std::process::Command::new("tar")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(dir.path())
            .arg("imgbuild-9.9.9-x86_64-unknown-linux-gnu")
            .status()
            .unwrap();
        assert!(ok.success());
        let sum = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(std::fs::read(&archive).unwrap()))
        };
        // curl and wget both read file:// URLs; the script only needs the name's ending.
        let url = format!("file://{}", archive.display());
        let script = install_script(&Install::Pinned { url, sha256: sum });
        let bin = dir.path().join("bin");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("IMGBUILD_INSTALL_DIR", &bin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let installed = std::fs::read_to_string(bin.join("imgbuild")).unwrap();
        assert!(installed.contains("echo fake"), "{installed}");
    }

    #[test]
    fn pinned_install_is_checked() {
        assert!(
            Install::pinned("https://x/imgbuild", &SUM.to_uppercase()).is_ok_and(|i| i
                == Install::Pinned {
                    url: "https://x/imgbuild".into(),
                    sha256: SUM.into()
                })
        );
        for (url, sum, says) in [
            ("ftp://x/imgbuild", SUM, "not an http(s) URL"),
            ("https://x/a b", SUM, "quote"),
            ("https://x/${{ secrets.T }}", SUM, "quote"),
            ("https://x/imgbuild", "abc", "64 hex digits"),
            (
                "https://x/imgbuild",
                &SUM.replace('0', "g"),
                "64 hex digits",
            ),
        ] {
            let e = Install::pinned(url, sum).unwrap_err().to_string();
            assert!(e.contains(says), "{url} {sum}: {e}");
        }
    }

    #[test]
    fn default_branch_from_git() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(default_branch(dir.path()), "main");
        std::fs::create_dir_all(dir.path().join(".git/refs/remotes/origin")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "ref: refs/heads/feature\n").unwrap();
        assert_eq!(default_branch(dir.path()), "feature");
        std::fs::write(
            dir.path().join(".git/refs/remotes/origin/HEAD"),
            "ref: refs/remotes/origin/trunk\n",
        )
        .unwrap();
        assert_eq!(default_branch(dir.path()), "trunk");
    }
}
