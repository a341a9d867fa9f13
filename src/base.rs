//! The base image: resolved from a registry reference or a local image (`oci:DIR`,
//! `oci-archive:PATH`, `docker-archive:PATH`, `scratch`), with every blob verified into the cache.
//! Compressed base layers are carried byte for byte; only uncompressed ones are gzipped, so
//! every layer of the output uses one compression.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest};

use crate::cache::Cache;
use crate::digest::{self, HashReader, HashWriter};
use crate::error::{Error, IoContext, Result};
use crate::layer::{MEDIA_TYPE_GZIP, MEDIA_TYPE_TAR, MEDIA_TYPE_ZSTD};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::{self, RegistryClient};

const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const MEDIA_DOCKER_LAYER_FOREIGN: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Configs are small; refuse to buffer anything absurd.
const MAX_JSON_BYTES: u64 = 8 << 20;

#[derive(Clone, Debug)]
pub struct BaseLayer {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    /// OCI media type of the blob as it goes into the output.
    pub media_type: String,
}

#[derive(Clone, Debug)]
pub struct BaseImage {
    /// How the user named it, normalised (`docker.io/library/debian:bookworm-slim`).
    pub name: String,
    /// Set when the base came from a registry (for cross-repository mounts on push).
    pub reference: Option<Reference>,
    /// Digest of the base's manifest (the platform-specific one), when it has one.
    pub manifest_digest: Option<Digest>,
    pub config: ImageConfiguration,
    pub layers: Vec<BaseLayer>,
    pub warnings: Vec<String>,
}

/// Where the base comes from, as parsed from `--from`.
#[derive(Clone, Debug)]
pub enum BaseSource {
    Scratch,
    Registry(Reference),
    OciDir { path: PathBuf, name: Option<String> },
    OciArchive { path: PathBuf, name: Option<String> },
    DockerArchive { path: PathBuf, name: Option<String> },
}

impl BaseSource {
    pub fn parse(s: &str) -> Result<BaseSource> {
        // `oci:DIR[:REF]`: the last ':' separates a ref name unless it is part of the path.
        fn split(rest: &str) -> (PathBuf, Option<String>) {
            match rest.rsplit_once(':') {
                Some((p, n)) if !n.contains('/') && !n.is_empty() && !Path::new(rest).exists() => {
                    (PathBuf::from(p), Some(n.to_string()))
                }
                _ => (PathBuf::from(rest), None),
            }
        }
        if s == "scratch" {
            return Ok(BaseSource::Scratch);
        }
        for (prefix, make) in [
            (
                "oci:",
                (|p, n| BaseSource::OciDir { path: p, name: n })
                    as fn(PathBuf, Option<String>) -> BaseSource,
            ),
            ("oci-archive:", |p, n| BaseSource::OciArchive {
                path: p,
                name: n,
            }),
            ("docker-archive:", |p, n| BaseSource::DockerArchive {
                path: p,
                name: n,
            }),
        ] {
            if let Some(rest) = s.strip_prefix(prefix) {
                if rest.is_empty() {
                    return Err(Error::Usage(format!(
                        "--from {s}: give a path after {prefix}"
                    )));
                }
                let (p, n) = split(rest);
                return Ok(make(p, n));
            }
        }
        Ok(BaseSource::Registry(Reference::parse(s)?))
    }
}

/// Make sure every base layer is in the cache (only registry bases can lack some): outputs
/// that carry the layers' bytes call this; a push mounts or pulls per blob instead.
pub async fn fetch_layers(base: &BaseImage, cache: &Cache, client: &RegistryClient) -> Result<()> {
    let missing: Vec<&BaseLayer> = base
        .layers
        .iter()
        .filter(|l| !cache.has_blob(&l.digest))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let Some(r) = &base.reference else {
        return Err(Error::Image(format!(
            "base image {}: layer {} is missing from the cache",
            base.name, missing[0].digest
        )));
    };
    futures_util::stream::iter(
        missing
            .iter()
            .map(|l| client.pull_blob(r, &l.digest, cache)),
    )
    .buffer_unordered(4)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(())
}

