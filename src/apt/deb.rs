//! Reading a `.deb`: an `ar` archive holding `control.tar.*` and `data.tar.*` (gzip, xz, zstd
//! or plain). The data files are unpacked into a staging directory (never into the image's or
//! host's root), and listed with the ownership and modes the package gives them.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, ImageError, IoContext, Result};
use crate::fs::normalize;
use crate::release::{Entry, EntryKind};

/// A member of an ar archive: name, offset and size of its data.
struct Member {
    name: String,
    offset: u64,
    size: u64,
}

fn members(path: &Path, what: &str) -> Result<Vec<Member>> {
    let mut f = File::open(path).ctx("open", path)?;
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic).map_err(|_| {
        Error::from(ImageError::Package(format!(
            "{what} is not a .deb (too short)"
        )))
    })?;
    if &magic != b"!<arch>\n" {
        return Err(Error::from(ImageError::Package(format!(
            "{what} is not a .deb (no ar header)"
        ))));
    }
    let total = f.metadata().ctx("stat", path)?.len();
    let mut pos = 8u64;
    let mut out = Vec::new();
    while pos + 60 <= total {
        let mut h = [0u8; 60];
        f.seek(SeekFrom::Start(pos)).ctx("read", path)?;
        f.read_exact(&mut h).ctx("read", path)?;
        let name = String::from_utf8_lossy(&h[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = String::from_utf8_lossy(&h[48..58])
            .trim()
            .parse()
            .map_err(|_| {
                Error::from(ImageError::Package(format!(
                    "{what}: malformed ar member header"
                )))
            })?;
        let offset = pos + 60;
        if offset + size > total {
            return Err(Error::from(ImageError::Package(format!(
                "{what}: ar member {name} runs past the end"
            ))));
        }
        out.push(Member { name, offset, size });
        pos = offset + size + (size % 2);
    }
    Ok(out)
}

/// A decompressing reader for a `*.tar.{gz,xz,zst}` member.
fn tar_reader(path: &Path, m: &Member, what: &str) -> Result<Box<dyn Read>> {
    let mut f = File::open(path).ctx("open", path)?;
    f.seek(SeekFrom::Start(m.offset)).ctx("read", path)?;
    let raw = BufReader::new(f.take(m.size));
    if ![".tar", ".tar.gz", ".tar.xz", ".tar.zst"]
        .iter()
        .any(|ext| m.name.ends_with(ext))
    {
        return Err(Error::from(ImageError::Package(format!(
            "{what}: unsupported member compression {}",
            m.name
        ))));
    }
    decoder(&m.name, raw, &format!("{what}: {}", m.name))
}

/// A decompressing reader chosen by `name`'s extension (`.gz`, `.xz`, `.zst`, else plain),
/// shared by .deb members and apt's indexes. Each streams: memory stays flat. xz is checked
/// as it is read (its CRC64 or SHA-256 per block), so a damaged stream fails the read.
pub(crate) fn decoder(name: &str, raw: impl Read + 'static, what: &str) -> Result<Box<dyn Read>> {
    Ok(if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(raw))
    } else if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(raw))
    } else if name.ends_with(".zst") {
        crate::oci::media::Codec::Zstd.decoder(raw).map_err(|e| {
            Error::from(ImageError::Package(format!(
                "{what} is not valid zstd: {e}"
            )))
        })?
    } else {
        Box::new(raw)
    })
}

/// The control files of a package (`control`, `md5sums`, `conffiles`).
pub struct Control {
    pub control: String,
    pub md5sums: Option<String>,
    pub conffiles: Option<String>,
    /// The install-time maintainer scripts the package carries (`preinst`, `postinst`), which
    /// imgbuild does not run.
    pub scripts: Vec<String>,
}

pub fn read_control(path: &Path, what: &str) -> Result<Control> {
    let ms = members(path, what)?;
    let m = ms
        .iter()
        .find(|m| m.name.starts_with("control.tar"))
        .ok_or_else(|| {
            Error::from(ImageError::Package(format!(
                "{what} has no control.tar member"
            )))
        })?;
    let mut archive = tar::Archive::new(tar_reader(path, m, what)?);
    let mut out = Control {
        control: String::new(),
        md5sums: None,
        conffiles: None,
        scripts: Vec::new(),
    };
    let bad = |e: std::io::Error| {
        Error::from(ImageError::Package(format!(
            "{what}: unreadable control.tar: {e}"
        )))
    };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        let mut text = String::new();
        match name.as_str() {
            "/control" | "/md5sums" | "/conffiles" => {
                (&mut entry)
                    .take(8 << 20)
                    .read_to_string(&mut text)
                    .map_err(bad)?;
            }
            // What runs at install; prerm and postrm run at removal, which never comes.
            "/preinst" | "/postinst" => {
                out.scripts.push(name.trim_start_matches('/').to_string());
                continue;
            }
            _ => continue,
        }
        match name.as_str() {
            "/control" => out.control = text,
            "/md5sums" => out.md5sums = Some(text),
            _ => out.conffiles = Some(text),
        }
    }
    if out.control.is_empty() {
        return Err(Error::from(ImageError::Package(format!(
            "{what} has no control file"
        ))));
    }
    Ok(out)
}

