//! `whittle build SRC [DEST]`: the slim image, verified.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use whittle_build::debug::DebugOptions;
use whittle_build::{build, BuildOptions, Error as BuildError};
use whittle_image::write::{check_file_destination, write_file};
use whittle_image::{ImageRef, Transport};

use crate::commands::harden::HardenArgs;
use crate::commands::squash::CompressArg;
use crate::commands::trace::RunArgs;
use crate::output::{print_json, with_build_progress};

/// `whittle build SRC [DEST] [probes] [options]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The fat image (docker-archive:, oci:, oci-archive:, docker-daemon: or a path).
    src: String,
    /// Where the slim image goes. Optional for a docker-daemon: source (then NAME:TAG-slim).
    dest: Option<String>,
    #[command(flatten)]
    run: RunArgs,
    /// Keep PATH (a directory with its subtree) and everything its programs need (repeatable).
    #[arg(long = "include", value_name = "PATH")]
    includes: Vec<String>,
    /// Keep the program NAME (found through the image's PATH) with its closure (repeatable).
    #[arg(long = "include-exe", value_name = "NAME")]
    include_exes: Vec<String>,
    /// Never keep paths matching GLOB (on /absolute/paths; a directory takes its subtree).
    /// Wins over every other reason, auto-include included.
    #[arg(long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Run as and set the config's User to UID[:GID] (or NAME[:GROUP]).
    #[arg(long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// 2: base layer (what the source's lowest layer provided) + app layer; 1: one layer.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    layers: u8,
    /// Do not run the slim image to check it.
    #[arg(long)]
    no_verify: bool,
    /// On a verification difference, do not add what the slim run looked for and retry.
    #[arg(long)]
    no_auto_include: bool,
    /// Write the JSON report (schema whittle.build/v1) to FILE, also when verification fails.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write a self-contained HTML page with a treemap of kept and dropped bytes to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print the report as JSON instead of the summary.
    #[arg(long)]
    json: bool,
    /// Name (NAME:TAG) or OCI tag of the slim image.
    #[arg(long)]
    tag: Option<String>,
    /// Compression of the slim layers.
    #[arg(long, value_enum, default_value = "none")]
    compress: CompressArg,
    /// Also write the debug variant: the slim layers plus one layer of tools, tagged -debug,
    /// written beside DEST (out/web.tar → out/web-debug.tar).
    #[arg(long)]
    debug_variant: bool,
    /// Tools of the debug variant, found through PATH in the toolbox (default: sh, ls, cat,
    /// ps, top, curl, ip, ss, strace — those the toolbox has).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    debug_tools: Option<Vec<String>>,
    /// The image the debug tools come from (default: SRC).
    #[arg(long, value_name = "IMAGE")]
    debug_from: Option<String>,
    /// Then harden the slim image (DEST must be docker-daemon:): the run settings of
    /// `whittle harden`, proven with the same probes, written to --out.
    #[arg(long)]
    harden: bool,
    #[command(flatten)]
    harden_args: HardenArgs,
}

impl Args {
    /// The build options these flags give (`debug` forces the debug variant on, as a
    /// family member's `debug = true` does).
    pub fn options(self, debug: bool) -> Result<BuildOptions> {
        if !(self.debug_variant || debug)
            && (self.debug_tools.is_some() || self.debug_from.is_some())
        {
            anyhow::bail!("--debug-tools and --debug-from need --debug-variant");
        }
        let debug = if self.debug_variant || debug {
            Some(DebugOptions {
                tools: self.debug_tools,
                from: self
                    .debug_from
                    .as_deref()
                    .map(ImageRef::parse)
                    .transpose()?,
            })
        } else {
            None
        };
        Ok(BuildOptions {
            run: self.run.options()?,
            includes: self.includes,
            include_exes: self.include_exes,
            excludes: self.excludes,
            user: self.user,
            layers: self.layers,
            verify: !self.no_verify,
            auto_include: !self.no_auto_include,
            tag: self.tag,
            compression: Some(self.compress.into()),
            treemap: self.html.is_some(),
            debug,
        })
    }

