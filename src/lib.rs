//! imgbuild: build OCI images from Elixir releases without a daemon, root or RUN steps.
//!
//! The image is the centre ([`oci`]): [`source`]s read an image or index from a registry, a
//! layout, an archive or scratch; [`mutate`] makes new images from old (a base made fit to
//! build on, the release's layers appended); [`sink`]s write them to a tarball, a layout, a
//! registry or the local engine. [`pipeline`] is the build that makes an image from a release:
//! [`release`] plans its layers, [`layer`] writes them, `fs` and `check` prove it can start,
//! [`apt`] installs runtime packages, `sbom` lists what is inside. [`registry`] is the
//! transport, [`cache`] the content-addressed store; [`context`] bundles the two with the
//! [`report::Reporter`] every stage and sink reports through, and [`observe`] lets a sink
//! start on a layer while the build goes on. The library never prints. The command line
//! lives in the binary.
//!
//! The front door is small: the functions a user of the library calls are `pub`, everything
//! else is `pub(crate)`. The fuzz targets reach the parsers they feed through [`fuzzing`].

pub mod apt;
mod atomic;
pub mod cache;
mod check;
pub mod context;
pub mod error;
mod fs;
pub mod init;
pub mod inspect;
pub mod interrupt;
mod launch;
pub mod layer;
pub mod mutate;
pub mod net;
pub mod observe;
pub mod oci;
pub mod pipeline;
pub mod registry;
pub mod release;
pub mod report;
mod sbom;
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

/// The parsers the fuzz targets (`fuzz/fuzz_targets/`) feed untrusted bytes to, gathered in
/// one place so that the rest of the library can stay private to the crate. Not an API for
/// anything else: names here may change with any release.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::apt::deb::{read_control, unpack_data};
    pub use crate::apt::x509::subject_hash;
    pub use crate::apt::{index, parse_deb822, parse_source_line, sources_of, version};
    pub use crate::fs::{RootFs, elf::ElfInfo};
    pub use crate::oci::document::{Document, parse_document, select_from_index};
    pub use crate::oci::{platform::Platform, reference::Reference};
    pub use crate::registry::challenge::parse as parse_challenge;
    pub use crate::release::parse_rel_file;
    pub use crate::sbom::{debian_packages, parse_dpkg_status, summary as sbom_summary};
    pub use crate::source::Source;
}
