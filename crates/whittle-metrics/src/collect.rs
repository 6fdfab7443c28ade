//! One collection round: containers (from the engine crate) → kernel numbers → a [`Snapshot`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use whittle_engine::procfs::{CgroupMounts, ProcRoot};
use whittle_engine::{Container, NetworkMode};

use crate::cgroup::{self, clock_ticks_per_sec, page_size};
use crate::files::{Cached, Files, Session};
use crate::sample::{ContainerSample, Interface, NetnsMode, Network, Process, Snapshot};
use crate::{Error, Result};

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `/dev/NAME` of each block device seen, by (major, minor).
type DeviceNames = BTreeMap<(u32, u32), String>;

/// Reads the kernel's numbers for containers. Holds the cgroup mount table, read once.
#[derive(Debug)]
pub struct Collector {
    proc: ProcRoot,
    mounts: CgroupMounts,
    /// Whether to read every process of every container (the per-process view).
    pub processes: bool,
    /// Kept descriptors and names of block devices, across collections.
    cache: Mutex<(Cached, DeviceNames)>,
}

impl Collector {
    pub fn new(proc: ProcRoot) -> Result<Self> {
        let mounts = proc.cgroup_mounts().map_err(Error::Engine)?;
        crate::files::raise_nofile_limit();
        Ok(Self {
            proc,
            mounts,
            processes: false,
            cache: Mutex::default(),
        })
    }

    /// A snapshot of every running container in `containers`, stamped now.
    pub fn collect(&self, containers: &[&Container]) -> Snapshot {
        self.collect_at(containers, now_ns())
    }

    pub fn collect_at(&self, containers: &[&Container], time_ns: u64) -> Snapshot {
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (cache, devices) = &mut *guard;
        cache.begin();
        let snap = self.collect_with(
            &mut Session {
                root: &self.proc,
                cache,
            },
            devices,
            containers,
            time_ns,
        );
        cache.end();
        snap
    }

