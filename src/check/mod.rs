//! Refuse images that cannot start: every ELF file of the release is checked against the
//! image it will run in (machine, program interpreter, `DT_NEEDED` libraries resolved the way
//! ld.so would, GNU symbol versions such as `GLIBC_2.34`), and the release's shell scripts
//! against the commands the image has. Problems come with the fix.

use std::io::{BufReader, Read};

use serde::Serialize;

use oci_spec::image::Digest;

use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::fs::elf::{self, ElfInfo};
use crate::fs::{Node, RootFs, normalize};
use crate::oci::digest::HashReader;
use crate::oci::media::{self, LayerType};
use crate::oci::{FileRange, Image};
use crate::release::{EntryKind, LayerPlan};

/// One reason the image would fail at start.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The file in the image that has the need.
    pub file: String,
    /// What it needs.
    pub needs: String,
    /// What is wrong with the image.
    pub missing: String,
    /// How to fix it.
    pub fix: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub elf_files: usize,
    /// The base's glibc release (from its libc.so.6), when it has one.
    pub glibc: Option<String>,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub(crate) fn render(&self) -> String {
        let mut out = format!(
            "the image would fail at start: {} problem{} in {} ELF file{} checked{}",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" },
            self.elf_files,
            if self.elf_files == 1 { "" } else { "s" },
            self.glibc
                .as_ref()
                .map(|g| format!(" (the image has glibc {g})"))
                .unwrap_or_default()
        );
        for p in &self.problems {
            out.push_str(&format!(
                "\n  {}\n    needs:   {}\n    missing: {}\n    fix:     {}",
                p.file, p.needs, p.missing, p.fix
            ));
        }
        out.push_str("\n(pass --no-check to build anyway)");
        out
    }
}

/// The key of a base's summary: the layers it is made of, by media type and digest. A
/// summary is a fact derived from exactly those bytes, so it holds for as long as the digests
/// do, wherever the layers are (another registry, a layout, a tarball).
pub(crate) fn summary_key(base: &Image) -> Digest {
    let mut text = String::from("base-summary-v2\n");
    for l in &base.layers {
        text.push_str(&format!("{} {}\n", l.blob.media_type, l.blob.digest));
    }
    crate::oci::digest::sha256_of(text.as_bytes())
}

/// The base's summary — its file tree with what the check, the SBOM and the package resolver
/// read (kinds, modes, links, ELF facts, the dpkg database, apt sources and keyrings) — when
/// one was made before from the same layers. With it no base layer needs to be read, or
/// downloaded, at all.
pub(crate) fn cached_summary(base: &Image, cache: &Cache) -> Option<(RootFs, Vec<String>)> {
    summary_of(base, &summary_bytes(base, cache)?)
}

/// The stored form of the base's summary in the local cache, to share (`--cache-repo`).
pub(crate) fn summary_bytes(base: &Image, cache: &Cache) -> Option<Vec<u8>> {
    cache.record("trees", &summary_key(base))
}

/// `bytes` read as the summary of `base`: `None` when they are not a summary, or one made
/// from other layers (a damaged, stale or planted entry is not this base's summary).
pub(crate) fn summary_of(base: &Image, bytes: &[u8]) -> Option<(RootFs, Vec<String>)> {
    let record = serde_json::from_slice::<SummaryRecord>(bytes).ok()?;
    (record.layers == layer_digests(base)).then_some((record.fs, record.warnings))
}

/// Keep a summary found elsewhere (already checked with [`summary_of`]) in the local cache.
pub(crate) fn keep_summary(base: &Image, bytes: &[u8], cache: &Cache) {
    let _ = cache.put_record("trees", &summary_key(base), bytes);
}

fn layer_digests(base: &Image) -> Vec<String> {
    base.layers
        .iter()
        .map(|l| l.blob.digest.to_string())
        .collect()
}

/// The base's file system, read from its layers' bytes (`local`, one range per layer)
/// without extracting them, and kept in the cache as the base's summary.
pub(crate) fn base_rootfs(
    base: &Image,
    local: &[FileRange],
    cache: &Cache,
) -> Result<(RootFs, Vec<String>)> {
    let (fs, warnings) = read_base_rootfs(base, local, cache)?;
    let record = SummaryRecord {
        layers: layer_digests(base),
        fs,
        warnings,
    };
    // A summary that cannot be stored is only a slower next build.
    if let Ok(bytes) = serde_json::to_vec(&record) {
        let _ = cache.put_record("trees", &summary_key(base), &bytes);
    }
    Ok((record.fs, record.warnings))
}

/// A base's summary as kept: the layers it was read from (every one verified by its digest
/// as it was read), and what was found.
#[derive(serde::Serialize, serde::Deserialize)]
struct SummaryRecord {
    layers: Vec<String>,
    fs: RootFs,
    warnings: Vec<String>,
}

