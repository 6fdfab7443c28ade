//! The sandbox's processes: an outer process that makes the namespaces, and the sandbox's
//! pid 1, which builds the root file system and then starts programs on command.
//!
//! whittle forks twice: the first child `unshare`s the mount, pid, uts, ipc and network
//! namespaces, and its child is pid 1 of the new pid namespace ("init"). Plain `fork` (not a
//! raw `clone`) is used so that glibc's fork handlers leave the allocator usable in the
//! children of a multi-threaded process. Init talks to the controller over two pipes, one JSON
//! message a line: commands in ([`Command`]), events out ([`Event`]). When init dies, the
//! kernel kills every process of the namespace, and with its last process the mount
//! namespace (and every mount made in it) is gone: that is the cleanup of last resort.

use std::ffi::{CStr, CString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, RawFd};

use serde::{Deserialize, Serialize};

use crate::mounts::{setup_root, RootPlan};
use whittle_kernel::Real;

/// Controller → init.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Spawn(SpawnSpec),
    /// Send `sig` to the process started as `id`.
    Signal {
        id: u32,
        sig: i32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnSpec {
    pub id: u32,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Install the seccomp filter that stops file-related calls for the tracer.
    pub trace: bool,
    /// Capture files, created in the run directory.
    pub stdout: String,
    pub stderr: String,
}

/// Init → controller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Event {
    Ready,
    SetupFailed {
        step: String,
        errno: i32,
    },
    Spawned {
        id: u32,
        pid: i32,
    },
    ExecFailed {
        id: u32,
        stage: Stage,
        errno: i32,
    },
    /// Raw wait status.
    Exited {
        id: u32,
        status: i32,
    },
}

/// Where starting a program failed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Stage {
    Chdir,
    /// Not found in `$PATH`.
    Lookup,
    Exec,
    /// Credentials, capabilities or the seccomp filter.
    Privileges,
}

impl Stage {
    fn code(self) -> u32 {
        self as u32
    }
    fn from_code(c: u32) -> Stage {
        match c {
            0 => Stage::Chdir,
            1 => Stage::Lookup,
            2 => Stage::Exec,
            _ => Stage::Privileges,
        }
    }
}

/// Everything the forked processes need, prepared before forking.
#[derive(Debug)]
pub struct Launch {
    pub plan: RootPlan,
    pub ctl_read: RawFd,
    pub events_write: RawFd,
    pub pid_write: RawFd,
    /// Host directory for capture files (opened before the pivot).
    pub run_dir: CString,
    pub last_cap: u32,
    /// The capabilities programs get (bounding set; also effective/permitted for root).
    pub caps: u64,
    pub seccomp: Vec<libc::sock_filter>,
    pub ns_flags: libc::c_int,
}

/// Namespaces of a sandbox.
pub const NS_FLAGS: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET;

fn write_all(fd: RawFd, b: &[u8]) {
    let mut off = 0;
    while off < b.len() {
        // SAFETY: the slice is valid for its length.
        let n = unsafe { libc::write(fd, b[off..].as_ptr().cast(), b.len() - off) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        off += n as usize;
    }
}

fn send(fd: RawFd, e: &Event) {
    let mut line = serde_json::to_vec(e).unwrap_or_default();
    line.push(b'\n');
    write_all(fd, &line);
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit never returns and runs no atexit handlers (we are a forked copy).
    unsafe { libc::_exit(code) }
}

/// Moves `fds` to 3, 4, … in order and closes every other fd from 3 up.
fn keep_fds(fds: &[RawFd]) {
    // First above everything, so the moves cannot clobber each other.
    let mut high = Vec::new();
    for &fd in fds {
        // SAFETY: dup of an fd we hold; failure is checked.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD, 100) };
        high.push(h);
    }
    for (i, h) in high.iter().enumerate() {
        // SAFETY: dup2 onto a low fd number, closing whatever was there.
        unsafe { libc::dup2(*h, 3 + i as RawFd) };
    }
    let first_free = 3 + fds.len() as libc::c_uint;
    // SAFETY: close_range with plain integer arguments.
    unsafe { libc::syscall(libc::SYS_close_range, first_free, libc::c_uint::MAX, 0) };
}

/// Forks the outer process; returns its pid. Must be called on the thread that will wait for
/// it (the tracer thread).
pub fn launch(l: &Launch) -> std::io::Result<i32> {
    // SAFETY: fork in a multi-threaded process: the child only uses async-signal-safe calls
    // plus the allocator (made fork-safe by glibc's fork handlers) and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(pid);
    }
    // Outer process.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // SAFETY: unshare with namespace flags.
    if unsafe { libc::unshare(l.ns_flags) } != 0 {
        send(
            l.events_write,
            &Event::SetupFailed {
                step: "unshare namespaces".into(),
                errno: errno(),
            },
        );
        exit(1);
    }
    // SAFETY: as for the first fork.
    let init = unsafe { libc::fork() };
    if init < 0 {
        send(
            l.events_write,
            &Event::SetupFailed {
                step: "fork init".into(),
                errno: errno(),
            },
        );
        exit(1);
    }
    if init == 0 {
        init_main(l);
    }
    write_all(l.pid_write, &init.to_ne_bytes());
    keep_fds(&[]);
    let mut st = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(init, &mut st, 0) } < 0 && errno() == libc::EINTR {}
    exit(0)
}

