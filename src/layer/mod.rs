//! The layer writer: one streaming pass turns planned entries into a deterministic tar, hashes
//! it (diff_id), gzips it on every core ([`crate::layer::pgzip`]) and hashes the gzip (digest) on its
//! way into the cache.
//! Memory stays flat whatever the layer size.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use oci_spec::image::Digest;

use self::pgzip::ParallelGzWriter;
use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::oci::digest::HashWriter;

pub mod files;
pub mod pgzip;
pub mod walk;
use crate::release::{Entry, EntryKind};
use crate::report::Transfer;

pub use crate::oci::media::Codec;
pub use walk::VerifiedLayer;

/// `gzip`, `gzip:LEVEL` (1-9, default 6), `zstd` or `zstd:LEVEL` (1-19, default 3).
pub fn parse_compression(s: &str) -> std::result::Result<(Codec, u32), String> {
    let (name, level) = match s.split_once(':') {
        Some((n, l)) => (n, Some(l)),
        None => (s, None),
    };
    let (codec, default, max) = match name {
        "gzip" => (Codec::Gzip, 6, 9),
        "zstd" => (Codec::Zstd, 3, 19),
        other => {
            return Err(format!(
                "unknown compression {other:?}: use gzip[:1-9] or zstd[:1-19]"
            ));
        }
    };
    let level = match level {
        None => default,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => return Err(format!("{name} level {l:?} must be 1-{max}")),
        },
    };
    Ok((codec, level))
}

/// A layer blob stored in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// sha256 of the compressed blob.
    pub digest: Digest,
    /// The layer media type (gzip or zstd).
    pub media_type: &'static str,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the compressed blob.
    pub size: u64,
}

