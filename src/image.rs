//! Image assembly: the config (the runner stage of Phoenix's Dockerfile, without RUN) and the
//! OCI manifest, serialised canonically (sorted keys) so the same inputs give the same bytes.

use std::collections::BTreeMap;

use oci_spec::image::{
    Config, Descriptor, Digest, History, ImageConfiguration, ImageManifestBuilder, MediaType,
};
use serde::Serialize;

use crate::base::BaseImage;
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::layer::LayerBlob;
use crate::release::{LayerKind, RUNTIME_UID, Release};

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

#[derive(Clone, Debug, Serialize)]
pub struct LayerRecord {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    pub kind: LayerKind,
}

/// A finished image whose blobs are all in the cache.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layers: Vec<LayerRecord>,
    pub os: String,
    pub architecture: String,
    /// The SPDX document (digest, size), a blob beside the image's own.
    pub sbom: Option<(Digest, u64)>,
}

/// Manifest annotation naming the SBOM blob, so a push can attach it as a referrer.
pub const SBOM_ANNOTATION: &str = "dev.imgbuild.sbom";

/// Default environment, as Phoenix's runner stage sets it. `C.UTF-8` ships in libc-bin, so the
/// VM gets UTF-8 filename encoding without the `locales` package.
const DEFAULT_ENV: [(&str, &str); 3] = [
    ("LANG", "C.UTF-8"),
    ("MIX_ENV", "prod"),
    ("RELEASE_TMP", "/tmp"),
];

/// The container's environment: the base's, then the defaults, then the user's settings, each
/// overriding a variable in place.
pub fn final_env(base: &BaseImage, settings: &ImageSettings) -> Vec<String> {
    let mut env: Vec<(String, String)> = base
        .config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default()
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map_or((kv.clone(), String::new()), |(k, v)| {
                    (k.to_string(), v.to_string())
                })
        })
        .collect();
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

pub fn assemble(
    base: &BaseImage,
    release: &Release,
    new_layers: &[(LayerKind, LayerBlob)],
    settings: &ImageSettings,
    cache: &Cache,
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
    oci.insert(
        "org.opencontainers.image.base.name".to_string(),
        base.name.clone(),
    );
    if let Some(d) = &base.manifest_digest {
        oci.insert(
            "org.opencontainers.image.base.digest".to_string(),
            d.to_string(),
        );
    }
    let mut labels: BTreeMap<String, String> =
        c.labels().clone().unwrap_or_default().into_iter().collect();
    labels.extend(oci.clone());
    labels.extend(settings.labels.clone());
    c.set_labels(Some(labels.into_iter().collect()));
    config.set_config(Some(c));

    // rootfs and history: the base's, then one entry per new layer.
    let mut diff_ids = config.rootfs().diff_ids().clone();
    let mut history = config.history().clone().unwrap_or_default();
    let non_empty = history
        .iter()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .count();
    if non_empty != diff_ids.len() {
        // Inconsistent or missing base history: replace it with one entry per base layer, since
        // Docker and containers/image reject a mismatch.
        history = diff_ids
            .iter()
            .map(|_| history_entry(&created, "base layer"))
            .collect();
    }
    for (kind, blob) in new_layers {
        diff_ids.push(blob.diff_id.to_string());
        history.push(history_entry(
            &created,
            &format!(
                "imgbuild: {} layer of release {} {}",
                kind.as_str(),
                release.name,
                release.version
            ),
        ));
    }
    config.rootfs_mut().set_diff_ids(diff_ids);
    config.set_history(Some(history));

    let config_bytes = canonical_json(&config)?;
    let config_digest = cache.put_bytes(&config_bytes)?;

    let mut layers: Vec<LayerRecord> = base
        .layers
        .iter()
        .map(|l| LayerRecord {
            digest: l.digest.to_string(),
            diff_id: l.diff_id.to_string(),
            size: l.size,
            media_type: l.media_type.clone(),
            kind: LayerKind::Base,
        })
        .collect();
    layers.extend(new_layers.iter().map(|(kind, b)| LayerRecord {
        digest: b.digest.to_string(),
        diff_id: b.diff_id.to_string(),
        size: b.size,
        media_type: b.media_type.to_string(),
        kind: *kind,
    }));
    let layer_descriptors = layers
        .iter()
        .map(|l| {
            Ok(Descriptor::new(
                MediaType::from(l.media_type.as_str()),
                l.size,
                crate::digest::parse(&l.digest)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut annotations = oci;
    annotations.extend(settings.annotations.clone());
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
        .map_err(|e| Error::Image(format!("internal: cannot build manifest: {e}")))?;
    let manifest_bytes = canonical_json(&manifest)?;
    let manifest_digest = cache.put_bytes(&manifest_bytes)?;
    Ok(Image {
        manifest: manifest_bytes,
        manifest_digest,
        config: config_bytes,
        config_digest,
        layers,
        os: config.os().to_string(),
        architecture: config.architecture().to_string(),
        sbom: None,
    })
}

fn history_entry(created: &str, created_by: &str) -> History {
    let mut h = History::default();
    h.set_created(Some(created.to_string()));
    h.set_created_by(Some(created_by.to_string()));
    h
}

/// JSON with object keys sorted at every level, whatever map types the value uses.
pub fn canonical_json(value: &impl Serialize) -> Result<Vec<u8>> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    let v = serde_json::to_value(value)
        .map_err(|e| Error::Image(format!("internal: cannot serialise JSON: {e}")))?;
    serde_json::to_vec(&sort(v))
        .map_err(|e| Error::Image(format!("internal: cannot serialise JSON: {e}")))
}

/// `SOURCE_DATE_EPOCH` seconds as RFC 3339 UTC (civil-from-days, Howard Hinnant's algorithm;
/// no date crate needed for this one conversion).
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut m = std::collections::HashMap::new();
        for k in ["b", "a", "c"] {
            m.insert(k.to_string(), serde_json::json!({"z": 1, "y": 2}));
        }
        assert_eq!(
            String::from_utf8(canonical_json(&m).unwrap()).unwrap(),
            r#"{"a":{"y":2,"z":1},"b":{"y":2,"z":1},"c":{"y":2,"z":1}}"#
        );
    }
}
