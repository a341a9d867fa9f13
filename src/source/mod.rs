//! Sources: where images come from. Each makes an [`Artifact`] (an image or an index) whose
//! layers say where their bytes are; nothing is downloaded or copied until a sink asks.
//!
//! | source | grammar |
//! |---|---|
//! | registry | `[REGISTRY/]REPO[:TAG][@sha256:…]` |
//! | OCI layout directory | `oci:DIR[:REF]` |
//! | OCI archive | `oci-archive:FILE[:REF]` |
//! | Docker archive (`docker save`) | `docker-archive:FILE[:NAME:TAG]` |
//! | an image file of either kind | `FILE` (push, inspect, copy) |
//! | nothing | `scratch` |
//! | Debian packages alone | `deb:SUITE` (`deb:bookworm`, see [`deb`]) |

pub mod archive;
pub mod deb;
pub mod layout;
pub mod registry;

use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::error::{Error, ImageError, Result};
use crate::oci::document::canonical_json;
use crate::oci::media;
pub use crate::oci::platform::Platforms;

use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::{Artifact, Blob, BlobSource, FileRange, Image, Origin, digest};
use crate::registry::RegistryClient;

/// Where an image comes from, as parsed from `--from` (or `copy`'s source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Scratch,
    Registry(Reference),
    OciDir {
        path: PathBuf,
        name: Option<String>,
    },
    OciArchive {
        path: PathBuf,
        name: Option<String>,
    },
    DockerArchive {
        path: PathBuf,
        name: Option<String>,
    },
    /// An image tar file of either format (imgbuild's own tarballs, `docker save`, skopeo's).
    File(PathBuf),
    /// A base made of a Debian suite's packages alone (`deb:bookworm`).
    Deb {
        suite: crate::apt::debian::Suite,
    },
}

/// Transports of other tools, named in the error when one is given.
const KNOWN_ELSEWHERE: &[&str] = &[
    "docker",
    "dir",
    "containers-storage",
    "docker-daemon",
    "ostree",
    "sif",
];

fn unknown_transport(s: &str, transport: &str) -> Error {
    Error::Usage(format!(
        "{s:?}: the transport {transport}: is not supported; use a registry reference (REGISTRY/REPO:TAG), oci:DIR, oci-archive:FILE, docker-archive:FILE or scratch"
    ))
}

impl Source {
    /// The `--from` grammar (see the module doc). A bare word is a registry reference.
    pub fn parse(s: &str) -> Result<Source> {
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
            return Ok(Source::Scratch);
        }
        if let Some(suite) = s.strip_prefix("deb:") {
            return Ok(Source::Deb {
                suite: crate::apt::debian::Suite::parse(suite)?,
            });
        }
        type Make = fn(PathBuf, Option<String>) -> Source;
        let transports: [(&str, Make); 3] = [
            ("oci:", |path, name| Source::OciDir { path, name }),
            ("oci-archive:", |path, name| Source::OciArchive {
                path,
                name,
            }),
            ("docker-archive:", |path, name| Source::DockerArchive {
                path,
                name,
            }),
        ];
        for (prefix, make) in transports {
            if let Some(rest) = s.strip_prefix(prefix) {
                if rest.is_empty() {
                    return Err(Error::Usage(format!("{s}: give a path after {prefix}")));
                }
                let (p, n) = split(rest);
                return Ok(make(p, n));
            }
        }
        // `name:/path` and `name://ref` cannot be references (a tag has no '/'): a transport
        // imgbuild does not know, such as skopeo's `docker://` or `dir:`.
        if let Some((transport, rest)) = s.split_once(':')
            && !transport.contains('/')
            && rest.starts_with('/')
        {
            return Err(unknown_transport(s, transport));
        }
        match Reference::parse(s) {
            Ok(r) => Ok(Source::Registry(r)),
            Err(e) => match s.split_once(':') {
                Some((t, _)) if KNOWN_ELSEWHERE.contains(&t) => Err(unknown_transport(s, t)),
                _ => Err(e),
            },
        }
    }

    /// Like [`Source::parse`], but an existing file is an image tarball.
    pub fn parse_any(s: &str) -> Result<Source> {
        if Path::new(s).is_file() {
            return Ok(Source::File(PathBuf::from(s)));
        }
        Source::parse(s)
    }

    /// How the source is named in messages and labels.
    pub fn describe(&self) -> String {
        match self {
            Source::Scratch => "scratch".into(),
            Source::Registry(r) => r.canonical(),
            Source::OciDir { path, .. } => format!("oci:{}", path.display()),
            Source::OciArchive { path, .. } => format!("oci-archive:{}", path.display()),
            Source::DockerArchive { path, .. } => format!("docker-archive:{}", path.display()),
            Source::File(path) => path.display().to_string(),
            Source::Deb { suite } => format!("deb:{}", suite.name()),
        }
    }
}

