//! `whittle metrics` and `whittle top` against the real kernel, the real Docker Engine, and the
//! real consumers: Prometheus 2.42 (PromQL `rate()`) and PCP 6 (pmcd + pmdaopenmetrics, pmrep).
//! Containers run known loads; each number is checked against the load and against `docker
//! stats`. Every daemon has its own state directory and loopback port and is stopped by its pid.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::runtime::{
    fixture_image, free_port, http_get, parse_exposition, samples, value, wait_for, Daemon, Sample,
    TestContainer,
};
use common::{require, run, tempdir, whittle, whittle_bin};

const MIB: f64 = 1024.0 * 1024.0;
const OM: &str = "application/openmetrics-text; version=1.0.0";

/// The accuracy tests measure CPU shares and rates: they run one at a time so that they do not
/// take each other's CPU on a 2-core machine.
fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

/// `whittle metrics serve` on a free loopback port, stopped by its pid on drop.
struct Serve {
    daemon: Daemon,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(extra: &[&str]) -> Serve {
        let dir = tempdir("metrics");
        let state = dir.path().join("state");
        let mut args = vec![
            "metrics",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "500ms",
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let mut daemon = Daemon::start(
            "whittle metrics serve",
            whittle_bin(),
            &args,
            &[],
            &dir.path().join("serve.log"),
        );
        let addr = wait_for(
            "metrics.json with the bound address",
            Duration::from_secs(20),
            || {
                daemon.assert_running();
                let j: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(state.join("metrics.json")).ok()?)
                        .ok()?;
                j["listen"].as_str().map(str::to_string)
            },
        );
        Serve {
            daemon,
            addr,
            _dir: dir,
        }
    }

    fn scrape_text(&self) -> String {
        let (status, head, body) =
            http_get(&self.addr, "/metrics", Some(OM)).expect("GET /metrics");
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("application/openmetrics-text"), "{head}");
        String::from_utf8(body).expect("UTF-8 exposition")
    }

    fn scrape(&self) -> Vec<Sample> {
        parse_exposition(&self.scrape_text())
    }

    /// Waits until `container` has a `metric` sample.
    fn wait_for(&self, metric: &str, container: &str) -> Vec<Sample> {
        wait_for(
            &format!("{metric} of {container}"),
            Duration::from_secs(20),
            || {
                let s = self.scrape();
                value(&s, metric, container).map(|_| s)
            },
        )
    }

    /// The rate of counter `metric` for `container` over about `secs`, timed by the collection
    /// timestamps the page itself carries.
    fn rate(&self, metric: &str, container: &str, secs: f64) -> f64 {
        let a = self.wait_for(metric, container);
        std::thread::sleep(Duration::from_secs_f64(secs));
        let b = self.scrape();
        let t = |s: &[Sample]| {
            value(s, "whittle_collect_timestamp_seconds", "").or_else(|| {
                s.iter()
                    .find(|x| x.name == "whittle_collect_timestamp_seconds")
                    .map(|x| x.value)
            })
        };
        let dt = t(&b).unwrap() - t(&a).unwrap();
        (value(&b, metric, container).unwrap() - value(&a, metric, container).unwrap()) / dt
    }
}

/// `whittle metrics record --archive DIR --interval I`, its log in DIR/log.
fn start_recorder(dir: &Path, interval: &str) -> Daemon {
    Daemon::start(
        "whittle metrics record",
        whittle_bin(),
        &os![
            "metrics",
            "record",
            "--archive",
            dir,
            "--interval",
            interval
        ],
        &[],
        &dir.join("log"),
    )
}

/// `whittle metrics replay DIR --range` over all time.
fn replay_all(dir: &Path) -> common::Run {
    let dir = dir.to_str().unwrap();
    whittle(["metrics", "replay", dir, "--range", "0..9999999999"], &[])
}

/// `docker stats --no-stream` for one container, as JSON.
fn docker_stats(name: &str) -> serde_json::Value {
    let r = run(
        "docker",
        &os!["stats", "--no-stream", "--format", "{{json .}}", name],
    );
    assert_eq!(r.code, Some(0), "docker stats: {}", r.stderr);
    serde_json::from_str(r.stdout.trim()).expect("docker stats JSON")
}

/// Docker's human sizes: `105MB` (decimal, NetIO/BlockIO), `201.4MiB` (binary, MemUsage).
fn docker_size(s: &str) -> f64 {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, u) = s.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("docker size {s:?}"));
    let m = match u {
        "B" | "" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => MIB,
        "GiB" => MIB * 1024.0,
        _ => panic!("unknown docker size unit in {s:?}"),
    };
    n * m
}

