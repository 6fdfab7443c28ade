//! Syscall-level path capture: a ptrace loop that only ever stops on the calls the seccomp
//! filter marks (`SECCOMP_RET_TRACE`), follows forks, clones and execs, and reads path
//! arguments straight out of the tracee's memory.
//!
//! The same thread that forked the sandbox runs this loop (ptrace is per thread, and so is
//! `PR_SET_PDEATHSIG`); it is also the reaper of the sandbox's outer process, so it runs even
//! when recording is off. `__WNOTHREAD` keeps it from reaping children of other threads
//! (host probes).

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::report::{normalize_abs, Kind, Outcome1, Recorder, Source};
use crate::syscall_log::{op_kind, Denial, Op, SyscallLog, SyscallMode};
use crate::syscalls::{open_kinds, Special, Syscall};

const PTRACE_EVENT_FORK: i32 = 1;
const PTRACE_EVENT_VFORK: i32 = 2;
const PTRACE_EVENT_CLONE: i32 = 3;
const PTRACE_EVENT_EXEC: i32 = 4;
const PTRACE_EVENT_SECCOMP: i32 = 7;
const PTRACE_EVENT_STOP: i32 = 128;

/// Options set when seizing the sandbox's init; auto-attached children inherit them.
pub const OPTIONS: libc::c_int = libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_EXITKILL;

fn ptrace(req: libc::c_uint, pid: i32, addr: usize, data: usize) -> i64 {
    // SAFETY: the requests used here take integer or pointer-to-local arguments that the
    // callers supply correctly; a stale pid only yields ESRCH.
    unsafe { libc::ptrace(req, pid, addr, data) }
}