/// Resolve the base for `platform` (`None`: the host's when choosing from an index, any for a
/// single image). A registry base pinned by digest and fully cached needs no network.
pub async fn resolve(
    source: &BaseSource,
    platform: Option<&Platform>,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<BaseImage> {
    match source {
        BaseSource::Scratch => {
            let p = platform.cloned().unwrap_or_else(Platform::host);
            let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
                "architecture": p.architecture, "os": p.os, "rootfs": {"type": "layers", "diff_ids": []}
            }))
            .map_err(|e| Error::Image(format!("internal: scratch config: {e}")))?;
            Ok(BaseImage {
                name: "scratch".into(),
                reference: None,
                manifest_digest: None,
                config,
                layers: vec![],
                warnings: vec![],
            })
        }
        BaseSource::Registry(r) => from_registry(r, platform, cache, client).await,
        BaseSource::OciDir { path, name } => {
            let path = path.clone();
            let (name, platform, cache) = (name.clone(), platform.cloned(), cache.clone());
            blocking(move || from_oci_dir(&path, name.as_deref(), platform.as_ref(), &cache)).await
        }
        BaseSource::OciArchive { path, name } => {
            let path = path.clone();
            let (name, platform, cache) = (name.clone(), platform.cloned(), cache.clone());
            blocking(move || from_oci_archive(&path, name.as_deref(), platform.as_ref(), &cache))
                .await
        }
        BaseSource::DockerArchive { path, name } => {
            let path = path.clone();
            let (name, platform, cache) = (name.clone(), platform.cloned(), cache.clone());
            blocking(move || from_docker_archive(&path, name.as_deref(), platform.as_ref(), &cache))
                .await
        }
    }
}

/// Run blocking work (file reading, hashing, compression) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Image(format!("internal: worker failed: {e}")))?
}

/// A parsed manifest-or-index document.
pub enum Document {
    Manifest(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

pub fn parse_document(bytes: &[u8], fallback_media_type: &str, what: &str) -> Result<Document> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| Error::Image(format!("{what} is not valid JSON: {e}")))?;
    let media_type = probe
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| fallback_media_type.to_string());
    if probe.schema_version == Some(1) {
        return Err(Error::Image(format!(
            "{what} is a Docker schema 1 manifest, which is not supported: push the base again with a current client"
        )));
    }
    let is_index = match media_type.as_str() {
        registry::MEDIA_OCI_INDEX | registry::MEDIA_DOCKER_LIST => true,
        registry::MEDIA_OCI_MANIFEST | registry::MEDIA_DOCKER_MANIFEST => false,
        "" => probe.manifests.is_some(),
        other => {
            return Err(Error::Image(format!(
                "{what} has media type {other:?}, which is not an image manifest or index (OCI or Docker schema 2)"
            )));
        }
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(Document::Index)
            .map_err(|e| Error::Image(format!("{what}: malformed image index: {e}")))
    } else {
        serde_json::from_slice(bytes)
            .map(Document::Manifest)
            .map_err(|e| Error::Image(format!("{what}: malformed image manifest: {e}")))
    }
}

/// Choose the entry for `platform` (default: the host's) from an index, skipping attestations.
pub fn select_from_index(
    index: &ImageIndex,
    platform: Option<&Platform>,
    what: &str,
) -> Result<Descriptor> {
    let want = platform.cloned().unwrap_or_else(Platform::host);
    let mut available = Vec::new();
    for d in index.manifests() {
        let is_attestation = d.annotations().as_ref().is_some_and(|a| {
            a.get("vnd.docker.reference.type")
                .is_some_and(|t| t == "attestation-manifest")
        });
        let Some(p) = d.platform() else { continue };
        let (os, arch) = (p.os().to_string(), p.architecture().to_string());
        if is_attestation || os == "unknown" {
            continue;
        }
        if want.matches(&os, &arch, p.variant().as_deref()) {
            return Ok(d.clone());
        }
        available.push(format!(
            "{os}/{arch}{}",
            p.variant()
                .as_ref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default()
        ));
    }
    Err(Error::Input(format!(
        "{what} has no image for platform {want} (it has: {}); pick one with --platform",
        if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        }
    )))
}

