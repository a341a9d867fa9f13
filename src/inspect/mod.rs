//! `imgbuild inspect`: what an image holds, from any source (a tarball, a layout, a registry):
//! config, layers with their kinds and sizes, history, and the SBOM's summary; with
//! [`inspect_files`], every file of every layer, for the page [`html`] writes.

pub mod html;
mod treemap;

use serde::Serialize;

use crate::cache::Cache;
use crate::error::{Error, ImageError, Result};
use crate::oci::{Artifact, Image};
use crate::registry::RegistryClient;
use crate::report::human_size;
use crate::sbom;
use crate::source::{self, Source};

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
    /// For a multi-platform image: the index, and each platform's image. The fields above
    /// then describe the host's platform (or the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexInfo>,
    /// The release's commands found in its layer (`bin/migrate`, from `phx.gen.release`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrate: Option<String>,
    /// With `--files`: each of the image's own layers, its largest files and directories.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<LayerFiles>,
}

/// What one layer holds, by size.
#[derive(Clone, Debug, Serialize)]
pub struct LayerFiles {
    pub digest: String,
    pub kind: String,
    pub files: usize,
    /// Bytes of all files, uncompressed.
    pub bytes: u64,
    pub largest_files: Vec<SizedPath>,
    pub largest_dirs: Vec<SizedPath>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SizedPath {
    pub path: String,
    pub size: u64,
}

/// Every regular file of each layer of an image, in the layers' order: what `--html`
/// pictures. A file a later layer replaces or removes is still counted in the layer that holds
/// it: its bytes are there.
#[derive(Clone, Debug, Default)]
pub struct ImageFiles {
    /// Per layer, (absolute path, uncompressed size).
    pub(crate) layers: Vec<Vec<(String, u64)>>,
}

impl ImageFiles {
    /// The bytes of all the files of all the layers, uncompressed.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().flatten().map(|(_, s)| s).sum()
    }

    /// How many files all the layers hold.
    pub fn files(&self) -> usize {
        self.layers.iter().map(Vec::len).sum()
    }
}

/// Whether `path` is a whiteout (`.wh.NAME`, `.wh..wh..opq`): a mark that a lower layer's file
/// is gone, not a file.
fn whiteout(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with(".wh."))
}

