//! File sinks: one tarball that every loader accepts (an OCI layout plus Docker's
//! `manifest.json` over the same blobs), and an OCI layout directory. Both are written under a
//! temporary name beside the destination and renamed at the end, so an interrupted write
//! leaves nothing half-made.
//!
//! Tags: `index.json` has one entry per tag (containerd, Docker 25+ with the containerd store,
//! podman 5 and ctr take each entry's `io.containerd.image.name`), and `manifest.json` lists
//! every tag for Docker's classic store and skopeo's `docker-archive:`. With more than one
//! tag, `skopeo … oci-archive:FILE` must name one (`oci-archive:FILE:TAG`).

use std::collections::HashSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use oci_spec::image::Digest;

use crate::atomic::{parent_dir, set_mode, temp_beside};
use crate::error::{Error, ImageError, IoContext, Result};
use crate::oci::document::canonical_json;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::{
    Artifact, BlobSource, FileRange, Image, LayerKind, SIGNATURES_ANNOTATION, SOURCE_ANNOTATION,
    media,
};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Where a blob's bytes come from when a file sink writes it.
pub enum Bytes<'a> {
    Memory(&'a [u8]),
    Range(FileRange),
}

impl Bytes<'_> {
    fn len(&self) -> u64 {
        match self {
            Bytes::Memory(b) => b.len() as u64,
            Bytes::Range(at) => at.size,
        }
    }
}

/// Every blob of an artifact, each once, with its bytes: first the base layers of every image
/// (known before a build is done, so an [`Early`] tarball starts with them), then per image
/// its config, other layers, attachments and manifest, then the index. `local` turns a
/// registry blob into a local range (fetched first).
pub(crate) fn blobs<'a>(
    artifact: &'a Artifact,
    local: &dyn Fn(&Digest) -> Option<FileRange>,
) -> Result<Vec<(Digest, Bytes<'a>)>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut add = |d: &Digest, b: Bytes<'a>| {
        if seen.insert(d.clone()) {
            out.push((d.clone(), b));
        }
    };
    let range = |blob: &crate::oci::Blob| {
        match &blob.source {
            BlobSource::File(at) => Some(at.clone()),
            BlobSource::Registry(_) => local(&blob.digest),
        }
        .ok_or_else(|| {
            Error::from(ImageError::Internal(format!(
                "blob {} was not fetched",
                blob.digest
            )))
        })
    };
    let images = artifact.images();
    for image in &images {
        for l in image.layers.iter().filter(|l| l.kind == LayerKind::Base) {
            add(&l.blob.digest, Bytes::Range(range(&l.blob)?));
        }
    }
    for image in &images {
        add(&image.config_digest, Bytes::Memory(&image.config_bytes));
        let blobs = image
            .layers
            .iter()
            .map(|l| &l.blob)
            .chain(image.attachments.iter().map(|a| &a.blob));
        for blob in blobs {
            add(&blob.digest, Bytes::Range(range(blob)?));
        }
        add(&image.digest, Bytes::Memory(&image.manifest));
    }
    if let Artifact::Index(i) = artifact {
        add(&i.digest, Bytes::Memory(&i.manifest));
    }
    Ok(out)
}

/// The blobs of the signatures a file carries (entries and bundles), each once.
pub(crate) fn signature_blobs(naming: &Naming) -> Vec<(Digest, Bytes<'_>)> {
    let mut seen = HashSet::new();
    naming
        .signatures
        .iter()
        .flat_map(|s| {
            s.classic
                .iter()
                .chain(&s.attestations)
                .map(|e| e.bytes.as_slice())
                .chain(s.bundles.iter().map(|(_, b)| b.as_slice()))
        })
        .filter_map(|b| {
            let d = crate::oci::digest::sha256_of(b);
            seen.insert(d.clone()).then_some((d, Bytes::Memory(b)))
        })
        .collect()
}