impl LayerBlob {
    /// The layer of `kind` whose bytes are this blob in `cache`.
    pub(crate) fn layer(&self, kind: crate::oci::LayerKind, cache: &Cache) -> crate::oci::Layer {
        use crate::oci::{Blob, BlobSource, FileRange, Layer};
        Layer {
            blob: Blob::new(
                self.digest.clone(),
                self.size,
                self.media_type,
                BlobSource::File(FileRange {
                    path: cache.blob_path(&self.digest),
                    offset: 0,
                    size: self.size,
                }),
            ),
            diff_id: self.diff_id.clone(),
            kind,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct TarOptions {
    /// Every entry's mtime (`SOURCE_DATE_EPOCH`, else 0).
    pub mtime: u64,
    /// Compression level (gzip 1-9, zstd 1-19).
    pub level: u32,
    pub codec: Codec,
}

/// Bump when the tar or gzip output for the same inputs would change.
const FORMAT: &str = "imgbuild-layer-v4-pgzip256k";

/// The layer cache's key: everything that decides a layer's bytes, with files by content (their
/// sha256), so an unchanged layer is found without tarring or compressing anything.
pub(crate) fn input_key(entries: &[Entry], opts: TarOptions) -> Result<Digest> {
    use sha2::Digest as _;
    entries_key(entries, opts, "content", |src, h| {
        let mut f = File::open(src).ctx("read", src)?;
        let mut file_hash = sha2::Sha256::new();
        io::copy(&mut f, &mut file_hash).ctx("read", src)?;
        h.update(file_hash.finalize());
        Ok(())
    })
}

/// The layer's inputs by metadata alone: every entry as in [`input_key`], but files by their
/// size, mtime, ctime, inode and device instead of their content. `None` when a file cannot
/// be examined (the content key then decides).
pub(crate) fn stat_key(entries: &[Entry], opts: TarOptions) -> Option<Digest> {
    use sha2::Digest as _;
    entries_key(entries, opts, "stat", |src, h| {
        let m = std::fs::metadata(src).ctx("stat", src)?;
        h.update(crate::cache::stat_text(&m));
        Ok(())
    })
    .ok()
}

/// Hash what decides a layer's bytes: the format, mtime, codec and level, then every entry's
/// path, mode, owner and kind; `file` adds what stands for a file's content (`kind` names it).
fn entries_key(
    entries: &[Entry],
    opts: TarOptions,
    kind: &str,
    mut file: impl FnMut(&std::path::Path, &mut sha2::Sha256) -> Result<()>,
) -> Result<Digest> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(format!(
        "{FORMAT}\0{kind}\0{}\0{}\0{}\0",
        opts.mtime,
        opts.codec.name(),
        opts.level
    ));
    for e in entries {
        h.update(format!("{}\0{:o}\0{}\0{}\0", e.path, e.mode, e.uid, e.gid));
        match &e.kind {
            EntryKind::Dir => h.update(b"d\0"),
            EntryKind::Symlink { target } => h.update(format!("l\0{target}\0")),
            EntryKind::File { size } => {
                h.update(format!("f\0{size}\0"));
                if let Some(src) = &e.source {
                    file(src, &mut h)?;
                }
            }
        }
    }
    Ok(crate::oci::digest::from_hasher(h))
}

/// The layer cache's key of `entries` (see [`input_key`]). Files whose size, mtime, ctime and
/// inode are as they were when last hashed are not read again (git's index does the same); any
/// change there means a full content hash.
pub(crate) fn layer_key(entries: &[Entry], opts: TarOptions, cache: &Cache) -> Result<Digest> {
    let meta = stat_key(entries, opts);
    // Platforms built at once share most layers: the first to reach these inputs hashes
    // them, the others wait and read its record instead of hashing the same files again.
    let lock = meta.as_ref().map(in_flight);
    let _hashing = lock
        .as_ref()
        .map(|l| l.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let known = meta
        .as_ref()
        .and_then(|m| cache.record("inputs", m))
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| crate::oci::digest::parse(t.trim()).ok());
    Ok(match known {
        Some(k) => k,
        None => {
            let k = input_key(entries, opts)?;
            if let Some(m) = &meta {
                let _ = cache.put_record("inputs", m, k.to_string().as_bytes());
            }
            k
        }
    })
}

/// The layer made before under `key`, when the local cache has it.
pub(crate) fn cached(cache: &Cache, key: &Digest) -> Result<Option<LayerBlob>> {
    record(cache, key)
}

/// Write the layer of `key` unless the cache has it by now; returns it and whether it was
/// reused.
pub(crate) fn write_keyed(
    entries: &[Entry],
    opts: TarOptions,
    cache: &Cache,
    key: &Digest,
    progress: &Transfer,
) -> Result<(LayerBlob, bool)> {
    // Builds of several platforms run at once and share most layers: the first to reach a
    // key writes it, the others wait for it and reuse its record.
    let lock = in_flight(key);
    let _writing = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(blob) = record(cache, key)? {
        return Ok((blob, true));
    }
    let blob = write_layer_showing(entries, opts, cache, progress)?;
    let text = format!(
        "{}\n{}\n{}\n{}\n",
        blob.digest, blob.diff_id, blob.size, blob.media_type
    );
    cache.put_record("layers", key, text.as_bytes())?;
    Ok((blob, false))
}

/// The diff_id `entries` would have as a layer: the tar is made and hashed, not compressed or
/// stored (a fraction of the cost of writing the layer). Checks a layer found elsewhere.
pub(crate) fn diff_id(entries: &[Entry], opts: TarOptions) -> Result<Digest> {
    let (_, d) = write_tar(
        entries,
        opts,
        io::sink(),
        std::path::Path::new("layer"),
        &Transfer::default(),
    )?;
    Ok(d)
}

/// The lock of one layer-input key within this process (kept for the process's life: a build
/// has a handful of keys).
fn in_flight(key: &Digest) -> std::sync::Arc<std::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    static KEYS: Mutex<Option<HashMap<String, Arc<Mutex<()>>>>> = Mutex::new(None);
    let mut keys = KEYS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    keys.get_or_insert_with(HashMap::new)
        .entry(key.to_string())
        .or_default()
        .clone()
}

/// A layer made before from the same inputs (see [`input_key`]), when its blob is still in
/// the cache. A damaged record is ignored (and the layer made again).
fn record(cache: &Cache, key: &Digest) -> Result<Option<LayerBlob>> {
    let Some(text) = cache
        .record("layers", key)
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return Ok(None);
    };
    let mut lines = text.lines();
    let (Some(d), Some(diff), Some(size), Some(media_type)) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return Ok(None);
    };
    let Some(codec) = [Codec::Gzip, Codec::Zstd, Codec::Plain]
        .into_iter()
        .find(|c| c.media_type() == media_type)
    else {
        return Ok(None);
    };
    let (Ok(digest), Ok(diff_id), Ok(size)) = (
        crate::oci::digest::parse(d),
        crate::oci::digest::parse(diff),
        size.parse::<u64>(),
    ) else {
        return Ok(None);
    };
    if !cache.has_blob(&digest) || cache.blob_size(&digest)? != size {
        return Ok(None);
    }
    Ok(Some(LayerBlob {
        digest,
        media_type: codec.media_type(),
        diff_id,
        size,
    }))
}