fn within(what: &str, got: f64, want: f64, rel: f64) {
    let err = (got - want).abs() / want;
    assert!(
        err <= rel,
        "{what}: {got:.4} vs {want:.4} differs by {:.2}% (limit {:.1}%)",
        err * 100.0,
        rel * 100.0
    );
}

#[test]
fn cpu_quota_reads_half_a_core_throttles_and_agrees_with_docker_stats() {
    let _g = heavy();
    let base = fixture_image("base");
    let s = Serve::start(&[]);
    let c = TestContainer::run(
        "wm-cpu",
        &["--cpus", "0.5", &base, "sh", "-c", "while :; do :; done"],
    );
    s.wait_for("container_cpu_usage_seconds_total", &c.name);
    std::thread::sleep(Duration::from_secs(1));
    let before = s.scrape();
    let cores = s.rate("container_cpu_usage_seconds_total", &c.name, 5.0);
    assert!(
        (cores - 0.5).abs() <= 0.02,
        "busy loop under --cpus 0.5 read {cores:.3} cores"
    );
    let after = s.scrape();
    let thr =
        |x: &[Sample]| value(x, "container_cpu_cfs_throttled_periods_total", &c.name).unwrap();
    assert!(
        thr(&after) > thr(&before),
        "no throttled periods counted for a quota'd busy loop"
    );
    assert_eq!(
        value(&after, "container_spec_cpu_quota", &c.name),
        Some(50000.0)
    );
    assert_eq!(
        value(&after, "container_spec_cpu_period", &c.name),
        Some(100000.0)
    );
    let user = value(&after, "container_cpu_user_seconds_total", &c.name).unwrap();
    let total = value(&after, "container_cpu_usage_seconds_total", &c.name).unwrap();
    assert!(
        user > 0.8 * total - 0.1,
        "a shell busy loop is user time: user {user} of {total}"
    );
    let d = docker_stats(&c.name);
    let docker_cores: f64 = d["CPUPerc"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse::<f64>()
        .unwrap()
        / 100.0;
    assert!(
        (docker_cores - cores).abs() <= 0.02,
        "docker stats says {docker_cores:.3} cores, whittle {cores:.3}"
    );
    common::report(&format!(
        "metrics: --cpus 0.5 busy loop: whittle {cores:.3} cores, docker stats {docker_cores:.3}\n"
    ));
}

#[test]
fn memory_of_200_mib_within_2_percent_and_agrees_with_docker_stats() {
    let _g = heavy();
    let py = fixture_image("python");
    let s = Serve::start(&[]);
    let prog =
        |alloc: &str| format!("import time\n{alloc}\nprint('ready', flush=True)\ntime.sleep(600)");
    let idle = TestContainer::run("wm-mem0", &[&py, "python3", "-c", &prog("b = b''")]);
    let big = TestContainer::run(
        "wm-mem",
        &[&py, "python3", "-c", &prog("b = b'x' * (200 << 20)")],
    );
    idle.wait_log("ready", Duration::from_secs(30));
    big.wait_log("ready", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1200));
    let x = s.wait_for("container_memory_working_set_bytes", &big.name);
    let ws = |n: &str| value(&x, "container_memory_working_set_bytes", n).unwrap();
    let delta = ws(&big.name) - ws(&idle.name);
    within(
        "working set of a 200 MiB allocation",
        delta,
        200.0 * MIB,
        0.02,
    );
    let rss = value(&x, "container_memory_rss", &big.name).unwrap()
        - value(&x, "container_memory_rss", &idle.name).unwrap();
    within("RSS of a 200 MiB allocation", rss, 200.0 * MIB, 0.02);
    let d = docker_stats(&big.name);
    let used = docker_size(d["MemUsage"].as_str().unwrap().split('/').next().unwrap());
    within(
        "docker stats MemUsage vs whittle working set",
        used,
        ws(&big.name),
        0.02,
    );
}

