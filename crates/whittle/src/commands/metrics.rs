//! `whittle metrics serve|record|replay|plot|pcp`: per-container numbers from the kernel.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use whittle_image::write::write_file;
use whittle_metrics::archive::Archive;
use whittle_metrics::openmetrics::{render, Format};
use whittle_metrics::serve::{self, Options};

const EXAMPLES: &str = "Examples:
  whittle metrics serve --listen 127.0.0.1:9323 --archive /var/lib/whittle/metrics
  whittle metrics replay /var/lib/whittle/metrics --at 2026-12-03T11:00:00Z
  whittle metrics plot /var/lib/whittle/metrics --html metrics.html";

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Serve every running container's numbers as OpenMetrics (cAdvisor's names) on an address.
    #[command(after_help = "Examples:
  whittle metrics serve
  whittle metrics serve --listen 127.0.0.1:9323 --interval 5s --archive /var/lib/whittle/metrics")]
    Serve(ServeArgs),
    /// Record every running container's numbers into a crash-safe archive.
    #[command(after_help = "Examples:
  whittle metrics record --archive /var/lib/whittle/metrics
  whittle metrics record --archive metrics --interval 10s --state-dir /run/whittle")]
    Record(RecordArgs),
    /// Print the OpenMetrics text that was served at a time, from an archive.
    #[command(after_help = "Examples:
  whittle metrics replay metrics --at 2026-12-03T11:00:00Z
  whittle metrics replay metrics --at 1764759600.5
  whittle metrics replay metrics --range 2026-12-03T11:00:00Z..2026-12-03T11:01:00Z")]
    Replay(ReplayArgs),
    /// Write a self-contained HTML page of charts per container from an archive.
    #[command(after_help = "Examples:
  whittle metrics plot metrics --html metrics.html
  whittle metrics record --archive m --interval 1s & sleep 600; kill %1; whittle metrics plot m --html m.html")]
    Plot(PlotArgs),
    /// Write (or print) the PCP pmdaopenmetrics source file that makes pmcd serve these metrics.
    #[command(after_help = "Examples:
  whittle metrics pcp --print
  whittle metrics pcp --url http://127.0.0.1:9323/metrics   # then: cd /var/lib/pcp/pmdas/openmetrics && ./Install")]
    Pcp(PcpArgs),
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Docker Engine (or podman socket) address: unix:///path or tcp://host:port.
    #[arg(long, env = "DOCKER_HOST")]
    host: Option<String>,
    /// Time between collections (e.g. 1s, 500ms, 10s).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// Keep the run's state (metrics.json: pid, bound address, archive file) in DIR.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to serve /metrics on (port 0 picks a free one; see --state-dir).
    #[arg(long, default_value = "127.0.0.1:9323")]
    listen: SocketAddr,
    /// Also record every collection into an archive in DIR.
    #[arg(long, value_name = "DIR")]
    archive: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
struct RecordArgs {
    /// The archive directory (created if missing; each run adds one file).
    #[arg(long, value_name = "DIR")]
    archive: PathBuf,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// The archive directory.
    dir: PathBuf,
    /// The time to show (RFC 3339 or Unix seconds): the last collection at or before it.
    #[arg(long, value_name = "T", conflicts_with = "range")]
    at: Option<String>,
    /// Every collection between A and B (inclusive), one exposition after the other.
    #[arg(long, value_name = "A..B")]
    range: Option<String>,
    /// Text format.
    #[arg(long, value_enum, default_value = "openmetrics")]
    format: FormatArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Openmetrics,
    Prometheus,
}

#[derive(Debug, clap::Args)]
struct PlotArgs {
    /// The archive directory.
    dir: PathBuf,
    /// Where the page goes.
    #[arg(long, value_name = "FILE")]
    html: PathBuf,
}

#[derive(Debug, clap::Args)]
struct PcpArgs {
    /// The /metrics URL pmdaopenmetrics should fetch.
    #[arg(long, default_value = "http://127.0.0.1:9323/metrics")]
    url: String,
    /// The PMDA's config.d directory.
    #[arg(long, default_value = "/var/lib/pcp/pmdas/openmetrics/config.d")]
    config_dir: PathBuf,
    /// Print the file instead of writing it.
    #[arg(long)]
    print: bool,
}

pub(crate) fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < Duration::from_millis(100) {
        return Err(format!("{s:?}: the interval must be at least 100ms"));
    }
    Ok(d)
}

