//! What a registry's refusals say: the text of an OCI error body, a retryable answer as a
//! failure worth another try, and an error naming the request and the credentials tried.

use reqwest::{Response, StatusCode};

use super::RegistryClient;
use crate::error::Error;
use crate::net::{self, Failure, NetError, error_chain};

/// Errors that no retry will mend: bad certificates and malformed requests.
pub(super) fn is_permanent(e: &reqwest::Error) -> bool {
    let text = error_chain(e).to_ascii_lowercase();
    e.is_builder() || e.is_redirect() || text.contains("certificate")
}

/// A response with a retryable status, as a failure (its body read for the message).
pub(super) async fn status_failure(resp: Response) -> Failure {
    let status = resp.status();
    let retry_after = net::retry_after(resp.headers());
    let body = resp.bytes().await.unwrap_or_default();
    Failure::Status {
        status,
        retry_after,
        text: registry_error_text(&body),
    }
}

impl RegistryClient {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
