//! One sandboxed run: start, probe, stop, collect — and clean up on every path out.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cgroup::PidsCgroup;
use crate::fanotify::{FanResult, Fanotify};
use crate::init::{self, Command, Event, Launch, SpawnSpec, Stage};
use crate::mounts::{RootPlan, RootSource};
use crate::probes::{self, Probe, ProbeReport};
use crate::report::{build_files, FileRecord, Recorder};
use crate::rootfs::{copy_tree, temp_dir, PreparedImage};
use crate::spec::{signal_name, split_words, RunSpec};
use crate::syscall_log::{probe_phase, SyscallLog, SyscallMode, PHASE_START, PHASE_STOP};
use crate::{Error, Result};

/// How to run and watch.
#[derive(Debug, Clone)]
pub struct Options {
    /// Probes, in order. Empty: GET / on each exposed TCP port, or (no ports) run to
    /// completion.
    pub probes: Vec<Probe>,
    /// Replaces the image's Cmd.
    pub command: Option<Vec<String>>,
    /// Keep watching this long after the probes.
    pub continue_after: Duration,
    /// How long a probed port may take to listen, from the app's start.
    pub ready_timeout: Duration,
    /// The whole run, from start to stop: the app is killed at this point.
    pub timeout: Duration,
    /// Between the stop signal and SIGKILL.
    pub grace: Duration,
    /// Limit for one HTTP request or command probe.
    pub probe_timeout: Duration,
    /// Record file accesses (ptrace + seccomp, fanotify). Off: only run (benchmarks).
    pub record: bool,
    /// Use fanotify too (when recording).
    pub fanotify: bool,
    /// Process limit of the sandbox (pids cgroup).
    pub pids_max: u64,
    /// How much of the app's stderr the report keeps (its end).
    pub stderr_tail: u64,
    /// Record (or enforce an allowlist of) every system call, not only file-related ones.
    pub syscalls: SyscallMode,
    /// Capabilities of the programs as a mask (default: Docker's default set).
    pub caps: Option<u64>,
    /// Run the app and exec probes as uid:gid instead of the image's user.
    pub user: Option<(u32, u32)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            probes: Vec::new(),
            command: None,
            continue_after: Duration::ZERO,
            ready_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(300),
            grace: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(30),
            record: true,
            fanotify: true,
            pids_max: 4096,
            stderr_tail: 4096,
            syscalls: SyscallMode::Off,
            caps: None,
            user: None,
        }
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Probes done (or the CLI app finished) and the app stopped.
    Ok,
    /// The app could not be started (missing or not executable entrypoint, bad WorkingDir).
    ExecFailed,
    /// A server app exited before it was stopped, or a CLI app was killed by a signal.
    Crashed,
    /// A probed port never started listening within the ready timeout.
    NotReady,
    /// The whole run took longer than the timeout; everything was killed.
    Timeout,
    /// Ctrl-C (or SIGTERM/SIGHUP) reached whittle.
    Interrupted,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct AppReport {
    /// Pid inside the sandbox.
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    /// Set when the app was ended by a signal.
    pub signal: Option<String>,
    /// Whether whittle stopped it (stop signal, SIGKILL after the grace period or timeout).
    pub stopped_by_whittle: bool,
    pub stdout_sha256: Option<String>,
    pub stdout_bytes: u64,
    /// The end of stderr (4 KiB by default).
    pub stderr_tail: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Recorders {
    pub ptrace: bool,
    pub fanotify: bool,
    pub fanotify_events: u64,
    pub fanotify_overflow: bool,
    /// Why a recorder is off, or other caveats.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Timings {
    /// Flatten + extract (0 when the image was prepared before).
    pub prepare_ms: u64,
    /// From the start of the run to the app's successful exec.
    pub start_ms: Option<u64>,
    /// The whole run (start to cleanup done).
    pub run_ms: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    /// Paths recorded (pseudo file systems excluded).
    pub paths: usize,
    /// Paths used successfully that the image has.
    pub used_in_image: usize,
    /// Bytes of the image's regular files among them.
    pub used_bytes: u64,
    /// Lookups that found nothing and never succeeded.
    pub missing: usize,
    /// Paths used successfully that the image does not have (created by the app).
    pub created: usize,
    /// Accesses under /proc, /sys and /dev, not listed.
    pub pseudo_paths: u64,
}

/// The full result of `whittle trace`. See the crate docs for the JSON schema.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub image: String,
    pub command: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub hostname: String,
    pub mode: &'static str,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub app: AppReport,
    pub probes: Vec<ProbeReport>,
    pub recorders: Recorders,
    pub timings: Timings,
    pub summary: Summary,
    pub files: Vec<FileRecord>,
    /// Every system call seen (with `Options::syscalls`); not in `whittle trace`'s JSON.
    #[serde(skip)]
    pub syscalls: Option<SyscallLog>,
}

