//! Files written whole or not at all: a temporary name beside the destination (removed on an
//! interrupt, see [`crate::interrupt`]), then a rename.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Write a small file (the SBOM) under a temporary name beside `dest`, then rename it.
pub(crate) fn write_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    if dest.is_dir() {
        return Err(Error::Usage(format!(
            "{}: is a directory; give a file name",
            dest.display()
        )));
    }
    let mut tmp = temp_beside(dest)?;
    tmp.write_all(bytes).ctx("write", tmp.path())?;
    set_mode(tmp.path(), 0o644)?;
    tmp.as_file().sync_all().ctx("flush", tmp.path())?;
    crate::interrupt::guarded(|| tmp.persist(dest).map_err(|e| e.error))
        .map_err(|e| Error::io("rename into place", dest, e))?;
    Ok(())
}

pub(crate) fn temp_beside(dest: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = parent_dir(dest);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    crate::interrupt::watch(&dir);
    crate::interrupt::guarded(|| {
        tempfile::Builder::new()
            .prefix(&format!(".{name}.{}", crate::interrupt::marker()))
            .suffix(".tmp")
            .tempfile_in(&dir)
    })
    .ctx("create temporary file in", &dir)
}

pub(crate) fn parent_dir(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    let mut p = fs::metadata(path).ctx("stat", path)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, mode);
    fs::set_permissions(path, p).ctx("set permissions of", path)
}
