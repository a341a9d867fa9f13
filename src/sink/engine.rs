//! The engine sink (`--load`): the image streamed into the local Docker Engine or podman
//! through their Docker-compatible API on a unix socket, with no tarball on disk. An engine
//! that already has the image and every tag gets nothing; one that has the image under other
//! names only gets the missing tags.

use std::path::PathBuf;

use bytes::Bytes as Chunk;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde::Serialize;

pub use crate::error::EngineError;
use crate::error::{Error, ImageError, Result};
use crate::oci::reference::Reference;
use crate::oci::{Artifact, digest};
use crate::report::{Reporter, Transfer};

use super::Local;
use super::tarball::{Naming, blobs, stream_tarball};

/// A local engine's API socket.
#[derive(Clone, Debug)]
pub struct Engine {
    pub socket: PathBuf,
    /// Where the socket was found (`DOCKER_HOST`, `/var/run/docker.sock`, …).
    pub found_by: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub engine: String,
    /// `loaded`, `tagged` (the engine had the image; only names were added) or `present`.
    pub action: String,
    pub tags: Vec<String>,
}

/// The sockets tried, in order: `DOCKER_HOST`, Docker's default, `CONTAINER_HOST`, podman's
/// rootless and rootful sockets.
fn candidates() -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let from_url = |var: &str| -> Result<Option<(String, PathBuf)>> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => match v.strip_prefix("unix://") {
                Some(p) => Ok(Some((format!("{var}={v}"), PathBuf::from(p)))),
                None => Err(Error::Usage(format!(
                    "{var}={v}: --load speaks to an engine on a unix socket (unix:///path); for a remote engine write a tarball with -o and load it there"
                ))),
            },
            _ => Ok(None),
        }
    };
    out.extend(from_url("DOCKER_HOST")?);
    out.push((
        "Docker's default".into(),
        PathBuf::from("/var/run/docker.sock"),
    ));
    out.extend(from_url("CONTAINER_HOST")?);
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        out.push((
            "podman's rootless socket".into(),
            PathBuf::from(dir).join("podman/podman.sock"),
        ));
    }
    out.push((
        "podman's socket".into(),
        PathBuf::from("/run/podman/podman.sock"),
    ));
    Ok(out)
}

impl Engine {
    /// The first engine that answers `/_ping`; the error lists every socket tried.
    pub async fn find() -> Result<Engine> {
        let mut tried = Vec::new();
        for (found_by, socket) in candidates()? {
            let engine = Engine { socket, found_by };
            match engine.request("GET", "/_ping", None).await {
                Ok((status, _)) if status.is_success() => return Ok(engine),
                Ok((status, _)) => tried.push(format!(
                    "{} ({}): answered {status}",
                    engine.socket.display(),
                    engine.found_by
                )),
                Err(e) => tried.push(format!(
                    "{} ({}): {e}",
                    engine.socket.display(),
                    engine.found_by
                )),
            }
        }
        Err(EngineError::NotFound { tried }.into())
    }

    fn name(&self) -> String {
        format!("{} ({})", self.socket.display(), self.found_by)
    }

