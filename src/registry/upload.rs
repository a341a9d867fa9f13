//! Writing to a registry: blob existence checks, cross-repository mounts, streamed monolithic
//! and chunked uploads (hashed while they are sent), and manifest PUTs.

use std::sync::{Arc, Mutex};

use oci_spec::image::Digest;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Body, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{RegistryClient, append_query, scope};
use crate::error::{Error, Result};
use crate::net::{self, Activity, Attempt, Failure, NetError, Step};
use crate::oci::FileRange as BlobLocation;
use crate::oci::digest;
use crate::oci::reference::Reference;
use crate::report::Transfer;

/// How blobs are sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct UploadOptions {
    /// Send blobs in PATCH chunks of at most this many bytes (raised to the registry's
    /// `OCI-Chunk-Min-Length`) instead of one streamed PUT.
    pub chunk_size: Option<u64>,
}

/// What a mount attempt gave.
pub enum Mount {
    /// The registry linked the blob from the source repository (201).
    Mounted,
    /// The registry opened an upload session instead (202): continue it.
    Session(UploadSession),
    /// The mount was refused; upload normally.
    Refused(String),
}

#[derive(Clone, Debug)]
pub struct UploadSession {
    url: String,
    chunk_min: Option<u64>,
}

/// GHCR refuses request bodies over 4 MiB; the chunk size used when a registry answers 413.
const FALLBACK_CHUNK: u64 = 4 << 20;
const READ_CHUNK: usize = 256 << 10;