#[test]
fn network_100_mib_within_1_percent_and_agrees_with_docker_stats() {
    let _g = heavy();
    let py = fixture_image("python");
    let s = Serve::start(&[]);
    let c = TestContainer::run(
        "wm-net",
        &[
            "--tmpfs", "/data:size=200m", "-p", "127.0.0.1::8000", &py, "sh", "-c",
            "head -c 104857600 /dev/zero > /data/f && cd /data && exec python3 -u -m http.server 8000",
        ],
    );
    c.wait_log("Serving HTTP", Duration::from_secs(30));
    let port = c.host_port(8000);
    // The kernel's own count in the container's netns (eth0 of /proc/net/dev, read inside it),
    // the truth whittle's number must match: the wire bytes also carry a header per packet,
    // 0.1% of the body with 64 KiB GSO segments but past 1% when the load makes them small.
    let eth0_tx = || -> f64 {
        let r = run("docker", &os!["exec", &c.name, "cat", "/proc/net/dev"]);
        assert_eq!(
            r.code,
            Some(0),
            "docker exec cat /proc/net/dev: {}",
            r.stderr
        );
        let line = r
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with("eth0:"))
            .unwrap_or_else(|| panic!("no eth0 in /proc/net/dev:\n{}", r.stdout));
        let f: Vec<&str> = line.split_once(':').unwrap().1.split_whitespace().collect();
        f[8].parse().expect("eth0 transmit bytes")
    };
    let a = s.wait_for("container_network_transmit_bytes_total", &c.name);
    let k0 = eth0_tx();
    let (status, _, body) = http_get(&format!("127.0.0.1:{port}"), "/f", None).expect("GET /f");
    assert_eq!((status, body.len()), (200, 104857600));
    std::thread::sleep(Duration::from_millis(1200));
    let k1 = eth0_tx();
    let b = s.scrape();
    let tx = |x: &[Sample]| value(x, "container_network_transmit_bytes_total", &c.name).unwrap();
    let sent = tx(&b) - tx(&a);
    assert!(sent >= 100.0 * MIB, "sent {sent} bytes for a 100 MiB body");
    within("transmit bytes for a 100 MiB body", sent, 100.0 * MIB, 0.05);
    within(
        "transmit bytes against the netns's eth0 counter",
        sent,
        k1 - k0,
        0.01,
    );
    let iface = samples(&b, "container_network_transmit_bytes_total", &c.name);
    assert!(
        iface.iter().all(|s| s.labels["interface"] != "lo"),
        "lo is not counted"
    );
    let d = docker_stats(&c.name);
    let docker_tx = docker_size(d["NetIO"].as_str().unwrap().split('/').nth(1).unwrap());
    within("docker stats NetIO tx vs whittle", docker_tx, tx(&b), 0.02);
}

#[test]
fn direct_write_of_100_mib_within_1_percent_and_agrees_with_docker_stats() {
    let _g = heavy();
    let base = fixture_image("base");
    let s = Serve::start(&[]);
    let vol = tempdir("blkio");
    let dev = root_block_device(vol.path());
    // Kernels ≥ 6.x count cgroup-v1 blkio only on queues where blk-throttle is active, which
    // any throttle rule turns on: a limit far above the disk's speed (documented in README).
    let c = TestContainer::run(
        "wm-io",
        &[
            "--device-write-bps", &format!("{dev}:100gb"), "-v", &format!("{}:/data", vol.path().display()),
            &base, "sh", "-c",
            "sleep 1; dd if=/dev/zero of=/data/f bs=1M count=100 oflag=direct && echo written; exec sleep 600",
        ],
    );
    c.wait_log("written", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1200));
    let x = s.wait_for("container_fs_writes_bytes_total", &c.name);
    let w = value(&x, "container_fs_writes_bytes_total", &c.name).unwrap();
    within(
        "block writes of a 100 MiB O_DIRECT dd",
        w,
        100.0 * MIB,
        0.01,
    );
    let devs = samples(&x, "container_fs_writes_bytes_total", &c.name);
    assert!(
        devs.iter().any(|s| s.labels["device"].starts_with("/dev/")),
        "{devs:?}"
    );
    let ops = value(&x, "container_fs_writes_total", &c.name).unwrap();
    assert!(ops >= 100.0, "{ops} write operations for 100 1 MiB writes");
    let d = docker_stats(&c.name);
    let docker_w = docker_size(d["BlockIO"].as_str().unwrap().split('/').nth(1).unwrap());
    within("docker stats BlockIO write vs whittle", docker_w, w, 0.02);
}

/// `/dev/NAME` of the disk holding `p` (the engine wants a device node for a throttle rule).
fn root_block_device(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(p).unwrap().dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    // A partition's rule must name the whole disk: sysfs links the partition under its disk.
    let sys = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    let real = std::fs::canonicalize(&sys).unwrap();
    let disk = if real.join("partition").exists() {
        real.parent().unwrap().to_path_buf()
    } else {
        real
    };
    format!("/dev/{}", disk.file_name().unwrap().to_string_lossy())
}

