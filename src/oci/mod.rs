//! The image model at the centre of imgbuild: an [`Image`] (manifest bytes as stored, config,
//! layers, attachments), an [`Index`] of images, and a [`Layer`] that knows where its bytes
//! are. Sources make them, mutations make new ones from old, sinks write them; this module
//! depends on none of those.
//!
//! Also here: media types ([`media`]), digests, references, platforms and manifest documents.

pub mod digest;
pub mod document;
pub mod media;
pub mod platform;
pub mod reference;

use std::path::PathBuf;

use oci_spec::image::{Digest, ImageConfiguration};
use serde::Serialize;

use self::platform::Platform;
use self::reference::Reference;

/// A byte range of a local file: a cache entry (offset 0), or a member inside a tarball.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRange {
    pub path: PathBuf,
    pub offset: u64,
    pub size: u64,
}

impl FileRange {
    /// A reader over the range.
    pub(crate) fn open(&self) -> crate::error::Result<impl std::io::Read + use<>> {
        use crate::error::IoContext;
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path).ctx("open", &self.path)?;
        f.seek(SeekFrom::Start(self.offset))
            .ctx("read", &self.path)?;
        Ok(std::io::BufReader::with_capacity(
            1 << 16,
            f.take(self.size),
        ))
    }

    /// The range read whole (small blobs only: callers check the size first).
    pub(crate) fn read_all(&self) -> crate::error::Result<Vec<u8>> {
        use crate::error::IoContext;
        use std::io::Read;
        let mut buf = Vec::with_capacity(self.size.min(media::MAX_JSON_BYTES) as usize);
        self.open()?.read_to_end(&mut buf).ctx("read", &self.path)?;
        Ok(buf)
    }
}

/// Where a blob's bytes can be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobSource {
    /// In a local file (cache, layout directory or tarball).
    File(FileRange),
    /// In a registry repository, read (and cached) only when a sink needs the bytes.
    Registry(Reference),
}

/// A blob an image names: its descriptor facts and where its bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub source: BlobSource,
    /// Repositories that may already hold the blob: a registry sink on the same registry
    /// mounts from them instead of uploading.
    pub mount_from: Vec<Reference>,
}

impl Blob {
    pub(crate) fn new(
        digest: Digest,
        size: u64,
        media_type: impl Into<String>,
        source: BlobSource,
    ) -> Blob {
        Blob {
            digest,
            size,
            media_type: media_type.into(),
            source,
            mount_from: vec![],
        }
    }

    /// The registry repositories this blob can be mounted from: where it is read, then others.
    pub(crate) fn mount_sources(&self) -> impl Iterator<Item = &Reference> {
        let own = match &self.source {
            BlobSource::Registry(r) => Some(r),
            BlobSource::File(_) => None,
        };
        own.into_iter().chain(&self.mount_from)
    }
}

/// Which part of an image a layer is, from rarely to often changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// A layer of the base image (or of an image imgbuild did not build).
    Base,
    /// Debian runtime packages (`--package`).
    Packages,
    /// `erts-*`: the Erlang runtime.
    Erts,
    /// `lib/*` applications from OTP, Elixir and third-party dependencies.
    Deps,
    /// The project's own applications' `priv/static` (digested web assets): large and rarely
    /// changed, so kept apart from their code.
    Assets,
    /// `lib/*` applications that belong to the project itself.
    App,
    /// `releases/`, `bin/` and overlays.
    Release,
    /// The SBOM document under /var/lib/db/sbom.
    Sbom,
    /// Local files added by `imgbuild append`.
    Files,
    /// imgbuild's launcher at `bin/NAME`, for an image without a shell (see `launch`).
    Launcher,
    /// `--debug`: a static busybox under `/busybox`, in the debug image only.
    Debug,
}

impl LayerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Erts => "erts",
            LayerKind::Deps => "deps",
            LayerKind::Assets => "assets",
            LayerKind::App => "app",
            LayerKind::Release => "release",
            LayerKind::Base => "base",
            LayerKind::Sbom => "sbom",
            LayerKind::Packages => "packages",
            LayerKind::Files => "files",
            LayerKind::Launcher => "launcher",
            LayerKind::Debug => "debug",
        }
    }

    /// The kind imgbuild recorded in a history entry (`imgbuild: app layer of …`); `Base` for
    /// anything else.
    pub(crate) fn from_history(created_by: &str) -> LayerKind {
        let word = created_by
            .strip_prefix("imgbuild: ")
            .and_then(|r| r.split(' ').next())
            .unwrap_or("");
        [
            LayerKind::Packages,
            LayerKind::Erts,
            LayerKind::Deps,
            LayerKind::Assets,
            LayerKind::App,
            LayerKind::Release,
            LayerKind::Sbom,
            LayerKind::Files,
            LayerKind::Launcher,
            LayerKind::Debug,
        ]
        .into_iter()
        .find(|k| k.as_str() == word)
        .unwrap_or(LayerKind::Base)
    }
}

