//! `imgbuild append`: local files as one new layer on a base (or `scratch`), with the config
//! they need, written to the same sinks a build writes to. What a static binary's image needs
//! (imgbuild's own image is made this way, `scripts/dist`), and what `crane append` does with a
//! tar, from files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use imgbuild::cache::Cache;
use imgbuild::error::{Error, ImageError, Result};
use imgbuild::layer::files::{self, AddFiles};
use imgbuild::layer::{Codec, TarOptions};
use imgbuild::mutate::{self, AppendSettings};
use imgbuild::oci::Artifact;
use imgbuild::oci::platform::Platform;
use imgbuild::sink::{self, Naming, Written};
use imgbuild::source::{self, Platforms, Source};

use super::args::{OutputArgs, RegistryArgs, UploadArgs};
use super::common::*;
use super::progress;
use super::project::ProjectFile;

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// A file or directory and where it goes in the image, SRC:/DEST (repeatable); parent
    /// directories are made, owners are root, modes 0755 or 0644.
    #[arg(long = "add", required = true, value_name = "SRC:DEST")]
    pub add: Vec<String>,
    /// The base: a registry reference, oci:DIR, oci-archive:PATH, docker-archive:PATH or scratch.
    #[arg(long, default_value = "scratch")]
    pub from: String,
    /// The platform, os/arch[/variant]: which one of a multi-platform base, or what a scratch
    /// image is for [default: the host's].
    #[arg(long)]
    pub platform: Option<String>,
    /// The entrypoint, words or a JSON array (a new entrypoint resets the base's command).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// The command, words or a JSON array.
    #[arg(long)]
    pub cmd: Option<String>,
    /// An environment variable, KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// A label, KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// The user the container runs as.
    #[arg(long)]
    pub user: Option<String>,
    /// The working directory.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Image name and tag (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Write one tarball that docker, podman, skopeo and ctr load.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Write an OCI layout directory.
    #[arg(long)]
    pub oci_layout: Option<PathBuf>,
    /// Push to the tags' registries.
    #[arg(long)]
    pub push: bool,
    /// Compression of the new layer: gzip[:1-9] or zstd[:1-19].
    #[arg(long, default_value = "gzip:6", value_parser = parse_compression)]
    pub compression: (Codec, u32),
    #[command(flatten)]
    pub print: OutputArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
}

#[derive(Serialize)]
struct AppendJson {
    digest: String,
    config: String,
    base: String,
    platform: String,
    layer: LayerJson,
    tags: Vec<String>,
    output: Option<String>,
    oci_layout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct LayerJson {
    digest: String,
    diff_id: String,
    size: u64,
    files: usize,
}

pub async fn run_append(args: AppendArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let adds = args
        .add
        .iter()
        .map(|a| AddFiles::parse(a))
        .collect::<Result<Vec<_>>>()?;
    let tags = destinations(&args.tags)?;
    if args.output.is_none() && args.oci_layout.is_none() && !args.push {
        return Err(Error::Usage(
            "nothing to write: pass -o FILE.tar, --oci-layout DIR and/or --push".into(),
        ));
    }
    if args.push && tags.is_empty() {
        return Err(Error::Usage(
            "--push needs a destination: add -t REGISTRY/REPO:TAG".into(),
        ));
    }
    let settings = AppendSettings {
        env: args
            .env
            .iter()
            .map(|e| key_value("--env", e))
            .collect::<Result<_>>()?,
        labels: args
            .labels
            .iter()
            .map(|l| key_value("--label", l))
            .collect::<Result<BTreeMap<_, _>>>()?,
        entrypoint: args
            .entrypoint
            .as_deref()
            .map(|e| words("--entrypoint", e))
            .transpose()?,
        cmd: args.cmd.as_deref().map(|c| words("--cmd", c)).transpose()?,
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        epoch: source_date_epoch()?,
        created_by: format!(
            "imgbuild: files layer: {}",
            adds.iter()
                .map(|a| format!("/{}", a.dest))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    // Every SRC is looked at before anything is fetched.
    for a in &adds {
        std::fs::metadata(&a.source).map_err(|e| Error::io("read", &a.source, e))?;
    }
    let src = Source::parse_any(&args.from)?;
    let platform = args.platform.as_deref().map(Platform::parse).transpose()?;
    let cache = Cache::from_env()?;
    let push_targets = if args.push { tags.clone() } else { vec![] };
    let client = client_for(args.registry.merge(&project), &push_targets)?;
    let reporter = progress::choose(args.print.silent());
    reporter.step(&format!("resolving base {}", src.describe()));
    let base = match source::read(&src, &Platforms::One(platform), &cache, &client).await? {
        Artifact::Image(i) => *i,
        Artifact::Index(_) => {
            return Err(Error::Usage(format!(
                "{} is a multi-platform index: pick one with --platform os/arch",
                src.describe()
            )));
        }
    };
    let (codec, level) = args.compression;
    let opts = TarOptions {
        mtime: settings.epoch,
        level,
        codec,
    };
    let c = cache.clone();
    let (layer, count) = tokio::task::spawn_blocking(move || files::write(&adds, opts, &c))
        .await
        .map_err(|e| Error::from(ImageError::Internal(format!("layer writer stopped: {e}"))))??;
    reporter.step(&format!(
        "layer files    {} ({}), {count} entries",
        layer.blob.digest,
        imgbuild::report::human_size(layer.blob.size)
    ));
    let (digest, diff_id, size) = (
        layer.blob.digest.to_string(),
        layer.diff_id.to_string(),
        layer.blob.size,
    );
    let image = mutate::append_layer(&base, layer, &settings)?;
    let n = image.layers.len();
    reporter.step(&format!(
        "image {} ({n} layer{})",
        image.digest,
        if n == 1 { "" } else { "s" }
    ));
    let artifact = Artifact::Image(Box::new(image));
    let naming = Naming {
        tags: tags.clone(),
        source: None,
        platform: None,
        signatures: vec![],
    };
    let outputs = Outputs {
        output: args.output.clone(),
        oci_layout: args.oci_layout.clone(),
        add_to_layout: false,
    };
    let push = args.push.then(|| Push {
        opts: args.upload.push_options(),
        signing: None,
        sent_ahead: None,
    });
    let sinks = sinks_for(
        &outputs,
        None,
        None,
        push,
        &naming,
        settings.epoch,
        reporter.as_ref(),
    );
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let written = sink::write_all(&sinks, &artifact, &cx).await?;
    let Artifact::Image(image) = &artifact else {
        return Err(Error::from(ImageError::Internal("not an image".into())));
    };
    if args.print.json {
        let push = written.into_iter().find_map(|w| match w {
            Written::Registry(r) => serde_json::to_value(r).ok(),
            _ => None,
        });
        print_json(&AppendJson {
            digest: image.digest.to_string(),
            config: image.config_digest.to_string(),
            base: src.describe(),
            platform: image.platform().to_string(),
            layer: LayerJson {
                digest,
                diff_id,
                size,
                files: count,
            },
            tags: tags.iter().map(|t| t.to_string()).collect(),
            output: args.output.as_ref().map(|p| p.display().to_string()),
            oci_layout: args.oci_layout.as_ref().map(|p| p.display().to_string()),
            push,
        })?;
    } else if !args.print.quiet {
        println!("{}", image.digest);
    }
    Ok(())
}