impl RegistryClient {
    /// Whether `target`'s repository already holds `digest` (HEAD; retried).
    pub(crate) async fn blob_exists(&self, target: &Reference, digest: &Digest) -> Result<bool> {
        let path = format!("/v2/{}/blobs/{digest}", target.repository);
        let resp = self
            .send(
                target.api_host(),
                &[scope(&target.repository, "pull,push")],
                |c, base| c.head(format!("{base}{path}")),
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.status_error(target.api_host(), "HEAD", &path, s, b"")),
        }
    }

    /// Upload the blob at `at` unless `target`'s repository holds `digest` already, quietly and
    /// with the default options (for blobs sent outside a push: layers sent ahead, cache
    /// repository entries). Whether it was uploaded.
    pub(crate) async fn upload_if_missing(
        &self,
        target: &Reference,
        digest: &Digest,
        at: &BlobLocation,
    ) -> Result<bool> {
        if self.blob_exists(target, digest).await? {
            return Ok(false);
        }
        self.upload_blob(
            target,
            digest,
            at,
            None,
            UploadOptions::default(),
            &Transfer::default(),
        )
        .await?;
        Ok(true)
    }

    /// Ask the registry to link `digest` from `from` (same registry) into `target`.
    pub(crate) async fn mount_blob(
        &self,
        target: &Reference,
        digest: &Digest,
        from: &Reference,
    ) -> Result<Mount> {
        let path = append_query(
            &format!("/v2/{}/blobs/uploads/", target.repository),
            &[("mount", digest.as_ref()), ("from", &from.repository)],
        );
        let scopes = [
            scope(&target.repository, "pull,push"),
            scope(&from.repository, "pull"),
        ];
        let resp = self
            .send(target.api_host(), &scopes, |c, base| {
                c.post(format!("{base}{path}")).header(CONTENT_LENGTH, 0)
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => Ok(Mount::Session(self.session_of(target, &resp)?)),
            s => {
                let body = resp.bytes().await.unwrap_or_default();
                Ok(Mount::Refused(format!(
                    "{s}: {}",
                    super::registry_error_text(&body)
                )))
            }
        }
    }

    /// Open an upload session (POST; retried).
    pub(crate) async fn start_upload(&self, target: &Reference) -> Result<UploadSession> {
        let path = format!("/v2/{}/blobs/uploads/", target.repository);
        let resp = self
            .send(
                target.api_host(),
                &[scope(&target.repository, "pull,push")],
                |c, base| c.post(format!("{base}{path}")).header(CONTENT_LENGTH, 0),
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(self.status_error(target.api_host(), "POST", &path, status, &body));
        }
        self.session_of(target, &resp)
    }

    fn session_of(&self, target: &Reference, resp: &Response) -> Result<UploadSession> {
        let location = header(resp, LOCATION.as_str()).ok_or_else(|| {
            Error::from(NetError::protocol(
                &target.registry,
                format!(
                    "registry {} opened an upload without a Location header",
                    target.registry
                ),
            ))
        })?;
        Ok(UploadSession {
            url: self.absolute(target.api_host(), &location)?,
            chunk_min: header(resp, "oci-chunk-min-length").and_then(|v| v.parse().ok()),
        })
    }

    /// A Location header made absolute against the registry's base URL.
    fn absolute(&self, host: &str, location: &str) -> Result<String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return Ok(location.to_string());
        }
        let base = self.base_url(host)?;
        Ok(if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            format!("{base}/{location}")
        })
    }

    /// Upload one blob, restarting from a fresh session when an attempt breaks off, under the
    /// retry policy. `session` is one the registry already opened (a mount answered 202).
    /// A registry that answers 413 gets chunks; one that refuses a monolithic PUT with a body
    /// (Artifactory) gets the bytes by PATCH.
    pub(crate) async fn upload_blob(
        &self,
        target: &Reference,
        digest: &Digest,
        at: &BlobLocation,
        session: Option<UploadSession>,
        opts: UploadOptions,
        transfer: &Transfer,
    ) -> Result<()> {
        let mode = match opts.chunk_size {
            Some(max) => Mode::Chunked(max),
            None => Mode::Monolithic,
        };
        // What one attempt leaves the next: a session not yet used, and how to send.
        let state = &tokio::sync::Mutex::new((session, mode));
        net::retry(
            &self.opts.policy,
            &format!("registry {}", target.registry),
            move |_| async move {
                let mut state = state.lock().await;
                let (session, mode) = &mut *state;
                let s = match session.take() {
                    Some(s) => s,
                    None => self.start_upload(target).await?,
                };
                transfer.restart();
                let outcome = match *mode {
                    Mode::Monolithic => self.put_monolithic(target, digest, at, &s, transfer).await,
                    Mode::Patch => self.put_patched(target, digest, at, &s, transfer).await,
                    Mode::Chunked(max) => {
                        let size = max.max(s.chunk_min.unwrap_or(0)).max(1);
                        self.put_chunked(target, digest, at, &s, size, transfer)
                            .await
                    }
                };
                let failure = match outcome {
                    Ok(()) => return Ok(Step::Done(())),
                    Err(f) => f,
                };
                // The registry holds a broken partial upload: leave it, start a new session.
                Ok(match (&failure, *mode) {
                    (UploadFailure::TooLarge, Mode::Monolithic | Mode::Patch) => {
                        *mode = Mode::Chunked(FALLBACK_CHUNK);
                        Step::Again(failure)
                    }
                    (UploadFailure::Refused { .. }, Mode::Monolithic) => {
                        *mode = Mode::Patch;
                        Step::Again(failure)
                    }
                    _ => Step::Failed(failure),
                })
            },
            |failure, attempts| failure.into_error(target, digest, attempts),
        )
        .await
    }

    /// Copy a blob from `src` (on another registry) into `target`, streaming the download
    /// into the upload without a copy on disk. The bytes are hashed on the way and the upload
    /// fails before it is committed if they are not `digest`'s. Retried from the start.
    pub(crate) async fn copy_blob(
        &self,
        src: &Reference,
        target: &Reference,
        digest: &Digest,
        size: u64,
        transfer: &Transfer,
    ) -> Result<()> {
        net::retry(
            &self.opts.policy,
            &format!("registry {}", target.registry),
            move |_| async move {
                Ok(
                    match self.copy_once(src, target, digest, size, transfer).await {
                        Ok(()) => Step::Done(()),
                        Err(f) => Step::Failed(f),
                    },
                )
            },
            |failure, attempts| failure.into_error(target, digest, attempts),
        )
        .await
    }

    async fn copy_once(
        &self,
        src: &Reference,
        target: &Reference,
        digest: &Digest,
        size: u64,
        transfer: &Transfer,
    ) -> std::result::Result<(), UploadFailure> {
        let path = format!("/v2/{}/blobs/{digest}", src.repository);
        let resp = self
            .send(
                src.api_host(),
                &[scope(&src.repository, "pull")],
                |c, base| c.get(format!("{base}{path}")),
            )
            .await
            .map_err(|e| UploadFailure::Local(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(status_failure(resp).await);
        }
        let s = self
            .start_upload(target)
            .await
            .map_err(|e| UploadFailure::Local(e.to_string()))?;
        transfer.restart();
        let activity = Activity::default();
        let mismatch = Arc::new(Mutex::new(None));
        let body = hashed_stream(
            resp,
            digest.clone(),
            transfer.clone(),
            activity.clone(),
            mismatch.clone(),
        );
        let body = Mutex::new(Some(body));
        let url = append_query(&s.url, &[("digest", digest.as_ref())]);
        let make = |c: &reqwest::Client, _: &str| {
            let req = c
                .put(url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size);
            // The stream can be sent once; a second try of this request starts over above.
            match body.lock().ok().and_then(|mut b| b.take()) {
                Some(b) => req.body(b),
                None => req.body(Vec::new()),
            }
        };
        let resp = self.send_upload(target, &url, &make, &activity).await;
        if let Some(actual) = mismatch.lock().ok().and_then(|m| m.clone()) {
            return Err(UploadFailure::Corrupt(actual));
        }
        finish(resp?).await
    }

    /// POST, then one PUT `?digest=` carrying the whole blob.
    async fn put_monolithic(
        &self,
        target: &Reference,
        digest: &Digest,
        at: &BlobLocation,
        s: &UploadSession,
        transfer: &Transfer,
    ) -> std::result::Result<(), UploadFailure> {
        let url = append_query(&s.url, &[("digest", digest.as_ref())]);
        let mismatch = Arc::new(Mutex::new(None));
        let activity = Activity::default();
        let make = |c: &reqwest::Client, _: &str| {
            c.put(url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, at.size)
                .body(file_body(
                    at.clone(),
                    digest.clone(),
                    transfer.clone(),
                    activity.clone(),
                    mismatch.clone(),
                ))
        };
        let resp = self.send_upload(target, &url, &make, &activity).await;
        if let Some(actual) = mismatch.lock().ok().and_then(|m| m.clone()) {
            return Err(UploadFailure::Corrupt(actual));
        }
        match resp? {
            // Some registries (Artifactory) take blob bytes only by PATCH.
            r if matches!(r.status().as_u16(), 400 | 405 | 415 | 501) => {
                Err(UploadFailure::Refused {
                    status: r.status(),
                    text: super::registry_error_text(&r.bytes().await.unwrap_or_default()),
                })
            }
            r => finish(r).await,
        }
    }

    /// POST, one PATCH streaming the whole blob (no Content-Range), then an empty PUT
    /// `?digest=`: the widest-supported streamed upload.
    async fn put_patched(
        &self,
        target: &Reference,
        digest: &Digest,
        at: &BlobLocation,
        s: &UploadSession,
        transfer: &Transfer,
    ) -> std::result::Result<(), UploadFailure> {
        let mismatch = Arc::new(Mutex::new(None));
        let activity = Activity::default();
        let make = |c: &reqwest::Client, _: &str| {
            c.patch(s.url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, at.size)
                .body(file_body(
                    at.clone(),
                    digest.clone(),
                    transfer.clone(),
                    activity.clone(),
                    mismatch.clone(),
                ))
        };
        let resp = self.send_upload(target, &s.url, &make, &activity).await;
        if let Some(actual) = mismatch.lock().ok().and_then(|m| m.clone()) {
            return Err(UploadFailure::Corrupt(actual));
        }
        let resp = resp?;
        if !resp.status().is_success() {
            return Err(status_failure(resp).await);
        }
        let next = header(&resp, LOCATION.as_str()).unwrap_or_else(|| s.url.clone());
        let next = self
            .absolute(target.api_host(), &next)
            .map_err(|e| UploadFailure::Local(e.to_string()))?;
        let url = append_query(&next, &[("digest", digest.as_ref())]);
        let make = |c: &reqwest::Client, _: &str| c.put(url.clone()).header(CONTENT_LENGTH, 0);
        finish(
            self.send_upload(target, &url, &make, &Activity::default())
                .await?,
        )
        .await
    }

    async fn put_chunked(
        &self,
        target: &Reference,
        digest: &Digest,
        at: &BlobLocation,
        s: &UploadSession,
        chunk: u64,
        transfer: &Transfer,
    ) -> std::result::Result<(), UploadFailure> {
        let mut file = tokio::fs::File::open(&at.path)
            .await
            .map_err(|e| UploadFailure::Local(format!("open {}: {e}", at.path.display())))?;
        file.seek(std::io::SeekFrom::Start(at.offset))
            .await
            .map_err(|e| UploadFailure::Local(format!("seek {}: {e}", at.path.display())))?;
        let mut hasher = Sha256::new();
        let mut url = s.url.clone();
        let mut sent = 0u64;
        while sent < at.size {
            let n = chunk.min(at.size - sent);
            // One chunk in memory at a time: at most the chunk size (4 MiB on GHCR).
            let mut buf = vec![0u8; n as usize];
            file.read_exact(&mut buf)
                .await
                .map_err(|e| UploadFailure::Local(format!("read {}: {e}", at.path.display())))?;
            hasher.update(&buf);
            let range = format!("{}-{}", sent, sent + n - 1);
            let buf = bytes::Bytes::from(buf);
            let activity = Activity::default();
            let make = |c: &reqwest::Client, _: &str| {
                c.patch(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header("Content-Range", range.clone())
                    .header(CONTENT_LENGTH, n)
                    .body(pieces(buf.clone(), activity.clone()))
            };
            let resp = self.send_upload(target, &url, &make, &activity).await?;
            if !resp.status().is_success() {
                return Err(status_failure(resp).await);
            }
            let next = header(&resp, LOCATION.as_str()).ok_or_else(|| {
                UploadFailure::Local("the registry accepted a chunk without a Location".into())
            })?;
            url = self
                .absolute(target.api_host(), &next)
                .map_err(|e| UploadFailure::Local(e.to_string()))?;
            sent += n;
            transfer.advance(n);
        }
        let actual = digest::from_hasher(hasher);
        if &actual != digest {
            return Err(UploadFailure::Corrupt(actual));
        }
        let url = append_query(&url, &[("digest", digest.as_ref())]);
        let make = |c: &reqwest::Client, _: &str| c.put(url.clone()).header(CONTENT_LENGTH, 0);
        finish(
            self.send_upload(target, &url, &make, &Activity::default())
                .await?,
        )
        .await
    }

    /// Send one upload request to `url`, with credentials only when `url` is on the registry's
    /// own origin: an upload redirected to storage elsewhere never sees them. Watched for
    /// stalls: `activity` is touched as the body is read (a server that stops reading, or
    /// stops answering, is caught after the idle timeout).
    async fn send_upload(
        &self,
        target: &Reference,
        url: &str,
        make: &impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
        activity: &Activity,
    ) -> std::result::Result<Response, UploadFailure> {
        let host = target.api_host();
        let base = self
            .base_url(host)
            .map_err(|e| UploadFailure::Local(e.to_string()))?;
        let scopes = [scope(&target.repository, "pull,push")];
        let idle = self.opts.policy.idle;
        if same_origin(&base, url) {
            match net::watched(self.send_once(host, &scopes, make), activity, idle).await {
                Err(stalled) => Err(UploadFailure::Net(stalled)),
                Ok(Err(Attempt::Failed(f))) => Err(UploadFailure::Net(f)),
                Ok(Err(Attempt::Fatal(e))) => Err(UploadFailure::Local(e.to_string())),
                Ok(Ok(r)) => Ok(r),
            }
        } else {
            match net::watched(make(&self.http, &base).send(), activity, idle).await {
                Err(stalled) => Err(UploadFailure::Net(stalled)),
                Ok(Err(e)) => Err(UploadFailure::Net(Failure::Transport(net::error_chain(&e)))),
                Ok(Ok(r)) => Ok(r),
            }
        }
    }

    /// Store a manifest under `reference` (a tag or its digest); its Content-Type is its own
    /// media type. Retried. Returns whether the registry processed a `subject` field (the
    /// `OCI-Subject` header of registries with the referrers API).
    pub(crate) async fn put_manifest(
        &self,
        target: &Reference,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<bool> {
        let path = format!("/v2/{}/manifests/{reference}", target.repository);
        let body = bytes.to_vec();
        let resp = self
            .send(
                target.api_host(),
                &[scope(&target.repository, "pull,push")],
                |c, base| {
                    c.put(format!("{base}{path}"))
                        .header(CONTENT_TYPE, media_type)
                        .body(body.clone())
                },
            )
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(self.status_error(target.api_host(), "PUT", &path, status, &body));
        }
        let expected = digest::sha256_of(bytes);
        if let Some(said) = header(&resp, "docker-content-digest")
            && said != expected.as_ref()
        {
            return Err(NetError::protocol(
                &target.registry,
                format!(
                    "registry {} stored manifest {path} as {said}, but imgbuild sent {expected}: the registry rewrote it",
                    target.registry
                ),
            )
            .into());
        }
        Ok(header(&resp, "oci-subject").is_some())
    }

    /// A manifest or index by tag, or `None` when the registry has none under that name.
    pub(crate) async fn find_manifest(
        &self,
        target: &Reference,
        reference: &str,
    ) -> Result<Option<Vec<u8>>> {
        let path = format!("/v2/{}/manifests/{reference}", target.repository);
        let resp = self
            .send(
                target.api_host(),
                &[scope(&target.repository, "pull,push")],
                |c, base| {
                    c.get(format!("{base}{path}"))
                        .header("Accept", crate::oci::media::MANIFEST_ACCEPT)
                },
            )
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(
                resp.bytes()
                    .await
                    .map_err(|e| {
                        NetError::protocol(
                            &target.registry,
                            format!("reading {path} broke off: {}", net::error_chain(&e)),
                        )
                    })?
                    .to_vec(),
            )),
            s => {
                let body = resp.bytes().await.unwrap_or_default();
                Err(self.status_error(target.api_host(), "GET", &path, s, &body))
            }
        }
    }
}

