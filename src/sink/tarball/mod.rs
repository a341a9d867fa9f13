//! File sinks: one tarball that every loader accepts (an OCI layout plus Docker's
//! `manifest.json` over the same blobs), and an OCI layout directory. Both are written under a
//! temporary name beside the destination and renamed at the end, so an interrupted write
//! leaves nothing half-made.
//!
//! Tags: `index.json` has one entry per tag (containerd, Docker 25+ with the containerd store,
//! podman 5 and ctr take each entry's `io.containerd.image.name`), and `manifest.json` lists
//! every tag for Docker's classic store and skopeo's `docker-archive:`. With more than one
//! tag, `skopeo … oci-archive:FILE` must name one (`oci-archive:FILE:TAG`).

mod archive;
mod early;
mod layout;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use oci_spec::image::Digest;

use crate::error::{Error, ImageError, Result};
use crate::oci::document::canonical_json;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::{
    Artifact, BlobSource, FileRange, LayerKind, SIGNATURES_ANNOTATION, SOURCE_ANNOTATION, media,
};

pub use archive::Prefix;
pub use archive::{stream_tarball, write_tarball};
pub use early::Early;
pub use layout::write_layout;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Where a blob's bytes come from when a file sink writes it.
pub enum Bytes<'a> {
    Memory(&'a [u8]),
    Range(FileRange),
}

impl Bytes<'_> {
    fn len(&self) -> u64 {
        match self {
            Bytes::Memory(b) => b.len() as u64,
            Bytes::Range(at) => at.size,
        }
    }
}

/// Every blob of an artifact, each once, with its bytes: first the base layers of every image
/// (known before a build is done, so an [`Early`] tarball starts with them), then per image
/// its config, other layers, attachments and manifest, then the index. `local` turns a
/// registry blob into a local range (fetched first).
pub(crate) fn blobs<'a>(
    artifact: &'a Artifact,
    local: &dyn Fn(&Digest) -> Option<FileRange>,
) -> Result<Vec<(Digest, Bytes<'a>)>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut add = |d: &Digest, b: Bytes<'a>| {
        if seen.insert(d.clone()) {
            out.push((d.clone(), b));
        }
    };
    let range = |blob: &crate::oci::Blob| {
        match &blob.source {
            BlobSource::File(at) => Some(at.clone()),
            BlobSource::Registry(_) => local(&blob.digest),
        }
        .ok_or_else(|| {
            Error::from(ImageError::Internal(format!(
                "blob {} was not fetched",
                blob.digest
            )))
        })
    };
    let images = artifact.images();
    for image in &images {
        for l in image.layers.iter().filter(|l| l.kind == LayerKind::Base) {
            add(&l.blob.digest, Bytes::Range(range(&l.blob)?));
        }
    }
    for image in &images {
        add(&image.config_digest, Bytes::Memory(&image.config_bytes));
        let blobs = image
            .layers
            .iter()
            .map(|l| &l.blob)
            .chain(image.attachments.iter().map(|a| &a.blob));
        for blob in blobs {
            add(&blob.digest, Bytes::Range(range(blob)?));
        }
        add(&image.digest, Bytes::Memory(&image.manifest));
    }
    if let Artifact::Index(i) = artifact {
        add(&i.digest, Bytes::Memory(&i.manifest));
    }
    Ok(out)
}

/// The blobs of the signatures a file carries (entries and bundles), each once.
pub(crate) fn signature_blobs(naming: &Naming) -> Vec<(Digest, Bytes<'_>)> {
    let mut seen = HashSet::new();
    naming
        .signatures
        .iter()
        .flat_map(|s| {
            s.classic
                .iter()
                .chain(&s.attestations)
                .map(|e| e.bytes.as_slice())
                .chain(s.bundles.iter().map(|(_, b)| b.as_slice()))
        })
        .filter_map(|b| {
            let d = crate::oci::digest::sha256_of(b);
            seen.insert(d.clone()).then_some((d, Bytes::Memory(b)))
        })
        .collect()
}

/// What to name the artifact inside a file.
#[derive(Clone, Debug, Default)]
pub struct Naming {
    pub tags: Vec<Reference>,
    /// The registry reference it came from (`imgbuild pull`), remembered in `index.json`.
    pub source: Option<Reference>,
    /// The platform `manifest.json` describes when the artifact is an index.
    pub platform: Option<Platform>,
    /// Signatures carried inside the file (their blobs in `blobs/`, described by the
    /// `dev.imgbuild.signatures` annotation of `index.json`), for `imgbuild push` to publish
    /// and `imgbuild verify` to check offline.
    pub signatures: Vec<crate::oci::Signatures>,
}

