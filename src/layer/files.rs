//! A layer of local files (`imgbuild append --add SRC:DEST`): a file or a directory tree put at
//! an absolute path of the image, with its parent directories. What decides the bytes is only
//! the files' contents, names, link targets and whether each file is executable: owners are
//! root, modes are 0755 (directories and executables) or 0644, but 1777 for a directory that is
//! world-writable and sticky (a `/tmp`), and times are the build's, so the same files give the
//! same layer on any machine and under any umask.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::release::{Entry, EntryKind};

/// One `SRC:DEST` given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddFiles {
    pub source: PathBuf,
    /// Absolute path in the image.
    pub dest: String,
}

impl AddFiles {
    /// `SRC:DEST` (DEST absolute), or `SRC` alone for `/NAME` (the file's name at the root).
    pub fn parse(s: &str) -> Result<AddFiles> {
        let usage = |why: &str| {
            Error::Usage(format!(
                "invalid --add {s:?}: {why}; give SRC:DEST with DEST an absolute path in the image, e.g. --add target/release/app:/usr/bin/app"
            ))
        };
        let (source, dest) = match s.rsplit_once(':') {
            Some((src, dest)) if dest.starts_with('/') => (src.to_string(), dest.to_string()),
            Some((_, dest)) if !dest.is_empty() => return Err(usage("DEST is not absolute")),
            _ => {
                let name = Path::new(s.trim_end_matches('/'))
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| usage("SRC has no file name"))?
                    .to_string();
                (s.to_string(), format!("/{name}"))
            }
        };
        if source.is_empty() {
            return Err(usage("SRC is empty"));
        }
        let dest = normalize(&dest).ok_or_else(|| usage("DEST climbs out of / or is /"))?;
        Ok(AddFiles {
            source: PathBuf::from(source),
            dest,
        })
    }
}

/// `/a//b/./c/` as `a/b/c`; `None` for `/` itself or a path with `..`.
fn normalize(dest: &str) -> Option<String> {
    let parts: Vec<&str> = dest
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// The layer holding every `add`, written into `cache` (verified on its way there), and how
/// many entries it has.
pub fn write(
    adds: &[AddFiles],
    opts: super::TarOptions,
    cache: &crate::cache::Cache,
) -> Result<(crate::oci::Layer, usize)> {
    let entries = plan(adds)?;
    let b = super::write_layer(&entries, opts, cache)?;
    Ok((b.layer(crate::oci::LayerKind::Files, cache), entries.len()))
}

/// The entries of a layer holding every `add` (a later one wins where two give the same path),
/// with the parent directories of each, in tar order.
pub(crate) fn plan(adds: &[AddFiles]) -> Result<Vec<Entry>> {
    let mut entries: std::collections::BTreeMap<String, Entry> = Default::default();
    for add in adds {
        let meta = std::fs::metadata(&add.source).ctx("read", &add.source)?;
        if !meta.is_file() && !meta.is_dir() {
            return Err(Error::Usage(format!(
                "--add {}: it is neither a file nor a directory (a device or a pipe cannot go in a layer)",
                add.source.display()
            )));
        }
        let mut parent = String::new();
        for part in add
            .dest
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            parent = if parent.is_empty() {
                part.to_string()
            } else {
                format!("{parent}/{part}")
            };
            let at = entries
                .entry(parent.clone())
                .or_insert_with(|| dir_entry(&parent));
            // A file or link an earlier --add put here cannot hold this one.
            if at.kind != EntryKind::Dir {
                return Err(Error::Usage(format!(
                    "--add {}: /{} would go under /{parent}, which an earlier --add made a file or a link; give the two non-overlapping destinations",
                    add.source.display(),
                    add.dest
                )));
            }
        }
        // What an earlier --add put at or under this destination is replaced, not merged.
        let under = format!("{}/", add.dest);
        entries.retain(|path, _| *path != add.dest && !path.starts_with(&under));
        if meta.is_dir() {
            entries.insert(add.dest.clone(), dir_of(&add.dest, &meta));
            walk(&add.source, &add.dest, &mut entries)?;
        } else {
            entries.insert(add.dest.clone(), file_entry(&add.source, &add.dest, &meta));
        }
    }
    // Sorted by path, a directory comes before what it holds ('/' sorts after '-' and '.', but a
    // path is always a prefix of its children's).
    Ok(entries.into_values().collect())
}

fn dir_entry(path: &str) -> Entry {
    Entry {
        path: path.to_string(),
        source: None,
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
    }
}

/// A directory given as a source: 1777 when it is world-writable and sticky, else 0755.
fn dir_of(path: &str, meta: &std::fs::Metadata) -> Entry {
    use std::os::unix::fs::PermissionsExt;
    let shared = meta.permissions().mode() & 0o1002 == 0o1002;
    Entry {
        mode: if shared { 0o1777 } else { 0o755 },
        ..dir_entry(path)
    }
}

