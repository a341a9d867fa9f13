//! The picture of `inspect --html`: each layer's files as a directory tree ([`Node`]), laid out
//! as a squarified treemap ([`squarify`], [`layout`]). The image's area is shared among its
//! layers by their bytes, each layer's among its directories and files, and so on down, each
//! group under a header strip for its label. Small children are gathered into one cell, cells
//! too small to label are not divided further, and the number of cells is capped, so a base of
//! tens of thousands of files still gives a page of a few hundred kB. The same tree gives the
//! same cells, to the bit.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

/// Paths deeper than this are cut there: the rest of the path is the last component's name
/// (keeps the recursion over the tree bounded, whatever the layer holds).
const MAX_DEPTH: usize = 48;

/// A directory (or file) of a layer, its size the bytes of all the files under it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    /// Its name in its parent: one component, or several (`lib/x86_64-linux-gnu`) where
    /// directories hold nothing but one directory each.
    pub name: String,
    pub size: u64,
    /// Regular files under it (1 for a file).
    pub files: u64,
    pub dir: bool,
    /// Largest first, ties by name.
    pub children: Vec<Node>,
}

#[derive(Default)]
struct Dir {
    files: Vec<(String, u64)>,
    dirs: BTreeMap<String, Dir>,
}

impl Node {
    /// The tree of `entries` (absolute paths and sizes), its root unnamed.
    pub(crate) fn tree(entries: &[(String, u64)]) -> Node {
        let mut root = Dir::default();
        for (path, size) in entries {
            let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
            if parts.is_empty() {
                continue;
            }
            let cut = parts.len().min(MAX_DEPTH) - 1;
            let mut at = &mut root;
            for d in &parts[..cut] {
                at = at.dirs.entry((*d).to_string()).or_default();
            }
            at.files.push((parts[cut..].join("/"), *size));
        }
        Node::of_dir(String::new(), root, true)
    }

    fn of_dir(name: String, dir: Dir, root: bool) -> Node {
        let mut children: Vec<Node> = dir
            .dirs
            .into_iter()
            .map(|(n, d)| Node::of_dir(n, d, false))
            .chain(dir.files.into_iter().map(|(name, size)| Node {
                name,
                size,
                files: 1,
                dir: false,
                children: vec![],
            }))
            .collect();
        children.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name)));
        let mut node = Node {
            name,
            size: children.iter().map(|c| c.size).sum(),
            files: children.iter().map(|c| c.files).sum(),
            dir: true,
            children,
        };
        // A directory that holds one directory only is shown as one: `usr/lib`.
        if !root && node.children.len() == 1 && node.children[0].dir {
            let only = node.children.remove(0);
            node.name = format!("{}/{}", node.name, only.name);
            node.children = only.children;
        }
        node
    }
}

/// A rectangle of the picture, in pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub(crate) fn area(&self) -> f64 {
        self.w * self.h
    }
}

