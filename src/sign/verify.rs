//! `imgbuild verify`: an image's cosign signatures and attestations checked against a public
//! key, with no network beyond the registry that holds them.

use oci_spec::image::Digest;
use serde::Serialize;

use super::cosign::{self, tag_for};
use super::keys::PublicKey;
use super::provenance::PREDICATE_TYPE;
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::oci::digest;
use crate::oci::document::{Document, parse_document};
use crate::oci::reference::Reference;
use crate::registry::RegistryClient;

#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    pub image: String,
    pub digest: String,
    /// Signatures under `sha256-<hex>.sig` that the key verifies and that name this digest.
    pub signatures: usize,
    /// Signatures there that do not hold (another key, another digest, damaged).
    pub rejected_signatures: usize,
    /// Attestations under `.att` signed by the key whose subject is this digest, by type.
    pub attestations: Vec<String>,
    pub rejected_attestations: usize,
    /// Whether a signed SLSA provenance names this image.
    pub provenance: bool,
    /// Every manifest of an index, verified the same way.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<Verified>,
}

impl Verified {
    /// The first thing that fails, for the error message.
    fn failure(&self) -> Option<String> {
        if self.signatures == 0 {
            return Some(if self.rejected_signatures == 0 {
                format!("{}@{} has no signature", self.image, self.digest)
            } else {
                format!(
                    "{}@{}: none of its {} signature(s) verifies with this key (a wrong key, or a signature of another image)",
                    self.image, self.digest, self.rejected_signatures
                )
            });
        }
        self.platforms.iter().find_map(Verified::failure)
    }
}

/// The manifests (or indexes) stored under a cosign tag: their layers (media type, digest,
/// annotations), or none when the tag does not exist.
async fn carrier_layers(
    client: &RegistryClient,
    repo: &Reference,
    tag: &str,
) -> Result<Vec<serde_json::Value>> {
    let Some(bytes) = client.find_manifest(repo, tag).await? else {
        return Ok(vec![]);
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::from(crate::error::ImageError::Json {
            what: format!("{}:{tag}", repo.name()),
            doc: "signature manifest",
            source: e,
        })
    })?;
    Ok(v["layers"].as_array().cloned().unwrap_or_default())
}

/// Whether an in-toto statement's subject is `d`.
fn names(statement: &serde_json::Value, d: &Digest) -> bool {
    statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|sub| sub["digest"]["sha256"].as_str() == Some(d.digest()))
}

/// The Sigstore bundles that refer to `d`: from the referrers API, else the tag schema's
/// `sha256-<hex>` index.
async fn bundles(
    client: &RegistryClient,
    repo: &Reference,
    d: &Digest,
    cache: &Cache,
) -> Result<Vec<serde_json::Value>> {
    let path = format!("/v2/{}/referrers/{d}", repo.repository);
    let resp = client
        .request(repo, reqwest::Method::GET, &path, "pull")
        .await?;
    let index: serde_json::Value = if resp.status().is_success() {
        serde_json::from_slice(&resp.bytes().await.unwrap_or_default()).unwrap_or_default()
    } else {
        match client
            .find_manifest(repo, &format!("sha256-{}", d.digest()))
            .await?
        {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => return Ok(vec![]),
        }
    };
    let mut out = Vec::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let Some(md) = entry["digest"].as_str() else {
            continue;
        };
        let Ok((bytes, _, _)) = client.get_manifest(repo, md).await else {
            continue;
        };
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if m["artifactType"].as_str() != Some(cosign::BUNDLE) {
            continue;
        }
        for layer in m["layers"].as_array().into_iter().flatten() {
            if layer["mediaType"].as_str() == Some(cosign::BUNDLE) {
                let b = blob(client, repo, layer["digest"].as_str().unwrap_or(""), cache).await?;
                out.push(serde_json::from_slice(&b).unwrap_or_default());
            }
        }
    }
    Ok(out)
}

async fn blob(
    client: &RegistryClient,
    repo: &Reference,
    d: &str,
    cache: &Cache,
) -> Result<Vec<u8>> {
    let d = digest::parse(d)?;
    client.pull_blob(repo, &d, cache).await?;
    cache.read_verified(&d)
}

/// Verify `r`'s signatures (and, for an index, every platform's) and attestations.
pub async fn verify(
    r: &Reference,
    key: &PublicKey,
    client: &RegistryClient,
    cache: &Cache,
) -> Result<Verified> {
    let (bytes, media_type, d) = client.get_manifest(r, &r.manifest_reference()).await?;
    let mut repo = r.clone();
    repo.tag = None;
    repo.digest = None;
    let mut top = verify_digest(&repo, &d, key, client, cache).await?;
    if let Document::Index(index) = parse_document(&bytes, &media_type, &r.canonical())? {
        for m in index.manifests() {
            let child = digest::parse(m.digest().as_ref())?;
            top.platforms
                .push(verify_digest(&repo, &child, key, client, cache).await?);
        }
    }
    match top.failure() {
        Some(why) => Err(Error::Input(format!(
            "verification failed: {why}; check the key, and that the image was signed after it was pushed under this name"
        ))),
        None => Ok(top),
    }
}