fn file_entry(source: &Path, path: &str, meta: &std::fs::Metadata) -> Entry {
    use std::os::unix::fs::PermissionsExt;
    let executable = meta.permissions().mode() & 0o111 != 0;
    Entry {
        path: path.to_string(),
        source: Some(source.to_path_buf()),
        kind: EntryKind::File { size: meta.len() },
        mode: if executable { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
    }
}

/// What the directory `dir` holds, at `dest`; symbolic links are kept as links.
fn walk(
    dir: &Path,
    dest: &str,
    entries: &mut std::collections::BTreeMap<String, Entry>,
) -> Result<()> {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .ctx("read", dir)?
        .collect::<std::io::Result<Vec<_>>>()
        .ctx("read", dir)?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let source = child.path();
        let Some(name) = child.file_name().to_str().map(str::to_string) else {
            return Err(Error::Usage(format!(
                "{} is not a UTF-8 name: rename it before adding it to an image",
                source.display()
            )));
        };
        let path = format!("{dest}/{name}");
        let meta = std::fs::symlink_metadata(&source).ctx("read", &source)?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&source).ctx("read", &source)?;
            entries.insert(
                path.clone(),
                Entry {
                    path,
                    source: None,
                    kind: EntryKind::Symlink {
                        target: target.to_string_lossy().into_owned(),
                    },
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                },
            );
        } else if meta.is_dir() {
            entries.insert(path.clone(), dir_of(&path, &meta));
            walk(&source, &path, entries)?;
        } else if meta.is_file() {
            entries.insert(path.clone(), file_entry(&source, &path, &meta));
        } else {
            return Err(Error::Usage(format!(
                "{} is neither a file, a directory nor a link: it cannot go in a layer",
                source.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn add_specs() {
        let a = AddFiles::parse("target/release/imgbuild:/usr/bin/imgbuild").unwrap();
        assert_eq!(a.source, PathBuf::from("target/release/imgbuild"));
        assert_eq!(a.dest, "usr/bin/imgbuild");
        assert_eq!(AddFiles::parse("dir/app").unwrap().dest, "app");
        assert_eq!(AddFiles::parse("x://etc/./ssl/").unwrap().dest, "etc/ssl");
        for bad in ["x:etc", "x:/", "x:/a/../b", ":/a"] {
            let e = AddFiles::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--add") && e.contains("SRC:DEST"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_tree_with_parents_links_and_modes_in_tar_order() {
        let scratch = tempfile::tempdir().unwrap();
        let bin = scratch.path().join("tool");
        std::fs::write(&bin, b"#!").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).unwrap();
        let tree = scratch.path().join("share");
        std::fs::create_dir_all(tree.join("b")).unwrap();
        std::fs::write(tree.join("b/data"), b"1234").unwrap();
        std::fs::set_permissions(tree.join("b/data"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::os::unix::fs::symlink("b/data", tree.join("a-link")).unwrap();
        let adds = [
            AddFiles::parse(&format!("{}:/usr/bin/tool", bin.display())).unwrap(),
            AddFiles::parse(&format!("{}:/usr/share/t", tree.display())).unwrap(),
        ];
        let got: Vec<(String, u32, EntryKind)> = plan(&adds)
            .unwrap()
            .into_iter()
            .map(|e| (e.path, e.mode, e.kind))
            .collect();
        let dir = |p: &str| (p.to_string(), 0o755, EntryKind::Dir);
        assert_eq!(
            got,
            vec![
                dir("usr"),
                dir("usr/bin"),
                ("usr/bin/tool".into(), 0o755, EntryKind::File { size: 2 }),
                dir("usr/share"),
                dir("usr/share/t"),
                (
                    "usr/share/t/a-link".into(),
                    0o777,
                    EntryKind::Symlink {
                        target: "b/data".into()
                    }
                ),
                dir("usr/share/t/b"),
                (
                    "usr/share/t/b/data".into(),
                    0o644,
                    EntryKind::File { size: 4 }
                ),
            ]
        );
        let tmp = scratch.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let t = plan(&[AddFiles::parse(&format!("{}:/tmp", tmp.display())).unwrap()]).unwrap();
        assert_eq!((t[0].path.as_str(), t[0].mode), ("tmp", 0o1777));
        // Overlaps: a later tree replaces what was at its destination; nothing goes under a file.
        let at = |spec: String| AddFiles::parse(&spec).unwrap();
        let replaced = plan(&[
            at(format!("{}:/opt/t", tree.display())),
            at(format!("{}:/opt/t", bin.display())),
        ])
        .unwrap();
        assert_eq!(
            replaced.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["opt", "opt/t"]
        );
        let e = plan(&[
            at(format!("{}:/opt/app", bin.display())),
            at(format!("{}:/opt/app/config", bin.display())),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("made a file or a link"), "{e}");
        let e = plan(&[
            at(format!("{}:/t", tree.display())),
            at(format!("{}:/t/a-link/x", bin.display())),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("/t/a-link"), "{e}");
        let e = plan(&[at("/dev/null:/x".into())]).unwrap_err().to_string();
        assert!(e.contains("neither a file nor a directory"), "{e}");
        let missing = AddFiles::parse("/no/such/file:/x").unwrap();
        assert!(
            plan(&[missing])
                .unwrap_err()
                .to_string()
                .contains("/no/such/file")
        );
    }
}
