//! Registry client for the OCI distribution API: ping and challenge discovery, Basic and
//! Bearer auth with cached tokens, manifests, and blobs streamed into the cache and verified.
//!
//! Written here rather than on oci-client because a builder needs what it lacks: hashing while
//! streaming into our own cache, multi-scope tokens (push + mount), and retries with backoff.

pub mod challenge;
pub mod credentials;
pub mod upload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_spec::image::Digest;
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::cache::Cache;
use crate::error::{Error, ImageError, IoContext, Result};
use crate::net::{self, Activity, Attempt, Failure, NetError, Policy, Step};
use crate::oci::digest;
use crate::oci::reference::Reference;
use challenge::Challenge;

use crate::oci::media::{MANIFEST_ACCEPT, MAX_JSON_BYTES};

/// A credential for one registry, and where it came from (for error messages).
#[derive(Clone)]
pub enum Secret {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in Docker's config).
    IdentityToken(String),
    /// A bearer token used as is (`registrytoken`).
    RegistryToken(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, not even in debug output.
        match self {
            Secret::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Secret::IdentityToken(_) => f.write_str("IdentityToken(***)"),
            Secret::RegistryToken(_) => f.write_str("RegistryToken(***)"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Credential {
    pub secret: Secret,
    /// Where it was found, e.g. `/root/.docker/config.json (auths)`.
    pub source: String,
}

/// Finds credentials for a registry host. Returns `Ok(None)` for anonymous access.
pub trait CredentialStore: Send + Sync {
    fn lookup(&self, registry: &str) -> Result<Option<Credential>>;
    /// What was searched, for an error message when nothing matched.
    fn describe(&self) -> String;
}

/// Anonymous access only.
pub struct Anonymous;

impl CredentialStore for Anonymous {
    fn lookup(&self, _: &str) -> Result<Option<Credential>> {
        Ok(None)
    }
    fn describe(&self) -> String {
        "no credentials (anonymous)".into()
    }
}

#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Hosts (host[:port]) that may be spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Extra PEM CA certificates trusted besides the system store.
    pub ca_certs: Vec<PathBuf>,
    /// Retries, `Retry-After` cap and idle timeout, for every request ([`crate::net`]).
    pub policy: Policy,
}

pub use crate::net::{DEFAULT_RETRIES, error_chain, retryable_status};

/// The method of the request `make` builds (for messages).
fn method_of(
    make: &impl Fn(&reqwest::Client, &str) -> RequestBuilder,
    http: &reqwest::Client,
) -> String {
    make(http, "http://localhost")
        .build()
        .map(|r| r.method().to_string())
        .unwrap_or_else(|_| "request".into())
}

/// Errors that no retry will mend: bad certificates and malformed requests.
fn is_permanent(e: &reqwest::Error) -> bool {
    let text = error_chain(e).to_ascii_lowercase();
    e.is_builder() || e.is_redirect() || text.contains("certificate")
}

/// A response with a retryable status, as a failure (its body read for the message).
async fn status_failure(resp: Response) -> Failure {
    let status = resp.status();
    let retry_after = net::retry_after(resp.headers());
    let body = resp.bytes().await.unwrap_or_default();
    Failure::Status {
        status,
        retry_after,
        text: registry_error_text(&body),
    }
}

#[derive(Clone, Debug)]
struct Endpoint {
    base_url: String,
    challenge: Option<Challenge>,
}

struct CachedToken {
    value: String,
    expires: Instant,
}

pub struct RegistryClient {
    http: reqwest::Client,
    opts: ClientOptions,
    credentials: Arc<dyn CredentialStore>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
    token_gates: Mutex<HashMap<TokenKey, Gate>>,
}

/// (host, space-separated scopes)
type TokenKey = (String, String);
/// Held while one task fetches a token that others wait for.
type Gate = Arc<tokio::sync::Mutex<()>>;

/// The repository scopes a request needs, e.g. `repository:team/app:pull,push`.
pub(crate) fn scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

impl RegistryClient {
    pub fn new(
        opts: ClientOptions,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<RegistryClient> {
        // The TLS provider, once per process (a second install is refused, and harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            // No read timeout here: reqwest's runs from the request's start to the response's
            // headers, which a large upload on a slow link can outlast. Stalls are caught by
            // the idle watch of every request instead (crate::net).
            .pool_max_idle_per_host(8);
        let mut certs = Vec::new();
        for path in &opts.ca_certs {
            let pem = std::fs::read(path).ctx("read CA certificate", path)?;
            let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Usage(format!(
                    "--ca-cert {}: not a PEM certificate: {e}",
                    path.display()
                ))
            })?;
            certs.extend(found);
        }
        if !certs.is_empty() {
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(NetError::Client)?;
        Ok(RegistryClient {
            http,
            opts,
            credentials,
            endpoints: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            token_gates: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The retry and idle policy every request of this client follows.
    pub(crate) fn policy(&self) -> &Policy {
        &self.opts.policy
    }

    /// Plain HTTP is allowed only for loopback hosts and those the user named.
    pub(crate) fn allows_plain_http(&self, host: &str) -> bool {
        is_loopback(host) || self.opts.insecure_registries.iter().any(|h| h == host)
    }

    /// Find the registry's base URL and auth challenge (`GET /v2/`), once per host. The probe
    /// is a request like any other: retried when the registry (or a load balancer in front of
    /// it) answers 408, 429 or 5xx, or the connection fails.
    async fn endpoint(&self, host: &str) -> Result<Endpoint> {
        if let Some(e) = self
            .endpoints
            .lock()
            .ok()
            .and_then(|m| m.get(host).cloned())
        {
            return Ok(e);
        }
        let endpoint = net::retry(
            &self.opts.policy,
            &format!("registry {host}"),
            move |_| async move {
                match self.probe(host).await {
                    Ok(e) => Ok(Step::Done(e)),
                    Err(Attempt::Fatal(e)) => Err(e),
                    Err(Attempt::Failed(f)) => Ok(Step::Failed(f)),
                }
            },
            |failure, attempts| {
                match failure {
                    Failure::Status { .. } => NetError::GaveUp {
                        who: format!("registry {host}"),
                        request: "GET /v2/".into(),
                        failure,
                        attempts,
                        hint: "the registry (or a proxy in front of it) is overloaded or failing: try again later, or raise --retries".into(),
                    },
                    _ => NetError::Unreachable {
                        who: format!("registry {host}"),
                        detail: failure.to_string(),
                        attempts,
                        hint: format!(
                            "check the host and port and that the registry is running{}",
                            if is_loopback(host) || self.allows_plain_http(host) {
                                ""
                            } else {
                                " (for a registry without TLS, pass --insecure-registry HOST)"
                            }
                        ),
                    },
                }
                .into()
            },
        )
        .await?;
        if let Ok(mut m) = self.endpoints.lock() {
            m.insert(host.to_string(), endpoint.clone());
        }
        Ok(endpoint)
    }

    /// One probe: HTTPS, then plain HTTP where allowed.
    async fn probe(&self, host: &str) -> std::result::Result<Endpoint, Attempt> {
        let https = format!("https://{host}");
        let tls = match self.ping(&https).await {
            Ok(challenge) => {
                return Ok(Endpoint {
                    base_url: https,
                    challenge,
                });
            }
            Err(e) => e,
        };
        if !self.allows_plain_http(host) {
            return Err(tls);
        }
        let http = format!("http://{host}");
        match (self.ping(&http).await, tls) {
            (Ok(challenge), _) => Ok(Endpoint {
                base_url: http,
                challenge,
            }),
            // Both broke: say what each said.
            (
                Err(Attempt::Failed(Failure::Transport(plain))),
                Attempt::Failed(Failure::Transport(t)),
            ) => Err(Attempt::Failed(Failure::Transport(format!(
                "over HTTPS: {t}; over HTTP: {plain}"
            )))),
            // A TLS server that plain HTTP cannot talk to: its TLS problem is the answer.
            (Err(_), tls @ Attempt::Fatal(_)) => Err(tls),
            (Err(other), _) => Err(other),
        }
    }

    /// The base URL found for `host` (after a first request to it).
    fn base_url(&self, host: &str) -> Result<String> {
        self.endpoints
            .lock()
            .ok()
            .and_then(|m| m.get(host).map(|e| e.base_url.clone()))
            .ok_or_else(|| {
                NetError::protocol(host, format!("internal: registry {host} not yet contacted"))
                    .into()
            })
    }

    async fn ping(&self, base: &str) -> std::result::Result<Option<Challenge>, Attempt> {
        let activity = Activity::default();
        let resp = match net::watched(
            self.http.get(format!("{base}/v2/")).send(),
            &activity,
            self.opts.policy.idle,
        )
        .await
        {
            Err(stalled) => return Err(Attempt::Failed(stalled)),
            Ok(Err(e)) if is_permanent(&e) => {
                return Err(Attempt::Fatal(
                    NetError::Unreachable {
                        who: base.to_string(),
                        detail: format!("GET /v2/ failed: {}", error_chain(&e)),
                        attempts: 1,
                        hint: "check the registry's certificate, or trust its CA with --ca-cert"
                            .into(),
                    }
                    .into(),
                ));
            }
            Ok(Err(e)) => return Err(Attempt::Failed(Failure::Transport(error_chain(&e)))),
            Ok(Ok(resp)) => resp,
        };
        match resp.status() {
            s if s.is_success() => Ok(None),
            StatusCode::UNAUTHORIZED => Ok(challenge_of(&resp)),
            s if retryable_status(s) => Err(Attempt::Failed(status_failure(resp).await)),
            status => Err(Attempt::Fatal(
                NetError::Refused {
                    who: base.to_string(),
                    request: "GET /v2/".into(),
                    status,
                    text: "not an OCI registry API".into(),
                    hint: " (is the host right?)".into(),
                }
                .into(),
            )),
        }
    }

    /// A live token for `host` whose scopes cover `scopes` (a push+mount token serves a push).
    fn cached_token(&self, host: &str, scopes: &[String]) -> Option<String> {
        let now = Instant::now();
        let m = self.tokens.lock().ok()?;
        m.iter()
            .filter(|((h, _), t)| h == host && t.expires > now)
            .find(|((_, have), _)| {
                let have: Vec<&str> = have.split(' ').collect();
                scopes.iter().all(|s| have.contains(&s.as_str()))
            })
            .map(|(_, t)| t.value.clone())
    }

    /// The Authorization header value for `scopes` on `host`, if the registry wants one.
    async fn authorization(
        &self,
        host: &str,
        endpoint: &Endpoint,
        scopes: &[String],
    ) -> Result<Option<String>> {
        let Some(challenge) = &endpoint.challenge else {
            return Ok(None);
        };
        let cred = self.credentials.lookup(host)?;
        match challenge.scheme.as_str() {
            "basic" => Ok(match cred.map(|c| c.secret) {
                Some(Secret::Basic { username, password }) => {
                    Some(basic_header(&username, &password))
                }
                _ => None,
            }),
            "bearer" => {
                if let Some(Credential {
                    secret: Secret::RegistryToken(t),
                    ..
                }) = &cred
                {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let key = (host.to_string(), scopes.join(" "));
                if let Some(t) = self.cached_token(host, scopes) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                // One fetch per scope set at a time: parallel uploads share the token.
                let gate = self
                    .token_gates
                    .lock()
                    .map(|mut g| g.entry(key.clone()).or_default().clone())
                    .unwrap_or_default();
                let _held = gate.lock().await;
                if let Some(t) = self.cached_token(host, scopes) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let (token, ttl) = self
                    .fetch_token(host, challenge, scopes, cred.as_ref())
                    .await?;
                if let Ok(mut m) = self.tokens.lock() {
                    // Renew before the registry's deadline (a tenth of the lifetime, at most
                    // 30 s), so a request never goes out with a token about to lapse.
                    let ttl = ttl.saturating_sub((ttl / 10).clamp(1, 30));
                    m.insert(
                        key,
                        CachedToken {
                            value: token.clone(),
                            expires: Instant::now() + Duration::from_secs(ttl),
                        },
                    );
                }
                Ok(Some(format!("Bearer {token}")))
            }
            other => Err(NetError::protocol(
                host,
                format!("registry {host} asks for unsupported auth scheme {other:?}"),
            )
            .into()),
        }
    }

    async fn fetch_token(
        &self,
        host: &str,
        challenge: &Challenge,
        scopes: &[String],
        cred: Option<&Credential>,
    ) -> Result<(String, u64)> {
        let realm = challenge.param("realm").ok_or_else(|| {
            Error::from(NetError::protocol(
                host,
                format!("registry {host} sent a Bearer challenge without a realm"),
            ))
        })?;
        let service = challenge.param("service");
        let request = match cred.map(|c| &c.secret) {
            Some(Secret::IdentityToken(refresh)) => {
                // OAuth2 refresh-token grant (Docker's `identitytoken`, ACR, GCR).
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    ("client_id", "imgbuild"),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                let scope_str = scopes.join(" ");
                form.push(("scope", &scope_str));
                let body = form
                    .iter()
                    .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                self.http
                    .post(realm)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body)
            }
            other => {
                let mut query: Vec<(&str, &str)> = Vec::new();
                if let Some(s) = service {
                    query.push(("service", s));
                }
                for s in scopes {
                    query.push(("scope", s));
                }
                let url = append_query(realm, &query);
                let rb = self.http.get(url);
                match other {
                    Some(Secret::Basic { username, password }) => {
                        rb.header("Authorization", basic_header(username, password))
                    }
                    _ => rb,
                }
            }
        };
        // The token service is guarded like the registry: retried, watched for stalls.
        let policy = &self.opts.policy;
        let request = &request;
        let resp = net::retry(
            policy,
            &format!("token service {realm}"),
            move |_| async move {
                let Some(rb) = request.try_clone() else {
                    return Err(NetError::protocol(
                        realm,
                        format!("internal: token request to {realm} cannot be repeated"),
                    )
                    .into());
                };
                let activity = Activity::default();
                let failure = match net::watched(rb.send(), &activity, policy.idle).await {
                    Err(stalled) => stalled,
                    Ok(Err(e)) => Failure::Transport(error_chain(&e)),
                    Ok(Ok(resp)) if retryable_status(resp.status()) => status_failure(resp).await,
                    Ok(Ok(resp)) => return Ok(Step::Done(resp)),
                };
                Ok(Step::Failed(failure))
            },
            |failure, attempts| {
                NetError::GaveUp {
                    who: format!("token service {realm}"),
                    request: format!("a token for registry {host}"),
                    hint: NetError::hint_for(&failure).into(),
                    failure,
                    attempts,
                }
                .into()
            },
        )
        .await?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            NetError::protocol(realm, format!("token service {realm}: {}", error_chain(&e)))
        })?;
        if !status.is_success() {
            let source = cred.map_or_else(|| self.credentials.describe(), |c| c.source.clone());
            return Err(NetError::Refused {
                who: format!("registry {host}"),
                request: format!("a token for {} (refused to issue)", scopes.join(" ")),
                status,
                text: registry_error_text(&body),
                hint: format!("; credentials tried: {source}. Log in with `imgbuild login {host}` or set IMGBUILD_USERNAME/IMGBUILD_PASSWORD"),
            }
            .into());
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
            issued_at: Option<String>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Error::from(NetError::protocol(
                realm,
                format!("token service {realm} answered something that is not a token: {e}"),
            ))
        })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::from(NetError::protocol(
                    realm,
                    format!("token service {realm} answered without a token"),
                ))
            })?;
        // `expires_in` counts from `issued_at` when the service says when that was (60 s by
        // default, as the token spec says); a token issued a while ago has less left.
        let lifetime = parsed.expires_in.unwrap_or(60);
        let age = parsed
            .issued_at
            .as_deref()
            .and_then(net::rfc3339_seconds)
            .and_then(|at| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_secs();
                now.checked_sub(at)
            })
            .unwrap_or(0)
            .min(lifetime);
        Ok((token, lifetime - age))
    }