/// Unpack the data files into `staging` and return them as layer entries (paths relative to
/// `/`, ownership and modes from the package).
pub fn unpack_data(path: &Path, staging: &Path, what: &str) -> Result<Vec<Entry>> {
    let ms = members(path, what)?;
    let m = ms
        .iter()
        .find(|m| m.name.starts_with("data.tar"))
        .ok_or_else(|| {
            Error::from(ImageError::Package(format!(
                "{what} has no data.tar member"
            )))
        })?;
    let mut archive = tar::Archive::new(tar_reader(path, m, what)?);
    let bad = |e: std::io::Error| {
        Error::from(ImageError::Package(format!(
            "{what}: unreadable data.tar: {e}"
        )))
    };
    let mut out: Vec<Entry> = Vec::new();
    for (i, entry) in archive.entries().map_err(bad)?.enumerate() {
        let mut entry = entry.map_err(bad)?;
        let path_in = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        if path_in == "/" {
            continue;
        }
        let rel = path_in.trim_start_matches('/').to_string();
        let h = entry.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        let kind = h.entry_type();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let e = match kind {
            tar::EntryType::Directory => Entry {
                path: rel,
                source: None,
                kind: EntryKind::Dir,
                mode,
                uid,
                gid,
            },
            tar::EntryType::Symlink => Entry {
                path: rel,
                source: None,
                kind: EntryKind::Symlink {
                    target: link.unwrap_or_default(),
                },
                mode: 0o777,
                uid,
                gid,
            },
            tar::EntryType::Link => {
                // A hard link: the same content as its target, stored as its own file.
                let target = normalize(&link.unwrap_or_default());
                let t = target.trim_start_matches('/');
                let Some(src) = out.iter().find(|o| o.path == t).cloned() else {
                    return Err(Error::from(ImageError::Package(format!(
                        "{what}: hard link {path_in} to {target}, which comes later or not at all"
                    ))));
                };
                Entry {
                    path: rel,
                    mode,
                    uid,
                    gid,
                    ..src
                }
            }
            t if t.is_file() => {
                let file = staging.join(format!("{i:06}"));
                let mut w = File::create(&file).ctx("create", &file)?;
                let size = std::io::copy(&mut entry, &mut w).map_err(bad)?;
                Entry {
                    path: rel,
                    source: Some(file),
                    kind: EntryKind::File { size },
                    mode,
                    uid,
                    gid,
                }
            }
            other => {
                return Err(Error::from(ImageError::Package(format!(
                    "{what}: {path_in} is a {other:?}, which a runtime image layer does not carry"
                ))));
            }
        };
        out.push(e);
    }
    Ok(out)
}

/// Where staged files of one package go.
pub(crate) fn staging_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).ctx("create", &dir)?;
    Ok(dir)
}

/// `.deb` files for tests, made as dpkg-deb lays them out: `debian-binary`, a gzip
/// `control.tar.gz`, an xz `data.tar.xz`.
#[cfg(test)]
pub(crate) mod testdeb {
    use std::io::Write;

    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *bytes).expect("tar entry");
        }
        b.into_inner().expect("tar")
    }

    /// The xz stream of `bytes`, with a CRC64 per block as xz makes by default.
    pub(crate) fn xz(bytes: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(bytes).expect("xz");
        e.finish().expect("xz")
    }

    fn ar_member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            100644,
            data.len()
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }

    /// A package `name` whose data files are `files` (paths as dpkg-deb writes them, `./usr/…`).
    pub(crate) fn deb(name: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
        let control = format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: test\n"
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar(&[("./control", control.as_bytes())]))
            .expect("gzip");
        let control_tar = gz.finish().expect("gzip");
        let mut out = b"!<arch>\n".to_vec();
        ar_member(&mut out, "debian-binary", b"2.0\n");
        ar_member(&mut out, "control.tar.gz", &control_tar);
        ar_member(&mut out, "data.tar.xz", &xz(&tar(files)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xz_data_is_unpacked_and_a_damaged_stream_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = b"the library's bytes".repeat(1000);
        let bytes = testdeb::deb(
            "libx",
            &[("./usr/lib/libx.so.1", &body), ("./etc/x.conf", b"x = 1\n")],
        );
        let good = dir.path().join("good.deb");
        std::fs::write(&good, &bytes).expect("write");
        let control = read_control(&good, "libx.deb").expect("control");
        assert!(control.control.starts_with("Package: libx\n"));
        let staged = staging_dir(dir.path(), "good").expect("staging");
        let files = unpack_data(&good, &staged, "libx.deb").expect("unpack");
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["usr/lib/libx.so.1", "etc/x.conf"]);
        let src = files[0].source.as_ref().expect("a staged file");
        assert_eq!(std::fs::read(src).expect("read"), body);

        // One byte of the xz stream's compressed data changed: the check fails the read, and
        // the error names the package.
        let at = bytes.len() - 100;
        let mut bad = bytes.clone();
        bad[at] ^= 0x55;
        let damaged = dir.path().join("bad.deb");
        std::fs::write(&damaged, &bad).expect("write");
        let staged = staging_dir(dir.path(), "bad").expect("staging");
        let err = unpack_data(&damaged, &staged, "libx_1.0_amd64.deb")
            .expect_err("a damaged xz stream unpacked")
            .to_string();
        assert!(err.contains("libx_1.0_amd64.deb"), "{err}");
        assert!(err.contains("unreadable data.tar"), "{err}");
    }
}
