//! `whittle top`: containers live (or from an archive) in the terminal, or once as JSON.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use whittle_metrics::rates::{rows, sort, SortKey};
use whittle_metrics::serve::collect_once;

use crate::output::{human_bytes, no_color, print_json};

const EXAMPLES: &str = "Examples:
  whittle top
  whittle top --once --json | jq '.containers[] | {name, cpu_cores}'
  whittle top --archive /var/lib/whittle/metrics";

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Scroll through a `whittle metrics record` archive instead of the live containers.
    #[arg(long, value_name = "DIR")]
    archive: Option<PathBuf>,
    /// Sample twice, `--interval` apart, print one table (or JSON) and exit.
    #[arg(long)]
    once: bool,
    /// With --once: JSON (schema whittle.top/v1) instead of the table.
    #[arg(long, requires = "once")]
    json: bool,
    /// Sort by cpu, mem, name, net, io or pids.
    #[arg(long, default_value = "cpu")]
    sort: SortKey,
    /// Time between samples.
    #[arg(long, default_value = "1s", value_parser = crate::commands::metrics::parse_interval)]
    interval: Duration,
    /// Docker Engine (or podman socket) address.
    #[arg(long, env = "DOCKER_HOST")]
    host: Option<String>,
}

#[derive(serde::Serialize)]
struct TopJson {
    schema: &'static str,
    time_ns: u64,
    interval_ns: u64,
    containers: Vec<whittle_metrics::rates::Row>,
}

#[allow(clippy::print_stdout)]
pub fn run(a: Args) -> Result<ExitCode> {
    if !a.once {
        if !std::io::stdout().is_terminal() {
            bail!("the live view needs a terminal; use --once (and --json) from scripts");
        }
        match &a.archive {
            Some(dir) => whittle_metrics::top::archive(dir, a.sort, !no_color())?,
            None => whittle_metrics::top::live(a.host.as_deref(), a.interval, a.sort, !no_color())?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.archive.is_some() {
        bail!("--once reads live containers; use `whittle metrics replay` for an archive");
    }
    let (_engine, collector, containers) = collect_once(a.host.as_deref(), true)?;
    let list: Vec<_> = containers.iter().collect();
    let first = collector.collect(&list);
    std::thread::sleep(a.interval);
    let second = collector.collect(&list);
    let mut r = rows(Some(&first), &second);
    sort(&mut r, a.sort);
    if a.json {
        print_json(&TopJson {
            schema: "whittle.top/v1",
            time_ns: second.time_ns,
            interval_ns: second.time_ns.saturating_sub(first.time_ns),
            containers: r,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
    println!(
        "{:<24} {:>6} {:>6} {:>5} {:>10} {:>12} {:>12} {:>12} {:>12} {:>5}  HEALTH",
        "NAME", "CPU", "LIMIT", "THR%", "MEM", "NET RX/s", "NET TX/s", "IO R/s", "IO W/s", "PIDS"
    );
    let rate = |v: f64| human_bytes(v as u64);
    for x in &r {
        println!(
            "{:<24} {:>6} {:>6} {:>5} {:>10} {:>12} {:>12} {:>12} {:>12} {:>5}  {}",
            x.name,
            opt(x.cpu_cores, &|c| format!("{c:.2}")),
            opt(x.cpu_limit_cores, &|c| format!("{c:.2}")),
            opt(x.throttled_percent, &|t| format!("{t:.0}")),
            x.memory_working_set_bytes
                .map(human_bytes)
                .unwrap_or_else(|| "-".into()),
            opt(x.net_rx_bytes_per_sec, &rate),
            opt(x.net_tx_bytes_per_sec, &rate),
            opt(x.io_read_bytes_per_sec, &rate),
            opt(x.io_write_bytes_per_sec, &rate),
            x.pids.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            x.health.as_deref().unwrap_or("-"),
        );
    }
    Ok(ExitCode::SUCCESS)
}
