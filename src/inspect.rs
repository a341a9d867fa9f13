//! `imgbuild inspect`: what an image holds, from a saved tarball or a registry: config, layers
//! with their kinds and sizes, history, and the SBOM's summary.

use std::path::Path;

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::Serialize;

use crate::base::{self, Document};
use crate::build::human_size;
use crate::cache::Cache;
use crate::digest;
use crate::error::{Error, Result};
use crate::image::SBOM_ANNOTATION;
use crate::push::{self, BlobSource};
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::sbom;

#[derive(Clone, Debug, Serialize)]
pub struct LayerInfo {
    pub digest: String,
    pub size: u64,
    /// `base`, `erts`, `deps`, `app`, `release`, `sbom` (from the history imgbuild writes).
    pub kind: String,
    pub created_by: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SbomSummary {
    pub digest: String,
    pub applications: usize,
    pub debian_packages: usize,
    pub packages: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub source: String,
    pub digest: String,
    pub platform: String,
    pub config: serde_json::Value,
    pub layers: Vec<LayerInfo>,
    pub history: Vec<serde_json::Value>,
    pub sbom: Option<SbomSummary>,
}

/// Inspect a tarball (when `target` is a file) or a registry image.
pub async fn inspect(target: &str, client: &RegistryClient, cache: &Cache) -> Result<Inspection> {
    if Path::new(target).is_file() {
        let path = target.to_string();
        return tokio::task::spawn_blocking(move || from_tarball(Path::new(&path)))
            .await
            .map_err(|e| Error::Image(format!("internal: {e}")))?;
    }
    let r = Reference::parse(target).map_err(|e| {
        Error::Usage(format!(
            "{target:?} is neither an image tarball nor an image reference: {e}"
        ))
    })?;
    let (bytes, media, d) = client.get_manifest(&r, &r.manifest_reference()).await?;
    let what = format!("image {}", r.canonical());
    let (manifest, digest) = match base::parse_document(&bytes, &media, &what)? {
        Document::Manifest(m) => (*m, d),
        Document::Index(index) => {
            let chosen = base::select_from_index(&index, None, &what)?;
            let (b, m, d) = client.get_manifest(&r, chosen.digest().as_ref()).await?;
            match base::parse_document(&b, &m, &what)? {
                Document::Manifest(m) => (*m, d),
                Document::Index(_) => {
                    return Err(Error::Image(format!(
                        "{what}: nested indexes are not supported"
                    )));
                }
            }
        }
    };
    let config_digest = digest::parse(manifest.config().digest().as_ref())?;
    client.pull_blob(&r, &config_digest, cache).await?;
    let config_bytes = cache.read_verified(&config_digest)?;
    let sbom = match sbom_digest(&manifest) {
        Some(d) => {
            client.pull_blob(&r, &d, cache).await?;
            summarize(&d, &cache.read_verified(&d)?)
        }
        None => None,
    };
    describe(
        r.canonical(),
        &manifest,
        digest.to_string(),
        &config_bytes,
        sbom,
    )
}

fn sbom_digest(manifest: &ImageManifest) -> Option<oci_spec::image::Digest> {
    manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get(SBOM_ANNOTATION))
        .and_then(|d| digest::parse(d).ok())
}

fn summarize(d: &oci_spec::image::Digest, doc: &[u8]) -> Option<SbomSummary> {
    sbom::summary(doc).map(|(applications, debian_packages, packages)| SbomSummary {
        digest: d.to_string(),
        applications,
        debian_packages,
        packages,
    })
}