fn check_platform(
    config: &ImageConfiguration,
    platform: Option<&Platform>,
    what: &str,
) -> Result<()> {
    if let Some(want) = platform {
        let (os, arch) = (config.os().to_string(), config.architecture().to_string());
        if !want.matches(&os, &arch, config.variant().as_deref()) {
            return Err(Error::Input(format!(
                "{what} is for {os}/{arch}, not {want}: choose a base for {want} or drop --platform"
            )));
        }
    }
    Ok(())
}

/// Turn a manifest's layer descriptors and the config's diff_ids into base layers.
fn base_layers(
    manifest: &ImageManifest,
    config: &ImageConfiguration,
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<(Descriptor, Digest, String)>> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(Error::Image(format!(
            "{what}: the manifest lists {} layers but the config {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(d, diff)| {
            let media = d.media_type().to_string();
            let media = match media.as_str() {
                MEDIA_TYPE_GZIP | MEDIA_DOCKER_LAYER_GZIP => MEDIA_TYPE_GZIP.to_string(),
                MEDIA_TYPE_TAR | "application/vnd.docker.image.rootfs.diff.tar" => MEDIA_TYPE_TAR.to_string(),
                MEDIA_TYPE_ZSTD => {
                    warnings.push(format!("{what} has zstd layers: Docker Engine before 23.0 cannot load the result"));
                    media
                }
                MEDIA_DOCKER_LAYER_FOREIGN | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
                    return Err(Error::Image(format!("{what} has a non-distributable (foreign) layer {}: such bases cannot be rebuilt", d.digest())));
                }
                other => return Err(Error::Image(format!("{what} has a layer of unsupported media type {other:?}"))),
            };
            Ok((d.clone(), digest::parse(diff)?, media))
        })
        .collect()
}

async fn from_registry(
    r: &Reference,
    platform: Option<&Platform>,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<BaseImage> {
    let name = r.canonical();
    let mut warnings = Vec::new();
    // Fetch (or read from cache, when addressed by digest) the top document.
    let (bytes, content_type, top_digest) = match &r.digest {
        Some(d) if cache.has_blob(d) => (cache.read_verified(d)?, String::new(), d.clone()),
        _ => {
            let got = client.get_manifest(r, &r.manifest_reference()).await?;
            cache.put_bytes(&got.0)?;
            got
        }
    };
    let (manifest, manifest_digest) =
        match parse_document(&bytes, &content_type, &format!("base image {name}"))? {
            Document::Manifest(m) => (*m, top_digest),
            Document::Index(index) => {
                let chosen = select_from_index(&index, platform, &format!("base image {name}"))?;
                let d = chosen.digest().clone();
                let bytes = if cache.has_blob(&d) {
                    cache.read_verified(&d)?
                } else {
                    let (b, _, _) = client.get_manifest(r, d.as_ref()).await?;
                    cache.put_bytes(&b)?;
                    b
                };
                match parse_document(
                    &bytes,
                    chosen.media_type().to_string().as_str(),
                    &format!("base image {name}@{d}"),
                )? {
                    Document::Manifest(m) => (*m, d),
                    Document::Index(_) => {
                        return Err(Error::Image(format!(
                            "base image {name}: nested indexes are not supported"
                        )));
                    }
                }
            }
        };
    let config_digest = digest::parse(manifest.config().digest().as_ref())?;
    client.pull_blob(r, &config_digest, cache).await?;
    let config = parse_config(&cache.read_verified(&config_digest)?, &name)?;
    check_platform(&config, platform, &format!("base image {name}"))?;
    let layers = base_layers(
        &manifest,
        &config,
        &format!("base image {name}"),
        &mut warnings,
    )?;
    // Compressed layers are fetched only when an output needs their bytes (see
    // `fetch_layers`): a push to the registry that holds the base mounts them instead.
    // Uncompressed ones are gzipped now, so their bytes are needed at once.
    futures_util::stream::iter(
        layers
            .iter()
            .filter(|(_, _, media)| media == MEDIA_TYPE_TAR)
            .map(|(d, _, _)| client.pull_blob(r, d.digest(), cache)),
    )
    .buffer_unordered(4)
    .try_collect::<Vec<_>>()
    .await?;
    let mut out = Vec::new();
    for (d, diff_id, media) in layers {
        let (digest, size, media_type) =
            gzip_if_plain(cache, d.digest(), d.size(), &diff_id, &media)?;
        out.push(BaseLayer {
            digest,
            diff_id,
            size,
            media_type,
        });
    }
    Ok(BaseImage {
        name,
        reference: Some(r.clone()),
        manifest_digest: Some(manifest_digest),
        config,
        layers: out,
        warnings,
    })
}

fn parse_config(bytes: &[u8], name: &str) -> Result<ImageConfiguration> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Image(format!("base image {name}: malformed image config: {e}")))
}