fn read_base_rootfs(
    base: &Image,
    local: &[FileRange],
    cache: &Cache,
) -> Result<(RootFs, Vec<String>)> {
    let mut fs = RootFs::new();
    let mut warnings = Vec::new();
    for (i, (layer, at)) in base.layers.iter().zip(local).enumerate() {
        let what = format!("base image {} layer {}", base.origin.name, i + 1);
        let LayerType::Tar { codec, .. } = media::layer_type(&layer.blob.media_type) else {
            warnings.push(format!(
                "{what} is {}: its files were not read, so the start-up check and SBOM may miss them",
                layer.blob.media_type
            ));
            continue;
        };
        let path = &at.path;
        // The layer is hashed as it is read: the check must see exactly the bytes that ship,
        // and a cache file damaged on disk is caught here rather than trusted.
        let mut hashed = HashReader::new(at.open()?);
        let applied = {
            let raw = BufReader::with_capacity(1 << 16, &mut hashed);
            codec.decoder(raw).ctx("read layer", path).and_then(|d| {
                let mut tar = BufReader::with_capacity(1 << 16, d);
                fs.apply_layer(&mut tar, &what)
                    .and_then(|()| std::io::copy(&mut tar, &mut std::io::sink()).ctx("read", path))
            })
        };
        std::io::copy(&mut hashed, &mut std::io::sink()).ctx("read layer", path)?;
        let (actual, _) = hashed.finish();
        if actual != layer.blob.digest {
            return Err(if *path == cache.blob_path(&layer.blob.digest) {
                cache.corrupted(&layer.blob.digest, &actual)
            } else {
                Error::DigestMismatch {
                    what: format!("{what} in {}", path.display()),
                    expected: layer.blob.digest.to_string(),
                    actual: actual.to_string(),
                }
            });
        }
        applied?;
    }
    Ok((fs, warnings))
}

/// Put planned entries (release or package files) into the tree, reading ELF headers so that
/// libraries resolve; returns the ELF files among them.
pub(crate) fn add_entries(fs: &mut RootFs, plans: &[LayerPlan]) -> Result<Vec<(String, ElfInfo)>> {
    let mut elves = Vec::new();
    for plan in plans {
        elves.extend(insert_plan(fs, plan, |e, _| read_elf(e))?);
    }
    Ok(elves)
}

/// The ELF facts of a planned file, when it is an ELF file.
fn read_elf(e: &crate::release::Entry) -> Result<Option<ElfInfo>> {
    let Some(src) = &e.source else {
        return Ok(None);
    };
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(src).ctx("read", src)?;
    let n = f.read(&mut head).ctx("read", src)?;
    if !elf::is_elf(&head[..n]) {
        return Ok(None);
    }
    // The rest from the same handle: no second open for every ELF file of the release.
    let mut bytes = head[..n].to_vec();
    f.read_to_end(&mut bytes).ctx("read", src)?;
    ElfInfo::parse(&bytes).map(Some).map_err(|why| {
        Error::Input(format!(
            "{} looks like an ELF file but cannot be read ({why}): rebuild the release",
            src.display()
        ))
    })
}

/// Put one plan's entries into the tree, each file's ELF facts from `elf_of(entry, path)`;
/// returns the ELF files among them.
fn insert_plan(
    fs: &mut RootFs,
    plan: &LayerPlan,
    mut elf_of: impl FnMut(&crate::release::Entry, &str) -> Result<Option<ElfInfo>>,
) -> Result<Vec<(String, ElfInfo)>> {
    let mut elves = Vec::new();
    let label = format!("the {} layer", plan.kind.as_str());
    for e in &plan.entries {
        let path = format!("/{}", e.path);
        let node = match &e.kind {
            EntryKind::Dir => Node::Dir,
            EntryKind::Symlink { target } => Node::Symlink(target.clone()),
            EntryKind::File { .. } => {
                let info = elf_of(e, &path)?;
                if let Some(i) = &info {
                    elves.push((path.clone(), i.clone()));
                }
                Node::File {
                    mode: e.mode,
                    not_elf: info.is_none(),
                    elf: info,
                }
            }
        };
        fs.insert_by(&path, node, &label);
    }
    Ok(elves)
}

/// As [`add_entries`], with each plan's ELF facts kept in the cache under `keys[i]` (the
/// layer's stat key: every file's size, mtime, ctime and inode), so that an unchanged release
/// is not opened file by file again. A plan without a key, or whose record is missing or
/// unreadable, is read as [`add_entries`] reads it, and its facts are stored.
pub(crate) fn add_entries_cached(
    fs: &mut RootFs,
    plans: &[LayerPlan],
    keys: &[Option<Digest>],
    cache: &Cache,
) -> Result<Vec<(String, ElfInfo)>> {
    let mut elves = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let key = keys.get(i).cloned().flatten();
        let known = key
            .as_ref()
            .and_then(|k| cache.record("elves", k))
            .and_then(|b| serde_json::from_slice::<Vec<(String, ElfInfo)>>(&b).ok());
        let Some(known) = known else {
            let found = insert_plan(fs, plan, |e, _| read_elf(e))?;
            if let (Some(k), Ok(bytes)) = (&key, serde_json::to_vec(&found)) {
                let _ = cache.put_record("elves", k, &bytes);
            }
            elves.extend(found);
            continue;
        };
        let by_path: std::collections::HashMap<&str, &ElfInfo> =
            known.iter().map(|(p, e)| (p.as_str(), e)).collect();
        elves.extend(insert_plan(fs, plan, |_, path| {
            Ok(by_path.get(path).map(|i| (*i).clone()))
        })?);
    }
    Ok(elves)
}

/// What one of an image's own layers holds, read from its bytes: its ELF files with their
/// facts, its start scripts (under `WORKDIR/bin/`), and the text of small files `keep` asks for.
#[derive(Default)]
pub struct LayerFacts {
    pub elves: Vec<(String, ElfInfo)>,
    pub scripts: Vec<(String, String)>,
    pub texts: std::collections::BTreeMap<String, String>,
}

