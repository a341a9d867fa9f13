//! A tarball started before its image is done: the bases' layers, the archive's first blobs,
//! written while the release's layers are made.

use std::collections::HashSet;
use std::path::Path;

use oci_spec::image::Digest;

use super::Bytes;
use super::archive::{Prefix, append, blob_entry, head_entries};
use crate::atomic::temp_beside;
use crate::error::Result;
use crate::oci::{BlobSource, FileRange, Image, LayerKind};

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

#[cfg(test)]
mod tests {
    use super::super::fixture::{naming, small_image};
    use super::super::{blobs, write_tarball};
    use super::*;
    use crate::cache::Cache;
    use crate::observe::Observer;
    use crate::oci::Artifact;

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
        let other_blobs = super::super::blobs(&other, &|_| None).unwrap();
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
}
