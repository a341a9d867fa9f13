//! The Markdown summary of a build, where CI shows one: appended to the file named by
//! `GITHUB_STEP_SUMMARY` (GitHub Actions shows it on the run's page) and written to
//! `--summary FILE` (for GitLab, Buildkite or a pull-request comment). Built from the same
//! report `--json` prints, so the two never disagree.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use imgbuild::error::{Error, Result};
use imgbuild::pipeline::{BuildReport, LayerRecord, Report};
use imgbuild::report::human_size;
use imgbuild::sink::engine::LoadReport;
use imgbuild::sink::registry::PushReport;

/// What a build did, as the summary tells it.
pub(crate) struct Facts<'a> {
    pub report: &'a Report,
    pub output: Option<&'a str>,
    pub oci_layout: Option<&'a str>,
    pub push: Option<&'a PushReport>,
    pub load: Option<&'a LoadReport>,
    /// Manifests signed (with their provenance attested), 0 when unsigned.
    pub signed: usize,
}

/// The summary as Markdown.
pub(crate) fn markdown(f: &Facts) -> String {
    let mut md = String::new();
    let (tags, warnings) = match f.report {
        Report::Image(r) => (&r.tags, &r.warnings),
        Report::Index(r) => (&r.tags, &r.warnings),
    };
    let name = tags.first().map(String::as_str).unwrap_or("image");
    let _ = writeln!(md, "### imgbuild: `{name}`\n");
    md.push_str("| | |\n|---|---|\n");
    match f.report {
        Report::Image(r) => {
            row(&mut md, "image", &code(&r.digest));
            row(&mut md, "platform", &r.platform);
        }
        Report::Index(r) => {
            row(&mut md, "index", &code(&r.digest));
            let platforms: Vec<&str> = r.platforms.iter().map(|p| p.platform.as_str()).collect();
            row(&mut md, "platforms", &platforms.join(", "));
        }
    }
    row(&mut md, "tags", &list(tags.iter().map(|t| code(t))));
    let where_to = [
        f.output.map(|o| format!("tarball {}", code(o))),
        f.oci_layout.map(|o| format!("OCI layout {}", code(o))),
        f.push
            .map(|p| format!("pushed to {}", list(p.tags.iter().map(|t| code(t))))),
        f.load.map(|l| format!("{} into {}", l.action, l.engine)),
    ];
    row(&mut md, "written", &list(where_to.into_iter().flatten()));
    if let Some(p) = f.push {
        let sent: u64 = p.repositories.iter().map(|r| r.bytes_uploaded).sum();
        let there: u64 = p.repositories.iter().map(|r| r.bytes_existing).sum();
        row(
            &mut md,
            "bytes pushed",
            &format!(
                "{} sent, {} already there",
                human_size(sent),
                human_size(there)
            ),
        );
        if let Some(s) = &p.sbom {
            row(
                &mut md,
                "SBOM referrer",
                &format!("{} ({})", code(&s.digest), s.method),
            );
        }
    }
    if f.signed > 0 {
        row(
            &mut md,
            "signatures",
            &format!("{} manifest(s) signed, SLSA provenance attested", f.signed),
        );
    }
    match f.report {
        Report::Image(r) => image(&mut md, r, None),
        Report::Index(r) => {
            for p in &r.platforms {
                image(&mut md, p, Some(&p.platform));
            }
        }
    }
    if let Some(p) = f.push {
        md.push_str("\n#### Push\n\n| repository | uploaded | mounted | already there | bytes sent | bytes not sent |\n|---|--:|--:|--:|--:|--:|\n");
        for r in &p.repositories {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                code(&r.repository),
                r.uploaded,
                r.mounted,
                r.existing,
                human_size(r.bytes_uploaded),
                human_size(r.bytes_existing)
            );
        }
    }
    let mut all_warnings: Vec<&String> = warnings.iter().collect();
    if let Report::Index(r) = f.report {
        all_warnings.extend(r.platforms.iter().flat_map(|p| &p.warnings));
    }
    if !all_warnings.is_empty() {
        md.push_str("\n#### Warnings\n\n");
        for w in all_warnings {
            let _ = writeln!(md, "- {}", w.replace('\n', " "));
        }
    }
    md
}

/// One image's facts: its base, check, packages, SBOM and layers (`platform` heads them in an
/// index).
fn image(md: &mut String, r: &BuildReport, platform: Option<&str>) {
    if let Some(p) = platform {
        let _ = writeln!(md, "\n#### {p}: {}\n", code(&r.digest));
        md.push_str("| | |\n|---|---|\n");
    }
    let base = match &r.base.digest {
        Some(d) => format!("{}@{}", code(&r.base.name), code(d)),
        None => code(&r.base.name),
    };
    row(md, "base", &base);
    let check = match &r.check {
        None => "skipped (--no-check)".to_string(),
        Some(c) if c.problems.is_empty() => format!(
            "passed: the release can start here ({} ELF files checked{})",
            c.elf_files,
            c.glibc
                .as_ref()
                .map(|g| format!(", glibc {g}"))
                .unwrap_or_default()
        ),
        Some(c) => format!("{} problem(s)", c.problems.len()),
    };
    row(md, "start-up check", &check);
    let packages = &r.materials.packages;
    row(
        md,
        "packages installed",
        &if packages.is_empty() {
            "none".to_string()
        } else {
            list(packages.iter().map(|p| format!("{} {}", p.name, p.version)))
        },
    );
    row(
        md,
        "SBOM",
        &format!(
            "{} in {} ({} applications, {} Debian packages)",
            code(&r.sbom.digest),
            code(&r.sbom.path),
            r.sbom.applications,
            r.sbom.debian_packages
        ),
    );
    let heading = if platform.is_some() { "#####" } else { "####" };
    let _ = writeln!(
        md,
        "\n{heading} Layers\n\n| # | kind | size | where it came from |\n|--:|---|--:|---|"
    );
    for (i, l) in r.layers.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            i + 1,
            l.kind.as_str(),
            human_size(l.size),
            origin(l)
        );
    }
}

/// Where a layer came from, in words.
fn origin(l: &LayerRecord) -> &'static str {
    match l.origin {
        None => "the base",
        Some("written") => "new: written by this build",
        Some("cache") => "reused: the local layer cache",
        Some("cache-repo") => "reused: the cache repository",
        Some(_) => "reused",
    }
}

fn row(md: &mut String, key: &str, value: &str) {
    let _ = writeln!(md, "| {key} | {} |", value.replace('|', "\\|"));
}

fn code(s: &str) -> String {
    format!("`{}`", s.replace('`', "'"))
}

fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Write the summary: to `file` (replaced whole, through a temporary file) and appended to
/// `GITHUB_STEP_SUMMARY` when that is set.
pub(crate) fn write(markdown: &str, file: Option<&Path>) -> Result<()> {
    if let Some(path) = file {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| Error::io("create a file in", dir, e))?;
        tmp.write_all(markdown.as_bytes())
            .map_err(|e| Error::io("write", path, e))?;
        tmp.persist(path)
            .map_err(|e| Error::io("write", path, e.error))?;
    }
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        let path = Path::new(&path);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("open GITHUB_STEP_SUMMARY", path, e))?;
        f.write_all(format!("{markdown}\n").as_bytes())
            .map_err(|e| Error::io("append to", path, e))?;
    }
    Ok(())
}
