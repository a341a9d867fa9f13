//! Image references, parsed and normalised the way Docker does (distribution/reference):
//! `debian:bookworm-slim` is `docker.io/library/debian:bookworm-slim`.
//!
//! Why not oci-spec's `distribution::Reference` (already a dependency): in 0.10 it refuses
//! bracketed IPv6 registries (`[::1]:5000/app`, which distribution/reference takes), compiles a
//! multi-megabyte regular expression on first use, and its errors say only "invalid reference
//! format", where these name the part that is wrong and the form expected. A unit test checks
//! that both agree on every reference both accept.

use std::fmt;

use oci_spec::image::Digest;

use crate::error::{Error, Result};
use crate::oci::digest;

pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port), `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path, `library/debian` for an official Docker Hub image.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "invalid image reference {input:?}: {why} (expected [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. debian:bookworm-slim)"
            ))
        };
        if input.is_empty() {
            return Err(bad("it is empty"));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (
                n,
                Some(
                    digest::parse(d)
                        .map_err(|_| bad("the digest is not sha256:<64 lowercase hex>"))?,
                ),
            ),
            None => (input, None),
        };
        // A tag is what follows the last ':' when no '/' comes after it (else it is a port).
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if !name_tag[i..].contains('/') => (&name_tag[..i], Some(&name_tag[i + 1..])),
            _ => (name_tag, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(bad("the tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        if !valid_registry(&registry) {
            return Err(bad("the registry host is not a valid host[:port]"));
        }
        if path.is_empty() {
            return Err(bad("the repository name is empty"));
        }
        if path.len() > 255 {
            return Err(bad("the repository name is longer than 255 characters"));
        }
        if path.len() == 64 && path.chars().all(|c| c.is_ascii_hexdigit()) && registry == DOCKER_HUB
        {
            return Err(bad("a 64-character hex string is an image ID, not a name"));
        }
        for component in path.split('/') {
            if !valid_path_component(component) {
                return Err(bad(&format!(
                    "path component {component:?} must be lowercase letters, digits and separators (., _, __, -)"
                )));
            }
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The host to talk to for the registry API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The tag, `latest` when neither tag nor digest was given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match &self.digest {
            Some(d) => d.to_string(),
            None => self.tag_or_latest().to_string(),
        }
    }

    /// `docker.io/library/foo:1.0`, as containerd names images.
    pub fn canonical(&self) -> String {
        self.render(&format!("{}/{}", self.registry, self.repository))
    }

    /// `foo:1.0`, as Docker shows names (RepoTags).
    pub(crate) fn familiar(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        };
        self.render(&name)
    }

    /// `familiar()` reduced to name:tag (no digest), as docker load's RepoTags require.
    /// `registry/repository:tag` without a digest (`docker.io/library/debian:latest`).
    pub(crate) fn tagged(&self) -> String {
        format!(
            "{}/{}:{}",
            self.registry,
            self.repository,
            self.tag_or_latest()
        )
    }

    pub fn familiar_tagged(&self) -> String {
        let name = self.familiar();
        let name = name.split('@').next().unwrap_or(&name).to_string();
        if self.tag.is_none() && self.digest.is_some() {
            format!("{name}:latest")
        } else {
            name
        }
    }

    fn render(&self, name: &str) -> String {
        let mut s = name.to_string();
        if self.tag.is_some() || self.digest.is_none() {
            s.push(':');
            s.push_str(self.tag_or_latest());
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_ref());
        }
        s
    }

    /// Repository with registry, no tag: `docker.io/library/foo`.
    pub(crate) fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

pub fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_registry(host: &str) -> bool {
    let (host, port) = if let Some(rest) = host.strip_prefix('[') {
        // [ipv6]:port
        match rest.split_once(']') {
            Some((ip, tail)) => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (None, tail.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|c| c.is_ascii_alphanumeric() || c == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_normalisation() {
        let r = p("debian:bookworm-slim");
        assert_eq!(r.canonical(), "docker.io/library/debian:bookworm-slim");
        assert_eq!(r.familiar(), "debian:bookworm-slim");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(p("busybox").canonical(), "docker.io/library/busybox:latest");
        assert_eq!(
            p("index.docker.io/library/busybox").canonical(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(p("user/app:1").familiar(), "user/app:1");
        assert_eq!(p("user/app:1").repository, "user/app");
    }

    #[test]
    fn registries_ports_and_digests() {
        let r = p("localhost:5000/team/app:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "team/app", Some("v1"))
        );
        assert_eq!(r.familiar(), "localhost:5000/team/app:v1");
        let hex = "a".repeat(64);
        let r = p(&format!("ghcr.io/o/r@sha256:{hex}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), format!("sha256:{hex}"));
        assert_eq!(r.familiar_tagged(), "ghcr.io/o/r:latest");
        let r = p(&format!("127.0.0.1:5000/x:t@sha256:{hex}"));
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(p("[::1]:5000/x").registry, "[::1]:5000");
        // Without a '/', foo:5000 is Docker Hub's foo with tag 5000.
        assert_eq!(p("foo:5000").canonical(), "docker.io/library/foo:5000");
        assert_eq!(p("localhost/x").registry, "localhost");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "host.io/Upper/case",
            "docker.io/Upper",
            "a//b",
            "a:",
            "a:-tag",
            "a@sha256:xyz",
            "a@md5:abc",
            "-a",
            "a-",
            "a..b",
            "host:port/x",
            &"a".repeat(64).replace('a', "b"),
            &format!("x:{}", "t".repeat(129)),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = Reference::parse("Bad Name").unwrap_err();
        assert!(e.to_string().contains("invalid image reference"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    /// Where oci-spec's parser accepts a reference, it normalises it as this one does.
    #[test]
    fn agrees_with_oci_spec() {
        use oci_spec::distribution::Reference as Theirs;
        let hex = "a".repeat(64);
        for r in [
            "debian:bookworm-slim".to_string(),
            "busybox".into(),
            "index.docker.io/library/busybox".into(),
            "user/app:1".into(),
            "localhost:5000/team/app:v1".into(),
            format!("ghcr.io/o/r@sha256:{hex}"),
            "foo:5000".into(),
            "localhost/x".into(),
            "registry.example.com:443/a/b/c:1.2.3-rc_1".into(),
        ] {
            let ours = p(&r);
            let theirs: Theirs = r.parse().unwrap_or_else(|e| panic!("{r}: {e}"));
            assert_eq!(ours.registry, theirs.registry(), "{r}");
            assert_eq!(ours.repository, theirs.repository(), "{r}");
            assert_eq!(
                ours.digest.as_ref().map(|d| d.to_string()).as_deref(),
                theirs.digest(),
                "{r}"
            );
        }
        // Where they differ: IPv6 registries.
        assert!("[::1]:5000/x".parse::<Theirs>().is_err());
        assert_eq!(p("[::1]:5000/x").registry, "[::1]:5000");
    }

    #[test]
    fn separators() {
        assert!(valid_path_component("a__b"));
        assert!(valid_path_component("a---b"));
        assert!(!valid_path_component("a___b"));
        assert!(valid_path_component("a.b_c-d"));
    }
}
