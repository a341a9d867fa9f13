//! The release on its base: the runtime packages installed over the base's tree (`auto`
//! chooses them from what the check finds missing), then the start-up check of the whole.

use super::base::Summary;
use super::{BuildRequest, LauncherMode, requested_names, stages, tar_options};
use crate::apt::PackageRequest;
use crate::apt::debian::DebBase;
use crate::blocking;
use crate::check::{self, CheckFailure, CheckReport, ImageEnv};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::launch::{self, Launcher};
use crate::mutate;
use crate::oci::Image;
use crate::release::{LayerPlan, Release};
use crate::report::Reporter;
use crate::sbom::{self, DebPackage};
use crate::source::Source;

/// What reading the base told: the check's report, the Debian packages, os-release.
pub(super) struct Seen {
    pub(super) check: Option<CheckReport>,
    pub(super) debs: Vec<DebPackage>,
    pub(super) os: Option<(String, String)>,
    pub(super) warnings: Vec<String>,
    /// The runtime packages' layer, when `--package` asked for some.
    pub(super) packages: Option<stages::PackageLayer>,
    /// The packages as pinned (SHA256, URL), for the provenance.
    pub(super) locked: Vec<crate::apt::Locked>,
    /// Pins resolved afresh, for the lock file once the build has succeeded.
    pub(super) new_lock: Option<crate::apt::LockFile>,
    /// The package names asked for (see [`REQUESTED_LABEL`]).
    pub(super) requested: Vec<String>,
    /// Where the base's summary came from (see [`BaseReport::summary`]).
    pub(super) summary: &'static str,
    /// imgbuild's launcher in place of the start script, when the image starts without a shell.
    pub(super) launcher: Option<Launcher>,
}

