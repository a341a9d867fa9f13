//! Rebase: an image's own layers (the release imgbuild put on a base) moved onto another base
//! without rebuilding the release, the CVE-patch workflow. The release's layers keep their
//! digests; the runtime packages are resolved again against the new base (and the lock); the
//! start-up check runs again and refuses a base the release cannot start on; the SBOM is
//! written afresh; the labels and annotations name the new base. An index is rebased
//! platform by platform.
//!
//! Which layers are the image's own: the layers whose history imgbuild wrote (`imgbuild: app
//! layer of …`); failing that, the layers above those of the base its labels name (found by
//! their digests).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{LayerRecord, layers};
use crate::apt::{LockFile, PackageRequest};
use crate::cache::Cache;
use crate::check::{self, CheckFailure, CheckReport, ImageEnv, LayerFacts};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::layer::{Codec, TarOptions};
use crate::oci::reference::Reference;
use crate::oci::{Artifact, Attachment, FileRange, Image, Layer, LayerKind};
use crate::oci::{SBOM_ANNOTATION, media};
use crate::registry::RegistryClient;
use crate::release::{LayerPlan, Release};
use crate::report::{Prefixed, Reporter};
use crate::sbom::{self, SbomInput};
use crate::source::{self, Platforms, Source};
use crate::{blocking, mutate};

#[derive(Clone, Debug)]
pub struct RebaseRequest {
    /// The image to rebase (an image or an index).
    pub image: Source,
    /// The new base.
    pub from: Source,
    pub tags: Vec<Reference>,
    /// Where the packages come from and the lock (the names come from the image).
    pub packages: PackageRequest,
    /// Run the start-up check against the new base (on unless `--no-check`).
    pub check: bool,
    /// Compression of the new packages and SBOM layers.
    pub compression: (Codec, u32),
}

