//! The base stage: the base read from its source and made fit to build on, and its summary
//! (its files as a tree, for the check and the SBOM) from the local cache, the cache
//! repository, or its layers.

use super::BuildRequest;
use crate::blocking;
use crate::cache::Cache;
use crate::check;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::mutate;
use crate::observe::Observer;
use crate::oci::platform::Platform;
use crate::oci::{BlobSource, FileRange, Image, media};
use crate::registry::RegistryClient;
use crate::source::{self, Source};

/// The base must hold every platform asked for: the error names each one missing.
pub(super) async fn require_base_platforms(req: &BuildRequest, cx: Context<'_>) -> Result<()> {
    let Context { cache, client, .. } = cx;
    if req.from == Source::Scratch {
        return Ok(());
    }
    let base = source::read(&req.from, &source::Platforms::All, cache, client).await?;
    let have: Vec<Platform> = base
        .images()
        .iter()
        .filter(|i| i.config.os().to_string() != "unknown")
        .map(|i| i.platform())
        .collect();
    let missing: Vec<String> = req
        .platforms
        .iter()
        .filter(|p| {
            !have
                .iter()
                .any(|h| p.matches(&h.os, &h.architecture, h.variant.as_deref()))
        })
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Input(format!(
        "base image {} has no image for {} (it has: {}); choose a multi-platform base that has every --platform",
        req.from.describe(),
        missing.join(", "),
        have.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The base, read from its source and made fit to build on. Only what must change is
/// fetched here (an uncompressed registry layer, to be gzipped): other registry layers stay
/// where they are until a sink needs their bytes, and a push to their registry mounts them.
pub(super) async fn base_image(
    req: &BuildRequest,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<(Image, Vec<String>)> {
    base_image_of(&req.from, req.platform.as_ref(), cache, client).await
}

/// As [`base_image`], for any source and platform.
pub(crate) async fn base_image_of(
    from: &Source,
    platform: Option<&Platform>,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<(Image, Vec<String>)> {
    let base = source::read_image(from, platform, cache, client).await?;
    let mut local = Vec::new();
    for l in &base.layers {
        let plain = matches!(
            media::layer_type(&l.blob.media_type),
            media::LayerType::Tar {
                codec: media::Codec::Plain,
                ..
            }
        );
        local.push(match &l.blob.source {
            BlobSource::File(at) => Some(at.clone()),
            BlobSource::Registry(_) if plain => {
                Some(source::localize(&l.blob, cache, client).await?)
            }
            BlobSource::Registry(_) => None,
        });
    }
    let c = cache.clone();
    blocking(move || mutate::normalize_base(base, &local, &c)).await
}

/// Where each layer's bytes lie locally (registry layers fetched into the cache, verified),
/// each download shown as `pulling WHAT layer I/N`.
pub(crate) async fn local_layers(
    image: &Image,
    what: &str,
    cx: Context<'_>,
) -> Result<Vec<FileRange>> {
    use futures_util::{StreamExt, TryStreamExt};
    let n = image.layers.len();
    futures_util::stream::iter(image.layers.iter().enumerate().map(|(i, l)| async move {
        let label = format!("{what} layer {}/{n}", i + 1);
        source::localize_shown(&l.blob, cx.cache, cx.client, cx.reporter, &label).await
    }))
    .buffered(4)
    .try_collect()
    .await
}

/// The base's summary from the cache repository, when it has one made from exactly the base's
/// layers (then kept locally too). An entry for other layers is warned about and ignored.
pub(super) async fn shared_summary(
    req: &BuildRequest,
    base: &Image,
    cx: Context<'_>,
) -> Option<(crate::fs::RootFs, Vec<String>)> {
    let Context {
        cache,
        client,
        reporter,
    } = cx;
    let repo = req.cache_repo.as_ref()?;
    let bytes = repo
        .summary(client, cache, &check::summary_key(base), reporter)
        .await?;
    match check::summary_of(base, &bytes) {
        Some(summary) => {
            check::keep_summary(base, &bytes, cache);
            reporter.step("base summary from the cache repository");
            Some(summary)
        }
        None => {
            reporter.warn(&format!(
                "cache repository {}: the summary stored for base {} is not one of its layers (stale or poisoned); reading the base",
                repo.reference().name(),
                base.origin.name
            ));
            None
        }
    }
}

/// Read the base's layers (fetched into the cache first when they are in a registry) and make
/// its summary. A base layer found damaged in the cache is removed on detection and fetched
/// again, once.
pub(crate) async fn read_base(
    base: &Image,
    cx: Context<'_>,
) -> Result<(crate::fs::RootFs, Vec<String>)> {
    let Context {
        cache, reporter, ..
    } = cx;
    let what = format!("base {}", base.origin.name);
    let local = local_layers(base, &what, cx).await?;
    let read = |local: Vec<FileRange>| {
        let (b, c) = (base.clone(), cache.clone());
        let progress = reporter.task(
            "reading",
            &what,
            base.layers.iter().map(|l| l.blob.size).sum(),
        );
        async move {
            let shown = progress.clone();
            let r = blocking(move || check::base_rootfs(&b, &local, &c, &shown)).await;
            progress.done(&match &r {
                Ok((fs, _)) => format!("done: {} files", fs.len()),
                Err(_) => "failed".to_string(),
            });
            r
        }
    };
    match read(local).await {
        Err(Error::DigestMismatch {
            expected, actual, ..
        }) if base.origin.reference.is_some() => {
            // A warning, not progress: damage on disk is worth seeing even with --quiet.
            reporter.warn(&format!(
                "base layer {expected} was damaged in the cache (it hashed to {actual}); fetching it again"
            ));
            read(local_layers(base, &what, cx).await?).await
        }
        r => r,
    }
}

/// The base's files as a virtual tree, and where they were read from.
pub(super) struct Summary {
    /// See [`BaseReport::summary`].
    pub(super) from: &'static str,
    pub(super) fs: crate::fs::RootFs,
    pub(super) warnings: Vec<String>,
}

/// The base's summary: from an earlier build (no base layer read or downloaded), else from the
/// cache repository, else read from the base's layers (and shared through the cache
/// repository).
pub(super) async fn summarise(
    base: &Image,
    req: &BuildRequest,
    cx: Context<'_>,
) -> Result<Summary> {
    let Context {
        cache,
        client,
        reporter,
    } = cx;
    let summary = |from, (fs, warnings)| Summary { from, fs, warnings };
    if let Some(known) = check::cached_summary(base, cache) {
        return Ok(summary("cache", known));
    }
    if let Some(shared) = shared_summary(req, base, cx).await {
        return Ok(summary("cache-repo", shared));
    }
    let read = read_base(base, cx).await?;
    if let Some(repo) = &req.cache_repo
        && let Some(bytes) = check::summary_bytes(base, cache)
    {
        let key = check::summary_key(base);
        repo.put_summary(client, cache, &key, &bytes, reporter)
            .await;
    }
    Ok(summary("read", read))
}

/// The base, made fit to build on, with its warnings and its summary.
pub(super) struct BaseRead {
    pub(super) image: Image,
    pub(super) warnings: Vec<String>,
    pub(super) summary: Summary,
}

/// A platform's base as its build gets it: read already (while its native files were
/// transplanted), or still to be read.
pub(super) enum PlatformBase {
    Read(Box<BaseRead>),
    ToRead,
}

/// Where a platform's build tells what it learns: its place among the platforms, and the
/// observer (if any).
#[derive(Clone, Copy)]
pub(super) struct Tell<'a> {
    pub(super) platform: usize,
    pub(super) observer: Option<&'a dyn Observer>,
}

/// Resolve the base and summarise it; the observer is told the base as soon as it is resolved.
pub(super) async fn read_base_and_summary(
    req: &BuildRequest,
    cx: Context<'_>,
    tell: Tell<'_>,
) -> Result<BaseRead> {
    let Context {
        cache,
        client,
        reporter,
    } = cx;
    reporter.step(&format!("resolving base {}", req.from.describe()));
    let (image, warnings) = base_image(req, cache, client).await?;
    if let Some(o) = tell.observer {
        o.base(tell.platform, &image);
    }
    let summary = summarise(&image, req, cx).await?;
    Ok(BaseRead {
        image,
        warnings,
        summary,
    })
}
