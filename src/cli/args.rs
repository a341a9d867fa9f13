//! Argument groups several commands flatten, each declared once. A group that `imgbuild.toml`
//! also sets has a `merge` of the file into its flags: the flag wins, maps are merged key by
//! key, lists are replaced (the README's rule; the exceptions are said where they are).

use std::path::PathBuf;

use clap::Args;

use imgbuild::registry::ClientOptions;
use imgbuild::registry::upload::UploadOptions;
use imgbuild::sink::registry::PushOptions;

use super::project::ProjectFile;

/// What a command prints.
#[derive(Args, Debug, Default, Clone, Copy)]
pub struct OutputArgs {
    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print nothing but errors (and --json).
    #[arg(short, long)]
    pub quiet: bool,
}

impl OutputArgs {
    /// No progress on stderr: `--quiet`, or `--json` (whose reader wants stdout alone).
    pub(crate) fn silent(&self) -> bool {
        self.quiet || self.json
    }
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
    #[arg(long, value_parser = super::common::parse_size)]
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

impl RegistryArgs {
    /// The client options: the flags, and the file's registries and CA certificates besides
    /// them. These two lists are added to the flags' rather than replaced by them (as they
    /// always were): a site's CA or mirror in the file still applies when a flag adds one.
    pub(crate) fn merge(&self, project: &ProjectFile) -> ClientOptions {
        let mut opts = ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            ca_certs: self.ca_certs.clone(),
            policy: imgbuild::net::Policy {
                retries: self.retries,
                max_retry_after: std::time::Duration::from_secs(self.max_retry_wait),
                idle: std::time::Duration::from_secs(self.idle_timeout),
            },
        };
        opts.insecure_registries
            .extend(project.insecure_registries.clone().unwrap_or_default());
        opts.ca_certs
            .extend(project.ca_certs.clone().unwrap_or_default());
        opts
    }
}

impl UploadArgs {
    pub(crate) fn push_options(&self) -> PushOptions {
        PushOptions {
            jobs: self.jobs as usize,
            upload: UploadOptions {
                chunk_size: self.chunk_size,
            },
        }
    }
}

/// The registry cache shared by a fleet of runners.
#[derive(Args, Debug, Default, Clone)]
pub struct CacheArgs {
    /// A registry repository shared by a fleet of runners as a cache: release layers (by
    /// their inputs) and base summaries are looked up there before anything is compressed or
    /// downloaded, and what this run makes is stored there.
    #[arg(long, env = "IMGBUILD_CACHE_REPO", value_name = "REGISTRY/REPO")]
    pub cache_repo: Option<String>,
    /// Read the cache repository but never write to it (pull-request builds).
    #[arg(long)]
    pub cache_repo_readonly: bool,
}

impl CacheArgs {
    /// The cache repository (the flag's, else the file's) and whether it is read-only (the
    /// flag or the file saying so).
    pub(crate) fn merge(&self, project: &ProjectFile) -> Option<(String, bool)> {
        let repo = self
            .cache_repo
            .clone()
            .or_else(|| project.cache_repo.clone())?;
        let readonly = self.cache_repo_readonly || project.cache_repo_readonly.unwrap_or(false);
        Some((repo, readonly))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn file(toml: &str) -> ProjectFile {
        toml::from_str(toml).unwrap()
    }

    fn push_args(flags: &[&str]) -> crate::cli::push::PushArgs {
        let argv = [&["imgbuild", "push", "img.tar"], flags].concat();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Push(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn output_flags() {
        let a = push_args(&["--json"]);
        assert!(a.print.json && !a.print.quiet && a.print.silent());
        let a = push_args(&["-q"]);
        assert!(a.print.quiet && a.print.silent());
        assert!(!push_args(&[]).print.silent());
    }

    #[test]
    fn registry_merge() {
        let project =
            file("insecure-registries = [\"file:5000\"]\nca-certs = [\"/file/ca.pem\"]\n");
        // The file fills.
        let opts = push_args(&[]).registry.merge(&project);
        assert_eq!(opts.insecure_registries, ["file:5000"]);
        assert_eq!(opts.ca_certs, [std::path::PathBuf::from("/file/ca.pem")]);
        // Flags come first and the file's entries are kept beside them (not replaced).
        let a = push_args(&[
            "--insecure-registry",
            "flag:5000",
            "--ca-cert",
            "/flag/ca.pem",
        ]);
        let opts = a.registry.merge(&project);
        assert_eq!(opts.insecure_registries, ["flag:5000", "file:5000"]);
        assert_eq!(opts.ca_certs.len(), 2);
        // No file: the flags and their defaults.
        let opts = push_args(&["--retries", "7"])
            .registry
            .merge(&ProjectFile::default());
        assert!(opts.insecure_registries.is_empty());
        assert_eq!(opts.policy.retries, 7);
        assert_eq!(opts.policy.idle, imgbuild::net::DEFAULT_IDLE);
    }

    #[test]
    fn upload_options() {
        let o = push_args(&["--jobs", "2", "--chunk-size", "4M"])
            .upload
            .push_options();
        assert_eq!(o.jobs, 2);
        assert_eq!(o.upload.chunk_size, Some(4 << 20));
        assert_eq!(push_args(&[]).upload.push_options().jobs, 4);
    }

    #[test]
    fn cache_merge() {
        let flag = |repo: Option<&str>, readonly| CacheArgs {
            cache_repo: repo.map(str::to_string),
            cache_repo_readonly: readonly,
        };
        let project = file("cache-repo = \"reg/file-cache\"\n");
        // Flag wins.
        assert_eq!(
            flag(Some("reg/flag-cache"), false).merge(&project),
            Some(("reg/flag-cache".into(), false))
        );
        // File fills.
        assert_eq!(
            flag(None, false).merge(&project),
            Some(("reg/file-cache".into(), false))
        );
        // Read-only when either says so.
        assert_eq!(
            flag(None, true).merge(&project),
            Some(("reg/file-cache".into(), true))
        );
        let ro = file("cache-repo = \"reg/c\"\ncache-repo-readonly = true\n");
        assert_eq!(flag(None, false).merge(&ro), Some(("reg/c".into(), true)));
        assert_eq!(flag(None, true).merge(&ProjectFile::default()), None);
    }
}