/// Attaches to `pid` without stopping it.
pub fn seize(pid: i32) -> Result<(), i32> {
    if ptrace(libc::PTRACE_SEIZE, pid, 0, OPTIONS as usize) < 0 {
        return Err(errno());
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

struct Pending {
    items: Vec<(Vec<u8>, Vec<Kind>)>,
    /// Whether this call creates its path when it succeeds (O_CREAT of a missing path).
    creates: bool,
    delete_first: bool,
}

#[derive(Default)]
struct Proc {
    pending: Option<Pending>,
    /// A capability-relevant call waiting for its result (syscall recording only).
    op: Option<Op>,
    started: bool,
    comm: Option<String>,
    /// The process name for the syscall log (reset by exec).
    name: Option<String>,
}

impl Proc {
    fn in_call(&self) -> bool {
        self.pending.is_some() || self.op.is_some()
    }
}

/// The tracer: state per tracee and what was seen.
pub struct Tracer {
    table: HashMap<i64, Syscall>,
    procs: HashMap<i32, Proc>,
    pub rec: Recorder,
    /// Exit status (raw wait status) of `watch`, once it ended.
    pub watched_status: Option<i32>,
    tracing: bool,
    watch: i32,
    mode: SyscallMode,
    /// The phase of the run (start-up, probe N, stop), set by the controller.
    phase: Arc<AtomicU32>,
    /// Every system call seen, when `mode` is not `Off`.
    pub log: SyscallLog,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("tracees", &self.procs.len())
            .finish()
    }
}

impl Tracer {
    pub fn new(tracing: bool, watch: i32, mode: SyscallMode, phase: Arc<AtomicU32>) -> Self {
        Tracer {
            mode,
            phase,
            log: SyscallLog::default(),
            table: crate::syscalls::table()
                .into_iter()
                .map(|s| (s.nr, s))
                .collect(),
            procs: HashMap::new(),
            rec: Recorder::default(),
            watched_status: None,
            tracing,
            watch,
        }
    }

    /// Waits for and handles stops until this thread has no tracees and no children left.
    pub fn run(&mut self) {
        if self.tracing {
            self.procs.insert(
                self.watch,
                Proc {
                    started: true,
                    ..Proc::default()
                },
            );
        }
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid out pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::__WNOTHREAD) };
            if pid < 0 {
                match errno() {
                    libc::EINTR => continue,
                    _ => break, // ECHILD: nothing left
                }
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                if pid == self.watch {
                    self.watched_status = Some(status);
                }
                if let Some(p) = self.procs.remove(&pid) {
                    if let Some(pend) = p.pending {
                        self.finish(pid, pend, None, p.comm);
                    }
                }
                continue;
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            let sig = libc::WSTOPSIG(status);
            let event = (status >> 16) & 0xff;
            if sig == (libc::SIGTRAP | 0x80) {
                self.on_syscall_exit(pid);
                continue;
            }
            match event {
                PTRACE_EVENT_SECCOMP => {
                    self.on_seccomp(pid);
                    // Only a call with something pending needs its exit stop.
                    self.resume(pid, 0);
                }
                PTRACE_EVENT_EXEC => {
                    let mut former: libc::c_ulong = 0;
                    ptrace(
                        libc::PTRACE_GETEVENTMSG,
                        pid,
                        0,
                        &mut former as *mut _ as usize,
                    );
                    let former = former as i32;
                    if former != pid && former != 0 {
                        if let Some(old) = self.procs.remove(&former) {
                            let p = self.procs.entry(pid).or_default();
                            p.pending = old.pending;
                            p.started = true;
                        }
                    }
                    // A new program: a new comm. The execve itself is recorded at its exit
                    // stop (result 0), which still follows.
                    let p = self.procs.entry(pid).or_default();
                    p.comm = None;
                    p.name = None;
                    self.resume(pid, 0);
                }
                PTRACE_EVENT_FORK | PTRACE_EVENT_VFORK | PTRACE_EVENT_CLONE => {
                    let mut child: libc::c_ulong = 0;
                    ptrace(
                        libc::PTRACE_GETEVENTMSG,
                        pid,
                        0,
                        &mut child as *mut _ as usize,
                    );
                    self.procs.entry(child as i32).or_default();
                    self.log.peak_tasks = self.log.peak_tasks.max(self.procs.len());
                    self.resume(pid, 0);
                }
                PTRACE_EVENT_STOP => {
                    let p = self.procs.entry(pid).or_default();
                    if !p.started {
                        p.started = true;
                        ptrace(libc::PTRACE_CONT, pid, 0, 0);
                    } else if matches!(
                        sig,
                        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                    ) {
                        // A group stop: stay stopped, but keep reporting.
                        ptrace(libc::PTRACE_LISTEN, pid, 0, 0);
                    } else {
                        self.resume(pid, 0);
                    }
                }
                0 => {
                    // Signal-delivery stop: pass the signal on.
                    self.procs.entry(pid).or_default().started = true;
                    self.resume(pid, sig);
                }
                _ => self.resume(pid, 0),
            }
        }
    }

    fn resume(&mut self, pid: i32, sig: i32) {
        let in_call = self.procs.get(&pid).is_some_and(Proc::in_call);
        let req = if in_call {
            libc::PTRACE_SYSCALL
        } else {
            libc::PTRACE_CONT
        };
        ptrace(req, pid, 0, sig as usize);
    }

    fn on_syscall_exit(&mut self, pid: i32) {
        let pend = self.procs.get_mut(&pid).and_then(|p| p.pending.take());
        let op = self.procs.get_mut(&pid).and_then(|p| p.op.take());
        let ret = if pend.is_some() || op.is_some() {
            regs(pid).map(|r| r.ret)
        } else {
            None
        };
        if let Some(mut op) = op {
            op.errno = match ret {
                Some(r) if r < 0 => (-r) as i32,
                _ => 0,
            };
            self.log.ops.insert(op);
        }
        if let Some(pend) = pend {
            let comm = self.procs.get_mut(&pid).and_then(|p| p.comm.take());
            self.finish(pid, pend, ret, comm);
        }
        ptrace(libc::PTRACE_CONT, pid, 0, 0);
    }

    fn finish(&mut self, pid: i32, pend: Pending, ret: Option<i64>, comm: Option<String>) {
        let result = match ret {
            None => Outcome1::Unknown,
            Some(r) if r >= 0 => Outcome1::Ok,
            Some(r) if r == -(libc::ENOENT as i64) || r == -(libc::ENOTDIR as i64) => {
                Outcome1::NotFound
            }
            Some(_) => Outcome1::Failed,
        };
        let mut comm_cache = comm;
        for (i, (path, mut kinds)) in pend.items.into_iter().enumerate() {
            if pend.creates && result == Outcome1::Ok {
                kinds.push(Kind::Create);
            }
            // rename: the source is looked up before anything else can fail.
            let r = if pend.delete_first && i == 0 && result == Outcome1::NotFound {
                Outcome1::NotFound
            } else {
                result
            };
            let mut comm = || comm_cache.get_or_insert_with(|| read_comm(pid)).clone();
            self.rec
                .record(path, &kinds, r, pid as u32, &mut comm, Source::Ptrace);
        }
        if let Some(c) = comm_cache {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.comm = Some(c);
            }
        }
    }

    /// The syscall log's part of a seccomp stop; false when the call was denied (skipped).
    fn log_call(&mut self, pid: i32, r: &Regs) -> bool {
        let phase = self.phase.load(Ordering::Relaxed);
        let p = self.procs.entry(pid).or_default();
        let comm = p.name.get_or_insert_with(|| read_comm(pid)).clone();
        if let SyscallMode::Enforce { allow, enosys } = &self.mode {
            if !allow.contains(&r.nr) {
                let errno = if enosys.contains(&r.nr) {
                    libc::ENOSYS
                } else {
                    libc::EPERM
                };
                deny(pid, errno);
                self.log.denied.insert(Denial {
                    nr: r.nr,
                    phase,
                    comm,
                    errno,
                });
                return false;
            }
        }
        let seen = self.log.calls.entry(r.nr).or_default();
        if seen.len() < 16 {
            seen.insert((phase, comm.clone()));
        }
        if let Some(kind) = op_kind(r.nr) {
            if let Some((what, arg, cap)) =
                kind.describe(&r.args, |addr, buf| read_mem(pid, addr, buf))
            {
                p.op = Some(Op {
                    nr: r.nr,
                    what,
                    arg,
                    cap,
                    phase,
                    comm,
                    errno: 0,
                });
            }
        }
        true
    }

    fn on_seccomp(&mut self, pid: i32) {
        let Some(r) = regs(pid) else { return };
        if self.mode != SyscallMode::Off && !self.log_call(pid, &r) {
            return;
        }
        let Some(sc) = self.table.get(&r.nr).copied() else {
            return;
        };
        let mut items = Vec::new();
        let mut extra: Vec<Kind> = Vec::new();
        let mut creates = false;
        let mut flags: Option<i64> = None;
        match sc.special {
            Special::OpenFlags(i) => flags = Some(r.args[i as usize] as i64),
            Special::OpenHow(i) => {
                let mut b = [0u8; 8];
                if read_mem(pid, r.args[i as usize], &mut b) {
                    flags = Some(u64::from_ne_bytes(b) as i64);
                }
            }
            // With AT_EMPTY_PATH and "" the call is about the fd itself: the empty path is
            // skipped below.
            Special::EmptyPathFlags(_) | Special::None => {}
        }
        if let Some(f) = flags {
            extra = open_kinds(f);
        }
        for a in sc.args {
            let ptr = r.args[a.path as usize];
            if ptr == 0 {
                continue;
            }
            let Some(raw) = read_string(pid, ptr) else {
                continue;
            };
            if raw.is_empty() {
                continue;
            }
            let abs = if raw.starts_with(b"/") {
                normalize_abs(&raw)
            } else {
                let dirfd = a
                    .dirfd
                    .map_or(libc::AT_FDCWD, |d| r.args[d as usize] as i32);
                let base = if dirfd == libc::AT_FDCWD {
                    readlink(&format!("/proc/{pid}/cwd"))
                } else {
                    readlink(&format!("/proc/{pid}/fd/{dirfd}"))
                };
                let Some(mut base) = base else { continue };
                base.push(b'/');
                base.extend_from_slice(&raw);
                normalize_abs(&base)
            };
            let kinds = if flags.is_some() {
                let f = flags.unwrap_or(0) as libc::c_int;
                if f & libc::O_CREAT != 0 && !exists_in(pid, &abs) {
                    creates = true;
                }
                extra.clone()
            } else {
                vec![a.kind]
            };
            items.push((abs, kinds));
        }
        if items.is_empty() {
            return;
        }
        let p = self.procs.entry(pid).or_default();
        p.pending = Some(Pending {
            items,
            creates,
            delete_first: sc.name.starts_with("SYS_rename"),
        });
    }
}

