//! `whittle squash`: layers `N..` of an image become one layer; layers below `N` are copied
//! byte for byte; the config is kept except for `rootfs.diff_ids` and `history`.
//!
//! Reproducible by construction: the layer tar is written from the merged tree in path order
//! with no wall-clock times, and the only timestamp whittle adds (the history entry) comes
//! from the source config or `SOURCE_DATE_EPOCH`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use whittle_fstree::{flatten, FlattenOptions};
use whittle_image::compression::Compression;
use whittle_image::write::{Destination, LayerOut, NewImage, WriteSummary};
use whittle_image::{ImageRef, Transport};
use whittle_layer::{write_layer, LayerOptions};
use whittle_rules::{ClassTotal, JunkClass, Rules};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] whittle_image::Error),
    #[error(transparent)]
    Tree(#[from] whittle_fstree::Error),
    #[error("{0}")]
    Usage(String),
}

#[derive(Debug, Clone, Default)]
pub struct SquashOptions {
    /// First layer (0-based) to squash; lower layers are kept as they are.
    pub from_layer: usize,
    pub tag: Option<String>,
    pub drop_globs: Vec<String>,
    pub drop_junk: bool,
    pub compression: Option<Compression>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Dropped {
    pub class: JunkClass,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SquashReport {
    pub source: String,
    pub destination: String,
    pub layers_before: usize,
    pub layers_after: usize,
    /// Sum of the source layers' uncompressed tar sizes.
    pub size_before: u64,
    /// Sum of the written layers' uncompressed tar sizes.
    pub size_after: u64,
    pub dropped: Vec<Dropped>,
    pub dropped_bytes: u64,
    pub config_digest: String,
    pub layers: Vec<whittle_image::write::LayerSummary>,
}

/// Squashes `src` into `dest`. `progress` is called with uncompressed bytes read.
pub fn squash(
    src: &ImageRef,
    dest: &ImageRef,
    opts: &SquashOptions,
    progress: Option<whittle_fstree::Progress<'_>>,
) -> Result<SquashReport, Error> {
    whittle_image::write::check_not_source(src, dest)?;
    let to_dir = dest.transport == Transport::Rootfs && is_dir_target(&dest.path);
    let destination = if to_dir {
        check_dir_target(&dest.path)?;
        None
    } else {
        Some(Destination::prepare(dest)?)
    };
    let image = whittle_image::open(src)?;
    if to_dir && opts.from_layer > 0 {
        return Err(Error::Usage(format!(
            "{dest}: a root file system directory is the whole image; --from-layer must be 0"
        )));
    }
    let n = image.layers.len();
    if opts.from_layer >= n.max(1) {
        return Err(Error::Usage(format!(
            "--from-layer {} but {src} has {n} layer(s) (numbered from 0)",
            opts.from_layer
        )));
    }
    let mut flat = flatten(
        &image,
        FlattenOptions {
            from_layer: opts.from_layer,
            keep_content: true,
        },
        progress,
    )?;
    let rules = Rules::new(&flat.tree, opts.drop_junk, &opts.drop_globs).map_err(Error::Usage)?;
    let totals: BTreeMap<JunkClass, ClassTotal> = rules.apply(&mut flat.tree);
    let size_before = source_size(&image);
    if to_dir {
        let written = unpack_to_dir(&flat, &dest.path)?;
        let dropped = dropped_list(&totals);
        return Ok(SquashReport {
            source: src.to_string(),
            destination: dest.to_string(),
            layers_before: n,
            layers_after: 1,
            size_before,
            size_after: written,
            dropped_bytes: dropped.iter().map(|d| d.bytes).sum(),
            dropped,
            config_digest: image.config_digest.to_string(),
            layers: Vec::new(),
        });
    }
    let destination = destination.expect("prepared above");

    let mut config = image.config.clone();
    rewrite_history(&mut config.value, opts.from_layer);
    let mut layers: Vec<LayerOut<'_>> = image.layers[..opts.from_layer]
        .iter()
        .cloned()
        .map(LayerOut::Copy)
        .collect();
    let (tree, store) = (&flat.tree, &flat.store);
    let layer_opts = LayerOptions {
        skip_implicit_dirs: opts.from_layer > 0,
    };
    layers.push(LayerOut::New(Box::new(move |w| {
        write_layer(tree, store, w, layer_opts).map(|_| ())
    })));
    let summary: WriteSummary = destination.write(NewImage {
        config,
        layers,
        tag: opts
            .tag
            .clone()
            .or_else(|| dest.name.clone())
            .or_else(|| match dest.transport {
                // An archive keeps the source's name unless told otherwise, as docker-squash does.
                Transport::DockerArchive => image.repo_tags.first().cloned(),
                _ => None,
            }),
        compression: opts.compression.unwrap_or(Compression::None),
    })?;
    let dropped = dropped_list(&totals);
    Ok(SquashReport {
        source: src.to_string(),
        destination: summary.destination.clone(),
        layers_before: n,
        layers_after: summary.layers.len(),
        size_before,
        size_after: uncompressed_total(&summary),
        dropped_bytes: dropped.iter().map(|d| d.bytes).sum(),
        dropped,
        config_digest: summary.config_digest.to_string(),
        layers: summary.layers,
    })
}

/// `rootfs:PATH` names a directory when PATH is one, or does not look like a tar file.
fn is_dir_target(path: &Path) -> bool {
    if path.is_dir() {
        return true;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    ![".tar", ".tar.gz", ".tgz", ".tar.zst"]
        .iter()
        .any(|s| name.ends_with(s))
}

fn check_dir_target(path: &Path) -> Result<(), Error> {
    let bad = |m: &str| Error::Image(whittle_image::Error::format(path, m));
    if path.exists() {
        let mut it =
            std::fs::read_dir(path).map_err(|e| Error::Image(whittle_image::Error::io(path, e)))?;
        if it.next().is_some() {
            return Err(bad("destination directory exists and is not empty"));
        }
    }
    let parent = parent_dir(path);
    tempfile::Builder::new()
        .prefix(".whittle-probe-")
        .tempfile_in(&parent)
        .map_err(|e| Error::Image(whittle_image::Error::io(&parent, e)))?;
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Extracts the merged tree into a temporary directory beside `dest`, then renames it into
/// place, so a failure leaves nothing under `dest`. Returns the bytes of file content written.
fn unpack_to_dir(flat: &whittle_fstree::Flattened, dest: &Path) -> Result<u64, Error> {
    let parent = parent_dir(dest);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}.whittle-"))
        .tempdir_in(&parent)
        .map_err(|e| Error::Image(whittle_image::Error::io(&parent, e)))?;
    let summary =
        whittle_fstree::extract(&flat.tree, &flat.store, temp.path(), &Default::default())?;
    if dest.is_dir() {
        std::fs::remove_dir(dest).map_err(|e| Error::Image(whittle_image::Error::io(dest, e)))?;
    }
    let kept = temp.keep();
    std::fs::rename(&kept, dest).map_err(|e| Error::Image(whittle_image::Error::io(dest, e)))?;
    Ok(summary.bytes)
}

fn dropped_list(totals: &BTreeMap<JunkClass, ClassTotal>) -> Vec<Dropped> {
    totals
        .iter()
        .map(|(c, t)| Dropped {
            class: *c,
            files: t.files,
            bytes: t.bytes,
        })
        .collect()
}

/// Uncompressed size of the source image: the layer tar sizes when uncompressed; compressed
/// layers count their stored size (their true size is known only after reading them).
fn source_size(image: &whittle_image::Image) -> u64 {
    image.layers.iter().map(|l| l.stored_size()).sum()
}

fn uncompressed_total(s: &WriteSummary) -> u64 {
    s.layers.iter().map(|l| l.size).sum()
}

/// Keeps history entries of the kept layers, replaces the squashed layers' entries with one,
/// and keeps the config-only (`empty_layer`) entries that followed.
fn rewrite_history(config: &mut Value, from_layer: usize) {
    if let Some(c) = whittle_image::source_date_epoch() {
        config["created"] = json!(c);
    }
    let when = config.get("created").cloned().unwrap_or(Value::Null);
    let history = config
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_empty = |h: &Value| {
        h.get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    // Entries before the first squashed layer's entry stay where they are.
    let mut non_empty = 0usize;
    let split = history
        .iter()
        .position(|h| {
            let hit = !is_empty(h) && non_empty == from_layer;
            if !is_empty(h) {
                non_empty += 1;
            }
            hit
        })
        .unwrap_or(history.len());
    let mut out: Vec<Value> = history[..split].to_vec();
    let mut entry = json!({
        "created_by": format!("whittle squash --from-layer {from_layer}"),
        "comment": format!("layers {from_layer}.. squashed by whittle {}", env!("CARGO_PKG_VERSION")),
    });
    if !when.is_null() {
        entry["created"] = when;
    }
    out.push(entry);
    out.extend(history[split..].iter().filter(|h| is_empty(h)).cloned());
    config["history"] = Value::Array(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_rewritten() {
        let mut c = json!({"created": "2020-01-01T00:00:00Z", "history": [
            {"created_by": "base"}, {"created_by": "ENV x", "empty_layer": true},
            {"created_by": "apt"}, {"created_by": "CMD", "empty_layer": true}]});
        rewrite_history(&mut c, 1);
        let h = c["history"].as_array().unwrap();
        assert_eq!(h.len(), 4);
        assert_eq!(h[0]["created_by"], "base");
        assert_eq!(h[1]["created_by"], "ENV x");
        assert_eq!(h[2]["created_by"], "whittle squash --from-layer 1");
        assert_eq!(h[2]["created"], "2020-01-01T00:00:00Z");
        assert_eq!(h[3]["created_by"], "CMD");
    }
}