/// What to name the artifact inside a file.
#[derive(Clone, Debug, Default)]
pub struct Naming {
    pub tags: Vec<Reference>,
    /// The registry reference it came from (`imgbuild pull`), remembered in `index.json`.
    pub source: Option<Reference>,
    /// The platform `manifest.json` describes when the artifact is an index.
    pub platform: Option<Platform>,
    /// Signatures carried inside the file (their blobs in `blobs/`, described by the
    /// `dev.imgbuild.signatures` annotation of `index.json`), for `imgbuild push` to publish
    /// and `imgbuild verify` to check offline.
    pub signatures: Vec<crate::oci::Signatures>,
}

/// `index.json`: one entry per tag, named for containerd (`io.containerd.image.name`) and the
/// OCI layout (`ref.name` = the tag); one unnamed entry without tags.
pub(crate) fn index_json(artifact: &Artifact, naming: &Naming) -> Result<Vec<u8>> {
    let entry = |tag: Option<&Reference>| {
        let mut desc = serde_json::json!({
            "mediaType": artifact.media_type(),
            "digest": artifact.digest().to_string(),
            "size": artifact.manifest().len(),
        });
        let mut notes = serde_json::Map::new();
        if let Some(t) = tag {
            notes.insert("io.containerd.image.name".into(), t.canonical().into());
            notes.insert(
                "org.opencontainers.image.ref.name".into(),
                t.tag_or_latest().into(),
            );
        }
        if let Some(s) = &naming.source {
            notes.insert(SOURCE_ANNOTATION.into(), s.canonical().into());
        }
        if !naming.signatures.is_empty() {
            notes.insert(
                SIGNATURES_ANNOTATION.into(),
                crate::sign::cosign::describe(&naming.signatures).into(),
            );
        }
        if !notes.is_empty() {
            desc["annotations"] = serde_json::Value::Object(notes);
        }
        desc
    };
    let manifests: Vec<serde_json::Value> = if naming.tags.is_empty() {
        vec![entry(None)]
    } else {
        naming.tags.iter().map(|t| entry(Some(t))).collect()
    };
    canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    }))
}

/// Docker's `manifest.json`, read by `docker load` (classic store), skopeo `docker-archive:`,
/// crane, and podman when `index.json` names several tags: one image (an index's image for the
/// naming's platform), every tag fully qualified (`docker.io/team/hello:0.1.0`). Docker reads
/// that form as well as the short one, and podman would file a short `team/hello` under
/// `localhost/`.
pub(crate) fn docker_manifest_json(artifact: &Artifact, naming: &Naming) -> Result<Vec<u8>> {
    let image = artifact
        .image_for(naming.platform.as_ref())
        .ok_or_else(|| {
            Error::from(ImageError::Invalid(
                "the index holds no runnable image".to_string(),
            ))
        })?;
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.digest());
    let repo_tags: Vec<String> = naming.tags.iter().map(Reference::tagged).collect();
    canonical_json(&serde_json::json!([{
        "Config": blob(&image.config_digest),
        "RepoTags": repo_tags,
        "Layers": image.layers.iter().map(|l| blob(&l.blob.digest)).collect::<Vec<_>>(),
    }]))
}

/// Copy one blob into `out`, its bytes verified ([`crate::cache::Cache::copy_range_verified`]).
fn copy_verified<W: Write>(
    d: &Digest,
    bytes: &Bytes,
    out: &mut W,
    cache: &crate::cache::Cache,
) -> Result<u64> {
    match bytes {
        Bytes::Memory(b) => {
            out.write_all(b)
                .map_err(|e| Error::io("write", "output", e))?;
            Ok(b.len() as u64)
        }
        Bytes::Range(at) => cache.copy_range_verified(at, d, out),
    }
}

/// An error that names the output (`write` to `output`) names `path` instead.
fn naming_output(path: &Path) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Io {
            action: "write",
            source,
            ..
        } => Error::io("write", path, source),
        e => e,
    }
}

