//! The command line: flags and `imgbuild.toml` merged into a request, run, and reported.

mod progress;
mod project;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use imgbuild::apt::PackageRequest;
use imgbuild::build::{self, BuildReport, BuildRequest};
use imgbuild::cache::Cache;
use imgbuild::error::{Error, ImageError, Result};
use imgbuild::layer::Codec;
use imgbuild::mutate::ImageSettings;
use imgbuild::oci::Artifact;
use imgbuild::oci::platform::Platform;
use imgbuild::oci::reference::Reference;
use imgbuild::registry::credentials::{self, DockerCredentials};
use imgbuild::registry::upload::UploadOptions;
use imgbuild::registry::{ClientOptions, Credential, RegistryClient, Secret};
use imgbuild::release;
use imgbuild::report::Reporter;
use imgbuild::secrets;
use imgbuild::sink::registry::PushOptions;
use imgbuild::sink::{self, Naming, Sink, Written};
use imgbuild::source::{self, Platforms, Source};
use project::ProjectFile;

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
    /// Write imgbuild.toml for the Mix project here (from mix.exs and a phx.gen.release
    /// Dockerfile), and with --ci a CI workflow.
    Init(InitArgs),
    /// Build an image from a `mix release` directory on a base image.
    Build(Box<BuildArgs>),
    /// Check that a release can start on a base image, without building.
    Check(Box<BuildArgs>),
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

/// How to reach registries (shared by every command that does).
#[derive(Args, Debug, Default, Clone)]
pub struct RegistryArgs {
    /// A registry host[:port] that may be reached over plain HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// A PEM CA certificate to trust besides the system store (repeatable).
    #[arg(long = "ca-cert")]
    pub ca_certs: Vec<PathBuf>,
    /// Retries of a failed request (connection error or reset, stall, 408, 429, 5xx), with
    /// exponential backoff; applies to registries, token services and apt mirrors alike.
    #[arg(long, default_value_t = imgbuild::net::DEFAULT_RETRIES)]
    pub retries: u32,
    /// The longest Retry-After (in seconds) a server may ask for before imgbuild gives up
    /// instead of waiting.
    #[arg(long, value_name = "SECONDS", default_value_t = imgbuild::net::DEFAULT_MAX_RETRY_AFTER.as_secs())]
    pub max_retry_wait: u64,
    /// Seconds a transfer may go without a byte moving before it counts as stalled (and is
    /// retried). A transfer that keeps moving may take as long as it needs.
    #[arg(long, value_name = "SECONDS", default_value_t = imgbuild::net::DEFAULT_IDLE.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
}

/// How to upload.
#[derive(Args, Debug, Clone)]
pub struct UploadArgs {
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub jobs: u32,
    /// Upload in chunks of at most SIZE bytes (suffixes k, M; e.g. 4M for GHCR) instead of one
    /// streamed request per blob.
    #[arg(long, value_parser = parse_size)]
    pub chunk_size: Option<u64>,
}

impl Default for UploadArgs {
    fn default() -> Self {
        UploadArgs {
            jobs: 4,
            chunk_size: None,
        }
    }
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The image tarball.
    pub tarball: PathBuf,
    /// Destinations, e.g. registry.example.com/team/app:1.0 [default: the names in the tarball].
    pub destinations: Vec<String>,
    /// Print one JSON object describing the push on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print nothing but errors (and --json).
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The image, e.g. debian:bookworm-slim or registry.example.com/base@sha256:…
    pub image: String,
    /// Write one tarball (an OCI archive with Docker's manifest.json).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Write an OCI layout directory.
    #[arg(long)]
    pub oci_layout: Option<PathBuf>,
    /// The platform to take from a multi-platform image, os/arch[/variant] [default: the host's].
    #[arg(long, conflicts_with = "all_platforms")]
    pub platform: Option<String>,
    /// Keep the whole multi-platform index.
    #[arg(long)]
    pub all_platforms: bool,
    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The source: a registry reference, oci:DIR[:REF], oci-archive:FILE[:REF],
    /// docker-archive:FILE[:NAME:TAG] or an image file.
    pub source: String,
    /// The destination: a registry reference, oci-archive:FILE, docker-archive:FILE or oci:DIR.
    pub destination: String,
    /// The platform to take from a multi-platform source [default: every platform].
    #[arg(long)]
    pub platform: Option<String>,
    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
}

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

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Join images (built on native runners, one per platform) into one index and push it.
    Create(IndexCreateArgs),
}