struct Regs {
    nr: i64,
    args: [u64; 6],
    ret: i64,
}

#[cfg(target_arch = "x86_64")]
fn regs(pid: i32) -> Option<Regs> {
    // SAFETY: an all-zero register block is a valid value to be overwritten.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    if ptrace(
        libc::PTRACE_GETREGS,
        pid,
        0,
        &mut r as *mut libc::user_regs_struct as usize,
    ) < 0
    {
        return None;
    }
    Some(Regs {
        nr: r.orig_rax as i64,
        args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9],
        ret: r.rax as i64,
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn regs(_pid: i32) -> Option<Regs> {
    None
}

/// Skips the call the tracee is stopped in (seccomp stop) and makes it return `-errno`, as a
/// seccomp `SCMP_ACT_ERRNO` rule would.
#[cfg(target_arch = "x86_64")]
fn deny(pid: i32, errno: i32) {
    // SAFETY: an all-zero register block is a valid value to be overwritten.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    if ptrace(
        libc::PTRACE_GETREGS,
        pid,
        0,
        &mut r as *mut libc::user_regs_struct as usize,
    ) < 0
    {
        return;
    }
    // At a seccomp stop, syscall number -1 skips the call and rax is its result.
    r.orig_rax = u64::MAX;
    r.rax = (-(errno as i64)) as u64;
    ptrace(
        libc::PTRACE_SETREGS,
        pid,
        0,
        &r as *const libc::user_regs_struct as usize,
    );
}

