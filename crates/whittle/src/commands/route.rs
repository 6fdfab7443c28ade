//! `whittle route run|status`: containers into HAProxy on localhost, readiness-gated, drained
//! on stop, membership changed through the runtime API only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use whittle_route::state::State;
use whittle_route::Options;

use crate::output::print_json;

const EXAMPLES: &str = "Examples:
  docker run -d -p 127.0.0.1::8000 --label whittle.route=web:8080:8000 my/web:slim
  whittle route run --state-dir /var/lib/whittle/route
  whittle route status --state-dir /var/lib/whittle/route --json | jq '.servers[] | select(.state == \"ready\")'";

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Keep a local HAProxy in step with the containers labelled `whittle.route=SERVICE:PORT[:CPORT]`.
    #[command(after_help = "Examples:
  whittle route run --state-dir /var/lib/whittle/route
  whittle route run --bind 127.0.0.1 --haproxy /usr/sbin/haproxy --state-dir /run/whittle-route
  whittle route run --network backend --only-label team=shop --state-dir /run/shop-route
  whittle route run --attach /run/haproxy/admin.sock --state-dir /var/lib/whittle/route")]
    Run(RunArgs),
    /// Show the services and servers a `route run` keeps (from its state directory).
    #[command(after_help = "Examples:
  whittle route status --state-dir /var/lib/whittle/route
  whittle route status --state-dir /var/lib/whittle/route --json | jq .convergence_ms")]
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Address every service's frontend listens on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// The HAProxy binary (2.6 or newer).
    #[arg(long, default_value = "haproxy")]
    haproxy: PathBuf,
    /// HAProxy's config, sockets and pid file, and route.json (created if missing).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/whittle/route")]
    state_dir: PathBuf,
    /// Docker Engine (or podman socket) address: unix:///path or tcp://host:port.
    #[arg(long, env = "DOCKER_HOST")]
    host: Option<String>,
    /// Reach containers at their address on this network instead of a published port.
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
    /// Route only containers (or Swarm services) carrying this label (KEY or KEY=VALUE; repeatable).
    #[arg(long = "only-label", value_name = "KEY[=VALUE]")]
    only: Vec<String>,
    /// A container taken out for being unhealthy stays out at least this long.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    hold_down: Duration,
    /// At most this many runtime API commands per second.
    #[arg(long, default_value_t = 500)]
    max_commands: u32,
    /// How long a draining server may keep sessions before they are cut.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Rewrite haproxy.cfg and reload on every change, as peers do (for comparisons only).
    #[arg(long, hide = true)]
    reload_always: bool,
    /// Drive an HAProxy started elsewhere through this admin-level stats socket (its own
    /// config, its own frontends; each service needs a backend of its name there).
    #[arg(long, value_name = "SOCKET", conflicts_with_all = ["bind", "haproxy", "reload_always"])]
    attach: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The state directory of the `route run`.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/whittle/route")]
    state_dir: PathBuf,
    /// JSON (the route.json schema, see README) instead of the table.
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

#[allow(clippy::print_stderr)]
fn log_line() -> whittle_route::Log {
    Arc::new(|m: &str| {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        eprintln!("{now} whittle route: {m}");
    })
}

pub fn run(a: Args) -> Result<ExitCode> {
    match a.command {
        Sub::Run(r) => {
            let only = r
                .only
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (l.clone(), None),
                })
                .collect();
            whittle_route::run(
                Options {
                    host: r.host,
                    bind: r.bind,
                    haproxy: r.haproxy,
                    state_dir: r.state_dir,
                    network: r.network,
                    only,
                    hold_down: r.hold_down,
                    max_commands: r.max_commands,
                    drain_timeout: r.drain_timeout,
                    reload_always: r.reload_always,
                    attach: r.attach,
                },
                log_line(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Sub::Status(s) => status(&s),
    }
}

#[allow(clippy::print_stdout)]
fn status(s: &StatusArgs) -> Result<ExitCode> {
    let st = State::read(&s.state_dir).with_context(|| {
        format!(
            "{}: no route run has kept state here",
            s.state_dir.display()
        )
    })?;
    if s.json {
        print_json(&st)?;
        return Ok(ExitCode::SUCCESS);
    }
    let worker = st.haproxy_worker.map_or("-".into(), |p| p.to_string());
    match &st.attached {
        Some(socket) => println!(
            "HAProxy worker {worker} (attached at {socket}) · {} services",
            st.services.len()
        ),
        None => println!(
            "HAProxy master {} worker {worker} · {} reloads · {} services",
            st.haproxy_master.map_or("-".into(), |p| p.to_string()),
            st.reloads,
            st.services.len()
        ),
    }
    let head = [
        "SERVICE",
        "SERVER",
        "CONTAINER",
        "ADDRESS",
        "STATE",
        "SINCE",
    ];
    let rows: Vec<[String; 6]> = st
        .servers
        .iter()
        .map(|r| {
            [
                // Port 0: a service adopted from an attached HAProxy before any container
                // named its listen port.
                match st.services.get(&r.service).copied().unwrap_or(0) {
                    0 => r.service.clone(),
                    port => format!("{}:{port}", r.service),
                },
                r.server.clone(),
                if r.container_name.is_empty() {
                    r.container[..r.container.len().min(12)].to_string()
                } else {
                    r.container_name.clone()
                },
                r.address.clone(),
                r.state.clone(),
                r.since.clone(),
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<0$}  ", w[i]));
            }
        }
        out
    };
    println!("{}", line(&head.map(String::from)));
    for row in &rows {
        println!("{}", line(row));
    }
    Ok(ExitCode::SUCCESS)
}
