//! Least-privilege run settings for an image, proven by running the image under them.
//!
//! A profile learned from what an app did and never tried breaks later, in production
//! (slimtoolkit/slim#87: nginx will not start until `futex`/`write` are added; moby#22252: the
//! runtime needs calls the app never makes). So `harden` goes in three steps:
//!
//! 1. **Record** ([`record`]): the probes of `whittle build` run in the sandbox with every
//!    system call of every process traced (unconfined, so nothing is hidden), twice; plus the
//!    capability-relevant calls with their arguments, the files written and executed.
//! 2. **Plan** ([`plan`]): the recorded calls plus the runtime's ([`baseline`], chosen from the
//!    engine's runc version) as a seccomp allowlist, no capabilities (root only gets what a
//!    recorded call needs), a non-root user, a read-only root with a tmpfs per written
//!    directory, `no-new-privileges`.
//! 3. **Prove** ([`proof`]): run the image in the real engine unconfined and under the plan,
//!    every probe 3 times, compare, and `docker stop` it. When something differs, replay the
//!    run in the sandbox with the same allowlist, capabilities and user, the tracer failing
//!    each call outside the list and saying which one, which process and which probe; widen
//!    by what was refused and retry. Capabilities are then tried one by one: each one kept
//!    must make a probe fail when removed.
//!
//! What was proven is written out ([`emit`]): `seccomp.json`, `run.sh`, `compose.yaml`,
//! `report.json` (schema `whittle.harden/v1`, see [`report`]).

pub mod audit;
pub mod baseline;
pub mod docker_default;
pub mod emit;
pub mod names;
pub mod plan;
pub mod proof;
pub mod record;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use whittle_image::{ImageRef, Transport};
use whittle_sandbox::syscall_log::SyscallMode;
use whittle_sandbox::PreparedImage;

use crate::plan::{Inputs, Plan};
use crate::proof::{differences, Prover, RunResult};
use crate::record::{op_seen, phase_label, probe_labels, Recording};
pub use crate::report::{Outcome, Report};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sandbox(#[from] whittle_sandbox::Error),
    #[error("{0}")]
    Engine(String),
    #[error("recording run {run} failed: {why}")]
    Recording { run: usize, why: String },
    #[error("{image}: {why}")]
    Image { image: String, why: String },
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

/// How to harden.
#[derive(Debug, Clone)]
pub struct Options {
    /// Probes and limits of the sandboxed runs (the flags of `whittle build`).
    pub run: whittle_sandbox::Options,
    /// Never allow these calls (a profile can be tried without them: the proof says whether
    /// the app still works, and what refused them when not).
    pub deny: BTreeSet<String>,
    /// Never add these capabilities.
    pub no_caps: BTreeSet<String>,
    /// Keep the image's user even when it is root.
    pub keep_user: bool,
    /// Rounds of every probe in each hardened run.
    pub repeats: usize,
    /// Widening rounds before giving up.
    pub max_rounds: usize,
    /// Docker host (default `DOCKER_HOST` or the local socket).
    pub host: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            run: whittle_sandbox::Options::default(),
            deny: BTreeSet::new(),
            no_caps: BTreeSet::new(),
            keep_user: false,
            repeats: 3,
            max_rounds: 6,
            host: None,
        }
    }
}

/// One line of at most 400 characters (engine errors can be long and multi-line).
pub fn one_line(msg: &str) -> String {
    let mut out: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect();
    if msg.chars().count() > 400 {
        out.push('…');
    }
    out
}

/// The image's name in the engine (the proof runs it there).
pub fn engine_image(src: &ImageRef) -> Result<String> {
    match (&src.transport, &src.name) {
        (Transport::DockerDaemon, Some(n)) => Ok(n.clone()),
        _ => Err(Error::Image {
            image: src.path.display().to_string(),
            why:
                "the proof runs the image in the Docker Engine: give it as docker-daemon:NAME:TAG \
                  (docker load it first)"
                    .into(),
        }),
    }
}