#[cfg(not(target_arch = "x86_64"))]
fn deny(_pid: i32, _errno: i32) {}

/// Whether recording system calls works on this architecture.
pub fn supported() -> bool {
    cfg!(target_arch = "x86_64")
}

fn read_mem(pid: i32, addr: u64, buf: &mut [u8]) -> bool {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which we own; the remote side is only read by the
    // kernel, which checks it.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    n == buf.len() as isize
}

/// A NUL-terminated string from the tracee, read page by page (a string may end just before
/// an unmapped page).
fn read_string(pid: i32, mut addr: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    while out.len() < 4096 {
        let to_page_end = 4096 - (addr % 4096) as usize;
        let mut buf = vec![0u8; to_page_end.min(4096 - out.len()).max(1)];
        if !read_mem(pid, addr, &mut buf) {
            return None;
        }
        if let Some(i) = buf.iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..i]);
            return Some(out);
        }
        addr += buf.len() as u64;
        out.extend_from_slice(&buf);
    }
    Some(out)
}

fn readlink(p: &str) -> Option<Vec<u8>> {
    std::fs::read_link(p)
        .ok()
        .map(|p| p.into_os_string().into_encoded_bytes())
}

/// Whether `abs` (a sandbox path) exists, looked up through the tracee's root.
fn exists_in(pid: i32, abs: &[u8]) -> bool {
    let mut p = format!("/proc/{pid}/root").into_bytes();
    p.extend_from_slice(abs);
    let Ok(c) = CString::new(p) else { return true };
    // SAFETY: an all-zero stat is valid to be overwritten; `c` is a valid C string.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::lstat(c.as_ptr(), &mut st) == 0 }
}

pub fn read_comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}
