//! Finding a registry's endpoint: its base URL (HTTPS, or plain HTTP where allowed) and auth
//! challenge, probed once per host with `GET /v2/`; and the host and URL helpers around it.

use reqwest::{Response, StatusCode};

use super::RegistryClient;
use super::challenge::{self, Challenge};
use super::errors::{is_permanent, status_failure};
use crate::error::Result;
use crate::net::{self, Activity, Attempt, Failure, NetError, Step, error_chain, retryable_status};

#[derive(Clone, Debug)]
pub(super) struct Endpoint {
    pub(super) base_url: String,
    pub(super) challenge: Option<Challenge>,
}

impl RegistryClient {
    /// Find the registry's base URL and auth challenge (`GET /v2/`), once per host. The probe
    /// is a request like any other: retried when the registry (or a load balancer in front of
    /// it) answers 408, 429 or 5xx, or the connection fails.
    pub(super) async fn endpoint(&self, host: &str) -> Result<Endpoint> {
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
    pub(super) fn base_url(&self, host: &str) -> Result<String> {
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
}

pub(super) fn challenge_of(resp: &Response) -> Option<Challenge> {
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
    }
}
