//! The runtime side's harness: containers that are removed even when a test fails, daemons
//! (whittle's long-running commands, Prometheus, pmcd) started with their own config, state
//! directory and loopback port and stopped by their pid, and a tiny HTTP client for loopback.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::engines::require_docker;
use super::{fixtures, run, unique};
use crate::os;

/// Label on every container the runtime tests start (`docker ps --filter label=…` finds them).
pub const TEST_LABEL: &str = "org.whittle.test=runtime";

/// A container removed with `docker rm -f` on drop.
#[derive(Debug)]
pub struct TestContainer {
    pub name: String,
    pub id: String,
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl TestContainer {
    /// `docker run -d --label … --name UNIQUE ARGS…`; panics with docker's output on failure.
    pub fn run(prefix: &str, args: &[&str]) -> TestContainer {
        require_docker();
        let name = unique(prefix);
        let mut all = vec!["run", "-d", "--label", TEST_LABEL, "--name", name.as_str()];
        all.extend_from_slice(args);
        let out = Command::new("docker")
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .expect("running docker");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let c = TestContainer {
            name: name.clone(),
            id: if id.is_empty() { name.clone() } else { id },
        };
        assert!(
            out.status.success(),
            "docker {}: {}",
            all.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    /// Waits until the container's log contains `needle` (its program says it is ready).
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let t = Instant::now();
        loop {
            let r = run("docker", &os!["logs", &self.id]);
            if r.stdout.contains(needle) || r.stderr.contains(needle) {
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "{}: `{needle}` not in its log after {timeout:?}: {}{}",
                self.name,
                r.stdout,
                r.stderr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The host port the engine published container port `port` on.
    pub fn host_port(&self, port: u16) -> u16 {
        let r = run("docker", &os!["port", &self.id, format!("{port}/tcp")]);
        r.stdout
            .lines()
            .find_map(|l| l.rsplit(':').next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: port {port} is not published: {}", self.name, r.stderr))
    }
}

/// A fixture image (`base`, `python`, …) in the engine, loaded once per test binary and kept:
/// other tests of the binary run containers from it concurrently.
pub fn fixture_image(name: &str) -> String {
    static LOADED: OnceLock<std::sync::Mutex<BTreeMap<String, String>>> = OnceLock::new();
    let m = LOADED.get_or_init(Default::default);
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = m.get(name) {
        return t.clone();
    }
    require_docker();
    let path = fixtures().join(format!("{name}.tar"));
    let r = run("docker", &os!["load", "-q", "-i", path]);
    assert_eq!(
        r.code,
        Some(0),
        "docker load {}: {}",
        path.display(),
        r.stderr
    );
    let tag = format!("whittle-fixture/{name}:latest");
    m.insert(name.to_string(), tag.clone());
    tag
}

/// A background process stopped by its pid on drop: SIGTERM, then SIGKILL after 10 s.
#[derive(Debug)]
pub struct Daemon {
    pub what: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `program ARGS` with stdout and stderr into `log`.
    pub fn start(
        what: &str,
        program: &str,
        args: &[&std::ffi::OsStr],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> Daemon {
        let f = std::fs::File::create(log).expect("daemon log file");
        let mut c = Command::new(program);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log fd"))
            .stderr(f);
        for (k, v) in envs {
            c.env(k, v);
        }
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({program}): {e}"));
        Daemon {
            what: what.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` and waits up to `timeout` for the exit; returns the exit status.
    pub fn stop_with(&mut self, sig: i32, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on the pid of a child this guard owns and has not reaped.
        unsafe { libc::kill(child.id() as i32, sig) };
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Panics with the log unless the process is still running.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(s)) = c.try_wait() {
                panic!("{} exited early ({s}):\n{}", self.what, self.log_text());
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM, Duration::from_secs(10));
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the daemon to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.0 GET on loopback; returns (status, headers, body).
pub fn http_get(
    addr: &str,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head, buf[split + 4..].to_vec()))
}

/// One sample line of an exposition: name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of OpenMetrics / Prometheus text (label values without `,` or `}`
/// inside, which is all the tests produce).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let (k, v) = kv.split_once("=\"")?;
                Some((k.to_string(), v.trim_end_matches('"').to_string()))
            })
            .collect();
        out.push(Sample {
            name: name.to_string(),
            labels,
            value: value.parse().expect("numeric sample value"),
        });
    }
    out
}

/// The samples of `name` for container `container` (label `name`).
pub fn samples<'a>(all: &'a [Sample], name: &str, container: &str) -> Vec<&'a Sample> {
    all.iter()
        .filter(|s| s.name == name && s.labels.get("name").map(String::as_str) == Some(container))
        .collect()
}

/// The single value of `name` for `container`, summed over extra labels (interfaces, devices).
pub fn value(all: &[Sample], name: &str, container: &str) -> Option<f64> {
    let s = samples(all, name, container);
    (!s.is_empty()).then(|| s.iter().map(|s| s.value).sum())
}

/// A debug toolbox built once per test binary from the base fixture plus the host's static
/// busybox (`ps`, `wget`, `sha256sum` …) and the host's strace with the libraries it links:
/// nothing comes from a registry or an archive. Base and host are both Debian 12, so the host's
/// libraries fit. Removed never (other tests of the binary use it; the tag is fixed).
pub fn toolbox_image() -> String {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            super::require("busybox");
            super::require("strace");
            super::require("ldd");
            let base = fixture_image("base");
            let ctx = super::tempdir("toolbox");
            let ldd = run("ldd", &os!["/usr/bin/strace"]);
            let mut files = vec!["/usr/bin/strace".to_string()];
            files.extend(ldd.stdout.lines().filter_map(|l| {
                let p = l.split("=>").nth(1)?.split_whitespace().next()?;
                p.starts_with('/').then(|| p.to_string())
            }));
            let mut docker = format!("FROM {base}\n");
            for (i, f) in files.iter().enumerate() {
                let real = std::fs::canonicalize(f).expect("a library ldd named");
                let name = format!("f{i}");
                std::fs::copy(&real, ctx.path().join(&name)).expect("copy into the context");
                docker.push_str(&format!("COPY {name} {f}\n"));
            }
            std::fs::copy("/usr/bin/busybox", ctx.path().join("busybox")).expect("copy busybox");
            docker.push_str("COPY busybox /usr/local/bin/busybox\n");
            // Applets in their own directory, after Debian's tools in PATH order.
            docker.push_str(
                "RUN for a in ps wget nc; do ln -s /usr/local/bin/busybox /usr/local/bin/$a; done\n",
            );
            std::fs::write(ctx.path().join("Dockerfile"), docker).expect("Dockerfile");
            let tag = "whittle-test/toolbox:latest".to_string();
            let r = run(
                "docker",
                &os!["build", "-q", "--network", "none", "-t", &tag, ctx.path()],
            );
            assert_eq!(r.code, Some(0), "docker build of the toolbox: {}", r.stderr);
            tag
        })
        .clone()
}