#[test]
fn oom_kill_is_counted_and_limits_are_exported() {
    let _g = heavy();
    let py = fixture_image("python");
    let s = Serve::start(&[]);
    let c = TestContainer::run(
        "wm-oom",
        &[
            "--memory",
            "64m",
            "--pids-limit",
            "50",
            &py,
            "sh",
            "-c",
            "python3 -c 'b = b\"x\" * (200 << 20)'; echo killed $?; exec sleep 600",
        ],
    );
    c.wait_log("killed 137", Duration::from_secs(60));
    let x = wait_for("an OOM kill counted", Duration::from_secs(10), || {
        let x = s.scrape();
        (value(&x, "container_oom_events_total", &c.name)? >= 1.0).then_some(x)
    });
    assert_eq!(
        value(&x, "container_spec_memory_limit_bytes", &c.name),
        Some(64.0 * MIB)
    );
    assert_eq!(value(&x, "container_threads_max", &c.name), Some(50.0));
    assert!(value(&x, "container_memory_failcnt", &c.name).unwrap() >= 1.0);
    assert_eq!(
        value(&x, "container_processes", &c.name),
        Some(1.0),
        "sh exec'd sleep"
    );
}

#[test]
fn shared_netns_is_counted_once_and_host_network_is_marked() {
    let base = fixture_image("base");
    let s = Serve::start(&[]);
    let a = TestContainer::run("wm-nsa", &[&base, "sleep", "600"]);
    let b = TestContainer::run(
        "wm-nsb",
        &[
            "--network",
            &format!("container:{}", a.id),
            &base,
            "sleep",
            "600",
        ],
    );
    let h = TestContainer::run("wm-host", &["--network", "host", &base, "sleep", "600"]);
    let x = wait_for("three containers", Duration::from_secs(20), || {
        let x = s.scrape();
        [&a, &b, &h]
            .iter()
            .all(|c| !samples(&x, "whittle_container_netns", &c.name).is_empty())
            .then_some(x)
    });
    let ns = |c: &TestContainer| {
        samples(&x, "whittle_container_netns", &c.name)[0]
            .labels
            .clone()
    };
    let (la, lb, lh) = (ns(&a), ns(&b), ns(&h));
    assert_eq!(la["netns"], lb["netns"]);
    assert_eq!(
        (la["mode"].as_str(), lb["mode"].as_str()),
        ("shared", "shared")
    );
    let owner = a.name.clone(); // the container that made the namespace, not the joiner
    assert_eq!((&la["counted_in"], &lb["counted_in"]), (&owner, &owner));
    let other = if owner == a.name { &b.name } else { &a.name };
    assert!(value(&x, "container_network_receive_bytes_total", &owner).is_some());
    assert!(
        value(&x, "container_network_receive_bytes_total", other).is_none(),
        "counted twice"
    );
    assert_eq!(lh["mode"], "host");
    assert!(
        value(&x, "container_network_receive_bytes_total", &h.name).is_none(),
        "host counters are not the container's"
    );
}

