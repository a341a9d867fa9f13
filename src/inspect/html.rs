//! `imgbuild inspect --html FILE`: one self-contained page (no network, nothing outside it)
//! that shows where an image's bytes are. A treemap drawn as inline SVG: the image divided
//! among its layers (coloured by kind), each layer among its directories and files, each cell
//! with a tooltip (its path, layer and size); then tables of the image, its layers and its
//! largest files, there without any script. A short script only repeats the hovered cell's
//! tooltip in a status line. Every string taken from the image is escaped. The same image
//! gives the same bytes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::treemap::{self, Cell, Limits, Node, What};
use super::{ImageFiles, Inspection};
use crate::error::{Error, IoContext, Result};
use crate::report::human_size;

/// How many of the image's largest files the page lists.
const LARGEST: usize = 25;

/// Estimated width of a character of the labels (10 px sans-serif), to cut them to fit.
const CHAR_W: f64 = 6.2;

/// Each layer kind's letter (its cells' CSS class), hue and saturation.
const KINDS: [(&str, char, u32, u32); 8] = [
    ("base", 'b', 215, 16),
    ("packages", 'p', 28, 55),
    ("erts", 'e', 4, 62),
    ("deps", 'd', 262, 42),
    ("app", 'a', 135, 45),
    ("assets", 's', 44, 80),
    ("release", 'r', 182, 52),
    ("sbom", 'm', 320, 35),
];