#[derive(Args, Debug)]
pub struct IndexCreateArgs {
    /// Where the index goes, e.g. registry.example.com/team/app:1.0.
    pub destination: String,
    /// An image to include (repeatable): any source; an index contributes all its images
    /// [default: `manifests` in imgbuild.toml].
    #[arg(long = "image")]
    pub images: Vec<String>,
    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry host[:port] (docker.io for Docker Hub).
    pub registry: String,
    #[arg(short, long)]
    pub username: String,
    /// Read the password (or token) from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry_args: RegistryArgs,
}

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

#[derive(Args, Debug)]
pub struct RebaseArgs {
    /// The image built by imgbuild: a registry reference, an image file (from -o), or
    /// oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:NAME:TAG].
    pub image: String,
    /// The new base (as `build --from` takes it).
    #[arg(long)]
    pub from: String,
    /// Names of the rebased image (repeatable); needed with --push.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Write one tarball for docker/podman/skopeo/ctr.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Write an OCI layout directory.
    #[arg(long)]
    pub oci_layout: Option<PathBuf>,
    /// Push the rebased image to every -t name.
    #[arg(long)]
    pub push: bool,
    /// An apt source for the runtime packages (repeatable); replaces the new base's own.
    #[arg(long = "apt-source")]
    pub apt_sources: Vec<String>,
    /// Resolve the packages again and rewrite imgbuild.lock.
    #[arg(long)]
    pub update_lock: bool,
    /// Skip the start-up check against the new base (not recommended).
    #[arg(long)]
    pub no_check: bool,
    /// Compression of the new layers: gzip[:LEVEL] or zstd[:LEVEL].
    #[arg(long, default_value = "gzip:6", value_parser = parse_compression)]
    pub compression: (Codec, u32),
    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
}

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
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum CiKind {
    Github,
    Gitlab,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry host[:port].
    pub registry: String,
}

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let m = match t[i..].to_ascii_lowercase().as_str() {
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                other => return Err(format!("unknown size suffix {other:?}: use k, M or G")),
            };
            (&t[..i], m)
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4M"))?;
    match n.checked_mul(mult) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive size")),
    }
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
    /// Platform to build, os/arch[/variant]; several (comma-separated or repeated) build an
    /// image index, e.g. linux/amd64,linux/arm64 [default: the host's].
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<String>,
    /// An image holding Erlang/OTP for the other platforms (same OTP version as the release):
    /// the release's ERTS and OTP native files are transplanted from it.
    #[arg(long, value_name = "IMAGE")]
    pub otp_from: Option<String>,
    /// A registry repository shared by a fleet of runners as a cache: release layers (by
    /// their inputs) and base summaries are looked up there before anything is compressed or
    /// downloaded, and what this run makes is stored there.
    #[arg(long, env = "IMGBUILD_CACHE_REPO", value_name = "REGISTRY/REPO")]
    pub cache_repo: Option<String>,
    /// Read the cache repository but never write to it (pull-request builds).
    #[arg(long)]
    pub cache_repo_readonly: bool,
    /// A release built natively for a platform, PLATFORM=DIR (repeatable).
    #[arg(long = "release", value_name = "PLATFORM=DIR")]
    pub releases: Vec<String>,
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
    /// A Debian package to install into the image, NAME or NAME=VERSION (repeatable).
    #[arg(long = "package")]
    pub packages: Vec<String>,
    /// An apt source "[signed-by=KEYRING] URI SUITE COMPONENT..." (repeatable); replaces the
    /// base image's own sources (for mirrors and air-gapped sites).
    #[arg(long = "apt-source")]
    pub apt_sources: Vec<String>,
    /// Resolve the packages again and rewrite imgbuild.lock.
    #[arg(long)]
    pub update_lock: bool,
    /// Also write the image's SBOM (SPDX 2.3 JSON) to this file.
    #[arg(long)]
    pub sbom: Option<PathBuf>,
    /// Skip the start-up check of the release against the base (not recommended).
    #[arg(long)]
    pub no_check: bool,
    /// Allow an --env or --label KEY that looks like a secret but is not (repeatable).
    #[arg(long = "allow-secret")]
    pub allow_secrets: Vec<String>,
    /// Push the image to every -t destination after building it.
    #[arg(long)]
    pub push: bool,
    /// Load the image into the local Docker Engine or podman (their API socket), no tarball.
    #[arg(long)]
    pub load: bool,
    /// Sign every pushed manifest (and the index) and attest its SLSA provenance, the way
    /// cosign does, with this key: cosign's encrypted key (password in COSIGN_PASSWORD) or a
    /// PEM ECDSA P-256 key. Needs --push.
    #[arg(long, env = "IMGBUILD_SIGN_KEY", value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
    /// gzip level for the release layers, 1-9 (the same as --compression gzip:LEVEL).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9), conflicts_with = "compression")]
    pub gzip_level: Option<u32>,
    /// Compression of the new layers: gzip[:1-9] (default gzip:6; every reader takes it) or
    /// zstd[:1-19] (smaller and faster; Docker Engine before 23 cannot load it).
    #[arg(long, value_parser = parse_compression)]
    pub compression: Option<(Codec, u32)>,
    /// Print nothing but errors (and --json).
    #[arg(short, long)]
    pub quiet: bool,
}

