//! Signatures and attestations stored the way cosign stores them, so `cosign verify` and
//! `cosign verify-attestation` read them: an image tagged `sha256-<hex of the digest>.sig`
//! whose layers are simple-signing payloads naming the signed digest, each with its signature
//! in the `dev.cosignproject.cosign/signature` annotation; and `sha256-<hex>.att` whose layers
//! are DSSE envelopes of in-toto statements.

use base64::Engine;
use oci_spec::image::Digest;

use super::keys::{Key, PublicKey};
use crate::cache::Cache;
use crate::error::{ImageError, Result};
use crate::oci::document::canonical_json;
use crate::oci::reference::Reference;
use crate::oci::{Blob, BlobSource, FileRange, Image, Layer, LayerKind, Origin, digest, media};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The predicate of a bundle that signs an image (cosign's "sign" statement).
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// The in-toto statement a Sigstore bundle signature of an image carries.
pub(crate) fn sign_statement(d: &Digest) -> Result<Vec<u8>> {
    canonical_json(&serde_json::json!({
        "_type": super::provenance::STATEMENT_TYPE,
        "subject": [{"digest": {d.algorithm().as_ref(): d.digest()}, "annotations": {}}],
        "predicateType": SIGN_PREDICATE,
        "predicate": {},
    }))
}

/// A Sigstore bundle (v0.3) of `statement` in a DSSE envelope signed with `key`; the key is
/// named by its hint (the SHA-256 of its public key), with no transparency-log entry.
pub(crate) fn bundle(statement: &[u8], key: &Key) -> Result<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = key.sign(&pae(IN_TOTO, statement));
    canonical_json(&serde_json::json!({
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": key.public().hint()}},
        "dsseEnvelope": {
            "payload": b64.encode(statement),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": b64.encode(sig)}],
        },
    }))
}

/// The tag cosign looks under for `digest`'s signatures (`sig`) or attestations (`att`).
pub(crate) fn tag_for(d: &Digest, suffix: &str) -> String {
    format!("{}-{}.{suffix}", d.algorithm(), d.digest())
}

/// Everything that signs `subject` (described by its media type and size): the classic
/// signature, the attestation of `statement` when given, and both as Sigstore bundles.
pub fn signatures(
    repo: &Reference,
    subject: &Digest,
    subject_media_type: &str,
    subject_size: u64,
    statement: Option<&[u8]>,
    key: &Key,
) -> Result<crate::oci::Signatures> {
    let mut bundles = vec![(
        SIGN_PREDICATE.to_string(),
        bundle(&sign_statement(subject)?, key)?,
    )];
    let mut attestations = Vec::new();
    if let Some(st) = statement {
        let kind = super::provenance::PREDICATE_TYPE;
        attestations.push(attestation_entry(st, kind, key)?);
        bundles.push((kind.to_string(), bundle(st, key)?));
    }
    Ok(crate::oci::Signatures {
        subject: subject.clone(),
        subject_media_type: subject_media_type.to_string(),
        subject_size,
        classic: vec![signature_entry(repo, subject, key)?],
        attestations,
        bundles,
    })
}

/// The payload cosign signs for an image: its repository and manifest digest.
pub(crate) fn simple_signing_payload(repo: &Reference, d: &Digest) -> Result<Vec<u8>> {
    canonical_json(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{}", repo.registry, repo.repository)},
            "image": {"docker-manifest-digest": d.to_string()},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
}

/// DSSE's pre-authentication encoding: what a DSSE signature signs.
pub(crate) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope of an in-toto statement, signed with `key`.
pub(crate) fn dsse_envelope(statement: &[u8], key: &Key) -> Result<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = key.sign(&pae(IN_TOTO, statement));
    canonical_json(&serde_json::json!({
        "payloadType": IN_TOTO,
        "payload": b64.encode(statement),
        "signatures": [{"keyid": "", "sig": b64.encode(sig)}],
    }))
}

pub use crate::oci::SignatureEntry as Entry;

/// The image that carries `entries` (payloads or envelopes) as layers, cosign's shape: an OCI
/// manifest whose config lists the layers as diff_ids. Blobs go into the cache.
pub(crate) fn carrier_image(entries: &[Entry], cache: &Cache) -> Result<Image> {
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    for e in entries {
        let d = cache.put_bytes(&e.bytes)?;
        let size = e.bytes.len() as u64;
        layers.push(Layer {
            blob: Blob::new(
                d.clone(),
                size,
                e.media_type.clone(),
                BlobSource::File(FileRange {
                    path: cache.blob_path(&d),
                    offset: 0,
                    size,
                }),
            ),
            diff_id: d.clone(),
            kind: LayerKind::Base,
        });
        descriptors.push(serde_json::json!({
            "mediaType": e.media_type,
            "digest": d.to_string(),
            "size": size,
            "annotations": e.annotations,
        }));
    }
    let config_bytes = canonical_json(&serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        "config": {},
    }))?;
    let config_digest = digest::sha256_of(&config_bytes);
    let manifest = canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": descriptors,
    }))?;
    Ok(Image {
        digest: digest::sha256_of(&manifest),
        manifest,
        media_type: media::OCI_MANIFEST.into(),
        config: serde_json::from_slice(&config_bytes).map_err(|e| ImageError::Json {
            what: "signature image".into(),
            doc: "config",
            source: e,
        })?,
        config_bytes,
        config_digest,
        layers,
        attachments: vec![],
        origin: Origin::default(),
    })
}