/// Uncompressed layers are gzipped (deterministically) so every output layer uses gzip.
fn gzip_if_plain(
    cache: &Cache,
    blob: &Digest,
    declared_size: u64,
    diff_id: &Digest,
    media: &str,
) -> Result<(Digest, u64, String)> {
    if media != MEDIA_TYPE_TAR {
        // A cached blob's true size wins over what a manifest declares.
        let size = if cache.has_blob(blob) {
            cache.blob_size(blob)?
        } else {
            declared_size
        };
        return Ok((blob.clone(), size, media.to_string()));
    }
    let src = cache.blob_path(blob);
    let file = File::open(&src).ctx("open", &src)?;
    let (digest, size, actual_diff) = gzip_into_cache(BufReader::new(file), cache, &src)?;
    digest::verify(
        format!("uncompressed base layer {blob}"),
        diff_id,
        &actual_diff,
    )?;
    Ok((digest, size, MEDIA_TYPE_GZIP.to_string()))
}

/// gzip a tar stream into the cache; returns (digest, size, sha256 of the input).
fn gzip_into_cache(reader: impl Read, cache: &Cache, what: &Path) -> Result<(Digest, u64, Digest)> {
    let tmp = cache.temp_file()?;
    let mut input = HashReader::new(reader);
    let mut gz =
        crate::pgzip::ParallelGzWriter::new(HashWriter::new(std::io::BufWriter::new(tmp)), 6, 0);
    std::io::copy(&mut input, &mut gz).ctx("compress layer from", what)?;
    let (buffered, digest, size) = gz.finish().ctx("compress layer from", what)?.finish();
    let tmp = buffered
        .into_inner()
        .map_err(|e| Error::io("write", what, e.into_error()))?;
    cache.commit(tmp, &digest)?;
    Ok((digest, size, input.finish().0))
}

// ---------- OCI layout directory ----------

fn from_oci_dir(
    dir: &Path,
    name: Option<&str>,
    platform: Option<&Platform>,
    cache: &Cache,
) -> Result<BaseImage> {
    let what = format!("oci:{}", dir.display());
    let index_path = dir.join("index.json");
    let index_bytes = read_small(&index_path, &what)?;
    let blob = |d: &Digest| -> Result<()> {
        if cache.has_blob(d) {
            return Ok(());
        }
        let p = dir.join("blobs").join("sha256").join(d.digest());
        let f = File::open(&p)
            .map_err(|e| Error::Image(format!("{what}: blob {d} is missing ({e})")))?;
        cache
            .ingest(BufReader::new(f), d, &format!("{what} blob {d}"))
            .map(|_| ())
    };
    from_layout(&index_bytes, name, platform, cache, &what, blob)
}

