//! Release inspection: find a `mix release` directory, read what it is (name, version, ERTS,
//! applications), and plan the image layers from it, split by how often each part changes.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};

/// uid of `nobody`, as `COPY --chown=nobody:root` in Phoenix's Dockerfile gives.
pub const RUNTIME_UID: u64 = 65534;
pub const RUNTIME_GID: u64 = 0;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppVersion {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug)]
pub struct Release {
    pub root: PathBuf,
    pub name: String,
    pub version: String,
    /// ERTS version from `releases/start_erl.data`.
    pub erts_version: String,
    /// Whether the release ships its own ERTS (`include_erts: true`, the default).
    pub includes_erts: bool,
    /// Applications listed in `releases/<vsn>/<name>.rel`.
    pub applications: Vec<AppVersion>,
    /// Whether Phoenix's `bin/server` overlay is present.
    pub has_server: bool,
}

impl Release {
    /// A release with a name and version and nothing else, for tests of what is built on it.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, version: &str) -> Release {
        Release {
            root: PathBuf::from("/nonexistent"),
            name: name.into(),
            version: version.into(),
            erts_version: "0".into(),
            includes_erts: true,
            applications: vec![],
            has_server: false,
        }
    }
}

impl Release {
    /// A release as an image holds it (for `rebase`): `texts` has the files under `root` in
    /// the image (`releases/start_erl.data`, `releases/VSN/NAME.rel`); `exists` says whether
    /// a path is in the image.
    pub(crate) fn from_image(
        root: &str,
        texts: &std::collections::BTreeMap<String, String>,
        exists: &dyn Fn(&str) -> bool,
    ) -> Result<Release> {
        let root = root.trim_end_matches('/');
        let not_release = |what: &str| {
            Error::Input(format!(
                "the image's layers hold no mix release under {root}: {what}; rebase takes images that imgbuild built"
            ))
        };
        let data = texts
            .get(&format!("{root}/releases/start_erl.data"))
            .ok_or_else(|| not_release("releases/start_erl.data is missing"))?;
        let mut words = data.split_whitespace();
        let (Some(erts_version), Some(version)) = (words.next(), words.next()) else {
            return Err(not_release("releases/start_erl.data is malformed"));
        };
        let prefix = format!("{root}/releases/{version}/");
        let (rel_path, rel_text) = texts
            .iter()
            .find(|(p, _)| {
                p.strip_prefix(&prefix)
                    .is_some_and(|n| !n.contains('/') && n.ends_with(".rel"))
            })
            .ok_or_else(|| not_release(&format!("releases/{version}/ holds no <name>.rel")))?;
        let name = rel_path[prefix.len()..]
            .trim_end_matches(".rel")
            .to_string();
        let applications = parse_rel_file(rel_text)
            .map_err(|why| Error::Input(format!("cannot read {rel_path} in the image: {why}")))?;
        Ok(Release {
            root: PathBuf::from(root),
            name,
            version: version.to_string(),
            erts_version: erts_version.to_string(),
            includes_erts: exists(&format!("{root}/erts-{erts_version}")),
            applications,
            has_server: exists(&format!("{root}/bin/server")),
        })
    }
}

/// The release directory: the one given, else the single one under `./_build/prod/rel/`.
pub fn locate(given: Option<&Path>, cwd: &Path) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    let rel = cwd.join("_build").join("prod").join("rel");
    let found: Vec<PathBuf> = match fs::read_dir(&rel) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    match found.len() {
        1 => Ok(found.into_iter().next().unwrap_or_default()),
        0 => Err(Error::Usage(format!(
            "no release found under {}: run `MIX_ENV=prod mix release` first, or pass the release directory as an argument",
            rel.display()
        ))),
        _ => {
            let mut names: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
            names.sort();
            Err(Error::Usage(format!(
                "several releases found ({}): pass the one to build as an argument",
                names.join(", ")
            )))
        }
    }
}

