//! The registry sink: skip what a repository already has, mount what another repository on
//! the same registry holds, copy blobs from another registry as a stream, upload the rest in
//! parallel, then write manifests (an index after its images) and the tags, in that order, so
//! no tag ever points at a missing blob. Attachments (the SBOM) follow as OCI referrers.

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use std::collections::HashSet;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use oci_spec::image::Digest;

use crate::cache::Cache;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::net::NetError;
use crate::observe::Observer;
use crate::oci::document::canonical_json;
use crate::oci::reference::Reference;
use crate::oci::{Artifact, Attachment, Blob, BlobSource, FileRange, Image, digest, media};
use crate::registry::RegistryClient;
use crate::registry::upload::{Mount, UploadOptions};
use crate::report::{Reporter, human_size};

/// Signing on push: the signatures of every manifest pushed (each platform's and the index),
/// published before any tag names them.
#[derive(Clone, Default)]
pub struct Signing {
    pub signatures: Vec<crate::oci::Signatures>,
    /// The time the referrers are stamped with (SOURCE_DATE_EPOCH).
    pub epoch: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct PushOptions {
    /// Blobs uploaded at once.
    pub jobs: usize,
    pub upload: UploadOptions,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            jobs: 4,
            upload: UploadOptions::default(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepositoryReport {
    pub repository: String,
    /// Blobs sent.
    pub uploaded: usize,
    /// Blobs linked from another repository on the same registry.
    pub mounted: usize,
    /// Blobs the repository already had.
    pub existing: usize,
    /// Bytes sent: what was new to the repository.
    pub bytes_uploaded: u64,
    /// Bytes not sent: blobs the repository had, or mounted from another.
    pub bytes_existing: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PushReport {
    /// Digest of the pushed manifest.
    pub digest: String,
    /// Every tag written, canonical (`registry/repository:tag`).
    pub tags: Vec<String>,
    pub repositories: Vec<RepositoryReport>,
    /// The SBOM referrer, when the image carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<SbomReferrer>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SbomReferrer {
    /// Digest of the artifact manifest whose subject is the image.
    pub digest: String,
    /// `referrers-api`, or `tag-schema` (the `sha256-<hex>` index tag) for registries
    /// without the referrers API.
    pub method: String,
}

/// Push `artifact` to every target. Targets in one repository share the blob work; each
/// further repository on a registry already pushed to mounts from the first.
pub async fn push(
    artifact: &Artifact,
    targets: &[Reference],
    opts: PushOptions,
    signing: Option<&Signing>,
    sent_ahead: Option<&SendAhead>,
    cx: &Context<'_>,
) -> Result<PushReport> {
    let Context {
        cache,
        client,
        reporter,
    } = *cx;
    if targets.is_empty() {
        return Err(Error::Usage(
            "nothing to push to: name a destination such as registry.example.com/team/app:1.0"
                .into(),
        ));
    }
    // Group tags by repository, keeping the order the user gave.
    let mut repos: Vec<(Reference, Vec<String>)> = Vec::new();
    for t in targets {
        let tag = t.tag_or_latest().to_string();
        match repos
            .iter_mut()
            .find(|(r, _)| r.registry == t.registry && r.repository == t.repository)
        {
            Some((_, tags)) if !tags.contains(&tag) => tags.push(tag),
            Some(_) => {}
            None => repos.push((t.clone(), vec![tag])),
        }
    }
    let ctx = Ctx {
        client,
        cache,
        opts,
        reporter,
        sent_ahead,
    };
    let mut done: Vec<Reference> = Vec::new();
    let mut reports = Vec::new();
    let mut referrer = None;
    let mut written = Vec::new();
    for (repo, tags) in &repos {
        reporter.step(&format!("pushing to {}", repo.name()));
        let mut report = RepositoryReport {
            repository: repo.name(),
            ..RepositoryReport::default()
        };
        // Every image's blobs as one set (a layer the platforms share is checked and sent
        // once), then the image manifests by digest (an index's children), all at once.
        let images = artifact.images();
        ctx.push_blobs(&images, repo, &done, &mut report).await?;
        if let Artifact::Index(_) = artifact {
            futures_util::future::try_join_all(images.iter().map(|image| {
                client.put_manifest(
                    repo,
                    image.digest.as_ref(),
                    &image.manifest,
                    &image.media_type,
                )
            }))
            .await?;
        }
        reporter.step(&format!(
            "{}: {} new in {} blob{}, {} already there in {} ({} mounted)",
            repo.name(),
            crate::report::human_size(report.bytes_uploaded),
            report.uploaded,
            if report.uploaded == 1 { "" } else { "s" },
            crate::report::human_size(report.bytes_existing),
            report.existing + report.mounted,
            report.mounted
        ));
        // Signed before any tag names it: a signing failure leaves no tag behind.
        if let Some(signing) = signing {
            client
                .put_manifest(
                    repo,
                    artifact.digest().as_ref(),
                    artifact.manifest(),
                    artifact.media_type(),
                )
                .await?;
            for sigs in &signing.signatures {
                ctx.publish(repo, sigs, signing.epoch, &done).await?;
            }
        }
        // Every blob is in place: now the top manifest under each tag (the first PUT also
        // stores it; the rest only add names).
        for tag in tags {
            client
                .put_manifest(repo, tag, artifact.manifest(), artifact.media_type())
                .await?;
            let mut tagged = repo.clone();
            tagged.tag = Some(tag.clone());
            tagged.digest = None;
            reporter.step(&format!(
                "tagged {} -> {}",
                tagged.canonical(),
                artifact.digest()
            ));
            written.push(tagged.canonical());
        }
        // Each image's attachments in turn (they share its referrers tag); the images at once.
        if images.iter().any(|i| !i.attachments.is_empty()) {
            let empty = ctx.cached(EMPTY_JSON, media::OCI_EMPTY)?;
            ctx.push_blob(&empty, "attachment", repo, &[]).await?;
            let attached = futures_util::future::try_join_all(images.iter().map(|image| async {
                let mut last = None;
                for attachment in &image.attachments {
                    last = Some(ctx.attach(image, attachment, &empty, repo).await?);
                }
                Ok::<_, Error>(last)
            }))
            .await?;
            referrer = attached.into_iter().flatten().last().or(referrer);
        }
        reports.push(report);
        done.push(repo.clone());
    }
    Ok(PushReport {
        digest: artifact.digest().to_string(),
        tags: written,
        repositories: reports,
        sbom: referrer,
    })
}

/// Each layer a build writes, uploaded at once to the repositories the build will be pushed
/// to, while the build goes on; the push then finds those blobs there and counts them as its
/// own uploads. A failure here is not the build's: the push tries again, under its own
/// retries, and reports.
pub struct SendAhead {
    /// One reference per repository.
    targets: Vec<Reference>,
    /// What was sent: (registry, repository, digest).
    sent: Mutex<HashSet<(String, String, String)>>,
}

impl SendAhead {
    /// Sending to the repositories of `tags` (each once).
    pub fn new(tags: &[Reference]) -> SendAhead {
        let mut targets: Vec<Reference> = Vec::new();
        for t in tags {
            if !targets
                .iter()
                .any(|p| p.registry == t.registry && p.repository == t.repository)
            {
                targets.push(t.clone());
            }
        }
        SendAhead {
            targets,
            sent: Mutex::new(HashSet::new()),
        }
    }

    fn key(repo: &Reference, digest: &Digest) -> (String, String, String) {
        (
            repo.registry.clone(),
            repo.repository.clone(),
            digest.to_string(),
        )
    }

    /// Whether `digest` was uploaded to `repo`'s repository ahead of the push.
    fn was_sent(&self, repo: &Reference, digest: &Digest) -> bool {
        self.sent
            .lock()
            .is_ok_and(|s| s.contains(&Self::key(repo, digest)))
    }
}

impl Observer for SendAhead {
    fn layer_written<'a>(
        &'a self,
        layer: &'a crate::oci::Layer,
        cx: Context<'a>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let BlobSource::File(at) = &layer.blob.source else {
                return;
            };
            let sends = self.targets.iter().map(|t| async move {
                if let Ok(true) = cx.client.upload_if_missing(t, &layer.blob.digest, at).await
                    && let Ok(mut s) = self.sent.lock()
                {
                    s.insert(Self::key(t, &layer.blob.digest));
                }
            });
            futures_util::future::join_all(sends).await;
        })
    }
}

