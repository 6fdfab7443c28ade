//! Reading a container's cgroup files, v1 and v2 through one code path.
//!
//! Each reader takes file *text* and returns numbers, so the formats are unit-tested on the exact
//! files of the kernel's documentation (Documentation/admin-guide/cgroup-v1/*.rst and
//! cgroup-v2.rst); the thin layer that opens the files is exercised against the real kernel by
//! the integration tests.

use std::collections::BTreeMap;

use whittle_engine::procfs::{CgroupMounts, Cgroups, ProcRoot};

use crate::files::Files;
use crate::sample::{BlockDevice, Cpu, Memory, Pids, Pressure};

/// USER_HZ: the unit of `cpuacct.stat` (and `/proc/PID/stat` times).
pub(crate) fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

pub(crate) fn page_size() -> u64 {
    // SAFETY: as above.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// What one read of a container's cgroups gives.
#[derive(Debug, Default)]
pub(crate) struct CgroupStats {
    pub version: u8,
    pub cpu: Cpu,
    pub memory: Memory,
    pub blkio: Vec<BlockDevice>,
    pub pids: Pids,
    pub psi: Option<Pressure>,
    /// The pids in the cgroup (`cgroup.procs`); `None` when unreadable.
    pub procs: Option<Vec<u32>>,
}

/// Reads every statistic for a process with cgroups `cg`. v1 controllers win on hybrid hosts
/// (Docker puts its containers there); a host with the unified hierarchy only reads v2.
pub(crate) fn read(f: &mut dyn Files, mounts: &CgroupMounts, cg: &Cgroups) -> CgroupStats {
    let has_v1 = mounts.v1_dir(cg, "memory").is_some() || mounts.v1_dir(cg, "cpuacct").is_some();
    if mounts.has_v1_controllers() && has_v1 {
        let mut s = read_v1(f, mounts, cg);
        // Hybrid hosts: the controllers are v1, but the kernel keeps pressure (PSI) per cgroup
        // in the unified hierarchy, where Docker also places each container.
        // A process left at the unified root (`0::/`) has no pressure of its own there.
        let own = cg.v2.as_deref().is_some_and(|p| p != "/");
        if let Some(dir) = mounts.v2_dir(cg).filter(|_| own) {
            s.psi = read_psi(f, &dir);
        }
        s
    } else if let Some(dir) = mounts.v2_dir(cg) {
        read_v2(f, &dir)
    } else {
        CgroupStats::default()
    }
}

fn num(text: Option<String>) -> Option<u64> {
    text.and_then(|t| t.trim().parse().ok())
}

fn read_v1(f: &mut dyn Files, mounts: &CgroupMounts, cg: &Cgroups) -> CgroupStats {
    let path = |ctrl: &str, name: &str| mounts.v1_dir(cg, ctrl).map(|d| format!("{d}/{name}"));
    let mut file = |ctrl: &str, name: &str| path(ctrl, name).and_then(|p| f.text(&p));
    let mut s = CgroupStats {
        version: 1,
        ..Default::default()
    };

    s.cpu.usage_ns = num(file("cpuacct", "cpuacct.usage"));
    if let Some(stat) = file("cpuacct", "cpuacct.stat") {
        let kv = parse_kv(&stat);
        let ns_per_tick = 1_000_000_000 / clock_ticks_per_sec();
        s.cpu.user_ns = kv.get("user").map(|t| t * ns_per_tick);
        s.cpu.system_ns = kv.get("system").map(|t| t * ns_per_tick);
    }
    if let Some(stat) = file("cpu", "cpu.stat") {
        let kv = parse_kv(&stat);
        s.cpu.periods = kv.get("nr_periods").copied();
        s.cpu.throttled_periods = kv.get("nr_throttled").copied();
        s.cpu.throttled_ns = kv.get("throttled_time").copied();
    }
    s.memory.usage = num(file("memory", "memory.usage_in_bytes"));
    if let Some(stat) = file("memory", "memory.stat") {
        let kv = parse_kv(&stat);
        // The total_* fields include descendant cgroups, which is what the container is.
        let pick = |a: &str, b: &str| kv.get(a).or_else(|| kv.get(b)).copied();
        let inactive = pick("total_inactive_file", "inactive_file");
        s.memory.rss = pick("total_rss", "rss");
        s.memory.cache = pick("total_cache", "cache");
        s.memory.working_set = s
            .memory
            .usage
            .map(|u| u.saturating_sub(inactive.unwrap_or(0)));
    }
    s.memory.failcnt = num(file("memory", "memory.failcnt"));
    s.memory.oom_kills =
        file("memory", "memory.oom_control").and_then(|t| parse_kv(&t).get("oom_kill").copied());
    // The `_recursive` files include child cgroups (what runc and `docker stats` read); older
    // kernels have only the plain ones.
    let bytes = file("blkio", "blkio.throttle.io_service_bytes_recursive")
        .or_else(|| file("blkio", "blkio.throttle.io_service_bytes"));
    if let Some(bytes) = bytes {
        let ops = file("blkio", "blkio.throttle.io_serviced_recursive")
            .or_else(|| file("blkio", "blkio.throttle.io_serviced"));
        s.blkio = parse_blkio_v1(&bytes, ops.as_deref().unwrap_or(""));
    }
    s.pids.current = num(file("pids", "pids.current"));
    // v1 builds a cgroup.procs pid list on the first read after an open and serves later reads
    // from it: this one file is opened afresh every time.
    s.procs = ["pids", "cpuacct", "memory"]
        .iter()
        .find_map(|c| path(c, "cgroup.procs").and_then(|p| f.text_fresh(&p)))
        .map(|t| parse_procs(&t));

    let mut slow = |ctrl: &str, name: &str| path(ctrl, name).and_then(|p| f.text_slow(&p));
    s.cpu.quota_us = slow("cpu", "cpu.cfs_quota_us").and_then(|t| t.trim().parse::<u64>().ok());
    s.cpu.period_us = num(slow("cpu", "cpu.cfs_period_us"));
    s.memory.limit = num(slow("memory", "memory.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED);
    s.pids.limit = slow("pids", "pids.max").and_then(|t| parse_max(&t));
    s
}

fn read_v2(f: &mut dyn Files, dir: &str) -> CgroupStats {
    let mut file = |name: &str| f.text(&format!("{dir}/{name}"));
    let mut s = CgroupStats {
        version: 2,
        ..Default::default()
    };
    if let Some(stat) = file("cpu.stat") {
        let kv = parse_kv(&stat);
        s.cpu.usage_ns = kv.get("usage_usec").map(|u| u * 1000);
        s.cpu.user_ns = kv.get("user_usec").map(|u| u * 1000);
        s.cpu.system_ns = kv.get("system_usec").map(|u| u * 1000);
        s.cpu.periods = kv.get("nr_periods").copied();
        s.cpu.throttled_periods = kv.get("nr_throttled").copied();
        s.cpu.throttled_ns = kv.get("throttled_usec").map(|u| u * 1000);
    }
    s.memory.usage = num(file("memory.current"));
    if let Some(stat) = file("memory.stat") {
        let kv = parse_kv(&stat);
        s.memory.rss = kv.get("anon").copied();
        s.memory.cache = kv.get("file").copied();
        let inactive = kv.get("inactive_file").copied().unwrap_or(0);
        s.memory.working_set = s.memory.usage.map(|u| u.saturating_sub(inactive));
    }
    if let Some(ev) = file("memory.events") {
        let kv = parse_kv(&ev);
        s.memory.failcnt = kv.get("max").copied();
        s.memory.oom_kills = kv.get("oom_kill").copied();
    }
    if let Some(io) = file("io.stat") {
        s.blkio = parse_io_stat_v2(&io);
    }
    s.pids.current = num(file("pids.current"));
    s.procs = f
        .text_fresh(&format!("{dir}/cgroup.procs"))
        .map(|t| parse_procs(&t));
    let mut slow = |name: &str| f.text_slow(&format!("{dir}/{name}"));
    if let Some(max) = slow("cpu.max") {
        let mut it = max.split_whitespace();
        s.cpu.quota_us = it.next().and_then(|q| q.parse().ok());
        s.cpu.period_us = it.next().and_then(|p| p.parse().ok());
    }
    s.memory.limit = slow("memory.max").and_then(|t| parse_max(&t));
    s.pids.limit = slow("pids.max").and_then(|t| parse_max(&t));
    s.psi = read_psi(f, dir);
    s
}

/// The `*.pressure` files of a unified-hierarchy directory; `None` when the kernel has none.
fn read_psi(f: &mut dyn Files, dir: &str) -> Option<Pressure> {
    let mut file = |name: &str| f.text(&format!("{dir}/{name}")).map(|t| parse_psi(&t));
    let cpu = file("cpu.pressure");
    let mem = file("memory.pressure");
    let io = file("io.pressure");
    if cpu.is_none() && mem.is_none() && io.is_none() {
        return None;
    }
    Some(Pressure {
        cpu_some_us: cpu.and_then(|p| p.0),
        cpu_full_us: cpu.and_then(|p| p.1),
        memory_some_us: mem.and_then(|p| p.0),
        memory_full_us: mem.and_then(|p| p.1),
        io_some_us: io.and_then(|p| p.0),
        io_full_us: io.and_then(|p| p.1),
    })
}

/// v1 reports "no limit" as the largest page-aligned i64 (0x7FFFFFFFFFFFF000 on 4 KiB pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// `key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
pub(crate) fn parse_kv(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// `max` → unlimited (`None`), else the number.
pub(crate) fn parse_max(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        None
    } else {
        t.parse().ok()
    }
}

fn parse_procs(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=12345` / `full …` → (some, full) totals.
pub(crate) fn parse_psi(text: &str) -> (Option<u64>, Option<u64>) {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let kind = it.next();
        let total = it
            .find_map(|f| f.strip_prefix("total="))
            .and_then(|t| t.parse().ok());
        match kind {
            Some("some") => some = total,
            Some("full") => full = total,
            _ => {}
        }
    }
    (some, full)
}

fn dev_key(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// v1 `blkio.throttle.io_service_bytes` + `io_serviced`: `MAJ:MIN Read|Write|Sync|Async|Discard|Total N`.
pub(crate) fn parse_blkio_v1(bytes: &str, ops: &str) -> Vec<BlockDevice> {
    let mut devs: BTreeMap<(u32, u32), BlockDevice> = BTreeMap::new();
    for (text, is_bytes) in [(bytes, true), (ops, false)] {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [dev, op, n] = f[..] else { continue };
            let (Some((major, minor)), Ok(n)) = (dev_key(dev), n.parse::<u64>()) else {
                continue;
            };
            let d = devs.entry((major, minor)).or_insert_with(|| BlockDevice {
                major,
                minor,
                ..Default::default()
            });
            match (op, is_bytes) {
                ("Read", true) => d.read_bytes = n,
                ("Write", true) => d.write_bytes = n,
                ("Read", false) => d.reads = n,
                ("Write", false) => d.writes = n,
                _ => {}
            }
        }
    }
    devs.into_values().collect()
}

/// v2 `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N`.
pub(crate) fn parse_io_stat_v2(text: &str) -> Vec<BlockDevice> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some((major, minor)) = it.next().and_then(dev_key) else {
            continue;
        };
        let mut d = BlockDevice {
            major,
            minor,
            ..Default::default()
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            match k {
                "rbytes" => d.read_bytes = v,
                "wbytes" => d.write_bytes = v,
                "rios" => d.reads = v,
                "wios" => d.writes = v,
                _ => {}
            }
        }
        out.push(d);
    }
    out.sort_by_key(|d| (d.major, d.minor));
    out
}

/// `/dev/NAME` of a block device, from sysfs; `MAJ:MIN` when sysfs does not say.
pub(crate) fn device_name(proc: &ProcRoot, major: u32, minor: u32) -> String {
    proc.read_opt(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_and_max() {
        let kv = parse_kv("nr_periods 10\nnr_throttled 3\nthrottled_time 123456\n");
        assert_eq!(kv["nr_throttled"], 3);
        assert_eq!(parse_max("max\n"), None);
        assert_eq!(parse_max("4096\n"), Some(4096));
    }

    // Documentation/accounting/psi.rst
    #[test]
    fn psi_totals() {
        let t = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_psi(t), (Some(0), Some(0)));
        let cpu = "some avg10=1.50 avg60=0.30 avg300=0.10 total=987654\n";
        assert_eq!(parse_psi(cpu), (Some(987654), None));
    }

    // Documentation/admin-guide/cgroup-v2.rst, "io.stat".
    #[test]
    fn io_stat_v2_from_the_kernel_docs() {
        let t = "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n\
                 8:0 rbytes=90430464 wbytes=299008000 rios=8950 wios=1252 dbytes=50331648 dios=3021\n";
        let d = parse_io_stat_v2(t);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].major, d[0].minor), (8, 0));
        assert_eq!(d[0].read_bytes, 90430464);
        assert_eq!(d[0].writes, 1252);
        assert_eq!(d[1].write_bytes, 314773504);
    }

    // The v1 blkio throttle files as the kernel prints them (blk-cgroup.c, blkg_prfill_rwstat).
    #[test]
    fn blkio_v1() {
        let bytes = "8:0 Read 4096\n8:0 Write 104857600\n8:0 Sync 104857600\n8:0 Async 4096\n8:0 Discard 0\n8:0 Total 104861696\nTotal 104861696\n";
        let ops = "8:0 Read 1\n8:0 Write 100\n8:0 Sync 100\n8:0 Async 1\n8:0 Discard 0\n8:0 Total 101\nTotal 101\n";
        let d = parse_blkio_v1(bytes, ops);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].write_bytes, 104857600);
        assert_eq!(d[0].read_bytes, 4096);
        assert_eq!(d[0].writes, 100);
    }
}
