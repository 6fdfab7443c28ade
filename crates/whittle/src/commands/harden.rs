//! `whittle harden SRC`: least-privilege run settings, proven under the real engine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use whittle_harden::{harden, write_out, Options, Outcome, Report};
use whittle_image::ImageRef;

use crate::commands::trace::RunArgs;
use crate::output::{byte_progress, print_json};

/// `whittle harden SRC [probes] [--out DIR] [--json]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image, in the engine: docker-daemon:NAME:TAG.
    src: String,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    harden: HardenArgs,
    /// Print the report as JSON (schema whittle.harden/v1) instead of the summary.
    #[arg(long)]
    json: bool,
}

/// The flags of harden that `whittle build --harden` shares.
#[derive(Debug, Clone, clap::Args)]
pub struct HardenArgs {
    /// Where seccomp.json, run.sh, compose.yaml and report.json go (written only when proven).
    #[arg(long, value_name = "DIR", default_value = "harden")]
    pub out: PathBuf,
    /// Never allow the system call NAME (repeatable): try a profile without it.
    #[arg(long = "deny", value_name = "SYSCALL")]
    pub deny: Vec<String>,
    /// Never add the capability CAP (repeatable), e.g. CAP_SETUID.
    #[arg(long = "no-cap", value_name = "CAP")]
    pub no_caps: Vec<String>,
    /// Keep the image's user even when it is root (then capabilities are proven one by one).
    #[arg(long)]
    pub keep_user: bool,
    /// Rounds of every probe in each hardened verification run.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeats: usize,
}

impl HardenArgs {
    pub fn options(&self, run: whittle_sandbox::Options) -> Result<Options> {
        let mut no_caps = std::collections::BTreeSet::new();
        for c in &self.no_caps {
            let c = c.to_ascii_uppercase();
            let c = if c.starts_with("CAP_") {
                c
            } else {
                format!("CAP_{c}")
            };
            if whittle_sandbox::caps_mask_of([c.as_str()]).is_none() {
                anyhow::bail!("--no-cap {c}: not a Linux capability");
            }
            no_caps.insert(c);
        }
        anyhow::ensure!(self.repeats >= 1, "--repeats must be at least 1");
        Ok(Options {
            run,
            deny: self.deny.iter().cloned().collect(),
            no_caps,
            keep_user: self.keep_user,
            repeats: self.repeats,
            ..Options::default()
        })
    }
}

/// Hardens `src`, writes the files when proven, prints (`print`: Some(json?), None: only the
/// error line); exit 0 proven, 3 refused.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn harden_and_report(
    src: &ImageRef,
    opts: &Options,
    a: &HardenArgs,
    print: Option<bool>,
) -> Result<ExitCode> {
    whittle_sandbox::install_interrupt_handler();
    let bar = byte_progress("reading layers");
    let tick = |n: u64| bar.inc(n);
    let report = harden(src, opts, Some(&tick));
    bar.finish_and_clear();
    let report: Report = match report {
        Ok(r) => r,
        Err(whittle_harden::Error::Interrupted) => {
            eprintln!("whittle: interrupted; nothing was written");
            return Ok(ExitCode::from(130));
        }
        Err(e) => return Err(e.into()),
    };
    if report.outcome == Outcome::Proven {
        write_out(&a.out, &report)?;
    }
    if print == Some(true) {
        print_json(&report)?;
    } else if print == Some(false) {
        print!("{}", report.render());
        if report.outcome == Outcome::Proven {
            println!(
                "written    {}/{{seccomp.json,run.sh,compose.yaml,report.json}}",
                a.out.display()
            );
        }
    }
    if report.outcome == Outcome::Refused {
        eprintln!(
            "whittle: error: {}; nothing was written to {}",
            crate::output::one_line(report.error.as_deref().unwrap_or("not proven")),
            a.out.display()
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(a: Args) -> Result<ExitCode> {
    let src = ImageRef::parse(&a.src)?;
    let opts = a.harden.options(a.run.options()?)?;
    harden_and_report(&src, &opts, &a.harden, Some(a.json))
}