/// Run the CLI; returns the process exit code.
fn parse_compression(s: &str) -> std::result::Result<(Codec, u32), String> {
    imgbuild::layer::parse_compression(s)
}

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
pub fn report(e: &Error) {
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

/// Where a build's image goes, besides the request itself.
struct Outputs {
    output: Option<PathBuf>,
    oci_layout: Option<PathBuf>,
}

/// `writes`: whether the command writes an image (build) or only looks (check).
fn build_request_for(
    args: &BuildArgs,
    project: &ProjectFile,
    cwd: &std::path::Path,
    writes: bool,
) -> Result<(BuildRequest, Outputs)> {
    let given_release = args.release_dir.clone().or_else(|| project.release.clone());
    let release_dir = release::locate(given_release.as_deref(), cwd)?;
    let from = Source::parse(
        args.from
            .as_deref()
            .or(project.from.as_deref())
            .unwrap_or(DEFAULT_BASE),
    )?;
    let platform_words: Vec<String> = if !args.platform.is_empty() {
        args.platform.clone()
    } else if let Some(list) = &project.platforms {
        list.clone()
    } else {
        project.platform.iter().cloned().collect()
    };
    let mut platforms: Vec<Platform> = Vec::new();
    for w in platform_words
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
    {
        let p = Platform::parse(w)?;
        if !platforms.contains(&p) {
            platforms.push(p);
        }
    }
    let platform = platforms.first().cloned();
    let otp_from = args
        .otp_from
        .as_deref()
        .or(project.otp_from.as_deref())
        .map(Source::parse)
        .transpose()?;
    let mut releases = Vec::new();
    for r in &args.releases {
        let (p, dir) = r.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "invalid --release {r:?}: expected PLATFORM=DIR, e.g. linux/arm64=_build/arm64/rel/my_app"
            ))
        })?;
        let p = Platform::parse(p)?;
        if !platforms.contains(&p) {
            return Err(Error::Usage(format!(
                "--release {r}: {p} is not among the platforms built (--platform)"
            )));
        }
        releases.push((p, release::locate(Some(std::path::Path::new(dir)), cwd)?));
    }

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
        let tag = if imgbuild::oci::reference::valid_tag(&rel.version) {
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
    let mut allowed = project.allow_secrets.clone().unwrap_or_default();
    allowed.extend(args.allow_secrets.iter().cloned());
    secrets::refuse_secrets("--env", env_order.iter().map(|(k, v)| (k, v)), &allowed)?;
    secrets::refuse_secrets("--label", labels.iter(), &allowed)?;
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
    if writes && output.is_none() && oci_layout.is_none() && !args.push && !args.load {
        return Err(Error::Usage(
            "nothing to write: pass -o IMAGE.tar, --oci-layout DIR, --push and/or --load".into(),
        ));
    }
    let outputs = Outputs { output, oci_layout };
    // Each new layer goes to the push's registries as soon as it is made.
    let mut push_ahead: Vec<Reference> = Vec::new();
    if writes && args.push {
        for t in &tags {
            if !push_ahead
                .iter()
                .any(|p| p.registry == t.registry && p.repository == t.repository)
            {
                push_ahead.push(t.clone());
            }
        }
    }
    let req = BuildRequest {
        push_ahead,
        release_dir,
        from,
        platform,
        platforms,
        otp_from,
        releases,
        tags,
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
        compression: match (args.compression, args.gzip_level, &project.compression) {
            (Some(c), _, _) => c,
            (None, Some(level), _) => (Codec::Gzip, level),
            (None, None, Some(text)) => imgbuild::layer::parse_compression(text)
                .map_err(|e| Error::Usage(format!("compression in imgbuild.toml: {e}")))?,
            (None, None, None) => (Codec::Gzip, 6),
        },
        check: !args.no_check && project.check.unwrap_or(true),
        sbom_out: args.sbom.clone(),
        packages: PackageRequest {
            packages: if args.packages.is_empty() {
                project.packages.clone().unwrap_or_default()
            } else {
                args.packages.clone()
            },
            sources: if args.apt_sources.is_empty() {
                project.apt_sources.clone().unwrap_or_default()
            } else {
                args.apt_sources.clone()
            },
            lock_path: cwd.join(imgbuild::apt::LOCK_FILE),
            update_lock: args.update_lock,
        },
        cache_repo: match args.cache_repo.as_deref().or(project.cache_repo.as_deref()) {
            Some(repo) => Some(std::sync::Arc::new(
                imgbuild::build::cache_repo::CacheRepo::new(
                    repo,
                    args.cache_repo_readonly || project.cache_repo_readonly.unwrap_or(false),
                )?,
            )),
            None => None,
        },
    };
    Ok((req, outputs))
}