pub const SCHEMA: &str = "whittle.trace/v1";

/// Opens, flattens, extracts and runs `r`.
pub fn trace_image(
    r: &whittle_image::ImageRef,
    opts: &Options,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<Report> {
    let img = PreparedImage::open(r, progress)?;
    let mut rep = run(&img, opts)?;
    rep.timings.prepare_ms = img.extract_ms;
    Ok(rep)
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut p = [0; 2];
    // SAFETY: a two-element array for pipe2.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: both fds are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("temp paths have no NUL")
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n / 2];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ std::process::id() as u128;
        b = t.to_le_bytes()[..n / 2].to_vec();
    }
    hex::encode(b)
}

/// A started sandbox. Dropping it kills everything in it, waits for the tracer, and removes
/// the run directory — whatever happened before.
struct Sandbox {
    init_pid: Option<i32>,
    tracer: Option<JoinHandle<TracerOut>>,
    fan_stop: Arc<AtomicBool>,
    fan: Option<JoinHandle<FanResult>>,
    /// The phase the tracer attributes system calls to.
    phase: Arc<AtomicU32>,
    events: Receiver<Event>,
    ctl: Option<File>,
    netns: Option<OwnedFd>,
    cgroup: Option<PidsCgroup>,
    dir: Option<tempfile::TempDir>,
    app_exit: Option<i32>,
    exits: Vec<(u32, i32)>,
    failures: Vec<(u32, Stage, i32)>,
    spawned: Vec<(u32, i32)>,
    setup: Option<std::result::Result<(), (String, i32)>>,
}

struct TracerOut {
    rec: Recorder,
    log: SyscallLog,
}

