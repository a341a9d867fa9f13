//! `imgbuild build`: flags and `imgbuild.toml` merged into a build request, built, written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use imgbuild::apt::PackageRequest;
use imgbuild::build::{self, BuildReport, BuildRequest};
use imgbuild::cache::Cache;
use imgbuild::error::{Error, Result};
use imgbuild::layer::Codec;
use imgbuild::mutate::ImageSettings;
use imgbuild::oci::Artifact;
use imgbuild::oci::platform::Platform;
use imgbuild::oci::reference::Reference;
use imgbuild::release;
use imgbuild::secrets;
use imgbuild::sink::{self, Naming, Written};
use imgbuild::source::Source;

use super::common::*;
use super::progress;
use super::project::ProjectFile;

#[derive(Args, Debug, Default)]
pub struct BuildArgs {
    /// The release directory (default: the one release under ./_build/prod/rel/).
    pub release_dir: Option<PathBuf>,
    /// Base image: a registry reference, oci:DIR, oci-archive:PATH, docker-archive:PATH or scratch
    /// [default: debian:bookworm-slim].
    #[arg(long)]
    pub from: Option<String>,
    /// Image name and tag, e.g. my_app:1.0 or ghcr.io/org/my_app:1.0 (repeatable; default: RELEASE:VERSION).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Write the image as one tarball for docker load, podman load, skopeo and ctr.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Write the image as an OCI layout directory.
    #[arg(long)]
    pub oci_layout: Option<PathBuf>,
    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,
    /// Platform to build, os/arch[/variant]; several (comma-separated or repeated) build an
    /// image index, e.g. linux/amd64,linux/arm64 [default: the host's].
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<String>,
    /// An image holding Erlang/OTP for the other platforms (same OTP version as the release):
    /// the release's ERTS and OTP native files are transplanted from it.
    #[arg(long, value_name = "IMAGE")]
    pub otp_from: Option<String>,
    /// A registry repository shared by a fleet of runners as a cache: release layers (by
    /// their inputs) and base summaries are looked up there before anything is compressed or
    /// downloaded, and what this run makes is stored there.
    #[arg(long, env = "IMGBUILD_CACHE_REPO", value_name = "REGISTRY/REPO")]
    pub cache_repo: Option<String>,
    /// Read the cache repository but never write to it (pull-request builds).
    #[arg(long)]
    pub cache_repo_readonly: bool,
    /// A release built natively for a platform, PLATFORM=DIR (repeatable).
    #[arg(long = "release", value_name = "PLATFORM=DIR")]
    pub releases: Vec<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Image label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Manifest annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// Exposed port PORT[/tcp|udp|sctp] (repeatable) [default: 4000/tcp].
    #[arg(long = "expose")]
    pub expose: Vec<String>,
    /// User the container runs as [default: 65534].
    #[arg(long)]
    pub user: Option<String>,
    /// Working directory the release is copied to [default: /app].
    #[arg(long)]
    pub workdir: Option<String>,
    /// Command: a JSON array, or words split on spaces [default: /app/bin/server, else /app/bin/NAME start].
    #[arg(long)]
    pub cmd: Option<String>,
    /// Entrypoint: a JSON array, or words split on spaces [default: none].
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// An application (besides the release's namesake) that belongs in the app layer (repeatable).
    #[arg(long = "app")]
    pub apps: Vec<String>,
    /// Leave releases/COOKIE out of the image (then give RELEASE_COOKIE at run time).
    #[arg(long)]
    pub drop_cookie: bool,
    /// A Debian package to install into the image, NAME or NAME=VERSION (repeatable).
    #[arg(long = "package")]
    pub packages: Vec<String>,
    /// An apt source "[signed-by=KEYRING] URI SUITE COMPONENT..." (repeatable); replaces the
    /// base image's own sources (for mirrors and air-gapped sites).
    #[arg(long = "apt-source")]
    pub apt_sources: Vec<String>,
    /// Resolve the packages again and rewrite imgbuild.lock.
    #[arg(long)]
    pub update_lock: bool,
    /// Also write the image's SBOM (SPDX 2.3 JSON) to this file.
    #[arg(long)]
    pub sbom: Option<PathBuf>,
    /// Skip the start-up check of the release against the base (not recommended).
    #[arg(long)]
    pub no_check: bool,
    /// Allow an --env or --label KEY that looks like a secret but is not (repeatable).
    #[arg(long = "allow-secret")]
    pub allow_secrets: Vec<String>,
    /// Push the image to every -t destination after building it.
    #[arg(long)]
    pub push: bool,
    /// Load the image into the local Docker Engine or podman (their API socket), no tarball.
    #[arg(long)]
    pub load: bool,
    /// Sign every pushed manifest (and the index) and attest its SLSA provenance, the way
    /// cosign does, with this key: cosign's encrypted key (password in COSIGN_PASSWORD) or a
    /// PEM ECDSA P-256 key. Needs --push.
    #[arg(long, env = "IMGBUILD_SIGN_KEY", value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
    /// gzip level for the release layers, 1-9 (the same as --compression gzip:LEVEL).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9), conflicts_with = "compression")]
    pub gzip_level: Option<u32>,
    /// Compression of the new layers: gzip[:1-9] (default gzip:6; every reader takes it) or
    /// zstd[:1-19] (smaller and faster; Docker Engine before 23 cannot load it).
    #[arg(long, value_parser = parse_compression)]
    pub compression: Option<(Codec, u32)>,
    /// Print nothing but errors (and --json).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `writes`: whether the command writes an image (build) or only looks (check).
pub(crate) fn build_request_for(
    args: &BuildArgs,
    project: &ProjectFile,
    cwd: &std::path::Path,
    writes: bool,
) -> Result<(BuildRequest, Outputs)> {
    let given_release = args.release_dir.clone().or_else(|| project.release.clone());
    let release_dir = release::locate(given_release.as_deref(), cwd)?;
    let from = Source::parse(
        args.from
            .as_deref()
            .or(project.from.as_deref())
            .unwrap_or(DEFAULT_BASE),
    )?;
    let platform_words: Vec<String> = if !args.platform.is_empty() {
        args.platform.clone()
    } else if let Some(list) = &project.platforms {
        list.clone()
    } else {
        project.platform.iter().cloned().collect()
    };
    let mut platforms: Vec<Platform> = Vec::new();
    for w in platform_words
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
    {
        let p = Platform::parse(w)?;
        if !platforms.contains(&p) {
            platforms.push(p);
        }
    }
    let platform = platforms.first().cloned();
    let otp_from = args
        .otp_from
        .as_deref()
        .or(project.otp_from.as_deref())
        .map(Source::parse)
        .transpose()?;
    let mut releases = Vec::new();
    for r in &args.releases {
        let (p, dir) = r.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "invalid --release {r:?}: expected PLATFORM=DIR, e.g. linux/arm64=_build/arm64/rel/my_app"
            ))
        })?;
        let p = Platform::parse(p)?;
        if !platforms.contains(&p) {
            return Err(Error::Usage(format!(
                "--release {r}: {p} is not among the platforms built (--platform)"
            )));
        }
        releases.push((p, release::locate(Some(std::path::Path::new(dir)), cwd)?));
    }

    let tags_src: Vec<String> = if args.tags.is_empty() {
        project.tags.clone().unwrap_or_default()
    } else {
        args.tags.clone()
    };
    let mut tags = tags_src
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>>>()?;
    if tags.iter().any(|t| t.digest.is_some()) {
        return Err(Error::Usage(
            "a tag (-t) cannot carry a digest: give NAME[:TAG]".into(),
        ));
    }
    if tags.is_empty() {
        // Default name: the release's own name and version.
        let rel = release::Release::inspect(&release_dir)?;
        let name = rel.name.replace('_', "-").to_ascii_lowercase();
        let tag = if imgbuild::oci::reference::valid_tag(&rel.version) {
            rel.version.replace('+', "_")
        } else {
            "latest".into()
        };
        tags.push(Reference::parse(&format!("{name}:{tag}"))?);
    }

    let mut env: BTreeMap<String, String> = project.env.clone();
    let mut env_order: Vec<(String, String)> =
        env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for e in &args.env {
        let (k, v) = key_value("--env", e)?;
        env.insert(k.clone(), v.clone());
        env_order.retain(|(have, _)| *have != k);
        env_order.push((k, v));
    }
    let mut labels = project.labels.clone();
    for l in &args.labels {
        let (k, v) = key_value("--label", l)?;
        labels.insert(k, v);
    }
    let mut annotations = project.annotations.clone();
    for a in &args.annotations {
        let (k, v) = key_value("--annotation", a)?;
        annotations.insert(k, v);
    }
    let mut allowed = project.allow_secrets.clone().unwrap_or_default();
    allowed.extend(args.allow_secrets.iter().cloned());
    secrets::refuse_secrets("--env", env_order.iter().map(|(k, v)| (k, v)), &allowed)?;
    secrets::refuse_secrets("--label", labels.iter(), &allowed)?;
    let expose_src: Option<Vec<String>> = if args.expose.is_empty() {
        project.expose.clone()
    } else {
        Some(args.expose.clone())
    };
    let exposed_ports = expose_src
        .map(|ps| ps.iter().map(|p| port(p)).collect::<Result<Vec<_>>>())
        .transpose()?;
    let workdir = args
        .workdir
        .clone()
        .or_else(|| project.workdir.clone())
        .unwrap_or_else(|| "/app".into());
    if !workdir.starts_with('/') {
        return Err(Error::Usage(format!(
            "invalid --workdir {workdir:?}: give an absolute path such as /app"
        )));
    }
    let cmd = match &args.cmd {
        Some(c) => Some(words("--cmd", c)?),
        None => project.cmd.clone(),
    };
    let entrypoint = match &args.entrypoint {
        Some(c) => Some(words("--entrypoint", c)?),
        None => project.entrypoint.clone(),
    };
    let output = args.output.clone().or_else(|| project.output.clone());
    let oci_layout = args
        .oci_layout
        .clone()
        .or_else(|| project.oci_layout.clone());
    if writes && output.is_none() && oci_layout.is_none() && !args.push && !args.load {
        return Err(Error::Usage(
            "nothing to write: pass -o IMAGE.tar, --oci-layout DIR, --push and/or --load".into(),
        ));
    }
    let outputs = Outputs { output, oci_layout };
    // Each new layer goes to the push's registries as soon as it is made.
    let mut push_ahead: Vec<Reference> = Vec::new();
    if writes && args.push {
        for t in &tags {
            if !push_ahead
                .iter()
                .any(|p| p.registry == t.registry && p.repository == t.repository)
            {
                push_ahead.push(t.clone());
            }
        }
    }
    let req = BuildRequest {
        push_ahead,
        release_dir,
        from,
        platform,
        platforms,
        otp_from,
        releases,
        tags,
        settings: ImageSettings {
            env: env_order,
            labels,
            annotations,
            exposed_ports,
            user: args.user.clone().or_else(|| project.user.clone()),
            workdir,
            cmd,
            entrypoint,
            epoch: source_date_epoch()?,
        },
        own_apps: if args.apps.is_empty() {
            project.apps.clone().unwrap_or_default()
        } else {
            args.apps.clone()
        },
        drop_cookie: args.drop_cookie || project.drop_cookie.unwrap_or(false),
        compression: match (args.compression, args.gzip_level, &project.compression) {
            (Some(c), _, _) => c,
            (None, Some(level), _) => (Codec::Gzip, level),
            (None, None, Some(text)) => imgbuild::layer::parse_compression(text)
                .map_err(|e| Error::Usage(format!("compression in imgbuild.toml: {e}")))?,
            (None, None, None) => (Codec::Gzip, 6),
        },
        check: !args.no_check && project.check.unwrap_or(true),
        sbom_out: args.sbom.clone(),
        packages: PackageRequest {
            packages: if args.packages.is_empty() {
                project.packages.clone().unwrap_or_default()
            } else {
                args.packages.clone()
            },
            sources: if args.apt_sources.is_empty() {
                project.apt_sources.clone().unwrap_or_default()
            } else {
                args.apt_sources.clone()
            },
            lock_path: cwd.join(imgbuild::apt::LOCK_FILE),
            update_lock: args.update_lock,
        },
        cache_repo: match args.cache_repo.as_deref().or(project.cache_repo.as_deref()) {
            Some(repo) => Some(std::sync::Arc::new(
                imgbuild::build::cache_repo::CacheRepo::new(
                    repo,
                    args.cache_repo_readonly || project.cache_repo_readonly.unwrap_or(false),
                )?,
            )),
            None => None,
        },
    };
    Ok((req, outputs))
}