/// A signature entry: the simple-signing payload for `d` in `repo`, signed.
pub(crate) fn signature_entry(repo: &Reference, d: &Digest, key: &Key) -> Result<Entry> {
    let payload = simple_signing_payload(repo, d)?;
    let sig = key.sign(&payload);
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        SIGNATURE_ANNOTATION.into(),
        base64::engine::general_purpose::STANDARD.encode(sig).into(),
    );
    Ok(Entry {
        bytes: payload,
        media_type: SIMPLE_SIGNING.into(),
        annotations,
    })
}

/// An attestation entry: a statement in a signed DSSE envelope.
pub(crate) fn attestation_entry(
    statement: &[u8],
    predicate_type: &str,
    key: &Key,
) -> Result<Entry> {
    let mut annotations = serde_json::Map::new();
    annotations.insert("predicateType".into(), predicate_type.into());
    // cosign looks for the annotation on every layer; an attestation's signature is inside
    // its envelope, so the annotation is empty, as cosign writes it.
    annotations.insert(SIGNATURE_ANNOTATION.into(), "".into());
    Ok(Entry {
        bytes: dsse_envelope(statement, key)?,
        media_type: DSSE_ENVELOPE.into(),
        annotations,
    })
}

/// Whether a simple-signing payload and its base64 signature prove that `key` signed `d`.
pub(crate) fn signature_holds(
    payload: &[u8],
    signature_b64: &str,
    d: &Digest,
    key: &PublicKey,
) -> bool {
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature_b64.trim()) else {
        return false;
    };
    let names_digest = serde_json::from_slice::<serde_json::Value>(payload).is_ok_and(|v| {
        v["critical"]["image"]["docker-manifest-digest"].as_str() == Some(d.as_ref())
    });
    names_digest && key.verifies(payload, &sig)
}

/// The statement inside a DSSE envelope, when `key` signed it.
pub(crate) fn envelope_statement(envelope: &[u8], key: &PublicKey) -> Option<serde_json::Value> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let env: serde_json::Value = serde_json::from_slice(envelope).ok()?;
    let payload_type = env["payloadType"].as_str()?;
    let payload = b64.decode(env["payload"].as_str()?).ok()?;
    let signed = env["signatures"].as_array()?.iter().any(|s| {
        s["sig"]
            .as_str()
            .and_then(|sig| b64.decode(sig).ok())
            .is_some_and(|sig| key.verifies(&pae(payload_type, &payload), &sig))
    });
    if !signed {
        return None;
    }
    serde_json::from_slice(&payload).ok()
}

/// The annotation text that describes `signatures` inside a file: for each signed manifest,
/// its descriptor and the digests of its entries and bundles (their bytes are blobs of the
/// file).
pub(crate) fn describe(signatures: &[crate::oci::Signatures]) -> String {
    let entry = |e: &Entry| {
        serde_json::json!({
            "digest": digest::sha256_of(&e.bytes).to_string(),
            "mediaType": e.media_type,
            "annotations": e.annotations,
        })
    };
    let list: Vec<serde_json::Value> = signatures
        .iter()
        .map(|s| {
            serde_json::json!({
                "subject": {"digest": s.subject.to_string(), "mediaType": s.subject_media_type, "size": s.subject_size},
                "classic": s.classic.iter().map(entry).collect::<Vec<_>>(),
                "attestations": s.attestations.iter().map(entry).collect::<Vec<_>>(),
                "bundles": s.bundles.iter().map(|(p, b)| serde_json::json!({"predicateType": p, "digest": digest::sha256_of(b).to_string()})).collect::<Vec<_>>(),
            })
        })
        .collect();
    String::from_utf8(canonical_json(&list).unwrap_or_default()).unwrap_or_default()
}

/// The signatures a file carries, from its annotation; `blob` reads (and verifies) a blob of
/// the file.
pub(crate) fn carried(
    text: &str,
    blob: &dyn Fn(&Digest) -> Result<Vec<u8>>,
) -> Result<Vec<crate::oci::Signatures>> {
    let bad = |e: serde_json::Error| {
        crate::error::Error::from(ImageError::Json {
            what: "the signatures a tarball carries".into(),
            doc: "annotation",
            source: e,
        })
    };
    let list: Vec<serde_json::Value> = serde_json::from_str(text).map_err(bad)?;
    let entries = |v: &serde_json::Value| -> Result<Vec<Entry>> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                Ok(Entry {
                    bytes: blob(&digest::parse(e["digest"].as_str().unwrap_or(""))?)?,
                    media_type: e["mediaType"].as_str().unwrap_or("").to_string(),
                    annotations: e["annotations"].as_object().cloned().unwrap_or_default(),
                })
            })
            .collect()
    };
    list.iter()
        .map(|s| {
            Ok(crate::oci::Signatures {
                subject: digest::parse(s["subject"]["digest"].as_str().unwrap_or(""))?,
                subject_media_type: s["subject"]["mediaType"].as_str().unwrap_or("").to_string(),
                subject_size: s["subject"]["size"].as_u64().unwrap_or(0),
                classic: entries(&s["classic"])?,
                attestations: entries(&s["attestations"])?,
                bundles: s["bundles"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        Ok((
                            b["predicateType"].as_str().unwrap_or("").to_string(),
                            blob(&digest::parse(b["digest"].as_str().unwrap_or(""))?)?,
                        ))
                    })
                    .collect::<Result<_>>()?,
            })
        })
        .collect()
}
