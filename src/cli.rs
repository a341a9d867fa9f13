//! The command line: flags and `imgbuild.toml` merged into a request, run, and reported.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::base::BaseSource;
use crate::build::{self, BuildRequest, Lines, Progress, Quiet};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::image::ImageSettings;
use crate::platform::Platform;
use crate::project::ProjectFile;
use crate::reference::Reference;
use crate::registry::{Anonymous, ClientOptions, RegistryClient};
use crate::release;

pub const DEFAULT_BASE: &str = "debian:bookworm-slim";

#[derive(Parser, Debug)]
#[command(
    name = "imgbuild",
    version,
    about = "Build OCI images from Elixir releases: no daemon, no root, no Dockerfile"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from a `mix release` directory on a base image.
    Build(BuildArgs),
}

#[derive(Args, Debug, Default)]
pub struct BuildArgs {
    /// The release directory (default: the one release under ./_build/prod/rel/).
    pub release_dir: Option<PathBuf>,
    /// Base image: a registry reference, oci:DIR, oci-archive:PATH, docker-archive:PATH or scratch
    /// [default: debian:bookworm-slim].
    #[arg(long)]
    pub from: Option<String>,
    /// Image name and tag, e.g. my_app:1.0 or ghcr.io/org/my_app:1.0 (repeatable; default: RELEASE:VERSION).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Write the image as one tarball for docker load, podman load, skopeo and ctr.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Write the image as an OCI layout directory.
    #[arg(long)]
    pub oci_layout: Option<PathBuf>,
    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,
    /// Platform to pick from a multi-platform base, os/arch[/variant] [default: the host's].
    #[arg(long)]
    pub platform: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Image label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Manifest annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// Exposed port PORT[/tcp|udp|sctp] (repeatable) [default: 4000/tcp].
    #[arg(long = "expose")]
    pub expose: Vec<String>,
    /// User the container runs as [default: 65534].
    #[arg(long)]
    pub user: Option<String>,
    /// Working directory the release is copied to [default: /app].
    #[arg(long)]
    pub workdir: Option<String>,
    /// Command: a JSON array, or words split on spaces [default: /app/bin/server, else /app/bin/NAME start].
    #[arg(long)]
    pub cmd: Option<String>,
    /// Entrypoint: a JSON array, or words split on spaces [default: none].
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// An application (besides the release's namesake) that belongs in the app layer (repeatable).
    #[arg(long = "app")]
    pub apps: Vec<String>,
    /// Leave releases/COOKIE out of the image (then give RELEASE_COOKIE at run time).
    #[arg(long)]
    pub drop_cookie: bool,
    /// A registry host[:port] that may be reached over plain HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// A PEM CA certificate to trust besides the system store (repeatable).
    #[arg(long = "ca-cert")]
    pub ca_certs: Vec<PathBuf>,
    /// gzip level for the release layers, 1-9.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
    /// Print nothing but errors (and --json).
    #[arg(short, long)]
    pub quiet: bool,
}

/// Run the CLI; returns the process exit code.
pub fn main() -> i32 {
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Build(args) => run_build(args).await,
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            e.exit_code()
        }
    }
}

/// Print an error and its causes, one per line.
pub fn report(e: &Error) {
    eprintln!("error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

fn key_value(flag: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(Error::Usage(format!(
            "invalid {flag} {s:?}: expected KEY=VALUE with a non-empty KEY"
        ))),
    }
}

fn words(flag: &str, s: &str) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        serde_json::from_str(s).map_err(|e| {
            Error::Usage(format!(
                "invalid {flag} {s:?}: not a JSON array of strings ({e})"
            ))
        })
    } else {
        let w: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        if w.is_empty() {
            return Err(Error::Usage(format!("invalid {flag}: it is empty")));
        }
        Ok(w)
    }
}

fn port(s: &str) -> Result<String> {
    let (num, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let proto = proto.to_ascii_lowercase();
    match num.parse::<u16>() {
        Ok(n) if n > 0 && ["tcp", "udp", "sctp"].contains(&proto.as_str()) => {
            Ok(format!("{n}/{proto}"))
        }
        _ => Err(Error::Usage(format!(
            "invalid --expose {s:?}: expected PORT[/tcp|udp|sctp] with PORT in 1-65535"
        ))),
    }
}

/// `SOURCE_DATE_EPOCH`, else 0: images are reproducible by default.
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970"
            ))
        }),
        _ => Ok(0),
    }
}

