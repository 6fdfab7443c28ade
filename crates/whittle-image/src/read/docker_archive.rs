//! `docker save` archives: the classic layout (`<id>/layer.tar`) and the Docker ≥ 25 layout,
//! whose `manifest.json` points into an OCI `blobs/` tree inside the same tar.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::{Digest, Error, Image, ImageConfig, ImageRef, Layer, LayerSource, Result, TarIndex};

#[derive(Debug, Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A member name that carries its own digest: `blobs/sha256/<hex>` or `<hex>.json`.
fn digest_in_name(name: &str) -> Option<Digest> {
    let base = name.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    let d = Digest::from_hex(hex)?;
    (name.contains("sha256/") || base.ends_with(".json")).then_some(d)
}

pub(super) fn open(r: &ImageRef, spool: Option<Arc<tempfile::TempDir>>) -> Result<Image> {
    let path = r.path.as_path();
    let index = TarIndex::scan(path)?;
    let manifest_path = Path::new("manifest.json");
    let bytes = index.window("manifest.json")?.read_json_bytes(None)?;
    let entries: Vec<ManifestEntry> = serde_json::from_slice(&bytes).map_err(|e| {
        Error::format(
            path.join(manifest_path),
            format!("malformed manifest.json: {e}"),
        )
    })?;
    let entry = select(&entries, r.name.as_deref(), path)?;

    let config_window = index.window(&entry.config)?;
    let config_bytes = config_window.read_json_bytes(digest_in_name(&entry.config))?;
    let config = ImageConfig::parse(&config_bytes, &config_window.display)?;
    let mut layers = Vec::with_capacity(entry.layers.len());
    for (i, name) in entry.layers.iter().enumerate() {
        let window = index.window(name)?;
        layers.push(Layer {
            index: i,
            source: LayerSource::Blob(window),
            digest: name
                .contains("sha256/")
                .then(|| digest_in_name(name))
                .flatten(),
            diff_id: None,
            media_type: None,
        });
    }
    let mut image = Image {
        reference: r.clone(),
        config_digest: Digest::of(&config_bytes),
        config,
        layers,
        repo_tags: entry.repo_tags.clone().unwrap_or_default(),
        _spool: spool,
    };
    let ids = image.check_layer_count(path)?;
    for (layer, id) in image.layers.iter_mut().zip(ids) {
        layer.diff_id = Some(id);
    }
    Ok(image)
}

fn select<'a>(
    entries: &'a [ManifestEntry],
    name: Option<&str>,
    path: &Path,
) -> Result<&'a ManifestEntry> {
    match name {
        Some(n) if n.starts_with('@') => {
            let i: usize = n[1..].parse().map_err(|_| {
                Error::Reference(format!("{}: bad image index {n:?}", path.display()))
            })?;
            entries.get(i).ok_or_else(|| {
                Error::format(
                    path,
                    format!("archive has {} images, no index {i}", entries.len()),
                )
            })
        }
        Some(n) => entries
            .iter()
            .find(|e| e.repo_tags.iter().flatten().any(|t| t == n))
            .ok_or_else(|| Error::format(path, format!("no image tagged {n:?} in archive"))),
        None => match entries {
            [one] => Ok(one),
            [] => Err(Error::format(path, "manifest.json lists no images")),
            many => {
                let tags: Vec<&str> = many
                    .iter()
                    .flat_map(|e| e.repo_tags.iter().flatten().map(String::as_str))
                    .collect();
                Err(Error::format(
                    path,
                    format!(
                        "archive holds {} images; name one as docker-archive:PATH:NAME:TAG \
                         (tags: {})",
                        many.len(),
                        tags.join(", ")
                    ),
                ))
            }
        },
    }
}