/// `index.json`: one entry per tag, named for containerd (`io.containerd.image.name`) and the
/// OCI layout (`ref.name` = the tag); one unnamed entry without tags.
pub(crate) fn index_json(artifact: &Artifact, naming: &Naming) -> Result<Vec<u8>> {
    let entry = |tag: Option<&Reference>| {
        let mut desc = serde_json::json!({
            "mediaType": artifact.media_type(),
            "digest": artifact.digest().to_string(),
            "size": artifact.manifest().len(),
        });
        let mut notes = serde_json::Map::new();
        if let Some(t) = tag {
            notes.insert("io.containerd.image.name".into(), t.canonical().into());
            notes.insert(
                "org.opencontainers.image.ref.name".into(),
                t.tag_or_latest().into(),
            );
        }
        if let Some(s) = &naming.source {
            notes.insert(SOURCE_ANNOTATION.into(), s.canonical().into());
        }
        if !naming.signatures.is_empty() {
            notes.insert(
                SIGNATURES_ANNOTATION.into(),
                crate::sign::cosign::describe(&naming.signatures).into(),
            );
        }
        if !notes.is_empty() {
            desc["annotations"] = serde_json::Value::Object(notes);
        }
        desc
    };
    let manifests: Vec<serde_json::Value> = if naming.tags.is_empty() {
        vec![entry(None)]
    } else {
        naming.tags.iter().map(|t| entry(Some(t))).collect()
    };
    canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    }))
}

/// Docker's `manifest.json`, read by `docker load` (classic store), skopeo `docker-archive:`,
/// crane, and podman when `index.json` names several tags: one image (an index's image for the
/// naming's platform), every tag fully qualified (`docker.io/team/hello:0.1.0`). Docker reads
/// that form as well as the short one, and podman would file a short `team/hello` under
/// `localhost/`.
pub(crate) fn docker_manifest_json(artifact: &Artifact, naming: &Naming) -> Result<Vec<u8>> {
    let image = artifact
        .image_for(naming.platform.as_ref())
        .ok_or_else(|| {
            Error::from(ImageError::Invalid(
                "the index holds no runnable image".to_string(),
            ))
        })?;
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.digest());
    let repo_tags: Vec<String> = naming.tags.iter().map(Reference::tagged).collect();
    canonical_json(&serde_json::json!([{
        "Config": blob(&image.config_digest),
        "RepoTags": repo_tags,
        "Layers": image.layers.iter().map(|l| blob(&l.blob.digest)).collect::<Vec<_>>(),
    }]))
}

/// Copy one blob into `out`, its bytes verified ([`crate::cache::Cache::copy_range_verified`]).
fn copy_verified<W: Write>(
    d: &Digest,
    bytes: &Bytes,
    out: &mut W,
    cache: &crate::cache::Cache,
) -> Result<u64> {
    match bytes {
        Bytes::Memory(b) => {
            out.write_all(b)
                .map_err(|e| Error::io("write", "output", e))?;
            Ok(b.len() as u64)
        }
        Bytes::Range(at) => cache.copy_range_verified(at, d, out),
    }
}

/// An error that names the output (`write` to `output`) names `path` instead.
fn naming_output(path: &Path) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Io {
            action: "write",
            source,
            ..
        } => Error::io("write", path, source),
        e => e,
    }
}

/// A small image whose layer lives in a cache, and tags to name it by, for the tests of every
/// file sink.
#[cfg(test)]
mod fixture {
    use std::io::Write;

    use super::Naming;
    use crate::cache::Cache;
    use crate::oci::platform::Platform;
    use crate::oci::reference::Reference;
    use crate::oci::{Blob, BlobSource, FileRange, Layer, LayerKind, media};

    /// A one-layer image (a gzip tar holding one file) whose layer lives in `cache`.
    pub(super) fn small_image(cache: &Cache) -> crate::oci::Image {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let diff_id = crate::oci::digest::sha256_of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let d = cache.put_bytes(&gz).unwrap();
        let base = crate::source::scratch(&Platform::parse("linux/amd64").unwrap()).unwrap();
        let layer = Layer {
            blob: Blob::new(
                d.clone(),
                gz.len() as u64,
                media::LAYER_GZIP,
                BlobSource::File(FileRange {
                    path: cache.blob_path(&d),
                    offset: 0,
                    size: gz.len() as u64,
                }),
            ),
            diff_id,
            kind: LayerKind::App,
        };
        let release = crate::release::Release::for_tests("small", "1.0");
        crate::mutate::append(&base, &release, vec![layer], &Default::default(), vec![]).unwrap()
    }

