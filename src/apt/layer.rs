//! The package layer: every package's files put where dpkg would put them, dpkg's database
//! with the new entries, and what maintainer scripts would have made that a runtime image
//! needs (ca-certificates' bundle and links).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::lock::{LockFile, Locked};
use super::{deb, index, x509};
use crate::cache::Cache;
use crate::error::{Error, ImageError, IoContext, Result};
use crate::fs::RootFs;
use crate::oci::digest;
use crate::release::{Entry, EntryKind, LayerKind, LayerPlan};
use crate::sbom::DebPackage;

/// What [`package_layer`] made.
pub struct PackageLayer {
    pub plan: LayerPlan,
    /// The packages, for the SBOM.
    pub debs: Vec<DebPackage>,
    pub notes: Vec<String>,
    /// Packages with an install-time maintainer script, which was not run: see
    /// [`scripts_not_run`](super::scripts_not_run) for what that means for each.
    pub scripts_not_run: Vec<String>,
}

/// The package layer: every package's files, dpkg's database with the new entries, and what
/// maintainer scripts would have made that a runtime image needs.
/// With `slim` (a `deb:` base; the sonames the release's programs link), what [`Slim`] leaves
/// out is left out of the layer (dpkg's lists still name it, as with dpkg's `path-exclude`).
pub fn package_layer(
    lock: &LockFile,
    fs: &RootFs,
    cache: &Cache,
    staging: &Path,
    slim: Option<&[String]>,
) -> Result<PackageLayer> {
    let mut unpacked = Unpacked {
        slim: slim.map(|linked| Slim {
            linked: linked.iter().cloned().collect(),
        }),
        ..Unpacked::default()
    };
    // The tree as dpkg would see it while unpacking: the base, then each package's directories
    // and links as they come, so that a path goes through every directory link before it.
    let mut view = fs.clone();
    for (p, files) in lock
        .packages
        .iter()
        .zip(unpack_all(&lock.packages, cache, staging)?)
    {
        unpacked.add(p, files, &mut view)?;
    }
    let Unpacked {
        mut notes,
        mut entries,
        status_stanzas,
        debs,
        installed_names,
        scripts_not_run,
        left_out,
        ..
    } = unpacked;
    if left_out > 0 {
        notes.push(format!(
            "left out {left_out} files a runtime image does not read (documentation but the copyright files, manual pages, translations, glibc's iconv modules and tools, libraries nothing links)"
        ));
    }
    let status = dpkg_status(fs, &installed_names, status_stanzas);
    let meta = staging.join("dpkg");
    std::fs::create_dir_all(&meta).ctx("create", &meta)?;
    entries.insert(
        "var/lib/dpkg/status".into(),
        generated(&meta, "var/lib/dpkg/status", status.as_bytes())?,
    );
    if installed_names.contains("ca-certificates") {
        ca_bundle(&mut entries, fs, &meta)?;
        notes.push(
            "ca-certificates: built /etc/ssl/certs/ca-certificates.crt as update-ca-certificates would (maintainer scripts are not run)".into(),
        );
    }
    add_parents(&mut entries);
    let mut list: Vec<Entry> = entries.into_values().collect();
    list.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    Ok(PackageLayer {
        plan: LayerPlan {
            kind: LayerKind::Packages,
            entries: list,
        },
        debs,
        notes,
        scripts_not_run,
    })
}

/// The packages unpacked so far: the layer's entries by path, their dpkg status stanzas and
/// what the SBOM and the user are told.
#[derive(Default)]
struct Unpacked {
    notes: Vec<String>,
    entries: BTreeMap<String, Entry>,
    status_stanzas: Vec<String>,
    debs: Vec<DebPackage>,
    installed_names: BTreeSet<String>,
    scripts_not_run: Vec<String>,
    /// Leave out what [`Slim`] says.
    slim: Option<Slim>,
    left_out: usize,
}

/// What a `deb:` base leaves out: [`left_out_of_slim`]'s paths; libc-bin's programs (only its
/// `C.UTF-8` locale and configuration are of use without a shell: `ldconfig`, `localedef`,
/// `iconv` … are tools, `ldd` a bash script); glibc's libraries that only a program linking them
/// (or a developer preloading one) loads, unless the release links them.
#[derive(Default)]
struct Slim {
    linked: BTreeSet<String>,
}