/// Write `entries` as one compressed layer into `cache`.
pub fn write_layer(entries: &[Entry], opts: TarOptions, cache: &Cache) -> Result<LayerBlob> {
    write_layer_showing(entries, opts, cache, &Transfer::default())
}

/// The bytes of the files `entries` hold: what writing their layer reads.
pub(crate) fn input_size(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|e| match (&e.kind, &e.source) {
            (EntryKind::File { size }, Some(_)) => *size,
            _ => 0,
        })
        .sum()
}

/// [`write_layer`], telling `progress` of every byte of the files read.
fn write_layer_showing(
    entries: &[Entry],
    opts: TarOptions,
    cache: &Cache,
    progress: &Transfer,
) -> Result<LayerBlob> {
    let tmp = cache.temp_file()?;
    let tmp_path = tmp.path().to_path_buf();
    let compressed = HashWriter::new(BufWriter::with_capacity(1 << 20, tmp));
    let compressed = match opts.codec {
        Codec::Gzip => {
            let gz = ParallelGzWriter::new(compressed, opts.level, 0);
            let (gz, diff_id) = write_tar(entries, opts, gz, &tmp_path, progress)?;
            (gz.finish().ctx("compress layer", &tmp_path)?, diff_id)
        }
        Codec::Plain => write_tar(entries, opts, compressed, &tmp_path, progress)?,
        Codec::Zstd => {
            let z = zstd_writer(compressed, opts.level, pgzip::default_threads() as u32)
                .ctx("compress layer", &tmp_path)?;
            let (z, diff_id) = write_tar(entries, opts, z, &tmp_path, progress)?;
            (z.finish().ctx("compress layer", &tmp_path)?, diff_id)
        }
    };
    let ((buffered, digest, size), diff_id) = (compressed.0.finish(), compressed.1);
    let tmp = buffered
        .into_inner()
        .map_err(|e| Error::io("write layer", &tmp_path, e.into_error()))?;
    cache.commit(tmp, &digest)?;
    Ok(LayerBlob {
        digest,
        media_type: opts.codec.media_type(),
        diff_id,
        size,
    })
}

/// The tar of `entries` into `out`, hashed on the way (the diff_id).
fn write_tar<W: Write>(
    entries: &[Entry],
    opts: TarOptions,
    out: W,
    tmp_path: &std::path::Path,
    progress: &Transfer,
) -> Result<(W, Digest)> {
    let mut builder = tar::Builder::new(HashWriter::new(out));
    for entry in entries {
        append_entry(&mut builder, entry, opts.mtime, progress)?;
    }
    let tar = builder.into_inner().ctx("write layer", tmp_path)?;
    let (out, diff_id, _) = tar.finish();
    Ok((out, diff_id))
}