/// One entry of the archive: its header and the bytes that follow it.
struct Entry<'a> {
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
fn head_entries<'a>(mtime: u64) -> Result<Vec<Entry<'a>>> {
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
fn blob_entry<'a>(d: &'a Digest, bytes: &'a Bytes<'a>, mtime: u64) -> Result<Entry<'a>> {
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

/// The start of a tarball, written while its image was still being built: the temporary
/// file, how far it is written, and the blobs in it (in order).
pub struct Prefix {
    tmp: tempfile::NamedTempFile,
    at: u64,
    blobs: Vec<Digest>,
}

/// Write `entries` into `file` from `at` on, each large stretch started for the disk as soon
/// as it is in place; where the next entry goes.
fn append(
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

/// Write the entries every tarball of an image built on `bases` begins with (see [`blobs`]):
/// the head and the bases' layers in order, each once, up to the first that is not local.
fn write_prefix(
    dest: &Path,
    bases: &[BaseLayers],
    mtime: u64,
    cache: &crate::cache::Cache,
) -> Result<Prefix> {
    let mut seen = HashSet::new();
    let layers: Vec<(Digest, Bytes)> = bases
        .iter()
        .flatten()
        .filter(|(d, _)| seen.insert(d.clone()))
        .map_while(|(d, at)| Some((d.clone(), Bytes::Range(at.clone()?))))
        .collect();
    let mut entries = head_entries(mtime)?;
    for (d, bytes) in &layers {
        entries.push(blob_entry(d, bytes, mtime)?);
    }
    let tmp = temp_beside(dest)?;
    let at = append(tmp.as_file(), 0, &entries, cache, dest)?;
    Ok(Prefix {
        tmp,
        at,
        blobs: layers.into_iter().map(|(d, _)| d).collect(),
    })
}

/// A tarball started before its image is done. A build tells it each platform's base as soon
/// as the base is resolved ([`Early::base`]); once every platform's is known, the bases' local
/// layers (the first blobs of the archive, see [`blobs`]) are written into the temporary file
/// on a thread of their own while the release's layers are made, and the sink goes on from
/// there. The bytes are those of a tarball written at once: a prefix that does not match the
/// finished artifact, or that failed, is thrown away and the sink writes the whole file.
pub struct Early {
    dest: std::path::PathBuf,
    mtime: u64,
    cache: crate::cache::Cache,
    state: std::sync::Mutex<EarlyState>,
}

/// A base's layers, with their local bytes where they have them.
type BaseLayers = Vec<(Digest, Option<FileRange>)>;

enum EarlyState {
    /// Each platform's base layers, once known.
    Gathering(Vec<Option<BaseLayers>>),
    Writing(std::thread::JoinHandle<Result<Prefix>>),
    Taken,
}

/// A build tells the tarball each platform's base as soon as it is known.
impl crate::observe::Observer for Early {
    fn base(&self, platform: usize, base: &Image) {
        self.start_on_base(platform, base);
    }
}

impl Early {
    /// A tarball at `dest` for an image of `platforms` platforms (1 for a plain image).
    pub fn new(
        dest: &Path,
        mtime: u64,
        cache: &crate::cache::Cache,
        platforms: usize,
    ) -> std::sync::Arc<Early> {
        std::sync::Arc::new(Early {
            dest: dest.to_path_buf(),
            mtime,
            cache: cache.clone(),
            state: std::sync::Mutex::new(EarlyState::Gathering(vec![None; platforms.max(1)])),
        })
    }

    /// The base of platform `index` is `base` (made fit to build on: its layers, those of
    /// kind base, are the image's first). Only layers whose bytes are local now are written,
    /// up to the first that is not; a registry layer's cached copy only when the cache vouches
    /// that it was verified and is unchanged, so that nothing here removes a damaged entry
    /// while the build reads it.
    fn start_on_base(&self, index: usize, base: &Image) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let EarlyState::Gathering(bases) = &mut *state else {
            return;
        };
        let local = base
            .layers
            .iter()
            .take_while(|l| l.kind == LayerKind::Base)
            .map(|l| {
                let at = match &l.blob.source {
                    BlobSource::File(at) => Some(at.clone()),
                    BlobSource::Registry(_) => Some(FileRange {
                        path: self.cache.blob_path(&l.blob.digest),
                        offset: 0,
                        size: l.blob.size,
                    })
                    .filter(|cached| self.cache.verified_earlier(cached, &l.blob.digest)),
                };
                (l.blob.digest.clone(), at)
            })
            .collect();
        match bases.get_mut(index) {
            Some(slot) => *slot = Some(local),
            None => return,
        }
        if bases.iter().any(Option::is_none) || self.dest.is_dir() {
            return;
        }
        let bases: Vec<_> = bases.drain(..).flatten().collect();
        let (dest, mtime, cache) = (self.dest.clone(), self.mtime, self.cache.clone());
        *state = EarlyState::Writing(std::thread::spawn(move || {
            write_prefix(&dest, &bases, mtime, &cache)
        }));
    }

    /// What was written, once it is: `None` when nothing was started. A blob whose bytes do
    /// not match its digest is an error here, as it would be in the sink.
    pub(crate) fn take(&self) -> Option<Result<Prefix>> {
        let mut state = self.state.lock().ok()?;
        match std::mem::replace(&mut *state, EarlyState::Taken) {
            EarlyState::Writing(job) => job.join().ok(),
            _ => None,
        }
    }
}

