//! The read-only view of a container root file system that the analysis runs on.
//!
//! Static evidence must come from the image, never from the host: the host's `/lib` is not
//! the image's `/lib`. So every file access goes through [`RootFs`], whose paths are
//! absolute *inside the image*. A `RootFs` never resolves symlinks itself: the analysis does
//! that (chroot-style, in [`crate::resolve`]) so that it can record every symlink it crosses
//! and so that an absolute link such as `/lib -> /usr/lib` means the image's `/usr/lib`.
//!
//! The trait is shaped for two back ends: a directory on the host ([`DirRootFs`], used by
//! tests and for unpacked root file systems) and the merged layer view of an image, whose
//! file contents live in (possibly compressed) layer blobs. Hence [`RootFs::open`] returns a
//! positioned reader ([`ReadAt`]): the ELF parser only needs the header, the program headers
//! and the dynamic section, a few kilobytes out of megabytes.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::FsError;

/// What an `lstat` of an image path says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeKind {
    /// A regular file.
    File {
        /// Size in bytes.
        size: u64,
        /// Permission bits (`st_mode & 0o7777`), rendered as an octal string in JSON.
        #[serde(with = "octal_mode")]
        mode: u32,
    },
    /// A directory.
    Dir {
        /// Permission bits.
        #[serde(with = "octal_mode")]
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// The link target exactly as stored (relative or absolute).
        target: String,
    },
    /// A device, FIFO or socket.
    Other {
        /// Permission bits.
        #[serde(with = "octal_mode")]
        mode: u32,
    },
}

impl NodeKind {
    /// True for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self, NodeKind::Dir { .. })
    }
    /// True for regular files.
    pub fn is_file(&self) -> bool {
        matches!(self, NodeKind::File { .. })
    }
    /// Permission bits (0 for symlinks).
    pub fn mode(&self) -> u32 {
        match self {
            NodeKind::File { mode, .. } | NodeKind::Dir { mode } | NodeKind::Other { mode } => {
                *mode
            }
            NodeKind::Symlink { .. } => 0,
        }
    }
}

mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let s = String::deserialize(d)?;
        u32::from_str_radix(&s, 8).map_err(serde::de::Error::custom)
    }
}

/// Positioned reads of one file of the view.
pub trait ReadAt {
    /// The file's size in bytes.
    fn size(&self) -> u64;
    /// Reads up to `buf.len()` bytes at `offset`; returns fewer only at end of file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError>;
}

/// A read-only view of a container root file system.
///
/// Paths are absolute and normalised (`/usr/bin/nginx`: no `.`, `..`, empty components or
/// trailing slash; `/` is the root) and **already resolved**: no component but possibly the
/// last may be a symlink. Callers get such paths from [`crate::resolve::Resolver`];
/// implementations may reject anything else with [`FsError::InvalidPath`] and must never
/// follow a symlink themselves.
pub trait RootFs {
    /// Like `lstat(2)`: `Ok(None)` when the path does not exist.
    fn lstat(&self, path: &str) -> Result<Option<NodeKind>, FsError>;

    /// The names in a directory (without `.` and `..`), in any order.
    fn read_dir(&self, path: &str) -> Result<Vec<String>, FsError>;

    /// Opens a regular file for positioned reads.
    fn open(&self, path: &str) -> Result<Box<dyn ReadAt + '_>, FsError>;

    /// A symlink's target as stored.
    fn read_link(&self, path: &str) -> Result<String, FsError> {
        match self.lstat(path)? {
            Some(NodeKind::Symlink { target }) => Ok(target),
            Some(_) => Err(FsError::WrongKind {
                path: path.to_owned(),
                why: "not a symbolic link",
            }),
            None => Err(FsError::NotFound {
                path: path.to_owned(),
                missing: path.to_owned(),
            }),
        }
    }

    /// Reads at most `max` bytes from the start of a file (fewer if the file is shorter).
    fn read_head(&self, path: &str, max: usize) -> Result<Vec<u8>, FsError> {
        let file = self.open(path)?;
        read_exact_or_eof(&*file, 0, max)
    }
}

