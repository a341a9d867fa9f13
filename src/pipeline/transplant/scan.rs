//! The scan of an OTP image: one verified pass over its layers finds where ERTS and the
//! release's OTP applications lie and stages their native files in the cache; the scan is kept
//! in the cache, so another build for the platform decompresses nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use crate::cache::Cache;
use crate::error::Result;
use crate::fs::normalize;
use crate::layer::VerifiedLayer;
use crate::oci::digest::sha256_of;

/// What a scan of the OTP image found.
#[derive(Default)]
pub(super) struct Scan {
    /// (root, ERTS version) for every `<root>erts-<vsn>/bin/beam.smp`.
    pub(super) erts: Vec<(String, String)>,
    /// (root, app) → versions, for the applications asked about.
    pub(super) apps: HashMap<(String, String), BTreeSet<String>>,
    /// Staged regular files by their path in the image.
    pub(super) staged: HashMap<String, PathBuf>,
    /// Symbolic links among the files of interest: path → target.
    pub(super) links: HashMap<String, String>,
}

impl Scan {
    /// The staged file at `path`, following links (relative or absolute) within the image.
    pub(super) fn resolve(&self, path: &str) -> Option<PathBuf> {
        let mut p = path.to_string();
        for _ in 0..16 {
            if let Some(f) = self.staged.get(&p) {
                return Some(f.clone());
            }
            let target = self.links.get(&p)?;
            p = if let Some(abs) = target.strip_prefix('/') {
                normalize(abs).trim_start_matches('/').to_string()
            } else {
                let parent = p.rsplit_once('/').map_or("", |(d, _)| d);
                normalize(&format!("{parent}/{target}"))
                    .trim_start_matches('/')
                    .to_string()
            };
        }
        None
    }
}

/// A scan as kept in the cache (records `otp-scans`): the staged files by their blob digests.
#[derive(serde::Serialize, serde::Deserialize)]
struct ScanRecord {
    erts: Vec<(String, String)>,
    apps: Vec<(String, String, BTreeSet<String>)>,
    staged: BTreeMap<String, String>,
    links: BTreeMap<String, String>,
}

/// The scan of an OTP image for these applications, from the cache when an earlier build made
/// it from the same layers (its files verified against their digests), else made now. A build
/// for another platform then costs no decompression of the OTP image at all.
pub(super) fn scan_cached(
    layers: &[crate::oci::Layer],
    local: &[crate::oci::FileRange],
    apps: &BTreeSet<String>,
    cache: &Cache,
    what: &str,
) -> Result<Scan> {
    let mut text = String::from("otp-scan-v1\n");
    for l in layers {
        text.push_str(&format!("{} {}\n", l.blob.media_type, l.blob.digest));
    }
    for a in apps {
        text.push_str(&format!("app {a}\n"));
    }
    let key = sha256_of(text.as_bytes());
    if let Some(scan) = cache
        .record("otp-scans", &key)
        .and_then(|b| serde_json::from_slice::<ScanRecord>(&b).ok())
        .and_then(|r| from_record(r, cache))
    {
        return Ok(scan);
    }
    let (scan, staged) = scan_layers(layers, local, apps, cache, what)?;
    let record = ScanRecord {
        erts: scan.erts.clone(),
        apps: scan
            .apps
            .iter()
            .map(|((root, app), v)| (root.clone(), app.clone(), v.clone()))
            .collect(),
        staged,
        links: scan
            .links
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    // A scan that cannot be stored is only a slower next build.
    if let Ok(bytes) = serde_json::to_vec(&record) {
        let _ = cache.put_record("otp-scans", &key, &bytes);
    }
    Ok(scan)
}

/// A stored scan, when every file it names is still in the cache with the right bytes.
fn from_record(r: ScanRecord, cache: &Cache) -> Option<Scan> {
    let mut staged = HashMap::new();
    for (path, d) in r.staged {
        let digest = crate::oci::digest::parse(&d).ok()?;
        cache.verify_blob(&digest).ok()?;
        staged.insert(path, cache.blob_path(&digest));
    }
    Some(Scan {
        erts: r.erts,
        apps: r
            .apps
            .into_iter()
            .map(|(root, app, v)| ((root, app), v))
            .collect(),
        staged,
        links: r.links.into_iter().collect(),
    })
}

/// One pass over every layer: where ERTS and the asked-for applications are, and the files of
/// `erts-*/bin/` and those applications' `priv/` stored in the cache. Also returns each stored
/// file's digest by its path in the image.
fn scan_layers(
    layers: &[crate::oci::Layer],
    local: &[crate::oci::FileRange],
    apps: &BTreeSet<String>,
    cache: &Cache,
    what: &str,
) -> Result<(Scan, BTreeMap<String, String>)> {
    let mut scan = Scan::default();
    let mut digests = BTreeMap::new();
    let interesting = |path: &str| -> bool {
        let comps: Vec<&str> = path.split('/').collect();
        comps
            .windows(2)
            .any(|w| w[0].starts_with("erts-") && w[1] == "bin")
            || comps.windows(3).any(|w| {
                w[0] == "lib"
                    && w[2] == "priv"
                    && w[1].rsplit_once('-').is_some_and(|(a, _)| apps.contains(a))
            })
    };
    for (i, (layer, at)) in layers.iter().zip(local).enumerate() {
        let lw = format!("{what} layer {}", i + 1);
        let Some(layer) = VerifiedLayer::new(layer, at, &lw) else {
            continue;
        };
        layer.walk(|entry| {
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = normalize(&raw).trim_start_matches('/').to_string();
            if path.is_empty() || path.split('/').any(|c| c.starts_with(".wh.")) {
                return Ok(());
            }
            let comps: Vec<&str> = path.split('/').collect();
            if let [.., e, b, f] = comps.as_slice()
                && *b == "bin"
                && *f == "beam.smp"
                && let Some(v) = e.strip_prefix("erts-")
            {
                let root = path[..path.len() - format!("{e}/bin/beam.smp").len()].to_string();
                scan.erts.push((root, v.to_string()));
            }
            for i in (0..comps.len().saturating_sub(1)).filter(|&i| comps[i] == "lib") {
                if let Some((app, vsn)) = comps[i + 1].rsplit_once('-')
                    && apps.contains(app)
                {
                    let root = comps[..i]
                        .iter()
                        .map(|c| format!("{c}/"))
                        .collect::<String>();
                    scan.apps
                        .entry((root, app.to_string()))
                        .or_default()
                        .insert(vsn.to_string());
                }
            }
            if !interesting(&path) {
                return Ok(());
            }
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Ok(Some(t)) = entry.link_name() {
                    let t = t.to_string_lossy().into_owned();
                    // Hard links name the other path from the image root.
                    let t = if kind.is_hard_link() {
                        format!("/{t}")
                    } else {
                        t
                    };
                    scan.links.insert(path, t);
                }
            } else if kind.is_file() {
                let (d, _) = cache.put_stream(&mut *entry, &lw)?;
                scan.staged.insert(path.clone(), cache.blob_path(&d));
                digests.insert(path, d.to_string());
            }
            Ok(())
        })?;
    }
    Ok((scan, digests))
}
