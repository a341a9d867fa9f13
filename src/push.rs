//! Publishing an image to registries: skip what a repository already has, mount what another
//! repository on the same registry holds, upload the rest in parallel, then write the manifest
//! and its tags, in that order, so no tag ever points at a missing blob.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{Digest, ImageManifest};
use serde::Serialize;

use crate::build::human_size;
use crate::cache::Cache;
use crate::digest;
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::upload::{BlobLocation, Mount, UploadOptions};
use crate::registry::{MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, RegistryClient};

/// An image ready to push: its manifest and where each blob it names can be read.
#[derive(Clone, Debug)]
pub struct PushImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub media_type: String,
    /// Config first, then layers, each once.
    pub blobs: Vec<PushBlob>,
    /// The SBOM, attached to the image as an OCI referrer after the push.
    pub sbom: Option<PushBlob>,
}

#[derive(Clone, Debug)]
pub struct PushBlob {
    pub digest: Digest,
    pub size: u64,
    /// `config`, `base`, `erts`, `app`, ... for progress lines.
    pub label: String,
    pub source: BlobSource,
    /// Repositories that may already hold the blob: mounted from when on the target's registry.
    pub mount_from: Vec<Reference>,
}

#[derive(Clone, Debug)]
pub enum BlobSource {
    /// Bytes in a local file (a cache entry, or a member of a tarball).
    File(BlobLocation),
    /// Not local: a base layer still in its registry, fetched into the cache only if a mount
    /// cannot serve it.
    Remote(Reference),
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
    pub bytes_uploaded: u64,
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

impl PushImage {
    /// An image just built: blobs from the cache, base layers not yet fetched from their registry.
    pub fn from_built(image: &Image, base: Option<&Reference>, cache: &Cache) -> Result<PushImage> {
        let mut blobs = vec![PushBlob {
            digest: image.config_digest.clone(),
            size: image.config.len() as u64,
            label: "config".into(),
            source: cached(cache, &image.config_digest, image.config.len() as u64),
            mount_from: vec![],
        }];
        for l in &image.layers {
            let d = digest::parse(&l.digest)?;
            if blobs.iter().any(|b| b.digest == d) {
                continue;
            }
            let is_base = matches!(l.kind, crate::release::LayerKind::Base);
            let source = if cache.has_blob(&d) {
                cached(cache, &d, l.size)
            } else {
                match (is_base, base) {
                    (true, Some(r)) => BlobSource::Remote(r.clone()),
                    _ => {
                        return Err(Error::Image(format!(
                            "layer {d} is missing from the cache: build again"
                        )));
                    }
                }
            };
            blobs.push(PushBlob {
                digest: d,
                size: l.size,
                label: l.kind.as_str().to_string(),
                source,
                mount_from: if is_base {
                    base.cloned().into_iter().collect()
                } else {
                    vec![]
                },
            });
        }
        Ok(PushImage {
            manifest: image.manifest.clone(),
            manifest_digest: image.manifest_digest.clone(),
            media_type: MEDIA_OCI_MANIFEST.into(),
            blobs,
            sbom: image.sbom.as_ref().map(|(d, size)| PushBlob {
                digest: d.clone(),
                size: *size,
                label: "sbom".into(),
                source: cached(cache, d, *size),
                mount_from: vec![],
            }),
        })
    }
}

fn cached(cache: &Cache, d: &Digest, size: u64) -> BlobSource {
    BlobSource::File(BlobLocation {
        path: cache.blob_path(d),
        offset: 0,
        size,
    })
}

/// Push `image` to every target. Targets in one repository share the blob work; each further
/// repository on a registry already pushed to mounts from the first.
pub async fn push(
    image: &PushImage,
    targets: &[Reference],
    client: &RegistryClient,
    cache: &Cache,
    opts: PushOptions,
    progress: &dyn Progress,
) -> Result<PushReport> {
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
        progress,
    };
    let mut done: Vec<Reference> = Vec::new();
    let mut reports = Vec::new();
    let mut referrer = None;
    let mut written = Vec::new();
    for (repo, tags) in &repos {
        progress.step(&format!("pushing to {}", repo.name()));
        let report = ctx.push_blobs(image, repo, &done).await?;
        // Every blob is in place: now the manifest, under each tag (the first PUT also stores
        // it; the rest only add names).
        for tag in tags {
            client
                .put_manifest(repo, tag, &image.manifest, &image.media_type)
                .await?;
            let mut tagged = repo.clone();
            tagged.tag = Some(tag.clone());
            tagged.digest = None;
            progress.step(&format!(
                "tagged {} -> {}",
                tagged.canonical(),
                image.manifest_digest
            ));
            written.push(tagged.canonical());
        }
        if let Some(sbom) = &image.sbom {
            referrer = Some(ctx.attach_sbom(image, sbom, repo).await?);
        }
        reports.push(report);
        done.push(repo.clone());
    }
    Ok(PushReport {
        digest: image.manifest_digest.to_string(),
        tags: written,
        repositories: reports,
        sbom: referrer,
    })
}

