//! Writing a flattened tree to a directory on the host, safely.
//!
//! The tree comes from an untrusted image, so the destination is only ever touched relative to
//! directory file descriptors: every component is opened with `O_NOFOLLOW` and created with
//! `*at` calls, so a symlink that the image itself places in the destination is never followed
//! (a link `etc -> /etc` cannot redirect a later `etc/passwd` to the host's). Metadata is
//! applied in the order the kernel needs: owner first (chown clears setuid bits and
//! `security.capability`), then mode, then extended attributes, then times; directories get
//! their final mode and times last, after their children were written.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::path::{base_name, display_path, parent_of};
use crate::tree::{Meta, Node, NodeKind};
use crate::{ContentStore, Error, FsTree, Result};

/// How [`extract`] writes metadata.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Set owners from the image (needs root; default: when running as root).
    pub same_owner: bool,
    /// Write extended attributes, `security.capability` included (default: when root).
    pub xattrs: bool,
    /// Create device nodes (needs `CAP_MKNOD`; default: when root). Without it, devices are
    /// skipped and listed in [`ExtractSummary::skipped`].
    pub devices: bool,
    /// Polled between entries: when it answers true, extraction stops with an
    /// `Interrupted` I/O error (a large image takes seconds; Ctrl-C should not wait for it).
    pub cancelled: Option<fn() -> bool>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        ExtractOptions {
            same_owner: root,
            xattrs: root,
            devices: root,
            cancelled: None,
        }
    }
}

/// What [`extract`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Character and block devices and fifos.
    pub specials: u64,
    pub bytes: u64,
    /// Image paths not written, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Writes every node of `tree` under `dest`, which must be an existing empty directory (its
/// own metadata becomes the image root's). Whiteout nodes (partial flattening) are skipped.
pub fn extract(
    tree: &FsTree,
    store: &ContentStore,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractSummary> {
    let root = open_dir_at(
        libc::AT_FDCWD,
        &cstring(dest.as_os_str().as_encoded_bytes())?,
    )
    .map_err(|e| Error::io(dest, e))?;
    let mut x = Extractor {
        dest,
        root,
        stack: Vec::new(),
        opts,
        store,
        summary: ExtractSummary::default(),
        first_link: HashMap::new(),
        dirs: Vec::new(),
    };
    for (i, (path, node)) in tree.iter().enumerate() {
        if path.is_empty() {
            x.dirs.push((Vec::new(), node.meta.clone()));
            continue;
        }
        if i % 64 == 0 && opts.cancelled.is_some_and(|c| c()) {
            return Err(Error::io(
                dest,
                std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"),
            ));
        }
        x.write(path, node)?;
    }
    // Children before parents: a read-only directory must still accept its children, and
    // writing a child changes the parent's mtime.
    let dirs = std::mem::take(&mut x.dirs);
    x.stack.clear();
    for (path, meta) in dirs.iter().rev() {
        let fd = if path.is_empty() {
            x.root.try_clone().map_err(|e| Error::io(dest, e))?
        } else {
            x.open_path(path)?
        };
        x.apply_meta_fd(&fd, meta, path)?;
    }
    Ok(x.summary)
}

struct Extractor<'a> {
    dest: &'a Path,
    root: OwnedFd,
    /// Open directories along the current path, outermost first.
    stack: Vec<(Vec<u8>, OwnedFd)>,
    opts: &'a ExtractOptions,
    store: &'a ContentStore,
    summary: ExtractSummary,
    /// Inode → first path written, for hardlinks.
    first_link: HashMap<u64, Vec<u8>>,
    dirs: Vec<(Vec<u8>, Meta)>,
}

