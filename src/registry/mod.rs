//! Registry client for the OCI distribution API: ping and challenge discovery, Basic and
//! Bearer auth with cached tokens, manifests, and blobs streamed into the cache and verified.
//!
//! Written here rather than on oci-client because a builder needs what it lacks: hashing while
//! streaming into our own cache, multi-scope tokens (push + mount), and retries with backoff.

mod auth;
pub mod challenge;
pub mod credentials;
mod endpoint;
mod errors;
mod pull;
pub mod upload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::error::{Error, IoContext, Result};
use crate::net::{self, Activity, Attempt, Failure, NetError, Policy, Step};
use crate::oci::reference::Reference;
use auth::{CachedToken, Gate, TokenKey};
use endpoint::{Endpoint, challenge_of};
use errors::{is_permanent, status_failure};

pub(crate) use endpoint::{append_query, is_loopback, urlencode};
pub(crate) use errors::registry_error_text;

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

pub use crate::net::DEFAULT_RETRIES;
pub(crate) use crate::net::{error_chain, retryable_status};

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

pub struct RegistryClient {
    http: reqwest::Client,
    opts: ClientOptions,
    credentials: Arc<dyn CredentialStore>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
    token_gates: Mutex<HashMap<TokenKey, Gate>>,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_printed() {
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
