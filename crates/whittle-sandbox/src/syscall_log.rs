//! Every system call of every traced process, for least-privilege run settings.
//!
//! When a run records system calls ([`SyscallMode::Record`]), the seccomp filter makes *every*
//! call of the app and its children stop for the tracer (not only the file-related ones), and
//! the tracer notes the call number with the process name and the phase of the run it came in
//! (start-up, probe N, stop). A few calls that need a capability are also caught at their exit
//! with their arguments and result ([`Op`]): that is the evidence for capabilities, users and
//! ports. [`SyscallMode::Enforce`] replays an allowlist instead: a call outside it fails the way
//! a seccomp `SCMP_ACT_ERRNO` rule makes it fail, and the tracer says which call, which process
//! and which phase — the denial attribution of `whittle harden`'s proof.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// The phase before the first probe (start-up).
pub const PHASE_START: u32 = 0;
/// The phase after the probes: the stop signal and the way out.
pub const PHASE_STOP: u32 = u32::MAX;

/// The phase probe `i` (0-based) runs in.
pub fn probe_phase(i: usize) -> u32 {
    i as u32 + 1
}

/// What the tracer does with system calls beyond file paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SyscallMode {
    /// Only file-related calls stop the tracee (the default, fastest).
    #[default]
    Off,
    /// Every call stops and is recorded.
    Record,
    /// Every call stops; those not in `allow` fail with EPERM (ENOSYS for `enosys`), and are
    /// reported as denied.
    Enforce {
        allow: BTreeSet<i64>,
        enosys: BTreeSet<i64>,
    },
}

/// A call refused under [`SyscallMode::Enforce`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Denial {
    pub nr: i64,
    pub phase: u32,
    pub comm: String,
    pub errno: i32,
}

/// A capability-relevant call, caught with its arguments and result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Op {
    pub nr: i64,
    /// `setuid 33`, `bind port 80`, `raw socket`, `chown`, …
    pub what: String,
    /// The uid, gid or port the call names, when it names one.
    pub arg: Option<u64>,
    /// The capability the call needs for this argument (`CAP_NET_BIND_SERVICE` for a port
    /// below 1024, …); None when it needs none (a high port).
    pub cap: Option<&'static str>,
    pub phase: u32,
    pub comm: String,
    /// 0 when it succeeded, else the errno.
    pub errno: i32,
}

/// What a run recorded about system calls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyscallLog {
    /// Call number → (phase, process name) it was seen in.
    pub calls: BTreeMap<i64, BTreeSet<(u32, String)>>,
    pub denied: BTreeSet<Denial>,
    pub ops: BTreeSet<Op>,
    /// The most processes and threads traced at once.
    pub peak_tasks: usize,
}

/// The capability an op needs, if any (Linux `capabilities(7)`).
pub fn op_kind(nr: i64) -> Option<OpKind> {
    let k = match nr {
        libc::SYS_setuid | libc::SYS_setreuid | libc::SYS_setresuid | libc::SYS_setfsuid => {
            OpKind::SetUid
        }
        libc::SYS_setgid | libc::SYS_setregid | libc::SYS_setresgid | libc::SYS_setfsgid => {
            OpKind::SetGid
        }
        libc::SYS_setgroups => OpKind::Plain("setgroups", "CAP_SETGID"),
        libc::SYS_bind => OpKind::Bind,
        libc::SYS_socket => OpKind::Socket,
        libc::SYS_fchown | libc::SYS_fchownat => OpKind::Chown,
        libc::SYS_chroot => OpKind::Plain("chroot", "CAP_SYS_CHROOT"),
        libc::SYS_mount | libc::SYS_umount2 => OpKind::Plain("mount", "CAP_SYS_ADMIN"),
        libc::SYS_ptrace => OpKind::Plain("ptrace", "CAP_SYS_PTRACE"),
        libc::SYS_mknodat => OpKind::Plain("mknod", "CAP_MKNOD"),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chown | libc::SYS_lchown => OpKind::Chown,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_mknod => OpKind::Plain("mknod", "CAP_MKNOD"),
        _ => return None,
    };
    Some(k)
}

/// Kinds of capability-relevant calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    SetUid,
    SetGid,
    Bind,
    Socket,
    Chown,
    Plain(&'static str, &'static str),
}

impl OpKind {
    /// Describes the call from its arguments (`mem` reads the tracee's memory); None when
    /// this call needs no capability (a plain TCP socket).
    pub fn describe(
        self,
        args: &[u64; 6],
        mem: impl Fn(u64, &mut [u8]) -> bool,
    ) -> Option<(String, Option<u64>, Option<&'static str>)> {
        match self {
            OpKind::SetUid | OpKind::SetGid => {
                // The first id that is not -1 (setre*/setres* leave -1 unchanged).
                let id = args[..3]
                    .iter()
                    .map(|a| *a as u32)
                    .find(|&a| a != u32::MAX)
                    .map(u64::from);
                let (name, cap) = if self == OpKind::SetUid {
                    ("setuid", "CAP_SETUID")
                } else {
                    ("setgid", "CAP_SETGID")
                };
                Some((
                    format!("{name} {}", id.map_or("-".into(), |i| i.to_string())),
                    id,
                    Some(cap),
                ))
            }
            OpKind::Bind => {
                let mut sa = [0u8; 4];
                if !mem(args[1], &mut sa) {
                    return None;
                }
                let family = u16::from_ne_bytes([sa[0], sa[1]]) as i32;
                if family != libc::AF_INET && family != libc::AF_INET6 {
                    return None;
                }
                let port = u16::from_be_bytes([sa[2], sa[3]]);
                let cap = (port != 0 && port < 1024).then_some("CAP_NET_BIND_SERVICE");
                Some((format!("bind port {port}"), Some(port.into()), cap))
            }
            OpKind::Socket => {
                let (domain, ty) = (args[0] as i32, args[1] as i32 & 0xf);
                (ty == libc::SOCK_RAW || domain == libc::AF_PACKET)
                    .then(|| ("raw socket".to_string(), None, Some("CAP_NET_RAW")))
            }
            OpKind::Chown => Some(("chown".into(), None, Some("CAP_CHOWN"))),
            OpKind::Plain(what, cap) => Some((what.into(), None, Some(cap))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_ops_from_arguments() {
        let none = |_: u64, _: &mut [u8]| false;
        let (w, a, c) = OpKind::SetUid
            .describe(&[u32::MAX as u64, 33, u32::MAX as u64, 0, 0, 0], none)
            .unwrap();
        assert_eq!(
            (w.as_str(), a, c),
            ("setuid 33", Some(33), Some("CAP_SETUID"))
        );
        let sa = |port: u16| {
            move |_: u64, b: &mut [u8]| {
                b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                b[2..4].copy_from_slice(&port.to_be_bytes());
                true
            }
        };
        let (w, _, c) = OpKind::Bind.describe(&[3, 1, 16, 0, 0, 0], sa(80)).unwrap();
        assert_eq!(
            (w.as_str(), c),
            ("bind port 80", Some("CAP_NET_BIND_SERVICE"))
        );
        let (_, _, c) = OpKind::Bind
            .describe(&[3, 1, 16, 0, 0, 0], sa(8080))
            .unwrap();
        assert_eq!(c, None);
        let tcp = [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0];
        assert!(OpKind::Socket.describe(&tcp, none).is_none());
        let raw = [libc::AF_INET as u64, libc::SOCK_RAW as u64, 1, 0, 0, 0];
        assert_eq!(
            OpKind::Socket.describe(&raw, none).unwrap().2,
            Some("CAP_NET_RAW")
        );
    }
}
