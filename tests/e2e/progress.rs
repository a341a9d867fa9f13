//! What a person sees while a large layer is written: a release carrying 520 MB of static
//! assets (incompressible, as images and fonts are), built once with stderr a terminal
//! (recorded through a pseudo-terminal by `script`) and once with stderr a pipe, as in a CI log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::lab::{self, TestResult, fail, run};

pub const TOOLS: &[&str] = &["umoci", "debootstrap", "mix", "script"];

/// The assets file's size.
const ASSETS: u64 = 520 << 20;

/// The shared release copied, with `ASSETS` bytes of noise in its own application's
/// `priv/static` (the assets layer).
fn release_with_assets(dir: &Path) -> Result<PathBuf, libtest_mimic::Failed> {
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
    std::fs::create_dir_all(&static_dir)?;
    // One MiB of xorshift noise, written over and over: gzip's window is 32 kB, so the
    // repeats do not compress either.
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(static_dir.join("video.bin"))?);
    for _ in 0..(ASSETS >> 20) {
        f.write_all(&block)?;
    }
    f.flush()?;
    Ok(rel)
}

/// The build's arguments: the release on the bookworm layout, to a tarball.
fn build_args(rel: &Path, out: &Path) -> Result<Vec<String>, libtest_mimic::Failed> {
    Ok(vec![
        "build".into(),
        rel.display().to_string(),
        "--from".into(),
        format!("oci:{}:bookworm", lab::base_layout()?.display()),
        "-t".into(),
        "progress/hello:1".into(),
        "-o".into(),
        out.display().to_string(),
    ])
}

/// `text` without terminal control sequences, each redraw on its own line.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters final-byte.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                out.push('\n');
            }
            '\r' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

/// The `imgbuild: layer …` lines of a run's output. On a terminal a line is padded to the
/// width with spaces, and a bar may be drawn right after: a long run of spaces ends it.
fn layer_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split("        ").next().unwrap_or(l).trim())
        .filter(|l| l.starts_with("imgbuild: layer "))
        .map(String::from)
        .collect()
}

pub fn test_progress_of_a_large_layer() -> TestResult {
    if !lab::require(TOOLS)? {
        return Ok(());
    }
    let dir = lab::scratch_dir("progress");
    let rel = release_with_assets(&dir)?;

    // A CI log: stderr a pipe. A fresh cache, so that every layer is written.
    let started = Instant::now();
    let out = run(lab::imgbuild()
        .env("IMGBUILD_CACHE", dir.join("cache-log"))
        .args(build_args(&rel, &dir.join("log.tar"))?))?;
    let took = started.elapsed().as_secs();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let progress: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("imgbuild: writing layer assets: "))
        .collect();
    // Progress lines come while the layer is written, a few seconds apart: at least one for
    // a layer that takes this long, never more than one per 5 s of the whole build.
    assert!(
        !progress.is_empty(),
        "no progress line for the assets layer:\n{log}"
    );
    assert!(
        progress.len() as u64 <= took / 5 + 1,
        "{} progress lines in {took}s:\n{log}",
        progress.len()
    );
    for l in &progress {
        assert!(l.contains(" of 520.") && l.contains("MB/s"), "{l}");
    }
    assert!(
        log.contains("imgbuild: writing layer assets done: "),
        "no end line for the assets layer:\n{log}"
    );
    let logged = layer_lines(&log);
    assert!(logged.iter().any(|l| l.contains(" assets ")), "{log}");

    // A terminal: the same build recorded through a pseudo-terminal.
    let mut cmd = Command::new("script");
    let inner = lab::imgbuild();
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    // A pseudo-terminal starts with no size: give it one, as a terminal window has.
    let line = std::iter::once(inner.get_program().to_string_lossy().into_owned())
        .chain(build_args(&rel, &dir.join("tty.tar"))?)
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let line = format!("stty cols 160 rows 40; exec {line}");
    let typescript = dir.join("typescript");
    run(cmd
        .env("IMGBUILD_CACHE", dir.join("cache-tty"))
        .env("TERM", "xterm")
        .args(["-q", "-f", "-e", "-c", &line])
        .arg(&typescript))?;
    // Lines printed above the bars are padded to the terminal's width rather than ended:
    // each starts on a line of its own here.
    let screen = plain(&String::from_utf8_lossy(&std::fs::read(&typescript)?))
        .replace("imgbuild: ", "\nimgbuild: ");
    // The bar moved: it was drawn at several positions while the layer was written.
    let mut positions: Vec<&str> = screen
        .lines()
        .filter(|l| l.contains("writing") && l.contains("layer assets") && l.contains('['))
        .filter_map(|l| l.split(']').nth(1))
        .filter_map(|rest| rest.split('/').next())
        .map(str::trim)
        .collect();
    positions.dedup();
    assert!(
        positions.len() >= 3,
        "the assets bar did not move ({positions:?}):\n{screen}"
    );
    // Every line the log run printed about its layers is on the terminal too (the same
    // inputs, so the same digests).
    let shown = layer_lines(&screen);
    for l in &logged {
        assert!(
            shown.contains(l),
            "{l:?} missing on the terminal:\n{screen}"
        );
    }
    assert!(
        screen.contains("imgbuild: writing layer assets done: "),
        "the bar's end line is missing:\n{screen}"
    );
    Ok(())
}