/// How blob bytes are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// POST, then PUT with the body.
    Monolithic,
    /// POST, PATCH with the body, empty PUT.
    Patch,
    /// POST, PATCHes of at most this many bytes with Content-Range, empty PUT.
    Chunked(u64),
}

/// Why one upload attempt failed.
enum UploadFailure {
    /// The connection broke or stalled, or the registry answered an error status.
    Net(Failure),
    /// 413: the registry wants smaller bodies.
    TooLarge,
    /// The registry refused a monolithic PUT with a body.
    Refused {
        status: StatusCode,
        text: String,
    },
    /// The bytes read do not hash to the blob's digest.
    Corrupt(Digest),
    Local(String),
}

/// Only a network failure is for the policy to judge: the others no retry of the same
/// request mends.
impl net::Retryable for UploadFailure {
    fn failure(&self) -> Option<&Failure> {
        match self {
            UploadFailure::Net(f) => Some(f),
            _ => None,
        }
    }
}

impl UploadFailure {
    fn into_error(self, target: &Reference, digest: &Digest, attempts: u32) -> Error {
        let who = format!("registry {}", target.registry);
        let request = format!("the upload of {digest} to {}", target.repository);
        match self {
            UploadFailure::Net(Failure::Status {
                status,
                text,
                retry_after: _,
            }) if !net::retryable_status(status) => NetError::Refused {
                who,
                request,
                status,
                text,
                hint: "; check the push rights for this repository".into(),
            }
            .into(),
            UploadFailure::Net(failure) => NetError::GaveUp {
                who,
                request,
                hint: NetError::hint_for(&failure).into(),
                failure,
                attempts,
            }
            .into(),
            UploadFailure::TooLarge => NetError::Refused {
                who,
                request,
                status: StatusCode::PAYLOAD_TOO_LARGE,
                text: format!("even {FALLBACK_CHUNK}-byte chunks are too large"),
                hint: "; pass a smaller --chunk-size".into(),
            }
            .into(),
            UploadFailure::Refused { status, text } => NetError::Refused {
                who,
                request: format!("{request} (by PUT and by PATCH)"),
                status,
                text,
                hint: String::new(),
            }
            .into(),
            UploadFailure::Corrupt(actual) => Error::DigestMismatch {
                what: format!("blob {digest} read for upload"),
                expected: digest.to_string(),
                actual: actual.to_string(),
            },
            UploadFailure::Local(m) => NetError::protocol(who, format!("{request}: {m}")).into(),
        }
    }
}

