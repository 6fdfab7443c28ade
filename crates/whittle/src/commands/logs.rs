//! `whittle logs ship|status|devlog`: every container's output into central syslog.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use whittle_logs::pipeline::Options as PipeOptions;
use whittle_logs::ship::Filter;
use whittle_logs::sink::Target;
use whittle_logs::spool::WhenFull;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  whittle logs ship --to relp://127.0.0.1:2514 --spool /var/lib/whittle/logs
  whittle logs status --spool /var/lib/whittle/logs --json
  whittle logs devlog /run/whittle/devlog --to relp://127.0.0.1:2514 --spool /var/lib/whittle/devlog")]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Ship every container's stdout and stderr from the Engine's log store to a sink, with the
    /// engine's timestamps, checkpointed and spooled to disk (at-least-once).
    #[command(
        after_help = "Exit codes: 0 stopped by SIGTERM/SIGINT, 1 error (bad --to, spool unwritable, engine unreachable).

Examples:
  whittle logs ship --to relp://127.0.0.1:2514 --spool /var/lib/whittle/logs
  whittle logs ship --to tcp://127.0.0.1:5140 --spool /var/lib/whittle/logs --filter label=app=shop
  whittle logs ship --to file:/var/log/containers.jsonl --spool /var/lib/whittle/logs --spool-max 256MiB --when-full drop-oldest"
    )]
    Ship(ShipArgs),
    /// Show a shipper's progress and counters from its spool directory.
    #[command(after_help = "Exit codes: 0 shown, 1 no status in DIR.

Examples:
  whittle logs status --spool /var/lib/whittle/logs
  whittle logs status --spool /var/lib/whittle/logs --json | jq .dropped")]
    Status(StatusArgs),
    /// Keep a /dev/log socket in DIR (containers mount the directory) and ship what arrives,
    /// tagged with the sending container, through the same spool and sink.
    #[command(
        after_help = "Containers mount the directory, not the socket: -v DIR:/dev/log.d and a /dev/log
symlink to /dev/log.d/log (or point the program at /dev/log.d/log). A restart of the
syslog server is then only a sink reconnect.

Examples:
  whittle logs devlog /run/whittle/devlog --to relp://127.0.0.1:2514 --spool /var/lib/whittle/devlog
  docker run -v /run/whittle/devlog:/dev/log.d app sh -c 'ln -sf /dev/log.d/log /dev/log; exec app'"
    )]
    Devlog(DevlogArgs),
}

#[derive(Debug, clap::Args)]
struct SinkArgs {
    /// Where records go: relp://HOST:PORT, tcp://HOST:PORT (RFC 5424, octet-counted) or
    /// file:PATH (JSON lines, rotated).
    #[arg(long, value_name = "URL", value_parser = parse_target)]
    to: Target,
    /// The spool and state directory (checkpoints, spooled records, status.json).
    #[arg(long, alias = "state-dir", value_name = "DIR")]
    spool: PathBuf,
    /// Most disk space the spool takes (e.g. 1GiB, 256MiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    spool_max: u64,
    /// When the spool is full: wait for the sink (the Engine keeps the lines), or drop the
    /// oldest spooled records, counting each one.
    #[arg(long, value_enum, default_value = "block")]
    when_full: WhenFullArg,
    /// Records in flight to the sink before waiting for acknowledgements.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// file: sink: rotate past this size (five files kept).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    rotate: u64,
    /// Docker Engine (or podman socket) address: unix:///path or tcp://host:port.
    #[arg(long, env = "DOCKER_HOST")]
    host: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WhenFullArg {
    Block,
    DropOldest,
}

#[derive(Debug, clap::Args)]
struct ShipArgs {
    #[command(flatten)]
    sink: SinkArgs,
    /// Only containers matching: label=KEY, label=KEY=VALUE or name=TEXT (repeat: all must match).
    #[arg(long, value_name = "FILTER", value_parser = parse_filter)]
    filter: Vec<Filter>,
    /// Longest record; longer lines are sent in parts marked part=N more=0|1.
    #[arg(long, default_value = "256KiB", value_parser = parse_size)]
    max_record: u64,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The shipper's --spool directory.
    #[arg(long, alias = "state-dir", value_name = "DIR")]
    spool: PathBuf,
    /// Print the status document as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct DevlogArgs {
    /// The directory to keep the socket (DIR/log) in.
    dir: PathBuf,
    #[command(flatten)]
    sink: SinkArgs,
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
}

fn parse_filter(s: &str) -> Result<Filter, String> {
    s.parse()
}

/// `1GiB`, `256MiB`, `64KiB`, `1000000` (bytes).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a size such as 1GiB, 256MiB or 65536"))?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("`{s}`: unknown unit `{other}` (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mul)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("`{s}`: must be more than zero and fit in 64 bits"))
}

impl SinkArgs {
    fn pipe(&self) -> Result<PipeOptions> {
        if self.window == 0 {
            anyhow::bail!("--window must be at least 1");
        }
        if self.spool_max < 256 << 10 {
            anyhow::bail!("--spool-max must be at least 256KiB");
        }
        Ok(PipeOptions {
            to: self.to.clone(),
            spool_dir: self.spool.clone(),
            spool_max: self.spool_max,
            when_full: match self.when_full {
                WhenFullArg::Block => WhenFull::Block,
                WhenFullArg::DropOldest => WhenFull::DropOldest,
            },
            window: self.window,
            rotate_bytes: self.rotate,
        })
    }
}

#[allow(clippy::print_stderr)]
fn log_line(what: &'static str) -> whittle_logs::Log {
    Arc::new(move |m: &str| {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        eprintln!("{now} whittle logs {what}: {m}");
    })
}

#[allow(clippy::print_stdout)]
pub fn run(a: Args) -> Result<ExitCode> {
    match a.command {
        Sub::Ship(s) => {
            let max_record = usize::try_from(s.max_record)?;
            if max_record > 16 << 20 {
                anyhow::bail!("--max-record must be at most 16MiB");
            }
            whittle_logs::ship::run(
                whittle_logs::ship::Options {
                    host: s.sink.host.clone(),
                    pipe: s.sink.pipe()?,
                    filters: s.filter,
                    max_record,
                },
                log_line("ship"),
            )?;
        }
        Sub::Devlog(d) => {
            whittle_logs::devlog::run(
                whittle_logs::devlog::Options {
                    host: d.sink.host.clone(),
                    dir: d.dir,
                    pipe: d.sink.pipe()?,
                },
                log_line("devlog"),
            )?;
        }
        Sub::Status(s) => {
            let v = whittle_logs::status::read(&s.spool)?;
            if s.json {
                crate::output::print_json(&v)?;
            } else {
                print!("{}", whittle_logs::status::render_text(&v));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