/// Reads `len` bytes at `offset`, or fewer if the file ends first.
pub(crate) fn read_exact_or_eof(
    file: &dyn ReadAt,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, FsError> {
    let avail = file.size().saturating_sub(offset);
    let len = len.min(usize::try_from(avail).unwrap_or(usize::MAX));
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = file.read_at(offset + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// Checks the [`RootFs`] path contract and returns the components.
pub(crate) fn check_path(path: &str) -> Result<(), FsError> {
    let invalid = |why| {
        Err(FsError::InvalidPath {
            path: path.to_owned(),
            why,
        })
    };
    if !path.starts_with('/') {
        return invalid("not absolute");
    }
    if path == "/" {
        return Ok(());
    }
    for c in path[1..].split('/') {
        match c {
            "" => return invalid("empty component or trailing slash"),
            "." | ".." => return invalid("contains . or .."),
            _ => {}
        }
    }
    Ok(())
}

/// A host directory seen as the root of an image.
///
/// Symlinks inside the directory are never followed by the host kernel: every parent
/// directory of a path is checked with `lstat` (once; the answer is remembered) before the
/// path itself is touched, and files are opened with `O_NOFOLLOW`. An absolute link such as
/// `lib -> /usr/lib` therefore cannot make a read escape to the host's `/usr/lib`; the
/// analysis resolves it inside the view instead. The tree must not be modified while the
/// view is in use (a concurrent writer could swap a checked directory for a link).
#[derive(Debug)]
pub struct DirRootFs {
    root: PathBuf,
    checked_dirs: Mutex<HashSet<String>>,
}

impl DirRootFs {
    /// Uses `root` (a directory on the host) as the image's `/`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, FsError> {
        let root = root.into();
        let meta =
            std::fs::metadata(&root).map_err(|e| FsError::io(&root.display().to_string(), e))?;
        if !meta.is_dir() {
            return Err(FsError::WrongKind {
                path: root.display().to_string(),
                why: "root of a DirRootFs must be a directory",
            });
        }
        Ok(DirRootFs {
            root,
            checked_dirs: Mutex::new(HashSet::new()),
        })
    }

    /// The host directory used as root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn host(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Makes sure every proper ancestor of `path` is a real directory, so that the host
    /// kernel walks no symlink when it opens `path`.
    fn check_parents(&self, path: &str) -> Result<(), FsError> {
        check_path(path)?;
        let Some(parent_end) = path.rfind('/') else {
            return Ok(());
        };
        if parent_end == 0 {
            return Ok(());
        }
        let parent = &path[..parent_end];
        {
            let checked = self.checked_dirs.lock().unwrap_or_else(|p| p.into_inner());
            if checked.contains(parent) {
                return Ok(());
            }
        }
        let mut end = 0;
        while end < parent.len() {
            end = parent[end + 1..]
                .find('/')
                .map(|i| i + end + 1)
                .unwrap_or(parent.len());
            let prefix = &parent[..end];
            if self
                .checked_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(prefix)
            {
                continue;
            }
            let meta = match std::fs::symlink_metadata(self.host(prefix)) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(FsError::NotFound {
                        path: path.to_owned(),
                        missing: prefix.to_owned(),
                    })
                }
                Err(e) => return Err(FsError::io(prefix, e)),
            };
            if meta.file_type().is_symlink() {
                return Err(FsError::InvalidPath {
                    path: path.to_owned(),
                    why: "a parent component is a symlink (resolve it inside the view first)",
                });
            }
            if !meta.is_dir() {
                return Err(FsError::NotADirectory {
                    path: path.to_owned(),
                    component: prefix.to_owned(),
                });
            }
            self.checked_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(prefix.to_owned());
        }
        Ok(())
    }
}

fn is_not_dir(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTDIR)
}