pub fn client_options(args: &RegistryArgs, project: &ProjectFile) -> ClientOptions {
    let mut opts = ClientOptions {
        insecure_registries: args.insecure_registries.clone(),
        ca_certs: args.ca_certs.clone(),
        policy: imgbuild::net::Policy {
            retries: args.retries,
            max_retry_after: std::time::Duration::from_secs(args.max_retry_wait),
            idle: std::time::Duration::from_secs(args.idle_timeout),
        },
    };
    opts.insecure_registries
        .extend(project.insecure_registries.clone().unwrap_or_default());
    opts.ca_certs
        .extend(project.ca_certs.clone().unwrap_or_default());
    opts
}

fn push_options(args: &UploadArgs) -> PushOptions {
    PushOptions {
        jobs: args.jobs as usize,
        upload: UploadOptions {
            chunk_size: args.chunk_size,
        },
    }
}

/// A client whose credentials come from the user's usual places; the CI variables apply to
/// the registries in `targets`.
fn client_for(opts: ClientOptions, targets: &[Reference]) -> Result<RegistryClient> {
    let hosts: Vec<String> = targets.iter().map(|t| t.api_host().to_string()).collect();
    RegistryClient::new(opts, Arc::new(DockerCredentials::from_env(&hosts)?))
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|e| Error::from(ImageError::Internal(format!("{e}"))))?;
    println!("{json}");
    Ok(())
}

/// A signing key, its password from COSIGN_PASSWORD.
fn load_key(path: &std::path::Path) -> Result<imgbuild::sign::keys::Key> {
    let password = std::env::var("COSIGN_PASSWORD").ok();
    imgbuild::sign::keys::Key::load(path, password.as_deref())
}

/// The signatures of a build: every manifest (each platform's, and the index) signed, each
/// image's provenance attested, as the first tag's repository names them.
fn signing_for(
    signer: Option<&imgbuild::sign::keys::Key>,
    artifact: &Artifact,
    report: &imgbuild::build::Report,
    tags: &[Reference],
) -> Result<Option<imgbuild::sink::registry::Signing>> {
    let (Some(key), Some(repo)) = (signer, tags.first()) else {
        return Ok(None);
    };
    let name = format!("{}/{}", repo.registry, repo.repository);
    let reports: Vec<&BuildReport> = match report {
        imgbuild::build::Report::Image(r) => vec![r],
        imgbuild::build::Report::Index(i) => i.platforms.iter().collect(),
    };
    let sign = |d: &oci_spec::image::Digest, media: &str, size: usize| {
        let statement = reports
            .iter()
            .find(|r| r.digest == d.to_string())
            .map(|r| imgbuild::sign::provenance::statement(&name, d, &r.materials))
            .transpose()?;
        imgbuild::sign::cosign::signatures(repo, d, media, size as u64, statement.as_deref(), key)
    };
    let mut signatures = vec![sign(
        artifact.digest(),
        artifact.media_type(),
        artifact.manifest().len(),
    )?];
    if let Artifact::Index(i) = artifact {
        for im in &i.images {
            signatures.push(sign(&im.digest, &im.media_type, im.manifest.len())?);
        }
    }
    let epoch = reports.first().map_or(0, |r| r.materials.epoch);
    Ok(Some(imgbuild::sink::registry::Signing {
        signatures,
        epoch,
    }))
}

/// The JSON `imgbuild build --json` prints: the build's report and what each sink did.
#[derive(Serialize)]
struct BuildJson {
    #[serde(flatten)]
    report: imgbuild::build::Report,
    output: Option<String>,
    oci_layout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<imgbuild::sink::registry::PushReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load: Option<imgbuild::sink::engine::LoadReport>,
}

/// More than one tag in an archive: the rule every reader gets, said once at build time.
/// The sinks a command writes to, in order: tarball, layout, engine, registries (the tags of
/// `naming`, signed with `push`'s signing when given).
fn sinks_for(
    outputs: &Outputs,
    early: Option<Arc<sink::tarball::Early>>,
    engine: Option<sink::engine::Engine>,
    push: Option<(PushOptions, Option<imgbuild::sink::registry::Signing>)>,
    naming: &Naming,
    mtime: u64,
    reporter: &dyn Reporter,
) -> Vec<Box<dyn Sink>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &outputs.output {
        warn_tags(&naming.tags, reporter, path);
        sinks.push(Box::new(sink::TarballSink {
            path: path.clone(),
            naming: naming.clone(),
            mtime,
            early,
        }));
    }
    if let Some(path) = &outputs.oci_layout {
        sinks.push(Box::new(sink::LayoutSink {
            path: path.clone(),
            naming: naming.clone(),
        }));
    }
    if let Some(engine) = engine {
        sinks.push(Box::new(sink::EngineSink {
            engine,
            naming: naming.clone(),
        }));
    }
    if let Some((opts, signing)) = push {
        sinks.push(Box::new(sink::RegistrySink {
            targets: naming.tags.clone(),
            opts,
            signing,
        }));
    }
    sinks
}

