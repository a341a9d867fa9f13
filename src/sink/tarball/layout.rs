//! The OCI layout directory: every blob under `blobs/sha256/`, `oci-layout` and `index.json`,
//! staged beside the destination and renamed into place.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use oci_spec::image::Digest;

use super::{Bytes, Naming, OCI_LAYOUT, copy_verified, index_json, naming_output};
use crate::atomic::parent_dir;
use crate::error::{Error, IoContext, Result};
use crate::oci::Artifact;

/// Write `artifact` as an OCI layout directory at `dest` (replacing an earlier layout there;
/// with `add`, adding to it: its blobs and the entries of `index.json` under other names stay,
/// as a second ref in one layout).
pub fn write_layout(
    dest: &Path,
    artifact: &Artifact,
    blobs: &[(Digest, Bytes)],
    naming: &Naming,
    cache: &crate::cache::Cache,
    add: bool,
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
    let mut index = index_json(artifact, naming)?;
    if add && dest.join("oci-layout").is_file() {
        index = kept_from(dest, &blob_dir, index)?;
    }
    fs::write(tmp.path().join("oci-layout"), OCI_LAYOUT).ctx("write", tmp.path())?;
    fs::write(tmp.path().join("index.json"), index).ctx("write", tmp.path())?;
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

/// What an earlier layout at `dest` keeps when an artifact is added to it: its blobs (linked
/// into `blob_dir`, the staged layout's, where the new ones are already), and the entries of
/// its `index.json` whose ref name the new `index` does not give again, before the new ones.
fn kept_from(dest: &Path, blob_dir: &Path, index: Vec<u8>) -> Result<Vec<u8>> {
    let old_dir = dest.join("blobs").join("sha256");
    if old_dir.is_dir() {
        for entry in fs::read_dir(&old_dir).ctx("read", &old_dir)? {
            let from = entry.ctx("read", &old_dir)?.path();
            let Some(name) = from.file_name() else {
                continue;
            };
            let to = blob_dir.join(name);
            if !to.exists() {
                fs::hard_link(&from, &to)
                    .or_else(|_| fs::copy(&from, &to).map(|_| ()))
                    .ctx("copy", &from)?;
            }
        }
    }
    let at = dest.join("index.json");
    let old: serde_json::Value = serde_json::from_slice(&fs::read(&at).ctx("read", &at)?)
        .map_err(|e| Error::Input(format!("{}: not an OCI index ({e})", at.display())))?;
    let mut new: serde_json::Value =
        serde_json::from_slice(&index).map_err(|e| Error::Input(format!("index.json: {e}")))?;
    let ref_name = |m: &serde_json::Value| {
        m.pointer("/annotations/org.opencontainers.image.ref.name")
            .and_then(|r| r.as_str())
            .map(str::to_string)
    };
    let entries = |v: &serde_json::Value| {
        v.get("manifests")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let added = entries(&new);
    let names: Vec<Option<String>> = added.iter().map(ref_name).collect();
    let mut manifests: Vec<serde_json::Value> = entries(&old)
        .into_iter()
        .filter(|m| {
            let name = ref_name(m);
            name.is_some() && !names.contains(&name)
        })
        .collect();
    manifests.extend(added);
    new["manifests"] = serde_json::Value::Array(manifests);
    crate::oci::document::canonical_json(&new)
}
