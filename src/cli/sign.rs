//! `imgbuild sign` and `imgbuild verify`: cosign signatures made and checked.

use std::path::PathBuf;

use clap::Args;

use imgbuild::cache::Cache;
use imgbuild::error::{Error, Result};
use imgbuild::oci::Artifact;
use imgbuild::oci::reference::Reference;
use imgbuild::sink::registry::PushOptions;
use imgbuild::source::{self, Platforms, Source};

use super::args::RegistryArgs;
use super::common::*;
use super::progress;
use super::project::ProjectFile;

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The image, e.g. registry.example.com/team/app:1.0 (or @sha256:…).
    pub image: String,
    /// The private key: cosign's (password in COSIGN_PASSWORD) or a PEM ECDSA P-256 key.
    #[arg(long, env = "IMGBUILD_SIGN_KEY")]
    pub key: PathBuf,
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The image, e.g. registry.example.com/team/app:1.0.
    pub image: String,
    /// The public key (cosign.pub, or a PEM ECDSA P-256 public key).
    #[arg(long)]
    pub key: PathBuf,
    /// Print one JSON object describing every check on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run_sign(args: SignArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let key = load_key(&args.key)?;
    let r = Reference::parse(&args.image)?;
    let cache = Cache::from_env()?;
    let client = client_for(args.registry.merge(&project), std::slice::from_ref(&r))?;
    let reporter = progress::choose(args.quiet);
    let src = Source::Registry(r.clone());
    let artifact = source::read(&src, &Platforms::All, &cache, &client).await?;
    let mut target = r.clone();
    target.digest = None;
    let mut subjects = vec![(
        artifact.digest().clone(),
        artifact.media_type().to_string(),
        artifact.manifest().len(),
    )];
    if let Artifact::Index(i) = &artifact {
        subjects.extend(
            i.images
                .iter()
                .map(|im| (im.digest.clone(), im.media_type.clone(), im.manifest.len())),
        );
    }
    let signatures = subjects
        .iter()
        .map(|(d, media, size)| {
            imgbuild::sign::cosign::signatures(&target, d, media, *size as u64, None, &key)
        })
        .collect::<Result<Vec<_>>>()?;
    // The image is there already: pushing it again only adds the signatures beside it.
    let cx = imgbuild::context::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    imgbuild::sink::registry::push(
        &artifact,
        &[target],
        PushOptions::default(),
        Some(&imgbuild::sink::registry::Signing {
            signatures,
            epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }),
        None,
        &cx,
    )
    .await?;
    if !args.quiet {
        println!("{}", artifact.digest());
    }
    Ok(())
}

pub async fn run_verify(args: VerifyArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let key = imgbuild::sign::keys::PublicKey::load(&args.key)?;
    let cache = Cache::from_env()?;
    let client = client_for(args.registry.merge(&project), &[])?;
    let file = std::path::Path::new(&args.image);
    let verified = if file.is_file() {
        // A tarball: its own signatures, entirely offline.
        let src = Source::File(file.to_path_buf());
        let artifact = source::read(&src, &Platforms::All, &cache, &client).await?;
        let carried = source::file_signatures(file)?;
        imgbuild::sign::verify::verify_carried(&artifact, &args.image, &carried, &key)?
    } else {
        let r = Reference::parse(&args.image)?;
        imgbuild::sign::verify::verify(&r, &key, &client, &cache).await?
    };
    if args.json {
        print_json(&verified)?;
    } else {
        println!(
            "ok: {}@{}: {} signature(s){}",
            verified.image,
            verified.digest,
            verified.signatures,
            if verified.provenance {
                ", SLSA provenance attested"
            } else {
                ""
            }
        );
    }
    Ok(())
}
