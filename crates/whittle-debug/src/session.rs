//! A debug session: the toolbox's root file system, the target's namespaces.
//!
//! The session never mounts anything on the target and never writes under its root. The
//! target's mount tree is *cloned* (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)` from inside the
//! target's mount namespace), sealed read-only on the copy, and attached at `/target` of a
//! private mount namespace whose root is the toolbox — so volumes and tmpfs mounts of the
//! target are there too, while a bind of `/proc/PID/root` would be refused across namespaces.
//! pid, net, ipc, uts and cgroup namespaces are joined with setns; joining a pid namespace only
//! applies to children, hence the second fork before `/proc` is mounted and the command runs.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use whittle_engine::procfs::Identity;

use whittle_kernel::{ns_name, Kernel};

use crate::sys::cpath;
use crate::{Error, Result};

/// Where the target's file system comes from.
#[derive(Debug, Clone)]
pub enum TargetRoot {
    /// A running process: its mount namespace is cloned and its namespaces joined.
    Live {
        pid: u32,
        cgroup_procs: Vec<PathBuf>,
    },
    /// A directory holding a stopped container's files (read-only view, fresh pid namespace).
    Dir(PathBuf),
}

/// Everything a session needs, decided before the fork.
#[derive(Debug, Clone)]
pub struct Plan {
    pub root: TargetRoot,
    /// The toolbox's unpacked root (with `target`, `proc`, `tmp` and `dev` directories).
    pub toolbox: PathBuf,
    /// The identity to run as: `None` is root with every capability.
    pub identity: Option<Identity>,
    pub env: Vec<(String, String)>,
    /// Working directory inside the session.
    pub cwd: PathBuf,
    pub command: Vec<String>,
    /// The session's `/tmp` is the target's own `/tmp` (writable) instead of a private tmpfs:
    /// for tools whose attach rendezvous is a file in the target's /tmp (the JVM's `jcmd`,
    /// `jstack`: `.attach_pid1` and `.java_pid1`). The only writes into the target are theirs.
    pub target_tmp: bool,
}

/// The devices a shell and the usual tools expect; bound from the host's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The namespaces joined, in order: pid last, since it only matters for the fork after it.
const JOINED: &[libc::c_int] = &[
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWPID,
];

fn ns_file(pid: u32, flag: libc::c_int) -> String {
    format!("/proc/{pid}/ns/{}", ns_name(flag))
}

fn c(p: impl AsRef<Path>) -> Result<CString> {
    cpath(p)
}