/// One image's rebase.
#[derive(Clone, Debug, Serialize)]
pub struct RebaseReport {
    pub digest: String,
    pub platform: String,
    /// The base the image was on, as its labels name it.
    pub old_base: NamedBase,
    pub new_base: NamedBase,
    /// How the image's own layers were told from the base's: `history` or `base-layers`.
    pub found_by: &'static str,
    /// Every layer of the new image.
    pub layers: Vec<LayerRecord>,
    /// The runtime packages asked for again (the image's recorded request).
    pub requested: Vec<String>,
    /// Where their versions came from: `lock` (imgbuild.lock's pins), `resolved` (the new
    /// base's package sources now), or `none`.
    pub packages_from: PackagesFrom,
    /// The runtime packages installed on the new base.
    pub packages: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckReport>,
    pub sbom: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct NamedBase {
    pub name: Option<String>,
    pub digest: Option<String>,
}

/// The rebased image or index, and each platform's report.
pub struct Rebased {
    pub artifact: Artifact,
    pub reports: Vec<RebaseReport>,
    /// Package pins resolved afresh (written to the lock by the caller on success).
    pub new_lock: Vec<crate::apt::LockFile>,
}

pub async fn rebase(req: &RebaseRequest, cx: Context<'_>) -> Result<Rebased> {
    let Context {
        cache,
        client,
        reporter,
    } = cx;
    reporter.step(&format!("reading {}", req.image.describe()));
    let old = source::read(&req.image, &Platforms::All, cache, client).await?;
    let images: Vec<&Image> = old
        .images()
        .into_iter()
        .filter(|i| i.config.os().to_string() != "unknown")
        .collect();
    let several = matches!(old, Artifact::Index(_));
    let reporters: Vec<Prefixed> = images
        .iter()
        .map(|i| Prefixed {
            inner: reporter,
            prefix: if several {
                format!("{}: ", i.platform())
            } else {
                String::new()
            },
        })
        .collect();
    let mut reports = Vec::new();
    let mut rebased = Vec::new();
    let mut locks = Vec::new();
    for (image, r) in images.iter().zip(&reporters) {
        let (new, report, lock) =
            rebase_image(image, req, cx.reporting_to(r))
                .await
                .map_err(|e| match e {
                    Error::Check(failure) if several => {
                        Error::Check(failure.on_platform(image.platform()))
                    }
                    e => e,
                })?;
        rebased.push(new);
        reports.push(report);
        locks.extend(lock);
    }
    let artifact = if several {
        let index = mutate::index(rebased)?;
        reporter.step(&format!(
            "index {} ({} platforms)",
            index.digest,
            index.images.len()
        ));
        Artifact::Index(Box::new(index))
    } else {
        match rebased.pop() {
            Some(i) => Artifact::Image(Box::new(i)),
            None => {
                return Err(Error::Input(format!(
                    "{} holds no image to rebase",
                    req.image.describe()
                )));
            }
        }
    };
    Ok(Rebased {
        artifact,
        reports,
        new_lock: locks,
    })
}

/// Where the image's own layers begin, and how that was found.
async fn own_layers_start(
    image: &Image,
    cache: &Cache,
    client: &RegistryClient,
    reporter: &dyn Reporter,
) -> Result<(usize, &'static str)> {
    if let Some(first) = image.layers.iter().position(|l| l.kind != LayerKind::Base)
        && image.layers[first..]
            .iter()
            .all(|l| l.kind != LayerKind::Base)
    {
        return Ok((first, "history"));
    }
    // No history of imgbuild's (another tool rewrote it): the base the labels name, by the
    // digests of its layers.
    let (name, digest) = mutate::named_base(image);
    let not_ours = |why: String| {
        Error::Input(format!(
            "cannot tell the image's own layers from its base's: {why}; rebase takes images that imgbuild built"
        ))
    };
    let (Some(name), Some(digest)) = (name, digest) else {
        return Err(not_ours(
            "its history names no imgbuild layer and its labels no base digest".into(),
        ));
    };
    // A registry base is read pinned to the digest; another source (a layout, an archive) as
    // named, and it must still be that digest.
    let pinned = crate::oci::digest::parse(&digest)?;
    let source = match Source::parse(&name)? {
        Source::Registry(mut r) => {
            r.tag = None;
            r.digest = Some(pinned.clone());
            Source::Registry(r)
        }
        other => other,
    };
    reporter.step(&format!(
        "finding the old base {name} ({digest}) by its layers"
    ));
    let base = source::read_image(&source, Some(&image.platform()), cache, client)
        .await
        .map_err(|e| not_ours(format!("its old base {name} cannot be read ({e})")))?;
    if base.origin.digest.as_ref().is_some_and(|d| *d != pinned) {
        return Err(not_ours(format!(
            "its old base {name} is no longer {digest}"
        )));
    }
    let n = base.layers.len();
    let prefix = image.layers.len() > n
        && base
            .layers
            .iter()
            .zip(&image.layers)
            .all(|(b, i)| b.diff_id == i.diff_id);
    if !prefix {
        return Err(not_ours(format!(
            "the layers of {name} are not the image's lowest layers"
        )));
    }
    Ok((n, "base-layers"))
}

/// What the image's own layers hold, read from their bytes.
struct Own {
    /// The layers kept as they are (the release's), in order.
    kept: Vec<Layer>,
    facts: Vec<LayerFacts>,
    /// The packages of the old packages layer, by name.
    packages: Vec<String>,
    release: Release,
    fs_release: crate::fs::RootFs,
    /// The SHA-256 (hex) of imgbuild's launcher, when the image starts through it: the SBOM
    /// names it as the build's did.
    launcher: Option<String>,
}

/// Is this a file whose text rebase needs (release metadata, dpkg's list of a package)?
fn wanted(workdir: &str) -> impl Fn(&str) -> bool + Send + Sync + 'static {
    let releases = format!("/{}/releases/", workdir.trim_matches('/'));
    move |p: &str| {
        (p.starts_with(&releases) && (p.ends_with("/start_erl.data") || p.ends_with(".rel")))
            || (p.starts_with("/var/lib/dpkg/info/") && p.ends_with(".list"))
    }
}