/// Put a layer of an image (the release's layers of an image being rebased) into the tree,
/// reading its bytes from `at` (verified against the layer's digest as they are read).
pub(crate) fn add_layer(
    fs: &mut RootFs,
    layer: &crate::oci::Layer,
    at: &FileRange,
    workdir: &str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<LayerFacts> {
    let what = format!("layer {}", layer.blob.digest);
    let LayerType::Tar { codec, .. } = media::layer_type(&layer.blob.media_type) else {
        return Err(Error::from(crate::error::ImageError::Invalid(format!(
            "{what} is {}, not a file system layer",
            layer.blob.media_type
        ))));
    };
    let bin = format!("/{}/bin/", workdir.trim_matches('/'));
    let mut facts = LayerFacts::default();
    let mut hashed = HashReader::new(at.open()?);
    let read = (|| -> Result<()> {
        let raw = BufReader::with_capacity(1 << 16, &mut hashed);
        let tar = codec.decoder(raw).ctx("read layer", &at.path)?;
        let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 16, tar));
        let bad = |e: std::io::Error| {
            Error::from(crate::error::ImageError::Invalid(format!(
                "{what}: unreadable layer: {e}"
            )))
        };
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o644);
            let node = match header.entry_type() {
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Symlink => Node::Symlink(
                    entry
                        .link_name_bytes()
                        .map(|l| String::from_utf8_lossy(&l).into_owned())
                        .unwrap_or_default(),
                ),
                t if t.is_file() => {
                    let mut bytes = Vec::new();
                    let mut head = [0u8; 4];
                    let n = std::io::Read::read(&mut entry, &mut head).map_err(bad)?;
                    bytes.extend_from_slice(&head[..n]);
                    let is_elf = elf::is_elf(&bytes);
                    let script = path.starts_with(&bin) && bytes.starts_with(b"#!");
                    let wanted = keep(&path);
                    if is_elf || script || wanted {
                        entry.read_to_end(&mut bytes).map_err(bad)?;
                    }
                    let mut info = None;
                    if is_elf {
                        let i = ElfInfo::parse(&bytes).map_err(|why| {
                            Error::from(crate::error::ImageError::Invalid(format!(
                                "{what}: {path} looks like an ELF file but cannot be read ({why})"
                            )))
                        })?;
                        facts.elves.push((path.clone(), i.clone()));
                        info = Some(i);
                    } else if script {
                        facts
                            .scripts
                            .push((path.clone(), String::from_utf8_lossy(&bytes).into_owned()));
                    }
                    if wanted {
                        facts
                            .texts
                            .insert(path.clone(), String::from_utf8_lossy(&bytes).into_owned());
                    }
                    Node::File {
                        mode,
                        not_elf: info.is_none(),
                        elf: info,
                    }
                }
                _ => continue,
            };
            fs.insert_by(&path, node, &what);
        }
        // The rest of the stream (tar padding) is hashed too.
        std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).ctx("read", &at.path)?;
        Ok(())
    })();
    std::io::copy(&mut hashed, &mut std::io::sink()).ctx("read layer", &at.path)?;
    let (actual, _) = hashed.finish();
    crate::oci::digest::verify(
        format!("{what} in {}", at.path.display()),
        &layer.blob.digest,
        &actual,
    )?;
    read?;
    Ok(facts)
}

