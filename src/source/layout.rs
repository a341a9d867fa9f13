//! The OCI image layout (`index.json` over `blobs/sha256/`), walked the same way whether it is
//! a directory (`oci:DIR`) or inside a tar file (`oci-archive:`, imgbuild's own tarballs), and
//! the step every source shares: a manifest and its config made into an [`Image`].

use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest};

use crate::error::{Error, ImageError, Result};
use crate::oci::document::{Document, parse_document, select_from_index};
use crate::oci::media::{self, MAX_JSON_BYTES};
use crate::oci::platform::{Platform, Platforms};
use crate::oci::reference::Reference;
use crate::oci::{
    Artifact, Attachment, Blob, BlobSource, FileRange, Image, Index, Layer, LayerKind, Origin,
    SBOM_ANNOTATION, SOURCE_ANNOTATION, digest,
};

/// Where a layout's blobs lie.
pub trait Store {
    /// The layout's name in messages (`oci:DIR`, `oci-archive:FILE`).
    fn what(&self) -> &str;
    fn locate(&self, d: &Digest) -> Option<FileRange>;
}

/// An OCI layout directory.
pub struct Dir {
    root: PathBuf,
    what: String,
}

impl Dir {
    pub(crate) fn new(root: &Path) -> Dir {
        Dir {
            root: root.to_path_buf(),
            what: format!("oci:{}", root.display()),
        }
    }

    pub(crate) fn index(&self) -> Result<Vec<u8>> {
        let p = self.root.join("index.json");
        let meta = std::fs::metadata(&p).map_err(|e| {
            Error::Input(format!(
                "{}: cannot open {}: {e} (is it an OCI layout directory?)",
                self.what,
                p.display()
            ))
        })?;
        FileRange {
            path: p,
            offset: 0,
            size: meta.len().min(MAX_JSON_BYTES + 1),
        }
        .read_all()
    }
}

impl Store for Dir {
    fn what(&self) -> &str {
        &self.what
    }
    fn locate(&self, d: &Digest) -> Option<FileRange> {
        let path = self.root.join("blobs").join("sha256").join(d.digest());
        let size = std::fs::metadata(&path).ok()?.len();
        Some(FileRange {
            path,
            offset: 0,
            size,
        })
    }
}

/// A small blob of the layout read whole and verified against its digest.
fn read_blob(store: &dyn Store, d: &Digest) -> Result<Vec<u8>> {
    let what = store.what();
    let at = store
        .locate(d)
        .ok_or_else(|| Error::from(ImageError::Invalid(format!("{what}: blob {d} is missing"))))?;
    if at.size > MAX_JSON_BYTES {
        return Err(Error::from(ImageError::Invalid(format!(
            "{what}: blob {d} is implausibly large"
        ))));
    }
    let bytes = at.read_all()?;
    digest::verify(format!("{what}: blob {d}"), d, &digest::sha256_of(&bytes))?;
    Ok(bytes)
}

/// Walk `index.json` to the image or index it names: by `name` (an entry's `ref.name` or
/// `io.containerd.image.name`), else its only entry (or the only digest its entries name).
pub(crate) fn read(
    store: &dyn Store,
    index_json: &[u8],
    name: Option<&str>,
    platforms: &Platforms,
) -> Result<Artifact> {
    let what = store.what().to_string();
    if index_json.len() as u64 > MAX_JSON_BYTES {
        return Err(Error::from(ImageError::Invalid(format!(
            "{what}: index.json is implausibly large"
        ))));
    }
    let index: ImageIndex = serde_json::from_slice(index_json).map_err(|e| {
        Error::from(ImageError::Json {
            what: what.to_string(),
            doc: "index.json (an image index)",
            source: e,
        })
    })?;
    let annotation = |d: &Descriptor, key: &str| -> Option<String> {
        d.annotations().as_ref().and_then(|a| a.get(key)).cloned()
    };
    let entries: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| {
            name.is_none_or(|n| {
                annotation(d, "org.opencontainers.image.ref.name").as_deref() == Some(n)
                    || annotation(d, "io.containerd.image.name").as_deref() == Some(n)
            })
        })
        .collect();
    let top = match entries.as_slice() {
        [] => {
            return Err(Error::Input(format!(
                "{what} holds no image{}",
                name.map(|n| format!(" named {n:?}")).unwrap_or_default()
            )));
        }
        [first, rest @ ..] if rest.iter().all(|d| d.digest() == first.digest()) => (*first).clone(),
        many => match platforms {
            // Several images: a multi-platform layout written entry by entry.
            Platforms::One(p) => {
                let mut sub = ImageIndex::default();
                sub.set_manifests(many.iter().map(|d| (*d).clone()).collect());
                select_from_index(&sub, p.as_ref(), &what)
                    .map_err(|e| Error::Input(format!("{e}; or name one image as {what}:REF")))?
            }
            Platforms::All => {
                return Err(Error::Input(format!(
                    "{what} holds {} images: name one as {what}:REF",
                    many.len()
                )));
            }
        },
    };
    // An archive imgbuild pulled remembers the reference it came from.
    let origin = |d: Digest| {
        let reference = annotation(&top, SOURCE_ANNOTATION).and_then(|r| Reference::parse(&r).ok());
        Origin {
            name: reference
                .as_ref()
                .map_or_else(|| what.clone(), Reference::canonical),
            reference,
            digest: Some(d),
        }
    };
    let locate = |d: &Digest| -> Result<BlobSource> {
        store
            .locate(d)
            .map(BlobSource::File)
            .ok_or_else(|| Error::from(ImageError::Invalid(format!("{what}: blob {d} is missing"))))
    };
    let top_digest = digest::parse(top.digest().as_ref())?;
    let bytes = read_blob(store, &top_digest)?;
    let top_media = top.media_type().to_string();
    match parse_document(&bytes, &top_media, &what)? {
        Document::Manifest(m) => {
            let image = image_from(
                Fetched {
                    manifest: bytes,
                    digest: top_digest.clone(),
                    media_type: top_media,
                },
                &m,
                read_blob(store, &digest::parse(m.config().digest().as_ref())?)?,
                &locate,
                origin(top_digest),
                &what,
            )?;
            check_wanted(&image, platforms, &what)?;
            Ok(Artifact::Image(Box::new(image)))
        }
        Document::Index(i) => {
            let child = |d: &Descriptor| -> Result<Image> {
                let cd = digest::parse(d.digest().as_ref())?;
                let cbytes = read_blob(store, &cd)?;
                let media_type = d.media_type().to_string();
                let Document::Manifest(m) = parse_document(&cbytes, &media_type, &what)? else {
                    return Err(Error::from(ImageError::Invalid(format!(
                        "{what}: nested indexes are not supported"
                    ))));
                };
                image_from(
                    Fetched {
                        manifest: cbytes,
                        digest: cd.clone(),
                        media_type,
                    },
                    &m,
                    read_blob(store, &digest::parse(m.config().digest().as_ref())?)?,
                    &locate,
                    origin(cd),
                    &what,
                )
            };
            match platforms {
                Platforms::One(p) => {
                    let image = child(&select_from_index(&i, p.as_ref(), &what)?)?;
                    check_wanted(&image, platforms, &what)?;
                    Ok(Artifact::Image(Box::new(image)))
                }
                Platforms::All => Ok(Artifact::Index(Box::new(Index {
                    images: i.manifests().iter().map(child).collect::<Result<_>>()?,
                    media_type: document_media_type(&bytes, &top_media),
                    manifest: bytes,
                    origin: origin(top_digest.clone()),
                    digest: top_digest,
                }))),
            }
        }
    }
}