/// What every blob push of one run shares.
struct Ctx<'a> {
    client: &'a RegistryClient,
    cache: &'a Cache,
    opts: PushOptions,
    progress: &'a dyn Progress,
}

impl Ctx<'_> {
    /// Attach the SBOM to the pushed image as an OCI artifact whose `subject` is the image:
    /// through the referrers API where the registry has it, else by the tag schema (an index
    /// tagged `sha256-<hex of the image digest>` listing the artifacts).
    async fn attach_sbom(
        &self,
        image: &PushImage,
        sbom: &PushBlob,
        repo: &Reference,
    ) -> Result<SbomReferrer> {
        let empty = self.cache.put_bytes(EMPTY_JSON)?;
        let empty_blob = PushBlob {
            digest: empty.clone(),
            size: EMPTY_JSON.len() as u64,
            label: "empty config".into(),
            source: cached(self.cache, &empty, EMPTY_JSON.len() as u64),
            mount_from: vec![],
        };
        for blob in [sbom, &empty_blob] {
            self.push_blob(blob, repo, &[]).await?;
        }
        let artifact = crate::image::canonical_json(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "artifactType": crate::sbom::MEDIA_TYPE,
            "config": {"mediaType": MEDIA_EMPTY, "digest": empty.to_string(), "size": EMPTY_JSON.len()},
            "layers": [{"mediaType": crate::sbom::MEDIA_TYPE, "digest": sbom.digest.to_string(), "size": sbom.size}],
            "subject": {"mediaType": image.media_type, "digest": image.manifest_digest.to_string(), "size": image.manifest.len()},
        }))?;
        let artifact_digest = digest::sha256_of(&artifact);
        let api = self
            .client
            .put_manifest(
                repo,
                artifact_digest.as_ref(),
                &artifact,
                MEDIA_OCI_MANIFEST,
            )
            .await?;
        let method = if api {
            "referrers-api"
        } else {
            let tag = format!("sha256-{}", image.manifest_digest.digest());
            let mut index = match self.client.find_manifest(repo, &tag).await? {
                Some(bytes) => {
                    serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| {
                        Error::Registry(format!("{}:{tag} is not an index: {e}", repo.name()))
                    })?
                }
                None => {
                    serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": []})
                }
            };
            let entry = serde_json::json!({
                "mediaType": MEDIA_OCI_MANIFEST,
                "digest": artifact_digest.to_string(),
                "size": artifact.len(),
                "artifactType": crate::sbom::MEDIA_TYPE,
            });
            let manifests = index
                .get_mut("manifests")
                .and_then(|m| m.as_array_mut())
                .ok_or_else(|| {
                    Error::Registry(format!("{}:{tag} has no manifests list", repo.name()))
                })?;
            if !manifests.iter().any(|m| m["digest"] == entry["digest"]) {
                manifests.push(entry);
            }
            let bytes = crate::image::canonical_json(&index)?;
            self.client
                .put_manifest(repo, &tag, &bytes, MEDIA_OCI_INDEX)
                .await?;
            "tag-schema"
        };
        self.progress.step(&format!(
            "attached SBOM {artifact_digest} to {} ({method})",
            repo.name()
        ));
        Ok(SbomReferrer {
            digest: artifact_digest.to_string(),
            method: method.into(),
        })
    }

    async fn push_blobs(
        &self,
        image: &PushImage,
        repo: &Reference,
        pushed_before: &[Reference],
    ) -> Result<RepositoryReport> {
        let opts = self.opts;
        let uploaded = AtomicU64::new(0);
        let mounted = AtomicU64::new(0);
        let existing = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        let jobs = image.blobs.iter().map(|blob| {
            let (uploaded, mounted, existing, bytes) = (&uploaded, &mounted, &existing, &bytes);
            async move {
                let outcome = self.push_blob(blob, repo, pushed_before).await?;
                match outcome {
                    Outcome::Existed => existing.fetch_add(1, Ordering::Relaxed),
                    Outcome::Mounted => mounted.fetch_add(1, Ordering::Relaxed),
                    Outcome::Uploaded => {
                        bytes.fetch_add(blob.size, Ordering::Relaxed);
                        uploaded.fetch_add(1, Ordering::Relaxed)
                    }
                };
                Ok::<_, Error>(())
            }
        });
        futures_util::stream::iter(jobs)
            .buffer_unordered(opts.jobs.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(RepositoryReport {
            repository: repo.name(),
            uploaded: uploaded.load(Ordering::Relaxed) as usize,
            mounted: mounted.load(Ordering::Relaxed) as usize,
            existing: existing.load(Ordering::Relaxed) as usize,
            bytes_uploaded: bytes.load(Ordering::Relaxed),
        })
    }

    async fn push_blob(
        &self,
        blob: &PushBlob,
        repo: &Reference,
        pushed_before: &[Reference],
    ) -> Result<Outcome> {
        let (client, cache, progress) = (self.client, self.cache, self.progress);
        let short = &blob.digest.digest()[..12];
        let label = format!("{short} {}", blob.label);
        if client.blob_exists(repo, &blob.digest).await? {
            progress.transfer(&label, blob.size).done("exists");
            return Ok(Outcome::Existed);
        }
        // Mount sources on the same registry: the blob's own (the base's repository), then the
        // repositories this run already pushed to.
        let sources = blob
            .mount_from
            .iter()
            .chain(pushed_before)
            .filter(|s| s.api_host() == repo.api_host() && s.repository != repo.repository);
        let mut session = None;
        for from in sources {
            match client.mount_blob(repo, &blob.digest, from).await? {
                Mount::Mounted => {
                    progress
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
            BlobSource::Remote(r) => {
                client.pull_blob(r, &blob.digest, cache).await?;
                BlobLocation {
                    path: cache.blob_path(&blob.digest),
                    offset: 0,
                    size: blob.size,
                }
            }
        };
        let transfer = progress.transfer(&label, blob.size);
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

// ---------- saved tarballs ----------

/// A tarball written by `imgbuild build -o` (or any OCI archive with gzip layers), read in
/// place: blobs are streamed from their offsets inside the tar, never extracted.
pub struct Tarball {
    pub image: PushImage,
    /// Names the tarball carries (index.json annotations and manifest.json RepoTags).
    pub names: Vec<Reference>,
}

/// The empty JSON object: the config of an artifact manifest.
const EMPTY_JSON: &[u8] = b"{}";
const MEDIA_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Small JSON members are read whole; anything larger than this is refused.
const MAX_JSON: u64 = 8 << 20;

pub fn read_tarball(path: &Path) -> Result<Tarball> {
    let what = path.display().to_string();
    let file = File::open(path)
        .map_err(|e| Error::Input(format!("cannot open image tarball {what}: {e}")))?;
    let bad = |e: std::io::Error| Error::Image(format!("{what} is not a readable tar file: {e}"));
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut members: HashMap<String, (u64, u64)> = HashMap::new();
    let mut index_json = None;
    let mut docker_json = None;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_string();
        let (offset, size) = (entry.raw_file_position(), entry.size());
        let small = |entry: &mut tar::Entry<_>| -> Result<Vec<u8>> {
            if size > MAX_JSON {
                return Err(Error::Image(format!("{what}: {name} is implausibly large")));
            }
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(bad)?;
            Ok(buf)
        };
        match name.as_str() {
            "index.json" => index_json = Some(small(&mut entry)?),
            "manifest.json" => docker_json = Some(small(&mut entry)?),
            _ => {
                members.insert(name, (offset, size));
            }
        }
    }
    let Some(index_json) = index_json else {
        return Err(Error::Image(format!(
            "{what} has no index.json: it is not an OCI archive. Save images with `imgbuild build -o`, `skopeo copy ... oci-archive:` or `docker save` from Docker 25 on"
        )));
    };
    let index: oci_spec::image::ImageIndex = serde_json::from_slice(&index_json)
        .map_err(|e| Error::Image(format!("{what}: malformed index.json: {e}")))?;
    let [desc] = index.manifests().as_slice() else {
        return Err(Error::Image(format!(
            "{what} holds {} images; imgbuild pushes tarballs of exactly one",
            index.manifests().len()
        )));
    };
    let media_type = desc.media_type().to_string();
    if media_type == MEDIA_OCI_INDEX || media_type == crate::registry::MEDIA_DOCKER_LIST {
        return Err(Error::Image(format!(
            "{what} holds a multi-platform index; imgbuild pushes single-platform images"
        )));
    }
    let read_member = |d: &Digest| -> Result<Vec<u8>> {
        let (offset, size) = locate(&members, d, &what)?;
        let at = BlobLocation {
            path: path.to_path_buf(),
            offset,
            size,
        };
        read_small_blob(&at, d, &what)
    };
    let manifest_digest = digest::parse(desc.digest().as_ref())?;
    let manifest_bytes = read_member(&manifest_digest)?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| Error::Image(format!("{what}: malformed manifest: {e}")))?;
    let location = |d: &Digest| -> Result<BlobSource> {
        let (offset, size) = locate(&members, d, &what)?;
        Ok(BlobSource::File(BlobLocation {
            path: path.to_path_buf(),
            offset,
            size,
        }))
    };
    // The base, when the image names it, may be on the target registry: mount from it.
    let base: Vec<Reference> = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get("org.opencontainers.image.base.name"))
        .and_then(|n| Reference::parse(n).ok())
        .into_iter()
        .collect();
    let config_digest = digest::parse(manifest.config().digest().as_ref())?;
    let mut blobs = vec![PushBlob {
        size: locate(&members, &config_digest, &what)?.1,
        source: location(&config_digest)?,
        digest: config_digest,
        label: "config".into(),
        mount_from: vec![],
    }];
    for (i, l) in manifest.layers().iter().enumerate() {
        let d = digest::parse(l.digest().as_ref())?;
        if blobs.iter().any(|b| b.digest == d) {
            continue;
        }
        blobs.push(PushBlob {
            size: locate(&members, &d, &what)?.1,
            source: location(&d)?,
            digest: d,
            label: format!("layer {}", i + 1),
            mount_from: base.clone(),
        });
    }
    let mut names = Vec::new();
    if let Some(n) = desc
        .annotations()
        .as_ref()
        .and_then(|a| a.get("io.containerd.image.name"))
    {
        names.push(n.clone());
    }
    if let Some(bytes) = docker_json {
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(rename = "RepoTags", default)]
            repo_tags: Option<Vec<String>>,
        }
        if let Ok(entries) = serde_json::from_slice::<Vec<Entry>>(&bytes) {
            names.extend(
                entries
                    .into_iter()
                    .flat_map(|e| e.repo_tags.unwrap_or_default()),
            );
        }
    }
    let sbom = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get(crate::image::SBOM_ANNOTATION))
        .and_then(|d| digest::parse(d).ok())
        .and_then(|d| {
            let (_, size) = locate(&members, &d, &what).ok()?;
            Some(PushBlob {
                size,
                source: location(&d).ok()?,
                digest: d,
                label: "sbom".into(),
                mount_from: vec![],
            })
        });
    let mut seen = BTreeMap::new();
    let names = names
        .iter()
        .filter_map(|n| Reference::parse(n).ok())
        .filter(|r| seen.insert(r.canonical(), ()).is_none())
        .collect();
    Ok(Tarball {
        image: PushImage {
            manifest: manifest_bytes,
            manifest_digest,
            // The manifest's own mediaType is what the registry must be told.
            media_type: manifest
                .media_type()
                .as_ref()
                .map(ToString::to_string)
                .filter(|m| !m.is_empty())
                .unwrap_or(if media_type.is_empty() {
                    MEDIA_OCI_MANIFEST.into()
                } else {
                    media_type
                }),
            blobs,
            sbom,
        },
        names,
    })
}

/// A small blob (manifest, config, SBOM) read whole from where it lies, verified by its digest.
pub fn read_small_blob(at: &BlobLocation, d: &Digest, what: &str) -> Result<Vec<u8>> {
    if at.size > MAX_JSON {
        return Err(Error::Image(format!(
            "{what}: blob {d} is implausibly large"
        )));
    }
    let mut f = File::open(&at.path).ctx("open", &at.path)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(at.offset)).ctx("read", &at.path)?;
    let mut buf = Vec::with_capacity(at.size as usize);
    f.take(at.size)
        .read_to_end(&mut buf)
        .ctx("read", &at.path)?;
    digest::verify(format!("{what}: blob {d}"), d, &digest::sha256_of(&buf))?;
    Ok(buf)
}

fn locate(members: &HashMap<String, (u64, u64)>, d: &Digest, what: &str) -> Result<(u64, u64)> {
    members
        .get(&format!("blobs/sha256/{}", d.digest()))
        .copied()
        .ok_or_else(|| Error::Image(format!("{what}: blob {d} is missing from the tarball")))
}
