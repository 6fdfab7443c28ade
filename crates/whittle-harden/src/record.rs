//! Step 1: what the app did, recorded twice in the sandbox with every system call traced.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use whittle_sandbox::syscall_log::{Op, SyscallLog, PHASE_START, PHASE_STOP};
use whittle_sandbox::{Kind, Outcome, PreparedImage, Report};

use crate::{names, Error, Result};

/// Where a call, capability or write was seen: the phase of the run and the process.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Evidence {
    /// `start-up`, `probe 1 (http 80/)`, `stop`.
    pub phase: String,
    pub process: String,
}

/// The union of the recording runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recording {
    /// libseccomp name → where it was seen.
    pub calls: BTreeMap<String, BTreeSet<Evidence>>,
    /// Call numbers libseccomp has no name for (a profile cannot allow them).
    pub unnamed: BTreeSet<i64>,
    /// Names seen in one recording run but not in the other.
    pub unstable: BTreeSet<String>,
    /// Capability-relevant calls (argument, result, process, phase).
    pub ops: Vec<OpSeen>,
    /// Paths written, created or removed (outside /proc, /sys, /dev).
    pub written: BTreeSet<String>,
    /// Paths executed.
    pub executed: BTreeSet<String>,
    /// The user the image runs as.
    pub image_uid: u32,
    pub image_gid: u32,
    pub peak_tasks: usize,
    pub runs: usize,
    /// Whether the app is a server (probed) or a CLI run to completion.
    pub server: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpSeen {
    pub call: String,
    pub what: String,
    pub arg: Option<u64>,
    pub cap: Option<&'static str>,
    pub errno: i32,
    #[serde(flatten)]
    pub evidence: Evidence,
}

/// `start-up`, `probe N (kind target)` or `stop`.
pub fn phase_label(phase: u32, probes: &[String]) -> String {
    match phase {
        PHASE_START => "start-up".into(),
        PHASE_STOP => "stop".into(),
        n => match probes.get(n as usize - 1) {
            Some(p) => format!("probe {n} ({p})"),
            None => format!("probe {n}"),
        },
    }
}

/// `http 80/`, `exec redis-cli ping`, as probes are named in reports.
pub fn probe_labels(r: &Report) -> Vec<String> {
    r.probes
        .iter()
        .map(|p| format!("{} {}", p.kind, p.target))
        .collect()
}

/// A run's outcome as one line, for errors.
pub fn failure(r: &Report) -> Option<String> {
    if r.outcome == Outcome::Ok && r.probes.iter().all(|p| p.ok && p.error.is_none()) {
        return None;
    }
    let probe = r
        .probes
        .iter()
        .find(|p| !p.ok || p.error.is_some())
        .map(|p| {
            format!(
                "; probe {} {}: {}",
                p.kind,
                p.target,
                p.error.as_deref().unwrap_or("failed")
            )
        })
        .unwrap_or_default();
    Some(format!(
        "{}{probe}",
        r.error.as_deref().unwrap_or("the run did not succeed")
    ))
}

/// Turns a run's syscall log into named calls and ops with evidence.
pub fn named(
    log: &SyscallLog,
    probes: &[String],
) -> (BTreeMap<String, BTreeSet<Evidence>>, BTreeSet<i64>) {
    let mut calls: BTreeMap<String, BTreeSet<Evidence>> = BTreeMap::new();
    let mut unnamed = BTreeSet::new();
    for (nr, seen) in &log.calls {
        let Some(name) = names::name(*nr) else {
            unnamed.insert(*nr);
            continue;
        };
        let e = calls.entry(name.to_string()).or_default();
        for (phase, comm) in seen {
            e.insert(Evidence {
                phase: phase_label(*phase, probes),
                process: comm.clone(),
            });
        }
    }
    (calls, unnamed)
}

pub fn op_seen(op: &Op, probes: &[String]) -> OpSeen {
    OpSeen {
        call: names::name(op.nr).unwrap_or("?").to_string(),
        what: op.what.clone(),
        arg: op.arg,
        cap: op.cap,
        errno: op.errno,
        evidence: Evidence {
            phase: phase_label(op.phase, probes),
            process: op.comm.clone(),
        },
    }
}

/// Runs the image `runs` times with every system call recorded and merges what was seen.
pub fn record(
    img: &PreparedImage,
    opts: &whittle_sandbox::Options,
    runs: usize,
) -> Result<(Recording, Vec<Report>)> {
    let mut o = opts.clone();
    o.syscalls = whittle_sandbox::syscall_log::SyscallMode::Record;
    let mut rec = Recording {
        runs,
        ..Recording::default()
    };
    let mut reports = Vec::new();
    let mut per_run: Vec<BTreeSet<String>> = Vec::new();
    for i in 0..runs {
        let r = whittle_sandbox::run(img, &o)?;
        if whittle_sandbox::interrupted().is_some() {
            return Err(Error::Interrupted);
        }
        if let Some(why) = failure(&r) {
            return Err(Error::Recording {
                run: i + 1,
                why: crate::one_line(&why),
            });
        }
        let log = r.syscalls.clone().unwrap_or_default();
        let labels = probe_labels(&r);
        let (calls, unnamed) = named(&log, &labels);
        per_run.push(calls.keys().cloned().collect());
        for (k, v) in calls {
            rec.calls.entry(k).or_default().extend(v);
        }
        rec.unnamed.extend(unnamed);
        for op in &log.ops {
            let s = op_seen(op, &labels);
            if !rec.ops.contains(&s) {
                rec.ops.push(s);
            }
        }
        rec.peak_tasks = rec.peak_tasks.max(log.peak_tasks);
        for f in r.files.iter().filter(|f| f.ok) {
            if f.kinds
                .iter()
                .any(|k| matches!(k, Kind::Write | Kind::Create | Kind::Delete))
            {
                rec.written.insert(f.path.clone());
            }
            if f.kinds.contains(&Kind::Exec) {
                rec.executed.insert(f.path.clone());
            }
        }
        rec.server = r.mode == "server";
        if let Some((u, g)) = r.user.split_once(':') {
            rec.image_uid = u.parse().unwrap_or(0);
            rec.image_gid = g.parse().unwrap_or(0);
        }
        reports.push(r);
    }
    if let (Some(first), Some(rest)) = (per_run.first(), per_run.get(1..)) {
        for other in rest {
            rec.unstable
                .extend(first.symmetric_difference(other).cloned());
        }
    }
    Ok((rec, reports))
}
