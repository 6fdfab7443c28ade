//! Step 3: run the image in the real engine — once as it comes, then under the plan — probe it,
//! stop it, and compare.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use serde::Serialize;
use whittle_engine::Engine;
use whittle_sandbox::Probe;

use crate::{Error, Result};

/// Label on every container the proof starts.
pub const LABEL: &str = "org.whittle.harden";

/// One probe's result in the engine.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProbeResult {
    pub probe: String,
    pub status: Option<u16>,
    pub exit_code: Option<i64>,
    pub sha256: Option<String>,
    pub error: Option<String>,
}

impl ProbeResult {
    /// What must be equal between the unconfined and the hardened run.
    fn key(&self) -> (Option<u16>, Option<i64>, Option<&str>, bool) {
        (
            self.status,
            self.exit_code,
            self.sha256.as_deref(),
            self.error.is_none(),
        )
    }

    fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("error: {e}");
        }
        let mut s = String::new();
        if let Some(st) = self.status {
            s.push_str(&format!("HTTP {st}"));
        }
        if let Some(c) = self.exit_code {
            s.push_str(&format!("exit {c}"));
        }
        if let Some(h) = &self.sha256 {
            s.push_str(&format!(", sha256 {}", &h[..12.min(h.len())]));
        }
        s
    }
}

/// What `/proc/PID/status` of the container's main process said.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct ProcFacts {
    pub seccomp: Option<u32>,
    pub no_new_privs: Option<u32>,
    pub cap_eff: Option<u64>,
    pub uid: Option<u32>,
}

/// One container run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunResult {
    /// Probe results, `repeats` rounds of every probe (CLI: one entry, the run itself).
    pub probes: Vec<ProbeResult>,
    /// Exit code after `docker stop` (servers) or of the run (CLI).
    pub exit_code: Option<i64>,
    pub stop_ms: Option<u64>,
    pub facts: ProcFacts,
    /// Peak memory (cgroup v1 `memory.max_usage_in_bytes`).
    pub memory_peak: Option<u64>,
    pub pids_peak: Option<u64>,
    /// Why the container did not start or run, when it did not.
    pub error: Option<String>,
    pub log_tail: String,
}

/// How a hardened run differs from the unconfined one (empty: it passed).
pub fn differences(base: &RunResult, hard: &RunResult, server: bool) -> Vec<String> {
    let mut d = Vec::new();
    if let Some(e) = &hard.error {
        d.push(format!("the container did not run: {e}"));
        // Name what the unconfined run answered and the hardened one never got to: whether
        // the app died before or after its pid was seen is a race, the answer must not be.
        for b in &base.probes {
            let line = format!(
                "{}: unconfined {} / hardened not tried (the container was gone)",
                b.probe,
                b.summary()
            );
            if !d.contains(&line) {
                d.push(line);
            }
        }
        return d;
    }
    let n = base.probes.len().max(1);
    for (i, h) in hard.probes.iter().enumerate() {
        let b = &base.probes[i % n];
        let line = format!(
            "{}: unconfined {} / hardened {}",
            h.probe,
            b.summary(),
            h.summary()
        );
        if b.key() != h.key() && !d.contains(&line) {
            d.push(line);
        }
    }
    if hard.probes.len() < base.probes.len() {
        d.push("fewer probe results than the unconfined run".into());
    }
    if server {
        match hard.stop_ms {
            Some(ms) if ms >= 10_000 => d.push(format!(
                "docker stop took {:.1} s (the app did not exit on its stop signal)",
                ms as f64 / 1000.0
            )),
            None => d.push("the container was not running at docker stop".into()),
            _ => {}
        }
    }
    // An app that ignored its stop signal was killed in the unconfined run: its exit code
    // there (137) is not the one to match.
    let base_stopped = !server || base.stop_ms.is_some_and(|ms| ms < 10_000);
    if base_stopped && hard.exit_code != base.exit_code {
        d.push(format!(
            "exit code: unconfined {:?} / hardened {:?}",
            base.exit_code, hard.exit_code
        ));
    }
    d
}

