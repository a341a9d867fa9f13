//! The build pipeline: inspect the release, read the base, check that the release can start
//! on it, write the release layers in parallel and append them to the base. It returns the
//! image, or for several platforms an index of them (each platform's release native, the
//! main one, or the main one with its ERTS transplanted); writing it anywhere is a sink's job.

mod base;
pub mod cache_repo;
pub mod debug;
mod examine;
pub mod layers;
pub mod rebase;
mod report;
mod stages;
#[cfg(test)]
mod tests;
pub mod transplant;

use std::path::PathBuf;

use crate::apt::PackageRequest;
use crate::check::{CheckFailure, CheckReport};
use crate::context::Context;
use crate::error::{Error, ImageError, Result};
use crate::layer::{Codec, TarOptions};
use crate::mutate::{self, ImageSettings};
use crate::observe::Observer;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::{Artifact, Attachment, Image, Layer, SBOM_ANNOTATION, media};
use crate::release::{self, LayerPlan, PlanOptions, Release};
use crate::report::{Prefixed, Reporter};
use crate::sbom::SbomInput;
use crate::source::Source;

use self::base::{
    PlatformBase, Tell, base_image, read_base_and_summary, require_base_platforms, summarise,
};
pub(crate) use self::base::{base_image_of, read_base};
use self::examine::{Seen, inspect_image};
pub use self::report::{
    BaseReport, BuildReport, Built, DebugBuilt, DebugImageReport, DebugReport, IndexReport,
    LayerRecord, Report, SbomReport,
};

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
    /// Whether the image starts through imgbuild's launcher instead of the release's scripts.
    pub launcher: LauncherMode,
    /// `--debug`: also the debug image, with busybox-static from this Debian suite and mirror.
    pub debug: Option<crate::apt::debian::DebBase>,
}

/// `--launcher`: imgbuild's shell-less launcher at `bin/NAME`, when the base has no `/bin/sh`
/// (`auto`, the default), always, or never (the release's own scripts, which need a shell).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LauncherMode {
    #[default]
    Auto,
    Always,
    Never,
}

/// Build the image, or for several platforms each platform's image and their index.
pub async fn build(
    req: &BuildRequest,
    cx: Context<'_>,
    observer: Option<&dyn Observer>,
) -> Result<Built> {
    let reporter = cx.reporter;
    if req.platforms.len() <= 1 {
        let platform = req.platforms.first().or(req.platform.as_ref());
        let one = build_platform(req, (0, platform), cx, observer).await?;
        let mut locks: Vec<crate::apt::LockFile> = one.new_lock.into_iter().collect();
        let debug = match &req.debug {
            Some(_) => {
                let (image, report, lock) = debug::debug_image(req, &one.image, cx).await?;
                locks.extend(lock);
                Some(report::DebugBuilt {
                    report: report::DebugReport {
                        digest: image.digest.to_string(),
                        tags: debug_tag_names(req)?,
                        platforms: vec![report],
                    },
                    artifact: Artifact::Image(Box::new(image)),
                })
            }
            None => None,
        };
        save_lock(req, locks, reporter)?;
        return Ok(Built {
            artifact: Artifact::Image(Box::new(one.image)),
            report: Report::Image(Box::new(one.report)),
            debug,
        });
    }
    require_base_platforms(req, cx).await?;
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
        .map(|((i, p), r)| build_platform(req, (i, Some(p)), cx.reporting_to(r), observer));
    let results = futures_util::future::join_all(builds).await;
    // Every platform's check failure is told, each naming its platform first; any other
    // error is the first in the order asked for.
    let mut failed = Vec::new();
    let mut images = Vec::new();
    let mut reports = Vec::new();
    let mut locks = Vec::new();
    for (p, r) in req.platforms.iter().zip(results) {
        match r {
            Ok(one) => {
                images.push(one.image);
                reports.push(one.report);
                locks.extend(one.new_lock);
            }
            Err(Error::Check(failure)) => failed.push(failure.on_platform(p)),
            Err(e) => return Err(e),
        }
    }
    if !failed.is_empty() {
        return Err(Error::Check(CheckFailure::join(failed)));
    }
    let debug = match &req.debug {
        Some(_) => {
            let mut debug_images = Vec::new();
            let mut debug_reports = Vec::new();
            for (image, r) in images.iter().zip(&reporters) {
                let (d, report, lock) = debug::debug_image(req, image, cx.reporting_to(r)).await?;
                debug_images.push(d);
                debug_reports.push(report);
                locks.extend(lock);
            }
            let index = mutate::index(debug_images)?;
            reporter.step(&format!("debug index {}", index.digest));
            Some(report::DebugBuilt {
                report: report::DebugReport {
                    digest: index.digest.to_string(),
                    tags: debug_tag_names(req)?,
                    platforms: debug_reports,
                },
                artifact: Artifact::Index(Box::new(index)),
            })
        }
        None => None,
    };
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
        debug,
    })
}

