//! Sinks: where images go. One [`Sink`] trait, four kinds — a tarball every loader accepts,
//! an OCI layout directory, registries, and the local engine — and [`write_all`], which hands
//! one artifact to several sinks in turn (ko's `MultiPublisher`).

pub mod engine;
pub mod registry;
pub mod tarball;

use std::collections::HashMap;
use std::path::PathBuf;

use futures_util::future::BoxFuture;
use oci_spec::image::Digest;
use serde::Serialize;

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::oci::reference::Reference;
use crate::oci::{Artifact, Blob, BlobSource, FileRange};

pub use self::tarball::Naming;

/// What every sink may use: the blob cache, the registry client, the reporter.
pub use crate::context::Context;

/// What a sink did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "lowercase", tag = "sink")]
pub enum Written {
    Tarball { path: PathBuf },
    Layout { path: PathBuf },
    Registry(registry::PushReport),
    Engine(engine::LoadReport),
}

pub trait Sink: Send + Sync {
    /// The sink in messages (`image.tar`, `registry.example/app`).
    fn describe(&self) -> String;
    fn write<'a>(
        &'a self,
        artifact: &'a Artifact,
        cx: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Written>>;
}

/// Write `artifact` to every sink, in order; the first failure stops the rest.
pub async fn write_all(
    sinks: &[Box<dyn Sink>],
    artifact: &Artifact,
    cx: &Context<'_>,
) -> Result<Vec<Written>> {
    let mut out = Vec::new();
    for s in sinks {
        out.push(s.write(artifact, cx).await?);
    }
    Ok(out)
}

/// Local byte ranges of the registry blobs of an artifact.
pub type Local = HashMap<Digest, FileRange>;

/// Fetch every registry blob of `artifact` into the cache (verified), for sinks that write
/// bytes.
async fn localize_all(artifact: &Artifact, cx: &Context<'_>) -> Result<Local> {
    use futures_util::{StreamExt, TryStreamExt};
    let remote: Vec<(&Blob, &str)> = artifact
        .images()
        .into_iter()
        .flat_map(|i| {
            i.layers
                .iter()
                .map(|l| (&l.blob, l.kind.as_str()))
                .chain(i.attachments.iter().map(|a| (&a.blob, "attachment")))
        })
        .filter(|(b, _)| matches!(b.source, BlobSource::Registry(_)))
        .collect();
    // The futures are made first, so no closure type is held across an await (a future that
    // holds one cannot be proven Send for every lifetime).
    let jobs: Vec<_> = remote
        .into_iter()
        .map(|(b, kind)| {
            Box::pin(async move {
                // Shown as a push is: `pulling ab12cd34ef56 base`.
                let label = format!(
                    "{} {kind}",
                    &b.digest.digest()[..12.min(b.digest.digest().len())]
                );
                crate::source::localize_shown(b, cx.cache, cx.client, cx.reporter, &label)
                    .await
                    .map(|at| (b.digest.clone(), at))
            })
        })
        .collect();
    let fetched: Vec<(Digest, FileRange)> = futures_util::stream::iter(jobs)
        .buffer_unordered(4)
        .try_collect()
        .await?;
    Ok(fetched.into_iter().collect())
}

/// One tar file for docker/podman/skopeo/ctr.
pub struct TarballSink {
    pub path: PathBuf,
    pub naming: Naming,
    /// Every entry's mtime (`SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    /// The same file started while the image was built ([`tarball::Early`]), to go on from.
    pub early: Option<std::sync::Arc<tarball::Early>>,
}

impl Sink for TarballSink {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
    fn write<'a>(
        &'a self,
        artifact: &'a Artifact,
        cx: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Written>> {
        Box::pin(async move {
            // The start made while the image was built, settled before any blob is looked
            // up: a cached base layer it found damaged is gone from the cache by now, and is
            // fetched again like any other.
            let prefix = match self.early.clone() {
                Some(early) => crate::blocking(move || Ok(early.take())).await?,
                None => None,
            };
            let prefix = match prefix {
                Some(Ok(p)) => Some(p),
                Some(Err(Error::DigestMismatch {
                    expected, actual, ..
                })) if from_registry(artifact, &expected) => {
                    cx.reporter.warn(&damaged_in_cache(&expected, &actual));
                    None
                }
                // Anything else is met again, and reported, by the write itself.
                _ => None,
            };
            let prefix = std::sync::Mutex::new(prefix);
            let (path, mtime) = (self.path.clone(), self.mtime);
            write_files(
                artifact,
                &self.naming,
                cx,
                move |art, blobs, naming, cache| {
                    let prefix = prefix.lock().ok().and_then(|mut p| p.take());
                    tarball::write_tarball(&path, art, blobs, naming, mtime, cache, prefix)
                },
            )
            .await?;
            cx.reporter.step(&format!("wrote {}", self.path.display()));
            Ok(Written::Tarball {
                path: self.path.clone(),
            })
        })
    }
}