impl Drop for Early {
    /// A prefix still being written is waited for, so that its temporary file is removed
    /// before the process ends (a failed build leaves nothing).
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// Write `artifact` as one tar file at `dest`: the bytes [`stream_tarball`] gives, each
/// large stretch started for the disk as soon as it is in place, so that the fsync at the
/// end waits for the last one only. (Writers side by side gain nothing: a file takes one
/// write at a time.) With a `prefix` that holds the archive's first blobs, the rest is
/// written after it.
pub(crate) fn write_tarball(
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

/// Write `artifact` as an OCI layout directory at `dest` (replacing an earlier layout there).
pub(crate) fn write_layout(
    dest: &Path,
    artifact: &Artifact,
    blobs: &[(Digest, Bytes)],
    naming: &Naming,
    cache: &crate::cache::Cache,
) -> Result<()> {
    if dest.exists() && !dest.join("oci-layout").is_file() {
        let empty = fs::read_dir(dest)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(Error::Usage(format!(
                "{}: exists and is not an OCI layout; choose a new or empty directory",
                dest.display()
            )));
        }
    }
    let parent = parent_dir(dest);
    fs::create_dir_all(&parent).ctx("create", &parent)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "layout".into());
    crate::interrupt::watch(&parent);
    let tmp = crate::interrupt::guarded(|| {
        tempfile::Builder::new()
            .prefix(&format!(".{name}.{}", crate::interrupt::marker()))
            .suffix(".tmp")
            .tempdir_in(&parent)
    })
    .ctx("create temporary directory in", &parent)?;
    let blob_dir = tmp.path().join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).ctx("create", &blob_dir)?;
    for (d, bytes) in blobs {
        let path = blob_dir.join(d.digest());
        let mut out = BufWriter::new(fs::File::create(&path).ctx("create", &path)?);
        copy_verified(d, bytes, &mut out, cache).map_err(naming_output(&path))?;
        out.flush().ctx("write", &path)?;
    }
    fs::write(tmp.path().join("oci-layout"), OCI_LAYOUT).ctx("write", tmp.path())?;
    fs::write(tmp.path().join("index.json"), index_json(artifact, naming)?)
        .ctx("write", tmp.path())?;
    let staged = tmp.keep();
    crate::interrupt::guarded(|| {
        if dest.exists() {
            fs::remove_dir_all(dest)?;
        }
        fs::rename(&staged, dest)
    })
    .ctx("replace", dest)?;
    Ok(())
}

