//! `whittle route` against the real Docker Engine (and its single-node Swarm), a real HAProxy
//! 2.6 started by `route run` (or, for `--attach`, by the test with its own config), and real
//! load on 127.0.0.1 from the harness's load generator.
//! Each test has its own state directory, HAProxy, listen ports and a run label that its
//! `route run` filters on, so other tests' containers on the shared engine are never routed.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::load::Load;
use common::runtime::{fixture_image, free_port, http_get, wait_for, Daemon, TestContainer};
use common::{fixtures, require, run, tempdir, unique, whittle, whittle_bin};

const APP: &str = include_str!("route_app.py");

/// The tests run one at a time: on a 2-core machine two of them side by side (each starting
/// containers, each with load) measure each other's CPU starvation, not whittle's convergence.
fn loaded() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

/// The app image: the python fixture with the test app and the host's static busybox (for a
/// cheap HEALTHCHECK command). Built once per test binary, offline.
fn app_image() -> String {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            require("busybox");
            let base = fixture_image("python");
            let ctx = tempdir("route-app");
            std::fs::write(ctx.path().join("app.py"), APP).expect("app.py");
            std::fs::copy("/usr/bin/busybox", ctx.path().join("busybox")).expect("busybox");
            std::fs::write(
                ctx.path().join("Dockerfile"),
                format!(
                    "FROM {base}\nCOPY app.py /app.py\nCOPY busybox /bin/busybox\nEXPOSE 8000\n\
                     CMD [\"python3\", \"/app.py\"]\n"
                ),
            )
            .expect("Dockerfile");
            let tag = "whittle-test/route-app:latest".to_string();
            let r = run(
                "docker",
                &os!["build", "-q", "--network", "none", "-t", &tag, ctx.path()],
            );
            assert_eq!(r.code, Some(0), "docker build of the app: {}", r.stderr);
            tag
        })
        .clone()
}

/// A HEALTHCHECK given at `docker run`, checked every second; three failures make it
/// unhealthy (one slow check on a loaded machine must not take the only server out).
const HEALTH: [&str; 6] = [
    "--health-cmd",
    "busybox wget -q -O /dev/null http://127.0.0.1:8000/health",
    "--health-interval",
    "1s",
    "--health-retries",
    "3",
];

/// One `whittle route run` with its own state directory and HAProxy; on drop whittle gets
/// SIGTERM and the HAProxy master it started (it outlives whittle by design) is stopped by its
/// pid.
struct Route {
    daemon: Option<Daemon>,
    dir: tempfile::TempDir,
    /// The value of `org.whittle.test.run` this run routes.
    run: String,
    n: usize,
    /// The worker's stats socket: whittle's own in the state directory, or the one `--attach`
    /// drives.
    admin_sock: PathBuf,
    /// Extra `route run` arguments (`--attach SOCKET`).
    extra: Vec<std::ffi::OsString>,
}

