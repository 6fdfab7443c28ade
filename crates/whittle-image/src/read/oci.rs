//! OCI image layouts, as a directory (`oci:`) or a tar of one (`oci-archive:`).

use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use crate::config::host_arch;
use crate::{
    BlobWindow, Digest, Error, Image, ImageConfig, ImageRef, Layer, LayerSource, Result, TarIndex,
};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where blobs are found: files in a directory, or members of an archive.
enum Blobs {
    Dir(PathBuf),
    Archive(TarIndex),
}

impl Blobs {
    fn member(&self, name: &str) -> Result<BlobWindow> {
        match self {
            Blobs::Dir(root) => {
                let path = root.join(name);
                BlobWindow::whole_file(&path).map_err(|e| match e {
                    Error::Io { source, .. } if source.kind() != std::io::ErrorKind::NotFound => {
                        Error::io(&path, source)
                    }
                    _ if name.starts_with("blobs/") => {
                        Error::format(&path, "missing blob in OCI layout")
                    }
                    _ => Error::format(&path, format!("missing {name}: not an OCI image layout")),
                })
            }
            Blobs::Archive(index) => index.window(name),
        }
    }

    fn blob(&self, d: &Digest) -> Result<BlobWindow> {
        self.member(&format!("blobs/sha256/{}", d.hex()))
    }

    fn read_json(&self, desc: &Descriptor) -> Result<(Vec<u8>, BlobWindow)> {
        let d = digest_of(desc)?;
        let w = self.blob(&d)?;
        if w.len != desc.size() {
            return Err(Error::format(
                &w.display,
                format!(
                    "blob has {} bytes, its descriptor says {}",
                    w.len,
                    desc.size()
                ),
            ));
        }
        Ok((w.read_json_bytes(Some(d))?, w))
    }
}

fn digest_of(desc: &Descriptor) -> Result<Digest> {
    desc.digest()
        .to_string()
        .parse()
        .map_err(|e: String| Error::Reference(format!("descriptor: {e}")))
}

pub(super) fn open_dir(r: &ImageRef) -> Result<Image> {
    // Name a missing or wrong layout directory itself, not a file inside it.
    let meta = std::fs::metadata(&r.path).map_err(|e| Error::io(&r.path, e))?;
    if !meta.is_dir() {
        return Err(Error::format(
            &r.path,
            "not a directory (an oci: layout is one)",
        ));
    }
    open(r, Blobs::Dir(r.path.clone()))
}

pub(super) fn open_archive(r: &ImageRef) -> Result<Image> {
    open(r, Blobs::Archive(TarIndex::scan(&r.path)?))
}

fn open(r: &ImageRef, blobs: Blobs) -> Result<Image> {
    let layout = blobs.member("oci-layout")?;
    let layout_bytes = layout.read_json_bytes(None)?;
    let v: serde_json::Value = serde_json::from_slice(&layout_bytes)
        .map_err(|e| Error::format(&layout.display, format!("malformed oci-layout: {e}")))?;
    if v.get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        return Err(Error::format(
            &layout.display,
            "oci-layout has no imageLayoutVersion",
        ));
    }
    let index_w = blobs.member("index.json")?;
    let index = parse_index(&index_w.read_json_bytes(None)?, &index_w.display)?;
    let desc = select(&index, r.name.as_deref(), &index_w.display)?;
    let desc = resolve_platform(&blobs, desc, 0)?;

    let (manifest_bytes, manifest_w) = blobs.read_json(&desc)?;
    let manifest = serde_json::from_slice::<ImageManifest>(&manifest_bytes[..]).map_err(|e| {
        Error::format(
            &manifest_w.display,
            format!("malformed image manifest: {e}"),
        )
    })?;
    let (config_bytes, config_w) = blobs.read_json(manifest.config())?;
    let config = ImageConfig::parse(&config_bytes, &config_w.display)?;

    let mut layers = Vec::new();
    for (i, l) in manifest.layers().iter().enumerate() {
        let digest = digest_of(l)?;
        let window = blobs.blob(&digest)?;
        if window.len != l.size() {
            return Err(Error::format(
                &window.display,
                format!(
                    "layer blob has {} bytes, the manifest says {}",
                    window.len,
                    l.size()
                ),
            ));
        }
        let media_type = l.media_type().to_string();
        if media_type.contains("encrypted") || media_type.ends_with("+bzip2") {
            return Err(Error::format(
                &window.display,
                format!("unsupported layer media type {media_type}"),
            ));
        }
        layers.push(Layer {
            index: i,
            source: LayerSource::Blob(window),
            digest: Some(digest),
            diff_id: None,
            media_type: Some(media_type),
        });
    }
    let mut image = Image {
        reference: r.clone(),
        config_digest: digest_of(manifest.config())?,
        config,
        layers,
        repo_tags: r.name.iter().cloned().collect(),
        _spool: None,
    };
    let ids = image.check_layer_count(&manifest_w.display)?;
    for (layer, id) in image.layers.iter_mut().zip(ids) {
        layer.diff_id = Some(id);
    }
    Ok(image)
}

fn parse_index(bytes: &[u8], path: &Path) -> Result<ImageIndex> {
    serde_json::from_slice::<ImageIndex>(bytes)
        .map_err(|e| Error::format(path, format!("malformed image index: {e}")))
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

fn select(index: &ImageIndex, tag: Option<&str>, path: &Path) -> Result<Descriptor> {
    let manifests = index.manifests();
    if let Some(tag) = tag {
        return manifests
            .iter()
            .find(|d| ref_name(d) == Some(tag))
            .cloned()
            .ok_or_else(|| Error::format(path, format!("no image tagged {tag:?} in the layout")));
    }
    match manifests.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::format(path, "index lists no images")),
        many => {
            let tags: Vec<&str> = many.iter().filter_map(ref_name).collect();
            Err(Error::format(
                path,
                format!(
                    "layout holds {} images; name one as oci:DIR:TAG (tags: {})",
                    many.len(),
                    tags.join(", ")
                ),
            ))
        }
    }
}

/// A tag may point at an image index (multi-platform image); pick the manifest for the
/// machine we are on, as an engine pulling it would.
fn resolve_platform(blobs: &Blobs, desc: Descriptor, depth: u32) -> Result<Descriptor> {
    let is_index = matches!(desc.media_type(), MediaType::ImageIndex)
        || desc.media_type().to_string()
            == "application/vnd.docker.distribution.manifest.list.v2+json";
    if !is_index {
        return Ok(desc);
    }
    let (bytes, w) = blobs.read_json(&desc)?;
    if depth > 4 {
        return Err(Error::format(&w.display, "image indexes nested too deeply"));
    }
    let index = parse_index(&bytes, &w.display)?;
    let arch = host_arch();
    let found = index.manifests().iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| p.architecture().to_string() == arch && p.os().to_string() == "linux")
    });
    let found = found.cloned().ok_or_else(|| {
        Error::format(
            &w.display,
            format!("image index has no manifest for linux/{arch}"),
        )
    })?;
    resolve_platform(blobs, found, depth + 1)
}