async fn status_failure(resp: Response) -> UploadFailure {
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return UploadFailure::TooLarge;
    }
    UploadFailure::Net(super::status_failure(resp).await)
}

/// Success is any 2xx (ECR answers 201 where others answer 202, and the reverse).
async fn finish(resp: Response) -> std::result::Result<(), UploadFailure> {
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(status_failure(resp).await)
    }
}

/// A chunk in memory as a body of 256 KiB pieces, so the idle watch sees it move.
fn pieces(buf: bytes::Bytes, activity: Activity) -> Body {
    let n = buf.len();
    let stream = futures_util::stream::iter((0..n).step_by(READ_CHUNK).map(move |i| {
        activity.touch();
        Ok::<_, std::io::Error>(buf.slice(i..(i + READ_CHUNK).min(n)))
    }));
    Body::wrap_stream(stream)
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// scheme://host:port of a URL, for comparing origins.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

fn same_origin(a: &str, b: &str) -> bool {
    origin(a).eq_ignore_ascii_case(origin(b))
}

/// A request body streamed from `at`, hashed as it goes. When the bytes do not match
/// `expected`, the last chunk is replaced by an error (so the request fails) and the actual
/// digest is left in `mismatch`.
fn file_body(
    at: BlobLocation,
    expected: Digest,
    transfer: Transfer,
    activity: Activity,
    mismatch: Arc<Mutex<Option<Digest>>>,
) -> Body {
    struct State {
        file: Option<tokio::fs::File>,
        remaining: u64,
        hasher: Sha256,
    }
    let init = State {
        file: None,
        remaining: at.size,
        hasher: Sha256::new(),
    };
    let stream = futures_util::stream::unfold(Some(init), move |state| {
        let at = at.clone();
        let expected = expected.clone();
        let transfer = transfer.clone();
        let mismatch = mismatch.clone();
        let activity = activity.clone();
        async move {
            let mut st = state?;
            if st.remaining == 0 {
                return None;
            }
            let io_err = |e: std::io::Error| {
                std::io::Error::new(e.kind(), format!("{}: {e}", at.path.display()))
            };
            if st.file.is_none() {
                let opened = async {
                    let mut f = tokio::fs::File::open(&at.path).await?;
                    f.seek(std::io::SeekFrom::Start(at.offset)).await?;
                    Ok::<_, std::io::Error>(f)
                }
                .await;
                match opened {
                    Ok(f) => st.file = Some(f),
                    Err(e) => return Some((Err(io_err(e)), None)),
                }
            }
            let want = (st.remaining).min(READ_CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            let file = st.file.as_mut()?;
            if let Err(e) = file.read_exact(&mut buf).await {
                return Some((Err(io_err(e)), None));
            }
            st.hasher.update(&buf);
            st.remaining -= want as u64;
            if st.remaining == 0 {
                let actual = digest::from_hasher(std::mem::take(&mut st.hasher));
                if actual != expected {
                    if let Ok(mut m) = mismatch.lock() {
                        *m = Some(actual);
                    }
                    let e = std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} does not hash to {expected}", at.path.display()),
                    );
                    return Some((Err(e), None));
                }
            }
            transfer.advance(want as u64);
            activity.touch();
            Some((Ok(buf), Some(st)))
        }
    });
    Body::wrap_stream(stream)
}

