//! `imgbuild inspect --html`: the page of a real build (the sample release with web assets, one
//! of them named with `<`, `&` and quotes, on the bookworm minbase), checked against the image's
//! layers as GNU tar lists them, then loaded in Debian's headless Chromium: its DOM after the
//! script ran, and a screenshot of the window's size that is not blank.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::{self, TestResult, fail, run, stderr, stdout};

type Failed = libtest_mimic::Failed;

pub const TOOLS: &[&str] = &["umoci", "debootstrap", "mix", "tar", "chromium"];

/// The asset whose name the page must escape.
const HOSTILE: &str = "a<b>&\"c'.svg";

/// The window Chromium draws the page in.
const WINDOW: (u32, u32) = (1400, 1000);

/// `n` bytes of xorshift noise (incompressible, as images and fonts are).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The shared release copied, with a Phoenix-like `priv/static` in its own application (the
/// assets layer).
fn release_with_assets(dir: &Path) -> Result<PathBuf, Failed> {
    let rel = dir.join("rel");
    run(Command::new("cp").arg("-a").arg(lab::release()?).arg(&rel))?;
    let app = std::fs::read_dir(rel.join("lib"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("hello-"))
        })
        .ok_or_else(|| fail("the release has no lib/hello-*"))?;
    let static_dir = app.join("priv/static");
    for (path, size) in [
        ("assets/app-4f2a9c.js", 1_700_000),
        ("assets/app-4f2a9c.css", 300_000),
        ("images/hero-81bb3e.jpg", 2_600_000),
        (HOSTILE, 4_200_000),
        ("favicon-91f3.ico", 15_000),
    ] {
        let file = static_dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, noise(size, size as u64))?;
    }
    Ok(rel)
}

/// The page's escaping, done here again.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The image's layers as the tarball's manifest names them: (digest, blob path) each.
fn layers(out: &Path, x: &Path) -> Result<Vec<(String, PathBuf)>, Failed> {
    std::fs::create_dir_all(x)?;
    run(Command::new("tar").arg("-xf").arg(out).arg("-C").arg(x))?;
    let json = |p: PathBuf| -> Result<Value, Failed> {
        serde_json::from_slice(&std::fs::read(&p)?).map_err(|e| fail(format!("{p:?}: {e}")))
    };
    let blob = |digest: &str| {
        x.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index = json(x.join("index.json"))?;
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| fail("index.json names no manifest"))?;
    let manifest = json(blob(digest))?;
    Ok(manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["digest"].as_str())
        .map(|d| (d.to_string(), blob(d)))
        .collect())
}

/// The regular files of a layer as `tar -tv` lists them: (size, absolute path); whiteouts
/// left out.
fn files_of(layer: &Path) -> Result<Vec<(u64, String)>, Failed> {
    let out = run(Command::new("tar")
        .args(["-tv", "--numeric-owner", "--quoting-style=literal", "-f"])
        .arg(layer))?;
    let mut files = Vec::new();
    for line in stdout(&out).lines().filter(|l| l.starts_with('-')) {
        // mode owner size date time name: the name is what follows the fifth field.
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let name = rest.strip_prefix(' ').unwrap_or(rest);
        let size: u64 = fields[2]
            .parse()
            .map_err(|e| fail(format!("{line:?}: size {e}")))?;
        let path = format!("/{}", name.trim_start_matches("./").trim_start_matches('/'));
        if !path.rsplit('/').next().unwrap_or("").starts_with(".wh.") {
            files.push((size, path));
        }
    }
    Ok(files)
}

/// Run Chromium headless on `args`, killed after two minutes; returns its stdout. Its output
/// goes to files, not pipes: the DOM is larger than a pipe holds, and nothing reads a pipe
/// while it runs.
fn chromium(dir: &Path, args: &[String]) -> Result<String, Failed> {
    let (out_file, err_file) = (dir.join("chromium.out"), dir.join("chromium.err"));
    let mut child = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .args([
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .args(args)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file)?)
        .stderr(std::fs::File::create(&err_file)?)
        .spawn()
        .map_err(|e| fail(format!("start chromium: {e}")))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("chromium {args:?} did not end in 120 s")));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        let said = std::fs::read_to_string(&err_file).unwrap_or_default();
        return Err(fail(format!("chromium {args:?} failed ({status}): {said}")));
    }
    Ok(std::fs::read_to_string(&out_file)?)
}

/// A PNG's width and height (its IHDR chunk, bytes 16..24).
fn png_size(png: &[u8]) -> Result<(u32, u32), Failed> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return Err(fail("not a PNG"));
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok((be(&png[16..20]), be(&png[20..24])))
}

/// A screenshot of `url`: its bytes, after checking it is a PNG of the window's size.
fn screenshot(dir: &Path, url: &str, name: &str) -> Result<Vec<u8>, Failed> {
    let png = dir.join(name);
    chromium(
        dir,
        &[format!("--screenshot={}", png.display()), url.into()],
    )?;
    let bytes = std::fs::read(&png).map_err(|e| fail(format!("no screenshot {png:?}: {e}")))?;
    let size = png_size(&bytes)?;
    if size != WINDOW {
        return Err(fail(format!(
            "screenshot of {url} is {size:?}, not {WINDOW:?}"
        )));
    }
    Ok(bytes)
}

