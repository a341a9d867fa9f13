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
