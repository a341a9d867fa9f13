//! `imgbuild push`: an image tarball to one or more registries.

use std::path::PathBuf;

use clap::Args;

use imgbuild::cache::Cache;
use imgbuild::error::{Error, ImageError, Result};
use imgbuild::source::{self, Platforms, Source};

use super::args::{OutputArgs, RegistryArgs, UploadArgs};
use super::common::*;
use super::progress;
use super::project::ProjectFile;

#[derive(Args, Debug)]
#[command(mut_arg("json", |a| a.help("Print one JSON object describing the push on stdout")))]
pub struct PushArgs {
    /// The image tarball.
    pub tarball: PathBuf,
    /// Destinations, e.g. registry.example.com/team/app:1.0 [default: the names in the tarball].
    pub destinations: Vec<String>,
    #[command(flatten)]
    pub print: OutputArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
}

pub async fn run_push(args: PushArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    if !args.tarball.is_file() {
        return Err(Error::Input(format!(
            "cannot open image tarball {}: no such file (write one with `imgbuild build -o` or `imgbuild pull -o`)",
            args.tarball.display()
        )));
    }
    let targets = if args.destinations.is_empty() {
        let names = source::file_names(&args.tarball)?;
        if names.is_empty() {
            return Err(Error::Usage(format!(
                "{} names no image: give a destination such as registry.example.com/team/app:1.0",
                args.tarball.display()
            )));
        }
        names
    } else {
        destinations(&args.destinations)?
    };
    let cache = Cache::from_env()?;
    let client = client_for(args.registry.merge(&project), &targets)?;
    let reporter = progress::choose(args.print.silent());
    let src = Source::File(args.tarball.clone());
    let artifact = source::read(&src, &Platforms::All, &cache, &client).await?;
    // Signatures the tarball carries are published beside the image, before its tags.
    let path = args.tarball.clone();
    let carried = tokio::task::spawn_blocking(move || source::file_signatures(&path))
        .await
        .map_err(|e| Error::from(ImageError::Internal(e.to_string())))??;
    let signing = (!carried.is_empty()).then_some(imgbuild::sink::registry::Signing {
        signatures: carried,
        epoch: 0,
    });
    let cx = imgbuild::context::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let report = imgbuild::sink::registry::push(
        &artifact,
        &targets,
        args.upload.push_options(),
        signing.as_ref(),
        None,
        &cx,
    )
    .await?;
    if args.print.json {
        print_json(&report)?;
    } else if !args.print.quiet {
        println!("{}", report.digest);
    }
    Ok(())
}
