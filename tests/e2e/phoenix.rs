//! Phoenix awareness, tested on what imgbuild reads (the tests cannot build Phoenix itself):
//! a release that carries a `phoenix` application and no `bin/server` gets `PHX_SERVER=true`
//! and serves; its `runtime.exs`'s required variables are named, never valued; with `--cmd`
//! of the user's there is a warning instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::lab::{self, TestResult, fail, run};

type Failed = libtest_mimic::Failed;

const TOOLS: &[&str] = &["docker-registry", "skopeo", "umoci", "debootstrap", "mix"];

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
/// in `lib/` and the `.rel`, no `bin/server`, a `runtime.exs` that needs two secrets. (The
/// runtime.exs is not loaded at boot here: the sample's sys.config does not name it.)
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
    let (status, body) = lab::run_and_get(&docker, "imgbuild-e2e/phx:1")?;
    assert!(status.contains("200"), "{status} {body}");

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
