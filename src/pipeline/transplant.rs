//! The ERTS transplant: the release for another platform made from this one. A release is
//! mostly portable (`.beam` files, boot scripts, `sys.config`, static assets); only its ELF
//! files are not: ERTS (`erts-<vsn>/bin/*`) and NIFs and port programs under `lib/*/priv/`.
//! When all of those come from Erlang/OTP itself, the same OTP version's builds for the target
//! platform, taken from an image that holds that OTP, replace them file for file, and every
//! other byte of the release stays as it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::fs::elf::{machine_for, machine_name};
use crate::fs::normalize;
use crate::layer::VerifiedLayer;
use crate::oci::digest::sha256_of;
use crate::oci::platform::Platform;
use crate::registry::RegistryClient;
use crate::release::{EntryKind, LayerPlan, Release};
use crate::source::{self, Source};

/// An ELF file of the release: its path relative to the release root, and its machine.
#[derive(Clone, Debug)]
pub struct Native {
    pub rel: String,
    pub machine: u16,
}

/// The ELF machine in a file's header, when it is an ELF file.
pub fn elf_machine(path: &Path) -> Option<u16> {
    let mut head = [0u8; 20];
    let mut f = std::fs::File::open(path).ok()?;
    f.read_exact(&mut head).ok()?;
    if &head[..4] != b"\x7fELF" {
        return None;
    }
    let m = [head[18], head[19]];
    Some(match head[5] {
        2 => u16::from_be_bytes(m),
        _ => u16::from_le_bytes(m),
    })
}

/// Every ELF file among the planned release layers' files.
pub fn natives(plans: &[LayerPlan], workdir: &str) -> Vec<Native> {
    let prefix = format!("{}/", workdir.trim_matches('/'));
    plans
        .iter()
        .flat_map(|p| &p.entries)
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .filter_map(|e| {
            let rel = e.path.strip_prefix(&prefix)?;
            let machine = elf_machine(e.source.as_deref()?)?;
            Some(Native {
                rel: rel.to_string(),
                machine,
            })
        })
        .collect()
}

/// The machine a release is built for: its ERTS's, else its first native file's; `None` for
/// a release without native code (which runs anywhere its base's Erlang does).
pub fn release_machine(natives: &[Native]) -> Option<u16> {
    natives
        .iter()
        .find(|n| n.rel.starts_with("erts-") && n.rel.ends_with("/bin/beam.smp"))
        .or_else(|| natives.first())
        .map(|n| n.machine)
}

/// What the transplant did, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct TransplantReport {
    /// The image the native files came from, and its manifest digest.
    pub from: String,
    pub digest: Option<String>,
    /// Where Erlang/OTP lies in that image (e.g. `/usr/lib/erlang`).
    pub otp_root: String,
    /// Every file replaced, relative to the release root.
    pub files: Vec<String>,
    /// Development tools of the release's ERTS (`ct_run`, `dialyzer`, ...) that the image's
    /// Erlang/OTP lacks, left out of this platform's release; relative to the release root.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

/// The target platform's native files, staged on disk, ready to stand in for the release's.
pub struct Transplant {
    pub report: TransplantReport,
    /// Release-relative path → the file (a blob in the cache) and its size.
    files: BTreeMap<String, (PathBuf, u64)>,
    /// Release-relative paths of the files left out (see [`TransplantReport::left_out`]).
    left_out: BTreeSet<String>,
}

/// What a program of a release's `erts-<vsn>/bin/` is for, as far as a transplant cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Run when a release starts, evaluates, is reached remotely or runs as a daemon, or by
    /// scripts around a release: refused when the OTP image lacks it.
    RunTime,
    /// Only for developing or building code: left out when the OTP image lacks it.
    Development,
    /// Not known to imgbuild: nothing says it is unused, so it is treated as run time.
    Unknown,
}

