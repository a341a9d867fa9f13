//! Stages that build and rebase share: the packages layer over a base's tree, and the SBOM
//! with its layer and attachment. Each takes what it reads and one [`Context`] for the cache, the
//! registry client and the reporter.

use std::path::PathBuf;

use oci_spec::image::Digest;

use crate::apt::{self, PackageRequest};
use crate::blocking;
use crate::cache::Cache;
use crate::check;
use crate::context::Context;
use crate::error::{IoContext, Result};
use crate::fs::RootFs;
use crate::oci::{Blob, BlobSource, FileRange, media};
use crate::release::{Entry, EntryKind, LayerKind, LayerPlan, Release};
use crate::sbom::{self, DebPackage, SbomInput};

/// What installing runtime packages gave.
pub(crate) struct Installed {
    /// The tree with the packages' files in it.
    pub(crate) fs: RootFs,
    pub(crate) layer: PackageLayer,
    pub(crate) locked: Vec<apt::Locked>,
    pub(crate) new_lock: Option<apt::LockFile>,
    /// What not running the packages' maintainer scripts means ([`apt::scripts_not_run`]),
    /// for the caller to warn about with the rest of its warnings.
    pub(crate) warnings: Vec<String>,
}

/// The packages stage, shared by build and rebase: resolve the packages asked for against the
/// tree's package lists (or the lock), fetch them (verified), and plan their layer. `debs` (the
/// tree's Debian packages, for the SBOM) gets the installed ones in place of any older; `env`
/// is the image's environment, which says what skipped maintainer scripts mean. For a `deb:`
/// base the layer is slim; `linked` (the sonames the release's programs link) is kept in it.
pub(crate) async fn install_packages(
    packages_req: &PackageRequest,
    fs: RootFs,
    arch: &str,
    env: &[String],
    debs: &mut Vec<DebPackage>,
    linked: &[String],
    cx: Context<'_>,
) -> Result<Installed> {
    let Context {
        cache,
        client,
        reporter,
    } = cx;
    let resolution = apt::resolve_packages(
        packages_req,
        &fs,
        arch,
        client.http(),
        client.policy(),
        cache,
    )
    .await?;
    for n in &resolution.notes {
        reporter.step(n);
    }
    apt::fetch_debs(&resolution, cache, client.http(), client.policy(), reporter).await?;
    let locked = resolution.lock.packages.clone();
    let new_lock = resolution.fresh.then(|| resolution.lock.clone());
    let (c, lock) = (cache.clone(), resolution.lock.clone());
    let slim = packages_req.deb.is_some().then(|| linked.to_vec());
    let staging = crate::interrupt::guarded(|| {
        tempfile::Builder::new()
            .prefix(&format!("{}packages-", crate::interrupt::marker()))
            .tempdir_in(cache.root().join("tmp"))
    })
    .ctx("create staging directory in", cache.root())?;
    let dir = staging.path().to_path_buf();
    let (fs, out) = blocking(move || {
        let out = apt::package_layer(&lock, &fs, &c, &dir, slim.as_deref())?;
        let mut fs = fs;
        check::add_entries(&mut fs, std::slice::from_ref(&out.plan))?;
        Ok((fs, out))
    })
    .await?;
    let apt::PackageLayer {
        plan,
        debs: installed,
        notes,
        scripts_not_run,
    } = out;
    for n in notes {
        reporter.step(&n);
    }
    reporter.step(&format!(
        "packages: {}",
        installed
            .iter()
            .map(|d| format!("{} {}", d.name, d.version))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    debs.retain(|d| !installed.iter().any(|n| n.name == d.name));
    debs.extend(installed);
    debs.sort();
    let (notes, warnings) = apt::scripts_not_run(&scripts_not_run, env);
    for n in &notes {
        reporter.step(n);
    }
    Ok(Installed {
        fs,
        layer: PackageLayer {
            plan,
            _staging: staging,
        },
        locked,
        new_lock,
        warnings,
    })
}

/// The package layer's plan and the staging directory its files live in until written.
pub(crate) struct PackageLayer {
    pub(crate) plan: LayerPlan,
    _staging: tempfile::TempDir,
}

/// The SBOM stage's result: the document (stored in the cache), the blob it is attached as, and
/// the layer that carries it in the image.
pub(crate) struct Sbom {
    pub(crate) bytes: Vec<u8>,
    pub(crate) digest: Digest,
    pub(crate) blob: Blob,
    pub(crate) plan: LayerPlan,
}

/// The SBOM stage, shared by build and rebase: the SPDX document of `input`, kept in the cache.
pub(crate) fn sbom(input: &SbomInput, cache: &Cache) -> Result<Sbom> {
    let bytes = sbom::document(input)?;
    let digest = cache.put_bytes(&bytes)?;
    let at = FileRange {
        path: cache.blob_path(&digest),
        offset: 0,
        size: bytes.len() as u64,
    };
    let plan = sbom_layer_plan(input.release, at.path.clone(), at.size);
    let blob = Blob::new(
        digest.clone(),
        at.size,
        media::SPDX_JSON,
        BlobSource::File(at),
    );
    Ok(Sbom {
        bytes,
        digest,
        blob,
        plan,
    })
}

/// The SBOM's layer: the document under /var/lib/db/sbom, owned by root, read-only to others.
fn sbom_layer_plan(release: &Release, source: PathBuf, size: u64) -> LayerPlan {
    let dir = |path: &str| Entry {
        path: path.to_string(),
        source: None,
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    let mut entries: Vec<Entry> = ["var", "var/lib", "var/lib/db", sbom::SBOM_DIR]
        .into_iter()
        .map(dir)
        .collect();
    entries.push(Entry {
        path: sbom::path_in_image(release),
        source: Some(source),
        kind: EntryKind::File { size },
        mode: 0o644,
        uid: 0,
        gid: 0,
    });
    LayerPlan {
        kind: LayerKind::Sbom,
        entries,
    }
}

/// The launcher's layer: `bin/NAME` replaced by imgbuild's launcher for `arch` (owned as the
/// release's start script is) and the files it needs. They stay in the cache's temporary
/// directory (`_files`) until the layer is written.
pub(crate) struct LauncherLayer {
    pub(crate) plan: LayerPlan,
    /// The SHA-256 (hex) of the launcher's bytes in the layer, for the SBOM.
    pub(crate) sha256: String,
    pub(crate) _files: Vec<tempfile::NamedTempFile>,
}

pub(crate) fn launcher_layer(
    launcher: &crate::launch::Launcher,
    arch: &str,
    plans: &[LayerPlan],
    cache: &Cache,
) -> Result<LauncherLayer> {
    use std::io::Write;
    let release_entry = |path: &str| {
        plans
            .iter()
            .flat_map(|p| &p.entries)
            .find(|e| e.path == path)
            .cloned()
    };
    let owner = release_entry(&launcher.path).map_or((0, 0), |s| (s.uid, s.gid));
    let binary = launcher.binary(arch)?;
    let sha256 = crate::oci::digest::sha256_of(&binary).digest().to_string();
    let mut files = vec![(launcher.path.clone(), binary, 0o755)];
    files.extend(
        launcher
            .files
            .iter()
            .map(|(p, b)| (p.clone(), b.clone(), 0o644)),
    );
    let mut entries: Vec<Entry> = Vec::new();
    let mut temps = Vec::new();
    for (path, bytes, mode) in files {
        // The parents as the release layer has them (every ancestor, for tools that want them).
        let mut parent = String::new();
        for part in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            parent = if parent.is_empty() {
                part.to_string()
            } else {
                format!("{parent}/{part}")
            };
            if !entries.iter().any(|e| e.path == parent) {
                entries.push(release_entry(&parent).unwrap_or(Entry {
                    path: parent.clone(),
                    source: None,
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                }));
            }
        }
        let mut file = cache.temp_file()?;
        file.write_all(&bytes)
            .and_then(|()| file.flush())
            .ctx("write the launcher to", file.path())?;
        entries.push(Entry {
            path,
            source: Some(file.path().to_path_buf()),
            kind: EntryKind::File {
                size: bytes.len() as u64,
            },
            mode,
            uid: owner.0,
            gid: owner.1,
        });
        temps.push(file);
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(LauncherLayer {
        plan: LayerPlan {
            kind: LayerKind::Launcher,
            entries,
        },
        sha256,
        _files: temps,
    })
}