/// A download's body passed on as an upload's, hashed as it goes; when it ends with the wrong
/// digest the stream ends in an error (so the upload is not committed) and the actual digest
/// is left in `mismatch`.
fn hashed_stream(
    resp: Response,
    expected: Digest,
    transfer: Transfer,
    activity: Activity,
    mismatch: Arc<Mutex<Option<Digest>>>,
) -> Body {
    use futures_util::StreamExt;
    struct State<S> {
        inner: S,
        hasher: Sha256,
    }
    let init = State {
        inner: resp.bytes_stream(),
        hasher: Sha256::new(),
    };
    let stream = futures_util::stream::unfold(Some(init), move |state| {
        let (expected, transfer, mismatch, activity) = (
            expected.clone(),
            transfer.clone(),
            mismatch.clone(),
            activity.clone(),
        );
        async move {
            let mut st = state?;
            match st.inner.next().await {
                Some(Ok(chunk)) => {
                    st.hasher.update(&chunk);
                    transfer.advance(chunk.len() as u64);
                    activity.touch();
                    Some((Ok(chunk), Some(st)))
                }
                Some(Err(e)) => Some((
                    Err(std::io::Error::other(format!(
                        "download broke off: {}",
                        net::error_chain(&e)
                    ))),
                    None,
                )),
                None => {
                    let actual = digest::from_hasher(st.hasher);
                    if actual == expected {
                        return None;
                    }
                    if let Ok(mut m) = mismatch.lock() {
                        *m = Some(actual);
                    }
                    Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("the source registry's bytes do not hash to {expected}"),
                        )),
                        None,
                    ))
                }
            }
        }
    });
    Body::wrap_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin("https://r.example:5000/v2/x/blobs/uploads/1?a=b"),
            "https://r.example:5000"
        );
        assert!(same_origin(
            "http://127.0.0.1:5000",
            "http://127.0.0.1:5000/v2/"
        ));
        assert!(!same_origin(
            "https://r.example",
            "https://s3.amazonaws.com/bucket/x"
        ));
        assert!(!same_origin("https://r.example", "http://r.example/v2/"));
    }
}
