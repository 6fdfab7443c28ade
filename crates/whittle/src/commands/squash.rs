use std::process::ExitCode;

use anyhow::Result;
use whittle_image::compression::Compression;
use whittle_image::ImageRef;
use whittle_squash::{squash, SquashOptions};

use crate::output::{byte_progress, human_bytes, print_json};

/// `whittle squash SRC DEST`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source image (docker-archive:, oci:, oci-archive:, docker-daemon:, rootfs: or a path).
    src: String,
    /// Destination image.
    dest: String,
    /// First layer to squash (0-based); layers below it are kept byte for byte.
    #[arg(long, default_value_t = 0)]
    from_layer: usize,
    /// Name (NAME:TAG) or OCI tag of the result.
    #[arg(long)]
    tag: Option<String>,
    /// Drop paths matching GLOB (matched against /absolute/paths; a directory takes its subtree).
    #[arg(long = "drop", value_name = "GLOB")]
    drops: Vec<String>,
    /// Drop docs, man and info pages, locales but C/POSIX, unused zoneinfo, package manager
    /// caches and lists, /var/cache, /var/log and /tmp contents.
    #[arg(long)]
    drop_junk: bool,
    /// Compression of the new layer.
    #[arg(long, value_enum, default_value = "none")]
    compress: CompressArg,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `--compress`, shared by the commands that write layers.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompressArg {
    None,
    Gzip,
    Zstd,
}

impl From<CompressArg> for Compression {
    fn from(c: CompressArg) -> Compression {
        match c {
            CompressArg::None => Compression::None,
            CompressArg::Gzip => Compression::Gzip,
            CompressArg::Zstd => Compression::Zstd,
        }
    }
}

#[allow(clippy::print_stdout)]
pub fn run(a: Args) -> Result<ExitCode> {
    let opts = SquashOptions {
        from_layer: a.from_layer,
        tag: a.tag,
        drop_globs: a.drops,
        drop_junk: a.drop_junk,
        compression: Some(a.compress.into()),
    };
    let bar = byte_progress("reading layers");
    let tick = |n: u64| bar.inc(n);
    let (src, dest) = (ImageRef::parse(&a.src)?, ImageRef::parse(&a.dest)?);
    let report = squash(&src, &dest, &opts, Some(&tick));
    bar.finish_and_clear();
    let report = report?;
    if a.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("squashed {} → {}", report.source, report.destination);
    println!(
        "layers: {} → {}   size: {} → {}",
        report.layers_before,
        report.layers_after,
        human_bytes(report.size_before),
        human_bytes(report.size_after)
    );
    if !report.dropped.is_empty() {
        println!("dropped:");
        for d in &report.dropped {
            println!(
                "  {:<16} {:>7} files  {:>10}",
                d.class.name(),
                d.files,
                human_bytes(d.bytes)
            );
        }
        println!(
            "  {:<16} {:>7}        {:>10}",
            "total",
            "",
            human_bytes(report.dropped_bytes)
        );
    }
    println!("config: {}", report.config_digest);
    Ok(ExitCode::SUCCESS)
}
