//! imgbuild: build OCI images from Elixir releases without a daemon, root or RUN steps.
//!
//! The pipeline, one module per concern: [`reference`] and [`platform`] name images;
//! [`registry`] talks to registries; [`cache`] stores blobs by digest; [`base`] resolves the base
//! image; [`release`] inspects the release and plans its layers; [`layer`] writes them;
//! [`image`] assembles config and manifest; [`output`] writes tarballs and layouts;
//! [`build`] runs it all; [`cli`] and [`project`] are the user's side.

pub mod apt;
pub mod base;
pub mod build;
pub mod cache;
pub mod check;
pub mod cli;
pub mod digest;
pub mod elf;
pub mod error;
pub mod image;
pub mod inspect;
pub mod interrupt;
pub mod layer;
pub mod output;
pub mod pgzip;
pub mod platform;
pub mod progress;
pub mod project;
pub mod push;
pub mod reference;
pub mod registry;
pub mod release;
pub mod rootfs;
pub mod sbom;
pub mod secrets;
