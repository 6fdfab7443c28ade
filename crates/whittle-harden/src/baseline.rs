//! The system calls the container runtime itself makes after it installed the filter.
//!
//! A profile learned from the app alone breaks in the runtime (moby#22252, #24661): runc
//! installs the filter in its own init process and then still runs Go code before `execve`
//! replaces it with the app. Which calls those are depends on where runc installs the filter:
//!
//! - runc ≥ 1.0 with `no-new-privileges` (whittle always sets it): as late as possible, just
//!   before `execve` (`libcontainer/standard_init_linux.go` and `setns_init_linux.go`, "Set
//!   seccomp as close to execve as possible"). After it, only the Go runtime on that thread
//!   (scheduler, signals, memory) and `execve` itself run.
//! - Older runc, or without `no-new-privileges`: before the capabilities and credentials are
//!   set, so `capset`, `setgroups`, `setres[ug]id`, `prctl` and friends follow.
//!
//! Debian's runc 1.1.5+ds1-1+deb12u1 (and upstream from 1.1.12) also marks every inherited fd
//! close-on-exec after the filter (the CVE-2024-21626 fix, `utils.CloseExecFrom`): it opens
//! `/proc/self/fd`, checks it is procfs (`fstatfs`), lists it and `fcntl`s each fd — without
//! those the container fails with "ensure /proc/self/fd is on procfs: operation not permitted".
//!
//! The lists are the calls of those code paths (Go 1.19 runtime on linux/amd64: `futex`,
//! `nanosleep`, `sched_yield`, `rt_sig*`, `sigaltstack`, `mmap`/`munmap`/`madvise`,
//! `getpid`/`gettid`/`tgkill` for preemption signals, `epoll_pwait` for the poller), and the
//! proof under the real engine is what shows they are enough.

/// The runtime's calls for runc `version` (`1.1.5`, `1.1.5+ds1`, `v1.0.0-rc93`).
pub fn runc_calls(version: &str) -> (Vec<&'static str>, String) {
    let v = version.trim_start_matches('v');
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if major >= 1 {
        (
            [GO_RUNTIME, LATE].concat(),
            format!("runc {version}: filter installed just before execve (no-new-privileges)"),
        )
    } else {
        (
            [GO_RUNTIME, EARLY].concat(),
            format!("runc {version}: filter installed before credentials are set"),
        )
    }
}

/// The calls of Docker's `--init` (docker-init = tini 0.19, statically linked), for apps that
/// ignore their stop signal as pid 1: from `strace -f docker-init -- /bin/true` on Debian 12,
/// plus `kill` and `wait4`, with which it forwards signals and reaps.
pub const DOCKER_INIT: &[&str] = &[
    "arch_prctl",
    "brk",
    "clone",
    "execve",
    "exit_group",
    "getpgrp",
    "getpid",
    "getrandom",
    "ioctl",
    "kill",
    "mmap",
    "mprotect",
    "munmap",
    "prctl",
    "prlimit64",
    "readlink",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigtimedwait",
    "set_robust_list",
    "set_tid_address",
    "setpgid",
    "wait4",
    "write",
];

/// The Go runtime and the last steps before `execve`, common to both placements.
const GO_RUNTIME: &[&str] = &[
    "execve",
    "futex",
    "nanosleep",
    "sched_yield",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "mmap",
    "munmap",
    "madvise",
    "getpid",
    "gettid",
    "tgkill",
    "epoll_pwait",
    "epoll_ctl",
    "read",
    "write",
    "close",
    "fcntl",
    "fstat",
    "newfstatat",
    "exit",
    "exit_group",
];

/// runc ≥ 1.0, after GO_RUNTIME: the close-on-exec sweep over /proc/self/fd.
const LATE: &[&str] = &["openat", "fstatfs", "getdents64", "lseek"];

/// Older runc, after GO_RUNTIME: credentials and the working directory are set later.
const EARLY: &[&str] = &[
    "capget",
    "capset",
    "prctl",
    "setgroups",
    "setresuid",
    "setresgid",
    "getcwd",
    "chdir",
    "openat",
    "keyctl",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_by_runc_version_and_names_are_known() {
        let late = [GO_RUNTIME, LATE].concat();
        assert_eq!(runc_calls("1.1.5+ds1").0, late);
        assert_eq!(runc_calls("v1.0.0").0, late);
        assert_eq!(runc_calls("0.1.1").0, [GO_RUNTIME, EARLY].concat());
        for n in GO_RUNTIME
            .iter()
            .chain(LATE)
            .chain(EARLY)
            .chain(DOCKER_INIT)
        {
            assert!(crate::names::number(n).is_some(), "{n}");
        }
    }
}