/// The signatures of a build: every manifest (each platform's, and the index) signed, each
/// image's provenance attested, as the first tag's repository names them.
fn signing_for(
    signer: Option<&imgbuild::sign::keys::Key>,
    artifact: &Artifact,
    report: &imgbuild::build::Report,
    tags: &[Reference],
) -> Result<Option<imgbuild::sink::registry::Signing>> {
    let (Some(key), Some(repo)) = (signer, tags.first()) else {
        return Ok(None);
    };
    let name = format!("{}/{}", repo.registry, repo.repository);
    let reports: Vec<&BuildReport> = match report {
        imgbuild::build::Report::Image(r) => vec![r],
        imgbuild::build::Report::Index(i) => i.platforms.iter().collect(),
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
    report: imgbuild::build::Report,
    output: Option<String>,
    oci_layout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<imgbuild::sink::registry::PushReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load: Option<imgbuild::sink::engine::LoadReport>,
}

/// A build tells the tarball each platform's base ([`sink::tarball::Early`]).
struct EarlyTarball(Arc<sink::tarball::Early>);

impl build::Watch for EarlyTarball {
    fn base(&self, index: usize, base: &imgbuild::oci::Image) {
        self.0.base(index, base);
    }
}

pub(crate) async fn run_build(args: BuildArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let (req, outputs) = build_request_for(&args, &project, &cwd, true)?;
    let cache = Cache::from_env()?;
    let push_targets = if args.push { req.tags.clone() } else { vec![] };
    let client = client_for(client_options(&args.registry, &project), &push_targets)?;
    let reporter = progress::choose(args.quiet || args.json);
    // The signing key is opened first (a wrong password stops everything before any push).
    let sign_key = args.sign_key.clone().or_else(|| project.sign_key.clone());
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
    if req.compression.0 == Codec::Zstd && outputs.output.is_some() && !args.quiet {
        eprintln!(
            "imgbuild: note: zstd layers load with podman, skopeo, containerd and Docker Engine 23 or later; older Docker Engines need gzip"
        );
    }
    // The tarball starts with the bases' layers while the release's layers are made.
    let early = outputs.output.as_ref().map(|path| {
        sink::tarball::Early::new(path, req.settings.epoch, &cache, req.platforms.len())
    });
    let watch = early.clone().map(EarlyTarball);
    let built = build::build(
        &req,
        &cache,
        &client,
        reporter.as_ref(),
        watch.as_ref().map(|w| w as &dyn build::Watch),
    )
    .await?;
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
    let push = args
        .push
        .then(|| (push_options(&args.upload), signing.clone()));
    let sinks = sinks_for(
        &outputs,
        early,
        engine,
        push,
        &naming,
        req.settings.epoch,
        reporter.as_ref(),
    );
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let written = sink::write_all(&sinks, &artifact, &cx).await?;
    let mut json = BuildJson {
        report: built.report,
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
    if args.json {
        print_json(&json)?;
    } else if !args.quiet {
        println!("{}", json.report.digest());
    }
    Ok(())
}