/// Read the image's own layers: the release's are kept (and read for the check), the packages
/// layer gives the names to install again, the SBOM layer is dropped.
fn read_own(layers: &[Layer], local: &[FileRange], workdir: &str) -> Result<Own> {
    let keep = wanted(workdir);
    let mut kept = Vec::new();
    let mut facts = Vec::new();
    let mut packages = Vec::new();
    let mut texts = std::collections::BTreeMap::new();
    let mut fs = crate::fs::RootFs::new();
    let mut launcher = None;
    for (layer, at) in layers.iter().zip(local) {
        // Each layer into a tree of its own first: the packages and SBOM layers are left out.
        let mut scratch = crate::fs::RootFs::new();
        let f = check::add_layer(&mut scratch, layer, at, workdir, &keep)?;
        let names: Vec<String> = f
            .texts
            .keys()
            .filter_map(|p| p.strip_prefix("/var/lib/dpkg/info/"))
            .filter_map(|n| n.strip_suffix(".list"))
            .map(|n| n.split(':').next().unwrap_or(n).to_string())
            .collect();
        let sbom_only = !scratch.list(&format!("/{}", sbom::SBOM_DIR)).is_empty()
            && !scratch.exists(&format!("/{}", workdir.trim_matches('/')));
        // Found by the base's layers (no history of imgbuild's): the kind from the content.
        let root = format!("/{}", workdir.trim_matches('/'));
        let under = |dir: &str| {
            scratch
                .list(&root)
                .iter()
                .any(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with(dir)))
        };
        let kind = match layer.kind {
            LayerKind::Base if !names.is_empty() => LayerKind::Packages,
            LayerKind::Base if sbom_only => LayerKind::Sbom,
            LayerKind::Base if under("erts-") => LayerKind::Erts,
            LayerKind::Base if under("releases") || under("bin") => LayerKind::Release,
            LayerKind::Base => LayerKind::Deps,
            k => k,
        };
        if kind == LayerKind::Launcher {
            launcher = Some(launcher_sha256(layer, at)?);
        }
        match kind {
            LayerKind::Packages => packages.extend(names),
            LayerKind::Sbom => {}
            _ => {
                fs.overlay(&scratch);
                texts.extend(f.texts.clone());
                let mut layer = layer.clone();
                layer.kind = kind;
                kept.push(layer);
                facts.push(f);
            }
        }
    }
    packages.sort();
    packages.dedup();
    let release = Release::from_image(workdir, &texts, &|p| fs.exists(p))?;
    Ok(Own {
        kept,
        facts,
        packages,
        release,
        fs_release: fs,
        launcher,
    })
}

/// The SHA-256 (hex) of the launcher in its layer: the layer's one executable file.
fn launcher_sha256(layer: &Layer, at: &FileRange) -> Result<String> {
    use sha2::Digest;
    let what = "the image's launcher layer";
    let verified = crate::layer::VerifiedLayer::new(layer, at, what).ok_or_else(|| {
        Error::from(crate::error::ImageError::Internal(format!(
            "{what} is not a tar layer"
        )))
    })?;
    let mut found = None;
    verified.walk(|entry| {
        let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        if entry.header().entry_type().is_file() && executable {
            let mut h = sha2::Sha256::new();
            std::io::copy(entry, &mut h).map_err(|e| verified.corrupt(e))?;
            found = Some(format!("{:x}", h.finalize()));
        }
        Ok(())
    })?;
    found.ok_or_else(|| {
        Error::Input(format!(
            "{what} holds no executable file: it is not imgbuild's"
        ))
    })
}

/// Where a rebase's package versions come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackagesFrom {
    /// imgbuild.lock's pins, as they are.
    Lock,
    /// The package sources (the new base's, or --apt-source) as they are now.
    Resolved,
    /// The image has no runtime packages.
    None,
}

/// What decides a rebase's packages.
struct PlanInput<'a> {
    /// The request the image records ([`super::REQUESTED_LABEL`]), if it does.
    recorded: Option<Vec<String>>,
    /// The packages of its packages layer (the request with its dependencies).
    closure: &'a [String],
    /// The lock's section for this architecture, when there is a lock.
    lock: Option<&'a LockFile>,
    /// The new base's installed packages: name to version.
    base_has: &'a BTreeMap<String, String>,
    lock_path: &'a Path,
    update_lock: bool,
    image: &'a str,
    base: &'a str,
    arch: &'a str,
}

