//! `whittle build --html`: one self-contained page that shows where an image's weight went.
//!
//! The JSON report says how many bytes each drop class removed; it cannot show *where* they sat.
//! A treemap can: area is the bytes a file or directory holds in the source image, color is
//! whether it was kept or why it was dropped, so a glance finds the fat directories and tells
//! whether the slim image kept them. The page is meant to be mailed, attached to a CI run or
//! opened from a disk with no network, so it carries everything inline (CSS and SVG; no script,
//! no fonts, no external references) and it is deterministic: the same input gives the same
//! bytes, which keeps it diffable and cacheable.
//!
//! The squarified layout (Bruls, Huizing, van Wijk 2000) is written here rather than taken from
//! a crate: no maintained crate renders a treemap as SVG. The ones on crates.io compute a
//! layout only, or are bound to their own file-tree type or GUI toolkit, so the nesting, the
//! budget and the drawing would be ours anyway; the algorithm itself is some sixty lines, and
//! owning it lets the last cell of each row absorb float error so cells tile without gaps.
//!
//! The map has a budget of [`MAX_RECTS`] rectangles so that a 50,000-file image still gives a
//! page of a few hundred kilobytes that a browser opens instantly: the largest cells are split
//! into their children first, and entries too small to see merge into one "other" cell per
//! directory. A cell that is not split further is drawn as stripes, one per class, whose areas
//! are the bytes of each class, so no byte loses its color when detail is cut.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;

