//! `--debug`: beside the image, its debug variant, the same image with one more layer that holds
//! Debian's static busybox under `/busybox` (the binary, and a link per applet), with `/busybox`
//! at the end of `PATH`, for `docker exec` and `kubectl exec` into an image without a shell.
//!
//! Why `/busybox` and not `/bin`: nothing of the image is replaced or shadowed (a base with a
//! `/bin/sh` keeps it, and the image's own tools come first on `PATH`), the layer is the same
//! whatever the base is (merged-/usr or not, `/bin` a link or a directory), and it is where
//! distroless's debug images put theirs, so `--entrypoint /busybox/sh` is what users already
//! type. The package comes from a Debian suite through the same verified path as a `deb:`
//! base's (imgbuild's carried keys, `Packages` by hash, the `.deb` by SHA256), pinned in
//! `imgbuild.lock` per architecture; the layer's entries have mtime 0 and root owners, so it is
//! the same bytes for every project (one blob in a registry, whatever image it debugs).

use super::report::{DebugImageReport, LayerRecord};
use super::{BuildRequest, layers};
use crate::apt::debian::DebBase;
use crate::apt::{self, DEBUG_PACKAGE, LockFile};
use crate::blocking;
use crate::context::Context;
use crate::error::{Error, ImageError, IoContext, Result};
use crate::layer::TarOptions;
use crate::oci::Image;
use crate::oci::reference::{Reference, valid_tag};
use crate::release::{Entry, EntryKind, LayerKind, LayerPlan};

/// Where the debug layer puts busybox and its applet links.
pub const DEBUG_DIR: &str = "busybox";

/// Each tag with `-debug` after its tag (`app:1.0` → `app:1.0-debug`, `app` → `app:latest-debug`).
pub fn debug_tags(tags: &[Reference]) -> Result<Vec<Reference>> {
    tags.iter()
        .map(|t| {
            let tag = format!("{}-debug", t.tag_or_latest());
            if !valid_tag(&tag) {
                return Err(Error::Usage(format!(
                    "--debug tags {} as {tag:?}, which is not a valid tag (at most 128 characters of letters, digits, '_', '.', '-'): give a shorter -t",
                    t.canonical()
                )));
            }
            Ok(Reference {
                tag: Some(tag),
                digest: None,
                ..t.clone()
            })
        })
        .collect()
}

/// Where `--debug`'s busybox comes from: a `deb:` base's suite and mirror, else bookworm from
/// `--deb-mirror` (Debian's own archive by default).
pub(crate) fn debug_source(req: &BuildRequest) -> DebBase {
    req.debug.clone().unwrap_or(DebBase {
        suite: crate::apt::debian::Suite::Bookworm,
        mirror: Default::default(),
    })
}