#[test]
fn archive_replays_the_served_bytes_survives_kill_9_and_skips_damage() {
    let _g = heavy();
    let base = fixture_image("base");
    let arch = tempdir("archive");
    let s = Serve::start(&["--archive", arch.path().to_str().unwrap()]);
    let c = TestContainer::run(
        "wm-arch",
        &["--cpus", "0.2", &base, "sh", "-c", "while :; do :; done"],
    );
    s.wait_for("container_cpu_usage_seconds_total", &c.name);
    let mut served: Vec<String> = Vec::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(12) {
        let text = s.scrape_text();
        if served.last() != Some(&text) {
            served.push(text);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let Serve { mut daemon, .. } = s;
    let status = daemon.stop_with(libc::SIGTERM, Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "serve did not stop cleanly on SIGTERM: {status:?}\n{}",
        daemon.log_text()
    );
    assert!(
        served.len() >= 15,
        "only {} distinct pages in 12 s at 500 ms",
        served.len()
    );
    for text in &served {
        let ts = text
            .lines()
            .find_map(|l| l.strip_prefix("whittle_collect_timestamp_seconds "))
            .expect("timestamp on the page");
        let r = whittle(
            [
                "metrics",
                "replay",
                arch.path().to_str().unwrap(),
                "--at",
                ts,
            ],
            &[],
        )
        .ok("replay --at");
        assert!(
            r.stdout == *text,
            "replay --at {ts} differs from what was served"
        );
    }

    // kill -9 of a recorder loses at most one interval.
    let rec = tempdir("record");
    let mut d = start_recorder(rec.path(), "500ms");
    wait_for("four recorded frames", Duration::from_secs(20), || {
        d.assert_running();
        let r = whittle(
            [
                "metrics",
                "replay",
                rec.path().to_str().unwrap(),
                "--range",
                "0..9999999999",
            ],
            &[],
        );
        (r.stdout.matches("# EOF").count() >= 4).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1300));
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    d.stop_with(libc::SIGKILL, Duration::from_secs(5));
    let r = whittle(["metrics", "replay", rec.path().to_str().unwrap()], &[])
        .ok("replay after kill -9");
    let last: f64 = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("whittle_collect_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        killed_at - last <= 0.5 + 0.25,
        "the last frame is {:.3} s before the kill",
        killed_at - last
    );

    // Damage, frame by frame (frames start with the marker `WMFR`; 37-byte header): a flipped
    // byte in one delta frame's payload and a torn tail lose those two frames, with warnings
    // naming the file; a damaged key frame loses every frame compressed against it.
    let file = std::fs::read_dir(rec.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "wmarch"))
        .unwrap();
    let pristine = std::fs::read(&file).unwrap();
    let all = replay_all(rec.path()).ok("replay range");
    let frames = all.stdout.matches("# EOF").count();
    let marks: Vec<usize> = (0..pristine.len() - 4)
        .filter(|&i| &pristine[i..i + 4] == b"WMFR")
        .collect();
    assert_eq!(marks.len(), frames, "one marker per frame");
    let mut bytes = pristine.clone();
    bytes[marks[frames - 2] + 37 + 1] ^= 0x55;
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&file, &bytes).unwrap();
    let r = replay_all(rec.path()).ok("replay of a damaged archive");
    let left = r.stdout.matches("# EOF").count();
    assert_eq!(left, frames - 2, "{frames} frames before the damage");
    assert!(
        r.stderr.matches("warning").count() >= 2 && r.stderr.contains(&file.display().to_string()),
        "{}",
        r.stderr
    );
    let mut bytes = pristine.clone();
    bytes[marks[0] + 37 + 1] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    let r = replay_all(rec.path()).ok("replay with a damaged key frame");
    assert_eq!(
        r.stdout.matches("# EOF").count(),
        0,
        "all frames hang on key frame 0"
    );
    assert!(
        r.stderr.contains("key frame 0 is damaged or missing"),
        "{}",
        r.stderr
    );
    std::fs::write(&file, &pristine).unwrap();

    // The same archive as charts.
    let html = arch.path().join("m.html");
    whittle(
        [
            "metrics",
            "plot",
            arch.path().to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
        &[],
    )
    .ok("plot");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains(&c.name) && page.matches("<svg").count() >= 4 && page.contains("<polyline")
    );
}

