//! The one table of media types imgbuild reads and writes, and the codec each layer type uses.
//! Every other module names media types through these constants, never as string literals.

use std::io::{BufReader, Read};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const OCI_LAYER_NONDISTRIBUTABLE: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

/// The SPDX SBOM attached to every image imgbuild builds.
pub const SPDX_JSON: &str = "application/spdx+json";

/// The `Accept` header for manifests: every manifest and index type imgbuild reads.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest JSON document (manifest, index, config, index.json) read into memory; real ones are
/// kilobytes, and the distribution spec asks registries to take at least 4 MB.
pub const MAX_JSON_BYTES: u64 = 8 << 20;

/// How a layer's bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Zstd,
    /// An uncompressed tar.
    Plain,
}

/// What a layer media type means for imgbuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerType {
    /// A file-system layer in this codec; `oci` is its OCI name.
    Tar { codec: Codec, oci: &'static str },
    /// Deprecated non-distributable layers: never rebuilt on or uploaded.
    Foreign,
    /// Anything else (artifacts, attestations).
    Other,
}

pub(crate) fn layer_type(media_type: &str) -> LayerType {
    let tar = |codec, oci| LayerType::Tar { codec, oci };
    match media_type {
        LAYER_GZIP | DOCKER_LAYER_GZIP => tar(Codec::Gzip, LAYER_GZIP),
        LAYER_ZSTD => tar(Codec::Zstd, LAYER_ZSTD),
        LAYER_TAR | DOCKER_LAYER_TAR => tar(Codec::Plain, LAYER_TAR),
        DOCKER_LAYER_FOREIGN | OCI_LAYER_NONDISTRIBUTABLE => LayerType::Foreign,
        _ => LayerType::Other,
    }
}

pub(crate) fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_LIST)
}

pub(crate) fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

impl Codec {
    /// The OCI layer media type of this codec.
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            Codec::Gzip => LAYER_GZIP,
            Codec::Zstd => LAYER_ZSTD,
            Codec::Plain => LAYER_TAR,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::Plain => "tar",
        }
    }

    /// A reader that decompresses `raw` (the one zstd implementation: libzstd through `zstd`).
    /// A gzip stream may have several members, one after another, as a zstd stream may have
    /// several frames: all of them are the stream.
    pub(crate) fn decoder<'a>(self, raw: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(BufReader::new(
                raw,
            ))?),
            Codec::Plain => Box::new(raw),
        })
    }

    /// The codec of a stream, from its first bytes (gzip and zstd magic), for archives whose
    /// members carry no media type.
    pub(crate) fn sniff(head: &[u8]) -> Codec {
        if head.starts_with(&[0x1f, 0x8b]) {
            Codec::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Codec::Zstd
        } else {
            Codec::Plain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_types() {
        assert_eq!(
            layer_type(DOCKER_LAYER_GZIP),
            LayerType::Tar {
                codec: Codec::Gzip,
                oci: LAYER_GZIP
            }
        );
        assert_eq!(layer_type(DOCKER_LAYER_FOREIGN), LayerType::Foreign);
        assert_eq!(layer_type("application/vnd.in-toto+json"), LayerType::Other);
        assert_eq!(Codec::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Codec::Zstd);
        assert_eq!(Codec::sniff(b"ustar"), Codec::Plain);
    }

    #[test]
    fn decoders_round_trip() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello").unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&b"hello"[..], 3).unwrap();
        for (bytes, codec) in [
            (&gz[..], Codec::Gzip),
            (&zst[..], Codec::Zstd),
            (b"hello", Codec::Plain),
        ] {
            let mut out = String::new();
            Codec::sniff(bytes)
                .decoder(bytes)
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, "hello", "{codec:?}");
        }
    }
}
