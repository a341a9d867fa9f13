//! Servers the push tests run themselves: TLS material made with openssl, registries with
//! htpasswd or token auth, a token issuer (RS256 JWTs signed by openssl, x5c header), and a
//! recording reverse proxy that can inject faults between imgbuild and a registry.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

use crate::lab::{self, Registry, fail, run};

type Failed = libtest_mimic::Failed;

// ---------- TLS ----------

#[derive(Clone, Debug)]
pub struct Tls {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// A test CA and a server certificate for 127.0.0.1 and localhost signed by it.
pub fn tls_material(dir: &Path) -> Result<Tls, Failed> {
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=imgbuild test CA", "-keyout"])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")))?;
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")))?;
    std::fs::write(
        p("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| fail(e.to_string()))?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(p("server.ext"))
        .arg("-out")
        .arg(p("server.crt")))?;
    Ok(Tls {
        ca_cert: p("ca.crt"),
        server_cert: p("server.crt"),
        server_key: p("server.key"),
    })
}

// ---------- registries with auth ----------

/// A registry with `extra` YAML appended under the top level (auth, http.tls ...).
pub fn start_registry_with(name: &str, http_extra: &str, extra: &str) -> Result<Registry, Failed> {
    let dir = lab::workdir().join(format!(
        "registry-{name}-{}-{}",
        std::process::id(),
        lab::free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let data = dir.join("data");
    let port = lab::start_registry_process(&dir, |port| {
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{http_extra}{extra}",
            data.display()
        )
    })?;
    Ok(Registry { port, dir })
}

/// TLS with the test CA, and htpasswd basic auth for `user`/`password`.
pub fn start_tls_basic_registry(tls: &Tls, user: &str, password: &str) -> Result<Registry, Failed> {
    let dir = lab::workdir().join(format!("htpasswd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let out = run(Command::new("htpasswd").args(["-Bbn", user, password]))?;
    let file = dir.join("htpasswd");
    std::fs::write(&file, &out.stdout).map_err(|e| fail(e.to_string()))?;
    start_registry_with(
        "tls-basic",
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            tls.server_cert.display(),
            tls.server_key.display()
        ),
        &format!(
            "auth:\n  htpasswd:\n    realm: imgbuild-test\n    path: {}\n",
            file.display()
        ),
    )
}

// ---------- token issuer ----------

pub const TOKEN_SERVICE: &str = "imgbuild-test-registry";
const TOKEN_ISSUER: &str = "imgbuild-test-issuer";

/// One request the issuer answered: how the caller authenticated and what it got.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    /// `anonymous`, `basic:USER` or `refresh:TOKEN`.
    pub caller: String,
    pub granted: Vec<String>,
}

#[derive(Clone)]
pub struct TokenIssuer {
    pub log: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenIssuer {
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Who may do what: `user`/`password` (basic) or the refresh token `refresh` may pull and push
/// anywhere; anonymous callers may pull repositories under `public/` only.
#[derive(Clone)]
struct Policy {
    user: String,
    password: String,
    refresh: String,
}

/// How the issuer answers: Docker Hub's `token` and `access_token` with 300 s, or (as some
/// registries do) only `access_token`, with `issued_at` and a short lifetime.
#[derive(Clone, Copy, Debug)]
pub struct TokenStyle {
    pub access_token_only: bool,
    pub lifetime: u64,
}

impl Default for TokenStyle {
    fn default() -> Self {
        TokenStyle {
            access_token_only: false,
            lifetime: 300,
        }
    }
}

/// Start an issuer and a token-auth registry that trusts it. Returns both.
pub fn start_token_registry(
    user: &str,
    password: &str,
    refresh: &str,
) -> Result<(Registry, TokenIssuer), Failed> {
    start_token_registry_styled(user, password, refresh, TokenStyle::default())
}

pub fn start_token_registry_styled(
    user: &str,
    password: &str,
    refresh: &str,
    style: TokenStyle,
) -> Result<(Registry, TokenIssuer), Failed> {
    let dir = lab::workdir().join(format!("token-{}-{}", std::process::id(), style.lifetime));
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let key = dir.join("token.key");
    let cert = dir.join("token.crt");
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=imgbuild test token signer", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert))?;
    let der = run(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert))?
    .stdout;
    let x5c = base64::engine::general_purpose::STANDARD.encode(der);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| fail(e.to_string()))?;
    let port = listener
        .local_addr()
        .map_err(|e| fail(e.to_string()))?
        .port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let issuer = TokenIssuer { log: log.clone() };
    let policy = Policy {
        user: user.into(),
        password: password.into(),
        refresh: refresh.into(),
    };
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (key, x5c, log, policy) = (key.clone(), x5c.clone(), log.clone(), policy.clone());
            std::thread::spawn(move || {
                let _ = serve_token(conn, &key, &x5c, &log, &policy, style);
            });
        }
    });
    let registry = start_registry_with(
        "token",
        "",
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            cert.display()
        ),
    )?;
    Ok((registry, issuer))
}