fn from_tarball(path: &Path) -> Result<Inspection> {
    let t = push::read_tarball(path)?;
    let read = |d: &oci_spec::image::Digest| -> Result<Option<Vec<u8>>> {
        let blob = t
            .image
            .blobs
            .iter()
            .chain(t.image.sbom.iter())
            .find(|b| &b.digest == d);
        let Some(push::PushBlob {
            source: BlobSource::File(at),
            ..
        }) = blob
        else {
            return Ok(None);
        };
        push::read_small_blob(at, d, &path.display().to_string()).map(Some)
    };
    let manifest: ImageManifest = serde_json::from_slice(&t.image.manifest)
        .map_err(|e| Error::Image(format!("{}: malformed manifest: {e}", path.display())))?;
    let config_digest = digest::parse(manifest.config().digest().as_ref())?;
    let config = read(&config_digest)?
        .ok_or_else(|| Error::Image(format!("{}: the config blob is missing", path.display())))?;
    let sbom = match sbom_digest(&manifest) {
        Some(d) => read(&d)?.and_then(|doc| summarize(&d, &doc)),
        None => None,
    };
    describe(
        path.display().to_string(),
        &manifest,
        t.image.manifest_digest.to_string(),
        &config,
        sbom,
    )
}

fn describe(
    source: String,
    manifest: &ImageManifest,
    digest: String,
    config_bytes: &[u8],
    sbom: Option<SbomSummary>,
) -> Result<Inspection> {
    let config: ImageConfiguration = serde_json::from_slice(config_bytes)
        .map_err(|e| Error::Image(format!("{source}: malformed config: {e}")))?;
    let raw: serde_json::Value = serde_json::from_slice(config_bytes)
        .map_err(|e| Error::Image(format!("{source}: malformed config: {e}")))?;
    let history: Vec<serde_json::Value> = raw["history"].as_array().cloned().unwrap_or_default();
    let layered: Vec<String> = history
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    let layers = manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let created_by = layered.get(i).cloned().unwrap_or_default();
            let kind = created_by
                .strip_prefix("imgbuild: ")
                .and_then(|r| r.split(' ').next())
                .unwrap_or("base")
                .to_string();
            LayerInfo {
                digest: l.digest().to_string(),
                size: l.size(),
                kind,
                created_by,
            }
        })
        .collect();
    Ok(Inspection {
        source,
        digest,
        platform: format!("{}/{}", config.os(), config.architecture()),
        config: raw["config"].clone(),
        layers,
        history,
        sbom,
    })
}

impl Inspection {
    pub fn render(&self) -> String {
        let c = &self.config;
        let s = |v: &serde_json::Value| match v {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut out = format!(
            "{}\n  digest     {}\n  platform   {}\n  user       {}\n  workdir    {}\n  entrypoint {}\n  cmd        {}\n  ports      {}\n",
            self.source,
            self.digest,
            self.platform,
            s(&c["User"]),
            s(&c["WorkingDir"]),
            s(&c["Entrypoint"]),
            s(&c["Cmd"]),
            c["ExposedPorts"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| "-".into()),
        );
        for e in c["Env"].as_array().into_iter().flatten() {
            out.push_str(&format!("  env        {}\n", s(e)));
        }
        for (k, v) in c["Labels"].as_object().into_iter().flatten() {
            out.push_str(&format!("  label      {k}={}\n", s(v)));
        }
        let total: u64 = self.layers.iter().map(|l| l.size).sum();
        out.push_str(&format!(
            "layers ({}, {} compressed)\n",
            self.layers.len(),
            human_size(total)
        ));
        for (i, l) in self.layers.iter().enumerate() {
            out.push_str(&format!(
                "  {:>2} {:<8} {:>10}  {}  {}\n",
                i + 1,
                l.kind,
                human_size(l.size),
                &l.digest,
                l.created_by
            ));
        }
        out.push_str(&format!("history ({} entries)\n", self.history.len()));
        for h in &self.history {
            out.push_str(&format!(
                "  {}  {}{}\n",
                s(&h["created"]),
                s(&h["created_by"]),
                if h["empty_layer"] == true {
                    " (no layer)"
                } else {
                    ""
                }
            ));
        }
        match &self.sbom {
            Some(b) => out.push_str(&format!(
                "sbom {}: {} packages ({} release applications, {} Debian packages)\n",
                b.digest, b.packages, b.applications, b.debian_packages
            )),
            None => out.push_str("sbom: none recorded\n"),
        }
        out
    }
}
