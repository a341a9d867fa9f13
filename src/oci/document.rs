//! Manifest and index documents: telling one from the other, choosing a platform's entry, and
//! writing JSON canonically (sorted keys) so the same inputs always give the same bytes.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Serialize;

use super::media;
use super::platform::Platform;
use crate::error::{Error, ImageError, Result};

/// A parsed manifest-or-index document.
pub enum Document {
    Manifest(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// Parse a manifest or index, using its own `mediaType`, else `fallback_media_type` (a
/// Content-Type or descriptor), else its shape. `what` names it in errors.
pub fn parse_document(bytes: &[u8], fallback_media_type: &str, what: &str) -> Result<Document> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| {
        Error::from(ImageError::Json {
            what: what.to_string(),
            doc: "JSON",
            source: e,
        })
    })?;
    let media_type = probe
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| fallback_media_type.to_string());
    if probe.schema_version == Some(1) {
        return Err(Error::from(ImageError::Invalid(format!(
            "{what} is a Docker schema 1 manifest, which is not supported: push the image again with a current client"
        ))));
    }
    let is_index = match media_type.as_str() {
        m if media::is_index(m) => true,
        m if media::is_manifest(m) => false,
        "" => probe.manifests.is_some(),
        other => {
            return Err(Error::from(ImageError::Invalid(format!(
                "{what} has media type {other:?}, which is not an image manifest or index (OCI or Docker schema 2)"
            ))));
        }
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(Document::Index)
            .map_err(|e| {
                Error::from(ImageError::Json {
                    what: what.to_string(),
                    doc: "image index",
                    source: e,
                })
            })
    } else {
        serde_json::from_slice(bytes)
            .map(Document::Manifest)
            .map_err(|e| {
                Error::from(ImageError::Json {
                    what: what.to_string(),
                    doc: "image manifest",
                    source: e,
                })
            })
    }
}

/// Whether an index entry is an attestation or other non-runnable entry (BuildKit's
/// `unknown/unknown` provenance manifests), which platform selection skips.
pub(crate) fn is_attestation(d: &Descriptor) -> bool {
    let tagged = d.annotations().as_ref().is_some_and(|a| {
        a.get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
    });
    tagged
        || d.platform()
            .as_ref()
            .is_some_and(|p| p.os().to_string() == "unknown")
}

/// The platform an index entry declares, as `os/arch[/variant]`.
pub(crate) fn entry_platform(d: &Descriptor) -> Option<Platform> {
    d.platform().as_ref().map(|p| Platform {
        os: p.os().to_string(),
        architecture: p.architecture().to_string(),
        variant: p.variant().clone().filter(|v| !v.is_empty()),
    })
}

/// Choose the entry for `platform` (default: the host's) from an index, skipping attestations.
pub fn select_from_index(
    index: &ImageIndex,
    platform: Option<&Platform>,
    what: &str,
) -> Result<Descriptor> {
    let want = platform.cloned().unwrap_or_else(Platform::host);
    let mut available = Vec::new();
    for d in index.manifests() {
        if is_attestation(d) {
            continue;
        }
        let Some(p) = entry_platform(d) else { continue };
        if want.matches(&p.os, &p.architecture, p.variant.as_deref()) {
            return Ok(d.clone());
        }
        available.push(p.to_string());
    }
    Err(Error::Input(format!(
        "{what} has no image for platform {want} (it has: {}); pick one with --platform",
        if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        }
    )))
}

/// JSON with object keys sorted at every level, whatever map types the value uses.
pub(crate) fn canonical_json(value: &impl Serialize) -> Result<Vec<u8>> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    let v = serde_json::to_value(value)
        .map_err(|e| Error::from(ImageError::Internal(format!("cannot serialise JSON: {e}"))))?;
    serde_json::to_vec(&sort(v))
        .map_err(|e| Error::from(ImageError::Internal(format!("cannot serialise JSON: {e}"))))
}

/// `SOURCE_DATE_EPOCH` seconds as RFC 3339 UTC (civil-from-days, Howard Hinnant's algorithm;
/// no date crate needed for this one conversion).
pub(crate) fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The inverse of [`rfc3339`] for UTC times (`YYYY-MM-DDTHH:MM:SS[.frac]Z`): seconds since the
/// epoch, `None` for anything else or before 1970.
pub(crate) fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for t in [0u64, 1_700_000_000, 951_782_400, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{t}");
        }
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00.5Z"), Some(1_709_208_000));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339("not a time"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut m = std::collections::HashMap::new();
        for k in ["b", "a", "c"] {
            m.insert(k.to_string(), serde_json::json!({"z": 1, "y": 2}));
        }
        assert_eq!(
            String::from_utf8(canonical_json(&m).unwrap()).unwrap(),
            r#"{"a":{"y":2,"z":1},"b":{"y":2,"z":1},"c":{"y":2,"z":1}}"#
        );
    }

    #[test]
    fn rejects_unknown_manifest_types() {
        let err = parse_document(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.example+json"}"#,
            "",
            "base",
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("not an image manifest"), "{err}");
        assert!(parse_document(br#"{"schemaVersion":1}"#, "", "base").is_err());
        assert!(parse_document(b"nope", "", "base").is_err());
    }
}