/// libc6's libraries glibc itself never loads: vector maths, NIS, the compat and hesiod NSS
/// modules (the deb: base's nsswitch.conf names neither), the preload and debugger helpers.
const LIBC_ON_REQUEST: &[&str] = &[
    "libmvec.so.1",
    "libnsl.so.1",
    "libnss_compat.so.2",
    "libnss_hesiod.so.2",
    "libBrokenLocale.so.1",
    "libc_malloc_debug.so.0",
    "libmemusage.so",
    "libpcprofile.so",
    "libthread_db.so.1",
    "sotruss-lib.so",
];

impl Slim {
    fn leaves_out(&self, package: &str, path: &str, dir: bool) -> bool {
        if left_out_of_slim(path) {
            return true;
        }
        if dir {
            return false;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        match package {
            "libc-bin" => !(path.starts_with("usr/lib/locale/") || path.starts_with("etc/")),
            "libc6" => LIBC_ON_REQUEST.contains(&name) && !self.linked.contains(name),
            _ => false,
        }
    }
}

/// What a `deb:` base leaves out of its packages. As Docker's slim Debian images do:
/// documentation (but each package's `copyright`, its licence), manual and info pages,
/// translations, lintian overrides. Beyond them: glibc's iconv modules (`gconv/`, about 8 MB),
/// which the BEAM never loads (its encodings are its own; UTF-8, ASCII and Latin-1 stay built
/// into glibc), so only a NIF converting other charsets with iconv(3) would miss them.
pub(crate) fn left_out_of_slim(path: &str) -> bool {
    let p = path.trim_start_matches('/');
    const TREES: &[&str] = &[
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/lintian",
        "usr/share/linda",
        "usr/share/groff",
    ];
    let under = |dir: &str| p == dir || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
    if TREES.iter().any(|t| under(t)) {
        return true;
    }
    if let Some(rest) = p.strip_prefix("usr/share/doc/") {
        // The package's directory stays, with its copyright file.
        return rest.contains('/') && !rest.ends_with("/copyright");
    }
    // usr/lib/<triplet>/gconv and everything in it.
    let parts: Vec<&str> = p.split('/').collect();
    parts.len() >= 4 && parts[0] == "usr" && parts[1] == "lib" && parts[3] == "gconv"
}

/// One package's `.deb` unpacked into its own staging directory: its control files and its
/// data files as layer entries, in the archive's order.
struct Unpacking {
    what: String,
    dir: PathBuf,
    control: deb::Control,
    files: Vec<Entry>,
}

/// Unpack every locked package (its `.deb` in `cache`) into a directory of its own under
/// `staging`, several at once: decompression (xz, one stream per package) is nearly all of a
/// warm build's packages stage, and packages are independent until they are merged, in lock
/// order, by [`Unpacked::add`]. Results are in `packages`' order; the first error in that
/// order is returned.
fn unpack_all(packages: &[Locked], cache: &Cache, staging: &Path) -> Result<Vec<Unpacking>> {
    let one = |p: &Locked| -> Result<Unpacking> {
        let d = digest::parse(&format!("sha256:{}", p.sha256))?;
        let path = cache.blob_path(&d);
        let what = format!("{}_{}_{}.deb", p.name, p.version, p.architecture);
        let control = deb::read_control(&path, &what)?;
        let dir = deb::staging_dir(staging, &format!("{}-{}", p.name, p.architecture))?;
        let files = deb::unpack_data(&path, &dir, &what)?;
        Ok(Unpacking {
            what,
            dir,
            control,
            files,
        })
    };
    let workers = crate::layer::pgzip::default_threads().min(packages.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<Option<Result<Unpacking>>> = Vec::new();
    done.resize_with(packages.len(), || None);
    let done = std::sync::Mutex::new(done);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(p) = packages.get(i) else { break };
                    let r = one(p);
                    if let Ok(mut d) = done.lock() {
                        d[i] = Some(r);
                    }
                }
            });
        }
    });
    let done = done
        .into_inner()
        .map_err(|_| Error::from(ImageError::Internal("a package unpacker panicked".into())))?;
    done.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Error::from(ImageError::Internal(
                    "a package unpacker panicked".into(),
                )))
            })
        })
        .collect()
}

