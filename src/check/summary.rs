//! The base's summary: its file tree as the check, the SBOM and the package resolver read it,
//! made once from the base's layers and kept in the cache under a key of those layers.

use oci_spec::image::Digest;

use crate::cache::Cache;
use crate::error::Result;
use crate::fs::RootFs;
use crate::layer::VerifiedLayer;
use crate::oci::{FileRange, Image};
use crate::report::Transfer;

/// The key of a base's summary: the layers it is made of, by media type and digest. A
/// summary is a fact derived from exactly those bytes, so it holds for as long as the digests
/// do, wherever the layers are (another registry, a layout, a tarball).
pub(crate) fn summary_key(base: &Image) -> Digest {
    let mut text = String::from("base-summary-v2\n");
    for l in &base.layers {
        text.push_str(&format!("{} {}\n", l.blob.media_type, l.blob.digest));
    }
    crate::oci::digest::sha256_of(text.as_bytes())
}

/// The base's summary — its file tree with what the check, the SBOM and the package resolver
/// read (kinds, modes, links, ELF facts, the dpkg database, apt sources and keyrings) — when
/// one was made before from the same layers. With it no base layer needs to be read, or
/// downloaded, at all.
pub(crate) fn cached_summary(base: &Image, cache: &Cache) -> Option<(RootFs, Vec<String>)> {
    summary_of(base, &summary_bytes(base, cache)?)
}

/// The stored form of the base's summary in the local cache, to share (`--cache-repo`).
pub(crate) fn summary_bytes(base: &Image, cache: &Cache) -> Option<Vec<u8>> {
    cache.record("trees", &summary_key(base))
}

/// `bytes` read as the summary of `base`: `None` when they are not a summary, or one made
/// from other layers (a damaged, stale or planted entry is not this base's summary).
pub(crate) fn summary_of(base: &Image, bytes: &[u8]) -> Option<(RootFs, Vec<String>)> {
    let record = serde_json::from_slice::<SummaryRecord>(bytes).ok()?;
    (record.layers == layer_digests(base)).then_some((record.fs, record.warnings))
}

/// Keep a summary found elsewhere (already checked with [`summary_of`]) in the local cache.
pub(crate) fn keep_summary(base: &Image, bytes: &[u8], cache: &Cache) {
    let _ = cache.put_record("trees", &summary_key(base), bytes);
}

fn layer_digests(base: &Image) -> Vec<String> {
    base.layers
        .iter()
        .map(|l| l.blob.digest.to_string())
        .collect()
}

/// The base's file system, read from its layers' bytes (`local`, one range per layer)
/// without extracting them, and kept in the cache as the base's summary. `progress` advances
/// by the layers' compressed bytes as they are read.
pub(crate) fn base_rootfs(
    base: &Image,
    local: &[FileRange],
    cache: &Cache,
    progress: &Transfer,
) -> Result<(RootFs, Vec<String>)> {
    let (fs, warnings) = read_base_rootfs(base, local, cache, progress)?;
    let record = SummaryRecord {
        layers: layer_digests(base),
        fs,
        warnings,
    };
    // A summary that cannot be stored is only a slower next build.
    if let Ok(bytes) = serde_json::to_vec(&record) {
        let _ = cache.put_record("trees", &summary_key(base), &bytes);
    }
    Ok((record.fs, record.warnings))
}

/// A base's summary as kept: the layers it was read from (every one verified by its digest
/// as it was read), and what was found.
#[derive(serde::Serialize, serde::Deserialize)]
struct SummaryRecord {
    layers: Vec<String>,
    fs: RootFs,
    warnings: Vec<String>,
}

fn read_base_rootfs(
    base: &Image,
    local: &[FileRange],
    cache: &Cache,
    progress: &Transfer,
) -> Result<(RootFs, Vec<String>)> {
    let mut fs = RootFs::new();
    let mut warnings = Vec::new();
    for (i, (layer, at)) in base.layers.iter().zip(local).enumerate() {
        let what = format!("base image {} layer {}", base.origin.name, i + 1);
        // The layer is verified as it is read: the check must see exactly the bytes that ship,
        // and a cache file damaged on disk is caught here rather than trusted.
        let Some(layer) = VerifiedLayer::new(layer, at, &what) else {
            warnings.push(format!(
                "{what} is {}: its files were not read, so the start-up check and SBOM may miss them",
                layer.blob.media_type
            ));
            continue;
        };
        layer
            .in_cache(cache)
            .progress(progress)
            .read(|tar| fs.apply_layer(tar, &what))?;
    }
    Ok((fs, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media;

    /// Base layers compressed with gzip or zstd, or not at all, are all read into the tree
    /// (zstd bases are common now); another media type is named in a warning.
    #[test]
    fn base_layers_of_every_compression_are_read() {
        use crate::oci::{Blob, BlobSource, Layer, LayerKind};
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(12);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "etc/os-release", &b"ID=debian\n\n\n"[..])
            .unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
        let diff_id = crate::oci::digest::sha256_of(&tar);
        for (bytes, media) in [
            (gz, media::LAYER_GZIP),
            (zst, media::LAYER_ZSTD),
            (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            (tar.clone(), "application/vnd.example.other"),
        ] {
            let digest = cache.put_bytes(&bytes).unwrap();
            let at = FileRange {
                path: cache.blob_path(&digest),
                offset: 0,
                size: bytes.len() as u64,
            };
            let mut base = crate::source::scratch(&crate::oci::platform::Platform::host()).unwrap();
            base.layers = vec![Layer {
                blob: Blob::new(
                    digest,
                    bytes.len() as u64,
                    media,
                    BlobSource::File(at.clone()),
                ),
                diff_id: diff_id.clone(),
                kind: LayerKind::Base,
            }];
            let (fs, warnings) = base_rootfs(&base, &[at], &cache, &Transfer::default()).unwrap();
            if media.contains("example") {
                assert!(!fs.exists("/etc/os-release"));
                assert!(warnings[0].contains(media), "{warnings:?}");
            } else {
                assert!(fs.exists("/etc/os-release"), "{media}");
                assert!(warnings.is_empty(), "{media}: {warnings:?}");
            }
        }
    }
}
