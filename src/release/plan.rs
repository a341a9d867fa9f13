//! Planning the image layers of a release, split by how often each part changes: ERTS, the
//! dependencies, the own applications' static assets, their code, and the rest of the release.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{RUNTIME_GID, RUNTIME_UID, Release};
use crate::error::{Error, IoContext, Result};
use crate::oci::LayerKind;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { size: u64 },
    Symlink { target: String },
}

/// One tar entry of a planned layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the image, relative to `/`, without a trailing slash.
    pub path: String,
    /// Where the content comes from (files only).
    pub source: Option<PathBuf>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

#[derive(Clone, Debug)]
pub struct LayerPlan {
    pub kind: LayerKind,
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// Absolute directory the release is copied to (`/app`).
    pub workdir: String,
    /// Applications besides the release's namesake that belong in the app layer (umbrella apps).
    pub own_apps: Vec<String>,
    /// Leave `releases/COOKIE` out of the image.
    pub drop_cookie: bool,
}

/// Problems worth telling the user that do not stop the build.
pub type Warnings = Vec<String>;

/// Split the release into layers. Entries in each layer are sorted with parents before children.
pub fn plan_layers(release: &Release, opts: &PlanOptions) -> Result<(Vec<LayerPlan>, Warnings)> {
    let workdir = opts.workdir.trim_matches('/');
    if workdir.is_empty()
        || workdir
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::Usage(format!(
            "invalid working directory {:?}: give an absolute path such as /app",
            opts.workdir
        )));
    }
    // Parents of the working directory belong to root, the directory itself to the runtime user,
    // as `WORKDIR /app` + `RUN chown nobody /app` leave them.
    let mut prefix = Vec::new();
    let components: Vec<&str> = workdir.split('/').collect();
    for i in 1..=components.len() {
        let own = i == components.len();
        prefix.push(Entry {
            path: components[..i].join("/"),
            source: None,
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: if own { RUNTIME_UID } else { 0 },
            gid: 0,
        });
    }
    let mut own: Vec<&str> = vec![release.name.as_str()];
    own.extend(opts.own_apps.iter().map(String::as_str));

    let mut plans: Vec<LayerPlan> = [
        LayerKind::Erts,
        LayerKind::Deps,
        LayerKind::Assets,
        LayerKind::App,
        LayerKind::Release,
    ]
    .into_iter()
    .map(|kind| LayerPlan {
        kind,
        entries: prefix.clone(),
    })
    .collect();
    let mut warnings = Vec::new();
    let index = |k: LayerKind| match k {
        LayerKind::Erts => 0,
        LayerKind::Deps => 1,
        LayerKind::Assets => 2,
        LayerKind::App => 3,
        _ => 4,
    };

    for (name, path) in sorted_children(&release.root)? {
        let image_path = format!("{workdir}/{name}");
        if name == "lib" && fs::symlink_metadata(&path).ctx("read", &path)?.is_dir() {
            let lib_dir = entry_for(&path, &image_path, &mut warnings)?;
            for (app_dir, app_path) in sorted_children(&path)? {
                let app = app_dir
                    .rsplit_once('-')
                    .map_or(app_dir.as_str(), |(n, _)| n);
                let kind = if own.contains(&app) {
                    LayerKind::App
                } else {
                    LayerKind::Deps
                };
                let plan = &mut plans[index(kind)];
                if !plan.entries.iter().any(|e| e.path == lib_dir.path) {
                    plan.entries.push(lib_dir.clone());
                }
                walk(
                    &app_path,
                    &format!("{image_path}/{app_dir}"),
                    &mut plan.entries,
                    &mut warnings,
                )?;
                if kind == LayerKind::App {
                    let app_root = format!("{image_path}/{app_dir}");
                    // The assets layer lies below the app layer: borrow both at once.
                    let (below, from_app) = plans.split_at_mut(index(LayerKind::App));
                    split_assets(
                        &mut from_app[0].entries,
                        &mut below[index(LayerKind::Assets)].entries,
                        &app_root,
                    );
                }
            }
        } else {
            let kind = if name.starts_with("erts-") {
                LayerKind::Erts
            } else {
                LayerKind::Release
            };
            walk(
                &path,
                &image_path,
                &mut plans[index(kind)].entries,
                &mut warnings,
            )?;
        }
    }
    let cookie = format!("{workdir}/releases/COOKIE");
    for plan in &mut plans {
        if opts.drop_cookie {
            plan.entries.retain(|e| e.path != cookie);
        }
        // The distribution cookie is a secret: readable by the runtime user alone.
        for e in plan.entries.iter_mut().filter(|e| e.path == cookie) {
            e.mode = 0o400;
        }
    }
    // A layer holding only the working directory adds nothing.
    plans.retain(|p| p.entries.len() > prefix.len());
    Ok((plans, warnings))
}