/// A build tells the tarball each platform's base ([`sink::tarball::Early`]).
struct EarlyTarball(Arc<sink::tarball::Early>);

impl build::Watch for EarlyTarball {
    fn base(&self, index: usize, base: &imgbuild::oci::Image) {
        self.0.base(index, base);
    }
}

fn warn_tags(tags: &[Reference], reporter: &dyn Reporter, path: &std::path::Path) {
    if tags.len() > 1 {
        reporter.warn(&format!(
            "{} holds {} tags: docker, podman, ctr and containerd load every one, but skopeo and other oci-archive readers must name one ({}:{})",
            path.display(),
            tags.len(),
            format_args!("oci-archive:{}", path.display()),
            tags[0].tag_or_latest()
        ));
    }
}

async fn run_build(args: BuildArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let (req, outputs) = build_request_for(&args, &project, &cwd, true)?;
    let cache = Cache::from_env()?;
    let push_targets = if args.push { req.tags.clone() } else { vec![] };
    let client = client_for(client_options(&args.registry, &project), &push_targets)?;
    let reporter = progress::choose(args.quiet || args.json);
    // The signing key is opened first (a wrong password stops everything before any push).
    let sign_key = args.sign_key.clone().or_else(|| project.sign_key.clone());
    let signer = match &sign_key {
        Some(_) if !args.push && outputs.output.is_none() && outputs.oci_layout.is_none() => {
            return Err(Error::Usage(
                "--sign-key signs what is pushed or saved: add --push and/or -o FILE.tar".into(),
            ));
        }
        Some(path) => Some(Arc::new(load_key(path)?)),
        None => None,
    };
    // An engine is looked for first: without one, nothing is built or written.
    let engine = if args.load {
        Some(sink::engine::Engine::find().await?)
    } else {
        None
    };
    if req.compression.0 == Codec::Zstd && outputs.output.is_some() && !args.quiet {
        eprintln!(
            "imgbuild: note: zstd layers load with podman, skopeo, containerd and Docker Engine 23 or later; older Docker Engines need gzip"
        );
    }
    // The tarball starts with the bases' layers while the release's layers are made.
    let early = outputs.output.as_ref().map(|path| {
        sink::tarball::Early::new(path, req.settings.epoch, &cache, req.platforms.len())
    });
    let watch = early.clone().map(EarlyTarball);
    let built = build::build(
        &req,
        &cache,
        &client,
        reporter.as_ref(),
        watch.as_ref().map(|w| w as &dyn build::Watch),
    )
    .await?;
    let artifact = built.artifact;
    let signing = signing_for(signer.as_deref(), &artifact, &built.report, &req.tags)?;
    // Single-platform readers of an index (Docker 20.10's manifest.json, an engine load) get
    // the host's platform when it was built, else the first.
    let host = Platform::host();
    let naming = Naming {
        tags: req.tags.clone(),
        source: None,
        platform: if req.platforms.contains(&host) {
            Some(host)
        } else {
            req.platforms.first().cloned()
        },
        signatures: signing
            .as_ref()
            .map(|s| s.signatures.clone())
            .unwrap_or_default(),
    };
    let push = args
        .push
        .then(|| (push_options(&args.upload), signing.clone()));
    let sinks = sinks_for(
        &outputs,
        early,
        engine,
        push,
        &naming,
        req.settings.epoch,
        reporter.as_ref(),
    );
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let written = sink::write_all(&sinks, &artifact, &cx).await?;
    let mut json = BuildJson {
        report: built.report,
        output: outputs.output.as_ref().map(|p| p.display().to_string()),
        oci_layout: outputs.oci_layout.as_ref().map(|p| p.display().to_string()),
        push: None,
        load: None,
    };
    for w in written {
        match w {
            Written::Registry(r) => json.push = Some(r),
            Written::Engine(l) => json.load = Some(l),
            _ => {}
        }
    }
    if args.json {
        print_json(&json)?;
    } else if !args.quiet {
        println!("{}", json.report.digest());
    }
    Ok(())
}

