use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use whittle_image::ImageRef;
use whittle_sandbox::{Options, Outcome, Probe};

use crate::output::{byte_progress, print_json};

/// `whittle trace SRC [--http-probe PORT[/PATH]]... [--exec-probe CMD]... [--host-probe CMD]...`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image to run.
    src: String,
    #[command(flatten)]
    run: RunArgs,
    /// Print the full report as JSON (schema whittle.trace/v1).
    #[arg(long)]
    json: bool,
    /// Write the full JSON report to FILE.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Probes and limits of a sandboxed run, shared by `trace` and `build`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// GET PORT[/PATH] from inside the container's network namespace (repeatable; default:
    /// GET / on every exposed TCP port).
    #[arg(long = "http-probe", value_name = "PORT[/PATH]")]
    http_probe: Vec<Probe>,
    /// Run CMD inside the container, like `docker exec` (its files count; repeatable).
    #[arg(long = "exec-probe", value_name = "CMD")]
    exec_probe: Vec<String>,
    /// Run CMD on the host inside the container's network namespace only (repeatable).
    #[arg(long = "host-probe", value_name = "CMD")]
    host_probe: Vec<String>,
    /// Keep watching this many seconds after the probes.
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    continue_after: f64,
    /// How long a probed port may take to start listening.
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    ready_timeout: f64,
    /// Kill the whole sandbox after this many seconds.
    #[arg(long, value_name = "S", default_value_t = 300.0)]
    timeout: f64,
    /// Seconds between the stop signal and SIGKILL.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    grace: f64,
}

impl RunArgs {
    pub fn options(self) -> Result<Options> {
        let mut probes = self.http_probe;
        probes.extend(self.exec_probe.into_iter().map(Probe::Exec));
        probes.extend(self.host_probe.into_iter().map(Probe::Host));
        Ok(Options {
            probes,
            continue_after: secs("continue-after", self.continue_after)?,
            ready_timeout: secs("ready-timeout", self.ready_timeout)?,
            timeout: secs("timeout", self.timeout)?,
            grace: secs("grace", self.grace)?,
            ..Options::default()
        })
    }
}

fn secs(name: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{name}: {s} is not a duration"))
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn run(a: Args) -> Result<ExitCode> {
    let src = ImageRef::parse(&a.src)?;
    let opts = a.run.options()?;
    whittle_sandbox::install_interrupt_handler();
    let bar = byte_progress("reading layers");
    let tick = |n: u64| bar.inc(n);
    let report = whittle_sandbox::trace_image(&src, &opts, Some(&tick));
    bar.finish_and_clear();
    let report = report?;
    if let Some(path) = &a.output {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        print_json(&report)?;
    } else {
        print!("{}", report.render());
    }
    Ok(match report.outcome {
        Outcome::Ok => ExitCode::SUCCESS,
        Outcome::ExecFailed => {
            eprintln!(
                "whittle: error: {}",
                report.error.as_deref().unwrap_or("exec failed")
            );
            ExitCode::from(report.app.exit_code.unwrap_or(126) as u8)
        }
        Outcome::Interrupted => ExitCode::from(130),
        _ => {
            eprintln!(
                "whittle: error: {}",
                report.error.as_deref().unwrap_or("the run failed")
            );
            ExitCode::from(1)
        }
    })
}
