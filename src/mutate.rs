//! Mutations: new images made from old ones. [`normalize_base`] makes a base fit to build on
//! (one layer family, every layer compressed); [`append`] puts the release's layers and the
//! runtime config (the runner stage of Phoenix's Dockerfile, without RUN) on a base. Manifests
//! and configs are serialised canonically (sorted keys) so the same inputs give the same bytes.

use std::collections::BTreeMap;

use oci_spec::image::{
    Config, Descriptor, History, ImageConfiguration, ImageManifestBuilder, MediaType,
};

use crate::cache::Cache;
use crate::error::{Error, ImageError, IoContext, Result};
use crate::oci::document::{canonical_json, rfc3339};
use crate::oci::media::{self, Codec, LayerType};
use crate::oci::{Attachment, Blob, BlobSource, FileRange, Image, Layer, Origin, digest};
use crate::release::{RUNTIME_UID, Release};

#[derive(Clone, Debug, Default)]
pub struct ImageSettings {
    /// `KEY=VALUE` pairs set on top of the base's and imgbuild's defaults.
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `PORT[/proto]`; `None` gives 4000/tcp.
    pub exposed_ports: Option<Vec<String>>,
    pub user: Option<String>,
    /// Absolute working directory, `/app` by default.
    pub workdir: String,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// Seconds since the epoch for `created` (`SOURCE_DATE_EPOCH`, else 0).
    pub epoch: u64,
}

/// Default environment, as Phoenix's runner stage sets it. `C.UTF-8` ships in libc-bin, so the
/// VM gets UTF-8 filename encoding without the `locales` package.
const DEFAULT_ENV: [(&str, &str); 3] = [
    ("LANG", "C.UTF-8"),
    ("MIX_ENV", "prod"),
    ("RELEASE_TMP", "/tmp"),
];