    /// Send an authorised, idempotent request under the retry policy: connection errors,
    /// stalls, 408, 429 and 5xx are tried again with backoff (`Retry-After` honoured within its
    /// cap). `make` builds the request against the base URL once per attempt. A 401 drops the
    /// cached token and tries once more with a fresh one. A response that is still retryable
    /// after the last attempt is an error naming the request, the answer and the attempts.
    pub(crate) async fn send(
        &self,
        host: &str,
        scopes: &[String],
        make: impl Fn(&reqwest::Client, &str) -> RequestBuilder,
    ) -> Result<Response> {
        let policy = &self.opts.policy;
        let make = &make;
        net::retry(
            policy,
            &format!("registry {host}"),
            move |_| async move {
                let activity = Activity::default();
                let failure =
                    match net::watched(self.send_once(host, scopes, make), &activity, policy.idle)
                        .await
                    {
                        Err(stalled) => (stalled, None),
                        Ok(Err(Attempt::Fatal(e))) => return Err(e),
                        Ok(Err(Attempt::Failed(f))) => (f, None),
                        Ok(Ok(resp)) if retryable_status(resp.status()) => {
                            let request =
                                format!("{} {}", method_of(make, &self.http), resp.url().path());
                            (status_failure(resp).await, Some(request))
                        }
                        Ok(Ok(resp)) => return Ok(Step::Done(resp)),
                    };
                Ok(Step::Failed(failure))
            },
            |(failure, request), attempts| {
                NetError::GaveUp {
                    who: format!("registry {host}"),
                    request: request.unwrap_or_else(|| "a request".into()),
                    hint: NetError::hint_for(&failure).into(),
                    failure,
                    attempts,
                }
                .into()
            },
        )
        .await
    }