/// The release's start scripts (`bin/*` files that begin with `#!`): (image path, text).
pub(crate) fn release_scripts(plans: &[LayerPlan], workdir: &str) -> Result<Vec<(String, String)>> {
    let bin = format!("{}/bin/", workdir.trim_matches('/'));
    let mut out = Vec::new();
    for e in plans.iter().flat_map(|p| &p.entries) {
        let (EntryKind::File { .. }, Some(src)) = (&e.kind, &e.source) else {
            continue;
        };
        if !e.path.starts_with(&bin) {
            continue;
        }
        let bytes = std::fs::read(src).ctx("read", src)?;
        if bytes.starts_with(b"#!") {
            out.push((
                format!("/{}", e.path),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    Ok(out)
}

/// The Debian package that provides `lib` (a soname), when it is one Elixir releases commonly
/// need.
pub(crate) fn debian_package_for(lib: &str) -> Option<&'static str> {
    DEBIAN_PACKAGES
        .iter()
        .find(|(l, _)| *l == lib)
        .map(|(_, p)| *p)
}

/// Debian packages that provide libraries Elixir releases commonly need (bookworm names).
/// Answers "which package" without a package index; runtime packages bring the full one.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("libcrypto.so.3", "libssl3"),
    ("libssl.so.3", "libssl3"),
    ("libcrypto.so.1.1", "libssl1.1"),
    ("libssl.so.1.1", "libssl1.1"),
    ("libstdc++.so.6", "libstdc++6"),
    ("libgcc_s.so.1", "libgcc-s1"),
    ("libtinfo.so.6", "libtinfo6"),
    ("libncursesw.so.6", "libncursesw6"),
    ("libncurses.so.6", "libncurses6"),
    ("libz.so.1", "zlib1g"),
    ("libsystemd.so.0", "libsystemd0"),
    ("libodbc.so.2", "libodbc2"),
    ("libsctp.so.1", "libsctp1"),
    ("libyaml-0.so.2", "libyaml-0-2"),
    ("libsqlite3.so.0", "libsqlite3-0"),
    ("libpq.so.5", "libpq5"),
    ("libvips.so.42", "libvips42"),
    ("libc.so.6", "libc6"),
    ("libm.so.6", "libc6"),
    ("libpthread.so.0", "libc6"),
    ("libdl.so.2", "libc6"),
    ("librt.so.1", "libc6"),
];

/// What the image's environment says about library and command lookup.
#[derive(Clone, Debug, Default)]
pub struct ImageEnv {
    pub path: Option<String>,
    pub ld_library_path: Option<String>,
}

impl ImageEnv {
    pub(crate) fn from_env(env: &[String]) -> ImageEnv {
        let get = |k: &str| {
            env.iter()
                .find_map(|e| e.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .map(str::to_string)
        };
        ImageEnv {
            path: get("PATH"),
            ld_library_path: get("LD_LIBRARY_PATH"),
        }
    }
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Commands the `mix release` start scripts call (see elixir-release-facts).
const SCRIPT_COMMANDS: &[&str] = &[
    "cut", "sed", "grep", "dirname", "basename", "readlink", "cat",
];

/// The start-up check of a release: [`check`], and for a release built with
/// `include_erts: false` the image's own Erlang ([`base_erts`]), whose ELF files are checked
/// like the release's.
pub(crate) fn check_release(
    fs: &RootFs,
    elves: &[(String, ElfInfo)],
    scripts: &[(String, String)],
    architecture: &str,
    env: &ImageEnv,
    release: &crate::release::Release,
    workdir: &str,
) -> CheckReport {
    if release.includes_erts {
        return check(fs, elves, scripts, architecture, env);
    }
    let start = format!("/{}/bin/{}", workdir.trim_matches('/'), release.name);
    match base_erts(fs, env, release, workdir, &start) {
        Ok(erts) => {
            let all: Vec<_> = elves.iter().cloned().chain(erts).collect();
            check(fs, &all, scripts, architecture, env)
        }
        Err(problem) => {
            let mut report = check(fs, elves, scripts, architecture, env);
            report.problems.insert(0, problem);
            report
        }
    }
}

/// The image's Erlang for a release without ERTS: the `erl` on the image's PATH, whose root
/// must hold `erts-<vsn>` of exactly the release's version (`releases/start_erl.data`), and
/// every OTP application the release boots but does not carry (Mix leaves them out with ERTS)
/// at the version its `.rel` names. Gives that ERTS's ELF files, or the problem (no Erlang,
/// another version, naming both, or the applications missing).
pub(crate) fn base_erts(
    fs: &RootFs,
    env: &ImageEnv,
    release: &crate::release::Release,
    workdir: &str,
    start_script: &str,
) -> std::result::Result<Vec<(String, ElfInfo)>, Problem> {
    let erts_version = release.erts_version.as_str();
    let path_var = env.path.clone().unwrap_or_else(|| DEFAULT_PATH.into());
    let problem = |missing: String| Problem {
        file: start_script.to_string(),
        needs: format!(
            "Erlang with ERTS {erts_version} in the image (the release was built with include_erts: false)"
        ),
        missing,
        fix: format!(
            "use a base with the Erlang/OTP the release was built with (ERTS {erts_version}), such as the official erlang image of that OTP release, or build the release with include_erts: true"
        ),
    };
    let erl = path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{}/erl", d.trim_end_matches('/')))
        .find(|p| fs.is_executable_file(p))
        .ok_or_else(|| problem(format!("no erl on the image's PATH ({path_var})")))?;
    let real = fs.resolve(&erl).unwrap_or_else(|| erl.clone());
    let parent = |p: &str| {
        p.rsplit_once('/')
            .map_or("/".to_string(), |(a, _)| a.to_string())
    };
    // erl is ROOT/bin/erl (or ROOT/erts-VSN/bin/erl).
    let mut root = parent(&parent(&real));
    if root
        .rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with("erts-"))
    {
        root = parent(&root);
    }
    let dir = format!("{root}/erts-{erts_version}");
    if !fs.exists(&format!("{dir}/bin")) {
        let have: Vec<String> = fs
            .list(&root)
            .iter()
            .filter_map(|p| {
                p.rsplit('/')
                    .next()?
                    .strip_prefix("erts-")
                    .map(str::to_string)
            })
            .collect();
        return Err(problem(format!(
            "the image's Erlang ({erl} in {root}) has {}",
            if have.is_empty() {
                "no ERTS directory".to_string()
            } else {
                format!("ERTS {}, not {erts_version}", have.join(", "))
            }
        )));
    }
    let lib = format!("/{}/lib", workdir.trim_matches('/'));
    let missing: Vec<String> = release
        .applications
        .iter()
        .map(|a| format!("{}-{}", a.name, a.version))
        .filter(|a| !fs.exists(&format!("{lib}/{a}")) && !fs.exists(&format!("{root}/lib/{a}")))
        .collect();
    if !missing.is_empty() {
        return Err(Problem {
            file: start_script.to_string(),
            needs: format!(
                "the OTP applications {} from the image's Erlang (the release was built with include_erts: false, so it does not carry them)",
                missing.join(", ")
            ),
            missing: format!("not in {root}/lib"),
            fix: "use a base whose Erlang has them at these versions (on Debian, the erlang-<application> packages of the same OTP; the official erlang images have every one), or build the release with include_erts: true".into(),
        });
    }
    Ok(fs
        .list(&format!("{dir}/bin"))
        .into_iter()
        .filter_map(|p| match fs.lookup(&p) {
            Some((_, Node::File { elf: Some(e), .. })) => Some((p, e.clone())),
            _ => None,
        })
        .collect())
}

/// A layer the image adds that replaces a link or a directory of the layers below it (or puts
/// entries under a link, which engines unpack differently) changes what the base is: each is
/// one problem, naming the layer, the path and what was there.
fn replaced_problems(fs: &RootFs) -> Vec<Problem> {
    fs.replaced()
        .iter()
        .map(|r| {
            let layer = if r.layer.is_empty() {
                "a layer this image adds"
            } else {
                r.layer.as_str()
            };
            let fix = match r.was.strip_prefix("a link to ") {
                Some(target) => format!(
                    "put the layer's entries under the link's target ({}) instead of {}; a layer must never replace a link of the base",
                    normalize(&format!("{}/../{target}", r.path)),
                    r.path
                ),
                None => format!(
                    "leave {} a directory in the layer, or move the entry elsewhere",
                    r.path
                ),
            };
            Problem {
                file: r.path.clone(),
                needs: format!("{} as the base has it: {}", r.path, r.was),
                missing: format!(
                    "{layer} has {} there, which replaces it and hides what the base has at {}",
                    r.by, r.path
                ),
                fix,
            }
        })
        .collect()
}

/// Run the start-up check of `elves` (the release's ELF files) and the release's scripts.
pub(crate) fn check(
    fs: &RootFs,
    elves: &[(String, ElfInfo)],
    scripts: &[(String, String)],
    architecture: &str,
    env: &ImageEnv,
) -> CheckReport {
    let replaced = replaced_problems(fs);
    if !replaced.is_empty() {
        // Everything else follows from a replaced link or directory (on a merged-/usr base,
        // a `/lib` directory hides the C library's loader): name the cause, not its effects.
        return CheckReport {
            elf_files: elves.len(),
            glibc: None,
            problems: replaced,
        };
    }
    let ctx = Ctx::new(fs, env);
    let mut problems = Vec::new();
    let expected = elf::machine_for(architecture);
    for (path, info) in elves {
        if let Some(m) = expected
            && info.machine != m
        {
            problems.push(Problem {
                file: path.clone(),
                needs: format!("a {} machine", elf::machine_name(info.machine)),
                missing: format!("the image is for {architecture}"),
                fix: format!(
                    "build the release for {architecture} (on such a machine, or cross-compiled), or build the image for the release's platform with --platform"
                ),
            });
            continue;
        }
        if let Some(interp) = &info.interpreter
            && !fs.exists(interp)
        {
            problems.push(ctx.interpreter_problem(path, interp));
            continue;
        }
        for lib in &info.needed {
            match ctx.find_library(path, info, lib) {
                None => problems.push(ctx.missing_library(path, lib)),
                Some(found) => {
                    let wanted = info
                        .requires
                        .iter()
                        .filter(|(f, _)| f == lib)
                        .flat_map(|(_, v)| v.iter());
                    let mut lacking: Vec<&String> = match &found.1 {
                        Some(def) => wanted.filter(|v| !def.defines.contains(v)).collect(),
                        None => vec![],
                    };
                    lacking.sort_by_key(|v| (ElfInfo::glibc_version(v), v.to_string()));
                    lacking.dedup();
                    if !lacking.is_empty() {
                        problems.push(ctx.version_problem(path, lib, &found.0, &lacking));
                    }
                }
            }
        }
    }
    for (path, text) in scripts {
        problems.extend(ctx.script_problems(path, text));
    }
    CheckReport {
        elf_files: elves.len(),
        glibc: ctx.glibc.clone(),
        problems,
    }
}

struct Ctx<'a> {
    fs: &'a RootFs,
    env: &'a ImageEnv,
    /// ld.so.conf's directories, then the defaults.
    system_dirs: Vec<String>,
    glibc: Option<String>,
    debian: bool,
    musl: Option<String>,
}

impl<'a> Ctx<'a> {
    fn new(fs: &'a RootFs, env: &'a ImageEnv) -> Ctx<'a> {
        let mut system_dirs = Vec::new();
        ld_so_conf(fs, "/etc/ld.so.conf", &mut system_dirs, 0);
        for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
            if !system_dirs.iter().any(|s| s == d) {
                system_dirs.push(d.to_string());
            }
        }
        let mut ctx = Ctx {
            fs,
            env,
            system_dirs,
            glibc: None,
            debian: fs.exists("/etc/debian_version")
                || fs.contents("/var/lib/dpkg/status").is_some(),
            musl: ["/lib", "/usr/lib"]
                .iter()
                .flat_map(|d| fs.list(d))
                .find(|p| {
                    p.rsplit('/')
                        .next()
                        .is_some_and(|n| n.starts_with("ld-musl-"))
                }),
        };
        ctx.glibc =
            ctx.system_dirs
                .iter()
                .find_map(|d| match fs.lookup(&format!("{d}/libc.so.6")) {
                    Some((_, Node::File { elf: Some(e), .. })) => e.glibc_release(),
                    _ => None,
                });
        ctx
    }

    /// Where ld.so would find `lib` for the ELF at `path`: (image path, its ELF info).
    fn find_library(
        &self,
        path: &str,
        info: &ElfInfo,
        lib: &str,
    ) -> Option<(String, Option<ElfInfo>)> {
        if lib.contains('/') {
            return self.candidate(&normalize(lib), info);
        }
        let origin = path.rsplit_once('/').map_or("/", |(d, _)| d);
        let expand = |d: &String| {
            d.replace("${ORIGIN}", origin)
                .replace("$ORIGIN", origin)
                .replace("$LIB", if info.is_64 { "lib64" } else { "lib" })
        };
        let mut dirs: Vec<String> = Vec::new();
        if info.runpath.is_empty() {
            dirs.extend(info.rpath.iter().map(expand));
        }
        if let Some(l) = &self.env.ld_library_path {
            dirs.extend(l.split(':').filter(|d| !d.is_empty()).map(str::to_string));
        }
        dirs.extend(info.runpath.iter().map(expand));
        dirs.extend(self.system_dirs.iter().cloned());
        dirs.iter()
            .find_map(|d| self.candidate(&normalize(&format!("{d}/{lib}")), info))
    }

    /// `path` if it is a library the loader would accept for `user` (same machine and class).
    fn candidate(&self, path: &str, user: &ElfInfo) -> Option<(String, Option<ElfInfo>)> {
        match self.fs.lookup(path)? {
            (real, Node::File { elf: Some(e), .. }) => (e.machine == user.machine
                && e.is_64 == user.is_64)
                .then(|| (real, Some(e.clone()))),
            // An ELF file we did not parse: assume the loader takes it. Anything else (a text
            // file, say, reached through a link) the loader refuses.
            (
                real,
                Node::File {
                    elf: None,
                    not_elf: false,
                    ..
                },
            ) => Some((real, None)),
            _ => None,
        }
    }

    fn missing_library(&self, path: &str, lib: &str) -> Problem {
        let fix = match (self.debian, debian_package_for(lib)) {
            (true, Some(pkg)) => format!(
                "add the Debian package {pkg} to the image (--package {pkg}), or use a base that has it"
            ),
            (true, None) => format!(
                "add the Debian package that provides {lib} (--package NAME; `apt-file search {lib}` tells which), or use a base that has it"
            ),
            (false, Some(pkg)) => {
                format!("use a base image that has {lib} (Debian's package {pkg} provides it)")
            }
            (false, None) => format!("use a base image that has {lib}"),
        };
        Problem {
            file: path.to_string(),
            needs: lib.to_string(),
            missing: format!(
                "{lib} is not in the image (searched {})",
                self.system_dirs.join(":")
            ),
            fix,
        }
    }

    fn version_problem(&self, path: &str, lib: &str, found: &str, lacking: &[&String]) -> Problem {
        let glibc_needed = lacking
            .iter()
            .filter_map(|v| ElfInfo::glibc_version(v).map(|n| (n, v.as_str())))
            .max()
            .map(|(_, v)| v.trim_start_matches("GLIBC_").to_string());
        let fix = match (&glibc_needed, &self.glibc) {
            (Some(need), Some(have)) => format!(
                "use a base whose glibc is at least {need} (this one has {have}), e.g. debian:bookworm-slim, or build the release on a system with glibc {have}"
            ),
            (Some(need), None) => format!("use a base whose glibc is at least {need}"),
            _ => format!("use a base (or add a package) with a newer {lib}"),
        };
        Problem {
            file: path.to_string(),
            needs: format!(
                "{} from {lib}",
                lacking
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            missing: format!(
                "{found} in the image does not define {}",
                lacking
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix,
        }
    }

    fn interpreter_problem(&self, path: &str, interp: &str) -> Problem {
        let fix = match &self.musl {
            Some(m) if interp.contains("ld-linux") => format!(
                "the base uses musl libc ({m}) but the release was built against glibc: use a glibc base such as debian:bookworm-slim, or build the release on Alpine"
            ),
            _ => "use a base with the C library the release was built against, such as debian:bookworm-slim".to_string(),
        };
        Problem {
            file: path.to_string(),
            needs: format!("the program interpreter {interp}"),
            missing: format!("{interp} is not in the image"),
            fix,
        }
    }

    fn script_problems(&self, path: &str, text: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let Some(first) = text.lines().next() else {
            return out;
        };
        let Some(shebang) = first.strip_prefix("#!") else {
            return out;
        };
        let interp = shebang.split_whitespace().next().unwrap_or("");
        if interp.is_empty() {
            return out;
        }
        let shell_fix = "use a base with a POSIX shell and coreutils, sed and grep, such as debian:bookworm-slim (distroless and scratch bases have none)";
        if !self.fs.is_executable_file(interp) {
            out.push(Problem {
                file: path.to_string(),
                needs: format!("the shell {interp}"),
                missing: format!("{interp} is not in the image"),
                fix: shell_fix.into(),
            });
            return out;
        }
        let path_var = self.env.path.clone().unwrap_or_else(|| DEFAULT_PATH.into());
        let words: std::collections::BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .collect();
        let missing: Vec<&str> = SCRIPT_COMMANDS
            .iter()
            .copied()
            .filter(|c| words.contains(c))
            .filter(|c| {
                !path_var
                    .split(':')
                    .filter(|d| !d.is_empty())
                    .any(|d| self.fs.is_executable_file(&format!("{d}/{c}")))
            })
            .collect();
        if !missing.is_empty() {
            out.push(Problem {
                file: path.to_string(),
                needs: format!("the commands {}", missing.join(", ")),
                missing: format!("not found on PATH ({path_var})"),
                fix: shell_fix.into(),
            });
        }
        out
    }
}

/// Directories named by an ld.so.conf file and its `include`s (glob patterns with `*`).
fn ld_so_conf(fs: &RootFs, file: &str, out: &mut Vec<String>, depth: u32) {
    if depth > 8 {
        return;
    }
    let Some(bytes) = fs.contents(file) else {
        return;
    };
    let text = String::from_utf8_lossy(bytes).into_owned();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(pattern) = line.strip_prefix("include") {
            for pat in pattern.split_whitespace() {
                let pat = if pat.starts_with('/') {
                    pat.to_string()
                } else {
                    format!("/etc/{pat}")
                };
                let (dir, name) = pat.rsplit_once('/').unwrap_or(("/", &pat));
                for candidate in fs.list(dir) {
                    let base = candidate.rsplit('/').next().unwrap_or("");
                    if glob_match(name, base) {
                        ld_so_conf(fs, &candidate, out, depth + 1);
                    }
                }
            }
            continue;
        }
        for dir in line
            .split([':', ',', ' ', '\t'])
            .filter(|d| d.starts_with('/'))
        {
            let d = normalize(dir);
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob_match(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(defines: &[&str]) -> Node {
        Node::File {
            mode: 0o755,
            elf: Some(ElfInfo {
                machine: goblin::elf::header::EM_X86_64,
                is_64: true,
                defines: defines.iter().map(|s| s.to_string()).collect(),
                ..ElfInfo::default()
            }),
            not_elf: false,
        }
    }

    fn base() -> RootFs {
        let mut fs = RootFs::new();
        fs.insert(
            "/etc/debian_version",
            Node::File {
                mode: 0o644,
                elf: None,
                not_elf: true,
            },
        );
        fs.insert(
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            lib(&["GLIBC_2.2.5", "GLIBC_2.31"]),
        );
        fs.insert("/lib", Node::Symlink("usr/lib".into()));
        fs.insert("/lib64/ld-linux-x86-64.so.2", lib(&[]));
        fs.insert(
            "/usr/bin/dash",
            Node::File {
                mode: 0o755,
                elf: None,
                not_elf: false,
            },
        );
        fs.insert("/bin", Node::Symlink("usr/bin".into()));
        fs.insert("/usr/bin/sh", Node::Symlink("dash".into()));
        fs.insert(
            "/usr/bin/cat",
            Node::File {
                mode: 0o755,
                elf: None,
                not_elf: false,
            },
        );
        fs
    }

    fn beam(needed: &[&str], glibc: &str) -> ElfInfo {
        ElfInfo {
            machine: goblin::elf::header::EM_X86_64,
            is_64: true,
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            needed: needed.iter().map(|s| s.to_string()).collect(),
            requires: vec![("libc.so.6".into(), vec![glibc.into()])],
            ..ElfInfo::default()
        }
    }

    #[test]
    fn a_layer_that_replaces_a_base_link_is_named_not_the_c_library() {
        // bookworm's libtinfo5 unpacked as it ships, `lib/` a directory, over `/lib -> usr/lib`.
        let mut fs = base();
        let plan = LayerPlan {
            kind: crate::oci::LayerKind::Packages,
            entries: ["lib", "lib/x86_64-linux-gnu"]
                .iter()
                .map(|p| crate::release::Entry {
                    path: p.to_string(),
                    source: None,
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                })
                .collect(),
        };
        let elves = add_entries(&mut fs, &[plan]).unwrap();
        let report = check(
            &fs,
            &[(
                "/app/erts/bin/beam.smp".into(),
                beam(&["libc.so.6"], "GLIBC_2.31"),
            )],
            &[],
            "amd64",
            &ImageEnv::default(),
        );
        assert!(elves.is_empty());
        assert_eq!(report.problems.len(), 1, "{}", report.render());
        let p = &report.problems[0];
        assert_eq!(p.file, "/lib");
        assert!(p.needs.contains("a link to usr/lib"), "{p:?}");
        assert!(
            p.missing.contains("the packages layer has a directory"),
            "{p:?}"
        );
        assert!(p.fix.contains("/usr/lib"), "{p:?}");
        let text = report.render();
        assert!(
            !text.contains("bookworm-slim") && !text.contains("glibc"),
            "{text}"
        );
    }

    #[test]
    fn finds_missing_libraries_old_glibc_and_wrong_machine() {
        let mut fs = base();
        // ld.so.conf is read from the tree; here the multiarch directory comes from it.
        let conf = b"include /etc/ld.so.conf.d/*.conf\n".to_vec();
        let mut tar = tar::Builder::new(Vec::new());
        for (p, data) in [
            ("etc/ld.so.conf", conf),
            (
                "etc/ld.so.conf.d/x86_64-linux-gnu.conf",
                b"# multiarch\n/usr/lib/x86_64-linux-gnu\n".to_vec(),
            ),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, p, &data[..]).unwrap();
        }
        fs.apply_layer(&tar.into_inner().unwrap()[..], "conf")
            .unwrap();
        let env = ImageEnv::default();
        let ok = beam(&["libc.so.6"], "GLIBC_2.2.5");
        let r = check(
            &fs,
            &[("/app/erts/bin/beam.smp".into(), ok)],
            &[],
            "amd64",
            &env,
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.glibc.as_deref(), Some("2.31"));

        let crypto = beam(&["libcrypto.so.3", "libc.so.6"], "GLIBC_2.2.5");
        let new = beam(&["libc.so.6"], "GLIBC_2.34");
        let mut arm = beam(&[], "GLIBC_2.17");
        arm.machine = goblin::elf::header::EM_AARCH64;
        let r = check(
            &fs,
            &[
                ("/app/lib/crypto/priv/lib/crypto.so".into(), crypto),
                ("/app/erts/bin/beam.smp".into(), new),
                ("/app/erts/bin/arm".into(), arm),
            ],
            &[],
            "amd64",
            &env,
        );
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert!(
            r.problems[0].needs == "libcrypto.so.3"
                && r.problems[0].fix.contains("--package libssl3")
        );
        assert!(
            r.problems[1].needs.contains("GLIBC_2.34")
                && r.problems[1]
                    .fix
                    .contains("at least 2.34 (this one has 2.31)")
        );
        assert!(r.problems[2].needs.contains("AArch64"));
        let text = r.render();
        assert!(
            text.contains("crypto.so") && text.contains("--no-check"),
            "{text}"
        );
    }

    #[test]
    fn musl_base_and_missing_shell() {
        let mut fs = RootFs::new();
        fs.insert("/lib/ld-musl-x86_64.so.1", lib(&[]));
        let env = ImageEnv::default();
        let r = check(
            &fs,
            &[(
                "/app/erts/bin/beam.smp".into(),
                beam(&["libc.so.6"], "GLIBC_2.2.5"),
            )],
            &[(
                "/app/bin/hello".into(),
                "#!/bin/sh\nset -e\ncut -d x\n".into(),
            )],
            "amd64",
            &env,
        );
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        assert!(r.problems[0].fix.contains("musl"));
        assert!(r.problems[1].needs.contains("/bin/sh"));
        // A shell but no cut or sed on PATH.
        let fs = base();
        let r = check(
            &fs,
            &[],
            &[(
                "/app/bin/hello".into(),
                "#!/bin/sh\ncat x | sed y | cut z\n".into(),
            )],
            "amd64",
            &env,
        );
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].needs.contains("cut, sed") && !r.problems[0].needs.contains("cat"));
    }

    #[test]
    fn origin_runpath_and_globs() {
        let mut fs = base();
        fs.insert("/app/lib/x/priv/libhelper.so", lib(&[]));
        let mut nif = beam(&["libhelper.so"], "GLIBC_2.2.5");
        nif.runpath = vec!["$ORIGIN".into()];
        let r = check(
            &fs,
            &[("/app/lib/x/priv/nif.so".into(), nif)],
            &[],
            "amd64",
            &ImageEnv::default(),
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(glob_match("*.conf", "x86_64-linux-gnu.conf"));
        assert!(!glob_match("*.conf", "README"));
        assert!(glob_match("a*b*c", "aXXbYc"));
    }

    /// Base layers compressed with gzip or zstd, or not at all, are all read into the tree
    /// (zstd bases are common now); another media type is named in a warning.
    #[test]
    fn elf_facts_are_kept_by_stat_key() {
        use crate::release::Entry;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let elf = dir.path().join("beam.smp");
        std::fs::copy(std::env::current_exe().unwrap(), &elf).unwrap();
        let text = dir.path().join("start.sh");
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        let file = |path: &str, src: &std::path::Path| Entry {
            path: path.into(),
            source: Some(src.to_path_buf()),
            kind: EntryKind::File {
                size: std::fs::metadata(src).unwrap().len(),
            },
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        let plan = LayerPlan {
            kind: crate::release::LayerKind::Erts,
            entries: vec![file("app/beam.smp", &elf), file("app/start.sh", &text)],
        };
        let key = Some(crate::oci::digest::sha256_of(b"a stat key"));
        let mut first = RootFs::new();
        let elves = add_entries_cached(
            &mut first,
            std::slice::from_ref(&plan),
            std::slice::from_ref(&key),
            &cache,
        )
        .unwrap();
        assert_eq!(elves.len(), 1);
        assert_eq!(elves[0].0, "/app/beam.smp");
        // Kept: the files are not opened again (they are gone), and the tree is the same.
        std::fs::remove_file(&elf).unwrap();
        std::fs::remove_file(&text).unwrap();
        let mut again = RootFs::new();
        let elves2 =
            add_entries_cached(&mut again, std::slice::from_ref(&plan), &[key], &cache).unwrap();
        assert_eq!(elves2, elves);
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&first).unwrap()
        );
        // Another key: read again (and here, the files being gone, refused).
        let other = Some(crate::oci::digest::sha256_of(b"another"));
        assert!(add_entries_cached(&mut RootFs::new(), &[plan], &[other], &cache).is_err());
    }

    #[test]
    fn base_layers_of_every_compression_are_read() {
        use crate::oci::{Blob, BlobSource, Layer, LayerKind};
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(12);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "etc/os-release", &b"ID=debian\n\n\n"[..])
            .unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
        let diff_id = crate::oci::digest::sha256_of(&tar);
        for (bytes, media) in [
            (gz, media::LAYER_GZIP),
            (zst, media::LAYER_ZSTD),
            (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            (tar.clone(), "application/vnd.example.other"),
        ] {
            let digest = cache.put_bytes(&bytes).unwrap();
            let at = FileRange {
                path: cache.blob_path(&digest),
                offset: 0,
                size: bytes.len() as u64,
            };
            let mut base = crate::source::scratch(&crate::oci::platform::Platform::host()).unwrap();
            base.layers = vec![Layer {
                blob: Blob::new(
                    digest,
                    bytes.len() as u64,
                    media,
                    BlobSource::File(at.clone()),
                ),
                diff_id: diff_id.clone(),
                kind: LayerKind::Base,
            }];
            let (fs, warnings) = base_rootfs(&base, &[at], &cache).unwrap();
            if media.contains("example") {
                assert!(!fs.exists("/etc/os-release"));
                assert!(warnings[0].contains(media), "{warnings:?}");
            } else {
                assert!(fs.exists("/etc/os-release"), "{media}");
                assert!(warnings.is_empty(), "{media}: {warnings:?}");
            }
        }
    }
}