async fn verify_digest(
    repo: &Reference,
    d: &Digest,
    key: &PublicKey,
    client: &RegistryClient,
    cache: &Cache,
) -> Result<Verified> {
    let mut v = Verified {
        image: repo.name(),
        digest: d.to_string(),
        signatures: 0,
        rejected_signatures: 0,
        attestations: vec![],
        rejected_attestations: 0,
        provenance: false,
        platforms: vec![],
    };
    for layer in carrier_layers(client, repo, &tag_for(d, "sig")).await? {
        let Some(sig) = layer["annotations"][cosign::SIGNATURE_ANNOTATION]
            .as_str()
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        let payload = blob(client, repo, layer["digest"].as_str().unwrap_or(""), cache).await?;
        if cosign::signature_holds(&payload, sig, d, key) {
            v.signatures += 1;
        } else {
            v.rejected_signatures += 1;
        }
    }
    // Sigstore bundles among the image's referrers (cosign 3's form).
    for bundle in bundles(client, repo, d, cache).await? {
        let Some(envelope) = bundle.get("dsseEnvelope") else {
            v.rejected_signatures += 1;
            continue;
        };
        let bytes = serde_json::to_vec(envelope).unwrap_or_default();
        match cosign::envelope_statement(&bytes, key) {
            Some(s) if names(&s, d) => {
                let kind = s["predicateType"].as_str().unwrap_or("").to_string();
                if kind == cosign::SIGN_PREDICATE {
                    v.signatures += 1;
                } else {
                    v.provenance |= kind == PREDICATE_TYPE;
                    v.attestations.push(kind);
                }
            }
            _ => v.rejected_signatures += 1,
        }
    }
    for layer in carrier_layers(client, repo, &tag_for(d, "att")).await? {
        let envelope = blob(client, repo, layer["digest"].as_str().unwrap_or(""), cache).await?;
        let statement = cosign::envelope_statement(&envelope, key);
        let names_this = statement.as_ref().is_some_and(|s| names(s, d));
        match statement {
            Some(s) if names_this => {
                let kind = s["predicateType"].as_str().unwrap_or("").to_string();
                v.provenance |= kind == PREDICATE_TYPE;
                v.attestations.push(kind);
            }
            _ => v.rejected_attestations += 1,
        }
    }
    Ok(v)
}

/// Verify the signatures a tarball carries for its image (and, for an index, every platform's),
/// entirely offline.
pub fn verify_carried(
    artifact: &crate::oci::Artifact,
    name: &str,
    carried: &[crate::oci::Signatures],
    key: &PublicKey,
) -> Result<Verified> {
    let one =
        |d: &Digest| {
            let mut v = Verified {
                image: name.to_string(),
                digest: d.to_string(),
                signatures: 0,
                rejected_signatures: 0,
                attestations: vec![],
                rejected_attestations: 0,
                provenance: false,
                platforms: vec![],
            };
            for s in carried.iter().filter(|s| &s.subject == d) {
                for e in &s.classic {
                    let sig = e
                        .annotations
                        .get(cosign::SIGNATURE_ANNOTATION)
                        .and_then(|v| v.as_str());
                    match sig {
                        Some(sig) if cosign::signature_holds(&e.bytes, sig, d, key) => {
                            v.signatures += 1
                        }
                        _ => v.rejected_signatures += 1,
                    }
                }
                let envelopes = s.attestations.iter().map(|e| e.bytes.clone()).chain(
                    s.bundles.iter().filter_map(|(_, b)| {
                        let v: serde_json::Value = serde_json::from_slice(b).ok()?;
                        serde_json::to_vec(v.get("dsseEnvelope")?).ok()
                    }),
                );
                for env in envelopes {
                    match cosign::envelope_statement(&env, key) {
                        Some(st) if names(&st, d) => {
                            let kind = st["predicateType"].as_str().unwrap_or("").to_string();
                            if kind == cosign::SIGN_PREDICATE {
                                v.signatures += 1;
                            } else {
                                v.provenance |= kind == PREDICATE_TYPE;
                                v.attestations.push(kind);
                            }
                        }
                        _ => v.rejected_attestations += 1,
                    }
                }
            }
            v
        };
    let mut top = one(artifact.digest());
    if let crate::oci::Artifact::Index(i) = artifact {
        top.platforms = i.images.iter().map(|im| one(&im.digest)).collect();
    }
    match top.failure() {
        Some(why) => Err(Error::Input(format!("verification failed: {why}"))),
        None => Ok(top),
    }
}
