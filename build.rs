//! Records the commit imgbuild is built from, for `imgbuild --version`: `IMGBUILD_COMMIT` when
//! set (a build from a source archive, where there is no git), else git's short hash of HEAD with
//! `-dirty` when tracked files differ from it, else `unknown`.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether git's work tree here is this crate's directory.
fn own_repository() -> bool {
    let top = git(&["rev-parse", "--show-toplevel"]).and_then(|t| std::fs::canonicalize(t).ok());
    let here = std::env::var_os("CARGO_MANIFEST_DIR").and_then(|d| std::fs::canonicalize(d).ok());
    top.is_some() && top == here
}

fn main() {
    println!("cargo:rerun-if-env-changed=IMGBUILD_COMMIT");
    // Again when the sources change, for the `-dirty` mark.
    for p in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={p}");
    }
    let commit = match std::env::var("IMGBUILD_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        // Only this crate's own repository: not one it was unpacked or vendored into.
        _ if !own_repository() => "unknown".to_string(),
        _ => {
            // Built again when HEAD moves (a commit, a checkout).
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                let dir = PathBuf::from(dir);
                println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
                if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                    println!(
                        "cargo:rerun-if-changed={}",
                        PathBuf::from(common).join("refs/heads").display()
                    );
                }
            }
            match git(&["rev-parse", "--short=12", "HEAD"]) {
                Some(hash) if !hash.is_empty() => {
                    let clean = Command::new("git")
                        .args([
                            "diff",
                            "--quiet",
                            "HEAD",
                            "--",
                            "src",
                            "Cargo.toml",
                            "Cargo.lock",
                        ])
                        .status()
                        .is_ok_and(|s| s.success());
                    if clean { hash } else { format!("{hash}-dirty") }
                }
                _ => "unknown".to_string(),
            }
        }
    };
    println!("cargo:rustc-env=IMGBUILD_COMMIT={commit}");
}