/// Move an own application's `priv/static` subtree (at `app_root`/priv/static) from its
/// code layer's entries to the assets layer's, with the directories above it, so that a code
/// change rewrites kilobytes and an asset change leaves the code layer alone.
fn split_assets(app: &mut Vec<Entry>, assets: &mut Vec<Entry>, app_root: &str) {
    let static_dir = format!("{app_root}/priv/static");
    let inside = |e: &Entry| e.path == static_dir || e.path.starts_with(&format!("{static_dir}/"));
    if !app.iter().any(|e| inside(e) && e.kind != EntryKind::Dir) {
        return;
    }
    // The directories above priv/static, as the code layer has them (lib, the app, priv).
    let lib = app_root.rsplit_once('/').map_or("", |(l, _)| l);
    for parent in [
        lib.to_string(),
        app_root.to_string(),
        format!("{app_root}/priv"),
    ] {
        if !assets.iter().any(|e| e.path == parent)
            && let Some(e) = app.iter().find(|e| e.path == parent)
        {
            assets.push(e.clone());
        }
    }
    assets.extend(app.iter().filter(|e| inside(e)).cloned());
    app.retain(|e| !inside(e));
}

/// Children of `dir` sorted by name bytes, so the plan does not depend on directory order.
fn sorted_children(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)
        .map_err(|e| Error::Input(format!("cannot read directory {}: {e}", dir.display())))?
    {
        let entry = entry.ctx("read directory", dir)?;
        let name = entry.file_name().into_string().map_err(|raw| {
            Error::Input(format!(
                "file name {:?} in {} is not UTF-8: rename it",
                raw,
                dir.display()
            ))
        })?;
        out.push((name, entry.path()));
    }
    out.sort();
    Ok(out)
}

fn entry_for(path: &Path, image_path: &str, warnings: &mut Warnings) -> Result<Entry> {
    let meta = fs::symlink_metadata(path)
        .map_err(|e| Error::Input(format!("cannot read {}: {e}", path.display())))?;
    let ft = meta.file_type();
    let raw_mode = meta.permissions().mode();
    if raw_mode & 0o7000 != 0 && !ft.is_symlink() {
        warnings.push(format!(
            "{}: setuid/setgid/sticky bits dropped (mode {:o})",
            path.display(),
            raw_mode & 0o7777
        ));
    }
    // Group and world write bits are cleared, and so are setuid/setgid/sticky.
    let mode = raw_mode & 0o755;
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File { size: meta.len() }
    } else if ft.is_symlink() {
        let target = fs::read_link(path).ctx("read symlink", path)?;
        let target = target.into_os_string().into_string().map_err(|raw| {
            Error::Input(format!(
                "symlink {} points at a non-UTF-8 path {raw:?}",
                path.display()
            ))
        })?;
        // A link that only leads back to itself cannot be opened in the container either:
        // a broken release, named here rather than shipped.
        if let Err(e) = fs::metadata(path)
            && e.raw_os_error() == Some(40)
        // ELOOP
        {
            return Err(Error::Input(format!(
                "symlink {} -> {target} is a symlink loop: fix or remove it in the release",
                path.display()
            )));
        }
        EntryKind::Symlink { target }
    } else {
        let what = if ft.is_socket() {
            "a socket"
        } else if ft.is_fifo() {
            "a fifo"
        } else if ft.is_block_device() || ft.is_char_device() {
            "a device file"
        } else {
            "a special file"
        };
        return Err(Error::Input(format!(
            "{} is {what}, which cannot go into an image: remove it from the release (or from rel/overlays)",
            path.display()
        )));
    };
    let mode = if matches!(kind, EntryKind::Symlink { .. }) {
        0o777
    } else {
        mode
    };
    Ok(Entry {
        path: image_path.to_string(),
        source: matches!(kind, EntryKind::File { .. }).then(|| path.to_path_buf()),
        kind,
        mode,
        uid: RUNTIME_UID,
        gid: RUNTIME_GID,
    })
}

