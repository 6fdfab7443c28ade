//! `whittle debug`: a toolbox shell in a target's namespaces, a port-forward into its network
//! namespace, and `cp` out of it — nothing written into the target.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use whittle_debug::toolbox::{Choice, DEFAULT_CACHE};
use whittle_debug::{forward, DebugOptions};
use whittle_engine::Target;

const EXAMPLES: &str = "Examples:
  whittle debug web                                  # a shell from web's debug variant or fat source
  whittle debug web --toolbox debian:12 -- strace -p 1
  whittle debug web --as-target -- cat /target/run/app.pid
  whittle debug jvm --toolbox jvm-debug --target-tmp -- jcmd 1 Thread.print
  whittle debug port-forward web 18080:8080           # curl localhost:18080 reaches web's 127.0.0.1:8080
  whittle debug cp web:/var/log/app.log ./app.log";

#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = EXAMPLES
)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<Sub>,
    /// A container name or id, a Swarm service or task (its running task on this node), or
    /// pid:N for any process.
    #[arg(required = true)]
    target: Option<Target>,
    /// The image whose root file system the session runs in (never pulled). `auto`: the
    /// target image's `-debug` tag, else its fat source (label org.whittle.source).
    #[arg(long, default_value = "auto", value_name = "IMAGE|auto")]
    toolbox: Choice,
    /// Run as the target's uid, gids, environment and working directory (no capabilities)
    /// instead of root with every capability.
    #[arg(long)]
    as_target: bool,
    /// Use the target's own /tmp (writable) instead of a private one: for tools that meet
    /// their target through files there, such as the JDK's jcmd and jstack.
    #[arg(long)]
    target_tmp: bool,
    /// Where unpacked toolboxes are kept, one directory per image id.
    #[arg(long, env = "WHITTLE_TOOLBOX_CACHE", default_value = DEFAULT_CACHE)]
    cache_dir: PathBuf,
    /// Docker Engine (or podman socket) address.
    #[arg(long, env = "DOCKER_HOST")]
    host: Option<String>,
    /// The command to run (default: the toolbox's /bin/sh).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Relay 127.0.0.1:LOCAL on the host to ADDR:PORT (default 127.0.0.1) inside the target's
    /// network namespace, until Ctrl-C.
    PortForward {
        target: Target,
        /// LOCAL:[ADDR:]PORT (LOCAL 0: any free port, printed).
        spec: forward::Spec,
        #[arg(long, env = "DOCKER_HOST")]
        host: Option<String>,
    },
    /// Copy a file or directory out of a running or stopped target.
    Cp {
        /// TARGET:PATH (PATH absolute inside the target).
        source: String,
        dest: PathBuf,
        #[arg(long, env = "DOCKER_HOST")]
        host: Option<String>,
    },
}

#[allow(clippy::print_stderr)]
fn note(line: &str) {
    eprintln!("{line}");
}

pub fn run(a: Args) -> Result<ExitCode> {
    match a.sub {
        Some(Sub::PortForward { target, spec, host }) => {
            let (what, ns) = whittle_debug::netns_of(host.as_deref(), &target)?;
            whittle_debug::forward::serve(
                ns,
                spec,
                |local| {
                    note(&format!(
                        "forwarding {local} → {} in the network namespace of {what} (Ctrl-C stops)",
                        spec.remote
                    ))
                },
                note,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Sub::Cp { source, dest, host }) => {
            let Some((t, path)) = source.rsplit_once(':').filter(|(_, p)| p.starts_with('/'))
            else {
                bail!("`{source}`: expected TARGET:/absolute/path");
            };
            let target: Target = t.parse().map_err(anyhow::Error::msg)?;
            let done = whittle_debug::cp(host.as_deref(), &target, path.as_ref(), &dest)
                .with_context(|| format!("copy {source} to {}", dest.display()))?;
            for s in &done.skipped {
                note(&format!("skipped {s}"));
            }
            note(&format!(
                "copied {} files, {} directories, {} symlinks ({} bytes)",
                done.files, done.dirs, done.symlinks, done.bytes
            ));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            // The toolbox is read with whittle-image's engine reader, which follows DOCKER_HOST:
            // point it at the same engine as --host. No thread runs yet.
            if let Some(h) = &a.host {
                std::env::set_var("DOCKER_HOST", h);
            }
            let Some(target) = a.target else {
                bail!("a TARGET is needed (see whittle ps)");
            };
            let code = match whittle_debug::debug(
                &DebugOptions {
                    host: a.host,
                    target,
                    toolbox: a.toolbox,
                    as_target: a.as_target,
                    target_tmp: a.target_tmp,
                    command: a.command,
                    cache: a.cache_dir,
                },
                &note,
            ) {
                Ok(code) => code,
                Err(whittle_debug::Error::Command { code, message }) => {
                    note(&format!("whittle debug: {message}"));
                    code
                }
                Err(e) => return Err(e.into()),
            };
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
        }
    }
}
