//! Step 2: the run settings a recording calls for, before the proof has checked them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use whittle_fstree::FsTree;

use crate::record::Recording;

/// Everything `run.sh` passes to `docker run` besides the image.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Plan {
    /// Calls the seccomp profile allows (libseccomp names).
    pub syscalls: BTreeSet<String>,
    /// Calls answered with ENOSYS (`errnoRet: 38`) instead of EPERM: `clone3`, so glibc falls
    /// back to `clone` (moby#42680).
    pub enosys: BTreeSet<String>,
    /// Added to `--cap-drop ALL`.
    pub caps: BTreeSet<String>,
    /// `--user UID:GID`.
    pub uid: u32,
    pub gid: u32,
    /// Whether `--user` differs from the image's user.
    pub user_changed: bool,
    pub read_only: bool,
    /// `--tmpfs DIR:OPTIONS` for each directory written.
    pub tmpfs: BTreeMap<String, String>,
    pub sysctls: BTreeMap<String, String>,
    /// `--memory` in bytes and `--pids-limit`, from the verification run's peaks.
    pub memory: Option<u64>,
    pub pids_limit: Option<i64>,
    /// `--init`: the app ignores its stop signal as pid 1, docker-init forwards it.
    pub init: bool,
}

/// Calls every profile allows: a process must be able to end and to return from a signal
/// handler, whatever the recording saw (moby#40205: a profile without `exit_group` spins).
pub const ALWAYS: &[&str] = &["exit", "exit_group", "rt_sigreturn"];

/// The user a root image is moved to when nothing better is known (`nobody`).
pub const NOBODY: u32 = 65534;

/// What the plan starts from.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub rec: &'a Recording,
    pub tree: &'a FsTree,
    pub runtime: &'a [&'static str],
    /// Whether the engine understands `errnoRet` (Docker ≥ 20.10.10).
    pub errno_ret: bool,
    pub deny: &'a BTreeSet<String>,
    pub keep_user: bool,
    /// The image's WorkingDir: its owner is the next best user.
    pub working_dir: Option<&'a str>,
}

impl Plan {
    /// The first plan: the recorded calls plus the runtime's, no capabilities for a non-root
    /// user, the recorded capability-relevant calls' capabilities for root.
    pub fn initial(i: &Inputs) -> Plan {
        let rec = i.rec;
        let mut syscalls: BTreeSet<String> = rec.calls.keys().cloned().collect();
        syscalls.extend(i.runtime.iter().map(|s| s.to_string()));
        syscalls.extend(ALWAYS.iter().map(|s| s.to_string()));
        let mut enosys = BTreeSet::new();
        if i.errno_ret && syscalls.remove("clone3") {
            enosys.insert("clone3".to_string());
            // What glibc falls back to when clone3 says ENOSYS.
            syscalls.insert("clone".to_string());
        }
        for d in i.deny {
            syscalls.remove(d);
        }
        let (uid, gid, user_changed) = if rec.image_uid != 0 || i.keep_user {
            (rec.image_uid, rec.image_gid, false)
        } else {
            let (u, g) = switched_user(rec)
                .or_else(|| dir_owner(i.tree, i.working_dir?))
                .unwrap_or((NOBODY, NOBODY));
            (u, g, true)
        };
        let mut plan = Plan {
            syscalls,
            enosys,
            caps: BTreeSet::new(),
            uid,
            gid,
            user_changed,
            read_only: root_writes(rec).is_empty(),
            tmpfs: BTreeMap::new(),
            sysctls: BTreeMap::new(),
            memory: None,
            pids_limit: None,
            init: false,
        };
        plan.set_user(uid, gid, user_changed, i);
        plan
    }

    /// Sets the user and what follows from it: capabilities (only root has a use for them),
    /// the unprivileged-port sysctl (what a non-root user needs instead of
    /// `CAP_NET_BIND_SERVICE`) and the owner of the tmpfs mounts.
    pub fn set_user(&mut self, uid: u32, gid: u32, changed: bool, i: &Inputs) {
        self.uid = uid;
        self.gid = gid;
        self.user_changed = changed;
        self.caps.clear();
        self.sysctls.clear();
        let low_port = i
            .rec
            .ops
            .iter()
            .filter(|o| o.errno == 0 && o.what.starts_with("bind port "))
            .filter_map(|o| o.arg)
            .filter(|&p| p > 0 && p < 1024)
            .min();
        if uid == 0 {
            self.caps = i
                .rec
                .ops
                .iter()
                .filter(|o| o.errno == 0)
                .filter_map(|o| o.cap)
                .map(str::to_string)
                .collect();
        } else if let Some(p) = low_port {
            self.sysctls
                .insert("net.ipv4.ip_unprivileged_port_start".into(), p.to_string());
        }
        self.tmpfs = tmpfs_dirs(i.rec, i.tree, uid, gid);
    }