/// The page for `found` and the files of its layers.
pub fn page(found: &Inspection, files: &ImageFiles) -> String {
    let trees: Vec<Node> = files.layers.iter().map(|l| Node::tree(l)).collect();
    let limits = Limits::default();
    let cells = treemap::layout(&trees, &limits);
    let mut out = String::with_capacity(64 << 10);
    let compressed: u64 = found.layers.iter().map(|l| l.size).sum();
    let title = format!("{} — imgbuild inspect", found.source);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width\">\n<title>{}</title>\n\
         <style>\n{}{}</style>\n</head>\n<body>\n",
        esc(&title),
        STYLE,
        fills(&cells, found)
    );
    let _ = writeln!(
        out,
        "<h1>{}</h1>\n<p class=\"sub\">{} · {} · {} layers · {} compressed · {} in {} files</p>",
        esc(&found.source),
        esc(&found.digest),
        esc(&found.platform),
        found.layers.len(),
        human_size(compressed),
        human_size(files.bytes()),
        files.files()
    );
    platforms(&mut out, found);
    out.push_str(
        "<p id=\"status\">Point at the picture: a cell's path, layer and size show here \
         (and in its tooltip).</p>\n",
    );
    svg(&mut out, &cells, found, &limits);
    legend(&mut out, found, files);
    tables(&mut out, found, files, compressed);
    out.push_str(SCRIPT);
    out.push_str("</body>\n</html>\n");
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:16px 20px;color:#111;background:#fff}
h1{font-size:20px;margin:0 0 2px;word-break:break-all}
h2{font-size:16px;margin:22px 0 6px}
.sub,#status,.note{color:#444;margin:2px 0;word-break:break-all}
#status{font-family:ui-monospace,monospace;font-size:12px;min-height:1.4em;white-space:pre-wrap}
svg{display:block;width:100%;height:auto;background:#f4f4f4;border:1px solid #ccc}
svg rect{stroke:#fff;stroke-width:.5}
svg rect:hover{stroke:#000;stroke-width:1.5}
svg text{font:10px sans-serif;fill:#111;pointer-events:none}
svg .h{font-weight:600}
.legend span{display:inline-block;margin:6px 14px 0 0}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border:1px solid #888}
table{border-collapse:collapse;font-size:13px}
td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
th{border-bottom:1px solid #999}
td.n{text-align:right;white-space:nowrap}
.m{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
";

const SCRIPT: &str = "<script>
(function(){var s=document.getElementById('status'),d=s.textContent,g=document.querySelector('svg');
if(!g)return;g.addEventListener('mouseover',function(e){var t=e.target.querySelector&&e.target.querySelector('title');
s.textContent=t?t.textContent.replace(/\\n/g,' · '):d});g.addEventListener('mouseleave',function(){s.textContent=d});})();
</script>
";

/// `s` escaped for HTML text and attribute values; control characters replaced.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate: one decimal, none when it is whole.
fn num(v: f64) -> String {
    let s = format!("{v:.1}");
    match s.strip_suffix(".0") {
        Some(whole) => whole.to_string(),
        None => s,
    }
}

fn kind_of(kind: &str) -> (char, u32, u32) {
    KINDS
        .iter()
        .find(|k| k.0 == kind)
        .map(|k| (k.1, k.2, k.3))
        .unwrap_or(('b', KINDS[0].2, KINDS[0].3))
}

/// A cell's fill: its kind's hue, lighter the deeper it is.
fn fill(hue: u32, sat: u32, depth: usize) -> String {
    let light = 50 + 7 * depth.min(6);
    format!("hsl({hue},{sat}%,{light}%)")
}

fn class(found: &Inspection, c: &Cell) -> String {
    let kind = found.layers.get(c.layer).map(|l| l.kind.as_str());
    format!("{}{}", kind_of(kind.unwrap_or("")).0, c.depth.min(6))
}

/// The CSS rule of each class the cells use.
fn fills(cells: &[Cell], found: &Inspection) -> String {
    let used: BTreeSet<String> = cells.iter().map(|c| class(found, c)).collect();
    let mut out = String::new();
    for name in used {
        let mut chars = name.chars();
        let letter = chars.next().unwrap_or('b');
        let depth: usize = chars.as_str().parse().unwrap_or(0);
        let (_, hue, sat) = KINDS
            .iter()
            .find(|k| k.1 == letter)
            .map(|k| (k.1, k.2, k.3))
            .unwrap_or(('b', 215, 16));
        let _ = writeln!(out, ".{name}{{fill:{}}}", fill(hue, sat, depth));
    }
    out
}

/// `text` cut to `width` pixels' worth of characters (with an ellipsis), or nothing when not
/// even three fit.
fn fit(text: &str, width: f64) -> Option<String> {
    let room = ((width - 5.0) / CHAR_W).floor();
    if room < 3.0 {
        return None;
    }
    let room = room as usize;
    if text.chars().count() <= room {
        return Some(text.to_string());
    }
    let mut cut: String = text.chars().take(room - 1).collect();
    cut.push('…');
    Some(cut)
}

/// The layer's words: `3 deps`.
fn layer_name(found: &Inspection, layer: usize) -> String {
    let kind = found.layers.get(layer).map(|l| l.kind.as_str());
    format!("layer {} ({})", layer + 1, kind.unwrap_or("?"))
}

fn files_word(n: u64) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

/// A cell's tooltip, line by line (plain text, escaped where written), and its label: whole,
/// and short for a narrow cell.
fn words(found: &Inspection, c: &Cell) -> (Vec<String>, String, String) {
    let size = human_size(c.size);
    let layer = layer_name(found, c.layer);
    match &c.what {
        What::Layer => {
            let info = found.layers.get(c.layer);
            let digest = info.map(|l| l.digest.as_str()).unwrap_or("");
            let kind = format!(
                "{} {}",
                c.layer + 1,
                info.map(|l| l.kind.as_str()).unwrap_or("?")
            );
            let tip = vec![
                layer,
                digest.to_string(),
                format!("{size} in {}", files_word(c.files)),
            ];
            (tip, format!("{kind} · {size}"), kind)
        }
        What::Dir => (
            vec![
                format!("{}/", c.path),
                layer,
                format!("{size} in {}", files_word(c.files)),
            ],
            format!("{} · {size}", c.name),
            c.name.clone(),
        ),
        What::File => (
            vec![c.path.clone(), layer, size],
            c.name.clone(),
            c.name.clone(),
        ),
        What::Rest { entries } => {
            let what = if *entries as u64 == c.files {
                format!("{entries} smaller files")
            } else {
                format!("{entries} smaller entries ({})", files_word(c.files))
            };
            let dir = c.path.trim_end_matches('/');
            (
                vec![format!("{what} in {dir}/"), layer, size],
                format!("{entries} smaller"),
                format!("{entries} smaller"),
            )
        }
    }
}

/// The label that fits `width`: the whole one, else the short one, cut if need be.
fn label(whole: &str, short: &str, width: f64) -> Option<String> {
    match fit(whole, width) {
        Some(text) if text == whole => Some(text),
        _ => fit(short, width),
    }
}

/// The treemap: one `<rect>` per cell with its `<title>`, and the labels that fit.
fn svg(out: &mut String, cells: &[Cell], found: &Inspection, limits: &Limits) {
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {}\" role=\"img\" \
         aria-label=\"The image's files by layer and directory, each area in proportion to its bytes\">",
        num(limits.width),
        num(limits.height)
    );
    for c in cells {
        let r = c.rect;
        if r.w < 0.1 || r.h < 0.1 {
            continue;
        }
        let (tip, whole, short) = words(found, c);
        let tip: Vec<String> = tip.iter().map(|l| esc(l)).collect();
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" class=\"{}\"><title>{}</title></rect>",
            num(r.x),
            num(r.y),
            num(r.w),
            num(r.h),
            class(found, c),
            tip.join("\n")
        );
        let x = num(r.x + 3.0);
        if c.header {
            if let Some(text) = label(&whole, &short, r.w) {
                let _ = writeln!(
                    out,
                    "<text x=\"{x}\" y=\"{}\" class=\"h\">{}</text>",
                    num(r.y + 10.5),
                    esc(&text)
                );
            }
        } else if r.h >= 13.0 {
            if let Some(text) = label(&whole, &short, r.w) {
                let _ = writeln!(
                    out,
                    "<text x=\"{x}\" y=\"{}\">{}</text>",
                    num(r.y + 11.0),
                    esc(&text)
                );
                if r.h >= 26.0 && !matches!(c.what, What::Layer) {
                    let size = human_size(c.size);
                    if fit(&size, r.w).as_ref() == Some(&size) {
                        let _ = writeln!(
                            out,
                            "<text x=\"{x}\" y=\"{}\">{size}</text>",
                            num(r.y + 23.0)
                        );
                    }
                }
            }
        }
    }
    out.push_str("</svg>\n");
}

/// The colour of each layer kind the image has.
fn legend(out: &mut String, found: &Inspection, files: &ImageFiles) {
    out.push_str("<p class=\"legend\">");
    let mut seen = BTreeSet::new();
    for l in &found.layers {
        if !seen.insert(l.kind.as_str()) {
            continue;
        }
        let (_, hue, sat) = kind_of(&l.kind);
        let bytes: u64 = found
            .layers
            .iter()
            .zip(0..)
            .filter(|(k, _)| k.kind == l.kind)
            .filter_map(|(_, j)| files.layers.get(j))
            .flatten()
            .map(|(_, s)| s)
            .sum();
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>{} {}</span>",
            fill(hue, sat, 0),
            esc(&l.kind),
            human_size(bytes)
        );
    }
    out.push_str("</p>\n");
}

/// For an index: which platform is pictured, and the others.
fn platforms(out: &mut String, found: &Inspection) {
    let Some(index) = &found.index else {
        return;
    };
    let _ = write!(
        out,
        "<p class=\"note\">A multi-platform image (index {}, {} platforms): the picture is of \
         {} ({}).",
        esc(&index.digest),
        index.platforms.len(),
        esc(&found.platform),
        esc(&found.digest)
    );
    let others: Vec<String> = index
        .platforms
        .iter()
        .filter(|p| p.digest != found.digest)
        .map(|p| format!("{} ({})", esc(&p.platform), esc(&p.digest)))
        .collect();
    if !others.is_empty() {
        let _ = write!(out, " The others: {}.", others.join(", "));
    }
    out.push_str("</p>\n");
}

/// One row of table cells; each `(class, text)`, the text already escaped.
fn row(out: &mut String, cells: &[(&str, String)]) {
    out.push_str("<tr>");
    for (class, text) in cells {
        if class.is_empty() {
            let _ = write!(out, "<td>{text}</td>");
        } else {
            let _ = write!(out, "<td class=\"{class}\">{text}</td>");
        }
    }
    out.push_str("</tr>\n");
}

fn bytes_cell(n: u64) -> String {
    format!("{} <small>({n} B)</small>", human_size(n))
}

/// The image, its layers, and its largest files, as tables.
fn tables(out: &mut String, found: &Inspection, files: &ImageFiles, compressed: u64) {
    out.push_str("<h2>Image</h2>\n<table>\n");
    for (name, value, class) in [
        ("source", esc(&found.source), "m"),
        ("digest", esc(&found.digest), "m"),
        ("platform", esc(&found.platform), ""),
        ("layers", found.layers.len().to_string(), ""),
        ("compressed", bytes_cell(compressed), ""),
        ("files", files.files().to_string(), ""),
        ("bytes of files", bytes_cell(files.bytes()), ""),
    ] {
        row(out, &[("", name.to_string()), (class, value)]);
    }
    out.push_str(
        "</table>\n<h2>Layers</h2>\n<table>\n<tr><th>#</th><th>kind</th><th>digest</th>\
                  <th>compressed</th><th>files' bytes</th><th>files</th><th>created by</th></tr>\n",
    );
    for (i, l) in found.layers.iter().enumerate() {
        let of = files.layers.get(i);
        let sum: Option<u64> = of.map(|f| f.iter().map(|(_, s)| s).sum());
        row(
            out,
            &[
                ("n", (i + 1).to_string()),
                ("", esc(&l.kind)),
                ("m", esc(&l.digest)),
                ("n", human_size(l.size)),
                ("n", sum.map(human_size).unwrap_or_else(|| "-".into())),
                ("n", of.map(|f| f.len().to_string()).unwrap_or_default()),
                ("m", esc(&l.created_by)),
            ],
        );
    }
    let _ = write!(
        out,
        "</table>\n<h2>The {LARGEST} largest files</h2>\n<table>\n<tr><th>#</th><th>path</th>\
         <th>size</th><th>layer</th></tr>\n"
    );
    for (n, (path, size, layer)) in largest(files, LARGEST).into_iter().enumerate() {
        let kind = found.layers.get(layer).map(|l| l.kind.as_str());
        row(
            out,
            &[
                ("n", (n + 1).to_string()),
                ("m", esc(path)),
                ("n", bytes_cell(size)),
                ("", format!("{} {}", layer + 1, esc(kind.unwrap_or("?")))),
            ],
        );
    }
    out.push_str(
        "</table>\n<p class=\"note\">Sizes of files are uncompressed bytes of regular files, \
         counted in the layer that holds them: a file a later layer replaces or removes still \
         takes its bytes in its own layer. Whiteouts, links and directories take none.</p>\n",
    );
}

/// The `n` largest files of all the layers: (path, size, layer index), ties by path, then
/// layer.
fn largest(files: &ImageFiles, n: usize) -> Vec<(&str, u64, usize)> {
    let mut all: Vec<(&str, u64, usize)> = files
        .layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |(p, s)| (p.as_str(), *s, i)))
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)).then(a.2.cmp(&b.2)));
    all.truncate(n);
    all
}

