//! The registry cache (`--cache-repo REGISTRY/REPO`): the distributed cache a fleet of CI runners
//! already has is its registry. Two kinds of entries live there, each a small OCI artifact
//! manifest under a tag named by its key, whose one layer descriptor keeps the blob alive:
//!
//! - `imgbuild-layer-<key>`: a release layer by its input key (everything that decides its bytes,
//!   as the local layer cache uses), with its diff_id in an annotation;
//! - `imgbuild-summary-<key>`: a base image's summary by its layers' digests.
//!
//! A runner with an empty local cache asks here before compressing a layer or reading a base.
//! A layer hit is mounted into the target repository (no download, no compression, no upload),
//! once its diff_id agrees with the tar made from the release here (hashed, not compressed), so
//! the image config always names the uncompressed bytes this release gives; a summary hit must
//! name exactly the base's layers. Anything else is a poisoned or stale entry: warned about,
//! ignored, made again and overwritten. The cache is an optimisation: a cache repository that
//! cannot be read is a warning, never a failed build, and one that refuses writes (pull rights
//! only) is used read-only.

use std::sync::atomic::{AtomicBool, Ordering};

use oci_spec::image::Digest;
use serde_json::{Value, json};

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::layer::LayerBlob;
use crate::oci::digest;
use crate::oci::media;
use crate::oci::reference::Reference;
use crate::oci::{Blob, BlobSource, FileRange};
use crate::registry::RegistryClient;
use crate::report::Reporter;

/// The artifact types of the entries.
const LAYER_ENTRY: &str = "application/vnd.imgbuild.layer-cache.v1+json";
const SUMMARY_ENTRY: &str = "application/vnd.imgbuild.base-summary.v1+json";
/// The annotation holding a layer entry's diff_id.
const DIFF_ID: &str = "dev.imgbuild.diff-id";
/// The empty JSON object, the config of every entry.
const EMPTY_JSON: &[u8] = b"{}";

/// A cache repository and what this run has learned of it.
#[derive(Debug)]
pub struct CacheRepo {
    repo: Reference,
    /// Writes are on unless `--cache-repo-readonly`, and go off at the first refusal.
    writable: AtomicBool,
    /// Off after the first failed read: one warning, then the build goes on without it.
    readable: AtomicBool,
}

/// A layer found in the cache repository.
#[derive(Clone, Debug)]
pub struct RemoteLayer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

impl CacheRepo {
    /// `repo` is `REGISTRY/REPO` (a tag or digest is refused: entries have tags of their own).
    pub fn new(repo: &str, readonly: bool) -> Result<CacheRepo> {
        let r = Reference::parse(repo)?;
        if r.tag.is_some() || r.digest.is_some() {
            return Err(Error::Usage(format!(
                "--cache-repo {repo}: give a repository without a tag or digest (e.g. ghcr.io/org/app-cache)"
            )));
        }
        Ok(CacheRepo {
            repo: r,
            writable: AtomicBool::new(!readonly),
            readable: AtomicBool::new(true),
        })
    }

    pub(crate) fn reference(&self) -> &Reference {
        &self.repo
    }

    pub(crate) fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    fn tag(kind: &str, key: &Digest) -> String {
        format!("imgbuild-{kind}-{}", key.digest())
    }

    /// A read failed: say so once and stop asking.
    fn read_failed(&self, e: &Error, reporter: &dyn Reporter) {
        if self.readable.swap(false, Ordering::Relaxed) {
            reporter.warn(&format!(
                "cache repository {} cannot be read ({e}); building without it",
                self.repo.name()
            ));
        }
    }

    /// A write failed: say so once and write no more (a pull-only token, a full quota).
    fn write_failed(&self, e: &Error, reporter: &dyn Reporter) {
        if self.writable.swap(false, Ordering::Relaxed) {
            reporter.warn(&format!(
                "cache repository {} refused a write ({e}); using it read-only (pass --cache-repo-readonly to say so)",
                self.repo.name()
            ));
        }
    }

    /// The entry manifest under `tag`, parsed, with its one layer descriptor.
    async fn entry(
        &self,
        client: &RegistryClient,
        tag: &str,
        artifact_type: &str,
        reporter: &dyn Reporter,
    ) -> Option<Value> {
        if !self.readable.load(Ordering::Relaxed) {
            return None;
        }
        let bytes = match client.find_manifest(&self.repo, tag).await {
            Ok(b) => b?,
            Err(e) => {
                self.read_failed(&e, reporter);
                return None;
            }
        };
        let doc: Value = serde_json::from_slice(&bytes).ok()?;
        let layer = doc["layers"].as_array().filter(|l| l.len() == 1)?[0].clone();
        if doc["artifactType"] != artifact_type {
            reporter.warn(&format!(
                "cache repository {}: {tag} is not an imgbuild cache entry; ignored",
                self.repo.name()
            ));
            return None;
        }
        Some(layer)
    }

