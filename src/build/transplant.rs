//! The ERTS transplant: the release for another platform made from this one. A release is
//! mostly portable (`.beam` files, boot scripts, `sys.config`, static assets); only its ELF
//! files are not: ERTS (`erts-<vsn>/bin/*`) and NIFs and port programs under `lib/*/priv/`.
//! When all of those come from Erlang/OTP itself, the same OTP version's builds for the target
//! platform, taken from an image that holds that OTP, replace them file for file, and every
//! other byte of the release stays as it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::fs::elf::{machine_for, machine_name};
use crate::fs::normalize;
use crate::oci::digest::{HashReader, sha256_of};
use crate::oci::media::{self, LayerType};
use crate::oci::platform::Platform;
use crate::registry::RegistryClient;
use crate::release::{EntryKind, LayerPlan, Release};
use crate::source::{self, Source};

/// An ELF file of the release: its path relative to the release root, and its machine.
#[derive(Clone, Debug)]
pub struct Native {
    pub rel: String,
    pub machine: u16,
}

/// The ELF machine in a file's header, when it is an ELF file.
pub fn elf_machine(path: &Path) -> Option<u16> {
    let mut head = [0u8; 20];
    let mut f = std::fs::File::open(path).ok()?;
    f.read_exact(&mut head).ok()?;
    if &head[..4] != b"\x7fELF" {
        return None;
    }
    let m = [head[18], head[19]];
    Some(match head[5] {
        2 => u16::from_be_bytes(m),
        _ => u16::from_le_bytes(m),
    })
}

/// Every ELF file among the planned release layers' files.
pub fn natives(plans: &[LayerPlan], workdir: &str) -> Vec<Native> {
    let prefix = format!("{}/", workdir.trim_matches('/'));
    plans
        .iter()
        .flat_map(|p| &p.entries)
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .filter_map(|e| {
            let rel = e.path.strip_prefix(&prefix)?;
            let machine = elf_machine(e.source.as_deref()?)?;
            Some(Native {
                rel: rel.to_string(),
                machine,
            })
        })
        .collect()
}

/// The machine a release is built for: its ERTS's, else its first native file's; `None` for
/// a release without native code (which runs anywhere its base's Erlang does).
pub fn release_machine(natives: &[Native]) -> Option<u16> {
    natives
        .iter()
        .find(|n| n.rel.starts_with("erts-") && n.rel.ends_with("/bin/beam.smp"))
        .or_else(|| natives.first())
        .map(|n| n.machine)
}

/// What the transplant did, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct TransplantReport {
    /// The image the native files came from, and its manifest digest.
    pub from: String,
    pub digest: Option<String>,
    /// Where Erlang/OTP lies in that image (e.g. `/usr/lib/erlang`).
    pub otp_root: String,
    /// Every file replaced, relative to the release root.
    pub files: Vec<String>,
}

/// The target platform's native files, staged on disk, ready to stand in for the release's.
pub struct Transplant {
    pub report: TransplantReport,
    /// Release-relative path → the file (a blob in the cache) and its size.
    files: BTreeMap<String, (PathBuf, u64)>,
}

