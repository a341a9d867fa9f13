//! What a Phoenix release needs that a release alone does not say: an endpoint serves only when
//! `PHX_SERVER` is set (which `mix phx.gen.release`'s `bin/server` does), and `runtime.exs`
//! usually reads secrets from the environment at boot.

use super::Release;

/// What the build should do for a Phoenix release, and tell the user.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advice {
    /// Environment the image needs (`PHX_SERVER=true`).
    pub env: Vec<(String, String)>,
    /// Said as progress, and kept in the report.
    pub notes: Vec<String>,
    /// Said even when quiet.
    pub warnings: Vec<String>,
}

/// Whether the release runs Phoenix (it carries the `phoenix` application).
pub(crate) fn uses_phoenix(release: &Release) -> bool {
    release.applications.iter().any(|a| a.name == "phoenix")
}

/// The advice for `release`, given the command and environment the user set.
pub(crate) fn advise(
    release: &Release,
    cmd: Option<&[String]>,
    env: &[(String, String)],
) -> Advice {
    let mut advice = Advice::default();
    if !uses_phoenix(release) {
        return advice;
    }
    let set_by_user = env.iter().any(|(k, _)| k == "PHX_SERVER");
    if !release.has_server && !set_by_user {
        match cmd {
            None => {
                advice.env.push(("PHX_SERVER".into(), "true".into()));
                advice.notes.push(format!(
                    "{} uses Phoenix and has no bin/server: PHX_SERVER=true is set so that its endpoint serves (--env PHX_SERVER=false to turn that off)",
                    release.name
                ));
            }
            Some(cmd) => advice.warnings.push(format!(
                "{} uses Phoenix and has no bin/server, and --cmd {:?} sets nothing: its endpoint may not serve. Add --env PHX_SERVER=true (or run `mix phx.gen.release`)",
                release.name,
                cmd.join(" ")
            )),
        }
    }
    let needed = runtime_env(release);
    if !needed.is_empty() {
        advice.notes.push(format!(
            "runtime.exs reads {} at boot: pass them when the container runs (e.g. docker run -e {}=...); no values are put into the image",
            needed.join(", "),
            needed[0]
        ));
    }
    advice
}

/// The environment variables the release's `runtime.exs` requires at boot: those read with
/// `System.fetch_env!` and those read with `System.get_env` and followed by a `raise`.
pub(crate) fn runtime_env(release: &Release) -> Vec<String> {
    let path = release
        .root
        .join("releases")
        .join(&release.version)
        .join("runtime.exs");
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    required_vars(&text)
}

fn required_vars(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |name: &str| {
        if !name.is_empty() && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    };
    // Comments say nothing about what the code reads.
    let code: String = text
        .lines()
        .map(|l| l.split_once('#').map_or(l, |(c, _)| c))
        .collect::<Vec<_>>()
        .join("\n");
    for (i, _) in code.match_indices("System.") {
        let rest = &code[i + "System.".len()..];
        let (fetch, get) = (
            rest.starts_with("fetch_env!(\""),
            rest.starts_with("get_env(\""),
        );
        if !fetch && !get {
            continue;
        }
        let Some(name) = rest
            .split_once("(\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(n, _)| n)
        else {
            continue;
        };
        if fetch {
            push(name);
            continue;
        }
        // `System.get_env("X") || raise ...`: required too; a default (`|| "4000"`) is not.
        let after = rest.split_once(')').map_or("", |(_, r)| r);
        let next = after.find("System.").unwrap_or(after.len());
        let tail = after[..next].trim_start();
        if tail.starts_with("||") && tail[2..].trim_start().starts_with("raise") {
            push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::AppVersion;

    const RUNTIME: &str = r#"
import Config
# System.fetch_env!("NOT_THIS") in a comment
if System.get_env("PHX_SERVER") do
  config :hello, HelloWeb.Endpoint, server: true
end
if config_env() == :prod do
  database_url =
    System.get_env("DATABASE_URL") ||
      raise """
      environment variable DATABASE_URL is missing.
      """
  secret_key_base =
    System.get_env("SECRET_KEY_BASE") ||
      raise "environment variable SECRET_KEY_BASE is missing."
  host = System.get_env("PHX_HOST") || "example.com"
  port = String.to_integer(System.get_env("PORT") || "4000")
  pool = System.fetch_env!("POOL_SIZE")
end
"#;

    #[test]
    fn reads_what_runtime_exs_requires() {
        assert_eq!(
            required_vars(RUNTIME),
            ["DATABASE_URL", "SECRET_KEY_BASE", "POOL_SIZE"]
        );
    }

    fn phoenix_release(dir: &std::path::Path, has_server: bool) -> Release {
        let mut r = Release::for_tests("hello", "0.1.0");
        r.root = dir.to_path_buf();
        r.has_server = has_server;
        r.applications.push(AppVersion {
            name: "phoenix".into(),
            version: "1.7.14".into(),
        });
        r
    }

    #[test]
    fn phoenix_without_bin_server_gets_phx_server() {
        let dir = tempfile::tempdir().unwrap();
        let rel = phoenix_release(dir.path(), false);
        let a = advise(&rel, None, &[]);
        assert_eq!(a.env, [("PHX_SERVER".to_string(), "true".to_string())]);
        assert!(a.warnings.is_empty());
        // The user's own PHX_SERVER wins; bin/server needs nothing.
        let own = [("PHX_SERVER".to_string(), "false".to_string())];
        assert!(advise(&rel, None, &own).env.is_empty());
        assert!(
            advise(&phoenix_release(dir.path(), true), None, &[])
                .env
                .is_empty()
        );
        // With a command of the user's, a warning instead.
        let cmd = ["/app/bin/hello".to_string(), "start".to_string()];
        let a = advise(&rel, Some(&cmd), &[]);
        assert!(a.env.is_empty());
        assert!(a.warnings[0].contains("may not serve"), "{a:?}");
        // Not Phoenix: nothing.
        let plain = Release::for_tests("hello", "0.1.0");
        assert_eq!(advise(&plain, None, &[]), Advice::default());
        // runtime.exs's variables are listed, never valued.
        let exs = dir.path().join("releases/0.1.0");
        std::fs::create_dir_all(&exs).unwrap();
        std::fs::write(exs.join("runtime.exs"), RUNTIME).unwrap();
        let a = advise(&rel, None, &[]);
        assert!(
            a.notes[1].contains("DATABASE_URL, SECRET_KEY_BASE, POOL_SIZE"),
            "{a:?}"
        );
    }
}