async fn run_check(args: BuildArgs) -> Result<()> {
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

/// Destinations given on the command line: references without digests.
fn destinations(given: &[String]) -> Result<Vec<Reference>> {
    let refs = given
        .iter()
        .map(|d| Reference::parse(d))
        .collect::<Result<Vec<_>>>()?;
    if refs.iter().any(|r| r.digest.is_some()) {
        return Err(Error::Usage(
            "a push destination cannot carry a digest: give NAME[:TAG]".into(),
        ));
    }
    Ok(refs)
}

async fn run_push(args: PushArgs) -> Result<()> {
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
    let client = client_for(client_options(&args.registry, &project), &targets)?;
    let reporter = progress::choose(args.quiet || args.json);
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
    let report = imgbuild::sink::registry::push_signed(
        &artifact,
        &targets,
        &client,
        &cache,
        push_options(&args.upload),
        signing.as_ref(),
        reporter.as_ref(),
    )
    .await?;
    if args.json {
        print_json(&report)?;
    } else if !args.quiet {
        println!("{}", report.digest);
    }
    Ok(())
}

/// What `pull` and `copy` print with `--json`.
#[derive(Serialize)]
struct CopyJson {
    source: String,
    digest: String,
    media_type: String,
    platforms: Vec<String>,
    written: Vec<Written>,
}

fn copy_json(source: &Source, artifact: &Artifact, written: Vec<Written>) -> CopyJson {
    CopyJson {
        source: source.describe(),
        digest: artifact.digest().to_string(),
        media_type: artifact.media_type().to_string(),
        platforms: artifact
            .images()
            .iter()
            .map(|i| i.platform().to_string())
            .collect(),
        written,
    }
}

async fn run_pull(args: PullArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let reference = Reference::parse(&args.image)?;
    if args.output.is_none() && args.oci_layout.is_none() {
        return Err(Error::Usage(
            "nothing to write: pass -o FILE.tar and/or --oci-layout DIR".into(),
        ));
    }
    let platforms = if args.all_platforms {
        Platforms::All
    } else {
        Platforms::One(args.platform.as_deref().map(Platform::parse).transpose()?)
    };
    let cache = Cache::from_env()?;
    let client = client_for(client_options(&args.registry, &project), &[])?;
    let reporter = progress::choose(args.quiet || args.json);
    let src = Source::Registry(reference.clone());
    let artifact = source::read(&src, &platforms, &cache, &client).await?;
    let mut tag = reference.clone();
    tag.digest = None;
    // The archive remembers where it came from, so `--from oci-archive:` labels the same base.
    let naming = Naming {
        tags: vec![tag],
        source: Some(reference),
        platform: None,
        signatures: vec![],
    };
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &args.output {
        sinks.push(Box::new(sink::TarballSink {
            path: path.clone(),
            naming: naming.clone(),
            mtime: 0,
            early: None,
        }));
    }
    if let Some(path) = &args.oci_layout {
        sinks.push(Box::new(sink::LayoutSink {
            path: path.clone(),
            naming,
        }));
    }
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let written = sink::write_all(&sinks, &artifact, &cx).await?;
    if args.json {
        print_json(&copy_json(&src, &artifact, written))?;
    } else if !args.quiet {
        println!("{}", artifact.digest());
    }
    Ok(())
}

/// `copy`'s destination: where to, and under which name.
fn destination_sink(
    dst: &str,
    src: &Source,
    upload: &UploadArgs,
) -> Result<(Box<dyn Sink>, Vec<Reference>)> {
    // An archive or layout is named after the source's reference when it has one.
    let naming = || Naming {
        tags: match src {
            Source::Registry(r) => {
                let mut t = r.clone();
                t.digest = None;
                vec![t]
            }
            _ => vec![],
        },
        source: match src {
            Source::Registry(r) => Some(r.clone()),
            _ => None,
        },
        platform: None,
        signatures: vec![],
    };
    let path_of = |rest: &str, what: &str| -> Result<PathBuf> {
        if rest.is_empty() {
            return Err(Error::Usage(format!(
                "copy destination {dst:?}: give a path after {what}"
            )));
        }
        Ok(PathBuf::from(rest))
    };
    if let Some(rest) = dst
        .strip_prefix("oci-archive:")
        .or_else(|| dst.strip_prefix("docker-archive:"))
    {
        return Ok((
            Box::new(sink::TarballSink {
                path: path_of(rest, "the transport")?,
                naming: naming(),
                mtime: 0,
                early: None,
            }),
            vec![],
        ));
    }
    if let Some(rest) = dst.strip_prefix("oci:") {
        return Ok((
            Box::new(sink::LayoutSink {
                path: path_of(rest, "oci:")?,
                naming: naming(),
            }),
            vec![],
        ));
    }
    let targets = match Source::parse(dst) {
        Ok(Source::Registry(_)) => destinations(&[dst.to_string()])?,
        Ok(_) | Err(_) => {
            return Err(Error::Usage(format!(
                "copy destination {dst:?} is not one imgbuild writes: use a registry reference (REGISTRY/REPO:TAG), oci-archive:FILE, docker-archive:FILE or oci:DIR"
            )));
        }
    };
    Ok((
        Box::new(sink::RegistrySink {
            targets: targets.clone(),
            opts: push_options(upload),
            signing: None,
        }),
        targets,
    ))
}

async fn run_index_create(args: IndexCreateArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let targets = destinations(std::slice::from_ref(&args.destination))?;
    let given_images = if args.images.is_empty() {
        project.manifests.clone().unwrap_or_default()
    } else {
        args.images.clone()
    };
    if given_images.is_empty() {
        return Err(Error::Usage(
            "no images to join: pass --image REF for each platform, or list them as manifests in imgbuild.toml".into(),
        ));
    }
    let cache = Cache::from_env()?;
    let client = client_for(client_options(&args.registry, &project), &targets)?;
    let reporter = progress::choose(args.quiet || args.json);
    let mut images: Vec<imgbuild::oci::Image> = Vec::new();
    for given in &given_images {
        let src = Source::parse_any(given)?;
        let artifact = source::read(&src, &Platforms::All, &cache, &client).await?;
        for image in artifact.images() {
            let p = image.platform();
            if let Some(twin) = images.iter().find(|i| i.platform() == p) {
                return Err(Error::Usage(format!(
                    "two images for {p}: {} and {} (from {given}); give one image per platform",
                    twin.digest, image.digest
                )));
            }
            images.push(image.clone());
        }
    }
    let index = imgbuild::mutate::index(images)?;
    let artifact = Artifact::Index(Box::new(index));
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(sink::RegistrySink {
        targets,
        opts: push_options(&args.upload),
        signing: None,
    })];
    let written = sink::write_all(&sinks, &artifact, &cx).await?;
    if args.json {
        let src = Source::Scratch;
        let mut j = copy_json(&src, &artifact, written);
        j.source = given_images.join(", ");
        print_json(&j)?;
    } else if !args.quiet {
        println!("{}", artifact.digest());
    }
    Ok(())
}

