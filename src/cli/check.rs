//! `imgbuild check`: the start-up check of a release on a base, without building.

use imgbuild::build::{self};
use imgbuild::cache::Cache;
use imgbuild::error::{Error, Result};

use super::build::{BuildArgs, build_request_for};
use super::common::*;
use super::progress;
use super::project::ProjectFile;

pub(crate) async fn run_check(args: BuildArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let (mut req, _) = build_request_for(&args, &project, &cwd, false)?;
    req.check = true;
    let cache = Cache::from_env()?;
    let client = client_for(client_options(&args.registry, &project), &[])?;
    let reporter = progress::choose(args.quiet || args.json);
    let report = build::check_only(&req, &cache, &client, reporter.as_ref()).await?;
    if args.json {
        print_json(&report)?;
    } else if !args.quiet {
        println!(
            "ok: {} ELF files can be loaded{}",
            report.elf_files,
            report
                .glibc
                .as_ref()
                .map(|g| format!(" (glibc {g})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