/// Read the source into the model. A registry image pinned by digest whose manifest and
/// config are cached needs no network.
pub async fn read(
    source: &Source,
    platforms: &Platforms,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<Artifact> {
    let what = source.describe();
    let platforms2 = platforms.clone();
    match source {
        Source::Scratch => {
            let p = match platforms {
                Platforms::One(Some(p)) => p.clone(),
                _ => Platform::host(),
            };
            Ok(Artifact::Image(Box::new(scratch(&p)?)))
        }
        Source::Deb { suite } => {
            let (suite, c) = (*suite, cache.clone());
            crate::blocking(move || match platforms2 {
                Platforms::One(p) => Ok(Artifact::Image(Box::new(deb::image(
                    suite,
                    &p.unwrap_or_else(Platform::host),
                    &c,
                )?))),
                // Every platform a deb: base is made for.
                Platforms::All => {
                    let images = ["linux/amd64", "linux/arm64"]
                        .into_iter()
                        .map(|p| deb::image(suite, &Platform::parse(p)?, &c))
                        .collect::<Result<Vec<_>>>()?;
                    Ok(Artifact::Index(Box::new(crate::mutate::index(images)?)))
                }
            })
            .await
        }
        Source::Registry(r) => registry::read(r, platforms, cache, client).await,
        Source::OciDir { path, name } => {
            let (path, name) = (path.clone(), name.clone());
            crate::blocking(move || {
                let dir = layout::Dir::new(&path);
                layout::read(&dir, &dir.index()?, name.as_deref(), &platforms2)
            })
            .await
        }
        Source::OciArchive { path, name } => {
            let (path, name) = (path.clone(), name.clone());
            crate::blocking(move || {
                archive::Archive::open(&path, &what)?.read_oci(name.as_deref(), &platforms2)
            })
            .await
        }
        Source::DockerArchive { path, name } => {
            let (path, name) = (path.clone(), name.clone());
            crate::blocking(move || {
                archive::Archive::open(&path, &what)?
                    .read_docker(name.as_deref(), &platforms2)
                    .map(|i| Artifact::Image(Box::new(i)))
            })
            .await
        }
        Source::File(path) => {
            let path = path.clone();
            crate::blocking(move || {
                let a = archive::Archive::open(&path, &what)?;
                if a.has("index.json") {
                    a.read_oci(None, &platforms2)
                } else {
                    a.read_docker(None, &platforms2)
                        .map(|i| Artifact::Image(Box::new(i)))
                }
            })
            .await
        }
    }
}

/// Read one image (for a platform) from the source.
pub(crate) async fn read_image(
    source: &Source,
    platform: Option<&Platform>,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<Image> {
    match read(source, &Platforms::One(platform.cloned()), cache, client).await? {
        Artifact::Image(i) => Ok(*i),
        Artifact::Index(_) => Err(Error::from(ImageError::Invalid(format!(
            "internal: {} gave an index where one image was asked for",
            source.describe()
        )))),
    }
}

/// The names an image file carries (its tags), for `push FILE` without destinations.
pub fn file_names(path: &Path) -> Result<Vec<Reference>> {
    Ok(archive::Archive::open(path, &path.display().to_string())?.names())
}

/// The signatures an image file carries (`dev.imgbuild.signatures` in its `index.json`), their
/// blobs read from the file and verified by digest.
pub fn file_signatures(path: &Path) -> Result<Vec<crate::oci::Signatures>> {
    let a = archive::Archive::open(path, &path.display().to_string())?;
    let Some(index) = a.read_member("index.json")? else {
        return Ok(vec![]);
    };
    let v: serde_json::Value = serde_json::from_slice(&index).unwrap_or_default();
    let Some(text) = v["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|m| m["annotations"][crate::oci::SIGNATURES_ANNOTATION].as_str())
    else {
        return Ok(vec![]);
    };
    let read = |d: &oci_spec::image::Digest| -> Result<Vec<u8>> {
        use layout::Store;
        let at = a.locate(d).ok_or_else(|| {
            Error::from(crate::error::ImageError::Invalid(format!(
                "{}: signature blob {d} is missing",
                path.display()
            )))
        })?;
        let bytes = at.read_all()?;
        digest::verify(
            format!("{}: blob {d}", path.display()),
            d,
            &digest::sha256_of(&bytes),
        )?;
        Ok(bytes)
    };
    crate::sign::cosign::carried(text, &read)
}

/// The empty image for `platform`: no layers, a minimal config.
pub(crate) fn scratch(p: &Platform) -> Result<Image> {
    let mut config = serde_json::json!({
        "architecture": p.architecture, "os": p.os, "rootfs": {"type": "layers", "diff_ids": []}
    });
    if let Some(v) = &p.variant {
        config["variant"] = serde_json::json!(v);
    }
    image_of(&config, vec![], "scratch")
}

/// An image a source makes itself (`scratch`, a `deb:` base): `config` and `layers` (whose
/// diff_ids the config lists) serialised canonically into an OCI manifest, the image's origin
/// `name`.
pub(crate) fn image_of(
    config: &serde_json::Value,
    layers: Vec<crate::oci::Layer>,
    name: &str,
) -> Result<Image> {
    let config_bytes = canonical_json(config)?;
    let config_digest = digest::sha256_of(&config_bytes);
    let descriptors: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": l.blob.media_type, "digest": l.blob.digest.to_string(), "size": l.blob.size
            })
        })
        .collect();
    let manifest = canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": descriptors,
    }))?;
    Ok(Image {
        digest: digest::sha256_of(&manifest),
        manifest,
        media_type: media::OCI_MANIFEST.into(),
        config: serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::from(ImageError::Internal(format!("{name} config: {e}"))))?,
        config_bytes,
        config_digest,
        layers,
        attachments: vec![],
        origin: Origin {
            name: name.into(),
            reference: None,
            digest: None,
        },
    })
}

