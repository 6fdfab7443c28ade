//! What the kernel says about a process: its cgroups, where the cgroup hierarchies are mounted,
//! and its network namespace.
//!
//! Every read goes through a [`ProcRoot`], the directory that stands for `/`: the real one in
//! production, a directory of recorded files in unit tests (the files are plain text, so a
//! recording *is* the fake), beside tests against the real kernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The root that `/proc` and `/sys` are read under.
#[derive(Debug, Clone)]
pub struct ProcRoot {
    root: PathBuf,
}

impl Default for ProcRoot {
    fn default() -> Self {
        Self::real()
    }
}

impl ProcRoot {
    /// The running kernel's `/proc` and `/sys`.
    pub fn real() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    /// A directory holding `proc/…` and `sys/…` files recorded from a kernel (tests).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { root: dir.into() }
    }

    /// `rel` (an absolute path such as `/proc/1/cgroup`) under this root.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        self.root.join(rel.strip_prefix("/").unwrap_or(rel))
    }

    /// Reads a whole small file (kernel pseudo-files are a few KiB).
    pub fn read(&self, rel: impl AsRef<Path>) -> Result<String> {
        let p = self.path(rel);
        std::fs::read_to_string(&p).map_err(|e| Error::Proc {
            path: p.display().to_string(),
            cause: e.to_string(),
        })
    }

    /// Like [`read`](Self::read), but a missing file is `None`: many cgroup files exist only on
    /// some kernels or hierarchies, and absent must stay distinguishable from zero.
    pub fn read_opt(&self, rel: impl AsRef<Path>) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }

    /// The cgroups of `pid`, from `/proc/PID/cgroup`.
    pub fn cgroups(&self, pid: u32) -> Result<Cgroups> {
        let rel = format!("/proc/{pid}/cgroup");
        Ok(Cgroups::parse(&self.read(&rel)?))
    }

    /// The inode of `pid`'s network namespace (`/proc/PID/ns/net` → `net:[4026532201]`).
    pub fn netns(&self, pid: u32) -> Result<u64> {
        self.netns_at(&format!("/proc/{pid}/ns/net"))
    }

    /// The network namespace whittle itself runs in: the host's, for a whittle on the host.
    /// (Not pid 1's: an init that whittle may not ptrace hides its namespace links.)
    pub fn own_netns(&self) -> Result<u64> {
        self.netns_at("/proc/self/ns/net")
    }

    fn netns_at(&self, rel: &str) -> Result<u64> {
        let p = self.path(rel);
        let link = std::fs::read_link(&p).map_err(|e| Error::Proc {
            path: p.display().to_string(),
            cause: e.to_string(),
        })?;
        parse_ns_link(&link.to_string_lossy()).ok_or_else(|| Error::Proc {
            path: p.display().to_string(),
            cause: format!("not a namespace link: {}", link.display()),
        })
    }

    /// The inode of `pid`'s namespace of `kind` (`net`, `pid`, `mnt`, `ipc`, `uts`, `cgroup`).
    pub fn ns(&self, pid: u32, kind: &str) -> Result<u64> {
        self.netns_at(&format!("/proc/{pid}/ns/{kind}"))
    }

    /// Who `pid` runs as: effective uid and gid and the supplementary groups
    /// (`/proc/PID/status`), what a session that acts as the process must take on.
    pub fn identity(&self, pid: u32) -> Result<Identity> {
        let rel = format!("/proc/{pid}/status");
        let text = self.read(&rel)?;
        Identity::parse(&text).ok_or_else(|| Error::Proc {
            path: self.path(&rel).display().to_string(),
            cause: "no Uid/Gid/Groups lines".into(),
        })
    }

    /// `pid`'s environment (`/proc/PID/environ`, NUL-separated `KEY=VALUE`); entries without
    /// `=` are dropped.
    pub fn environ(&self, pid: u32) -> Result<Vec<(String, String)>> {
        let p = self.path(format!("/proc/{pid}/environ"));
        let raw = std::fs::read(&p).map_err(|e| Error::Proc {
            path: p.display().to_string(),
            cause: e.to_string(),
        })?;
        Ok(raw
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
            })
            .collect())
    }

    /// `pid`'s working directory as the process sees it (inside its own root).
    pub fn cwd(&self, pid: u32) -> Result<PathBuf> {
        let p = self.path(format!("/proc/{pid}/cwd"));
        std::fs::read_link(&p).map_err(|e| Error::Proc {
            path: p.display().to_string(),
            cause: e.to_string(),
        })
    }

    /// Where the cgroup hierarchies are mounted, from `/proc/self/mountinfo`.
    pub fn cgroup_mounts(&self) -> Result<CgroupMounts> {
        Ok(CgroupMounts::parse(&self.read("/proc/self/mountinfo")?))
    }
}

