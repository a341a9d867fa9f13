//! A verifiable supply chain: images signed the way cosign signs them, SLSA provenance as a
//! signed in-toto attestation, and verification of both with a public key, offline.

pub mod cosign;
pub mod keys;
pub mod provenance;
pub mod verify;
