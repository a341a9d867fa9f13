//! sha256 digests and the hashing adapters that let one pass over a stream produce them.

use std::io::{self, Read, Write};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, ImageError, Result};

/// The `sha256:<hex>` digest of `bytes`.
pub(crate) fn sha256_of(bytes: &[u8]) -> Digest {
    from_hasher(Sha256::new_with_prefix(bytes))
}

pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
    let hex = hex::encode(hasher.finalize());
    // A hex-encoded sha256 is always a valid digest.
    Digest::try_from(format!("sha256:{hex}")).unwrap_or_else(|_| unreachable!())
}

/// The first 12 hex digits, for people (`sha256:` dropped).
pub(crate) fn short(d: &Digest) -> &str {
    let hex = d.digest();
    &hex[..hex.len().min(12)]
}

/// The digest of everything `reader` gives.
pub(crate) fn sha256_of_reader(reader: &mut impl Read) -> io::Result<Digest> {
    let mut h = HashReader::new(reader);
    io::copy(&mut h, &mut io::sink())?;
    Ok(h.finish().0)
}

/// Parse a digest, accepting only sha256 (the only algorithm registries and runtimes agree on).
pub(crate) fn parse(s: &str) -> Result<Digest> {
    let d = Digest::try_from(s)
        .map_err(|e| Error::from(ImageError::Invalid(format!("invalid digest {s:?}: {e}"))))?;
    if d.algorithm().as_ref() != "sha256" {
        return Err(Error::from(ImageError::Invalid(format!(
            "unsupported digest algorithm in {s:?}: only sha256 is supported"
        ))));
    }
    Ok(d)
}

/// Check that `actual` is `expected`, naming `what` otherwise.
pub(crate) fn verify(what: impl Into<String>, expected: &Digest, actual: &Digest) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            what: what.into(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// A writer that hashes and counts everything passing through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The inner writer, the digest and the byte count of what was written.
    pub(crate) fn finish(self) -> (W, Digest, u64) {
        (self.inner, from_hasher(self.hasher), self.len)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    pub(crate) fn finish(self) -> (Digest, u64) {
        (from_hasher(self.hasher), self.len)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn writer_and_reader_agree() {
        let mut w = HashWriter::new(Vec::new());
        w.write_all(b"hello world").unwrap();
        let (buf, d, n) = w.finish();
        let mut r = HashReader::new(&buf[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.finish(), (d.clone(), n));
        assert_eq!(d, sha256_of(b"hello world"));
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(parse("sha256:ABC").is_err());
        assert!(parse("md5:d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
