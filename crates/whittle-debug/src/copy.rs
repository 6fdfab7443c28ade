//! `cp TARGET:PATH DEST`: files out of a target, without anything in the target.
//!
//! A running target is read through `/proc/PID/root` with `openat2(RESOLVE_IN_ROOT)`, so an
//! absolute symlink in the target (`/data/current → /data/v2`) resolves inside the target's
//! root, never on the host; the walk below the first path opens each entry with `O_NOFOLLOW`
//! relative to its directory, so nothing in the tree can point the copy outside it. Volumes and
//! tmpfs mounts of the target are seen as the target sees them. A stopped target is read with
//! the Engine's archive API, which mounts its file system (and volumes) without starting it.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// What a copy wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Paths left out (sockets, devices, fifos), with why.
    pub skipped: Vec<String>,
}

fn openat2(dir: RawFd, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: a valid descriptor, C string and open_how with its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn openat(dir: RawFd, name: &std::ffi::OsStr, flags: i32) -> std::io::Result<OwnedFd> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid descriptor and C string.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Where the copy of `src` goes: inside `dest` when it is a directory, else `dest` itself.
pub fn destination(src: &Path, dest: &Path) -> PathBuf {
    match (dest.is_dir(), src.file_name()) {
        (true, Some(n)) => dest.join(n),
        _ => dest.to_path_buf(),
    }
}

/// Copies `path` (absolute inside the target) from the root of running process `pid`.
pub fn from_running(pid: u32, path: &Path, dest: &Path) -> Result<Copied> {
    let root_path = format!("/proc/{pid}/root");
    let root = crate::error::open_proc(&root_path, "CAP_SYS_PTRACE (or the target's uid)")?;
    let shown = |p: &Path| format!("pid {pid}:{}", p.display());
    let src = openat2(root.as_raw_fd(), path, libc::O_RDONLY | libc::O_NOCTTY)
        .map_err(|e| Error::io(shown(path), e))?;
    let to = destination(path, dest);
    let mut done = Copied::default();
    copy_fd(src, &to, &mut done, &shown(path))?;
    Ok(done)
}

fn copy_fd(fd: OwnedFd, to: &Path, done: &mut Copied, shown: &str) -> Result<()> {
    let f = File::from(fd);
    let meta = f.metadata().map_err(|e| Error::io(shown, e))?;
    if meta.is_dir() {
        std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
        done.dirs += 1;
        // Listing through the descriptor keeps the walk on the directory that was opened.
        let list = std::fs::read_dir(format!("/proc/self/fd/{}", f.as_raw_fd()))
            .map_err(|e| Error::io(shown, e))?;
        let mut names: Vec<_> = list.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        names.sort();
        for name in names {
            let child_shown = format!("{shown}/{}", name.to_string_lossy());
            let child_to = to.join(&name);
            match openat(
                f.as_raw_fd(),
                &name,
                libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK,
            ) {
                Ok(c) => copy_fd(c, &child_to, done, &child_shown)?,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    let link =
                        readlinkat(f.as_raw_fd(), &name).map_err(|e| Error::io(&child_shown, e))?;
                    std::os::unix::fs::symlink(&link, &child_to)
                        .map_err(|e| Error::io(&child_to, e))?;
                    done.symlinks += 1;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    done.skipped.push(format!("{child_shown}: a socket"));
                }
                Err(e) => return Err(Error::io(&child_shown, e)),
            }
        }
        set_mode(to, meta.mode())?;
    } else if meta.is_file() {
        let mut f = f;
        let mut out = File::create(to).map_err(|e| Error::io(to, e))?;
        done.bytes += std::io::copy(&mut f, &mut out).map_err(|e| Error::io(shown, e))?;
        done.files += 1;
        set_mode(to, meta.mode())?;
    } else {
        done.skipped
            .push(format!("{shown}: not a file or directory"));
    }
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| Error::io(p, e))
}

fn readlinkat(dir: RawFd, name: &std::ffi::OsStr) -> std::io::Result<PathBuf> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: the buffer and its length belong together.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

use std::os::unix::ffi::OsStringExt;

