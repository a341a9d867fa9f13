//! OpenSSL's subject-name hash (`openssl x509 -subject_hash`), for the `<hash>.0` links that
//! `update-ca-certificates` makes in /etc/ssl/certs so that OpenSSL's `CApath` lookups find a CA.
//! It is the SHA-1 of the subject's canonical encoding: every string value as UTF-8, trimmed,
//! inner whitespace collapsed and ASCII lowercased, the RDN sets' DER concatenated without the
//! outer SEQUENCE.

use base64::Engine;
use der::{Decode, Encode, Tagged};
use sha1::{Digest as _, Sha1};
use x509_cert::Certificate;

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// String types OpenSSL canonicalises (ASN1_MASK_CANON).
fn canonical_string(tag: u8, value: &[u8]) -> Option<Vec<u8>> {
    let text: String = match tag {
        0x0c | 0x13 | 0x14 | 0x16 | 0x1a => String::from_utf8_lossy(value).into_owned(),
        // BMPString: UTF-16BE.
        0x1e => {
            let units: Vec<u16> = value
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        // UniversalString: UTF-32BE.
        0x1c => value
            .chunks(4)
            .filter_map(|c| {
                let v = u32::from_be_bytes([c[0], *c.get(1)?, *c.get(2)?, *c.get(3)?]);
                char::from_u32(v)
            })
            .collect(),
        _ => return None,
    };
    let bytes = text.into_bytes();
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = bytes
        .iter()
        .position(|b| !is_space(*b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(*b))
        .map_or(start, |e| e + 1);
    let mut out = Vec::new();
    let mut in_space = false;
    for &b in &bytes[start..end] {
        if is_space(b) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            in_space = false;
            out.push(if b < 0x80 { b.to_ascii_lowercase() } else { b });
        }
    }
    Some(out)
}

/// `openssl x509 -subject_hash` of a DER certificate, as 8 hex digits. The certificate is
/// walked with `x509-cert`; the canonical form is OpenSSL's own, so it is written here.
pub fn subject_hash(cert_der: &[u8]) -> Option<String> {
    let cert = Certificate::from_der(cert_der).ok()?;
    let mut canon = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        let mut entries: Vec<Vec<u8>> = Vec::new();
        for atv in rdn.0.iter() {
            let value = match canonical_string(u8::from(atv.value.tag()), atv.value.value()) {
                Some(s) => der(0x0c, &s),
                None => atv.value.to_der().ok()?,
            };
            let mut seq = atv.oid.to_der().ok()?;
            seq.extend(value);
            entries.push(der(0x30, &seq));
        }
        // DER SET OF: elements in order of their encodings.
        entries.sort();
        canon.extend(der(0x31, &entries.concat()));
    }
    let digest = Sha1::digest(&canon);
    Some(format!(
        "{:08x}",
        u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
    ))
}

/// The DER certificates in a PEM file.
pub(crate) fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            inside = true;
            body.clear();
        } else if line == "-----END CERTIFICATE-----" {
            inside = false;
            if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&body) {
                out.push(der);
            }
        } else if inside {
            body.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against what update-ca-certificates made on this machine: every `<hash>.N` link in
    /// /etc/ssl/certs names the hash of the certificate it points to.
    #[test]
    fn matches_openssl_on_the_system_store() {
        let Ok(dir) = std::fs::read_dir("/etc/ssl/certs") else {
            return;
        };
        let mut checked = 0;
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((hash, n)) = name.split_once('.') else {
                continue;
            };
            if hash.len() != 8 || n.parse::<u32>().is_err() {
                continue;
            }
            let Ok(pem) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let der = pem_certificates(&pem);
            assert_eq!(subject_hash(&der[0]).as_deref(), Some(hash), "{name}");
            checked += 1;
        }
        assert!(checked == 0 || checked > 50, "only {checked} links checked");
    }
}