/// A zstd stream on every core. zstd's multi-threaded mode gives the same bytes whatever the
/// number of workers (at least one), so the layer stays reproducible across machines.
fn zstd_writer<W: Write>(
    out: W,
    level: u32,
    workers: u32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut z = zstd::stream::write::Encoder::new(out, level as i32)?;
    z.multithread(workers)?;
    z.include_checksum(true)?;
    Ok(z)
}

/// Append one entry with a fully controlled header: numeric ids, no user or group names,
/// one mtime, and PAX records for names ustar cannot hold.
fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &Entry,
    mtime: u64,
    progress: &Transfer,
) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(mtime);
    let name = match entry.kind {
        EntryKind::Dir => format!("{}/", entry.path),
        _ => entry.path.clone(),
    };
    let mut pax: Vec<(&str, &[u8])> = Vec::new();
    set_name_field(header_name(&mut header), name.as_bytes(), "path", &mut pax);
    match &entry.kind {
        EntryKind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
        }
        EntryKind::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            set_name_field(
                header_linkname(&mut header),
                target.as_bytes(),
                "linkpath",
                &mut pax,
            );
        }
        EntryKind::File { size } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(*size);
        }
    }
    let io_err = |e| Error::io("write tar entry for", &entry.path, e);
    if !pax.is_empty() {
        builder.append_pax_extensions(pax).map_err(io_err)?;
    }
    header.set_cksum();
    match (&entry.kind, &entry.source) {
        (EntryKind::File { size }, Some(source)) => {
            let file = File::open(source)
                .map_err(|e| Error::Input(format!("cannot read {}: {e}", source.display())))?;
            let mut reader = ExactReader {
                inner: file,
                remaining: *size,
                path: source,
                progress,
            };
            builder.append(&header, &mut reader).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::Input(format!(
                        "{} changed size while it was read: rebuild the release and try again",
                        source.display()
                    ))
                } else {
                    Error::io("write tar entry for", source, e)
                }
            })
        }
        (EntryKind::File { size: 0 }, None) | (EntryKind::Dir | EntryKind::Symlink { .. }, _) => {
            builder.append(&header, io::empty()).map_err(io_err)
        }
        (EntryKind::File { .. }, None) => {
            Err(Error::Input(format!("no content given for {}", entry.path)))
        }
    }
}

fn header_name(h: &mut tar::Header) -> &mut [u8; 100] {
    h.as_ustar_mut()
        .map(|u| &mut u.name)
        .unwrap_or_else(|| unreachable!("ustar header"))
}

fn header_linkname(h: &mut tar::Header) -> &mut [u8; 100] {
    h.as_ustar_mut()
        .map(|u| &mut u.linkname)
        .unwrap_or_else(|| unreachable!("ustar header"))
}

/// Fill a 100-byte ustar name field. Names that do not fit, or are not ASCII, go into a PAX
/// record and the field keeps an ASCII prefix for readers that ignore PAX.
fn set_name_field<'a>(
    field: &mut [u8; 100],
    name: &'a [u8],
    pax_key: &'static str,
    pax: &mut Vec<(&'static str, &'a [u8])>,
) {
    field.fill(0);
    if name.len() <= 100 && name.is_ascii() {
        field[..name.len()].copy_from_slice(name);
    } else {
        pax.push((pax_key, name));
        for (slot, b) in field.iter_mut().zip(name.iter().take(100)) {
            *slot = if b.is_ascii() && *b != 0 { *b } else { b'_' };
        }
    }
}