/// A manifest as fetched: its bytes, digest and media type.
pub struct Fetched {
    pub manifest: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

/// The media type a document declares, else the one it was served or described as.
pub(crate) fn document_media_type(bytes: &[u8], fallback: &str) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_string))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

/// An image from its manifest and config: layers located by `locate`, kinds read from the
/// history imgbuild writes, and the SBOM the manifest names attached when it can be found.
pub(crate) fn image_from(
    fetched: Fetched,
    manifest: &ImageManifest,
    config_bytes: Vec<u8>,
    locate: &dyn Fn(&Digest) -> Result<BlobSource>,
    origin: Origin,
    what: &str,
) -> Result<Image> {
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes).map_err(|e| {
        Error::from(ImageError::Json {
            what: what.to_string(),
            doc: "image config",
            source: e,
        })
    })?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(Error::from(ImageError::Invalid(format!(
            "{what}: the manifest lists {} layers but the config {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        ))));
    }
    let kinds: Vec<LayerKind> = config
        .history()
        .iter()
        .flatten()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .map(|h| LayerKind::from_history(h.created_by().as_deref().unwrap_or("")))
        .collect();
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .enumerate()
        .map(|(i, (d, diff))| {
            let blob_digest = digest::parse(d.digest().as_ref())?;
            Ok(Layer {
                blob: Blob::new(
                    blob_digest.clone(),
                    d.size(),
                    d.media_type().to_string(),
                    locate(&blob_digest)?,
                ),
                diff_id: digest::parse(diff)?,
                kind: kinds.get(i).copied().unwrap_or(LayerKind::Base),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // An image imgbuild built names its base: base layers may be mounted from there.
    let base_repo: Vec<Reference> = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get("org.opencontainers.image.base.name"))
        .and_then(|n| Reference::parse(n).ok())
        .map(|mut r| {
            r.tag = None;
            r.digest = None;
            r
        })
        .into_iter()
        .collect();
    let layers: Vec<Layer> = layers
        .into_iter()
        .map(|mut l| {
            if l.kind == LayerKind::Base {
                l.blob.mount_from = base_repo.clone();
            }
            l
        })
        .collect();
    let attachments = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get(SBOM_ANNOTATION))
        .and_then(|d| digest::parse(d).ok())
        .and_then(|d| {
            let source = locate(&d).ok()?;
            let size = match &source {
                BlobSource::File(at) => at.size,
                BlobSource::Registry(_) => 0,
            };
            Some(Attachment {
                artifact_type: media::SPDX_JSON.into(),
                blob: Blob::new(d, size, media::SPDX_JSON, source),
            })
        })
        .into_iter()
        .collect();
    let media_type = document_media_type(&fetched.manifest, &fetched.media_type);
    Ok(Image {
        manifest: fetched.manifest,
        digest: fetched.digest,
        media_type: if media_type.is_empty() {
            media::OCI_MANIFEST.into()
        } else {
            media_type
        },
        config_digest: digest::parse(manifest.config().digest().as_ref())?,
        config_bytes,
        config,
        layers,
        attachments,
        origin,
    })
}

fn check_wanted(image: &Image, platforms: &Platforms, what: &str) -> Result<()> {
    match platforms {
        Platforms::One(Some(want)) => check_platform(&image.config, want, what),
        _ => Ok(()),
    }
}

/// A single image must be for the platform asked for.
pub(crate) fn check_platform(
    config: &ImageConfiguration,
    want: &Platform,
    what: &str,
) -> Result<()> {
    let (os, arch) = (config.os().to_string(), config.architecture().to_string());
    if want.matches(&os, &arch, config.variant().as_deref()) {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "{what} is for {os}/{arch}, not {want}: choose an image for {want} or drop --platform"
        )))
    }
}
