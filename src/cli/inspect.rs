//! `imgbuild inspect`: an image's config, layers, history and SBOM summary; `--html`, a page
//! that pictures where its bytes are.

use std::path::PathBuf;

use clap::Args;

use imgbuild::cache::Cache;
use imgbuild::error::{Error, Result};
use imgbuild::inspect::html;
use imgbuild::report::human_size;

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
    /// Also write FILE: one self-contained HTML page with a treemap of the image's bytes by
    /// layer and directory, and tables of its layers and largest files; reads every layer.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run_inspect(args: InspectArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let client = client_for(args.registry.merge(&project), &[])?;
    let cache = Cache::from_env()?;
    let found = match &args.html {
        None => imgbuild::inspect::inspect(&args.image, args.files, &client, &cache).await?,
        Some(dest) => {
            // Created first: a page that cannot be written fails before any layer is read.
            let file = html::HtmlFile::create(dest)?;
            let (found, files) =
                imgbuild::inspect::inspect_files(&args.image, args.files, &client, &cache).await?;
            file.write(&html::page(&found, &files))?;
            let compressed: u64 = found.layers.iter().map(|l| l.size).sum();
            eprintln!(
                "imgbuild: wrote {} ({} layers, {} compressed, {} of files)",
                dest.display(),
                found.layers.len(),
                human_size(compressed),
                human_size(files.bytes())
            );
            found
        }
    };
    if args.json {
        print_json(&found)?;
    } else {
        print!("{}", found.render());
    }
    Ok(())
}