/// Reads exactly `remaining` bytes: a file that shrank is an error, one that grew is cut at
/// the size recorded in its header, so the tar stays well-formed.
struct ExactReader<'a> {
    inner: File,
    remaining: u64,
    path: &'a std::path::Path,
    /// Told of every byte read.
    progress: &'a Transfer,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} is shorter than when it was listed", self.path.display()),
            ));
        }
        self.remaining -= n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::sha256_of;
    use flate2::read::GzDecoder;
    use std::fs;

    /// The layer, written or found in the cache as a build does it (key, then write).
    fn write_layer_cached(
        entries: &[Entry],
        opts: TarOptions,
        cache: &Cache,
    ) -> Result<(LayerBlob, bool)> {
        let key = layer_key(entries, opts, cache)?;
        write_keyed(entries, opts, cache, &key, &Transfer::default())
    }

    #[test]
    fn layer_cache_reuses_only_identical_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"one").unwrap();
        let entries = |size| {
            vec![
                entry("app", EntryKind::Dir, None),
                entry("app/f", EntryKind::File { size }, Some(file.clone())),
            ]
        };
        let opts = TarOptions {
            mtime: 0,
            level: 6,
            codec: Codec::Gzip,
        };
        let (a, reused) = write_layer_cached(&entries(3), opts, &cache).unwrap();
        assert!(!reused);
        let (b, reused) = write_layer_cached(&entries(3), opts, &cache).unwrap();
        assert!(reused && a == b);
        // Same size and path, other content: a new layer.
        fs::write(&file, b"two").unwrap();
        let (c, reused) = write_layer_cached(&entries(3), opts, &cache).unwrap();
        assert!(!reused && c.digest != a.digest);
        // Another mtime or level is another layer too.
        let (_, reused) = write_layer_cached(
            &entries(3),
            TarOptions {
                mtime: 1,
                level: 6,
                codec: Codec::Gzip,
            },
            &cache,
        )
        .unwrap();
        assert!(!reused);
        // A record whose blob is gone is not trusted.
        fs::remove_file(cache.blob_path(&c.digest)).unwrap();
        let (d, reused) = write_layer_cached(&entries(3), opts, &cache).unwrap();
        assert!(!reused && d == c);
    }

    /// The stat fast path never hides a change: an edit that keeps size and mtime (restored
    /// with `touch -d`) still changes ctime, so the content is hashed again.
    #[test]
    fn stat_fast_path_sees_edits_that_keep_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"one").unwrap();
        let stamp = fs::metadata(&file).unwrap().modified().unwrap();
        let entries = vec![entry(
            "app/f",
            EntryKind::File { size: 3 },
            Some(file.clone()),
        )];
        let opts = TarOptions {
            mtime: 0,
            level: 6,
            codec: Codec::Gzip,
        };
        let (a, _) = write_layer_cached(&entries, opts, &cache).unwrap();
        let (b, reused) = write_layer_cached(&entries, opts, &cache).unwrap();
        assert!(reused && a == b);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&file, b"two").unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(stamp)
            .unwrap();
        let (c, reused) = write_layer_cached(&entries, opts, &cache).unwrap();
        assert!(
            !reused && c.digest != a.digest,
            "an edit was hidden by the stat cache"
        );
    }

    /// zstd on several workers gives the same bytes as on one (given the same level), so a
    /// zstd layer is as reproducible as a gzip one; and it decodes to the input.
    #[test]
    fn zstd_bytes_do_not_depend_on_workers() {
        let mut data = Vec::new();
        let mut names: Vec<_> = fs::read_dir("/usr/bin")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        for n in names {
            if data.len() > 12 << 20 {
                break;
            }
            data.extend(fs::read(n).unwrap_or_default());
        }
        let compress = |workers| {
            let mut z = zstd_writer(Vec::new(), 3, workers).unwrap();
            for c in data.chunks(100_000) {
                z.write_all(c).unwrap();
            }
            z.finish().unwrap()
        };
        let one = compress(1);
        assert!(compress(2) == one && compress(4) == one);
        assert_eq!(zstd::stream::decode_all(&one[..]).unwrap(), data);
    }

    /// gzip:3 and zstd:3 of the same files are different layers, also through the stat path.
    #[test]
    fn codec_is_part_of_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"one").unwrap();
        let entries = vec![entry("app/f", EntryKind::File { size: 3 }, Some(file))];
        let gzip = TarOptions {
            mtime: 0,
            level: 3,
            codec: Codec::Gzip,
        };
        let zstd = TarOptions {
            mtime: 0,
            level: 3,
            codec: Codec::Zstd,
        };
        let (g, _) = write_layer_cached(&entries, gzip, &cache).unwrap();
        let (z, reused) = write_layer_cached(&entries, zstd, &cache).unwrap();
        assert!(!reused && g.digest != z.digest);
        assert_eq!(
            (g.media_type, z.media_type),
            (crate::oci::media::LAYER_GZIP, crate::oci::media::LAYER_ZSTD)
        );
        let (z2, reused) = write_layer_cached(&entries, zstd, &cache).unwrap();
        assert!(reused && z2 == z);
    }

    #[test]
    fn compression_names_parse() {
        assert_eq!(parse_compression("gzip"), Ok((Codec::Gzip, 6)));
        assert_eq!(parse_compression("zstd"), Ok((Codec::Zstd, 3)));
        assert_eq!(parse_compression("zstd:19"), Ok((Codec::Zstd, 19)));
        assert!(parse_compression("gzip:10").is_err());
        assert!(parse_compression("zstd:0").is_err());
        assert!(
            parse_compression("brotli")
                .unwrap_err()
                .contains("gzip[:1-9] or zstd")
        );
    }

    fn entry(path: &str, kind: EntryKind, source: Option<std::path::PathBuf>) -> Entry {
        Entry {
            path: path.into(),
            source,
            kind,
            mode: 0o755,
            uid: 65534,
            gid: 0,
        }
    }

    #[test]
    fn deterministic_layer_with_long_and_unicode_names() {
        let src = tempfile::tempdir().unwrap();
        let file = src.path().join("f");
        fs::write(&file, b"content").unwrap();
        let long = format!("app/{}", "x".repeat(150));
        let entries = vec![
            entry("app", EntryKind::Dir, None),
            entry("app/f", EntryKind::File { size: 7 }, Some(file.clone())),
            entry(&long, EntryKind::File { size: 7 }, Some(file.clone())),
            entry("app/héllo", EntryKind::Symlink { target: "f".into() }, None),
            entry(
                "app/l",
                EntryKind::Symlink {
                    target: "t".repeat(120),
                },
                None,
            ),
        ];
        let c1 = Cache::open(tempfile::tempdir().unwrap().keep()).unwrap();
        let c2 = Cache::open(tempfile::tempdir().unwrap().keep()).unwrap();
        let opts = TarOptions {
            mtime: 1_700_000_000,
            level: 6,
            codec: Codec::Gzip,
        };
        let a = write_layer(&entries, opts, &c1).unwrap();
        let b = write_layer(&entries, opts, &c2).unwrap();
        assert_eq!(a, b);
        let blob = fs::read(c1.blob_path(&a.digest)).unwrap();
        assert_eq!(sha256_of(&blob), a.digest);
        assert_eq!(blob.len() as u64, a.size);
        let mut tar_bytes = Vec::new();
        GzDecoder::new(&blob[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(sha256_of(&tar_bytes), a.diff_id);

        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (65534, 0, 1_700_000_000)
            );
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            seen.push((
                e.path().unwrap().to_string_lossy().into_owned(),
                e.link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
            ));
        }
        assert_eq!(seen[0].0, "app/");
        assert_eq!(seen[2].0, long);
        assert_eq!(seen[3], ("app/héllo".into(), Some("f".into())));
        assert_eq!(seen[4].1.as_deref(), Some("t".repeat(120).as_str()));
    }

    #[test]
    fn file_that_shrank_is_an_error() {
        let src = tempfile::tempdir().unwrap();
        let file = src.path().join("f");
        fs::write(&file, b"abc").unwrap();
        let cache = Cache::open(tempfile::tempdir().unwrap().keep()).unwrap();
        let err = write_layer(
            &[entry("f", EntryKind::File { size: 10 }, Some(file))],
            TarOptions {
                mtime: 0,
                level: 1,
                codec: Codec::Gzip,
            },
            &cache,
        )
        .unwrap_err();
        assert!(err.to_string().contains("changed size"), "{err}");
    }
}
