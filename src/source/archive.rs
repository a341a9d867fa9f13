//! The one reader of image tar files, used by build (`--from oci-archive:` /
//! `docker-archive:`), push, inspect, copy and pull: one pass over the tar records where every
//! member lies, and blobs are then read in place from their byte ranges, never extracted.
//! It reads both formats inside one file: the OCI layout (`index.json`, `blobs/`) and Docker's
//! `manifest.json` (`docker save` before and after Engine 25).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Digest, ImageConfiguration};

use crate::error::{Error, ImageError, IoContext, Result};
use crate::oci::document::canonical_json;
use crate::oci::media::{self, Codec, MAX_JSON_BYTES};
use crate::oci::platform::Platforms;
use crate::oci::reference::Reference;
use crate::oci::{Artifact, Blob, BlobSource, FileRange, Image, Layer, LayerKind, Origin, digest};
use crate::source::layout::{self, Store};

/// An image tar file, indexed.
pub struct Archive {
    path: PathBuf,
    what: String,
    members: HashMap<String, (u64, u64)>,
}

impl Archive {
    /// Index the members of `path`; `what` names the file in errors (`oci-archive:base.tar`).
    pub(crate) fn open(path: &Path, what: &str) -> Result<Archive> {
        let file = File::open(path)
            .map_err(|e| Error::Input(format!("{what}: cannot open {}: {e}", path.display())))?;
        let bad = |e: std::io::Error| {
            Error::from(ImageError::Invalid(format!(
                "{what}: not a readable tar archive: {e}"
            )))
        };
        let mut archive = tar::Archive::new(BufReader::new(file));
        let mut members = HashMap::new();
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            if let Some(name) = member_name(&entry.path_bytes()) {
                members.insert(name, (entry.raw_file_position(), entry.size()));
            }
        }
        Ok(Archive {
            path: path.to_path_buf(),
            what: what.to_string(),
            members,
        })
    }

    pub(crate) fn has(&self, member: &str) -> bool {
        self.members.contains_key(member)
    }

    fn range_of(&self, member: &str) -> Option<FileRange> {
        self.members.get(member).map(|&(offset, size)| FileRange {
            path: self.path.clone(),
            offset,
            size,
        })
    }

    /// A small member (index.json, manifest.json, a legacy config) read whole.
    pub(crate) fn read_member(&self, member: &str) -> Result<Option<Vec<u8>>> {
        let Some(at) = self.range_of(member) else {
            return Ok(None);
        };
        if at.size > MAX_JSON_BYTES {
            return Err(Error::from(ImageError::Invalid(format!(
                "{}: {member} is implausibly large ({} bytes)",
                self.what, at.size
            ))));
        }
        at.read_all().map(Some)
    }

    /// The OCI side: `index.json` over `blobs/`.
    pub(crate) fn read_oci(&self, name: Option<&str>, platforms: &Platforms) -> Result<Artifact> {
        let index = self.read_member("index.json")?.ok_or_else(|| {
            Error::from(ImageError::Invalid(format!(
                "{} has no index.json: it is not an OCI archive (save images with `imgbuild pull`, `imgbuild build -o`, `skopeo copy … oci-archive:` or `docker save` from Docker 25 on)",
                self.what
            )))
        })?;
        layout::read(self, &index, name, platforms)
    }

    /// The names the file carries: index.json's `io.containerd.image.name` annotations and
    /// manifest.json's RepoTags, each once, in order.
    pub(crate) fn names(&self) -> Vec<Reference> {
        let mut names: Vec<String> = Vec::new();
        if let Ok(Some(bytes)) = self.read_member("index.json")
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            for m in v["manifests"].as_array().into_iter().flatten() {
                if let Some(n) = m["annotations"]["io.containerd.image.name"].as_str() {
                    names.push(n.to_string());
                }
            }
        }
        if let Ok(Some(bytes)) = self.read_member("manifest.json")
            && let Ok(items) = serde_json::from_slice::<Vec<DockerItem>>(&bytes)
        {
            names.extend(
                items
                    .into_iter()
                    .flat_map(|i| i.repo_tags.unwrap_or_default()),
            );
        }
        let mut seen = std::collections::HashSet::new();
        names
            .iter()
            .filter_map(|n| Reference::parse(n).ok())
            .filter(|r| seen.insert(r.canonical()))
            .collect()
    }

    /// The Docker side: `manifest.json`'s entry for `name` (`NAME:TAG` or `TAG`; the only one
    /// when `None`), its config and layers. The manifest is made up, so the image has no
    /// origin digest.
    pub(crate) fn read_docker(&self, name: Option<&str>, platforms: &Platforms) -> Result<Image> {
        let what = &self.what;
        let bytes = self.read_member("manifest.json")?.ok_or_else(|| {
            Error::from(ImageError::Invalid(format!(
                "{what} has no manifest.json: it is not a docker-archive"
            )))
        })?;
        let items: Vec<DockerItem> = serde_json::from_slice(&bytes).map_err(|e| {
            Error::from(ImageError::Json {
                what: what.to_string(),
                doc: "manifest.json",
                source: e,
            })
        })?;
        let item = match (name, items.len()) {
            (None, 1) => &items[0],
            (None, n) => {
                return Err(Error::Input(format!(
                    "{what} holds {n} images: name one as {what}:NAME:TAG"
                )));
            }
            (Some(n), _) => items
                .iter()
                .find(|i| {
                    i.repo_tags
                        .iter()
                        .flatten()
                        .any(|t| t == n || t.rsplit_once(':').is_some_and(|(_, tag)| tag == n))
                })
                .ok_or_else(|| Error::Input(format!("{what} has no image tagged {n:?}")))?,
        };
        let config_member = member_name(item.config.as_bytes()).unwrap_or_default();
        let config_bytes = self.read_member(&config_member)?.ok_or_else(|| {
            Error::from(ImageError::Invalid(format!(
                "{what}: config {} is missing",
                item.config
            )))
        })?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes).map_err(|e| {
            Error::from(ImageError::Json {
                what: what.to_string(),
                doc: "image config",
                source: e,
            })
        })?;
        if let Platforms::One(Some(want)) = platforms {
            layout::check_platform(&config, want, what)?;
        }
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != item.layers.len() {
            return Err(Error::from(ImageError::Invalid(format!(
                "{what}: manifest.json lists {} layers but the config {} diff_ids",
                item.layers.len(),
                diff_ids.len()
            ))));
        }
        let mut layers = Vec::new();
        for (member, diff) in item.layers.iter().zip(diff_ids) {
            let diff_id = digest::parse(diff)?;
            let key = member_name(member.as_bytes()).unwrap_or_default();
            let at = self.range_of(&key).ok_or_else(|| {
                Error::from(ImageError::Invalid(format!(
                    "{what}: layer {member} is missing"
                )))
            })?;
            let mut head = [0u8; 4];
            let n = read_head(&at, &mut head)?;
            let codec = Codec::sniff(&head[..n]);
            // A blob named by its digest (Docker 25+), else an uncompressed legacy layer whose
            // digest is its diff_id; anything else is hashed now.
            let d = match key.strip_prefix("blobs/sha256/") {
                Some(hex) => digest::parse(&format!("sha256:{hex}"))?,
                None if codec == Codec::Plain => diff_id.clone(),
                None => digest::sha256_of_reader(&mut at.open()?).ctx("read", &self.path)?,
            };
            layers.push(Layer {
                blob: Blob::new(d, at.size, codec.media_type(), BlobSource::File(at)),
                diff_id,
                kind: LayerKind::Base,
            });
        }
        // The OCI manifest this image would have: config and layers as found.
        let config_digest = digest::sha256_of(&config_bytes);
        let manifest = canonical_json(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": l.blob.media_type, "digest": l.blob.digest.to_string(), "size": l.blob.size,
            })).collect::<Vec<_>>(),
        }))?;
        Ok(Image {
            digest: digest::sha256_of(&manifest),
            manifest,
            media_type: media::OCI_MANIFEST.into(),
            config_bytes,
            config_digest,
            config,
            layers,
            attachments: vec![],
            origin: Origin {
                name: what.clone(),
                reference: None,
                digest: None,
            },
        })
    }
}

impl Store for Archive {
    fn what(&self) -> &str {
        &self.what
    }
    fn locate(&self, d: &Digest) -> Option<FileRange> {
        self.range_of(&format!("blobs/sha256/{}", d.digest()))
    }
}

#[derive(serde::Deserialize)]
struct DockerItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Normalise a member name: drop `./` and leading `/`; refuse anything with `..`.
fn member_name(path: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(path).ok()?;
    let s = s.trim_start_matches("./").trim_start_matches('/');
    if s.split('/').any(|c| c == "..") {
        None
    } else {
        Some(s.to_string())
    }
}

fn read_head(at: &FileRange, out: &mut [u8]) -> Result<usize> {
    let mut r = at.open()?;
    let mut n = 0;
    while n < out.len() {
        match r.read(&mut out[n..]).ctx("read", &at.path)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(
            member_name(b"./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(member_name(b"../etc/passwd"), None);
    }
}
