//! apt's sources: one-line `sources.list` entries, deb822 `.sources` stanzas, the base image's
//! own sources, and the keys that sign each.

use crate::fs::RootFs;

use super::index;

/// One apt source: `deb [signed-by=...] URI SUITE COMPONENT...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    /// A keyring path inside the image, or an inline armored key.
    pub signed_by: Option<String>,
}

/// A one-line source (`deb [opts] URI SUITE COMP...`, `deb` optional for `--apt-source`).
pub fn parse_source_line(line: &str) -> Option<AptSource> {
    let line = line.split('#').next()?.trim();
    let rest = line.strip_prefix("deb ").unwrap_or(line).trim();
    if line.starts_with("deb-src") || rest.is_empty() {
        return None;
    }
    let (opts, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (o, r) = r.split_once(']')?;
            (o, r.trim())
        }
        None => ("", rest),
    };
    let signed_by = opts
        .split_whitespace()
        .find_map(|o| o.strip_prefix("signed-by="))
        .map(str::to_string);
    let mut words = rest.split_whitespace();
    let uri = words.next()?.trim_end_matches('/').to_string();
    let suite = words.next()?.to_string();
    if !uri.contains("://") {
        return None;
    }
    Some(AptSource {
        uri,
        suite,
        components: words.map(str::to_string).collect(),
        signed_by,
    })
}

/// deb822 `.sources` stanzas (`Types: deb`, `URIs`, `Suites`, `Components`, `Signed-By`).
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for s in index::stanzas(text) {
        let get = |k: &str| {
            s.iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if !get("Types")
            .unwrap_or_default()
            .split_whitespace()
            .any(|t| t == "deb")
        {
            continue;
        }
        if get("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let signed_by = get("Signed-By").map(|v| v.trim().to_string());
        let components: Vec<String> = get("Components")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        for uri in get("URIs").unwrap_or_default().split_whitespace() {
            for suite in get("Suites").unwrap_or_default().split_whitespace() {
                out.push(AptSource {
                    uri: uri.trim_end_matches('/').to_string(),
                    suite: suite.to_string(),
                    components: components.clone(),
                    signed_by: signed_by.clone(),
                });
            }
        }
    }
    out
}

/// The base image's apt sources.
pub fn sources_of(fs: &RootFs) -> Vec<AptSource> {
    let mut out = Vec::new();
    let text = |p: &str| {
        fs.contents(p)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    if let Some(t) = text("/etc/apt/sources.list") {
        out.extend(t.lines().filter_map(parse_source_line));
    }
    for f in fs.list("/etc/apt/sources.list.d") {
        let Some(t) = text(&f) else { continue };
        if f.ends_with(".list") {
            out.extend(t.lines().filter_map(parse_source_line));
        } else if f.ends_with(".sources") {
            out.extend(parse_deb822(&t));
        }
    }
    out
}

/// Keys for a source: its `Signed-By` keyring (or inline key), else every keyring apt trusts.
pub(super) fn keys_for(fs: &RootFs, source: &AptSource) -> Vec<pgp::composed::SignedPublicKey> {
    if let Some(sb) = &source.signed_by {
        if sb.contains("BEGIN PGP PUBLIC KEY BLOCK") {
            return index::keys_from(sb.as_bytes());
        }
        return sb
            .split([',', ' '])
            .filter(|p| p.starts_with('/'))
            .filter_map(|p| fs.contents(p))
            .flat_map(index::keys_from)
            .collect();
    }
    let mut files: Vec<String> = vec!["/etc/apt/trusted.gpg".into()];
    files.extend(fs.list("/etc/apt/trusted.gpg.d"));
    files.extend(fs.list("/usr/share/keyrings"));
    files
        .iter()
        .filter(|p| p.ends_with(".gpg") || p.ends_with(".asc"))
        .filter_map(|p| fs.contents(p))
        .flat_map(index::keys_from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_forms() {
        assert_eq!(
            parse_source_line(
                "deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://deb.example/debian/ bookworm main contrib # c"
            ),
            Some(AptSource {
                uri: "http://deb.example/debian".into(),
                suite: "bookworm".into(),
                components: vec!["main".into(), "contrib".into()],
                signed_by: Some("/usr/share/keyrings/x.gpg".into()),
            })
        );
        assert!(parse_source_line("deb-src http://x/ y main").is_none());
        assert!(parse_source_line("# nothing").is_none());
        assert_eq!(
            parse_source_line("http://127.0.0.1:8080 stable main")
                .unwrap()
                .suite,
            "stable"
        );
        let s = parse_deb822(
            "Types: deb\nURIs: http://a/debian http://b/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://c\nSuites: x\nComponents: main\n",
        );
        assert_eq!(s.len(), 4);
        assert_eq!(s[3].uri, "http://b/debian");
        assert_eq!(s[3].suite, "bookworm-updates");
    }
}