    /// The layer cached under `key`, when the cache repository has one and still holds its
    /// blob. Its diff_id is the entry's claim: the caller checks it against the release.
    pub(crate) async fn layer(
        &self,
        client: &RegistryClient,
        key: &Digest,
        reporter: &dyn Reporter,
    ) -> Option<RemoteLayer> {
        let tag = Self::tag("layer", key);
        let d = self.entry(client, &tag, LAYER_ENTRY, reporter).await?;
        let parsed = (|| {
            Some(RemoteLayer {
                digest: digest::parse(d["digest"].as_str()?).ok()?,
                size: d["size"].as_u64()?,
                media_type: d["mediaType"].as_str()?.to_string(),
                diff_id: digest::parse(d["annotations"][DIFF_ID].as_str()?).ok()?,
            })
        })();
        let Some(layer) = parsed else {
            reporter.warn(&format!(
                "cache repository {}: entry {tag} is malformed; ignored",
                self.repo.name()
            ));
            return None;
        };
        // The entry's blob must still be there to be mounted.
        match client.blob_exists(&self.repo, &layer.digest).await {
            Ok(true) => Some(layer),
            Ok(false) => None,
            Err(e) => {
                self.read_failed(&e, reporter);
                None
            }
        }
    }

    /// A layer blob of the cache repository, as an image layer's blob: a push to the same
    /// registry mounts it, other sinks fetch it (verified) when they need its bytes.
    pub(crate) fn blob_of(&self, layer: &RemoteLayer) -> Blob {
        Blob::new(
            layer.digest.clone(),
            layer.size,
            layer.media_type.clone(),
            BlobSource::Registry(self.repo.clone()),
        )
    }

    /// Store the layer made here under `key`: its blob (from the local cache), then the entry.
    pub(crate) async fn put_layer(
        &self,
        client: &RegistryClient,
        cache: &Cache,
        key: &Digest,
        blob: &LayerBlob,
        reporter: &dyn Reporter,
    ) {
        if !self.writable() {
            return;
        }
        let descriptor = json!({
            "mediaType": blob.media_type,
            "digest": blob.digest.to_string(),
            "size": blob.size,
            "annotations": {DIFF_ID: blob.diff_id.to_string()},
        });
        let tag = Self::tag("layer", key);
        if let Err(e) = self
            .put_entry(
                client,
                cache,
                &tag,
                LAYER_ENTRY,
                &blob.digest,
                blob.size,
                descriptor,
            )
            .await
        {
            self.write_failed(&e, reporter);
        }
    }

    /// The summary of a base stored under `key`, fetched into the local cache (verified by
    /// digest on arrival). The caller checks that it names the base's layers.
    pub(crate) async fn summary(
        &self,
        client: &RegistryClient,
        cache: &Cache,
        key: &Digest,
        reporter: &dyn Reporter,
    ) -> Option<Vec<u8>> {
        let tag = Self::tag("summary", key);
        let d = self.entry(client, &tag, SUMMARY_ENTRY, reporter).await?;
        let blob = digest::parse(d["digest"].as_str()?).ok()?;
        if let Err(e) = client.pull_blob(&self.repo, &blob, cache).await {
            self.read_failed(&e, reporter);
            return None;
        }
        cache.read_verified(&blob).ok()
    }

    /// Store a base's summary under `key`.
    pub(crate) async fn put_summary(
        &self,
        client: &RegistryClient,
        cache: &Cache,
        key: &Digest,
        bytes: &[u8],
        reporter: &dyn Reporter,
    ) {
        if !self.writable() {
            return;
        }
        let stored = cache.put_bytes(bytes);
        let result = match stored {
            Ok(d) => {
                let descriptor = json!({"mediaType": SUMMARY_ENTRY, "digest": d.to_string(), "size": bytes.len()});
                let tag = Self::tag("summary", key);
                self.put_entry(
                    client,
                    cache,
                    &tag,
                    SUMMARY_ENTRY,
                    &d,
                    bytes.len() as u64,
                    descriptor,
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.write_failed(&e, reporter);
        }
    }

    /// Upload the blob `d` (from the local cache) and the empty config when missing, then put
    /// the entry manifest under `tag`.
    #[allow(clippy::too_many_arguments)]
    async fn put_entry(
        &self,
        client: &RegistryClient,
        cache: &Cache,
        tag: &str,
        artifact_type: &str,
        d: &Digest,
        size: u64,
        descriptor: Value,
    ) -> Result<()> {
        let empty = cache.put_bytes(EMPTY_JSON)?;
        for (blob, size) in [(&empty, EMPTY_JSON.len() as u64), (d, size)] {
            let at = FileRange {
                path: cache.blob_path(blob),
                offset: 0,
                size,
            };
            client.upload_if_missing(&self.repo, blob, &at).await?;
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": media::OCI_EMPTY, "digest": empty.to_string(), "size": EMPTY_JSON.len()},
            "layers": [descriptor],
        });
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::Input(format!("internal: cache entry: {e}")))?;
        client
            .put_manifest(&self.repo, tag, &bytes, media::OCI_MANIFEST)
            .await?;
        Ok(())
    }
}