impl Unpacked {
    /// Add the unpacked package `p`: its files, through the links of `view`, and dpkg's `info/`
    /// files for it.
    fn add(&mut self, p: &Locked, unpacking: Unpacking, view: &mut RootFs) -> Result<()> {
        let Unpacking {
            what,
            dir,
            control,
            files,
        } = unpacking;
        let stanza = index::stanzas(&control.control)
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::from(ImageError::Package(format!("{what}: empty control file")))
            })?;
        let multi_same = stanza.get("Multi-Arch").is_some_and(|m| m == "same");
        let info_name = if multi_same {
            format!("{}:{}", p.name, p.architecture)
        } else {
            p.name.clone()
        };
        // info/<pkg>.list: every path the package owns, as dpkg writes it.
        let mut list = String::from("/.\n");
        for f in &files {
            list.push_str(&format!("/{}\n", f.path));
        }
        let mut meta_files = vec![(format!("var/lib/dpkg/info/{info_name}.list"), list)];
        if let Some(m) = &control.md5sums {
            meta_files.push((format!("var/lib/dpkg/info/{info_name}.md5sums"), m.clone()));
        }
        if let Some(c) = &control.conffiles {
            meta_files.push((
                format!("var/lib/dpkg/info/{info_name}.conffiles"),
                c.clone(),
            ));
        }
        for (rel, text) in meta_files {
            self.entries
                .insert(rel.clone(), generated(&dir, &rel, text.as_bytes())?);
        }
        if !control.scripts.is_empty() {
            self.scripts_not_run.push(p.name.clone());
        }
        for f in files {
            let f = through_links(view, f);
            let dir = matches!(f.kind, EntryKind::Dir);
            if let Some(slim) = &self.slim
                && slim.leaves_out(&p.name, &f.path, dir)
            {
                if !dir {
                    self.left_out += 1;
                }
                continue;
            }
            if let Some(have) = self.entries.get(&f.path)
                && !matches!(have.kind, EntryKind::Dir)
                && !matches!(f.kind, EntryKind::Dir)
            {
                self.notes.push(format!(
                    "{} is in more than one package; {} wins",
                    f.path, p.name
                ));
            }
            self.entries.insert(f.path.clone(), f);
        }
        self.status_stanzas.push(status_stanza(&control.control));
        self.installed_names.insert(p.name.clone());
        self.debs.push(DebPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            architecture: p.architecture.clone(),
            source: stanza
                .get("Source")
                .map(|s| s.split_whitespace().next().unwrap_or("").to_string()),
        });
        Ok(())
    }
}

/// dpkg's status: the base's entries (minus any replaced) and the new ones, by name.
fn dpkg_status(
    fs: &RootFs,
    installed_names: &BTreeSet<String>,
    status_stanzas: Vec<String>,
) -> String {
    let base_status = fs
        .contents("/var/lib/dpkg/status")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let mut all: Vec<String> = base_status
        .split("\n\n")
        .map(|s| s.trim_matches('\n').to_string())
        .filter(|s| !s.is_empty())
        .filter(|s| {
            let name = s
                .lines()
                .find_map(|l| l.strip_prefix("Package: "))
                .unwrap_or("");
            !installed_names.contains(name)
        })
        .collect();
    all.extend(status_stanzas);
    all.sort_by(|a, b| {
        let key = |s: &String| {
            s.lines()
                .find_map(|l| l.strip_prefix("Package: ").map(str::to_string))
        };
        key(a).cmp(&key(b))
    });
    all.join("\n\n") + "\n"
}

