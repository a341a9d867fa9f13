//! Credentials, found where users already keep them: imgbuild's CI variables, Docker's
//! `DOCKER_AUTH_CONFIG` and `config.json` (`auths`, `credHelpers`, `credsStore`, through the
//! docker-credential-helper protocol), and podman's `auth.json`. `login` writes where
//! `docker login` would, so docker, podman and imgbuild share one login.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use base64::Engine;
use serde_json::{Map, Value};

use super::{Credential, CredentialStore, Secret};
use crate::error::{Error, IoContext, Result};

/// The key Docker uses for Docker Hub in `config.json`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Canonical host for a config key or registry host: scheme and path dropped, lowercase, and
/// Docker Hub's aliases folded into `docker.io`.
pub fn normalize_host(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    }
}

/// The server URL credential helpers and `config.json` use for a host.
pub(crate) fn server_key(host: &str) -> String {
    if normalize_host(host) == "docker.io" {
        DOCKER_HUB_KEY.into()
    } else {
        normalize_host(host)
    }
}

/// A parsed auth file (Docker's `config.json` or podman's `auth.json`).
struct AuthFile {
    /// Where it came from, for messages: a path or `DOCKER_AUTH_CONFIG`.
    origin: String,
    json: Value,
}

impl AuthFile {
    fn load(path: &Path) -> Result<Option<AuthFile>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read credentials file", path, e)),
        };
        Self::parse(&text, &path.display().to_string()).map(Some)
    }

    fn parse(text: &str, origin: &str) -> Result<AuthFile> {
        let json: Value = if text.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(text).map_err(|e| {
                Error::Input(format!(
                    "{origin} is not valid JSON ({e}): fix or remove it"
                ))
            })?
        };
        Ok(AuthFile {
            origin: origin.to_string(),
            json,
        })
    }

    /// The `credHelpers` entry for `host`.
    fn helper_for(&self, host: &str) -> Option<String> {
        self.json
            .get("credHelpers")?
            .as_object()?
            .iter()
            .find(|(k, _)| normalize_host(k) == host)
            .and_then(|(_, v)| v.as_str().map(str::to_string))
    }

    fn store(&self) -> Option<String> {
        self.json
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// The `auths` entry for `host`, preferring a key that is the bare host over one that
    /// names a repository path (podman allows `quay.io/org`).
    fn auth_for(&self, host: &str) -> Result<Option<Credential>> {
        let Some(auths) = self.json.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        let mut matches: Vec<(&String, &Value)> = auths
            .iter()
            .filter(|(k, _)| normalize_host(k) == host)
            .collect();
        matches.sort_by_key(|(k, _)| {
            k.trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .contains('/')
        });
        for (key, entry) in matches {
            let source = format!("{} (auths[{key:?}])", self.origin);
            if let Some(secret) = decode_entry(entry, &source)? {
                return Ok(Some(Credential { secret, source }));
            }
        }
        Ok(None)
    }
}

fn decode_entry(entry: &Value, source: &str) -> Result<Option<Secret>> {
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if let Some(t) = field("identitytoken") {
        return Ok(Some(Secret::IdentityToken(t)));
    }
    if let Some(t) = field("registrytoken") {
        return Ok(Some(Secret::RegistryToken(t)));
    }
    if let Some(auth) = field("auth") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| {
                Error::Input(format!(
                    "{source}: `auth` is not base64 of USER:PASSWORD; log in again"
                ))
            })?;
        let text = String::from_utf8(raw)
            .map_err(|_| Error::Input(format!("{source}: `auth` is not UTF-8; log in again")))?;
        let Some((username, password)) = text.split_once(':') else {
            return Err(Error::Input(format!(
                "{source}: `auth` lacks the ':' between user and password; log in again"
            )));
        };
        return Ok(Some(Secret::Basic {
            username: username.into(),
            password: password.into(),
        }));
    }
    if let (Some(username), Some(password)) = (field("username"), field("password")) {
        return Ok(Some(Secret::Basic { username, password }));
    }
    Ok(None)
}