/// The ERTS programs a release runs. A release's `bin/<name>` script (Elixir's and relx's)
/// execs `releases/<vsn>/elixir` or `erts-<vsn>/bin/erl`, a shell script that execs `erlexec`.
const RUN_TIME: &[&str] = &[
    // erl's launcher: parses the arguments, then execs the emulator.
    "erlexec",
    // The emulator itself (beam.smp; other flavours are beam.<type>.smp and the like).
    "beam",
    // Forked by the emulator to spawn port programs (open_port/2, os:cmd/1).
    "erl_child_setup",
    // The native resolver (inet_gethost_native), a port program.
    "inet_gethost",
    // Started (`epmd -daemon`) by erlexec for a distributed node: start with a name, remote,
    // rpc.
    "epmd",
    // `-heart`: restarts the release when it hangs.
    "heart",
    // `daemon`/`daemon_iex` (Elixir's --pipe-to, relx's daemon) run under run_erl, and
    // to_erl attaches to it.
    "run_erl",
    "to_erl",
    // Not run by the release scripts, but by scripts and probes people put beside a release
    // (escripts, `erl_call` to a running node); dyn_erl is a relocatable erl front end.
    "escript",
    "erl_call",
    "dyn_erl",
];

/// The ERTS programs no release start, eval, rpc, remote or daemon runs: the tools of a full
/// Erlang/OTP (Phoenix's builder image, a Debian host with rebar3, which pulls in
/// erlang-dialyzer and erlang-common-test) that `mix release` copies with ERTS's `bin/`.
const DEVELOPMENT: &[&str] = &[
    // common_test's test runner (Debian: erlang-common-test).
    "ct_run",
    // The static analyser and its type annotator (Debian: erlang-dialyzer; typer is in
    // erlang-base too).
    "dialyzer",
    "typer",
    // The compiler's command line: code compiled at run time is compiled by the compiler
    // application inside the VM, never by this program.
    "erlc",
    // A C source transformer used to build ERTS and NIFs.
    "yielding_c_fun",
];

/// Erlang/OTP's applications with native code under `priv/` (OTP 25), so that one missing from
/// the OTP image is not taken for a dependency's NIF. Such an application's native code stays
/// refused when missing, development tool (wx) or not: the project put it in the release.
const OTP_NATIVE_APPS: &[&str] = &[
    "asn1",
    "crypto",
    "megaco",
    "odbc",
    "os_mon",
    "runtime_tools",
    "wx",
];

/// The role of `rel` (release-relative) when it is a program of ERTS's `bin/`, else `None`.
fn erts_role(rel: &str) -> Option<Role> {
    let parts: Vec<&str> = rel.split('/').collect();
    let [erts, "bin", name] = parts.as_slice() else {
        return None;
    };
    if !erts.starts_with("erts-") {
        return None;
    }
    let emulator = name == &"beam" || name.starts_with("beam.");
    Some(if emulator || RUN_TIME.contains(name) {
        Role::RunTime
    } else if DEVELOPMENT.contains(name) {
        Role::Development
    } else {
        Role::Unknown
    })
}

/// Read `otp_from` for `platform` and stage, for each of the release's native files, the file
/// at the same place in the image's Erlang/OTP. Refuses (naming every file) native code that
/// does not come from OTP, another ERTS version, or another version of an OTP application.
pub async fn prepare(
    natives: &[Native],
    release: &Release,
    otp_from: &Source,
    platform: &Platform,
    cache: &Cache,
    client: &RegistryClient,
) -> Result<Transplant> {
    let want = machine_for(&platform.architecture).ok_or_else(|| {
        Error::Input(format!(
            "cannot transplant to {platform}: imgbuild does not know its ELF machine"
        ))
    })?;
    let apps: BTreeSet<String> = natives
        .iter()
        .filter_map(|n| app_of(&n.rel).map(|(a, _)| a))
        .collect();
    let image = source::read_image(otp_from, Some(platform), cache, client).await?;
    let mut local = Vec::new();
    for l in &image.layers {
        local.push(source::localize(&l.blob, cache, client).await?);
    }
    let what = otp_from.describe();
    let (layers, w, c) = (image.layers.clone(), what.clone(), cache.clone());
    let scan = crate::blocking(move || scan_cached(&layers, &local, &apps, &c, &w)).await?;
    let Chosen {
        root,
        files,
        left_out,
    } = choose(natives, &release.erts_version, &scan, want, &what, platform)?;
    Ok(Transplant {
        report: TransplantReport {
            from: image.origin.name.clone(),
            digest: image.origin.digest.as_ref().map(ToString::to_string),
            otp_root: format!("/{}", root.trim_end_matches('/')),
            files: files.keys().cloned().collect(),
            left_out: left_out.iter().cloned().collect(),
        },
        files,
        left_out,
    })
}

