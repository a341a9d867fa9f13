//! `imgbuild init`: imgbuild.toml (and a CI workflow) written for a Mix project.

use std::path::PathBuf;

use clap::Args;

use imgbuild::error::Result;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The Mix project's directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Replace imgbuild.toml (and the workflow) when they exist.
    #[arg(long)]
    pub force: bool,
    /// Also write a CI workflow: build on pull requests, build and push on the default branch.
    #[arg(long, value_enum)]
    pub ci: Option<CiKind>,
    /// Where the CI job downloads the imgbuild binary (pinned into the workflow, with
    /// --imgbuild-sha256). Without it the job reads the CI variables IMGBUILD_URL and
    /// IMGBUILD_SHA256, and fails naming them when they are unset.
    #[arg(long, value_name = "URL", requires_all = ["ci", "imgbuild_sha256"])]
    pub imgbuild_url: Option<String>,
    /// The sha256 (64 hex digits) of the binary at --imgbuild-url; the job checks it with
    /// `sha256sum -c` before installing.
    #[arg(long, value_name = "HEX", requires = "imgbuild_url")]
    pub imgbuild_sha256: Option<String>,
    /// GitLab only: run the image jobs in imgbuild's own debug image (imgbuild:VERSION-debug
    /// from the release, pushed to a registry the runners pull from), the release built by a
    /// job of its own before them.
    #[arg(
        long,
        value_name = "IMAGE",
        requires = "ci",
        conflicts_with = "imgbuild_url"
    )]
    pub imgbuild_image: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum CiKind {
    Github,
    Gitlab,
}

pub(crate) fn run_init(args: InitArgs) -> Result<()> {
    let opts = imgbuild::init::InitOptions {
        force: args.force,
        ci: args.ci.map(|c| match c {
            CiKind::Github => imgbuild::init::Ci::Github,
            CiKind::Gitlab => imgbuild::init::Ci::Gitlab,
        }),
        install: match (
            &args.imgbuild_url,
            &args.imgbuild_sha256,
            &args.imgbuild_image,
        ) {
            (Some(url), Some(sum), _) => imgbuild::init::ci::Install::pinned(url, sum)?,
            (_, _, Some(image)) => {
                if !matches!(args.ci, Some(CiKind::Gitlab)) {
                    return Err(imgbuild::error::Error::Usage(
                        "--imgbuild-image is for --ci gitlab (a GitHub job runs its steps in one container: use --imgbuild-url there)".into(),
                    ));
                }
                imgbuild::init::ci::Install::image(image)?
            }
            _ => imgbuild::init::ci::Install::Variables,
        },
    };
    let written = imgbuild::init::init(&args.dir, &opts)?;
    for n in &written.notes {
        eprintln!("imgbuild: {n}");
    }
    for f in &written.files {
        eprintln!("imgbuild: wrote {}", f.display());
    }
    eprintln!("imgbuild: next: MIX_ENV=prod mix release && imgbuild build");
    Ok(())
}
