//! The image's own files put into the tree the check reads: planned entries (release and
//! package files, their ELF facts read from disk or kept by stat key), a layer of an image
//! being rebased (read from its bytes), and the release's start scripts.

use std::io::Read;

use oci_spec::image::Digest;

use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::fs::elf::{self, ElfInfo};
use crate::fs::{Node, RootFs, normalize};
use crate::layer::VerifiedLayer;
use crate::oci::FileRange;
use crate::release::{EntryKind, LayerPlan};

/// Put planned entries (release or package files) into the tree, reading ELF headers so that
/// libraries resolve; returns the ELF files among them.
pub fn add_entries(fs: &mut RootFs, plans: &[LayerPlan]) -> Result<Vec<(String, ElfInfo)>> {
    let mut elves = Vec::new();
    for plan in plans {
        elves.extend(insert_plan(fs, plan, |e, _| read_elf(e))?);
    }
    Ok(elves)
}

/// The ELF facts of a planned file, when it is an ELF file.
fn read_elf(e: &crate::release::Entry) -> Result<Option<ElfInfo>> {
    let Some(src) = &e.source else {
        return Ok(None);
    };
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(src).ctx("read", src)?;
    let n = f.read(&mut head).ctx("read", src)?;
    if !elf::is_elf(&head[..n]) {
        return Ok(None);
    }
    // The rest from the same handle: no second open for every ELF file of the release.
    let mut bytes = head[..n].to_vec();
    f.read_to_end(&mut bytes).ctx("read", src)?;
    ElfInfo::parse(&bytes).map(Some).map_err(|why| {
        Error::Input(format!(
            "{} looks like an ELF file but cannot be read ({why}): rebuild the release",
            src.display()
        ))
    })
}

/// Put one plan's entries into the tree, each file's ELF facts from `elf_of(entry, path)`;
/// returns the ELF files among them.
fn insert_plan(
    fs: &mut RootFs,
    plan: &LayerPlan,
    mut elf_of: impl FnMut(&crate::release::Entry, &str) -> Result<Option<ElfInfo>>,
) -> Result<Vec<(String, ElfInfo)>> {
    let mut elves = Vec::new();
    let label = format!("the {} layer", plan.kind.as_str());
    for e in &plan.entries {
        let path = format!("/{}", e.path);
        let node = match &e.kind {
            EntryKind::Dir => Node::Dir,
            EntryKind::Symlink { target } => Node::Symlink(target.clone()),
            EntryKind::File { .. } => {
                let info = elf_of(e, &path)?;
                if let Some(i) = &info {
                    elves.push((path.clone(), i.clone()));
                }
                Node::File {
                    mode: e.mode,
                    not_elf: info.is_none(),
                    elf: info,
                }
            }
        };
        fs.insert_by(&path, node, &label);
        if let (EntryKind::File { .. }, Some(src)) = (&e.kind, &e.source) {
            fs.keep_file(&path, src)?;
        }
    }
    Ok(elves)
}

/// As [`add_entries`], with each plan's ELF facts kept in the cache under `keys[i]` (the
/// layer's stat key: every file's size, mtime, ctime and inode), so that an unchanged release
/// is not opened file by file again. A plan without a key, or whose record is missing or
/// unreadable, is read as [`add_entries`] reads it, and its facts are stored.
pub fn add_entries_cached(
    fs: &mut RootFs,
    plans: &[LayerPlan],
    keys: &[Option<Digest>],
    cache: &Cache,
) -> Result<Vec<(String, ElfInfo)>> {
    let mut elves = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let key = keys.get(i).cloned().flatten();
        let known = key
            .as_ref()
            .and_then(|k| cache.record("elves", k))
            .and_then(|b| serde_json::from_slice::<Vec<(String, ElfInfo)>>(&b).ok());
        let Some(known) = known else {
            let found = insert_plan(fs, plan, |e, _| read_elf(e))?;
            if let (Some(k), Ok(bytes)) = (&key, serde_json::to_vec(&found)) {
                let _ = cache.put_record("elves", k, &bytes);
            }
            elves.extend(found);
            continue;
        };
        let by_path: std::collections::HashMap<&str, &ElfInfo> =
            known.iter().map(|(p, e)| (p.as_str(), e)).collect();
        elves.extend(insert_plan(fs, plan, |_, path| {
            Ok(by_path.get(path).map(|i| (*i).clone()))
        })?);
    }
    Ok(elves)
}

/// What one of an image's own layers holds, read from its bytes: its ELF files with their
/// facts, its start scripts (under `WORKDIR/bin/`), and the text of small files `keep` asks for.
#[derive(Default)]
pub struct LayerFacts {
    pub elves: Vec<(String, ElfInfo)>,
    pub scripts: Vec<(String, String)>,
    pub texts: std::collections::BTreeMap<String, String>,
}

