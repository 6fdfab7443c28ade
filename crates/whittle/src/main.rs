//! The `whittle` command line. It parses arguments, calls one library function per command
//! and maps failures to exit codes; all the work lives in the library crates.

mod commands;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Lean containers: inspect, squash and slim container images.
#[derive(Debug, Parser)]
#[command(name = "whittle", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a slim image: trace it, keep what it needs, verify the result with the same probes.
    Build(commands::build::Args),
    /// Squash layers into one, optionally dropping junk.
    Squash(commands::squash::Args),
    /// Report on an image: layers, sizes, wasted space, junk and security notes.
    Inspect(commands::inspect::Args),
    /// The files a program in the image needs, found without running it.
    Deps(commands::deps::Args),
    /// Run the image in a sandbox, probe it, and record every file it touches.
    Trace(commands::trace::Args),
    /// Per-container metrics from the kernel: serve OpenMetrics, record, replay, plot, PCP.
    Metrics(commands::metrics::Args),
    /// A live view of containers (CPU, memory, network, I/O, pids, throttling, health).
    Top(commands::top::Args),
    /// Troubleshoot a thin container from outside: a toolbox shell in its namespaces,
    /// port-forward, cp; nothing written into it.
    Debug(commands::debug::Args),
    /// The containers a debug session can target, and which run whittle slim images.
    Ps(commands::ps::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(a) => commands::build::run(a),
        Command::Squash(a) => commands::squash::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Deps(a) => commands::deps::run(a),
        Command::Trace(a) => commands::trace::run(a),
        Command::Metrics(a) => commands::metrics::run(a),
        Command::Top(a) => commands::top::run(a),
        Command::Debug(a) => commands::debug::run(a),
        Command::Ps(a) => commands::ps::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output::error_line(&e);
            ExitCode::from(1)
        }
    }
}
