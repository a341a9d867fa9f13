//! `mix.lock`, the project's locked dependencies: which application comes from which Hex
//! package (the package name can differ from the application's) at which version and
//! checksum, or from which Git commit. One reader for the SBOM and the provenance, so both
//! name a dependency the same way.
//!
//! The file is an Elixir map literal:
//! `"plug": {:hex, :plug, "1.15.3", "<inner checksum>", [:mix], [...], "hexpm", "<outer checksum>"},`
//! `"dep": {:git, "https://github.com/o/dep.git", "<commit>", [branch: "main"]},`
//! Only that subset of Elixir terms is read; anything else makes the entry (not the file)
//! unreadable.

use std::path::Path;

use serde::Serialize;

/// Where a locked dependency comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "scm")]
pub enum Source {
    Hex {
        /// The Hex package's name (`:plug` in the entry), not necessarily the application's.
        package: String,
        version: String,
        /// The repository: `hexpm`, or `hexpm:ORG` for an organization's private packages.
        repo: String,
        /// The outer checksum: the SHA-256 of the package tarball, when the entry has one.
        checksum: Option<String>,
    },
    Git {
        url: String,
        rev: String,
    },
}

/// One entry of mix.lock: the application and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dep {
    pub app: String,
    pub source: Source,
}

impl Dep {
    /// The package URL scanners match advisories by: `pkg:hex/NAME@VERSION` (an organization's
    /// package with its namespace), `pkg:github/OWNER/REPO@COMMIT` for GitHub, else
    /// `pkg:generic/APP@COMMIT?vcs_url=...`.
    pub(crate) fn purl(&self) -> String {
        match &self.source {
            Source::Hex {
                package,
                version,
                repo,
                ..
            } => match repo.strip_prefix("hexpm:") {
                Some(org) if !org.is_empty() => format!(
                    "pkg:hex/{}/{}@{}",
                    encode(org),
                    encode(package),
                    encode(version)
                ),
                _ => format!("pkg:hex/{}@{}", encode(package), encode(version)),
            },
            Source::Git { url, rev } => match github_repo(url) {
                Some((owner, repo)) => format!(
                    "pkg:github/{}/{}@{}",
                    encode(&owner.to_lowercase()),
                    encode(&repo.to_lowercase()),
                    encode(rev)
                ),
                None => format!(
                    "pkg:generic/{}@{}?vcs_url={}",
                    encode(&self.app),
                    encode(rev),
                    encode(&format!("git+{url}@{rev}"))
                ),
            },
        }
    }
}

/// `owner`/`repo` of a GitHub URL (https, ssh or git@ form).
fn github_repo(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("http://github.com/"))
        .or_else(|| url.strip_prefix("git://github.com/"))
        .or_else(|| url.strip_prefix("ssh://git@github.com/"))
        .or_else(|| url.strip_prefix("git@github.com:"))?;
    let mut parts = rest.trim_end_matches('/').splitn(3, '/');
    let owner = parts.next().filter(|s| !s.is_empty())?;
    let repo = parts.next()?.trim_end_matches(".git");
    (!repo.is_empty()).then(|| (owner.to_string(), repo.to_string()))
}

/// Percent-encode what a purl component may not hold as is.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The mix.lock of the project that holds `release_dir` (`<project>/_build/<env>/rel/<name>`),
/// when there is one.
pub(crate) fn beside(release_dir: &Path) -> Option<Vec<Dep>> {
    let project = release_dir.ancestors().nth(4)?;
    let text = std::fs::read_to_string(project.join("mix.lock")).ok()?;
    Some(parse(&text))
}

/// Every readable entry, sorted by application.
pub(crate) fn parse(text: &str) -> Vec<Dep> {
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
    };
    let mut out: Vec<Dep> = match p.term(0) {
        Some(Term::Map(entries)) => entries
            .into_iter()
            .filter_map(|(k, v)| dep_of(k, v))
            .collect(),
        _ => Vec::new(),
    };
    out.sort_by(|a, b| a.app.cmp(&b.app));
    out
}

