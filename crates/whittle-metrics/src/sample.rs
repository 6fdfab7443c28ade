//! One collection: every container's numbers at one instant, as the kernel counts them.
//!
//! Values stay in the kernel's integer units (nanoseconds, bytes, counts) so that an archived
//! snapshot renders to exactly the text that was served live. `None` means the kernel does not
//! offer the number here (no PSI on cgroup v1, no quota set) — never a zero standing in for it.

use serde::{Deserialize, Serialize};

/// Every container at one collection time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Collection time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub containers: Vec<ContainerSample>,
}

/// One container's numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSample {
    pub id: String,
    /// The container's cgroup path (`/docker/ID`, `/system.slice/docker-ID.scope`): cAdvisor's
    /// `id` label.
    pub cgroup_path: String,
    pub name: String,
    pub image: String,
    pub swarm_service: Option<String>,
    pub swarm_task: Option<String>,
    pub health: Option<String>,
    /// `1` (cgroup v1 controllers) or `2` (unified hierarchy).
    pub cgroup_version: u8,
    pub cpu: Cpu,
    pub memory: Memory,
    pub blkio: Vec<BlockDevice>,
    pub pids: Pids,
    pub net: Network,
    pub psi: Option<Pressure>,
    /// Processes in the cgroup (`cgroup.procs` lines).
    pub process_count: Option<u64>,
    /// The processes in the container's cgroup. Not archived: the archive keeps the container
    /// totals only (what is served), the live views read processes fresh.
    #[serde(skip)]
    pub processes: Vec<Process>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    pub usage_ns: Option<u64>,
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_ns: Option<u64>,
    /// CFS quota and period in microseconds; quota `None` when unlimited.
    pub quota_us: Option<u64>,
    pub period_us: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub usage: Option<u64>,
    /// usage − inactive file pages: what the kernel cannot reclaim easily (cAdvisor's and
    /// `docker stats`' definition).
    pub working_set: Option<u64>,
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    /// `None` when unlimited.
    pub limit: Option<u64>,
    /// Times the usage hit the limit (v1 `memory.failcnt`, v2 `memory.events` max).
    pub failcnt: Option<u64>,
    /// OOM kills inside the cgroup (v1 `memory.oom_control` oom_kill, v2 `memory.events`).
    pub oom_kills: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    pub major: u32,
    pub minor: u32,
    /// `/dev/NAME` from `/sys/dev/block/MAJ:MIN/uevent`, else `MAJ:MIN`.
    pub device: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pids {
    pub current: Option<u64>,
    /// `None` when unlimited.
    pub limit: Option<u64>,
}

/// How a container's network counters relate to its namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetnsMode {
    /// Its own namespace: the counters are its own.
    #[default]
    Private,
    /// Shared with other containers: counted once, in `counted_in`.
    Shared,
    /// The host's namespace: no per-container counters exist.
    Host,
    /// Not readable (the process is gone).
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub netns: Option<u64>,
    pub mode: NetnsMode,
    /// For a shared namespace: the container (name) whose series carry the counters.
    pub counted_in: Option<String>,
    /// Interfaces other than `lo`; empty when counted elsewhere or on the host namespace.
    pub interfaces: Vec<Interface>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Pressure stall totals (microseconds), from the cgroup's `*.pressure` files (cgroup v2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pressure {
    pub cpu_some_us: Option<u64>,
    pub cpu_full_us: Option<u64>,
    pub memory_some_us: Option<u64>,
    pub memory_full_us: Option<u64>,
    pub io_some_us: Option<u64>,
    pub io_full_us: Option<u64>,
}

/// One process of a container, as `top` inside it would show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// The pid on the host.
    pub pid: u32,
    /// The pid inside the container's pid namespace (last `NSpid` field).
    pub ns_pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub cmdline: String,
    /// Single-letter state (`R`, `S`, `D`, `Z`, …).
    pub state: String,
    pub uid: u32,
    pub threads: u64,
    pub cpu_ns: u64,
    pub rss_bytes: u64,
}

impl NetnsMode {
    /// The label value (`private`, `shared`, `host`, `unknown`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Shared => "shared",
            Self::Host => "host",
            Self::Unknown => "unknown",
        }
    }
}

impl ContainerSample {
    /// CFS quota as a number of cores (`--cpus`), when set.
    pub fn cpu_limit_cores(&self) -> Option<f64> {
        match (self.cpu.quota_us, self.cpu.period_us) {
            (Some(q), Some(p)) if p > 0 => Some(q as f64 / p as f64),
            _ => None,
        }
    }

    /// Whether this sample's network series are this container's own (not the host's, not
    /// counted in another container of the same namespace).
    pub fn counts_network(&self) -> bool {
        match self.net.mode {
            NetnsMode::Private => true,
            NetnsMode::Shared => self.net.counted_in.as_deref() == Some(&self.name),
            NetnsMode::Host | NetnsMode::Unknown => false,
        }
    }

    pub fn net_totals(&self) -> (u64, u64) {
        self.net
            .interfaces
            .iter()
            .fold((0, 0), |(r, t), i| (r + i.rx_bytes, t + i.tx_bytes))
    }

    pub fn io_totals(&self) -> (u64, u64) {
        self.blkio
            .iter()
            .fold((0, 0), |(r, w), d| (r + d.read_bytes, w + d.write_bytes))
    }
}
