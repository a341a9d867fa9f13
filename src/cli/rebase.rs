//! `imgbuild rebase`: an image's release put onto a new base.

use std::path::PathBuf;

use clap::Args;

use imgbuild::apt::PackageRequest;
use imgbuild::cache::Cache;
use imgbuild::error::{Error, Result};
use imgbuild::layer::Codec;
use imgbuild::oci::platform::Platform;
use imgbuild::oci::reference::Reference;
use imgbuild::sink::{self, Naming};
use imgbuild::source::Source;

use super::args::{OutputArgs, RegistryArgs, UploadArgs};
use super::common::*;
use super::image::{DebMirrorArgs, deb_base};
use super::progress;
use super::project::ProjectFile;

#[derive(Args, Debug)]
pub struct RebaseArgs {
    /// The image built by imgbuild: a registry reference, an image file (from -o), or
    /// oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:NAME:TAG].
    pub image: String,
    /// The new base (as `build --from` takes it).
    #[arg(long)]
    pub from: String,
    /// Names of the rebased image (repeatable); needed with --push.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Write one tarball for docker/podman/skopeo/ctr.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Write an OCI layout directory.
    #[arg(long)]
    pub oci_layout: Option<PathBuf>,
    /// Push the rebased image to every -t name.
    #[arg(long)]
    pub push: bool,
    /// An apt source for the runtime packages (repeatable); replaces the new base's own.
    #[arg(long = "apt-source")]
    pub apt_sources: Vec<String>,
    /// Resolve the packages again and rewrite imgbuild.lock.
    #[arg(long)]
    pub update_lock: bool,
    #[command(flatten)]
    pub deb: DebMirrorArgs,
    /// Skip the start-up check against the new base (not recommended).
    #[arg(long)]
    pub no_check: bool,
    /// Compression of the new layers: gzip[:LEVEL] or zstd[:LEVEL].
    #[arg(long, default_value = "gzip:6", value_parser = parse_compression)]
    pub compression: (Codec, u32),
    #[command(flatten)]
    pub print: OutputArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
}

pub async fn run_rebase(args: RebaseArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let tags = args
        .tags
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>>>()?;
    if args.output.is_none() && args.oci_layout.is_none() && !args.push {
        return Err(Error::Usage(
            "rebase needs an output: -o FILE.tar, --oci-layout DIR and/or --push".into(),
        ));
    }
    if args.push && tags.is_empty() {
        return Err(Error::Usage(
            "--push needs at least one -t NAME to push to".into(),
        ));
    }
    let from = Source::parse(&args.from)?;
    let deb = deb_base(&from, &args.deb.merge(&project), false)?;
    let req = imgbuild::pipeline::rebase::RebaseRequest {
        image: Source::parse_any(&args.image)?,
        from,
        tags: tags.clone(),
        packages: PackageRequest {
            packages: vec![],
            sources: if args.apt_sources.is_empty() {
                project.apt_sources.clone().unwrap_or_default()
            } else {
                args.apt_sources.clone()
            },
            lock_path: cwd.join(imgbuild::apt::LOCK_FILE),
            update_lock: args.update_lock,
            deb,
        },
        check: !args.no_check,
        compression: args.compression,
    };
    let cache = Cache::from_env()?;
    let push_targets = if args.push { tags.clone() } else { vec![] };
    let client = client_for(args.registry.merge(&project), &push_targets)?;
    let reporter = progress::choose(args.print.silent());
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let rebased = imgbuild::pipeline::rebase::rebase(&req, cx).await?;
    if !rebased.new_lock.is_empty() {
        imgbuild::apt::save_sections(&req.packages.lock_path, rebased.new_lock.clone())?;
    }
    let naming = Naming {
        tags: tags.clone(),
        source: None,
        platform: Some(Platform::host()),
        signatures: vec![],
    };
    let outputs = Outputs {
        output: args.output.clone(),
        oci_layout: args.oci_layout.clone(),
        add_to_layout: false,
    };
    let push = args.push.then(|| Push {
        opts: args.upload.push_options(),
        signing: None,
        sent_ahead: None,
    });
    let sinks = sinks_for(&outputs, None, None, push, &naming, 0, reporter.as_ref());
    let written = sink::write_all(&sinks, &rebased.artifact, &cx).await?;
    if args.print.json {
        print_json(&serde_json::json!({
            "digest": rebased.artifact.digest().to_string(),
            "tags": tags.iter().map(Reference::canonical).collect::<Vec<_>>(),
            "platforms": rebased.reports,
            "written": written,
        }))?;
    } else if !args.print.quiet {
        println!("{}", rebased.artifact.digest());
    }
    Ok(())
}