/// Shared by `oci:` and `oci-archive:`: walk index.json → manifest → config/layers.
fn from_layout(
    index_bytes: &[u8],
    name: Option<&str>,
    platform: Option<&Platform>,
    cache: &Cache,
    what: &str,
    fetch: impl Fn(&Digest) -> Result<()>,
) -> Result<BaseImage> {
    let index: ImageIndex = serde_json::from_slice(index_bytes)
        .map_err(|e| Error::Image(format!("{what}: index.json is not an image index: {e}")))?;
    let entries: Vec<&Descriptor> = match name {
        Some(n) => index
            .manifests()
            .iter()
            .filter(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                    .is_some_and(|r| r == n)
            })
            .collect(),
        None => index.manifests().iter().collect(),
    };
    let top = match entries.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(Error::Input(format!(
                "{what} holds no image{}",
                name.map(|n| format!(" named {n:?}")).unwrap_or_default()
            )));
        }
        many => {
            // Several entries: a multi-platform layout; pick by platform.
            let sub = ImageIndex::default();
            let mut sub = sub;
            sub.set_manifests(many.iter().map(|d| (*d).clone()).collect());
            select_from_index(&sub, platform, what)
                .map_err(|e| Error::Input(format!("{e}; or name one image as {what}:REF")))?
        }
    };
    let mut warnings = Vec::new();
    let mut desc = top;
    let manifest = loop {
        let d = digest::parse(desc.digest().as_ref())?;
        fetch(&d)?;
        match parse_document(
            &cache.read_verified(&d)?,
            desc.media_type().to_string().as_str(),
            what,
        )? {
            Document::Manifest(m) => break (*m, d),
            Document::Index(i) => desc = select_from_index(&i, platform, what)?,
        }
    };
    let (manifest, manifest_digest) = manifest;
    let config_digest = digest::parse(manifest.config().digest().as_ref())?;
    fetch(&config_digest)?;
    let config: ImageConfiguration = serde_json::from_slice(&cache.read_verified(&config_digest)?)
        .map_err(|e| Error::Image(format!("{what}: malformed image config: {e}")))?;
    check_platform(&config, platform, what)?;
    let mut layers = Vec::new();
    for (d, diff_id, media) in base_layers(&manifest, &config, what, &mut warnings)? {
        let blob = digest::parse(d.digest().as_ref())?;
        fetch(&blob)?;
        let (digest, size, media_type) = gzip_if_plain(cache, &blob, 0, &diff_id, &media)?;
        layers.push(BaseLayer {
            digest,
            diff_id,
            size,
            media_type,
        });
    }
    Ok(BaseImage {
        name: what.to_string(),
        reference: None,
        manifest_digest: Some(manifest_digest),
        config,
        layers,
        warnings,
    })
}

