//! `imgbuild pull` and `imgbuild copy`: an image saved, or copied between sources and sinks.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use imgbuild::cache::Cache;
use imgbuild::error::{Error, Result};
use imgbuild::oci::Artifact;
use imgbuild::oci::platform::Platform;
use imgbuild::oci::reference::Reference;
use imgbuild::sink::{self, Naming, Sink, Written};
use imgbuild::source::{self, Platforms, Source};

use super::args::{OutputArgs, RegistryArgs, UploadArgs};
use super::common::*;
use super::progress;
use super::project::ProjectFile;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The image, e.g. debian:bookworm-slim or registry.example.com/base@sha256:…
    pub image: String,
    /// Write one tarball (an OCI archive with Docker's manifest.json).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Write an OCI layout directory.
    #[arg(long)]
    pub oci_layout: Option<PathBuf>,
    /// The platform to take from a multi-platform image, os/arch[/variant] [default: the host's].
    #[arg(long, conflicts_with = "all_platforms")]
    pub platform: Option<String>,
    /// Keep the whole multi-platform index.
    #[arg(long)]
    pub all_platforms: bool,
    #[command(flatten)]
    pub print: OutputArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The source: a registry reference, oci:DIR[:REF], oci-archive:FILE[:REF],
    /// docker-archive:FILE[:NAME:TAG] or an image file.
    pub source: String,
    /// The destination: a registry reference, oci-archive:FILE, docker-archive:FILE or oci:DIR.
    pub destination: String,
    /// The platform to take from a multi-platform source [default: every platform].
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub print: OutputArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
}

/// What `pull` and `copy` print with `--json`.
#[derive(Serialize)]
pub(crate) struct CopyJson {
    pub source: String,
    digest: String,
    media_type: String,
    platforms: Vec<String>,
    written: Vec<Written>,
}

pub fn copy_json(source: &Source, artifact: &Artifact, written: Vec<Written>) -> CopyJson {
    CopyJson {
        source: source.describe(),
        digest: artifact.digest().to_string(),
        media_type: artifact.media_type().to_string(),
        platforms: artifact
            .images()
            .iter()
            .map(|i| i.platform().to_string())
            .collect(),
        written,
    }
}

pub async fn run_pull(args: PullArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let reference = Reference::parse(&args.image)?;
    if args.output.is_none() && args.oci_layout.is_none() {
        return Err(Error::Usage(
            "nothing to write: pass -o FILE.tar and/or --oci-layout DIR".into(),
        ));
    }
    let platforms = if args.all_platforms {
        Platforms::All
    } else {
        Platforms::One(args.platform.as_deref().map(Platform::parse).transpose()?)
    };
    let cache = Cache::from_env()?;
    let client = client_for(args.registry.merge(&project), &[])?;
    let reporter = progress::choose(args.print.silent());
    let src = Source::Registry(reference.clone());
    let artifact = source::read(&src, &platforms, &cache, &client).await?;
    let mut tag = reference.clone();
    tag.digest = None;
    // The archive remembers where it came from, so `--from oci-archive:` labels the same base.
    let naming = Naming {
        tags: vec![tag],
        source: Some(reference),
        platform: None,
        signatures: vec![],
    };
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &args.output {
        sinks.push(Box::new(sink::TarballSink {
            path: path.clone(),
            naming: naming.clone(),
            mtime: 0,
            early: None,
        }));
    }
    if let Some(path) = &args.oci_layout {
        sinks.push(Box::new(sink::LayoutSink {
            path: path.clone(),
            naming,
            add: false,
        }));
    }
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let written = sink::write_all(&sinks, &artifact, &cx).await?;
    if args.print.json {
        print_json(&copy_json(&src, &artifact, written))?;
    } else if !args.print.quiet {
        println!("{}", artifact.digest());
    }
    Ok(())
}

/// `copy`'s destination: where to, and under which name.
fn destination_sink(
    dst: &str,
    src: &Source,
    upload: &UploadArgs,
) -> Result<(Box<dyn Sink>, Vec<Reference>)> {
    // An archive or layout is named after the source's reference when it has one.
    let naming = || Naming {
        tags: match src {
            Source::Registry(r) => {
                let mut t = r.clone();
                t.digest = None;
                vec![t]
            }
            _ => vec![],
        },
        source: match src {
            Source::Registry(r) => Some(r.clone()),
            _ => None,
        },
        platform: None,
        signatures: vec![],
    };
    let path_of = |rest: &str, what: &str| -> Result<PathBuf> {
        if rest.is_empty() {
            return Err(Error::Usage(format!(
                "copy destination {dst:?}: give a path after {what}"
            )));
        }
        Ok(PathBuf::from(rest))
    };
    if let Some(rest) = dst
        .strip_prefix("oci-archive:")
        .or_else(|| dst.strip_prefix("docker-archive:"))
    {
        return Ok((
            Box::new(sink::TarballSink {
                path: path_of(rest, "the transport")?,
                naming: naming(),
                mtime: 0,
                early: None,
            }),
            vec![],
        ));
    }
    if let Some(rest) = dst.strip_prefix("oci:") {
        return Ok((
            Box::new(sink::LayoutSink {
                path: path_of(rest, "oci:")?,
                naming: naming(),
                add: false,
            }),
            vec![],
        ));
    }
    let targets = match Source::parse(dst) {
        Ok(Source::Registry(_)) => destinations(&[dst.to_string()])?,
        Ok(_) | Err(_) => {
            return Err(Error::Usage(format!(
                "copy destination {dst:?} is not one imgbuild writes: use a registry reference (REGISTRY/REPO:TAG), oci-archive:FILE, docker-archive:FILE or oci:DIR"
            )));
        }
    };
    Ok((
        Box::new(sink::RegistrySink {
            targets: targets.clone(),
            opts: upload.push_options(),
            signing: None,
            sent_ahead: None,
        }),
        targets,
    ))
}

pub async fn run_copy(args: CopyArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let src = Source::parse_any(&args.source)?;
    if src == Source::Scratch {
        return Err(Error::Usage(
            "copy needs an image to copy, not scratch".into(),
        ));
    }
    let (dst, targets) = destination_sink(&args.destination, &src, &args.upload)?;
    let platforms = match args.platform.as_deref() {
        Some(p) => Platforms::One(Some(Platform::parse(p)?)),
        None => Platforms::All,
    };
    let cache = Cache::from_env()?;
    let client = client_for(args.registry.merge(&project), &targets)?;
    let reporter = progress::choose(args.print.silent());
    let artifact = source::read(&src, &platforms, &cache, &client).await?;
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let written = sink::write_all(&[dst], &artifact, &cx).await?;
    if args.print.json {
        print_json(&copy_json(&src, &artifact, written))?;
    } else if !args.print.quiet {
        println!("{}", artifact.digest());
    }
    Ok(())
}
