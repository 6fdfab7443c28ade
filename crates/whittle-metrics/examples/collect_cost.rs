//! Where a collection's time goes: `cargo run --release -p whittle-metrics --example
//! collect_cost [ROUNDS]` against the running containers (used to tune `scripts/bench-metrics`).

use whittle_engine::procfs::ProcRoot;
use whittle_metrics::archive::ArchiveWriter;
use whittle_metrics::openmetrics::{render, Format};
use whittle_metrics::Collector;

fn unsafe_zeroed() -> libc::rusage {
    // SAFETY: rusage is plain integers and timevals; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// CPU time of this thread: what a collection costs, whatever else the machine is doing.
fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which lives on this stack frame.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[allow(clippy::print_stdout)]
fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let containers = rt
        .block_on(async {
            let e = whittle_engine::Engine::connect_negotiated(None).await?;
            e.containers(false, &ProcRoot::real()).await
        })
        .expect("engine");
    let list: Vec<_> = containers.iter().collect();
    let col = Collector::new(ProcRoot::real()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut w = ArchiveWriter::create(dir.path(), 1).unwrap();
    let (mut tc, mut ta, mut tr) = (0.0, 0.0, 0.0);
    for _ in 0..rounds {
        let t = cpu_now();
        let s = col.collect(&list);
        tc += cpu_now() - t;
        let t = cpu_now();
        w.append(&s).unwrap();
        ta += cpu_now() - t;
        let t = cpu_now();
        let _ = render(&s, Format::OpenMetrics);
        tr += cpu_now() - t;
    }
    let n = f64::from(rounds);
    let mut ru: libc::rusage = unsafe_zeroed();
    // SAFETY: getrusage fills the struct it is given, which lives on this stack frame.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    println!(
        "whole run: user {:.3} s, system {:.3} s",
        tv(ru.ru_utime),
        tv(ru.ru_stime)
    );
    println!(
        "{} containers: collect {:.2} ms, archive append {:.2} ms, render {:.2} ms of CPU per round; archive {} bytes",
        list.len(),
        1e3 * tc / n,
        1e3 * ta / n,
        1e3 * tr / n,
        w.bytes()
    );
}