/// Parents of generated files (dpkg's directories exist in Debian bases; scratch has none).
fn add_parents(entries: &mut BTreeMap<String, Entry>) {
    let paths: Vec<String> = entries.keys().cloned().collect();
    for p in paths {
        let mut parent = p.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            entries.entry(dir.to_string()).or_insert(Entry {
                path: dir.to_string(),
                source: None,
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
            parent = dir;
        }
    }
}

/// A package's entry put where dpkg would put it on this tree: through every directory that is
/// a link (on a merged-/usr base `lib/x86_64-linux-gnu/libtinfo.so.5.9` goes to
/// `usr/lib/x86_64-linux-gnu/`, and `lib/` itself, already there as `/lib -> usr/lib`, to
/// `usr/lib`), so that the layer never replaces a link of the base with a directory. `view`
/// learns the package's own directories and links as they come. dpkg's `.list` files keep the
/// package's own paths, as dpkg writes them: they lead to the same files through the links.
fn through_links(view: &mut RootFs, mut entry: Entry) -> Entry {
    let is_dir = matches!(entry.kind, EntryKind::Dir);
    let physical = view.physical(&entry.path, is_dir);
    entry.path = physical.trim_start_matches('/').to_string();
    match &entry.kind {
        EntryKind::Dir => view.insert(&physical, crate::fs::Node::Dir),
        EntryKind::Symlink { target } => {
            view.insert(&physical, crate::fs::Node::Symlink(target.clone()))
        }
        EntryKind::File { .. } => {}
    }
    entry
}

/// A file imgbuild writes (dpkg metadata, the CA bundle): staged, root-owned, 0644.
fn generated(dir: &Path, rel: &str, bytes: &[u8]) -> Result<Entry> {
    let file = dir.join(rel.replace('/', "%"));
    std::fs::write(&file, bytes).ctx("write", &file)?;
    Ok(Entry {
        path: rel.to_string(),
        source: Some(file),
        kind: EntryKind::File {
            size: bytes.len() as u64,
        },
        mode: 0o644,
        uid: 0,
        gid: 0,
    })
}

fn symlink(path: String, target: String) -> Entry {
    Entry {
        path,
        source: None,
        kind: EntryKind::Symlink { target },
        mode: 0o777,
        uid: 0,
        gid: 0,
    }
}

/// The control stanza as dpkg's status records it: `Status` after `Package`.
fn status_stanza(control: &str) -> String {
    let mut out = String::new();
    for line in control.trim_matches('\n').lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("Package:") {
            out.push_str("Status: install ok installed\n");
        }
    }
    out.trim_end_matches('\n').to_string()
}