    /// Flags that make no sense inside a family member's `args` (the family writes its own
    /// summary, and the member's `dest` and `debug` say where and whether).
    pub fn family_conflicts(&self) -> Option<&'static str> {
        if self.json {
            Some("--json")
        } else if self.report.is_some() {
            Some("--report")
        } else if self.html.is_some() {
            Some("--html")
        } else if self.tag.is_some() {
            Some("--tag (the member's dest names the image)")
        } else if self.layers != 2 {
            Some("--layers (a family member has a base and an app layer)")
        } else if self.debug_variant {
            Some("--debug-variant (use debug = true)")
        } else if self.harden {
            Some("--harden (run whittle harden on the member's image)")
        } else {
            None
        }
    }
}

/// The destination: as given, or for a daemon source, the source's name tagged `-slim`.
fn destination(src: &ImageRef, dest: Option<&str>) -> Result<ImageRef> {
    match dest {
        Some(d) if d != "docker-daemon:" => Ok(ImageRef::parse(d)?),
        _ => match (&src.transport, &src.name) {
            (Transport::DockerDaemon, Some(name)) => Ok(ImageRef::parse(&format!(
                "docker-daemon:{}",
                whittle_build::slim_name(name)
            ))?),
            _ => anyhow::bail!(
                "DEST is required unless SRC is a docker-daemon: image (then it is NAME:TAG-slim)"
            ),
        },
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn run(a: Args) -> Result<ExitCode> {
    let src = ImageRef::parse(&a.src)?;
    let dest = destination(&src, a.dest.as_deref())?;
    // Report files are checked before any work, like the destination.
    for p in a.report.iter().chain(&a.html) {
        check_file_destination(p)?;
    }
    let (report_file, html_file, json) = (a.report.clone(), a.html.clone(), a.json);
    let harden = a.harden.then(|| a.harden_args.clone());
    if harden.is_some() {
        whittle_harden::engine_image(&dest)?;
    }
    let opts = a.options(false)?;
    let harden = harden
        .map(|h| h.options(opts.run.clone()).map(|o| (h, o)))
        .transpose()?;
    whittle_sandbox::install_interrupt_handler();
    let built = with_build_progress("reading the image", |p| build(&src, &dest, &opts, p));
    let built = match built {
        Ok(b) => b,
        Err(BuildError::Interrupted) => {
            eprintln!("whittle: interrupted; nothing was written");
            return Ok(ExitCode::from(130));
        }
        Err(e) => return Err(e.into()),
    };
    let report = &built.report;
    if let Some(path) = &report_file {
        write_file(path, &serde_json::to_vec_pretty(report)?)?;
    }
    if let Some(path) = &html_file {
        let page = whittle_build::html_page(report, built.treemap);
        write_file(path, whittle_build::html::render(&page).as_bytes())?;
    }
    if json {
        print_json(report)?;
    } else {
        print!("{}", report.render());
    }
    if !report.written {
        let what = report
            .verification
            .rounds
            .last()
            .and_then(|r| r.differences.first())
            .map(|d| format!("{} {}: fat {} / slim {}", d.probe, d.field, d.fat, d.slim))
            .unwrap_or_default();
        let missing = report
            .verification
            .rounds
            .last()
            .map(|r| r.missing.join(", "))
            .filter(|m| !m.is_empty())
            .map(|m| format!("; the slim run looked for {m}"))
            .unwrap_or_default();
        eprintln!(
            "whittle: error: verification failed, {dest} not written: {what}{}",
            crate::output::one_line(&missing)
        );
        return Ok(ExitCode::from(3));
    }
    if let Some((h, o)) = harden {
        return crate::commands::harden::harden_and_report(&dest, &o, &h, (!json).then_some(false));
    }
    Ok(ExitCode::SUCCESS)
}