/// Read `otp_from` for `platform` and stage, for each of the release's native files, the file
/// at the same place in the image's Erlang/OTP. Refuses (naming every file) native code that
/// does not come from OTP, another ERTS version, or another version of an OTP application.
pub async fn prepare(
    natives: &[Native],
    release: &Release,
    otp_from: &Source,
    platform: &Platform,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<Transplant> {
    let want = machine_for(&platform.architecture).ok_or_else(|| {
        Error::Input(format!(
            "cannot transplant to {platform}: imgbuild does not know its ELF machine"
        ))
    })?;
    // Native code outside ERTS and applications' priv/ cannot come from OTP.
    let mut refused: Vec<String> = natives
        .iter()
        .filter(|n| !is_erts(&n.rel) && app_of(&n.rel).is_none())
        .map(|n| {
            format!(
                "{}: native code outside ERTS and lib/*/priv cannot be transplanted",
                n.rel
            )
        })
        .collect();
    let apps: BTreeSet<(String, String)> = natives.iter().filter_map(|n| app_of(&n.rel)).collect();
    let image = source::read_image(otp_from, Some(platform), cache, client).await?;
    let mut local = Vec::new();
    for l in &image.layers {
        local.push(source::localize(&l.blob, cache, client).await?);
    }
    let names: BTreeSet<String> = apps.iter().map(|(a, _)| a.clone()).collect();
    let what = otp_from.describe();
    let (layers, w, c) = (image.layers.clone(), what.clone(), cache.clone());
    let scan = crate::blocking(move || scan_cached(&layers, &local, &names, &c, &w)).await?;

    let erts = &release.erts_version;
    let Some(root) = scan
        .erts
        .iter()
        .find(|(_, v)| v == erts)
        .map(|(root, _)| root.clone())
    else {
        let found: Vec<String> = scan.erts.iter().map(|(_, v)| v.clone()).collect();
        return Err(Error::Input(if found.is_empty() {
            format!(
                "--otp-from {what} holds no Erlang/OTP for {platform} (no erts-*/bin/beam.smp in it): name an image with Erlang/OTP's ERTS {erts}"
            )
        } else {
            format!(
                "--otp-from {what} holds ERTS {} but the release needs ERTS {erts}: name an image with the same Erlang/OTP version as the release was built with",
                found.join(", ")
            )
        }));
    };
    let mut files = BTreeMap::new();
    for n in natives {
        if !is_erts(&n.rel) && app_of(&n.rel).is_none() {
            continue;
        }
        if let Some((app, vsn)) = app_of(&n.rel) {
            let have = scan.apps.get(&(root.clone(), app.clone()));
            match have {
                None => {
                    refused.push(format!(
                        "{}: native code of {app}, which {what} does not hold: it is not part of Erlang/OTP (a dependency's NIF)",
                        n.rel
                    ));
                    continue;
                }
                Some(versions) if !versions.contains(&vsn) => {
                    refused.push(format!(
                        "{}: the release has {app} {vsn}, {what} has {app} {}",
                        n.rel,
                        versions.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                    continue;
                }
                Some(_) => {}
            }
        }
        let full = format!("{root}{}", n.rel);
        // A program of ERTS's bin/ that OTP keeps in its own bin/ or an application's bin/.
        let name = n.rel.rsplit('/').next().unwrap_or_default();
        let elsewhere = || {
            is_erts(&n.rel)
                .then(|| {
                    scan.resolve(&format!("{root}bin/{name}")).or_else(|| {
                        let mut keys: Vec<&String> = scan
                            .staged
                            .keys()
                            .chain(scan.links.keys())
                            .filter(|k| {
                                k.starts_with(&format!("{root}lib/"))
                                    && k.ends_with(&format!("/bin/{name}"))
                            })
                            .collect();
                        keys.sort();
                        keys.first().and_then(|k| scan.resolve(k))
                    })
                })
                .flatten()
        };
        match scan.resolve(&full).or_else(elsewhere) {
            Some(staged) => match elf_machine(&staged) {
                Some(m) if m == want => {
                    let size = std::fs::metadata(&staged).ctx("stat", &staged)?.len();
                    files.insert(n.rel.clone(), (staged, size));
                }
                Some(m) => refused.push(format!(
                    "{}: /{full} in {what} is for {}, not {platform}",
                    n.rel,
                    machine_name(m)
                )),
                None => refused.push(format!("{}: /{full} in {what} is not an ELF file", n.rel)),
            },
            None => refused.push(format!("{}: {what} has no /{full}", n.rel)),
        }
    }
    if !refused.is_empty() {
        return Err(Error::Input(format!(
            "cannot make the release for {platform} from {what}:\n  {}\nbuild the release natively for {platform} and pass --release {platform}=DIR",
            refused.join("\n  ")
        )));
    }
    Ok(Transplant {
        report: TransplantReport {
            from: image.origin.name.clone(),
            digest: image.origin.digest.as_ref().map(ToString::to_string),
            otp_root: format!("/{}", root.trim_end_matches('/')),
            files: files.keys().cloned().collect(),
        },
        files,
    })
}

impl Transplant {
    /// Point the release layers' native files at the staged ones.
    pub fn apply(&self, plans: &mut [LayerPlan], workdir: &str) {
        let prefix = format!("{}/", workdir.trim_matches('/'));
        for e in plans.iter_mut().flat_map(|p| p.entries.iter_mut()) {
            let Some(rel) = e.path.strip_prefix(&prefix) else {
                continue;
            };
            if let Some((staged, size)) = self.files.get(rel) {
                e.source = Some(staged.clone());
                e.kind = EntryKind::File { size: *size };
            }
        }
    }
}

fn is_erts(rel: &str) -> bool {
    rel.starts_with("erts-") && rel.split('/').nth(1) == Some("bin")
}

/// `lib/<app>-<vsn>/priv/...` → (app, vsn).
fn app_of(rel: &str) -> Option<(String, String)> {
    let mut parts = rel.split('/');
    let (lib, dir, priv_) = (parts.next()?, parts.next()?, parts.next()?);
    if lib != "lib" || priv_ != "priv" {
        return None;
    }
    let (app, vsn) = dir.rsplit_once('-')?;
    Some((app.to_string(), vsn.to_string()))
}

/// What a scan of the OTP image found.
#[derive(Default)]
struct Scan {
    /// (root, ERTS version) for every `<root>erts-<vsn>/bin/beam.smp`.
    erts: Vec<(String, String)>,
    /// (root, app) → versions, for the applications asked about.
    apps: HashMap<(String, String), BTreeSet<String>>,
    /// Staged regular files by their path in the image.
    staged: HashMap<String, PathBuf>,
    /// Symbolic links among the files of interest: path → target.
    links: HashMap<String, String>,
}

impl Scan {
    /// The staged file at `path`, following links (relative or absolute) within the image.
    fn resolve(&self, path: &str) -> Option<PathBuf> {
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
fn scan_cached(
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
        let LayerType::Tar { codec, .. } = media::layer_type(&layer.blob.media_type) else {
            continue;
        };
        let lw = format!("{what} layer {}", i + 1);
        let bad = |e: std::io::Error| Error::Input(format!("{lw}: not a readable layer: {e}"));
        let mut hashed = HashReader::new(at.open()?);
        {
            let decoded = codec.decoder(&mut hashed).map_err(bad)?;
            let mut tar = tar::Archive::new(decoded);
            for entry in tar.entries().map_err(bad)? {
                let mut entry = entry.map_err(bad)?;
                let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let path = normalize(&raw).trim_start_matches('/').to_string();
                if path.is_empty() || path.split('/').any(|c| c.starts_with(".wh.")) {
                    continue;
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
                    continue;
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
                    let (d, _) = cache.put_stream(&mut entry, &lw)?;
                    scan.staged.insert(path.clone(), cache.blob_path(&d));
                    digests.insert(path, d.to_string());
                }
            }
        }
        std::io::copy(&mut hashed, &mut std::io::sink()).ctx("read layer", &at.path)?;
        let (actual, _) = hashed.finish();
        crate::oci::digest::verify(lw.clone(), &layer.blob.digest, &actual)?;
    }
    Ok((scan, digests))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_paths() {
        assert_eq!(
            app_of("lib/crypto-5.1.4/priv/lib/crypto.so"),
            Some(("crypto".into(), "5.1.4".into()))
        );
        assert_eq!(app_of("lib/my_nif-0.1.0/native/x.so"), None);
        assert!(is_erts("erts-13.1.5/bin/beam.smp"));
        assert!(!is_erts("erts-13.1.5/lib/x.so"));
    }

    #[test]
    fn reads_the_machine_of_this_binary() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            elf_machine(&exe),
            machine_for(&Platform::host().architecture)
        );
        assert_eq!(elf_machine(Path::new("/etc/hostname")), None);
    }
}