/// The page's file while it is made: a temporary file beside the destination, created first
/// (so a destination that cannot be written fails before any layer is read) and renamed into
/// place when the page is written whole. Dropped unwritten, it is removed.
pub struct HtmlFile {
    dest: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl HtmlFile {
    pub fn create(dest: &Path) -> Result<HtmlFile> {
        if dest.is_dir() {
            return Err(Error::Usage(format!(
                "{}: is a directory; give a file name for the page",
                dest.display()
            )));
        }
        // The temporary file's error, told of the page (tempfile's own names the temporary).
        let tmp = crate::atomic::temp_beside(dest).map_err(|e| match e {
            Error::Io { source, .. } => {
                // tempfile's error ends with the temporary's path: " at path \"…\"".
                let text = source.to_string();
                let text = text.split(" at path \"").next().unwrap_or_default();
                let why = std::io::Error::new(source.kind(), text.to_string());
                Error::io("write", dest, why)
            }
            other => other,
        })?;
        Ok(HtmlFile {
            dest: dest.to_path_buf(),
            tmp,
        })
    }

    /// Write `page` and rename it into place.
    pub fn write(mut self, page: &str) -> Result<()> {
        let path = self.tmp.path().to_path_buf();
        self.tmp.write_all(page.as_bytes()).ctx("write", &path)?;
        crate::atomic::set_mode(&path, 0o644)?;
        self.tmp.as_file().sync_all().ctx("flush", &path)?;
        let (tmp, dest) = (self.tmp, self.dest);
        crate::interrupt::guarded(|| tmp.persist(&dest).map_err(|e| e.error))
            .map_err(|e| Error::io("rename into place", &dest, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::LayerInfo;

    fn inspection(kinds: &[&str]) -> Inspection {
        Inspection {
            source: "out.tar".into(),
            digest: "sha256:aaaa".into(),
            platform: "linux/amd64".into(),
            config: serde_json::Value::Null,
            layers: kinds
                .iter()
                .enumerate()
                .map(|(i, k)| LayerInfo {
                    digest: format!("sha256:{i:064}"),
                    size: 1000 * (i as u64 + 1),
                    kind: k.to_string(),
                    created_by: format!("imgbuild: {k} layer"),
                })
                .collect(),
            history: vec![],
            sbom: None,
            index: None,
            migrate: None,
            files: vec![],
        }
    }

    fn files(layers: &[&[(&str, u64)]]) -> ImageFiles {
        ImageFiles {
            layers: layers
                .iter()
                .map(|l| l.iter().map(|(p, s)| (p.to_string(), *s)).collect())
                .collect(),
        }
    }

    #[test]
    fn escapes_what_the_image_says() {
        assert_eq!(
            esc("a<b>&\"c'd\u{1}e"),
            "a&lt;b&gt;&amp;&quot;c&#39;d\u{FFFD}e"
        );
        let mut found = inspection(&["base", "app"]);
        found.source = "<script>alert(1)</script>".into();
        found.layers[1].created_by = "imgbuild: app layer <b>&amp;</b>".into();
        let page = page(
            &found,
            &files(&[
                &[("/etc/os-release", 3000)],
                &[("/app/lib/x/<img src=x onerror=alert(1)>&\"q'.beam", 90_000)],
            ]),
        );
        assert!(!page.contains("<script>alert"));
        assert!(!page.contains("<img"));
        assert!(!page.contains("<b>"));
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;&amp;&quot;q&#39;.beam"));
        assert!(page.contains("&lt;b&gt;&amp;amp;&lt;/b&gt;"));
        assert_eq!(page.matches("<script>").count(), 1, "only the page's own");
        // A tooltip: the path, the layer, the size, a line each.
        assert!(page.contains("<title>/etc/os-release\nlayer 1 (base)\n2.9 kB</title>"));
    }

    #[test]
    fn page_is_self_contained_and_lists_layers_and_largest_files() {
        let found = inspection(&["base", "erts", "deps", "app", "sbom"]);
        let listed: Vec<(String, u64)> = (0..40)
            .map(|i| (format!("/usr/lib/f{i:02}"), 1000 + i * 10))
            .collect();
        let mut f = files(&[
            &[],
            &[("/app/erts-14/bin/beam.smp", 5_000_000)],
            &[],
            &[],
            &[],
        ]);
        f.layers[0] = listed;
        let page = page(&found, &f);
        for l in &found.layers {
            assert!(page.contains(&l.digest), "{}", l.digest);
        }
        assert!(page.contains("/app/erts-14/bin/beam.smp"));
        // The 25 largest: beam.smp and f39 down to f16, not f15.
        assert!(page.contains("<td class=\"m\">/usr/lib/f16</td>"));
        assert!(!page.contains("<td class=\"m\">/usr/lib/f15</td>"));
        for bad in [
            "<link", "src=", "href=", "url(", "@import", "http://", "https://",
        ] {
            let outside_svg_ns = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(!outside_svg_ns.contains(bad), "{bad}");
        }
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
    }

    #[test]
    fn page_is_deterministic_and_bounded() {
        let found = inspection(&["base", "deps"]);
        let base: Vec<(String, u64)> = (0..60_000u64)
            .map(|i| {
                (
                    format!("/usr/share/d{}/sub{}/file-{i}.txt", i % 500, i % 7),
                    1 + (i * 104_729) % 200_000,
                )
            })
            .collect();
        let f = ImageFiles {
            layers: vec![base, vec![("/app/lib/a.beam".into(), 10)]],
        };
        let a = page(&found, &f);
        let mut shuffled = f.clone();
        shuffled.layers[0].reverse();
        assert_eq!(a, page(&found, &shuffled), "same files, same bytes");
        let rects = a.matches("<rect ").count();
        assert!(rects <= Limits::default().max_cells, "{rects}");
        assert!(a.len() < 700 << 10, "{} bytes", a.len());
    }

    #[test]
    fn index_names_the_platform_shown_and_the_others() {
        let mut found = inspection(&["base"]);
        let mut arm = inspection(&["base"]);
        arm.platform = "linux/arm64".into();
        arm.digest = "sha256:bbbb".into();
        found.index = Some(crate::inspect::IndexInfo {
            digest: "sha256:index".into(),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            platforms: vec![inspection(&["base"]), arm],
        });
        let page = page(&found, &files(&[&[("/a", 1)]]));
        assert!(page.contains("the picture is of linux/amd64 (sha256:aaaa)"));
        assert!(page.contains("The others: linux/arm64 (sha256:bbbb)."));
    }

    #[test]
    fn labels_fit_their_cells() {
        assert_eq!(fit("abcdef", 10.0), None);
        assert_eq!(fit("abcdef", 100.0).as_deref(), Some("abcdef"));
        assert_eq!(fit("abcdefghijklmnop", 50.0).as_deref(), Some("abcdef…"));
        assert_eq!(num(3.0), "3");
        assert_eq!(num(3.25), "3.2");
        assert_eq!(num(0.04), "0");
    }

    #[test]
    fn writes_whole_or_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("page.html");
        HtmlFile::create(&dest).unwrap().write("<p>x</p>").unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "<p>x</p>");
        let missing = dir.path().join("no/such/page.html");
        let err = HtmlFile::create(&missing).err().unwrap().to_string();
        assert!(err.contains("no/such/page.html"), "{err}");
        assert!(
            !err.contains("at path"),
            "the temporary is not named: {err}"
        );
        assert!(HtmlFile::create(dir.path()).is_err());
        // Dropped unwritten: nothing is left.
        drop(HtmlFile::create(&dir.path().join("later.html")).unwrap());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }
}