/// The container's environment: the base's, then the defaults, then the user's settings, each
/// overriding a variable in place.
pub(crate) fn final_env(base: &Image, settings: &ImageSettings) -> Vec<String> {
    let mut env: Vec<(String, String)> = split_env(
        &base
            .config
            .config()
            .as_ref()
            .and_then(|c| c.env().clone())
            .unwrap_or_default(),
    );
    let defaults = DEFAULT_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()));
    for (k, v) in defaults.chain(settings.env.iter().cloned()) {
        match env.iter_mut().find(|(have, _)| *have == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The release's layers on `base`, with imgbuild's config, labels and annotations; the
/// attachments (the SBOM) belong to the new image.
pub(crate) fn append(
    base: &Image,
    release: &Release,
    new_layers: Vec<Layer>,
    settings: &ImageSettings,
    attachments: Vec<Attachment>,
) -> Result<Image> {
    let created = rfc3339(settings.epoch);
    let mut config: ImageConfiguration = base.config.clone();
    config.set_created(Some(created.clone()));

    let mut c: Config = config.config().clone().unwrap_or_default();
    c.set_env(Some(final_env(base, settings)));
    c.set_user(Some(
        settings
            .user
            .clone()
            .unwrap_or_else(|| RUNTIME_UID.to_string()),
    ));
    c.set_working_dir(Some(settings.workdir.clone()));
    let workdir = settings.workdir.trim_end_matches('/');
    let default_cmd = if release.has_server {
        vec![format!("{workdir}/bin/server")]
    } else {
        vec![
            format!("{workdir}/bin/{}", release.name),
            "start".to_string(),
        ]
    };
    c.set_cmd(Some(settings.cmd.clone().unwrap_or(default_cmd)));
    // The release is the program: a base's entrypoint would wrap it, so it is reset unless given.
    c.set_entrypoint(settings.entrypoint.clone());
    c.set_exposed_ports(Some(
        settings
            .exposed_ports
            .clone()
            .unwrap_or_else(|| vec!["4000/tcp".to_string()]),
    ));

    let mut oci = BTreeMap::new();
    oci.insert(
        "org.opencontainers.image.title".to_string(),
        release.name.clone(),
    );
    oci.insert(
        "org.opencontainers.image.version".to_string(),
        release.version.clone(),
    );
    oci.insert(
        "org.opencontainers.image.created".to_string(),
        created.clone(),
    );
    oci.insert(BASE_NAME.to_string(), base.origin.name.clone());
    if let Some(d) = &base.origin.digest {
        oci.insert(BASE_DIGEST.to_string(), d.to_string());
    }
    let mut labels: BTreeMap<String, String> =
        c.labels().clone().unwrap_or_default().into_iter().collect();
    labels.extend(oci.clone());
    labels.extend(settings.labels.clone());
    c.set_labels(Some(labels.into_iter().collect()));
    config.set_config(Some(c));

    // rootfs and history: the base's, then one entry per new layer.
    let mut diff_ids = config.rootfs().diff_ids().clone();
    let mut history = base_history(base, &created);
    for layer in &new_layers {
        diff_ids.push(layer.diff_id.to_string());
        history.push(history_entry(&created, &own_history(layer.kind, release)));
    }
    config.rootfs_mut().set_diff_ids(diff_ids);
    config.set_history(Some(history));
    let layers: Vec<Layer> = base.layers.iter().cloned().chain(new_layers).collect();
    let mut annotations = oci;
    annotations.extend(settings.annotations.clone());
    assemble(config, layers, annotations, attachments)
}

/// What `imgbuild append` sets on the image besides its new layer.
#[derive(Clone, Debug, Default)]
pub struct AppendSettings {
    /// `KEY=VALUE` pairs set on top of the base's environment.
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    /// A new entrypoint resets the base's command (as a Dockerfile's `ENTRYPOINT` does).
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Seconds since the epoch for `created` (`SOURCE_DATE_EPOCH`, else 0).
    pub epoch: u64,
    /// The history entry of the new layer (`imgbuild append: /usr/bin/app`).
    pub created_by: String,
}

/// `layer` on top of `base`, with `settings`' config: the base's config otherwise kept.
pub fn append_layer(base: &Image, layer: Layer, settings: &AppendSettings) -> Result<Image> {
    let created = rfc3339(settings.epoch);
    let mut config: ImageConfiguration = base.config.clone();
    config.set_created(Some(created.clone()));
    let mut c: Config = config.config().clone().unwrap_or_default();
    let mut env = split_env(&c.env().clone().unwrap_or_default());
    for (k, v) in &settings.env {
        match env.iter_mut().find(|(have, _)| have == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    if !env.is_empty() {
        c.set_env(Some(
            env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        ));
    }
    if let Some(e) = &settings.entrypoint {
        c.set_entrypoint(Some(e.clone()));
        c.set_cmd(None);
    }
    if let Some(cmd) = &settings.cmd {
        c.set_cmd(Some(cmd.clone()));
    }
    if let Some(u) = &settings.user {
        c.set_user(Some(u.clone()));
    }
    if let Some(w) = &settings.workdir {
        c.set_working_dir(Some(w.clone()));
    }
    let mut oci = BTreeMap::new();
    oci.insert(
        "org.opencontainers.image.created".to_string(),
        created.clone(),
    );
    if !base.layers.is_empty() {
        oci.insert(BASE_NAME.to_string(), base.origin.name.clone());
        if let Some(d) = &base.origin.digest {
            oci.insert(BASE_DIGEST.to_string(), d.to_string());
        }
    }
    let mut labels: BTreeMap<String, String> =
        c.labels().clone().unwrap_or_default().into_iter().collect();
    // A base digest the base's own config carried names another image than this base.
    labels.remove(BASE_DIGEST);
    labels.extend(oci.clone());
    labels.extend(settings.labels.clone());
    c.set_labels(Some(labels.into_iter().collect()));
    config.set_config(Some(c));
    let mut diff_ids = config.rootfs().diff_ids().clone();
    diff_ids.push(layer.diff_id.to_string());
    config.rootfs_mut().set_diff_ids(diff_ids);
    let mut history = base_history(base, &created);
    history.push(history_entry(&created, &settings.created_by));
    config.set_history(Some(history));
    let layers: Vec<Layer> = base.layers.iter().cloned().chain([layer]).collect();
    assemble(config, layers, oci, vec![])
}

/// The debug variant of `image` (`--debug`): `layer` on top, `dir` at the end of `PATH` (the
/// image's own programs first), `what` in the label and annotation `dev.imgbuild.debug`; the
/// rest of the config (`created` too) and the manifest's annotations are the image's. No
/// attachment: the image's SBOM describes the image, not its debug variant.
pub(crate) fn debug_variant(
    image: &Image,
    layer: Layer,
    dir: &str,
    created_by: &str,
    what: &str,
) -> Result<Image> {
    const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut config: ImageConfiguration = image.config.clone();
    let created = config.created().clone().unwrap_or_else(|| rfc3339(0));
    let mut c: Config = config.config().clone().unwrap_or_default();
    let mut env = split_env(&c.env().clone().unwrap_or_default());
    match env.iter_mut().find(|(k, _)| k == "PATH") {
        Some((_, v)) if v.split(':').any(|p| p == dir) => {}
        Some((_, v)) if v.is_empty() => *v = dir.to_string(),
        Some((_, v)) => *v = format!("{v}:{dir}"),
        None => env.push(("PATH".into(), format!("{DEFAULT_PATH}:{dir}"))),
    }
    c.set_env(Some(
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
    ));
    let mut labels = c.labels().clone().unwrap_or_default();
    labels.insert(DEBUG_LABEL.to_string(), what.to_string());
    c.set_labels(Some(labels));
    config.set_config(Some(c));
    let mut diff_ids = config.rootfs().diff_ids().clone();
    diff_ids.push(layer.diff_id.to_string());
    config.rootfs_mut().set_diff_ids(diff_ids);
    let mut history = config.history().clone().unwrap_or_default();
    history.push(history_entry(&created, created_by));
    config.set_history(Some(history));
    let manifest: serde_json::Value = serde_json::from_slice(&image.manifest)
        .map_err(|e| Error::from(ImageError::Internal(format!("the image's manifest: {e}"))))?;
    let mut annotations: BTreeMap<String, String> = manifest
        .get("annotations")
        .and_then(|a| a.as_object())
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    annotations.insert(DEBUG_LABEL.to_string(), what.to_string());
    let layers: Vec<Layer> = image.layers.iter().cloned().chain([layer]).collect();
    let mut out = assemble(config, layers, annotations, vec![])?;
    out.origin = image.origin.clone();
    Ok(out)
}

/// The label and annotation of a debug image: the package its shell came from.
pub(crate) const DEBUG_LABEL: &str = "dev.imgbuild.debug";

/// The image of `config` and `layers`: the config and manifest serialised canonically.
fn assemble(
    config: ImageConfiguration,
    layers: Vec<Layer>,
    annotations: BTreeMap<String, String>,
    attachments: Vec<Attachment>,
) -> Result<Image> {
    let config_bytes = canonical_json(&config)?;
    let config_digest = digest::sha256_of(&config_bytes);
    let layer_descriptors = layers
        .iter()
        .map(|l| {
            Descriptor::new(
                MediaType::from(l.blob.media_type.as_str()),
                l.blob.size,
                l.blob.digest.clone(),
            )
        })
        .collect::<Vec<_>>();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            config_digest.clone(),
        ))
        .layers(layer_descriptors)
        .annotations(
            annotations
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .map_err(|e| Error::from(ImageError::Internal(format!("cannot build manifest: {e}"))))?;
    let manifest_bytes = canonical_json(&manifest)?;
    Ok(Image {
        digest: digest::sha256_of(&manifest_bytes),
        manifest: manifest_bytes,
        media_type: media::OCI_MANIFEST.into(),
        config_bytes,
        config_digest,
        config,
        layers,
        attachments,
        origin: Origin {
            name: String::new(),
            reference: None,
            digest: None,
        },
    })
}

/// The labels and annotations that name an image's base.
const BASE_NAME: &str = "org.opencontainers.image.base.name";
const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// The base an image names in its labels (or manifest annotations): (name, digest).
pub(crate) fn named_base(image: &Image) -> (Option<String>, Option<String>) {
    let labels = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default();
    let annotations = serde_json::from_slice::<serde_json::Value>(&image.manifest)
        .ok()
        .and_then(|m| m.get("annotations").cloned())
        .unwrap_or_default();
    let get = |k: &str| {
        labels.get(k).cloned().or_else(|| {
            annotations
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
    };
    (get(BASE_NAME), get(BASE_DIGEST))
}

/// `old`'s own layers (from `own_from` on) replaced by `own` (the kept release layers, and a
/// new packages and SBOM layer) on `base`: the config is `old`'s, with the new base's layers
/// and history below, its environment under `old`'s (a variable the new base adds is kept),
/// and the labels and annotations naming the new base (`extra_labels` added to the labels).
/// `own_history` gives each own layer's history entry.
pub(crate) fn rebase(
    old: &Image,
    base: &Image,
    own: Vec<Layer>,
    own_history: &[String],
    extra_labels: &BTreeMap<String, String>,
    mut annotations: BTreeMap<String, String>,
    attachments: Vec<Attachment>,
) -> Result<Image> {
    let mut config: ImageConfiguration = old.config.clone();
    let created = config.created().clone().unwrap_or_else(|| rfc3339(0));
    let mut c: Config = config.config().clone().unwrap_or_default();
    c.set_env(Some(rebased_env(base, old)));
    let mut labels: BTreeMap<String, String> =
        c.labels().clone().unwrap_or_default().into_iter().collect();
    for map in [&mut labels, &mut annotations] {
        map.insert(BASE_NAME.to_string(), base.origin.name.clone());
        match &base.origin.digest {
            Some(d) => map.insert(BASE_DIGEST.to_string(), d.to_string()),
            None => map.remove(BASE_DIGEST),
        };
    }
    labels.extend(extra_labels.clone());
    c.set_labels(Some(labels.into_iter().collect()));
    config.set_config(Some(c));
    let mut diff_ids = base.config.rootfs().diff_ids().clone();
    let mut history = base_history(base, &created);
    for (layer, by) in own.iter().zip(own_history) {
        diff_ids.push(layer.diff_id.to_string());
        history.push(history_entry(&created, by));
    }
    config.rootfs_mut().set_diff_ids(diff_ids);
    config.set_history(Some(history));
    let layers: Vec<Layer> = base.layers.iter().cloned().chain(own).collect();
    assemble(config, layers, annotations, attachments)
}

/// The environment of `old` rebased onto `base`: the new base's, then `old`'s over it (so a
/// variable the new base adds is kept).
pub(crate) fn rebased_env(base: &Image, old: &Image) -> Vec<String> {
    let env_of = |i: &Image| {
        split_env(
            &i.config
                .config()
                .as_ref()
                .and_then(|c| c.env().clone())
                .unwrap_or_default(),
        )
    };
    let mut env = env_of(base);
    for (k, v) in env_of(old) {
        match env.iter_mut().find(|(have, _)| *have == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn split_env(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|kv| {
            kv.split_once('=')
                .map_or((kv.clone(), String::new()), |(k, v)| {
                    (k.to_string(), v.to_string())
                })
        })
        .collect()
}

/// The base's history, one entry per layer when its own is missing or inconsistent (Docker
/// and containers/image reject a mismatch).
fn base_history(base: &Image, created: &str) -> Vec<History> {
    let history = base.config.history().clone().unwrap_or_default();
    let non_empty = history
        .iter()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .count();
    if non_empty == base.config.rootfs().diff_ids().len() {
        history
    } else {
        base.config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|_| history_entry(created, "base layer"))
            .collect()
    }
}

/// The history entry of one of imgbuild's layers (what [`LayerKind::from_history`] reads).
pub(crate) fn own_history(kind: crate::oci::LayerKind, release: &Release) -> String {
    format!(
        "imgbuild: {} layer of release {} {}",
        kind.as_str(),
        release.name,
        release.version
    )
}

fn history_entry(created: &str, created_by: &str) -> History {
    let mut h = History::default();
    h.set_created(Some(created.to_string()));
    h.set_created_by(Some(created_by.to_string()));
    h
}

/// A base fit to build on: every layer an OCI file-system layer, uncompressed ones gzipped
/// into the cache (`local` gives where each layer's bytes lie), so every layer of the output
/// uses one compression and one manifest family. Non-distributable and non-layer blobs are
/// refused. Returns warnings worth showing.
pub(crate) fn normalize_base(
    mut base: Image,
    local: &[Option<FileRange>],
    cache: &Cache,
) -> Result<(Image, Vec<String>)> {
    let what = format!("base image {}", base.origin.name);
    let mut warnings = Vec::new();
    for (layer, at) in base.layers.iter_mut().zip(local) {
        let d = layer.blob.digest.clone();
        match media::layer_type(&layer.blob.media_type) {
            LayerType::Tar {
                codec: Codec::Plain,
                ..
            } => {
                let at = at.as_ref().ok_or_else(|| {
                    Error::from(ImageError::Internal(format!(
                        "uncompressed base layer {d} was not fetched before normalizing"
                    )))
                })?;
                let (digest, size) = gzip_into_cache(layer, at, cache, &what)?;
                layer.blob = Blob::new(
                    digest.clone(),
                    size,
                    media::LAYER_GZIP,
                    BlobSource::File(FileRange {
                        path: cache.blob_path(&digest),
                        offset: 0,
                        size,
                    }),
                );
            }
            LayerType::Tar { codec, oci } => {
                if codec == Codec::Zstd && warnings.is_empty() {
                    warnings.push(format!(
                        "{what} has zstd layers: Docker Engine before 23.0 cannot load the result"
                    ));
                }
                layer.blob.media_type = oci.to_string();
                // The true size of a local blob wins over what a manifest declares.
                if let (BlobSource::File(_), Some(at)) = (&layer.blob.source, at) {
                    layer.blob.size = at.size;
                }
            }
            LayerType::Foreign => {
                return Err(Error::from(ImageError::Invalid(format!(
                    "{what} has a non-distributable (foreign) layer {d}: such bases cannot be rebuilt"
                ))));
            }
            LayerType::Other => {
                return Err(Error::from(ImageError::Invalid(format!(
                    "{what} has a layer of unsupported media type {:?}",
                    layer.blob.media_type
                ))));
            }
        }
    }
    Ok((base, warnings))
}

/// gzip an uncompressed layer into the cache (deterministically, on every core), checking
/// that the tar is the one the layer's digest and the config's diff_id name. Returns the
/// blob's digest and size.
fn gzip_into_cache(
    layer: &crate::oci::Layer,
    at: &FileRange,
    cache: &Cache,
    what: &str,
) -> Result<(oci_spec::image::Digest, u64)> {
    use crate::oci::digest::HashWriter;
    let what = format!("{what}: uncompressed layer {}", layer.diff_id);
    let layer = crate::layer::VerifiedLayer::new(layer, at, what).ok_or_else(|| {
        Error::from(ImageError::Internal(format!(
            "layer {} of media type {} is not a tar",
            layer.blob.digest, layer.blob.media_type
        )))
    })?;
    let tmp = cache.temp_file()?;
    let gz = layer.read(|tar| {
        let mut gz = crate::layer::pgzip::ParallelGzWriter::new(
            HashWriter::new(std::io::BufWriter::new(tmp)),
            6,
            0,
        );
        std::io::copy(tar, &mut gz).ctx("compress layer from", &at.path)?;
        Ok(gz)
    })?;
    let (buffered, digest, size) = gz.finish().ctx("compress layer from", &at.path)?.finish();
    let tmp = buffered
        .into_inner()
        .map_err(|e| Error::io("write", &at.path, e.into_error()))?;
    cache.commit(tmp, &digest)?;
    Ok((digest, size))
}

/// An OCI index of `images`, one entry per image with its platform, in the order given.
pub fn index(images: Vec<Image>) -> Result<crate::oci::Index> {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            let p = i.platform();
            let mut platform = serde_json::json!({"os": p.os, "architecture": p.architecture});
            if let Some(v) = &p.variant {
                platform["variant"] = serde_json::json!(v);
            }
            serde_json::json!({
                "mediaType": i.media_type,
                "digest": i.digest.to_string(),
                "size": i.manifest.len(),
                "platform": platform,
            })
        })
        .collect();
    let manifest = canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    }))?;
    Ok(crate::oci::Index {
        digest: digest::sha256_of(&manifest),
        manifest,
        media_type: media::OCI_INDEX.into(),
        images,
        origin: Origin::default(),
    })
}