/// What every blob push of one run shares.
struct Ctx<'a> {
    client: &'a RegistryClient,
    cache: &'a Cache,
    opts: PushOptions,
    reporter: &'a dyn Reporter,
    sent_ahead: Option<&'a SendAhead>,
}

/// The empty JSON object: the config of an artifact manifest.
const EMPTY_JSON: &[u8] = b"{}";

impl Ctx<'_> {
    /// Publish one manifest's signatures: the Sigstore bundles as referrers, the classic
    /// `sha256-<hex>.sig` (kept beside any signatures already there) and `.att` (one per
    /// predicate type: a new one replaces the old).
    async fn publish(
        &self,
        repo: &Reference,
        sigs: &crate::oci::Signatures,
        epoch: u64,
        pushed_before: &[Reference],
    ) -> Result<()> {
        use crate::sign::cosign;
        let d = &sigs.subject;
        let subject = serde_json::json!({
            "mediaType": sigs.subject_media_type,
            "digest": d.to_string(),
            "size": sigs.subject_size,
        });
        let empty = self.cached(EMPTY_JSON, media::OCI_EMPTY)?;
        self.push_blob(&empty, "attachment", repo, &[]).await?;
        for (predicate, bytes) in &sigs.bundles {
            let blob = self.cached(bytes, cosign::BUNDLE)?;
            self.push_blob(&blob, "attachment", repo, &[]).await?;
            let mut notes = serde_json::Map::new();
            notes.insert("dev.sigstore.bundle.content".into(), "dsse-envelope".into());
            notes.insert(
                "dev.sigstore.bundle.predicateType".into(),
                predicate.clone().into(),
            );
            notes.insert(
                "org.opencontainers.image.created".into(),
                crate::oci::document::rfc3339(epoch).into(),
            );
            self.refer(
                repo,
                d,
                subject.clone(),
                cosign::BUNDLE,
                &blob,
                &empty,
                notes,
            )
            .await?;
        }
        let tag = cosign::tag_for(d, "sig");
        let mut entries = self.existing_entries(repo, &tag).await?;
        for mine in &sigs.classic {
            if !entries.contains(mine) {
                entries.push(mine.clone());
            }
        }
        self.push_carrier(repo, &entries, &tag, pushed_before)
            .await?;
        if !sigs.attestations.is_empty() {
            let tag = cosign::tag_for(d, "att");
            let mut entries = self.existing_entries(repo, &tag).await?;
            let kinds: Vec<Option<serde_json::Value>> = sigs
                .attestations
                .iter()
                .map(|e| e.annotations.get("predicateType").cloned())
                .collect();
            entries.retain(|e| !kinds.contains(&e.annotations.get("predicateType").cloned()));
            entries.extend(sigs.attestations.iter().cloned());
            self.push_carrier(repo, &entries, &tag, pushed_before)
                .await?;
        }
        self.reporter.step(&format!("signed {}@{d}", repo.name()));
        Ok(())
    }

    /// The layers already stored under a cosign tag, as entries to keep.
    async fn existing_entries(
        &self,
        repo: &Reference,
        tag: &str,
    ) -> Result<Vec<crate::sign::cosign::Entry>> {
        let Some(bytes) = self.client.find_manifest(repo, tag).await? else {
            return Ok(vec![]);
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::from(crate::error::ImageError::Json {
                what: format!("{}:{tag}", repo.name()),
                doc: "signature manifest",
                source: e,
            })
        })?;
        let mut out = Vec::new();
        for l in v["layers"].as_array().into_iter().flatten() {
            let d = digest::parse(l["digest"].as_str().unwrap_or(""))?;
            self.client.pull_blob(repo, &d, self.cache).await?;
            out.push(crate::sign::cosign::Entry {
                bytes: self.cache.read_verified(&d)?,
                media_type: l["mediaType"].as_str().unwrap_or("").to_string(),
                annotations: l["annotations"].as_object().cloned().unwrap_or_default(),
            });
        }
        Ok(out)
    }

    async fn push_carrier(
        &self,
        repo: &Reference,
        entries: &[crate::sign::cosign::Entry],
        tag: &str,
        pushed_before: &[Reference],
    ) -> Result<()> {
        let carrier = crate::sign::cosign::carrier_image(entries, self.cache)?;
        let mut report = RepositoryReport::default();
        self.push_blobs(&[&carrier], repo, pushed_before, &mut report)
            .await?;
        self.client
            .put_manifest(repo, tag, &carrier.manifest, &carrier.media_type)
            .await?;
        Ok(())
    }

    /// A blob held in memory (config, artifact config), as a cached blob to upload.
    fn cached(&self, bytes: &[u8], media_type: &str) -> Result<Blob> {
        let d = self.cache.put_bytes(bytes)?;
        Ok(Blob::new(
            d.clone(),
            bytes.len() as u64,
            media_type,
            BlobSource::File(FileRange {
                path: self.cache.blob_path(&d),
                offset: 0,
                size: bytes.len() as u64,
            }),
        ))
    }

    /// Attach `attachment` to the pushed image as an OCI artifact whose `subject` is the
    /// image: through the referrers API where the registry has it, else by the tag schema (an
    /// index tagged `sha256-<hex of the image digest>` listing the artifacts).
    async fn attach(
        &self,
        image: &Image,
        attachment: &Attachment,
        empty: &Blob,
        repo: &Reference,
    ) -> Result<SbomReferrer> {
        // An attachment read from a registry has its size only once fetched.
        let mut blob = attachment.blob.clone();
        if let BlobSource::Registry(_) = blob.source {
            let at = crate::source::localize(&blob, self.cache, self.client).await?;
            blob.size = at.size;
            blob.source = BlobSource::File(at);
        }
        self.push_blob(&blob, "attachment", repo, &[]).await?;
        let subject = serde_json::json!({"mediaType": image.media_type, "digest": image.digest.to_string(), "size": image.manifest.len()});
        self.refer(
            repo,
            &image.digest,
            subject,
            &attachment.artifact_type,
            &blob,
            empty,
            serde_json::Map::new(),
        )
        .await
    }

    /// Push an artifact manifest whose `subject` is `subject_digest` (an OCI referrer): through
    /// the referrers API where the registry has it, else by the tag schema (an index tagged
    /// `sha256-<hex>` listing the artifacts). `blob` and `empty` are already in `repo`.
    #[allow(clippy::too_many_arguments)]
    async fn refer(
        &self,
        repo: &Reference,
        subject_digest: &oci_spec::image::Digest,
        subject: serde_json::Value,
        kind: &str,
        blob: &Blob,
        empty: &Blob,
        annotations: serde_json::Map<String, serde_json::Value>,
    ) -> Result<SbomReferrer> {
        let mut manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "artifactType": kind,
            "config": {"mediaType": media::OCI_EMPTY, "digest": empty.digest.to_string(), "size": EMPTY_JSON.len()},
            "layers": [{"mediaType": blob.media_type, "digest": blob.digest.to_string(), "size": blob.size}],
            "subject": subject,
        });
        if !annotations.is_empty() {
            manifest["annotations"] = serde_json::Value::Object(annotations);
        }
        let artifact = canonical_json(&manifest)?;
        let artifact_digest = digest::sha256_of(&artifact);
        let api = self
            .client
            .put_manifest(
                repo,
                artifact_digest.as_ref(),
                &artifact,
                media::OCI_MANIFEST,
            )
            .await?;
        let method = if api {
            "referrers-api"
        } else {
            let tag = format!("sha256-{}", subject_digest.digest());
            let mut index = match self.client.find_manifest(repo, &tag).await? {
                Some(bytes) => {
                    serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| {
                        Error::from(NetError::protocol(
                            repo.name(),
                            format!("{}:{tag} is not an index: {e}", repo.name()),
                        ))
                    })?
                }
                None => {
                    serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": []})
                }
            };
            let entry = serde_json::json!({
                "mediaType": media::OCI_MANIFEST,
                "digest": artifact_digest.to_string(),
                "size": artifact.len(),
                "artifactType": kind,
            });
            let manifests = index
                .get_mut("manifests")
                .and_then(|m| m.as_array_mut())
                .ok_or_else(|| {
                    Error::from(NetError::protocol(
                        repo.name(),
                        format!("{}:{tag} has no manifests list", repo.name()),
                    ))
                })?;
            if !manifests.iter().any(|m| m["digest"] == entry["digest"]) {
                manifests.push(entry);
            }
            let bytes = canonical_json(&index)?;
            self.client
                .put_manifest(repo, &tag, &bytes, media::OCI_INDEX)
                .await?;
            "tag-schema"
        };
        let what = if kind == media::SPDX_JSON {
            "SBOM"
        } else {
            kind
        };
        self.reporter.step(&format!(
            "attached {what} {artifact_digest} to {} ({method})",
            repo.name()
        ));
        Ok(SbomReferrer {
            digest: artifact_digest.to_string(),
            method: method.into(),
        })
    }

    /// Every blob of `images` (configs and layers, each digest once) into `repo`, at most
    /// `jobs` at a time, counted into `report`.
    async fn push_blobs(
        &self,
        images: &[&Image],
        repo: &Reference,
        pushed_before: &[Reference],
        report: &mut RepositoryReport,
    ) -> Result<()> {
        let mut configs = Vec::new();
        for image in images {
            let mut config = self.cached(&image.config_bytes, media::OCI_CONFIG)?;
            // A registry image's config is in its repository: mountable like its layers.
            config
                .mount_from
                .extend(image.origin.reference.iter().map(|r| {
                    let mut repo = r.clone();
                    repo.tag = None;
                    repo.digest = None;
                    repo
                }));
            configs.push(config);
        }
        let mut seen = std::collections::HashSet::new();
        let mut blobs: Vec<(&Blob, &str)> = Vec::new();
        for (image, config) in images.iter().zip(&configs) {
            let layers = image.layers.iter().map(|l| (&l.blob, l.kind.as_str()));
            for (blob, label) in std::iter::once((config, "config")).chain(layers) {
                if seen.insert(&blob.digest) {
                    blobs.push((blob, label));
                }
            }
        }
        let uploaded = AtomicU64::new(0);
        let mounted = AtomicU64::new(0);
        let existing = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        let kept = AtomicU64::new(0);
        let jobs: Vec<_> = blobs
            .iter()
            .map(|(blob, label)| {
                let (uploaded, mounted, existing, bytes, kept) =
                    (&uploaded, &mounted, &existing, &bytes, &kept);
                async move {
                    let outcome = self.push_blob(blob, label, repo, pushed_before).await?;
                    let (count, size) = match outcome {
                        Outcome::Existed => (existing, kept),
                        Outcome::Mounted => (mounted, kept),
                        Outcome::Uploaded => (uploaded, bytes),
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    size.fetch_add(blob.size, Ordering::Relaxed);
                    Ok::<_, Error>(())
                }
            })
            .collect();
        futures_util::stream::iter(jobs)
            .buffer_unordered(self.opts.jobs.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        report.uploaded += uploaded.load(Ordering::Relaxed) as usize;
        report.mounted += mounted.load(Ordering::Relaxed) as usize;
        report.existing += existing.load(Ordering::Relaxed) as usize;
        report.bytes_uploaded += bytes.load(Ordering::Relaxed);
        report.bytes_existing += kept.load(Ordering::Relaxed);
        Ok(())
    }

    async fn push_blob(
        &self,
        blob: &Blob,
        label: &str,
        repo: &Reference,
        pushed_before: &[Reference],
    ) -> Result<Outcome> {
        let (client, cache, reporter) = (self.client, self.cache, self.reporter);
        let short = &blob.digest.digest()[..12];
        let label = format!("{short} {label}");
        if client.blob_exists(repo, &blob.digest).await? {
            // Sent while the build was still at work: this push's upload, done early.
            if self
                .sent_ahead
                .is_some_and(|s| s.was_sent(repo, &blob.digest))
            {
                reporter.transfer(&label, blob.size).done(&format!(
                    "pushed {} (as soon as it was made)",
                    human_size(blob.size)
                ));
                return Ok(Outcome::Uploaded);
            }
            reporter.transfer(&label, blob.size).done("exists");
            return Ok(Outcome::Existed);
        }
        // Mount sources on the same registry: the blob's own (the base's repository), then the
        // repositories this run already pushed to.
        let sources = blob
            .mount_sources()
            .chain(pushed_before)
            .filter(|s| s.api_host() == repo.api_host() && s.repository != repo.repository);
        let mut session = None;
        for from in sources {
            match client.mount_blob(repo, &blob.digest, from).await? {
                Mount::Mounted => {
                    reporter
                        .transfer(&label, blob.size)
                        .done(&format!("mounted from {}", from.repository));
                    return Ok(Outcome::Mounted);
                }
                // The registry opened an upload instead: use it.
                Mount::Session(s) => {
                    session = Some(s);
                    break;
                }
                Mount::Refused(_) => continue,
            }
        }
        let at = match &blob.source {
            BlobSource::File(at) => at.clone(),
            BlobSource::Registry(_) if cache.has_blob(&blob.digest) => {
                crate::source::localize(blob, cache, client).await?
            }
            // Another registry's blob: streamed from there to here, never stored on disk.
            BlobSource::Registry(src) if src.api_host() != repo.api_host() => {
                let transfer = reporter.transfer(&label, blob.size);
                client
                    .copy_blob(src, repo, &blob.digest, blob.size, &transfer)
                    .await?;
                transfer.done(&format!("copied {}", human_size(blob.size)));
                return Ok(Outcome::Uploaded);
            }
            // Same registry, mount refused: fetch it, then upload.
            BlobSource::Registry(_) => {
                crate::source::localize_shown(blob, cache, client, reporter, &label).await?
            }
        };
        let transfer = reporter.transfer(&label, blob.size);
        match client
            .upload_blob(
                repo,
                &blob.digest,
                &at,
                session,
                self.opts.upload,
                &transfer,
            )
            .await
        {
            Ok(()) => {}
            // A cache entry that no longer hashes to its name is removed, so a rerun refetches it.
            Err(Error::DigestMismatch { actual, .. })
                if at.path == cache.blob_path(&blob.digest) =>
            {
                let actual = digest::parse(&actual)?;
                return Err(cache.corrupted(&blob.digest, &actual));
            }
            Err(e) => return Err(e),
        }
        transfer.done(&format!("pushed {}", human_size(blob.size)));
        Ok(Outcome::Uploaded)
    }
}

enum Outcome {
    Existed,
    Mounted,
    Uploaded,
}