/// Stream the tarball of `artifact` into `out` (an engine's load endpoint), blobs verified on
/// the way; nothing touches the disk.
pub(crate) fn stream_tarball(
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
    //! Every file sink written from a small image, and read back by every file source.
    use super::*;
    use crate::cache::Cache;
    use crate::observe::Observer;
    use crate::oci::platform::{Platform, Platforms};
    use crate::oci::{Blob, Layer, LayerKind};
    use crate::source::archive::Archive;
    use crate::source::layout::{self, Dir};

    /// A one-layer image (a gzip tar holding one file) whose layer lives in `cache`.
    fn small_image(cache: &Cache) -> crate::oci::Image {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let diff_id = crate::oci::digest::sha256_of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let d = cache.put_bytes(&gz).unwrap();
        let base = crate::source::scratch(&Platform::parse("linux/amd64").unwrap()).unwrap();
        let layer = Layer {
            blob: Blob::new(
                d.clone(),
                gz.len() as u64,
                media::LAYER_GZIP,
                BlobSource::File(FileRange {
                    path: cache.blob_path(&d),
                    offset: 0,
                    size: gz.len() as u64,
                }),
            ),
            diff_id,
            kind: LayerKind::App,
        };
        let release = crate::release::Release::for_tests("small", "1.0");
        crate::mutate::append(&base, &release, vec![layer], &Default::default(), vec![]).unwrap()
    }

    fn naming(tags: &[&str]) -> Naming {
        Naming {
            tags: tags.iter().map(|t| Reference::parse(t).unwrap()).collect(),
            source: None,
            platform: None,
            signatures: vec![],
        }
    }

    #[test]
    fn tarball_and_layout_read_back_by_every_file_source() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let image = small_image(&cache);
        let artifact = Artifact::Image(Box::new(image.clone()));
        let blobs = blobs(&artifact, &|_| None).unwrap();
        let names = naming(&["example.com/a/small:1", "example.com/a/small:2"]);
        let tar = dir.path().join("small.tar");
        write_tarball(&tar, &artifact, &blobs, &names, 0, &cache, None).unwrap();
        let lay = dir.path().join("layout");
        write_layout(&lay, &artifact, &blobs, &names, &cache).unwrap();

        let one = Platforms::One(None);
        let archive = Archive::open(&tar, "small.tar").unwrap();
        // OCI side: the same manifest bytes, found by either tag or as the one digest named.
        for name in [None, Some("2"), Some("example.com/a/small:1")] {
            let Artifact::Image(read) = archive.read_oci(name, &one).unwrap() else {
                panic!("an index")
            };
            assert_eq!(read.manifest, image.manifest);
            assert_eq!(read.layers[0].kind, LayerKind::App);
        }
        assert!(archive.read_oci(Some("3"), &one).is_err());
        // Docker side: the same config and layer, every tag named.
        let docker = archive.read_docker(Some("2"), &one).unwrap();
        assert_eq!(docker.config_digest, image.config_digest);
        assert_eq!(docker.layers[0].blob.digest, image.layers[0].blob.digest);
        assert_eq!(archive.names().len(), 2);
        // The layout directory.
        let d = Dir::new(&lay);
        let Artifact::Image(read) = layout::read(&d, &d.index().unwrap(), None, &one).unwrap()
        else {
            panic!("an index")
        };
        assert_eq!(read.digest, image.digest);
        // Blobs read from the archive verify while they are copied into a new one.
        let again = dir.path().join("again.tar");
        let artifact2 = Artifact::Image(read);
        let blobs2 = super::blobs(&artifact2, &|_| None).unwrap();
        write_tarball(&again, &artifact2, &blobs2, &names, 0, &cache, None).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&tar).unwrap());
    }

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
    fn a_tarball_started_early_is_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let mut image = small_image(&cache);
        image.layers[0].kind = LayerKind::Base;
        let artifact = Artifact::Image(Box::new(image.clone()));
        let blobs = blobs(&artifact, &|_| None).unwrap();
        assert_eq!(
            blobs[0].0, image.layers[0].blob.digest,
            "base layers come first"
        );
        let names = naming(&["a:1"]);
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let whole = out.join("whole.tar");
        write_tarball(&whole, &artifact, &blobs, &names, 7, &cache, None).unwrap();
        // Started from the base (here the image itself), then finished: the same bytes.
        let early_tar = out.join("early.tar");
        let early = Early::new(&early_tar, 7, &cache, 1);
        early.base(0, &image);
        let prefix = early.take().expect("the prefix was started").unwrap();
        assert_eq!(prefix.blobs, [image.layers[0].blob.digest.clone()]);
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let started = inode(prefix.tmp.path());
        write_tarball(
            &early_tar,
            &artifact,
            &blobs,
            &names,
            7,
            &cache,
            Some(prefix),
        )
        .unwrap();
        assert_eq!(inode(&early_tar), started, "the started file was finished");
        assert!(std::fs::read(&early_tar).unwrap() == std::fs::read(&whole).unwrap());
        // A prefix that is not the archive's start (its layer is not a base layer of the
        // image) is thrown away: the same bytes again, and no temporary file left.
        let mut own = image.clone();
        own.layers[0].kind = LayerKind::App;
        let other = Artifact::Image(Box::new(own.clone()));
        let other_blobs = super::blobs(&other, &|_| None).unwrap();
        let plain = out.join("plain.tar");
        write_tarball(&plain, &other, &other_blobs, &names, 7, &cache, None).unwrap();
        let mismatched = out.join("mismatched.tar");
        let early = Early::new(&mismatched, 7, &cache, 1);
        early.base(0, &image);
        let prefix = early.take().expect("the prefix was started").unwrap();
        assert_eq!(prefix.blobs.len(), 1);
        assert_ne!(
            other_blobs[0].0, prefix.blobs[0],
            "the archive starts otherwise"
        );
        write_tarball(
            &mismatched,
            &other,
            &other_blobs,
            &names,
            7,
            &cache,
            Some(prefix),
        )
        .unwrap();
        assert!(std::fs::read(&mismatched).unwrap() == std::fs::read(&plain).unwrap());
        // Two platforms: nothing starts until both bases are known; a dropped start leaves
        // nothing behind.
        let waiting = Early::new(&out.join("two.tar"), 7, &cache, 2);
        waiting.base(1, &image);
        assert!(waiting.take().is_none());
        let dropped = Early::new(&out.join("dropped.tar"), 7, &cache, 1);
        dropped.base(0, &image);
        drop(dropped);
        let mut left: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["early.tar", "mismatched.tar", "plain.tar", "whole.tar"]
        );
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

    #[test]
    fn index_json_names_every_tag_and_manifest_json_one_image() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let artifact = Artifact::Image(Box::new(small_image(&cache)));
        let names = naming(&["team/app:1", "team/app:2", "ghcr.io/o/app:3"]);
        let index: serde_json::Value =
            serde_json::from_slice(&index_json(&artifact, &names).unwrap()).unwrap();
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[2]["annotations"]["io.containerd.image.name"],
            "ghcr.io/o/app:3"
        );
        assert_eq!(
            entries[1]["annotations"]["org.opencontainers.image.ref.name"],
            "2"
        );
        let docker: serde_json::Value =
            serde_json::from_slice(&docker_manifest_json(&artifact, &names).unwrap()).unwrap();
        assert_eq!(
            docker[0]["RepoTags"],
            serde_json::json!([
                "docker.io/team/app:1",
                "docker.io/team/app:2",
                "ghcr.io/o/app:3"
            ])
        );
    }
}
