//! `imgbuild build`: flags and `imgbuild.toml` merged into a build request, built, written.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use imgbuild::cache::Cache;
use imgbuild::error::{Error, Result};
use imgbuild::layer::Codec;
use imgbuild::observe::{Observer, Observers};
use imgbuild::oci::Artifact;
use imgbuild::oci::platform::Platform;
use imgbuild::oci::reference::Reference;
use imgbuild::pipeline::{self, BuildReport, BuildRequest};
use imgbuild::sink::registry::SendAhead;
use imgbuild::sink::{self, Naming, Written};

use super::args::{CacheArgs, OutputArgs, RegistryArgs, UploadArgs};
use super::common::*;
use super::image::{CompressionArgs, Extras, ImageArgs, replace};
use super::progress;
use super::project::ProjectFile;
use super::summary;

#[derive(Args, Debug, Default)]
pub struct BuildArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Image name and tag, e.g. my_app:1.0 or ghcr.io/org/my_app:1.0 (repeatable; default: RELEASE:VERSION).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Write the image as one tarball for docker load, podman load, skopeo and ctr.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Write the image as an OCI layout directory.
    #[arg(long)]
    pub oci_layout: Option<PathBuf>,
    #[command(flatten)]
    pub print: OutputArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Also write the image's SBOM (SPDX 2.3 JSON) to this file.
    #[arg(long)]
    pub sbom: Option<PathBuf>,
    /// Write a Markdown summary of the build (digest, tags, layers, push, check, packages,
    /// SBOM, signatures, warnings) to this file. Under GitHub Actions the same summary is
    /// appended to GITHUB_STEP_SUMMARY without asking.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Skip the start-up check of the release against the base (not recommended).
    #[arg(long)]
    pub no_check: bool,
    /// Push the image to every -t destination after building it.
    #[arg(long)]
    pub push: bool,
    /// Load the image into the local Docker Engine or podman (their API socket), no tarball.
    #[arg(long)]
    pub load: bool,
    /// Also make the debug image: the same image plus one layer with Debian's static busybox
    /// under /busybox (sh, ls, ps … as links; /busybox at the end of PATH), for `docker exec`
    /// and `kubectl exec`. It goes wherever the image goes: each -t REPO:TAG as REPO:TAG-debug,
    /// -o NAME.tar as NAME-debug.tar, a second ref in --oci-layout, pushed and loaded too. The
    /// image itself is unchanged. busybox-static is verified and pinned in imgbuild.lock like
    /// --package (from a deb: base's suite, else bookworm; --deb-mirror says where from).
    #[arg(long)]
    pub debug: bool,
    /// Sign every pushed manifest (and the index) and attest its SLSA provenance, the way
    /// cosign does, with this key: cosign's encrypted key (password in COSIGN_PASSWORD) or a
    /// PEM ECDSA P-256 key. Needs --push.
    #[arg(long, env = "IMGBUILD_SIGN_KEY", value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
    #[command(flatten)]
    pub compression: CompressionArgs,
}

/// What a build writes, flags and `imgbuild.toml` merged (the flag wins, `-t` replaces the
/// file's `tags`; `--no-check` or the file's `check = false` skips the check).
#[derive(Debug, PartialEq)]
pub struct Writes {
    pub tags: Vec<String>,
    pub output: Option<PathBuf>,
    pub oci_layout: Option<PathBuf>,
    pub sign_key: Option<PathBuf>,
    pub check: bool,
    pub debug: bool,
}

impl BuildArgs {
    pub(crate) fn merge_writes(&self, project: &ProjectFile) -> Writes {
        Writes {
            tags: replace(&self.tags, &project.tags).unwrap_or_default(),
            output: self.output.clone().or_else(|| project.output.clone()),
            oci_layout: self
                .oci_layout
                .clone()
                .or_else(|| project.oci_layout.clone()),
            sign_key: self.sign_key.clone().or_else(|| project.sign_key.clone()),
            check: !self.no_check && project.check.unwrap_or(true),
            debug: self.debug || project.debug.unwrap_or(false),
        }
    }