/// One layer: its blob (compressed bytes), the digest of its uncompressed tar, its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: Digest,
    pub kind: LayerKind,
}

/// Something that belongs to an image without being part of it: the SBOM now, signatures and
/// attestations later. A registry sink attaches it as an OCI referrer of the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub artifact_type: String,
    pub blob: Blob,
}

/// One layer of a cosign signature or attestation image: its bytes and annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureEntry {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub annotations: serde_json::Map<String, serde_json::Value>,
}

/// Everything that signs one manifest, ready to publish beside it without the private key:
/// cosign's classic `.sig` and `.att` entries, and Sigstore bundles (with their predicate
/// types) to attach as referrers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signatures {
    pub subject: Digest,
    pub subject_media_type: String,
    pub subject_size: u64,
    pub classic: Vec<SignatureEntry>,
    pub attestations: Vec<SignatureEntry>,
    pub bundles: Vec<(String, Vec<u8>)>,
}

/// Where an image came from: the name imgbuild labels derived images with, and for registry
/// images the reference (a mount source) and the manifest digest as the registry serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// How the user named it, normalised (`docker.io/library/debian:bookworm-slim`,
    /// `oci-archive:base.tar`, `scratch`).
    pub name: String,
    pub reference: Option<Reference>,
    /// The manifest digest when the source stored a manifest (not for legacy docker-archive
    /// files or scratch, whose manifests imgbuild makes up).
    pub digest: Option<Digest>,
}

/// A single-platform image.
#[derive(Clone, Debug)]
pub struct Image {
    /// The manifest exactly as stored; its digest and media type.
    pub manifest: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
    /// The config, as bytes (exactly as stored) and parsed.
    pub config_bytes: Vec<u8>,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
    pub layers: Vec<Layer>,
    pub attachments: Vec<Attachment>,
    pub origin: Origin,
}

impl Image {
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.config.os().to_string(),
            architecture: self.config.architecture().to_string(),
            variant: self.config.variant().clone().filter(|v| !v.is_empty()),
        }
    }
}

/// A multi-platform image: the index exactly as stored, and its images in index order.
#[derive(Clone, Debug)]
pub struct Index {
    pub manifest: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
    pub images: Vec<Image>,
    pub origin: Origin,
}

/// What a source gives and a sink takes: one image or an index of them (ko's `build.Result`).
#[derive(Clone, Debug)]
pub enum Artifact {
    Image(Box<Image>),
    Index(Box<Index>),
}

impl Artifact {
    pub fn digest(&self) -> &Digest {
        match self {
            Artifact::Image(i) => &i.digest,
            Artifact::Index(i) => &i.digest,
        }
    }

    pub fn manifest(&self) -> &[u8] {
        match self {
            Artifact::Image(i) => &i.manifest,
            Artifact::Index(i) => &i.manifest,
        }
    }

    pub fn media_type(&self) -> &str {
        match self {
            Artifact::Image(i) => &i.media_type,
            Artifact::Index(i) => &i.media_type,
        }
    }

    /// Every image: the one, or each of the index's.
    pub fn images(&self) -> Vec<&Image> {
        match self {
            Artifact::Image(i) => vec![i],
            Artifact::Index(i) => i.images.iter().collect(),
        }
    }

    /// The image a single-platform reader (Docker 20.10's `manifest.json`, an engine load)
    /// gets: the one image, or the index's image for `platform` (default: the host's), else
    /// its first runnable one.
    pub(crate) fn image_for(&self, platform: Option<&Platform>) -> Option<&Image> {
        match self {
            Artifact::Image(i) => Some(i),
            Artifact::Index(index) => {
                let want = platform.cloned().unwrap_or_else(Platform::host);
                let runnable = || {
                    index
                        .images
                        .iter()
                        .filter(|i| i.config.os().to_string() != "unknown")
                };
                runnable()
                    .find(|i| {
                        let p = i.platform();
                        want.matches(&p.os, &p.architecture, p.variant.as_deref())
                    })
                    .or_else(|| runnable().next())
            }
        }
    }
}

/// Manifest annotation naming the SBOM blob, so sinks can carry and attach it.
pub const SBOM_ANNOTATION: &str = "dev.imgbuild.sbom";
/// index.json annotation of `imgbuild pull`: the reference an archive's image came from, so a
/// build from the archive labels its base exactly as a build from the registry does.
pub const SOURCE_ANNOTATION: &str = "dev.imgbuild.source";
/// index.json annotation of a signed tarball: the signatures it carries (see `sign::cosign`).
pub const SIGNATURES_ANNOTATION: &str = "dev.imgbuild.signatures";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_history() {
        assert_eq!(
            LayerKind::from_history("imgbuild: app layer of release hello 0.1.0"),
            LayerKind::App
        );
        assert_eq!(
            LayerKind::from_history("RUN apt-get install"),
            LayerKind::Base
        );
        assert_eq!(
            LayerKind::from_history("imgbuild: weird layer"),
            LayerKind::Base
        );
    }
}