/// Unpacks an archive from the Engine's archive API into `dest` (the same rule for where it
/// goes as for a running target). `tar` is the stream the Engine sent for `path`.
pub fn from_archive(tar: impl Read, path: &Path, dest: &Path) -> Result<Copied> {
    let to = destination(path, dest);
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".whittle-cp-")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    let mut ar = tar::Archive::new(tar);
    ar.set_preserve_permissions(true);
    ar.set_overwrite(false);
    let mut done = Copied::default();
    let mut top: Option<PathBuf> = None;
    for entry in ar.entries().map_err(|e| Error::io(path, e))? {
        let mut entry = entry.map_err(|e| Error::io(path, e))?;
        let p = entry.path().map_err(|e| Error::io(path, e))?.into_owned();
        if top.is_none() {
            top = p.components().next().map(|c| PathBuf::from(c.as_os_str()));
        }
        match entry.header().entry_type() {
            tar::EntryType::Regular => {
                done.files += 1;
                done.bytes += entry.size();
            }
            tar::EntryType::Directory => done.dirs += 1,
            tar::EntryType::Symlink => done.symlinks += 1,
            t if !t.is_hard_link() => {
                done.skipped.push(format!("{}: {t:?}", p.display()));
                continue;
            }
            _ => {}
        }
        unpack_entry(&mut entry, scratch.path())
            .map_err(|e| Error::io(scratch.path().join(&p), e))?;
    }
    let top = top.ok_or_else(|| Error::Target {
        target: path.display().to_string(),
        cause: "the engine sent an empty archive".into(),
    })?;
    std::fs::rename(scratch.path().join(&top), &to).map_err(|e| Error::io(&to, e))?;
    Ok(done)
}

/// A relative path with only normal components (the Engine writes `/usr/bin/x` and links to
/// `usr/bin/y`); `None` for anything that could climb out with `..`.
fn inside(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Unpacks one entry of an Engine archive under `dir`. Hard links are made here: their names
/// are relative to the archive's root, which the tar crate would resolve against the entry.
pub(crate) fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dir: &Path,
) -> std::io::Result<()> {
    if entry.header().entry_type().is_hard_link() {
        let bad = || std::io::Error::other("hard link outside the archive");
        let name = inside(&entry.path()?).ok_or_else(bad)?;
        let to = entry.link_name()?.ok_or_else(bad)?;
        let to = inside(&to).ok_or_else(bad)?;
        return std::fs::hard_link(dir.join(to), dir.join(name));
    }
    // unpack_in refuses entries that would land outside `dir`.
    entry.unpack_in(dir).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("data/v2")).unwrap();
        std::fs::write(root.join("data/v2/f"), b"inside").unwrap();
        // An absolute link: on the host it would point elsewhere.
        std::os::unix::fs::symlink("/data/v2", root.join("data/current")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("data/v2/escape")).unwrap();
        let rootfd = File::open(&root).unwrap();
        let fd = openat2(
            rootfd.as_raw_fd(),
            Path::new("/data/current/f"),
            libc::O_RDONLY,
        )
        .unwrap();
        let mut s = String::new();
        File::from(fd).read_to_string(&mut s).unwrap();
        assert_eq!(s, "inside");
        let fd = openat2(
            rootfd.as_raw_fd(),
            Path::new("/data/current"),
            libc::O_RDONLY,
        )
        .unwrap();
        let out = d.path().join("out");
        let mut done = Copied::default();
        copy_fd(fd, &out, &mut done, "t").unwrap();
        assert_eq!(std::fs::read(out.join("f")).unwrap(), b"inside");
        // The link inside the copied tree is copied as a link, not followed to the host.
        assert_eq!(
            std::fs::read_link(out.join("escape")).unwrap(),
            Path::new("/etc/hostname")
        );
        assert_eq!((done.files, done.dirs, done.symlinks), (1, 1, 1));
    }

    #[test]
    fn destination_rule() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(destination(Path::new("/a/b"), d.path()), d.path().join("b"));
        let n = d.path().join("new");
        assert_eq!(destination(Path::new("/a/b"), &n), n);
    }
}