/// The debug variant of `image`: busybox-static for its architecture resolved (or read from the
/// lock), fetched and verified, its binary and applet links in one layer on top. Also the
/// debug pins to save when they were resolved afresh.
pub(super) async fn debug_image(
    req: &BuildRequest,
    image: &Image,
    cx: Context<'_>,
) -> Result<(Image, DebugImageReport, Option<LockFile>)> {
    let Context {
        cache,
        client,
        reporter,
    } = cx;
    let arch = image.config.architecture().to_string();
    let deb = debug_source(req);
    let res = apt::resolve_debug(
        &deb,
        &req.packages.lock_path,
        req.packages.update_lock,
        &arch,
        client.http(),
        client.policy(),
        cache,
    )
    .await?;
    apt::fetch_debs(&res, cache, client.http(), client.policy(), reporter).await?;
    let pin = res
        .lock
        .packages
        .iter()
        .find(|p| p.name == DEBUG_PACKAGE)
        .cloned()
        .ok_or_else(|| {
            Error::from(ImageError::Package(format!(
                "--debug: {DEBUG_PACKAGE} is not among the pins for {arch}: run with --update-lock"
            )))
        })?;
    let new_lock = res.fresh.then(|| LockFile {
        requested: Vec::new(),
        architecture: arch.clone(),
        packages: Vec::new(),
        debug: res.lock.packages.clone(),
        others: Vec::new(),
    });
    let deb_path = cache.blob_path(&crate::oci::digest::parse(&format!(
        "sha256:{}",
        pin.sha256
    ))?);
    let staging = crate::interrupt::guarded(|| {
        tempfile::Builder::new()
            .prefix(&format!("{}debug-", crate::interrupt::marker()))
            .tempdir_in(cache.root().join("tmp"))
    })
    .ctx("create staging directory in", cache.root())?;
    let (dir, what) = (
        staging.path().to_path_buf(),
        format!("{} {} ({arch})", pin.name, pin.version),
    );
    let (binary, size, applets) = blocking(move || {
        let entries = apt::deb::unpack_data(&deb_path, &dir, &what)?;
        let found = entries.iter().find_map(|e| match (&e.kind, &e.source) {
            (EntryKind::File { size }, Some(src))
                if e.path == "bin/busybox" || e.path == "usr/bin/busybox" =>
            {
                Some((src.clone(), *size))
            }
            _ => None,
        });
        let Some((src, size)) = found else {
            return Err(Error::from(ImageError::Package(format!(
                "{what} holds no /bin/busybox"
            ))));
        };
        let bytes = std::fs::read(&src).ctx("read", &src)?;
        let applets = applets(&bytes).ok_or_else(|| {
            Error::from(ImageError::Package(format!(
                "{what}: no applet list found in /bin/busybox (a busybox built without `[` and `[[`?)"
            )))
        })?;
        Ok((src, size, applets))
    })
    .await?;
    let plan = debug_plan(binary, size, &applets);
    // mtime 0 whatever SOURCE_DATE_EPOCH says: the same layer for every project.
    let opts = TarOptions {
        mtime: 0,
        ..super::tar_options(req)
    };
    let made = layers::release_layers(vec![plan], opts, None, None, cx).await?;
    drop(staging);
    let (layer, origin) = made
        .into_iter()
        .next()
        .ok_or_else(|| Error::from(ImageError::Internal("the debug layer was not made".into())))?;
    let record = LayerRecord::of(&layer, Some(origin.as_str()));
    let debug = crate::mutate::debug_variant(
        image,
        layer,
        &format!("/{DEBUG_DIR}"),
        &format!(
            "imgbuild: debug layer: {} {} under /{DEBUG_DIR} ({} applets)",
            pin.name,
            pin.version,
            applets.len()
        ),
        &format!("{} {}", pin.name, pin.version),
    )?;
    reporter.step(&format!(
        "debug image {} ({} {}: /{DEBUG_DIR}/busybox and {} applets, layer {})",
        debug.digest,
        pin.name,
        pin.version,
        applets.len(),
        crate::report::human_size(record.size)
    ));
    let report = DebugImageReport {
        digest: debug.digest.to_string(),
        platform: debug.platform().to_string(),
        layer: record,
        package: pin.name.clone(),
        version: pin.version.clone(),
        sha256: pin.sha256.clone(),
        path: format!("/{DEBUG_DIR}/busybox"),
        applets: applets.len(),
    };
    Ok((debug, report, new_lock))
}

