//! The exposition text: OpenMetrics 1.0 (what Prometheus asks for) or the Prometheus text format
//! 0.0.4 (what plain clients such as PCP's pmdaopenmetrics read), from one table of families.
//!
//! Names and labels are cAdvisor's where the quantity is the same (`container_*`, labels `id`,
//! `name`, `image`, `container_label_com_docker_swarm_*`), so existing dashboards and alerts keep
//! working; `whittle_*` only for what cAdvisor lacks. The text is a pure function of the
//! [`Snapshot`]: an archived snapshot replays to the same bytes.

use std::fmt::Write as _;

use crate::sample::{ContainerSample, Snapshot};

/// Which text format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Prometheus,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// OpenMetrics when the client's `Accept` header asks for it (Prometheus does).
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// A number as the text shows it: integers exactly, seconds from nanoseconds or microseconds.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Nanos(u64),
    Micros(u64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Int(v) => write!(f, "{v}"),
            // Seconds with exactly nine (six) decimals: exact for any integer input, and the
            // same bytes whenever the same integer is rendered.
            Self::Nanos(v) => write!(f, "{}.{:09}", v / 1_000_000_000, v % 1_000_000_000),
            Self::Micros(v) => write!(f, "{}.{:06}", v / 1_000_000, v % 1_000_000),
        }
    }
}