/// `net:[4026532201]` → 4026532201.
pub fn parse_ns_link(link: &str) -> Option<u64> {
    let inner = link.split_once(":[")?.1.strip_suffix(']')?;
    inner.parse().ok()
}

/// The credentials of a process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Identity {
    /// Parses `/proc/PID/status`: `Uid:`/`Gid:` carry real, effective, saved and fs ids; the
    /// effective one is what file access uses.
    pub fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|rest| {
                    rest.split_whitespace()
                        .filter_map(|v| v.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
        };
        let uid = *field("Uid:")?.get(1)?;
        let gid = *field("Gid:")?.get(1)?;
        let groups = field("Groups:").unwrap_or_default();
        Some(Self { uid, gid, groups })
    }
}

/// A process's place in each cgroup hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cgroups {
    /// cgroup v1: controller (`memory`, `cpu`, `cpuacct`, …) → path inside that hierarchy.
    pub v1: BTreeMap<String, String>,
    /// cgroup v2: the path in the unified hierarchy (`0::/path`), when the process has one.
    pub v2: Option<String>,
}

impl Cgroups {
    /// Parses `/proc/PID/cgroup`: `ID:CONTROLLERS:PATH` lines; `0::PATH` is the unified one.
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && ctrls.is_empty() {
                out.v2 = Some(path.to_string());
                continue;
            }
            for c in ctrls.split(',').filter(|c| !c.is_empty()) {
                out.v1.insert(c.to_string(), path.to_string());
            }
        }
        out
    }
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    /// The cgroup path that the mount's root shows (`/` unless the mount is of a sub-tree).
    root: String,
    mount_point: String,
}

/// The mounted cgroup hierarchies: v1 per controller, and the unified (v2) one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    v1: BTreeMap<String, CgroupMount>,
    v2: Option<CgroupMount>,
}

