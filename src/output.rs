//! Outputs: one tarball that every loader accepts (an OCI layout plus Docker's `manifest.json`
//! over the same blobs) and an OCI layout directory. Both are written under a temporary name
//! beside the destination and renamed at the end, so an interrupted build leaves nothing half-made.

use std::collections::HashSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::digest::HashWriter;
use crate::error::{Error, IoContext, Result};
use crate::image::{Image, canonical_json};
use crate::reference::Reference;
use crate::registry::MEDIA_OCI_MANIFEST;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// `index.json`: exactly one descriptor (skopeo's `oci-archive:` and podman need one), named
/// for containerd (`io.containerd.image.name`) and the OCI layout (`ref.name` = the tag).
pub fn index_json(image: &Image, tag: Option<&Reference>) -> Result<Vec<u8>> {
    let mut desc = serde_json::json!({
        "mediaType": MEDIA_OCI_MANIFEST,
        "digest": image.manifest_digest.to_string(),
        "size": image.manifest.len(),
    });
    if let Some(t) = tag {
        desc["annotations"] = serde_json::json!({
            "io.containerd.image.name": t.canonical(),
            "org.opencontainers.image.ref.name": t.tag_or_latest(),
        });
    }
    canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [desc],
    }))
}

/// Docker's `manifest.json`, read by `docker load` (graphdriver store), skopeo
/// `docker-archive:` and crane. RepoTags take the familiar form (`hello:0.1.0`).
pub fn docker_manifest_json(image: &Image, tags: &[Reference]) -> Result<Vec<u8>> {
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let repo_tags: Vec<String> = tags.iter().map(Reference::familiar_tagged).collect();
    canonical_json(&serde_json::json!([{
        "Config": blob(image.config_digest.as_ref()),
        "RepoTags": repo_tags,
        "Layers": image.layers.iter().map(|l| blob(&l.digest)).collect::<Vec<_>>(),
    }]))
}

/// Every blob of the image, each once: config, layers, manifest.
fn blobs(image: &Image) -> Vec<String> {
    let mut seen = HashSet::new();
    std::iter::once(image.config_digest.to_string())
        .chain(image.layers.iter().map(|l| l.digest.clone()))
        .chain(image.sbom.iter().map(|(d, _)| d.to_string()))
        .chain(std::iter::once(image.manifest_digest.to_string()))
        .filter(|d| seen.insert(d.clone()))
        .collect()
}

/// Write a small file (the SBOM) under a temporary name beside `dest`, then rename it.
pub fn write_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    if dest.is_dir() {
        return Err(Error::Usage(format!(
            "{}: is a directory; give a file name",
            dest.display()
        )));
    }
    let mut tmp = temp_beside(dest)?;
    tmp.write_all(bytes).ctx("write", tmp.path())?;
    let mut p = perms_of(tmp.path())?;
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o644);
    fs::set_permissions(tmp.path(), p).ctx("set permissions of", tmp.path())?;
    tmp.as_file().sync_all().ctx("flush", tmp.path())?;
    tmp.persist(dest)
        .map_err(|e| Error::io("rename into place", dest, e.error))?;
    Ok(())
}

fn temp_beside(dest: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = parent_dir(dest);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    crate::interrupt::watch(&dir);
    tempfile::Builder::new()
        .prefix(&format!(".{name}.{}", crate::interrupt::marker()))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .ctx("create temporary file in", &dir)
}

