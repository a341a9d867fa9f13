//! The build pipeline: inspect the release, read the base, check that the release can start
//! on it, write the release layers in parallel and append them to the base. It returns the
//! image, or for several platforms an index of them (each platform's release native, the
//! main one, or the main one with its ERTS transplanted); writing it anywhere is a sink's job.

pub mod cache_repo;
pub mod layers;
pub mod rebase;
mod stages;
pub mod transplant;

use std::path::PathBuf;

use serde::Serialize;

use crate::apt::PackageRequest;
use crate::blocking;
use crate::cache::Cache;
use crate::check::{self, CheckReport, ImageEnv};
use crate::error::{Error, ImageError, Result};
use crate::layer::{Codec, TarOptions};
use crate::mutate::{self, ImageSettings};
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::{
    Artifact, Attachment, BlobSource, FileRange, Image, Layer, SBOM_ANNOTATION, media,
};
use crate::registry::RegistryClient;
use crate::release::{self, LayerKind, LayerPlan, PlanOptions, Release};
use crate::report::{Prefixed, Reporter};
use crate::sbom::{self, DebPackage, SbomInput};
use crate::source::{self, Source};

#[derive(Clone, Debug)]
pub struct BuildRequest {
    pub release_dir: PathBuf,
    pub from: Source,
    /// The platform being built (`None`: the base's, or the host's from an index).
    pub platform: Option<Platform>,
    /// Every platform asked for; more than one makes an index.
    pub platforms: Vec<Platform>,
    /// An image holding Erlang/OTP for the other platforms (`--otp-from`), for the transplant.
    pub otp_from: Option<Source>,
    /// Releases built natively for a platform (`--release PLATFORM=DIR`).
    pub releases: Vec<(Platform, PathBuf)>,
    pub tags: Vec<Reference>,
    pub settings: ImageSettings,
    pub own_apps: Vec<String>,
    pub drop_cookie: bool,
    /// Compression of the new layers and its level.
    pub compression: (Codec, u32),
    /// Run the start-up check (on by default; `--no-check` turns it off).
    pub check: bool,
    /// Also write the SBOM to this file.
    pub sbom_out: Option<PathBuf>,
    /// Runtime Debian packages (`--package`).
    pub packages: PackageRequest,
    /// The registry cache shared by a fleet of runners (`--cache-repo`).
    pub cache_repo: Option<std::sync::Arc<cache_repo::CacheRepo>>,
    /// Where the image will be pushed (`--push`): each new layer is uploaded there as soon as
    /// it is made.
    pub push_ahead: Vec<Reference>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SbomReport {
    /// Digest of the SPDX document.
    pub digest: String,
    /// Where it is inside the image.
    pub path: String,
    pub applications: usize,
    pub debian_packages: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct BaseReport {
    pub name: String,
    pub digest: Option<String>,
    /// Where the base's summary (its files, for the check and the SBOM) came from: `read`
    /// (its layers were read), `cache` (the local cache) or `cache-repo`.
    pub summary: &'static str,
}

/// A layer as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRecord {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    pub kind: LayerKind,
    /// For the layers of this build: `written`, `cache` (the local layer cache) or
    /// `cache-repo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
}

impl LayerRecord {
    pub fn of(l: &Layer, origin: Option<&'static str>) -> LayerRecord {
        LayerRecord {
            digest: l.blob.digest.to_string(),
            diff_id: l.diff_id.to_string(),
            size: l.blob.size,
            media_type: l.blob.media_type.clone(),
            kind: l.kind,
            origin,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BuildReport {
    /// Digest of the image manifest.
    pub digest: String,
    /// Digest of the image config.
    pub config: String,
    pub tags: Vec<String>,
    pub platform: String,
    pub base: BaseReport,
    pub layers: Vec<LayerRecord>,
    pub warnings: Vec<String>,
    /// How many of the new layers were found unchanged in the layer cache (not compressed).
    pub reused_layers: usize,
    pub sbom: SbomReport,
    /// The start-up check's findings (absent with --no-check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckReport>,
    /// Which native files came from another image (a transplant), and from which.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transplant: Option<transplant::TransplantReport>,
    /// What the user should know to run the image (Phoenix's PHX_SERVER, runtime.exs's
    /// variables).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What went into the image, for its provenance.
    #[serde(skip)]
    pub materials: crate::sign::provenance::Materials,
}

/// What a build gives: an image (one platform) or an index, and what happened on the way.
pub struct Built {
    pub artifact: Artifact,
    pub report: Report,
}

/// The report of one image, or of an index and each of its platforms.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    Image(Box<BuildReport>),
    Index(IndexReport),
}

impl Report {
    pub fn digest(&self) -> &str {
        match self {
            Report::Image(r) => &r.digest,
            Report::Index(r) => &r.digest,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct IndexReport {
    /// Digest of the image index (what the tags point at).
    pub digest: String,
    pub index: String,
    pub media_type: String,
    pub tags: Vec<String>,
    /// Each platform's image, as a single-platform build reports it.
    pub platforms: Vec<BuildReport>,
    pub warnings: Vec<String>,
}

/// Told of each platform's base as soon as it is resolved and made fit to build on. Its layers
/// are the first of that platform's image, so a sink may start on them while the release's
/// layers are made (a tarball does: [`crate::sink::tarball::Early`]).
pub trait Watch: Sync {
    /// `index` is the platform's place in [`BuildRequest::platforms`] (0 for one platform).
    fn base(&self, index: usize, base: &Image);
}

/// Build the image, or for several platforms each platform's image and their index.
pub async fn build(
    req: &BuildRequest,
    cache: &Cache,
    client: &RegistryClient,
    reporter: &dyn Reporter,
    watch: Option<&dyn Watch>,
) -> Result<Built> {
    if req.platforms.len() <= 1 {
        let platform = req.platforms.first().or(req.platform.as_ref());
        let one = build_platform(req, (0, platform), cache, client, reporter, watch).await?;
        save_lock(req, one.new_lock.into_iter().collect(), reporter)?;
        return Ok(Built {
            artifact: Artifact::Image(Box::new(one.image)),
            report: Report::Image(Box::new(one.report)),
        });
    }
    require_base_platforms(req, cache, client).await?;
    // The platforms are built at once: reading each base and compressing each platform's own
    // layers are independent, and the layers they share are written once (the first build to
    // reach one writes it, the other reuses it). Results keep the order asked for.
    let reporters: Vec<Prefixed> = req
        .platforms
        .iter()
        .map(|p| Prefixed {
            inner: reporter,
            prefix: format!("{p}: "),
        })
        .collect();
    let builds = req
        .platforms
        .iter()
        .enumerate()
        .zip(&reporters)
        .map(|((i, p), r)| build_platform(req, (i, Some(p)), cache, client, r, watch));
    let results = futures_util::future::join_all(builds).await;
    // Every platform's check failure is told, each naming its platform first; any other
    // error is the first in the order asked for.
    let failed: Vec<String> = req
        .platforms
        .iter()
        .zip(&results)
        .filter_map(|(p, r)| match r {
            Err(Error::Check(text)) => Some(format!("platform {p}: {text}")),
            _ => None,
        })
        .collect();
    let mut images = Vec::new();
    let mut reports = Vec::new();
    let mut locks = Vec::new();
    for r in results {
        match r {
            Ok(one) => {
                images.push(one.image);
                reports.push(one.report);
                locks.extend(one.new_lock);
            }
            Err(Error::Check(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if !failed.is_empty() {
        return Err(Error::Check(failed.join("\n")));
    }
    save_lock(req, locks, reporter)?;
    let index = mutate::index(images)?;
    reporter.step(&format!(
        "index {} ({} platforms)",
        index.digest,
        index.images.len()
    ));
    let warnings = reports.iter().flat_map(|r| r.warnings.clone()).collect();
    Ok(Built {
        report: Report::Index(IndexReport {
            digest: index.digest.to_string(),
            index: index.digest.to_string(),
            media_type: index.media_type.clone(),
            tags: req.tags.iter().map(Reference::canonical).collect(),
            platforms: reports,
            warnings,
        }),
        artifact: Artifact::Index(Box::new(index)),
    })
}

/// The base must hold every platform asked for: the error names each one missing.
async fn require_base_platforms(
    req: &BuildRequest,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<()> {
    if req.from == Source::Scratch {
        return Ok(());
    }
    let base = source::read(&req.from, &source::Platforms::All, cache, client).await?;
    let have: Vec<Platform> = base
        .images()
        .iter()
        .filter(|i| i.config.os().to_string() != "unknown")
        .map(|i| i.platform())
        .collect();
    let missing: Vec<String> = req
        .platforms
        .iter()
        .filter(|p| {
            !have
                .iter()
                .any(|h| p.matches(&h.os, &h.architecture, h.variant.as_deref()))
        })
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Input(format!(
        "base image {} has no image for {} (it has: {}); choose a multi-platform base that has every --platform",
        req.from.describe(),
        missing.join(", "),
        have.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// One platform's image: its release (given natively with `--release`, else the main one,
/// its ERTS transplanted from `--otp-from` when it is built for another machine).
async fn build_platform(
    req: &BuildRequest,
    (index, platform): (usize, Option<&Platform>),
    cache: &Cache,
    client: &RegistryClient,
    reporter: &dyn Reporter,
    watch: Option<&dyn Watch>,
) -> Result<PlatformBuild> {
    let mut one = req.clone();
    one.platform = platform.cloned();
    let native = platform.and_then(|p| req.releases.iter().find(|(rp, _)| rp == p));
    if let Some((_, dir)) = native {
        one.release_dir = dir.clone();
    }
    // Everything local is checked before the network is touched.
    let (release, mut plans, mut warnings) = plan_release(&one)?;
    // Phoenix: PHX_SERVER where nothing else starts the endpoint; runtime.exs's variables.
    let advice = release::phoenix::advise(&release, one.settings.cmd.as_deref(), &one.settings.env);
    one.settings.env.extend(advice.env);
    for n in &advice.notes {
        reporter.step(n);
    }
    warnings.extend(advice.warnings);
    let watch = watch.map(|w| (index, w));
    let mut transplanted = None;
    let mut base = PlatformBase::ToRead(watch);
    if let Some(p) = platform
        && let Some(want) = crate::fs::elf::machine_for(&p.architecture)
    {
        let natives = transplant::natives(&plans, &req.settings.workdir);
        match transplant::release_machine(&natives) {
            Some(have) if have != want => {
                let name = crate::fs::elf::machine_name(have);
                if let Some((_, dir)) = native {
                    return Err(Error::Input(format!(
                        "--release {p}={}: that release is built for {name}, not {p}",
                        dir.display()
                    )));
                }
                match &req.otp_from {
                    Some(otp) => {
                        reporter.step(&format!(
                            "the release is built for {name}; transplanting its native files for {p} from {}",
                            otp.describe()
                        ));
                        // The base needs nothing from the transplant until the check: it is
                        // read meanwhile.
                        let (b, t) = futures_util::future::try_join(
                            read_base_and_summary(&one, cache, client, reporter, watch),
                            transplant::prepare(&natives, &release, otp, p, cache, client),
                        )
                        .await?;
                        base = PlatformBase::Read(Box::new(b));
                        t.apply(&mut plans, &req.settings.workdir);
                        reporter.step(&format!(
                            "{} native files for {p} from {} ({})",
                            t.report.files.len(),
                            t.report.from,
                            t.report.otp_root
                        ));
                        warnings.extend(t.warning(p));
                        transplanted = Some(t);
                    }
                    None if req.platforms.len() > 1 => {
                        return Err(Error::Input(format!(
                            "the release is built for {name}, so it cannot run on {p}: pass --otp-from IMAGE (an image with the same Erlang/OTP for {p}) to transplant its ERTS, or --release {p}=DIR with a release built there"
                        )));
                    }
                    // One platform: the start-up check names the mismatch.
                    None => {}
                }
            }
            _ => {}
        }
    }
    let mut built = build_one(
        &one, release, plans, warnings, cache, client, reporter, base,
    )
    .await?;
    // The staged native files were needed until the layers were written.
    built.report.transplant = transplanted.map(|t| t.report.clone());
    built.report.notes = advice.notes;
    Ok(built)
}

/// One platform's image, its report, and the package pins it resolved afresh.
struct PlatformBuild {
    image: Image,
    report: BuildReport,
    new_lock: Option<crate::apt::LockFile>,
}

/// Write the pins the build resolved afresh into the lock file, in the order of the platforms.
fn save_lock(
    req: &BuildRequest,
    sections: Vec<crate::apt::LockFile>,
    reporter: &dyn Reporter,
) -> Result<()> {
    if sections.is_empty() {
        return Ok(());
    }
    crate::apt::save_sections(&req.packages.lock_path, sections)?;
    reporter.step(&format!("wrote {}", req.packages.lock_path.display()));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn build_one(
    req: &BuildRequest,
    release: Release,
    plans: Vec<LayerPlan>,
    mut warnings: Vec<String>,
    cache: &Cache,
    client: &RegistryClient,
    reporter: &dyn Reporter,
    base: PlatformBase<'_>,
) -> Result<PlatformBuild> {
    reporter.step(&format!(
        "release {} {} at {}",
        release.name,
        release.version,
        release.root.display()
    ));

    let opts = tar_options(req);
    // The release's layers need nothing from the base: they are made (or found) while the
    // base is read (unless it was already) and checked. The first failure of either ends both.
    let base_and_check = async {
        let based = match base {
            PlatformBase::Read(b) => *b,
            PlatformBase::ToRead(watch) => {
                read_base_and_summary(req, cache, client, reporter, watch).await?
            }
        };
        let seen = inspect_image(
            &based.image,
            based.summary,
            &release,
            &plans,
            req,
            cache,
            client,
            reporter,
        )
        .await?;
        Ok::<_, Error>((based.image, based.warnings, seen))
    };
    let release_layers = layers::release_layers(
        plans.clone(),
        opts,
        cache,
        client,
        req.cache_repo.as_deref(),
        &req.push_ahead,
        reporter,
    );
    let ((base, base_warnings, mut seen), release_made) =
        futures_util::future::try_join(base_and_check, release_layers).await?;
    warnings.extend(base_warnings);
    warnings.extend(std::mem::take(&mut seen.warnings));
    let check = seen.check.take();
    // Runtime packages go right above the base (they change least of all), the SBOM on top.
    let package_layer = seen.packages.take();
    let mut plans: Vec<LayerPlan> = package_layer.iter().map(|p| p.plan.clone()).collect();
    let packages_count = plans.len();

    // The SBOM goes into the image as its own small layer, and beside it as an attachment.
    let mix_lock = crate::release::mix_lock::beside(&release.root);
    let otp = crate::release::otp::otp_release(&release);
    let made_sbom = stages::sbom(
        &SbomInput {
            release: &release,
            base_name: &base.origin.name,
            base_digest: base.origin.digest.as_ref().map(|d| d.as_ref()),
            architecture: base.config.architecture().to_string().as_str(),
            debs: &seen.debs,
            os: seen.os.clone(),
            epoch: req.settings.epoch,
            mix_lock: mix_lock.as_deref(),
            otp: otp.as_ref(),
        },
        cache,
    )?;
    plans.push(made_sbom.plan);
    if let Some(path) = &req.sbom_out {
        crate::atomic::write_file(path, &made_sbom.bytes)?;
        reporter.step(&format!("wrote SBOM {}", path.display()));
    }
    let mut settings = req.settings.clone();
    settings
        .annotations
        .insert(SBOM_ANNOTATION.to_string(), made_sbom.digest.to_string());
    if !seen.requested.is_empty() {
        settings
            .labels
            .insert(REQUESTED_LABEL.to_string(), seen.requested.join(","));
    }

    let mut around = layers::release_layers(
        plans,
        opts,
        cache,
        client,
        req.cache_repo.as_deref(),
        &req.push_ahead,
        reporter,
    )
    .await?;
    let on_top = around.split_off(packages_count);
    let made: Vec<(Layer, layers::Origin)> = around
        .into_iter()
        .chain(release_made)
        .chain(on_top)
        .collect();
    let reused_layers = made
        .iter()
        .filter(|(_, o)| *o != layers::Origin::Written)
        .count();
    let origins: std::collections::HashMap<String, &'static str> = made
        .iter()
        .map(|(l, o)| (l.blob.digest.to_string(), o.as_str()))
        .collect();
    let new_layers: Vec<Layer> = made.into_iter().map(|(l, _)| l).collect();

    let attachments = vec![Attachment {
        artifact_type: media::SPDX_JSON.into(),
        blob: made_sbom.blob,
    }];
    let image = mutate::append(&base, &release, new_layers, &settings, attachments)?;
    reporter.step(&format!(
        "image {} ({} layers)",
        image.digest,
        image.layers.len()
    ));
    for w in &warnings {
        reporter.warn(w);
    }
    let report = BuildReport {
        digest: image.digest.to_string(),
        config: image.config_digest.to_string(),
        tags: req.tags.iter().map(Reference::canonical).collect(),
        platform: format!("{}/{}", image.config.os(), image.config.architecture()),
        base: BaseReport {
            name: base.origin.name.clone(),
            digest: base.origin.digest.as_ref().map(ToString::to_string),
            summary: seen.summary,
        },
        layers: image
            .layers
            .iter()
            .map(|l| {
                let origin = (l.kind != LayerKind::Base)
                    .then(|| origins.get(&l.blob.digest.to_string()).copied())
                    .flatten();
                LayerRecord::of(l, origin)
            })
            .collect(),
        warnings,
        reused_layers,
        sbom: SbomReport {
            digest: made_sbom.digest.to_string(),
            path: format!("/{}", sbom::path_in_image(&release)),
            applications: release.applications.len(),
            debian_packages: seen.debs.len(),
        },
        check,
        transplant: None,
        notes: Vec::new(),
        materials: crate::sign::provenance::Materials {
            base_name: base.origin.name.clone(),
            base_digest: base.origin.digest.as_ref().map(ToString::to_string),
            packages: seen.locked.clone(),
            release: release.name.clone(),
            release_version: release.version.clone(),
            erts_version: release.erts_version.clone(),
            applications: release
                .applications
                .iter()
                .map(|a| (a.name.clone(), a.version.clone()))
                .collect(),
            mix_lock: mix_lock.clone().unwrap_or_default(),
            parameters: parameters(req),
            epoch: req.settings.epoch,
        },
    };
    Ok(PlatformBuild {
        image,
        report,
        new_lock: seen.new_lock,
    })
}

/// The base, read from its source and made fit to build on. Only what must change is
/// fetched here (an uncompressed registry layer, to be gzipped): other registry layers stay
/// where they are until a sink needs their bytes, and a push to their registry mounts them.
async fn base_image(
    req: &BuildRequest,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<(Image, Vec<String>)> {
    base_image_of(&req.from, req.platform.as_ref(), cache, client).await
}

/// As [`base_image`], for any source and platform.
pub(crate) async fn base_image_of(
    from: &Source,
    platform: Option<&Platform>,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<(Image, Vec<String>)> {
    let base = source::read_image(from, platform, cache, client).await?;
    let mut local = Vec::new();
    for l in &base.layers {
        let plain = matches!(
            media::layer_type(&l.blob.media_type),
            media::LayerType::Tar {
                codec: media::Codec::Plain,
                ..
            }
        );
        local.push(match &l.blob.source {
            BlobSource::File(at) => Some(at.clone()),
            BlobSource::Registry(_) if plain => {
                Some(source::localize(&l.blob, cache, client).await?)
            }
            BlobSource::Registry(_) => None,
        });
    }
    let c = cache.clone();
    blocking(move || mutate::normalize_base(base, &local, &c)).await
}

/// Where each layer's bytes lie locally (registry layers fetched into the cache, verified).
async fn local_layers(
    base: &Image,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<Vec<FileRange>> {
    use futures_util::{StreamExt, TryStreamExt};
    futures_util::stream::iter(
        base.layers
            .iter()
            .map(|l| source::localize(&l.blob, cache, client)),
    )
    .buffered(4)
    .try_collect()
    .await
}

/// The options that shaped the image, for the provenance (environment values stay out: only
/// their names).
fn parameters(req: &BuildRequest) -> serde_json::Value {
    let s = &req.settings;
    serde_json::json!({
        "from": req.from.describe(),
        "platform": req.platform.as_ref().map(ToString::to_string),
        "platforms": req.platforms.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "otp_from": req.otp_from.as_ref().map(Source::describe),
        "env": s.env.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "labels": s.labels,
        "annotations": s.annotations,
        "exposed_ports": s.exposed_ports,
        "user": s.user,
        "workdir": s.workdir,
        "cmd": s.cmd,
        "entrypoint": s.entrypoint,
        "apps": req.own_apps,
        "drop_cookie": req.drop_cookie,
        "compression": format!("{}:{}", req.compression.0.name(), req.compression.1),
        "packages": req.packages.packages,
        "check": req.check,
    })
}

/// The config label that records the runtime packages a build asked for (`--package`, with
/// `auto` replaced by what the check chose), comma-separated and sorted: what `rebase` asks
/// for again. The packages installed (with their dependencies) are in the SBOM.
pub(crate) const REQUESTED_LABEL: &str = "dev.imgbuild.packages.requested";

/// The names of a request as the lock and the label keep them: sorted, each once.
pub(crate) fn requested_names(packages: &[String]) -> Vec<String> {
    let mut names = packages.to_vec();
    names.sort();
    names.dedup();
    names
}

/// What reading the base told: the check's report, the Debian packages, os-release.
struct Seen {
    check: Option<CheckReport>,
    debs: Vec<DebPackage>,
    os: Option<(String, String)>,
    warnings: Vec<String>,
    /// The runtime packages' layer, when `--package` asked for some.
    packages: Option<stages::PackageLayer>,
    /// The packages as pinned (SHA256, URL), for the provenance.
    locked: Vec<crate::apt::Locked>,
    /// Pins resolved afresh, for the lock file once the build has succeeded.
    new_lock: Option<crate::apt::LockFile>,
    /// The package names asked for (see [`REQUESTED_LABEL`]).
    requested: Vec<String>,
    /// Where the base's summary came from (see [`BaseReport::summary`]).
    summary: &'static str,
}

/// How the request's layers are tarred and compressed.
fn tar_options(req: &BuildRequest) -> TarOptions {
    TarOptions {
        mtime: req.settings.epoch,
        level: req.compression.1,
        codec: req.compression.0,
    }
}

/// Inspect the release and plan its layers, as the request says.
fn plan_release(req: &BuildRequest) -> Result<(Release, Vec<LayerPlan>, Vec<String>)> {
    let release = Release::inspect(&req.release_dir)?;
    let plan_opts = PlanOptions {
        workdir: req.settings.workdir.clone(),
        own_apps: req.own_apps.clone(),
        drop_cookie: req.drop_cookie,
    };
    let (plans, warnings) = release::plan_layers(&release, &plan_opts)?;
    Ok((release, plans, warnings))
}

/// Only the start-up check: the release against the base, nothing written.
pub async fn check_only(
    req: &BuildRequest,
    cache: &Cache,
    client: &RegistryClient,
    reporter: &dyn Reporter,
) -> Result<CheckReport> {
    let (release, plans, _) = plan_release(req)?;
    let (base, base_warnings) = base_image(req, cache, client).await?;
    let summary = summarise(&base, req, cache, client, reporter).await?;
    let seen = inspect_image(
        &base, summary, &release, &plans, req, cache, client, reporter,
    )
    .await?;
    for w in base_warnings.iter().chain(&seen.warnings) {
        reporter.warn(w);
    }
    seen.check
        .ok_or_else(|| Error::from(ImageError::Internal("the check did not run".to_string())))
}

/// `--package auto`: exactly the Debian packages the start-up check finds missing (by the
/// libraries the release needs and the base lacks), plus `ca-certificates` when the release
/// uses `:ssl` or `:public_key` and the base has no CA bundle. Says which and why; the lock
/// then pins them like any others.
async fn auto_packages(
    fs: &crate::fs::RootFs,
    release: &Release,
    plans: &[LayerPlan],
    req: &BuildRequest,
    arch: &str,
    base: &Image,
    reporter: &dyn Reporter,
) -> Result<PackageRequest> {
    let explicit: Vec<String> = req
        .packages
        .packages
        .iter()
        .filter(|p| *p != "auto")
        .cloned()
        .collect();
    let (fs, plans, workdir, arch2) = (
        fs.clone(),
        plans.to_vec(),
        req.settings.workdir.clone(),
        arch.to_string(),
    );
    let env = ImageEnv::from_env(&mutate::final_env(base, &req.settings));
    let report = blocking(move || {
        let mut fs = fs;
        let elves = check::add_entries(&mut fs, &plans)?;
        let scripts = check::release_scripts(&plans, &workdir)?;
        Ok((check::check(&fs, &elves, &scripts, &arch2, &env), fs))
    })
    .await?;
    let (report, fs) = report;
    // What no package fixes (a library of unknown origin, too old a glibc) is left to the
    // check, which runs next and says what to do.
    let mut chosen: Vec<(String, String)> = Vec::new();
    for p in &report.problems {
        if let Some(pkg) = check::debian_package_for(&p.needs)
            && !chosen.iter().any(|(c, _)| c == pkg)
        {
            let file = p.file.rsplit('/').next().unwrap_or(&p.file);
            chosen.push((pkg.to_string(), format!("{file} needs {}", p.needs)));
        }
    }
    let tls = release
        .applications
        .iter()
        .find(|a| a.name == "ssl" || a.name == "public_key");
    if let Some(app) = tls
        && !fs.exists("/etc/ssl/certs/ca-certificates.crt")
    {
        chosen.push((
            "ca-certificates".into(),
            format!(
                "the release uses :{} and the base has no CA bundle",
                app.name
            ),
        ));
    }
    if chosen.is_empty() {
        reporter.step("--package auto: the base has everything the release needs");
    } else {
        reporter.step(&format!(
            "--package auto: {}",
            chosen
                .iter()
                .map(|(p, why)| format!("{p} ({why})"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut packages = explicit;
    for (p, _) in chosen {
        if !packages.contains(&p) {
            packages.push(p);
        }
    }
    Ok(PackageRequest {
        packages,
        ..req.packages.clone()
    })
}

/// The base's summary from the cache repository, when it has one made from exactly the base's
/// layers (then kept locally too). An entry for other layers is warned about and ignored.
async fn shared_summary(
    req: &BuildRequest,
    base: &Image,
    cache: &Cache,
    client: &RegistryClient,
    reporter: &dyn Reporter,
) -> Option<(crate::fs::RootFs, Vec<String>)> {
    let repo = req.cache_repo.as_ref()?;
    let bytes = repo
        .summary(client, cache, &check::summary_key(base), reporter)
        .await?;
    match check::summary_of(base, &bytes) {
        Some(summary) => {
            check::keep_summary(base, &bytes, cache);
            reporter.step("base summary from the cache repository");
            Some(summary)
        }
        None => {
            reporter.warn(&format!(
                "cache repository {}: the summary stored for base {} is not one of its layers (stale or poisoned); reading the base",
                repo.reference().name(),
                base.origin.name
            ));
            None
        }
    }
}

/// Read the base's layers (fetched into the cache first when they are in a registry) and make
/// its summary. A base layer found damaged in the cache is removed on detection and fetched
/// again, once.
pub(crate) async fn read_base(
    base: &Image,
    cache: &Cache,
    client: &RegistryClient,
    reporter: &dyn Reporter,
) -> Result<(crate::fs::RootFs, Vec<String>)> {
    let local = local_layers(base, cache, client).await?;
    let (b, c) = (base.clone(), cache.clone());
    match blocking(move || check::base_rootfs(&b, &local, &c)).await {
        Err(Error::DigestMismatch {
            expected, actual, ..
        }) if base.origin.reference.is_some() => {
            // A warning, not progress: damage on disk is worth seeing even with --quiet.
            reporter.warn(&format!(
                "base layer {expected} was damaged in the cache (it hashed to {actual}); fetching it again"
            ));
            let local = local_layers(base, cache, client).await?;
            let (b, c) = (base.clone(), cache.clone());
            blocking(move || check::base_rootfs(&b, &local, &c)).await
        }
        r => r,
    }
}

/// The base's files as a virtual tree, and where they were read from.
struct Summary {
    /// See [`BaseReport::summary`].
    from: &'static str,
    fs: crate::fs::RootFs,
    warnings: Vec<String>,
}

/// The base's summary: from an earlier build (no base layer read or downloaded), else from the
/// cache repository, else read from the base's layers (and shared through the cache
/// repository).
async fn summarise(
    base: &Image,
    req: &BuildRequest,
    cache: &Cache,
    client: &RegistryClient,
    reporter: &dyn Reporter,
) -> Result<Summary> {
    let summary = |from, (fs, warnings)| Summary { from, fs, warnings };
    if let Some(known) = check::cached_summary(base, cache) {
        return Ok(summary("cache", known));
    }
    if let Some(shared) = shared_summary(req, base, cache, client, reporter).await {
        return Ok(summary("cache-repo", shared));
    }
    let read = read_base(base, cache, client, reporter).await?;
    if let Some(repo) = &req.cache_repo
        && let Some(bytes) = check::summary_bytes(base, cache)
    {
        let key = check::summary_key(base);
        repo.put_summary(client, cache, &key, &bytes, reporter)
            .await;
    }
    Ok(summary("read", read))
}

/// The base, made fit to build on, with its warnings and its summary.
struct BaseRead {
    image: Image,
    warnings: Vec<String>,
    summary: Summary,
}

/// A platform's base as its build gets it: read already (while its native files were
/// transplanted), or to be read, telling the watch once it is resolved.
enum PlatformBase<'a> {
    Read(Box<BaseRead>),
    ToRead(Option<(usize, &'a dyn Watch)>),
}

/// Resolve the base and summarise it; `watch` is told the base as soon as it is resolved.
async fn read_base_and_summary(
    req: &BuildRequest,
    cache: &Cache,
    client: &RegistryClient,
    reporter: &dyn Reporter,
    watch: Option<(usize, &dyn Watch)>,
) -> Result<BaseRead> {
    reporter.step(&format!("resolving base {}", req.from.describe()));
    let (image, warnings) = base_image(req, cache, client).await?;
    if let Some((index, w)) = watch {
        w.base(index, &image);
    }
    let summary = summarise(&image, req, cache, client, reporter).await?;
    Ok(BaseRead {
        image,
        warnings,
        summary,
    })
}

/// Read the base's files into a virtual tree (for the SBOM's packages), install the runtime
/// packages into a layer of their own, add the release, and unless turned off check that the
/// image can start.
#[allow(clippy::too_many_arguments)]
async fn inspect_image(
    base: &Image,
    summary: Summary,
    release: &Release,
    plans: &[LayerPlan],
    req: &BuildRequest,
    cache: &Cache,
    client: &RegistryClient,
    reporter: &dyn Reporter,
) -> Result<Seen> {
    let Summary {
        from: summary_from,
        mut fs,
        mut warnings,
    } = summary;
    let mut debs = sbom::debian_packages(&fs);
    let os = sbom::os_version(&fs);
    let arch = base.config.architecture().to_string();
    let mut packages = None;
    let mut locked = Vec::new();
    let mut new_lock = None;
    let auto;
    let packages_req = if req.packages.packages.iter().any(|p| p == "auto") {
        auto = auto_packages(
            &fs,
            release,
            plans,
            req,
            &base.config.architecture().to_string(),
            base,
            reporter,
        )
        .await?;
        &auto
    } else {
        &req.packages
    };
    if !packages_req.packages.is_empty() {
        let env = mutate::final_env(base, &req.settings);
        let cx = stages::Env {
            cache,
            client,
            reporter,
        };
        let installed =
            stages::install_packages(packages_req, fs, &arch, &env, &mut debs, cx).await?;
        fs = installed.fs;
        locked = installed.locked;
        new_lock = installed.new_lock;
        packages = Some(installed.layer);
        warnings.extend(installed.warnings);
    }
    let check = if req.check {
        let (plans, workdir) = (plans.to_vec(), req.settings.workdir.clone());
        let env = ImageEnv::from_env(&mutate::final_env(base, &req.settings));
        let (c, opts) = (cache.clone(), tar_options(req));
        let release = release.clone();
        Some(
            blocking(move || {
                let mut fs = fs;
                let keys: Vec<_> = plans
                    .iter()
                    .map(|p| crate::layer::stat_key(&p.entries, opts))
                    .collect();
                let elves = check::add_entries_cached(&mut fs, &plans, &keys, &c)?;
                let scripts = check::release_scripts(&plans, &workdir)?;
                Ok(check::check_release(
                    &fs, &elves, &scripts, &arch, &env, &release, &workdir,
                ))
            })
            .await?,
        )
    } else {
        None
    };
    match &check {
        None => warnings.push(
            "--no-check: the image was not checked against the base; it may fail at start".into(),
        ),
        Some(report) if !report.problems.is_empty() => {
            return Err(Error::Check(report.render()));
        }
        Some(report) => reporter.step(&format!(
            "check: {} can start here ({} ELF files resolved{})",
            release.name,
            report.elf_files,
            report
                .glibc
                .as_ref()
                .map(|g| format!(", glibc {g}"))
                .unwrap_or_default()
        )),
    }
    Ok(Seen {
        check,
        debs,
        os,
        warnings,
        packages,
        locked,
        new_lock,
        requested: requested_names(&packages_req.packages),
        summary: summary_from,
    })
}