fn serve_token(
    mut conn: TcpStream,
    key: &Path,
    x5c: &str,
    log: &Mutex<Vec<TokenRequest>>,
    policy: &Policy,
    style: TokenStyle,
) -> std::io::Result<()> {
    let req = read_request(&mut conn)?;
    let body = String::from_utf8_lossy(&req.body).to_string();
    let query = req
        .target
        .split_once('?')
        .map_or("", |(_, q)| q)
        .to_string();
    // GET carries service and scope in the query; the OAuth2 POST in a form body.
    let params: Vec<(String, String)> = if req.method == "POST" {
        form(&body)
    } else {
        form(&query)
    };
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let scopes: Vec<String> = params
        .iter()
        .filter(|(n, _)| n == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let caller = if req.method == "POST" {
        match (param("grant_type").as_deref(), param("refresh_token")) {
            (Some("refresh_token"), Some(t)) if t == policy.refresh => format!("refresh:{t}"),
            _ => return respond(&mut conn, 401, r#"{"error":"invalid_grant"}"#),
        }
    } else {
        match req.header("authorization") {
            None => "anonymous".to_string(),
            Some(h) => {
                let decoded = h
                    .strip_prefix("Basic ")
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .map(|b| String::from_utf8_lossy(&b).to_string())
                    .unwrap_or_default();
                if decoded == format!("{}:{}", policy.user, policy.password) {
                    format!("basic:{}", policy.user)
                } else {
                    return respond(
                        &mut conn,
                        401,
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong user name or password"}]}"#,
                    );
                }
            }
        }
    };
    let mut access = Vec::new();
    let mut granted = Vec::new();
    for s in &scopes {
        let mut parts = s.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let allowed: Vec<&str> = actions
            .split(',')
            .filter(|a| caller != "anonymous" || (*a == "pull" && name.starts_with("public/")))
            .collect();
        if !allowed.is_empty() {
            granted.push(format!("{kind}:{name}:{}", allowed.join(",")));
            access.push(serde_json::json!({"type": kind, "name": name, "actions": allowed}));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": caller, "aud": param("service").unwrap_or_default(),
        "exp": now + style.lifetime, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", std::process::id()) + &format!("-{}", log.lock().map(|l| l.len()).unwrap_or(0)),
        "access": access,
    });
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-sign"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(signing_input.as_bytes())?;
    }
    let sig = child.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", b64(&sig));
    if let Ok(mut l) = log.lock() {
        l.push(TokenRequest {
            method: req.method.clone(),
            caller,
            granted,
        });
    }
    let answer = if style.access_token_only {
        let issued = lab_rfc3339(now);
        serde_json::json!({"access_token": token, "expires_in": style.lifetime, "issued_at": issued})
    } else {
        serde_json::json!({"token": token, "access_token": token, "expires_in": style.lifetime})
    };
    respond(&mut conn, 200, &answer.to_string())
}

/// Seconds since the epoch as RFC 3339 UTC (`date` does the calendar).
fn lab_rfc3339(secs: u64) -> String {
    Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(conn: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

// ---------- HTTP plumbing ----------

pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
    fn content_length(&self) -> u64 {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Read a request head (and, for small bodies, the body) from `conn`.
fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<Request> {
    let mut head = Vec::new();
    let mut headers = Vec::new();
    let mut first = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the request head ended",
            ));
        }
        head.extend_from_slice(line.as_bytes());
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if first.is_empty() {
            first = trimmed.to_string();
        } else if let Some((n, v)) = trimmed.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut parts = first.split_whitespace();
    Ok(Request {
        method: parts.next().unwrap_or("").to_string(),
        target: parts.next().unwrap_or("").to_string(),
        headers,
        head,
        body: Vec::new(),
    })
}

fn read_request(conn: &mut TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut req = read_head(&mut reader)?;
    let n = req.content_length().min(1 << 20);
    let mut body = vec![0; n as usize];
    reader.read_exact(&mut body)?;
    req.body = body;
    Ok(req)
}

// ---------- recording, fault-injecting reverse proxy ----------

/// One request that passed the proxy.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub status: u16,
    /// Whether the request carried an Authorization header.
    pub authorized: bool,
    /// Its `Range` header, if any.
    pub range: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` when given) instead of forwarding.
    Status(u16, Option<u32>),
    /// Forward the head and this many body bytes, then drop both connections.
    ResetAfter(u64),
    /// Answer 307 to `origin` + the request target with `from` replaced by `to` (blob storage
    /// on another host, as S3 or GCS behind a registry).
    Redirect {
        origin: String,
        from: &'static str,
        to: &'static str,
    },
    /// Forward, but flip one byte of the answer's body: a registry or cache serving wrong bytes.
    CorruptBody,
    /// Forward, and add this header line (`Name: value`) to the answer.
    AddHeader(&'static str),
    /// Forward the answer's head and this many body bytes, then drop the connection: a
    /// download reset mid-body.
    CutBody(u64),
    /// Forward the answer's head and this many body bytes, then send nothing for this long
    /// (and drop): a download that stalls.
    StallBody(u64, std::time::Duration),
    /// Forward the request without its `Range` header: a registry without range requests.
    StripRange,
    /// Read this many bytes of the request body, then stop reading for this long (and drop):
    /// an upload the server stops reading.
    StallUpload(u64, std::time::Duration),
    /// Answer with this status when the request carries a body, else forward: a registry that
    /// takes blob bytes only by PATCH refuses a monolithic PUT (Artifactory).
    StatusIfBody(u16),
    /// Answer 413 to a request whose body is over this many bytes, else forward (GHCR's
    /// 4 MiB cap on request bodies).
    TooLargeOver(u64),
    /// Wait this long, then forward: a slow registry.
    Delay(std::time::Duration),
    /// Answer a HEAD with 404, and (when true) a body after it, which HTTP forbids but some
    /// registries send.
    HeadNotFound(bool),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    /// A substring of the request target.
    pub target_contains: &'static str,
    pub fault: Fault,
    /// How many matching requests it applies to (u32::MAX: all).
    pub times: u32,
}

#[derive(Clone)]
pub struct Proxy {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    rules: Arc<Mutex<Vec<Rule>>>,
}

impl Proxy {
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
    pub fn set_rules(&self, rules: Vec<Rule>) {
        if let Ok(mut r) = self.rules.lock() {
            *r = rules;
        }
    }
}

/// A reverse proxy on a free loopback port in front of 127.0.0.1:`upstream`.
pub fn start_proxy(upstream: u16) -> Result<Proxy, Failed> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| fail(e.to_string()))?;
    let port = listener
        .local_addr()
        .map_err(|e| fail(e.to_string()))?
        .port();
    let proxy = Proxy {
        port,
        seen: Arc::new(Mutex::new(Vec::new())),
        rules: Arc::new(Mutex::new(Vec::new())),
    };
    let p = proxy.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let p = p.clone();
            std::thread::spawn(move || {
                let _ = relay(conn, upstream, &p);
            });
        }
    });
    Ok(proxy)
}

fn relay(client: TcpStream, upstream: u16, proxy: &Proxy) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let req = read_head(&mut reader)?;
    let authorized = req.header("authorization").is_some();
    let range = req.header("range");
    let record = |status: u16| {
        if let Ok(mut s) = proxy.seen.lock() {
            s.push(Seen {
                method: req.method.clone(),
                target: req.target.clone(),
                status,
                authorized,
                range: range.clone(),
            });
        }
    };
    let fault = proxy.rules.lock().ok().and_then(|mut rules| {
        rules
            .iter_mut()
            .find(|r| {
                r.times > 0 && r.method == req.method && req.target.contains(r.target_contains)
            })
            .map(|r| {
                r.times = r.times.saturating_sub(1);
                r.fault.clone()
            })
    });
    let mut client_w = client.try_clone()?;
    match fault {
        Some(Fault::Status(code, retry_after)) => {
            // Drain the body so the client reads our answer, not a reset.
            std::io::copy(
                &mut (&mut reader).take(req.content_length()),
                &mut std::io::sink(),
            )?;
            let extra = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            write!(
                client_w,
                "HTTP/1.1 {code} Injected\r\n{extra}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            )?;
            record(code);
            let _ = client_w.flush();
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Redirect { origin, from, to }) => {
            let location = format!("{origin}{}", req.target.replace(from, to));
            write!(
                client_w,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            record(307);
            let _ = client_w.flush();
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::ResetAfter(n)) => {
            let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
            up.write_all(&with_connection_close(&req.head))?;
            // Never the whole body: the break must come mid-upload.
            let n = n.min(req.content_length().saturating_sub(1));
            std::io::copy(&mut (&mut reader).take(n), &mut up)?;
            record(0);
            let _ = up.shutdown(Shutdown::Both);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::TooLargeOver(cap)) if req.content_length() > cap => {
            std::io::copy(
                &mut (&mut reader).take(req.content_length()),
                &mut std::io::sink(),
            )?;
            write!(
                client_w,
                "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            record(413);
            let _ = client_w.flush();
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Delay(pause)) => std::thread::sleep(pause),
        Some(Fault::StatusIfBody(code)) if req.content_length() > 0 => {
            std::io::copy(
                &mut (&mut reader).take(req.content_length()),
                &mut std::io::sink(),
            )?;
            let body = r#"{"errors":[{"code":"UNSUPPORTED","message":"use PATCH"}]}"#;
            write!(
                client_w,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            record(code);
            let _ = client_w.flush();
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::HeadNotFound(with_body)) => {
            let body = if with_body { "{\"errors\":[]}" } else { "" };
            write!(
                client_w,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            record(404);
            let _ = client_w.flush();
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::StallUpload(n, pause)) => {
            let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
            up.write_all(&with_connection_close(&req.head))?;
            let n = n.min(req.content_length().saturating_sub(1));
            std::io::copy(&mut (&mut reader).take(n), &mut up)?;
            record(0);
            // Stop reading: the client's writes fill the socket buffers and block.
            std::thread::sleep(pause);
            let _ = up.shutdown(Shutdown::Both);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(
            Fault::CorruptBody
            | Fault::AddHeader(_)
            | Fault::CutBody(_)
            | Fault::StallBody(..)
            | Fault::StripRange
            | Fault::TooLargeOver(_)
            | Fault::StatusIfBody(_),
        )
        | None => {}
    }
    let corrupt = matches!(fault, Some(Fault::CorruptBody));
    let added = match &fault {
        Some(Fault::AddHeader(h)) => format!("{h}\r\n"),
        _ => String::new(),
    };
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let head = if matches!(fault, Some(Fault::StripRange)) {
        without_header(&req.head, "range")
    } else {
        req.head.clone()
    };
    up.write_all(&with_connection_close(&head))?;
    let mut up_w = up.try_clone()?;
    // The rest of the request body flows on its own thread; the answer on this one.
    let body_len = req.content_length();
    let pump = std::thread::spawn(move || {
        let _ = std::io::copy(&mut (&mut reader).take(body_len), &mut up_w);
    });
    let mut up_reader = BufReader::new(up);
    let mut status_line = String::new();
    up_reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Recorded before the answer goes on: a client that exits on the last byte must find
    // its request in the log.
    let cut = matches!(fault, Some(Fault::CutBody(_) | Fault::StallBody(..)));
    if !cut {
        record(status);
    }
    client_w.write_all(status_line.as_bytes())?;
    client_w.write_all(added.as_bytes())?;
    if corrupt {
        // Headers as they are, then the body with its first byte flipped.
        loop {
            let mut line = String::new();
            up_reader.read_line(&mut line)?;
            client_w.write_all(line.as_bytes())?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut first = [0u8; 1];
        if up_reader.read(&mut first)? == 1 {
            client_w.write_all(&[first[0] ^ 0xff])?;
        }
    }
    if let Some(Fault::CutBody(n) | Fault::StallBody(n, _)) = fault {
        // Headers as they are, then only the first n bytes of the body.
        loop {
            let mut line = String::new();
            up_reader.read_line(&mut line)?;
            client_w.write_all(line.as_bytes())?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        std::io::copy(&mut (&mut up_reader).take(n), &mut client_w)?;
        client_w.flush()?;
        if let Some(Fault::StallBody(_, pause)) = fault {
            std::thread::sleep(pause);
        }
        record(0);
        let _ = client.shutdown(Shutdown::Both);
        let _ = pump.join();
        return Ok(());
    }
    std::io::copy(&mut up_reader, &mut client_w)?;
    let _ = client.shutdown(Shutdown::Both);
    let _ = pump.join();
    Ok(())
}

/// The request head without the header `name` (lowercase).
fn without_header(head: &[u8], name: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with(&format!("{name}:")))
        .collect::<Vec<_>>()
        .join("\r\n")
        .into_bytes()
}

/// The request head with `Connection: close`, so each connection carries one exchange.
fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n") {
        if line.is_empty() {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

// ---------- static files (a local apt repository) ----------

/// Serve the files under `root` over plain HTTP on a free loopback port; returns the port.
pub fn start_static(root: &Path) -> Result<u16, Failed> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| fail(e.to_string()))?;
    let port = listener
        .local_addr()
        .map_err(|e| fail(e.to_string()))?
        .port();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = serve_file(conn, &root);
            });
        }
    });
    Ok(port)
}

fn serve_file(mut conn: TcpStream, root: &Path) -> std::io::Result<()> {
    let req = read_request(&mut conn)?;
    let path = req.target.split('?').next().unwrap_or("/");
    let safe = !path.split('/').any(|c| c == "..");
    let file = root.join(path.trim_start_matches('/'));
    match std::fs::read(&file) {
        Ok(body) if safe && file.is_file() => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            conn.write_all(&body)?;
        }
        _ => {
            write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
        }
    }
    conn.flush()
}