impl Drop for Route {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop_with(libc::SIGTERM, Duration::from_secs(5));
        }
        if let Some(pid) = self.haproxy_pid() {
            // SAFETY: kill(2) on the HAProxy master this test's route run started (its pid
            // file is in this test's own state directory).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

impl Route {
    fn start(prefix: &str) -> Route {
        Route::with_run(unique(prefix))
    }

    /// A run routing the containers labelled `org.whittle.test.run=RUN`.
    fn with_run(run: String) -> Route {
        let mut r = Route::new(run, None);
        r.launch();
        r
    }

    /// A run not yet launched; with `attach`, one driving that stats socket (`--attach`).
    fn new(run: String, attach: Option<&Path>) -> Route {
        require("haproxy");
        let dir = tempdir("route");
        let admin_sock = attach.map_or_else(
            || dir.path().join("state").join("admin.sock"),
            Path::to_path_buf,
        );
        let extra = attach
            .map(|s| vec!["--attach".into(), s.as_os_str().to_owned()])
            .unwrap_or_default();
        Route {
            daemon: None,
            dir,
            run,
            n: 0,
            admin_sock,
            extra,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts (again) `route run` on the same state directory.
    fn launch(&mut self) {
        self.n += 1;
        let state = self.state_dir();
        let only = format!("org.whittle.test.run={}", self.run);
        let log = self.dir.path().join(format!("route-{}.log", self.n));
        let mut args = os![
            "route",
            "run",
            "--state-dir",
            state,
            "--only-label",
            only,
            "--hold-down",
            "1s"
        ]
        .to_vec();
        args.extend(self.extra.iter().map(|a| a.as_os_str()));
        let d = Daemon::start("whittle route run", whittle_bin(), &args, &[], &log);
        let pid = u64::from(d.pid());
        self.daemon = Some(d);
        wait_for("route.json of this run", Duration::from_secs(20), || {
            self.daemon.as_mut().expect("daemon").assert_running();
            (self.state()["pid"].as_u64() == Some(pid)).then_some(())
        });
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("route run is running")
    }

    fn log(&self) -> String {
        (1..=self.n)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("route-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("--- restart ---\n")
    }

    fn haproxy_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.state_dir().join("haproxy.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state_dir().join("route.json")).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// A runtime API command on the worker's stats socket.
    fn admin(&self, cmd: &str) -> String {
        socket_command(&self.admin_sock, cmd)
    }

    /// (worker pid, master reload count) from the master CLI's `show proc`.
    fn proc(&self) -> (u32, u64) {
        let out = socket_command(&self.state_dir().join("master.sock"), "show proc");
        let mut master_reloads = None;
        let mut worker = None;
        let mut in_workers = false;
        for l in out.lines() {
            if l.starts_with('#') {
                in_workers = l.starts_with("# workers");
                continue;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 3 && f[1] == "master" {
                master_reloads = f[2].parse().ok();
            } else if in_workers && f.len() >= 2 && worker.is_none() {
                worker = f[0].parse().ok();
            }
        }
        (
            worker.unwrap_or_else(|| panic!("no worker in show proc:\n{out}")),
            master_reloads.unwrap_or_else(|| panic!("no master in show proc:\n{out}")),
        )
    }

    /// HAProxy's servers of `service`: (name, ready) from `show servers state`.
    fn servers(&self, service: &str) -> Vec<(String, bool)> {
        let out = self.admin(&format!("show servers state {service}"));
        out.lines()
            .skip(1)
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let admin: u32 = f.get(6)?.parse().ok()?;
                Some((f.get(3)?.to_string(), admin & 0x2b == 0))
            })
            // An attached HAProxy's own servers are not whittle's (`ID12-PORT`).
            .filter(|(n, _)| n.split_once('-').is_some_and(|(id, _)| id.len() == 12))
            .collect()
    }

    /// Container id prefixes (12) of the servers HAProxy has ready for `service`.
    fn ready(&self, service: &str) -> BTreeSet<String> {
        self.servers(service)
            .into_iter()
            .filter(|(_, r)| *r)
            .filter_map(|(n, _)| n.split_once('-').map(|(id, _)| id.to_string()))
            .collect()
    }

    /// Waits until HAProxy's servers of `service` are exactly `ids` and all ready.
    fn wait_exactly(&self, service: &str, ids: &BTreeSet<String>, timeout: Duration) {
        let t = Instant::now();
        loop {
            let all = self.servers(service);
            let names: BTreeSet<String> = all
                .iter()
                .filter_map(|(n, _)| n.split_once('-').map(|(id, _)| id.to_string()))
                .collect();
            if &names == ids && all.iter().all(|(_, r)| *r) {
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "{service}: HAProxy has {all:?}, docker runs {ids:?} (after {timeout:?})\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `docker run` of the app with this run's labels, routed as `service:port`.
    fn app(&self, service: &str, port: u16, extra: &[&str]) -> TestContainer {
        self.app_routed(&format!("{service}:{port}:8000"), extra)
    }

    /// `docker run` of the app with this run's labels and `whittle.route=ROUTES`.
    fn app_routed(&self, routes: &str, extra: &[&str]) -> TestContainer {
        let image = app_image();
        let run_label = format!("org.whittle.test.run={}", self.run);
        let route = format!("whittle.route={routes}");
        let mut args = vec![
            "--label",
            run_label.as_str(),
            "--label",
            route.as_str(),
            "-p",
            "127.0.0.1::8000",
        ];
        args.extend_from_slice(extra);
        args.push(image.as_str());
        TestContainer::run("route", &args)
    }
}

/// The `whittle: error:` lines of a command's stderr (a refusal must be exactly one).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("whittle: error:"))
        .collect()
}

fn id12(c: &TestContainer) -> String {
    c.id[..12].to_string()
}

/// One command on a runtime API socket (non-interactive: write, half-close, read to EOF).
fn socket_command(path: &Path, cmd: &str) -> String {
    let mut s = UnixStream::connect(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    writeln!(s, "{cmd}").expect("write to the socket");
    s.shutdown(std::net::Shutdown::Write).ok();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the socket");
    out
}

fn p99(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

fn ms_list(state: &serde_json::Value, kind: &str) -> Vec<f64> {
    state["convergence_ms"][kind]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default()
}

/// `docker stop` of several containers at once (as a scale-down does).
fn stop_all(cs: &[&TestContainer]) {
    let hs: Vec<_> = cs
        .iter()
        .map(|c| {
            let id = c.id.clone();
            std::thread::spawn(move || run("docker", &os!["stop", "-t", "10", &id]))
        })
        .collect();
    for h in hs {
        let r = h.join().expect("docker stop thread");
        assert_eq!(r.code, Some(0), "docker stop: {}", r.stderr);
    }
}

/// Scale cycles 1→5→1 of the scale test: the issue's 20. A cycle takes about 4.5 s here
/// under load, and the whole test binary about 3 minutes on 2 cores.
const SCALE_CYCLES: usize = 20;

/// Issue tests 1, 3 and 5: load through HAProxy while a service scales 1→5→1 with `docker
/// stop` and one `docker kill` per cycle: no failed request, no reload, HAProxy's servers equal
/// what docker runs after every cycle, and the changes applied quickly after their events.
#[test]
fn scale_cycles_under_load_lose_nothing_and_never_reload() {
    let _one = loaded();
    let route = Route::start("route-scale");
    let port = free_port();
    let svc = format!("scale{}", &route.run[route.run.len() - 6..]);
    let first = route.app(&svc, port, &HEALTH);
    let mut want = BTreeSet::from([id12(&first)]);
    route.wait_exactly(&svc, &want, Duration::from_secs(30));
    let (worker, reloads) = route.proc();
    let load = Load::start(&format!("127.0.0.1:{port}"), 200, 2, 2);
    let t = Instant::now();
    for cycle in 0..SCALE_CYCLES {
        let more: Vec<TestContainer> = (0..4).map(|_| route.app(&svc, port, &HEALTH)).collect();
        want.extend(more.iter().map(id12));
        route.wait_exactly(&svc, &want, Duration::from_secs(30));
        // One random container dies at once (SIGKILL), the others stop gracefully.
        let victim = cycle % more.len();
        run("docker", &os!["kill", &more[victim].id]);
        let rest: Vec<&TestContainer> = more
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, c)| c)
            .collect();
        stop_all(&rest);
        want = BTreeSet::from([id12(&first)]);
        route.wait_exactly(&svc, &want, Duration::from_secs(15));
        assert_eq!(
            route.proc(),
            (worker, reloads),
            "cycle {cycle}: HAProxy's worker or reload count changed for a membership change"
        );
        drop(more);
    }
    let cycles = t.elapsed();
    let tally = load.stop();
    let state = route.state();
    let routed = ms_list(&state, "routed");
    let drained = ms_list(&state, "drained");
    common::report(&(format!(
        "route scale: {SCALE_CYCLES} cycles in {cycles:.1?}; {} ok, {} non-2xx, {} errors; healthy→routed p99 {:.1} ms ({} samples), kill→drain p99 {:.1} ms ({} samples); {} engine calls for {} events",
        tally.ok,
        tally.non_2xx,
        tally.errors,
        p99(&routed),
        routed.len(),
        p99(&drained),
        drained.len(),
        state["engine_api_calls"],
        state["events"]
    ) + "\n"));
    assert!(
        tally.non_2xx == 0 && tally.errors == 0,
        "failed requests: {tally:?}\n{}",
        route.log()
    );
    assert!(tally.ok > 1000, "too few requests went through: {tally:?}");
    // Every cycle routes four and drains three (the fourth is killed).
    assert!(
        routed.len() > 4 * SCALE_CYCLES && drained.len() >= 3 * SCALE_CYCLES,
        "{state}"
    );
    assert!(p99(&routed) <= 250.0, "healthy→routed p99 {routed:?}");
    assert!(p99(&drained) <= 100.0, "kill→drain p99 {drained:?}");
    assert!(
        route.log().contains("applied") && route.log().contains("after the event"),
        "no convergence in the log lines:\n{}",
        route.log()
    );
}

/// The access-log times (Unix seconds) of the requests the app served (not its health checks).
fn access_times(c: &TestContainer) -> Vec<f64> {
    let r = run("docker", &os!["exec", &c.id, "cat", "/tmp/access.log"]);
    r.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// When Docker declared `c` healthy (the engine's event time, Unix seconds).
fn healthy_event_time(c: &TestContainer, since: u64) -> f64 {
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 1;
    let r = run(
        "docker",
        &os![
            "events",
            "--since",
            since.to_string(),
            "--until",
            until.to_string(),
            "--filter",
            format!("container={}", c.id),
            "--format",
            "{{.TimeNano}} {{.Action}}"
        ],
    );
    r.stdout
        .lines()
        .find(|l| l.ends_with("health_status: healthy"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ns| ns / 1e9)
        .unwrap_or_else(|| panic!("{}: no healthy event: {}{}", c.name, r.stdout, r.stderr))
}

/// Issue test 2: an app that listens at once but is healthy only after 10 s gets no request
/// before Docker says it is healthy; an app without HEALTHCHECK gets none before its
/// `org.whittle.probe.http` check passes.
#[test]
fn nothing_reaches_a_container_before_it_is_ready() {
    let _one = loaded();
    let route = Route::start("route-ready");
    let port = free_port();
    let svc = format!("ready{}", &route.run[route.run.len() - 6..]);
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 1;
    let probed = route.app(
        &svc,
        port,
        &[
            "-e",
            "HEALTHY_AFTER=4",
            "--label",
            "org.whittle.probe.http=8000/health",
            "--label",
            "org.whittle.probe.interval=200ms",
        ],
    );
    let mut slow_args = vec!["-e", "HEALTHY_AFTER=10"];
    slow_args.extend_from_slice(&HEALTH);
    let slow = route.app(&svc, port, &slow_args);
    // Requests arrive all along (failing with 503 until something is ready).
    let load = Load::start(&format!("127.0.0.1:{port}"), 50, 0, 2);
    let both = BTreeSet::from([id12(&probed), id12(&slow)]);
    route.wait_exactly(&svc, &both, Duration::from_secs(40));
    std::thread::sleep(Duration::from_secs(2));
    let tally = load.stop();
    assert!(tally.ok > 20, "the service never answered: {tally:?}");

    let healthy_at: f64 = run("docker", &os!["exec", &probed.id, "cat", "/tmp/healthy-at"])
        .stdout
        .trim()
        .parse()
        .expect("the probed app answered its health check");
    let served = access_times(&probed);
    assert!(!served.is_empty(), "the probed app never got traffic");
    let early: Vec<&f64> = served.iter().filter(|t| **t < healthy_at).collect();
    assert!(
        early.is_empty(),
        "the probed app served {} requests before its first good health answer at {healthy_at}: {early:?}",
        early.len()
    );

    let healthy = healthy_event_time(&slow, since);
    let served = access_times(&slow);
    assert!(!served.is_empty(), "the slow app never got traffic");
    let early: Vec<&f64> = served.iter().filter(|t| **t < healthy).collect();
    assert!(
        early.is_empty(),
        "the slow app served {} requests before Docker called it healthy at {healthy}: {early:?}",
        early.len()
    );
    common::report(&(format!(
        "route readiness: probed app first request {:.3} s after its health answer; slow app {:.3} s after its healthy event",
        access_times(&probed)[0] - healthy_at,
        served[0] - healthy
    ) + "\n"));
}

/// One streaming GET through HAProxy: the serving container (its `X-Container` header) once
/// the headers are in, then the body's length when it ends.
fn stream(addr: &str) -> (String, std::thread::JoinHandle<std::io::Result<usize>>) {
    let s = std::net::TcpStream::connect(addr).expect("connect to HAProxy");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut r = BufReader::new(s);
    write!(
        r.get_mut(),
        "GET /stream HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut who = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("headers");
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("x-container:") {
            who = v.trim().to_string();
        }
    }
    let h = std::thread::spawn(move || {
        let mut body = Vec::new();
        r.read_to_end(&mut body)?;
        Ok(body.len())
    });
    (who, h)
}

/// Issue test 4: a 5 s streaming request in flight when its container gets `docker stop`
/// completes, every run; the server is drained, then deleted.
#[test]
fn a_stopped_container_finishes_its_streaming_request() {
    let _one = loaded();
    let route = Route::start("route-drain");
    let port = free_port();
    let svc = format!("drain{}", &route.run[route.run.len() - 6..]);
    let a = route.app(&svc, port, &HEALTH);
    let b = route.app(&svc, port, &HEALTH);
    let mut live = vec![a, b];
    for round in 0..2 {
        let ids: BTreeSet<String> = live.iter().map(id12).collect();
        route.wait_exactly(&svc, &ids, Duration::from_secs(30));
        let (who, body) = stream(&format!("127.0.0.1:{port}"));
        let i = live
            .iter()
            .position(|c| c.id.starts_with(&who))
            .unwrap_or_else(|| panic!("round {round}: served by unknown {who:?}"));
        let victim = live.remove(i);
        let t = Instant::now();
        let r = run("docker", &os!["stop", "-t", "15", &victim.id]);
        assert_eq!(r.code, Some(0), "docker stop: {}", r.stderr);
        let got = body.join().expect("stream thread");
        assert!(
            matches!(got, Ok(100)),
            "round {round}: the streaming request did not complete: {got:?} after {:?}\n{}",
            t.elapsed(),
            route.log()
        );
        let left: BTreeSet<String> = live.iter().map(id12).collect();
        route.wait_exactly(&svc, &left, Duration::from_secs(10));
        assert!(
            route
                .log()
                .contains(&format!("{}-8000: drain (kill (signal 15))", id12(&victim))),
            "round {round}: no drain on the kill event:\n{}",
            route.log()
        );
        live.push(route.app(&svc, port, &HEALTH));
    }
}

/// Issue test 6: `kill -9` of whittle mid-churn, and SIGSTOP: HAProxy keeps serving with no
/// failed request, and once whittle runs again HAProxy equals the ground truth within 2 s.
#[test]
fn haproxy_serves_through_a_killed_or_stopped_whittle() {
    let _one = loaded();
    let mut route = Route::start("route-crash");
    let port = free_port();
    let svc = format!("crash{}", &route.run[route.run.len() - 6..]);
    let mut live = vec![
        route.app(&svc, port, &HEALTH),
        route.app(&svc, port, &HEALTH),
    ];
    let ids = |l: &[TestContainer]| l.iter().map(id12).collect::<BTreeSet<_>>();
    route.wait_exactly(&svc, &ids(&live), Duration::from_secs(30));
    let (worker, _) = route.proc();
    let load = Load::start(&format!("127.0.0.1:{port}"), 100, 1, 1);

    // kill -9 while a container starts: whittle dies, HAProxy does not notice.
    live.push(route.app(&svc, port, &HEALTH));
    route
        .daemon()
        .stop_with(libc::SIGKILL, Duration::from_secs(5));
    route.daemon = None;
    std::thread::sleep(Duration::from_secs(2));
    let gone = live.remove(0);
    let r = run("docker", &os!["stop", "-t", "10", &gone.id]);
    assert_eq!(r.code, Some(0), "docker stop: {}", r.stderr);
    live.push(route.app(&svc, port, &HEALTH));
    std::thread::sleep(Duration::from_secs(2));
    // Health of what remains settles (the new ones become healthy) before the restart.
    wait_for("healthy containers", Duration::from_secs(20), || {
        live.iter()
            .all(|c| {
                run(
                    "docker",
                    &os!["inspect", "-f", "{{.State.Health.Status}}", &c.id],
                )
                .stdout
                .trim()
                    == "healthy"
            })
            .then_some(())
    });
    let t = Instant::now();
    route.launch();
    route.wait_exactly(&svc, &ids(&live), Duration::from_secs(2));
    let adopt = t.elapsed();
    assert!(
        route.log().contains("adopted HAProxy master"),
        "the restarted run did not adopt HAProxy:\n{}",
        route.log()
    );

    // SIGSTOP for 10 s (the issue's number) while containers change, then SIGCONT.
    let pid = route.daemon().pid() as i32;
    // SAFETY: kill(2) on the route run this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let gone2 = live.remove(0);
    let r = run("docker", &os!["stop", "-t", "10", &gone2.id]);
    assert_eq!(r.code, Some(0), "docker stop: {}", r.stderr);
    live.push(route.app(&svc, port, &HEALTH));
    std::thread::sleep(Duration::from_secs(10));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let t2 = Instant::now();
    route.wait_exactly(&svc, &ids(&live), Duration::from_secs(4));
    let resume = t2.elapsed();
    let tally = load.stop();
    common::report(&(format!(
        "route crash: {} ok, {} non-2xx, {} errors; adopted in {adopt:?}, caught up after SIGCONT in {resume:?}",
        tally.ok, tally.non_2xx, tally.errors
    ) + "\n"));
    assert!(
        tally.non_2xx == 0 && tally.errors == 0,
        "failed requests: {tally:?}\n{}",
        route.log()
    );
    assert_eq!(route.proc().0, worker, "HAProxy's worker changed");
    drop((gone, gone2));
}

/// A Swarm service removed on drop.
struct Service(String);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = run("docker", &os!["service", "rm", &self.0]);
    }
}

fn swarm_task_ids(service: &str) -> BTreeSet<String> {
    let r = run(
        "docker",
        &os![
            "ps",
            "-q",
            "--filter",
            format!("label=com.docker.swarm.service.name={service}"),
            "--filter",
            "health=healthy"
        ],
    );
    r.stdout.lines().map(|l| l.trim().to_string()).collect()
}

/// Issue test 7: a Swarm service (labelled on the service, published in host mode) scaled
/// 1→3→1 and rolled (start-first) under load: no failed request.
#[test]
fn a_swarm_service_scales_and_rolls_without_errors() {
    let _one = loaded();
    let route = Route::start("route-swarm");
    let port = free_port();
    let svc = format!("swarm{}", &route.run[route.run.len() - 6..]);
    let name = unique("route-svc");
    let image = app_image();
    let r = run(
        "docker",
        &os![
            "service",
            "create",
            "-d",
            "--no-resolve-image",
            "--name",
            &name,
            "--label",
            "org.whittle.test=route",
            "--label",
            format!("org.whittle.test.run={}", route.run),
            "--label",
            format!("whittle.route={svc}:{port}:8000"),
            "--publish",
            "mode=host,target=8000",
            "--health-cmd",
            HEALTH[1],
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--stop-grace-period",
            "10s",
            "--update-order",
            "start-first",
            "--update-delay",
            "1s",
            "--replicas",
            "1",
            &image
        ],
    );
    let _service = Service(name.clone());
    assert_eq!(r.code, Some(0), "docker service create: {}", r.stderr);
    let settle = |n: usize| {
        wait_for(
            &format!("{n} healthy tasks routed"),
            Duration::from_secs(60),
            || {
                let ids = swarm_task_ids(&name);
                (ids.len() == n && route.ready(&svc) == ids && route.servers(&svc).len() == n)
                    .then_some(())
            },
        )
    };
    settle(1);
    let (worker, reloads) = route.proc();
    let load = Load::start(&format!("127.0.0.1:{port}"), 200, 2, 2);
    for (what, args) in [
        (
            "scale to 3",
            os!["service", "update", "-d", "--replicas", "3", &name],
        ),
        (
            "scale to 1",
            os!["service", "update", "-d", "--replicas", "1", &name],
        ),
        (
            "rolling update",
            os!["service", "update", "-d", "--env-add", "ROLLED=1", &name],
        ),
    ] {
        let r = run("docker", &args);
        assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
        std::thread::sleep(Duration::from_secs(3));
        settle(if what == "scale to 3" { 3 } else { 1 });
    }
    let tally = load.stop();
    common::report(
        &(format!(
            "route swarm: {} ok, {} non-2xx, {} errors",
            tally.ok, tally.non_2xx, tally.errors
        ) + "\n"),
    );
    assert!(
        tally.non_2xx == 0 && tally.errors == 0,
        "failed requests: {tally:?}\n{}",
        route.log()
    );
    assert_eq!(route.proc(), (worker, reloads), "HAProxy reloaded");
}

/// Issue test 8, short: 40 containers across 8 services are all routed soon after start, with
/// at most 2 Engine API calls per event afterwards. (`scripts/bench-route` runs 200 across 20: PHASES=scale.)
#[test]
fn many_containers_sync_at_start() {
    let _one = loaded();
    let run_label = unique("route-many");
    let image = app_image();
    // Below the ephemeral range: the engine publishes 40 container ports from that range
    // between choosing these and HAProxy binding them.
    let base = 20000 + (std::process::id() % 1000) as u16 * 10;
    let ports: Vec<u16> = (base..base + 8)
        .map(|p| {
            std::net::TcpListener::bind(("127.0.0.1", p))
                .map(|_| p)
                .unwrap_or_else(|e| panic!("port {p} for a service: {e}"))
        })
        .collect();
    let mut cs = Vec::new();
    for i in 0..40 {
        let svc = format!("many{}s{}", &run_label[run_label.len() - 6..], i % 8);
        cs.push(TestContainer::run(
            "route-many",
            &[
                "--label",
                &format!("org.whittle.test.run={run_label}"),
                "--label",
                &format!("whittle.route={svc}:{}:8000", ports[i % 8]),
                "--label",
                "org.whittle.probe.interval=100ms",
                "-p",
                "127.0.0.1::8000",
                "--memory",
                "64m",
                &image,
            ],
        ));
    }
    let t = Instant::now();
    let route = Route::with_run(run_label.clone());
    wait_for("40 servers ready", Duration::from_secs(30), || {
        let st = route.state();
        let ready = st["servers"]
            .as_array()
            .map(|a| a.iter().filter(|s| s["state"] == "ready").count())
            .unwrap_or(0);
        (ready == 40).then_some(())
    });
    let synced = t.elapsed();
    let before = route.state();
    // Events after the sync: stop five containers and count the Engine calls they cost.
    stop_all(&cs[..5].iter().collect::<Vec<_>>());
    wait_for("5 servers gone", Duration::from_secs(15), || {
        let st = route.state();
        (st["servers"].as_array().map_or(0, Vec::len) == 35).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let after = route.state();
    let calls = after["engine_api_calls"].as_u64().unwrap_or(0)
        - before["engine_api_calls"].as_u64().unwrap_or(0);
    let events = after["events"].as_u64().unwrap_or(0) - before["events"].as_u64().unwrap_or(0);
    common::report(&format!(
        "route many: 40 containers in 8 services ready {synced:?} after start; {calls} Engine calls for {events} events\n"
    ));
    assert!(
        synced <= Duration::from_secs(5),
        "sync took {synced:?}\n{}",
        route.log()
    );
    assert!(events > 0, "no events counted");
    assert!(
        calls <= 2 * events,
        "{calls} Engine API calls for {events} events"
    );
}

/// An HAProxy the test starts itself, as its owner would (its own config, a plain daemon, no
/// master-worker): what `route run --attach` drives. Stopped by the pid in its pid file.
struct OwnHaproxy {
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Drop for OwnHaproxy {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(self.dir.path().join("haproxy.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on the HAProxy this guard started (its pid file is in the
            // guard's own directory).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

impl OwnHaproxy {
    /// Starts HAProxy with an admin-level stats socket, the defaults of a plain HTTP setup and
    /// `sections` (frontends, backends, resolvers).
    fn start(sections: &str) -> OwnHaproxy {
        require("haproxy");
        let dir = tempdir("route-own-haproxy");
        let socket = dir.path().join("admin.sock");
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n    stats socket {} mode 600 level admin\n    stats timeout 30s\n\n\
                 defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    \
                 timeout server 30s\n    option http-server-close\n\n{sections}",
                socket.display()
            ),
        )
        .expect("haproxy.cfg");
        let r = run(
            "haproxy",
            &os!["-D", "-f", &cfg, "-p", dir.path().join("haproxy.pid")],
        );
        let h = OwnHaproxy { dir, socket };
        assert_eq!(r.code, Some(0), "haproxy -D: {}{}", r.stdout, r.stderr);
        wait_for("the stats socket", Duration::from_secs(10), || {
            UnixStream::connect(&h.socket).ok().map(|_| ())
        });
        h
    }

    fn command(&self, cmd: &str) -> String {
        socket_command(&self.socket, cmd)
    }

    /// The owner's reload: a new HAProxy takes over the sockets (`-sf OLD`), with only the
    /// servers of its config.
    fn reload(&self) {
        let pid = self.dir.path().join("haproxy.pid");
        let old = std::fs::read_to_string(&pid).expect("haproxy.pid");
        let r = run(
            "haproxy",
            &os![
                "-D",
                "-f",
                self.dir.path().join("haproxy.cfg"),
                "-p",
                &pid,
                "-sf",
                old.trim()
            ],
        );
        assert_eq!(r.code, Some(0), "haproxy -sf: {}{}", r.stdout, r.stderr);
    }

    /// The pid that answers on the socket (`show info`): a reload would change it.
    fn worker(&self) -> u32 {
        let info = self.command("show info");
        info.lines()
            .find_map(|l| l.strip_prefix("Pid:")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Pid in show info:\n{info}"))
    }
}

/// `--attach`: whittle drives an HAProxy it did not start — a labelled container is routed
/// (its answer comes through the owner's frontend), membership changes reach it without a
/// reload, the owner's own server is left alone, a service without a backend there is said
/// once while the others are routed, `route status` shows it, a restarted run adopts, and
/// after its owner reloads it whittle adds its servers to the new HAProxy.
#[test]
fn attach_drives_an_existing_haproxy_without_reloading_it() {
    let _one = loaded();
    let run_id = unique("route-attach");
    let sfx = &run_id[run_id.len() - 6..];
    let (svc, missing) = (format!("att{sfx}"), format!("gone{sfx}"));
    let port = free_port();
    // A hash with `hash-type consistent`: dynamic, which only a trial `add server` can tell.
    let hx = OwnHaproxy::start(&format!(
        "frontend shop\n    bind 127.0.0.1:{port}\n    default_backend {svc}\n\n\
         backend {svc}\n    balance source\n    hash-type consistent\n    \
         server static-1 127.0.0.1:1 disabled\n"
    ));
    let worker = hx.worker();
    let mut route = Route::new(run_id, Some(&hx.socket));
    route.launch();
    let routes = format!("{svc}:{port}:8000,{missing}:{}:8000", free_port());
    let first = route.app_routed(&routes, &HEALTH);
    let mut want = BTreeSet::from([id12(&first)]);
    route.wait_exactly(&svc, &want, Duration::from_secs(30));
    let (status, head, body) =
        http_get(&format!("127.0.0.1:{port}"), "/", None).expect("GET through HAProxy");
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("hello from {}\n", id12(&first))
    );

    let more: Vec<TestContainer> = (0..2).map(|_| route.app_routed(&routes, &HEALTH)).collect();
    want.extend(more.iter().map(id12));
    route.wait_exactly(&svc, &want, Duration::from_secs(30));
    stop_all(&more.iter().collect::<Vec<_>>());
    want = BTreeSet::from([id12(&first)]);
    route.wait_exactly(&svc, &want, Duration::from_secs(15));
    assert_eq!(hx.worker(), worker, "the attached HAProxy was reloaded");
    let servers = hx.command(&format!("show servers state {svc}"));
    assert!(
        servers.contains(" static-1 ") && !servers.contains("whittle-fitcheck"),
        "the owner's server is gone or the trial server stayed:\n{servers}"
    );
    let log = route.log();
    let said = log
        .lines()
        .filter(|l| l.contains(&format!("has no backend {missing}")))
        .count();
    assert_eq!(
        said, 1,
        "three containers ask for {missing}: said once, not {said} times:\n{log}"
    );

    let st = route.state();
    assert_eq!(st["attached"], hx.socket.display().to_string(), "{st}");
    assert_eq!(st["haproxy_worker"], worker, "{st}");
    assert_eq!(st["reloads"], 0, "{st}");
    let status = whittle(
        os!["route", "status", "--state-dir", route.state_dir()],
        &[],
    );
    assert_eq!(status.code, Some(0), "route status: {}", status.stderr);
    assert!(
        status
            .stdout
            .contains(&format!("attached at {}", hx.socket.display()))
            && status.stdout.contains(&format!("{}-8000", id12(&first)))
            && status.stdout.contains("ready"),
        "route status:\n{}",
        status.stdout
    );

    // A restarted run adopts the server (no duplicate, no re-add).
    route
        .daemon()
        .stop_with(libc::SIGTERM, Duration::from_secs(5));
    route.launch();
    route.wait_exactly(&svc, &want, Duration::from_secs(5));
    let log = route.log();
    assert!(
        log.contains("1 servers adopted"),
        "the restarted run did not adopt its server:\n{log}"
    );
    assert_eq!(hx.worker(), worker, "the attached HAProxy was reloaded");

    // The owner reloads: the new HAProxy has none of whittle's servers until whittle sees the
    // new worker (it looks every 2 s) and adds them again.
    hx.reload();
    wait_for("the new HAProxy", Duration::from_secs(10), || {
        (hx.worker() != worker).then_some(())
    });
    route.wait_exactly(&svc, &want, Duration::from_secs(6));
    let (status, head, _) =
        http_get(&format!("127.0.0.1:{port}"), "/", None).expect("GET after the reload");
    assert_eq!(status, 200, "{head}");
    assert!(
        route
            .log()
            .contains("the attached HAProxy has a new worker"),
        "{}",
        route.log()
    );
}

/// `--attach` refuses, with one line naming the backend and why, a backend `add server` cannot
/// work in (HAProxy 2.6: a static algorithm, a map-based hash) or whose servers DNS resolvers
/// keep, and a socket that is not admin-level or not there; the exit code is 1 and nothing
/// was added.
#[test]
fn attach_refuses_a_backend_that_cannot_take_dynamic_servers() {
    let _one = loaded();
    let run_id = unique("route-unfit");
    let sfx = &run_id[run_id.len() - 6..];
    let cases = [
        (
            format!("srr{sfx}"),
            "balance static-rr",
            "balance static-rr is a static algorithm",
        ),
        (
            format!("src{sfx}"),
            "balance source",
            "balance source with map-based hashing",
        ),
        (
            format!("dns{sfx}"),
            "balance roundrobin\n    default-server resolvers dns init-addr none\n    \
             server app1 localhost:1",
            "resolved from the name localhost through DNS resolvers",
        ),
    ];
    let mut sections = "resolvers dns\n    nameserver ns1 127.0.0.1:53\n\n".to_string();
    let operator = tempdir("route-operator");
    let operator_sock = operator.path().join("operator.sock");
    // A second stats socket, read-only for servers: not one whittle can drive.
    sections = format!(
        "global\n    stats socket {} mode 600 level operator\n\n{sections}",
        operator_sock.display()
    );
    for (svc, setup, _) in &cases {
        sections.push_str(&format!("backend {svc}\n    {setup}\n\n"));
    }
    let hx = OwnHaproxy::start(&sections);
    let missing = operator.path().join("missing.sock");
    for (sock, reason) in [
        (&operator_sock, "its level is operator"),
        (&missing, "No such file or directory"),
    ] {
        let dir = tempdir("route-unfit");
        let r = whittle(
            os![
                "route",
                "run",
                "--attach",
                sock,
                "--state-dir",
                dir.path(),
                "--only-label",
                &run_id
            ],
            &[],
        );
        assert_eq!(
            r.code,
            Some(1),
            "route run --attach {}: {}",
            sock.display(),
            r.stderr
        );
        let errors = error_lines(&r.stderr);
        assert!(
            errors.len() == 1
                && errors[0].contains(&sock.display().to_string())
                && errors[0].contains(reason),
            "want one error line naming {} and `{reason}`:\n{}",
            sock.display(),
            r.stderr
        );
    }
    let image = app_image();
    for (svc, _, reason) in &cases {
        let run_label = format!("org.whittle.test.run={run_id}-{svc}");
        let _c = TestContainer::run(
            "route",
            &[
                "--label",
                &run_label,
                "--label",
                &format!("whittle.route={svc}:{}:8000", free_port()),
                "-p",
                "127.0.0.1::8000",
                &image,
            ],
        );
        let dir = tempdir("route-unfit");
        let r = run(
            "timeout",
            &os![
                "60",
                whittle_bin(),
                "route",
                "run",
                "--attach",
                &hx.socket,
                "--state-dir",
                dir.path(),
                "--only-label",
                &run_label
            ],
        );
        assert_eq!(r.code, Some(1), "{svc}: route run --attach: {}", r.stderr);
        let errors = error_lines(&r.stderr);
        assert!(
            errors.len() == 1
                && errors[0].contains(&format!("backend {svc}: "))
                && errors[0].contains(reason)
                && errors[0].contains(&hx.socket.display().to_string()),
            "{svc}: want one error line naming the backend and `{reason}`:\n{}",
            r.stderr
        );
        common::report(&format!("route attach refusal: {}\n", errors[0]));
        let servers = hx.command(&format!("show servers state {svc}"));
        assert!(
            !servers.contains("-8000 ") && !servers.contains("whittle-fitcheck"),
            "{svc}: a server was left in the refused backend:\n{servers}"
        );
    }
}

/// A slim image built by `whittle build` in this test: the python fixture verified with
/// `--http-probe 8000/index.html`, removed on drop.
struct SlimImage(String);

impl Drop for SlimImage {
    fn drop(&mut self) {
        let _ = run("docker", &os!["rmi", "-f", &self.0]);
    }
}

/// Issue test 2, second half: a slim image without HEALTHCHECK is gated by the
/// `org.whittle.probe.*` labels `whittle build` wrote. Run in an empty working directory, the
/// server listens at once but answers its probe path 404: HAProxy keeps it out (503s, and the
/// app sees none of those requests); once the file is copied in, it is routed.
#[test]
fn a_slim_image_is_gated_by_the_probe_labels_build_wrote() {
    let _one = loaded();
    require("haproxy");
    let tag = SlimImage(unique("whittle-test/route-slim:py").to_ascii_lowercase());
    let src = fixtures().join("python.tar");
    let t = Instant::now();
    let b = whittle(
        os![
            "build",
            format!("docker-archive:{}", src.display()),
            format!("docker-daemon:{}", tag.0),
            "--http-probe",
            "8000/index.html"
        ],
        &[],
    );
    assert_eq!(b.code, Some(0), "whittle build: {}{}", b.stdout, b.stderr);
    let built = t.elapsed();
    let labels = run(
        "docker",
        &os![
            "image",
            "inspect",
            "-f",
            "{{json .Config.Labels}} {{json .Config.Healthcheck}}",
            &tag.0
        ],
    );
    assert!(
        labels
            .stdout
            .contains(r#""org.whittle.probe.http":"8000/index.html""#)
            && labels.stdout.trim_end().ends_with(" null"),
        "the slim image's labels and healthcheck: {}",
        labels.stdout
    );

    let route = Route::start("route-slim");
    let port = free_port();
    let svc = format!("slim{}", &route.run[route.run.len() - 6..]);
    let c = TestContainer::run(
        "route",
        &[
            "--label",
            &format!("org.whittle.test.run={}", route.run),
            "--label",
            &format!("whittle.route={svc}:{port}:8000"),
            "-p",
            "127.0.0.1::8000",
            "-w",
            "/srv/www/gate",
            &tag.0,
        ],
    );
    wait_for(
        "the container's server, out of rotation",
        Duration::from_secs(20),
        || (route.servers(&svc).len() == 1).then_some(()),
    );
    let addr = format!("127.0.0.1:{port}");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        let (status, head, _) = http_get(&addr, "/index.html?via=haproxy", None).expect("GET");
        assert_eq!(status, 503, "routed before its probe passed: {head}");
        assert!(
            route.servers(&svc).iter().all(|(_, ready)| !ready),
            "ready before its probe passed:\n{}",
            route.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = run("docker", &os!["logs", &c.id]);
    assert!(
        logs.stderr.contains("\"GET /index.html HTTP/1.0\" 404"),
        "whittle's probe did not reach the container: {}",
        logs.stderr
    );
    let probes_404 = logs
        .stderr
        .matches("\"GET /index.html HTTP/1.0\" 404")
        .count();
    let page = tempdir("route-slim-page");
    let body = format!("ready {}\n", route.run);
    std::fs::write(page.path().join("index.html"), &body).expect("index.html");
    let r = run(
        "docker",
        &os![
            "cp",
            page.path().join("index.html"),
            format!("{}:/srv/www/gate/index.html", c.id)
        ],
    );
    assert_eq!(r.code, Some(0), "docker cp: {}", r.stderr);
    let copied = Instant::now();
    route.wait_exactly(&svc, &BTreeSet::from([id12(&c)]), Duration::from_secs(20));
    let gated = copied.elapsed();
    let (status, head, got) = http_get(&addr, "/index.html?via=haproxy", None).expect("GET");
    assert_eq!(
        (status, String::from_utf8_lossy(&got).to_string()),
        (200, body),
        "{head}"
    );
    let logs = run("docker", &os!["logs", &c.id]).stderr;
    let through: Vec<&str> = logs.lines().filter(|l| l.contains("via=haproxy")).collect();
    assert!(
        !through.is_empty() && through.iter().all(|l| l.contains("\" 200 ")),
        "requests through HAProxy reached the container before it was ready:\n{logs}"
    );
    assert!(
        route.log().contains(": ready (probe passed)"),
        "not routed by its probe:\n{}",
        route.log()
    );
    common::report(&format!(
        "route slim: built in {built:.1?}; 503 for 3 s while its probe path answered 404 ({probes_404} probes), routed {gated:.1?} after the file was copied in\n"
    ));
}

/// The labels `whittle build` writes are the probe `whittle route` runs: the same port and
/// path, nothing else (the two crates spell the label each, this holds them together).
#[test]
fn build_probe_labels_are_the_route_probe() {
    let mut p = whittle_sandbox::ProbeReport::new("http", "8000/index.html".to_string());
    p.ok = true;
    p.status = Some(200);
    let labels: std::collections::BTreeMap<String, String> = whittle_build::probe_labels(&[p])
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(
        labels.keys().map(String::as_str).collect::<Vec<_>>(),
        [whittle_route::spec::PROBE_HTTP]
    );
    let probe = whittle_route::spec::probe(&labels, 9).expect("route parses build's labels");
    assert_eq!(
        probe.kind,
        whittle_route::spec::ProbeKind::Http {
            port: 8000,
            path: "/index.html".to_string()
        }
    );
    assert_eq!(probe.port(), 8000);
}