    /// One request; returns the status and the whole answer (small JSON answers only).
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(hyper::StatusCode, Vec<u8>)> {
        let mut sender = self.connect().await?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(Full::new(Chunk::from(body.unwrap_or_default())))
            .map_err(|e| Error::Input(format!("internal: request {path}: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.broken(path, e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.broken(path, e))?
            .to_bytes();
        Ok((status, bytes.to_vec()))
    }

    async fn connect<B>(&self) -> Result<hyper::client::conn::http1::SendRequest<B>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| Error::Input(format!("cannot connect: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Input(format!("no HTTP on the socket: {e}")))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    fn broken(&self, path: &str, e: impl std::fmt::Display) -> Error {
        EngineError::Broken {
            engine: self.name(),
            request: path.to_string(),
            detail: e.to_string(),
        }
        .into()
    }

    /// The engine's id of an image and its names, when it has the image (looked up by config
    /// digest, the id of Docker's classic store and podman, then by manifest digest, the id of
    /// the containerd store).
    async fn existing(&self, ids: &[String]) -> Result<Option<(String, Vec<String>)>> {
        for id in ids {
            let (status, body) = self
                .request("GET", &format!("/images/{id}/json"), None)
                .await?;
            if status.is_success()
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
            {
                let tags = v["RepoTags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str())
                    .filter_map(|t| Reference::parse(t).ok())
                    .map(|r| r.canonical())
                    .collect();
                return Ok(Some((id.clone(), tags)));
            }
        }
        Ok(None)
    }
}

/// The engine already has the image as `id` under `have`: add the tags it lacks, and send
/// nothing.
async fn tag_existing(
    engine: &Engine,
    id: &str,
    have: &[String],
    naming: &Naming,
    config_digest: &oci_spec::image::Digest,
    wanted: &[String],
    reporter: &dyn Reporter,
) -> Result<LoadReport> {
    let missing: Vec<&Reference> = naming
        .tags
        .iter()
        .filter(|t| !have.contains(&t.canonical()))
        .collect();
    if missing.is_empty() {
        reporter.step(&format!(
            "{} already has {} as {}: nothing sent",
            engine.name(),
            config_digest,
            wanted.join(", ")
        ));
        return Ok(LoadReport {
            engine: engine.name(),
            action: "present".into(),
            tags: wanted.to_vec(),
        });
    }
    for t in missing {
        let path = format!(
            "/images/{id}/tag?repo={}&tag={}",
            crate::registry::urlencode(&t.familiar()),
            crate::registry::urlencode(t.tag_or_latest())
        );
        let (status, body) = engine.request("POST", &path, None).await?;
        if !status.is_success() {
            return Err(EngineError::Refused {
                engine: engine.name(),
                message: format!(
                    "tagging {id} as {}: {status} {}",
                    t.familiar_tagged(),
                    String::from_utf8_lossy(&body).trim()
                ),
            }
            .into());
        }
    }
    reporter.step(&format!(
        "{} already had {}: tagged {} (no image sent)",
        engine.name(),
        config_digest,
        wanted.join(", ")
    ));
    Ok(LoadReport {
        engine: engine.name(),
        action: "tagged".into(),
        tags: wanted.to_vec(),
    })
}

/// Load `artifact` under `tags` into `engine` (an index gives the engine's platform image).
pub(crate) async fn load(
    engine: &Engine,
    artifact: &Artifact,
    local: Local,
    naming: &Naming,
    cache: &crate::cache::Cache,
    reporter: &dyn Reporter,
) -> Result<LoadReport> {
    let image = artifact
        .image_for(naming.platform.as_ref())
        .ok_or_else(|| {
            Error::from(ImageError::Invalid(
                "the index holds no runnable image".to_string(),
            ))
        })?;
    let wanted: Vec<String> = naming.tags.iter().map(Reference::canonical).collect();
    let ids = [image.config_digest.to_string(), image.digest.to_string()];
    if let Some((id, have)) = engine.existing(&ids).await? {
        return tag_existing(
            engine,
            &id,
            &have,
            naming,
            &image.config_digest,
            &wanted,
            reporter,
        )
        .await;
    }

    // The archive goes straight from a writer thread into the request body.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Chunk>>(8);
    let (art, nm, c) = (artifact.clone(), naming.clone(), cache.clone());
    let size =
        image.layers.iter().map(|l| l.blob.size).sum::<u64>() + image.config_bytes.len() as u64;
    let progress = reporter.task("loading", &format!("into {}", engine.name()), size);
    let shown = progress.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx: tx.clone(),
            progress: shown,
        };
        let r = blobs(&art, &|d| local.get(d).cloned()).and_then(|blobs| {
            stream_tarball(
                std::io::BufWriter::with_capacity(1 << 20, out),
                &art,
                &blobs,
                &nm,
                &c,
            )
        });
        if let Err(e) = &r {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        r
    });
    let body = StreamBody::new(futures_util::StreamExt::map(
        tokio_stream_from(rx),
        |r: std::io::Result<Chunk>| r.map(Frame::data),
    ));
    let mut sender = engine.connect().await?;
    let req = hyper::Request::builder()
        .method("POST")
        .uri("/images/load?quiet=1")
        .header("host", "localhost")
        .header("content-type", "application/x-tar")
        .body(body)
        .map_err(|e| Error::Input(format!("internal: load request: {e}")))?;
    let sent = sender.send_request(req).await;
    let written = writer
        .await
        .map_err(|e| Error::from(ImageError::Internal(format!("archive writer failed: {e}"))))?;
    // The engine's answer comes first: when it stopped reading, it says why.
    let answer = match sent {
        Ok(resp) => {
            let status = resp.status();
            resp.into_body()
                .collect()
                .await
                .map(|b| (status, b.to_bytes()))
                .map_err(|e| engine.broken("/images/load", e))
        }
        Err(e) => Err(engine.broken("/images/load", e)),
    };
    let (status, answer) = match (answer, written) {
        (Ok(a), _) => a,
        (Err(e), Ok(())) => return Err(e),
        (Err(e), Err(w)) => {
            return Err(EngineError::Broken {
                engine: engine.name(),
                request: "/images/load".into(),
                detail: format!("{e} (while sending: {w})"),
            }
            .into());
        }
    };
    // Docker answers 200 and reports a failure inside its JSON stream.
    let failure = engine_error(&answer);
    if !status.is_success() || failure.is_some() {
        return Err(EngineError::Refused {
            engine: engine.name(),
            message: failure
                .unwrap_or_else(|| format!("{status} {}", String::from_utf8_lossy(&answer).trim())),
        }
        .into());
    }
    progress.done("done");
    reporter.step(&format!(
        "loaded {} into {} as {}",
        digest::short(&image.config_digest),
        engine.name(),
        wanted.join(", ")
    ));
    Ok(LoadReport {
        engine: engine.name(),
        action: "loaded".into(),
        tags: wanted,
    })
}

/// The first `error` (or `errorDetail.message`) in an engine's JSON message stream.
fn engine_error(answer: &[u8]) -> Option<String> {
    serde_json::Deserializer::from_slice(answer)
        .into_iter::<serde_json::Value>()
        .filter_map(|v| v.ok())
        .find_map(|v| {
            v["error"]
                .as_str()
                .or_else(|| v["errorDetail"]["message"].as_str())
                .or_else(|| v["cause"].as_str().filter(|_| v["message"].is_string()))
                .map(str::to_string)
        })
}

/// A writer that hands its bytes to the request body, chunk by chunk.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Chunk>>,
    /// Told of every byte sent.
    progress: Transfer,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Chunk::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the engine stopped reading")
            })?;
        self.progress.advance(buf.len() as u64);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Chunk>>,
) -> impl futures_util::Stream<Item = std::io::Result<Chunk>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_in_the_stream() {
        let ok = br#"{"stream":"Loaded image: hello:0.1.0\n"}"#;
        assert_eq!(engine_error(ok), None);
        let bad = br#"{"stream":"x"}
{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}"#;
        assert_eq!(engine_error(bad).as_deref(), Some("unexpected EOF"));
    }
}