    fn collect_with(
        &self,
        files: &mut dyn Files,
        devices: &mut DeviceNames,
        containers: &[&Container],
        time_ns: u64,
    ) -> Snapshot {
        let host_netns = self.proc.own_netns().ok();
        let mut running: Vec<&Container> = containers
            .iter()
            .copied()
            .filter(|c| c.is_running() && c.pid.is_some())
            .collect();
        running.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));

        // Containers sharing one network namespace (`--network container:X`, Swarm/pod
        // sandboxes) are counted once, in the owner, and the others point at it. The owner is
        // the container that made the namespace (not a `container:X` joiner), so it does not
        // change when a joiner comes or goes; among several makers, the first by name.
        let mut netns_owner: BTreeMap<u64, &str> = BTreeMap::new();
        let mut netns_members: BTreeMap<u64, usize> = BTreeMap::new();
        for joiners in [false, true] {
            for c in &running {
                let joiner = matches!(c.network_mode, NetworkMode::Container(_));
                if let (Some(ns), true) = (c.netns, joiner == joiners) {
                    netns_owner.entry(ns).or_insert(c.name.as_str());
                    *netns_members.entry(ns).or_default() += 1;
                }
            }
        }

        let mut out = Vec::with_capacity(running.len());
        for c in &running {
            out.push({
                let pid = c.pid.unwrap_or(0);
                let stats = c
                    .cgroups
                    .as_ref()
                    .map(|cg| cgroup::read(files, &self.mounts, cg))
                    .unwrap_or_default();
                let mut blkio = stats.blkio;
                for d in &mut blkio {
                    d.device = devices
                        .entry((d.major, d.minor))
                        .or_insert_with(|| cgroup::device_name(&self.proc, d.major, d.minor))
                        .clone();
                }
                let net = self.network(files, c, pid, host_netns, &netns_owner, &netns_members);
                let processes = if self.processes {
                    let procs = stats.procs.as_deref().unwrap_or_default();
                    procs.iter().filter_map(|p| self.process(*p)).collect()
                } else {
                    Vec::new()
                };
                let cgroup_path = c
                    .cgroups
                    .as_ref()
                    .and_then(|cg| {
                        let v1 = cg.v1.get("memory").or_else(|| cg.v1.get("cpuacct"));
                        v1.or(cg.v2.as_ref()).cloned()
                    })
                    .unwrap_or_else(|| format!("/docker/{}", c.id));
                ContainerSample {
                    id: c.id.clone(),
                    cgroup_path,
                    name: c.name.clone(),
                    image: c.image.clone(),
                    swarm_service: c.swarm_service.clone(),
                    swarm_task: c.swarm_task.clone(),
                    health: c.health.clone(),
                    cgroup_version: stats.version,
                    cpu: stats.cpu,
                    memory: stats.memory,
                    blkio,
                    pids: stats.pids,
                    net,
                    psi: stats.psi,
                    process_count: stats.procs.as_ref().map(|p| p.len() as u64),
                    processes,
                }
            });
        }
        Snapshot {
            time_ns,
            containers: out,
        }
    }

    fn network(
        &self,
        files: &mut dyn Files,
        c: &Container,
        pid: u32,
        host_netns: Option<u64>,
        owner: &BTreeMap<u64, &str>,
        members: &BTreeMap<u64, usize>,
    ) -> Network {
        let Some(ns) = c.netns else {
            return Network {
                mode: NetnsMode::Unknown,
                ..Default::default()
            };
        };
        if c.network_mode == NetworkMode::Host || Some(ns) == host_netns {
            return Network {
                netns: Some(ns),
                mode: NetnsMode::Host,
                ..Default::default()
            };
        }
        let shared = members.get(&ns).copied().unwrap_or(1) > 1;
        let counted_in = owner.get(&ns).map(|n| n.to_string());
        let is_owner = counted_in.as_deref() == Some(c.name.as_str());
        // /proc/PID/net/dev shows the namespace of PID: no setns, no tool in the container.
        let interfaces = if is_owner {
            files
                .text_fresh(&format!("/proc/{pid}/net/dev"))
                .map(|t| parse_net_dev(&t))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Network {
            netns: Some(ns),
            mode: if shared {
                NetnsMode::Shared
            } else {
                NetnsMode::Private
            },
            counted_in: if shared { counted_in } else { None },
            interfaces,
        }
    }

    /// One process, from `/proc/PID/{stat,status,cmdline}`; `None` if it exited meanwhile.
    pub fn process(&self, pid: u32) -> Option<Process> {
        let stat = self.proc.read_opt(format!("/proc/{pid}/stat"))?;
        let status = self.proc.read_opt(format!("/proc/{pid}/status"))?;
        let cmdline = self
            .proc
            .read_opt(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default();
        parse_process(pid, &stat, &status, &cmdline)
    }
}

/// `/proc/net/dev`: two header lines, then `IFACE: rx_bytes rx_packets rx_errs rx_drop fifo
/// frame compressed multicast tx_bytes tx_packets tx_errs tx_drop …`. `lo` is left out, as
/// cAdvisor does: it is traffic inside the container.
pub(crate) fn parse_net_dev(text: &str) -> Vec<Interface> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        // Positional: a field that does not parse drops the line rather than shift columns.
        let Ok(n) = rest
            .split_whitespace()
            .map(str::parse::<u64>)
            .collect::<Result<Vec<u64>, _>>()
        else {
            continue;
        };
        if n.len() < 12 {
            continue;
        }
        out.push(Interface {
            name: name.to_string(),
            rx_bytes: n[0],
            rx_packets: n[1],
            rx_errors: n[2],
            rx_dropped: n[3],
            tx_bytes: n[8],
            tx_packets: n[9],
            tx_errors: n[10],
            tx_dropped: n[11],
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `/proc/PID/stat` (proc(5)): `pid (comm) state ppid … utime stime … num_threads … rss …`.
/// comm may hold spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_process(pid: u32, stat: &str, status: &str, cmdline: &str) -> Option<Process> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let f: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // f[0] is field 3 (state); field N is f[N-3].
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = clock_ticks_per_sec();
    let cpu_ticks = field(14)? + field(15)?;
    let status_field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let uid = status_field("Uid:")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let ns_pid = status_field("NSpid:")
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(pid);
    Some(Process {
        pid,
        ns_pid,
        ppid: u32::try_from(field(4)?).ok()?,
        comm,
        cmdline: cmdline
            .split('\0')
            .filter(|a| !a.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        state: f.first()?.to_string(),
        uid,
        threads: field(20)?,
        cpu_ns: cpu_ticks * (1_000_000_000 / ticks),
        rss_bytes: field(24)? * page_size(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev() {
        let t = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
eth0: 104857600  72000    1    2    0     0          0         0   2048000   30000    3    4    0     0       0          0\n";
        let i = parse_net_dev(t);
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].name, "eth0");
        assert_eq!(i[0].rx_bytes, 104857600);
        assert_eq!(i[0].rx_dropped, 2);
        assert_eq!(i[0].tx_bytes, 2048000);
        assert_eq!(i[0].tx_dropped, 4);
    }

    #[test]
    fn process_with_hostile_comm() {
        let stat = "4242 (a) b (c) S 4200 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 3 0 12345 10000000 256 18446744073709551615";
        let status = "Name:\ta) b (c\nUid:\t65532\t65532\t65532\t65532\nNSpid:\t4242\t7\n";
        let p = parse_process(4242, stat, status, "python3\0-m\0http.server\0").unwrap();
        assert_eq!(p.comm, "a) b (c");
        assert_eq!(p.state, "S");
        assert_eq!(p.ppid, 4200);
        assert_eq!(p.ns_pid, 7);
        assert_eq!(p.uid, 65532);
        assert_eq!(p.threads, 3);
        assert_eq!(p.cpu_ns, 200 * (1_000_000_000 / clock_ticks_per_sec()));
        assert_eq!(p.rss_bytes, 256 * page_size());
        assert_eq!(p.cmdline, "python3 -m http.server");
    }
}