/// Where each of the release's native files comes from in a scanned OTP image.
struct Chosen {
    /// Where Erlang/OTP lies in the image (`usr/lib/erlang/`).
    root: String,
    /// Release-relative path → the staged file and its size.
    files: BTreeMap<String, (PathBuf, u64)>,
    /// Development tools the image lacks, left out.
    left_out: BTreeSet<String>,
}

/// For each native file of a release with ERTS `erts`, the file standing in for it in `scan`
/// (of an image for `want`, described as `what`), or why there is none: refused, naming every
/// file, unless it is a development tool of ERTS's `bin/`, which is left out.
fn choose(
    natives: &[Native],
    erts: &str,
    scan: &Scan,
    want: u16,
    what: &str,
    platform: &Platform,
) -> Result<Chosen> {
    // Native code outside ERTS and applications' priv/ cannot come from OTP.
    let mut refused: Vec<String> = natives
        .iter()
        .filter(|n| !is_erts(&n.rel) && app_of(&n.rel).is_none())
        .map(|n| {
            format!(
                "{}: native code outside ERTS and lib/*/priv cannot be transplanted",
                n.rel
            )
        })
        .collect();
    let Some(root) = scan
        .erts
        .iter()
        .find(|(_, v)| v == erts)
        .map(|(root, _)| root.clone())
    else {
        let found: Vec<String> = scan.erts.iter().map(|(_, v)| v.clone()).collect();
        return Err(Error::Input(if found.is_empty() {
            format!(
                "--otp-from {what} holds no Erlang/OTP for {platform} (no erts-*/bin/beam.smp in it): name an image with Erlang/OTP's ERTS {erts}"
            )
        } else {
            format!(
                "--otp-from {what} holds ERTS {} but the release needs ERTS {erts}: name an image with the same Erlang/OTP version as the release was built with",
                found.join(", ")
            )
        }));
    };
    let mut files = BTreeMap::new();
    let mut left_out = BTreeSet::new();
    for n in natives {
        if !is_erts(&n.rel) && app_of(&n.rel).is_none() {
            continue;
        }
        if let Some((app, vsn)) = app_of(&n.rel) {
            let have = scan.apps.get(&(root.clone(), app.clone()));
            match have {
                None if OTP_NATIVE_APPS.contains(&app.as_str()) => {
                    refused.push(format!(
                        "{}: native code of Erlang/OTP's {app}, which {what} does not hold: add {app} to that image (Debian's package erlang-{}) or leave {app} out of the release",
                        n.rel,
                        app.replace('_', "-")
                    ));
                    continue;
                }
                None => {
                    refused.push(format!(
                        "{}: native code of {app}, which {what} does not hold: it is not part of Erlang/OTP (a dependency's NIF)",
                        n.rel
                    ));
                    continue;
                }
                Some(versions) if !versions.contains(&vsn) => {
                    refused.push(format!(
                        "{}: the release has {app} {vsn}, {what} has {app} {}",
                        n.rel,
                        versions.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                    continue;
                }
                Some(_) => {}
            }
        }
        let full = format!("{root}{}", n.rel);
        // A program of ERTS's bin/ that OTP keeps in its own bin/ or an application's bin/.
        let name = n.rel.rsplit('/').next().unwrap_or_default();
        let elsewhere = || {
            is_erts(&n.rel)
                .then(|| {
                    scan.resolve(&format!("{root}bin/{name}")).or_else(|| {
                        let mut keys: Vec<&String> = scan
                            .staged
                            .keys()
                            .chain(scan.links.keys())
                            .filter(|k| {
                                k.starts_with(&format!("{root}lib/"))
                                    && k.ends_with(&format!("/bin/{name}"))
                            })
                            .collect();
                        keys.sort();
                        keys.first().and_then(|k| scan.resolve(k))
                    })
                })
                .flatten()
        };
        match scan.resolve(&full).or_else(elsewhere) {
            Some(staged) => match elf_machine(&staged) {
                Some(m) if m == want => {
                    let size = std::fs::metadata(&staged).ctx("stat", &staged)?.len();
                    files.insert(n.rel.clone(), (staged, size));
                }
                Some(m) => refused.push(format!(
                    "{}: /{full} in {what} is for {}, not {platform}",
                    n.rel,
                    machine_name(m)
                )),
                None => refused.push(format!("{}: /{full} in {what} is not an ELF file", n.rel)),
            },
            None => match erts_role(&n.rel) {
                // A tool for developers only: this platform's release goes without it.
                Some(Role::Development) => {
                    left_out.insert(n.rel.clone());
                }
                Some(Role::Unknown) => refused.push(format!(
                    "{}: {what} has no /{full} (imgbuild does not know what runs {name}, so it does not leave it out)",
                    n.rel
                )),
                _ => refused.push(format!("{}: {what} has no /{full}", n.rel)),
            },
        }
    }
    if !refused.is_empty() {
        return Err(Error::Input(format!(
            "cannot make the release for {platform} from {what}:\n  {}\nbuild the release natively for {platform} and pass --release {platform}=DIR",
            refused.join("\n  ")
        )));
    }
    Ok(Chosen {
        root,
        files,
        left_out,
    })
}

impl Transplant {
    /// Point the release layers' native files at the staged ones, and take out the files left
    /// out (with any symbolic link of the release to one of them).
    pub fn apply(&self, plans: &mut [LayerPlan], workdir: &str) {
        let prefix = format!("{}/", workdir.trim_matches('/'));
        let gone = |e: &crate::release::Entry| -> bool {
            let Some(rel) = e.path.strip_prefix(&prefix) else {
                return false;
            };
            match &e.kind {
                EntryKind::File { .. } => self.left_out.contains(rel),
                EntryKind::Symlink { target } if !target.starts_with('/') => {
                    let parent = rel.rsplit_once('/').map_or("", |(d, _)| d);
                    let to = normalize(&format!("{parent}/{target}"));
                    self.left_out.contains(to.trim_start_matches('/'))
                }
                _ => false,
            }
        };
        for p in plans.iter_mut() {
            p.entries.retain(|e| !gone(e));
        }
        for e in plans.iter_mut().flat_map(|p| p.entries.iter_mut()) {
            let Some(rel) = e.path.strip_prefix(&prefix) else {
                continue;
            };
            if let Some((staged, size)) = self.files.get(rel) {
                e.source = Some(staged.clone());
                e.kind = EntryKind::File { size: *size };
            }
        }
    }

    /// The warning for the files left out of `platform`'s release, if any.
    pub fn warning(&self, platform: &Platform) -> Option<String> {
        if self.report.left_out.is_empty() {
            return None;
        }
        Some(format!(
            "left out of the release for {platform}: {}: development tools (no release start, eval or remote runs them) that came with the Erlang/OTP the release was built with; {} has no build of them for {platform}",
            self.report.left_out.join(", "),
            self.report.from
        ))
    }
}

fn is_erts(rel: &str) -> bool {
    rel.starts_with("erts-") && rel.split('/').nth(1) == Some("bin")
}

/// `lib/<app>-<vsn>/priv/...` → (app, vsn).
fn app_of(rel: &str) -> Option<(String, String)> {
    let mut parts = rel.split('/');
    let (lib, dir, priv_) = (parts.next()?, parts.next()?, parts.next()?);
    if lib != "lib" || priv_ != "priv" {
        return None;
    }
    let (app, vsn) = dir.rsplit_once('-')?;
    Some((app.to_string(), vsn.to_string()))
}

/// What a scan of the OTP image found.
#[derive(Default)]
struct Scan {
    /// (root, ERTS version) for every `<root>erts-<vsn>/bin/beam.smp`.
    erts: Vec<(String, String)>,
    /// (root, app) → versions, for the applications asked about.
    apps: HashMap<(String, String), BTreeSet<String>>,
    /// Staged regular files by their path in the image.
    staged: HashMap<String, PathBuf>,
    /// Symbolic links among the files of interest: path → target.
    links: HashMap<String, String>,
}

impl Scan {
    /// The staged file at `path`, following links (relative or absolute) within the image.
    fn resolve(&self, path: &str) -> Option<PathBuf> {
        let mut p = path.to_string();
        for _ in 0..16 {
            if let Some(f) = self.staged.get(&p) {
                return Some(f.clone());
            }
            let target = self.links.get(&p)?;
            p = if let Some(abs) = target.strip_prefix('/') {
                normalize(abs).trim_start_matches('/').to_string()
            } else {
                let parent = p.rsplit_once('/').map_or("", |(d, _)| d);
                normalize(&format!("{parent}/{target}"))
                    .trim_start_matches('/')
                    .to_string()
            };
        }
        None
    }
}

/// A scan as kept in the cache (records `otp-scans`): the staged files by their blob digests.
#[derive(serde::Serialize, serde::Deserialize)]
struct ScanRecord {
    erts: Vec<(String, String)>,
    apps: Vec<(String, String, BTreeSet<String>)>,
    staged: BTreeMap<String, String>,
    links: BTreeMap<String, String>,
}

/// The scan of an OTP image for these applications, from the cache when an earlier build made
/// it from the same layers (its files verified against their digests), else made now. A build
/// for another platform then costs no decompression of the OTP image at all.
fn scan_cached(
    layers: &[crate::oci::Layer],
    local: &[crate::oci::FileRange],
    apps: &BTreeSet<String>,
    cache: &Cache,
    what: &str,
) -> Result<Scan> {
    let mut text = String::from("otp-scan-v1\n");
    for l in layers {
        text.push_str(&format!("{} {}\n", l.blob.media_type, l.blob.digest));
    }
    for a in apps {
        text.push_str(&format!("app {a}\n"));
    }
    let key = sha256_of(text.as_bytes());
    if let Some(scan) = cache
        .record("otp-scans", &key)
        .and_then(|b| serde_json::from_slice::<ScanRecord>(&b).ok())
        .and_then(|r| from_record(r, cache))
    {
        return Ok(scan);
    }
    let (scan, staged) = scan_layers(layers, local, apps, cache, what)?;
    let record = ScanRecord {
        erts: scan.erts.clone(),
        apps: scan
            .apps
            .iter()
            .map(|((root, app), v)| (root.clone(), app.clone(), v.clone()))
            .collect(),
        staged,
        links: scan
            .links
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    // A scan that cannot be stored is only a slower next build.
    if let Ok(bytes) = serde_json::to_vec(&record) {
        let _ = cache.put_record("otp-scans", &key, &bytes);
    }
    Ok(scan)
}

/// A stored scan, when every file it names is still in the cache with the right bytes.
fn from_record(r: ScanRecord, cache: &Cache) -> Option<Scan> {
    let mut staged = HashMap::new();
    for (path, d) in r.staged {
        let digest = crate::oci::digest::parse(&d).ok()?;
        cache.verify_blob(&digest).ok()?;
        staged.insert(path, cache.blob_path(&digest));
    }
    Some(Scan {
        erts: r.erts,
        apps: r
            .apps
            .into_iter()
            .map(|(root, app, v)| ((root, app), v))
            .collect(),
        staged,
        links: r.links.into_iter().collect(),
    })
}

/// One pass over every layer: where ERTS and the asked-for applications are, and the files of
/// `erts-*/bin/` and those applications' `priv/` stored in the cache. Also returns each stored
/// file's digest by its path in the image.
fn scan_layers(
    layers: &[crate::oci::Layer],
    local: &[crate::oci::FileRange],
    apps: &BTreeSet<String>,
    cache: &Cache,
    what: &str,
) -> Result<(Scan, BTreeMap<String, String>)> {
    let mut scan = Scan::default();
    let mut digests = BTreeMap::new();
    let interesting = |path: &str| -> bool {
        let comps: Vec<&str> = path.split('/').collect();
        comps
            .windows(2)
            .any(|w| w[0].starts_with("erts-") && w[1] == "bin")
            || comps.windows(3).any(|w| {
                w[0] == "lib"
                    && w[2] == "priv"
                    && w[1].rsplit_once('-').is_some_and(|(a, _)| apps.contains(a))
            })
    };
    for (i, (layer, at)) in layers.iter().zip(local).enumerate() {
        let lw = format!("{what} layer {}", i + 1);
        let Some(layer) = VerifiedLayer::new(layer, at, &lw) else {
            continue;
        };
        layer.walk(|entry| {
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = normalize(&raw).trim_start_matches('/').to_string();
            if path.is_empty() || path.split('/').any(|c| c.starts_with(".wh.")) {
                return Ok(());
            }
            let comps: Vec<&str> = path.split('/').collect();
            if let [.., e, b, f] = comps.as_slice()
                && *b == "bin"
                && *f == "beam.smp"
                && let Some(v) = e.strip_prefix("erts-")
            {
                let root = path[..path.len() - format!("{e}/bin/beam.smp").len()].to_string();
                scan.erts.push((root, v.to_string()));
            }
            for i in (0..comps.len().saturating_sub(1)).filter(|&i| comps[i] == "lib") {
                if let Some((app, vsn)) = comps[i + 1].rsplit_once('-')
                    && apps.contains(app)
                {
                    let root = comps[..i]
                        .iter()
                        .map(|c| format!("{c}/"))
                        .collect::<String>();
                    scan.apps
                        .entry((root, app.to_string()))
                        .or_default()
                        .insert(vsn.to_string());
                }
            }
            if !interesting(&path) {
                return Ok(());
            }
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Ok(Some(t)) = entry.link_name() {
                    let t = t.to_string_lossy().into_owned();
                    // Hard links name the other path from the image root.
                    let t = if kind.is_hard_link() {
                        format!("/{t}")
                    } else {
                        t
                    };
                    scan.links.insert(path, t);
                }
            } else if kind.is_file() {
                let (d, _) = cache.put_stream(&mut *entry, &lw)?;
                scan.staged.insert(path.clone(), cache.blob_path(&d));
                digests.insert(path, d.to_string());
            }
            Ok(())
        })?;
    }
    Ok((scan, digests))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_paths() {
        assert_eq!(
            app_of("lib/crypto-5.1.4/priv/lib/crypto.so"),
            Some(("crypto".into(), "5.1.4".into()))
        );
        assert_eq!(app_of("lib/my_nif-0.1.0/native/x.so"), None);
        assert!(is_erts("erts-13.1.5/bin/beam.smp"));
        assert!(!is_erts("erts-13.1.5/lib/x.so"));
    }

    #[test]
    fn erts_programs_by_role() {
        for name in [
            "beam.smp",
            "beam.debug.smp",
            "erlexec",
            "erl_child_setup",
            "inet_gethost",
            "epmd",
            "heart",
            "run_erl",
            "to_erl",
            "escript",
            "erl_call",
        ] {
            assert_eq!(
                erts_role(&format!("erts-13.1.5/bin/{name}")),
                Some(Role::RunTime),
                "{name}"
            );
        }
        for name in ["ct_run", "dialyzer", "typer", "erlc", "yielding_c_fun"] {
            assert_eq!(
                erts_role(&format!("erts-13.1.5/bin/{name}")),
                Some(Role::Development),
                "{name}"
            );
        }
        assert_eq!(erts_role("erts-13.1.5/bin/my_tool"), Some(Role::Unknown));
        // Only programs directly in ERTS's bin/.
        assert_eq!(erts_role("erts-13.1.5/bin/sub/ct_run"), None);
        assert_eq!(erts_role("lib/common_test-1.24/priv/bin/ct_run"), None);
        assert_eq!(erts_role("bin/ct_run"), None);
    }

    const AARCH64: u16 = 183;

    /// A scan of an arm64 OTP image under `usr/lib/erlang/` with ERTS 13.1.5, crypto 5.1.4,
    /// and an ELF header (enough for the transplant) at each of `files` (relative to it).
    fn arm64_scan(dir: &Path, files: &[&str]) -> Scan {
        let mut scan = Scan::default();
        let root = "usr/lib/erlang/";
        scan.erts.push((root.into(), "13.1.5".into()));
        scan.apps.insert(
            (root.into(), "crypto".into()),
            BTreeSet::from(["5.1.4".to_string()]),
        );
        for (i, f) in files.iter().enumerate() {
            let mut head = b"\x7fELF\x02\x01\x01".to_vec();
            head.resize(18, 0);
            head.extend(AARCH64.to_le_bytes());
            let staged = dir.join(i.to_string());
            std::fs::write(&staged, head).unwrap();
            scan.staged.insert(format!("{root}{f}"), staged);
        }
        scan
    }

    fn natives_of(rels: &[&str]) -> Vec<Native> {
        rels.iter()
            .map(|r| Native {
                rel: r.to_string(),
                machine: 62,
            })
            .collect()
    }

    const RELEASE_NATIVES: &[&str] = &[
        "erts-13.1.5/bin/beam.smp",
        "erts-13.1.5/bin/erlexec",
        "erts-13.1.5/bin/heart",
        "erts-13.1.5/bin/typer",
        "erts-13.1.5/bin/ct_run",
        "erts-13.1.5/bin/dialyzer",
        "lib/crypto-5.1.4/priv/lib/crypto.so",
    ];

    #[test]
    fn development_tools_the_image_lacks_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        // Debian's erlang-base and erlang-crypto: typer, but no ct_run and no dialyzer.
        let scan = arm64_scan(
            dir.path(),
            &[
                "erts-13.1.5/bin/beam.smp",
                "erts-13.1.5/bin/erlexec",
                "erts-13.1.5/bin/heart",
                "erts-13.1.5/bin/typer",
                "lib/crypto-5.1.4/priv/lib/crypto.so",
            ],
        );
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let chosen = choose(
            &natives_of(RELEASE_NATIVES),
            "13.1.5",
            &scan,
            AARCH64,
            "oci:otp",
            &arm64,
        )
        .unwrap();
        assert_eq!(chosen.root, "usr/lib/erlang/");
        assert_eq!(
            chosen.left_out,
            BTreeSet::from([
                "erts-13.1.5/bin/ct_run".to_string(),
                "erts-13.1.5/bin/dialyzer".to_string()
            ])
        );
        let files: Vec<&String> = chosen.files.keys().collect();
        assert_eq!(
            files,
            [
                "erts-13.1.5/bin/beam.smp",
                "erts-13.1.5/bin/erlexec",
                "erts-13.1.5/bin/heart",
                "erts-13.1.5/bin/typer",
                "lib/crypto-5.1.4/priv/lib/crypto.so"
            ]
        );
    }

    #[test]
    fn run_time_and_unknown_programs_the_image_lacks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let scan = arm64_scan(
            dir.path(),
            &["erts-13.1.5/bin/beam.smp", "erts-13.1.5/bin/erlexec"],
        );
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let err = choose(
            &natives_of(&[
                "erts-13.1.5/bin/beam.smp",
                "erts-13.1.5/bin/heart",
                "erts-13.1.5/bin/my_tool",
                "erts-13.1.5/bin/ct_run",
                "lib/wx-2.2.1/priv/wxe_driver.so",
            ]),
            "13.1.5",
            &scan,
            AARCH64,
            "oci:otp",
            &arm64,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains(
                "erts-13.1.5/bin/heart: oci:otp has no /usr/lib/erlang/erts-13.1.5/bin/heart"
            ),
            "{err}"
        );
        assert!(
            err.contains("erts-13.1.5/bin/my_tool: oci:otp has no /usr/lib/erlang/erts-13.1.5/bin/my_tool (imgbuild does not know what runs my_tool"),
            "{err}"
        );
        // An OTP application's native code the image lacks stays refused, even wx's.
        assert!(
            err.contains("lib/wx-2.2.1/priv/wxe_driver.so: native code of Erlang/OTP's wx, which oci:otp does not hold: add wx to that image (Debian's package erlang-wx)"),
            "{err}"
        );
        assert!(err.contains("--release linux/arm64=DIR"), "{err}");
        // A development tool is not among the refusals.
        assert!(!err.contains("ct_run"), "{err}");
        // A development tool the image has for another machine is refused, not left out.
        let mut wrong = arm64_scan(dir.path(), &["erts-13.1.5/bin/beam.smp"]);
        wrong.staged.insert(
            "usr/lib/erlang/erts-13.1.5/bin/ct_run".into(),
            std::env::current_exe().unwrap(),
        );
        let err = choose(
            &natives_of(&["erts-13.1.5/bin/beam.smp", "erts-13.1.5/bin/ct_run"]),
            "13.1.5",
            &wrong,
            AARCH64,
            "oci:otp",
            &arm64,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains(
                "erts-13.1.5/bin/ct_run: /usr/lib/erlang/erts-13.1.5/bin/ct_run in oci:otp is for"
            ),
            "{err}"
        );
    }

    #[test]
    fn left_out_files_leave_the_layers_with_their_links() {
        let file = |path: &str| crate::release::Entry {
            path: path.into(),
            source: Some(PathBuf::from("/nowhere")),
            kind: EntryKind::File { size: 1 },
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        let link = |path: &str, target: &str| crate::release::Entry {
            kind: EntryKind::Symlink {
                target: target.into(),
            },
            source: None,
            ..file(path)
        };
        let mut plans = vec![LayerPlan {
            kind: crate::oci::LayerKind::Erts,
            entries: vec![
                file("app/erts-13.1.5/bin/beam.smp"),
                file("app/erts-13.1.5/bin/ct_run"),
                file("app/erts-13.1.5/bin/dialyzer"),
                link("app/erts-13.1.5/bin/ct", "ct_run"),
                link("app/bin/ct_run", "../erts-13.1.5/bin/ct_run"),
                link("app/bin/erl", "../erts-13.1.5/bin/erl"),
            ],
        }];
        let staged = PathBuf::from("/cache/beam");
        let t = Transplant {
            report: TransplantReport {
                from: "oci:otp".into(),
                digest: None,
                otp_root: "/usr/lib/erlang".into(),
                files: vec!["erts-13.1.5/bin/beam.smp".into()],
                left_out: vec![
                    "erts-13.1.5/bin/ct_run".into(),
                    "erts-13.1.5/bin/dialyzer".into(),
                ],
            },
            files: BTreeMap::from([("erts-13.1.5/bin/beam.smp".to_string(), (staged.clone(), 7))]),
            left_out: BTreeSet::from([
                "erts-13.1.5/bin/ct_run".to_string(),
                "erts-13.1.5/bin/dialyzer".to_string(),
            ]),
        };
        t.apply(&mut plans, "/app");
        let paths: Vec<&str> = plans[0].entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["app/erts-13.1.5/bin/beam.smp", "app/bin/erl"]);
        assert_eq!(plans[0].entries[0].source.as_ref(), Some(&staged));
        assert_eq!(plans[0].entries[0].kind, EntryKind::File { size: 7 });
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let warning = t.warning(&arm64).unwrap();
        assert!(
            warning.starts_with("left out of the release for linux/arm64: erts-13.1.5/bin/ct_run, erts-13.1.5/bin/dialyzer: development tools"),
            "{warning}"
        );
        assert!(
            warning.contains("oci:otp has no build of them for linux/arm64"),
            "{warning}"
        );
        let json = serde_json::to_value(&t.report).unwrap();
        assert_eq!(
            json["left_out"],
            serde_json::json!(["erts-13.1.5/bin/ct_run", "erts-13.1.5/bin/dialyzer"])
        );
        // Nothing left out: no warning, and no `left_out` in the report.
        let none = Transplant {
            report: TransplantReport {
                left_out: Vec::new(),
                ..t.report.clone()
            },
            files: BTreeMap::new(),
            left_out: BTreeSet::new(),
        };
        assert_eq!(none.warning(&arm64), None);
        assert!(
            serde_json::to_value(&none.report)
                .unwrap()
                .get("left_out")
                .is_none()
        );
    }

    #[test]
    fn reads_the_machine_of_this_binary() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            elf_machine(&exe),
            machine_for(&Platform::host().architecture)
        );
        assert_eq!(elf_machine(Path::new("/etc/hostname")), None);
    }
}