/// One regular file of the source image.
#[derive(Debug, Clone)]
pub struct TreemapFile {
    /// Absolute path, e.g. `/usr/share/doc/nginx/copyright`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    pub kept: bool,
    /// `"kept"` when kept; else the drop class: `"docs"`, `"man"`, `"info"`, `"locales"`,
    /// `"zoneinfo"`, `"package-manager"`, `"cache"`, `"logs"`, `"tmp"`, `"unused"`,
    /// `"excluded"`.
    pub class: String,
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct Page {
    /// E.g. `"whittle build: docker-archive:nginx.tar"`.
    pub title: String,
    /// Label/value rows shown in a table above the map (already formatted).
    pub summary: Vec<(String, String)>,
    pub files: Vec<TreemapFile>,
    /// Free text lines (e.g. the verification outcome), shown as a list.
    pub notes: Vec<String>,
}

/// Size of the map in SVG user units; the page scales it to the window width.
const CANVAS_W: f64 = 1200.0;
const CANVAS_H: f64 = 720.0;
/// Upper bound on `<rect>` elements in the map: past a few thousand a page gets heavy to open
/// and the extra cells are too small to read anyway.
const MAX_RECTS: usize = 3000;
/// Entries whose cell would be smaller than this (in square units, about 6 × 6) are not worth a
/// rectangle of their own; they merge into their directory's "other" cell.
const MIN_CELL_AREA: f64 = 36.0;
/// Gap between a directory's frame and its children, so nesting stays visible.
const PAD: f64 = 1.0;
/// Height of the label strip of a directory that is large enough to carry one.
const HEADER: f64 = 13.0;
const TOP_N: usize = 20;

const KEPT_COLOR: &str = "#4c78a8";
/// Drop classes in the order the legend falls back to for ties, with their colors. Kept is a
/// cool blue; drops are warm or earthy so "what went away" stands out.
const KNOWN_CLASSES: &[(&str, &str)] = &[
    ("unused", "#e45756"),
    ("excluded", "#b279a2"),
    ("docs", "#f58518"),
    ("man", "#eeca3b"),
    ("info", "#ffbf79"),
    ("locales", "#54a24b"),
    ("zoneinfo", "#9fd88a"),
    ("package-manager", "#9d755d"),
    ("cache", "#72b7b2"),
    ("logs", "#bab0ac"),
    ("tmp", "#d8b5a5"),
    ("user-drop", "#d67195"),
];
/// Colors for classes this module does not know yet, so a new class still renders distinctly.
const EXTRA_COLORS: &[&str] = &[
    "#ff9da6", "#79706e", "#a0cbe8", "#8cd17d", "#f1ce63", "#86bcb6",
];
/// Shown for a dropped file whose class is empty or says "kept", which would otherwise be
/// indistinguishable from kept bytes.
const UNCLASSIFIED: &str = "unclassified";

/// Renders the whole page.
pub fn render(page: &Page) -> String {
    let tree = Tree::build(&page.files);
    let cells = layout(&tree);
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str("<title>");
    esc_text(&mut out, &page.title);
    out.push_str("</title>\n<style>\n");
    out.push_str(CSS);
    for (id, color) in tree.classes.colors.iter().enumerate() {
        let _ = writeln!(out, ".c{id}{{fill:{color}}}");
    }
    out.push_str("</style>\n</head>\n<body>\n<h1>");
    esc_text(&mut out, &page.title);
    out.push_str("</h1>\n");

    if !page.summary.is_empty() {
        out.push_str("<table class=\"summary\">\n");
        for (label, value) in &page.summary {
            out.push_str("<tr><th>");
            esc_text(&mut out, label);
            out.push_str("</th><td>");
            esc_text(&mut out, value);
            out.push_str("</td></tr>\n");
        }
        out.push_str("</table>\n");
    }
    if !page.notes.is_empty() {
        out.push_str("<ul class=\"notes\">\n");
        for note in &page.notes {
            out.push_str("<li>");
            esc_text(&mut out, note);
            out.push_str("</li>\n");
        }
        out.push_str("</ul>\n");
    }

    out.push_str("<h2>Where the bytes went</h2>\n");
    render_legend(&mut out, &tree);
    render_map(&mut out, &tree, &cells);
    render_top(&mut out, &tree, Side::Dropped);
    render_top(&mut out, &tree, Side::Kept);
    out.push_str("</body>\n</html>\n");
    out
}

/// System fonts only: the page must not fetch anything.
const CSS: &str = "body{font:14px/1.4 system-ui,-apple-system,\"Segoe UI\",sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.35em;margin:0 0 .6em;word-break:break-all}
h2{font-size:1.1em;margin:1.4em 0 .5em}
table{border-collapse:collapse;margin:.3em 0}
th,td{padding:.15em .7em .15em 0;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.top td.p,table.summary td{word-break:break-all}
table.top tr:nth-child(even){background:#f5f5f5}
.sw{display:inline-block;width:.9em;height:.9em;border:1px solid #0003;vertical-align:-.1em}
.hint{color:#666;font-size:.9em}
svg.map{width:100%;height:auto;max-width:1200px;display:block;border:1px solid #999}
svg.bar{width:100%;max-width:1200px;height:18px;display:block}
.map rect{stroke:#fff;stroke-width:.5}
.map rect.s{stroke:none}
.map rect.d{fill:#eee;stroke:#777;stroke-width:.6}
.map text{font:10px sans-serif;fill:#111;pointer-events:none;paint-order:stroke;stroke:#fff;stroke-width:2px;stroke-opacity:.7}
.map text.h{stroke:none;font-weight:600}
";

// ---------------------------------------------------------------------------------------------
// Squarified layout

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn area(&self) -> f64 {
        self.w * self.h
    }
}

/// Tiles `bounds` with one rectangle per value, each with area proportional to its value, in
/// the same order as `values`. Values should be positive and sorted largest first, which is
/// what the algorithm's aspect-ratio greed assumes.
///
/// The last row, and the last item of every row, take whatever length is left rather than
/// their computed share, so float error never leaves a gap or spills outside `bounds`.
fn squarify(values: &[f64], bounds: Rect) -> Vec<Rect> {
    let n = values.len();
    let total: f64 = values.iter().sum();
    if n == 0 {
        return Vec::new();
    }
    if !(total > 0.0 && bounds.w > 0.0 && bounds.h > 0.0) {
        let empty = Rect {
            w: 0.0,
            h: 0.0,
            ..bounds
        };
        return vec![empty; n];
    }
    let scale = bounds.area() / total;
    let areas: Vec<f64> = values.iter().map(|v| v * scale).collect();
    let mut out = Vec::with_capacity(n);
    let mut free = bounds;
    let mut start = 0;
    while start < n {
        // Grow the row while that does not worsen its worst aspect ratio.
        let side = free.w.min(free.h);
        let mut end = start + 1;
        let (mut sum, mut lo, mut hi) = (areas[start], areas[start], areas[start]);
        let mut worst = worst_ratio(sum, lo, hi, side);
        while end < n {
            let a = areas[end];
            let next = worst_ratio(sum + a, lo.min(a), hi.max(a), side);
            if next > worst {
                break;
            }
            sum += a;
            lo = lo.min(a);
            hi = hi.max(a);
            worst = next;
            end += 1;
        }
        let last_row = end == n;
        // The row lies along the shorter side of the free space.
        let vertical = free.w >= free.h;
        let (span, room) = if vertical {
            (free.h, free.w)
        } else {
            (free.w, free.h)
        };
        let thick = if last_row {
            room
        } else {
            (sum / span).min(room)
        };
        let mut pos = 0.0;
        for (i, &a) in areas.iter().enumerate().take(end).skip(start) {
            let left = (span - pos).max(0.0);
            let len = if i + 1 == end {
                left
            } else if thick > 0.0 {
                (a / thick).min(left)
            } else {
                0.0
            };
            out.push(if vertical {
                Rect {
                    x: free.x,
                    y: free.y + pos,
                    w: thick,
                    h: len,
                }
            } else {
                Rect {
                    x: free.x + pos,
                    y: free.y,
                    w: len,
                    h: thick,
                }
            });
            pos += len;
        }
        if vertical {
            free.x += thick;
            free.w = (free.w - thick).max(0.0);
        } else {
            free.y += thick;
            free.h = (free.h - thick).max(0.0);
        }
        start = end;
    }
    out
}

/// The worst aspect ratio of a row of total area `sum` laid along a side of length `side`,
/// given its smallest and largest areas (the paper's `worst` function).
fn worst_ratio(sum: f64, lo: f64, hi: f64, side: f64) -> f64 {
    let s2 = sum * sum;
    let w2 = side * side;
    (w2 * hi / s2).max(s2 / (w2 * lo))
}

// ---------------------------------------------------------------------------------------------
// The directory tree

#[derive(Debug)]
struct Classes {
    /// Index 0 is always "kept".
    names: Vec<String>,
    colors: Vec<&'static str>,
}

impl Classes {
    fn from_files(files: &[TreemapFile]) -> Classes {
        let mut dropped: Vec<&str> = files.iter().filter(|f| !f.kept).map(drop_class).collect();
        dropped.sort_unstable();
        dropped.dedup();
        let mut names = vec!["kept".to_string()];
        let mut colors = vec![KEPT_COLOR];
        for (name, color) in KNOWN_CLASSES {
            if dropped.contains(name) {
                names.push((*name).to_string());
                colors.push(color);
            }
        }
        let unknown = dropped
            .iter()
            .filter(|d| !KNOWN_CLASSES.iter().any(|(k, _)| k == *d));
        for (i, name) in unknown.enumerate() {
            names.push((*name).to_string());
            colors.push(EXTRA_COLORS[i % EXTRA_COLORS.len()]);
        }
        Classes { names, colors }
    }

    fn id(&self, file: &TreemapFile) -> usize {
        if file.kept {
            return 0;
        }
        let name = drop_class(file);
        // Ids past 0 are few (a dozen), so a scan beats a map here.
        self.names
            .iter()
            .skip(1)
            .position(|n| n == name)
            .map_or(0, |p| p + 1)
    }
}

fn drop_class(file: &TreemapFile) -> &str {
    match file.class.as_str() {
        "" | "kept" => UNCLASSIFIED,
        other => other,
    }
}

#[derive(Debug)]
struct Node {
    name: String,
    parent: usize,
    /// Index into `Tree::files` for a file; `None` for a directory.
    file: Option<usize>,
    children: Vec<usize>,
    /// Directory children by name, only needed while building.
    dirs: BTreeMap<String, usize>,
    files: u64,
}

#[derive(Debug)]
struct Tree<'a> {
    files: &'a [TreemapFile],
    classes: Classes,
    /// Node 0 is "/"; a parent always has a smaller index than its children.
    nodes: Vec<Node>,
    /// Bytes per node and class, `nodes.len() × classes.names.len()`, flat so that adding a
    /// child into its parent needs no double borrow.
    bytes: Vec<u64>,
    /// Files per class over the whole image.
    class_files: Vec<u64>,
}

impl<'a> Tree<'a> {
    fn build(files: &'a [TreemapFile]) -> Tree<'a> {
        let classes = Classes::from_files(files);
        let k = classes.names.len();
        // Input order must not matter, so the tree (and every tie after it) follows path order.
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by(|&a, &b| {
            let (fa, fb) = (&files[a], &files[b]);
            fa.path
                .cmp(&fb.path)
                .then(fa.size.cmp(&fb.size))
                .then(fa.kept.cmp(&fb.kept))
                .then(fa.class.cmp(&fb.class))
        });
        let mut nodes = vec![Node {
            name: "/".to_string(),
            parent: 0,
            file: None,
            children: Vec::new(),
            dirs: BTreeMap::new(),
            files: 0,
        }];
        let mut leaf_class = Vec::new();
        for &fi in &order {
            let file = &files[fi];
            let mut parts: Vec<&str> = file.path.split('/').filter(|p| !p.is_empty()).collect();
            let leaf = parts.pop().unwrap_or("");
            let mut cur = 0;
            for part in parts {
                cur = match nodes[cur].dirs.get(part) {
                    Some(&d) => d,
                    None => {
                        let d = nodes.len();
                        nodes.push(Node {
                            name: part.to_string(),
                            parent: cur,
                            file: None,
                            children: Vec::new(),
                            dirs: BTreeMap::new(),
                            files: 0,
                        });
                        nodes[cur].dirs.insert(part.to_string(), d);
                        nodes[cur].children.push(d);
                        d
                    }
                };
            }
            let id = nodes.len();
            nodes.push(Node {
                name: leaf.to_string(),
                parent: cur,
                file: Some(fi),
                children: Vec::new(),
                dirs: BTreeMap::new(),
                files: 1,
            });
            nodes[cur].children.push(id);
            leaf_class.push((id, classes.id(file), file.size));
        }
        let mut bytes = vec![0u64; nodes.len() * k];
        let mut class_files = vec![0u64; k];
        for (id, class, size) in leaf_class {
            bytes[id * k + class] = size;
            class_files[class] += 1;
        }
        for i in (1..nodes.len()).rev() {
            let p = nodes[i].parent;
            for c in 0..k {
                let v = bytes[i * k + c];
                bytes[p * k + c] = bytes[p * k + c].saturating_add(v);
            }
            let f = nodes[i].files;
            nodes[p].files += f;
        }
        for node in &mut nodes {
            node.dirs = BTreeMap::new();
        }
        Tree {
            files,
            classes,
            nodes,
            bytes,
            class_files,
        }
    }

    fn k(&self) -> usize {
        self.classes.names.len()
    }

    fn class_bytes(&self, node: usize) -> &[u64] {
        let k = self.k();
        &self.bytes[node * k..(node + 1) * k]
    }

    fn total(&self, node: usize) -> u64 {
        self.class_bytes(node)
            .iter()
            .fold(0u64, |a, &b| a.saturating_add(b))
    }

    fn kept(&self, node: usize) -> u64 {
        self.class_bytes(node)[0]
    }

    fn dropped(&self, node: usize) -> u64 {
        self.total(node) - self.kept(node)
    }

    fn path(&self, node: usize) -> String {
        if let Some(f) = self.nodes[node].file {
            return self.files[f].path.clone();
        }
        if node == 0 {
            return "/".to_string();
        }
        let mut parts = Vec::new();
        let mut cur = node;
        while cur != 0 {
            parts.push(self.nodes[cur].name.as_str());
            cur = self.nodes[cur].parent;
        }
        parts.reverse();
        let mut path = String::new();
        for p in parts {
            path.push('/');
            path.push_str(p);
        }
        path
    }
}

fn sum_bytes(v: &[u64]) -> u64 {
    v.iter().fold(0u64, |a, &b| a.saturating_add(b))
}

fn nonzero(v: &[u64]) -> usize {
    v.iter().filter(|&&b| b > 0).count()
}

// ---------------------------------------------------------------------------------------------
// Choosing and placing cells

#[derive(Debug)]
enum CellKind {
    File(usize),
    /// A directory drawn as class stripes.
    Collapsed(usize),
    Expanded {
        node: usize,
        header: bool,
        children: Vec<usize>,
    },
    /// The entries of `dir` too small (or over budget) to get a cell of their own.
    Other {
        dir: usize,
        entries: usize,
        files: u64,
        bytes: Vec<u64>,
    },
}

#[derive(Debug)]
struct Cell {
    rect: Rect,
    kind: CellKind,
}

/// Rectangles a cell costs while it is not split: one for a file or a single-class cell, else
/// one stripe per class plus the outline (see [`stripes`]).
fn stripe_cost(tree: &Tree, node: usize) -> usize {
    if tree.nodes[node].file.is_some() {
        1
    } else {
        bytes_cost(tree.class_bytes(node))
    }
}

fn bytes_cost(bytes: &[u64]) -> usize {
    match nonzero(bytes) {
        0 | 1 => 1,
        n => n + 1,
    }
}

/// Largest (weighted) area first, so the budget goes where the pixels are; ties by cell index,
/// which follows path order, to stay deterministic.
#[derive(Debug, PartialEq)]
struct Pending {
    area: f64,
    cell: usize,
}

impl Eq for Pending {}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        self.area
            .total_cmp(&other.area)
            .then(other.cell.cmp(&self.cell))
    }
}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Places the cells; index 0 is the root when there are any bytes at all.
fn layout(tree: &Tree) -> Vec<Cell> {
    let mut cells = Vec::new();
    if tree.total(0) == 0 {
        return cells;
    }
    let canvas = Rect {
        x: 0.0,
        y: 0.0,
        w: CANVAS_W,
        h: CANVAS_H,
    };
    cells.push(Cell {
        rect: canvas,
        kind: CellKind::Collapsed(0),
    });
    let mut used = stripe_cost(tree, 0);
    let mut heap = BinaryHeap::new();
    heap.push(Pending {
        area: canvas.area(),
        cell: 0,
    });
    while let Some(Pending { cell, .. }) = heap.pop() {
        let CellKind::Collapsed(node) = cells[cell].kind else {
            continue;
        };
        let r = cells[cell].rect;
        let header = r.w >= 48.0 && r.h >= 36.0;
        let top = if header { HEADER } else { PAD };
        let inner = Rect {
            x: r.x + PAD,
            y: r.y + top,
            w: r.w - 2.0 * PAD,
            h: r.h - top - PAD,
        };
        if inner.w < 4.0 || inner.h < 4.0 || inner.area() < 2.0 * MIN_CELL_AREA {
            continue;
        }
        let total = tree.total(node);
        let mut kids: Vec<usize> = tree.nodes[node]
            .children
            .iter()
            .copied()
            .filter(|&c| tree.total(c) > 0)
            .collect();
        kids.sort_by(|&a, &b| {
            tree.total(b)
                .cmp(&tree.total(a))
                .then_with(|| tree.nodes[a].name.cmp(&tree.nodes[b].name))
                .then(a.cmp(&b))
        });
        let scale = inner.area() / total as f64;
        let own = stripe_cost(tree, node);
        let available = MAX_RECTS - used + own;
        let reserve_other = bytes_cost(tree.class_bytes(node));
        let mut spend = 1; // the directory's frame
        let mut shown = 0;
        for (i, &kid) in kids.iter().enumerate() {
            if tree.total(kid) as f64 * scale < MIN_CELL_AREA {
                break;
            }
            let cost = stripe_cost(tree, kid);
            let other = if i + 1 < kids.len() { reserve_other } else { 0 };
            if spend + cost + other > available {
                break;
            }
            spend += cost;
            shown += 1;
        }
        if shown == 0 {
            continue;
        }
        let k = tree.k();
        let rest = &kids[shown..];
        let mut other_bytes = vec![0u64; k];
        let mut other_files = 0;
        for &kid in rest {
            for (acc, b) in other_bytes.iter_mut().zip(tree.class_bytes(kid)) {
                *acc = acc.saturating_add(*b);
            }
            other_files += tree.nodes[kid].files;
        }
        if !rest.is_empty() {
            spend += bytes_cost(&other_bytes);
        }
        used = used - own + spend;

        // `None` is the "other" cell; the stable sort keeps it after equal-sized named entries.
        let mut items: Vec<(u64, Option<usize>)> = kids[..shown]
            .iter()
            .map(|&kid| (tree.total(kid), Some(kid)))
            .collect();
        if !rest.is_empty() {
            items.push((sum_bytes(&other_bytes), None));
        }
        items.sort_by_key(|&(bytes, _)| std::cmp::Reverse(bytes));
        let values: Vec<f64> = items.iter().map(|&(b, _)| b as f64).collect();
        let rects = squarify(&values, inner);
        let mut children = Vec::with_capacity(items.len());
        for ((_, item), rect) in items.into_iter().zip(rects) {
            let id = cells.len();
            let kind = match item {
                Some(kid) if tree.nodes[kid].file.is_some() => CellKind::File(kid),
                Some(kid) => {
                    // Splitting a directory of one class only shows sizes, splitting a mixed one
                    // shows which parts were kept: the budget goes to the mixed ones first.
                    let weight = if nonzero(tree.class_bytes(kid)) <= 1 {
                        0.25
                    } else {
                        1.0
                    };
                    heap.push(Pending {
                        area: rect.area() * weight,
                        cell: id,
                    });
                    CellKind::Collapsed(kid)
                }
                None => CellKind::Other {
                    dir: node,
                    entries: rest.len(),
                    files: other_files,
                    bytes: std::mem::take(&mut other_bytes),
                },
            };
            cells.push(Cell { rect, kind });
            children.push(id);
        }
        cells[cell].kind = CellKind::Expanded {
            node,
            header,
            children,
        };
    }
    cells
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn render_map(out: &mut String, tree: &Tree, cells: &[Cell]) {
    let _ = writeln!(
        out,
        "<svg class=\"map\" id=\"map\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {CANVAS_W} {CANVAS_H}\" role=\"img\" aria-label=\"Treemap of the source image by bytes\">"
    );
    if cells.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">No regular file holds any bytes.</text>",
            CANVAS_W / 2.0,
            CANVAS_H / 2.0
        );
    } else {
        // Nested groups give each cell its directory's tooltip as a fallback; the recursion is
        // as deep as the visible nesting, which padding bounds to a few hundred levels.
        render_cell(out, tree, cells, 0);
    }
    out.push_str("</svg>\n");
    out.push_str("<p class=\"hint\">Area is bytes in the source image; color is the class. Hover a cell for its path and bytes. Cells too small to see are merged into an \u{201c}other\u{201d} cell per directory; a directory that is not split further is drawn as stripes, one per class, with areas in proportion to its bytes.</p>\n");
}

fn render_cell(out: &mut String, tree: &Tree, cells: &[Cell], id: usize) {
    let cell = &cells[id];
    let r = cell.rect;
    match &cell.kind {
        CellKind::File(node) => {
            let class = tree
                .class_bytes(*node)
                .iter()
                .position(|&b| b > 0)
                .unwrap_or(0);
            let _ = write!(
                out,
                "<g><title>{}</title><rect class=\"c{class}\" {}/>",
                Describe(tree, &tree.path(*node), tree.class_bytes(*node), 1, None),
                Geom(r)
            );
            label(out, r, &tree.nodes[*node].name, "");
            out.push_str("</g>\n");
        }
        CellKind::Collapsed(node) => {
            let _ = write!(
                out,
                "<g><title>{}</title>",
                Describe(
                    tree,
                    &tree.path(*node),
                    tree.class_bytes(*node),
                    tree.nodes[*node].files,
                    None
                )
            );
            stripes(out, r, tree.class_bytes(*node));
            label(out, r, &tree.nodes[*node].name, "/");
            out.push_str("</g>\n");
        }
        CellKind::Other {
            dir,
            entries,
            files,
            bytes,
        } => {
            let _ = write!(
                out,
                "<g><title>{}</title>",
                Describe(tree, &tree.path(*dir), bytes, *files, Some(*entries))
            );
            stripes(out, r, bytes);
            label(out, r, &format!("other ({entries})"), "");
            out.push_str("</g>\n");
        }
        CellKind::Expanded {
            node,
            header,
            children,
        } => {
            let bytes = tree.class_bytes(*node);
            let _ = write!(
                out,
                "<g><title>{}</title><rect class=\"d\" {}/>",
                Describe(
                    tree,
                    &tree.path(*node),
                    bytes,
                    tree.nodes[*node].files,
                    None
                ),
                Geom(r)
            );
            if *header {
                let name = if *node == 0 {
                    "/"
                } else {
                    &tree.nodes[*node].name
                };
                let size = whittle_image::units::human_bytes(sum_bytes(bytes));
                let full = format!("{name} \u{2014} {size}");
                let room = r.w - 6.0;
                let text = if text_width(&full) <= room {
                    full
                } else {
                    fit(name, room)
                };
                if !text.is_empty() {
                    let _ = write!(
                        out,
                        "<text class=\"h\" x=\"{}\" y=\"{}\">",
                        Num(r.x + 3.0),
                        Num(r.y + 10.0)
                    );
                    esc_path(out, &text);
                    out.push_str("</text>");
                }
            }
            out.push('\n');
            for &child in children {
                render_cell(out, tree, cells, child);
            }
            out.push_str("</g>\n");
        }
    }
}

/// Splits `r` along its longer side into one stripe per class with bytes.
fn stripes(out: &mut String, r: Rect, bytes: &[u64]) {
    let total = sum_bytes(bytes);
    let present: Vec<(usize, u64)> = bytes
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, b)| b > 0)
        .collect();
    if total == 0 || present.len() <= 1 {
        let class = present.first().map_or(0, |&(c, _)| c);
        let _ = write!(out, "<rect class=\"c{class}\" {}/>", Geom(r));
        return;
    }
    let along_x = r.w >= r.h;
    let span = if along_x { r.w } else { r.h };
    let mut pos = 0.0;
    let mut done = 0u64;
    for &(class, b) in &present {
        done += b;
        // Cumulative ends, so rounding never opens a gap between stripes.
        let end = span * (done as f64 / total as f64);
        let s = if along_x {
            Rect {
                x: r.x + pos,
                w: end - pos,
                ..r
            }
        } else {
            Rect {
                y: r.y + pos,
                h: end - pos,
                ..r
            }
        };
        let _ = write!(out, "<rect class=\"s c{class}\" {}/>", Geom(s));
        pos = end;
    }
    // The outline the stripes lack, so the cell still reads as one entry.
    let _ = write!(out, "<rect {} fill=\"none\"/>", Geom(r));
}

fn label(out: &mut String, r: Rect, name: &str, suffix: &str) {
    if r.w < 28.0 || r.h < 13.0 {
        return;
    }
    let text = fit(&format!("{name}{suffix}"), r.w - 6.0);
    if text.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"{}\">",
        Num(r.x + 3.0),
        Num(r.y + 10.5)
    );
    esc_path(out, &text);
    out.push_str("</text>");
}

/// A rough width in units at the map's 10px font: without script the page cannot measure
/// text, and a generous estimate only truncates a little early.
fn char_width(c: char) -> f64 {
    if c.is_ascii() {
        6.0
    } else {
        10.0
    }
}

fn text_width(s: &str) -> f64 {
    s.chars().map(char_width).sum()
}

fn fit(s: &str, room: f64) -> String {
    if text_width(s) <= room {
        return s.to_string();
    }
    let mut out = String::new();
    let mut w = char_width('\u{2026}');
    for c in s.chars() {
        w += char_width(c);
        if w > room {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        return out;
    }
    // A stub like "fi…" names nothing and only clutters the map.
    if out.chars().count() < 4 {
        return String::new();
    }
    out.push('\u{2026}');
    out
}

/// The tooltip of a cell: path, total, kept and dropped bytes with the drop classes.
struct Describe<'t, 'a, 'b>(&'t Tree<'a>, &'b str, &'b [u64], u64, Option<usize>);

impl std::fmt::Display for Describe<'_, '_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Describe(tree, path, bytes, files, other) = *self;
        let mut head = String::new();
        esc_path(&mut head, &elide(path));
        f.write_str(&head)?;
        if let Some(entries) = other {
            write!(f, "\nother: {entries} smaller entries")?;
        }
        let total = sum_bytes(bytes);
        let kept = bytes[0];
        let dropped = total - kept;
        let plural = if files == 1 { "" } else { "s" };
        write!(f, "\n{} in {} file{plural}", Bytes(total), Thousands(files))?;
        write!(f, "\nkept: {}, {}", Bytes(kept), Pct(kept, total))?;
        write!(f, "\ndropped: {}, {}", Bytes(dropped), Pct(dropped, total))?;
        for (class, &b) in bytes.iter().enumerate().skip(1) {
            if b > 0 {
                let mut name = String::new();
                esc_text(&mut name, &tree.classes.names[class]);
                write!(f, "\n\u{2003}{name}: {}", Bytes(b))?;
            }
        }
        Ok(())
    }
}

fn render_legend(out: &mut String, tree: &Tree) {
    let total = tree.total(0);
    let kept = tree.kept(0);
    let dropped = total - kept;
    let files = tree.nodes[0].files;
    let _ = writeln!(
        out,
        "<p>Source: <b>{}</b> in {} regular files; kept <b>{}</b>, {}; dropped <b>{}</b>, {}.</p>",
        Bytes(total),
        Thousands(files),
        Bytes(kept),
        Pct(kept, total),
        Bytes(dropped),
        Pct(dropped, total)
    );
    let mut order: Vec<usize> = (0..tree.k()).collect();
    let root = tree.class_bytes(0);
    // Kept first as the reference, then drops by weight.
    order[1..].sort_by(|&a, &b| root[b].cmp(&root[a]).then(a.cmp(&b)));
    out.push_str("<table class=\"legend\">\n<tr><th></th><th>Class</th><th>Bytes</th><th>Exact</th><th>Share</th><th>Files</th></tr>\n");
    for &c in &order {
        let _ = write!(
            out,
            "<tr><td><span class=\"sw\" style=\"background:{}\"></span></td><td>",
            tree.classes.colors[c]
        );
        esc_text(out, &tree.classes.names[c]);
        let _ = writeln!(
            out,
            "</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            whittle_image::units::human_bytes(root[c]),
            Thousands(root[c]),
            Pct(root[c], total),
            Thousands(tree.class_files[c])
        );
    }
    out.push_str("</table>\n");
    if total > 0 {
        let _ = write!(
            out,
            "<svg class=\"bar\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {CANVAS_W} 18\" preserveAspectRatio=\"none\">"
        );
        let mut x = 0.0;
        let mut done = 0u64;
        for &c in &order {
            if root[c] == 0 {
                continue;
            }
            done += root[c];
            let end = CANVAS_W * (done as f64 / total as f64);
            let _ = write!(
                out,
                "<rect class=\"c{c}\" x=\"{}\" y=\"0\" width=\"{}\" height=\"18\"><title>",
                Num(x),
                Num(end - x)
            );
            esc_text(out, &tree.classes.names[c]);
            let _ = write!(
                out,
                ": {}, {}</title></rect>",
                Bytes(root[c]),
                Pct(root[c], total)
            );
            x = end;
        }
        out.push_str("</svg>\n");
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Dropped,
    Kept,
}

fn render_top(out: &mut String, tree: &Tree, side: Side) {
    let amount = |n: usize| match side {
        Side::Dropped => tree.dropped(n),
        Side::Kept => tree.kept(n),
    };
    let is_dir = |n: usize| tree.nodes[n].file.is_none();
    let side_total = amount(0);
    // A directory whose bytes on this side all sit in one subdirectory says nothing that
    // subdirectory does not say more precisely; skipping it keeps chains like /usr → /usr/share
    // from filling the table.
    let mut rows: Vec<(u64, usize)> = (1..tree.nodes.len())
        .filter(|&n| is_dir(n) && amount(n) > 0)
        .filter(|&n| {
            !tree.nodes[n]
                .children
                .iter()
                .any(|&c| is_dir(c) && amount(c) == amount(n))
        })
        .map(|n| (amount(n), n))
        .collect();
    // Ties by node index, which is deterministic and close to path order; paths are built for
    // the listed rows only, since a hostile deep tree makes building them all quadratic.
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    rows.truncate(TOP_N);
    let (heading, what) = match side {
        Side::Dropped => ("dropped", "Dropped"),
        Side::Kept => ("kept", "Kept"),
    };
    let _ = writeln!(out, "<h2>Top {TOP_N} directories by {heading} bytes</h2>");
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"hint\">No directory has {heading} bytes.</p>"
        );
        return;
    }
    let _ = write!(
        out,
        "<table class=\"top\">\n<tr><th>Directory</th><th>{what}</th><th>Exact</th><th>Of all {heading}</th><th>Of the directory</th>"
    );
    if side == Side::Dropped {
        out.push_str("<th>Largest drop class</th>");
    }
    out.push_str("</tr>\n");
    for (bytes, node) in rows {
        out.push_str("<tr><td class=\"p\">");
        esc_path(out, &elide(&tree.path(node)));
        let _ = write!(
            out,
            "</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
            whittle_image::units::human_bytes(bytes),
            Thousands(bytes),
            Pct(bytes, side_total),
            Pct(bytes, tree.total(node))
        );
        if side == Side::Dropped {
            let classes = tree.class_bytes(node);
            // Ties go to the lower id, i.e. the legend's fixed order.
            let main = (1..classes.len())
                .max_by(|&a, &b| classes[a].cmp(&classes[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            let _ = write!(
                out,
                "<td><span class=\"sw\" style=\"background:{}\"></span> ",
                tree.classes.colors[main]
            );
            esc_text(out, &tree.classes.names[main]);
            let _ = write!(out, " {}</td>", Pct(classes[main], bytes));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

// ---------------------------------------------------------------------------------------------
// Formatting and escaping

/// Escapes text for element content and attribute values alike. Control characters become
/// U+FFFD: they are parse errors in HTML and would let a file name forge tooltip lines.
fn esc_into(out: &mut String, s: &str, keep_newlines: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' if keep_newlines => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// For our own and the caller's prose (title, summary, notes).
fn esc_text(out: &mut String, s: &str) {
    esc_into(out, s, true);
}

/// For paths, which come from an untrusted image: besides control characters, bidi overrides
/// are replaced too, since they can make one path display as another.
fn esc_path(out: &mut String, s: &str) {
    if s.chars().any(is_bidi_control) {
        let cleaned: String = s
            .chars()
            .map(|c| if is_bidi_control(c) { '\u{fffd}' } else { c })
            .collect();
        esc_into(out, &cleaned, false);
    } else {
        esc_into(out, s, false);
    }
}

/// Paths longer than any real one (Linux allows 4096 bytes) are shortened in the middle: every
/// cell repeats its path in its tooltip, so a hostile image of very long names would otherwise
/// blow the page up quadratically with nesting depth.
fn elide(path: &str) -> std::borrow::Cow<'_, str> {
    const KEEP: usize = 2048;
    if path.len() <= 2 * KEEP {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut head = KEEP;
    while !path.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = path.len() - KEEP;
    while !path.is_char_boundary(tail) {
        tail += 1;
    }
    std::borrow::Cow::Owned(format!("{}\u{2026}{}", &path[..head], &path[tail..]))
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `12.3 MiB (12,912,345 bytes)`.
struct Bytes(u64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 < 1024 {
            write!(f, "{} B", self.0)
        } else {
            write!(
                f,
                "{} ({} bytes)",
                whittle_image::units::human_bytes(self.0),
                Thousands(self.0)
            )
        }
    }
}

struct Thousands(u64);

impl std::fmt::Display for Thousands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.0.to_string();
        for (i, d) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

struct Pct(u64, u64);

impl std::fmt::Display for Pct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.1 == 0 {
            return f.write_str("0.0%");
        }
        write!(f, "{:.1}%", self.0 as f64 * 100.0 / self.1 as f64)
    }
}

/// A coordinate to 0.1 unit (finer is invisible and costs page weight), without a useless
/// trailing `.0`.
struct Num(f64);

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenths = (self.0 * 10.0).round() as i64;
        if tenths % 10 == 0 {
            write!(f, "{}", tenths / 10)
        } else {
            let sign = if tenths < 0 { "-" } else { "" };
            let t = tenths.unsigned_abs();
            write!(f, "{sign}{}.{}", t / 10, t % 10)
        }
    }
}

struct Geom(Rect);

impl std::fmt::Display for Geom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.0;
        write!(
            f,
            "x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"",
            Num(r.x),
            Num(r.y),
            Num(r.w.max(0.0)),
            Num(r.h.max(0.0))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed linear congruential generator: tests need varied input, not a dependency.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn file(path: &str, size: u64, class: &str) -> TreemapFile {
        TreemapFile {
            path: path.to_string(),
            size,
            kept: class == "kept",
            class: class.to_string(),
        }
    }

    fn page(files: Vec<TreemapFile>) -> Page {
        Page {
            title: "whittle build: docker-archive:test.tar".to_string(),
            summary: vec![("Source".to_string(), "10 MiB".to_string())],
            files,
            notes: vec!["verified: 3 probes passed".to_string()],
        }
    }

    const CLASSES: &[&str] = &[
        "kept",
        "kept",
        "kept",
        "unused",
        "docs",
        "man",
        "locales",
        "zoneinfo",
        "cache",
        "logs",
        "package-manager",
        "excluded",
        "tmp",
        "info",
    ];

    /// An image-like tree: a few top-level directories, packages below them, files of
    /// log-uniform sizes from a few bytes to a few megabytes.
    fn synthetic(n: usize, seed: u64) -> Vec<TreemapFile> {
        let mut rng = Lcg(seed);
        let tops = [
            "usr/lib",
            "usr/share/doc",
            "usr/share/locale",
            "usr/bin",
            "var/lib/apt",
            "opt/app",
            "etc",
        ];
        (0..n)
            .map(|i| {
                let top = tops[rng.below(tops.len() as u64) as usize];
                let pkg = rng.below(200);
                let sub = rng.below(6);
                let size = 1u64 << rng.below(22);
                let size = size + rng.below(size);
                let class = CLASSES[rng.below(CLASSES.len() as u64) as usize];
                file(&format!("/{top}/pkg{pkg}/d{sub}/f{i}.bin"), size, class)
            })
            .collect()
    }

    /// The HTML is well-formed enough for any parser: every tag closes in order, attribute
    /// quotes pair up and nothing but our own markup opens a tag.
    fn check_balanced(html: &str) {
        const VOID: &[&str] = &["meta", "br"];
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = html;
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            let end = rest.find('>').expect("unclosed tag");
            let tag = &rest[..end];
            rest = &rest[end + 1..];
            assert_eq!(tag.matches('"').count() % 2, 0, "unpaired quote in <{tag}>");
            if tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
                continue;
            }
            let name = tag
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or("");
            assert!(
                [
                    "html", "head", "meta", "title", "style", "body", "h1", "h2", "table", "tr",
                    "th", "td", "ul", "li", "p", "b", "span", "svg", "g", "rect", "text"
                ]
                .contains(&name),
                "unexpected tag <{tag}>"
            );
            if tag.ends_with('/') || VOID.contains(&name) {
                continue;
            }
            if name == "style" {
                let close = rest.find("</style>").expect("unclosed style");
                rest = &rest[close + "</style>".len()..];
                continue;
            }
            stack.push(name);
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    fn map_svg(html: &str) -> &str {
        let start = html.find("<svg class=\"map\"").expect("map");
        let len = html[start..].find("</svg>").expect("map end");
        &html[start..start + len]
    }

    fn rect(x: f64, y: f64, w: f64, h: f64) -> Rect {
        Rect { x, y, w, h }
    }

    fn overlap(a: &Rect, b: &Rect) -> f64 {
        let w = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
        let h = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
        w.max(0.0) * h.max(0.0)
    }

    fn inside(r: &Rect, b: &Rect, eps: f64) -> bool {
        r.w >= 0.0
            && r.h >= 0.0
            && r.x >= b.x - eps
            && r.y >= b.y - eps
            && r.x + r.w <= b.x + b.w + eps
            && r.y + r.h <= b.y + b.h + eps
    }

    #[test]
    fn squarify_tiles_the_rectangle_exactly() {
        let mut rng = Lcg(7);
        let bounds = [
            rect(0.0, 0.0, 1200.0, 720.0),
            rect(13.5, 2.25, 40.0, 900.0),
            rect(-5.0, 100.0, 333.3, 333.3),
            rect(0.0, 0.0, 1.0, 0.001),
        ];
        for b in bounds {
            for n in [1usize, 2, 3, 7, 50, 400] {
                let mut values: Vec<f64> = (0..n)
                    .map(|_| {
                        let bits = rng.below(20);
                        (1 + rng.below(1 << bits)) as f64
                    })
                    .collect();
                values.sort_by(|a, b| b.total_cmp(a));
                let rects = squarify(&values, b);
                assert_eq!(rects.len(), n);
                let total: f64 = values.iter().sum();
                let eps = 1e-9 * (b.w + b.h);
                let area_eps = 1e-9 * b.area();
                let mut covered = 0.0;
                for (r, v) in rects.iter().zip(&values) {
                    assert!(inside(r, &b, eps), "{r:?} outside {b:?}");
                    let want = v / total * b.area();
                    assert!(
                        (r.area() - want).abs() <= area_eps,
                        "{} != {want}",
                        r.area()
                    );
                    covered += r.area();
                }
                assert!((covered - b.area()).abs() <= area_eps);
                for (i, a) in rects.iter().enumerate() {
                    for c in &rects[i + 1..] {
                        assert!(overlap(a, c) <= area_eps, "{a:?} overlaps {c:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn squarify_keeps_cells_squarish() {
        // The example of the paper: six values in a 6 × 4 rectangle.
        let values = [6.0, 6.0, 4.0, 3.0, 2.0, 2.0, 1.0];
        let rects = squarify(&values, rect(0.0, 0.0, 6.0, 4.0));
        for r in &rects {
            let ratio = (r.w / r.h).max(r.h / r.w);
            assert!(ratio < 3.0, "{r:?}");
        }
        // The first row of the paper: 6 and 6 stacked in a column 3 wide.
        assert!((rects[0].w - 3.0).abs() < 1e-9 && (rects[0].h - 2.0).abs() < 1e-9);
        // Equal values in a square give squares.
        let rects = squarify(&[1.0; 16], rect(0.0, 0.0, 4.0, 4.0));
        for r in &rects {
            assert!(
                (r.w - 1.0).abs() < 1e-9 && (r.h - 1.0).abs() < 1e-9,
                "{r:?}"
            );
        }
    }

    #[test]
    fn squarify_degenerate_input() {
        let b = rect(1.0, 2.0, 10.0, 10.0);
        assert!(squarify(&[], b).is_empty());
        for r in squarify(&[0.0, 0.0], b) {
            assert_eq!(r.area(), 0.0);
        }
        let flat = Rect { h: 0.0, ..b };
        assert_eq!(squarify(&[1.0, 2.0], flat).len(), 2);
    }

    #[test]
    fn layout_nests_inside_parents_without_overlap() {
        let files = synthetic(5_000, 3);
        let tree = Tree::build(&files);
        let cells = layout(&tree);
        let canvas = rect(0.0, 0.0, CANVAS_W, CANVAS_H);
        let mut expanded = 0;
        for cell in &cells {
            assert!(inside(&cell.rect, &canvas, 1e-6));
            if let CellKind::Expanded { children, .. } = &cell.kind {
                expanded += 1;
                for (i, &a) in children.iter().enumerate() {
                    assert!(inside(&cells[a].rect, &cell.rect, 1e-6));
                    for &b in &children[i + 1..] {
                        assert!(overlap(&cells[a].rect, &cells[b].rect) < 1e-6);
                    }
                }
            }
        }
        assert!(expanded > 10, "only {expanded} directories split");
    }

    #[test]
    fn hostile_paths_are_escaped() {
        let hostile = "/a/<script>&\"'";
        let mut files = vec![
            file(hostile, 5_000_000, "unused"),
            file("/<b>x</b>/f", 3_000_000, "kept"),
            file("/ctl/\u{1b}[31mred\n\u{202e}gnp.exe", 2_000_000, "docs"),
            file("/weird/class", 1_000_000, "<i>"),
        ];
        files.extend(synthetic(200, 9));
        let mut p = page(files);
        p.title = "<script>alert(1)</script>".to_string();
        p.summary
            .push(("<td onclick=x>".to_string(), "&amp;".to_string()));
        p.notes.push("</ul><script>".to_string());
        let html = render(&p);
        check_balanced(&html);
        for bad in [
            "<script",
            "<b>x",
            "<i>",
            "<td onclick",
            "\u{1b}",
            "\u{202e}",
            "&amp;\"",
            "'>",
        ] {
            assert!(!html.contains(bad), "raw {bad:?} in output");
        }
        assert!(html.contains("/a/&lt;script&gt;&amp;&quot;&#39;"));
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(html.contains("&amp;amp;"));
        assert!(html.contains("&lt;i&gt;"));
    }

    #[test]
    fn output_is_deterministic_and_order_independent() {
        let files = synthetic(3_000, 11);
        let a = render(&page(files.clone()));
        let b = render(&page(files.clone()));
        assert_eq!(a, b);
        let mut shuffled = files;
        let mut rng = Lcg(5);
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i as u64 + 1) as usize);
        }
        assert_eq!(a, render(&page(shuffled)));
    }

    #[test]
    fn empty_input_renders_a_valid_page() {
        let html = render(&Page {
            title: String::new(),
            summary: Vec::new(),
            files: Vec::new(),
            notes: Vec::new(),
        });
        check_balanced(&html);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.ends_with("</html>\n"));
        assert!(html.contains("No regular file holds any bytes."));
        // Only zero-byte files: still nothing to draw.
        let html = render(&page(vec![
            file("/empty", 0, "kept"),
            file("/", 0, "unused"),
        ]));
        check_balanced(&html);
        assert!(html.contains("No regular file holds any bytes."));
    }

    #[test]
    fn rect_budget_holds_for_50k_files() {
        let mut flat: Vec<TreemapFile> = (0..50_000)
            .map(|i| {
                file(
                    &format!("/usr/share/zoneinfo/z{i}"),
                    100 + i % 7,
                    "zoneinfo",
                )
            })
            .collect();
        flat.push(file("/big", 50_000_000, "kept"));
        let deep = vec![
            file(&"/d".repeat(5_000), 10, "kept"),
            file("/x", 10, "unused"),
        ];
        let long_names = format!("/{}", "n".repeat(200)).repeat(400);
        let long = vec![file(&long_names, 10, "kept"), file("/x", 10, "unused")];
        for files in [synthetic(50_000, 1), flat, deep, long] {
            let html = render(&page(files));
            check_balanced(&html);
            let rects = map_svg(&html).matches("<rect").count();
            assert!(rects <= MAX_RECTS, "{rects} rects");
            assert!(html.len() < 2_000_000, "{} bytes", html.len());
        }
        let html = render(&page(synthetic(50_000, 1)));
        // The budget is actually used, not just respected.
        assert!(map_svg(&html).matches("<rect").count() > MAX_RECTS / 2);
    }

    #[test]
    fn top_tables_name_the_specific_directory() {
        let files = vec![
            file("/usr/share/doc/big/README", 9_000_000, "docs"),
            file("/usr/share/doc/small/README", 1_000, "docs"),
            file("/usr/bin/app", 4_000_000, "kept"),
        ];
        let html = render(&page(files));
        let dropped = &html[html.find("by dropped bytes").expect("table")..];
        let dropped = &dropped[..dropped.find("</table>").expect("end")];
        assert!(dropped.contains(">/usr/share/doc/big<"));
        assert!(dropped.contains(">/usr/share/doc<"));
        // /usr and /usr/share hold exactly /usr/share/doc's dropped bytes.
        assert!(!dropped.contains(">/usr<") && !dropped.contains(">/usr/share<"));
        let kept = &html[html.find("by kept bytes").expect("table")..];
        assert!(kept.contains(">/usr/bin<"));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(Thousands(0).to_string(), "0");
        assert_eq!(Thousands(999).to_string(), "999");
        assert_eq!(Thousands(1_000).to_string(), "1,000");
        assert_eq!(Thousands(12_912_345).to_string(), "12,912,345");
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(1_572_864).to_string(), "1.5 MiB (1,572,864 bytes)");
        assert_eq!(Pct(1, 3).to_string(), "33.3%");
        assert_eq!(Pct(1, 0).to_string(), "0.0%");
        assert_eq!(Num(3.0).to_string(), "3");
        assert_eq!(Num(3.04).to_string(), "3");
        assert_eq!(Num(3.05).to_string(), "3.1");
        assert_eq!(Num(-0.5).to_string(), "-0.5");
        assert_eq!(fit("abcdefghij", 36.0), "abcd\u{2026}");
        assert_eq!(fit("abc", 36.0), "abc");
        assert_eq!(fit("abcdefghij", 24.0), "");
        assert_eq!(elide("/usr/bin/env"), "/usr/bin/env");
        let long = format!("/{}", "é".repeat(5_000));
        let short = elide(&long);
        assert!(short.len() < 4_200 && short.starts_with("/é") && short.ends_with('é'));
    }
}