/// The layer: `/busybox` (0755), `/busybox/busybox` (0755) and a relative link per applet, all
/// owned by root.
fn debug_plan(binary: std::path::PathBuf, size: u64, applets: &[String]) -> LayerPlan {
    let entry = |path: String, kind: EntryKind, mode: u32, source| Entry {
        path,
        source,
        kind,
        mode,
        uid: 0,
        gid: 0,
    };
    let mut entries = vec![
        entry(DEBUG_DIR.into(), EntryKind::Dir, 0o755, None),
        entry(
            format!("{DEBUG_DIR}/busybox"),
            EntryKind::File { size },
            0o755,
            Some(binary),
        ),
    ];
    for a in applets.iter().filter(|a| *a != "busybox") {
        entries.push(entry(
            format!("{DEBUG_DIR}/{a}"),
            EntryKind::Symlink {
                target: "busybox".into(),
            },
            0o777,
            None,
        ));
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    LayerPlan {
        kind: LayerKind::Debug,
        entries,
    }
}

/// The applets a busybox binary carries, read from it (so no binary of another architecture
/// is run): busybox keeps their names as one table of NUL-terminated strings in `strcmp` order,
/// which starts with `[` and `[[` when the test applets are built in (Debian's are). `None`
/// when there is no such table, or it is not a sorted list of plain names that has `sh`.
pub(crate) fn applets(binary: &[u8]) -> Option<Vec<String>> {
    const START: &[u8] = b"[\0[[\0";
    let at = binary.windows(START.len()).position(|w| w == START)?;
    let mut names: Vec<String> = Vec::new();
    for name in binary[at..].split(|b| *b == 0) {
        if name.is_empty() {
            break;
        }
        let plain = name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"[_.-".contains(b));
        let name = std::str::from_utf8(name).ok()?;
        if !plain || names.last().is_some_and(|last| last.as_str() >= name) {
            return None;
        }
        names.push(name.to_string());
    }
    names.iter().any(|n| n == "sh").then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_table() {
        let mut bin = b"\x7fELF junk [ not this\0".to_vec();
        bin.extend_from_slice(b"[\0[[\0ash\0ls\0sh\0wget\0\0more");
        assert_eq!(
            applets(&bin).unwrap(),
            ["[", "[[", "ash", "ls", "sh", "wget"]
        );
        // Unsorted, a strange name, no shell, no table: not a list.
        assert!(applets(b"[\0[[\0ls\0ash\0sh\0\0").is_none());
        assert!(applets(b"[\0[[\0a/b\0sh\0\0").is_none());
        assert!(applets(b"[\0[[\0ls\0\0").is_none());
        assert!(applets(b"no table").is_none());
        // This machine's busybox (Debian's busybox-static, when installed) agrees with --list.
        let host = std::path::Path::new("/usr/bin/busybox");
        if let (Ok(bytes), Ok(out)) = (
            std::fs::read(host),
            std::process::Command::new(host).arg("--list").output(),
        ) {
            let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            assert_eq!(applets(&bytes).unwrap(), listed);
        }
    }

    #[test]
    fn layer_entries() {
        let plan = debug_plan(
            "/x/busybox".into(),
            7,
            &["[".into(), "busybox".into(), "ls".into(), "sh".into()],
        );
        let got: Vec<(&str, u32)> = plan
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.mode))
            .collect();
        assert_eq!(
            got,
            [
                ("busybox", 0o755),
                ("busybox/[", 0o777),
                ("busybox/busybox", 0o755),
                ("busybox/ls", 0o777),
                ("busybox/sh", 0o777),
            ]
        );
        assert!(plan.entries.iter().all(|e| e.uid == 0 && e.gid == 0));
        assert_eq!(plan.kind, LayerKind::Debug);
    }

    #[test]
    fn tags_get_debug() {
        let refs: Vec<Reference> = ["app:1.0", "ghcr.io/o/app", "localhost:5000/a/b:x"]
            .iter()
            .map(|r| Reference::parse(r).unwrap())
            .collect();
        let got: Vec<String> = debug_tags(&refs)
            .unwrap()
            .iter()
            .map(Reference::canonical)
            .collect();
        assert_eq!(
            got,
            [
                "docker.io/library/app:1.0-debug",
                "ghcr.io/o/app:latest-debug",
                "localhost:5000/a/b:x-debug"
            ]
        );
        let long = Reference::parse(&format!("app:{}", "t".repeat(125))).unwrap();
        let e = debug_tags(&[long]).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
    }
}