/// An OCI layout directory.
pub struct LayoutSink {
    pub path: PathBuf,
    pub naming: Naming,
    /// Add to the layout at `path` (a second ref: `--debug`'s image) instead of replacing it.
    pub add: bool,
}

impl Sink for LayoutSink {
    fn describe(&self) -> String {
        format!("oci:{}", self.path.display())
    }
    fn write<'a>(
        &'a self,
        artifact: &'a Artifact,
        cx: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Written>> {
        Box::pin(async move {
            let (path, add) = (self.path.clone(), self.add);
            write_files(
                artifact,
                &self.naming,
                cx,
                move |art, blobs, naming, cache| {
                    tarball::write_layout(&path, art, blobs, naming, cache, add)
                },
            )
            .await?;
            cx.reporter
                .step(&format!("wrote OCI layout {}", self.path.display()));
            Ok(Written::Layout {
                path: self.path.clone(),
            })
        })
    }
}

/// Gather the artifact's blobs (registry ones fetched into the cache) and hand them to
/// `write` off the async threads. A registry blob found damaged in the cache while writing is
/// removed on detection; it is then fetched again and the whole output written again, once.
async fn write_files<T: Send + 'static>(
    artifact: &Artifact,
    naming: &Naming,
    cx: &Context<'_>,
    write: impl Fn(&Artifact, &[(Digest, tarball::Bytes)], &Naming, &Cache) -> Result<T>
    + Send
    + Sync
    + 'static,
) -> Result<T> {
    let write = std::sync::Arc::new(write);
    let attempt = || {
        let write = write.clone();
        async move {
            let local = localize_all(artifact, cx).await?;
            let (art, naming, cache) = (artifact.clone(), naming.clone(), cx.cache.clone());
            crate::blocking(move || {
                let mut blobs = tarball::blobs(&art, &|d| local.get(d).cloned())?;
                blobs.extend(tarball::signature_blobs(&naming));
                write(&art, &blobs, &naming, &cache)
            })
            .await
        }
    };
    match attempt().await {
        Err(Error::DigestMismatch {
            expected, actual, ..
        }) if from_registry(artifact, &expected) => {
            cx.reporter.warn(&damaged_in_cache(&expected, &actual));
            attempt().await
        }
        r => r,
    }
}

fn damaged_in_cache(expected: &str, actual: &str) -> String {
    format!("layer {expected} was damaged in the cache (it hashed to {actual}); fetching it again")
}

/// Whether the blob `digest` of `artifact` comes from a registry (so it can be fetched again).
fn from_registry(artifact: &Artifact, digest: &str) -> bool {
    artifact.images().into_iter().any(|i| {
        i.layers
            .iter()
            .map(|l| &l.blob)
            .chain(i.attachments.iter().map(|a| &a.blob))
            .any(|b| matches!(b.source, BlobSource::Registry(_)) && b.digest.to_string() == digest)
    })
}

/// Registries: every target reference, blobs mounted or copied where they already are.
pub struct RegistrySink {
    pub targets: Vec<Reference>,
    pub opts: registry::PushOptions,
    /// Sign what is pushed (cosign's form), before any tag names it.
    pub signing: Option<registry::Signing>,
    /// The layers the build sent ahead to these registries while it went on.
    pub sent_ahead: Option<std::sync::Arc<registry::SendAhead>>,
}

impl Sink for RegistrySink {
    fn describe(&self) -> String {
        self.targets
            .iter()
            .map(Reference::canonical)
            .collect::<Vec<_>>()
            .join(", ")
    }
    fn write<'a>(
        &'a self,
        artifact: &'a Artifact,
        cx: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Written>> {
        Box::pin(async move {
            registry::push(
                artifact,
                &self.targets,
                self.opts,
                self.signing.as_ref(),
                self.sent_ahead.as_deref(),
                cx,
            )
            .await
            .map(Written::Registry)
        })
    }
}

/// The local engine (Docker or podman), found beforehand with [`engine::Engine::find`] so a
/// missing engine stops a build before it writes anything.
pub struct EngineSink {
    pub engine: engine::Engine,
    pub naming: Naming,
}

impl Sink for EngineSink {
    fn describe(&self) -> String {
        "the local engine".into()
    }
    fn write<'a>(
        &'a self,
        artifact: &'a Artifact,
        cx: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Written>> {
        Box::pin(async move {
            let local = localize_all(artifact, cx).await?;
            engine::load(
                &self.engine,
                artifact,
                local,
                &self.naming,
                cx.cache,
                cx.reporter,
            )
            .await
            .map(Written::Engine)
        })
    }
}