impl RootFs for DirRootFs {
    fn lstat(&self, path: &str) -> Result<Option<NodeKind>, FsError> {
        match self.check_parents(path) {
            Ok(()) => {}
            Err(FsError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        let host = self.host(path);
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if is_not_dir(&e) => {
                return Err(FsError::NotADirectory {
                    path: path.to_owned(),
                    component: path.to_owned(),
                })
            }
            Err(e) => return Err(FsError::io(path, e)),
        };
        let ft = meta.file_type();
        let mode = meta.mode() & 0o7777;
        Ok(Some(if ft.is_symlink() {
            let target = std::fs::read_link(&host).map_err(|e| FsError::io(path, e))?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| FsError::NotUtf8 {
                    path: path.to_owned(),
                })?;
            NodeKind::Symlink { target }
        } else if ft.is_dir() {
            NodeKind::Dir { mode }
        } else if ft.is_file() {
            NodeKind::File {
                size: meta.len(),
                mode,
            }
        } else {
            NodeKind::Other { mode }
        }))
    }

    fn read_dir(&self, path: &str) -> Result<Vec<String>, FsError> {
        self.check_parents(path)?;
        let host = self.host(path);
        let meta = std::fs::symlink_metadata(&host).map_err(|e| FsError::io(path, e))?;
        if !meta.is_dir() {
            return Err(FsError::WrongKind {
                path: path.to_owned(),
                why: "not a directory",
            });
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&host).map_err(|e| FsError::io(path, e))? {
            let entry = entry.map_err(|e| FsError::io(path, e))?;
            // A name that is not UTF-8 cannot be named by any string whittle resolves (ELF
            // names and config files are treated as UTF-8), so leaving it out is exact.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, path: &str) -> Result<Box<dyn ReadAt + '_>, FsError> {
        self.check_parents(path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.host(path))
            .map_err(|e| FsError::io(path, e))?;
        let meta = file.metadata().map_err(|e| FsError::io(path, e))?;
        if !meta.is_file() {
            return Err(FsError::WrongKind {
                path: path.to_owned(),
                why: "not a regular file",
            });
        }
        Ok(Box::new(DirFile {
            path: path.to_owned(),
            size: meta.len(),
            file,
        }))
    }
}

#[derive(Debug)]
struct DirFile {
    path: String,
    size: u64,
    file: File,
}

impl ReadAt for DirFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        loop {
            match self.file.read_at(buf, offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FsError::io(&self.path, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn lstat_reports_kinds_and_never_follows() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("usr/lib")).unwrap();
        std::fs::write(tmp.path().join("usr/lib/f"), b"hello").unwrap();
        symlink("/usr/lib", tmp.path().join("lib")).unwrap();
        let fs = DirRootFs::new(tmp.path()).unwrap();
        assert!(matches!(
            fs.lstat("/usr/lib/f").unwrap(),
            Some(NodeKind::File { size: 5, .. })
        ));
        assert_eq!(
            fs.lstat("/lib").unwrap(),
            Some(NodeKind::Symlink {
                target: "/usr/lib".into()
            })
        );
        assert_eq!(fs.read_link("/lib").unwrap(), "/usr/lib");
        assert!(fs.lstat("/nope").unwrap().is_none());
        // The host kernel must not walk /lib: callers resolve it in the view first.
        assert!(matches!(
            fs.lstat("/lib/f"),
            Err(FsError::InvalidPath { .. })
        ));
        assert!(matches!(fs.open("/lib"), Err(FsError::Io { .. })));
        assert!(matches!(
            fs.lstat("usr/lib"),
            Err(FsError::InvalidPath { .. })
        ));
        assert!(matches!(
            fs.lstat("/usr/../etc"),
            Err(FsError::InvalidPath { .. })
        ));
        let head = fs.read_head("/usr/lib/f", 3).unwrap();
        assert_eq!(head, b"hel");
        let mut names = fs.read_dir("/").unwrap();
        names.sort();
        assert_eq!(names, vec!["lib", "usr"]);
    }
}