impl Extractor<'_> {
    fn host(&self, path: &[u8]) -> PathBuf {
        self.dest.join(display_path(path).trim_start_matches('/'))
    }

    fn err(&self, path: &[u8], e: io::Error) -> Error {
        Error::io(self.host(path), e)
    }

    /// An fd of directory `dir` (image path), reusing the open chain when possible.
    fn dir_fd(&mut self, dir: &[u8]) -> Result<RawFd> {
        if dir.is_empty() {
            self.stack.clear();
            return Ok(self.root.as_raw_fd());
        }
        while let Some((p, _)) = self.stack.last() {
            if dir == p.as_slice() || (dir.starts_with(p) && dir.get(p.len()) == Some(&b'/')) {
                break;
            }
            self.stack.pop();
        }
        let have = self.stack.last().map_or(0, |(p, _)| p.len());
        let rest: Vec<u8> = dir[have..].to_vec();
        for comp in rest.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let parent = self
                .stack
                .last()
                .map_or(self.root.as_raw_fd(), |(_, fd)| fd.as_raw_fd());
            let mut p = self
                .stack
                .last()
                .map(|(p, _)| p.clone())
                .unwrap_or_default();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(comp);
            let fd = open_dir_at(parent, &cstring(comp)?).map_err(|e| self.err(&p, e))?;
            self.stack.push((p, fd));
        }
        Ok(self.stack.last().expect("non-empty").1.as_raw_fd())
    }

    /// Opens an already written path (no symlink followed), for late metadata.
    fn open_path(&mut self, path: &[u8]) -> Result<OwnedFd> {
        let parent = self.dir_fd(parent_of(path))?;
        open_dir_at(parent, &cstring(base_name(path))?).map_err(|e| self.err(path, e))
    }

    fn write(&mut self, path: &[u8], node: &Node) -> Result<()> {
        if node.kind == NodeKind::Whiteout {
            return Ok(());
        }
        let parent = self.dir_fd(parent_of(path))?;
        let name = cstring(base_name(path))?;
        if !node.is_dir() {
            if let Some(first) = self.first_link.get(&node.inode).cloned() {
                return self.hardlink(&first, path, parent, &name);
            }
        }
        match &node.kind {
            NodeKind::Dir { .. } => {
                // SAFETY: `name` is a valid NUL-terminated string and `parent` an open fd.
                let r = unsafe { libc::mkdirat(parent, name.as_ptr(), 0o700) };
                if r != 0 {
                    return Err(self.err(path, io::Error::last_os_error()));
                }
                self.summary.dirs += 1;
                self.dirs.push((path.to_vec(), node.meta.clone()));
                return Ok(());
            }
            NodeKind::File { size, .. } => {
                // SAFETY: valid C string and fd; the returned fd is owned below.
                let fd = unsafe {
                    libc::openat(
                        parent,
                        name.as_ptr(),
                        libc::O_WRONLY
                            | libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o600,
                    )
                };
                if fd < 0 {
                    return Err(self.err(path, io::Error::last_os_error()));
                }
                // SAFETY: `fd` was just returned by openat and is owned by nobody else.
                let mut file = unsafe { File::from_raw_fd(fd) };
                let mut reader = self.store.open(node).map_err(|e| self.err(path, e))?;
                let n = io::copy(&mut reader, &mut file).map_err(|e| self.err(path, e))?;
                if n != *size {
                    return Err(self.err(
                        path,
                        io::Error::other(format!("content has {n} bytes, expected {size}")),
                    ));
                }
                let fd: OwnedFd = file.into();
                self.apply_meta_fd(&fd, &node.meta, path)?;
                self.summary.files += 1;
                self.summary.bytes += n;
            }
            NodeKind::Symlink(target) => {
                let t = cstring(target)?;
                // SAFETY: valid C strings and fd.
                let r = unsafe { libc::symlinkat(t.as_ptr(), parent, name.as_ptr()) };
                if r != 0 {
                    return Err(self.err(path, io::Error::last_os_error()));
                }
                self.apply_meta_at(parent, &name, &node.meta, path)?;
                self.summary.symlinks += 1;
            }
            NodeKind::Char { major, minor } | NodeKind::Block { major, minor } => {
                if !self.opts.devices {
                    self.summary
                        .skipped
                        .push((display_path(path), "device node (not root)".into()));
                    return Ok(());
                }
                let t = if matches!(node.kind, NodeKind::Char { .. }) {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                let dev = libc::makedev(*major, *minor);
                // SAFETY: valid C string and fd.
                let r = unsafe { libc::mknodat(parent, name.as_ptr(), t | 0o600, dev) };
                if r != 0 {
                    return Err(self.err(path, io::Error::last_os_error()));
                }
                self.apply_meta_at(parent, &name, &node.meta, path)?;
                self.summary.specials += 1;
            }
            NodeKind::Fifo => {
                // SAFETY: valid C string and fd.
                let r = unsafe { libc::mknodat(parent, name.as_ptr(), libc::S_IFIFO | 0o600, 0) };
                if r != 0 {
                    return Err(self.err(path, io::Error::last_os_error()));
                }
                self.apply_meta_at(parent, &name, &node.meta, path)?;
                self.summary.specials += 1;
            }
            NodeKind::Whiteout => unreachable!("skipped above"),
        }
        self.first_link.insert(node.inode, path.to_vec());
        Ok(())
    }

    fn hardlink(&mut self, first: &[u8], path: &[u8], parent: RawFd, name: &CStr) -> Result<()> {
        // The first path's directory may be anywhere: open it afresh, by components.
        let new_parent = OwnedFdOrRaw::dup(parent).map_err(|e| self.err(path, e))?;
        let old_parent = self.dir_fd(parent_of(first))?;
        let old_name = cstring(base_name(first))?;
        // SAFETY: valid fds and C strings; flags 0 means the old path is not followed.
        let r = unsafe {
            libc::linkat(
                old_parent,
                old_name.as_ptr(),
                new_parent.0.as_raw_fd(),
                name.as_ptr(),
                0,
            )
        };
        if r != 0 {
            return Err(self.err(path, io::Error::last_os_error()));
        }
        self.summary.hardlinks += 1;
        Ok(())
    }

    /// Metadata through an open fd (regular files and directories).
    fn apply_meta_fd(&self, fd: &OwnedFd, meta: &Meta, path: &[u8]) -> Result<()> {
        let fd = fd.as_raw_fd();
        if self.opts.same_owner {
            // SAFETY: plain syscall on an open fd.
            if unsafe { libc::fchown(fd, meta.uid as libc::uid_t, meta.gid as libc::gid_t) } != 0 {
                return Err(self.err(path, io::Error::last_os_error()));
            }
        }
        // SAFETY: plain syscall on an open fd.
        if unsafe { libc::fchmod(fd, (meta.mode & 0o7777) as libc::mode_t) } != 0 {
            return Err(self.err(path, io::Error::last_os_error()));
        }
        if self.opts.xattrs {
            for (k, v) in &meta.xattrs {
                if skip_xattr(k) {
                    continue;
                }
                let key = cstring(k)?;
                // SAFETY: valid fd, C string and buffer of the given length.
                let r = unsafe { libc::fsetxattr(fd, key.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
                if r != 0 {
                    return Err(self.err(
                        path,
                        io::Error::other(format!(
                            "setting xattr {}: {}",
                            String::from_utf8_lossy(k),
                            io::Error::last_os_error()
                        )),
                    ));
                }
            }
        }
        let ts = times(meta.mtime);
        // SAFETY: valid fd and a two-element timespec array.
        if unsafe { libc::futimens(fd, ts.as_ptr()) } != 0 {
            return Err(self.err(path, io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Metadata of a node that cannot be opened for writing (symlink, device, fifo).
    fn apply_meta_at(&self, parent: RawFd, name: &CStr, meta: &Meta, path: &[u8]) -> Result<()> {
        let is_link = self.is_symlink(parent, name);
        if self.opts.same_owner {
            // SAFETY: valid fd and C string; AT_SYMLINK_NOFOLLOW keeps it on this node.
            let r = unsafe {
                libc::fchownat(
                    parent,
                    name.as_ptr(),
                    meta.uid as libc::uid_t,
                    meta.gid as libc::gid_t,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if r != 0 {
                return Err(self.err(path, io::Error::last_os_error()));
            }
        }
        if !is_link {
            // SAFETY: valid fd and C string. fchmodat cannot refuse to follow, but the node was
            // just created by us as a device or fifo, so there is no link to follow.
            let r = unsafe {
                libc::fchmodat(
                    parent,
                    name.as_ptr(),
                    (meta.mode & 0o7777) as libc::mode_t,
                    0,
                )
            };
            if r != 0 {
                return Err(self.err(path, io::Error::last_os_error()));
            }
            if self.opts.xattrs && !meta.xattrs.is_empty() {
                // Through /proc/self/fd/N/name: the last component is not followed (lsetxattr).
                let p = cstring(
                    format!(
                        "/proc/self/fd/{parent}/{}",
                        String::from_utf8_lossy(name.to_bytes())
                    )
                    .as_bytes(),
                )?;
                for (k, v) in &meta.xattrs {
                    if skip_xattr(k) {
                        continue;
                    }
                    let key = cstring(k)?;
                    // SAFETY: valid C strings and buffer.
                    let r = unsafe {
                        libc::lsetxattr(p.as_ptr(), key.as_ptr(), v.as_ptr().cast(), v.len(), 0)
                    };
                    if r != 0 {
                        return Err(self.err(path, io::Error::last_os_error()));
                    }
                }
            }
        }
        let ts = times(meta.mtime);
        // SAFETY: valid fd, C string and timespec array; the link itself is changed.
        let r = unsafe {
            libc::utimensat(
                parent,
                name.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(self.err(path, io::Error::last_os_error()));
        }
        Ok(())
    }

    fn is_symlink(&self, parent: RawFd, name: &CStr) -> bool {
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, C string and out pointer.
        let r = unsafe { libc::fstatat(parent, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK
    }
}

/// Overlay's own attributes must not reach a lower directory: overlayfs would interpret them.
fn skip_xattr(k: &[u8]) -> bool {
    k.starts_with(b"trusted.overlay.")
}

struct OwnedFdOrRaw(OwnedFd);

impl OwnedFdOrRaw {
    fn dup(fd: RawFd) -> io::Result<Self> {
        // SAFETY: F_DUPFD_CLOEXEC on an open fd returns a new fd we own.
        let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `n` is a fresh fd owned by nobody else.
        Ok(OwnedFdOrRaw(unsafe { OwnedFd::from_raw_fd(n) }))
    }
}

fn times(mtime: i64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

fn cstring(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| Error::Io {
        path: PathBuf::from(String::from_utf8_lossy(b).into_owned()),
        source: io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"),
    })
}

/// Opens a directory below `parent` without following a symlink in the last component.
fn open_dir_at(parent: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and C string; the fd returned is owned below.
    let fd = unsafe {
        libc::openat(
            parent,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is fresh and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, EntryKind};
    use std::os::unix::fs::MetadataExt;

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_000_000,
            xattrs: Vec::new(),
        }
    }

    fn entry(path: &str, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            meta: meta(mode),
            header_size: 0,
        }
    }

    #[test]
    fn never_follows_a_symlink_of_the_image() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("data"), b"hello").unwrap();
        let victim = tempfile::tempdir().unwrap();
        let mut tree = FsTree::new(false);
        let host = |n: &str| EntryKind::HostFile {
            size: 5,
            path: src.path().join(n),
        };
        // `evil` points outside; the tree places later entries *through* it inside the image,
        // but the extractor must never resolve it on the host.
        let evil = victim.path().to_str().unwrap().as_bytes().to_vec();
        tree.apply(
            0,
            &[
                entry("d", EntryKind::Dir, 0o555),
                entry("d/f", host("data"), 0o4755),
                entry("d/hard", EntryKind::Hardlink(b"d/f".to_vec()), 0o4755),
                entry("evil", EntryKind::Symlink(evil), 0o777),
                entry("fifo", EntryKind::Fifo, 0o640),
            ],
        )
        .unwrap();
        let dest = tempfile::tempdir().unwrap();
        let s = extract(
            &tree,
            &ContentStore::default(),
            dest.path(),
            &ExtractOptions {
                same_owner: false,
                xattrs: false,
                devices: false,
                cancelled: None,
            },
        )
        .unwrap();
        assert_eq!((s.files, s.hardlinks, s.symlinks, s.specials), (1, 1, 1, 1));
        let f = std::fs::symlink_metadata(dest.path().join("d/f")).unwrap();
        let h = std::fs::symlink_metadata(dest.path().join("d/hard")).unwrap();
        assert_eq!(f.ino(), h.ino());
        assert_eq!(f.mode() & 0o7777, 0o4755);
        assert_eq!(f.mtime(), 1_000_000);
        let d = std::fs::symlink_metadata(dest.path().join("d")).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o555);
        assert_eq!(d.mtime(), 1_000_000);
        assert!(std::fs::symlink_metadata(dest.path().join("evil"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_a_symlink_planted_in_the_destination() {
        // A destination that already holds a link where the image has a directory.
        let victim = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(victim.path(), dest.path().join("d")).unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("x"), b"12345").unwrap();
        let mut tree = FsTree::new(false);
        tree.apply(
            0,
            &[entry(
                "d/x",
                EntryKind::HostFile {
                    size: 5,
                    path: src.path().join("x"),
                },
                0o644,
            )],
        )
        .unwrap();
        let err = extract(
            &tree,
            &ContentStore::default(),
            dest.path(),
            &ExtractOptions {
                same_owner: false,
                xattrs: false,
                devices: false,
                cancelled: None,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("/d"), "{err}");
        assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 0);
    }

    /// Owners, setuid bits, `security.capability` (set after chown, which clears it), device
    /// nodes: what only root can write.
    #[test]
    fn root_metadata_capabilities_and_devices() {
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(
            uid, 0,
            "this test needs root (chown, mknod, security.* xattrs): run as root like scripts/test"
        );
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("ping"), b"\x7fELF").unwrap();
        // vfs_cap_data v2: effective flag, permitted = CAP_NET_RAW (13).
        let mut cap = Vec::new();
        cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
        cap.extend_from_slice(&(1u32 << 13).to_le_bytes());
        cap.extend_from_slice(&[0u8; 12]);
        let mut m = meta(0o4755);
        m.uid = 33;
        m.gid = 44;
        m.xattrs = vec![(b"security.capability".to_vec(), cap.clone())];
        let mut tree = FsTree::new(false);
        tree.apply(
            0,
            &[
                Entry {
                    path: b"ping".to_vec(),
                    kind: EntryKind::HostFile {
                        size: 4,
                        path: src.path().join("ping"),
                    },
                    meta: m,
                    header_size: 0,
                },
                entry("null", EntryKind::Char { major: 1, minor: 3 }, 0o666),
            ],
        )
        .unwrap();
        let dest = tempfile::tempdir().unwrap();
        extract(
            &tree,
            &ContentStore::default(),
            dest.path(),
            &ExtractOptions::default(),
        )
        .unwrap();
        let md = std::fs::symlink_metadata(dest.path().join("ping")).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (33, 44, 0o4755));
        assert_eq!(
            xattr::get(dest.path().join("ping"), "security.capability")
                .unwrap()
                .unwrap(),
            cap
        );
        let null = std::fs::symlink_metadata(dest.path().join("null")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), libc::makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
    }
}