/// Run `program VERB` (the docker-credential-helpers protocol) with `input` on stdin.
fn run_helper(program: &str, verb: &str, input: &[u8]) -> std::io::Result<std::process::Output> {
    let mut child = Command::new(program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // The helper may exit without reading; a broken pipe here is its business.
        let _ = stdin.write_all(input);
    }
    child.wait_with_output()
}

/// Ask `docker-credential-NAME get` for `host`'s credential.
fn helper_get(name: &str, host: &str) -> Result<Option<Credential>> {
    let program = format!("docker-credential-{name}");
    let source = format!("credential helper {program}");
    let out = run_helper(&program, "get", server_key(host).as_bytes()).map_err(|e| {
        Error::Input(format!(
            "{source} named in Docker's config cannot be run ({e}): install it on PATH or remove it from config.json"
        ))
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let said = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(Error::Input(format!(
            "{source} failed for {host}: {}",
            said.trim()
        )));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let a: Answer = serde_json::from_str(stdout.trim())
        .map_err(|e| Error::Input(format!("{source} answered something that is not JSON: {e}")))?;
    if a.secret.is_empty() {
        return Ok(None);
    }
    let secret = if a.username == "<token>" {
        Secret::IdentityToken(a.secret)
    } else {
        Secret::Basic {
            username: a.username,
            password: a.secret,
        }
    };
    Ok(Some(Credential { secret, source }))
}

/// Every place credentials may be, searched in order for each registry:
/// 1. `IMGBUILD_USERNAME`/`IMGBUILD_PASSWORD`, for the hosts in `IMGBUILD_REGISTRY` (comma
///    separated) or, when that is unset, for the registries being pushed to, never others;
/// 2. `DOCKER_AUTH_CONFIG` (config.json's shape, for CI);
/// 3. Docker's `config.json`: `credHelpers`, then `auths`, then `credsStore`;
/// 4. podman's `auth.json` (`REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
///    `~/.config/containers/auth.json`).
pub struct DockerCredentials {
    variables: Option<(String, String, Vec<String>)>,
    files: Vec<AuthFile>,
    searched: Vec<String>,
    found: Mutex<HashMap<String, Option<Credential>>>,
}

/// Where Docker keeps its config: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub(crate) fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker/config.json"))
}

fn podman_paths() -> Vec<PathBuf> {
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
        return vec![PathBuf::from(f)];
    }
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        out.push(PathBuf::from(dir).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        out.push(PathBuf::from(home).join(".config/containers/auth.json"));
    }
    out
}

