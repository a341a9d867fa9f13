//! The tar file: its entries framed here (`oci-layout`, every blob, `index.json` and
//! `manifest.json`), written to a file with each large stretch started for the disk early, or
//! streamed to an engine.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use oci_spec::image::Digest;

use super::{
    Bytes, Naming, OCI_LAYOUT, copy_verified, docker_manifest_json, index_json, naming_output,
};
use crate::atomic::{set_mode, temp_beside};
use crate::error::{Error, IoContext, Result};
use crate::oci::Artifact;

/// One entry of the archive: its header and the bytes that follow it.
pub(super) struct Entry<'a> {
    header: tar::Header,
    body: Body<'a>,
}

enum Body<'a> {
    Empty,
    Owned(Vec<u8>),
    Blob(&'a Digest, &'a Bytes<'a>),
}

impl Entry<'_> {
    fn size(&self) -> u64 {
        match &self.body {
            Body::Empty => 0,
            Body::Owned(b) => b.len() as u64,
            Body::Blob(_, bytes) => bytes.len(),
        }
    }

    /// Bytes the entry takes in the archive: its header, its data, zeros to the next block.
    fn span(&self) -> u64 {
        512 + self.size().div_ceil(512) * 512
    }

    /// The header, the data (a blob verified as it is copied) and the padding.
    fn write<W: Write>(&self, out: &mut W, cache: &crate::cache::Cache) -> Result<()> {
        let err = |e| Error::io("write", "image archive", e);
        out.write_all(self.header.as_bytes()).map_err(err)?;
        match &self.body {
            Body::Empty => {}
            Body::Owned(b) => out.write_all(b).map_err(err)?,
            Body::Blob(d, bytes) => {
                copy_verified(d, bytes, out, cache)?;
            }
        }
        let rest = self.span() - 512 - self.size();
        out.write_all(&[0u8; 512][..rest as usize]).map_err(err)
    }
}

/// A tar header for `name`, with `mtime`.
fn header(
    size: u64,
    mode: u32,
    kind: tar::EntryType,
    name: &str,
    mtime: u64,
) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)
        .map_err(|e| Error::io("write", "image archive", e))?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_entry_type(kind);
    h.set_cksum();
    Ok(h)
}

/// A regular file entry holding `bytes`.
fn file_entry<'a>(name: &str, bytes: Vec<u8>, mtime: u64) -> Result<Entry<'a>> {
    Ok(Entry {
        header: header(
            bytes.len() as u64,
            0o644,
            tar::EntryType::Regular,
            name,
            mtime,
        )?,
        body: Body::Owned(bytes),
    })
}

/// The entries every archive begins with: `oci-layout` and the blob directories.
pub(super) fn head_entries<'a>(mtime: u64) -> Result<Vec<Entry<'a>>> {
    let mut out = vec![file_entry("oci-layout", OCI_LAYOUT.to_vec(), mtime)?];
    for dir in ["blobs/", "blobs/sha256/"] {
        out.push(Entry {
            header: header(0, 0o755, tar::EntryType::Directory, dir, mtime)?,
            body: Body::Empty,
        });
    }
    Ok(out)
}

/// The entry of one blob.
pub(super) fn blob_entry<'a>(d: &'a Digest, bytes: &'a Bytes<'a>, mtime: u64) -> Result<Entry<'a>> {
    let name = format!("blobs/sha256/{}", d.digest());
    Ok(Entry {
        header: header(bytes.len(), 0o644, tar::EntryType::Regular, &name, mtime)?,
        body: Body::Blob(d, bytes),
    })
}

