//! The kernel calls that whittle builds file system views and joins namespaces with — the
//! sandbox's root (`whittle trace`/`build`) and a debug session's toolbox root (`whittle debug`)
//! — behind one trait.
//!
//! [`Real`] is a thin layer over libc (several of these calls, `open_tree`, `move_mount`,
//! `mount_setattr` and `pivot_root`, have no libc wrapper and no maintained crate that wraps
//! them all with plain errno results, hence by hand). [`Recording`] logs each call instead, so
//! the order and arguments of a setup — which mounts, where, with which flags, which namespace is
//! joined before which mount — are unit tests that need neither root nor a container (the
//! approach of youki's `syscall/test.rs`).

use std::cell::RefCell;
use std::ffi::CStr;
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
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult;
    /// Creates a directory; one that is already there is not an error.
    fn mkdir(&self, path: &CStr, mode: libc::mode_t) -> SysResult;
    fn chdir(&self, path: &CStr) -> SysResult;
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult;
    /// Creates a symlink; an existing entry at `link` is not an error.
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult;
    /// Creates an empty regular file if nothing is there (a bind-mount target).
    fn touch(&self, path: &CStr) -> SysResult;
    fn sethostname(&self, name: &[u8]) -> SysResult;
    /// Brings up the loopback interface of the current network namespace.
    fn loopback_up(&self) -> SysResult;
    /// A detached copy of the one mount at `path` (`open_tree(OPEN_TREE_CLONE)`): a host file
    /// that can be attached after the host is gone from view.
    fn open_tree(&self, path: &CStr) -> SysResult<RawFd>;
    /// A detached copy of the whole mount tree under `path`, submounts included
    /// (`OPEN_TREE_CLONE | AT_RECURSIVE`).
    fn clone_tree(&self, path: &CStr) -> SysResult<RawFd>;
    /// Makes every mount of a detached tree read-only, nosuid and nodev: the copy's flags only,
    /// the original mounts keep theirs.
    fn seal_tree(&self, fd: RawFd) -> SysResult;
    /// Attaches a tree from [`Kernel::open_tree`] or [`Kernel::clone_tree`] at `target`.
    fn move_mount(&self, fd: RawFd, target: &CStr) -> SysResult;
    /// Writes `data` to an existing file (`cgroup.procs`).
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

fn tolerate(r: SysResult<libc::c_long>, errno: i32) -> SysResult {
    match r {
        Err(e) if e == errno => Ok(()),
        r => r.map(drop),
    }
}

/// The running kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct Real;

impl Real {
    fn tree(path: &CStr, flags: libc::c_uint) -> SysResult<RawFd> {
        let flags = flags | OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
        // SAFETY: a valid C string and plain integer flags; open_tree has no libc wrapper.
        let fd =
            unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
        Ok(check(fd)? as RawFd)
    }
}

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
        let r = unsafe {
            libc::mount(
                ptr(src),
                target.as_ptr(),
                ptr(fstype),
                flags,
                ptr(data).cast(),
            )
        };
        check(r.into()).map(drop)
    }
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult {
        // SAFETY: a valid C string.
        check(unsafe { libc::umount2(target.as_ptr(), flags) }.into()).map(drop)
    }
    fn mkdir(&self, path: &CStr, mode: libc::mode_t) -> SysResult {
        // SAFETY: a valid C string.
        tolerate(
            check(unsafe { libc::mkdir(path.as_ptr(), mode) }.into()),
            libc::EEXIST,
        )
    }
    fn chdir(&self, path: &CStr) -> SysResult {
        // SAFETY: a valid C string.
        check(unsafe { libc::chdir(path.as_ptr()) }.into()).map(drop)
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult {
        // SAFETY: valid C strings; pivot_root has no libc wrapper.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
            .map(drop)
    }
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult {
        // SAFETY: valid C strings.
        tolerate(
            check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }.into()),
            libc::EEXIST,
        )
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
    fn sethostname(&self, name: &[u8]) -> SysResult {
        // SAFETY: buffer and length match.
        check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }.into()).map(drop)
    }
    fn loopback_up(&self) -> SysResult {
        // SAFETY: a datagram socket only carries the ioctl; closed below.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        let s = check(s.into())? as RawFd;
        // SAFETY: an all-zero ifreq is valid; the name is set below within its 16 bytes.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS fills the flags field of a valid ifreq.
        let mut r = unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) };
        if r == 0 {
            // SAFETY: the union holds flags after SIOCGIFFLAGS; SIOCSIFFLAGS reads them back.
            unsafe {
                req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as i16;
                r = libc::ioctl(s, libc::SIOCSIFFLAGS, &req);
            }
        }
        let e = check(r.into()).map(drop);
        self.close(s);
        e
    }
    fn open_tree(&self, path: &CStr) -> SysResult<RawFd> {
        Self::tree(path, 0)
    }
    fn clone_tree(&self, path: &CStr) -> SysResult<RawFd> {
        Self::tree(path, libc::AT_RECURSIVE as libc::c_uint)
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
/// `EPERM`. A descriptor is numbered 100 + the index of the log line that made it.
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
    /// Logs `WHAT PATH -> FD` and returns the descriptor.
    fn log_fd(&self, what: &str, path: &CStr) -> SysResult<RawFd> {
        let fd = 100 + self.calls.borrow().len() as RawFd;
        self.log(format!("{what} {} -> {fd}", s(path)))?;
        Ok(fd)
    }
}

