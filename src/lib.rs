//! imgbuild: build OCI images from Elixir releases without a daemon, root or RUN steps.

pub mod cache;
pub mod digest;
pub mod error;
pub mod layer;
pub mod platform;
pub mod reference;
pub mod registry;
pub mod release;
