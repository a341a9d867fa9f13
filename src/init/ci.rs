//! The CI workflow `imgbuild init --ci` writes: the release is built in the Dockerfile's builder
//! image (the same Erlang, on the same Debian release as the runtime base, so the start-up
//! check passes), then imgbuild builds the image. On pull or merge requests it only builds; on
//! the default branch it pushes, with the CI's own registry credentials, through the registry
//! cache when one is configured.

use std::path::{Path, PathBuf};

use super::{Ci, Project};

/// The builder used when no Dockerfile names one: an Elixir image on Debian bookworm, the
/// default base's release.
const DEFAULT_BUILDER: &str = "elixir:1.17";

/// The workflow's path (relative to the project), its text, and notes for the user.
pub fn workflow(ci: Ci, p: &Project) -> (PathBuf, String, Vec<String>) {
    let mut notes = Vec::new();
    let builder = match p.runner.as_ref().and_then(|r| r.builder.clone()) {
        Some(b) if !b.contains('$') => b,
        _ => {
            notes.push(format!(
                "no Dockerfile names the image the release is built in; the workflow uses {DEFAULT_BUILDER}: use an image with your Elixir and Erlang on the base's Debian release"
            ));
            DEFAULT_BUILDER.to_string()
        }
    };
    let mut release = vec![
        "mix local.hex --force && mix local.rebar --force".to_string(),
        "mix deps.get --only prod".into(),
        "mix compile".into(),
    ];
    if p.assets {
        release.push("mix assets.deploy".into());
    }
    release.push("mix release --overwrite".into());
    notes.push(
        "the workflow installs imgbuild from the CI variable IMGBUILD_URL (a download address of the imgbuild binary), else with cargo install".to_string(),
    );
    match ci {
        Ci::Github => (
            PathBuf::from(".github/workflows/image.yml"),
            github(&builder, &release, &default_branch(&p.dir)),
            notes,
        ),
        Ci::Gitlab => (
            PathBuf::from(".gitlab-ci.yml"),
            gitlab(&builder, &release),
            notes,
        ),
    }
}

/// How the job gets imgbuild: a binary from `$IMGBUILD_URL`, else cargo.
const INSTALL: &str = r#"if [ -n "$IMGBUILD_URL" ]; then curl -fsSL "$IMGBUILD_URL" -o /usr/local/bin/imgbuild && chmod 755 /usr/local/bin/imgbuild; else cargo install --locked --root /usr/local imgbuild; fi"#;

fn github(builder: &str, release: &[String], branch: &str) -> String {
    let steps: String = release.iter().map(|l| format!("          {l}\n")).collect();
    format!(
        r#"# Builds the image on pull requests, and builds and pushes it on {branch}.
# Written by `imgbuild init --ci github`. Credentials are the workflow's own GITHUB_TOKEN (for
# ghcr.io); set the repository variable IMGBUILD_CACHE_REPO to share a registry cache between
# runners, and IMGBUILD_URL to where your runners download imgbuild.
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
      MIX_ENV: prod
      IMGBUILD_CACHE_REPO: ${{{{ vars.IMGBUILD_CACHE_REPO }}}}
    steps:
      - uses: actions/checkout@v4
      - name: Build tools
        run: apt-get update -y && apt-get install -y build-essential git curl
      - name: Release
        run: |
{steps}      - name: Install imgbuild
        env:
          IMGBUILD_URL: ${{{{ vars.IMGBUILD_URL }}}}
        run: {install}
      - name: Image name
        run: echo "IMAGE=ghcr.io/$(echo "$GITHUB_REPOSITORY" | tr '[:upper:]' '[:lower:]')" >> "$GITHUB_ENV"
      - name: Build the image
        if: github.event_name == 'pull_request'
        run: imgbuild build -t "$IMAGE:pr-${{{{ github.event.number }}}}"
      - name: Build and push the image
        if: github.event_name == 'push'
        env:
          IMGBUILD_USERNAME: ${{{{ github.actor }}}}
          IMGBUILD_PASSWORD: ${{{{ secrets.GITHUB_TOKEN }}}}
        run: imgbuild build --push -t "$IMAGE:${{{{ github.sha }}}}" -t "$IMAGE:latest"
"#,
        install = yaml_single_quoted(INSTALL),
    )
}

fn gitlab(builder: &str, release: &[String]) -> String {
    let steps: String = release
        .iter()
        .map(|l| format!("    - {}\n", yaml_single_quoted(l)))
        .collect();
    format!(
        r#"# Builds the image on merge requests, and builds and pushes it on the default branch.
# Written by `imgbuild init --ci gitlab`. Credentials are the job's own CI_REGISTRY_USER and
# CI_REGISTRY_PASSWORD (the project's container registry); set the CI/CD variable
# IMGBUILD_CACHE_REPO to share a registry cache between runners, and IMGBUILD_URL to where your
# runners download imgbuild.
stages: [image]

.image:
  stage: image
  # The release is built where the Dockerfile built it: the same Erlang, on the base's Debian.
  image: {builder}
  variables:
    MIX_ENV: prod
  before_script:
    - apt-get update -y && apt-get install -y build-essential git curl
{steps}    - {install}

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
        install = yaml_single_quoted(INSTALL),
    )
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
