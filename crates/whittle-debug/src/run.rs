//! Running a [`Plan`]: two forks, errors carried back over a close-on-exec pipe.
//!
//! whittle forks a child that builds the mount namespace and joins the target's namespaces,
//! and that child forks the command (the first process that is really inside the target's
//! pid namespace). Both children die with their parent (`PR_SET_PDEATHSIG`), so killing the
//! session leaves no process behind in the target. Ctrl-C is the command's: whittle and the
//! middle child ignore SIGINT and SIGQUIT while they wait, as `docker exec` does.

use std::io::Read;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;

use crate::session::{enter, prepare, Plan};
use crate::{Error, Result};
use whittle_kernel::Real;

/// Exit code of a session whose setup failed before the command ran.
const SETUP_FAILED: i32 = 125;
/// The shell's codes (and `docker exec`'s) for a command that cannot be run / is not found.
const CANNOT_RUN: i32 = 126;
const NOT_FOUND: i32 = 127;

/// Runs the plan's command in the session; returns its exit code (128 + signal when killed).
pub fn run(plan: &Plan) -> Result<i32> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::sys("pipe2", errno()));
    }
    let [r, w] = fds;
    ignore_interrupts(true);
    // SAFETY: the child only runs the setup below and exits with _exit; the caller drops its
    // async runtime before calling, so no other thread holds a lock the child could need.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork", errno()));
    }
    if pid == 0 {
        // SAFETY: `r` is this process's copy of the read end, unused here.
        unsafe { libc::close(r) };
        middle(plan, w);
    }
    // SAFETY: `w` is ours; the children hold their own copies.
    unsafe { libc::close(w) };
    // SAFETY: `r` is an open descriptor that nothing else owns.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(r) };
    let mut msg = String::new();
    let _ = pipe.read_to_string(&mut msg);
    let code = wait(pid);
    ignore_interrupts(false);
    if msg.is_empty() {
        return Ok(code);
    }
    // The child's report is "CODE MESSAGE": 126/127 when exec failed, 125 for the setup.
    match msg.split_once(' ').map(|(c, m)| (c.parse::<i32>(), m)) {
        Some((Ok(c @ (CANNOT_RUN | NOT_FOUND)), m)) => Err(Error::Command {
            code: c,
            message: m.to_string(),
        }),
        Some((Ok(_), m)) => Err(Error::Session(m.to_string())),
        _ => Err(Error::Session(msg)),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn ignore_interrupts(on: bool) {
    let h = if on { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: installing SIG_IGN or SIG_DFL needs no handler code.
    unsafe {
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGQUIT, h);
    }
}

/// Dies with the parent; checks that the parent did not already go before the call.
fn die_with_parent(parent: libc::pid_t) {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; getppid cannot fail.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(SETUP_FAILED);
        }
    }
}

fn fail(w: RawFd, e: &Error) -> ! {
    fail_with(w, e, SETUP_FAILED)
}

fn fail_with(w: RawFd, e: &Error, code: i32) -> ! {
    let m = format!("{code} {e}");
    // SAFETY: writing a live buffer to our pipe end, then leaving without running destructors
    // that belong to the parent's state.
    unsafe {
        libc::write(w, m.as_ptr().cast(), m.len());
        libc::_exit(code)
    }
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut st = 0;
    loop {
        // SAFETY: waiting for our own child into a live status word.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            break;
        }
        if r < 0 && errno() != libc::EINTR {
            return SETUP_FAILED;
        }
    }
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else if libc::WIFSIGNALED(st) {
        128 + libc::WTERMSIG(st)
    } else {
        SETUP_FAILED
    }
}

fn middle(plan: &Plan, w: RawFd) -> ! {
    // SAFETY: getppid has no preconditions.
    die_with_parent(unsafe { libc::getppid() });
    if let Err(e) = prepare(&Real, plan) {
        fail(w, &e);
    }
    // The command's parent is outside its pid namespace (the target's, or a fresh one):
    // getppid answers 0 there while the parent lives, and the reaper's pid once it is gone.
    let me = 0;
    // SAFETY: the grandchild execs or exits; nothing in between takes locks of other threads.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail(w, &Error::sys("fork (into the pid namespace)", errno()));
    }
    if pid == 0 {
        command(plan, w, me);
    }
    // SAFETY: our copy of the write end; the command holds its own until exec.
    unsafe { libc::close(w) };
    let code = wait(pid);
    // SAFETY: leaving the forked child without unwinding into the parent's frames.
    unsafe { libc::_exit(code) }
}

fn command(plan: &Plan, w: RawFd, parent: libc::pid_t) -> ! {
    die_with_parent(parent);
    if let Err(e) = enter(&Real, plan) {
        fail(w, &e);
    }
    if let Some(id) = &plan.identity {
        let groups: Vec<libc::gid_t> = id.groups.clone();
        // SAFETY: the group list and its length belong together; the id calls take integers.
        let r = unsafe {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                Err(("setgroups", errno()))
            } else if libc::setresgid(id.gid, id.gid, id.gid) != 0 {
                Err(("setresgid", errno()))
            } else if libc::setresuid(id.uid, id.uid, id.uid) != 0 {
                Err(("setresuid", errno()))
            } else {
                Ok(())
            }
        };
        if let Err((call, e)) = r {
            fail(w, &Error::sys(format!("{call}(the target's identity)"), e));
        }
        // A change of uid clears the parent-death signal: set it again.
        die_with_parent(parent);
    }
    // SAFETY: back to the default dispositions the command expects.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
    }
    let Some((prog, args)) = plan.command.split_first() else {
        fail(w, &Error::Session("no command to run".into()));
    };
    let e = std::process::Command::new(prog)
        .args(args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .exec();
    let (why, code) = if e.kind() == std::io::ErrorKind::NotFound {
        ("not found in the toolbox (PATH of the session)", NOT_FOUND)
    } else {
        ("cannot be run", CANNOT_RUN)
    };
    fail_with(w, &Error::Session(format!("{prog}: {why}: {e}")), code)
}