type Extract = fn(&ContainerSample, &mut Vec<(Vec<(&'static str, String)>, Value)>);

struct Family {
    name: &'static str,
    kind: Kind,
    unit: Option<&'static str>,
    help: &'static str,
    extract: Extract,
}

fn one(out: &mut Vec<(Vec<(&'static str, String)>, Value)>, v: Option<Value>) {
    if let Some(v) = v {
        out.push((Vec::new(), v));
    }
}

macro_rules! simple {
    ($name:literal, $kind:ident, $unit:expr, $help:literal, |$c:ident| $e:expr) => {
        Family {
            name: $name,
            kind: Kind::$kind,
            unit: $unit,
            help: $help,
            extract: |$c, out| one(out, $e),
        }
    };
}

/// A counter with one sample per element of a list (devices, interfaces), labelled by it.
macro_rules! per_item {
    ($name:literal, $unit:expr, $help:literal, |$c:ident| $items:expr, $label:literal, $key:ident, $field:ident) => {
        Family {
            name: $name,
            kind: Kind::Counter,
            unit: $unit,
            help: $help,
            extract: |$c, out| {
                for x in $items {
                    out.push((vec![($label, x.$key.clone())], Value::Int(x.$field)));
                }
            },
        }
    };
}

macro_rules! psi {
    ($name:literal, $help:literal, $field:ident) => {
        Family {
            name: $name,
            kind: Kind::Counter,
            unit: Some("seconds"),
            help: $help,
            extract: |c, out| {
                one(
                    out,
                    c.psi.as_ref().and_then(|p| p.$field).map(Value::Micros),
                )
            },
        }
    };
}

const BYTES: Option<&str> = Some("bytes");
const SECONDS: Option<&str> = Some("seconds");

fn families() -> Vec<Family> {
    vec![
        Family {
            name: "container_cpu_usage_seconds",
            kind: Kind::Counter,
            unit: SECONDS,
            help: "Cumulative cpu time consumed in seconds.",
            extract: |c, out| {
                if let Some(v) = c.cpu.usage_ns {
                    out.push((vec![("cpu", "total".to_string())], Value::Nanos(v)));
                }
            },
        },
        simple!("container_cpu_user_seconds", Counter, SECONDS, "Cumulative user cpu time consumed in seconds.", |c| c.cpu.user_ns.map(Value::Nanos)),
        simple!("container_cpu_system_seconds", Counter, SECONDS, "Cumulative system cpu time consumed in seconds.", |c| c.cpu.system_ns.map(Value::Nanos)),
        simple!("container_cpu_cfs_periods", Counter, None, "Number of elapsed enforcement period intervals.", |c| c.cpu.periods.map(Value::Int)),
        simple!("container_cpu_cfs_throttled_periods", Counter, None, "Number of throttled period intervals.", |c| c.cpu.throttled_periods.map(Value::Int)),
        simple!("container_cpu_cfs_throttled_seconds", Counter, SECONDS, "Total time duration the container has been throttled.", |c| c.cpu.throttled_ns.map(Value::Nanos)),
        simple!("container_spec_cpu_quota", Gauge, None, "CPU quota of the container (microseconds per period).", |c| c.cpu.quota_us.map(Value::Int)),
        simple!("container_spec_cpu_period", Gauge, None, "CPU period of the container (microseconds).", |c| c.cpu.period_us.map(Value::Int)),
        simple!("container_memory_usage_bytes", Gauge, BYTES, "Current memory usage in bytes, including all memory regardless of when it was accessed.", |c| c.memory.usage.map(Value::Int)),
        simple!("container_memory_working_set_bytes", Gauge, BYTES, "Current working set in bytes: usage minus inactive file cache.", |c| c.memory.working_set.map(Value::Int)),
        simple!("container_memory_rss", Gauge, None, "Size of RSS (anonymous memory) in bytes.", |c| c.memory.rss.map(Value::Int)),
        simple!("container_memory_cache", Gauge, None, "Number of bytes of page cache memory.", |c| c.memory.cache.map(Value::Int)),
        simple!("container_spec_memory_limit_bytes", Gauge, BYTES, "Memory limit for the container (absent when unlimited).", |c| c.memory.limit.map(Value::Int)),
        simple!("container_memory_failcnt", Gauge, None, "Number of times memory usage hit the limit.", |c| c.memory.failcnt.map(Value::Int)),
        simple!("container_oom_events", Counter, None, "Count of out of memory kills in the container.", |c| c.memory.oom_kills.map(Value::Int)),
        per_item!("container_fs_reads_bytes", BYTES, "Cumulative count of bytes read.", |c| &c.blkio, "device", device, read_bytes),
        per_item!("container_fs_writes_bytes", BYTES, "Cumulative count of bytes written.", |c| &c.blkio, "device", device, write_bytes),
        per_item!("container_fs_reads", None, "Cumulative count of reads completed.", |c| &c.blkio, "device", device, reads),
        per_item!("container_fs_writes", None, "Cumulative count of writes completed.", |c| &c.blkio, "device", device, writes),
        simple!("container_threads", Gauge, None, "Number of threads (tasks) running inside the container.", |c| c.pids.current.map(Value::Int)),
        simple!("container_threads_max", Gauge, None, "Maximum number of threads allowed (absent when unlimited).", |c| c.pids.limit.map(Value::Int)),
        simple!("container_processes", Gauge, None, "Number of processes running inside the container.", |c| c.process_count.map(Value::Int)),
        per_item!("container_network_receive_bytes", BYTES, "Cumulative count of bytes received.", |c| &c.net.interfaces, "interface", name, rx_bytes),
        per_item!("container_network_receive_packets", None, "Cumulative count of packets received.", |c| &c.net.interfaces, "interface", name, rx_packets),
        per_item!("container_network_receive_errors", None, "Cumulative count of errors encountered while receiving.", |c| &c.net.interfaces, "interface", name, rx_errors),
        per_item!("container_network_receive_packets_dropped", None, "Cumulative count of packets dropped while receiving.", |c| &c.net.interfaces, "interface", name, rx_dropped),
        per_item!("container_network_transmit_bytes", BYTES, "Cumulative count of bytes transmitted.", |c| &c.net.interfaces, "interface", name, tx_bytes),
        per_item!("container_network_transmit_packets", None, "Cumulative count of packets transmitted.", |c| &c.net.interfaces, "interface", name, tx_packets),
        per_item!("container_network_transmit_errors", None, "Cumulative count of errors encountered while transmitting.", |c| &c.net.interfaces, "interface", name, tx_errors),
        per_item!("container_network_transmit_packets_dropped", None, "Cumulative count of packets dropped while transmitting.", |c| &c.net.interfaces, "interface", name, tx_dropped),
        psi!("whittle_container_pressure_cpu_some_seconds", "Time some tasks of the container stalled waiting for CPU (PSI).", cpu_some_us),
        psi!("whittle_container_pressure_cpu_full_seconds", "Time all tasks of the container stalled waiting for CPU (PSI).", cpu_full_us),
        psi!("whittle_container_pressure_memory_some_seconds", "Time some tasks stalled on memory (PSI).", memory_some_us),
        psi!("whittle_container_pressure_memory_full_seconds", "Time all tasks stalled on memory (PSI).", memory_full_us),
        psi!("whittle_container_pressure_io_some_seconds", "Time some tasks stalled on I/O (PSI).", io_some_us),
        psi!("whittle_container_pressure_io_full_seconds", "Time all tasks stalled on I/O (PSI).", io_full_us),
        Family {
            name: "whittle_container_netns",
            kind: Kind::Gauge,
            unit: None,
            help: "The container's network namespace: mode private, shared (counted once, in counted_in) or host (no per-container counters).",
            extract: |c, out| {
                let Some(ns) = c.net.netns else { return };
                let mode = c.net.mode.as_str();
                out.push((
                    vec![
                        ("netns", ns.to_string()),
                        ("mode", mode.to_string()),
                        ("counted_in", c.net.counted_in.clone().unwrap_or_default()),
                    ],
                    Value::Int(1),
                ));
            },
        },
    ]
}

/// `\`, `"` and newline escaped, as both formats require in label values.
fn escape(v: &str, out: &mut String) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn container_labels(c: &ContainerSample) -> Vec<(&'static str, &str)> {
    let id = if c.cgroup_path.is_empty() {
        c.id.as_str()
    } else {
        c.cgroup_path.as_str()
    };
    let mut l = vec![
        ("id", id),
        ("name", c.name.as_str()),
        ("image", c.image.as_str()),
    ];
    if let Some(s) = &c.swarm_service {
        l.push(("container_label_com_docker_swarm_service_name", s));
    }
    if let Some(t) = &c.swarm_task {
        l.push(("container_label_com_docker_swarm_task_name", t));
    }
    l
}

/// Renders `snap` in `format`.
pub fn render(snap: &Snapshot, format: Format) -> String {
    let mut out = String::with_capacity(256 + snap.containers.len() * 4096);
    let mut samples = Vec::new();
    for fam in families() {
        let mut body = String::new();
        for c in &snap.containers {
            samples.clear();
            (fam.extract)(c, &mut samples);
            let base = container_labels(c);
            for (extra, value) in &samples {
                body.push_str(fam.name);
                if fam.kind == Kind::Counter {
                    body.push_str("_total");
                }
                body.push('{');
                let mut first = true;
                let labels = base.iter().map(|(k, v)| (*k, *v));
                let extra = extra.iter().map(|(k, v)| (*k, v.as_str()));
                for (k, v) in labels.chain(extra) {
                    if !first {
                        body.push(',');
                    }
                    first = false;
                    body.push_str(k);
                    body.push_str("=\"");
                    escape(v, &mut body);
                    body.push('"');
                }
                let _ = writeln!(body, "}} {value}");
            }
        }
        if body.is_empty() {
            continue;
        }
        header(&mut out, format, fam.name, fam.kind, fam.unit, fam.help);
        out.push_str(&body);
    }
    header(
        &mut out,
        format,
        "whittle_collect_timestamp_seconds",
        Kind::Gauge,
        SECONDS,
        "When these numbers were read from the kernel (Unix time).",
    );
    let _ = writeln!(
        out,
        "whittle_collect_timestamp_seconds {}",
        Value::Nanos(snap.time_ns)
    );
    header(
        &mut out,
        format,
        "whittle_containers",
        Kind::Gauge,
        None,
        "Running containers seen.",
    );
    let _ = writeln!(out, "whittle_containers {}", snap.containers.len());
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

fn header(
    out: &mut String,
    format: Format,
    name: &str,
    kind: Kind,
    unit: Option<&str>,
    help: &str,
) {
    let kind_s = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    match format {
        Format::OpenMetrics => {
            let _ = writeln!(out, "# TYPE {name} {kind_s}");
            if let Some(u) = unit {
                let _ = writeln!(out, "# UNIT {name} {u}");
            }
            let _ = writeln!(out, "# HELP {name} {help}");
        }
        Format::Prometheus => {
            // The 0.0.4 format names the sample, so a counter's metadata carries `_total`.
            let suffix = if kind == Kind::Counter { "_total" } else { "" };
            let _ = writeln!(out, "# HELP {name}{suffix} {help}");
            let _ = writeln!(out, "# TYPE {name}{suffix} {kind_s}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::*;

    fn sample() -> Snapshot {
        Snapshot {
            time_ns: 1_700_000_000_123_456_789,
            containers: vec![ContainerSample {
                id: "abc".into(),
                name: "we\"b".into(),
                image: "shop/web:1.4".into(),
                cpu: Cpu {
                    usage_ns: Some(1_500_000_001),
                    ..Default::default()
                },
                memory: Memory {
                    usage: Some(1000),
                    working_set: Some(800),
                    ..Default::default()
                },
                net: Network {
                    netns: Some(4026532201),
                    interfaces: vec![Interface {
                        name: "eth0".into(),
                        rx_bytes: 42,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ..Default::default()
            }],
        }
    }

    #[test]
    fn openmetrics_text() {
        let t = render(&sample(), Format::OpenMetrics);
        assert!(t.contains("# TYPE container_cpu_usage_seconds counter\n# UNIT container_cpu_usage_seconds seconds\n"), "{t}");
        assert!(t.contains(
            "container_cpu_usage_seconds_total{id=\"abc\",name=\"we\\\"b\",image=\"shop/web:1.4\",cpu=\"total\"} 1.500000001\n"
        ), "{t}");
        assert!(t.contains("container_network_receive_bytes_total{id=\"abc\",name=\"we\\\"b\",image=\"shop/web:1.4\",interface=\"eth0\"} 42\n"));
        assert!(t.contains("whittle_collect_timestamp_seconds 1700000000.123456789\n"));
        assert!(t.ends_with("# EOF\n"));
        // Absent is absent: no PSI, no limit, no quota.
        assert!(!t.contains("pressure"));
        assert!(!t.contains("container_spec_memory_limit_bytes"));
        // Every UNIT is a suffix of its family's name (OpenMetrics requires it).
        for l in t.lines().filter(|l| l.starts_with("# UNIT ")) {
            let f: Vec<&str> = l.split(' ').collect();
            assert!(f[2].ends_with(&format!("_{}", f[3])), "{l}");
        }
    }

    #[test]
    fn prometheus_text() {
        let t = render(&sample(), Format::Prometheus);
        assert!(t.contains("# TYPE container_cpu_usage_seconds_total counter\n"));
        assert!(!t.contains("# UNIT"));
        assert!(!t.contains("# EOF"));
    }

    #[test]
    fn deterministic() {
        assert_eq!(
            render(&sample(), Format::OpenMetrics),
            render(&sample(), Format::OpenMetrics)
        );
    }

    #[test]
    fn values() {
        assert_eq!(Value::Nanos(5).to_string(), "0.000000005");
        assert_eq!(Value::Micros(2_500_000).to_string(), "2.500000");
        assert_eq!(Value::Int(7).to_string(), "7");
    }
}
