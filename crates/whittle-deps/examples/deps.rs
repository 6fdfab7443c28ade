//! Prints the closure of paths (or of an Entrypoint) in a root file system directory.
//!
//! `cargo run -p whittle-deps --example deps -- ROOT [--json] [--entrypoint CMD...] [PATH...]`
//! A debugging aid until `whittle deps` is wired into the CLI.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use whittle_deps::{Analyzer, DirRootFs, ImageConfig, Request};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(root) = args.next() else {
        eprintln!("usage: deps ROOT [--json] [--entrypoint CMD ARGS...] [PATH...]");
        std::process::exit(2);
    };
    let mut json = false;
    let mut req = Request::default();
    let mut entry = false;
    for a in args {
        match a.as_str() {
            "--json" => json = true,
            "--entrypoint" => entry = true,
            _ if entry => req.config.entrypoint.push(a),
            _ => req.paths.push(a),
        }
    }
    req.config = ImageConfig {
        env: vec![format!("PATH={}", whittle_deps::config::DEFAULT_PATH)],
        ..req.config
    };
    let fs = match DirRootFs::new(&root) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let closure = Analyzer::new(&fs).closure(&req);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&closure).unwrap_or_default()
        );
    } else {
        print!("{}", closure.render());
    }
}