fn init_main(l: &Launch) -> ! {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // SAFETY: valid C string; the fd is kept for the life of init.
    let run_dir = unsafe {
        libc::open(
            l.run_dir.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    let null = {
        // SAFETY: valid C string.
        unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) }
    };
    for std in 0..3 {
        // SAFETY: dup2 of an open fd onto stdio.
        unsafe { libc::dup2(null, std) };
    }
    keep_fds(&[l.ctl_read, l.events_write, run_dir]);
    const CTL: RawFd = 3;
    const EV: RawFd = 4;
    const RUN: RawFd = 5;

    if let Err(e) = setup_root(&Real, &l.plan) {
        send(
            EV,
            &Event::SetupFailed {
                step: e.step.into(),
                errno: e.errno,
            },
        );
        exit(1);
    }
    // SIGCHLD through a signalfd, so one poll covers commands and children.
    // SAFETY: sigset manipulation on a local set.
    let sfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    send(EV, &Event::Ready);

    // SAFETY: fd 3 is the command pipe, owned by init from here on.
    let ctl = unsafe { std::fs::File::from_raw_fd(CTL) };
    let mut ctl = BufReader::new(ctl);
    let mut children: Vec<(u32, i32)> = Vec::new();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: CTL,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Data may already sit in the reader's buffer.
        let buffered = !ctl.buffer().is_empty();
        if !buffered {
            // SAFETY: two valid pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                continue;
            }
        }
        if fds[1].revents != 0 {
            let mut buf = [0u8; 128];
            // SAFETY: draining the signalfd into a local buffer.
            while unsafe { libc::read(sfd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
            loop {
                let mut st = 0;
                // SAFETY: reaping any child.
                let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if let Some(i) = children.iter().position(|(_, p)| *p == pid) {
                    let (id, _) = children.remove(i);
                    send(EV, &Event::Exited { id, status: st });
                }
            }
        }
        if buffered || fds[0].revents != 0 {
            let mut line = String::new();
            match ctl.read_line(&mut line) {
                Ok(0) | Err(_) => exit(0),
                Ok(_) => {}
            }
            match serde_json::from_str::<Command>(&line) {
                Ok(Command::Spawn(s)) => match spawn(&s, RUN, l) {
                    Ok(pid) => {
                        children.push((s.id, pid));
                        send(EV, &Event::Spawned { id: s.id, pid });
                    }
                    Err((stage, errno)) => send(
                        EV,
                        &Event::ExecFailed {
                            id: s.id,
                            stage,
                            errno,
                        },
                    ),
                },
                Ok(Command::Signal { id, sig }) => {
                    if let Some((_, pid)) = children.iter().find(|(i, _)| *i == id) {
                        // SAFETY: kill with integer arguments.
                        unsafe { libc::kill(*pid, sig) };
                    }
                }
                Err(_) => {}
            }
        }
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "")).expect("NULs removed")
}

/// Starts one program; returns its pid (in the sandbox) once exec succeeded.
fn spawn(s: &SpawnSpec, run_dir: RawFd, l: &Launch) -> Result<i32, (Stage, i32)> {
    let argv: Vec<CString> = s.argv.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = s.env.iter().map(|a| cstr(a)).collect();
    let path_var = s
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::spec::DEFAULT_PATH)
        .to_string();
    let out = cstr(&s.stdout);
    let err = cstr(&s.stderr);
    let cwd = cstr(&s.cwd);
    let mut pipe = [0; 2];
    // SAFETY: a two-element array for pipe2.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err((Stage::Privileges, errno()));
    }
    // SAFETY: see `launch`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err((Stage::Privileges, errno()));
    }
    if pid == 0 {
        // Status pipe to 3, run directory to 4, everything else (the read end too) closed.
        keep_fds(&[pipe[1], run_dir]);
        let (stage, e) = child(s, &argv, &env, &path_var, &out, &err, &cwd, 4, l);
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&stage.code().to_ne_bytes());
        msg[4..].copy_from_slice(&e.to_ne_bytes());
        write_all(3, &msg);
        exit(match (stage, e) {
            (Stage::Lookup, _) | (Stage::Exec, libc::ENOENT) => 127,
            (Stage::Chdir, _) => 128,
            _ => 126,
        });
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(pipe[1]) };
    // SAFETY: pipe[0] is ours.
    let mut r = unsafe { std::fs::File::from_raw_fd(pipe[0]) };
    let mut msg = Vec::new();
    let _ = r.read_to_end(&mut msg);
    if msg.len() == 8 {
        let stage = u32::from_ne_bytes(msg[..4].try_into().expect("4 bytes"));
        let e = i32::from_ne_bytes(msg[4..].try_into().expect("4 bytes"));
        return Err((Stage::from_code(stage), e));
    }
    Ok(pid)
}