/// Records, plans and proves; the report says what was proven or what was refused.
pub fn harden(
    src: &ImageRef,
    opts: &Options,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<Report> {
    let t0 = Instant::now();
    let image = engine_image(src)?;
    for d in &opts.deny {
        if names::number(d).is_none() {
            return Err(Error::Image {
                image: image.clone(),
                why: format!("--deny {d}: libseccomp knows no system call of that name"),
            });
        }
    }
    let mut prover = Prover::new(opts.host.as_deref(), image.clone())?;
    if !prover.has_image() {
        return Err(Error::Image {
            image,
            why: format!("no such image in the engine at {}", prover.engine.host()),
        });
    }
    let versions = prover.versions()?;
    let img = PreparedImage::open(src, progress)?;
    let (rec, reports) = record::record(&img, &opts.run, 2)?;
    let record_ms = t0.elapsed().as_millis() as u64;
    let first = &reports[0];
    prover.server = rec.server;
    prover.probes = if first.mode == "server" {
        probes_of(first)
    } else {
        Vec::new()
    };
    prover.exposed = exposed_ports(&img);
    prover.ready_timeout = opts.run.ready_timeout;

    let (runtime, runtime_source) = baseline::runc_calls(&versions.runc);
    let inputs = Inputs {
        rec: &rec,
        tree: &img.flat.tree,
        runtime: &runtime,
        errno_ret: errno_ret_supported(&versions.engine),
        deny: &opts.deny,
        keep_user: opts.keep_user,
        working_dir: img.config.working_dir.as_deref(),
    };
    let mut plan = Plan::initial(&inputs);
    for c in &opts.no_caps {
        plan.caps.remove(c);
    }
    let mut reasons: BTreeMap<String, String> = BTreeMap::new();
    let mut widenings: Vec<report::Widening> = Vec::new();
    let mut rounds: Vec<report::Round> = Vec::new();
    let mut refused: Vec<String> = Vec::new();

    let base = prover.run(None, None, 1);
    if let Some(e) = &base.error {
        return Err(Error::Engine(format!(
            "{image}: the unconfined run in the engine failed: {e}"
        )));
    }
    if rec.server && base.stop_ms.is_some_and(|ms| ms >= 10_000) {
        plan.use_init();
        widenings.push(report::Widening {
            round: 0,
            what: "--init".into(),
            reason: format!(
                "docker stop of the unconfined run took {:.1} s: the app ignores its stop signal \
                 as pid 1, so docker-init runs it and forwards the signal",
                base.stop_ms.unwrap_or(0) as f64 / 1000.0
            ),
        });
    }
    let mut last: Option<RunResult> = None;
    let mut proven = false;
    for round in 1..=opts.max_rounds {
        if whittle_sandbox::interrupted().is_some() {
            return Err(Error::Interrupted);
        }
        let hard = prover.run(
            Some(emit::host_config(&plan)),
            Some(user(&plan)),
            opts.repeats,
        );
        let diffs = differences(&base, &hard, rec.server);
        rounds.push(report::Round {
            round,
            differences: diffs.clone(),
            stop_ms: hard.stop_ms,
            exit_code: hard.exit_code,
            log_tail: if diffs.is_empty() {
                String::new()
            } else {
                hard.log_tail.clone()
            },
            replay: None,
        });
        last = Some(hard);
        if diffs.is_empty() {
            proven = true;
            break;
        }
        // What was refused: the same settings replayed in the sandbox.
        let why = diffs.join("; ");
        let found = diagnose(&img, opts, &plan)?;
        if let Some(r) = rounds.last_mut() {
            r.replay = Some(found.summary.clone());
        }
        let mut widened = false;
        for (name, ev) in &found.calls {
            if plan.syscalls.contains(name) {
                continue;
            }
            if opts.deny.contains(name) {
                refused.push(format!("system call {name} (refused to {ev})"));
                continue;
            }
            plan.syscalls.insert(name.clone());
            reasons.insert(
                name.clone(),
                format!("widened in round {round}: refused to {ev}"),
            );
            widenings.push(report::Widening {
                round,
                what: format!("allow {name}"),
                reason: format!("{name} was refused to {ev}; {why}"),
            });
            widened = true;
        }
        for (cap, ev) in &found.caps {
            if plan.caps.contains(cap) || plan.uid != 0 {
                continue;
            }
            if opts.no_caps.contains(cap) {
                refused.push(format!("capability {cap} ({ev})"));
                continue;
            }
            plan.caps.insert(cap.clone());
            widenings.push(report::Widening {
                round,
                what: format!("add {cap}"),
                reason: format!("{ev}; {why}"),
            });
            widened = true;
        }
        if !refused.is_empty() {
            break;
        }
        if !widened && plan.user_changed {
            let (u, g) = (rec.image_uid, rec.image_gid);
            widenings.push(report::Widening {
                round,
                what: format!("run as the image's user {u}:{g}"),
                reason: format!(
                    "as {}:{} nothing was refused but the run differed: {why}",
                    plan.uid, plan.gid
                ),
            });
            plan.set_user(u, g, false, &inputs);
            for c in &opts.no_caps {
                plan.caps.remove(c);
            }
            widened = true;
        }
        if !widened && plan.read_only {
            widenings.push(report::Widening {
                round,
                what: "writable root".into(),
                reason: format!("nothing was refused but the run differed: {why}"),
            });
            plan.read_only = false;
            widened = true;
        }
        if !widened {
            break;
        }
    }

    let mut caps_report = Vec::new();
    if proven {
        // Each capability must earn its place: removed, a probe must fail.
        for cap in plan.caps.clone() {
            let mut without = plan.clone();
            without.caps.remove(&cap);
            let r = prover.run(Some(emit::host_config(&without)), Some(user(&plan)), 1);
            let d = differences(&base, &r, rec.server);
            let evidence = cap_evidence(&rec, &cap);
            if d.is_empty() {
                widenings.push(report::Widening {
                    round: rounds.len(),
                    what: format!("drop {cap}"),
                    reason: "every probe passed without it".into(),
                });
                plan.caps.remove(&cap);
            } else {
                caps_report.push(report::CapEntry {
                    name: cap.clone(),
                    evidence,
                    without_it: d.join("; "),
                });
            }
        }
        // Limits from the peaks with headroom, proven by one more run.
        if let Some(h) = &last {
            let mut limited = plan.clone();
            limited.memory = h
                .memory_peak
                .map(|m| ((m * 2).max(32 << 20) + (1 << 20) - 1) & !((1 << 20) - 1));
            limited.pids_limit = h
                .pids_peak
                .map(|p| (p as i64 * 2 + 8).max(16))
                .or(Some((rec.peak_tasks as i64 * 2 + 8).max(16)));
            let r = prover.run(Some(emit::host_config(&limited)), Some(user(&limited)), 1);
            let d = differences(&base, &r, rec.server);
            rounds.push(report::Round {
                round: rounds.len() + 1,
                differences: d.clone(),
                stop_ms: r.stop_ms,
                exit_code: r.exit_code,
                log_tail: String::new(),
                replay: None,
            });
            if d.is_empty() {
                plan = limited;
                last = Some(r);
            } else {
                widenings.push(report::Widening {
                    round: rounds.len(),
                    what: "no --memory/--pids-limit".into(),
                    reason: d.join("; "),
                });
            }
        }
    }

    let syscalls = plan
        .syscalls
        .iter()
        .map(|n| report::SyscallEntry {
            name: n.clone(),
            evidence: rec.calls.get(n).cloned().unwrap_or_default(),
            reason: reasons.get(n).cloned().unwrap_or_else(|| {
                if rec.calls.contains_key(n) {
                    "recorded".into()
                } else if plan::ALWAYS.contains(&n.as_str()) {
                    "always (a process must be able to exit)".into()
                } else if plan.init && baseline::DOCKER_INIT.contains(&n.as_str()) {
                    "docker-init (--init)".into()
                } else if n == "clone" && plan.enosys.contains("clone3") {
                    "glibc's fallback when clone3 answers ENOSYS".into()
                } else {
                    format!("runtime ({runtime_source})")
                }
            }),
        })
        .collect();
    let outcome = if proven {
        Outcome::Proven
    } else {
        Outcome::Refused
    };
    let error = (!proven).then(|| {
        let diffs = rounds
            .last()
            .map(|r| r.differences.join("; "))
            .unwrap_or_default();
        if refused.is_empty() {
            format!("verification failed: {diffs}; nothing refused was found to widen")
        } else {
            format!(
                "refused: {}; verification failed: {diffs}",
                refused.join(", ")
            )
        }
    });
    let facts = last.as_ref().map(|r| r.facts.clone()).unwrap_or_default();
    Ok(Report {
        schema: report::SCHEMA,
        image,
        engine: versions,
        runtime_baseline: runtime_source,
        outcome,
        error,
        recording: report::RecordingSummary {
            runs: rec.runs,
            stable: rec.unstable.is_empty(),
            unstable: rec.unstable.iter().cloned().collect(),
            unnamed: rec.unnamed.iter().copied().collect(),
            peak_tasks: rec.peak_tasks,
            written: rec.written.iter().cloned().collect(),
            ops: rec.ops.clone(),
        },
        allowed: plan.syscalls.len(),
        docker_default_allowed: docker_default::allowed_count(),
        capabilities: caps_report,
        plan,
        syscalls,
        refused,
        widenings,
        rounds,
        repeats: opts.repeats,
        facts,
        timings: report::Timings {
            record_ms,
            total_ms: t0.elapsed().as_millis() as u64,
        },
    })
}

/// `UID:GID` for the engine.
fn user(plan: &Plan) -> String {
    format!("{}:{}", plan.uid, plan.gid)
}

/// Docker understands `errnoRet` from 20.10.10 on.
fn errno_ret_supported(engine: &str) -> bool {
    let nums: Vec<u32> = engine
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    match nums.as_slice() {
        [maj, ..] if *maj > 20 => true,
        [20, min, ..] if *min > 10 => true,
        [20, 10, patch] => *patch >= 10,
        _ => false,
    }
}

fn probes_of(r: &whittle_sandbox::Report) -> Vec<whittle_sandbox::Probe> {
    r.probes
        .iter()
        .filter_map(|p| match p.kind {
            "http" => p.target.parse().ok(),
            "exec" => Some(whittle_sandbox::Probe::Exec(p.target.clone())),
            "host" => Some(whittle_sandbox::Probe::Host(p.target.clone())),
            _ => None,
        })
        .collect()
}

fn exposed_ports(img: &PreparedImage) -> Vec<u16> {
    img.config
        .exposed_ports
        .iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_suffix("/tcp").and_then(|p| p.parse().ok()))
        .collect()
}