/// RFC 3339 (`2026-12-03T11:00:00Z`, fractions allowed) or Unix seconds (`1764759600.25`).
/// Unix seconds are parsed as integers (seconds and up to nine decimals), not through a float,
/// so the timestamp a served page shows selects exactly that collection.
pub fn parse_time(s: &str) -> Result<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if digits(int) && (frac.is_empty() || (digits(frac) && frac.len() <= 9)) {
        let secs: u64 = int
            .parse()
            .with_context(|| format!("{s:?}: seconds out of range"))?;
        let nanos: u64 = format!("{frac:0<9}").parse().unwrap_or(0);
        return secs
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(nanos))
            .with_context(|| format!("{s:?}: out of range"));
    }
    let t = humantime::parse_rfc3339_weak(s)
        .with_context(|| format!("{s:?} is neither RFC 3339 nor Unix seconds"))?;
    Ok(t.duration_since(UNIX_EPOCH)?.as_nanos().try_into()?)
}

#[allow(clippy::print_stderr)]
fn log_line() -> Arc<dyn Fn(&str) + Send + Sync> {
    Arc::new(|m: &str| {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        eprintln!("{now} whittle metrics: {m}");
    })
}

pub fn run(a: Args) -> Result<ExitCode> {
    match a.command {
        Sub::Serve(s) => {
            serve::run(
                Options {
                    host: s.common.host,
                    listen: Some(s.listen),
                    interval: s.common.interval,
                    archive: s.archive,
                    state_dir: s.common.state_dir,
                },
                log_line(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Sub::Record(r) => {
            serve::run(
                Options {
                    host: r.common.host,
                    listen: None,
                    interval: r.common.interval,
                    archive: Some(r.archive),
                    state_dir: r.common.state_dir,
                },
                log_line(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Sub::Replay(r) => replay(r),
        Sub::Plot(p) => plot(&p),
        Sub::Pcp(p) => pcp(&p),
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn replay(r: ReplayArgs) -> Result<ExitCode> {
    let archive = Archive::open(&r.dir)?;
    for w in &archive.warnings {
        eprintln!("whittle: warning: {w}");
    }
    let format = match r.format {
        FormatArg::Openmetrics => Format::OpenMetrics,
        FormatArg::Prometheus => Format::Prometheus,
    };
    let picks: Vec<usize> = match (&r.at, &r.range) {
        (Some(t), _) => {
            let t = parse_time(t)?;
            match archive.at(t) {
                Some(i) => vec![i],
                None => bail!(
                    "{}: no collection at or before {} (the archive starts at {})",
                    r.dir.display(),
                    fmt_ns(t),
                    archive
                        .frames
                        .first()
                        .map(|f| fmt_ns(f.time_ns))
                        .unwrap_or_default()
                ),
            }
        }
        (None, Some(range)) => {
            let (a, b) = range
                .split_once("..")
                .with_context(|| format!("--range {range:?}: expected A..B"))?;
            let (a, b) = (parse_time(a)?, parse_time(b)?);
            (0..archive.frames.len())
                .filter(|&i| (a..=b).contains(&archive.frames[i].time_ns))
                .collect()
        }
        (None, None) => archive.frames.len().checked_sub(1).into_iter().collect(),
    };
    let single = r.at.is_some();
    let mut printed = 0;
    for i in picks {
        match archive.snapshot(i) {
            Ok(snap) => {
                print!("{}", render(&snap, format));
                printed += 1;
            }
            // With --at the one frame asked for is the answer; in a range, a frame that cannot
            // be decoded (its key frame is damaged) is skipped like a damaged frame.
            Err(e) if single => return Err(e.into()),
            Err(e) => eprintln!("whittle: warning: {e}; skipped"),
        }
    }
    if printed == 0 && !single && r.range.is_some() {
        eprintln!(
            "whittle: warning: {}: no readable collection in the range",
            r.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_ns(ns: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

#[allow(clippy::print_stderr)]
fn plot(p: &PlotArgs) -> Result<ExitCode> {
    whittle_image::write::check_file_destination(&p.html)?;
    let archive = Archive::open(&p.dir)?;
    for w in &archive.warnings {
        eprintln!("whittle: warning: {w}");
    }
    let page =
        whittle_metrics::plot::html(&archive, &format!("whittle metrics — {}", p.dir.display()))?;
    write_file(&p.html, page.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The pmdaopenmetrics source file: its first line is the URL (pmdaopenmetrics(1)).
fn pcp_url_file(url: &str) -> String {
    format!("{url}\n")
}

#[allow(clippy::print_stdout)]
fn pcp(p: &PcpArgs) -> Result<ExitCode> {
    let body = pcp_url_file(&p.url);
    if p.print {
        print!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let path: &Path = &p.config_dir.join("whittle.url");
    if !p.config_dir.is_dir() {
        bail!(
            "{}: no such directory (install PCP: apt-get install pcp; or pass --config-dir)",
            p.config_dir.display()
        );
    }
    write_file(path, body.as_bytes())?;
    println!(
        "wrote {}; PCP metrics appear as openmetrics.whittle.* once the PMDA is installed:",
        path.display()
    );
    println!("  cd /var/lib/pcp/pmdas/openmetrics && ./Install");
    Ok(ExitCode::SUCCESS)
}
