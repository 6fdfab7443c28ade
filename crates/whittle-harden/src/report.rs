//! The report (`report.json`, `whittle harden --json`), schema `whittle.harden/v1`.
//!
//! ```text
//! {
//!   "schema": "whittle.harden/v1",
//!   "image": "whittle-fixture/nginx:latest",
//!   "engine": {"engine": "20.10.24+dfsg1", "runc": "1.1.5+ds1"},
//!   "runtime_baseline": "runc 1.1.5+ds1: filter installed just before execve (…)",
//!   "outcome": "proven" | "refused",
//!   "error": null | "verification failed: …; refused: system call bind (refused to nginx during start-up)",
//!   "recording": {"runs": 2, "stable": true, "unstable": [], "unnamed": [], "peak_tasks": 3,
//!                 "written": ["/run/nginx.pid", …],
//!                 "ops": [{"call": "setuid", "what": "setuid 33", "arg": 33, "cap": "CAP_SETUID",
//!                          "errno": 0, "phase": "start-up", "process": "nginx"}]},
//!   "allowed": 112, "docker_default_allowed": 303,
//!   "plan": {"syscalls": [...], "enosys": ["clone3"], "caps": [], "uid": 33, "gid": 33,
//!            "user_changed": true, "read_only": true, "tmpfs": {"/run": "rw,noexec,…"},
//!            "sysctls": {"net.ipv4.ip_unprivileged_port_start": "80"},
//!            "memory": 67108864, "pids_limit": 16},
//!   "syscalls": [{"name": "bind", "reason": "recorded",
//!                 "evidence": [{"phase": "start-up", "process": "nginx"}]}],
//!   "capabilities": [{"name": "CAP_SETUID", "evidence": [ops], "without_it": "http 80/: …"}],
//!   "refused": ["system call bind (refused to nginx during start-up)"],
//!   "widenings": [{"round": 1, "what": "allow pread64", "reason": "…"}],
//!   "rounds": [{"round": 1, "differences": [], "stop_ms": 120, "exit_code": 0, "log_tail": "",
//!               "replay": null | "sandbox replay as 0:0: …; refused calls: bind; …"}],
//!   "repeats": 3,
//!   "facts": {"seccomp": 2, "no_new_privs": 1, "cap_eff": 0, "uid": 33},
//!   "timings": {"record_ms": 2100, "total_ms": 9000}
//! }
//! ```
//! Fields are only ever added in `v1`.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::plan::Plan;
use crate::proof::{ProcFacts, Versions};
use crate::record::{Evidence, OpSeen};

pub const SCHEMA: &str = "whittle.harden/v1";

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every probe passed under the emitted settings.
    Proven,
    /// The app did not work under any settings tried.
    Refused,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub image: String,
    pub engine: Versions,
    pub runtime_baseline: String,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub recording: RecordingSummary,
    pub allowed: usize,
    pub docker_default_allowed: usize,
    pub plan: Plan,
    pub syscalls: Vec<SyscallEntry>,
    pub capabilities: Vec<CapEntry>,
    pub refused: Vec<String>,
    pub widenings: Vec<Widening>,
    pub rounds: Vec<Round>,
    pub repeats: usize,
    pub facts: ProcFacts,
    pub timings: Timings,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordingSummary {
    pub runs: usize,
    /// Both runs saw the same calls.
    pub stable: bool,
    pub unstable: Vec<String>,
    pub unnamed: Vec<i64>,
    pub peak_tasks: usize,
    pub written: Vec<String>,
    pub ops: Vec<OpSeen>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyscallEntry {
    pub name: String,
    pub reason: String,
    pub evidence: BTreeSet<Evidence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CapEntry {
    pub name: String,
    pub evidence: Vec<OpSeen>,
    /// What failed when the proof ran without it.
    pub without_it: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Widening {
    pub round: usize,
    pub what: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: usize,
    pub differences: Vec<String>,
    pub stop_ms: Option<u64>,
    pub exit_code: Option<i64>,
    pub log_tail: String,
    /// What the sandbox replay with the same settings saw, when the round failed.
    pub replay: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    pub record_ms: u64,
    pub total_ms: u64,
}

impl Report {
    /// The human summary.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let p = &self.plan;
        let _ = writeln!(
            s,
            "image      {}   (engine {}, runc {})",
            self.image, self.engine.engine, self.engine.runc
        );
        let _ = writeln!(
            s,
            "outcome    {}",
            match self.outcome {
                Outcome::Proven => "proven: every probe passed under these settings",
                Outcome::Refused => "refused: no settings tried made every probe pass",
            }
        );
        if let Some(e) = &self.error {
            let _ = writeln!(s, "error      {e}");
        }
        let _ = writeln!(
            s,
            "syscalls   {} allowed (Docker's default profile: {}){}",
            self.allowed,
            self.docker_default_allowed,
            if p.enosys.is_empty() {
                String::new()
            } else {
                format!(
                    "; ENOSYS for {}",
                    p.enosys.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        );
        let caps: Vec<String> = p.caps.iter().cloned().collect();
        let _ = writeln!(
            s,
            "caps       {} (Docker's default: 14)",
            if caps.is_empty() {
                "none".to_string()
            } else {
                caps.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "user       {}:{}{}",
            p.uid,
            p.gid,
            if p.user_changed {
                " (the image runs as root)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "root       {}",
            if p.read_only { "read-only" } else { "writable" }
        );
        for (d, o) in &p.tmpfs {
            let _ = writeln!(s, "tmpfs      {d} ({o})");
        }
        for (k, v) in &p.sysctls {
            let _ = writeln!(s, "sysctl     {k}={v}");
        }
        if let (Some(m), Some(n)) = (p.memory, p.pids_limit) {
            let _ = writeln!(s, "limits     --memory {}m --pids-limit {n}", m >> 20);
        }
        for w in &self.widenings {
            let _ = writeln!(s, "widened    round {}: {}: {}", w.round, w.what, w.reason);
        }
        for r in &self.refused {
            let _ = writeln!(s, "refused    {r}");
        }
        let _ = writeln!(
            s,
            "verified   {} run(s) of {} probe round(s); recorded twice ({}); {:.1} s in all",
            self.rounds.len(),
            self.repeats,
            if self.recording.stable {
                "same calls".to_string()
            } else {
                format!("differed in {}", self.recording.unstable.join(", "))
            },
            self.timings.total_ms as f64 / 1000.0
        );
        s
    }
}