/// What `update-ca-certificates` makes: `/etc/ca-certificates.conf` naming every certificate
/// under /usr/share/ca-certificates, `/etc/ssl/certs/<name>.pem` links with OpenSSL's
/// `<subject hash>.N` links to them, and the bundle
/// `/etc/ssl/certs/ca-certificates.crt` (certificates of the base's own bundle kept first).
fn ca_bundle(entries: &mut BTreeMap<String, Entry>, fs: &RootFs, dir: &Path) -> Result<()> {
    let prefix = "usr/share/ca-certificates/";
    let certs: Vec<(String, PathBuf)> = entries
        .values()
        .filter(|e| e.path.starts_with(prefix) && e.path.ends_with(".crt"))
        .filter_map(|e| e.source.clone().map(|s| (e.path.clone(), s)))
        .collect();
    let mut conf = String::from("# Generated by imgbuild (as update-ca-certificates would).\n");
    let mut hashes: BTreeMap<String, u32> = BTreeMap::new();
    let mut bundle = Vec::new();
    if let Some(b) = fs.contents("/etc/ssl/certs/ca-certificates.crt") {
        bundle.extend_from_slice(b);
    }
    for (path, src) in &certs {
        let rel = &path[prefix.len()..];
        conf.push_str(rel);
        conf.push('\n');
        let pem = std::fs::read(src).ctx("read", src)?;
        bundle.extend_from_slice(&pem);
        if !pem.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        let name = rel
            .rsplit('/')
            .next()
            .unwrap_or(rel)
            .replace(".crt", ".pem");
        // OpenSSL's CApath lookup: <subject hash>.N → the certificate.
        if let Some(h) = x509::pem_certificates(&String::from_utf8_lossy(&pem))
            .first()
            .and_then(|der| x509::subject_hash(der))
        {
            let n = hashes.entry(h.clone()).or_insert(0);
            let link = format!("etc/ssl/certs/{h}.{n}");
            *n += 1;
            entries.insert(link.clone(), symlink(link, name.clone()));
        }
        let link = format!("etc/ssl/certs/{name}");
        entries.insert(link.clone(), symlink(link, format!("/{path}")));
    }
    for (rel, bytes) in [
        ("etc/ca-certificates.conf", conf.into_bytes()),
        ("etc/ssl/certs/ca-certificates.crt", bundle),
    ] {
        entries.insert(rel.into(), generated(dir, rel, &bytes)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_paths_go_through_the_bases_directory_links() {
        use crate::fs::Node;
        let mut base = RootFs::new();
        base.insert("/usr/lib/x86_64-linux-gnu", Node::Dir);
        base.insert("/usr/bin", Node::Dir);
        base.insert("/usr/sbin", Node::Dir);
        for (link, target) in [
            ("/lib", "usr/lib"),
            ("/bin", "usr/bin"),
            ("/sbin", "usr/sbin"),
        ] {
            base.insert(link, Node::Symlink(target.into()));
        }
        let entry = |path: &str, kind: EntryKind| Entry {
            path: path.into(),
            source: None,
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        let file = EntryKind::File { size: 1 };
        let link = |t: &str| EntryKind::Symlink { target: t.into() };
        // libtinfo5 as bookworm ships it, then a package with /bin and /sbin programs and a
        // directory link of its own that a later entry goes through.
        let shipped = [
            entry("lib", EntryKind::Dir),
            entry("lib/x86_64-linux-gnu", EntryKind::Dir),
            entry("lib/x86_64-linux-gnu/libtinfo.so.5.9", file.clone()),
            entry(
                "lib/x86_64-linux-gnu/libtinfo.so.5",
                link("libtinfo.so.5.9"),
            ),
            entry("bin/tool", file.clone()),
            entry("sbin/daemon", file.clone()),
            entry("usr/share/tool", EntryKind::Dir),
            entry("usr/share/tool/data", link("../../lib/x86_64-linux-gnu")),
            entry("usr/share/tool/data/extra.so", file.clone()),
        ];
        let mut view = base.clone();
        let placed: Vec<String> = shipped
            .into_iter()
            .map(|e| through_links(&mut view, e).path)
            .collect();
        assert_eq!(
            placed,
            [
                "usr/lib",
                "usr/lib/x86_64-linux-gnu",
                "usr/lib/x86_64-linux-gnu/libtinfo.so.5.9",
                "usr/lib/x86_64-linux-gnu/libtinfo.so.5",
                "usr/bin/tool",
                "usr/sbin/daemon",
                "usr/share/tool",
                "usr/share/tool/data",
                "usr/lib/x86_64-linux-gnu/extra.so",
            ]
        );
        // Put over the base, nothing replaces a link: the check has nothing to say.
        let mut fs = base.clone();
        for p in &placed {
            fs.insert_by(p, Node::Dir, "the packages layer");
        }
        assert!(fs.replaced().is_empty(), "{:?}", fs.replaced());
        // A tree without links keeps every path as the package has it.
        let mut split = RootFs::new();
        split.insert("/lib", Node::Dir);
        let e = through_links(
            &mut split,
            entry("lib/x86_64-linux-gnu/libtinfo.so.5.9", file),
        );
        assert_eq!(e.path, "lib/x86_64-linux-gnu/libtinfo.so.5.9");
    }

    /// Packages unpacked several at once are merged in lock order, as one at a time: the
    /// file two packages ship is the later one's, with a note saying so, whatever order the
    /// unpackers finish in.
    #[test]
    fn packages_unpacked_at_once_merge_in_lock_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path().join("cache")).expect("cache");
        let mut packages = Vec::new();
        for i in 0..9 {
            let name = format!("pkg{i}");
            // A large first package, so that the small ones finish first.
            let big = vec![b'x'; if i == 0 { 4 << 20 } else { 10 }];
            let shared = format!("from {name}");
            let own = format!("./usr/lib/{name}.so");
            let bytes = super::deb::testdeb::deb(
                &name,
                &[
                    (own.as_str(), &big),
                    ("./etc/shared.conf", shared.as_bytes()),
                ],
            );
            let d = cache.put_bytes(&bytes).expect("put");
            packages.push(Locked {
                name,
                version: "1.0".into(),
                architecture: "amd64".into(),
                sha256: d.digest().to_string(),
                size: bytes.len() as u64,
                url: String::new(),
                filename: String::new(),
            });
        }
        let lock = LockFile {
            packages,
            ..LockFile::default()
        };
        let staging = dir.path().join("staging");
        let out =
            package_layer(&lock, &RootFs::new(), &cache, &staging, None).expect("package layer");
        let shared = out
            .plan
            .entries
            .iter()
            .find(|e| e.path == "etc/shared.conf")
            .and_then(|e| e.source.clone())
            .expect("etc/shared.conf");
        assert_eq!(std::fs::read(shared).expect("read"), b"from pkg8");
        let wins: Vec<&String> = out.notes.iter().filter(|n| n.contains("wins")).collect();
        assert_eq!(wins.len(), 8, "{:?}", out.notes);
        assert!(wins[0].ends_with("pkg1 wins"), "{wins:?}");
        assert!(wins[7].ends_with("pkg8 wins"), "{wins:?}");
        let names: Vec<&str> = out.debs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, (0..9).map(|i| format!("pkg{i}")).collect::<Vec<_>>());
        for i in 0..9 {
            let list = format!("var/lib/dpkg/info/pkg{i}.list");
            assert!(out.plan.entries.iter().any(|e| e.path == list), "no {list}");
        }
    }

    #[test]
    fn slim_leaves_out_docs_translations_and_iconv_modules_but_not_licences() {
        for gone in [
            "usr/share/doc/libc6/changelog.Debian.gz",
            "usr/share/doc/libssl3/NEWS.gz",
            "usr/share/man/man1/x.1.gz",
            "usr/share/man",
            "usr/share/info/libc.info.gz",
            "usr/share/locale/de/LC_MESSAGES/libc.mo",
            "usr/share/lintian/overrides/libc6",
            "usr/lib/x86_64-linux-gnu/gconv",
            "usr/lib/x86_64-linux-gnu/gconv/ISO8859-15.so",
            "usr/lib/aarch64-linux-gnu/gconv/gconv-modules",
        ] {
            assert!(left_out_of_slim(gone), "{gone}");
        }
        for kept in [
            "usr/share/doc/libc6/copyright",
            "usr/share/doc/libc6",
            "usr/share/doc",
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            "usr/lib/locale/C.utf8/LC_CTYPE",
            "usr/share/manual",
            "usr/lib/x86_64-linux-gnu/gconvert.so",
            "usr/share/zoneinfo/UTC",
            "etc/ssl/certs/ca-certificates.crt",
        ] {
            assert!(!left_out_of_slim(kept), "{kept}");
        }
    }

    #[test]
    fn slim_keeps_of_libc_bin_the_locale_and_of_libc6_what_is_linked() {
        let slim = Slim {
            linked: ["libm.so.6".to_string(), "libnsl.so.1".to_string()].into(),
        };
        let out = |pkg: &str, path: &str| slim.leaves_out(pkg, path, false);
        assert!(out("libc-bin", "usr/sbin/ldconfig"));
        assert!(out("libc-bin", "usr/bin/ldd"));
        assert!(!out("libc-bin", "usr/lib/locale/C.utf8/LC_CTYPE"));
        assert!(!out("libc-bin", "etc/gai.conf"));
        assert!(!slim.leaves_out("libc-bin", "usr/bin", true));
        assert!(out("libc6", "usr/lib/x86_64-linux-gnu/libmvec.so.1"));
        assert!(out(
            "libc6",
            "usr/lib/x86_64-linux-gnu/audit/sotruss-lib.so"
        ));
        assert!(
            !out("libc6", "usr/lib/x86_64-linux-gnu/libnsl.so.1"),
            "linked"
        );
        assert!(!out("libc6", "usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(!out("libc6", "usr/lib/x86_64-linux-gnu/libm.so.6"));
        assert!(
            !out("libssl3", "usr/lib/x86_64-linux-gnu/libmvec.so.1"),
            "only libc6's"
        );
        assert!(out("libssl3", "usr/share/doc/libssl3/changelog.gz"));
    }

    #[test]
    fn status_stanza_gets_status() {
        assert_eq!(
            status_stanza("Package: libssl3\nVersion: 3\nDescription: x\n y\n"),
            "Package: libssl3\nStatus: install ok installed\nVersion: 3\nDescription: x\n y"
        );
    }
}
