//! The kernel calls a debug session is built from, behind a trait.
//!
//! [`Real`] is a thin layer over libc; [`Recording`] logs each call instead, so the order of the
//! setup — which namespace is joined before which mount, that the target's tree is cloned and
//! never mounted on, that nothing is ever written under the target — is a unit test that needs
//! neither root nor a container.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

/// A failed call: the errno.
pub type SysResult<T = ()> = Result<T, i32>;

pub const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: u64 = 1;
const MOUNT_ATTR_NOSUID: u64 = 2;
const MOUNT_ATTR_NODEV: u64 = 4;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub trait Kernel {
    /// Opens a namespace file (`/proc/PID/ns/KIND`) or any path read-only, close-on-exec.
    fn open(&self, path: &CStr) -> SysResult<RawFd>;
    fn setns(&self, fd: RawFd, nstype: libc::c_int) -> SysResult;
    fn unshare(&self, flags: libc::c_int) -> SysResult;
    fn mount(
        &self,
        src: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult;
    /// A detached recursive copy of the mount tree at `path` in the current mount namespace.
    fn open_tree(&self, path: &CStr) -> SysResult<RawFd>;
    /// Makes every mount of a detached tree read-only, nosuid and nodev: the copy's flags only,
    /// the target's own mounts keep theirs.
    fn seal_tree(&self, fd: RawFd) -> SysResult;
    fn move_mount(&self, fd: RawFd, target: &CStr) -> SysResult;
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult;
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult;
    fn chdir(&self, path: &CStr) -> SysResult;
    /// Creates an empty file (a bind-mount target) on the session's own tmpfs.
    fn touch(&self, path: &CStr) -> SysResult;
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult;
    fn mkdir(&self, path: &CStr) -> SysResult;
    /// Writes `data` to an existing file (cgroup.procs).
    fn write_file(&self, path: &CStr, data: &[u8]) -> SysResult;
    fn close(&self, fd: RawFd);
}

fn check(r: libc::c_long) -> SysResult<libc::c_long> {
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(r)
    }
}

fn ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// The running kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct Real;

impl Kernel for Real {
    fn open(&self, path: &CStr) -> SysResult<RawFd> {
        // SAFETY: a valid C string; the flags ask for nothing but a descriptor.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        Ok(check(fd.into())? as RawFd)
    }
    fn setns(&self, fd: RawFd, nstype: libc::c_int) -> SysResult {
        // SAFETY: setns(2) only reads the descriptor.
        check(unsafe { libc::setns(fd, nstype) }.into()).map(drop)
    }
    fn unshare(&self, flags: libc::c_int) -> SysResult {
        // SAFETY: unshare(2) takes plain flags.
        check(unsafe { libc::unshare(flags) }.into()).map(drop)
    }
    fn mount(
        &self,
        src: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult {
        // SAFETY: every pointer is a valid C string or null, as mount(2) allows.
        check(
            unsafe {
                libc::mount(
                    ptr(src),
                    target.as_ptr(),
                    ptr(fstype),
                    flags,
                    ptr(data).cast(),
                )
            }
            .into(),
        )
        .map(drop)
    }
    fn open_tree(&self, path: &CStr) -> SysResult<RawFd> {
        let flags = OPEN_TREE_CLONE | libc::AT_RECURSIVE as libc::c_uint | libc::O_CLOEXEC as u32;
        // SAFETY: a valid C string and plain integer flags; open_tree has no libc wrapper.
        let fd =
            unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
        Ok(check(fd)? as RawFd)
    }
    fn seal_tree(&self, fd: RawFd) -> SysResult {
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            attr_clr: 0,
            propagation: libc::MS_PRIVATE,
            userns_fd: 0,
        };
        // SAFETY: `attr` is a live mount_attr and its size is passed; the empty path with
        // AT_EMPTY_PATH names the descriptor itself.
        check(unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                fd,
                c"".as_ptr(),
                (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        })
        .map(drop)
    }
    fn move_mount(&self, fd: RawFd, target: &CStr) -> SysResult {
        // SAFETY: a valid descriptor and C strings.
        check(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        })
        .map(drop)
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult {
        // SAFETY: valid C strings; pivot_root has no libc wrapper.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
            .map(drop)
    }
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult {
        // SAFETY: a valid C string.
        check(unsafe { libc::umount2(target.as_ptr(), flags) }.into()).map(drop)
    }
    fn chdir(&self, path: &CStr) -> SysResult {
        // SAFETY: a valid C string.
        check(unsafe { libc::chdir(path.as_ptr()) }.into()).map(drop)
    }
    fn touch(&self, path: &CStr) -> SysResult {
        // SAFETY: a valid C string; the descriptor is closed right away.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOCTTY,
                0o644,
            )
        };
        let fd = check(fd.into())? as RawFd;
        self.close(fd);
        Ok(())
    }
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult {
        // SAFETY: valid C strings.
        check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }.into()).map(drop)
    }
    fn mkdir(&self, path: &CStr) -> SysResult {
        // SAFETY: a valid C string.
        match check(unsafe { libc::mkdir(path.as_ptr(), 0o755) }.into()) {
            Err(libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }
    fn write_file(&self, path: &CStr, data: &[u8]) -> SysResult {
        // SAFETY: a valid C string; no O_CREAT, so only existing files are written.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        let fd = check(fd.into())? as RawFd;
        // SAFETY: the buffer and its length belong together; `fd` is ours.
        let r = check(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) } as libc::c_long);
        self.close(fd);
        r.map(drop)
    }
    fn close(&self, fd: RawFd) {
        // SAFETY: callers pass descriptors they opened and no longer use.
        unsafe { libc::close(fd) };
    }
}