/// In the forked child: set up and exec; returns only on failure.
#[allow(clippy::too_many_arguments)]
fn child(
    s: &SpawnSpec,
    argv: &[CString],
    env: &[CString],
    path_var: &str,
    out: &CStr,
    err: &CStr,
    cwd: &CStr,
    run_dir: RawFd,
    l: &Launch,
) -> (Stage, i32) {
    // SAFETY: process-attribute calls with valid arguments; this is a fresh child.
    unsafe {
        libc::setsid();
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // Rust ignores SIGPIPE; an exec keeps "ignored", so restore the default.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let fd_in = {
        // SAFETY: valid C string.
        unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) }
    };
    let open_cap = |name: &CStr| {
        // SAFETY: valid fd and C string.
        unsafe {
            libc::openat(
                run_dir,
                name.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND,
                0o644,
            )
        }
    };
    let fd_out = open_cap(out);
    let fd_err = open_cap(err);
    if fd_in < 0 || fd_out < 0 || fd_err < 0 {
        return (Stage::Privileges, errno());
    }
    // SAFETY: dup2 onto stdio of fds we just opened.
    unsafe {
        libc::dup2(fd_in, 0);
        libc::dup2(fd_out, 1);
        libc::dup2(fd_err, 2);
    }
    // Keep stdio and the status pipe (3); close the run directory and the originals.
    // SAFETY: close_range with plain integer arguments; marking the pipe close-on-exec.
    unsafe {
        libc::syscall(libc::SYS_close_range, 4, libc::c_uint::MAX, 0);
        libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC);
    }

    // The working directory is created if missing, as engines do.
    mkdir_p(cwd.to_bytes());
    // SAFETY: valid C string.
    if unsafe { libc::chdir(cwd.as_ptr()) } != 0 {
        return (Stage::Chdir, errno());
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return (Stage::Privileges, errno());
    }
    let mask = l.caps;
    if let Err(e) = crate::caps::drop_bounding(mask, l.last_cap) {
        return (Stage::Privileges, e);
    }
    let groups: Vec<libc::gid_t> = s.groups.clone();
    // SAFETY: credential calls with valid arguments.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setresgid(s.gid, s.gid, s.gid) != 0
            || libc::setresuid(s.uid, s.uid, s.uid) != 0
        {
            return (Stage::Privileges, errno());
        }
    }
    if s.uid == 0 {
        if let Err(e) = crate::caps::set_caps(mask) {
            return (Stage::Privileges, e);
        }
    }
    let exe = match lookup(&s.argv[0], path_var) {
        Ok(p) => p,
        Err(e) => return (Stage::Lookup, e),
    };
    if s.trace {
        if let Err(e) = crate::seccomp::install(&l.seccomp) {
            return (Stage::Privileges, e);
        }
    }
    let mut argp: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(exe.as_ptr(), argp.as_ptr(), envp.as_ptr()) };
    (Stage::Exec, errno())
}

fn mkdir_p(p: &[u8]) {
    let mut cur = Vec::new();
    for c in p.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        cur.push(b'/');
        cur.extend_from_slice(c);
        if let Ok(cs) = CString::new(cur.clone()) {
            // SAFETY: valid C string; EEXIST is fine.
            unsafe { libc::mkdir(cs.as_ptr(), 0o755) };
        }
    }
}

/// `$PATH` lookup the way runc (Go's exec.LookPath) does it: a name with a slash is used
/// as is; otherwise the first regular file with an execute bit in a `$PATH` directory.
fn lookup(name: &str, path_var: &str) -> Result<CString, i32> {
    if name.contains('/') {
        return Ok(cstr(name));
    }
    if name.is_empty() {
        return Err(libc::ENOENT);
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = cstr(&format!("{dir}/{name}"));
        // SAFETY: zeroed stat is valid to overwrite; valid C string.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::stat(cand.as_ptr(), &mut st) } == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && st.st_mode & 0o111 != 0
        {
            return Ok(cand);
        }
    }
    Err(libc::ENOENT)
}

/// Reads events from init, line by line, into a channel.
pub fn event_reader(fd: RawFd, tx: std::sync::mpsc::Sender<Event>) {
    // SAFETY: the controller hands over ownership of the read end.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    for line in BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        if let Ok(e) = serde_json::from_str::<Event>(&line) {
            if tx.send(e).is_err() {
                break;
            }
        }
    }
}

/// Writes one command to init.
pub fn send_command(w: &mut impl Write, c: &Command) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(c).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}