impl Release {
    pub fn inspect(dir: &Path) -> Result<Release> {
        let meta = fs::metadata(dir).map_err(|e| {
            Error::Input(format!(
                "release directory {} cannot be read: {e}; pass the path of a `mix release` output such as _build/prod/rel/my_app",
                dir.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(Error::Input(format!(
                "release path {} is not a directory",
                dir.display()
            )));
        }
        let root = fs::canonicalize(dir).ctx("resolve", dir)?;
        let not_release = |what: &str| {
            Error::Input(format!(
                "{} is not a mix release: {what}; build one with `MIX_ENV=prod mix release` and pass _build/prod/rel/<name>",
                root.display()
            ))
        };
        let start_erl = root.join("releases").join("start_erl.data");
        let data = fs::read_to_string(&start_erl)
            .map_err(|_| not_release("releases/start_erl.data is missing"))?;
        let mut words = data.split_whitespace();
        let (erts_version, version) = match (words.next(), words.next()) {
            (Some(e), Some(v)) => (e.to_string(), v.to_string()),
            _ => {
                return Err(not_release(
                    "releases/start_erl.data does not hold \"<erts_vsn> <release_vsn>\"",
                ));
            }
        };
        let rel_dir = root.join("releases").join(&version);
        let rel_file = fs::read_dir(&rel_dir)
            .map_err(|_| not_release(&format!("releases/{version}/ is missing")))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "rel"))
            .ok_or_else(|| not_release(&format!("releases/{version}/ holds no <name>.rel file")))?;
        let name = rel_file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let rel_text = fs::read_to_string(&rel_file).ctx("read", &rel_file)?;
        let applications = parse_rel_file(&rel_text)
            .map_err(|why| Error::Input(format!("cannot read {}: {why}", rel_file.display())))?;
        if !root.join("bin").join(&name).is_file() {
            return Err(not_release(&format!("bin/{name} is missing")));
        }
        let includes_erts = root.join(format!("erts-{erts_version}")).is_dir();
        let has_server = root.join("bin").join("server").is_file();
        Ok(Release {
            root,
            name,
            version,
            erts_version,
            includes_erts,
            applications,
            has_server,
        })
    }
}

/// Parse `{release, {Name, Vsn}, {erts, Vsn}, [{App, Vsn[, Type[, Included]]}, ...]}.`
pub fn parse_rel_file(text: &str) -> std::result::Result<Vec<AppVersion>, String> {
    let term = erl_term::parse(text)?;
    let items = match &term {
        erl_term::Term::Tuple(items) if items.len() == 4 && items[0].atom() == Some("release") => {
            items
        }
        _ => return Err("expected {release, {Name, Vsn}, {erts, Vsn}, [Apps]}".into()),
    };
    let erl_term::Term::List(apps) = &items[3] else {
        return Err("the fourth element is not a list of applications".into());
    };
    apps.iter()
        .map(|app| match app {
            erl_term::Term::Tuple(t) if (2..=4).contains(&t.len()) => {
                match (t[0].atom(), t[1].string()) {
                    (Some(name), Some(vsn)) => Ok(AppVersion {
                        name: name.to_string(),
                        version: vsn.to_string(),
                    }),
                    _ => Err("an application entry is not {Name, \"Vsn\", ...}".to_string()),
                }
            }
            _ => Err("an application entry is not a tuple".to_string()),
        })
        .collect()
}

/// Just enough of Erlang's term syntax for `.rel` and `.app` files: atoms, strings, numbers,
/// tuples and lists. Hand-written because no maintained Rust crate parses Erlang's text terms.
pub mod mix_lock;
pub mod otp;
pub mod phoenix;

pub mod erl_term {
    #[derive(Debug, PartialEq)]
    pub enum Term {
        Atom(String),
        Str(String),
        Num(String),
        Tuple(Vec<Term>),
        List(Vec<Term>),
    }

    impl Term {
        pub(crate) fn atom(&self) -> Option<&str> {
            if let Term::Atom(a) = self {
                Some(a)
            } else {
                None
            }
        }
        pub(crate) fn string(&self) -> Option<&str> {
            if let Term::Str(s) = self {
                Some(s)
            } else {
                None
            }
        }
    }

