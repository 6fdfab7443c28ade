//! File-level capture with fanotify: every open, exec-open and read on the sandbox's root
//! mount, whoever did it and however (the kernel loading an ELF interpreter, `mmap` after an
//! open, a process ptrace never saw). Paths come from the event's fd (`/proc/self/fd/N`), which
//! the kernel prints relative to the sandbox's root: that root is a mount of another mount
//! namespace, so the walk up stops there.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::report::{Kind, Outcome1, Recorder, Source};

#[derive(Debug)]
pub struct Fanotify {
    fd: OwnedFd,
}

/// What the reader thread hands back.
#[derive(Debug, Default)]
pub struct FanResult {
    pub rec: Recorder,
    pub overflowed: bool,
    pub events: u64,
}

impl Fanotify {
    pub fn new() -> io::Result<Fanotify> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fd, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Fanotify { fd })
    }

    /// Watches the mount `path` is on (e.g. `/proc/PID/root`).
    pub fn mark_mount(&self, path: &str) -> io::Result<()> {
        let c = std::ffi::CString::new(path).map_err(io::Error::other)?;
        // SAFETY: valid fd and C string.
        let r = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT,
                libc::FAN_OPEN | libc::FAN_OPEN_EXEC | libc::FAN_ACCESS | libc::FAN_ONDIR,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads events until `stop` is set, then drains what is queued.
    pub fn read_loop(self, stop: Arc<AtomicBool>) -> FanResult {
        let mut out = FanResult::default();
        let me = std::process::id() as i32;
        let mut buf = vec![0u8; 64 * 1024];
        let mut comms: std::collections::HashMap<i32, String> = Default::default();
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, if stopping { 0 } else { 50 }) };
            let mut got = false;
            loop {
                // SAFETY: reading into our buffer.
                let n =
                    unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                got = true;
                let n = n as usize;
                let mut off = 0;
                let sz = std::mem::size_of::<libc::fanotify_event_metadata>();
                while off + sz <= n {
                    // SAFETY: the kernel wrote whole event records; read_unaligned copes with
                    // any alignment of the buffer.
                    let m: libc::fanotify_event_metadata =
                        unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                    if m.event_len == 0 {
                        break;
                    }
                    off += m.event_len as usize;
                    out.events += 1;
                    if m.mask & libc::FAN_Q_OVERFLOW != 0 {
                        out.overflowed = true;
                    }
                    if m.fd < 0 {
                        continue;
                    }
                    // SAFETY: the event's fd is ours to close.
                    let fd = unsafe { OwnedFd::from_raw_fd(m.fd) };
                    if m.pid == me {
                        continue;
                    }
                    let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    else {
                        continue;
                    };
                    let path = path.into_os_string().into_encoded_bytes();
                    if !path.starts_with(b"/") {
                        continue; // pipe:, socket:, anon_inode:
                    }
                    // SAFETY: zeroed stat is valid to overwrite.
                    let mut st: libc::stat = unsafe { std::mem::zeroed() };
                    // SAFETY: valid fd and out pointer.
                    let is_dir = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0
                        && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                    let mut kinds = Vec::new();
                    if m.mask & libc::FAN_OPEN_EXEC != 0 {
                        kinds.push(Kind::Exec);
                    }
                    if m.mask & (libc::FAN_OPEN | libc::FAN_ACCESS) != 0 {
                        kinds.push(if is_dir { Kind::List } else { Kind::Read });
                    }
                    let pid = m.pid;
                    let mut comm = || {
                        comms
                            .entry(pid)
                            .or_insert_with(|| crate::ptrace::read_comm(pid))
                            .clone()
                    };
                    out.rec.record(
                        path,
                        &kinds,
                        Outcome1::Ok,
                        pid as u32,
                        &mut comm,
                        Source::Fanotify,
                    );
                }
            }
            if stopping && !got {
                return out;
            }
        }
    }
}