impl Sandbox {
    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("alive").path()
    }

    fn pump(&mut self, wait: Duration) -> bool {
        match self.events.recv_timeout(wait) {
            Ok(e) => {
                match e {
                    Event::Ready => self.setup = Some(Ok(())),
                    Event::SetupFailed { step, errno } => self.setup = Some(Err((step, errno))),
                    Event::Spawned { id, pid } => self.spawned.push((id, pid)),
                    Event::ExecFailed { id, stage, errno } => {
                        self.failures.push((id, stage, errno))
                    }
                    Event::Exited { id, status } => {
                        if id == 0 {
                            self.app_exit = Some(status);
                        }
                        self.exits.push((id, status));
                    }
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                // Init is gone: nothing more will come.
                if self.setup.is_none() {
                    self.setup = Some(Err(("sandbox init exited".into(), 0)));
                }
                std::thread::sleep(wait.min(Duration::from_millis(20)));
                false
            }
        }
    }

    /// Pumps events until `done` or `deadline`; false on deadline or interrupt.
    fn wait_for(&mut self, deadline: Instant, mut done: impl FnMut(&Sandbox) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if crate::signals::interrupted().is_some() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.pump((deadline - now).min(Duration::from_millis(25)));
        }
    }

    fn send(&mut self, c: &Command) -> Result<()> {
        let ctl = self.ctl.as_mut().expect("alive");
        init::send_command(ctl, c).map_err(|e| Error::setup("talking to sandbox init", e))
    }

    fn kill_all(&mut self) {
        if let Some(pid) = self.init_pid.take() {
            // SAFETY: kill with integer arguments; init is a process we started (and, as it is
            // not reaped until the tracer thread waits for it, the pid is still ours).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Kills everything, waits for the recorders, removes the run directory.
    fn finish(&mut self) -> (Option<TracerOut>, Option<FanResult>) {
        self.kill_all();
        self.ctl = None;
        self.netns = None;
        let rec = self.tracer.take().and_then(|t| t.join().ok());
        self.fan_stop.store(true, Ordering::Release);
        let fan = self.fan.take().and_then(|t| t.join().ok());
        // Drain events so late exit statuses are seen.
        while let Ok(e) = self.events.try_recv() {
            if let Event::Exited { id, status } = e {
                if id == 0 && self.app_exit.is_none() {
                    self.app_exit = Some(status);
                }
            }
        }
        self.cgroup = None;
        (rec, fan)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.finish();
        if let Some(d) = self.dir.take() {
            let p = d.path().to_path_buf();
            if d.close().is_err() {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
}

fn read_tail(p: &Path, n: u64) -> String {
    let Ok(mut f) = File::open(p) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(n)));
    let mut b = Vec::new();
    let _ = f.read_to_end(&mut b);
    String::from_utf8_lossy(&b).into_owned()
}

fn hash_file(p: &Path) -> (Option<String>, u64) {
    let Ok(mut f) = File::open(p) else {
        return (None, 0);
    };
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).unwrap_or(0);
    (Some(hex::encode(h.finalize())), n)
}

/// The message an engine gives for a failed start, and the exit code it uses.
pub fn exec_error(argv0: &str, cwd: &str, stage: Stage, errno: i32) -> (String, i32) {
    let err = std::io::Error::from_raw_os_error(errno);
    let what = err.to_string();
    let what = what
        .split(" (os error")
        .next()
        .unwrap_or(&what)
        .to_lowercase();
    match stage {
        Stage::Lookup => (
            format!("exec: \"{argv0}\": executable file not found in $PATH"),
            127,
        ),
        Stage::Exec if errno == libc::ENOENT => (
            format!("exec: \"{argv0}\": stat {argv0}: no such file or directory"),
            127,
        ),
        Stage::Exec => (format!("exec: \"{argv0}\": {what}"), 126),
        Stage::Chdir => (format!("chdir to cwd (\"{cwd}\"): {what}"), 128),
        Stage::Privileges => (format!("setting up the process: {what}"), 126),
    }
}

fn status_parts(st: i32) -> (Option<i32>, Option<String>) {
    if libc::WIFEXITED(st) {
        (Some(libc::WEXITSTATUS(st)), None)
    } else if libc::WIFSIGNALED(st) {
        (None, Some(signal_name(libc::WTERMSIG(st))))
    } else {
        (None, None)
    }
}

/// Runs a prepared image once.
pub fn run(img: &PreparedImage, opts: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let hostname = random_hex(12);
    let mut spec = RunSpec::from_config(
        &img.config,
        &img.flat.tree,
        &img.flat.store,
        opts.command.clone(),
        hostname.clone(),
    )?;
    if let Some((uid, gid)) = opts.user {
        spec.uid = uid;
        spec.gid = gid;
        spec.groups = vec![gid];
    }
    let mut probes = opts.probes.clone();
    let server = !probes.is_empty() || !spec.exposed_tcp.is_empty();
    if probes.is_empty() {
        probes = spec
            .exposed_tcp
            .iter()
            .map(|&port| Probe::Http {
                port,
                path: "/".into(),
            })
            .collect();
    }
    let record = opts.record && crate::ptrace::supported();
    let mut recorders = Recorders {
        ptrace: record,
        ..Recorders::default()
    };
    if opts.record && !record {
        recorders
            .notes
            .push("system call recording needs x86_64; only fanotify was used".into());
    }

    let mut sb = start(img, &spec, opts, record, &mut recorders, true)?;
    if matches!(&sb.setup, Some(Err((step, _))) if step == "mount overlay root") {
        recorders
            .notes
            .push("overlayfs unavailable: ran on a private copy of the root".into());
        drop(sb);
        sb = start(img, &spec, opts, record, &mut recorders, false)?;
    }
    if let Some(Err((step, errno))) = &sb.setup {
        return Err(Error::setup(
            step.clone(),
            std::io::Error::from_raw_os_error(*errno),
        ));
    }
    let deadline = t0 + opts.timeout;
    let mut outcome = Outcome::Ok;
    let mut error = None;
    let mut app = AppReport::default();
    let mut probe_reports = Vec::new();
    let mut start_ms = None;
    let mut stopped = false;

    // The app.
    let mut app_spec = SpawnSpec {
        id: 0,
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.clone(),
        trace: record,
        stdout: "app.out".into(),
        stderr: "app.err".into(),
    };
    sb.send(&Command::Spawn(app_spec.clone()))?;
    let started = sb.wait_for(deadline, |s| {
        s.spawned.iter().any(|(i, _)| *i == 0) || s.failures.iter().any(|(i, ..)| *i == 0)
    });
    let app_started = Instant::now();
    if let Some((_, stage, errno)) = sb.failures.iter().find(|(i, ..)| *i == 0).copied() {
        let (msg, code) = exec_error(&spec.argv[0], &spec.cwd, stage, errno);
        outcome = Outcome::ExecFailed;
        error = Some(msg);
        app.exit_code = Some(code);
    } else if !started {
        outcome = if crate::signals::interrupted().is_some() {
            Outcome::Interrupted
        } else {
            Outcome::Timeout
        };
    } else {
        start_ms = Some(t0.elapsed().as_millis() as u64);
        app.pid = sb.spawned.iter().find(|(i, _)| *i == 0).map(|(_, p)| *p);
    }
    let app_err = sb.dir().join("app.err");
    let interrupted_or_timeout = |outcome: &mut Outcome| {
        *outcome = if crate::signals::interrupted().is_some() {
            Outcome::Interrupted
        } else {
            Outcome::Timeout
        };
    };

    if outcome == Outcome::Ok && !server {
        // A CLI image: run to completion.
        if !sb.wait_for(deadline, |s| s.app_exit.is_some()) {
            interrupted_or_timeout(&mut outcome);
            stopped = true;
        }
    } else if outcome == Outcome::Ok {
        let ready_deadline = (app_started + opts.ready_timeout).min(deadline);
        let init_pid = sb.init_pid.expect("started");
        let mut next_id = 1;
        // Probes that are not HTTP requests do not wait for a port by themselves: without
        // this, `--exec-probe` alone would run while the server is still reading its
        // configuration, and what the app touches would depend on the race. A server is
        // ready when one of its exposed ports listens (an image may expose a port its
        // default configuration does not open).
        let http_probed = probes.iter().any(|p| matches!(p, Probe::Http { .. }));
        if !http_probed && !spec.exposed_tcp.is_empty() {
            let ports = spec.exposed_tcp.clone();
            let ready = sb.wait_for(ready_deadline, |s| {
                s.app_exit.is_some() || ports.iter().any(|&p| probes::listening(init_pid, p))
            });
            if !ready && sb.app_exit.is_none() {
                if crate::signals::interrupted().is_some() || Instant::now() >= deadline {
                    interrupted_or_timeout(&mut outcome);
                } else {
                    // A worker may expose a port it opens only when configured (metrics, an
                    // admin API): the probes asked for run anyway; the report says so.
                    recorders.notes.push(format!(
                        "none of the exposed ports {ports:?} started listening within {} s; \
                         the probes ran anyway",
                        opts.ready_timeout.as_secs_f64()
                    ));
                }
            }
        }
        for (pi, p) in probes.iter().enumerate() {
            if sb.app_exit.is_some() || outcome != Outcome::Ok {
                break;
            }
            // Calls made while waiting for the port are the app's start-up, not the probe's.
            if !matches!(p, Probe::Http { .. }) {
                sb.phase.store(probe_phase(pi), Ordering::Relaxed);
            }
            let t = Instant::now();
            match p {
                Probe::Http { port, path } => {
                    let port = *port;
                    let ready = sb.wait_for(ready_deadline, |s| {
                        s.app_exit.is_some() || probes::listening(init_pid, port)
                    });
                    sb.phase.store(probe_phase(pi), Ordering::Relaxed);
                    if sb.app_exit.is_some() {
                        break;
                    }
                    if !ready {
                        if crate::signals::interrupted().is_some() || Instant::now() >= deadline {
                            interrupted_or_timeout(&mut outcome);
                        } else {
                            outcome = Outcome::NotReady;
                            error = Some(format!(
                                "port {port} did not start listening within {} s",
                                opts.ready_timeout.as_secs_f64()
                            ));
                        }
                        break;
                    }
                    let mut r = ProbeReport::new("http", format!("{port}{path}"));
                    let path2 = path.clone();
                    let to = opts.probe_timeout;
                    let res = match &sb.netns {
                        Some(ns) => {
                            probes::in_netns(ns, move || probes::http_get(port, &path2, to))
                                .map_err(|e| e.to_string())
                                .and_then(|r| r)
                        }
                        None => Err("no network namespace".into()),
                    };
                    match res {
                        Ok((status, body)) => {
                            r.ok = true;
                            r.status = Some(status);
                            r.sha256 = Some(probes::sha256_hex(&body));
                            r.bytes = Some(body.len() as u64);
                        }
                        Err(e) => r.error = Some(e),
                    }
                    r.duration_ms = t.elapsed().as_millis() as u64;
                    probe_reports.push(r);
                }
                Probe::Exec(cmd) => {
                    let mut r = ProbeReport::new("exec", cmd.clone());
                    let id = next_id;
                    next_id += 1;
                    match split_words(cmd) {
                        Ok(argv) if !argv.is_empty() => {
                            app_spec.id = id;
                            app_spec.argv = argv.clone();
                            app_spec.stdout = format!("probe-{id}.out");
                            app_spec.stderr = format!("probe-{id}.err");
                            sb.send(&Command::Spawn(app_spec.clone()))?;
                            let pd = (Instant::now() + opts.probe_timeout).min(deadline);
                            let done = sb.wait_for(pd, |s| {
                                s.exits.iter().any(|(i, _)| *i == id)
                                    || s.failures.iter().any(|(i, ..)| *i == id)
                            });
                            if let Some((_, stage, errno)) =
                                sb.failures.iter().find(|(i, ..)| *i == id).copied()
                            {
                                let (msg, code) = exec_error(&argv[0], &spec.cwd, stage, errno);
                                r.error = Some(msg);
                                r.exit_code = Some(code);
                            } else if !done {
                                sb.send(&Command::Signal {
                                    id,
                                    sig: libc::SIGKILL,
                                })?;
                                r.error = Some("timed out".into());
                            } else {
                                let st = sb.exits.iter().find(|(i, _)| *i == id).map(|x| x.1);
                                let (code, sig) = st.map(status_parts).unwrap_or((None, None));
                                r.exit_code = code;
                                r.ok = code.is_some();
                                if let Some(s) = sig {
                                    r.error = Some(format!("killed by {s}"));
                                }
                                let (sha, n) = hash_file(&sb.dir().join(format!("probe-{id}.out")));
                                r.sha256 = sha;
                                r.bytes = Some(n);
                            }
                        }
                        Ok(_) => r.error = Some("empty command".into()),
                        Err(e) => r.error = Some(e.to_string()),
                    }
                    r.duration_ms = t.elapsed().as_millis() as u64;
                    probe_reports.push(r);
                }
                Probe::Host(cmd) => {
                    let mut r = ProbeReport::new("host", cmd.clone());
                    let res = match &sb.netns {
                        Some(ns) => probes::host_command(ns, cmd, opts.probe_timeout),
                        None => Err("no network namespace".into()),
                    };
                    match res {
                        Ok((code, out)) => {
                            r.ok = code.is_some();
                            r.exit_code = code;
                            r.sha256 = Some(probes::sha256_hex(&out));
                            r.bytes = Some(out.len() as u64);
                        }
                        Err(e) => r.error = Some(e),
                    }
                    r.duration_ms = t.elapsed().as_millis() as u64;
                    probe_reports.push(r);
                }
            }
        }
        if outcome == Outcome::Ok && sb.app_exit.is_none() && !opts.continue_after.is_zero() {
            let until = (Instant::now() + opts.continue_after).min(deadline);
            sb.wait_for(until, |s| s.app_exit.is_some());
            if crate::signals::interrupted().is_some() {
                outcome = Outcome::Interrupted;
            }
        }
        if sb.app_exit.is_some() && outcome == Outcome::Ok {
            outcome = Outcome::Crashed;
        }
        if sb.app_exit.is_none() {
            // Stop like an engine: StopSignal, grace, SIGKILL.
            stopped = true;
            if outcome == Outcome::Ok || outcome == Outcome::NotReady {
                sb.phase.store(PHASE_STOP, Ordering::Relaxed);
                sb.send(&Command::Signal {
                    id: 0,
                    sig: spec.stop_signal,
                })?;
                let g = Instant::now() + opts.grace;
                sb.wait_for(g, |s| s.app_exit.is_some());
            }
        }
    }
    let dir = sb.dir().to_path_buf();
    let (stdout_sha, stdout_bytes) = hash_file(&dir.join("app.out"));
    let stderr_tail = read_tail(&app_err, opts.stderr_tail);
    if sb.cgroup.as_ref().is_some_and(PidsCgroup::limit_hit) {
        recorders.notes.push(format!(
            "the sandbox hit its process limit (pids.max = {})",
            opts.pids_max
        ));
    }
    let (out, fan) = sb.finish();
    let (rec, log) = match out {
        Some(t) => (Some(t.rec), Some(t.log)),
        None => (None, None),
    };
    if let Some(st) = sb.app_exit {
        let (code, sig) = status_parts(st);
        app.exit_code = code;
        app.signal = sig;
    } else if app.pid.is_some() {
        app.signal = Some("SIGKILL".into());
        stopped = true;
    }
    app.stopped_by_whittle = stopped;
    if app.pid.is_some() {
        app.stdout_sha256 = stdout_sha;
        app.stdout_bytes = stdout_bytes;
    }
    app.stderr_tail = stderr_tail;
    if outcome == Outcome::Ok && !server && app.signal.is_some() {
        outcome = Outcome::Crashed;
    }
    if outcome == Outcome::Crashed && error.is_none() {
        error = Some(match (&app.exit_code, &app.signal) {
            (Some(c), _) => format!("the app exited with code {c} before it was stopped"),
            (_, Some(s)) => format!("the app was killed by {s}"),
            _ => "the app ended unexpectedly".into(),
        });
    }
    if outcome == Outcome::Timeout && error.is_none() {
        error = Some(format!(
            "timed out after {} s; the sandbox was killed",
            opts.timeout.as_secs_f64()
        ));
    }
    if outcome == Outcome::Interrupted && error.is_none() {
        error = Some("interrupted".into());
    }

    let mut merged = rec.unwrap_or_default();
    if let Some(f) = fan {
        recorders.fanotify_events = f.events;
        recorders.fanotify_overflow = f.overflowed;
        merged.merge(f.rec, 0);
    }
    let (files, pseudo) = build_files(&img.flat.tree, merged);
    let summary = Summary {
        paths: files.len(),
        used_in_image: files.iter().filter(|f| f.ok && f.in_image).count(),
        used_bytes: files
            .iter()
            .filter(|f| f.ok && f.in_image)
            .map(|f| f.size)
            .sum(),
        missing: files.iter().filter(|f| f.enoent && !f.ok).count(),
        created: files.iter().filter(|f| f.ok && !f.in_image).count(),
        pseudo_paths: pseudo,
    };
    drop(sb);
    Ok(Report {
        schema: SCHEMA,
        image: img.name.clone(),
        command: spec.argv.clone(),
        user: format!("{}:{}", spec.uid, spec.gid),
        working_dir: spec.cwd.clone(),
        hostname,
        mode: if server { "server" } else { "cli" },
        outcome,
        error,
        app,
        probes: probe_reports,
        recorders,
        timings: Timings {
            prepare_ms: 0,
            start_ms,
            run_ms: t0.elapsed().as_millis() as u64,
        },
        summary,
        files,
        syscalls: log.filter(|_| record && opts.syscalls != SyscallMode::Off),
    })
}

/// Starts the sandbox up to init's Ready (or its setup failure).
fn start(
    img: &PreparedImage,
    spec: &RunSpec,
    opts: &Options,
    record: bool,
    recorders: &mut Recorders,
    overlay: bool,
) -> Result<Sandbox> {
    let dir = temp_dir("run")?;
    let d = dir.path().to_path_buf();
    for sub in ["upper", "work", "root"] {
        std::fs::create_dir(d.join(sub)).map_err(|e| Error::io(d.join(sub), e))?;
    }
    let write = |name: &str, content: String| -> Result<PathBuf> {
        let p = d.join(name);
        std::fs::write(&p, content).map_err(|e| Error::io(&p, e))?;
        Ok(p)
    };
    let hosts = write(
        "hosts",
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t{}\n",
            spec.hostname
        ),
    )?;
    let hostname_f = write("hostname", format!("{}\n", spec.hostname))?;
    // A resolver on the sandbox's own loopback: lookups fail fast instead of timing out.
    let resolv = write(
        "resolv.conf",
        "# whittle sandbox: loopback only\nnameserver 127.0.0.1\n".into(),
    )?;
    let source = if overlay {
        RootSource::Overlay {
            lower: cpath(&img.lower()),
            upper: cpath(&d.join("upper")),
            work: cpath(&d.join("work")),
        }
    } else {
        let copy = d.join("copy");
        std::fs::create_dir(&copy).map_err(|e| Error::io(&copy, e))?;
        copy_tree(&img.lower(), &copy)?;
        RootSource::Copy(cpath(&copy))
    };
    let plan = RootPlan {
        source,
        mountpoint: cpath(&d.join("root")),
        hostname: spec.hostname.as_bytes().to_vec(),
        etc_files: vec![
            (CString::new("/etc/hosts").expect("no NUL"), cpath(&hosts)),
            (
                CString::new("/etc/hostname").expect("no NUL"),
                cpath(&hostname_f),
            ),
            (
                CString::new("/etc/resolv.conf").expect("no NUL"),
                cpath(&resolv),
            ),
        ],
    };
    let (ctl_r, ctl_w) = pipe()?;
    let (ev_r, ev_w) = pipe()?;
    let (pid_r, pid_w) = pipe()?;
    let id = d
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cgroup = PidsCgroup::create(&id, opts.pids_max);
    if cgroup.is_none() {
        recorders
            .notes
            .push("no pids cgroup: the sandbox has no process limit".into());
    }
    let fan = if record && opts.fanotify {
        match Fanotify::new() {
            Ok(f) => Some(f),
            Err(e) => {
                recorders.notes.push(format!("fanotify unavailable: {e}"));
                None
            }
        }
    } else {
        None
    };
    let table: Vec<i64> = crate::syscalls::table().iter().map(|s| s.nr).collect();
    let launch = Launch {
        plan,
        ctl_read: ctl_r.into_raw_fd(),
        events_write: ev_w.into_raw_fd(),
        pid_write: pid_w.into_raw_fd(),
        run_dir: cpath(&d),
        last_cap: crate::caps::last_cap(),
        caps: opts.caps.unwrap_or_else(crate::caps::default_mask),
        seccomp: if opts.syscalls == SyscallMode::Off {
            crate::seccomp::program(&table)
        } else {
            crate::seccomp::program_all()
        },
        ns_flags: init::NS_FLAGS,
    };
    let (tx_pid, rx_pid) = mpsc::channel::<std::result::Result<i32, String>>();
    let pid_read: RawFd = pid_r.into_raw_fd();
    let phase = Arc::new(AtomicU32::new(PHASE_START));
    let tracer_phase = phase.clone();
    let mode = opts.syscalls.clone();
    let tracer = std::thread::Builder::new()
        .name("whittle-tracer".into())
        .spawn(move || {
            let launched = init::launch(&launch);
            // Our copies of the child's ends.
            // SAFETY: these raw fds came from into_raw_fd above and are closed once, here.
            unsafe {
                libc::close(launch.ctl_read);
                libc::close(launch.events_write);
                libc::close(launch.pid_write);
            }
            // SAFETY: the read end of the pid pipe, owned by this thread from here.
            let mut pr = unsafe { File::from_raw_fd(pid_read) };
            let init_pid = match launched {
                Err(e) => {
                    let _ = tx_pid.send(Err(format!("fork: {e}")));
                    None
                }
                Ok(_) => {
                    let mut b = [0u8; 4];
                    match pr.read_exact(&mut b) {
                        Ok(()) => Some(i32::from_ne_bytes(b)),
                        Err(_) => {
                            let _ = tx_pid.send(Err("the sandbox's outer process died".into()));
                            None
                        }
                    }
                }
            };
            drop(pr);
            let watch = init_pid.unwrap_or(-1);
            if let Some(pid) = init_pid {
                if record {
                    if let Err(e) = crate::ptrace::seize(pid) {
                        let _ = tx_pid.send(Err(format!(
                            "ptrace: {}",
                            std::io::Error::from_raw_os_error(e)
                        )));
                        // SAFETY: killing the init we just started.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    } else {
                        let _ = tx_pid.send(Ok(pid));
                    }
                } else {
                    let _ = tx_pid.send(Ok(pid));
                }
            }
            let mut t = crate::ptrace::Tracer::new(record, watch, mode, tracer_phase);
            t.run();
            TracerOut {
                rec: t.rec,
                log: t.log,
            }
        })
        .map_err(|e| Error::setup("starting the tracer thread", e))?;
    let (tx_ev, rx_ev) = mpsc::channel();
    let ev_fd = ev_r.into_raw_fd();
    std::thread::Builder::new()
        .name("whittle-events".into())
        .spawn(move || init::event_reader(ev_fd, tx_ev))
        .map_err(|e| Error::setup("starting the event thread", e))?;
    let mut sb = Sandbox {
        init_pid: None,
        tracer: Some(tracer),
        fan_stop: Arc::new(AtomicBool::new(false)),
        fan: None,
        phase,
        events: rx_ev,
        ctl: Some(File::from(ctl_w)),
        netns: None,
        cgroup,
        dir: Some(dir),
        app_exit: None,
        exits: Vec::new(),
        failures: Vec::new(),
        spawned: Vec::new(),
        setup: None,
    };
    let pid = match rx_pid.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) => {
            // The reason may be a setup failure reported on the event pipe.
            sb.wait_for(Instant::now() + Duration::from_secs(2), |s| {
                s.setup.is_some()
            });
            if let Some(Err((step, errno))) = &sb.setup {
                return Err(Error::setup(
                    step.clone(),
                    std::io::Error::from_raw_os_error(*errno),
                ));
            }
            return Err(Error::setup("starting the sandbox", e));
        }
        Err(_) => {
            return Err(Error::setup(
                "starting the sandbox",
                "no answer from the tracer",
            ))
        }
    };
    sb.init_pid = Some(pid);
    if let Some(cg) = &sb.cgroup {
        cg.add(pid)
            .map_err(|e| Error::setup("joining the pids cgroup", e))?;
    }
    let ready = sb.wait_for(Instant::now() + Duration::from_secs(60), |s| {
        s.setup.is_some()
    });
    if !ready {
        return Err(Error::setup(
            "starting the sandbox",
            "init did not get ready",
        ));
    }
    if let Some(Err(_)) = &sb.setup {
        return Ok(sb);
    }
    let ns = format!("/proc/{pid}/ns/net");
    sb.netns = Some(File::open(&ns).map_err(|e| Error::io(&ns, e))?.into());
    if let Some(f) = fan {
        match f.mark_mount(&format!("/proc/{pid}/root")) {
            Ok(()) => {
                recorders.fanotify = true;
                let stop = sb.fan_stop.clone();
                sb.fan = Some(
                    std::thread::Builder::new()
                        .name("whittle-fanotify".into())
                        .spawn(move || f.read_loop(stop))
                        .map_err(|e| Error::setup("starting the fanotify thread", e))?,
                );
            }
            Err(e) => recorders
                .notes
                .push(format!("fanotify mark on the sandbox root failed: {e}")),
        }
    }
    Ok(sb)
}