async fn run_sign(args: SignArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let key = load_key(&args.key)?;
    let r = Reference::parse(&args.image)?;
    let cache = Cache::from_env()?;
    let client = client_for(
        client_options(&args.registry, &project),
        std::slice::from_ref(&r),
    )?;
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
    imgbuild::sink::registry::push_signed(
        &artifact,
        &[target],
        &client,
        &cache,
        PushOptions::default(),
        Some(&imgbuild::sink::registry::Signing {
            signatures,
            epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }),
        reporter.as_ref(),
    )
    .await?;
    if !args.quiet {
        println!("{}", artifact.digest());
    }
    Ok(())
}

async fn run_verify(args: VerifyArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let key = imgbuild::sign::keys::PublicKey::load(&args.key)?;
    let cache = Cache::from_env()?;
    let client = client_for(client_options(&args.registry, &project), &[])?;
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

async fn run_copy(args: CopyArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let src = Source::parse_any(&args.source)?;
    if src == Source::Scratch {
        return Err(Error::Usage(
            "copy needs an image to copy, not scratch".into(),
        ));
    }
    let (dst, targets) = destination_sink(&args.destination, &src, &args.upload)?;
    let platforms = match args.platform.as_deref() {
        Some(p) => Platforms::One(Some(Platform::parse(p)?)),
        None => Platforms::All,
    };
    let cache = Cache::from_env()?;
    let client = client_for(client_options(&args.registry, &project), &targets)?;
    let reporter = progress::choose(args.quiet || args.json);
    let artifact = source::read(&src, &platforms, &cache, &client).await?;
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let written = sink::write_all(&[dst], &artifact, &cx).await?;
    if args.json {
        print_json(&copy_json(&src, &artifact, written))?;
    } else if !args.quiet {
        println!("{}", artifact.digest());
    }
    Ok(())
}

async fn run_inspect(args: InspectArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let client = client_for(client_options(&args.registry, &project), &[])?;
    let cache = Cache::from_env()?;
    let found = imgbuild::inspect::inspect(&args.image, args.files, &client, &cache).await?;
    if args.json {
        print_json(&found)?;
    } else {
        print!("{}", found.render());
    }
    Ok(())
}

/// The registry host a user typed for login: a reference's registry part, Docker Hub aliases
/// included (`docker.io`, `https://index.docker.io/v1/`).
fn login_host(given: &str) -> Result<String> {
    let host = credentials::normalize_host(given);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(Error::Usage(format!(
            "invalid registry {given:?}: give a host[:port] such as ghcr.io"
        )));
    }
    Ok(host)
}

