//! The build pipeline: inspect the release, resolve the base, write the release layers in
//! parallel, assemble the image and write the requested outputs.

use std::path::PathBuf;

use serde::Serialize;

use crate::base::{self, BaseImage, BaseSource};
use crate::cache::Cache;
use crate::check::{self, CheckReport, ImageEnv};
use crate::error::{Error, Result};
use crate::image::{self, Image, ImageSettings, LayerRecord};
use crate::layer::{self, LayerBlob, TarOptions};
use crate::output;
use crate::platform::Platform;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::release::{self, LayerKind, LayerPlan, PlanOptions, Release};

#[derive(Clone, Debug)]
pub struct BuildRequest {
    pub release_dir: PathBuf,
    pub from: BaseSource,
    pub platform: Option<Platform>,
    pub tags: Vec<Reference>,
    pub output: Option<PathBuf>,
    pub oci_layout: Option<PathBuf>,
    pub settings: ImageSettings,
    pub own_apps: Vec<String>,
    pub drop_cookie: bool,
    pub gzip_level: u32,
    /// Run the start-up check (on by default; `--no-check` turns it off).
    pub check: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct BaseReport {
    pub name: String,
    pub digest: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BuildReport {
    /// Digest of the image manifest.
    pub digest: String,
    /// Digest of the image config.
    pub config: String,
    pub tags: Vec<String>,
    pub output: Option<String>,
    pub oci_layout: Option<String>,
    pub platform: String,
    pub base: BaseReport,
    pub layers: Vec<LayerRecord>,
    pub warnings: Vec<String>,
    /// The start-up check's findings (absent with --no-check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckReport>,
    /// Set by `--push`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<crate::push::PushReport>,
    #[serde(skip)]
    pub image: Option<Image>,
    /// The base's registry reference (a mount source when pushing).
    #[serde(skip)]
    pub base_reference: Option<Reference>,
}

pub fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / 1_048_576.0),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub async fn build(
    req: &BuildRequest,
    cache: &Cache,
    client: &RegistryClient,
    progress: &dyn Progress,
) -> Result<BuildReport> {
    // Everything local is checked before the network is touched.
    let release = Release::inspect(&req.release_dir)?;
    let plan_opts = PlanOptions {
        workdir: req.settings.workdir.clone(),
        own_apps: req.own_apps.clone(),
        drop_cookie: req.drop_cookie,
    };
    let (plans, mut warnings) = release::plan_layers(&release, &plan_opts)?;
    progress.step(&format!(
        "release {} {} at {}",
        release.name,
        release.version,
        release.root.display()
    ));

    progress.step(&format!("resolving base {}", describe(&req.from)));
    let base = base::resolve(&req.from, req.platform.as_ref(), cache, client).await?;
    warnings.extend(base.warnings.iter().cloned());

    let check = inspect_image(&base, &release, &plans, req, cache, client, progress).await?;
    warnings.extend(check.1);
    let check = check.0;

    let opts = TarOptions {
        mtime: req.settings.epoch,
        level: req.gzip_level,
    };
    let cache2 = cache.clone();
    let built: Vec<(LayerKind, LayerBlob)> = tokio::task::spawn_blocking(move || {
        // One thread per layer: the layers are independent, and compression dominates.
        std::thread::scope(|s| {
            let handles: Vec<_> = plans
                .iter()
                .map(|plan| {
                    let cache = &cache2;
                    s.spawn(move || {
                        layer::write_layer(&plan.entries, opts, cache).map(|b| (plan.kind, b))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Image("internal: a layer writer panicked".into()))
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
    })
    .await
    .map_err(|e| Error::Image(format!("internal: layer workers failed: {e}")))??;
    for (kind, blob) in &built {
        progress.step(&format!(
            "layer {:<7} {} ({})",
            kind.as_str(),
            blob.digest,
            human_size(blob.size)
        ));
    }

    let image = image::assemble(&base, &release, &built, &req.settings, cache)?;
    progress.step(&format!(
        "image {} ({} layers)",
        image.manifest_digest,
        image.layers.len()
    ));

    if req.output.is_some() || req.oci_layout.is_some() {
        // Only outputs that carry the base's bytes fetch them.
        base::fetch_layers(&base, cache, client).await?;
    }
    if let Some(out) = &req.output {
        output::write_tarball(out, &image, &req.tags, cache, req.settings.epoch)?;
        progress.step(&format!("wrote {}", out.display()));
    }
    if let Some(dir) = &req.oci_layout {
        output::write_oci_layout(dir, &image, &req.tags, cache)?;
        progress.step(&format!("wrote OCI layout {}", dir.display()));
    }
    for w in &warnings {
        eprintln!("imgbuild: warning: {w}");
    }
    Ok(BuildReport {
        digest: image.manifest_digest.to_string(),
        config: image.config_digest.to_string(),
        tags: req.tags.iter().map(Reference::canonical).collect(),
        output: req.output.as_ref().map(|p| p.display().to_string()),
        oci_layout: req.oci_layout.as_ref().map(|p| p.display().to_string()),
        platform: format!("{}/{}", image.os, image.architecture),
        base: BaseReport {
            name: base.name.clone(),
            digest: base.manifest_digest.as_ref().map(ToString::to_string),
        },
        layers: image.layers.clone(),
        warnings,
        check,
        push: None,
        image: Some(image),
        base_reference: base.reference.clone(),
    })
}

/// Only the start-up check: the release against the base, nothing written.
pub async fn check_only(
    req: &BuildRequest,
    cache: &Cache,
    client: &RegistryClient,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let release = Release::inspect(&req.release_dir)?;
    let plan_opts = PlanOptions {
        workdir: req.settings.workdir.clone(),
        own_apps: req.own_apps.clone(),
        drop_cookie: req.drop_cookie,
    };
    let (plans, _) = release::plan_layers(&release, &plan_opts)?;
    let base = base::resolve(&req.from, req.platform.as_ref(), cache, client).await?;
    let (report, warnings) =
        inspect_image(&base, &release, &plans, req, cache, client, progress).await?;
    for w in warnings {
        eprintln!("imgbuild: warning: {w}");
    }
    report.ok_or_else(|| Error::Image("internal: the check did not run".into()))
}

/// Read the base's files into a virtual tree, add the release, and (unless turned off) check
/// that the image can start. Returns the report and warnings.
async fn inspect_image(
    base: &BaseImage,
    release: &Release,
    plans: &[LayerPlan],
    req: &BuildRequest,
    cache: &Cache,
    client: &RegistryClient,
    progress: &dyn Progress,
) -> Result<(Option<CheckReport>, Vec<String>)> {
    if !req.check {
        return Ok((
            None,
            vec![
                "--no-check: the image was not checked against the base; it may fail at start"
                    .into(),
            ],
        ));
    }
    base::fetch_layers(base, cache, client).await?;
    let (base, plans, cache) = (base.clone(), plans.to_vec(), cache.clone());
    let workdir = req.settings.workdir.clone();
    let env = image_env(&base, &req.settings);
    let name = release.name.clone();
    let (report, warnings) = tokio::task::spawn_blocking(move || -> Result<_> {
        let (mut fs, warnings) = check::base_rootfs(&base, &cache)?;
        let elves = check::add_release(&mut fs, &plans)?;
        let scripts = check::release_scripts(&plans, &workdir)?;
        let arch = base.config.architecture().to_string();
        Ok((check::check(&fs, &elves, &scripts, &arch, &env), warnings))
    })
    .await
    .map_err(|e| Error::Image(format!("internal: the check failed: {e}")))??;
    if !report.problems.is_empty() {
        return Err(Error::Check(report.render()));
    }
    progress.step(&format!(
        "check: {name} can start here ({} ELF files resolved{})",
        report.elf_files,
        report
            .glibc
            .as_ref()
            .map(|g| format!(", glibc {g}"))
            .unwrap_or_default()
    ));
    Ok((Some(report), warnings))
}

/// The environment the container will have: the base's, then the image settings'.
fn image_env(base: &BaseImage, settings: &ImageSettings) -> ImageEnv {
    let mut env: Vec<String> = base
        .config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    for (k, v) in &settings.env {
        env.retain(|e| e.split('=').next() != Some(k.as_str()));
        env.push(format!("{k}={v}"));
    }
    ImageEnv::from_env(&env)
}

fn describe(s: &BaseSource) -> String {
    match s {
        BaseSource::Scratch => "scratch".into(),
        BaseSource::Registry(r) => r.canonical(),
        BaseSource::OciDir { path, .. } => format!("oci:{}", path.display()),
        BaseSource::OciArchive { path, .. } => format!("oci-archive:{}", path.display()),
        BaseSource::DockerArchive { path, .. } => format!("docker-archive:{}", path.display()),
    }
}