/// Tile `r` with one rectangle per size (largest first, none zero), each of an area in
/// proportion to its size, as close to square as the squarified algorithm of Bruls, Huizing
/// and van Wijk makes them: a row is filled along the shorter side while its worst aspect
/// ratio improves, then the next row starts in what is left.
pub(crate) fn squarify(sizes: &[u64], r: Rect) -> Vec<Rect> {
    let total: f64 = sizes.iter().map(|&s| s as f64).sum();
    if total <= 0.0 || r.w <= 0.0 || r.h <= 0.0 {
        return sizes
            .iter()
            .map(|_| Rect {
                w: 0.0,
                h: 0.0,
                ..r
            })
            .collect();
    }
    let scale = r.area() / total;
    let areas: Vec<f64> = sizes.iter().map(|&s| s as f64 * scale).collect();
    let worst = |row: &[f64], sum: f64, side: f64| {
        let (big, small) = (row[0], row[row.len() - 1]);
        let s2 = side * side;
        f64::max(s2 * big / (sum * sum), (sum * sum) / (s2 * small))
    };
    let mut out = Vec::with_capacity(sizes.len());
    let mut rest = r;
    let mut i = 0;
    while i < areas.len() {
        let side = rest.w.min(rest.h);
        let mut j = i + 1;
        let mut sum = areas[i];
        let mut ratio = worst(&areas[i..j], sum, side);
        while j < areas.len() {
            let more = worst(&areas[i..=j], sum + areas[j], side);
            if more > ratio {
                break;
            }
            sum += areas[j];
            ratio = more;
            j += 1;
        }
        let last = j == areas.len();
        if rest.w >= rest.h {
            // A column at the left of what is left; the last one takes all of it.
            let thick = if last { rest.w } else { sum / rest.h };
            let mut y = rest.y;
            for (k, a) in areas[i..j].iter().enumerate() {
                let h = if k + i + 1 == j {
                    rest.y + rest.h - y
                } else {
                    a / thick
                };
                out.push(Rect {
                    x: rest.x,
                    y,
                    w: thick,
                    h,
                });
                y += h;
            }
            rest.x += thick;
            rest.w = (rest.w - thick).max(0.0);
        } else {
            // A row along the top.
            let thick = if last { rest.h } else { sum / rest.w };
            let mut x = rest.x;
            for (k, a) in areas[i..j].iter().enumerate() {
                let w = if k + i + 1 == j {
                    rest.x + rest.w - x
                } else {
                    a / thick
                };
                out.push(Rect {
                    x,
                    y: rest.y,
                    w,
                    h: thick,
                });
                x += w;
            }
            rest.y += thick;
            rest.h = (rest.h - thick).max(0.0);
        }
        i = j;
    }
    out
}

/// What a cell stands for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum What {
    /// The image's layer of this index.
    Layer,
    Dir,
    File,
    /// Children of a directory too small to draw one by one: how many, and their files.
    Rest {
        entries: usize,
    },
}

/// One rectangle of the picture.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cell {
    pub rect: Rect,
    /// 0 for a layer, 1 for what is at its top, and so on.
    pub depth: usize,
    /// The index of its layer in the image.
    pub layer: usize,
    /// The absolute path (`/usr/lib`); for a layer `/`; for the rest, its directory's.
    pub path: String,
    /// The label: its name in its parent.
    pub name: String,
    pub size: u64,
    pub files: u64,
    pub what: What,
    /// Whether its children are drawn in it, under a header strip of `Limits::header` pixels.
    pub header: bool,
    /// The index of the cell it is drawn in (none for a layer).
    pub parent: Option<usize>,
}

/// The picture's size and the bounds of its detail.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub width: f64,
    pub height: f64,
    /// The height of a group's header strip (its label).
    pub header: f64,
    /// The margin between a group's edge and its children.
    pub pad: f64,
    /// Children smaller than this (square pixels) are gathered into one cell.
    pub min_area: f64,
    /// Groups narrower than this, or with less height than a header and this, are not divided.
    pub min_side: f64,
    pub max_cells: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            width: 1280.0,
            height: 720.0,
            header: 14.0,
            pad: 1.0,
            min_area: 60.0,
            min_side: 24.0,
            max_cells: 3000,
        }
    }
}

/// A cell waiting to be divided, the largest first (ties: the one made first).
struct Pending<'a> {
    area: f64,
    cell: usize,
    node: &'a Node,
}

impl PartialEq for Pending<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending<'_> {}
impl PartialOrd for Pending<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.area
            .total_cmp(&other.area)
            .then_with(|| other.cell.cmp(&self.cell))
    }
}