fn read_small(path: &Path, what: &str) -> Result<Vec<u8>> {
    let f = File::open(path)
        .map_err(|e| Error::Input(format!("{what}: cannot open {}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut buf)
        .ctx("read", path)?;
    if buf.len() as u64 > MAX_JSON_BYTES {
        return Err(Error::Image(format!(
            "{what}: {} is too large",
            path.display()
        )));
    }
    Ok(buf)
}

// ---------- archives ----------

/// Normalise a member name: drop `./` and leading `/`; reject anything with `..`.
fn member_name(path: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(path).ok()?;
    let s = s.trim_start_matches("./").trim_start_matches('/');
    if s.split('/').any(|c| c == "..") {
        None
    } else {
        Some(s.to_string())
    }
}

fn open_archive(path: &Path, what: &str) -> Result<File> {
    File::open(path)
        .map_err(|e| Error::Input(format!("{what}: cannot open {}: {e}", path.display())))
}

fn tar_err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Image(format!("{what}: not a readable tar archive: {e}"))
}

fn from_oci_archive(
    path: &Path,
    name: Option<&str>,
    platform: Option<&Platform>,
    cache: &Cache,
) -> Result<BaseImage> {
    let what = format!("oci-archive:{}", path.display());
    let mut archive = tar::Archive::new(BufReader::new(open_archive(path, &what)?));
    let mut index_bytes = None;
    // One pass: blobs go straight into the cache (verified by their names), index.json to memory.
    for entry in archive.entries().map_err(tar_err(&what))? {
        let mut entry = entry.map_err(tar_err(&what))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Some(member) = member_name(&entry.path_bytes()) else {
            continue;
        };
        if member == "index.json" {
            let mut buf = Vec::new();
            (&mut entry)
                .take(MAX_JSON_BYTES)
                .read_to_end(&mut buf)
                .map_err(tar_err(&what))?;
            index_bytes = Some(buf);
        } else if let Some(hex) = member.strip_prefix("blobs/sha256/") {
            let d = digest::parse(&format!("sha256:{hex}")).map_err(|_| {
                Error::Image(format!("{what}: blob name {member} is not a sha256 digest"))
            })?;
            if !cache.has_blob(&d) {
                cache.ingest(&mut entry, &d, &format!("{what} {member}"))?;
            }
        }
    }
    let index_bytes = index_bytes.ok_or_else(|| {
        Error::Image(format!(
            "{what} has no index.json: it is not an OCI archive"
        ))
    })?;
    let fetch = |d: &Digest| -> Result<()> {
        if cache.has_blob(d) {
            Ok(())
        } else {
            Err(Error::Image(format!(
                "{what}: blob {d} is missing from the archive"
            )))
        }
    };
    from_layout(&index_bytes, name, platform, cache, &what, fetch)
}

fn from_docker_archive(
    path: &Path,
    name: Option<&str>,
    platform: Option<&Platform>,
    cache: &Cache,
) -> Result<BaseImage> {
    let what = format!("docker-archive:{}", path.display());
    let mut file = open_archive(path, &what)?;
    // Pass 1: manifest.json and the small JSON members (the config is one of them).
    let mut json: HashMap<String, Vec<u8>> = HashMap::new();
    let mut offsets: HashMap<String, (u64, u64)> = HashMap::new();
    {
        let mut archive = tar::Archive::new(BufReader::new(&mut file));
        for entry in archive.entries().map_err(tar_err(&what))? {
            let mut entry = entry.map_err(tar_err(&what))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let Some(member) = member_name(&entry.path_bytes()) else {
                continue;
            };
            offsets.insert(member.clone(), (entry.raw_file_position(), entry.size()));
            if entry.size() <= MAX_JSON_BYTES
                && (member.ends_with(".json") || member.starts_with("blobs/"))
                && entry.size() < (1 << 20)
            {
                let mut buf = Vec::new();
                entry.read_to_end(&mut buf).map_err(tar_err(&what))?;
                json.insert(member, buf);
            }
        }
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(rename = "Config")]
        config: String,
        #[serde(rename = "RepoTags", default)]
        repo_tags: Option<Vec<String>>,
        #[serde(rename = "Layers")]
        layers: Vec<String>,
    }
    let items: Vec<Item> = serde_json::from_slice(json.get("manifest.json").ok_or_else(|| {
        Error::Image(format!(
            "{what} has no manifest.json: it is not a docker-archive"
        ))
    })?)
    .map_err(|e| Error::Image(format!("{what}: malformed manifest.json: {e}")))?;
    let item = match (name, items.len()) {
        (None, 1) => &items[0],
        (None, n) => {
            return Err(Error::Input(format!(
                "{what} holds {n} images: name one as {what}:NAME:TAG"
            )));
        }
        (Some(n), _) => items
            .iter()
            .find(|i| {
                i.repo_tags
                    .iter()
                    .flatten()
                    .any(|t| t == n || t.rsplit_once(':').is_some_and(|(_, tag)| tag == n))
            })
            .ok_or_else(|| Error::Input(format!("{what} has no image tagged {n:?}")))?,
    };
    let config_bytes = json
        .get(
            member_name(item.config.as_bytes())
                .unwrap_or_default()
                .as_str(),
        )
        .ok_or_else(|| Error::Image(format!("{what}: config {} is missing", item.config)))?;
    let config: ImageConfiguration = serde_json::from_slice(config_bytes)
        .map_err(|e| Error::Image(format!("{what}: malformed image config: {e}")))?;
    check_platform(&config, platform, &what)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != item.layers.len() {
        return Err(Error::Image(format!(
            "{what}: manifest.json lists {} layers but the config {} diff_ids",
            item.layers.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (member, diff) in item.layers.iter().zip(&diff_ids) {
        let diff_id = digest::parse(diff)?;
        let key = member_name(member.as_bytes()).unwrap_or_default();
        let (offset, size) = *offsets
            .get(&key)
            .ok_or_else(|| Error::Image(format!("{what}: layer {member} is missing")))?;
        file.seek(SeekFrom::Start(offset)).ctx("read", path)?;
        let mut body = BufReader::new((&mut file).take(size));
        let mut magic = [0u8; 4];
        let head = body.fill_buf_peek(&mut magic);
        if head >= 2 && magic[..2] == [0x1f, 0x8b] {
            // Already gzip (Docker 25+ with the containerd store): carry it as is.
            file.seek(SeekFrom::Start(offset)).ctx("read", path)?;
            let mut hr = HashReader::new(BufReader::new((&mut file).take(size)));
            let tmp = cache.temp_file()?;
            let mut w = std::io::BufWriter::new(tmp);
            std::io::copy(&mut hr, &mut w).ctx("read", path)?;
            let tmp = w
                .into_inner()
                .map_err(|e| Error::io("write", path, e.into_error()))?;
            let (d, n) = hr.finish();
            cache.commit(tmp, &d)?;
            layers.push(BaseLayer {
                digest: d,
                diff_id,
                size: n,
                media_type: MEDIA_TYPE_GZIP.into(),
            });
        } else {
            file.seek(SeekFrom::Start(offset)).ctx("read", path)?;
            let (d, n, actual) =
                gzip_into_cache(BufReader::new((&mut file).take(size)), cache, path)?;
            digest::verify(format!("{what} layer {member}"), &diff_id, &actual)?;
            layers.push(BaseLayer {
                digest: d,
                diff_id,
                size: n,
                media_type: MEDIA_TYPE_GZIP.into(),
            });
        }
    }
    Ok(BaseImage {
        name: what,
        reference: None,
        manifest_digest: None,
        config,
        layers,
        warnings: vec![],
    })
}

/// Peek at the first bytes of a buffered reader without consuming them.
trait PeekExt {
    fn fill_buf_peek(&mut self, out: &mut [u8]) -> usize;
}

impl<R: Read> PeekExt for BufReader<R> {
    fn fill_buf_peek(&mut self, out: &mut [u8]) -> usize {
        use std::io::BufRead;
        match self.fill_buf() {
            Ok(buf) => {
                let n = buf.len().min(out.len());
                out[..n].copy_from_slice(&buf[..n]);
                n
            }
            Err(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert!(matches!(
            BaseSource::parse("scratch").unwrap(),
            BaseSource::Scratch
        ));
        assert!(matches!(
            BaseSource::parse("debian:bookworm-slim").unwrap(),
            BaseSource::Registry(_)
        ));
        match BaseSource::parse("oci:/nonexistent/layout:v1").unwrap() {
            BaseSource::OciDir { path, name } => {
                assert_eq!(path, PathBuf::from("/nonexistent/layout"));
                assert_eq!(name.as_deref(), Some("v1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            BaseSource::parse("docker-archive:/x.tar").unwrap(),
            BaseSource::DockerArchive { name: None, .. }
        ));
        assert!(BaseSource::parse("oci-archive:").is_err());
        assert!(BaseSource::parse("Not A Ref").is_err());
    }

    #[test]
    fn rejects_unknown_manifest_types() {
        let err = parse_document(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.example+json"}"#,
            "",
            "base",
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("not an image manifest"), "{err}");
        assert!(parse_document(br#"{"schemaVersion":1}"#, "", "base").is_err());
        assert!(parse_document(b"nope", "", "base").is_err());
    }

    #[test]
    fn member_names() {
        assert_eq!(
            member_name(b"./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(member_name(b"../etc/passwd"), None);
    }
}
