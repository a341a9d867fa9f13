//! apt's indexes: the signed `InRelease` file (verified with the OpenPGP keys the base image
//! trusts), the hashes it lists, and `Packages` stanzas with their dependency fields.

use std::collections::BTreeMap;

use pgp::composed::{CleartextSignedMessage, PublicOrSecret, SignedPublicKey};

/// A control-file stanza: field name → value (continuation lines joined with '\n').
pub type Stanza = BTreeMap<String, String>;

/// Parse RFC 822-style stanzas separated by blank lines.
pub fn stanzas(text: &str) -> Vec<Stanza> {
    let mut out = Vec::new();
    let mut cur = Stanza::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(k) = &last
                && let Some(v) = cur.get_mut(k)
            {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.insert(k.trim().to_string(), v.trim().to_string());
            last = Some(k.trim().to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Public keys from a keyring file (binary `.gpg` or armored `.asc`), skipping what cannot be
/// parsed.
pub(crate) fn keys_from(bytes: &[u8]) -> Vec<SignedPublicKey> {
    let Ok((iter, _)) = PublicOrSecret::from_reader_many(bytes) else {
        return vec![];
    };
    iter.filter_map(|k| match k {
        Ok(PublicOrSecret::Public(k)) => Some(k),
        Ok(PublicOrSecret::Secret(k)) => Some(k.to_public_key()),
        Err(_) => None,
    })
    .collect()
}

/// Verify a clearsigned `InRelease` against `keys`; returns the signed text.
pub fn verify_inrelease(text: &str, keys: &[SignedPublicKey]) -> Result<String, String> {
    let (msg, _) = CleartextSignedMessage::from_string(text)
        .map_err(|e| format!("not a clearsigned OpenPGP message: {e}"))?;
    for key in keys {
        if msg.verify(key).is_ok() {
            return Ok(msg.signed_text().replace("\r\n", "\n"));
        }
        for sub in &key.public_subkeys {
            if msg.verify(sub).is_ok() {
                return Ok(msg.signed_text().replace("\r\n", "\n"));
            }
        }
    }
    Err(format!(
        "no signature on it verifies with any of the {} trusted key{}",
        keys.len(),
        if keys.len() == 1 { "" } else { "s" }
    ))
}

/// Verify a `Release` file against its detached `Release.gpg` (one or more signatures).
pub(crate) fn verify_detached(
    release: &[u8],
    sig: &[u8],
    keys: &[SignedPublicKey],
) -> Result<(), String> {
    use pgp::composed::{Deserializable, DetachedSignature};
    let (sigs, _) = DetachedSignature::from_reader_many(sig)
        .map_err(|e| format!("Release.gpg is not an OpenPGP signature: {e}"))?;
    let sigs: Vec<DetachedSignature> = sigs.filter_map(|s| s.ok()).collect();
    for s in &sigs {
        for key in keys {
            if s.verify(key, release).is_ok()
                || key
                    .public_subkeys
                    .iter()
                    .any(|sub| s.verify(sub, release).is_ok())
            {
                return Ok(());
            }
        }
    }
    Err(format!(
        "none of its {} signature{} verifies with any of the {} trusted key{}",
        sigs.len(),
        if sigs.len() == 1 { "" } else { "s" },
        keys.len(),
        if keys.len() == 1 { "" } else { "s" }
    ))
}

/// The `SHA256` section of a Release file: path → (sha256 hex, size).
pub fn release_hashes(release: &Stanza) -> BTreeMap<String, (String, u64)> {
    release
        .get("SHA256")
        .map(|v| {
            v.lines()
                .filter_map(|l| {
                    let mut parts = l.split_whitespace();
                    let (h, s, p) = (parts.next()?, parts.next()?, parts.next()?);
                    Some((p.to_string(), (h.to_ascii_lowercase(), s.parse().ok()?)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One alternative of a dependency: `name [(op version)]` with any `:arch` qualifier dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub constraint: Option<(String, String)>,
}

/// `a (>= 1) | b, c` → [[a>=1, b], [c]].
pub fn parse_depends(field: &str) -> Vec<Vec<Dep>> {
    field
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|clause| {
            clause
                .split('|')
                .filter_map(|alt| {
                    let alt = alt.trim();
                    let (name_part, rest) = match alt.find('(') {
                        Some(i) => (&alt[..i], Some(&alt[i + 1..])),
                        None => (alt, None),
                    };
                    // Architecture restrictions `[amd64]` and qualifiers `:any` are dropped.
                    let name = name_part
                        .split('[')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    if name.is_empty() {
                        return None;
                    }
                    let constraint = rest.and_then(|r| {
                        let r = r.split(')').next().unwrap_or("").trim();
                        let op_len = r
                            .find(|c: char| !matches!(c, '<' | '>' | '='))
                            .unwrap_or(r.len());
                        let (op, v) = r.split_at(op_len);
                        (!op.is_empty()).then(|| (op.to_string(), v.trim().to_string()))
                    });
                    Some(Dep { name, constraint })
                })
                .collect::<Vec<_>>()
        })
        .filter(|alts| !alts.is_empty())
        .collect()
}

/// `Provides: a (= 1), b` → [(a, Some(1)), (b, None)].
pub fn parse_provides(field: &str) -> Vec<(String, Option<String>)> {
    parse_depends(field)
        .into_iter()
        .flatten()
        .map(|d| (d.name, d.constraint.map(|(_, v)| v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stanzas_and_depends() {
        let s = stanzas(
            "Package: a\nDepends: libc6 (>= 2.34), libssl3 (>= 3.0.0) | libssl1.1, perl:any\nDescription: x\n more\n\nPackage: b\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0]["Description"], "x\nmore");
        let d = parse_depends(&s[0]["Depends"]);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0][0].constraint, Some((">=".into(), "2.34".into())));
        assert_eq!(d[1][1].name, "libssl1.1");
        assert_eq!(d[2][0].name, "perl");
        assert_eq!(
            parse_provides("libssl (= 3.0), awk"),
            [
                ("libssl".to_string(), Some("3.0".to_string())),
                ("awk".to_string(), None)
            ]
        );
    }

    #[test]
    fn release_hash_lines() {
        let r = &stanzas(
            "Suite: stable\nSHA256:\n abc 10 main/binary-amd64/Packages\n def 5 main/binary-amd64/Packages.gz\n",
        )[0];
        let h = release_hashes(r);
        assert_eq!(h["main/binary-amd64/Packages.gz"], ("def".to_string(), 5));
    }
}
