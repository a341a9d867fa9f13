//! Reading from a registry: manifests (and indexes), read whole within a cap and verified when
//! asked for by digest, and blobs streamed into the cache, verified and resumed.

use std::time::Duration;

use oci_spec::image::Digest;
use reqwest::{Response, StatusCode};

use super::{RegistryClient, scope};
use crate::cache::Cache;
use crate::error::{Error, ImageError, Result};
use crate::net::{self, Failure, NetError, Step};
use crate::oci::digest;
use crate::oci::media::{MANIFEST_ACCEPT, MAX_JSON_BYTES};
use crate::oci::reference::Reference;
use crate::report::Transfer;

impl RegistryClient {
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
        self.pull_blob_shown(r, digest, cache, &Transfer::default())
            .await
    }

    /// As [`Self::pull_blob`], the bytes shown by `progress` as they arrive.
    pub(crate) async fn pull_blob_shown(
        &self,
        r: &Reference,
        digest: &Digest,
        cache: &Cache,
        progress: &Transfer,
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
            progress,
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