fn cap_evidence(rec: &Recording, cap: &str) -> Vec<record::OpSeen> {
    rec.ops
        .iter()
        .filter(|o| o.cap == Some(cap) && o.errno == 0)
        .cloned()
        .collect()
}

/// What the sandbox replay refused: calls (name → who, when) and capabilities (from calls
/// that failed with EPERM).
struct Found {
    calls: BTreeMap<String, String>,
    caps: BTreeMap<String, String>,
    /// What the replay saw, for the report.
    summary: String,
}

fn diagnose(img: &PreparedImage, opts: &Options, plan: &Plan) -> Result<Found> {
    let mut o = opts.run.clone();
    o.syscalls = SyscallMode::Enforce {
        allow: Plan::numbers(&plan.syscalls),
        enosys: Plan::numbers(&plan.enosys),
    };
    // The sandbox has no tmpfs mounts owned by a changed user: as that user the app would
    // fail on its first write, before the calls in question. Refused calls do not depend on
    // the user, so a changed user is replayed as the image's own; capabilities only matter
    // (and are replayed) when the plan keeps root.
    // For root, the file-permission capabilities stand in for the tmpfs mounts (root-owned in
    // the engine, image-owned in the sandbox) unless the caller forbade them.
    if !plan.user_changed {
        let file_caps = ["CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER"]
            .into_iter()
            .filter(|c| !opts.no_caps.contains(*c));
        o.caps =
            whittle_sandbox::caps_mask_of(plan.caps.iter().map(String::as_str).chain(file_caps));
        o.user = Some((plan.uid, plan.gid));
    }
    // A refused call can make the app hang rather than fail: do not wait long for it.
    o.ready_timeout = o.ready_timeout.min(Duration::from_secs(10));
    o.probe_timeout = o.probe_timeout.min(Duration::from_secs(10));
    let r = whittle_sandbox::run(img, &o)?;
    let labels = probe_labels(&r);
    let mut outcome = record::failure(&r).unwrap_or_else(|| "every probe passed".into());
    if let Some(last) = r
        .app
        .stderr_tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
    {
        outcome.push_str(&format!(" (stderr: {})", last.trim()));
    }
    let log = r.syscalls.unwrap_or_default();
    let mut calls = BTreeMap::new();
    for d in &log.denied {
        let Some(name) = names::name(d.nr) else {
            continue;
        };
        calls
            .entry(name.to_string())
            .or_insert_with(|| format!("{} during {}", d.comm, phase_label(d.phase, &labels)));
    }
    let mut caps = BTreeMap::new();
    for op in &log.ops {
        if op.errno != libc::EPERM {
            continue;
        }
        if let Some(cap) = op.cap {
            let s = op_seen(op, &labels);
            caps.entry(cap.to_string()).or_insert_with(|| {
                format!(
                    "{} by {} during {} failed with EPERM without {cap}",
                    s.what, s.evidence.process, s.evidence.phase
                )
            });
        }
    }
    let summary = format!(
        "sandbox replay as {}: {}; refused calls: {}; calls failing with EPERM: {}",
        o.user
            .map_or("the image's user".to_string(), |(u, g)| format!("{u}:{g}")),
        one_line(&outcome),
        list(calls.keys()),
        list(
            log.ops
                .iter()
                .filter(|op| op.errno == libc::EPERM)
                .map(|op| &op.what)
        ),
    );
    Ok(Found {
        calls,
        caps,
        summary,
    })
}

