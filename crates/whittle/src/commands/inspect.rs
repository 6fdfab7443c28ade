use std::process::ExitCode;

use anyhow::Result;
use whittle_image::ImageRef;

/// `whittle inspect SRC`
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_parser = super::image_ref)]
    src: ImageRef,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let _ = a;
    anyhow::bail!("inspect: not built yet")
}