/// The debug image's tags, as the report names them.
fn debug_tag_names(req: &BuildRequest) -> Result<Vec<String>> {
    Ok(debug::debug_tags(&req.tags)?
        .iter()
        .map(Reference::canonical)
        .collect())
}

/// One platform's image: its release (given natively with `--release`, else the main one,
/// its ERTS transplanted from `--otp-from` when it is built for another machine).
async fn build_platform(
    req: &BuildRequest,
    (index, platform): (usize, Option<&Platform>),
    cx: Context<'_>,
    observer: Option<&dyn Observer>,
) -> Result<PlatformBuild> {
    let Context {
        cache,
        client,
        reporter,
    } = cx;
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
    let tell = Tell {
        platform: index,
        observer,
    };
    let mut transplanted = None;
    let mut base = PlatformBase::ToRead;
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
                            read_base_and_summary(&one, cx, tell),
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
    let planned = Planned {
        release,
        plans,
        warnings,
    };
    let mut built = build_one(&one, planned, cx, base, tell).await?;
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

/// A release read and planned into layers, with what planning warned about.
struct Planned {
    release: Release,
    plans: Vec<LayerPlan>,
    warnings: Vec<String>,
}

/// One platform's image: the base stage (read, packages, check) and the release's layers at
/// once, then the packages' and the SBOM's layers around the release's, all appended to the
/// base.
async fn build_one(
    req: &BuildRequest,
    planned: Planned,
    cx: Context<'_>,
    base: PlatformBase,
    tell: Tell<'_>,
) -> Result<PlatformBuild> {
    let Planned {
        release,
        plans,
        mut warnings,
    } = planned;
    cx.reporter.step(&format!(
        "release {} {} at {}",
        release.name,
        release.version,
        release.root.display()
    ));
    // The release's layers need nothing from the base: they are made (or found) while the
    // base is read (unless it was already) and checked. The first failure of either ends both.
    let base_and_check = async {
        let based = match base {
            PlatformBase::Read(b) => *b,
            PlatformBase::ToRead => read_base_and_summary(req, cx, tell).await?,
        };
        let seen = inspect_image(&based.image, based.summary, &release, &plans, req, cx).await?;
        Ok::<_, Error>((based.image, based.warnings, seen))
    };
    let release_layers = layers::release_layers(
        plans.clone(),
        tar_options(req),
        req.cache_repo.as_deref(),
        tell.observer,
        cx,
    );
    let ((base, base_warnings, mut seen), release_made) =
        futures_util::future::try_join(base_and_check, release_layers).await?;
    warnings.extend(base_warnings);
    warnings.extend(std::mem::take(&mut seen.warnings));

    let mix_lock = crate::release::mix_lock::beside(&release.root);
    let launcher = match &seen.launcher {
        Some(l) => Some(stages::launcher_layer(
            l,
            &base.config.architecture().to_string(),
            &plans,
            cx.cache,
        )?),
        None => None,
    };
    let launcher_sha256 = launcher.as_ref().map(|l| l.sha256.clone());
    let made_sbom = sbom_stage(
        req,
        &release,
        &base,
        &seen,
        (mix_lock.as_deref(), launcher_sha256),
        cx,
    )?;
    let made = layers_in_order(
        req,
        seen.packages.take(),
        launcher,
        &made_sbom,
        release_made,
        cx,
        tell,
    )
    .await?;
    let attachments = vec![Attachment {
        artifact_type: media::SPDX_JSON.into(),
        blob: made_sbom.blob.clone(),
    }];
    let new_layers = made.iter().map(|(l, _)| l.clone()).collect();
    let settings = image_settings(req, &made_sbom, &seen);
    let image = mutate::append(&base, &release, new_layers, &settings, attachments)?;
    cx.reporter.step(&format!(
        "image {} ({} layers)",
        image.digest,
        image.layers.len()
    ));
    for w in &warnings {
        cx.reporter.warn(w);
    }
    let new_lock = seen.new_lock.take();
    let report = report::image_report(report::ImageFacts {
        req,
        image: &image,
        base: &base,
        release: &release,
        seen,
        made: &made,
        sbom_digest: &made_sbom.digest,
        mix_lock: mix_lock.unwrap_or_default(),
        warnings,
    });
    Ok(PlatformBuild {
        image,
        report,
        new_lock,
    })
}

/// The SBOM stage of a build: the document of the release, its base and packages (also written
/// to `--sbom-out`), with the release's mix.lock and the launcher's SHA-256 (hex) when the image
/// starts through it.
fn sbom_stage(
    req: &BuildRequest,
    release: &Release,
    base: &Image,
    seen: &Seen,
    (mix_lock, launcher): (Option<&[crate::release::mix_lock::Dep]>, Option<String>),
    cx: Context<'_>,
) -> Result<stages::Sbom> {
    let otp = crate::release::otp::otp_release(release);
    let launcher = launcher.map(Some);
    let made = stages::sbom(
        &SbomInput {
            release,
            base_name: &base.origin.name,
            base_digest: base.origin.digest.as_ref().map(|d| d.as_ref()),
            architecture: base.config.architecture().to_string().as_str(),
            debs: &seen.debs,
            os: seen.os.clone(),
            epoch: req.settings.epoch,
            mix_lock,
            otp: otp.as_ref(),
            launcher,
        },
        cx.cache,
    )?;
    if let Some(path) = &req.sbom_out {
        crate::atomic::write_file(path, &made.bytes)?;
        cx.reporter.step(&format!("wrote SBOM {}", path.display()));
    }
    Ok(made)
}

/// The build's own layers in image order: the runtime packages' right above the base (they
/// change least of all), then the release's, the launcher's and the SBOM's on top.
async fn layers_in_order(
    req: &BuildRequest,
    packages: Option<stages::PackageLayer>,
    launcher: Option<stages::LauncherLayer>,
    sbom: &stages::Sbom,
    release_made: Vec<(Layer, layers::Origin)>,
    cx: Context<'_>,
    tell: Tell<'_>,
) -> Result<Vec<(Layer, layers::Origin)>> {
    // `packages` holds the staging directory of its files: it lives until they are written.
    let mut plans: Vec<LayerPlan> = packages.iter().map(|p| p.plan.clone()).collect();
    let packages_count = plans.len();
    plans.extend(launcher.iter().map(|l| l.plan.clone()));
    plans.push(sbom.plan.clone());
    let mut around = layers::release_layers(
        plans,
        tar_options(req),
        req.cache_repo.as_deref(),
        tell.observer,
        cx,
    )
    .await?;
    drop(packages);
    drop(launcher);
    let on_top = around.split_off(packages_count);
    Ok(around
        .into_iter()
        .chain(release_made)
        .chain(on_top)
        .collect())
}

/// The image's settings as asked for, with the SBOM's annotation and the label that records
/// the packages asked for. With the launcher and no command or entrypoint given, the launcher
/// is the entrypoint and its default command the command: `docker run IMAGE eval EXPR` works.
fn image_settings(req: &BuildRequest, sbom: &stages::Sbom, seen: &Seen) -> ImageSettings {
    let requested = &seen.requested;
    let mut settings = req.settings.clone();
    if let Some(l) = &seen.launcher
        && settings.cmd.is_none()
        && settings.entrypoint.is_none()
    {
        settings.entrypoint = Some(vec![format!("/{}", l.path)]);
        settings.cmd = Some(vec![l.default_command.clone()]);
    }
    settings
        .annotations
        .insert(SBOM_ANNOTATION.to_string(), sbom.digest.to_string());
    if !requested.is_empty() {
        settings
            .labels
            .insert(REQUESTED_LABEL.to_string(), requested.join(","));
    }
    settings
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
pub async fn check_only(req: &BuildRequest, cx: Context<'_>) -> Result<CheckReport> {
    let (release, plans, _) = plan_release(req)?;
    let (base, base_warnings) = base_image(req, cx.cache, cx.client).await?;
    let summary = summarise(&base, req, cx).await?;
    let seen = inspect_image(&base, summary, &release, &plans, req, cx).await?;
    for w in base_warnings.iter().chain(&seen.warnings) {
        cx.reporter.warn(w);
    }
    seen.check
        .ok_or_else(|| Error::from(ImageError::Internal("the check did not run".to_string())))
}
