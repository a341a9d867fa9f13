//! Runtime packages without apt or a container: read the base image's apt sources and keyrings,
//! verify `InRelease` with OpenPGP, `Packages` by its hash in the Release file and every `.deb`
//! by its SHA256, resolve dependencies as apt would for this case, pin the result in
//! `imgbuild.lock`, and unpack the packages into one deterministic layer with dpkg's database
//! updated. Maintainer scripts are not run; what matters for a runtime image is done here
//! (ca-certificates' bundle).
//!
//! Why not the `debian-packaging` crate for indexes and resolution: 0.18 runs on async-std
//! beside our tokio, carries a second OpenPGP implementation (pgp 0.14 beside our 0.19) and a
//! second zstd, and decodes xz through C liblzma; its resolver answers "what does this package
//! need", not "what must be added to this root file system", which is what a runtime layer
//! is. The parts here are small: stanzas ([`index`]), the resolver ([`resolve`]); version order
//! is the `debversion` crate, certificates are walked with `x509-cert`.

pub mod deb;
pub mod index;
pub mod resolve;
pub mod version;
pub mod x509;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cache::Cache;
use crate::error::{Error, ImageError, IoContext, Result};
use crate::fs::RootFs;
use crate::net::Policy;
use crate::oci::digest;
use crate::release::{Entry, EntryKind, LayerKind, LayerPlan};
use crate::sbom::DebPackage;
use index::Stanza;

pub const LOCK_FILE: &str = "imgbuild.lock";

/// One apt source: `deb [signed-by=...] URI SUITE COMPONENT...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    /// A keyring path inside the image, or an inline armored key.
    pub signed_by: Option<String>,
}

/// A one-line source (`deb [opts] URI SUITE COMP...`, `deb` optional for `--apt-source`).
pub fn parse_source_line(line: &str) -> Option<AptSource> {
    let line = line.split('#').next()?.trim();
    let rest = line.strip_prefix("deb ").unwrap_or(line).trim();
    if line.starts_with("deb-src") || rest.is_empty() {
        return None;
    }
    let (opts, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (o, r) = r.split_once(']')?;
            (o, r.trim())
        }
        None => ("", rest),
    };
    let signed_by = opts
        .split_whitespace()
        .find_map(|o| o.strip_prefix("signed-by="))
        .map(str::to_string);
    let mut words = rest.split_whitespace();
    let uri = words.next()?.trim_end_matches('/').to_string();
    let suite = words.next()?.to_string();
    if !uri.contains("://") {
        return None;
    }
    Some(AptSource {
        uri,
        suite,
        components: words.map(str::to_string).collect(),
        signed_by,
    })
}

/// deb822 `.sources` stanzas (`Types: deb`, `URIs`, `Suites`, `Components`, `Signed-By`).
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for s in index::stanzas(text) {
        let get = |k: &str| {
            s.iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if !get("Types")
            .unwrap_or_default()
            .split_whitespace()
            .any(|t| t == "deb")
        {
            continue;
        }
        if get("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let signed_by = get("Signed-By").map(|v| v.trim().to_string());
        let components: Vec<String> = get("Components")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        for uri in get("URIs").unwrap_or_default().split_whitespace() {
            for suite in get("Suites").unwrap_or_default().split_whitespace() {
                out.push(AptSource {
                    uri: uri.trim_end_matches('/').to_string(),
                    suite: suite.to_string(),
                    components: components.clone(),
                    signed_by: signed_by.clone(),
                });
            }
        }
    }
    out
}

/// The base image's apt sources.
pub fn sources_of(fs: &RootFs) -> Vec<AptSource> {
    let mut out = Vec::new();
    let text = |p: &str| {
        fs.contents(p)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    if let Some(t) = text("/etc/apt/sources.list") {
        out.extend(t.lines().filter_map(parse_source_line));
    }
    for f in fs.list("/etc/apt/sources.list.d") {
        let Some(t) = text(&f) else { continue };
        if f.ends_with(".list") {
            out.extend(t.lines().filter_map(parse_source_line));
        } else if f.ends_with(".sources") {
            out.extend(parse_deb822(&t));
        }
    }
    out
}

/// Keys for a source: its `Signed-By` keyring (or inline key), else every keyring apt trusts.
fn keys_for(fs: &RootFs, source: &AptSource) -> Vec<pgp::composed::SignedPublicKey> {
    if let Some(sb) = &source.signed_by {
        if sb.contains("BEGIN PGP PUBLIC KEY BLOCK") {
            return index::keys_from(sb.as_bytes());
        }
        return sb
            .split([',', ' '])
            .filter(|p| p.starts_with('/'))
            .filter_map(|p| fs.contents(p))
            .flat_map(index::keys_from)
            .collect();
    }
    let mut files: Vec<String> = vec!["/etc/apt/trusted.gpg".into()];
    files.extend(fs.list("/etc/apt/trusted.gpg.d"));
    files.extend(fs.list("/usr/share/keyrings"));
    files
        .iter()
        .filter(|p| p.ends_with(".gpg") || p.ends_with(".asc"))
        .filter_map(|p| fs.contents(p))
        .flat_map(index::keys_from)
        .collect()
}

/// A package as an index lists it, with where to get it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub url: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    pub stanza: Stanza,
}

/// What `imgbuild.lock` pins.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Locked {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
    pub size: u64,
    /// Where it was found; the --apt-source mirrors are tried first (with `filename`).
    pub url: String,
    /// The path below the archive root (`pool/main/o/openssl/...deb`).
    #[serde(default)]
    pub filename: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// The `--package` requests this lock answers, sorted.
    pub requested: Vec<String>,
    pub architecture: String,
    #[serde(default, rename = "package")]
    pub packages: Vec<Locked>,
    /// The same pins for the other architectures of a multi-platform build, one entry each.
    #[serde(
        default,
        rename = "architectures",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub others: Vec<LockFile>,
}

