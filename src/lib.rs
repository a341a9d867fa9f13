//! imgbuild: build OCI images from Elixir releases without a daemon, root or RUN steps.
//!
//! The image is the centre ([`oci`]): [`source`]s read an image or index from a registry, a
//! layout, an archive or scratch; [`mutate`] makes new images from old (a base made fit to
//! build on, the release's layers appended); [`sink`]s write them to a tarball, a layout, a
//! registry or the local engine. [`pipeline`] is the build that makes an image from a release:
//! [`release`] plans its layers, [`layer`] writes them, [`fs`] and [`check`] prove it can
//! start, [`apt`] installs runtime packages, [`sbom`] lists what is inside. [`registry`] is
//! the transport, [`cache`] the content-addressed store. The library never prints: it reports
//! through [`report::Reporter`]. The command line lives in the binary.

pub mod apt;
pub mod atomic;
pub mod cache;
pub mod check;
pub mod context;
pub mod error;
pub mod fs;
pub mod init;
pub mod inspect;
pub mod interrupt;
pub mod layer;
pub mod mutate;
pub mod net;
pub mod observe;
pub mod oci;
pub mod pipeline;
pub mod registry;
pub mod release;
pub mod report;
pub mod sbom;
pub mod secrets;
pub mod sign;
pub mod sink;
pub mod source;

/// Run blocking work (file reading, hashing, compression) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> error::Result<T> + Send + 'static,
) -> error::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        error::Error::from(error::ImageError::Internal(format!("worker failed: {e}")))
    })?
}
