//! The image's root file system, extracted once to a temporary directory on the host. Runs
//! never write to it: each run mounts a private overlay on top (or works on a copy).

use std::path::{Path, PathBuf};
use std::time::Instant;

use whittle_fstree::{extract, flatten, ExtractOptions, FlattenOptions, Flattened};
use whittle_image::{ConfigView, ImageRef};

use crate::{Error, Result};

/// A flattened, extracted image, ready for any number of runs. Dropping it deletes the
/// extraction.
#[derive(Debug)]
pub struct PreparedImage {
    /// How the image was named (for reports).
    pub name: String,
    pub config: ConfigView,
    pub flat: Flattened,
    dir: tempfile::TempDir,
    pub extract_ms: u64,
}

/// Temporary directories of whittle's sandboxes start with this.
pub const TEMP_PREFIX: &str = "whittle-sandbox-";

impl PreparedImage {
    /// Opens, flattens and extracts `r`.
    pub fn open(r: &ImageRef, progress: Option<&(dyn Fn(u64) + Sync)>) -> Result<PreparedImage> {
        let image = whittle_image::open(r)?;
        let flat = flatten(&image, FlattenOptions::default(), progress)?;
        PreparedImage::from_flattened(r.to_string(), image.config.view(), flat)
    }

    pub fn from_flattened(
        name: String,
        config: ConfigView,
        flat: Flattened,
    ) -> Result<PreparedImage> {
        let t = Instant::now();
        let dir = temp_dir("rootfs")?;
        let lower = dir.path().join("lower");
        std::fs::create_dir(&lower).map_err(|e| Error::io(&lower, e))?;
        let opts = ExtractOptions {
            cancelled: Some(|| crate::signals::interrupted().is_some()),
            ..ExtractOptions::default()
        };
        extract(&flat.tree, &flat.store, &lower, &opts)?;
        Ok(PreparedImage {
            name,
            config,
            flat,
            dir,
            extract_ms: t.elapsed().as_millis() as u64,
        })
    }

    /// The extracted root (read-only by convention: runs mount an overlay on it).
    pub fn lower(&self) -> PathBuf {
        self.dir.path().join("lower")
    }
}

/// A fresh `whittle-sandbox-KIND-XXXXXX` directory in the temp dir, mode 0700.
pub fn temp_dir(kind: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{kind}-"))
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))
}

/// Copies `from` to `to` with everything preserved (the fallback when overlayfs is missing).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .map_err(|e| Error::io("cp", e))?;
    if !out.status.success() {
        return Err(Error::setup(
            "copy root file system",
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(())
}
