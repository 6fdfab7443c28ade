use std::process::ExitCode;

use anyhow::Result;
use whittle_image::ImageRef;
use whittle_inspect::inspect;

use crate::output::{byte_progress, human_bytes, print_json};

/// `whittle inspect SRC`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image to inspect (docker-archive:, oci:, oci-archive:, docker-daemon:, rootfs: or a path).
    src: String,
    /// Print the full report as JSON (schema in the README).
    #[arg(long)]
    json: bool,
}

#[allow(clippy::print_stdout)]
pub fn run(a: Args) -> Result<ExitCode> {
    let bar = byte_progress("reading layers");
    let tick = |n: u64| bar.inc(n);
    let report = inspect(&ImageRef::parse(&a.src)?, Some(&tick));
    bar.finish_and_clear();
    let r = report?;
    if a.json {
        print_json(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}  ({}/{})", r.reference, r.os, r.architecture);
    println!("config {}", r.config_digest);
    let rel = &r.relations;
    if let Some(d) = &rel.debug_of {
        println!("debug variant of the slim image with config {d}");
    }
    if let Some(s) = &rel.source {
        println!("slimmed by whittle from the image with config {s}");
    }
    if let (Some(n), Some(id)) = (&rel.base_name, &rel.base_diff_id) {
        println!(
            "family member on base {n} ({}), shared base layer {id}",
            rel.base_digest.as_deref().unwrap_or("-")
        );
    }
    println!();
    println!(
        "{:>3}  {:>10}  {:>10}  {:>7}  {:<19}  command",
        "#", "size", "stored", "files", "digest"
    );
    for l in &r.layers {
        let cmd = l.created_by.as_deref().unwrap_or("");
        let cmd: String = cmd.chars().take(60).collect();
        println!(
            "{:>3}  {:>10}  {:>10}  {:>7}  {:<19}  {}",
            l.index,
            human_bytes(l.size),
            human_bytes(l.compressed_size),
            l.files,
            l.digest.get(..19).unwrap_or(&l.digest),
            cmd
        );
    }
    println!();
    println!(
        "size {} (stored {}), merged: {} files, {} dirs, {} symlinks, {} of content",
        human_bytes(r.size),
        human_bytes(r.compressed_size),
        r.merged.files,
        r.merged.directories,
        r.merged.symlinks,
        human_bytes(r.merged.bytes)
    );
    println!(
        "efficiency {:.2} %   wasted {}",
        r.efficiency * 100.0,
        human_bytes(r.wasted_bytes)
    );
    if !r.wasted.is_empty() {
        println!("\nmost wasted (path in several layers):");
        for w in r.wasted.iter().take(10) {
            println!(
                "  {:>10}  ×{}  {}",
                human_bytes(w.cumulative),
                w.count,
                w.path
            );
        }
    }
    println!("\nlargest files:");
    for f in &r.largest_files {
        println!("  {:>10}  L{}  {}", human_bytes(f.size), f.layer, f.path);
    }
    println!(
        "\njunk (what `squash --drop-junk` removes): {}",
        human_bytes(r.junk_bytes)
    );
    for j in &r.junk {
        println!(
            "  {:<16} {:>7} files  {:>10}",
            j.class.name(),
            j.files,
            human_bytes(j.bytes)
        );
    }
    let s = &r.security;
    println!("\nsecurity:");
    if s.runs_as_root {
        println!(
            "  runs as root (User is {})",
            s.user
                .as_deref()
                .map_or("unset".to_string(), |u| format!("{u:?}"))
        );
    } else {
        println!("  runs as {:?}", s.user.as_deref().unwrap_or(""));
    }
    let list = |title: &str, v: &[String]| {
        if !v.is_empty() {
            println!("  {title} ({}):", v.len());
            for p in v {
                println!("    {p}");
            }
        }
    };
    list("setuid files", &s.setuid);
    list("setgid files", &s.setgid);
    list(
        "world-writable directories without the sticky bit",
        &s.world_writable_dirs,
    );
    if !s.capabilities.is_empty() {
        println!("  files with capabilities ({}):", s.capabilities.len());
        for c in &s.capabilities {
            println!("    {}  {}", c.path, c.capabilities);
        }
    }
    Ok(ExitCode::SUCCESS)
}
