//! The command line: flags and `imgbuild.toml` merged into a request, run, and reported.
//!
//! One file per command (its flags and its `run_…`); `common` holds what several share.

mod append;
mod args;
mod build;
mod check;
mod common;
mod image;
mod index;
mod init;
mod inspect;
mod login;
mod progress;
mod project;
mod pull;
mod push;
mod rebase;
mod sign;
mod summary;

use clap::{Parser, Subcommand};

use imgbuild::error::Error;

use append::{AppendArgs, run_append};
use build::{BuildArgs, run_build};
use check::{CheckArgs, run_check};
use index::{IndexCommand, run_index_create};
use init::{InitArgs, run_init};
use inspect::{InspectArgs, run_inspect};
use login::{LoginArgs, LogoutArgs, run_login, run_logout};
use pull::{CopyArgs, PullArgs, run_copy, run_pull};
use push::{PushArgs, run_push};
use rebase::{RebaseArgs, run_rebase};
use sign::{SignArgs, VerifyArgs, run_sign, run_verify};

#[derive(Parser, Debug)]
#[command(
    name = "imgbuild",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("IMGBUILD_COMMIT"), ")"),
    about = "Build OCI images from Elixir releases: no daemon, no root, no Dockerfile"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write imgbuild.toml for the Mix project here (from mix.exs and a phx.gen.release
    /// Dockerfile), and with --ci a CI workflow.
    Init(InitArgs),
    /// Build an image from a `mix release` directory on a base image.
    Build(Box<BuildArgs>),
    /// Check that a release can start on a base image, without building.
    Check(Box<CheckArgs>),
    /// Put local files (a static binary, a CA bundle) as one new layer on a base or scratch,
    /// and write the image as a build does.
    Append(Box<AppendArgs>),
    /// Push an image tarball (from `imgbuild build -o`) to one or more registries.
    Push(PushArgs),
    /// Put an image's release onto a new (patched) base without rebuilding it: the release's
    /// layers are kept, packages resolved again, the check run again, the SBOM rewritten.
    Rebase(RebaseArgs),
    /// Save an image (a base, for an air-gapped site) from a registry to a tarball or layout.
    Pull(PullArgs),
    /// Copy an image from any source to a registry, a tarball or a layout, digests kept.
    Copy(CopyArgs),
    /// Multi-platform image indexes.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Sign an image already in a registry (every manifest of an index too), as cosign does.
    Sign(SignArgs),
    /// Check an image's signatures and provenance against a public key.
    Verify(VerifyArgs),
    /// Show an image's config, layers, history and SBOM summary (a tarball or a registry image).
    Inspect(InspectArgs),
    /// Store credentials for a registry where `docker login` would.
    Login(LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(LogoutArgs),
}

/// Run the CLI; returns the process exit code.
pub(crate) fn main() -> i32 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    // Signal handlers go in before the work starts, so no temporary can outlive an interrupt.
    {
        let _guard = runtime.enter();
        imgbuild::interrupt::install();
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Init(args) => run_init(args),
            Command::Build(args) => run_build(*args).await,
            Command::Check(args) => run_check(*args).await,
            Command::Append(args) => run_append(*args).await,
            Command::Push(args) => run_push(args).await,
            Command::Rebase(args) => run_rebase(args).await,
            Command::Pull(args) => run_pull(args).await,
            Command::Copy(args) => run_copy(args).await,
            Command::Index(IndexCommand::Create(args)) => run_index_create(args).await,
            Command::Sign(args) => run_sign(args).await,
            Command::Verify(args) => run_verify(args).await,
            Command::Login(args) => run_login(args).await,
            Command::Inspect(args) => run_inspect(args).await,
            Command::Logout(args) => run_logout(args),
        }
        .map(|()| 0)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            e.exit_code()
        }
    }
}

/// Print an error and its causes, one per line.
pub(crate) fn report(e: &Error) {
    eprintln!("error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    if let Error::Io { source, path, .. } = e {
        match source.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => eprintln!(
                "  hint: the file system holding {} is full: free space there, or write the output (-o) or the cache (IMGBUILD_CACHE) elsewhere; nothing was left half-written",
                path.display()
            ),
            std::io::ErrorKind::PermissionDenied => eprintln!(
                "  hint: this user may not write {}: choose a writable place",
                path.display()
            ),
            _ => {}
        }
    }
}
