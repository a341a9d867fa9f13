//! `imgbuild index create`: images joined into one multi-platform index.

use clap::{Args, Subcommand};

use imgbuild::cache::Cache;
use imgbuild::error::{Error, Result};
use imgbuild::oci::Artifact;
use imgbuild::sink::{self, Sink};
use imgbuild::source::{self, Platforms, Source};

use super::args::{OutputArgs, RegistryArgs, UploadArgs};
use super::common::*;
use super::progress;
use super::project::ProjectFile;
use super::pull::copy_json;

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Join images (built on native runners, one per platform) into one index and push it.
    Create(IndexCreateArgs),
}

#[derive(Args, Debug)]
pub struct IndexCreateArgs {
    /// Where the index goes, e.g. registry.example.com/team/app:1.0.
    pub destination: String,
    /// An image to include (repeatable): any source; an index contributes all its images
    /// [default: `manifests` in imgbuild.toml].
    #[arg(long = "image")]
    pub images: Vec<String>,
    #[command(flatten)]
    pub print: OutputArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
}

pub async fn run_index_create(args: IndexCreateArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let targets = destinations(std::slice::from_ref(&args.destination))?;
    let given_images = if args.images.is_empty() {
        project.manifests.clone().unwrap_or_default()
    } else {
        args.images.clone()
    };
    if given_images.is_empty() {
        return Err(Error::Usage(
            "no images to join: pass --image REF for each platform, or list them as manifests in imgbuild.toml".into(),
        ));
    }
    let cache = Cache::from_env()?;
    let client = client_for(args.registry.merge(&project), &targets)?;
    let reporter = progress::choose(args.print.silent());
    let mut images: Vec<imgbuild::oci::Image> = Vec::new();
    for given in &given_images {
        let src = Source::parse_any(given)?;
        let artifact = source::read(&src, &Platforms::All, &cache, &client).await?;
        for image in artifact.images() {
            let p = image.platform();
            if let Some(twin) = images.iter().find(|i| i.platform() == p) {
                return Err(Error::Usage(format!(
                    "two images for {p}: {} and {} (from {given}); give one image per platform",
                    twin.digest, image.digest
                )));
            }
            images.push(image.clone());
        }
    }
    let index = imgbuild::mutate::index(images)?;
    let artifact = Artifact::Index(Box::new(index));
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(sink::RegistrySink {
        targets,
        opts: args.upload.push_options(),
        signing: None,
        sent_ahead: None,
    })];
    let written = sink::write_all(&sinks, &artifact, &cx).await?;
    if args.print.json {
        let src = Source::Scratch;
        let mut j = copy_json(&src, &artifact, written);
        j.source = given_images.join(", ");
        print_json(&j)?;
    } else if !args.print.quiet {
        println!("{}", artifact.digest());
    }
    Ok(())
}