impl DockerCredentials {
    /// Read every source from the environment. `push_targets` are the registry hosts the CI
    /// variables apply to when `IMGBUILD_REGISTRY` is not set.
    pub fn from_env(push_targets: &[String]) -> Result<DockerCredentials> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut searched = Vec::new();
        let variables = match (var("IMGBUILD_USERNAME"), var("IMGBUILD_PASSWORD")) {
            (Some(u), Some(p)) => {
                let hosts: Vec<String> = match var("IMGBUILD_REGISTRY") {
                    Some(list) => list.split(',').map(normalize_host).collect(),
                    None => push_targets.iter().map(|h| normalize_host(h)).collect(),
                };
                searched.push(format!(
                    "IMGBUILD_USERNAME/IMGBUILD_PASSWORD (for {})",
                    if hosts.is_empty() {
                        "no registry".to_string()
                    } else {
                        hosts.join(", ")
                    }
                ));
                Some((u, p, hosts))
            }
            (None, None) => None,
            _ => {
                return Err(Error::Usage(
                    "set both IMGBUILD_USERNAME and IMGBUILD_PASSWORD, or neither".into(),
                ));
            }
        };
        let mut files = Vec::new();
        if let Some(text) = var("DOCKER_AUTH_CONFIG") {
            files.push(AuthFile::parse(&text, "DOCKER_AUTH_CONFIG")?);
            searched.push("DOCKER_AUTH_CONFIG".into());
        }
        let mut paths: Vec<PathBuf> = docker_config_path().into_iter().collect();
        paths.extend(podman_paths());
        for p in paths {
            searched.push(p.display().to_string());
            if let Some(f) = AuthFile::load(&p)? {
                files.push(f);
            }
        }
        Ok(DockerCredentials {
            variables,
            files,
            searched,
            found: Mutex::new(HashMap::new()),
        })
    }

    fn search(&self, host: &str) -> Result<Option<Credential>> {
        if let Some((u, p, hosts)) = &self.variables
            && hosts.iter().any(|h| h == host)
        {
            return Ok(Some(Credential {
                secret: Secret::Basic {
                    username: u.clone(),
                    password: p.clone(),
                },
                source: "IMGBUILD_USERNAME/IMGBUILD_PASSWORD".into(),
            }));
        }
        for f in &self.files {
            if let Some(helper) = f.helper_for(host)
                && let Some(c) = helper_get(&helper, host)?
            {
                return Ok(Some(c));
            }
            if let Some(c) = f.auth_for(host)? {
                return Ok(Some(c));
            }
            if let Some(store) = f.store()
                && let Some(c) = helper_get(&store, host)?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

impl CredentialStore for DockerCredentials {
    fn lookup(&self, registry: &str) -> Result<Option<Credential>> {
        let host = normalize_host(registry);
        if let Some(hit) = self.found.lock().ok().and_then(|m| m.get(&host).cloned()) {
            return Ok(hit);
        }
        let hit = self.search(&host)?;
        if let Ok(mut m) = self.found.lock() {
            m.insert(host, hit.clone());
        }
        Ok(hit)
    }

    fn describe(&self) -> String {
        if self.searched.is_empty() {
            "none found (no HOME, DOCKER_CONFIG or REGISTRY_AUTH_FILE)".into()
        } else {
            format!("none found in {}", self.searched.join(", "))
        }
    }
}

/// One credential, for checking a login before it is stored.
pub struct Given(pub Credential);

impl CredentialStore for Given {
    fn lookup(&self, _: &str) -> Result<Option<Credential>> {
        Ok(Some(self.0.clone()))
    }
    fn describe(&self) -> String {
        self.0.source.clone()
    }
}

/// Store `username`/`password` for `host` where `docker login` would: the config's credential
/// helper when it names one, else `auths` in `config.json` (written atomically, mode 0600).
/// Returns a description of where it went.
pub fn store_login(host: &str, username: &str, password: &str) -> Result<String> {
    let path = docker_config_path().ok_or_else(|| {
        Error::Usage("cannot tell where Docker's config lives: set HOME or DOCKER_CONFIG".into())
    })?;
    let file = AuthFile::load(&path)?.unwrap_or(AuthFile {
        origin: path.display().to_string(),
        json: Value::Object(Map::new()),
    });
    let key = server_key(host);
    let norm = normalize_host(host);
    if let Some(helper) = file.helper_for(&norm).or_else(|| file.store()) {
        let program = format!("docker-credential-{helper}");
        let payload =
            serde_json::json!({"ServerURL": key, "Username": username, "Secret": password});
        let out = run_helper(&program, "store", payload.to_string().as_bytes())
            .map_err(|e| Error::Input(format!("credential helper {program} cannot be run: {e}")))?;
        if !out.status.success() {
            return Err(Error::Input(format!(
                "credential helper {program} could not store the login: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        return Ok(format!("credential helper {program}"));
    }
    let mut json = file.json;
    let Some(root) = json.as_object_mut() else {
        return Err(Error::Input(format!(
            "{} is not a JSON object: fix or remove it",
            path.display()
        )));
    };
    let auths = root
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(auths) = auths.as_object_mut() else {
        return Err(Error::Input(format!(
            "{}: `auths` is not an object: fix or remove it",
            path.display()
        )));
    };
    // Replace every alias of this host, so an old entry cannot shadow the new one.
    auths.retain(|k, _| normalize_host(k) != norm);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    auths.insert(key, serde_json::json!({ "auth": auth }));
    write_private(&path, &json)?;
    Ok(path.display().to_string())
}

/// Remove `host`'s login from Docker's config (or its helper). Returns whether one existed.
pub fn remove_login(host: &str) -> Result<bool> {
    let Some(path) = docker_config_path() else {
        return Ok(false);
    };
    let Some(file) = AuthFile::load(&path)? else {
        return Ok(false);
    };
    let norm = normalize_host(host);
    if let Some(helper) = file.helper_for(&norm).or_else(|| file.store()) {
        let program = format!("docker-credential-{helper}");
        let out = run_helper(&program, "erase", server_key(host).as_bytes())
            .map_err(|e| Error::Input(format!("credential helper {program} cannot be run: {e}")))?;
        return Ok(out.status.success());
    }
    let mut json = file.json;
    let removed = match json.get_mut("auths").and_then(Value::as_object_mut) {
        Some(auths) => {
            let before = auths.len();
            auths.retain(|k, _| normalize_host(k) != norm);
            before != auths.len()
        }
        None => false,
    };
    if removed {
        write_private(&path, &json)?;
    }
    Ok(removed)
}

/// Write JSON readable by its owner alone, under a temporary name renamed into place.
fn write_private(path: &Path, json: &Value) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir).ctx("create directory", dir)?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.json.")
        .tempfile_in(dir)
        .ctx("create temporary file in", dir)?;
    let text =
        serde_json::to_string_pretty(json).map_err(|e| Error::Input(format!("internal: {e}")))?;
    tmp.write_all(text.as_bytes()).ctx("write", tmp.path())?;
    tmp.write_all(b"\n").ctx("write", tmp.path())?;
    tmp.as_file().sync_all().ctx("flush", tmp.path())?;
    // tempfile already creates 0600; say so explicitly, it is a credentials file.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))
        .ctx("set permissions of", tmp.path())?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into place", path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_aliases_fold() {
        for k in [
            "https://index.docker.io/v1/",
            "docker.io",
            "registry-1.docker.io",
            "index.docker.io",
        ] {
            assert_eq!(normalize_host(k), "docker.io", "{k}");
        }
        assert_eq!(normalize_host("https://ghcr.io"), "ghcr.io");
        assert_eq!(normalize_host("quay.io/org/repo"), "quay.io");
        assert_eq!(normalize_host("LOCALHOST:5000"), "localhost:5000");
        assert_eq!(server_key("registry-1.docker.io"), DOCKER_HUB_KEY);
        assert_eq!(server_key("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn entries_decode() {
        let f = AuthFile::parse(
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"dTpw"},
                "quay.io/org":{"auth":"b3JnOnNlY3JldA=="},
                "quay.io":{"auth":"aG9zdDpzZWNyZXQ="},
                "ghcr.io":{"identitytoken":"refresh"},
                "bad.io":{"auth":"!!"},
                "empty.io":{}
            }}"#,
            "test",
        )
        .unwrap();
        match f.auth_for("docker.io").unwrap().unwrap().secret {
            Secret::Basic { username, password } => {
                assert_eq!((username, password), ("u".into(), "p".into()))
            }
            other => panic!("{other:?}"),
        }
        // The bare host wins over a repository-scoped key.
        match f.auth_for("quay.io").unwrap().unwrap().secret {
            Secret::Basic { username, .. } => assert_eq!(username, "host"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            f.auth_for("ghcr.io").unwrap().unwrap().secret,
            Secret::IdentityToken(t) if t == "refresh"
        ));
        let err = f.auth_for("bad.io").unwrap_err().to_string();
        assert!(err.contains("base64") && err.contains("bad.io"), "{err}");
        assert!(f.auth_for("empty.io").unwrap().is_none());
        assert!(f.auth_for("other.io").unwrap().is_none());
        assert!(AuthFile::parse("{oops", "x.json").is_err());
    }
}
