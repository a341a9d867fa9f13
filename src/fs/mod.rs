//! The image's file system as a virtual tree, built by reading layers as tar streams: entries,
//! whiteouts and links are applied to an in-memory index, nothing is extracted to the host, and
//! no link is ever followed out of the tree. Only what the checks and the SBOM need is kept:
//! link targets, the symbol versions each shared library defines, and a few small text files
//! (`ld.so.conf`, dpkg's status, os-release).

use std::collections::BTreeMap;
use std::io::Read;

pub mod elf;

use self::elf::ElfInfo;
use crate::error::{Error, ImageError, Result};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Node {
    Dir,
    File {
        mode: u32,
        /// Set for ELF files worth resolving against (shared libraries, interpreters).
        elf: Option<ElfInfo>,
        /// Known not to be an ELF file at all (ld.so would refuse it as a library).
        not_elf: bool,
    },
    Symlink(String),
}

/// The longest path Linux accepts; a layer entry beyond it is not a real file.
const PATH_MAX: usize = 4096;
/// Small files whose contents are kept (at most this large).
const MAX_KEPT: u64 = 16 << 20;
/// Shared libraries larger than this are not parsed (none is in practice).
const MAX_ELF: u64 = 512 << 20;

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RootFs {
    nodes: BTreeMap<String, Node>,
    #[serde(with = "base64_map")]
    contents: BTreeMap<String, Vec<u8>>,
    /// What entries [`RootFs::insert_by`] put in replaced or went through: facts about the
    /// layers an image adds, never part of a base's summary.
    #[serde(skip)]
    replaced: Vec<Replaced>,
}

/// An entry of an added layer that replaces a link or a directory below it, or that lies
/// under a link: on a merged-/usr base, a `lib/` directory in a later layer replaces the
/// `/lib -> usr/lib` link and hides the C library's loader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced {
    /// The layer that holds the entry.
    pub layer: String,
    /// The path in the tree below that the entry replaces or goes through.
    pub path: String,
    /// What was there (`a link to usr/lib`, `a directory`).
    pub was: String,
    /// What the layer puts there.
    pub by: String,
}

/// Kept file contents as base64 in the cached tree (JSON has no bytes).
mod base64_map {
    use std::collections::BTreeMap;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        m: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        m.iter()
            .map(|(k, v)| (k, STANDARD.encode(v)))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                STANDARD
                    .decode(v)
                    .map(|b| (k, b))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// `a/./b/../c` → `/a/c`; `..` stops at the root, as it does inside a container.
pub(crate) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Files whose contents the checks and the SBOM read.
fn keep_contents(path: &str) -> bool {
    path == "/etc/ld.so.conf"
        || path.starts_with("/etc/ld.so.conf.d/")
        || path == "/var/lib/dpkg/status"
        || path.starts_with("/var/lib/dpkg/status.d/")
        || path == "/etc/os-release"
        || path == "/usr/lib/os-release"
        || path == "/etc/debian_version"
        || path == "/etc/apt/sources.list"
        || path.starts_with("/etc/apt/sources.list.d/")
        || path == "/etc/apt/trusted.gpg"
        || path.starts_with("/etc/apt/trusted.gpg.d/")
        || path.starts_with("/usr/share/keyrings/")
        || path == "/etc/ssl/certs/ca-certificates.crt"
}

/// Files that may be shared libraries or program interpreters.
/// Read up to `buf.len()` bytes, fewer only at the end of the entry.
fn read_head(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn maybe_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    // ERTS's programs too: a release built with `include_erts: false` runs on the image's.
    name.contains(".so") || (path.contains("/erts-") && path.contains("/bin/"))
}

impl RootFs {
    pub fn new() -> RootFs {
        let mut fs = RootFs::default();
        fs.nodes.insert("/".into(), Node::Dir);
        fs
    }

    /// How many files, directories and links the tree holds (`/` aside).
    pub fn len(&self) -> usize {
        self.nodes.len().saturating_sub(1)
    }

