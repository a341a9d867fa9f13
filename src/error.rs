//! One error type for the library. Every message names the thing that was wrong and, where the
//! user can act, how to fix it; the CLI prints the chain and maps the kind to an exit code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or project file asked for something malformed (exit code 2).
    #[error("{0}")]
    Usage(String),

    /// The user's input (release directory, flags' values) cannot be used.
    #[error("{0}")]
    Input(String),

    /// Reading or writing a local file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An image (manifest, index, config, layer, archive) or a package is malformed,
    /// inconsistent or unsupported.
    #[error(transparent)]
    Image(#[from] ImageError),

    /// Content did not hash to the digest it was announced under.
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// A registry, token service or apt mirror could not be reached or answered with an error.
    #[error(transparent)]
    Registry(Box<NetError>),

    /// The local container engine (`--load`) is missing or refused the image.
    #[error(transparent)]
    Engine(#[from] EngineError),

    /// The start-up check found that the image cannot run (on one platform or several).
    #[error("{0}")]
    Check(crate::check::report::CheckFailure),
}

/// What is wrong with an image, an archive or a package, by kind.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A JSON document (manifest, index, config, index.json, manifest.json) that does not parse.
    #[error("{what}: malformed {doc}: {source}")]
    Json {
        what: String,
        doc: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// An image or archive that is inconsistent, incomplete, or of a kind imgbuild does not take.
    #[error("{0}")]
    Invalid(String),
    /// A layer whose bytes are the ones its digest names, but that does not decompress or is
    /// not a tar: the image itself is damaged.
    #[error(
        "{what}: unreadable layer: {detail}; the damage is in the image itself (its bytes are the ones its digest names): rebuild or replace the image"
    )]
    CorruptLayer { what: String, detail: String },
    /// A layer whose uncompressed tar is not the one the image's config names (its diff_id).
    #[error(
        "{what}: its uncompressed tar hashes to {actual}, but the image's config names {expected} (the layer's diff_id): the image is inconsistent; rebuild or replace the image"
    )]
    DiffIdMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A `.deb` package or an apt index that cannot be read.
    #[error("{0}")]
    Package(String),
    /// imgbuild's own failure (a worker that died, JSON it could not write).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<NetError> for Error {
    fn from(e: NetError) -> Error {
        Error::Registry(Box::new(e))
    }
}

impl Error {
    pub fn io(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// The process exit code this error maps to: 2 for usage errors, 1 for a failed build.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Attach a path and an action to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, action: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, action: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}

// ---------- the transport area (registries, token services, apt mirrors) ----------

/// Why one attempt failed.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The connection could not be made, broke, or was reset.
    Transport(String),
    /// Nothing moved for the idle timeout.
    Stalled(Duration),
    /// The server answered a status; `retry_after` is its `Retry-After`.
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
        text: String,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(m) => f.write_str(m),
            Failure::Stalled(d) => write!(f, "nothing moved for {} s (stalled)", d.as_secs()),
            Failure::Status { status, text, .. } if text.is_empty() => {
                write!(f, "answered {status}")
            }
            Failure::Status { status, text, .. } => write!(f, "answered {status}: {text}"),
        }
    }
}

/// `1 h 5 min`, `40 s`.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

/// What can go wrong talking to a registry, a token service or an apt mirror, as data: which
/// server, which request, what it answered, how many attempts were made, and the next step.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The server could not be reached (connection refused, name not found, TLS, stalls).
    #[error("{who} is unreachable: {detail}{}; {hint}", tries(*attempts))]
    Unreachable {
        who: String,
        detail: String,
        attempts: u32,
        hint: String,
    },
    /// A request kept failing in a way worth retrying until the retries ran out.
    #[error("{who}: {request} {failure}, after {attempts} attempt{}; {hint}", plural(*attempts))]
    GaveUp {
        who: String,
        request: String,
        failure: Failure,
        attempts: u32,
        hint: String,
    },
    /// The server asked (`Retry-After`) to wait longer than imgbuild may.
    #[error(
        "{who} answered {status} and asks to wait {} before trying again, longer than the {} s imgbuild waits; try later, or allow the wait with --max-retry-wait {}",
        human_duration(*wait),
        cap.as_secs(),
        wait.as_secs() + 1
    )]
    WaitTooLong {
        who: String,
        status: StatusCode,
        wait: Duration,
        cap: Duration,
    },
    /// An answer no retry mends.
    #[error("{who}: {request} answered {status}: {text}{hint}")]
    Refused {
        who: String,
        request: String,
        status: StatusCode,
        text: String,
        /// `; what to do`, or empty.
        hint: String,
    },
    #[error("image {image} not found on {registry}: check the name and tag")]
    NotFound { image: String, registry: String },
    /// The server broke the protocol: a missing header, a rewritten manifest, no token.
    /// `detail` names the server itself.
    #[error("{detail}")]
    Protocol { who: String, detail: String },
    /// The HTTP client could not be set up (a bad CA bundle, a broken proxy setting).
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn tries(n: u32) -> String {
    if n > 1 {
        format!(" ({n} attempts)")
    } else {
        String::new()
    }
}

impl NetError {
    pub(crate) fn protocol(who: impl Into<String>, detail: impl Into<String>) -> NetError {
        NetError::Protocol {
            who: who.into(),
            detail: detail.into(),
        }
    }

    /// The next step for a failure that outlasted its retries.
    pub(crate) fn hint_for(failure: &Failure) -> &'static str {
        match failure {
            Failure::Status { .. } => {
                "the server is overloaded or failing: try again later, or raise --retries"
            }
            Failure::Stalled(_) => {
                "the connection stalls: check the network, or raise --idle-timeout"
            }
            Failure::Transport(_) => {
                "check the network and that the server is running, or raise --retries"
            }
        }
    }
}

// ---------- the local engine (`--load`) ----------

/// Why `--load` could not load.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No socket answered.
    #[error(
        "--load found no container engine; tried:\n  {}\nstart Docker or `podman system service`, set DOCKER_HOST=unix:///path/to/socket, or write a tarball with -o",
        tried.join("\n  ")
    )]
    NotFound { tried: Vec<String> },
    /// The engine answered, and refused (inside its JSON stream or with an error status).
    #[error("engine at {engine} refused the image: {message}")]
    Refused { engine: String, message: String },
    /// The engine broke the conversation off.
    #[error("engine at {engine}: {request}: {detail}")]
    Broken {
        engine: String,
        request: String,
        detail: String,
    },
}