/// What the page holds and must not hold, checked on its source.
fn check_source(page: &str, digests: &[String], largest: &[(u64, String)]) -> TestResult {
    for d in digests {
        if !page.contains(d.as_str()) {
            return Err(fail(format!("the page lacks layer {d}")));
        }
    }
    for (size, path) in largest {
        if !page.contains(&escaped(path)) {
            return Err(fail(format!("the page lacks {path} ({size} bytes)")));
        }
    }
    // Escaped, not raw.
    assert!(
        page.contains(&escaped(HOSTILE)),
        "the hostile name is not on the page"
    );
    assert!(!page.contains(HOSTILE) && !page.contains("<b>"));
    // Nothing outside the page: no link, no source, no address but the SVG namespace.
    let own = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for bad in [
        "<link", "src=\"", "href=\"", "url(", "@import", "http://", "https://",
    ] {
        assert!(!own.contains(bad), "the page holds {bad:?}");
    }
    assert_eq!(page.matches("<script").count(), 1, "one inline script");
    Ok(())
}

pub fn test_page_of_a_real_image_in_chromium() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let dir = lab::scratch_dir("html");
    let rel = release_with_assets(&dir)?;
    let out = dir.join("out.tar");
    run(lab::imgbuild()
        .arg("build")
        .arg(&rel)
        .arg("--from")
        .arg(format!("oci:{}:bookworm", lab::base_layout()?.display()))
        .args(["-t", "html/hello:1", "-o"])
        .arg(&out))?;

    let page_path = dir.join("page.html");
    let inspected = run(lab::imgbuild()
        .arg("inspect")
        .arg(&out)
        .arg("--html")
        .arg(&page_path))?;
    let said = stderr(&inspected);
    assert!(
        said.contains(&format!("wrote {}", page_path.display())) && said.contains(" compressed, "),
        "{said}"
    );
    assert!(
        stdout(&inspected).contains("layers ("),
        "the usual text goes on"
    );
    let page = std::fs::read_to_string(&page_path)?;

    // What tar says the image holds.
    let layers = layers(&out, &dir.join("x"))?;
    assert!(layers.len() >= 5, "{layers:?}");
    let mut all = Vec::new();
    for (_, blob) in &layers {
        all.extend(files_of(blob)?);
    }
    all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    all.truncate(10);
    assert!(all.iter().any(|(_, p)| p.ends_with(HOSTILE)), "{all:?}");
    let digests: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    check_source(&page, &digests, &all)?;

    // The same image, the same page; a destination that cannot be written: one error naming
    // it, nothing written.
    let again = dir.join("again.html");
    run(lab::imgbuild()
        .arg("inspect")
        .arg(&out)
        .arg("--html")
        .arg(&again))?;
    assert!(
        std::fs::read(&again)? == page.as_bytes(),
        "two pages of one image differ"
    );
    let bad = dir.join("missing/page.html");
    let failed = lab::imgbuild()
        .arg("inspect")
        .arg(&out)
        .arg("--html")
        .arg(&bad)
        .output()?;
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("missing/page.html"),
        "{}",
        stderr(&failed)
    );
    assert!(!dir.join("missing").exists());

    // Chromium: the DOM after the script ran holds the picture and the tables.
    let url = format!("file://{}", page_path.display());
    let dom = chromium(&dir, &["--dump-dom".into(), url.clone()])?;
    assert!(
        dom.contains("<svg") && dom.contains("id=\"status\""),
        "{dom:.2000}"
    );
    assert_eq!(
        dom.matches("<rect ").count(),
        page.matches("<rect ").count(),
        "every cell in the DOM"
    );
    for d in &digests {
        assert!(dom.contains(d.as_str()), "the DOM lacks {d}");
    }

    // The script: a pointer over a cell puts its tooltip in the status line (a copy of the
    // page with a line that moves the pointer there).
    let hover = dir.join("hover.html");
    let moved = "<script>var r=document.querySelectorAll('svg rect');\
                 r[r.length-1].dispatchEvent(new MouseEvent('mouseover',{bubbles:true}));</script>";
    std::fs::write(&hover, page.replace("</body>", &format!("{moved}</body>")))?;
    let dom = chromium(
        &dir,
        &["--dump-dom".into(), format!("file://{}", hover.display())],
    )?;
    let status = dom
        .split("<p id=\"status\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or("");
    assert!(
        status.contains(" · layer ") && status.ends_with('B'),
        "status: {status:?}"
    );

    // A screenshot of the window's size, not blank: far larger than a blank page's.
    let shot = screenshot(&dir, &url, "page.png")?;
    let blank_page = dir.join("blank.html");
    std::fs::File::create(&blank_page)?.write_all(b"<!DOCTYPE html><title>blank</title>")?;
    let blank = screenshot(
        &dir,
        &format!("file://{}", blank_page.display()),
        "blank.png",
    )?;
    assert!(
        shot.len() > 20 * blank.len() && shot.len() > 50_000,
        "the screenshot ({} bytes) looks blank (a blank page's: {} bytes)",
        shot.len(),
        blank.len()
    );
    eprintln!(
        "html: page {} bytes, {} cells; screenshot {} bytes (blank {})",
        page.len(),
        page.matches("<rect ").count(),
        shot.len(),
        blank.len()
    );
    Ok(())
}