/// Merge flags over the project file into a build request.
pub fn build_request(
    args: &BuildArgs,
    project: &ProjectFile,
    cwd: &std::path::Path,
) -> Result<BuildRequest> {
    let given_release = args.release_dir.clone().or_else(|| project.release.clone());
    let release_dir = release::locate(given_release.as_deref(), cwd)?;
    let from = BaseSource::parse(
        args.from
            .as_deref()
            .or(project.from.as_deref())
            .unwrap_or(DEFAULT_BASE),
    )?;
    let platform = args
        .platform
        .as_deref()
        .or(project.platform.as_deref())
        .map(Platform::parse)
        .transpose()?;

    let tags_src: Vec<String> = if args.tags.is_empty() {
        project.tags.clone().unwrap_or_default()
    } else {
        args.tags.clone()
    };
    let mut tags = tags_src
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>>>()?;
    if tags.iter().any(|t| t.digest.is_some()) {
        return Err(Error::Usage(
            "a tag (-t) cannot carry a digest: give NAME[:TAG]".into(),
        ));
    }
    if tags.is_empty() {
        // Default name: the release's own name and version.
        let rel = release::Release::inspect(&release_dir)?;
        let name = rel.name.replace('_', "-").to_ascii_lowercase();
        let tag = if crate::reference::valid_tag(&rel.version) {
            rel.version.replace('+', "_")
        } else {
            "latest".into()
        };
        tags.push(Reference::parse(&format!("{name}:{tag}"))?);
    }

    let mut env: BTreeMap<String, String> = project.env.clone();
    let mut env_order: Vec<(String, String)> =
        env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for e in &args.env {
        let (k, v) = key_value("--env", e)?;
        env.insert(k.clone(), v.clone());
        env_order.retain(|(have, _)| *have != k);
        env_order.push((k, v));
    }
    let mut labels = project.labels.clone();
    for l in &args.labels {
        let (k, v) = key_value("--label", l)?;
        labels.insert(k, v);
    }
    let mut annotations = project.annotations.clone();
    for a in &args.annotations {
        let (k, v) = key_value("--annotation", a)?;
        annotations.insert(k, v);
    }
    let expose_src: Option<Vec<String>> = if args.expose.is_empty() {
        project.expose.clone()
    } else {
        Some(args.expose.clone())
    };
    let exposed_ports = expose_src
        .map(|ps| ps.iter().map(|p| port(p)).collect::<Result<Vec<_>>>())
        .transpose()?;
    let workdir = args
        .workdir
        .clone()
        .or_else(|| project.workdir.clone())
        .unwrap_or_else(|| "/app".into());
    if !workdir.starts_with('/') {
        return Err(Error::Usage(format!(
            "invalid --workdir {workdir:?}: give an absolute path such as /app"
        )));
    }
    let cmd = match &args.cmd {
        Some(c) => Some(words("--cmd", c)?),
        None => project.cmd.clone(),
    };
    let entrypoint = match &args.entrypoint {
        Some(c) => Some(words("--entrypoint", c)?),
        None => project.entrypoint.clone(),
    };
    let output = args.output.clone().or_else(|| project.output.clone());
    let oci_layout = args
        .oci_layout
        .clone()
        .or_else(|| project.oci_layout.clone());
    if output.is_none() && oci_layout.is_none() {
        return Err(Error::Usage(
            "nothing to write: pass -o IMAGE.tar and/or --oci-layout DIR".into(),
        ));
    }
    Ok(BuildRequest {
        release_dir,
        from,
        platform,
        tags,
        output,
        oci_layout,
        settings: ImageSettings {
            env: env_order,
            labels,
            annotations,
            exposed_ports,
            user: args.user.clone().or_else(|| project.user.clone()),
            workdir,
            cmd,
            entrypoint,
            epoch: source_date_epoch()?,
        },
        own_apps: if args.apps.is_empty() {
            project.apps.clone().unwrap_or_default()
        } else {
            args.apps.clone()
        },
        drop_cookie: args.drop_cookie || project.drop_cookie.unwrap_or(false),
        gzip_level: args.gzip_level,
    })
}

pub fn client_options(insecure: &[String], ca: &[PathBuf], project: &ProjectFile) -> ClientOptions {
    let mut opts = ClientOptions {
        insecure_registries: insecure.to_vec(),
        ca_certs: ca.to_vec(),
    };
    opts.insecure_registries
        .extend(project.insecure_registries.clone().unwrap_or_default());
    opts.ca_certs
        .extend(project.ca_certs.clone().unwrap_or_default());
    opts
}

async fn run_build(args: BuildArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let req = build_request(&args, &project, &cwd)?;
    let cache = Cache::from_env()?;
    let client = RegistryClient::new(
        client_options(&args.insecure_registries, &args.ca_certs, &project),
        Arc::new(Anonymous),
    )?;
    let progress: &dyn Progress = if args.quiet || args.json {
        &Quiet
    } else {
        &Lines
    };
    let report = build::build(&req, &cache, &client, progress).await?;
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Image(format!("internal: {e}")))?;
        println!("{json}");
    } else if !args.quiet {
        println!("{}", report.digest);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values() {
        assert_eq!(
            key_value("--env", "A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert!(key_value("--env", "=x").is_err());
        assert!(
            key_value("--env", "novalue")
                .unwrap_err()
                .to_string()
                .contains("KEY=VALUE")
        );
        assert_eq!(port("4000").unwrap(), "4000/tcp");
        assert_eq!(port("53/UDP").unwrap(), "53/udp");
        assert!(port("0").is_err() && port("70000").is_err() && port("80/icmp").is_err());
        assert_eq!(words("--cmd", r#"["/a b","c"]"#).unwrap(), ["/a b", "c"]);
        assert_eq!(
            words("--cmd", "/app/bin/x start").unwrap(),
            ["/app/bin/x", "start"]
        );
        assert!(words("--cmd", "[oops").is_err());
    }
}
