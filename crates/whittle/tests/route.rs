//! `whittle route` against the real Docker Engine (and its single-node Swarm), a real HAProxy
//! 2.6 started by `route run`, and real load on 127.0.0.1 from the harness's load generator.
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
use common::runtime::{fixture_image, free_port, wait_for, Daemon, TestContainer};
use common::{require, run, tempdir, unique, whittle_bin};

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
        require("haproxy");
        let dir = tempdir("route");
        let mut r = Route {
            daemon: None,
            dir,
            run,
            n: 0,
        };
        r.launch();
        r
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
        let d = Daemon::start(
            "whittle route run",
            whittle_bin(),
            &os![
                "route",
                "run",
                "--state-dir",
                &state,
                "--only-label",
                &only,
                "--hold-down",
                "1s"
            ],
            &[],
            &log,
        );
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
        socket_command(&self.state_dir().join("admin.sock"), cmd)
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
        let image = app_image();
        let run_label = format!("org.whittle.test.run={}", self.run);
        let route = format!("whittle.route={service}:{port}:8000");
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
    for cycle in 0..3 {
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
    let tally = load.stop();
    let state = route.state();
    let routed = ms_list(&state, "routed");
    let drained = ms_list(&state, "drained");
    common::report(&(format!(
        "route scale: {} ok, {} non-2xx, {} errors; healthy→routed p99 {:.1} ms ({} samples), kill→drain p99 {:.1} ms ({} samples); {} engine calls for {} events",
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
    assert!(routed.len() >= 12 && drained.len() >= 9, "{state}");
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

    // SIGSTOP for 5 s while containers change, then SIGCONT.
    let pid = route.daemon().pid() as i32;
    // SAFETY: kill(2) on the route run this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let gone2 = live.remove(0);
    let r = run("docker", &os!["stop", "-t", "10", &gone2.id]);
    assert_eq!(r.code, Some(0), "docker stop: {}", r.stderr);
    live.push(route.app(&svc, port, &HEALTH));
    std::thread::sleep(Duration::from_secs(5));
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
/// at most 2 Engine API calls per event afterwards. (`scripts/bench-route` runs 200 across 20.)
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
