//! The toolbox: an image whose root file system the session runs in. Unpacked once per image
//! id into a cache directory and renamed into place whole, so a session never sees a half
//! unpacked toolbox and a warm session costs no unpacking at all.

use std::path::{Path, PathBuf};

use whittle_engine::Engine;

use crate::{Error, Result};

/// Default cache of unpacked toolboxes.
pub const DEFAULT_CACHE: &str = "/var/cache/whittle/toolbox";

/// The mount points a session needs in the toolbox root; created at unpack time because the
/// unpacked root is mounted read-only.
const MOUNT_POINTS: &[&str] = &["target", "proc", "tmp", "dev"];

/// Which image to use as the toolbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The target image's debug variant, else its fat source, else an error.
    Auto,
    Image(String),
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "" => Err("empty --toolbox: pass an image name or `auto`".into()),
            "auto" => Ok(Self::Auto),
            s => Ok(Self::Image(s.to_string())),
        }
    }
}

/// A local image chosen as the toolbox.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// How it was named (for messages and for reading it).
    pub reference: String,
    /// Its id (`sha256:…`): the cache key.
    pub id: String,
    /// Why it was chosen, for the session's first line.
    pub why: &'static str,
}

/// `repo:tag` → `repo:tag-debug` (`:latest` when the name has no tag), the debug variant's name.
pub fn debug_variant(image: &str) -> Option<String> {
    if image.starts_with("sha256:") || image.contains('@') {
        return None;
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    Some(match image[slash..].rfind(':') {
        Some(_) => format!("{image}-debug"),
        None => format!("{image}:latest-debug"),
    })
}

async fn local_image(engine: &Engine, name: &str) -> Result<Option<bollard::models::ImageInspect>> {
    match engine.docker().inspect_image(name).await {
        Ok(i) => Ok(Some(i)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(Error::Toolbox(format!(
            "inspect image {name} at {}: {e}",
            engine.host()
        ))),
    }
}

/// The labels of a local image's config, or nothing when the image is not there.
pub async fn image_labels(
    engine: &Engine,
    image: &str,
) -> Result<Option<std::collections::HashMap<String, String>>> {
    Ok(local_image(engine, image)
        .await?
        .map(|i| i.config.and_then(|c| c.labels).unwrap_or_default()))
}

/// Picks the toolbox. Never pulls: every candidate must already be in the engine.
/// `target_image` is the target's image as it was run (name or id), `None` for a `pid:N`.
pub async fn choose(
    engine: &Engine,
    choice: &Choice,
    target_image: Option<&str>,
) -> Result<Chosen> {
    let found = |i: bollard::models::ImageInspect, reference: String, why| Chosen {
        id: i.id.unwrap_or_default(),
        reference,
        why,
    };
    if let Choice::Image(name) = choice {
        return match local_image(engine, name).await? {
            Some(i) => Ok(found(i, name.clone(), "--toolbox")),
            None => Err(Error::Toolbox(format!(
                "image {name} is not in the engine at {} (whittle never pulls: `docker load` or \
                 `docker pull` it first)",
                engine.host()
            ))),
        };
    }
    let Some(image) = target_image else {
        return Err(Error::Toolbox(
            "a pid:N target has no image to find a toolbox from: pass --toolbox IMAGE (any local \
             image with a shell, e.g. a busybox or debian image)"
                .into(),
        ));
    };
    let variant = debug_variant(image);
    if let Some(v) = &variant {
        if let Some(i) = local_image(engine, v).await? {
            return Ok(found(i, v.clone(), "the image's debug variant"));
        }
    }
    let labels = image_labels(engine, image).await?.unwrap_or_default();
    let source = labels.get("org.whittle.source");
    if let Some(src) = source {
        if let Some(i) = local_image(engine, src).await? {
            return Ok(found(i, src.clone(), "the slim image's fat source"));
        }
    }
    let tried = match (&variant, source) {
        (Some(v), Some(s)) => format!("neither {v} nor its source {s} is a local image"),
        (Some(v), None) => format!(
            "{v} is not a local image and {image} has no org.whittle.source label (not a whittle \
             slim image)"
        ),
        (None, Some(s)) => format!("its source {s} is not a local image"),
        (None, None) => {
            format!("{image} has no debug variant name and no org.whittle.source label")
        }
    };
    Err(Error::Toolbox(format!(
        "no toolbox for {image}: {tried}; pass --toolbox IMAGE with any local image that has a \
         shell (its fat source, or `whittle family` debug variant)"
    )))
}

/// The unpacked root of `chosen` under `cache`, unpacking it first when it is not there.
pub fn unpack(chosen: &Chosen, cache: &Path) -> Result<PathBuf> {
    let key = chosen.id.strip_prefix("sha256:").unwrap_or(&chosen.id);
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::Toolbox(format!(
            "{}: unusable image id `{}`",
            chosen.reference, chosen.id
        )));
    }
    let done = cache.join(key);
    if done.join("target").is_dir() {
        return Ok(done);
    }
    std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{key}-"))
        .tempdir_in(cache)
        .map_err(|e| Error::io(cache, e))?;
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).map_err(|e| Error::io(&root, e))?;
    let image_err = |cause: String| Error::Image {
        image: chosen.reference.clone(),
        cause,
    };
    let r = whittle_image::ImageRef::parse(&format!("docker-daemon:{}", chosen.reference))
        .map_err(|e| image_err(e.to_string()))?;
    let image = whittle_image::open(&r).map_err(|e| image_err(e.to_string()))?;
    let flat = whittle_fstree::flatten(&image, whittle_fstree::FlattenOptions::default(), None)
        .map_err(|e| image_err(e.to_string()))?;
    whittle_fstree::extract(
        &flat.tree,
        &flat.store,
        &root,
        &whittle_fstree::ExtractOptions::default(),
    )
    .map_err(|e| image_err(e.to_string()))?;
    for m in MOUNT_POINTS {
        let p = root.join(m);
        // A symlink or file there would be followed by the mount: replace it with a directory.
        if !p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
            let _ = std::fs::remove_file(&p);
            std::fs::create_dir(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    match std::fs::rename(&root, &done) {
        Ok(()) => Ok(done),
        // Another session unpacked the same toolbox meanwhile: use theirs.
        Err(_) if done.join("target").is_dir() => Ok(done),
        Err(e) => Err(Error::io(&done, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_variant_names() {
        assert_eq!(debug_variant("app:1.2").as_deref(), Some("app:1.2-debug"));
        assert_eq!(debug_variant("app").as_deref(), Some("app:latest-debug"));
        assert_eq!(
            debug_variant("reg:5000/team/app").as_deref(),
            Some("reg:5000/team/app:latest-debug")
        );
        assert_eq!(debug_variant("sha256:abc"), None);
        assert_eq!(debug_variant("app@sha256:abc"), None);
    }

    #[test]
    fn choice_parses() {
        assert_eq!("auto".parse::<Choice>(), Ok(Choice::Auto));
        assert_eq!("bb".parse::<Choice>(), Ok(Choice::Image("bb".into())));
        assert!("".parse::<Choice>().is_err());
    }
}
