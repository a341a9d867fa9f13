//! `WWW-Authenticate` parsing (RFC 7235 challenges, as registries send them).
//! Hand-written: the crates that exist for this are unmaintained or handle only one challenge,
//! while registries send `Bearer realm="…",service="…",scope="…"` and sometimes several schemes.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme: `bearer` or `basic`.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

/// Parse every challenge in a header value. Malformed parts are skipped, never a panic.
pub fn parse(header: &str) -> Vec<Challenge> {
    let s = header.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let skip = |i: &mut usize, pred: &dyn Fn(u8) -> bool| {
        while *i < s.len() && pred(s[*i]) {
            *i += 1;
        }
    };
    let is_token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    while i < s.len() {
        skip(&mut i, &|c| c == b' ' || c == b',' || c == b'\t');
        let start = i;
        skip(&mut i, &is_token);
        if start == i {
            i += 1; // an unexpected character: skip it
            continue;
        }
        let token = &header[start..i];
        let mut j = i;
        skip(&mut j, &|c| c == b' ' || c == b'\t');
        if j < s.len() && s[j] == b'=' && !out.is_empty() {
            // key=value of the current challenge
            j += 1;
            skip(&mut j, &|c| c == b' ' || c == b'\t');
            let value = if j < s.len() && s[j] == b'"' {
                j += 1;
                let mut v = Vec::new();
                while j < s.len() && s[j] != b'"' {
                    if s[j] == b'\\' && j + 1 < s.len() {
                        j += 1;
                    }
                    v.push(s[j]);
                    j += 1;
                }
                j += 1;
                String::from_utf8_lossy(&v).into_owned()
            } else {
                let vs = j;
                while j < s.len() && s[j] != b',' && s[j] != b' ' {
                    j += 1;
                }
                header[vs..j].to_string()
            };
            if let Some(last) = out.last_mut() {
                last.params.insert(token.to_ascii_lowercase(), value);
            }
            i = j;
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:library/debian:pull,push")
        );
    }

    #[test]
    fn several_challenges_and_junk() {
        let c = parse(r#"Basic realm="x", Bearer realm="https://r/t",error="insufficient_scope""#);
        assert_eq!(
            c.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(),
            ["basic", "bearer"]
        );
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert!(parse("").is_empty());
        for junk in [
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            "Bearer ,,, =x",
            "\u{1F600}",
        ] {
            let _ = parse(junk);
        }
        assert_eq!(
            parse(r#"Bearer realm="a\"b""#)[0].param("realm"),
            Some("a\"b")
        );
    }
}
