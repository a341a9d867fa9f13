//! Authorization for registry requests: Basic credentials, a registry token used as is, or a
//! Bearer token fetched from the registry's token service (with a password or an OAuth2
//! refresh token) and cached per host and scope set until shortly before it lapses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, Response};

use super::challenge::Challenge;
use super::endpoint::{Endpoint, append_query, urlencode};
use super::errors::{registry_error_text, status_failure};
use super::{Credential, RegistryClient, Secret};
use crate::error::{Error, Result};
use crate::net::{self, Activity, Failure, NetError, Step, error_chain, retryable_status};

pub(super) struct CachedToken {
    value: String,
    expires: Instant,
}

/// (host, space-separated scopes)
pub(super) type TokenKey = (String, String);
/// Held while one task fetches a token that others wait for.
pub(super) type Gate = Arc<tokio::sync::Mutex<()>>;

impl RegistryClient {
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
    pub(super) async fn authorization(
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

    /// A token for `scopes` from the registry's token service, with the seconds it has left.
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
        let request = self.token_request(realm, service, scopes, cred);
        let resp = self.send_token_request(host, realm, &request).await?;
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
        token_of(realm, &body)
    }

    /// The request for a token: an OAuth2 refresh-token grant for an identity token, else a
    /// GET naming the service and scopes (with Basic credentials when there are some).
    fn token_request(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        cred: Option<&Credential>,
    ) -> RequestBuilder {
        match cred.map(|c| &c.secret) {
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
        }
    }

    /// Send the token request, guarded like the registry: retried, watched for stalls.
    async fn send_token_request(
        &self,
        host: &str,
        realm: &str,
        request: &RequestBuilder,
    ) -> Result<Response> {
        let policy = &self.opts.policy;
        net::retry(
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
        .await
    }
}

/// The token of a token service's answer, with its lifetime left in seconds.
fn token_of(realm: &str, body: &[u8]) -> Result<(String, u64)> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
        issued_at: Option<String>,
    }
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|e| {
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

fn basic_header(username: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    )
}