/// The first part, in the child that will fork the command: cgroups, the mount namespace and
/// the toolbox root, then setns into the target's namespaces. Runs in a single-threaded
/// process (setns into a mount namespace refuses threads that share their fs state).
pub fn prepare(k: &impl Kernel, plan: &Plan) -> Result<()> {
    let tb = &plan.toolbox;
    let mut ns_fds: Vec<(RawFd, libc::c_int)> = Vec::new();
    let mut tree = None;
    let mut tmp_tree = None;
    match &plan.root {
        TargetRoot::Live { pid, cgroup_procs } => {
            // Namespace files first: once our mount namespace changes, /proc/PID is gone.
            for &flag in JOINED {
                let f = ns_file(*pid, flag);
                let fd = k
                    .open(&c(&f)?)
                    .map_err(|e| Error::sys(format!("open {f}"), e))?;
                ns_fds.push((fd, flag));
            }
            let own = k
                .open(c"/proc/self/ns/mnt")
                .map_err(|e| Error::sys("open /proc/self/ns/mnt", e))?;
            let theirs_path = ns_file(*pid, libc::CLONE_NEWNS);
            let theirs = k
                .open(&c(&theirs_path)?)
                .map_err(|e| Error::sys(format!("open {theirs_path}"), e))?;
            for p in cgroup_procs {
                k.write_file(&c(p)?, b"0")
                    .map_err(|e| Error::sys(format!("write {}", p.display()), e))?;
            }
            k.setns(theirs, libc::CLONE_NEWNS)
                .map_err(|e| Error::sys(format!("setns(mount namespace of pid {pid})"), e))?;
            let t = k
                .clone_tree(c"/")
                .map_err(|e| Error::sys(format!("open_tree(/ of pid {pid})"), e));
            let tmp = plan.target_tmp.then(|| {
                k.clone_tree(c"/tmp")
                    .map_err(|e| Error::sys(format!("open_tree(/tmp of pid {pid})"), e))
            });
            // Back home before anything can fail: the clones are all we take from there.
            k.setns(own, libc::CLONE_NEWNS)
                .map_err(|e| Error::sys("setns(own mount namespace)", e))?;
            let t = t?;
            tmp_tree = tmp.transpose()?;
            k.seal_tree(t)
                .map_err(|e| Error::sys("mount_setattr(read-only copy of the target)", e))?;
            k.close(own);
            k.close(theirs);
            tree = Some(t);
        }
        TargetRoot::Dir(_) => {}
    }
    k.unshare(libc::CLONE_NEWNS)
        .map_err(|e| Error::sys("unshare(mount namespace)", e))?;
    // Nothing done here may propagate back to the host (or to the target).
    k.mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(|e| Error::sys("make / private", e))?;
    let tbc = c(tb)?;
    k.mount(Some(&tbc), &tbc, None, libc::MS_BIND | libc::MS_REC, None)
        .map_err(|e| Error::sys(format!("bind {}", tb.display()), e))?;
    k.mount(
        None,
        &tbc,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
        None,
    )
    .map_err(|e| Error::sys(format!("read-only {}", tb.display()), e))?;
    let at = |rel: &str| c(tb.join(rel));
    match (&plan.root, tree) {
        (TargetRoot::Live { .. }, Some(t)) => {
            k.move_mount(t, &at("target")?)
                .map_err(|e| Error::sys("move_mount(target copy → /target)", e))?;
            k.close(t);
        }
        (TargetRoot::Dir(d), _) => {
            let dc = c(d)?;
            let tc = at("target")?;
            k.mount(Some(&dc), &tc, None, libc::MS_BIND | libc::MS_REC, None)
                .map_err(|e| Error::sys(format!("bind {}", d.display()), e))?;
            k.mount(
                None,
                &tc,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                None,
            )
            .map_err(|e| Error::sys("read-only /target", e))?;
        }
        (TargetRoot::Live { .. }, None) => unreachable!("a live target always has its tree"),
    }
    match tmp_tree {
        Some(t) => {
            k.move_mount(t, &at("tmp")?)
                .map_err(|e| Error::sys("move_mount(the target's /tmp → /tmp)", e))?;
            k.close(t);
        }
        None if plan.target_tmp => {
            return Err(Error::Session(
                "--target-tmp needs a running target (a stopped one has no /tmp in use)".into(),
            ))
        }
        None => k
            .mount(
                Some(c"tmpfs"),
                &at("tmp")?,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(c"mode=1777"),
            )
            .map_err(|e| Error::sys("mount tmpfs on /tmp", e))?,
    }
    k.mount(
        Some(c"tmpfs"),
        &at("dev")?,
        Some(c"tmpfs"),
        libc::MS_NOSUID,
        Some(c"mode=755"),
    )
    .map_err(|e| Error::sys("mount tmpfs on /dev", e))?;
    for d in DEVICES {
        let host = c(format!("/dev/{d}"))?;
        let inside = at(&format!("dev/{d}"))?;
        k.touch(&inside)
            .map_err(|e| Error::sys(format!("create /dev/{d}"), e))?;
        k.mount(Some(&host), &inside, None, libc::MS_BIND, None)
            .map_err(|e| Error::sys(format!("bind /dev/{d}"), e))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        k.symlink(&c(to)?, &at(&format!("dev/{link}"))?)
            .map_err(|e| Error::sys(format!("symlink /dev/{link}"), e))?;
    }
    k.mkdir(&at("dev/shm")?, 0o1777)
        .map_err(|e| Error::sys("mkdir /dev/shm", e))?;
    k.mkdir(&at("dev/pts")?, 0o755)
        .map_err(|e| Error::sys("mkdir /dev/pts", e))?;
    // A private devpts instance: terminals the session opens (tmux, script, an ssh-less
    // `gdb` tty) live there, never in the host's or the target's /dev/pts.
    k.mount(
        Some(c"devpts"),
        &at("dev/pts")?,
        Some(c"devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| Error::sys("mount devpts on /dev/pts", e))?;
    k.symlink(c"pts/ptmx", &at("dev/ptmx")?)
        .map_err(|e| Error::sys("symlink /dev/ptmx", e))?;
    // pivot_root(".", "."): the old root ends up stacked under the new one and is detached
    // right away, so the host's file system is out of reach of the session.
    k.chdir(&tbc)
        .map_err(|e| Error::sys(format!("chdir {}", tb.display()), e))?;
    k.pivot_root(c".", c".")
        .map_err(|e| Error::sys("pivot_root(toolbox)", e))?;
    k.umount2(c".", libc::MNT_DETACH)
        .map_err(|e| Error::sys("detach the host root", e))?;
    k.chdir(c"/").map_err(|e| Error::sys("chdir /", e))?;
    if ns_fds.is_empty() {
        // A stopped target has no processes: a fresh pid namespace keeps the host's out of
        // the session's `ps`.
        k.unshare(libc::CLONE_NEWPID)
            .map_err(|e| Error::sys("unshare(pid namespace)", e))?;
    }
    for (fd, flag) in ns_fds {
        k.setns(fd, flag)
            .map_err(|e| Error::sys(format!("setns({} namespace)", ns_name(flag)), e))?;
        k.close(fd);
    }
    Ok(())
}

/// The second part, in the forked command process (now inside the pid namespace): `/proc` for
/// that namespace, then the working directory.
pub fn enter(k: &impl Kernel, plan: &Plan) -> Result<()> {
    k.mount(
        Some(c"proc"),
        c"/proc",
        Some(c"proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(|e| Error::sys("mount /proc", e))?;
    let cwd = c(&plan.cwd)?;
    if k.chdir(&cwd).is_err() {
        k.chdir(c"/").map_err(|e| Error::sys("chdir /", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_kernel::Recording;

    fn plan(root: TargetRoot) -> Plan {
        Plan {
            root,
            toolbox: "/cache/tb".into(),
            identity: None,
            env: vec![],
            cwd: "/target/app".into(),
            command: vec!["sh".into()],
            target_tmp: false,
        }
    }

    #[test]
    fn live_target_is_cloned_sealed_and_never_mounted_on() {
        let k = Recording::default();
        let p = plan(TargetRoot::Live {
            pid: 42,
            cgroup_procs: vec!["/sys/fs/cgroup/memory/docker/x/cgroup.procs".into()],
        });
        prepare(&k, &p).unwrap();
        let calls = k.calls.borrow();
        let pos = |needle: &str| {
            calls
                .iter()
                .position(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in {calls:#?}"))
        };
        // The clone is taken inside the target's mount namespace, then we go straight back.
        let theirs = 100 + pos("open /proc/42/ns/mnt");
        let own = 100 + pos("open /proc/self/ns/mnt");
        let into = pos(&format!("setns {theirs} mnt"));
        let tree = 100 + into + 1;
        assert_eq!(calls[into + 1], format!("clone_tree / -> {tree}"));
        assert_eq!(calls[into + 2], format!("setns {own} mnt"));
        assert!(pos("write /sys/fs/cgroup/memory/docker/x/cgroup.procs 0") < into);
        assert!(
            pos(&format!("seal_tree {tree}")) < pos(&format!("move_mount {tree} /cache/tb/target"))
        );
        // No call names a path of the target: everything happens under the toolbox.
        for l in calls.iter() {
            assert!(!l.contains("/proc/42/root"), "{l}");
            if l.starts_with("mount") || l.starts_with("touch") || l.starts_with("mkdir") {
                assert!(l.contains("/cache/tb") || l.contains(" / "), "{l}");
            }
        }
        // Namespaces are joined after the pivot, pid last.
        let pivot = pos("pivot_root . .");
        let joins: Vec<_> = calls
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("setns") && !l.ends_with("mnt"))
            .collect();
        assert_eq!(joins.len(), 5);
        assert!(joins.iter().all(|(i, _)| *i > pivot));
        assert!(joins.last().unwrap().1.ends_with("pid"));
    }

    #[test]
    fn stopped_target_is_a_read_only_bind_in_a_fresh_pid_namespace() {
        let k = Recording::default();
        prepare(&k, &plan(TargetRoot::Dir("/var/tmp/view".into()))).unwrap();
        let calls = k.calls.borrow();
        assert!(calls
            .iter()
            .any(|l| l.starts_with("mount /var/tmp/view /cache/tb/target")));
        assert!(calls
            .iter()
            .any(|l| l.starts_with("mount - /cache/tb/target")
                && l.contains(&format!(
                    "{:#x}",
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY
                ))));
        assert_eq!(calls.last().unwrap(), "unshare pid");
        assert!(!calls.iter().any(|l| l.starts_with("setns")));
    }

    #[test]
    fn target_tmp_is_an_unsealed_clone_of_the_targets_tmp() {
        let k = Recording::default();
        let mut p = plan(TargetRoot::Live {
            pid: 42,
            cgroup_procs: vec![],
        });
        p.target_tmp = true;
        prepare(&k, &p).unwrap();
        let calls = k.calls.borrow();
        let at = calls
            .iter()
            .position(|l| l.starts_with("clone_tree /tmp "))
            .unwrap();
        let fd = 100 + at;
        assert!(
            calls[at - 1].starts_with("clone_tree / "),
            "both clones in the target's namespace: {calls:#?}"
        );
        assert!(calls.contains(&format!("move_mount {fd} /cache/tb/tmp")));
        assert!(!calls.contains(&format!("seal_tree {fd}")), "{calls:#?}");
        assert!(!calls
            .iter()
            .any(|l| l.starts_with("mount tmpfs /cache/tb/tmp")));
        p.root = TargetRoot::Dir("/v".into());
        let e = prepare(&Recording::default(), &p).unwrap_err().to_string();
        assert!(e.contains("--target-tmp needs a running target"), "{e}");
    }

    #[test]
    fn a_refused_setns_names_the_capability() {
        let k = Recording {
            fail_on: Some("setns 106 mnt".into()), // open order: 5 joined, own mnt, theirs
            ..Recording::default()
        };
        let p = plan(TargetRoot::Live {
            pid: 42,
            cgroup_procs: vec![],
        });
        let e = prepare(&k, &p).unwrap_err().to_string();
        assert!(e.contains("CAP_SYS_ADMIN"), "{e}");
        assert!(e.contains("pid 42"), "{e}");
    }
}
