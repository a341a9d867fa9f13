//! One error type for the library. Every message names the thing that was wrong and, where the
//! user can act, how to fix it; the CLI prints the chain and maps the kind to an exit code.

use std::path::{Path, PathBuf};

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
    Registry(Box<crate::net::NetError>),

    /// The local container engine (`--load`) is missing or refused the image.
    #[error(transparent)]
    Engine(#[from] crate::sink::engine::EngineError),

    /// The start-up check found that the image cannot run.
    #[error("{0}")]
    Check(String),
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
    /// A `.deb` package or an apt index that cannot be read.
    #[error("{0}")]
    Package(String),
    /// imgbuild's own failure (a worker that died, JSON it could not write).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<crate::net::NetError> for Error {
    fn from(e: crate::net::NetError) -> Error {
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