/// Logs calls instead of making them; the call whose log line starts with `fail_on` fails with
/// `EPERM`. Descriptors are numbered from 100.
#[derive(Debug, Default)]
pub struct Recording {
    pub calls: RefCell<Vec<String>>,
    pub fail_on: Option<String>,
}

impl Recording {
    fn log(&self, line: String) -> SysResult {
        let fail = self.fail_on.as_ref().is_some_and(|f| line.starts_with(f));
        self.calls.borrow_mut().push(line);
        if fail {
            Err(libc::EPERM)
        } else {
            Ok(())
        }
    }
    fn fd(&self) -> RawFd {
        100 + self.calls.borrow().len() as RawFd - 1
    }
}

fn s(c: &CStr) -> String {
    c.to_string_lossy().into_owned()
}

impl Kernel for Recording {
    fn open(&self, path: &CStr) -> SysResult<RawFd> {
        self.log(format!("open {}", s(path)))?;
        Ok(self.fd())
    }
    fn setns(&self, fd: RawFd, nstype: libc::c_int) -> SysResult {
        self.log(format!("setns {fd} {}", ns_name(nstype)))
    }
    fn unshare(&self, flags: libc::c_int) -> SysResult {
        self.log(format!("unshare {}", ns_name(flags)))
    }
    fn mount(
        &self,
        src: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult {
        self.log(format!(
            "mount {} {} {} {flags:#x} {}",
            src.map_or("-".into(), s),
            s(target),
            fstype.map_or("-".into(), s),
            data.map_or("-".into(), s)
        ))
    }
    fn open_tree(&self, path: &CStr) -> SysResult<RawFd> {
        self.log(format!("open_tree {}", s(path)))?;
        Ok(self.fd())
    }
    fn seal_tree(&self, fd: RawFd) -> SysResult {
        self.log(format!("seal_tree {fd}"))
    }
    fn move_mount(&self, fd: RawFd, target: &CStr) -> SysResult {
        self.log(format!("move_mount {fd} {}", s(target)))
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult {
        self.log(format!("pivot_root {} {}", s(new_root), s(put_old)))
    }
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult {
        self.log(format!("umount2 {} {flags}", s(target)))
    }
    fn chdir(&self, path: &CStr) -> SysResult {
        self.log(format!("chdir {}", s(path)))
    }
    fn touch(&self, path: &CStr) -> SysResult {
        self.log(format!("touch {}", s(path)))
    }
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult {
        self.log(format!("symlink {} {}", s(target), s(link)))
    }
    fn mkdir(&self, path: &CStr) -> SysResult {
        self.log(format!("mkdir {}", s(path)))
    }
    fn write_file(&self, path: &CStr, data: &[u8]) -> SysResult {
        self.log(format!(
            "write {} {}",
            s(path),
            String::from_utf8_lossy(data)
        ))
    }
    fn close(&self, fd: RawFd) {
        let _ = self.log(format!("close {fd}"));
    }
}

/// The name of one `CLONE_NEW*` flag, for logs and messages.
pub fn ns_name(flag: libc::c_int) -> &'static str {
    match flag {
        libc::CLONE_NEWNS => "mnt",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNET => "net",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWCGROUP => "cgroup",
        _ => "?",
    }
}

/// A path as a C string; paths with a NUL byte cannot name a file and become an error.
pub fn cpath(p: impl AsRef<std::path::Path>) -> Result<CString, crate::Error> {
    let p = p.as_ref();
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| crate::Error::Io {
        path: p.display().to_string(),
        cause: "path contains a NUL byte".into(),
    })
}