#[test]
fn prometheus_rate_and_pcp_pmrep_read_the_same_numbers() {
    let _g = heavy();
    require("prometheus");
    let pmcd = "/usr/lib/pcp/bin/pmcd";
    assert!(
        Path::new(pmcd).exists(),
        "this test needs PCP's pmcd: apt-get install pcp (scripts/test does)"
    );
    require("pminfo");
    let base = fixture_image("base");
    let s = Serve::start(&[]);
    let busy = TestContainer::run(
        "wm-prom",
        &["--cpus", "0.5", &base, "sh", "-c", "while :; do :; done"],
    );
    let idle = TestContainer::run("wm-pcp", &[&base, "sleep", "600"]);
    s.wait_for("container_cpu_usage_seconds_total", &busy.name);

    // Prometheus scraping the endpoint every second.
    let pdir = tempdir("prometheus");
    let pport = free_port();
    std::fs::write(
        pdir.path().join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: whittle\n    static_configs:\n      - targets: ['{}']\n", s.addr),
    )
    .unwrap();
    let _prom = Daemon::start(
        "prometheus",
        "prometheus",
        &os![
            format!(
                "--config.file={}",
                pdir.path().join("prometheus.yml").display()
            ),
            format!("--storage.tsdb.path={}", pdir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{pport}"),
        ],
        &[],
        &pdir.path().join("log"),
    );
    let paddr = format!("127.0.0.1:{pport}");
    wait_for("prometheus ready", Duration::from_secs(30), || {
        http_get(&paddr, "/-/ready", None)
            .ok()
            .filter(|r| r.0 == 200)
    });

    // PCP: a private pmcd with only pmdaopenmetrics, reading whittle's endpoint.
    let cdir = tempdir("pcp");
    let c = cdir.path();
    for d in ["config.d", "var/config/pmda", "tmp", "run", "log"] {
        std::fs::create_dir_all(c.join(d)).unwrap();
    }
    let url = whittle(
        [
            "metrics",
            "pcp",
            "--print",
            "--url",
            &format!("http://{}/metrics", s.addr),
        ],
        &[],
    )
    .ok("metrics pcp --print");
    std::fs::write(c.join("config.d/whittle.url"), url.stdout).unwrap();
    std::fs::write(
        c.join("pmcd.conf"),
        format!(
            "pmcd\t2\tdso\tpmcd_init\t/var/lib/pcp/pmdas/pmcd/pmda_pmcd.so\n\
             openmetrics\t144\tpipe\tbinary notready\t/usr/bin/python3 /var/lib/pcp/pmdas/openmetrics/pmdaopenmetrics.python -c {} -l {}\n",
            c.join("config.d").display(),
            c.join("log/openmetrics.log").display()
        ),
    )
    .unwrap();
    std::fs::write(
        c.join("root"),
        "root {\n    pmcd\t2:*:*\n    openmetrics\t144:*:*\n}\n",
    )
    .unwrap();
    let cport = free_port();
    let env: Vec<(String, String)> = [
        ("PCP_VAR_DIR", "var"),
        ("PCP_TMP_DIR", "tmp"),
        ("PCP_RUN_DIR", "run"),
        ("PCP_LOG_DIR", "log"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), c.join(v).display().to_string()))
    .collect();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _pmcd = Daemon::start(
        "pmcd",
        pmcd,
        &os![
            "-f",
            "-i",
            "127.0.0.1",
            "-p",
            cport.to_string(),
            "-c",
            c.join("pmcd.conf"),
            "-l",
            c.join("log/pmcd.log"),
            "-s",
            c.join("pmcd.socket"),
            "-n",
            c.join("root"),
            "-U",
            "root"
        ],
        &env_ref,
        &c.join("pmcd.out"),
    );
    let host = format!("127.0.0.1:{cport}");
    let ws_metric = "openmetrics.whittle.container_memory_working_set_bytes";
    let pcp_ws = wait_for(
        "pmcd serving whittle's metrics",
        Duration::from_secs(40),
        || {
            let r = run("pminfo", &os!["-h", &host, "-f", ws_metric]);
            r.stdout
                .lines()
                .find(|l| l.contains(&format!("name:{}", idle.name)))
                .and_then(|l| l.rsplit("value ").next()?.trim().parse::<f64>().ok())
        },
    );
    let ours = value(
        &s.scrape(),
        "container_memory_working_set_bytes",
        &idle.name,
    )
    .unwrap();
    within("pminfo working set vs whittle", pcp_ws, ours, 0.01);
    // pmrep (a pmpython script: Debian's python3, whatever python3 PATH finds first).
    let pmrep = std::process::Command::new("pmrep")
        .env("PATH", "/usr/bin:/bin")
        .args([
            "-h",
            &host,
            "-s",
            "3",
            "-t",
            "2",
            "-o",
            "csv",
            "openmetrics.whittle.container_cpu_usage_seconds_total",
        ])
        .output()
        .expect("pmrep (apt-get install pcp)");
    let out = String::from_utf8_lossy(&pmrep.stdout).into_owned();
    let col = out
        .lines()
        .next()
        .unwrap_or("")
        .split("\",\"")
        .position(|h| h.contains(&busy.name));
    let rates: Vec<f64> = out
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let i = col.map(|c| c + 1).unwrap_or(1);
            f.get(i)?.parse().ok()
        })
        .collect();
    assert!(
        rates.len() >= 2,
        "pmrep gave no rates: {out}\n{}",
        String::from_utf8_lossy(&pmrep.stderr)
    );
    let pcp_rate = rates.iter().sum::<f64>() / rates.len() as f64;
    // A counter reaches PCP as a counter: pmrep turns it into a rate (the loop gets at most
    // its quota, less when the machine is busy).
    assert!(
        (0.3..=0.52).contains(&pcp_rate),
        "pmrep cpu rate {pcp_rate:.3} of a --cpus 0.5 loop ({rates:?})"
    );
    let quota = run(
        "pminfo",
        &os![
            "-h",
            &host,
            "-f",
            "openmetrics.whittle.container_spec_cpu_quota"
        ],
    );
    assert!(
        quota
            .stdout
            .lines()
            .any(|l| l.contains(&format!("name:{}", busy.name))
                && l.trim_end().ends_with("value 50000")),
        "pminfo container_spec_cpu_quota: {}",
        quota.stdout
    );

    // PromQL over the last 10 s against whittle's own counter over the same 10 s.
    let q = format!(
        "/api/v1/query?query=rate(container_cpu_usage_seconds_total%7Bname%3D%22{}%22%7D%5B10s%5D)",
        busy.name
    );
    let query = || -> Option<f64> {
        let (st, _, body) = http_get(&paddr, &q, None).ok()?;
        let j: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let v = j["data"]["result"][0]["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()?;
        (st == 200).then_some(v)
    };
    wait_for(
        "Prometheus has 10 s of scrapes",
        Duration::from_secs(40),
        query,
    );
    let ours_rate = s.rate("container_cpu_usage_seconds_total", &busy.name, 10.0);
    let prom_rate = query().expect("PromQL rate()");
    assert!(
        (prom_rate - ours_rate).abs() <= 0.03,
        "PromQL rate() = {prom_rate:.3}, whittle's counter over the same 10 s = {ours_rate:.3}"
    );
    assert!(
        (0.3..=0.52).contains(&prom_rate),
        "PromQL rate() = {prom_rate:.3} for a --cpus 0.5 loop"
    );
    common::report(&format!("metrics: --cpus 0.5: PromQL rate() {prom_rate:.3}, pmrep {pcp_rate:.3}; pminfo working set {pcp_ws} = whittle {ours}\n"));
}

