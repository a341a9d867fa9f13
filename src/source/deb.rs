//! `deb:SUITE`: a base made of nothing but Debian packages. The source itself is one small
//! skeleton layer — what a process expects of a root file system and no package gives without
//! its maintainer scripts: the merged-/usr links, `/etc/passwd` and `/etc/group` with root and
//! nobody, `/etc/nsswitch.conf`, `/etc/ld.so.conf`, `/tmp`, and the suite's os-release. The packages (the C
//! library, what the release links, what was asked for) are resolved, verified and pinned by the
//! build's package stage ([`crate::apt::debian`]) on top of it.
//!
//! The layer's bytes depend on the suite and the architecture alone (every mtime is 0, every
//! owner root): the same base for every project and every build, so it is shared in caches and
//! registries like any pulled base.

use std::path::Path;

use crate::apt::debian::Suite;
use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::layer::{Codec, TarOptions};
use crate::oci::platform::Platform;
use crate::oci::{Image, LayerKind};
use crate::release::{Entry, EntryKind};

/// The label a `deb:` base's config carries, naming it (`deb:bookworm`).
pub const BASE_LABEL: &str = "dev.imgbuild.base";

/// The PATH of a `deb:` base (Debian's default for root).
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Debian's architecture name for an OCI platform, where a `deb:` base is made for it.
pub(crate) fn debian_arch(p: &Platform) -> Result<&'static str> {
    match p.architecture.as_str() {
        "amd64" => Ok("amd64"),
        "arm64" => Ok("arm64"),
        other => Err(Error::Usage(format!(
            "a deb: base is made for linux/amd64 and linux/arm64, not {other}"
        ))),
    }
}

/// The skeleton's files as (path, mode, contents); directories and links are in [`entries`].
fn files(suite: Suite) -> Vec<(&'static str, u32, String)> {
    let (n, v) = (suite.name(), suite.version());
    let os_release = format!(
        "PRETTY_NAME=\"Debian GNU/Linux {v} ({n})\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"{v}\"\nVERSION=\"{v} ({n})\"\nVERSION_CODENAME={n}\nID=debian\nHOME_URL=\"https://www.debian.org/\"\nSUPPORT_URL=\"https://www.debian.org/support\"\nBUG_REPORT_URL=\"https://bugs.debian.org/\"\n"
    );
    vec![
        (
            "etc/group",
            0o644,
            "root:x:0:\nnogroup:x:65534:\n".to_string(),
        ),
        // libc-bin's: the multiarch directories libc6 names in ld.so.conf.d are the ones
        // Debian's ld.so searches by default (it needs no ld.so.cache).
        (
            "etc/ld.so.conf",
            0o644,
            "include /etc/ld.so.conf.d/*.conf\n".to_string(),
        ),
        (
            "etc/nsswitch.conf",
            0o644,
            "passwd:         files\ngroup:          files\nshadow:         files\nhosts:          files dns\nnetworks:       files\nprotocols:      files\nservices:       files\nethers:         files\nrpc:            files\n".to_string(),
        ),
        (
            "etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n".to_string(),
        ),
        ("usr/lib/os-release", 0o644, os_release),
    ]
}

/// The skeleton layer's entries, in tar order, its files staged in `dir`.
fn entries(suite: Suite, arch: &str, dir: &Path) -> Result<Vec<Entry>> {
    let entry = |path: &str, kind: EntryKind, mode: u32| Entry {
        path: path.to_string(),
        source: None,
        kind,
        mode,
        uid: 0,
        gid: 0,
    };
    let link = |path: &str, target: &str| {
        entry(
            path,
            EntryKind::Symlink {
                target: target.into(),
            },
            0o777,
        )
    };
    let mut out = Vec::new();
    let mut dirs = vec![
        ("etc", 0o755),
        ("root", 0o700),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/lib", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
    ];
    let mut links = vec![
        ("bin", "usr/bin"),
        ("etc/os-release", "../usr/lib/os-release"),
        ("lib", "usr/lib"),
        ("sbin", "usr/sbin"),
    ];
    // The x86-64 loader's path is /lib64/ld-linux-x86-64.so.2; arm64's is under /lib.
    if arch == "amd64" {
        dirs.push(("usr/lib64", 0o755));
        links.push(("lib64", "usr/lib64"));
    }
    out.extend(dirs.into_iter().map(|(p, m)| entry(p, EntryKind::Dir, m)));
    out.extend(links.into_iter().map(|(p, t)| link(p, t)));
    for (path, mode, text) in files(suite) {
        let src = dir.join(path.replace('/', "%"));
        std::fs::write(&src, text.as_bytes()).ctx("write", &src)?;
        out.push(Entry {
            source: Some(src),
            ..entry(
                path,
                EntryKind::File {
                    size: text.len() as u64,
                },
                mode,
            )
        });
    }
    out.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    Ok(out)
}