/// Whether the image starts through imgbuild's launcher: as asked, or (`auto`) when the base
/// has no `/bin/sh` for the release's scripts. A release the launcher cannot start (an env.sh
/// that needs a shell, say) is refused here, before anything is written; only an unchecked
/// `auto` build goes on without it, with a warning.
pub(super) fn choose_launcher(
    fs: &crate::fs::RootFs,
    release: &Release,
    req: &BuildRequest,
    warnings: &mut Vec<String>,
) -> Result<Option<Launcher>> {
    let wanted = match req.launcher {
        LauncherMode::Always => true,
        LauncherMode::Never => false,
        LauncherMode::Auto => !fs.is_executable_file("/bin/sh"),
    };
    if !wanted {
        return Ok(None);
    }
    match launch::for_release(release, &req.settings.workdir) {
        Ok(l) => Ok(Some(l)),
        Err(e) if req.launcher == LauncherMode::Auto && !req.check => {
            warnings.push(format!(
                "the base has no /bin/sh and imgbuild's launcher cannot start this release: {e}"
            ));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The release's scripts the check looks at: with the launcher, none (it replaces the start
/// script; the other scripts of `bin/`, Phoenix's `server` and `migrate`, cannot run without a
/// shell and are told about, with what to run instead).
fn scripts_to_check(
    plans: &[LayerPlan],
    workdir: &str,
    launcher: Option<&Launcher>,
    fs: &crate::fs::RootFs,
) -> Result<(check::Scripts, Vec<String>)> {
    let scripts = check::release_scripts(plans, workdir)?;
    let Some(l) = launcher else {
        return Ok((scripts, Vec::new()));
    };
    let mut warnings = Vec::new();
    for (path, text) in scripts {
        if path.trim_start_matches('/') == l.path {
            continue;
        }
        let interp = text
            .lines()
            .next()
            .and_then(|f| f.strip_prefix("#!"))
            .and_then(|f| f.split_whitespace().next())
            .unwrap_or("");
        if !interp.is_empty() && !fs.is_executable_file(interp) {
            warnings.push(format!(
                "{path} is a script for {interp}, which the image does not have: run the release's commands through /{} instead (`start`, `eval EXPR`, `remote`, `rpc EXPR`{}), e.g. `docker run IMAGE eval 'MyApp.Release.migrate()'`",
                l.path,
                if l.default_command == "server" { ", `server`" } else { "" }
            ));
        }
    }
    Ok((Vec::new(), warnings))
}

/// The sonames the release's programs link (its ELF files read as the check reads them, from
/// the check's cache), for what a slim `deb:` base keeps.
async fn release_links(
    plans: &[LayerPlan],
    req: &BuildRequest,
    cache: &crate::cache::Cache,
) -> Result<Vec<String>> {
    let (plans, opts, c) = (plans.to_vec(), tar_options(req), cache.clone());
    blocking(move || {
        let mut fs = crate::fs::RootFs::new();
        let keys: Vec<_> = plans
            .iter()
            .map(|p| crate::layer::stat_key(&p.entries, opts))
            .collect();
        let elves = check::add_entries_cached(&mut fs, &plans, &keys, &c)?;
        let mut linked: Vec<String> = elves.into_iter().flat_map(|(_, e)| e.needed).collect();
        linked.sort();
        linked.dedup();
        Ok(linked)
    })
    .await
}

/// `--package auto`: exactly the Debian packages the start-up check finds missing (by the
/// libraries the release needs and the base lacks), plus `ca-certificates` when the release
/// uses `:ssl` or `:public_key` and the base has no CA bundle. Says which and why; the lock
/// then pins them like any others.
pub(super) async fn auto_packages(
    fs: &crate::fs::RootFs,
    release: &Release,
    plans: &[LayerPlan],
    req: &BuildRequest,
    asked: &PackageRequest,
    base: &Image,
    reporter: &dyn Reporter,
) -> Result<PackageRequest> {
    let explicit: Vec<String> = asked
        .packages
        .iter()
        .filter(|p| *p != "auto")
        .cloned()
        .collect();
    let (fs, plans, arch2) = (
        fs.clone(),
        plans.to_vec(),
        base.config.architecture().to_string(),
    );
    let env = ImageEnv::from_env(&mutate::final_env(base, &req.settings));
    let deb_base = asked.deb.is_some();
    let report = blocking(move || {
        let mut fs = fs;
        let elves = check::add_entries(&mut fs, &plans)?;
        if deb_base {
            // A deb: base always gets libc6, whose loader is not in the skeleton yet: taken as
            // there, the check names every library the programs need, not just the loader.
            for interp in elves.iter().filter_map(|(_, e)| e.interpreter.as_deref()) {
                if !fs.exists(interp) {
                    let at = fs.physical(interp, false);
                    fs.insert(
                        &at,
                        crate::fs::Node::File {
                            mode: 0o755,
                            elf: None,
                            not_elf: false,
                        },
                    );
                }
            }
        }
        // Only libraries map to packages: the scripts are the check's, later.
        Ok((check::check(&fs, &elves, &[], &arch2, &env), fs))
    })
    .await?;
    let (report, fs) = report;
    // What no package fixes (a library of unknown origin, too old a glibc) is left to the
    // check, which runs next and says what to do.
    let mut chosen: Vec<(String, String)> = Vec::new();
    for p in &report.problems {
        if let Some(pkg) = check::debian_package_for(&p.needs)
            && !chosen.iter().any(|(c, _)| c == pkg)
        {
            let file = p.file.rsplit('/').next().unwrap_or(&p.file);
            chosen.push((pkg.to_string(), format!("{file} needs {}", p.needs)));
        }
    }
    let tls = release
        .applications
        .iter()
        .find(|a| a.name == "ssl" || a.name == "public_key");
    if let Some(app) = tls
        && !fs.exists("/etc/ssl/certs/ca-certificates.crt")
    {
        chosen.push((
            "ca-certificates".into(),
            format!(
                "the release uses :{} and the base has no CA bundle",
                app.name
            ),
        ));
    }
    if chosen.is_empty() {
        reporter.step("--package auto: the base has everything the release needs");
    } else {
        reporter.step(&format!(
            "--package auto: {}",
            chosen
                .iter()
                .map(|(p, why)| format!("{p} ({why})"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut packages = explicit;
    for (p, _) in chosen {
        if !packages.contains(&p) {
            packages.push(p);
        }
    }
    Ok(PackageRequest {
        packages,
        ..asked.clone()
    })
}

/// What a `deb:` base always installs: the C library, which the skeleton lacks, and libc-bin,
/// which ships the `C.UTF-8` locale the image's `LANG` names (without it glibc falls back to
/// `C` and the VM's filename encoding is latin1). libc-bin needs nothing but libc6.
const DEB_BASE_PACKAGES: [&str; 2] = ["libc6", "libc-bin"];

/// The packages asked for, as the base makes them: a `deb:` base's come from its suite (with
/// imgbuild's Debian keys and the shell-less rules) and always include
/// [`DEB_BASE_PACKAGES`]; any other base's come from its own apt sources.
pub(super) fn asked_packages(req: &BuildRequest) -> PackageRequest {
    let mut asked = req.packages.clone();
    match &req.from {
        Source::Deb { suite } => {
            let deb = deb_request(*suite, asked.deb.take(), &mut asked.packages);
            asked.deb = Some(deb);
        }
        _ => asked.deb = None,
    }
    asked
}

/// A `deb:SUITE` base's side of a package request, for build and rebase alike: the suite with
/// the mirror `asked` gives (else Debian's), and [`DEB_BASE_PACKAGES`] added to `packages`.
pub(super) fn deb_request(
    suite: crate::apt::debian::Suite,
    asked: Option<DebBase>,
    packages: &mut Vec<String>,
) -> DebBase {
    for always in DEB_BASE_PACKAGES {
        if !packages.iter().any(|p| p == always) {
            packages.push(always.into());
        }
    }
    DebBase {
        suite,
        mirror: asked.map(|d| d.mirror).unwrap_or_default(),
    }
}

/// Read the base's files into a virtual tree (for the SBOM's packages), install the runtime
/// packages into a layer of their own, add the release, and unless turned off check that the
/// image can start.
#[allow(clippy::too_many_arguments)]
pub(super) async fn inspect_image(
    base: &Image,
    summary: Summary,
    release: &Release,
    plans: &[LayerPlan],
    req: &BuildRequest,
    cx: Context<'_>,
) -> Result<Seen> {
    let Context {
        cache, reporter, ..
    } = cx;
    let Summary {
        from: summary_from,
        mut fs,
        mut warnings,
    } = summary;
    let mut debs = sbom::debian_packages(&fs);
    let os = sbom::os_version(&fs);
    let arch = base.config.architecture().to_string();
    let mut packages = None;
    let mut locked = Vec::new();
    let mut new_lock = None;
    let launcher = choose_launcher(&fs, release, req, &mut warnings)?;
    if let Some(l) = &launcher {
        reporter.step(&format!(
            "{}: /{} is imgbuild's launcher (start, eval, remote, rpc … without a shell; `{}` when given no command)",
            if matches!(req.launcher, LauncherMode::Always) {
                "--launcher always"
            } else {
                "the base has no /bin/sh"
            },
            l.path,
            l.default_command
        ));
    }
    let asked = asked_packages(req);
    let auto;
    let packages_req = if asked.packages.iter().any(|p| p == "auto") {
        auto = auto_packages(&fs, release, plans, req, &asked, base, reporter).await?;
        &auto
    } else {
        &asked
    };
    if !packages_req.packages.is_empty() {
        let env = mutate::final_env(base, &req.settings);
        let linked = match packages_req.deb {
            Some(_) => release_links(plans, req, cache).await?,
            None => Vec::new(),
        };
        let installed =
            stages::install_packages(packages_req, fs, &arch, &env, &mut debs, &linked, cx).await?;
        fs = installed.fs;
        locked = installed.locked;
        new_lock = installed.new_lock;
        packages = Some(installed.layer);
        warnings.extend(installed.warnings);
    }
    let check = if req.check {
        let (plans, workdir) = (plans.to_vec(), req.settings.workdir.clone());
        let env = ImageEnv::from_env(&mutate::final_env(base, &req.settings));
        let (c, opts) = (cache.clone(), tar_options(req));
        let release = release.clone();
        let l = launcher.clone();
        let (report, script_warnings) = blocking(move || {
            let mut fs = fs;
            let keys: Vec<_> = plans
                .iter()
                .map(|p| crate::layer::stat_key(&p.entries, opts))
                .collect();
            let elves = check::add_entries_cached(&mut fs, &plans, &keys, &c)?;
            let (scripts, warnings) = scripts_to_check(&plans, &workdir, l.as_ref(), &fs)?;
            Ok((
                check::check_release(&fs, &elves, &scripts, &arch, &env, &release, &workdir),
                warnings,
            ))
        })
        .await?;
        warnings.extend(script_warnings);
        Some(report)
    } else {
        None
    };
    match &check {
        None => warnings.push(
            "--no-check: the image was not checked against the base; it may fail at start".into(),
        ),
        Some(report) if !report.problems.is_empty() => {
            return Err(Error::Check(CheckFailure::new(report.clone())));
        }
        Some(report) => reporter.step(&format!(
            "check: {} can start here ({} ELF files resolved{})",
            release.name,
            report.elf_files,
            report
                .glibc
                .as_ref()
                .map(|g| format!(", glibc {g}"))
                .unwrap_or_default()
        )),
    }
    Ok(Seen {
        check,
        debs,
        os,
        warnings,
        packages,
        locked,
        new_lock,
        requested: requested_names(&packages_req.packages),
        summary: summary_from,
        launcher,
    })
}