impl LockFile {
    /// The pins for `arch`, when the file has them.
    pub(crate) fn for_arch(&self, arch: &str) -> Option<&LockFile> {
        if self.architecture == arch {
            Some(self)
        } else {
            self.others.iter().find(|o| o.architecture == arch)
        }
    }

    /// This file with `section` (one architecture's pins) put in place of that architecture's.
    pub(crate) fn with_section(self, mut section: LockFile) -> LockFile {
        section.others.clear();
        if self.architecture == section.architecture {
            return LockFile {
                others: self.others,
                ..section
            };
        }
        let mut out = self;
        out.others
            .retain(|o| o.architecture != section.architecture);
        out.others.push(section);
        out.others
            .sort_by(|a, b| a.architecture.cmp(&b.architecture));
        out
    }

    pub(crate) fn load(path: &Path) -> Result<Option<LockFile>> {
        match std::fs::read_to_string(path) {
            Ok(t) => toml::from_str(&t).map(Some).map_err(|e| {
                Error::Input(format!(
                    "{}: not a valid lock file ({e}); delete it or run with --update-lock",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let body = toml::to_string_pretty(self)
            .map_err(|e| Error::from(ImageError::Package(format!("internal: lock file: {e}"))))?;
        let text = format!(
            "# Written by imgbuild: the runtime packages, pinned. Refresh with --update-lock.\n{body}"
        );
        crate::atomic::write_file(path, text.as_bytes())
    }
}

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct PackageRequest {
    pub packages: Vec<String>,
    /// `--apt-source` lines; when given they replace the base's sources.
    pub sources: Vec<String>,
    pub lock_path: PathBuf,
    pub update_lock: bool,
}

/// The packages to install, with notes for the user.
pub struct Resolution {
    pub lock: LockFile,
    pub notes: Vec<String>,
    /// Archive roots to fetch from (the --apt-source mirrors), tried before the locked URLs.
    pub mirrors: Vec<String>,
    /// Resolved afresh (not read from the lock file): the build saves it with [`save_sections`]
    /// once it has succeeded, so a failed build leaves the lock file as it was.
    pub fresh: bool,
}

/// Put each architecture's pins (`sections`, in the order the platforms were asked for) into
/// the lock file at `path`: a section replaces its architecture's old pins, the others stay.
/// A new file's main architecture is the first section's.
pub fn save_sections(path: &Path, sections: Vec<LockFile>) -> Result<()> {
    let mut sections = sections.into_iter();
    let existing = LockFile::load(path)?;
    let Some(first) = existing.or_else(|| sections.next()) else {
        return Ok(());
    };
    let mut file = first;
    for s in sections {
        file = file.with_section(s);
    }
    file.save(path)
}

/// An index file, retried and watched like every request (indexes are a few MB at most).
async fn fetch(http: &reqwest::Client, policy: &Policy, url: &str) -> Result<Vec<u8>> {
    crate::net::get_small(http, policy, url, 512 << 20).await
}

/// Read every source's verified indexes and return the candidates for `arch`.
async fn candidates(
    fs: &RootFs,
    sources: &[AptSource],
    arch: &str,
    http: &reqwest::Client,
    policy: &Policy,
    cache: &Cache,
) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for src in sources {
        let base = format!("{}/dists/{}", src.uri, src.suite);
        let keys = keys_for(fs, src);
        let untrusted = |file: &str, why: String| {
            Error::from(ImageError::Package(format!(
                "{base}/{file}: signature check failed: {why}. Add the repository's key to the base image (/etc/apt/trusted.gpg.d or the source's Signed-By)"
            )))
        };
        // InRelease (clearsigned), else Release with its detached Release.gpg, as apt does.
        let text = match fetch(http, policy, &format!("{base}/InRelease")).await {
            Ok(inrelease) => index::verify_inrelease(&String::from_utf8_lossy(&inrelease), &keys)
                .map_err(|why| untrusted("InRelease", why))?,
            Err(_) => {
                let release = fetch(http, policy, &format!("{base}/Release")).await?;
                let sig = fetch(http, policy, &format!("{base}/Release.gpg")).await?;
                index::verify_detached(&release, &sig, &keys)
                    .map_err(|why| untrusted("Release.gpg", why))?;
                String::from_utf8_lossy(&release).into_owned()
            }
        };
        let release = index::stanzas(&text).into_iter().next().unwrap_or_default();
        let hashes = index::release_hashes(&release);
        for comp in &src.components {
            let stem = format!("{comp}/binary-{arch}/Packages");
            let chosen = ["xz", "gz", ""].iter().find_map(|ext| {
                let name = if ext.is_empty() {
                    stem.clone()
                } else {
                    format!("{stem}.{ext}")
                };
                hashes.get(&name).map(|h| (name, h.clone()))
            });
            let Some((name, (sha, size))) = chosen else {
                continue;
            };
            let url = format!("{base}/{name}");
            // Indexes live in the content-addressed cache under the hash the Release names.
            let cached = digest::parse(&format!("sha256:{sha}"))
                .ok()
                .filter(|d| cache.has_blob(d));
            let bytes = match cached {
                Some(d) => cache.read_verified(&d)?,
                None => {
                    let bytes = fetch(http, policy, &url).await?;
                    let actual = hex::encode(Sha256::digest(&bytes));
                    if actual != sha || bytes.len() as u64 != size {
                        return Err(Error::DigestMismatch {
                            what: format!("{url} (against the hash in its signed Release file)"),
                            expected: format!("sha256:{sha}"),
                            actual: format!("sha256:{actual}"),
                        });
                    }
                    cache.put_bytes(&bytes)?;
                    bytes
                }
            };
            let mut raw = Vec::new();
            deb::decoder(&name, std::io::Cursor::new(bytes), &url)?
                .read_to_end(&mut raw)
                .map_err(|e| Error::from(ImageError::Package(format!("{url}: {e}"))))?;
            let text = String::from_utf8_lossy(&raw);
            for s in index::stanzas(&text) {
                let (Some(name), Some(version), Some(file), Some(sha)) = (
                    s.get("Package"),
                    s.get("Version"),
                    s.get("Filename"),
                    s.get("SHA256"),
                ) else {
                    continue;
                };
                let a = s.get("Architecture").cloned().unwrap_or_default();
                if a != arch && a != "all" {
                    continue;
                }
                out.push(Candidate {
                    name: name.clone(),
                    version: version.clone(),
                    architecture: a,
                    url: format!("{}/{}", src.uri, file.trim_start_matches('/')),
                    filename: file.trim_start_matches('/').to_string(),
                    sha256: sha.to_ascii_lowercase(),
                    size: s.get("Size").and_then(|v| v.parse().ok()).unwrap_or(0),
                    stanza: s.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// Decide what to install: from the lock file when it answers the request, else by resolving
/// against the sources' indexes (and then writing the lock).
pub(crate) async fn resolve_packages(
    req: &PackageRequest,
    fs: &RootFs,
    arch: &str,
    http: &reqwest::Client,
    policy: &Policy,
    cache: &Cache,
) -> Result<Resolution> {
    let mut requested: Vec<String> = req.packages.clone();
    requested.sort();
    requested.dedup();
    let mut notes = Vec::new();
    let existing = LockFile::load(&req.lock_path)?;
    if !req.update_lock
        && let Some(lock) = existing.as_ref().and_then(|f| f.for_arch(arch))
    {
        let lock = lock.clone();
        if lock.requested == requested {
            let mirrors = req
                .sources
                .iter()
                .filter_map(|s| parse_source_line(s))
                .map(|s| s.uri)
                .collect();
            return Ok(Resolution {
                lock,
                notes,
                mirrors,
                fresh: false,
            });
        }
        return Err(Error::Usage(format!(
            "{} pins {:?} for {} but this build asks for {:?} for {arch}: run with --update-lock to resolve again",
            req.lock_path.display(),
            lock.requested,
            lock.architecture,
            requested
        )));
    }
    let sources: Vec<AptSource> = if req.sources.is_empty() {
        sources_of(fs)
    } else {
        req.sources
            .iter()
            .map(|s| {
                parse_source_line(s).ok_or_else(|| {
                    Error::Usage(format!(
                        "invalid --apt-source {s:?}: give \"[signed-by=KEYRING] URI SUITE COMPONENT...\""
                    ))
                })
            })
            .collect::<Result<_>>()?
    };
    if sources.is_empty() {
        return Err(Error::Input(
            "the base image has no apt sources (/etc/apt/sources.list or sources.list.d): pass --apt-source \"URI SUITE COMPONENT\"".into(),
        ));
    }
    let cands = candidates(fs, &sources, arch, http, policy, cache).await?;
    let installed = resolve::installed_from(fs);
    let chosen = resolve::resolve(&requested, &cands, &installed, &mut notes)?;
    let lock = LockFile {
        requested,
        architecture: arch.to_string(),
        packages: chosen
            .into_iter()
            .map(|c| Locked {
                name: c.name,
                version: c.version,
                architecture: c.architecture,
                sha256: c.sha256,
                size: c.size,
                url: c.url,
                filename: c.filename,
            })
            .collect(),
        others: Vec::new(),
    };
    Ok(Resolution {
        lock,
        notes,
        mirrors: sources.iter().map(|s| s.uri.clone()).collect(),
        fresh: true,
    })
}

/// Download (or find in the cache) each locked `.deb`, verified by its SHA256.
pub(crate) async fn fetch_debs(
    res: &Resolution,
    cache: &Cache,
    http: &reqwest::Client,
    policy: &Policy,
) -> Result<()> {
    for p in &res.lock.packages {
        let d = digest::parse(&format!("sha256:{}", p.sha256))?;
        if cache.has_blob(&d) {
            continue;
        }
        // The mirrors first (an air-gapped site's own), then where the lock found it.
        let mut urls: Vec<String> = res
            .mirrors
            .iter()
            .filter(|_| !p.filename.is_empty())
            .map(|m| format!("{m}/{}", p.filename))
            .collect();
        if !urls.contains(&p.url) {
            urls.push(p.url.clone());
        }
        let mut tried = Vec::new();
        for url in &urls {
            let what = format!("{url} (against the SHA256 in Packages / imgbuild.lock)");
            // Retried, watched for stalls, resumed with a range where it breaks off.
            let got = crate::net::download(policy, url, &what, cache, &d, |offset| {
                crate::net::get_url(http, policy, url, offset)
            })
            .await;
            match got {
                Ok(_) => break,
                Err(e @ Error::DigestMismatch { .. }) => return Err(e),
                Err(e) => tried.push(e.to_string()),
            }
        }
        if !cache.has_blob(&d) {
            return Err(crate::net::NetError::Unreachable {
                who: format!("every source of {} {}", p.name, p.version),
                detail: tried.join("; "),
                attempts: urls.len() as u32,
                hint: "check the apt sources (--apt-source) and the network".into(),
            }
            .into());
        }
    }
    Ok(())
}

/// What [`package_layer`] made.
pub struct PackageLayer {
    pub plan: LayerPlan,
    /// The packages, for the SBOM.
    pub debs: Vec<DebPackage>,
    pub notes: Vec<String>,
    /// Packages with an install-time maintainer script, which was not run: see
    /// [`scripts_not_run`] for what that means for each.
    pub scripts_not_run: Vec<String>,
}

/// The package layer: every package's files, dpkg's database with the new entries, and what
/// maintainer scripts would have made that a runtime image needs.
pub(crate) fn package_layer(
    lock: &LockFile,
    fs: &RootFs,
    cache: &Cache,
    staging: &Path,
) -> Result<PackageLayer> {
    let mut notes = Vec::new();
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut status_stanzas: Vec<String> = Vec::new();
    let mut debs = Vec::new();
    let mut installed_names = BTreeSet::new();
    let mut scripts_not_run = Vec::new();
    // The tree as dpkg would see it while unpacking: the base, then each package's directories
    // and links as they come, so that a path goes through every directory link before it.
    let mut view = fs.clone();
    for p in &lock.packages {
        let d = digest::parse(&format!("sha256:{}", p.sha256))?;
        let path = cache.blob_path(&d);
        let what = format!("{}_{}_{}.deb", p.name, p.version, p.architecture);
        let control = deb::read_control(&path, &what)?;
        let dir = deb::staging_dir(staging, &format!("{}-{}", p.name, p.architecture))?;
        let files = deb::unpack_data(&path, &dir, &what)?;
        let stanza = index::stanzas(&control.control)
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::from(ImageError::Package(format!("{what}: empty control file")))
            })?;
        let multi_same = stanza.get("Multi-Arch").is_some_and(|m| m == "same");
        let info_name = if multi_same {
            format!("{}:{}", p.name, p.architecture)
        } else {
            p.name.clone()
        };
        // info/<pkg>.list: every path the package owns, as dpkg writes it.
        let mut list = String::from("/.\n");
        for f in &files {
            list.push_str(&format!("/{}\n", f.path));
        }
        let mut meta_files = vec![(format!("var/lib/dpkg/info/{info_name}.list"), list)];
        if let Some(m) = &control.md5sums {
            meta_files.push((format!("var/lib/dpkg/info/{info_name}.md5sums"), m.clone()));
        }
        if let Some(c) = &control.conffiles {
            meta_files.push((
                format!("var/lib/dpkg/info/{info_name}.conffiles"),
                c.clone(),
            ));
        }
        for (rel, text) in meta_files {
            entries.insert(rel.clone(), generated(&dir, &rel, text.as_bytes())?);
        }
        if !control.scripts.is_empty() {
            scripts_not_run.push(p.name.clone());
        }
        for f in files {
            let f = through_links(&mut view, f);
            if let Some(have) = entries.get(&f.path)
                && !matches!(have.kind, EntryKind::Dir)
                && !matches!(f.kind, EntryKind::Dir)
            {
                notes.push(format!(
                    "{} is in more than one package; {} wins",
                    f.path, p.name
                ));
            }
            entries.insert(f.path.clone(), f);
        }
        status_stanzas.push(status_stanza(&control.control));
        installed_names.insert(p.name.clone());
        debs.push(DebPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            architecture: p.architecture.clone(),
            source: stanza
                .get("Source")
                .map(|s| s.split_whitespace().next().unwrap_or("").to_string()),
        });
    }
    // dpkg's status: the base's entries (minus any replaced) and the new ones, by name.
    let base_status = fs
        .contents("/var/lib/dpkg/status")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let mut all: Vec<String> = base_status
        .split("\n\n")
        .map(|s| s.trim_matches('\n').to_string())
        .filter(|s| !s.is_empty())
        .filter(|s| {
            let name = s
                .lines()
                .find_map(|l| l.strip_prefix("Package: "))
                .unwrap_or("");
            !installed_names.contains(name)
        })
        .collect();
    all.extend(status_stanzas);
    all.sort_by(|a, b| {
        let key = |s: &String| {
            s.lines()
                .find_map(|l| l.strip_prefix("Package: ").map(str::to_string))
        };
        key(a).cmp(&key(b))
    });
    let status = all.join("\n\n") + "\n";
    let meta = staging.join("dpkg");
    std::fs::create_dir_all(&meta).ctx("create", &meta)?;
    entries.insert(
        "var/lib/dpkg/status".into(),
        generated(&meta, "var/lib/dpkg/status", status.as_bytes())?,
    );
    if installed_names.contains("ca-certificates") {
        ca_bundle(&mut entries, fs, &meta)?;
        notes.push(
            "ca-certificates: built /etc/ssl/certs/ca-certificates.crt as update-ca-certificates would (maintainer scripts are not run)".into(),
        );
    }
    // Parents of generated files (dpkg's directories exist in Debian bases; scratch has none).
    let paths: Vec<String> = entries.keys().cloned().collect();
    for p in paths {
        let mut parent = p.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            entries.entry(dir.to_string()).or_insert(Entry {
                path: dir.to_string(),
                source: None,
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
            parent = dir;
        }
    }
    let mut list: Vec<Entry> = entries.into_values().collect();
    list.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    Ok(PackageLayer {
        plan: LayerPlan {
            kind: LayerKind::Packages,
            entries: list,
        },
        debs,
        notes,
        scripts_not_run,
    })
}

/// What not running the install-time maintainer scripts of `packages` means in an image whose
/// environment is `env` (`KEY=VALUE`): (notes, warnings). A warning says what was not done and
/// what to do instead; a script whose work does not matter in a runtime image, or that imgbuild
/// does itself, is passed over.
pub(crate) fn scripts_not_run(packages: &[String], env: &[String]) -> (Vec<String>, Vec<String>) {
    let var = |key: &str| {
        env.iter()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .filter(|v| !v.is_empty())
    };
    let builtin_locale = |v: &str| matches!(v, "C" | "POSIX" | "C.UTF-8" | "C.utf8");
    let (mut notes, mut warnings) = (Vec::new(), Vec::new());
    for name in packages {
        match name.as_str() {
            "locales" => {
                let named: Vec<String> = ["LC_ALL", "LANG"]
                    .iter()
                    .filter_map(|k| var(k).map(|v| (k, v)))
                    .filter(|(_, v)| !builtin_locale(v))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if named.is_empty() {
                    notes.push("locales: locale-gen was not run, and needs not be: the image's locale is C.UTF-8, built into glibc (the locales package can be left out)".into());
                } else {
                    warnings.push(format!(
                        "locales: its postinst (locale-gen) was not run, so no locale of /etc/locale.gen is generated and {} falls back to C: set LANG=C.UTF-8 (built into glibc, no package needed), or install locales-all (every locale, ready-made) instead of locales",
                        named.join(" and ")
                    ));
                }
            }
            "tzdata" if var("TZ").is_none() => warnings.push(
                "tzdata: its postinst was not run, so /etc/localtime is not set and the time zone is UTC: set TZ (for example TZ=Europe/Berlin) in the image's environment; the zone files are in /usr/share/zoneinfo".into(),
            ),
            // imgbuild builds the CA bundle itself; openssl's script links /usr/lib/ssl, which
            // the package ships; libc-bin's writes ld.so.cache, which ld.so does without; tzdata
            // with TZ set needs nothing else.
            "ca-certificates" | "openssl" | "libc-bin" | "tzdata" => {}
            // Libraries' scripts run ldconfig or ask debconf about restarting services.
            lib if lib.starts_with("lib") => {}
            other => warnings.push(format!(
                "{other}: its maintainer script (postinst/preinst) was not run (imgbuild runs none); if {other} needs set-up at install time (see `dpkg-deb -e` of its .deb), do it another way: a file in the release, the image's environment, or runtime.exs"
            )),
        }
    }
    (notes, warnings)
}

/// A package's entry put where dpkg would put it on this tree: through every directory that is
/// a link (on a merged-/usr base `lib/x86_64-linux-gnu/libtinfo.so.5.9` goes to
/// `usr/lib/x86_64-linux-gnu/`, and `lib/` itself, already there as `/lib -> usr/lib`, to
/// `usr/lib`), so that the layer never replaces a link of the base with a directory. `view`
/// learns the package's own directories and links as they come. dpkg's `.list` files keep the
/// package's own paths, as dpkg writes them: they lead to the same files through the links.
fn through_links(view: &mut RootFs, mut entry: Entry) -> Entry {
    let is_dir = matches!(entry.kind, EntryKind::Dir);
    let physical = view.physical(&entry.path, is_dir);
    entry.path = physical.trim_start_matches('/').to_string();
    match &entry.kind {
        EntryKind::Dir => view.insert(&physical, crate::fs::Node::Dir),
        EntryKind::Symlink { target } => {
            view.insert(&physical, crate::fs::Node::Symlink(target.clone()))
        }
        EntryKind::File { .. } => {}
    }
    entry
}

/// A file imgbuild writes (dpkg metadata, the CA bundle): staged, root-owned, 0644.
fn generated(dir: &Path, rel: &str, bytes: &[u8]) -> Result<Entry> {
    let file = dir.join(rel.replace('/', "%"));
    std::fs::write(&file, bytes).ctx("write", &file)?;
    Ok(Entry {
        path: rel.to_string(),
        source: Some(file),
        kind: EntryKind::File {
            size: bytes.len() as u64,
        },
        mode: 0o644,
        uid: 0,
        gid: 0,
    })
}

fn symlink(path: String, target: String) -> Entry {
    Entry {
        path,
        source: None,
        kind: EntryKind::Symlink { target },
        mode: 0o777,
        uid: 0,
        gid: 0,
    }
}

/// The control stanza as dpkg's status records it: `Status` after `Package`.
fn status_stanza(control: &str) -> String {
    let mut out = String::new();
    for line in control.trim_matches('\n').lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("Package:") {
            out.push_str("Status: install ok installed\n");
        }
    }
    out.trim_end_matches('\n').to_string()
}

/// What `update-ca-certificates` makes: `/etc/ca-certificates.conf` naming every certificate
/// under /usr/share/ca-certificates, `/etc/ssl/certs/<name>.pem` links with OpenSSL's
/// `<subject hash>.N` links to them, and the bundle
/// `/etc/ssl/certs/ca-certificates.crt` (certificates of the base's own bundle kept first).
fn ca_bundle(entries: &mut BTreeMap<String, Entry>, fs: &RootFs, dir: &Path) -> Result<()> {
    let prefix = "usr/share/ca-certificates/";
    let certs: Vec<(String, PathBuf)> = entries
        .values()
        .filter(|e| e.path.starts_with(prefix) && e.path.ends_with(".crt"))
        .filter_map(|e| e.source.clone().map(|s| (e.path.clone(), s)))
        .collect();
    let mut conf = String::from("# Generated by imgbuild (as update-ca-certificates would).\n");
    let mut hashes: BTreeMap<String, u32> = BTreeMap::new();
    let mut bundle = Vec::new();
    if let Some(b) = fs.contents("/etc/ssl/certs/ca-certificates.crt") {
        bundle.extend_from_slice(b);
    }
    for (path, src) in &certs {
        let rel = &path[prefix.len()..];
        conf.push_str(rel);
        conf.push('\n');
        let pem = std::fs::read(src).ctx("read", src)?;
        bundle.extend_from_slice(&pem);
        if !pem.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        let name = rel
            .rsplit('/')
            .next()
            .unwrap_or(rel)
            .replace(".crt", ".pem");
        // OpenSSL's CApath lookup: <subject hash>.N → the certificate.
        if let Some(h) = x509::pem_certificates(&String::from_utf8_lossy(&pem))
            .first()
            .and_then(|der| x509::subject_hash(der))
        {
            let n = hashes.entry(h.clone()).or_insert(0);
            let link = format!("etc/ssl/certs/{h}.{n}");
            *n += 1;
            entries.insert(link.clone(), symlink(link, name.clone()));
        }
        let link = format!("etc/ssl/certs/{name}");
        entries.insert(link.clone(), symlink(link, format!("/{path}")));
    }
    for (rel, bytes) in [
        ("etc/ca-certificates.conf", conf.into_bytes()),
        ("etc/ssl/certs/ca-certificates.crt", bundle),
    ] {
        entries.insert(rel.into(), generated(dir, rel, &bytes)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_lock_file_for_every_architecture() {
        let section = |arch: &str, pkg: &str| LockFile {
            requested: vec!["libssl3".into()],
            architecture: arch.into(),
            packages: vec![Locked {
                name: pkg.into(),
                version: "1".into(),
                architecture: arch.into(),
                sha256: "0".repeat(64),
                size: 1,
                url: String::new(),
                filename: String::new(),
            }],
            others: vec![],
        };
        let file = section("amd64", "a")
            .with_section(section("arm64", "b"))
            .with_section(section("amd64", "c"));
        assert_eq!(file.for_arch("amd64").unwrap().packages[0].name, "c");
        assert_eq!(file.for_arch("arm64").unwrap().packages[0].name, "b");
        assert!(file.for_arch("s390x").is_none());
        let text = toml::to_string_pretty(&file).unwrap();
        let back: LockFile = toml::from_str(&text).unwrap();
        assert_eq!(back, file);
        // A lock of one architecture reads as before.
        let one: LockFile =
            toml::from_str(&toml::to_string_pretty(&section("amd64", "a")).unwrap()).unwrap();
        assert!(one.others.is_empty());

        // Saved in the order of the platforms: a new file's main architecture is the first;
        // an existing file keeps its own and gets the sections put in place.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imgbuild.lock");
        save_sections(&path, vec![section("arm64", "b"), section("amd64", "a")]).unwrap();
        let saved = LockFile::load(&path).unwrap().unwrap();
        assert_eq!(saved.architecture, "arm64");
        assert_eq!(saved.for_arch("amd64").unwrap().packages[0].name, "a");
        save_sections(&path, vec![section("amd64", "c")]).unwrap();
        let saved = LockFile::load(&path).unwrap().unwrap();
        assert_eq!(saved.architecture, "arm64");
        assert_eq!(saved.for_arch("amd64").unwrap().packages[0].name, "c");
        assert_eq!(saved.for_arch("arm64").unwrap().packages[0].name, "b");
        save_sections(&path, vec![]).unwrap();
        assert_eq!(LockFile::load(&path).unwrap().unwrap(), saved);
    }

    use super::*;

    #[test]
    fn source_forms() {
        assert_eq!(
            parse_source_line(
                "deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://deb.example/debian/ bookworm main contrib # c"
            ),
            Some(AptSource {
                uri: "http://deb.example/debian".into(),
                suite: "bookworm".into(),
                components: vec!["main".into(), "contrib".into()],
                signed_by: Some("/usr/share/keyrings/x.gpg".into()),
            })
        );
        assert!(parse_source_line("deb-src http://x/ y main").is_none());
        assert!(parse_source_line("# nothing").is_none());
        assert_eq!(
            parse_source_line("http://127.0.0.1:8080 stable main")
                .unwrap()
                .suite,
            "stable"
        );
        let s = parse_deb822(
            "Types: deb\nURIs: http://a/debian http://b/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://c\nSuites: x\nComponents: main\n",
        );
        assert_eq!(s.len(), 4);
        assert_eq!(s[3].uri, "http://b/debian");
        assert_eq!(s[3].suite, "bookworm-updates");
    }

    #[test]
    fn package_paths_go_through_the_bases_directory_links() {
        use crate::fs::Node;
        let mut base = RootFs::new();
        base.insert("/usr/lib/x86_64-linux-gnu", Node::Dir);
        base.insert("/usr/bin", Node::Dir);
        base.insert("/usr/sbin", Node::Dir);
        for (link, target) in [
            ("/lib", "usr/lib"),
            ("/bin", "usr/bin"),
            ("/sbin", "usr/sbin"),
        ] {
            base.insert(link, Node::Symlink(target.into()));
        }
        let entry = |path: &str, kind: EntryKind| Entry {
            path: path.into(),
            source: None,
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        let file = EntryKind::File { size: 1 };
        let link = |t: &str| EntryKind::Symlink { target: t.into() };
        // libtinfo5 as bookworm ships it, then a package with /bin and /sbin programs and a
        // directory link of its own that a later entry goes through.
        let shipped = [
            entry("lib", EntryKind::Dir),
            entry("lib/x86_64-linux-gnu", EntryKind::Dir),
            entry("lib/x86_64-linux-gnu/libtinfo.so.5.9", file.clone()),
            entry(
                "lib/x86_64-linux-gnu/libtinfo.so.5",
                link("libtinfo.so.5.9"),
            ),
            entry("bin/tool", file.clone()),
            entry("sbin/daemon", file.clone()),
            entry("usr/share/tool", EntryKind::Dir),
            entry("usr/share/tool/data", link("../../lib/x86_64-linux-gnu")),
            entry("usr/share/tool/data/extra.so", file.clone()),
        ];
        let mut view = base.clone();
        let placed: Vec<String> = shipped
            .into_iter()
            .map(|e| through_links(&mut view, e).path)
            .collect();
        assert_eq!(
            placed,
            [
                "usr/lib",
                "usr/lib/x86_64-linux-gnu",
                "usr/lib/x86_64-linux-gnu/libtinfo.so.5.9",
                "usr/lib/x86_64-linux-gnu/libtinfo.so.5",
                "usr/bin/tool",
                "usr/sbin/daemon",
                "usr/share/tool",
                "usr/share/tool/data",
                "usr/lib/x86_64-linux-gnu/extra.so",
            ]
        );
        // Put over the base, nothing replaces a link: the check has nothing to say.
        let mut fs = base.clone();
        for p in &placed {
            fs.insert_by(p, Node::Dir, "the packages layer");
        }
        assert!(fs.replaced().is_empty(), "{:?}", fs.replaced());
        // A tree without links keeps every path as the package has it.
        let mut split = RootFs::new();
        split.insert("/lib", Node::Dir);
        let e = through_links(
            &mut split,
            entry("lib/x86_64-linux-gnu/libtinfo.so.5.9", file),
        );
        assert_eq!(e.path, "lib/x86_64-linux-gnu/libtinfo.so.5.9");
    }

    #[test]
    fn maintainer_scripts_not_run_are_explained() {
        let pkgs = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let env = |vars: &[&str]| vars.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        // Phoenix 1.7's runner list, with the image's default locale: nothing to warn about.
        let list = pkgs(&[
            "libstdc++6",
            "openssl",
            "libncurses5",
            "locales",
            "ca-certificates",
        ]);
        let (notes, warnings) = scripts_not_run(&list, &env(&["LANG=C.UTF-8"]));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(notes.iter().any(|n| n.starts_with("locales:")), "{notes:?}");
        // The generator's LANG=en_US.UTF-8 would silently fall back to C: say so, and the fix.
        let (_, warnings) = scripts_not_run(&list, &env(&["LANG=en_US.UTF-8", "PATH=/bin"]));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("locale-gen") && warnings[0].contains("LANG=en_US.UTF-8"));
        assert!(warnings[0].contains("LANG=C.UTF-8") && warnings[0].contains("locales-all"));
        // tzdata without TZ; an unknown package's script is named.
        let (_, warnings) = scripts_not_run(&pkgs(&["tzdata", "nginx"]), &env(&[]));
        assert!(warnings[0].starts_with("tzdata:") && warnings[0].contains("TZ"));
        assert!(warnings[1].starts_with("nginx:") && warnings[1].contains("postinst"));
        let (_, warnings) = scripts_not_run(&pkgs(&["tzdata"]), &env(&["TZ=Europe/Berlin"]));
        assert!(warnings.is_empty());
    }

    #[test]
    fn status_stanza_gets_status() {
        assert_eq!(
            status_stanza("Package: libssl3\nVersion: 3\nDescription: x\n y\n"),
            "Package: libssl3\nStatus: install ok installed\nVersion: 3\nDescription: x\n y"
        );
    }
}