/// The cells of the picture of `layers` (each layer's tree, by the layer's index; a layer of
/// no bytes has no cell), a parent always before its children. Cells are divided largest
/// first, until one more division would pass `limits.max_cells`.
pub(crate) fn layout(layers: &[Node], limits: &Limits) -> Vec<Cell> {
    let canvas = Rect {
        x: 0.0,
        y: 0.0,
        w: limits.width,
        h: limits.height,
    };
    let mut order: Vec<usize> = (0..layers.len()).filter(|&i| layers[i].size > 0).collect();
    order.sort_by(|&a, &b| layers[b].size.cmp(&layers[a].size).then(a.cmp(&b)));
    let sizes: Vec<u64> = order.iter().map(|&i| layers[i].size).collect();
    let mut cells = Vec::new();
    let mut pending = BinaryHeap::new();
    for (&i, rect) in order.iter().zip(squarify(&sizes, canvas)) {
        let node = &layers[i];
        pending.push(Pending {
            area: rect.area(),
            cell: cells.len(),
            node,
        });
        cells.push(Cell {
            rect,
            depth: 0,
            layer: i,
            path: "/".into(),
            name: String::new(),
            size: node.size,
            files: node.files,
            what: What::Layer,
            header: false,
            parent: None,
        });
    }
    while let Some(Pending { cell, node, .. }) = pending.pop() {
        let parent = cells[cell].clone();
        let r = parent.rect;
        if r.w < limits.min_side || r.h < limits.header + limits.min_side {
            continue;
        }
        let inner = Rect {
            x: r.x + limits.pad,
            y: r.y + limits.header,
            w: r.w - 2.0 * limits.pad,
            h: r.h - limits.header - limits.pad,
        };
        let room = limits.max_cells.saturating_sub(cells.len());
        let Some((shown, rest)) = visible(node, inner.area(), limits.min_area, room) else {
            break;
        };
        cells[cell].header = true;
        let mut sizes: Vec<u64> = shown.iter().map(|c| c.size).collect();
        let rest_size: u64 = rest.iter().map(|c| c.size).sum();
        sizes.extend((!rest.is_empty()).then_some(rest_size));
        let rects = squarify(&sizes, inner);
        let path = |name: &str| match parent.path.as_str() {
            "/" => format!("/{name}"),
            p => format!("{p}/{name}"),
        };
        for (child, rect) in shown.iter().zip(&rects) {
            if child.dir {
                pending.push(Pending {
                    area: rect.area(),
                    cell: cells.len(),
                    node: child,
                });
            }
            cells.push(Cell {
                rect: *rect,
                depth: parent.depth + 1,
                layer: parent.layer,
                path: path(&child.name),
                name: child.name.clone(),
                size: child.size,
                files: child.files,
                what: if child.dir { What::Dir } else { What::File },
                header: false,
                parent: Some(cell),
            });
        }
        if let Some(rect) = rects.get(shown.len()) {
            cells.push(Cell {
                rect: *rect,
                depth: parent.depth + 1,
                layer: parent.layer,
                path: parent.path.clone(),
                name: String::new(),
                size: rest_size,
                files: rest.iter().map(|c| c.files).sum(),
                what: What::Rest {
                    entries: rest.len(),
                },
                header: false,
                parent: Some(cell),
            });
        }
    }
    cells
}

