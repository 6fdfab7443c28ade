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
        let content: u64 = flat.tree.iter().map(|(_, n)| n.size()).sum();
        let extract_in = |dir: &tempfile::TempDir| -> Result<()> {
            let lower = dir.path().join("lower");
            std::fs::create_dir(&lower).map_err(|e| Error::io(&lower, e))?;
            let opts = ExtractOptions {
                cancelled: Some(|| crate::signals::interrupted().is_some()),
                ..ExtractOptions::default()
            };
            extract(&flat.tree, &flat.store, &lower, &opts)?;
            Ok(())
        };
        let mut dir = scratch_dir("rootfs", content)?;
        if let Err(e) = extract_in(&dir) {
            // A tmpfs scratch may lack what the image needs (`user.*` xattrs before Linux
            // 6.6): the temp dir, on a real file system, gets a second chance.
            let on_scratch = !dir.path().starts_with(std::env::temp_dir());
            if !on_scratch || crate::signals::interrupted().is_some() {
                return Err(e);
            }
            drop(dir);
            dir = temp_dir("rootfs")?;
            extract_in(&dir)?;
        }
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

/// A fresh `whittle-sandbox-KIND-PID.START-XXXXXX` directory in the temp dir, mode 0700.
pub fn temp_dir(kind: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&owned_prefix(kind))
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))
}

/// Where an extraction of `bytes` of file content goes. `WHITTLE_SCRATCH` decides when set.
/// Otherwise, unless `TMPDIR` is set, `/dev/shm` when it is a tmpfs with room to spare (free
/// space ≥ 2× and available memory ≥ 4× the content + 1 GiB): an extraction is written once,
/// read by one run and deleted minutes later, and on a disk its hundreds of megabytes go
/// through writeback twice (a build of a 360 MB image took 2.3 s from disk, 0.7 s from
/// tmpfs, and 10 s on a disk busy with other writes). Else the temp dir.
pub fn scratch_dir(kind: &str, bytes: u64) -> Result<tempfile::TempDir> {
    let base = if let Some(d) = std::env::var_os("WHITTLE_SCRATCH").filter(|d| !d.is_empty()) {
        PathBuf::from(d)
    } else if std::env::var_os("TMPDIR").is_none() && tmpfs_has_room(Path::new("/dev/shm"), bytes) {
        PathBuf::from("/dev/shm")
    } else {
        return temp_dir(kind);
    };
    tempfile::Builder::new()
        .prefix(&owned_prefix(kind))
        .tempdir_in(&base)
        .map_err(|e| Error::io(base, e))
}

/// `whittle-sandbox-KIND-PID.START-`: the owner's pid and start time (clock ticks after
/// boot) in the name. Drop guards cannot run in a process killed with SIGKILL, and an
/// extraction left in /dev/shm holds RAM until reboot: the name lets a later run tell such a
/// leftover from a live run's directory, even after the pid was reused.
fn owned_prefix(kind: &str) -> String {
    let pid = std::process::id();
    format!(
        "{TEMP_PREFIX}{kind}-{pid}.{}-",
        start_time(pid).unwrap_or(0)
    )
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) may contain blanks and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Removes sandbox directories (extractions, run directories) whose owner process is gone,
/// from /dev/shm, `WHITTLE_SCRATCH` and the temp dir. Returns what it removed. Directories
/// without an owner in their name (another tool's, or an older whittle's) are left alone.
pub fn remove_leftovers() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/dev/shm"), std::env::temp_dir()];
    if let Some(d) = std::env::var_os("WHITTLE_SCRATCH").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    dirs.dedup();
    let mut removed = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
                continue;
            };
            // KIND may itself contain dashes (`debug-view`): the owner is the first
            // `PID.START` segment.
            let Some((pid, start)) = rest.split('-').find_map(|seg| {
                let (p, s) = seg.split_once('.')?;
                Some((p.parse::<u32>().ok()?, s.parse::<u64>().ok()?))
            }) else {
                continue;
            };
            if start_time(pid) == Some(start) {
                continue; // its owner is alive
            }
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) && std::fs::remove_dir_all(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    removed
}

fn tmpfs_has_room(dir: &Path, bytes: u64) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statfs buffer and a NUL-terminated path, as statfs(2) requires.
    let st = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut st) != 0 {
            return false;
        }
        st
    };
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    if st.f_type as i64 != TMPFS_MAGIC {
        return false;
    }
    let free = st.f_bavail as u64 * st.f_bsize as u64;
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    free >= bytes.saturating_mul(2) && available >= bytes.saturating_mul(4) + (1 << 30)
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
