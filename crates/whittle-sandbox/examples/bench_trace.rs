//! Benchmark of the sandbox's recording overhead (run by `scripts/bench-trace`).
//!
//! `bench_trace BASE_IMAGE_TAR [RUNS]` prints a markdown table: a CPU-bound program (gzip of
//! 100 MB) and a syscall-heavy one (`find / -xdev -type f -size +0`, one stat per file), each
//! timed inside the sandbox, recorded (ptrace+seccomp and fanotify) and not; and the time from
//! the start of a run to the app's first instruction (its successful exec), the root file
//! system being ready.

#![allow(clippy::print_stdout)]

use std::time::Duration;

use whittle_sandbox::{run, Options, PreparedImage};

fn timed(img: &PreparedImage, script: &str, record: bool) -> f64 {
    let o = Options {
        command: Some(vec!["/bin/bash".into(), "-c".into(), script.into()]),
        record,
        timeout: Duration::from_secs(600),
        stderr_tail: 1 << 20,
        ..Options::default()
    };
    let rep = run(img, &o).expect("run");
    assert_eq!(rep.app.exit_code, Some(0), "{}", rep.render());
    rep.app
        .stderr_tail
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("ELAPSED=")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no timing in:\n{}", rep.app.stderr_tail))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let tar = args
        .next()
        .expect("usage: bench_trace BASE_IMAGE_TAR [RUNS]");
    let runs: usize = args.next().map_or(3, |r| r.parse().expect("RUNS"));
    let r = whittle_image::ImageRef::parse(&format!("docker-archive:{tar}")).expect("ref");
    let img = PreparedImage::open(&r, None).expect("prepare");

    // The timed part runs inside the sandbox (bash's `time`), so setup and teardown are out.
    let gzip = "set -e; head -c 75000000 /dev/urandom | base64 -w 76 > /tmp/data; \
                TIMEFORMAT='ELAPSED=%R'; time gzip -6 -c /tmp/data > /dev/null";
    let find = "TIMEFORMAT='ELAPSED=%R'; time find / -xdev -type f -size +0 > /dev/null";
    println!("| workload | untraced (s) | traced (s) | traced / untraced | target |");
    println!("|---|---|---|---|---|");
    for (name, script, target) in [
        ("gzip -6 of 100 MB (CPU-bound)", gzip, "≤ 1.15x"),
        (
            "find / -xdev -type f -size +0 (stat per file)",
            find,
            "report only",
        ),
    ] {
        let mut plain = Vec::new();
        let mut traced = Vec::new();
        for _ in 0..runs {
            plain.push(timed(&img, script, false));
            traced.push(timed(&img, script, true));
        }
        let (p, t) = (median(plain), median(traced));
        println!(
            "| {name} | {p:.2} | {t:.2} | {:.2}x | {target} |",
            if p > 0.0 { t / p } else { 0.0 }
        );
    }
    let mut starts = Vec::new();
    for record in [false, true] {
        let mut v = Vec::new();
        for _ in 0..5 {
            let o = Options {
                command: Some(vec!["/bin/true".into()]),
                record,
                ..Options::default()
            };
            let rep = run(&img, &o).expect("run");
            v.push(rep.timings.start_ms.expect("started") as f64);
        }
        starts.push(median(v));
    }
    println!(
        "| sandbox start → first instruction of the app (median of 5) | {:.0} ms | {:.0} ms | | ≤ 200 ms |",
        starts[0], starts[1]
    );
}