    /// Runs the app under docker-init (and allows docker-init's calls).
    pub fn use_init(&mut self) {
        self.init = true;
        self.syscalls
            .extend(crate::baseline::DOCKER_INIT.iter().map(|s| s.to_string()));
    }

    /// The allowlist as numbers (for the sandbox's enforcing replay).
    pub fn numbers(names: &BTreeSet<String>) -> BTreeSet<i64> {
        names
            .iter()
            .filter_map(|n| crate::names::number(n))
            .collect()
    }
}

/// The uid and gid the app switched itself to (nginx's master starting its workers).
fn switched_user(rec: &Recording) -> Option<(u32, u32)> {
    let ok = |kind: &str| {
        rec.ops
            .iter()
            .filter(|o| o.errno == 0 && o.what.starts_with(kind))
            .filter_map(|o| o.arg)
            .find(|&a| a != 0)
            .map(|a| a as u32)
    };
    let uid = ok("setuid ")?;
    Some((uid, ok("setgid ").unwrap_or(uid)))
}

/// The non-root owner of `dir` in the image (redis owns /var/lib/redis, its WorkingDir).
fn dir_owner(tree: &FsTree, dir: &str) -> Option<(u32, u32)> {
    let n = tree.get(dir.trim_start_matches('/').as_bytes())?;
    (n.meta.uid != 0).then_some((n.meta.uid as u32, n.meta.gid as u32))
}

/// One tmpfs per directory that had something written in it; a directory below another
/// chosen one is covered by it. `exec` only where something was executed from it.
fn tmpfs_dirs(rec: &Recording, tree: &FsTree, uid: u32, gid: u32) -> BTreeMap<String, String> {
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for p in &rec.written {
        // A directory the app created goes into its parent's tmpfs; a file too.
        if let Some(parent) = parent_dir(p) {
            dirs.insert(parent);
        }
    }
    // The deepest directory that exists in the image: a tmpfs on a directory the image does
    // not have would be created by the engine with root's ownership.
    let dirs: BTreeSet<String> = dirs
        .into_iter()
        .map(|d| existing_ancestor(tree, &d))
        .filter(|d| d != "/")
        .collect();
    let mut chosen: Vec<String> = Vec::new();
    for d in dirs {
        if !chosen
            .iter()
            .any(|c| d.starts_with(&format!("{c}/")) || &d == c)
        {
            chosen.push(d);
        }
    }
    chosen
        .into_iter()
        .map(|d| {
            let mode = tree
                .get(d.trim_start_matches('/').as_bytes())
                .map(|n| n.meta.mode & 0o7777)
                .unwrap_or(0o755)
                | 0o700;
            let exec = rec.executed.iter().any(|e| e.starts_with(&format!("{d}/")));
            let opts = format!(
                "rw,{},nosuid,nodev,mode={mode:04o},uid={uid},gid={gid}",
                if exec { "exec" } else { "noexec" }
            );
            (d, opts)
        })
        .collect()
}

/// The directory of `p`; None for an entry of `/` itself.
fn parent_dir(p: &str) -> Option<String> {
    match p.rfind('/') {
        Some(0) | None => None,
        Some(i) => Some(p[..i].to_string()),
    }
}

/// Paths written directly in `/`: no tmpfs can hold them, so the root stays writable.
pub fn root_writes(rec: &Recording) -> Vec<String> {
    rec.written
        .iter()
        .filter(|p| parent_dir(p).is_none())
        .cloned()
        .collect()
}

fn existing_ancestor(tree: &FsTree, d: &str) -> String {
    let mut cur = d.to_string();
    loop {
        if cur == "/" || cur.is_empty() {
            return "/".into();
        }
        if tree
            .get(cur.trim_start_matches('/').as_bytes())
            .is_some_and(|n| matches!(n.kind, whittle_fstree::NodeKind::Dir { .. }))
        {
            return cur;
        }
        cur = match cur.rfind('/') {
            Some(0) | None => "/".into(),
            Some(i) => cur[..i].to_string(),
        };
    }
}