/// The engine side of the proof.
#[derive(Debug)]
pub struct Prover {
    pub engine: Engine,
    rt: tokio::runtime::Runtime,
    pub image: String,
    pub probes: Vec<Probe>,
    pub exposed: Vec<u16>,
    pub server: bool,
    pub ready_timeout: Duration,
    pub probe_timeout: Duration,
}

/// Versions that decide the profile: the engine's and runc's.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub engine: String,
    pub runc: String,
}

fn api(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Engine(format!("{what}: {e}"))
}

impl Prover {
    pub fn new(host: Option<&str>, image: String) -> Result<Prover> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| api("starting the I/O runtime", e))?;
        let engine = rt
            .block_on(Engine::connect_negotiated(host))
            .map_err(|e| Error::Engine(e.to_string()))?;
        Ok(Prover {
            engine,
            rt,
            image,
            probes: Vec::new(),
            exposed: Vec::new(),
            server: true,
            ready_timeout: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(5),
        })
    }

    pub fn versions(&self) -> Result<Versions> {
        let v = self
            .rt
            .block_on(self.engine.docker().version())
            .map_err(|e| api("docker version", e))?;
        let comp = |name: &str| {
            v.components
                .iter()
                .flatten()
                .find(|c| c.name.eq_ignore_ascii_case(name))
                .map(|c| c.version.clone())
        };
        Ok(Versions {
            engine: v.version.clone().unwrap_or_default(),
            runc: comp("runc").unwrap_or_default(),
        })
    }

    /// Whether the image is in the engine.
    pub fn has_image(&self) -> bool {
        self.rt
            .block_on(self.engine.docker().inspect_image(&self.image))
            .is_ok()
    }

    /// Runs the image with `host` settings and `user`, probes it `repeats` times, stops it.
    pub fn run(&self, host: Option<HostConfig>, user: Option<String>, repeats: usize) -> RunResult {
        let name = format!("whittle-harden-{}-{}", std::process::id(), unique());
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            user,
            labels: Some([(LABEL.to_string(), "proof".to_string())].into()),
            host_config: host,
            ..Default::default()
        };
        let docker = self.engine.docker();
        let created = self.rt.block_on(docker.create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        ));
        let id = match created {
            Ok(c) => c.id,
            Err(e) => {
                return RunResult {
                    error: Some(crate::one_line(&format!("create: {e}"))),
                    ..RunResult::default()
                }
            }
        };
        let r = self.run_created(&id, repeats);
        let _ = self.rt.block_on(
            docker.remove_container(
                &id,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            ),
        );
        r
    }

    fn run_created(&self, id: &str, repeats: usize) -> RunResult {
        let docker = self.engine.docker();
        let mut out = RunResult::default();
        if let Err(e) = self.rt.block_on(
            docker.start_container(id, None::<bollard::query_parameters::StartContainerOptions>),
        ) {
            out.error = Some(crate::one_line(&format!("start: {e}")));
            return out;
        }
        let pid = self.pid(id);
        if let Some(pid) = pid {
            out.facts = proc_facts(pid);
        }
        if !self.server {
            let t = Instant::now();
            let waited = self.rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(300),
                    docker
                        .wait_container(id, Some(WaitContainerOptionsBuilder::new().build()))
                        .next(),
                )
                .await
            });
            let _ = t;
            out.exit_code = match waited {
                Ok(Some(Ok(w))) => Some(w.status_code),
                // A nonzero exit comes as an error carrying the code.
                Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError {
                    code, ..
                }))) => Some(code),
                _ => None,
            };
            let (stdout, stderr) = self.logs(id);
            out.log_tail = tail(&stderr);
            out.probes.push(ProbeResult {
                probe: "run to completion".into(),
                status: None,
                exit_code: out.exit_code,
                sha256: Some(whittle_sandbox::sha256_hex(&stdout)),
                error: None,
            });
            return out;
        }
        let Some(pid) = pid else {
            out.error = Some(format!(
                "the container exited at once: {}",
                crate::one_line(&tail(&self.logs(id).1))
            ));
            return out;
        };
        let netns: Option<OwnedFd> = File::open(format!("/proc/{pid}/ns/net"))
            .ok()
            .map(OwnedFd::from);
        let ready = self.wait_ready(pid as i32);
        let mut pids_peak = 0;
        for _ in 0..repeats {
            // A probe that already failed will fail again: no more rounds of waiting for it.
            if out.probes.iter().any(|p| p.error.is_some()) {
                break;
            }
            for p in &self.probes {
                let r = if !ready && matches!(p, Probe::Http { .. }) {
                    ProbeResult {
                        probe: label(p),
                        status: None,
                        exit_code: None,
                        sha256: None,
                        error: Some("the port never started listening".into()),
                    }
                } else {
                    self.probe(id, netns.as_ref(), p)
                };
                out.probes.push(r);
                pids_peak = pids_peak.max(pids_now(pid).unwrap_or(0));
            }
        }
        out.pids_peak = Some(pids_peak);
        out.memory_peak = memory_peak(pid);
        let t = Instant::now();
        let running = self.pid(id).is_some();
        let stopped = self.rt.block_on(
            docker.stop_container(id, Some(StopContainerOptionsBuilder::new().t(10).build())),
        );
        if running && stopped.is_ok() {
            out.stop_ms = Some(t.elapsed().as_millis() as u64);
        }
        out.exit_code = self
            .rt
            .block_on(docker.inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            ))
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.exit_code);
        out.log_tail = tail(&self.logs(id).1);
        out
    }

    fn pid(&self, id: &str) -> Option<u32> {
        let c = self
            .rt
            .block_on(self.engine.docker().inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            ))
            .ok()?;
        let s = c.state?;
        if s.running != Some(true) {
            return None;
        }
        s.pid.filter(|&p| p > 0).map(|p| p as u32)
    }

    fn wait_ready(&self, pid: i32) -> bool {
        let ports: Vec<u16> = self
            .probes
            .iter()
            .filter_map(|p| match p {
                Probe::Http { port, .. } => Some(*port),
                _ => None,
            })
            .chain(self.exposed.iter().copied())
            .collect();
        if ports.is_empty() {
            return true;
        }
        let deadline = Instant::now() + self.ready_timeout;
        while Instant::now() < deadline {
            if ports.iter().any(|&p| whittle_sandbox::listening(pid, p)) {
                return true;
            }
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    fn probe(&self, id: &str, netns: Option<&OwnedFd>, p: &Probe) -> ProbeResult {
        let mut r = ProbeResult {
            probe: label(p),
            status: None,
            exit_code: None,
            sha256: None,
            error: None,
        };
        let to = self.probe_timeout;
        match p {
            Probe::Http { port, path } => {
                let Some(ns) = netns else {
                    r.error = Some("no network namespace".into());
                    return r;
                };
                let (port, path) = (*port, path.clone());
                match whittle_sandbox::in_netns(ns, move || {
                    whittle_sandbox::http_get(port, &path, to)
                }) {
                    Ok(Ok((status, body))) => {
                        r.status = Some(status);
                        r.sha256 = Some(whittle_sandbox::sha256_hex(&body));
                    }
                    Ok(Err(e)) => r.error = Some(e),
                    Err(e) => r.error = Some(e.to_string()),
                }
            }
            Probe::Host(cmd) => {
                let Some(ns) = netns else {
                    r.error = Some("no network namespace".into());
                    return r;
                };
                match whittle_sandbox::host_command(ns, cmd, to) {
                    Ok((code, out)) => {
                        r.exit_code = code.map(i64::from);
                        r.sha256 = Some(whittle_sandbox::sha256_hex(&out));
                    }
                    Err(e) => r.error = Some(e),
                }
            }
            Probe::Exec(cmd) => match whittle_sandbox::split_words(cmd) {
                Ok(argv) => match self.exec(id, argv, to) {
                    Ok((code, out)) => {
                        r.exit_code = code;
                        r.sha256 = Some(whittle_sandbox::sha256_hex(&out));
                    }
                    Err(e) => r.error = Some(e),
                },
                Err(e) => r.error = Some(e.to_string()),
            },
        }
        r
    }

    /// `docker exec` (as the container's user, under its settings); exit code and stdout.
    pub fn exec(
        &self,
        id: &str,
        argv: Vec<String>,
        timeout: Duration,
    ) -> std::result::Result<(Option<i64>, Vec<u8>), String> {
        let docker = self.engine.docker();
        self.rt.block_on(async {
            let ex = docker
                .create_exec(
                    id,
                    CreateExecOptions {
                        cmd: Some(argv),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            let mut stdout = Vec::new();
            let started = docker
                .start_exec(&ex.id, None)
                .await
                .map_err(|e| e.to_string())?;
            if let StartExecResults::Attached { mut output, .. } = started {
                let collect = async {
                    while let Some(Ok(chunk)) = output.next().await {
                        if let bollard::container::LogOutput::StdOut { message } = chunk {
                            stdout.extend_from_slice(&message);
                        }
                    }
                };
                if tokio::time::timeout(timeout, collect).await.is_err() {
                    return Err(format!("timed out after {} s", timeout.as_secs()));
                }
            }
            let code = docker
                .inspect_exec(&ex.id)
                .await
                .map_err(|e| e.to_string())?
                .exit_code;
            Ok((code, stdout))
        })
    }

    fn logs(&self, id: &str) -> (Vec<u8>, Vec<u8>) {
        let docker = self.engine.docker();
        self.rt.block_on(async {
            let mut s = docker.logs(
                id,
                Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()),
            );
            let (mut out, mut err) = (Vec::new(), Vec::new());
            while let Some(Ok(chunk)) = s.next().await {
                match chunk {
                    bollard::container::LogOutput::StdOut { message } => {
                        out.extend_from_slice(&message)
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        err.extend_from_slice(&message)
                    }
                    _ => {}
                }
            }
            (out, err)
        })
    }
}

/// `http 80/`, `exec CMD`, `host CMD`.
pub fn label(p: &Probe) -> String {
    match p {
        Probe::Http { port, path } => format!("http {port}{path}"),
        Probe::Exec(c) => format!("exec {c}"),
        Probe::Host(c) => format!("host {c}"),
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{t:08x}{}", N.fetch_add(1, Ordering::Relaxed))
}

fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Seccomp mode, no_new_privs, effective capabilities and uid of `pid`.
pub fn proc_facts(pid: u32) -> ProcFacts {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return ProcFacts::default();
    };
    let fields: BTreeMap<&str, &str> = s
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    ProcFacts {
        seccomp: fields.get("Seccomp").and_then(|v| v.parse().ok()),
        no_new_privs: fields.get("NoNewPrivs").and_then(|v| v.parse().ok()),
        cap_eff: fields
            .get("CapEff")
            .and_then(|v| u64::from_str_radix(v, 16).ok()),
        uid: fields
            .get("Uid")
            .and_then(|v| v.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok()),
    }
}

/// The cgroup (v1) directory of `controller` for `pid`.
fn cgroup_dir(pid: u32, controller: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let cg = whittle_engine::procfs::Cgroups::parse(&text);
    let path = cg.v1.get(controller)?;
    Some(format!("/sys/fs/cgroup/{controller}{path}"))
}

fn memory_peak(pid: u32) -> Option<u64> {
    let d = cgroup_dir(pid, "memory")?;
    std::fs::read_to_string(format!("{d}/memory.max_usage_in_bytes"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn pids_now(pid: u32) -> Option<u64> {
    let d = cgroup_dir(pid, "pids")?;
    std::fs::read_to_string(format!("{d}/pids.current"))
        .ok()?
        .trim()
        .parse()
        .ok()
}