/// A local file range holding `blob`'s bytes: where it already lies, or the cache after a
/// verified download from its registry.
pub(crate) async fn localize(
    blob: &Blob,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<FileRange> {
    localize_shown(blob, cache, client, &crate::report::Silent, "").await
}

/// As [`localize`], a download shown by `reporter` as `pulling LABEL` (nothing is shown for
/// bytes already local).
pub(crate) async fn localize_shown(
    blob: &Blob,
    cache: &Cache,
    client: &RegistryClient,
    reporter: &dyn crate::report::Reporter,
    label: &str,
) -> Result<FileRange> {
    match &blob.source {
        BlobSource::File(at) => Ok(at.clone()),
        BlobSource::Registry(r) => {
            if !cache.has_blob(&blob.digest) {
                let progress = reporter.task("pulling", label, blob.size);
                let pulled = client
                    .pull_blob_shown(r, &blob.digest, cache, &progress)
                    .await;
                // A bar that ends says how, failed or not (none is left half drawn).
                progress.done(&match &pulled {
                    Ok(()) => format!("done: {}", crate::report::human_size(blob.size)),
                    Err(_) => "failed".to_string(),
                });
                pulled?;
            }
            Ok(FileRange {
                path: cache.blob_path(&blob.digest),
                offset: 0,
                size: cache.blob_size(&blob.digest)?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(Source::parse("scratch").unwrap(), Source::Scratch);
        assert!(matches!(
            Source::parse("debian:bookworm-slim").unwrap(),
            Source::Registry(_)
        ));
        assert_eq!(
            Source::parse("oci:/nonexistent/layout:v1").unwrap(),
            Source::OciDir {
                path: PathBuf::from("/nonexistent/layout"),
                name: Some("v1".into())
            }
        );
        assert!(matches!(
            Source::parse("docker-archive:/x.tar").unwrap(),
            Source::DockerArchive { name: None, .. }
        ));
        assert!(Source::parse("oci-archive:").is_err());
        assert!(Source::parse("Not A Ref").is_err());
        for bad in ["docker-daemon:foo:1", "docker://x/y", "dir:/tmp/x"] {
            let err = Source::parse(bad).unwrap_err().to_string();
            assert!(err.contains("not supported"), "{bad}: {err}");
        }
        assert!(matches!(
            Source::parse("docker:27").unwrap(),
            Source::Registry(_)
        ));
        assert_eq!(
            Source::parse("deb:trixie").unwrap(),
            Source::Deb {
                suite: crate::apt::debian::Suite::Trixie
            }
        );
        assert_eq!(
            Source::parse("deb:bookworm").unwrap().describe(),
            "deb:bookworm"
        );
        let err = Source::parse("deb:buster").unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        assert!(
            err.to_string()
                .contains("deb:bullseye, deb:bookworm or deb:trixie")
        );
    }

    #[test]
    fn scratch_is_empty_and_stable() {
        let p = Platform::parse("linux/arm64").unwrap();
        let a = scratch(&p).unwrap();
        assert!(a.layers.is_empty());
        assert_eq!(a.config.architecture().to_string(), "arm64");
        assert_eq!(a.digest, scratch(&p).unwrap().digest);
    }
}