    /// The request, where the image goes, and the signing key.
    fn request(
        &self,
        project: &ProjectFile,
        cwd: &std::path::Path,
    ) -> Result<(BuildRequest, Outputs, Option<PathBuf>)> {
        let def = self.image.merge(project)?;
        let writes = self.merge_writes(project);
        let extras = Extras {
            tags: writes.tags,
            compression: self.compression.merge(project)?,
            cache_repo: self.cache.merge(project),
            debug: writes.debug,
        };
        if writes.output.is_none() && writes.oci_layout.is_none() && !self.push && !self.load {
            return Err(Error::Usage(
                "nothing to write: pass -o IMAGE.tar, --oci-layout DIR, --push and/or --load"
                    .into(),
            ));
        }
        let mut req = def.request(extras, cwd)?;
        req.check = writes.check;
        req.sbom_out = self.sbom.clone();
        let outputs = Outputs {
            output: writes.output,
            oci_layout: writes.oci_layout,
            add_to_layout: false,
        };
        Ok((req, outputs, writes.sign_key))
    }
}

/// The signatures of a build: every manifest (each platform's, and the index) signed, each
/// image's provenance attested, as the first tag's repository names them.
fn signing_for(
    signer: Option<&imgbuild::sign::keys::Key>,
    artifact: &Artifact,
    report: &imgbuild::pipeline::Report,
    tags: &[Reference],
) -> Result<Option<imgbuild::sink::registry::Signing>> {
    let (Some(key), Some(repo)) = (signer, tags.first()) else {
        return Ok(None);
    };
    let name = format!("{}/{}", repo.registry, repo.repository);
    let reports: Vec<&BuildReport> = match report {
        imgbuild::pipeline::Report::Image(r) => vec![r],
        imgbuild::pipeline::Report::Index(i) => i.platforms.iter().collect(),
    };
    let sign = |d: &oci_spec::image::Digest, media: &str, size: usize| {
        let statement = reports
            .iter()
            .find(|r| r.digest == d.to_string())
            .map(|r| imgbuild::sign::provenance::statement(&name, d, &r.materials))
            .transpose()?;
        imgbuild::sign::cosign::signatures(repo, d, media, size as u64, statement.as_deref(), key)
    };
    let mut signatures = vec![sign(
        artifact.digest(),
        artifact.media_type(),
        artifact.manifest().len(),
    )?];
    if let Artifact::Index(i) = artifact {
        for im in &i.images {
            signatures.push(sign(&im.digest, &im.media_type, im.manifest.len())?);
        }
    }
    let epoch = reports.first().map_or(0, |r| r.materials.epoch);
    Ok(Some(imgbuild::sink::registry::Signing {
        signatures,
        epoch,
    }))
}

/// The JSON `imgbuild build --json` prints: the build's report and what each sink did.
#[derive(Serialize)]
struct BuildJson {
    #[serde(flatten)]
    report: imgbuild::pipeline::Report,
    #[serde(flatten)]
    sinks: SinksJson,
    /// `--debug`: the debug image and where it went.
    #[serde(skip_serializing_if = "Option::is_none")]
    debug: Option<DebugJson>,
}

#[derive(Serialize)]
struct DebugJson {
    #[serde(flatten)]
    report: imgbuild::pipeline::DebugReport,
    #[serde(flatten)]
    sinks: SinksJson,
}

/// Where an image went: the files written, and what the registry and the engine said.
#[derive(Serialize)]
struct SinksJson {
    output: Option<String>,
    oci_layout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<imgbuild::sink::registry::PushReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load: Option<imgbuild::sink::engine::LoadReport>,
}

impl SinksJson {
    fn of(outputs: &Outputs, written: Vec<Written>) -> SinksJson {
        let mut json = SinksJson {
            output: outputs.output.as_ref().map(|p| p.display().to_string()),
            oci_layout: outputs.oci_layout.as_ref().map(|p| p.display().to_string()),
            push: None,
            load: None,
        };
        for w in written {
            match w {
                Written::Registry(r) => json.push = Some(r),
                Written::Engine(l) => json.load = Some(l),
                _ => {}
            }
        }
        json
    }
}

/// `-o NAME.tar`'s debug image: `NAME-debug.tar` beside it (`NAME-debug` without an extension).
fn debug_output(path: &std::path::Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-debug.{}", ext.to_string_lossy()),
        None => format!("{stem}-debug"),
    };
    path.with_file_name(name)
}