    pub(super) fn naming(tags: &[&str]) -> Naming {
        Naming {
            tags: tags.iter().map(|t| Reference::parse(t).unwrap()).collect(),
            source: None,
            platform: None,
            signatures: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every file sink written from a small image, and read back by every file source.
    use super::fixture::{naming, small_image};
    use super::*;
    use crate::cache::Cache;
    use crate::oci::platform::Platforms;
    use crate::source::archive::Archive;
    use crate::source::layout::{self, Dir};

    #[test]
    fn a_second_ref_added_to_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let image = small_image(&cache);
        let artifact = Artifact::Image(Box::new(image.clone()));
        let blobs = blobs(&artifact, &|_| None).unwrap();
        let lay = dir.path().join("layout");
        let refs = |lay: &Path| -> Vec<String> {
            let index: serde_json::Value =
                serde_json::from_slice(&std::fs::read(lay.join("index.json")).unwrap()).unwrap();
            index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["annotations"]["org.opencontainers.image.ref.name"].to_string())
                .collect()
        };
        write_layout(
            &lay,
            &artifact,
            &blobs,
            &naming(&["a/small:1"]),
            &cache,
            false,
        )
        .unwrap();
        let debug = naming(&["a/small:1-debug"]);
        // Added: both refs, every blob; added again: replaced, not repeated.
        for _ in 0..2 {
            write_layout(&lay, &artifact, &blobs, &debug, &cache, true).unwrap();
            assert_eq!(refs(&lay), ["\"1\"", "\"1-debug\""]);
        }
        for (d, _) in &blobs {
            assert!(lay.join("blobs/sha256").join(d.digest()).is_file());
        }
        let d = Dir::new(&lay);
        let one = Platforms::One(None);
        let Artifact::Image(read) =
            layout::read(&d, &d.index().unwrap(), Some("1-debug"), &one).unwrap()
        else {
            panic!("an index")
        };
        assert_eq!(read.digest, image.digest);
        // Without `add`, the layout is replaced as before.
        write_layout(&lay, &artifact, &blobs, &debug, &cache, false).unwrap();
        assert_eq!(refs(&lay), ["\"1-debug\""]);
    }

    #[test]
    fn tarball_and_layout_read_back_by_every_file_source() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let image = small_image(&cache);
        let artifact = Artifact::Image(Box::new(image.clone()));
        let blobs = blobs(&artifact, &|_| None).unwrap();
        let names = naming(&["example.com/a/small:1", "example.com/a/small:2"]);
        let tar = dir.path().join("small.tar");
        write_tarball(&tar, &artifact, &blobs, &names, 0, &cache, None).unwrap();
        let lay = dir.path().join("layout");
        write_layout(&lay, &artifact, &blobs, &names, &cache, false).unwrap();

        let one = Platforms::One(None);
        let archive = Archive::open(&tar, "small.tar").unwrap();
        // OCI side: the same manifest bytes, found by either tag or as the one digest named.
        for name in [None, Some("2"), Some("example.com/a/small:1")] {
            let Artifact::Image(read) = archive.read_oci(name, &one).unwrap() else {
                panic!("an index")
            };
            assert_eq!(read.manifest, image.manifest);
            assert_eq!(read.layers[0].kind, LayerKind::App);
        }
        assert!(archive.read_oci(Some("3"), &one).is_err());
        // Docker side: the same config and layer, every tag named.
        let docker = archive.read_docker(Some("2"), &one).unwrap();
        assert_eq!(docker.config_digest, image.config_digest);
        assert_eq!(docker.layers[0].blob.digest, image.layers[0].blob.digest);
        assert_eq!(archive.names().len(), 2);
        // The layout directory.
        let d = Dir::new(&lay);
        let Artifact::Image(read) = layout::read(&d, &d.index().unwrap(), None, &one).unwrap()
        else {
            panic!("an index")
        };
        assert_eq!(read.digest, image.digest);
        // Blobs read from the archive verify while they are copied into a new one.
        let again = dir.path().join("again.tar");
        let artifact2 = Artifact::Image(read);
        let blobs2 = super::blobs(&artifact2, &|_| None).unwrap();
        write_tarball(&again, &artifact2, &blobs2, &names, 0, &cache, None).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&tar).unwrap());
    }

    #[test]
    fn index_json_names_every_tag_and_manifest_json_one_image() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let artifact = Artifact::Image(Box::new(small_image(&cache)));
        let names = naming(&["team/app:1", "team/app:2", "ghcr.io/o/app:3"]);
        let index: serde_json::Value =
            serde_json::from_slice(&index_json(&artifact, &names).unwrap()).unwrap();
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[2]["annotations"]["io.containerd.image.name"],
            "ghcr.io/o/app:3"
        );
        assert_eq!(
            entries[1]["annotations"]["org.opencontainers.image.ref.name"],
            "2"
        );
        let docker: serde_json::Value =
            serde_json::from_slice(&docker_manifest_json(&artifact, &names).unwrap()).unwrap();
        assert_eq!(
            docker[0]["RepoTags"],
            serde_json::json!([
                "docker.io/team/app:1",
                "docker.io/team/app:2",
                "ghcr.io/o/app:3"
            ])
        );
    }
}
