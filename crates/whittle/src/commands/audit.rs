//! `whittle audit IMAGE [SLIM]`: security facts, side by side.

use std::process::ExitCode;

use anyhow::Result;
use whittle_image::ImageRef;

use crate::output::{byte_progress, print_json};

/// `whittle audit IMAGE [SLIM] [--json]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The (fat) image.
    image: String,
    /// Its slim version, shown beside it.
    slim: Option<String>,
    /// Do not run the images in the sandbox (then listening ports are not known).
    #[arg(long)]
    no_trace: bool,
    /// Print JSON (schema whittle.audit/v1): {"schema", "images": [facts…]}.
    #[arg(long)]
    json: bool,
}

#[allow(clippy::print_stdout)]
pub fn run(a: Args) -> Result<ExitCode> {
    let mut refs = vec![ImageRef::parse(&a.image)?];
    if let Some(s) = &a.slim {
        refs.push(ImageRef::parse(s)?);
    }
    whittle_sandbox::install_interrupt_handler();
    let trace = whittle_sandbox::Options {
        timeout: std::time::Duration::from_secs(60),
        ..whittle_sandbox::Options::default()
    };
    let mut facts = Vec::new();
    for r in &refs {
        let bar = byte_progress("reading layers");
        let tick = |n: u64| bar.inc(n);
        let f = whittle_harden::audit::audit(r, (!a.no_trace).then_some(&trace), Some(&tick));
        bar.finish_and_clear();
        facts.push(f?);
    }
    if a.json {
        print_json(&serde_json::json!({"schema": "whittle.audit/v1", "images": facts}))?;
    } else {
        print!("{}", whittle_harden::audit::render(&facts));
    }
    Ok(ExitCode::SUCCESS)
}
