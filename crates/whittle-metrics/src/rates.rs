//! From two snapshots to what a person reads: cores, bytes per second, percentages.

use serde::Serialize;

use crate::sample::{ContainerSample, Process, Snapshot};

/// One container's row in `whittle top` (and `top --once --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub image: String,
    pub health: Option<String>,
    /// CPU in cores over the interval (1.0 = one core busy).
    pub cpu_cores: Option<f64>,
    /// The CFS quota in cores, when set.
    pub cpu_limit_cores: Option<f64>,
    /// Share of the interval's CFS periods that were throttled, 0–100.
    pub throttled_percent: Option<f64>,
    pub memory_working_set_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    pub net_rx_bytes_per_sec: Option<f64>,
    pub net_tx_bytes_per_sec: Option<f64>,
    /// `private`, `shared` (counted in another container) or `host`.
    pub netns: &'static str,
    pub io_read_bytes_per_sec: Option<f64>,
    pub io_write_bytes_per_sec: Option<f64>,
    pub pids: Option<u64>,
    pub pids_limit: Option<u64>,
    pub processes: Vec<ProcessRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessRow {
    pub pid: u32,
    pub ns_pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub state: String,
    pub comm: String,
    pub cmdline: String,
    pub threads: u64,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: u64,
}

fn rate(prev: Option<u64>, cur: Option<u64>, secs: f64) -> Option<f64> {
    match (prev, cur) {
        (Some(p), Some(c)) if secs > 0.0 && c >= p => Some((c - p) as f64 / secs),
        _ => None,
    }
}

/// Rows for every container in `cur`; rates need the same container in `prev`.
pub fn rows(prev: Option<&Snapshot>, cur: &Snapshot) -> Vec<Row> {
    let secs = prev
        .map(|p| cur.time_ns.saturating_sub(p.time_ns) as f64 / 1e9)
        .unwrap_or(0.0);
    cur.containers
        .iter()
        .map(|c| {
            let p = prev.and_then(|p| p.containers.iter().find(|x| x.id == c.id));
            row(p, c, secs)
        })
        .collect()
}

fn row(p: Option<&ContainerSample>, c: &ContainerSample, secs: f64) -> Row {
    let cpu = rate(p.and_then(|p| p.cpu.usage_ns), c.cpu.usage_ns, secs).map(|r| r / 1e9);
    let throttled = match (p, c.cpu.periods, c.cpu.throttled_periods) {
        (Some(p), Some(n), Some(t)) => {
            let dn = n.saturating_sub(p.cpu.periods.unwrap_or(0));
            let dt = t.saturating_sub(p.cpu.throttled_periods.unwrap_or(0));
            (dn > 0).then(|| 100.0 * dt as f64 / dn as f64)
        }
        _ => None,
    };
    // A network rate needs the same counters in both samples: the same namespace, counted in
    // this container both times (else a move of the counting would show as a spike).
    let same_netns = |p: &ContainerSample| {
        p.net.netns == c.net.netns && p.counts_network() && c.counts_network()
    };
    let net_prev = p.filter(|p| same_netns(p)).map(|p| p.net_totals());
    let net_cur = (c.counts_network() && !c.net.interfaces.is_empty()).then(|| c.net_totals());
    let io_cur = (!c.blkio.is_empty()).then(|| c.io_totals());
    let io_prev = p.filter(|p| !p.blkio.is_empty()).map(|p| p.io_totals());
    let procs = c
        .processes
        .iter()
        .map(|pr| process_row(p.map(|p| p.processes.as_slice()), pr, secs))
        .collect();
    Row {
        id: c.id.clone(),
        name: c.name.clone(),
        image: c.image.clone(),
        health: c.health.clone(),
        cpu_cores: cpu,
        cpu_limit_cores: c.cpu_limit_cores(),
        throttled_percent: throttled,
        memory_working_set_bytes: c.memory.working_set,
        memory_limit_bytes: c.memory.limit,
        oom_kills: c.memory.oom_kills,
        net_rx_bytes_per_sec: rate(net_prev.map(|n| n.0), net_cur.map(|n| n.0), secs),
        net_tx_bytes_per_sec: rate(net_prev.map(|n| n.1), net_cur.map(|n| n.1), secs),
        netns: c.net.mode.as_str(),
        io_read_bytes_per_sec: rate(io_prev.map(|n| n.0), io_cur.map(|n| n.0), secs),
        io_write_bytes_per_sec: rate(io_prev.map(|n| n.1), io_cur.map(|n| n.1), secs),
        pids: c.pids.current,
        pids_limit: c.pids.limit,
        processes: procs,
    }
}

fn process_row(prev: Option<&[Process]>, p: &Process, secs: f64) -> ProcessRow {
    let before = prev.and_then(|ps| ps.iter().find(|x| x.pid == p.pid && x.comm == p.comm));
    ProcessRow {
        pid: p.pid,
        ns_pid: p.ns_pid,
        ppid: p.ppid,
        uid: p.uid,
        state: p.state.clone(),
        comm: p.comm.clone(),
        cmdline: p.cmdline.clone(),
        threads: p.threads,
        cpu_percent: rate(before.map(|b| b.cpu_ns), Some(p.cpu_ns), secs).map(|r| r / 1e7),
        rss_bytes: p.rss_bytes,
    }
}

/// Sort orders of the live view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Cpu,
    Memory,
    Name,
    Net,
    Io,
    Pids,
}

impl std::str::FromStr for SortKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "cpu" => Self::Cpu,
            "mem" | "memory" => Self::Memory,
            "name" => Self::Name,
            "net" => Self::Net,
            "io" => Self::Io,
            "pids" => Self::Pids,
            _ => {
                return Err(format!(
                    "unknown sort key {s:?} (cpu, mem, name, net, io, pids)"
                ))
            }
        })
    }
}

/// Sorts rows, biggest first for numbers, A→Z for names.
pub fn sort(rows: &mut [Row], key: SortKey) {
    let f = |o: Option<f64>| o.unwrap_or(-1.0);
    rows.sort_by(|a, b| {
        let ord = match key {
            SortKey::Name => a.name.cmp(&b.name),
            SortKey::Cpu => f(b.cpu_cores).total_cmp(&f(a.cpu_cores)),
            SortKey::Memory => b.memory_working_set_bytes.cmp(&a.memory_working_set_bytes),
            SortKey::Net => f(b
                .net_rx_bytes_per_sec
                .map(|r| r + b.net_tx_bytes_per_sec.unwrap_or(0.0)))
            .total_cmp(&f(a
                .net_rx_bytes_per_sec
                .map(|r| r + a.net_tx_bytes_per_sec.unwrap_or(0.0)))),
            SortKey::Io => f(b
                .io_read_bytes_per_sec
                .map(|r| r + b.io_write_bytes_per_sec.unwrap_or(0.0)))
            .total_cmp(&f(a
                .io_read_bytes_per_sec
                .map(|r| r + a.io_write_bytes_per_sec.unwrap_or(0.0)))),
            SortKey::Pids => b.pids.cmp(&a.pids),
        };
        ord.then_with(|| a.name.cmp(&b.name))
    });
}