fn s(c: &CStr) -> String {
    c.to_string_lossy().into_owned()
}

fn opt(c: Option<&CStr>) -> String {
    c.map_or("-".into(), s)
}

impl Kernel for Recording {
    fn open(&self, path: &CStr) -> SysResult<RawFd> {
        self.log_fd("open", path)
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
            opt(src),
            s(target),
            opt(fstype),
            opt(data)
        ))
    }
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult {
        self.log(format!("umount2 {} {flags}", s(target)))
    }
    fn mkdir(&self, path: &CStr, mode: libc::mode_t) -> SysResult {
        self.log(format!("mkdir {} {mode:o}", s(path)))
    }
    fn chdir(&self, path: &CStr) -> SysResult {
        self.log(format!("chdir {}", s(path)))
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult {
        self.log(format!("pivot_root {} {}", s(new_root), s(put_old)))
    }
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult {
        self.log(format!("symlink {} {}", s(target), s(link)))
    }
    fn touch(&self, path: &CStr) -> SysResult {
        self.log(format!("touch {}", s(path)))
    }
    fn sethostname(&self, name: &[u8]) -> SysResult {
        self.log(format!("sethostname {}", String::from_utf8_lossy(name)))
    }
    fn loopback_up(&self) -> SysResult {
        self.log("loopback_up".into())
    }
    fn open_tree(&self, path: &CStr) -> SysResult<RawFd> {
        self.log_fd("open_tree", path)
    }
    fn clone_tree(&self, path: &CStr) -> SysResult<RawFd> {
        self.log_fd("clone_tree", path)
    }
    fn seal_tree(&self, fd: RawFd) -> SysResult {
        self.log(format!("seal_tree {fd}"))
    }
    fn move_mount(&self, fd: RawFd, target: &CStr) -> SysResult {
        self.log(format!("move_mount {fd} {}", s(target)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_named_by_their_log_line() {
        let k = Recording::default();
        assert_eq!(k.open(c"/proc/1/ns/net"), Ok(100));
        k.chdir(c"/").unwrap();
        assert_eq!(k.clone_tree(c"/"), Ok(102));
        assert_eq!(k.calls.borrow()[2], "clone_tree / -> 102");
    }

    #[test]
    fn fail_on_fails_that_call_with_eperm_and_logs_it() {
        let k = Recording {
            fail_on: Some("pivot_root".into()),
            ..Recording::default()
        };
        assert_eq!(k.pivot_root(c".", c"."), Err(libc::EPERM));
        assert_eq!(k.calls.borrow().last().unwrap(), "pivot_root . .");
    }

    #[test]
    fn real_calls_report_errno() {
        assert_eq!(Real.chdir(c"/nonexistent/whittle"), Err(libc::ENOENT));
        assert_eq!(Real.open(c"/nonexistent/whittle"), Err(libc::ENOENT));
        let d = std::env::temp_dir().join(format!("whittle-kernel-{}", std::process::id()));
        let dc = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).unwrap();
        Real.mkdir(&dc, 0o700).unwrap();
        Real.mkdir(&dc, 0o700)
            .expect("an existing directory is fine");
        std::fs::remove_dir(&d).unwrap();
    }
}
