//! `whittle inspect`: what is in an image and where its weight is, in one pass over the layers.
//!
//! The efficiency score and wasted bytes follow dive's definitions exactly (so numbers can be
//! compared with the tool people already use); junk uses the same classifier as
//! `squash --drop-junk`, so the report says precisely what squashing would save.

mod caps;
mod dive;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::Serialize;
use whittle_fstree::{display_path, flatten_with, FlattenOptions, NodeKind, Progress};
use whittle_image::ImageRef;
use whittle_rules::{JunkClass, Rules};

pub use dive::{Efficiency, WastedPath};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] whittle_image::Error),
    #[error(transparent)]
    Tree(#[from] whittle_fstree::Error),
}

/// How many entries the "largest files" and "wasted" lists keep.
pub const TOP_N: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    /// 0-based position, bottom first.
    pub index: usize,
    /// Digest of the blob as stored (compressed or not).
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    pub compressed_size: u64,
    /// Bytes of the uncompressed tar.
    pub size: u64,
    /// Entries that are not directories, whiteouts or opaque markers.
    pub files: u64,
    pub entries: u64,
    pub created_by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    /// 0-based index of the layer that provides this version.
    pub layer: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct JunkInfo {
    pub class: JunkClass,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CapabilityInfo {
    pub path: String,
    /// In `getcap` notation, e.g. `cap_net_bind_service=ep`.
    pub capabilities: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Security {
    /// True when the config sets no User, or user root / uid 0.
    pub runs_as_root: bool,
    pub user: Option<String>,
    pub setuid: Vec<String>,
    pub setgid: Vec<String>,
    pub capabilities: Vec<CapabilityInfo>,
    /// Directories writable by everyone without the sticky bit.
    pub world_writable_dirs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MergedInfo {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Sum of regular file sizes (hardlinked content counted once).
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub reference: String,
    pub config_digest: String,
    pub architecture: String,
    pub os: String,
    pub created: Option<String>,
    pub layers: Vec<LayerInfo>,
    /// Sum of uncompressed layer sizes.
    pub size: u64,
    /// Sum of stored layer sizes.
    pub compressed_size: u64,
    pub merged: MergedInfo,
    /// dive's efficiency score, 0..=1.
    pub efficiency: f64,
    /// dive's wasted bytes.
    pub wasted_bytes: u64,
    /// The paths wasting most, by cumulative size.
    pub wasted: Vec<WastedPath>,
    pub largest_files: Vec<FileInfo>,
    pub junk: Vec<JunkInfo>,
    /// What `squash --drop-junk` would remove.
    pub junk_bytes: u64,
    pub security: Security,
    /// How the image relates to others, from the labels whittle writes.
    pub relations: Relations,
}

/// What an image says about the images it belongs with.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Relations {
    /// A debug variant: the config digest of the slim image it extends
    /// (`org.whittle.debug-of`).
    pub debug_of: Option<String>,
    /// `org.opencontainers.image.base.name` / `.base.digest`, and the diff_id of the shared
    /// base layer (`org.whittle.base.diff_id`) of a family member.
    pub base_name: Option<String>,
    pub base_digest: Option<String>,
    pub base_diff_id: Option<String>,
    /// `org.whittle.source`: the config digest of the fat image a slim one was made from.
    pub source: Option<String>,
}

impl Relations {
    fn of(view: &whittle_image::ConfigView) -> Relations {
        let label = |k: &str| view.labels.as_ref().and_then(|l| l.get(k)).cloned();
        Relations {
            debug_of: label("org.whittle.debug-of"),
            base_name: label("org.opencontainers.image.base.name"),
            base_digest: label("org.opencontainers.image.base.digest"),
            base_diff_id: label("org.whittle.base.diff_id"),
            source: label("org.whittle.source"),
        }
    }
}

/// Reads `r` once and reports on it. `progress` receives uncompressed bytes read.
pub fn inspect(r: &ImageRef, progress: Option<Progress<'_>>) -> Result<Report, Error> {
    let image = whittle_image::open(r)?;
    let history = image.config.layer_history();
    let history = if history.len() == image.layers.len() {
        history
    } else {
        vec![None; image.layers.len()]
    };
    let mut eff = dive::EfficiencyBuilder::default();
    let mut layers = Vec::new();
    let mut history = history.into_iter();
    let flat = flatten_with(
        &image,
        FlattenOptions {
            from_layer: 0,
            keep_content: false,
        },
        progress,
        |layer, entries, tree| {
            eff.add_layer(tree, &entries.entries);
            let d = entries.digests;
            layers.push(LayerInfo {
                index: layer.index,
                digest: d.map(|d| d.digest.to_string()).unwrap_or_default(),
                diff_id: d.map(|d| d.diff_id.to_string()).unwrap_or_default(),
                compressed_size: d.map_or(layer.stored_size(), |d| d.stored_size),
                size: entries.tar_size,
                files: entries
                    .entries
                    .iter()
                    .filter(|e| {
                        !matches!(
                            e.kind,
                            whittle_fstree::EntryKind::Dir
                                | whittle_fstree::EntryKind::Whiteout
                                | whittle_fstree::EntryKind::Opaque
                        )
                    })
                    .count() as u64,
                entries: entries.entries.len() as u64,
                created_by: history.next().flatten(),
            });
        },
    )?;
    let efficiency = eff.finish(TOP_N);
    let tree = flat.tree;

    let mut merged = MergedInfo {
        files: 0,
        directories: 0,
        symlinks: 0,
        bytes: 0,
    };
    let mut seen_inodes = std::collections::HashSet::new();
    let mut largest: BinaryHeap<Reverse<(u64, Vec<u8>, u32)>> = BinaryHeap::new();
    let view = image.config.view();
    let mut security = Security {
        runs_as_root: runs_as_root(view.user.as_deref()),
        user: view.user.clone().filter(|u| !u.is_empty()),
        setuid: Vec::new(),
        setgid: Vec::new(),
        capabilities: Vec::new(),
        world_writable_dirs: Vec::new(),
    };
    for (path, node) in tree.iter() {
        match &node.kind {
            NodeKind::File { size, .. } => {
                merged.files += 1;
                if seen_inodes.insert(node.inode) {
                    merged.bytes += size;
                }
                largest.push(Reverse((*size, path.clone(), node.layer)));
                if largest.len() > TOP_N {
                    largest.pop();
                }
                if node.meta.mode & 0o4000 != 0 {
                    security.setuid.push(display_path(path));
                }
                if node.meta.mode & 0o2000 != 0 {
                    security.setgid.push(display_path(path));
                }
            }
            NodeKind::Dir { .. } => {
                merged.directories += 1;
                if node.meta.mode & 0o002 != 0 && node.meta.mode & 0o1000 == 0 {
                    security.world_writable_dirs.push(display_path(path));
                }
            }
            NodeKind::Symlink(_) => merged.symlinks += 1,
            _ => {}
        }
        if let Some((_, v)) = node
            .meta
            .xattrs
            .iter()
            .find(|(k, _)| k == b"security.capability")
        {
            security.capabilities.push(CapabilityInfo {
                path: display_path(path),
                capabilities: caps::describe(v),
            });
        }
    }
    let mut largest: Vec<_> = largest.into_iter().map(|Reverse(x)| x).collect();
    largest.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let largest_files = largest
        .into_iter()
        .map(|(size, path, layer)| FileInfo {
            path: display_path(&path),
            size,
            layer,
        })
        .collect();

    let rules = Rules::new(&tree, true, &[]).expect("no user globs");
    let junk: Vec<JunkInfo> = rules
        .measure(&tree)
        .into_iter()
        .map(|(class, t)| JunkInfo {
            class,
            files: t.files,
            bytes: t.bytes,
        })
        .collect();

    Ok(Report {
        reference: r.to_string(),
        config_digest: image.config_digest.to_string(),
        architecture: image.config.architecture(),
        os: image.config.os(),
        created: image.config.created(),
        size: layers.iter().map(|l| l.size).sum(),
        compressed_size: layers.iter().map(|l| l.compressed_size).sum(),
        layers,
        merged,
        efficiency: efficiency.score,
        wasted_bytes: efficiency.wasted_bytes,
        wasted: efficiency.wasted,
        largest_files,
        junk_bytes: junk.iter().map(|j| j.bytes).sum(),
        junk,
        security,
        relations: Relations::of(&image.config.view()),
    })
}

fn runs_as_root(user: Option<&str>) -> bool {
    match user.map(str::trim) {
        None | Some("") => true,
        Some(u) => {
            let name = u.split(':').next().unwrap_or(u);
            name == "root" || name == "0"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_detection() {
        assert!(runs_as_root(None));
        assert!(runs_as_root(Some("")));
        assert!(runs_as_root(Some("0:0")));
        assert!(runs_as_root(Some("root")));
        assert!(!runs_as_root(Some("nginx")));
        assert!(!runs_as_root(Some("1000:0")));
    }
}
