//! The build report: JSON (`whittle.build/v1`), the terminal summary and the HTML page's input.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
pub use whittle_image::units::human_bytes;
use whittle_sandbox::{AppReport, Outcome, ProbeReport};

use crate::select::Reason;
use crate::verify::Difference;

pub const SCHEMA: &str = "whittle.build/v1";

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub schema: &'static str,
    pub source: String,
    pub destination: String,
    /// False when verification failed: nothing was written.
    pub written: bool,
    pub tag: Option<String>,
    pub source_config_digest: String,
    pub config_digest: Option<String>,
    pub layers: Vec<LayerReport>,
    pub size: Sizes,
    pub kept: Vec<KeptPath>,
    pub dropped: Dropped,
    pub verification: Verification,
    pub runs: Runs,
    /// The debug variant (`--debug-variant`), when written.
    pub debug: Option<crate::debug::DebugReport>,
    pub timings_ms: BTreeMap<&'static str, u64>,
    /// Caveats: required pieces the static analysis found missing, includes that matched
    /// nothing, recorder notes.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub role: &'static str,
    /// Tar entries.
    pub entries: u64,
    /// Bytes of regular file content.
    pub content_bytes: u64,
    /// Uncompressed tar bytes.
    pub size: u64,
    /// Bytes of the blob as written (differs from `size` with `--compress`).
    pub stored_size: Option<u64>,
    pub diff_id: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Sizes {
    /// Uncompressed layer tar bytes of the source.
    pub before: u64,
    /// The same, per source layer (bottom first).
    pub before_layers: Vec<u64>,
    /// Uncompressed layer tar bytes of the slim image (computed even when not written).
    pub after: u64,
    /// before / after.
    pub ratio: f64,
    /// Regular-file bytes of the merged source tree and of the slim tree.
    pub before_content: u64,
    pub after_content: u64,
    /// Paths of the merged trees.
    pub before_files: u64,
    pub after_files: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeptPath {
    pub path: String,
    pub node: &'static str,
    pub size: u64,
    /// 1 = base layer, 2 = app layer (always 1 with `--layers 1`).
    pub layer: u8,
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Dropped {
    pub files: u64,
    pub bytes: u64,
    pub classes: Vec<DroppedClass>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DroppedClass {
    pub class: &'static str,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub status: Status,
    pub rounds: Vec<Round>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    pub passed: bool,
    pub differences: Vec<Difference>,
    /// Looked up by the slim run, not found, present in the fat image.
    pub missing: Vec<String>,
    /// What auto-include added after this round.
    pub added: Vec<String>,
}

/// What one sandboxed run did (the trace report without its file list).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub mode: &'static str,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub app: AppReport,
    pub probes: Vec<ProbeReport>,
    pub files_recorded: usize,
    pub run_ms: u64,
}

impl RunSummary {
    pub fn of(r: &whittle_sandbox::Report) -> RunSummary {
        RunSummary {
            mode: r.mode,
            outcome: r.outcome,
            error: r.error.clone(),
            app: r.app.clone(),
            probes: r.probes.clone(),
            files_recorded: r.files.len(),
            run_ms: r.timings.run_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Runs {
    pub fat: RunSummary,
    /// The last slim run (null with `--no-verify`).
    pub slim: Option<RunSummary>,
}

fn probe_result(p: &ProbeReport) -> String {
    match (&p.status, &p.exit_code, &p.error) {
        (_, _, Some(e)) => format!("error: {e}"),
        (Some(st), _, _) => format!("HTTP {st}"),
        (_, Some(c), _) => format!("exit {c}"),
        _ => "no answer".into(),
    }
}

impl BuildReport {
    /// The terminal summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "source       {}", self.source);
        let _ = writeln!(
            s,
            "destination  {}{}",
            self.destination,
            if self.written { "" } else { "   (NOT written)" }
        );
        let _ = writeln!(s);
        let source: Vec<String> = self
            .size
            .before_layers
            .iter()
            .map(|b| human_bytes(*b))
            .collect();
        let _ = writeln!(
            s,
            "  source   {} in {} layer(s): {}",
            human_bytes(self.size.before),
            source.len(),
            source.join(" + ")
        );
        let _ = writeln!(
            s,
            "  {:<8} {:>12} {:>10}  digest",
            "layer", "size", "entries"
        );
        for l in &self.layers {
            let _ = writeln!(
                s,
                "  {:<8} {:>12} {:>10}  {}",
                l.role,
                human_bytes(l.size),
                l.entries,
                l.diff_id.as_deref().map(short).unwrap_or("-")
            );
        }
        let _ = writeln!(
            s,
            "  {:<8} {:>12} {:>10}  ({} → {}, {:.1}x smaller)",
            "total",
            human_bytes(self.size.after),
            self.size.after_files,
            human_bytes(self.size.before),
            human_bytes(self.size.after),
            self.size.ratio
        );
        let _ = writeln!(
            s,
            "\nkept     {} paths, {} of file content",
            self.kept.len(),
            human_bytes(self.size.after_content)
        );
        let classes: Vec<String> = self
            .dropped
            .classes
            .iter()
            .map(|c| format!("{} {}", c.class, human_bytes(c.bytes)))
            .collect();
        let _ = writeln!(
            s,
            "dropped  {} files, {}: {}",
            self.dropped.files,
            human_bytes(self.dropped.bytes),
            classes.join(", ")
        );
        let _ = writeln!(s);
        let fat = &self.runs.fat;
        let slim = self.runs.slim.as_ref();
        if fat.mode == "cli" {
            let _ = writeln!(
                s,
                "probe    run to completion: fat exit {}, stdout {}{}",
                fat.app.exit_code.map_or("-".into(), |c| c.to_string()),
                fat.app.stdout_sha256.as_deref().map(short).unwrap_or("-"),
                slim.map_or(String::new(), |r| format!(
                    "; slim exit {}, stdout {}",
                    r.app.exit_code.map_or("-".into(), |c| c.to_string()),
                    r.app.stdout_sha256.as_deref().map(short).unwrap_or("-")
                ))
            );
        }
        for (i, p) in fat.probes.iter().enumerate() {
            let sp = slim.and_then(|r| r.probes.get(i));
            let _ = writeln!(
                s,
                "probe    {} {}: fat {} {}{}",
                p.kind,
                p.target,
                probe_result(p),
                p.sha256.as_deref().map(short).unwrap_or(""),
                sp.map_or(String::new(), |q| format!(
                    "; slim {} {}",
                    probe_result(q),
                    q.sha256.as_deref().map(short).unwrap_or("")
                ))
            );
        }
        let status = match self.verification.status {
            Status::Passed => "passed",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped (--no-verify)",
        };
        let _ = writeln!(
            s,
            "verify   {status} after {} round(s)",
            self.verification.rounds.len()
        );
        for r in &self.verification.rounds {
            for d in &r.differences {
                let _ = writeln!(
                    s,
                    "         round {}: {} {}: fat {} / slim {}",
                    r.round, d.probe, d.field, d.fat, d.slim
                );
            }
            for m in r.missing.iter().take(20) {
                let _ = writeln!(s, "         round {}: slim run looked for {m}", r.round);
            }
            if r.missing.len() > 20 {
                let _ = writeln!(s, "         … {} more missing", r.missing.len() - 20);
            }
            for a in &r.added {
                let _ = writeln!(s, "         round {}: auto-included {a}", r.round);
            }
        }
        if let Some(d) = &self.debug {
            let _ = writeln!(
                s,
                "debug    {} (+{} tools layer: {}){}",
                d.destination,
                human_bytes(d.layer.size),
                d.tools.join(", "),
                if d.missing_tools.is_empty() {
                    String::new()
                } else {
                    format!("; not in {}: {}", d.toolbox, d.missing_tools.join(", "))
                }
            );
        }
        let _ = write!(s, "time    ");
        for (k, v) in &self.timings_ms {
            let _ = write!(s, " {k} {:.2} s", *v as f64 / 1000.0);
        }
        s.push('\n');
        for n in &self.notes {
            let _ = writeln!(s, "note     {n}");
        }
        s
    }
}

fn short(d: &str) -> &str {
    let d = d.strip_prefix("sha256:").unwrap_or(d);
    &d[..d.len().min(12)]
}
