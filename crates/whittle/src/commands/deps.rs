use std::process::ExitCode;

use anyhow::Result;
use whittle_image::ImageRef;

use crate::output::{byte_progress, print_json};

/// `whittle deps SRC [PATH...]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image to analyse.
    src: String,
    /// Programs or files to start from (default: the image's Entrypoint + Cmd). Globs such as
    /// '/usr/bin/*' match the image's executable files.
    paths: Vec<String>,
    /// Print the closure as JSON (schema in the README).
    #[arg(long)]
    json: bool,
    /// Exit 1 when something required is missing.
    #[arg(long)]
    strict: bool,
}

#[allow(clippy::print_stdout)]
pub fn run(a: Args) -> Result<ExitCode> {
    let bar = byte_progress("reading layers");
    let tick = |n: u64| bar.inc(n);
    let src = ImageRef::parse(&a.src)?;
    let closure = whittle_deps::image::image_closure(&src, a.paths, Some(&tick));
    bar.finish_and_clear();
    let closure = closure?;
    if a.json {
        print_json(&closure)?;
    } else {
        print!("{}", closure.render());
    }
    if a.strict && closure.has_required_missing() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