    /// One attempt (plus the 401 refresh), without retries: for requests whose body cannot be
    /// replayed on the same upload session.
    pub(crate) async fn send_once(
        &self,
        host: &str,
        scopes: &[String],
        make: &impl Fn(&reqwest::Client, &str) -> RequestBuilder,
    ) -> std::result::Result<Response, Attempt> {
        let mut endpoint = self.endpoint(host).await.map_err(Attempt::Fatal)?;
        let mut scopes = scopes.to_vec();
        for refreshed in [false, true] {
            let mut rb = make(&self.http, &endpoint.base_url);
            if let Some(auth) = self
                .authorization(host, &endpoint, &scopes)
                .await
                .map_err(Attempt::Fatal)?
            {
                rb = rb.header("Authorization", auth);
            }
            let resp = rb.send().await.map_err(|e| {
                if is_permanent(&e) {
                    Attempt::Fatal(
                        NetError::Unreachable {
                            who: format!("registry {host}"),
                            detail: error_chain(&e),
                            attempts: 1,
                            hint:
                                "check the registry's certificate, or trust its CA with --ca-cert"
                                    .into(),
                        }
                        .into(),
                    )
                } else {
                    Attempt::Failed(Failure::Transport(error_chain(&e)))
                }
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED || refreshed {
                return Ok(resp);
            }
            // A 401 may name a scope we lacked (e.g. a mount source): ask for the union.
            if let Some(ch) = challenge_of(&resp) {
                if let Some(s) = ch.param("scope") {
                    for extra in s.split(' ') {
                        if !scopes.iter().any(|have| have == extra) {
                            scopes.push(extra.to_string());
                        }
                    }
                }
                let known = endpoint.challenge.as_ref().map(|c| c.scheme.clone());
                if known.as_deref() != Some(ch.scheme.as_str()) {
                    endpoint.challenge = Some(ch);
                }
            }
            // The registry refused what we hold: forget every token for this host.
            if let Ok(mut m) = self.tokens.lock() {
                m.retain(|(h, _), _| h != host);
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Check that the credentials for `host` are accepted (`GET /v2/` with them, after a token
    /// exchange when the registry uses tokens), as `docker login` does.
    pub async fn check_login(&self, host: &str) -> Result<bool> {
        let endpoint = self.endpoint(host).await?;
        if endpoint.challenge.is_none() {
            // The registry asks for no authentication at all.
            return Ok(false);
        }
        let resp = self
            .send(host, &[], |c, base| c.get(format!("{base}/v2/")))
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(self.status_error(host, "GET", "/v2/", status, &body));
        }
        Ok(true)
    }

    /// Fetch a manifest (or index) by tag or digest. Returns its bytes, media type and digest;
    /// a manifest asked for by digest is verified against it.
    pub(crate) async fn get_manifest(
        &self,
        r: &Reference,
        reference: &str,
    ) -> Result<(Vec<u8>, String, Digest)> {
        let host = r.api_host();
        let path = format!("/v2/{}/manifests/{reference}", r.repository);
        let policy = &self.opts.policy;
        let path = &path;
        let (bytes, content_type) = net::retry(
            policy,
            &format!("registry {host}"),
            move |_| async move {
                let resp = self
                    .send(host, &[scope(&r.repository, "pull")], |c, base| {
                        c.get(format!("{base}{path}"))
                            .header("Accept", MANIFEST_ACCEPT)
                    })
                    .await?;
                let status = resp.status();
                if status == StatusCode::NOT_FOUND {
                    return Err(NetError::NotFound {
                        image: r.canonical(),
                        registry: r.registry.clone(),
                    }
                    .into());
                }
                if !status.is_success() {
                    let body = resp.bytes().await.unwrap_or_default();
                    return Err(self.status_error(host, "GET", path, status, &body));
                }
                let content_type = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
                    .unwrap_or_default();
                Ok(
                    match read_capped(resp, MAX_JSON_BYTES as usize, path, policy.idle).await? {
                        Ok(bytes) => Step::Done((bytes, content_type)),
                        Err(f) => Step::Failed(f),
                    },
                )
            },
            |failure, attempts| {
                NetError::GaveUp {
                    who: format!("registry {host}"),
                    request: format!("GET {path}"),
                    hint: NetError::hint_for(&failure).into(),
                    failure,
                    attempts,
                }
                .into()
            },
        )
        .await?;
        let actual = digest::sha256_of(&bytes);
        if let Ok(expected) = digest::parse(reference) {
            digest::verify(
                format!("manifest {}@{reference} served by {}", r.name(), r.registry),
                &expected,
                &actual,
            )?;
        }
        Ok((bytes, content_type, actual))
    }

    /// Download a blob into the cache, verifying it as it arrives; a download that breaks off
    /// resumes with a `Range` request (or starts over where the registry has no ranges).
    /// Cached blobs are not fetched.
    pub(crate) async fn pull_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        cache: &Cache,
    ) -> Result<()> {
        if cache.has_blob(digest) {
            return Ok(());
        }
        let host = r.api_host();
        let path = format!("/v2/{}/blobs/{digest}", r.repository);
        let scopes = [scope(&r.repository, "pull")];
        net::download(
            &self.opts.policy,
            &format!("registry {host}"),
            &format!("blob {digest} served by {host}"),
            cache,
            digest,
            |offset| {
                let (path, scopes) = (path.clone(), scopes.clone());
                async move {
                    let resp = self
                        .send(host, &scopes, |c, base| {
                            let rb = c.get(format!("{base}{path}"));
                            if offset > 0 {
                                rb.header("Range", format!("bytes={offset}-"))
                            } else {
                                rb
                            }
                        })
                        .await?;
                    if resp.status().is_success() {
                        Ok(resp)
                    } else {
                        let status = resp.status();
                        let body = resp.bytes().await.unwrap_or_default();
                        Err(self.status_error(host, "GET", &path, status, &body))
                    }
                }
            },
        )
        .await
        .map(|_| ())
    }

    pub(crate) fn status_error(
        &self,
        host: &str,
        method: &str,
        path: &str,
        status: StatusCode,
        body: &[u8],
    ) -> Error {
        let hint = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
                "; credentials tried: {}. Log in with `imgbuild login {host}` or set IMGBUILD_USERNAME/IMGBUILD_PASSWORD",
                self.credentials
                    .lookup(host)
                    .ok()
                    .flatten()
                    .map_or_else(|| self.credentials.describe(), |c| c.source)
            ),
            _ => String::new(),
        };
        NetError::Refused {
            who: format!("registry {host}"),
            request: format!("{method} {path}"),
            status,
            text: registry_error_text(body),
            hint,
        }
        .into()
    }

    /// Convenience for other modules: an authorised request of `method` to `path` on `r`'s registry.
    pub(crate) async fn request(
        &self,
        r: &Reference,
        method: Method,
        path: &str,
        actions: &str,
    ) -> Result<Response> {
        self.send(r.api_host(), &[scope(&r.repository, actions)], |c, base| {
            c.request(method.clone(), format!("{base}{path}"))
        })
        .await
    }
}

fn challenge_of(resp: &Response) -> Option<Challenge> {
    let mut all: Vec<Challenge> = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(challenge::parse)
        .collect();
    // Prefer Bearer when a registry offers both.
    all.sort_by_key(|c| c.scheme != "bearer");
    all.into_iter()
        .find(|c| c.scheme == "bearer" || c.scheme == "basic")
}

fn basic_header(username: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    )
}

pub(crate) fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The text of a registry error body: the OCI `errors` array when present, else the body start.
pub(crate) fn registry_error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        let parts: Vec<String> = e
            .errors
            .into_iter()
            .map(|i| {
                format!(
                    "{}: {}",
                    i.code.unwrap_or_default(),
                    i.message.unwrap_or_default()
                )
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)])
        .trim()
        .to_string();
    if text.is_empty() {
        "(empty body)".into()
    } else {
        text
    }
}

