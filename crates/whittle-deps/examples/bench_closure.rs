//! Times the closure of every executable under /usr/bin, /usr/sbin, /bin and /sbin of a
//! root file system directory (the speed target: ≤ 1 s for the python3 fixture on
//! a 2-core machine, release build).
//!
//! `cargo run --release -p whittle-deps --example bench_closure -- ROOT`

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Instant;

use whittle_deps::{Analyzer, DirRootFs, NodeKind, Request, RootFs};

fn main() {
    let Some(root) = std::env::args().nth(1) else {
        eprintln!("usage: bench_closure ROOT");
        std::process::exit(2);
    };
    let fs = match DirRootFs::new(&root) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let start = Instant::now();
    let mut analyzer = Analyzer::new(&fs);
    // Listing is part of the job: /bin and /sbin are links to /usr/bin and /usr/sbin in a
    // merged-/usr root, so directories are deduplicated by canonical path.
    let mut dirs = Vec::new();
    for d in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        if let Ok(r) = analyzer.resolver().resolve(d, "/", true) {
            if r.node.is_dir() && !dirs.contains(&r.path) {
                dirs.push(r.path.clone());
            }
        }
    }
    let mut paths = Vec::new();
    for d in &dirs {
        let mut names = fs.read_dir(d).unwrap_or_default();
        names.sort();
        for n in names {
            let p = format!("{d}/{n}");
            if let Ok(r) = analyzer.resolver().resolve(&p, "/", true) {
                if matches!(r.node, NodeKind::File { mode, .. } if mode & 0o111 != 0) {
                    paths.push(p);
                }
            }
        }
    }
    let listed = start.elapsed();
    let closure = analyzer.closure(&Request {
        paths: paths.clone(),
        ..Default::default()
    });
    let total = start.elapsed();
    println!(
        "{root}: {} executables in {:?} -> closure of {} paths ({} missing, {} problems) in {:.3} s total ({:.3} s listing)",
        paths.len(),
        dirs,
        closure.files.len(),
        closure.missing.len(),
        closure.problems.len(),
        total.as_secs_f64(),
        listed.as_secs_f64()
    );
}