impl CgroupMounts {
    /// Parses `/proc/self/mountinfo`, keeping `cgroup` and `cgroup2` mounts. mountinfo escapes
    /// spaces in paths as `\040`; cgroup mount points never have them in practice, and an
    /// escaped one would only fail to match, never match wrongly.
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 5 || r.len() < 3 {
                continue;
            }
            let m = CgroupMount {
                root: l[3].to_string(),
                mount_point: l[4].to_string(),
            };
            match r[0] {
                "cgroup2" => {
                    out.v2.get_or_insert(m);
                }
                "cgroup" => {
                    for opt in r[2].split(',') {
                        let known = matches!(
                            opt,
                            "cpu"
                                | "cpuacct"
                                | "cpuset"
                                | "memory"
                                | "blkio"
                                | "pids"
                                | "devices"
                                | "freezer"
                                | "net_cls"
                                | "net_prio"
                                | "perf_event"
                                | "hugetlb"
                                | "rdma"
                                | "misc"
                        ) || opt.starts_with("name=");
                        if known {
                            out.v1.entry(opt.to_string()).or_insert_with(|| m.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The directory of `controller` for a process with cgroups `cg`; `None` when the controller
    /// is not mounted or the process is not in that hierarchy.
    pub fn v1_dir(&self, cg: &Cgroups, controller: &str) -> Option<String> {
        let m = self.v1.get(controller)?;
        Some(join_cgroup(m, cg.v1.get(controller)?))
    }

    /// The process's directory in the unified hierarchy.
    pub fn v2_dir(&self, cg: &Cgroups) -> Option<String> {
        Some(join_cgroup(self.v2.as_ref()?, cg.v2.as_ref()?))
    }

    /// Every directory of a process with cgroups `cg`, one per mounted hierarchy (controllers
    /// that share a hierarchy share it), unified last; what joining its cgroups means. A
    /// hierarchy whose root the process is in is left out: its root holds every process.
    pub fn all_dirs(&self, cg: &Cgroups) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (ctrl, path) in &cg.v1 {
            if path == "/" {
                continue;
            }
            if let Some(m) = self.v1.get(ctrl) {
                let d = join_cgroup(m, path);
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
        if let Some(d) = self.v2_dir(cg).filter(|_| cg.v2.as_deref() != Some("/")) {
            out.push(d);
        }
        out
    }

    /// True when any v1 controller that carries statistics is mounted (hybrid or legacy hosts).
    pub fn has_v1_controllers(&self) -> bool {
        ["cpuacct", "memory", "blkio", "pids", "cpu"]
            .iter()
            .any(|c| self.v1.contains_key(*c))
    }
}

fn join_cgroup(m: &CgroupMount, path: &str) -> String {
    let rel = if m.root == "/" {
        path
    } else {
        path.strip_prefix(m.root.as_str()).unwrap_or(path)
    };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        m.mount_point.clone()
    } else {
        format!("{}/{}", m.mount_point.trim_end_matches('/'), rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded on this project's CI machine (Debian 12 VM, Docker 20.10, hybrid cgroups).
    const HYBRID_MOUNTINFO: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
36 33 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
37 33 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
38 33 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,pids
39 33 0:34 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,blkio
40 33 0:35 /sub /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";

    const DOCKER_CGROUP: &str = "\
12:pids:/docker/4d60dc459641
11:blkio:/docker/4d60dc459641
4:memory:/docker/4d60dc459641
2:cpu,cpuacct:/docker/4d60dc459641
1:name=systemd:/sub/docker/4d60dc459641
0::/
";

    #[test]
    fn cgroup_file_parses_v1_and_unified_lines() {
        let cg = Cgroups::parse(DOCKER_CGROUP);
        assert_eq!(cg.v1["cpu"], "/docker/4d60dc459641");
        assert_eq!(cg.v1["cpuacct"], "/docker/4d60dc459641");
        assert_eq!(cg.v1["memory"], "/docker/4d60dc459641");
        assert_eq!(cg.v2.as_deref(), Some("/"));
        let v2only = Cgroups::parse("0::/system.slice/docker-abc.scope\n");
        assert!(v2only.v1.is_empty());
        assert_eq!(v2only.v2.as_deref(), Some("/system.slice/docker-abc.scope"));
    }

    #[test]
    fn directories_join_mount_point_and_path() {
        let m = CgroupMounts::parse(HYBRID_MOUNTINFO);
        let cg = Cgroups::parse(DOCKER_CGROUP);
        assert_eq!(
            m.v1_dir(&cg, "cpuacct").as_deref(),
            Some("/sys/fs/cgroup/cpu,cpuacct/docker/4d60dc459641")
        );
        assert_eq!(
            m.v1_dir(&cg, "memory").as_deref(),
            Some("/sys/fs/cgroup/memory/docker/4d60dc459641")
        );
        // A mount of a sub-tree: the mount's root is stripped from the process's path.
        assert_eq!(
            m.v1_dir(&cg, "name=systemd").as_deref(),
            Some("/sys/fs/cgroup/systemd/docker/4d60dc459641")
        );
        assert_eq!(m.v2_dir(&cg).as_deref(), Some("/sys/fs/cgroup/unified"));
        assert_eq!(m.v1_dir(&cg, "hugetlb"), None);
        assert!(m.has_v1_controllers());
        assert_eq!(
            m.all_dirs(&cg),
            vec![
                "/sys/fs/cgroup/blkio/docker/4d60dc459641",
                "/sys/fs/cgroup/cpu,cpuacct/docker/4d60dc459641",
                "/sys/fs/cgroup/memory/docker/4d60dc459641",
                "/sys/fs/cgroup/systemd/docker/4d60dc459641",
                "/sys/fs/cgroup/pids/docker/4d60dc459641",
            ]
        );
    }

    #[test]
    fn identity_from_status() {
        let st = "Name:\tsh\nUid:\t1000\t65532\t65532\t65532\nGid:\t5\t65533\t65533\t65533\nGroups:\t4 27 \n";
        let id = Identity::parse(st).unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (65532, 65533, vec![4, 27]));
        assert!(Identity::parse("Name: x\n").is_none());
        let me = ProcRoot::real().identity(std::process::id()).unwrap();
        // SAFETY: geteuid has no preconditions.
        assert_eq!(me.uid, unsafe { libc::geteuid() });
    }

    #[test]
    fn namespace_links() {
        assert_eq!(parse_ns_link("net:[4026532201]"), Some(4026532201));
        assert_eq!(parse_ns_link("net:4026532201"), None);
        assert_eq!(parse_ns_link("net:[x]"), None);
    }

    #[test]
    fn real_kernel_self() {
        let p = ProcRoot::real();
        let me = std::process::id();
        let cg = p.cgroups(me).expect("own cgroup file");
        assert!(cg.v2.is_some() || !cg.v1.is_empty(), "{cg:?}");
        let mounts = p.cgroup_mounts().expect("own mountinfo");
        assert!(
            mounts.v2_dir(&cg).is_some() || mounts.has_v1_controllers(),
            "no cgroup hierarchy found in /proc/self/mountinfo"
        );
        assert!(p.netns(me).expect("own netns") > 0);
        assert_eq!(p.netns(me).unwrap(), p.own_netns().unwrap());
    }
}
