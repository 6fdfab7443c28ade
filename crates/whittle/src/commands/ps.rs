//! `whittle ps`: the containers a debug session can target.

use std::process::ExitCode;

use anyhow::Result;
use whittle_engine::Engine;

use crate::output::print_json;

const EXAMPLES: &str = "Examples:
  whittle ps
  whittle ps --all --json | jq '.containers[] | select(.slim) | .name'";

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Stopped containers too.
    #[arg(long, short)]
    all: bool,
    /// JSON (schema whittle.ps/v1) instead of the table.
    #[arg(long)]
    json: bool,
    /// Docker Engine (or podman socket) address.
    #[arg(long, env = "DOCKER_HOST")]
    host: Option<String>,
}

#[derive(serde::Serialize)]
struct PsJson {
    schema: &'static str,
    containers: Vec<whittle_debug::ps::Row>,
}

#[allow(clippy::print_stdout)]
pub fn run(a: Args) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(async {
        let engine = Engine::connect_negotiated(a.host.as_deref())
            .await
            .map_err(whittle_debug::Error::from)?;
        whittle_debug::ps::rows(&engine, a.all).await
    })?;
    if a.json {
        print_json(&PsJson {
            schema: "whittle.ps/v1",
            containers: rows,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.image.clone(),
                match (&r.source, r.slim) {
                    (Some(s), _) => format!("slim of {}", &s[..s.len().min(19)]),
                    (None, _) => "-".into(),
                },
                r.pid.map_or("-".into(), |p| p.to_string()),
                if r.ports.is_empty() {
                    "-".into()
                } else {
                    r.ports.join(",")
                },
                r.health.clone().unwrap_or_else(|| r.state.clone()),
            ]
        })
        .collect();
    let head = ["NAME", "IMAGE", "WHITTLE", "PID", "PORTS", "HEALTH"];
    let mut w = head.map(str::len);
    for row in &table {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<0$}  ", w[i]));
            }
        }
        s
    };
    println!("{}", line(&head.map(String::from)));
    for row in &table {
        println!("{}", line(row));
    }
    Ok(ExitCode::SUCCESS)
}
