//! Images in a registry: the manifest or index fetched (from the cache when pinned by digest
//! and already seen), configs read, layers left in the registry until a sink needs them.

use oci_spec::image::Digest;

use crate::cache::Cache;
use crate::error::{Error, ImageError, Result};
use crate::oci::document::{Document, parse_document, select_from_index};
use crate::oci::platform::Platforms;
use crate::oci::reference::Reference;
use crate::oci::{Artifact, BlobSource, Image, Index, Origin, digest};
use crate::registry::RegistryClient;
use crate::source::layout::{Fetched, check_platform, image_from};

pub(crate) async fn read(
    r: &Reference,
    platforms: &Platforms,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<Artifact> {
    let name = r.canonical();
    let what = format!("image {name}");
    let (bytes, content_type, top) = match &r.digest {
        Some(d) if cache.has_blob(d) => (cache.read_verified(d)?, String::new(), d.clone()),
        _ => {
            let got = client.get_manifest(r, &r.manifest_reference()).await?;
            cache.put_bytes(&got.0)?;
            got
        }
    };
    match parse_document(&bytes, &content_type, &what)? {
        Document::Manifest(_) => {
            let image = image(r, bytes, top, content_type, cache, client, &what).await?;
            if let Platforms::One(Some(want)) = platforms {
                check_platform(&image.config, want, &what)?;
            }
            Ok(Artifact::Image(Box::new(image)))
        }
        Document::Index(index) => match platforms {
            Platforms::One(p) => {
                let chosen = select_from_index(&index, p.as_ref(), &what)?;
                let image = child(r, &chosen, cache, client, &what).await?;
                if let Some(want) = p {
                    check_platform(&image.config, want, &what)?;
                }
                Ok(Artifact::Image(Box::new(image)))
            }
            Platforms::All => {
                let mut images = Vec::new();
                for d in index.manifests() {
                    images.push(child(r, d, cache, client, &what).await?);
                }
                Ok(Artifact::Index(Box::new(Index {
                    media_type: crate::source::layout::document_media_type(&bytes, &content_type),
                    manifest: bytes,
                    origin: Origin {
                        name,
                        reference: Some(r.clone()),
                        digest: Some(top.clone()),
                    },
                    digest: top,
                    images,
                })))
            }
        },
    }
}

async fn child(
    r: &Reference,
    d: &oci_spec::image::Descriptor,
    cache: &Cache,
    client: &RegistryClient,
    what: &str,
) -> Result<Image> {
    let cd = digest::parse(d.digest().as_ref())?;
    let bytes = if cache.has_blob(&cd) {
        cache.read_verified(&cd)?
    } else {
        let (b, _, _) = client.get_manifest(r, cd.as_ref()).await?;
        cache.put_bytes(&b)?;
        b
    };
    let media_type = d.media_type().to_string();
    if let Document::Index(_) = parse_document(&bytes, &media_type, what)? {
        return Err(Error::from(ImageError::Invalid(format!(
            "{what}: nested indexes are not supported"
        ))));
    }
    image(r, bytes, cd, media_type, cache, client, what).await
}

async fn image(
    r: &Reference,
    bytes: Vec<u8>,
    d: Digest,
    media_type: String,
    cache: &Cache,
    client: &RegistryClient,
    what: &str,
) -> Result<Image> {
    let Document::Manifest(m) = parse_document(&bytes, &media_type, what)? else {
        return Err(Error::from(ImageError::Invalid(format!(
            "{what}: expected an image manifest"
        ))));
    };
    let config_digest = digest::parse(m.config().digest().as_ref())?;
    client.pull_blob(r, &config_digest, cache).await?;
    let config = cache.read_verified(&config_digest)?;
    let mut repo = r.clone();
    repo.tag = None;
    repo.digest = None;
    let locate = |_: &Digest| Ok(BlobSource::Registry(repo.clone()));
    image_from(
        Fetched {
            manifest: bytes,
            digest: d.clone(),
            media_type,
        },
        &m,
        config,
        &locate,
        Origin {
            name: r.canonical(),
            reference: Some(r.clone()),
            digest: Some(d),
        },
        what,
    )
}
