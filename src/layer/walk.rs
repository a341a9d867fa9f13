//! One verified pass over a layer of an image: its bytes read from where they lie (the cache, a
//! layout, an archive's member) and hashed on the way (the digest), decompressed (gzip of any
//! number of members, zstd, or none) and hashed again (the diff_id), and given to the reader as
//! an uncompressed tar, or walked entry by entry. When the stream ends both are verified, so
//! what was read is exactly the layer the image names. Nothing is held in memory beyond the
//! buffers, whatever the layer's size.
//!
//! Each failure is one error: [`Error::DigestMismatch`] when the bytes are not the blob's (a
//! damaged copy in the cache is removed, see [`VerifiedLayer::in_cache`]),
//! [`ImageError::CorruptLayer`] when they are but do not decompress or are not a tar, and
//! [`ImageError::DiffIdMismatch`] when the tar is not the one the image's config names.

use sha2::{Digest as _, Sha256};
use std::io::{self, BufReader, Read};

use crate::cache::Cache;
use crate::error::{Error, ImageError, IoContext, Result};
use crate::oci::digest::{self, HashReader};
use crate::oci::media::{self, Codec, LayerType};
use crate::oci::{FileRange, Layer};

/// Buffer size for the uncompressed stream (the compressed one is read in 64 KiB too,
/// [`FileRange::open`]).
const BUFFER: usize = 1 << 16;

/// A layer of an image, read from `at` and verified as it is read.
pub struct VerifiedLayer<'a> {
    layer: &'a Layer,
    at: &'a FileRange,
    codec: Codec,
    what: String,
    cache: Option<&'a Cache>,
    progress: crate::report::Transfer,
}

/// An entry of a layer being walked ([`VerifiedLayer::walk`]).
pub type LayerEntry<'a, 'r> = tar::Entry<'a, &'r mut dyn Read>;

impl<'a> VerifiedLayer<'a> {
    /// `layer`, its bytes at `at`, named `what` in errors (`base image NAME layer 2`); `None`
    /// when it is not a file-system layer (a tar, compressed or not).
    pub(crate) fn new(
        layer: &'a Layer,
        at: &'a FileRange,
        what: impl Into<String>,
    ) -> Option<VerifiedLayer<'a>> {
        let LayerType::Tar { codec, .. } = media::layer_type(&layer.blob.media_type) else {
            return None;
        };
        Some(VerifiedLayer {
            layer,
            at,
            codec,
            what: what.into(),
            cache: None,
            progress: crate::report::Transfer::default(),
        })
    }

    /// When the bytes are `cache`'s own blob of the layer and do not match its digest, the
    /// damaged blob is removed, so that it is fetched again (the error says so).
    pub(crate) fn in_cache(mut self, cache: &'a Cache) -> VerifiedLayer<'a> {
        self.cache = Some(cache);
        self
    }

    /// Advance `progress` by the layer's (compressed) bytes as they are read.
    pub(crate) fn progress(mut self, progress: &crate::report::Transfer) -> VerifiedLayer<'a> {
        self.progress = progress.clone();
        self
    }

    /// The error for a layer whose bytes cannot be read as a tar (`why`), for readers that
    /// meet it themselves.
    pub(crate) fn corrupt(&self, why: impl std::fmt::Display) -> Error {
        Error::from(ImageError::CorruptLayer {
            what: self.what.clone(),
            detail: why.to_string(),
        })
    }

    /// Give the layer's uncompressed tar to `read`; what it leaves unread is read too, and the
    /// digest and the diff_id are verified before its result is returned. A damaged blob is
    /// told before anything `read` found, and a stream that does not decompress before what
    /// `read` made of it.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&mut dyn Read) -> Result<T>) -> Result<T> {
        let path = &self.at.path;
        let mut raw = HashReader::new(Counted {
            inner: self.at.open()?,
            progress: &self.progress,
        });
        let (result, tar_digest, broken) = {
            let mut tar = Decoded {
                inner: self.codec.decoder(&mut raw).ctx("read layer", path)?,
                // An uncompressed layer's tar is its blob: hashed once, its errors the file's.
                hasher: (self.codec != Codec::Plain).then(Sha256::new),
                failed: None,
            };
            let result = {
                let mut buffered = BufReader::with_capacity(BUFFER, &mut tar);
                read(&mut buffered).and_then(|t| {
                    // The rest of the tar (its padding) is part of the diff_id.
                    io::copy(&mut buffered, &mut io::sink()).ctx("read layer", path)?;
                    Ok(t)
                })
            };
            (result, tar.hasher.map(digest::from_hasher), tar.failed)
        };
        // The rest of the blob, hashed too (a stream that ended early, trailing bytes).
        io::copy(&mut raw, &mut io::sink()).ctx("read layer", path)?;
        let (actual, _) = raw.finish();
        if actual != self.layer.blob.digest {
            let expected = &self.layer.blob.digest;
            return Err(match self.cache {
                Some(cache) if *path == cache.blob_path(expected) => {
                    cache.corrupted(expected, &actual)
                }
                _ => Error::DigestMismatch {
                    what: format!("{} in {}", self.what, path.display()),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                },
            });
        }
        if let Some(why) = broken {
            return Err(self.corrupt(why));
        }
        let value = result?;
        let tar_digest = tar_digest.unwrap_or(actual);
        if tar_digest != self.layer.diff_id {
            return Err(Error::from(ImageError::DiffIdMismatch {
                what: self.what.clone(),
                expected: self.layer.diff_id.to_string(),
                actual: tar_digest.to_string(),
            }));
        }
        Ok(value)
    }

    /// Give each entry of the layer's tar to `each`, in order; verified as [`Self::read`].
    pub(crate) fn walk(
        &self,
        mut each: impl FnMut(&mut LayerEntry<'_, '_>) -> Result<()>,
    ) -> Result<()> {
        self.read(|tar| {
            let mut archive = tar::Archive::new(tar);
            for entry in archive.entries().map_err(|e| self.corrupt(e))? {
                let mut entry = entry.map_err(|e| self.corrupt(e))?;
                each(&mut entry)?;
            }
            Ok(())
        })
    }
}

