//! `imgbuild inspect`: an image's config, layers, history and SBOM summary.

use clap::Args;

use imgbuild::cache::Cache;
use imgbuild::error::{Error, Result};

use super::args::RegistryArgs;
use super::common::*;
use super::project::ProjectFile;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// An image tarball, or a registry reference such as ghcr.io/acme/app:1.0.
    pub image: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// List the N largest files and directories of each of the image's own layers (10 when N
    /// is not given); reads those layers.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "10")]
    pub files: Option<usize>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run_inspect(args: InspectArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let client = client_for(args.registry.merge(&project), &[])?;
    let cache = Cache::from_env()?;
    let found = imgbuild::inspect::inspect(&args.image, args.files, &client, &cache).await?;
    if args.json {
        print_json(&found)?;
    } else {
        print!("{}", found.render());
    }
    Ok(())
}