#[test]
fn top_once_json_shows_rates_and_processes_from_the_pid_namespace() {
    let _g = heavy();
    let base = fixture_image("base");
    let c = TestContainer::run(
        "wm-top",
        &["--cpus", "0.3", &base, "sh", "-c", "while :; do :; done"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let r = whittle(["top", "--once", "--json", "--interval", "1s"], &[]).ok("top --once --json");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["schema"], "whittle.top/v1");
    let row = j["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == c.name.as_str())
        .expect("the container's row");
    let cores = row["cpu_cores"].as_f64().unwrap();
    assert!(
        (0.2..=0.35).contains(&cores),
        "{cores} cores for a --cpus 0.3 loop"
    );
    assert!((row["cpu_limit_cores"].as_f64().unwrap() - 0.3).abs() < 1e-9);
    let p = &row["processes"][0];
    assert_eq!(
        (p["ns_pid"].as_u64(), p["comm"].as_str()),
        (Some(1), Some("sh")),
        "{row}"
    );
    assert!(p["cpu_percent"].as_f64().unwrap() > 15.0);
    let plain = whittle(["top", "--once", "--interval", "200ms"], &[]).ok("top --once");
    assert!(
        plain.stdout.lines().next().unwrap().starts_with("NAME") && plain.stdout.contains(&c.name)
    );
}

#[test]
fn bad_input_gives_one_line_naming_the_problem() {
    let d = tempdir("metrics-bad");
    let missing = d.path().join("nope");
    let r = whittle(["metrics", "replay", missing.to_str().unwrap()], &[]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains(missing.to_str().unwrap()), "{}", r.stderr);

    let r = whittle(["metrics", "replay", d.path().to_str().unwrap()], &[]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("no *.wmarch archive files"),
        "{}",
        r.stderr
    );

    std::fs::write(d.path().join("x.wmarch"), b"garbage that is not an archive").unwrap();
    let r = whittle(["metrics", "replay", d.path().to_str().unwrap()], &[]);
    assert!(r.stderr.contains("bad magic"), "{}", r.stderr);

    let r = whittle(
        [
            "metrics",
            "replay",
            d.path().to_str().unwrap(),
            "--at",
            "yesterday",
        ],
        &[],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("yesterday"), "{}", r.stderr);

    let r = whittle(
        [
            "metrics",
            "plot",
            d.path().to_str().unwrap(),
            "--html",
            d.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("directory"), "{}", r.stderr);

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let r = whittle(["metrics", "serve", "--listen", &addr], &[]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains(&addr), "{}", r.stderr);

    let r = whittle(["metrics", "serve", "--interval", "1ms"], &[]);
    assert_eq!(r.code, Some(2), "a usage error: {}", r.stderr);

    let r = whittle(["top"], &[]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("--once"), "{}", r.stderr);

    let r = whittle(["top", "--once", "--host", "unix:///nonexistent.sock"], &[]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("/nonexistent.sock"), "{}", r.stderr);
}

/// The live view and the archive view in a real terminal (tmux), driven by keys.
#[test]
fn top_renders_live_and_archive_views_in_a_terminal() {
    let _g = heavy();
    require("tmux");
    let base = fixture_image("base");
    let c = TestContainer::run(
        "wm-tui",
        &[&base, "sh", "-c", "while :; do sleep 0.01; done"],
    );
    let sock = common::unique("whittle-tui");
    let tmux = |args: &[&str]| {
        let mut all = vec!["-L", sock.as_str()];
        all.extend_from_slice(args);
        std::process::Command::new("tmux")
            .args(&all)
            .env("NO_COLOR", "1")
            .output()
            .expect("tmux")
    };
    struct Server(String);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = std::process::Command::new("tmux")
                .args(["-L", &self.0, "kill-server"])
                .output();
        }
    }
    let _server = Server(sock.clone());
    let screen = |want: &str| {
        wait_for(
            &format!("`{want}` on the screen"),
            Duration::from_secs(15),
            || {
                let o = tmux(&["capture-pane", "-p", "-t", "v"]);
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.contains(want).then_some(text)
            },
        )
    };
    let cmd = format!("{} top --interval 500ms", whittle_bin());
    let o = tmux(&[
        "new-session",
        "-d",
        "-x",
        "180",
        "-y",
        "40",
        "-s",
        "v",
        &cmd,
    ]);
    assert!(
        o.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = screen(&c.name);
    assert!(
        text.contains("whittle top") && text.contains("NAME") && text.contains("live"),
        "{text}"
    );
    tmux(&["send-keys", "-t", "v", "n"]);
    screen("sort Name");
    // Open the processes pane, then move the selection down until it shows our container
    // (other containers on the engine are listed too).
    tmux(&["send-keys", "-t", "v", "Enter"]);
    let title = format!("processes of {}", c.name);
    let text = wait_for(
        &format!("`{title}` on the screen"),
        Duration::from_secs(20),
        || {
            let o = tmux(&["capture-pane", "-p", "-t", "v"]);
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            if text.contains(&title) {
                // The pane opens before its first sample of the pid namespace arrives; wait
                // for the processes themselves rather than moving the selection away.
                if text.contains("sleep") || text.contains("sh -c") {
                    return Some(text);
                }
                std::thread::sleep(Duration::from_millis(300));
                return None;
            }
            tmux(&["send-keys", "-t", "v", "Down"]);
            std::thread::sleep(Duration::from_millis(300));
            None
        },
    );
    assert!(text.contains("sleep") || text.contains("sh -c"), "{text}");
    tmux(&["send-keys", "-t", "v", "q"]);
    wait_for("top to exit on q", Duration::from_secs(10), || {
        (!tmux(&["has-session", "-t", "v"]).status.success()).then_some(())
    });

    // The archive view steps through frames with the arrow keys.
    let rec = tempdir("tui-archive");
    let mut d = start_recorder(rec.path(), "300ms");
    std::thread::sleep(Duration::from_secs(3));
    d.stop_with(libc::SIGTERM, Duration::from_secs(10));
    let cmd = format!("{} top --archive {}", whittle_bin(), rec.path().display());
    tmux(&[
        "new-session",
        "-d",
        "-x",
        "180",
        "-y",
        "40",
        "-s",
        "v",
        &cmd,
    ]);
    screen("frame 1/");
    tmux(&["send-keys", "-t", "v", "Right"]);
    let text = screen("frame 2/");
    assert!(text.contains(&c.name), "{text}");
    tmux(&["send-keys", "-t", "v", "q"]);
}

/// A relay between a socket of the test's and the engine's socket that the test can cut: every
/// connection is closed and new ones are refused until it is restored.
struct EngineRelay {
    path: PathBuf,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<Mutex<Vec<std::os::unix::net::UnixStream>>>,
}

impl EngineRelay {
    fn start(path: PathBuf) -> EngineRelay {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let listener = UnixListener::bind(&path).expect("relay socket");
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: std::sync::Arc<Mutex<Vec<UnixStream>>> = Default::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the engine is "down"
                }
                let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                let mut list = conns2.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(engine.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), engine.try_clone().unwrap()),
                    (engine, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        EngineRelay { path, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The event stream breaks (the engine "restarts"): the watcher re-syncs in full, so a container
/// started while it was cut off is picked up, and one removed meanwhile is dropped.
#[test]
fn a_broken_event_stream_is_followed_by_a_full_resync() {
    let base = fixture_image("base");
    let dir = tempdir("relay");
    let relay = EngineRelay::start(dir.path().join("engine.sock"));
    let host = format!("unix://{}", relay.path.display());
    let gone = TestContainer::run("wm-gone", &[&base, "sleep", "600"]);
    let s = Serve::start(&["--host", &host]);
    s.wait_for("container_memory_usage_bytes", &gone.name);
    relay.cut();
    let late = TestContainer::run("wm-late", &[&base, "sleep", "600"]);
    let gone_name = gone.name.clone();
    drop(gone);
    std::thread::sleep(Duration::from_secs(2));
    let x = s.scrape();
    assert!(
        value(&x, "container_memory_usage_bytes", &late.name).is_none(),
        "seen without the engine?"
    );
    relay.restore();
    let x = s.wait_for("container_memory_usage_bytes", &late.name);
    assert!(
        samples(&x, "whittle_container_netns", &gone_name).is_empty(),
        "a container removed while the stream was down is still listed"
    );
    let log = s.daemon.log_text();
    assert!(log.contains("re-syncing with the engine"), "{log}");
}
