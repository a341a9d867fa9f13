//! The content-addressed blob cache: `<root>/blobs/sha256/<hex>`.
//!
//! Every file is written under a temporary name in `<root>/tmp` and renamed into place only after
//! its content hashed to the expected digest, so readers never see a partial or wrong blob and
//! several imgbuild processes can share one cache.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;
use tempfile::NamedTempFile;

use crate::error::{Error, ImageError, IoContext, Result};
use crate::oci::FileRange;
use crate::oci::digest::{self, HashReader};

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache named by `IMGBUILD_CACHE`, else `$XDG_CACHE_HOME/imgbuild`, else `~/.cache/imgbuild`.
    pub fn from_env() -> Result<Cache> {
        let root = if let Some(dir) = std::env::var_os("IMGBUILD_CACHE").filter(|v| !v.is_empty()) {
            PathBuf::from(dir)
        } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            PathBuf::from(dir).join("imgbuild")
        } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            PathBuf::from(home).join(".cache").join("imgbuild")
        } else {
            return Err(Error::Input(
                "no cache directory: set IMGBUILD_CACHE (or XDG_CACHE_HOME or HOME)".into(),
            ));
        };
        Cache::open(root)
    }

    pub fn open(root: impl Into<PathBuf>) -> Result<Cache> {
        let root = root.into();
        for dir in [root.join("blobs").join("sha256"), root.join("tmp")] {
            fs::create_dir_all(&dir).ctx("create cache directory", &dir)?;
        }
        // What a killed process left behind goes; this process's temporaries go on a signal.
        crate::interrupt::remove_stale(&root.join("tmp"));
        crate::interrupt::watch(&root.join("tmp"));
        Ok(Cache { root })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.digest())
    }

    pub(crate) fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A temporary file inside the cache, to be filled and then [`Cache::commit`]ted.
    pub(crate) fn temp_file(&self) -> Result<NamedTempFile> {
        let dir = self.root.join("tmp");
        crate::interrupt::guarded(|| {
            tempfile::Builder::new()
                .prefix(&format!("{}blob-", crate::interrupt::marker()))
                .tempfile_in(&dir)
        })
        .ctx("create temporary file in", &dir)
    }

    /// Move a fully written temporary file into place as the blob `digest`.
    pub(crate) fn commit(&self, tmp: NamedTempFile, digest: &Digest) -> Result<PathBuf> {
        let dest = self.blob_path(digest);
        tmp.persist(&dest)
            .map_err(|e| Error::io("store blob", &dest, e.error))?;
        Ok(dest)
    }

    /// Store a small blob held in memory (manifests, configs) and return its digest.
    pub(crate) fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = digest::sha256_of(bytes);
        if !self.has_blob(&digest) {
            let mut tmp = self.temp_file()?;
            tmp.write_all(bytes).ctx("write", tmp.path())?;
            self.commit(tmp, &digest)?;
        }
        Ok(digest)
    }

    /// Stream `reader` into the cache as a blob named by its digest (content made here, not
    /// fetched: there is nothing to check it against). Returns its digest and size.
    pub(crate) fn put_stream(&self, reader: impl Read, what: &str) -> Result<(Digest, u64)> {
        let (tmp, digest, len) = self.spool(reader, what)?;
        self.commit(tmp, &digest)?;
        Ok((digest, len))
    }

    /// `reader` written whole to a temporary file of the cache, hashed on the way.
    fn spool(&self, reader: impl Read, what: &str) -> Result<(NamedTempFile, Digest, u64)> {
        let tmp = self.temp_file()?;
        let mut reader = HashReader::new(reader);
        let mut out = BufWriter::new(tmp);
        io::copy(&mut reader, &mut out)
            .map_err(|e| Error::from(ImageError::Invalid(format!("read {what}: {e}"))))?;
        let tmp = out
            .into_inner()
            .map_err(|e| Error::io("write", self.root.join("tmp"), e.into_error()))?;
        let (digest, len) = reader.finish();
        Ok((tmp, digest, len))
    }

    /// Read a small blob whole, verifying it. A corrupted cache entry is removed so the next
    /// run fetches it again.
    pub(crate) fn read_verified(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).ctx("read cached blob", &path)?;
        let actual = digest::sha256_of(&bytes);
        if &actual != digest {
            return Err(self.corrupted(digest, &actual));
        }
        Ok(bytes)
    }

    /// Make sure the cached blob `digest` still hashes to its name: at once when a stamp
    /// ([`Cache::verified_earlier`]) vouches that the file is unchanged since it was hashed,
    /// else by hashing it (and stamping it). A damaged entry is removed.
    pub(crate) fn verify_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        let size = fs::metadata(&path).ctx("stat cached blob", &path)?.len();
        let at = FileRange {
            path,
            offset: 0,
            size,
        };
        if self.verified_earlier(&at, digest) {
            return Ok(());
        }
        self.hash_range(&at, digest, &mut io::sink()).map(drop)
    }

    /// Copy the bytes of `at` (a cache entry or any other file) into `out` and make sure they
    /// are `digest`: hashed on the way and then stamped, unless a stamp vouches that this very
    /// file was hashed to `digest` before and is unchanged since. Such a file is copied as it
    /// is: into a file, std's `io::copy` lets the kernel copy it (`copy_file_range`), so
    /// writing a cached base into a tarball or layout costs no pass over its bytes here.
    /// A full disk is named as the output's (`write` to `output`: the caller names it).
    pub(crate) fn copy_range_verified<W: Write>(
        &self,
        at: &FileRange,
        digest: &Digest,
        out: &mut W,
    ) -> Result<u64> {
        if !self.verified_earlier(at, digest) {
            return self.hash_range(at, digest, out);
        }
        let n = io::copy(&mut at.open()?, out).map_err(|e| copy_error(at, e))?;
        if n != at.size {
            // Shortened under us after the stamp was read: hash what is there now.
            let mut reader = HashReader::new(at.open()?);
            io::copy(&mut reader, &mut io::sink()).ctx("read", &at.path)?;
            let (actual, _) = reader.finish();
            return Err(self.mismatch(at, digest, &actual));
        }
        Ok(n)
    }

    /// [`Cache::copy_range_verified`] with the bytes hashed.
    fn hash_range<W: Write>(&self, at: &FileRange, digest: &Digest, out: &mut W) -> Result<u64> {
        let mut reader = HashReader::new(at.open()?);
        io::copy(&mut reader, out).map_err(|e| copy_error(at, e))?;
        let (actual, n) = reader.finish();
        if &actual != digest || n != at.size {
            return Err(self.mismatch(at, digest, &actual));
        }
        self.note_verified(at, digest);
        Ok(n)
    }

    /// Bytes of `at` that did not hash to `digest`: a damaged cache entry is removed (the next
    /// run fetches it again); damage elsewhere is named.
    fn mismatch(&self, at: &FileRange, digest: &Digest, actual: &Digest) -> Error {
        if at.path == self.blob_path(digest) {
            self.corrupted(digest, actual)
        } else {
            Error::DigestMismatch {
                what: format!("blob in {}", at.path.display()),
                expected: digest.to_string(),
                actual: actual.to_string(),
            }
        }
    }

    /// A cache entry found not to hash to its name: remove it (the next run fetches it anew)
    /// and describe the damage.
    pub(crate) fn corrupted(&self, digest: &Digest, actual: &Digest) -> Error {
        let path = self.blob_path(digest);
        let _ = fs::remove_file(&path);
        Error::DigestMismatch {
            what: format!(
                "cached blob {} (removed; run again to fetch it anew)",
                path.display()
            ),
            expected: digest.to_string(),
            actual: actual.to_string(),
        }
    }

    /// A derived record (e.g. a base image's file tree) stored under `kind/<key>`, when present.
    pub(crate) fn record(&self, kind: &str, key: &Digest) -> Option<Vec<u8>> {
        fs::read(self.root.join(kind).join(key.digest())).ok()
    }

    /// Store a derived record (written to a temporary name, then renamed).
    pub(crate) fn put_record(&self, kind: &str, key: &Digest, bytes: &[u8]) -> Result<()> {
        let dir = self.root.join(kind);
        fs::create_dir_all(&dir).ctx("create", &dir)?;
        let mut tmp = self.temp_file()?;
        tmp.write_all(bytes).ctx("write", tmp.path())?;
        let dest = dir.join(key.digest());
        tmp.persist(&dest)
            .map_err(|e| Error::io("store cache record", &dest, e.error))?;
        Ok(())
    }

    /// Whether the file range `at` was verified to hold `digest` by an earlier run, and the
    /// file has not changed since, so a sink may copy it without hashing it again.
    ///
    /// The stamp is the file's device, inode, size, mtime and ctime, taken when its bytes were
    /// last hashed. Any write to the file or its replacement changes the inode, mtime or ctime
    /// (ctime cannot be set back by a user), and the file is then hashed in full again. A
    /// stamp is taken only of a file unchanged for a while before it was hashed (see
    /// [`Cache::note_verified`]), so a write in the same clock tick cannot go unseen. What a
    /// stamp cannot see is the disk itself flipping bits under an unchanged inode: the
    /// registry, a loader or `imgbuild inspect` still checks every digest it reads.
    pub(crate) fn verified_earlier(&self, at: &FileRange, digest: &Digest) -> bool {
        match (
            self.record(VERIFIED, &stamp_key(at, digest)),
            file_stamp(&at.path),
        ) {
            (Some(kept), Some((now, _))) => kept == now.as_bytes(),
            _ => false,
        }
    }

    /// Remember that `at` was just hashed to `digest` (best effort: a stamp that cannot be
    /// written only means hashing again next time). A file changed less than two seconds
    /// before is not stamped: a later write within the same timestamp tick would look the same.
    pub(crate) fn note_verified(&self, at: &FileRange, digest: &Digest) {
        if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            self.note_verified_at(at, digest, now.as_secs_f64());
        }
    }

    pub(crate) fn note_verified_at(&self, at: &FileRange, digest: &Digest, now: f64) {
        let Some((stamp, changed)) = file_stamp(&at.path) else {
            return;
        };
        if now - changed > 2.0 {
            let _ = self.put_record(VERIFIED, &stamp_key(at, digest), stamp.as_bytes());
        }
    }

    pub(crate) fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        Ok(fs::metadata(&path).ctx("stat cached blob", &path)?.len())
    }
}