    /// Whether the tree holds nothing but `/`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Apply one layer, given as an uncompressed tar stream, on top of what is there. A tar that
    /// cannot be read is an [`ImageError::CorruptLayer`].
    pub fn apply_layer(&mut self, tar: impl Read, what: &str) -> Result<()> {
        let bad = |e: std::io::Error| {
            Error::from(ImageError::CorruptLayer {
                what: what.to_string(),
                detail: e.to_string(),
            })
        };
        let mut archive = tar::Archive::new(tar);
        let mut added: Vec<(String, Node)> = Vec::new();
        let mut kept: Vec<(String, Vec<u8>)> = Vec::new();
        let mut whiteouts: Vec<String> = Vec::new();
        let mut opaque: Vec<String> = Vec::new();
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let link_len = entry.link_name_bytes().map_or(0, |l| l.len());
            if raw.len() > PATH_MAX || link_len > PATH_MAX {
                return Err(Error::from(ImageError::Invalid(format!(
                    "{what}: an entry's name or link target is {} bytes long, over the {PATH_MAX} bytes Linux allows; this layer cannot be a real file system (rebuild or replace the base image)",
                    raw.len().max(link_len)
                ))));
            }
            let path = normalize(&raw);
            if path == "/" {
                continue;
            }
            let name = path.rsplit('/').next().unwrap_or("");
            if name == ".wh..wh..opq" {
                opaque.push(parent(&path).to_string());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                whiteouts.push(format!("{}/{hidden}", parent(&path).trim_end_matches('/')));
                continue;
            }
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o644);
            let kind = header.entry_type();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            let node = match kind {
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Symlink => Node::Symlink(link.unwrap_or_default()),
                tar::EntryType::Link => {
                    // A hard link is the same file as its target (in this layer or below).
                    let target = normalize(&link.unwrap_or_default());
                    let node = added
                        .iter()
                        .rev()
                        .find(|(p, _)| *p == target)
                        .map(|(_, n)| n.clone())
                        .or_else(|| self.nodes.get(&target).cloned())
                        .unwrap_or(Node::File {
                            mode,
                            elf: None,
                            not_elf: false,
                        });
                    if let Some(c) = kept
                        .iter()
                        .rev()
                        .find(|(p, _)| *p == target)
                        .map(|(_, c)| c.clone())
                        .or_else(|| self.contents.get(&target).cloned())
                    {
                        kept.push((path.clone(), c));
                    }
                    node
                }
                t if t.is_file() || t == tar::EntryType::Continuous => {
                    let size = entry.size();
                    let mut elf = None;
                    let not_elf;
                    if keep_contents(&path) && size <= MAX_KEPT {
                        let mut buf = Vec::with_capacity(size as usize);
                        entry.read_to_end(&mut buf).map_err(bad)?;
                        not_elf = !crate::fs::elf::is_elf(&buf);
                        kept.push((path.clone(), buf));
                    } else if maybe_library(&path) && (64..=MAX_ELF).contains(&size) {
                        let mut buf = Vec::with_capacity(size as usize);
                        entry.read_to_end(&mut buf).map_err(bad)?;
                        not_elf = !crate::fs::elf::is_elf(&buf);
                        elf = ElfInfo::parse(&buf).ok();
                    } else {
                        // The first bytes say whether a link to this file could be a library.
                        let mut head = [0u8; 4];
                        let n = read_head(&mut entry, &mut head).map_err(bad)?;
                        not_elf = !crate::fs::elf::is_elf(&head[..n]);
                    }
                    Node::File { mode, elf, not_elf }
                }
                // Devices, fifos and the like: present, but nothing the checks read.
                _ => Node::File {
                    mode,
                    elf: None,
                    not_elf: true,
                },
            };
            added.push((path, node));
        }
        // Whiteouts hide what lower layers had; this layer's own entries then go on top.
        for dir in opaque {
            self.remove_below(&dir);
        }
        for path in whiteouts {
            self.remove(&path);
            self.remove_below(&path);
        }
        for (path, node) in added {
            if !matches!(node, Node::Dir) {
                // A file replacing a directory hides what was below it.
                self.remove_below(&path);
            }
            self.contents.remove(&path);
            self.add_parents(&path);
            self.nodes.insert(path, node);
        }
        for (path, c) in kept {
            self.contents.insert(path, c);
        }
        Ok(())
    }

    /// Put every entry of `upper` (a layer read on its own, without whiteouts) over this tree.
    pub(crate) fn overlay(&mut self, upper: &RootFs) {
        for (path, node) in &upper.nodes {
            if !matches!(node, Node::Dir) {
                self.remove_below(path);
            }
            self.contents.remove(path);
            self.nodes.insert(path.clone(), node.clone());
        }
        for (path, c) in &upper.contents {
            self.contents.insert(path.clone(), c.clone());
        }
    }

    /// Add one entry at an absolute path, as it is (a tree made by hand, a view).
    pub(crate) fn insert(&mut self, path: &str, node: Node) {
        let path = normalize(path);
        self.add_parents(&path);
        self.nodes.insert(path, node);
    }

    /// Add an entry of `layer` (release files, package files) as an engine would unpack it,
    /// noting when it replaces a link or a directory of the tree, or lies under a link (see
    /// [`RootFs::replaced`]).
    pub(crate) fn insert_by(&mut self, path: &str, node: Node, layer: &str) {
        let path = normalize(path);
        let mut prefix = parent(&path);
        while prefix != "/" {
            if let Some(Node::Symlink(target)) = self.nodes.get(prefix) {
                let (p, target) = (prefix.to_string(), target.clone());
                if !self
                    .replaced
                    .iter()
                    .any(|r| r.path == p && r.layer == layer)
                {
                    self.replaced.push(Replaced {
                        layer: layer.to_string(),
                        path: p,
                        was: format!("a link to {target}"),
                        by: format!("{path} under it, as if it were a directory"),
                    });
                }
            }
            prefix = parent(prefix);
        }
        let new_kind = match &node {
            Node::Dir => "a directory",
            Node::File { .. } => "a file",
            Node::Symlink(_) => "a link",
        };
        match (self.nodes.get(&path), &node) {
            (Some(Node::Symlink(target)), Node::Dir | Node::File { .. }) => {
                self.replaced.push(Replaced {
                    layer: layer.to_string(),
                    path: path.clone(),
                    was: format!("a link to {target}"),
                    by: new_kind.to_string(),
                });
            }
            (Some(Node::Dir), Node::File { .. } | Node::Symlink(_))
                if !self.list(&path).is_empty() =>
            {
                self.replaced.push(Replaced {
                    layer: layer.to_string(),
                    path: path.clone(),
                    was: "a directory".to_string(),
                    by: new_kind.to_string(),
                });
                self.remove_below(&path);
            }
            _ => {}
        }
        self.insert(&path, node);
    }

    /// Keep the text of a file an added layer puts at `path` (read from `source`) when it is
    /// one whose contents the checks and the SBOM read (a package's `ld.so.conf.d` file, say),
    /// as [`RootFs::apply_layer`] keeps a layer's.
    pub(crate) fn keep_file(&mut self, path: &str, source: &std::path::Path) -> Result<()> {
        let path = normalize(path);
        if !keep_contents(&path) {
            return Ok(());
        }
        let meta = std::fs::metadata(source).map_err(|e| Error::io("read", source, e))?;
        if meta.len() <= MAX_KEPT {
            let bytes = std::fs::read(source).map_err(|e| Error::io("read", source, e))?;
            self.contents.insert(path, bytes);
        }
        Ok(())
    }

    /// What added layers' entries replaced or went through, in the order they came.
    pub(crate) fn replaced(&self) -> &[Replaced] {
        &self.replaced
    }

    /// Layers may omit parent directories; they exist implicitly.
    fn add_parents(&mut self, path: &str) {
        let mut p = parent(path);
        while p != "/" && !self.nodes.contains_key(p) {
            self.nodes.insert(p.to_string(), Node::Dir);
            p = parent(p);
        }
    }

    fn remove(&mut self, path: &str) {
        self.nodes.remove(path);
        self.contents.remove(path);
    }

    fn remove_below(&mut self, dir: &str) {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.remove(&p);
        }
    }

    /// Follow symlinks in every component of `path`, inside the tree. Returns the final path
    /// when it exists, or `None` (missing, dangling, or a loop).
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut pending: Vec<String> = normalize(path)
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .rev()
            .collect();
        let mut current = String::from("/");
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            let candidate = if current == "/" {
                format!("/{component}")
            } else {
                format!("{current}/{component}")
            };
            match self.nodes.get(&candidate)? {
                Node::Symlink(target) => {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    // Absolute targets start again at the image root, never the host's.
                    if target.starts_with('/') {
                        current = "/".into();
                    }
                    for c in target.split('/').filter(|c| !c.is_empty()).rev() {
                        pending.push(c.to_string());
                    }
                }
                _ => current = candidate,
            }
            // `..` after a symlink is resolved against where the link led.
            while pending.last().is_some_and(|c| c == "." || c == "..") {
                if pending.pop().as_deref() == Some("..") {
                    current = parent(&current).to_string();
                }
            }
        }
        Some(current)
    }

    /// Where `path` really is, the way the kernel would place a file created there: every
    /// directory on the way (and `path` itself when `is_dir`) that is a link to a directory in
    /// the tree is followed, so `/lib/x86_64-linux-gnu/libtinfo.so.5` on a merged-/usr tree
    /// (`/lib -> usr/lib`) is `/usr/lib/x86_64-linux-gnu/libtinfo.so.5`. From the first part
    /// that does not exist (or is not a directory) on, the path is kept as given.
    pub(crate) fn physical(&self, path: &str, is_dir: bool) -> String {
        let normal = normalize(path);
        let parts: Vec<&str> = normal.split('/').filter(|c| !c.is_empty()).collect();
        let walk = if is_dir {
            parts.len()
        } else {
            parts.len().saturating_sub(1)
        };
        let mut current = String::from("/");
        for (i, part) in parts.iter().enumerate() {
            let candidate = if current == "/" {
                format!("/{part}")
            } else {
                format!("{current}/{part}")
            };
            if i >= walk {
                current = candidate;
                continue;
            }
            current = match self.lookup(&candidate) {
                Some((real, Node::Dir)) => real,
                _ => {
                    // Missing, or not a directory: the rest stays as it is.
                    let rest = parts[i..].join("/");
                    return if current == "/" {
                        format!("/{rest}")
                    } else {
                        format!("{current}/{rest}")
                    };
                }
            };
        }
        current
    }

    /// The node at `path` after following links.
    pub(crate) fn lookup(&self, path: &str) -> Option<(String, &Node)> {
        let real = self.resolve(path)?;
        let node = self.nodes.get(&real)?;
        Some((real, node))
    }

    pub(crate) fn exists(&self, path: &str) -> bool {
        self.lookup(path).is_some()
    }

    /// Contents kept for `path` (after following links).
    pub(crate) fn contents(&self, path: &str) -> Option<&[u8]> {
        let real = self.resolve(path)?;
        self.contents.get(&real).map(Vec::as_slice)
    }

    /// Paths directly inside `dir` (after following links), sorted.
    pub fn list(&self, dir: &str) -> Vec<String> {
        let Some(real) = self.resolve(dir) else {
            return vec![];
        };
        let prefix = if real == "/" {
            "/".into()
        } else {
            format!("{real}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p[prefix.len()..].contains('/'))
            .map(|(p, _)| p.clone())
            .collect()
    }

    pub(crate) fn is_executable_file(&self, path: &str) -> bool {
        matches!(self.lookup(path), Some((_, Node::File { mode, .. })) if mode & 0o111 != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            // Raw names, so hostile ones (`../`) reach the reader as they would from a registry.
            let name = &mut h.as_old_mut().name;
            name.fill(0);
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};

    /// A merged-/usr tree as bookworm's and trixie's are: `/lib`, `/bin`, `/lib64` are links.
    fn merged_usr() -> RootFs {
        let mut fs = RootFs::new();
        let base = layer(&[
            ("bin", L, "usr/bin", b""),
            ("lib", L, "usr/lib", b""),
            ("lib64", L, "usr/lib64", b""),
            ("usr/", D, "", b""),
            ("usr/bin/", D, "", b""),
            ("usr/lib/", D, "", b""),
            ("usr/lib/x86_64-linux-gnu/", D, "", b""),
            ("usr/lib64/", D, "", b""),
            ("var/", D, "", b""),
            ("var/run", L, "/run", b""),
            ("run/", D, "", b""),
        ]);
        fs.apply_layer(&base[..], "base").unwrap();
        fs
    }

    #[test]
    fn physical_paths_go_through_directory_links() {
        let fs = merged_usr();
        let p = |path, dir| fs.physical(path, dir);
        assert_eq!(
            p("lib/x86_64-linux-gnu/libtinfo.so.5.9", false),
            "/usr/lib/x86_64-linux-gnu/libtinfo.so.5.9"
        );
        assert_eq!(p("lib", true), "/usr/lib");
        assert_eq!(p("lib/x86_64-linux-gnu", true), "/usr/lib/x86_64-linux-gnu");
        assert_eq!(
            p("lib64/ld-linux-x86-64.so.2", false),
            "/usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(p("bin/busybox", false), "/usr/bin/busybox");
        // Absolute link targets too; a missing part keeps the rest as given.
        assert_eq!(p("var/run/app/pid", false), "/run/app/pid");
        assert_eq!(p("lib/new/deeper/x", false), "/usr/lib/new/deeper/x");
        assert_eq!(p("opt/app/x", false), "/opt/app/x");
        // The last part of a file's path is never followed (it is what the entry replaces).
        assert_eq!(p("lib", false), "/lib");
        // A tree that is not merged-/usr keeps every path.
        let mut split = RootFs::new();
        split
            .apply_layer(
                &layer(&[("lib/", D, "", b""), ("usr/lib/", D, "", b"")])[..],
                "b",
            )
            .unwrap();
        assert_eq!(
            split.physical("lib/x86_64-linux-gnu/a.so", false),
            "/lib/x86_64-linux-gnu/a.so"
        );
    }

    #[test]
    fn inserts_that_replace_a_link_or_go_through_it_are_noted() {
        let mut fs = merged_usr();
        fs.insert_by(
            "/usr/lib/x86_64-linux-gnu/libfine.so.1",
            file(),
            "the packages layer",
        );
        fs.insert_by("/usr/lib", Node::Dir, "the packages layer");
        assert!(fs.replaced().is_empty(), "{:?}", fs.replaced());
        fs.insert_by("/lib", Node::Dir, "the packages layer");
        fs.insert_by(
            "/lib/x86_64-linux-gnu/libtinfo.so.5.9",
            file(),
            "the packages layer",
        );
        fs.insert_by("/bin/tool", file(), "the packages layer");
        let r = fs.replaced();
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            (r[0].path.as_str(), r[0].was.as_str(), r[0].by.as_str()),
            ("/lib", "a link to usr/lib", "a directory")
        );
        assert_eq!(r[1].path, "/bin");
        assert_eq!(r[1].layer, "the packages layer");
        // The glibc loader is gone from view once /lib is a directory, as in an engine.
        assert!(!fs.exists("/lib/x86_64-linux-gnu/libfine.so.1"));

        // A file over a directory that holds something hides it, and is noted too.
        let mut fs = merged_usr();
        fs.insert("/usr/lib/x86_64-linux-gnu/libc.so.6", file());
        fs.insert_by("/usr/lib/x86_64-linux-gnu", file(), "the app layer");
        assert_eq!(fs.replaced()[0].was, "a directory");
        // Summaries do not carry what added layers did.
        let back: RootFs = serde_json::from_slice(&serde_json::to_vec(&fs).unwrap()).unwrap();
        assert!(back.replaced().is_empty());
    }

    fn file() -> Node {
        Node::File {
            mode: 0o644,
            elf: None,
            not_elf: true,
        }
    }

    #[test]
    fn links_stay_inside_and_whiteouts_hide() {
        let mut fs = RootFs::new();
        let base = layer(&[
            ("usr/", D, "", b""),
            ("usr/bin/", D, "", b""),
            ("usr/bin/dash", F, "", b"x"),
            ("bin", L, "usr/bin", b""),
            ("usr/bin/sh", L, "dash", b""),
            ("etc/", D, "", b""),
            (
                "etc/ld.so.conf",
                F,
                "",
                b"include /etc/ld.so.conf.d/*.conf\n",
            ),
            ("escape", L, "../../../../etc/ld.so.conf", b""),
            ("abs", L, "/usr/bin/dash", b""),
            ("loop1", L, "loop2", b""),
            ("loop2", L, "loop1", b""),
            ("opt/", D, "", b""),
            ("opt/a", F, "", b"a"),
            ("opt/b", F, "", b"b"),
            ("var/x", F, "", b"x"),
        ]);
        fs.apply_layer(&base[..], "base").unwrap();
        assert_eq!(fs.resolve("/bin/sh").as_deref(), Some("/usr/bin/dash"));
        assert_eq!(fs.resolve("/escape").as_deref(), Some("/etc/ld.so.conf"));
        assert_eq!(fs.resolve("/abs").as_deref(), Some("/usr/bin/dash"));
        assert!(fs.resolve("/loop1").is_none());
        assert!(fs.contents("/escape").unwrap().starts_with(b"include"));
        assert!(fs.is_executable_file("/bin/sh"));
        let upper = layer(&[
            ("usr/bin/.wh.dash", F, "", b""),
            ("opt/.wh..wh..opq", F, "", b""),
            ("opt/c", F, "", b"c"),
            ("../../var/y", F, "", b"y"),
        ]);
        fs.apply_layer(&upper[..], "upper").unwrap();
        assert!(fs.resolve("/bin/sh").is_none(), "dash was whited out");
        assert_eq!(fs.list("/opt"), ["/opt/c"]);
        assert!(fs.exists("/var/y") && fs.exists("/var/x"));
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize("./a/./b/../c/"), "/a/c");
        assert_eq!(normalize("../../x"), "/x");
        assert_eq!(normalize(""), "/");
    }
}