/// The `deb:SUITE` base for `platform`: the skeleton layer (written into the cache) and a
/// config with the platform, PATH and the label naming it; no shell, no entrypoint.
pub(crate) fn image(suite: Suite, platform: &Platform, cache: &Cache) -> Result<Image> {
    let arch = debian_arch(platform)?;
    let staging = crate::interrupt::guarded(|| {
        tempfile::Builder::new()
            .prefix(&format!("{}deb-base-", crate::interrupt::marker()))
            .tempdir_in(cache.root().join("tmp"))
    })
    .ctx("create staging directory in", cache.root())?;
    let entries = entries(suite, arch, staging.path())?;
    let opts = TarOptions {
        mtime: 0,
        level: 6,
        codec: Codec::Gzip,
    };
    let blob = crate::layer::write_layer(&entries, opts, cache)?;
    let name = format!("deb:{}", suite.name());
    let mut config = serde_json::json!({
        "architecture": platform.architecture,
        "os": "linux",
        "config": {"Env": [PATH], "Labels": {BASE_LABEL: name}},
        "rootfs": {"type": "layers", "diff_ids": [blob.diff_id.to_string()]},
        "history": [{
            "created": "1970-01-01T00:00:00Z",
            "created_by": format!("{name}: skeleton (merged /usr, passwd, group, nsswitch.conf, os-release, /tmp)"),
        }],
    });
    if let Some(v) = &platform.variant {
        config["variant"] = serde_json::json!(v);
    }
    super::image_of(&config, vec![blob.layer(LayerKind::Base, cache)], &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_entries(image: &Image) -> Vec<(String, u32, u64, u64, u64, Vec<u8>)> {
        let crate::oci::BlobSource::File(at) = &image.layers[0].blob.source else {
            panic!("not local")
        };
        let gz = std::fs::File::open(&at.path).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
        tar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                let target = h
                    .link_name()
                    .unwrap()
                    .map(|t| t.to_string_lossy().into_owned().into_bytes());
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    target.unwrap_or(body),
                )
            })
            .collect()
    }

    #[test]
    fn skeleton_is_stable_and_has_what_a_process_expects() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let a = image(Suite::Bookworm, &amd64, &cache).unwrap();
        // Byte-identical every time (another cache: nothing reused).
        let other = Cache::open(dir.path().join("other")).unwrap();
        let b = image(Suite::Bookworm, &amd64, &other).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.layers[0].blob.digest, b.layers[0].blob.digest);
        assert_eq!(a.origin.name, "deb:bookworm");
        assert_eq!(a.config.architecture().to_string(), "amd64");
        let cfg = a.config.config().clone().unwrap();
        assert_eq!(cfg.env().clone().unwrap(), [PATH]);
        assert!(cfg.entrypoint().is_none() && cfg.cmd().is_none());
        assert_eq!(cfg.labels().clone().unwrap()[BASE_LABEL], "deb:bookworm");

        let got = tar_entries(&a);
        let find = |p: &str| got.iter().find(|e| e.0.trim_end_matches('/') == p);
        for e in &got {
            assert_eq!((e.2, e.3, e.4), (0, 0, 0), "{}: mtime and owner", e.0);
        }
        assert_eq!(find("tmp").unwrap().1, 0o1777);
        assert_eq!(find("root").unwrap().1, 0o700);
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            assert_eq!(find(link).unwrap().5, target.as_bytes(), "{link}");
        }
        let text = |p: &str| String::from_utf8(find(p).unwrap().5.clone()).unwrap();
        assert_eq!(
            text("etc/passwd"),
            "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(text("etc/group"), "root:x:0:\nnogroup:x:65534:\n");
        assert!(text("etc/nsswitch.conf").contains("hosts:          files dns"));
        let os = text("usr/lib/os-release");
        assert!(os.contains("VERSION_ID=\"12\"") && os.contains("VERSION_CODENAME=bookworm"));
        // No program at all: no file is executable.
        assert!(
            got.iter()
                .filter(|e| [
                    "etc/passwd",
                    "etc/group",
                    "usr/lib/os-release",
                    "etc/nsswitch.conf",
                    "etc/ld.so.conf"
                ]
                .contains(&e.0.as_str()))
                .all(|e| e.1 == 0o644)
        );
        // And nothing else: 9 directories, 5 links, 5 files.
        assert_eq!(
            got.len(),
            19,
            "{:?}",
            got.iter().map(|e| &e.0).collect::<Vec<_>>()
        );

        // arm64: no lib64; trixie: its own os-release; another layer.
        let arm = image(
            Suite::Bookworm,
            &Platform::parse("linux/arm64").unwrap(),
            &cache,
        )
        .unwrap();
        assert!(tar_entries(&arm).iter().all(|e| !e.0.starts_with("lib64")));
        assert_eq!(arm.config.architecture().to_string(), "arm64");
        let trixie = image(Suite::Trixie, &amd64, &cache).unwrap();
        assert_ne!(trixie.layers[0].blob.digest, a.layers[0].blob.digest);
        let err = image(
            Suite::Bookworm,
            &Platform::parse("linux/s390x").unwrap(),
            &cache,
        );
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("linux/amd64 and linux/arm64")
        );
    }
}
