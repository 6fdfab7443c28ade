//! `whittle family build FAMILY.toml`: slim images of several apps on one shared base layer.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use whittle_family::{FamilyOptions, FamilySpec, Member};

use crate::output::{print_json, with_build_progress};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Build every member on the family's shared base layer (and their debug variants).
    #[command(after_help = BUILD_EXAMPLES)]
    Build(BuildArgs),
}

const BUILD_EXAMPLES: &str = "\
Examples:
  whittle family build shop.toml
  whittle family build shop.toml --json | jq '.members[] | {name, app_size, traced}'
  whittle family build shop.toml --rebase     # recompute the base layer, rewrite the lock";

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// The family file (base, lock, [[member]] name/source/dest/args/debug).
    family: PathBuf,
    /// Recompute the base layer from the members and rewrite the lock.
    #[arg(long)]
    rebase: bool,
    /// Print the summary as JSON (schema whittle.family/v1).
    #[arg(long)]
    json: bool,
}

/// A member's `args`, parsed by the very parser of `whittle build` (its SRC and DEST are the
/// member's `source` and `dest`).
#[derive(Debug, Parser)]
#[command(name = "args", no_binary_name = true)]
struct MemberArgs {
    #[command(flatten)]
    build: super::build::Args,
}

pub fn run(a: Args) -> Result<ExitCode> {
    match a.command {
        Command::Build(b) => build(b),
    }
}

fn members(spec: &FamilySpec) -> Result<Vec<Member>> {
    let file = spec.path.display();
    spec.members
        .iter()
        .map(|m| {
            let mut argv = vec![m.source.to_string(), m.dest.to_string()];
            argv.extend(m.args.iter().cloned());
            let parsed = MemberArgs::try_parse_from(&argv).map_err(|e| {
                let msg = e.render().to_string();
                let first = msg
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("bad args")
                    .trim_start_matches("error: ")
                    .to_string();
                anyhow::anyhow!("{file}: member {:?}: args: {first}", m.name)
            })?;
            if let Some(flag) = parsed.build.family_conflicts() {
                anyhow::bail!(
                    "{file}: member {:?}: args: {flag} is not for a family member",
                    m.name
                );
            }
            let opts = parsed
                .build
                .options(m.debug)
                .map_err(|e| anyhow::anyhow!("{file}: member {:?}: args: {e}", m.name))?;
            Ok(Member {
                spec: m.clone(),
                opts,
            })
        })
        .collect()
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn build(a: BuildArgs) -> Result<ExitCode> {
    let spec = FamilySpec::load(&a.family)?;
    let members = members(&spec)?;
    whittle_sandbox::install_interrupt_handler();
    let opts = FamilyOptions { rebase: a.rebase };
    let report = with_build_progress("reading the images", |p| {
        whittle_family::build(&spec, &members, &opts, p)
    });
    let report = match report {
        Ok(r) => r,
        Err(whittle_family::Error::Interrupted) => {
            eprintln!("whittle: interrupted; nothing was written");
            return Ok(ExitCode::from(130));
        }
        Err(e) => return Err(e.into()),
    };
    if a.json {
        print_json(&report)?;
    } else {
        print!("{}", report.render());
    }
    if !report.written {
        let failed: Vec<&str> = report
            .members
            .iter()
            .filter(|m| m.verification == whittle_build::report::Status::Failed)
            .map(|m| m.name.as_str())
            .collect();
        eprintln!(
            "whittle: error: verification failed for {}; nothing was written",
            failed.join(", ")
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
