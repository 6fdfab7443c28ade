//! dive's efficiency score and wasted bytes (dive/filetree/efficiency.go), reproduced exactly.
//!
//! For every layer, dive visits the *leaves* of that layer's own tree (entries with no
//! descendants in the same layer). A path's version size is its header size, except a
//! whiteout, which counts the size of the directory subtree it removes from the layers below
//! (0 when it removes a file, as in dive). Per path: `cumulative` = Σ sizes of all versions,
//! `min` = smallest version. Score = Σmin / Σcumulative (1.0 when nothing was seen); wasted
//! bytes = Σcumulative over paths seen in two or more layers. Opaque markers are not
//! whiteouts of any lower path in dive's tree, so they contribute nothing here either.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use whittle_fstree::{display_path, Entry, EntryKind, FsTree};

#[derive(Debug, Clone, Serialize)]
pub struct WastedPath {
    pub path: String,
    /// Number of layers holding a version of the path.
    pub count: u32,
    pub cumulative: u64,
}

#[derive(Debug, Clone)]
pub struct Efficiency {
    pub score: f64,
    pub wasted_bytes: u64,
    pub wasted: Vec<WastedPath>,
}

#[derive(Debug, Default)]
struct PathData {
    cumulative: u64,
    min: u64,
    count: u32,
}

#[derive(Debug, Default)]
pub(crate) struct EfficiencyBuilder {
    paths: HashMap<Vec<u8>, PathData>,
}

impl EfficiencyBuilder {
    /// Adds one layer; `lower` is the merged tree of the layers below it.
    pub(crate) fn add_layer(&mut self, lower: &FsTree, entries: &[Entry]) {
        // The last entry for a path wins within a layer, as in dive's tree.
        let mut latest: HashMap<&[u8], &Entry> = HashMap::new();
        let mut ancestors: HashSet<&[u8]> = HashSet::new();
        for e in entries {
            if e.kind == EntryKind::Opaque || e.path.is_empty() {
                continue;
            }
            latest.insert(&e.path, e);
            let mut p = e.path.as_slice();
            while let Some(i) = p.iter().rposition(|&b| b == b'/') {
                p = &p[..i];
                if !ancestors.insert(p) {
                    break;
                }
            }
        }
        for (path, e) in latest {
            if ancestors.contains(path) {
                continue;
            }
            let size = match e.kind {
                EntryKind::Whiteout => match lower.get(path) {
                    Some(n) if n.is_dir() => lower.subtree_size(path),
                    _ => 0,
                },
                _ => e.header_size,
            };
            let d = self.paths.entry(path.to_vec()).or_insert(PathData {
                cumulative: 0,
                min: u64::MAX,
                count: 0,
            });
            d.cumulative += size;
            d.min = d.min.min(size);
            d.count += 1;
        }
    }

    pub(crate) fn finish(self, top: usize) -> Efficiency {
        let (mut min_sum, mut cum_sum, mut wasted_bytes) = (0u128, 0u128, 0u64);
        let mut wasted = Vec::new();
        for (path, d) in &self.paths {
            min_sum += d.min as u128;
            cum_sum += d.cumulative as u128;
            if d.count >= 2 {
                wasted_bytes += d.cumulative;
                wasted.push(WastedPath {
                    path: display_path(path),
                    count: d.count,
                    cumulative: d.cumulative,
                });
            }
        }
        wasted.sort_by(|a, b| {
            b.cumulative
                .cmp(&a.cumulative)
                .then_with(|| a.path.cmp(&b.path))
        });
        wasted.truncate(top);
        let score = if cum_sum == 0 {
            1.0
        } else {
            min_sum as f64 / cum_sum as f64
        };
        Efficiency {
            score,
            wasted_bytes,
            wasted,
        }
    }
}