fn dep_of(key: Term, value: Term) -> Option<Dep> {
    let app = match key {
        Term::Str(s) | Term::Atom(s) => s,
        _ => return None,
    };
    let Term::Tuple(items) = value else {
        return None;
    };
    let text = |i: usize| match items.get(i) {
        Some(Term::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let source = match items.first() {
        Some(Term::Atom(scm)) if scm == "hex" => {
            let package = match items.get(1) {
                Some(Term::Atom(a)) => a.clone(),
                _ => return None,
            };
            Source::Hex {
                package,
                version: text(2)?,
                repo: text(6).unwrap_or_else(|| "hexpm".into()),
                checksum: text(7)
                    .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(|c| c.to_ascii_lowercase()),
            }
        }
        Some(Term::Atom(scm)) if scm == "git" => Source::Git {
            url: text(1)?,
            rev: text(2)?,
        },
        _ => return None,
    };
    Some(Dep { app, source })
}

/// The Elixir terms mix.lock uses.
#[derive(Debug)]
enum Term {
    Str(String),
    Atom(String),
    /// A list (a dependency's managers, options, own dependencies): not needed here.
    List,
    Tuple(Vec<Term>),
    Map(Vec<(Term, Term)>),
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

/// Deeper nesting than any mix.lock has is refused, not recursed into.
const MAX_DEPTH: usize = 32;

impl Parser<'_> {
    fn skip_space(&mut self) {
        while let Some(&b) = self.s.get(self.at) {
            if b.is_ascii_whitespace() {
                self.at += 1;
            } else if b == b'#' {
                while self.s.get(self.at).is_some_and(|&c| c != b'\n') {
                    self.at += 1;
                }
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.skip_space();
        if self.s.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn string(&mut self) -> Option<String> {
        // At the opening quote.
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match *self.s.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return String::from_utf8(out).ok();
                }
                b'\\' => {
                    out.push(*self.s.get(self.at + 1)?);
                    self.at += 2;
                }
                b => {
                    out.push(b);
                    self.at += 1;
                }
            }
        }
    }

    fn word(&mut self) -> String {
        let start = self.at;
        while self.s.get(self.at).is_some_and(|&b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'?' || b == b'!'
        }) {
            self.at += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.at]).into_owned()
    }

    /// A keyword key (`branch:` or `"plug":`) right after a word or string, if one follows.
    fn keyword_colon(&mut self) -> bool {
        if self.s.get(self.at) == Some(&b':')
            && self
                .s
                .get(self.at + 1)
                .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Items up to `close`, comma-separated; `key: value` items become 2-tuples.
    fn items(&mut self, close: u8, depth: usize) -> Option<Vec<Term>> {
        let mut out = Vec::new();
        loop {
            if self.eat(close) {
                return Some(out);
            }
            out.push(self.term(depth + 1)?);
            if !self.eat(b',') {
                return self.eat(close).then_some(out);
            }
        }
    }

    fn term(&mut self, depth: usize) -> Option<Term> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_space();
        let key_value = |p: &mut Self, key: Term| -> Option<Term> {
            if p.keyword_colon() {
                let value = p.term(depth + 1)?;
                Some(Term::Tuple(vec![key, value]))
            } else {
                Some(key)
            }
        };
        match *self.s.get(self.at)? {
            b'"' => {
                let s = self.string()?;
                key_value(self, Term::Str(s))
            }
            b':' => {
                self.at += 1;
                if self.s.get(self.at) == Some(&b'"') {
                    return self.string().map(Term::Atom);
                }
                let w = self.word();
                (!w.is_empty()).then_some(Term::Atom(w))
            }
            b'[' => {
                self.at += 1;
                self.items(b']', depth).map(|_| Term::List)
            }
            b'{' => {
                self.at += 1;
                self.items(b'}', depth).map(Term::Tuple)
            }
            b'%' => {
                self.at += 1;
                if !self.eat(b'{') {
                    return None;
                }
                let items = self.items(b'}', depth)?;
                items
                    .into_iter()
                    .map(|t| match t {
                        Term::Tuple(mut kv) if kv.len() == 2 => {
                            let v = kv.pop()?;
                            let k = kv.pop()?;
                            Some((k, v))
                        }
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
                    .map(Term::Map)
            }
            _ => {
                // A bare word: true, false, nil, a number, or a keyword key.
                let w = self.word();
                if w.is_empty() {
                    return None;
                }
                key_value(self, Term::Atom(w))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"%{
  "bandit": {:hex, :bandit, "1.2.0", "2e1a2bb8c3ef0e6e9a7bd2dd4dbd0c0e3f1e1c3e9d9f0d2f2a1a7a1b1e3b4c5d", [:mix], [{:hpax, "~> 0.1.1", [hex: :hpax, repo: "hexpm", optional: false]}, {:plug, "~> 1.14", [hex: :plug, repo: "hexpm", optional: false]}], "hexpm", "7C1FA9A3E7A05B4F1F7D1B9C47E5F6D6BB0E4B6E2A6C8D0E8F4A2B1C3D5E7F90"},
  "my_json": {:hex, :jason_fork, "1.4.1", "af1504e35f629ddcdd6addb3513c3853991f694921b1b9368b0bd32beb9f1b63", [:mix], [], "hexpm:acme", "fbb01ecdfd565b56261302f7e1fcc27c4fb8f32d56eab74db621fc154604a7a1"},
  "old": {:hex, :old, "0.1.0", "fbb01ecdfd565b56261302f7e1fcc27c4fb8f32d56eab74db621fc154604a7a1", [:mix], [], "hexpm"},
  "heroicons": {:git, "https://github.com/tailwindlabs/heroicons.git", "88ab3a0d790e6a47404cba02800a6b25d2afae50", [tag: "v2.1.1", sparse: "optimized", depth: 1]},
  "inhouse": {:git, "git@git.example.com:team/inhouse.git", "0123abcd", [branch: "main"]},
  "weird": {:svn, "x"},
}
"#;

    #[test]
    fn hex_packages_by_their_own_name_and_git_commits() {
        let deps = parse(LOCK);
        let apps: Vec<&str> = deps.iter().map(|d| d.app.as_str()).collect();
        assert_eq!(apps, ["bandit", "heroicons", "inhouse", "my_json", "old"]);
        let by = |app: &str| deps.iter().find(|d| d.app == app).unwrap();
        assert_eq!(
            by("bandit").source,
            Source::Hex {
                package: "bandit".into(),
                version: "1.2.0".into(),
                repo: "hexpm".into(),
                checksum: Some(
                    "7c1fa9a3e7a05b4f1f7d1b9c47e5f6d6bb0e4b6e2a6c8d0e8f4a2b1c3d5e7f90".into()
                ),
            }
        );
        assert_eq!(by("bandit").purl(), "pkg:hex/bandit@1.2.0");
        // The package's name, not the application's; an organization's as the namespace.
        assert_eq!(by("my_json").purl(), "pkg:hex/acme/jason_fork@1.4.1");
        // The old format has no outer checksum.
        assert!(matches!(
            &by("old").source,
            Source::Hex { checksum: None, .. }
        ));
        assert_eq!(
            by("heroicons").purl(),
            "pkg:github/tailwindlabs/heroicons@88ab3a0d790e6a47404cba02800a6b25d2afae50"
        );
        assert_eq!(
            by("inhouse").purl(),
            "pkg:generic/inhouse@0123abcd?vcs_url=git%2Bgit%40git.example.com:team/inhouse.git%400123abcd"
        );
    }

    #[test]
    fn anything_else_reads_as_nothing() {
        for text in [
            "",
            "%{",
            "not a lock",
            "%{\"a\": {:hex}}",
            &"[".repeat(10_000),
            "%{\"a\": {:hex, :a, \"1\"",
        ] {
            assert!(parse(text).is_empty(), "{text:.40}");
        }
    }

    #[test]
    fn beside_a_release() {
        let dir = tempfile::tempdir().unwrap();
        let rel = dir.path().join("_build/prod/rel/app");
        std::fs::create_dir_all(&rel).unwrap();
        assert_eq!(beside(&rel), None);
        std::fs::write(dir.path().join("mix.lock"), LOCK).unwrap();
        assert_eq!(beside(&rel).map(|d| d.len()), Some(5));
    }
}