/// Put a layer of an image (the release's layers of an image being rebased) into the tree,
/// reading its bytes from `at` (verified against the layer's digest as they are read).
pub fn add_layer(
    fs: &mut RootFs,
    layer: &crate::oci::Layer,
    at: &FileRange,
    workdir: &str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<LayerFacts> {
    let what = format!("layer {}", layer.blob.digest);
    let Some(verified) = VerifiedLayer::new(layer, at, &what) else {
        return Err(Error::from(crate::error::ImageError::Invalid(format!(
            "{what} is {}, not a file system layer",
            layer.blob.media_type
        ))));
    };
    let bin = format!("/{}/bin/", workdir.trim_matches('/'));
    let mut facts = LayerFacts::default();
    let bad = |e: std::io::Error| verified.corrupt(e);
    verified.walk(|entry| {
        let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644);
        let node = match header.entry_type() {
            tar::EntryType::Directory => Node::Dir,
            tar::EntryType::Symlink => Node::Symlink(
                entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default(),
            ),
            t if t.is_file() => {
                let mut bytes = Vec::new();
                let mut head = [0u8; 4];
                let n = std::io::Read::read(entry, &mut head).map_err(bad)?;
                bytes.extend_from_slice(&head[..n]);
                let is_elf = elf::is_elf(&bytes);
                let script = path.starts_with(&bin) && bytes.starts_with(b"#!");
                let wanted = keep(&path);
                if is_elf || script || wanted {
                    entry.read_to_end(&mut bytes).map_err(bad)?;
                }
                let mut info = None;
                if is_elf {
                    let i = ElfInfo::parse(&bytes).map_err(|why| {
                        Error::from(crate::error::ImageError::Invalid(format!(
                            "{what}: {path} looks like an ELF file but cannot be read ({why})"
                        )))
                    })?;
                    facts.elves.push((path.clone(), i.clone()));
                    info = Some(i);
                } else if script {
                    facts
                        .scripts
                        .push((path.clone(), String::from_utf8_lossy(&bytes).into_owned()));
                }
                if wanted {
                    facts
                        .texts
                        .insert(path.clone(), String::from_utf8_lossy(&bytes).into_owned());
                }
                Node::File {
                    mode,
                    not_elf: info.is_none(),
                    elf: info,
                }
            }
            _ => return Ok(()),
        };
        fs.insert_by(&path, node, &what);
        Ok(())
    })?;
    Ok(facts)
}

/// The release's start scripts (`bin/*` files that begin with `#!`): (image path, text).
/// The release's scripts: each path in the image and its text.
pub type Scripts = Vec<(String, String)>;

pub fn release_scripts(plans: &[LayerPlan], workdir: &str) -> Result<Scripts> {
    let bin = format!("{}/bin/", workdir.trim_matches('/'));
    let mut out = Vec::new();
    for e in plans.iter().flat_map(|p| &p.entries) {
        let (EntryKind::File { .. }, Some(src)) = (&e.kind, &e.source) else {
            continue;
        };
        if !e.path.starts_with(&bin) {
            continue;
        }
        let bytes = std::fs::read(src).ctx("read", src)?;
        if bytes.starts_with(b"#!") {
            out.push((
                format!("/{}", e.path),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_facts_are_kept_by_stat_key() {
        use crate::release::Entry;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let elf = dir.path().join("beam.smp");
        std::fs::copy(std::env::current_exe().unwrap(), &elf).unwrap();
        let text = dir.path().join("start.sh");
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        let file = |path: &str, src: &std::path::Path| Entry {
            path: path.into(),
            source: Some(src.to_path_buf()),
            kind: EntryKind::File {
                size: std::fs::metadata(src).unwrap().len(),
            },
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        let plan = LayerPlan {
            kind: crate::release::LayerKind::Erts,
            entries: vec![file("app/beam.smp", &elf), file("app/start.sh", &text)],
        };
        let key = Some(crate::oci::digest::sha256_of(b"a stat key"));
        let mut first = RootFs::new();
        let elves = add_entries_cached(
            &mut first,
            std::slice::from_ref(&plan),
            std::slice::from_ref(&key),
            &cache,
        )
        .unwrap();
        assert_eq!(elves.len(), 1);
        assert_eq!(elves[0].0, "/app/beam.smp");
        // Kept: the files are not opened again (they are gone), and the tree is the same.
        std::fs::remove_file(&elf).unwrap();
        std::fs::remove_file(&text).unwrap();
        let mut again = RootFs::new();
        let elves2 =
            add_entries_cached(&mut again, std::slice::from_ref(&plan), &[key], &cache).unwrap();
        assert_eq!(elves2, elves);
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&first).unwrap()
        );
        // Another key: read again (and here, the files being gone, refused).
        let other = Some(crate::oci::digest::sha256_of(b"another"));
        assert!(add_entries_cached(&mut RootFs::new(), &[plan], &[other], &cache).is_err());
    }
}