fn walk(
    path: &Path,
    image_path: &str,
    out: &mut Vec<Entry>,
    warnings: &mut Warnings,
) -> Result<()> {
    let entry = entry_for(path, image_path, warnings)?;
    let is_dir = entry.kind == EntryKind::Dir;
    out.push(entry);
    if is_dir {
        for (name, child) in sorted_children(path)? {
            walk(&child, &format!("{image_path}/{name}"), out, warnings)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixture::fake_release;
    use super::*;

    #[test]
    fn inspects_and_plans() {
        let dir = tempfile::tempdir().unwrap();
        fake_release(dir.path());
        let rel = Release::inspect(dir.path()).unwrap();
        assert_eq!(
            (
                rel.name.as_str(),
                rel.version.as_str(),
                rel.erts_version.as_str()
            ),
            ("hello", "0.1.0", "13.1.5")
        );
        assert!(rel.has_server && rel.includes_erts);
        let opts = PlanOptions {
            workdir: "/app".into(),
            ..Default::default()
        };
        let (plans, warnings) = plan_layers(&rel, &opts).unwrap();
        assert!(warnings.is_empty());
        let kinds: Vec<_> = plans.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [
                LayerKind::Erts,
                LayerKind::Deps,
                LayerKind::App,
                LayerKind::Release
            ]
        );
        let paths = |i: usize| {
            plans[i]
                .entries
                .iter()
                .map(|e| e.path.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            paths(2),
            [
                "app",
                "app/lib",
                "app/lib/hello-0.1.0",
                "app/lib/hello-0.1.0/ebin",
                "app/lib/hello-0.1.0/ebin/hello.app"
            ]
        );
        assert!(paths(1).contains(&"app/lib/kernel-8.5.3/ebin/kernel.app"));
        let release = &plans[3].entries;
        let hello = release.iter().find(|e| e.path == "app/bin/hello").unwrap();
        assert_eq!((hello.mode, hello.uid, hello.gid), (0o755, 65534, 0));
        let cookie = release
            .iter()
            .find(|e| e.path == "app/releases/COOKIE")
            .unwrap();
        assert_eq!(cookie.mode, 0o400);
        let link = release.iter().find(|e| e.path == "app/bin/link").unwrap();
        assert_eq!(
            link.kind,
            EntryKind::Symlink {
                target: "hello".into()
            }
        );
        // Parents come before children everywhere, and no path appears twice in a layer.
        for plan in &plans {
            let unique: std::collections::HashSet<_> =
                plan.entries.iter().map(|e| &e.path).collect();
            assert_eq!(
                unique.len(),
                plan.entries.len(),
                "duplicate paths in {:?}",
                plan.kind
            );
            for (i, e) in plan.entries.iter().enumerate() {
                if let Some((parent, _)) = e.path.rsplit_once('/') {
                    assert!(
                        plan.entries[..i].iter().any(|p| p.path == parent),
                        "{} before its parent",
                        e.path
                    );
                }
            }
        }
        let (dropped, _) = plan_layers(
            &rel,
            &PlanOptions {
                drop_cookie: true,
                ..opts
            },
        )
        .unwrap();
        assert!(
            dropped
                .iter()
                .flat_map(|p| &p.entries)
                .all(|e| !e.path.ends_with("COOKIE"))
        );
    }

    #[test]
    fn own_assets_get_a_layer_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        fake_release(dir.path());
        for p in [
            "lib/hello-0.1.0/priv/static/assets/app-1a2b.js",
            "lib/hello-0.1.0/priv/static/cache_manifest.json",
            "lib/hello-0.1.0/priv/repo/migrations/1_init.exs",
            "lib/kernel-8.5.3/priv/static/x.css",
        ] {
            let p = dir.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "x").unwrap();
        }
        let rel = Release::inspect(dir.path()).unwrap();
        let (plans, _) = plan_layers(
            &rel,
            &PlanOptions {
                workdir: "/app".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let kinds: Vec<_> = plans.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [
                LayerKind::Erts,
                LayerKind::Deps,
                LayerKind::Assets,
                LayerKind::App,
                LayerKind::Release
            ]
        );
        let paths = |k: LayerKind| -> Vec<&str> {
            plans
                .iter()
                .find(|p| p.kind == k)
                .unwrap()
                .entries
                .iter()
                .map(|e| e.path.as_str())
                .collect()
        };
        assert_eq!(
            paths(LayerKind::Assets),
            [
                "app",
                "app/lib",
                "app/lib/hello-0.1.0",
                "app/lib/hello-0.1.0/priv",
                "app/lib/hello-0.1.0/priv/static",
                "app/lib/hello-0.1.0/priv/static/assets",
                "app/lib/hello-0.1.0/priv/static/assets/app-1a2b.js",
                "app/lib/hello-0.1.0/priv/static/cache_manifest.json",
            ]
        );
        let app = paths(LayerKind::App);
        assert!(app.contains(&"app/lib/hello-0.1.0/priv/repo/migrations/1_init.exs"));
        assert!(app.contains(&"app/lib/hello-0.1.0/ebin/hello.app"));
        assert!(!app.iter().any(|p| p.contains("priv/static")), "{app:?}");
        // A dependency's assets stay with the dependency.
        assert!(paths(LayerKind::Deps).contains(&"app/lib/kernel-8.5.3/priv/static/x.css"));
    }

    #[test]
    fn refuses_special_files_and_non_releases() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Release::inspect(dir.path())
                .unwrap_err()
                .to_string()
                .contains("is not a mix release")
        );
        fake_release(dir.path());
        let sock = dir.path().join("bin/ctl.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let rel = Release::inspect(dir.path()).unwrap();
        let err = plan_layers(
            &rel,
            &PlanOptions {
                workdir: "/app".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("ctl.sock is a socket"), "{err}");
    }

    #[test]
    fn setuid_setgid_and_group_write_are_dropped_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tool");
        fs::write(&p, "x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o6777)).unwrap();
        let mut warnings = Warnings::new();
        let e = entry_for(&p, "app/bin/tool", &mut warnings).unwrap();
        assert_eq!(e.mode, 0o755);
        assert_eq!((e.uid, e.gid), (RUNTIME_UID, RUNTIME_GID));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("setuid/setgid"), "{warnings:?}");
        // Plain modes pass without a word.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o664)).unwrap();
        let mut warnings = Warnings::new();
        assert_eq!(entry_for(&p, "app/x", &mut warnings).unwrap().mode, 0o644);
        assert!(warnings.is_empty());
    }
}