/// The archive's entries in order: `oci-layout`, every blob, `index.json` and
/// `manifest.json`, each with `mtime`. The headers are the `tar` crate's; the entries are
/// framed here because its `Builder` copies data through `&mut dyn Read`, which would hide
/// the files from the kernel copy.
fn entries<'a>(
    artifact: &Artifact,
    blobs: &'a [(Digest, Bytes<'a>)],
    naming: &Naming,
    mtime: u64,
) -> Result<Vec<Entry<'a>>> {
    let mut out = head_entries(mtime)?;
    for (d, bytes) in blobs {
        out.push(blob_entry(d, bytes, mtime)?);
    }
    out.push(file_entry(
        "index.json",
        index_json(artifact, naming)?,
        mtime,
    )?);
    out.push(file_entry(
        "manifest.json",
        docker_manifest_json(artifact, naming)?,
        mtime,
    )?);
    Ok(out)
}

/// The two zero blocks that end a tar.
const END: [u8; 1024] = [0; 1024];

/// Write `entries` into `file` from `at` on, each large stretch started for the disk as soon
/// as it is in place; where the next entry goes.
pub(super) fn append(
    file: &fs::File,
    mut at: u64,
    entries: &[Entry],
    cache: &crate::cache::Cache,
    dest: &Path,
) -> Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    for e in entries {
        e.write(&mut out, cache).map_err(naming_output(dest))?;
        if e.span() >= 8 << 20 {
            out.flush().map_err(|e| Error::io("write", dest, e))?;
            start_writeback(file, at, e.span());
        }
        at += e.span();
    }
    out.into_inner()
        .map_err(|e| Error::io("write", dest, e.into_error()))?;
    Ok(at)
}

/// The start of a tarball, written while its image was still being built: the temporary
/// file, how far it is written, and the blobs in it (in order).
pub struct Prefix {
    pub(super) tmp: tempfile::NamedTempFile,
    pub(super) at: u64,
    pub(super) blobs: Vec<Digest>,
}

/// Write `artifact` as one tar file at `dest`: the bytes [`stream_tarball`] gives, each
/// large stretch started for the disk as soon as it is in place, so that the fsync at the
/// end waits for the last one only. (Writers side by side gain nothing: a file takes one
/// write at a time.) With a `prefix` that holds the archive's first blobs, the rest is
/// written after it.
pub fn write_tarball(
    dest: &Path,
    artifact: &Artifact,
    blobs: &[(Digest, Bytes)],
    naming: &Naming,
    mtime: u64,
    cache: &crate::cache::Cache,
    prefix: Option<Prefix>,
) -> Result<()> {
    if dest.is_dir() {
        return Err(Error::Usage(format!(
            "{}: is a directory; give a file name such as image.tar",
            dest.display()
        )));
    }
    let entries = entries(artifact, blobs, naming, mtime)?;
    let head = head_entries(mtime)?.len();
    let prefix = prefix.filter(|p| {
        p.blobs.len() <= blobs.len()
            && blobs
                .iter()
                .map(|(d, _)| d)
                .take(p.blobs.len())
                .eq(&p.blobs)
    });
    let (tmp, at, done) = match prefix {
        Some(p) => {
            let done = head + p.blobs.len();
            (p.tmp, p.at, done)
        }
        None => (temp_beside(dest)?, 0, 0),
    };
    let tmp_path = tmp.path().to_path_buf();
    let file = tmp.as_file();
    append(file, at, &entries[done..], cache, dest)?;
    let mut out = file;
    out.write_all(&END)
        .map_err(|e| Error::io("write", dest, e))?;
    // tempfile creates 0600; an image tarball is an ordinary shareable file.
    set_mode(&tmp_path, 0o644)?;
    file.sync_all().ctx("flush", &tmp_path)?;
    crate::interrupt::guarded(|| tmp.persist(dest).map_err(|e| e.error))
        .map_err(|e| Error::io("rename into place", dest, e))?;
    Ok(())
}

/// Start writing `len` bytes of `file` from `from` to the disk without waiting for them (Linux:
/// `sync_file_range`); elsewhere nothing. Only a head start for the `fsync` that follows:
/// a failure here is found again by that `fsync`.
#[cfg(target_os = "linux")]
fn start_writeback(file: &fs::File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a system call on a descriptor `file` keeps open; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &fs::File, _: u64, _: u64) {}