/// A failed copy of a blob: no room is the output's to name (the caller names its path),
/// anything else the blob's file.
fn copy_error(at: &FileRange, e: io::Error) -> Error {
    use io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull};
    match e.kind() {
        StorageFull | QuotaExceeded | FileTooLarge => Error::io("write", "output", e),
        _ => Error::io("copy", &at.path, e),
    }
}

/// Records of files hashed earlier ([`Cache::verified_earlier`]).
const VERIFIED: &str = "verified";

/// The record key of a stamp: the file range and the digest it was found to hold.
fn stamp_key(at: &FileRange, digest: &Digest) -> Digest {
    use std::os::unix::ffi::OsStrExt;
    let mut key = at.path.as_os_str().as_bytes().to_vec();
    key.extend_from_slice(format!("\0{}\0{}\0{digest}", at.offset, at.size).as_bytes());
    digest::sha256_of(&key)
}

/// A file's identity and change times as text, and its ctime in seconds.
fn file_stamp(path: &Path) -> Option<(String, f64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((
        stat_text(&m),
        m.ctime() as f64 + m.ctime_nsec() as f64 / 1e9,
    ))
}

/// What stands for a file's content when its bytes are not read: size, mtime, ctime, inode
/// and device. Any write to the file, or another file under its name, changes it. Used by the
/// verified-file stamps here and by the layers' stat keys.
pub(crate) fn stat_text(m: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{}\0{}.{}\0{}.{}\0{}\0{}\0",
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
        m.dev()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_vouches_for_an_unchanged_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("c")).unwrap();
        let path = dir.path().join("blob");
        fs::write(&path, b"hello").unwrap();
        let d = digest::sha256_of(b"hello");
        let at = FileRange {
            path: path.clone(),
            offset: 0,
            size: 5,
        };
        let later = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        assert!(!cache.verified_earlier(&at, &d));
        // Just written: not stamped (a write in the same tick would look the same).
        cache.note_verified(&at, &d);
        assert!(!cache.verified_earlier(&at, &d));
        cache.note_verified_at(&at, &d, later() + 10.0);
        assert!(cache.verified_earlier(&at, &d));
        // Another digest, another range: no stamp.
        assert!(!cache.verified_earlier(&at, &digest::sha256_of(b"other")));
        let part = FileRange {
            size: 4,
            ..at.clone()
        };
        assert!(!cache.verified_earlier(&part, &d));
        // Rewritten in place with the same length: the stamp no longer holds.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&path, b"HELLO").unwrap();
        assert!(!cache.verified_earlier(&at, &d));
        // Replaced by another file under the same name: neither.
        cache.note_verified_at(&at, &d, later() + 10.0);
        assert!(cache.verified_earlier(&at, &d));
        let other = dir.path().join("other");
        fs::write(&other, b"hello").unwrap();
        fs::rename(&other, &path).unwrap();
        assert!(!cache.verified_earlier(&at, &d));
    }

    #[test]
    fn put_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let d = cache.put_bytes(b"abc").unwrap();
        assert!(cache.has_blob(&d));
        assert_eq!(cache.read_verified(&d).unwrap(), b"abc");
    }

    #[test]
    fn corrupted_entry_is_detected_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let d = cache.put_bytes(b"original").unwrap();
        fs::write(cache.blob_path(&d), b"tampered").unwrap();
        assert!(cache.verify_blob(&d).is_err());
        assert!(!cache.has_blob(&d));
    }
}