    /// Parse the first term of `text`, which must end with a `.`.
    pub(crate) fn parse(text: &str) -> Result<Term, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
            depth: 0,
        };
        let t = p.term()?;
        p.skip_ws();
        if p.peek() != Some(b'.') {
            return Err("expected '.' after the term".into());
        }
        Ok(t)
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
        depth: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }

        fn skip_ws(&mut self) {
            while let Some(c) = self.peek() {
                if c == b'%' {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                } else if c.is_ascii_whitespace() {
                    self.i += 1;
                } else {
                    break;
                }
            }
        }

        fn term(&mut self) -> Result<Term, String> {
            self.skip_ws();
            self.depth += 1;
            if self.depth > 64 {
                return Err("terms nested too deeply".into());
            }
            let t = match self.peek() {
                Some(b'{') => Term::Tuple(self.seq(b'}')?),
                Some(b'[') => Term::List(self.seq(b']')?),
                Some(b'"') => Term::Str(self.quoted(b'"')?),
                Some(b'\'') => Term::Atom(self.quoted(b'\'')?),
                Some(c) if c.is_ascii_lowercase() => Term::Atom(
                    self.take_while(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'@'),
                ),
                Some(c) if c.is_ascii_digit() || c == b'-' => Term::Num(self.take_while(|c| {
                    c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'#'
                })),
                Some(c) => {
                    return Err(format!(
                        "unexpected character {:?} at byte {}",
                        c as char, self.i
                    ));
                }
                None => return Err("unexpected end of input".into()),
            };
            self.depth -= 1;
            Ok(t)
        }

        fn seq(&mut self, close: u8) -> Result<Vec<Term>, String> {
            self.i += 1;
            let mut items = Vec::new();
            self.skip_ws();
            if self.peek() == Some(close) {
                self.i += 1;
                return Ok(items);
            }
            loop {
                items.push(self.term()?);
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(c) if c == close => {
                        self.i += 1;
                        return Ok(items);
                    }
                    _ => {
                        return Err(format!(
                            "expected ',' or '{}' at byte {}",
                            close as char, self.i
                        ));
                    }
                }
            }
        }

        fn quoted(&mut self, q: u8) -> Result<String, String> {
            self.i += 1;
            let mut out = Vec::new();
            loop {
                match self.peek() {
                    None => return Err("unterminated string".into()),
                    Some(c) if c == q => {
                        self.i += 1;
                        return String::from_utf8(out)
                            .map_err(|_| "string is not UTF-8".to_string());
                    }
                    Some(b'\\') => {
                        self.i += 1;
                        if let Some(c) = self.peek() {
                            out.push(c);
                            self.i += 1;
                        }
                    }
                    Some(c) => {
                        out.push(c);
                        self.i += 1;
                    }
                }
            }
        }

        fn take_while(&mut self, f: impl Fn(u8) -> bool) -> String {
            let start = self.i;
            while self.peek().is_some_and(&f) {
                self.i += 1;
            }
            String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
        }
    }
}

pub use crate::oci::LayerKind;

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
pub(crate) fn plan_layers(
    release: &Release,
    opts: &PlanOptions,
) -> Result<(Vec<LayerPlan>, Warnings)> {
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
    use super::*;

    const REL: &str = r#"%% coding: utf-8
{release,{"hello","0.1.0"},
         {erts,"13.1.5"},
         [{kernel,"8.5.3",permanent},
          {stdlib,"4.2"},
          {'my-app',"1.0",load,[x]},
          {iex,"1.14.0",none}]}.
"#;

    #[test]
    fn parses_rel_file() {
        let apps = parse_rel_file(REL).unwrap();
        assert_eq!(apps.len(), 4);
        assert_eq!(
            apps[0],
            AppVersion {
                name: "kernel".into(),
                version: "8.5.3".into()
            }
        );
        assert_eq!(apps[2].name, "my-app");
        assert!(parse_rel_file("{release, x}.").is_err());
        assert!(parse_rel_file("{release,").is_err());
        assert!(parse_rel_file(&"[".repeat(10_000)).is_err());
    }

    fn fake_release(dir: &Path) {
        let mk = |p: &str, content: &str| {
            let p = dir.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        };
        mk("releases/start_erl.data", "13.1.5 0.1.0");
        mk("releases/0.1.0/hello.rel", REL);
        mk("releases/COOKIE", "secret");
        mk("bin/hello", "#!/bin/sh\n");
        mk("bin/server", "#!/bin/sh\n");
        mk("erts-13.1.5/bin/beam.smp", "ELF");
        mk("lib/kernel-8.5.3/ebin/kernel.app", "{}");
        mk("lib/stdlib-4.2/ebin/stdlib.app", "{}");
        mk("lib/hello-0.1.0/ebin/hello.app", "{}");
        fs::set_permissions(dir.join("bin/hello"), fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink("hello", dir.join("bin/link")).unwrap();
    }

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
    fn locate_finds_the_single_release() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            locate(None, dir.path())
                .unwrap_err()
                .to_string()
                .contains("no release found")
        );
        fs::create_dir_all(dir.path().join("_build/prod/rel/a")).unwrap();
        assert!(locate(None, dir.path()).unwrap().ends_with("a"));
        fs::create_dir_all(dir.path().join("_build/prod/rel/b")).unwrap();
        assert!(
            locate(None, dir.path())
                .unwrap_err()
                .to_string()
                .contains("several releases")
        );
    }
}

#[cfg(test)]
mod mode_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