pub async fn run_build(args: BuildArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let (req, outputs, sign_key) = args.request(&project, &cwd)?;
    let cache = Cache::from_env()?;
    let push_targets = if args.push { req.tags.clone() } else { vec![] };
    let client = client_for(args.registry.merge(&project), &push_targets)?;
    let reporter = progress::choose(args.print.silent());
    // The signing key is opened first (a wrong password stops everything before any push).
    let signer = match &sign_key {
        Some(_) if !args.push && outputs.output.is_none() && outputs.oci_layout.is_none() => {
            return Err(Error::Usage(
                "--sign-key signs what is pushed or saved: add --push and/or -o FILE.tar".into(),
            ));
        }
        Some(path) => Some(Arc::new(load_key(path)?)),
        None => None,
    };
    // An engine is looked for first: without one, nothing is built or written.
    let engine = if args.load {
        Some(sink::engine::Engine::find().await?)
    } else {
        None
    };
    if req.compression.0 == Codec::Zstd && outputs.output.is_some() && !args.print.quiet {
        eprintln!(
            "imgbuild: note: zstd layers load with podman, skopeo, containerd and Docker Engine 23 or later; older Docker Engines need gzip"
        );
    }
    // The tarball starts with the bases' layers while the release's layers are made.
    let early = outputs.output.as_ref().map(|path| {
        sink::tarball::Early::new(path, req.settings.epoch, &cache, req.platforms.len())
    });
    // Each new layer goes to the push's registries as soon as it is made.
    let sent_ahead = args.push.then(|| Arc::new(SendAhead::new(&req.tags)));
    let mut observers: Vec<&dyn Observer> = Vec::new();
    if let Some(e) = &early {
        observers.push(e.as_ref());
    }
    if let Some(s) = &sent_ahead {
        observers.push(s.as_ref());
    }
    let observers = Observers(observers);
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let built = pipeline::build(&req, cx, Some(&observers)).await?;
    let artifact = built.artifact;
    let signing = signing_for(signer.as_deref(), &artifact, &built.report, &req.tags)?;
    // Single-platform readers of an index (Docker 20.10's manifest.json, an engine load) get
    // the host's platform when it was built, else the first.
    let host = Platform::host();
    let naming = Naming {
        tags: req.tags.clone(),
        source: None,
        platform: if req.platforms.contains(&host) {
            Some(host)
        } else {
            req.platforms.first().cloned()
        },
        signatures: signing
            .as_ref()
            .map(|s| s.signatures.clone())
            .unwrap_or_default(),
    };
    let push = args.push.then(|| Push {
        opts: args.upload.push_options(),
        signing: signing.clone(),
        sent_ahead: sent_ahead.clone(),
    });
    let debug_engine = engine.clone();
    let sinks = sinks_for(
        &outputs,
        early,
        engine,
        push,
        &naming,
        req.settings.epoch,
        reporter.as_ref(),
    );
    let written = sink::write_all(&sinks, &artifact, &cx).await?;
    // The debug image after the image, to the same sinks under its own names.
    let debug = match built.debug {
        Some(d) => {
            let tags = imgbuild::pipeline::debug::debug_tags(&req.tags)?;
            let signing = signing_for(signer.as_deref(), &d.artifact, &built.report, &tags)?;
            let outputs = Outputs {
                output: outputs.output.as_deref().map(debug_output),
                oci_layout: outputs.oci_layout.clone(),
                add_to_layout: true,
            };
            let naming = Naming {
                tags: tags.clone(),
                signatures: signing
                    .as_ref()
                    .map(|s| s.signatures.clone())
                    .unwrap_or_default(),
                ..naming.clone()
            };
            let push = args.push.then(|| Push {
                opts: args.upload.push_options(),
                signing,
                sent_ahead: None,
            });
            let sinks = sinks_for(
                &outputs,
                None,
                debug_engine,
                push,
                &naming,
                req.settings.epoch,
                reporter.as_ref(),
            );
            let written = sink::write_all(&sinks, &d.artifact, &cx).await?;
            Some(DebugJson {
                report: d.report,
                sinks: SinksJson::of(&outputs, written),
            })
        }
        None => None,
    };
    let json = BuildJson {
        report: built.report,
        sinks: SinksJson::of(&outputs, written),
        debug,
    };
    let markdown = summary::markdown(&summary::Facts {
        report: &json.report,
        output: json.sinks.output.as_deref(),
        oci_layout: json.sinks.oci_layout.as_deref(),
        push: json.sinks.push.as_ref(),
        load: json.sinks.load.as_ref(),
        signed: signing.as_ref().map_or(0, |s| s.signatures.len()),
    });
    summary::write(&markdown, args.summary.as_deref())?;
    if args.print.json {
        print_json(&json)?;
    } else if !args.print.quiet {
        println!("{}", json.report.digest());
    }
    Ok(())
}