async fn run_login(args: LoginArgs) -> Result<()> {
    let host = login_host(&args.registry)?;
    if !args.password_stdin {
        return Err(Error::Usage(
            "pass the password on standard input with --password-stdin (it stays out of the shell history and process list)".into(),
        ));
    }
    let mut password = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)
        .map_err(|e| Error::Input(format!("cannot read the password from standard input: {e}")))?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(Error::Usage(
            "the password on standard input is empty".into(),
        ));
    }
    let api_host = if host == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        host.clone()
    };
    let cred = Credential {
        secret: Secret::Basic {
            username: args.username.clone(),
            password: password.clone(),
        },
        source: format!(
            "the password given to `imgbuild login` for {}",
            args.username
        ),
    };
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let client = RegistryClient::new(
        client_options(&args.registry_args, &project),
        Arc::new(credentials::Given(cred)),
    )?;
    if !client.check_login(&api_host).await? {
        eprintln!("imgbuild: note: {host} asks for no authentication; storing the login anyway");
    }
    let place = credentials::store_login(&host, &args.username, &password)?;
    eprintln!("imgbuild: login to {host} succeeded; credentials stored in {place}");
    Ok(())
}

async fn run_rebase(args: RebaseArgs) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let tags = args
        .tags
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>>>()?;
    if args.output.is_none() && args.oci_layout.is_none() && !args.push {
        return Err(Error::Usage(
            "rebase needs an output: -o FILE.tar, --oci-layout DIR and/or --push".into(),
        ));
    }
    if args.push && tags.is_empty() {
        return Err(Error::Usage(
            "--push needs at least one -t NAME to push to".into(),
        ));
    }
    let req = imgbuild::build::rebase::RebaseRequest {
        image: Source::parse_any(&args.image)?,
        from: Source::parse(&args.from)?,
        tags: tags.clone(),
        packages: PackageRequest {
            packages: vec![],
            sources: if args.apt_sources.is_empty() {
                project.apt_sources.clone().unwrap_or_default()
            } else {
                args.apt_sources.clone()
            },
            lock_path: cwd.join(imgbuild::apt::LOCK_FILE),
            update_lock: args.update_lock,
        },
        check: !args.no_check,
        compression: args.compression,
    };
    let cache = Cache::from_env()?;
    let push_targets = if args.push { tags.clone() } else { vec![] };
    let client = client_for(client_options(&args.registry, &project), &push_targets)?;
    let reporter = progress::choose(args.quiet || args.json);
    let rebased = imgbuild::build::rebase::rebase(&req, &cache, &client, reporter.as_ref()).await?;
    if !rebased.new_lock.is_empty() {
        imgbuild::apt::save_sections(&req.packages.lock_path, rebased.new_lock.clone())?;
    }
    let naming = Naming {
        tags: tags.clone(),
        source: None,
        platform: Some(Platform::host()),
        signatures: vec![],
    };
    let outputs = Outputs {
        output: args.output.clone(),
        oci_layout: args.oci_layout.clone(),
    };
    let push = args.push.then(|| (push_options(&args.upload), None));
    let sinks = sinks_for(&outputs, None, None, push, &naming, 0, reporter.as_ref());
    let cx = sink::Context {
        cache: &cache,
        client: &client,
        reporter: reporter.as_ref(),
    };
    let written = sink::write_all(&sinks, &rebased.artifact, &cx).await?;
    if args.json {
        print_json(&serde_json::json!({
            "digest": rebased.artifact.digest().to_string(),
            "tags": tags.iter().map(Reference::canonical).collect::<Vec<_>>(),
            "platforms": rebased.reports,
            "written": written,
        }))?;
    } else if !args.quiet {
        println!("{}", rebased.artifact.digest());
    }
    Ok(())
}

fn run_init(args: InitArgs) -> Result<()> {
    let opts = imgbuild::init::InitOptions {
        force: args.force,
        ci: args.ci.map(|c| match c {
            CiKind::Github => imgbuild::init::Ci::Github,
            CiKind::Gitlab => imgbuild::init::Ci::Gitlab,
        }),
        install: match (&args.imgbuild_url, &args.imgbuild_sha256) {
            (Some(url), Some(sum)) => imgbuild::init::ci::Install::pinned(url, sum)?,
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

fn run_logout(args: LogoutArgs) -> Result<()> {
    let host = login_host(&args.registry)?;
    if credentials::remove_login(&host)? {
        eprintln!("imgbuild: removed the login for {host}");
    } else {
        eprintln!("imgbuild: no stored login for {host}");
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
