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
    let mix_steps = gitlab_lines(&recipe.mix);
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
{builder_keys}{before}{mix_steps}{after}
{image_jobs}"#,
        builder_keys = gitlab_builder_keys(recipe),
        origin = origin(recipe),
        image_jobs = gitlab_image_jobs(imgbuild),
    )
}

/// A GitLab job's keys that build in the builder image (the same in both GitLab recipes): the
/// image, MIX_ENV, the cache of deps/ and _build/ by mix.lock, the build tools.
fn gitlab_builder_keys(recipe: &Recipe) -> String {
    format!(
        r#"  # The release is built where the Dockerfile built it: the same Erlang, on the base's Debian.
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
"#,
        builder = recipe.builder,
        mix_env = yaml_single_quoted(&recipe.mix_env),
        tools = yaml_single_quoted(&build_tools(&recipe.packages)),
    )
}

/// The two image jobs of both GitLab recipes: build on merge requests, build and push on the
/// default branch, running imgbuild as `imgbuild` says.
fn gitlab_image_jobs(imgbuild: &str) -> String {
    format!(
        r#"image:build:
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
"#
    )
}

/// Shell lines as a GitLab script's items.
fn gitlab_lines(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("    - {}\n", yaml_single_quoted(l)))
        .collect()
}

/// The GitLab pipeline whose image jobs run in imgbuild's own image: the release is built in
/// the builder image by the job `release` and handed on as an artifact (`_build/ENV/rel/`).
fn gitlab_in_image(recipe: &Recipe, reference: &str) -> String {
    let mix_steps = gitlab_lines(&recipe.mix);
    format!(
        r#"# Builds the release, then the image on merge requests, and builds and pushes it on the
# default branch. Written by `imgbuild init --ci gitlab --imgbuild-image`. Credentials are the
# job's own CI_REGISTRY_USER and CI_REGISTRY_PASSWORD (the project's container registry); set
# the CI/CD variable IMGBUILD_CACHE_REPO to share a registry cache between runners.
# {origin}
stages: [release, image]

release:
  stage: release
{builder_keys}  script:
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

{image_jobs}"#,
        builder_keys = gitlab_builder_keys(recipe),
        origin = origin(recipe),
        image_jobs = gitlab_image_jobs("imgbuild"),
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
mod tests;