/// A small body read whole within `cap` bytes; `Ok(Err(_))` when it broke off or stalled
/// (worth another try), `Err` when it is too large.
async fn read_capped(
    resp: Response,
    cap: usize,
    what: &str,
    idle: Duration,
) -> Result<std::result::Result<Vec<u8>, Failure>> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    loop {
        match net::next_chunk(&mut stream, idle).await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > cap {
                    return Err(Error::from(ImageError::Invalid(format!(
                        "{what} is larger than {cap} bytes: refusing it"
                    ))));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Ok(out)),
            Err(f) => return Ok(Err(f)),
        }
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn append_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = url.to_string();
    for (k, v) in pairs {
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(&urlencode(k));
        out.push('=');
        out.push_str(&urlencode(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for h in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "x.localhost",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["registry.example.com", "10.0.0.1:5000", "ghcr.io"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            registry_error_text(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
            ),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(
            registry_error_text(b"<html>oops</html>"),
            "<html>oops</html>"
        );
        assert_eq!(registry_error_text(b""), "(empty body)");
    }

    #[test]
    fn queries() {
        assert_eq!(
            append_query(
                "https://a/token",
                &[("service", "r"), ("scope", "repository:x:pull,push")]
            ),
            "https://a/token?service=r&scope=repository%3Ax%3Apull%2Cpush"
        );
        assert_eq!(
            append_query("https://a/up?x=1", &[("digest", "sha256:ab")]),
            "https://a/up?x=1&digest=sha256%3Aab"
        );
        assert_eq!(
            format!(
                "{:?}",
                Secret::Basic {
                    username: "u".into(),
                    password: "p".into()
                }
            ),
            "Basic(u, ***)"
        );
    }
}