/// Stream the tarball of `artifact` into `out` (an engine's load endpoint), blobs verified on
/// the way; nothing touches the disk.
pub fn stream_tarball(
    mut out: impl Write,
    artifact: &Artifact,
    blobs: &[(Digest, Bytes)],
    naming: &Naming,
    cache: &crate::cache::Cache,
) -> Result<()> {
    for e in entries(artifact, blobs, naming, 0)? {
        e.write(&mut out, cache)?;
    }
    out.write_all(&END)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("stream", "image archive", e))
}

#[cfg(test)]
mod tests {
    use super::super::blobs;
    use super::super::fixture::{naming, small_image};
    use super::*;
    use crate::cache::Cache;
    use crate::oci::{BlobSource, FileRange};

    #[test]
    fn the_file_and_the_stream_are_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let artifact = Artifact::Image(Box::new(small_image(&cache)));
        // A large blob too (past the size whose writing is started early), given as a range
        // in the middle of a bigger file.
        let big: Vec<u8> = (0..9_000_000u32).map(|i| (i % 253) as u8).collect();
        let holder = dir.path().join("holder");
        std::fs::write(&holder, [&b"head"[..], &big, b"tail"].concat()).unwrap();
        let mut blobs = blobs(&artifact, &|_| None).unwrap();
        blobs.push((
            crate::oci::digest::sha256_of(&big),
            Bytes::Range(FileRange {
                path: holder,
                offset: 4,
                size: big.len() as u64,
            }),
        ));
        let names = naming(&["a:1", "a:2"]);
        let tar = dir.path().join("file.tar");
        write_tarball(&tar, &artifact, &blobs, &names, 0, &cache, None).unwrap();
        let mut streamed = Vec::new();
        stream_tarball(&mut streamed, &artifact, &blobs, &names, &cache).unwrap();
        let file = std::fs::read(&tar).unwrap();
        assert!(file == streamed, "the file and the stream differ");
        // And the tar crate reads it back: every blob with its bytes.
        let mut archive = tar::Archive::new(&file[..]);
        let mut found = 0;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
                assert_eq!(crate::oci::digest::sha256_of(&bytes).digest(), hex);
                found += 1;
            }
        }
        assert_eq!(found, blobs.len());
    }

    #[test]
    fn damaged_bytes_are_refused_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let image = small_image(&cache);
        let path = cache.blob_path(&image.layers[0].blob.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let artifact = Artifact::Image(Box::new(image));
        let blobs = blobs(&artifact, &|_| None).unwrap();
        let tar = dir.path().join("bad.tar");
        let err =
            write_tarball(&tar, &artifact, &blobs, &naming(&["a:1"]), 0, &cache, None).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!tar.exists());
        assert!(!path.exists(), "the damaged cache entry is removed");
    }

    #[test]
    fn a_blob_hashed_before_is_copied_once_and_a_changed_one_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let image = small_image(&cache);
        let d = image.layers[0].blob.digest.clone();
        let BlobSource::File(at) = image.layers[0].blob.source.clone() else {
            panic!("a file blob")
        };
        let artifact = Artifact::Image(Box::new(image));
        let blobs = blobs(&artifact, &|_| None).unwrap();
        let names = naming(&["a:1"]);
        let write = |name: &str| {
            write_tarball(
                &dir.path().join(name),
                &artifact,
                &blobs,
                &names,
                0,
                &cache,
                None,
            )
        };
        write("1.tar").unwrap();
        // As if hashed by a run a minute from now: the stamp vouches, the bytes are the same.
        let later = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            + 60.0;
        cache.note_verified_at(&at, &d, later);
        assert!(cache.verified_earlier(&at, &d));
        write("2.tar").unwrap();
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(read("1.tar"), read("2.tar"));
        // Damaged in place (same length) after the stamp: hashed again and refused.
        let mut bytes = std::fs::read(&at.path).unwrap();
        bytes[0] ^= 0xff;
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&at.path, &bytes).unwrap();
        let err = write("3.tar").unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!dir.path().join("3.tar").exists());
    }
}
