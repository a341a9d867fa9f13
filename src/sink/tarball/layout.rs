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

/// Write `artifact` as an OCI layout directory at `dest` (replacing an earlier layout there).
pub fn write_layout(
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