/// The packages to ask for again, where their versions come from, and a line saying so.
#[derive(Debug)]
struct PackagePlan {
    requested: Vec<String>,
    from: PackagesFrom,
    note: String,
}

/// The request the image records in its config label, if any.
fn recorded_request(image: &Image) -> Option<Vec<String>> {
    let labels = image.config.config().as_ref()?.labels().clone()?;
    let value = labels.get(super::REQUESTED_LABEL)?;
    Some(super::requested_names(
        &value
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect::<Vec<_>>(),
    ))
}

/// Decide a rebase's packages. The image's recorded request is asked for again (an image from
/// before the label: the lock's request when its pins are exactly the image's packages, else
/// those packages). The lock in the directory answers when its request is the image's and no
/// pin clashes with a package the new base has; `--update-lock` resolves afresh against the
/// new base and rewrites the pins; without a lock the packages are resolved afresh and nothing
/// is written. A lock that does not fit is an error naming the file and the fix.
fn plan_packages(p: &PlanInput) -> Result<PackagePlan> {
    let lock_name = p.lock_path.display();
    let requested = match (&p.recorded, p.lock) {
        (Some(r), _) => r.clone(),
        (None, Some(l))
            if {
                let mut pinned: Vec<&str> = l.packages.iter().map(|x| x.name.as_str()).collect();
                pinned.sort_unstable();
                pinned.dedup();
                pinned
                    .iter()
                    .copied()
                    .eq(p.closure.iter().map(String::as_str))
            } =>
        {
            l.requested.clone()
        }
        (None, _) => p.closure.to_vec(),
    };
    let plan = |from, note: String| {
        Ok(PackagePlan {
            requested: requested.clone(),
            from,
            note,
        })
    };
    if requested.is_empty() {
        return plan(
            PackagesFrom::None,
            "no runtime packages to install again".into(),
        );
    }
    if p.update_lock {
        return plan(
            PackagesFrom::Resolved,
            format!(
                "packages {requested:?}: resolved against the new base's sources (--update-lock: {lock_name} gets the new pins)"
            ),
        );
    }
    let Some(lock) = p.lock else {
        return plan(
            PackagesFrom::Resolved,
            format!(
                "packages {requested:?}: resolved against the new base's sources ({lock_name} has no {} pins and is not written; --update-lock writes them)",
                p.arch
            ),
        );
    };
    if lock.requested != requested {
        return Err(Error::Usage(format!(
            "{lock_name} pins {:?} for {}, but {} on {} asks for {requested:?} (what it was built asking for{}): that lock belongs to another build. Rebase with --update-lock to resolve {requested:?} against the new base and pin them in {lock_name}, or run rebase in a directory without that lock",
            lock.requested,
            p.arch,
            p.image,
            p.base,
            if p.base.starts_with("deb:") {
                ", and the C library a deb: base always installs"
            } else {
                ""
            }
        )));
    }
    for pin in &lock.packages {
        if let Some(have) = p.base_has.get(&pin.name)
            && *have != pin.version
        {
            return Err(Error::Usage(format!(
                "{lock_name} pins {} {} for {}, but the new base {} has {} {have}: the pins do not fit the new base. Rebase with --update-lock to resolve {requested:?} against the new base and rewrite the {} pins in {lock_name}",
                pin.name, pin.version, p.arch, p.base, pin.name, p.arch
            )));
        }
    }
    plan(
        PackagesFrom::Lock,
        format!(
            "packages {requested:?}: as {lock_name} pins them ({}); --update-lock takes the versions the sources have now",
            lock.packages
                .iter()
                .map(|x| format!("{} {}", x.name, x.version))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// One image rebased: its own layers read, the new base read, the packages installed again
/// over it, the check, a new SBOM, and the image put together.
async fn rebase_image(
    old: &Image,
    req: &RebaseRequest,
    cx: Context<'_>,
) -> Result<(Image, RebaseReport, Option<crate::apt::LockFile>)> {
    let own = read_own_release(old, cx).await?;
    let base = new_base(req, old, own.start, cx).await?;
    let packages = rebase_packages(req, old, &base, &own, cx).await?;
    let check = check_on_new_base(req, old, &base, &own, &packages, cx)?;
    let epoch = old
        .config
        .created()
        .as_deref()
        .and_then(crate::oci::document::parse_rfc3339)
        .unwrap_or(0);
    // A new SBOM: the new base's packages, the release as it was.
    let made_sbom = super::stages::sbom(
        &SbomInput {
            release: &own.release,
            base_name: &base.origin.name,
            base_digest: base.origin.digest.as_ref().map(|d| d.as_ref()),
            architecture: &packages.arch,
            debs: &packages.debs,
            os: packages.os.clone(),
            epoch,
            // The project is not at hand: Hex packages by their applications' names.
            mix_lock: None,
            otp: crate::release::otp::otp_release(&own.release).as_ref(),
            launcher: own.launcher.clone().map(Some),
        },
        cx.cache,
    )?;
    let opts = TarOptions {
        mtime: epoch,
        level: req.compression.1,
        codec: req.compression.0,
    };
    let mut plans: Vec<LayerPlan> = packages.layer.iter().map(|l| l.plan.clone()).collect();
    plans.push(made_sbom.plan.clone());
    let made = layers::release_layers(plans, opts, None, None, cx).await?;
    let mut made: Vec<Layer> = made.into_iter().map(|(l, _)| l).collect();
    let sbom_layer = made.pop();
    let mut own_layers: Vec<Layer> = made; // the packages layer, if any
    own_layers.extend(own.kept.iter().cloned());
    own_layers.extend(sbom_layer);
    let image = put_together(old, &base, own_layers, &own, &made_sbom, &packages.chosen)?;
    cx.reporter.step(&format!(
        "image {} ({} layers, {} of them the new base's)",
        image.digest,
        image.layers.len(),
        base.layers.len()
    ));
    let (old_name, old_digest) = mutate::named_base(old);
    let report = RebaseReport {
        digest: image.digest.to_string(),
        platform: old.platform().to_string(),
        old_base: NamedBase {
            name: old_name,
            digest: old_digest,
        },
        new_base: NamedBase {
            name: Some(base.origin.name.clone()),
            digest: base.origin.digest.as_ref().map(ToString::to_string),
        },
        found_by: own.found_by,
        layers: image
            .layers
            .iter()
            .map(|l| LayerRecord::of(l, None))
            .collect(),
        requested: packages.chosen.requested.clone(),
        packages_from: packages.chosen.from,
        packages: packages
            .locked
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect(),
        check,
        sbom: made_sbom.digest.to_string(),
    };
    Ok((image, report, packages.new_lock))
}

/// The image's own layers found (by its history, else by its old base's layers) and read.
async fn read_own_release(old: &Image, cx: Context<'_>) -> Result<OwnRelease> {
    let Context {
        cache,
        client,
        reporter,
    } = cx;
    let (start, found_by) = own_layers_start(old, cache, client, reporter).await?;
    let workdir = old
        .config
        .config()
        .as_ref()
        .and_then(|c| c.working_dir().clone())
        .filter(|w| w.starts_with('/') && w.len() > 1)
        .unwrap_or_else(|| "/app".to_string());
    // The own layers' bytes, fetched (verified) when they are in a registry.
    let own_layers = old.layers[start..].to_vec();
    let mut local = Vec::new();
    for (i, l) in own_layers.iter().enumerate() {
        let label = format!("image layer {}/{}", i + 1, own_layers.len());
        local.push(source::localize_shown(&l.blob, cache, client, reporter, &label).await?);
    }
    let wd = workdir.clone();
    let own = blocking(move || read_own(&own_layers, &local, &wd)).await?;
    reporter.step(&format!(
        "release {} {}: {} layers kept",
        own.release.name,
        own.release.version,
        own.kept.len()
    ));
    Ok(OwnRelease {
        own,
        start,
        found_by,
        workdir,
    })
}

/// The image's own release, read, and how its layers were told from its base's.
struct OwnRelease {
    own: Own,
    /// Where the image's own layers begin.
    start: usize,
    found_by: &'static str,
    workdir: String,
}

impl std::ops::Deref for OwnRelease {
    type Target = Own;
    fn deref(&self) -> &Own {
        &self.own
    }
}

/// The new base, made fit to build on, for the old image's platform.
async fn new_base(
    req: &RebaseRequest,
    old: &Image,
    own_start: usize,
    cx: Context<'_>,
) -> Result<Image> {
    cx.reporter
        .step(&format!("resolving base {}", req.from.describe()));
    let platform = old.platform();
    let (base, warnings) =
        super::base_image_of(&req.from, Some(&platform), cx.cache, cx.client).await?;
    for w in &warnings {
        cx.reporter.warn(w);
    }
    if base
        .layers
        .iter()
        .map(|l| &l.diff_id)
        .eq(old.layers[..own_start].iter().map(|l| &l.diff_id))
    {
        cx.reporter
            .step("the new base has the same layers as the old one");
    }
    Ok(base)
}

/// The runtime packages of a rebase over the new base's tree.
struct RebasePackages {
    /// The new base's tree with the packages in it.
    fs: crate::fs::RootFs,
    arch: String,
    /// The tree's Debian packages and os-release, for the SBOM.
    debs: Vec<sbom::DebPackage>,
    os: Option<(String, String)>,
    chosen: PackagePlan,
    locked: Vec<crate::apt::Locked>,
    new_lock: Option<LockFile>,
    /// The packages' layer (and the staging directory of its files, until it is written).
    layer: Option<super::stages::PackageLayer>,
}

/// The packages the image asked for, asked for again of the new base (from the lock where it
/// answers), and installed over it.
async fn rebase_packages(
    req: &RebaseRequest,
    old: &Image,
    base: &Image,
    own: &OwnRelease,
    cx: Context<'_>,
) -> Result<RebasePackages> {
    let (mut fs, _) = match check::cached_summary(base, cx.cache) {
        Some(s) => s,
        None => super::read_base(base, cx).await?,
    };
    let arch = base.config.architecture().to_string();
    let mut debs = sbom::debian_packages(&fs);
    let os = sbom::os_version(&fs);
    let lock = LockFile::load(&req.packages.lock_path)?;
    let base_has: BTreeMap<String, String> = debs
        .iter()
        .map(|d| (d.name.clone(), d.version.clone()))
        .collect();
    // Onto a deb:SUITE base: its suite's packages under the shell-less rules, the C library
    // always, and the layer slim with what the release's programs link kept.
    let mut recorded = recorded_request(old);
    let deb = match &req.from {
        Source::Deb { suite } => {
            // Without the launcher the release starts through its /bin/sh scripts, which a
            // deb: base does not have; and the libraries the old base gave are not asked for.
            if own.launcher.is_none() {
                return Err(Error::Usage(format!(
                    "{} starts through the release's /bin/sh scripts (it was built on {}), and deb:{} has no shell: build it again with --from deb:{} --package auto, which adds imgbuild's launcher and the libraries the release links; rebase onto a deb: base takes images built on one (or with --launcher always)",
                    req.image.describe(),
                    mutate::named_base(old)
                        .0
                        .as_deref()
                        .unwrap_or("another base"),
                    suite.name(),
                    suite.name()
                )));
            }
            let mut names = recorded.take().unwrap_or_else(|| own.packages.clone());
            let deb = super::examine::deb_request(*suite, req.packages.deb.clone(), &mut names);
            recorded = Some(super::requested_names(&names));
            Some(deb)
        }
        _ => None,
    };
    let mut linked: Vec<String> = (own.facts.iter())
        .flat_map(|f| f.elves.iter().flat_map(|(_, e)| e.needed.iter().cloned()))
        .collect();
    linked.sort();
    linked.dedup();
    let chosen = plan_packages(&PlanInput {
        recorded,
        closure: &own.packages,
        lock: lock.as_ref().and_then(|f| f.for_arch(&arch)),
        base_has: &base_has,
        lock_path: &req.packages.lock_path,
        update_lock: req.packages.update_lock,
        image: &req.image.describe(),
        base: &base.origin.name,
        arch: &arch,
    })?;
    cx.reporter.step(&chosen.note);
    let packages_req = PackageRequest {
        packages: chosen.requested.clone(),
        // Resolved afresh unless the lock answers (and fits the new base).
        update_lock: chosen.from != PackagesFrom::Lock,
        deb,
        ..req.packages.clone()
    };
    let (mut locked, mut new_lock, mut layer) = (Vec::new(), None, None);
    if !packages_req.packages.is_empty() {
        let env = mutate::rebased_env(base, old);
        let installed =
            super::stages::install_packages(&packages_req, fs, &arch, &env, &mut debs, &linked, cx)
                .await?;
        fs = installed.fs;
        locked = installed.locked;
        // The lock is rewritten only when asked to.
        new_lock = installed.new_lock.filter(|_| req.packages.update_lock);
        for w in &installed.warnings {
            cx.reporter.warn(w);
        }
        layer = Some(installed.layer);
    }
    Ok(RebasePackages {
        fs,
        arch,
        debs,
        os,
        chosen,
        locked,
        new_lock,
        layer,
    })
}

/// The release's files on the new base and its packages, checked (unless `--no-check`).
fn check_on_new_base(
    req: &RebaseRequest,
    old: &Image,
    base: &Image,
    own: &OwnRelease,
    packages: &RebasePackages,
    cx: Context<'_>,
) -> Result<Option<CheckReport>> {
    if !req.check {
        cx.reporter
            .warn("--no-check: the image was not checked against the new base");
        return Ok(None);
    }
    let elves: Vec<_> = own.facts.iter().flat_map(|f| f.elves.clone()).collect();
    // An image that starts through imgbuild's launcher runs none of the release's scripts.
    let launcher = own.kept.iter().any(|l| l.kind == LayerKind::Launcher);
    let scripts: Vec<_> = own
        .facts
        .iter()
        .filter(|_| !launcher)
        .flat_map(|f| f.scripts.clone())
        .collect();
    let env = ImageEnv::from_env(&mutate::rebased_env(base, old));
    let mut fs = packages.fs.clone();
    fs.overlay(&own.fs_release);
    let arch = &packages.arch;
    let report = check::check_release(
        &fs,
        &elves,
        &scripts,
        arch,
        &env,
        &own.release,
        &own.workdir,
    );
    if !report.problems.is_empty() {
        return Err(Error::Check(CheckFailure::new(report)));
    }
    cx.reporter.step(&format!(
        "check: {} can start on {} ({} ELF files resolved{})",
        own.release.name,
        base.origin.name,
        report.elf_files,
        report
            .glibc
            .as_ref()
            .map(|g| format!(", glibc {g}"))
            .unwrap_or_default()
    ));
    Ok(Some(report))
}

/// The rebased image: the new base, the image's own layers, its annotations kept with the new
/// SBOM's, and the label of the packages asked for.
fn put_together(
    old: &Image,
    base: &Image,
    own_layers: Vec<Layer>,
    own: &Own,
    made_sbom: &super::stages::Sbom,
    chosen: &PackagePlan,
) -> Result<Image> {
    let history: Vec<String> = own_layers
        .iter()
        .map(|l| mutate::own_history(l.kind, &own.release))
        .collect();
    let mut annotations: BTreeMap<String, String> =
        serde_json::from_slice::<serde_json::Value>(&old.manifest)
            .ok()
            .and_then(|m| serde_json::from_value(m["annotations"].clone()).ok())
            .unwrap_or_default();
    annotations.insert(SBOM_ANNOTATION.to_string(), made_sbom.digest.to_string());
    let attachments = vec![Attachment {
        artifact_type: media::SPDX_JSON.into(),
        blob: made_sbom.blob.clone(),
    }];
    let mut labels = BTreeMap::new();
    if !chosen.requested.is_empty() {
        labels.insert(
            super::REQUESTED_LABEL.to_string(),
            chosen.requested.join(","),
        );
    }
    mutate::rebase(
        old,
        base,
        own_layers,
        &history,
        &labels,
        annotations,
        attachments,
    )
}

#[cfg(test)]
mod tests;
