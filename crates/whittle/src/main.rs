//! The `whittle` command line. It parses arguments, calls one library function per command
//! and maps failures to exit codes; all the work lives in the library crates.

mod commands;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Lean containers: inspect, squash and slim container images; watch the containers they run in.
#[derive(Debug, Parser)]
#[command(name = "whittle", version, about, propagate_version = true, after_help = MAIN_EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const MAIN_EXAMPLES: &str = "\
Examples:
  whittle build docker-archive:nginx.tar docker-archive:nginx-slim.tar
  whittle family build shop.toml
  whittle inspect docker-daemon:nginx:latest
  whittle metrics serve --listen 127.0.0.1:9323
  whittle logs ship --to relp://127.0.0.1:2514 --spool /var/lib/whittle/logs
  whittle route run --state-dir /var/lib/whittle/route
  whittle top";

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a slim image: trace it, keep what it needs, verify the result with the same probes.
    #[command(after_help = "\
Examples:
  whittle build docker-archive:nginx.tar docker-archive:nginx-slim.tar --report r.json
  whittle build python.tar oci:py-slim:v1 --http-probe 8000/ --exec-probe 'python3 -c \"import ssl\"'
  whittle build docker-daemon:shop/web:1.4 --debug-variant --debug-tools sh,ls,cat")]
    Build(Box<commands::build::Args>),
    /// Slim images of several apps on one shared base layer, with debug variants.
    #[command(after_help = "\
Examples:
  whittle family build shop.toml
  whittle family build shop.toml --rebase --json")]
    Family(commands::family::Args),
    /// Squash layers into one, optionally dropping junk.
    #[command(after_help = "\
Examples:
  whittle squash --drop-junk docker-daemon:nginx:latest docker-daemon:nginx:squashed
  whittle squash --from-layer 1 --drop '/usr/share/perl*' docker-archive:app.tar oci:app-slim:v1")]
    Squash(commands::squash::Args),
    /// Report on an image: layers, sizes, wasted space, junk and security notes.
    #[command(after_help = "\
Examples:
  whittle inspect docker-archive:nginx.tar
  whittle inspect docker-daemon:nginx:latest --json | jq .efficiency")]
    Inspect(commands::inspect::Args),
    /// The files a program in the image needs, found without running it.
    #[command(after_help = "\
Examples:
  whittle deps docker-archive:nginx.tar
  whittle deps python.tar '/usr/bin/*'
  whittle deps --strict --json oci:app:v1 > closure.json")]
    Deps(commands::deps::Args),
    /// Run the image in a sandbox, probe it, and record every file it touches.
    #[command(after_help = "\
Examples:
  whittle trace docker-archive:nginx.tar
  whittle trace python.tar --http-probe 8000/index.html -o trace.json
  whittle trace cli-image.tar --timeout 30 --json")]
    Trace(commands::trace::Args),
    /// Per-container metrics from the kernel: serve OpenMetrics, record, replay, plot, PCP.
    Metrics(commands::metrics::Args),
    /// Every container's stdout/stderr to central syslog (RELP, RFC 5424/TCP, files), nothing lost.
    Logs(commands::logs::Args),
    /// A live view of containers (CPU, memory, network, I/O, pids, throttling, health).
    Top(commands::top::Args),
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  whittle completions bash > /etc/bash_completion.d/whittle
  whittle completions zsh > ~/.zfunc/_whittle
  whittle completions fish > ~/.config/fish/completions/whittle.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this command line's own definition.
    #[command(after_help = "\
Examples:
  whittle man > whittle.1 && man ./whittle.1
  whittle man --dir /usr/local/share/man/man1    # whittle.1 and whittle-COMMAND.1")]
    Man {
        /// Write whittle.1 and one page per command into DIR instead of printing whittle.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// Troubleshoot a thin container from outside: a toolbox shell in its namespaces,
    /// port-forward, cp; nothing written into it.
    Debug(commands::debug::Args),
    /// The containers a debug session can target, and which run whittle slim images.
    Ps(commands::ps::Args),
    /// Least-privilege run settings (seccomp, capabilities, user, read-only root), proven by
    /// running the image under them in the Docker Engine. Exit 3: no settings made it work.
    #[command(after_help = "\
Examples:
  whittle harden docker-daemon:whittle-fixture/nginx:latest --out nginx-harden
  nginx-harden/run.sh --name web -p 8080:80
  whittle harden docker-daemon:shop/api:2 --http-probe 8000/health --json
  whittle harden docker-daemon:redis:7 --exec-probe 'redis-cli ping' --keep-user
  whittle harden docker-daemon:web:1 --deny bind      # exit 3: says who needed bind")]
    Harden(commands::harden::Args),
    /// Security facts of an image and its slim version side by side: user, setuid/setgid
    /// files, file capabilities, shells, package managers, world-writable paths, ports bound.
    #[command(after_help = "\
Examples:
  whittle audit docker-archive:nginx.tar docker-archive:nginx-slim.tar
  whittle audit docker-daemon:shop/web:1.4 --no-trace --json")]
    Audit(commands::audit::Args),
    /// Containers into a local HAProxy: readiness-gated, drained on stop, no reloads.
    Route(commands::route::Args),
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    // A run killed with SIGKILL could not delete its extraction: the next run does.
    for p in whittle_sandbox::remove_leftovers() {
        eprintln!(
            "whittle: removed {}, left behind by a killed whittle run",
            p.display()
        );
    }
    let result = match cli.command {
        Command::Build(a) => commands::build::run(*a),
        Command::Family(a) => commands::family::run(a),
        Command::Squash(a) => commands::squash::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Deps(a) => commands::deps::run(a),
        Command::Trace(a) => commands::trace::run(a),
        Command::Metrics(a) => commands::metrics::run(a),
        Command::Logs(a) => commands::logs::run(a),
        Command::Top(a) => commands::top::run(a),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "whittle",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => man(dir),
        Command::Debug(a) => commands::debug::run(a),
        Command::Ps(a) => commands::ps::run(a),
        Command::Harden(a) => commands::harden::run(a),
        Command::Audit(a) => commands::audit::run(a),
        Command::Route(a) => commands::route::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output::error_line(&e);
            ExitCode::from(1)
        }
    }
}

fn man(dir: Option<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    };
    let page = |c: clap::Command, name: String| -> anyhow::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf)?;
        whittle_image::write::write_file(&dir.join(format!("{name}.1")), &buf)?;
        Ok(())
    };
    for sub in cmd.get_subcommands() {
        let name = format!("whittle-{}", sub.get_name());
        // (A page per command, printed once: the name lives as long as the process.)
        let static_name: &'static str = name.clone().leak();
        page(sub.clone().name(static_name), name)?;
    }
    page(cmd, "whittle".into())?;
    Ok(ExitCode::SUCCESS)
}