/// The regular files of a layer, (path, size), read from its bytes (verified by digest);
/// whiteouts are not files.
fn layer_entries(
    layer: &crate::oci::Layer,
    at: &crate::oci::FileRange,
) -> Result<Vec<(String, u64)>> {
    let what = format!("layer {}", layer.blob.digest);
    let Some(layer) = crate::layer::VerifiedLayer::new(layer, at, what) else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    layer.walk(|entry| {
        if entry.header().entry_type().is_file() {
            let path = crate::fs::normalize(&String::from_utf8_lossy(&entry.path_bytes()));
            if !whiteout(&path) {
                out.push((path, entry.size()));
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// The largest `n` files and directories of a layer's files.
fn by_size(layer: &crate::oci::Layer, entries: &[(String, u64)], n: usize) -> LayerFiles {
    let total: u64 = entries.iter().map(|(_, s)| s).sum();
    let mut dirs: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for (path, size) in entries {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if parent.is_empty() {
                break;
            }
            *dirs.entry(parent).or_default() += size;
            p = parent;
        }
    }
    let top = |mut v: Vec<SizedPath>| {
        v.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
        v.truncate(n);
        v
    };
    LayerFiles {
        digest: layer.blob.digest.to_string(),
        kind: layer.kind.as_str().to_string(),
        files: entries.len(),
        bytes: total,
        largest_files: top(entries
            .iter()
            .map(|(p, s)| SizedPath {
                path: p.clone(),
                size: *s,
            })
            .collect()),
        // Of the directories that hold the whole layer, only the deepest says something.
        largest_dirs: {
            let root = dirs
                .iter()
                .filter(|(_, s)| **s == total)
                .map(|(p, _)| *p)
                .max_by_key(|p| p.len());
            top(dirs
                .iter()
                .filter(|(p, s)| **s < total || Some(**p) == root)
                .map(|(p, s)| SizedPath {
                    path: p.to_string(),
                    size: *s,
                })
                .collect())
        },
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct IndexInfo {
    pub digest: String,
    pub media_type: String,
    pub platforms: Vec<Inspection>,
}

/// Inspect `target`: an image file, a `--from`-style source, or a registry reference.
pub async fn inspect(
    target: &str,
    files: Option<usize>,
    client: &RegistryClient,
    cache: &Cache,
) -> Result<Inspection> {
    Ok(inspect_image(target, files, false, client, cache).await?.0)
}

/// As [`inspect`], and every file of every layer (the base's too) of the image described (for
/// an index, the host's platform's, or the first): each layer is read whole and verified.
pub async fn inspect_files(
    target: &str,
    files: Option<usize>,
    client: &RegistryClient,
    cache: &Cache,
) -> Result<(Inspection, ImageFiles)> {
    inspect_image(target, files, true, client, cache).await
}

async fn inspect_image(
    target: &str,
    files: Option<usize>,
    every: bool,
    client: &RegistryClient,
    cache: &Cache,
) -> Result<(Inspection, ImageFiles)> {
    let src = Source::parse_any(target).map_err(|e| {
        Error::Usage(format!(
            "{target:?} is neither an image file nor an image reference: {e}"
        ))
    })?;
    match source::read(&src, &source::Platforms::All, cache, client).await? {
        Artifact::Image(image) => one(src.describe(), &image, files, every, cache, client).await,
        Artifact::Index(index) => {
            let mut platforms = Vec::new();
            for image in index
                .images
                .iter()
                .filter(|i| i.config.os().to_string() != "unknown")
            {
                let (found, _) = one(src.describe(), image, files, false, cache, client).await?;
                platforms.push(found);
            }
            let host = Artifact::Index(index.clone());
            let main = host.image_for(None).ok_or_else(|| {
                Error::from(ImageError::Invalid(format!(
                    "{target}: the index holds no image"
                )))
            })?;
            let (mut top, all) = one(src.describe(), main, files, every, cache, client).await?;
            top.index = Some(IndexInfo {
                digest: index.digest.to_string(),
                media_type: index.media_type.clone(),
                platforms,
            });
            Ok((top, all))
        }
    }
}

/// One image's inspection, its SBOM summarised; with `every`, the files of all its layers.
async fn one(
    source: String,
    image: &Image,
    files: Option<usize>,
    every: bool,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<(Inspection, ImageFiles)> {
    let sbom = match image.attachments.first() {
        Some(a) => {
            let at = source::localize(&a.blob, cache, client).await?;
            let doc = crate::blocking(move || at.read_all()).await?;
            sbom::summary(&doc).map(|(applications, debian_packages, packages)| SbomSummary {
                digest: a.blob.digest.to_string(),
                applications,
                debian_packages,
                packages,
            })
        }
        None => None,
    };
    let mut found = describe(source, image, sbom)?;
    let workdir = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.working_dir().clone())
        .unwrap_or_else(|| "/app".into());
    let migrate = format!("{}/bin/migrate", workdir.trim_end_matches('/'));
    let mut all = ImageFiles::default();
    for layer in &image.layers {
        let release = layer.kind == crate::oci::LayerKind::Release;
        let base = layer.kind == crate::oci::LayerKind::Base;
        if !every && (base || (files.is_none() && !release)) {
            continue;
        }
        let at = source::localize(&layer.blob, cache, client).await?;
        let l = layer.clone();
        let entries = crate::blocking(move || layer_entries(&l, &at)).await?;
        if release && entries.iter().any(|(p, _)| *p == migrate) {
            found.migrate = Some(migrate.clone());
        }
        if let Some(n) = files.filter(|_| !base) {
            found.files.push(by_size(layer, &entries, n));
        }
        if every {
            all.layers.push(entries);
        }
    }
    Ok((found, all))
}

fn describe(source: String, image: &Image, sbom: Option<SbomSummary>) -> Result<Inspection> {
    let raw: serde_json::Value = serde_json::from_slice(&image.config_bytes).map_err(|e| {
        Error::from(ImageError::Json {
            what: source.to_string(),
            doc: "config",
            source: e,
        })
    })?;
    let history: Vec<serde_json::Value> = raw["history"].as_array().cloned().unwrap_or_default();
    let layered: Vec<String> = history
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    let layers = image
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| LayerInfo {
            digest: l.blob.digest.to_string(),
            size: l.blob.size,
            kind: l.kind.as_str().to_string(),
            created_by: layered.get(i).cloned().unwrap_or_default(),
        })
        .collect();
    Ok(Inspection {
        source,
        digest: image.digest.to_string(),
        platform: format!("{}/{}", image.config.os(), image.config.architecture()),
        config: raw["config"].clone(),
        layers,
        history,
        sbom,
        index: None,
        migrate: None,
        files: vec![],
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
        let mut out = String::new();
        if let Some(i) = &self.index {
            out.push_str(&format!(
                "{}\n  index      {} ({} platforms)\n",
                self.source,
                i.digest,
                i.platforms.len()
            ));
            for p in &i.platforms {
                out.push_str(&format!("  {:<10} {}\n", p.platform, p.digest));
            }
            out.push_str("the host's platform:\n");
        }
        out.push_str(&format!(
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
        ));
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
        if let Some(m) = &self.migrate {
            out.push_str(&format!(
                "migrations: {m} (run it as a one-off container with the image's environment)\n"
            ));
        }
        for l in &self.files {
            out.push_str(&format!(
                "{} layer {}: {} files, {}\n",
                l.kind,
                &l.digest,
                l.files,
                human_size(l.bytes)
            ));
            for (what, list) in [("file", &l.largest_files), ("dir ", &l.largest_dirs)] {
                for p in list {
                    out.push_str(&format!(
                        "  {what} {:>10}  {}\n",
                        human_size(p.size),
                        p.path
                    ));
                }
            }
        }
        out
    }
}