/// The children of `node` drawn one by one in `area`, and the rest (too small to draw alone,
/// or past the `room` left for cells) to gather into one cell; `None` when there is no room.
/// Children of no bytes are not drawn.
fn visible(node: &Node, area: f64, min_area: f64, room: usize) -> Option<(&[Node], &[Node])> {
    let drawn = node.children.partition_point(|c| c.size > 0);
    let scale = if node.size == 0 {
        0.0
    } else {
        area / node.size as f64
    };
    let mut big = node.children[..drawn].partition_point(|c| c.size as f64 * scale >= min_area);
    if big + usize::from(big < drawn) > room {
        if room < 2 {
            return None;
        }
        big = room - 1;
    }
    // One child left over is drawn as itself.
    if drawn - big == 1 {
        big = drawn;
    }
    Some((&node.children[..big], &node.children[big..drawn]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(p, s)| (p.to_string(), *s)).collect()
    }

    const R: Rect = Rect {
        x: 10.0,
        y: 20.0,
        w: 600.0,
        h: 400.0,
    };

    fn inside(a: &Rect, b: &Rect) -> bool {
        let e = 1e-6;
        a.x >= b.x - e && a.y >= b.y - e && a.x + a.w <= b.x + b.w + e && a.y + a.h <= b.y + b.h + e
    }

    fn overlap(a: &Rect, b: &Rect) -> bool {
        let e = 1e-6;
        a.x + e < b.x + b.w && b.x + e < a.x + a.w && a.y + e < b.y + b.h && b.y + e < a.y + a.h
    }

    #[test]
    fn squarify_areas_are_proportional_inside_and_apart() {
        let sizes = [600, 600, 400, 300, 200, 200, 100, 50, 7, 1];
        let rects = squarify(&sizes, R);
        assert_eq!(rects.len(), sizes.len());
        let total: u64 = sizes.iter().sum();
        for (s, r) in sizes.iter().zip(&rects) {
            let want = *s as f64 / total as f64 * R.area();
            assert!((r.area() - want).abs() <= want * 1e-6 + 1e-6, "{s}: {r:?}");
            assert!(r.w >= 0.0 && r.h >= 0.0);
            assert!(inside(r, &R), "{r:?} outside {R:?}");
        }
        for (i, a) in rects.iter().enumerate() {
            for b in &rects[i + 1..] {
                assert!(!overlap(a, b), "{a:?} overlaps {b:?}");
            }
        }
        let sum: f64 = rects.iter().map(Rect::area).sum();
        assert!((sum - R.area()).abs() < 1e-6);
    }

    #[test]
    fn squarify_makes_near_squares() {
        let rects = squarify(&[1; 16], R);
        for r in &rects {
            let ratio = r.w.max(r.h) / r.w.min(r.h);
            assert!(ratio < 2.0, "{r:?}");
        }
        assert_eq!(squarify(&[5], R), vec![R]);
        assert!(squarify(&[], R).is_empty());
    }

    #[test]
    fn tree_sums_sorts_and_joins_lone_directories() {
        let t = Node::tree(&entries(&[
            ("/usr/lib/x86_64-linux-gnu/libc.so.6", 2000),
            ("/usr/lib/x86_64-linux-gnu/libm.so.6", 900),
            ("/etc/passwd", 900),
            ("/etc/group", 900),
            ("/app/b", 5),
        ]));
        assert_eq!((t.size, t.files, t.name.as_str()), (4705, 5, ""));
        let names: Vec<&str> = t.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["usr/lib/x86_64-linux-gnu", "etc", "app"]);
        let etc: Vec<&str> = t.children[1]
            .children
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(etc, ["group", "passwd"], "ties by name");
        assert!(!t.children[2].children[0].dir);
    }

    #[test]
    fn tree_of_a_very_deep_path_is_cut() {
        let deep = format!("/{}", vec!["d"; 10_000].join("/"));
        let t = Node::tree(&entries(&[(&deep, 7)]));
        let mut depth = 0;
        let mut at = &t;
        while let Some(c) = at.children.first() {
            depth += 1;
            at = c;
        }
        assert!(depth <= MAX_DEPTH);
        assert_eq!(at.size, 7);
    }

    /// A layer of `n` files of varied sizes in `dirs` directories, some nested.
    fn many(n: usize, dirs: usize) -> Node {
        let list: Vec<(String, u64)> = (0..n)
            .map(|i| {
                let size = 1 + (i as u64 * 7919) % 100_000;
                (format!("/d{}/s{}/f{i}", i % dirs, i % 3), size)
            })
            .collect();
        Node::tree(&list)
    }

    #[test]
    fn layout_cells_nest_inside_their_parents_without_overlap() {
        let layers = vec![many(3000, 40), Node::tree(&[]), many(50, 3)];
        let limits = Limits::default();
        let cells = layout(&layers, &limits);
        assert!(cells.len() <= limits.max_cells);
        assert!(
            cells.iter().all(|c| c.layer != 1),
            "an empty layer has no cell"
        );
        let canvas = Rect {
            x: 0.0,
            y: 0.0,
            w: limits.width,
            h: limits.height,
        };
        // Each cell lies inside its parent (drawn before it), under the header strip.
        for (i, c) in cells.iter().enumerate() {
            assert!(inside(&c.rect, &canvas), "{c:?}");
            let Some(p) = c.parent else {
                assert_eq!(c.depth, 0);
                continue;
            };
            assert!(p < i);
            let parent = &cells[p];
            assert!(parent.header && parent.layer == c.layer && parent.depth + 1 == c.depth);
            assert!(inside(&c.rect, &parent.rect), "{c:?} outside {parent:?}");
            assert!(c.rect.y >= parent.rect.y + limits.header - 1e-6);
        }
        // Cells of one depth (siblings or cousins) do not overlap.
        for (i, a) in cells.iter().enumerate() {
            for b in &cells[i + 1..] {
                if a.depth == b.depth {
                    assert!(!overlap(&a.rect, &b.rect), "{a:?} overlaps {b:?}");
                }
            }
        }
        // The layers share the canvas by their bytes.
        let total = (layers[0].size + layers[2].size) as f64;
        for c in cells.iter().filter(|c| c.depth == 0) {
            let want = layers[c.layer].size as f64 / total * canvas.area();
            assert!((c.rect.area() - want).abs() < want * 1e-6);
        }
    }

    #[test]
    fn layout_gathers_small_files_and_stops_at_small_cells() {
        let layers = vec![many(40_000, 300)];
        let limits = Limits::default();
        let cells = layout(&layers, &limits);
        assert!(cells.len() < limits.max_cells, "{}", cells.len());
        // No cell is divided that is too small for its label and some children.
        for c in cells.iter().filter(|c| c.header) {
            assert!(c.rect.w >= limits.min_side && c.rect.h >= limits.header + limits.min_side);
        }
        let rest: Vec<&Cell> = cells
            .iter()
            .filter(|c| matches!(c.what, What::Rest { .. }))
            .collect();
        assert!(!rest.is_empty());
        for c in &rest {
            let What::Rest { entries } = c.what else {
                unreachable!()
            };
            assert!(entries >= 2);
        }
        // What is drawn adds up to the whole: the files of the top cells are all the files.
        let files: u64 = cells.iter().filter(|c| c.depth == 1).map(|c| c.files).sum();
        assert_eq!(files, 40_000);
    }

    #[test]
    fn layout_is_capped() {
        // One flat directory of 8 000 files, each large enough to draw: room for many more
        // cells than the cap.
        let list: Vec<(String, u64)> = (0..8_000u64)
            .map(|i| (format!("/flat/f{i}"), 1000 + i % 13))
            .collect();
        let layers = vec![Node::tree(&list), many(50, 3)];
        for max_cells in [3000, 200, 10, 3, 1] {
            let limits = Limits {
                max_cells,
                ..Limits::default()
            };
            let cells = layout(&layers, &limits);
            assert!(
                cells.len() <= max_cells.max(2),
                "{max_cells}: {}",
                cells.len()
            );
            if max_cells >= 10 {
                assert!(cells.len() + 1 >= max_cells, "{max_cells}: {}", cells.len());
            }
            let rest = cells.iter().find(|c| matches!(c.what, What::Rest { .. }));
            if max_cells >= 200 {
                let rest = rest.unwrap_or_else(|| panic!("{max_cells}: no rest cell"));
                assert_eq!(rest.path, "/flat");
            }
        }
    }

    #[test]
    fn layout_is_deterministic() {
        let layers = vec![many(2000, 17), many(300, 5)];
        let a = layout(&layers, &Limits::default());
        let b = layout(&layers.clone(), &Limits::default());
        assert_eq!(a, b);
        // Equal sizes: placed by name, whatever order the entries came in.
        let one = Node::tree(&entries(&[("/b", 10), ("/a", 10), ("/c", 10)]));
        let two = Node::tree(&entries(&[("/c", 10), ("/a", 10), ("/b", 10)]));
        assert_eq!(
            layout(&[one], &Limits::default()),
            layout(&[two], &Limits::default())
        );
    }
}
