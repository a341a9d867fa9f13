//! `imgbuild check`: the start-up check of a release on a base, without building.

use clap::Args;

use imgbuild::cache::Cache;
use imgbuild::error::{Error, Result};
use imgbuild::pipeline;

use super::args::{CacheArgs, OutputArgs, RegistryArgs};
use super::common::*;
use super::image::{CompressionArgs, Extras, ImageArgs};
use super::progress;
use super::project::ProjectFile;

/// What a check uses: the image definition, the registries and cache to read the base from,
/// and how to print. Nothing is written, so no -o, --push, --load, -t or --sign-key.
#[derive(Args, Debug, Default)]
pub struct CheckArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    #[command(flatten)]
    pub print: OutputArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run_check(args: CheckArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let extras = Extras {
        // The file's tags still name the image (a check names nothing, but refuses bad tags).
        tags: project.tags.clone().unwrap_or_default(),
        compression: CompressionArgs::default().merge(&project)?,
        cache_repo: args.cache.merge(&project),
        debug: project.debug.unwrap_or(false),
    };
    let req = args.image.merge(&project)?.request(extras, &cwd)?;
    let cache = Cache::from_env()?;
    let client = client_for(args.registry.merge(&project), &[])?;
    let reporter = progress::choose(args.print.silent());
    let cx = imgbuild::context::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let report = pipeline::check_only(&req, cx).await?;
    if args.print.json {
        print_json(&report)?;
    } else if !args.print.quiet {
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

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn check_refuses_what_only_a_build_uses() {
        for flags in [
            &["-o", "x.tar"][..],
            &["--oci-layout", "dir"],
            &["--push"],
            &["--load"],
            &["--sign-key", "k.pem"],
            &["-t", "app:1"],
            &["--sbom", "s.json"],
            &["--no-check"],
            &["--compression", "zstd"],
            &["--jobs", "2"],
        ] {
            let argv = [&["imgbuild", "check", "rel"][..], flags].concat();
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{flags:?}"
            );
        }
        let ok = [
            "imgbuild",
            "check",
            "rel",
            "--from",
            "b",
            "--platform",
            "linux/arm64",
        ];
        assert!(Cli::try_parse_from(ok).is_ok());
        let ok = [
            "imgbuild",
            "check",
            "--package",
            "auto",
            "--cache-repo",
            "r/c",
            "--json",
        ];
        assert!(Cli::try_parse_from(ok).is_ok());
    }
}
