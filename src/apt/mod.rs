//! Runtime packages without apt or a container: read the base image's apt sources and keyrings,
//! verify `InRelease` with OpenPGP, `Packages` by its hash in the Release file and every `.deb`
//! by its SHA256, resolve dependencies as apt would for this case, pin the result in
//! `imgbuild.lock`, and unpack the packages into one deterministic layer with dpkg's database
//! updated. Maintainer scripts are not run; what matters for a runtime image is done here
//! (ca-certificates' bundle).
//!
//! Why not the `debian-packaging` crate for indexes and resolution: 0.18 runs on async-std
//! beside our tokio, carries a second OpenPGP implementation (pgp 0.14 beside our 0.19) and a
//! second zstd; its resolver answers "what does this package need", not "what must be added
//! to this root file system", which is what a runtime layer is. The parts here are small: stanzas ([`index`]), the resolver ([`resolve`]); version order
//! is the `debversion` crate, certificates are walked with `x509-cert`.

mod archive;
pub mod deb;
pub mod debian;
pub mod index;
mod layer;
mod lock;
pub mod resolve;
mod scripts;
mod sources;
pub mod version;
pub mod x509;

use std::path::PathBuf;

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::fs::RootFs;
use crate::net::Policy;
use archive::{Trusted, candidates};
use index::Stanza;

pub use archive::fetch_debs;
pub use layer::{PackageLayer, package_layer};
pub use lock::{LOCK_FILE, LockFile, Locked, save_sections};
pub use scripts::scripts_not_run;
pub use sources::{AptSource, parse_deb822, parse_source_line, sources_of};

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

/// A candidate as the lock pins it.
impl From<Candidate> for Locked {
    fn from(c: Candidate) -> Locked {
        Locked {
            name: c.name,
            version: c.version,
            architecture: c.architecture,
            sha256: c.sha256,
            size: c.size,
            url: c.url,
            filename: c.filename,
        }
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
    /// A `deb:` base: its suite's sources and imgbuild's Debian keys in place of a base's apt
    /// configuration, and the shell-less rules ([`debian::SHELL_LESS`]).
    pub deb: Option<debian::DebBase>,
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
    let deb_sources = req.deb.as_ref().map(debian::DebBase::sources);
    if !req.update_lock
        && let Some(lock) = existing.as_ref().and_then(|f| f.for_arch(arch))
        && lock.pins_packages()
    {
        let mut lock = lock.clone();
        lock.debug.clear();
        if lock.requested == requested {
            let mirrors = match &deb_sources {
                Some(s) => s.iter().map(|s| s.uri.clone()).collect(),
                None => req
                    .sources
                    .iter()
                    .filter_map(|s| parse_source_line(s))
                    .map(|s| s.uri)
                    .collect(),
            };
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
    let sources: Vec<AptSource> = if let Some(s) = deb_sources {
        s
    } else if req.sources.is_empty() {
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
    let keys = req.deb.as_ref().map(debian::DebBase::keys).transpose()?;
    let trusted = req
        .deb
        .as_ref()
        .zip(keys.as_deref())
        .map(|(deb, keys)| Trusted {
            keys,
            hint: deb.untrusted_hint(),
        });
    let cands = candidates(fs, &sources, trusted.as_ref(), arch, http, policy, cache).await?;
    let installed = resolve::installed_from(fs);
    let rules = req.deb.as_ref().map(|_| &debian::SHELL_LESS);
    let chosen = resolve::resolve(&requested, &cands, &installed, &mut notes, rules)?;
    let lock = LockFile {
        requested,
        architecture: arch.to_string(),
        packages: chosen.into_iter().map(Locked::from).collect(),
        debug: Vec::new(),
        others: Vec::new(),
    };
    Ok(Resolution {
        lock,
        notes,
        mirrors: sources.iter().map(|s| s.uri.clone()).collect(),
        fresh: true,
    })
}

/// The package a debug image's shell comes from (`--debug`): one static binary, no dependency.
pub const DEBUG_PACKAGE: &str = "busybox-static";

/// `--debug`'s pins for `arch`: the lock's when it has them (and `--update-lock` was not given),
/// else [`DEBUG_PACKAGE`] resolved afresh from `deb`'s suite, verified as a `deb:` base's
/// packages are (imgbuild's Debian keys, `Packages` by hash). Nothing of any base's own apt
/// configuration is read.
pub(crate) async fn resolve_debug(
    deb: &debian::DebBase,
    lock_path: &std::path::Path,
    update_lock: bool,
    arch: &str,
    http: &reqwest::Client,
    policy: &Policy,
    cache: &Cache,
) -> Result<Resolution> {
    let sources = deb.sources();
    let mirrors: Vec<String> = sources.iter().map(|s| s.uri.clone()).collect();
    let section = |packages: Vec<Locked>| LockFile {
        requested: Vec::new(),
        architecture: arch.to_string(),
        packages,
        debug: Vec::new(),
        others: Vec::new(),
    };
    let pinned = LockFile::load(lock_path)?
        .and_then(|f| f.for_arch(arch).map(|s| s.debug.clone()))
        .filter(|d| !update_lock && !d.is_empty());
    if let Some(packages) = pinned {
        return Ok(Resolution {
            lock: section(packages),
            notes: Vec::new(),
            mirrors,
            fresh: false,
        });
    }
    let keys = deb.keys()?;
    let empty = RootFs::new();
    let trusted = Trusted {
        keys: &keys,
        hint: deb.untrusted_hint(),
    };
    let cands = candidates(&empty, &sources, Some(&trusted), arch, http, policy, cache).await?;
    let mut notes = Vec::new();
    let chosen = resolve::resolve(
        &[DEBUG_PACKAGE.to_string()],
        &cands,
        &resolve::Installed::default(),
        &mut notes,
        None,
    )?;
    let packages = chosen.into_iter().map(Locked::from).collect();
    Ok(Resolution {
        lock: section(packages),
        notes,
        mirrors,
        fresh: true,
    })
}
