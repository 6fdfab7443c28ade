//! The kernel calls that build the sandbox's file system view, behind a trait.
//!
//! The real implementation is a thin layer over libc; [`Recording`] writes every call to a log
//! instead, so the order and arguments of the setup (which mounts, where, with which flags) are
//! unit-testable without root and without touching the machine (the approach of youki's
//! `syscall/test.rs`).

use std::cell::RefCell;
use std::ffi::CStr;

/// A failed call: the errno.
pub type SysResult = Result<(), i32>;

pub trait Sys {
    fn mount(
        &self,
        src: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult;
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult;
    fn mkdir(&self, path: &CStr, mode: libc::mode_t) -> SysResult;
    fn chdir(&self, path: &CStr) -> SysResult;
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult;
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult;
    /// Creates an empty regular file if nothing is there (a bind mount target).
    fn touch(&self, path: &CStr) -> SysResult;
    fn sethostname(&self, name: &[u8]) -> SysResult;
    /// Brings up the loopback interface of the current network namespace.
    fn loopback_up(&self) -> SysResult;
    /// A detached bind-mount copy of `path` (`open_tree(OPEN_TREE_CLONE)`): a host file that
    /// can be attached after the host is gone from view.
    fn open_tree(&self, path: &CStr) -> Result<i32, i32>;
    /// Attaches a tree from [`Sys::open_tree`] at `target`.
    fn move_mount(&self, fd: i32, target: &CStr) -> SysResult;
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

fn check(r: libc::c_int) -> SysResult {
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(())
    }
}

fn ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct Real;

impl Sys for Real {
    fn mount(
        &self,
        src: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult {
        // SAFETY: every pointer is a valid C string or null, as mount(2) allows.
        check(unsafe {
            libc::mount(
                ptr(src),
                target.as_ptr(),
                ptr(fstype),
                flags,
                ptr(data).cast(),
            )
        })
    }
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult {
        // SAFETY: valid C string.
        check(unsafe { libc::umount2(target.as_ptr(), flags) })
    }
    fn mkdir(&self, path: &CStr, mode: libc::mode_t) -> SysResult {
        // SAFETY: valid C string.
        match check(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
            Err(libc::EEXIST) => Ok(()),
            r => r,
        }
    }
    fn chdir(&self, path: &CStr) -> SysResult {
        // SAFETY: valid C string.
        check(unsafe { libc::chdir(path.as_ptr()) })
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult {
        // SAFETY: valid C strings; pivot_root has no libc wrapper.
        check(unsafe {
            libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) as libc::c_int
        })
    }
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult {
        // SAFETY: valid C strings.
        match check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }) {
            Err(libc::EEXIST) => Ok(()),
            r => r,
        }
    }
    fn touch(&self, path: &CStr) -> SysResult {
        // SAFETY: valid C string; the fd is closed right away.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOCTTY,
                0o644,
            )
        };
        check(fd)?;
        // SAFETY: `fd` is open and ours.
        unsafe { libc::close(fd) };
        Ok(())
    }
    fn sethostname(&self, name: &[u8]) -> SysResult {
        // SAFETY: buffer and length match.
        check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
    }
    fn loopback_up(&self) -> SysResult {
        // SAFETY: a datagram socket only carries the ioctl; closed below.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        check(s)?;
        // SAFETY: an all-zero ifreq is valid; the name is set below within its 16 bytes.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS fills the flags field of a valid ifreq.
        let r = unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) };
        if r == 0 {
            // SAFETY: the union holds flags after SIOCGIFFLAGS.
            unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as i16 };
        }
        let r = if r == 0 {
            // SAFETY: as above, with the flags to set.
            unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &req) }
        } else {
            r
        };
        let e = check(r);
        // SAFETY: `s` is open and ours.
        unsafe { libc::close(s) };
        e
    }
    fn open_tree(&self, path: &CStr) -> Result<i32, i32> {
        // SAFETY: valid C string; plain integer flags.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                path.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
            )
        } as libc::c_int;
        check(fd)?;
        Ok(fd)
    }
    fn move_mount(&self, fd: i32, target: &CStr) -> SysResult {
        // SAFETY: valid fd and C strings.
        check(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        } as libc::c_int)
    }
}

/// Records calls instead of making them; `fail_on` makes the call whose log line starts with
/// it fail with `EPERM`.
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
}

fn s(c: Option<&CStr>) -> String {
    c.map_or("-".into(), |c| c.to_string_lossy().into_owned())
}

impl Sys for Recording {
    fn mount(
        &self,
        src: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult {
        self.log(format!(
            "mount {} {} {} {:#x} {}",
            s(src),
            s(Some(target)),
            s(fstype),
            flags,
            s(data)
        ))
    }
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult {
        self.log(format!("umount2 {} {flags}", s(Some(target))))
    }
    fn mkdir(&self, path: &CStr, mode: libc::mode_t) -> SysResult {
        self.log(format!("mkdir {} {mode:o}", s(Some(path))))
    }
    fn chdir(&self, path: &CStr) -> SysResult {
        self.log(format!("chdir {}", s(Some(path))))
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult {
        self.log(format!(
            "pivot_root {} {}",
            s(Some(new_root)),
            s(Some(put_old))
        ))
    }
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult {
        self.log(format!("symlink {} {}", s(Some(target)), s(Some(link))))
    }
    fn touch(&self, path: &CStr) -> SysResult {
        self.log(format!("touch {}", s(Some(path))))
    }
    fn sethostname(&self, name: &[u8]) -> SysResult {
        self.log(format!("sethostname {}", String::from_utf8_lossy(name)))
    }
    fn loopback_up(&self) -> SysResult {
        self.log("loopback_up".into())
    }
    fn open_tree(&self, path: &CStr) -> Result<i32, i32> {
        let n = self.calls.borrow().len() as i32;
        self.log(format!("open_tree {} -> {}", s(Some(path)), 100 + n))?;
        Ok(100 + n)
    }
    fn move_mount(&self, fd: i32, target: &CStr) -> SysResult {
        self.log(format!("move_mount {fd} {}", s(Some(target))))
    }
}