fn list<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Writes `seccomp.json`, `run.sh`, `compose.yaml` and `report.json` into `dir`: first into a
/// sibling temporary directory, then moved, so `dir` never holds half a set.
pub fn write_out(dir: &Path, report: &Report) -> Result<()> {
    let io = |p: &Path, e| Error::Io {
        path: p.to_path_buf(),
        cause: e,
    };
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".whittle-harden-")
        .tempdir_in(parent)
        .map_err(|e| io(parent, e))?;
    let abs = std::fs::canonicalize(parent)
        .map_err(|e| io(parent, e))?
        .join(dir.file_name().unwrap_or_default());
    let files: [(&str, Vec<u8>); 4] = [
        (
            "seccomp.json",
            serde_json::to_vec_pretty(&emit::seccomp_profile(&report.plan)).unwrap_or_default(),
        ),
        (
            "run.sh",
            emit::run_sh(&report.plan, &report.image).into_bytes(),
        ),
        (
            "compose.yaml",
            emit::compose_yaml(
                &report.plan,
                &report.image,
                &abs.join("seccomp.json").display().to_string(),
            )
            .into_bytes(),
        ),
        (
            "report.json",
            serde_json::to_vec_pretty(report).unwrap_or_default(),
        ),
    ];
    for (name, body) in &files {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).map_err(|e| io(&p, e))?;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let p = tmp.path().join("run.sh");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io(&p, e))?;
    }
    if dir.exists() {
        for (name, _) in &files {
            let (from, to) = (tmp.path().join(name), dir.join(name));
            std::fs::rename(&from, &to).map_err(|e| io(&to, e))?;
        }
    } else {
        let t = tmp.keep();
        std::fs::rename(&t, dir).map_err(|e| io(dir, e))?;
    }
    Ok(())
}