impl Report {
    /// The human summary `whittle trace` prints.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "image    {}", self.image);
        let _ = writeln!(
            s,
            "command  {}   (user {}, cwd {}, {})",
            self.command.join(" "),
            self.user,
            self.working_dir,
            self.mode
        );
        let outcome = serde_json::to_value(self.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut app = String::new();
        if let Some(c) = self.app.exit_code {
            let _ = write!(app, "exit code {c}");
        }
        if let Some(sig) = &self.app.signal {
            let _ = write!(app, "ended by {sig}");
        }
        if self.app.stopped_by_whittle {
            app.push_str(" (stopped by whittle)");
        }
        let _ = writeln!(s, "outcome  {outcome}: app {app}");
        if let Some(e) = &self.error {
            let _ = writeln!(s, "error    {e}");
        }
        for p in &self.probes {
            let res = match (&p.status, &p.exit_code, &p.error) {
                (_, _, Some(e)) => format!("error: {e}"),
                (Some(st), _, _) => format!("HTTP {st}"),
                (_, Some(c), _) => format!("exit {c}"),
                _ => "?".into(),
            };
            let _ = writeln!(
                s,
                "probe    {:<5} {:<24} {res}, {} B, sha256 {}",
                p.kind,
                p.target,
                p.bytes.unwrap_or(0),
                p.sha256.as_deref().map_or("-", |h| &h[..12.min(h.len())])
            );
        }
        if self.mode == "cli" {
            if let Some(h) = &self.app.stdout_sha256 {
                let _ = writeln!(
                    s,
                    "stdout   {} B, sha256 {}",
                    self.app.stdout_bytes,
                    &h[..12]
                );
            }
        }
        let m = &self.summary;
        let _ = writeln!(
            s,
            "files    {} used from the image ({}), {} missing lookups, {} created, {} paths in all",
            m.used_in_image,
            whittle_image::units::human_bytes(m.used_bytes),
            m.missing,
            m.created,
            m.paths
        );
        let mut rec = Vec::new();
        if self.recorders.ptrace {
            rec.push("ptrace+seccomp");
        }
        if self.recorders.fanotify {
            rec.push("fanotify");
        }
        let _ = writeln!(
            s,
            "recorded {}; started in {} ms, ran {} ms",
            if rec.is_empty() {
                "nothing".to_string()
            } else {
                rec.join(" + ")
            },
            self.timings.start_ms.unwrap_or(0),
            self.timings.run_ms
        );
        for n in &self.recorders.notes {
            let _ = writeln!(s, "note     {n}");
        }
        if self.outcome != Outcome::Ok && !self.app.stderr_tail.trim().is_empty() {
            let _ = writeln!(s, "stderr (tail):");
            for l in self
                .app
                .stderr_tail
                .trim_end()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                let _ = writeln!(s, "  | {l}");
            }
        }
        s
    }
}