/// The decompressed stream, hashed (unless it is the blob itself) and with its first error
/// kept: an error there means the bytes do not decompress, whatever the reader made of it.
struct Decoded<R> {
    inner: R,
    hasher: Option<Sha256>,
    failed: Option<String>,
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(why.clone()));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                if let Some(h) = &mut self.hasher {
                    h.update(&buf[..n]);
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                if self.hasher.is_some() {
                    self.failed = Some(e.to_string());
                }
                Err(e)
            }
        }
    }
}

/// A reader that advances a [`Transfer`](crate::report::Transfer) by what it reads.
struct Counted<'p, R> {
    inner: R,
    progress: &'p crate::report::Transfer,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::oci::{Blob, BlobSource, LayerKind};

    /// A tar of `files` (path, contents).
    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, *data).unwrap();
        }
        tar.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// A layer of `media` type whose blob is `bytes` (stored in `cache` under `digest`, or
    /// under their own digest) and whose diff_id is `diff_id`.
    fn layer(
        cache: &Cache,
        bytes: &[u8],
        media: &str,
        digest: Option<&oci_spec::image::Digest>,
        diff_id: &oci_spec::image::Digest,
    ) -> (Layer, FileRange) {
        let digest = match digest {
            Some(d) => {
                std::fs::write(cache.blob_path(d), bytes).unwrap();
                d.clone()
            }
            None => cache.put_bytes(bytes).unwrap(),
        };
        let at = FileRange {
            path: cache.blob_path(&digest),
            offset: 0,
            size: bytes.len() as u64,
        };
        let layer = Layer {
            blob: Blob::new(
                digest,
                bytes.len() as u64,
                media,
                BlobSource::File(at.clone()),
            ),
            diff_id: diff_id.clone(),
            kind: LayerKind::Base,
        };
        (layer, at)
    }

    fn paths(v: &VerifiedLayer) -> Result<Vec<String>> {
        let mut out = Vec::new();
        v.walk(|e| {
            out.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
            Ok(())
        })?;
        Ok(out)
    }

    const FILES: &[(&str, &[u8])] = &[("etc/os-release", b"ID=debian\n"), ("bin/sh", b"#!")];

    #[test]
    fn a_good_layer_is_walked_and_read_in_every_compression() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let tar = tar_of(FILES);
        let diff_id = digest::sha256_of(&tar);
        for (bytes, media) in [
            (gzip(&tar), media::LAYER_GZIP),
            (
                zstd::stream::encode_all(&tar[..], 3).unwrap(),
                media::LAYER_ZSTD,
            ),
            (tar.clone(), media::LAYER_TAR),
        ] {
            let (l, at) = layer(&cache, &bytes, media, None, &diff_id);
            let v = VerifiedLayer::new(&l, &at, "layer 1")
                .unwrap()
                .in_cache(&cache);
            assert_eq!(paths(&v).unwrap(), ["etc/os-release", "bin/sh"], "{media}");
            // A reader that reads nothing: the rest is read and verified all the same.
            assert_eq!(v.read(|_| Ok(7)).unwrap(), 7, "{media}");
            let mut all = Vec::new();
            v.read(|r| r.read_to_end(&mut all).ctx("read", "x"))
                .unwrap();
            assert_eq!(all, tar, "{media}");
        }
        // Not a file-system layer: nothing to walk.
        let (l, at) = layer(&cache, &tar, "application/vnd.example", None, &diff_id);
        assert!(VerifiedLayer::new(&l, &at, "layer 1").is_none());
    }

    #[test]
    fn bytes_that_are_not_the_blob_are_a_digest_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let tar = tar_of(FILES);
        let diff_id = digest::sha256_of(&tar);
        let claimed = digest::sha256_of(b"another blob");
        let (l, at) = layer(
            &cache,
            &gzip(&tar),
            media::LAYER_GZIP,
            Some(&claimed),
            &diff_id,
        );
        // Outside the cache (or not asked to mend it): the file is named and left alone.
        let err = paths(&VerifiedLayer::new(&l, &at, "base layer 2").unwrap()).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("base layer 2 in {}", at.path.display())),
            "{text}"
        );
        assert!(at.path.exists());
        // The cache's own blob: removed, to be fetched again.
        let v = VerifiedLayer::new(&l, &at, "base layer 2")
            .unwrap()
            .in_cache(&cache);
        let err = v.read(|_| Ok(())).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("removed; run again"), "{err}");
        assert!(!at.path.exists());
    }

    #[test]
    fn a_tar_that_is_not_the_diff_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let tar = tar_of(FILES);
        let other = digest::sha256_of(b"another tar");
        for (bytes, media) in [
            (gzip(&tar), media::LAYER_GZIP),
            (tar.clone(), media::LAYER_TAR),
        ] {
            let (l, at) = layer(&cache, &bytes, media, None, &other);
            let v = VerifiedLayer::new(&l, &at, "base image x layer 3").unwrap();
            let err = paths(&v).unwrap_err();
            assert!(
                matches!(err, Error::Image(ImageError::DiffIdMismatch { .. })),
                "{media}: {err}"
            );
            let text = err.to_string();
            assert!(text.starts_with("base image x layer 3: "), "{text}");
            assert!(text.contains(&other.to_string()), "{text}");
            assert!(
                text.contains(&digest::sha256_of(&tar).to_string()),
                "{text}"
            );
        }
    }

    #[test]
    fn a_blob_that_does_not_decompress_is_a_corrupt_layer() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let tar = tar_of(FILES);
        let diff_id = digest::sha256_of(&tar);
        let mut cut = gzip(&tar);
        cut.truncate(cut.len() / 2);
        let mut flipped = gzip(&tar);
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        for bytes in [b"plain bytes".to_vec(), cut, flipped] {
            let (l, at) = layer(&cache, &bytes, media::LAYER_GZIP, None, &diff_id);
            let v = VerifiedLayer::new(&l, &at, "base image x layer 2").unwrap();
            for err in [paths(&v).unwrap_err(), v.read(|_| Ok(())).unwrap_err()] {
                assert!(
                    matches!(err, Error::Image(ImageError::CorruptLayer { .. })),
                    "{err}"
                );
                assert!(
                    err.to_string().starts_with("base image x layer 2: "),
                    "{err}"
                );
            }
        }
        // A tar that is not one (its bytes decompress): the same kind of error.
        let not_tar = vec![b'x'; 1024];
        let (l, at) = layer(
            &cache,
            &gzip(&not_tar),
            media::LAYER_GZIP,
            None,
            &digest::sha256_of(&not_tar),
        );
        let err = paths(&VerifiedLayer::new(&l, &at, "layer").unwrap()).unwrap_err();
        assert!(
            matches!(err, Error::Image(ImageError::CorruptLayer { .. })),
            "{err}"
        );
    }

    /// A gzip of several members (concatenated, as some tools write layers) is one stream:
    /// every member's entries are walked and the diff_id is of the whole.
    #[test]
    fn every_member_of_a_multi_member_gzip_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let tar = tar_of(FILES);
        // Cut inside the second entry's header: no member holds a whole entry list.
        let (a, b) = tar.split_at(1100);
        let mut bytes = gzip(a);
        bytes.extend(gzip(b));
        let (l, at) = layer(
            &cache,
            &bytes,
            media::LAYER_GZIP,
            None,
            &digest::sha256_of(&tar),
        );
        let v = VerifiedLayer::new(&l, &at, "layer 1").unwrap();
        assert_eq!(paths(&v).unwrap(), ["etc/os-release", "bin/sh"]);
    }
}