fn parent_dir(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Write the image as one tar file at `dest`. Returns the sha256 of the tarball.
pub fn write_tarball(
    dest: &Path,
    image: &Image,
    tags: &[Reference],
    cache: &Cache,
    mtime: u64,
) -> Result<String> {
    if dest.is_dir() {
        return Err(Error::Usage(format!(
            "-o {}: is a directory; give a file name such as image.tar",
            dest.display()
        )));
    }
    let tmp = temp_beside(dest)?;
    let tmp_path = tmp.path().to_path_buf();
    let mut tar = tar::Builder::new(HashWriter::new(BufWriter::with_capacity(1 << 20, tmp)));
    let err = |e| Error::io("write", dest, e);
    let header = |size: u64, mode: u32, kind: tar::EntryType, name: &str| -> Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).map_err(err)?;
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_entry_type(kind);
        h.set_cksum();
        Ok(h)
    };
    let small = |tar: &mut tar::Builder<_>, name: &str, bytes: &[u8]| -> Result<()> {
        tar.append(
            &header(bytes.len() as u64, 0o644, tar::EntryType::Regular, name)?,
            bytes,
        )
        .map_err(err)
    };
    small(&mut tar, "oci-layout", OCI_LAYOUT)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        tar.append(
            &header(0, 0o755, tar::EntryType::Directory, dir)?,
            std::io::empty(),
        )
        .map_err(err)?;
    }
    for d in blobs(image) {
        let digest = crate::digest::parse(&d)?;
        let size = cache.blob_size(&digest)?;
        let name = format!("blobs/sha256/{}", digest.digest());
        let h = header(size, 0o644, tar::EntryType::Regular, &name)?;
        // Stream from the cache, verifying the digest on the way; the header was written first.
        let path = cache.blob_path(&digest);
        let file = fs::File::open(&path).ctx("open cached blob", &path)?;
        let mut reader =
            crate::digest::HashReader::new(std::io::BufReader::with_capacity(1 << 16, file));
        tar.append(&h, &mut reader).map_err(err)?;
        let (actual, n) = reader.finish();
        if n != size || actual != digest {
            return Err(cache.corrupted(&digest, &actual));
        }
    }
    small(&mut tar, "index.json", &index_json(image, tags.first())?)?;
    small(
        &mut tar,
        "manifest.json",
        &docker_manifest_json(image, tags)?,
    )?;
    let (buffered, sha, _) = tar.into_inner().map_err(err)?.finish();
    let tmp = buffered
        .into_inner()
        .map_err(|e| Error::io("write", &tmp_path, e.into_error()))?;
    // tempfile creates 0600; an image tarball is an ordinary shareable file.
    fs::set_permissions(&tmp_path, {
        let mut p = perms_of(&tmp_path)?;
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o644);
        p
    })
    .ctx("set permissions of", &tmp_path)?;
    tmp.as_file().sync_all().ctx("flush", &tmp_path)?;
    tmp.persist(dest)
        .map_err(|e| Error::io("rename into place", dest, e.error))?;
    Ok(sha.to_string())
}

fn perms_of(path: &Path) -> Result<fs::Permissions> {
    Ok(fs::metadata(path).ctx("stat", path)?.permissions())
}

/// Write the image as an OCI layout directory at `dest` (replacing an earlier layout there).
pub fn write_oci_layout(
    dest: &Path,
    image: &Image,
    tags: &[Reference],
    cache: &Cache,
) -> Result<()> {
    if dest.exists() && !dest.join("oci-layout").is_file() {
        let empty = fs::read_dir(dest)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(Error::Usage(format!(
                "--oci-layout {}: exists and is not an OCI layout; choose a new or empty directory",
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
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.{}", crate::interrupt::marker()))
        .suffix(".tmp")
        .tempdir_in(&parent)
        .ctx("create temporary directory in", &parent)?;
    let blob_dir = tmp.path().join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).ctx("create", &blob_dir)?;
    for d in blobs(image) {
        let digest = crate::digest::parse(&d)?;
        let path = blob_dir.join(digest.digest());
        let mut out = BufWriter::new(fs::File::create(&path).ctx("create", &path)?);
        cache.copy_verified(&digest, &mut out)?;
        out.flush().ctx("write", &path)?;
    }
    fs::write(tmp.path().join("oci-layout"), OCI_LAYOUT).ctx("write", tmp.path())?;
    fs::write(
        tmp.path().join("index.json"),
        index_json(image, tags.first())?,
    )
    .ctx("write", tmp.path())?;
    let staged = tmp.keep();
    if dest.exists() {
        fs::remove_dir_all(dest).ctx("replace", dest)?;
    }
    fs::rename(&staged, dest).ctx("rename into place", dest)?;
    Ok(())
}
