//! The family summary: JSON (`whittle.family/v1`) and the terminal table.

use std::fmt::Write;

use serde::Serialize;
use whittle_build::debug::DebugReport;
use whittle_build::report::{human_bytes, LayerReport, Status};

pub const SCHEMA: &str = "whittle.family/v1";

#[derive(Debug, Clone, Serialize)]
pub struct FamilyReport {
    pub schema: &'static str,
    pub family: String,
    /// False when a member failed verification: then nothing was written.
    pub written: bool,
    pub base: BaseReport,
    pub members: Vec<MemberReport>,
    pub total: Totals,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaseReport {
    /// The `base` of the family file (null: the members' common lowest layer).
    pub reference: Option<String>,
    /// What `org.opencontainers.image.base.digest` says: the base image's config digest
    /// (without `base`: the shared lowest layer's diff_id).
    pub digest: String,
    /// diff_ids of the base layers every member starts with.
    pub source_layers: Vec<String>,
    /// The slim base layer shared by every member and debug variant.
    pub diff_id: String,
    pub size: u64,
    pub files: usize,
    /// `written` (first build), `honoured` (the lock fixed the base), `rebased`.
    pub lock: &'static str,
    pub lock_file: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberReport {
    pub name: String,
    pub source: String,
    pub destination: String,
    pub tag: Option<String>,
    pub config_digest: Option<String>,
    /// The cached trace and verification were used (nothing was run).
    pub cached: bool,
    /// The fat image was run in the sandbox in this build.
    pub traced: bool,
    pub verification: Status,
    /// Uncompressed bytes of the slim image (base + app layer).
    pub size: u64,
    pub base_size: u64,
    pub app_size: u64,
    pub app_diff_id: Option<String>,
    /// What `whittle build` of this member alone would write.
    pub independent_size: u64,
    /// Files the member needs from the base that the lock's base layer lacks (they are in
    /// its app layer; `--rebase` would move them into the base).
    pub outside_lock: Outside,
    pub layers: Vec<LayerReport>,
    pub debug: Option<DebugReport>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Outside {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Distinct layers' bytes: one base + every app layer + every tools layer.
    pub unique_bytes: u64,
    /// The sum of independent `whittle build`s of the members (no debug variants).
    pub independent_bytes: u64,
    /// independent / unique.
    pub ratio: f64,
    /// Bytes `--rebase` would move from app layers into the base.
    pub rebase_would_move: u64,
}

fn status(s: Status) -> &'static str {
    match s {
        Status::Passed => "passed",
        Status::Failed => "FAILED",
        Status::Skipped => "skipped",
    }
}

impl FamilyReport {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let b = &self.base;
        let _ = writeln!(
            s,
            "family   {}{}",
            self.family,
            if self.written {
                ""
            } else {
                "   (NOTHING written)"
            }
        );
        let _ = writeln!(
            s,
            "base     {} ({} files, {}), lock {} ({})",
            short(&b.diff_id),
            b.files,
            human_bytes(b.size),
            b.lock,
            b.lock_file
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  {:<12} {:>10} {:>10} {:>10} {:>10}  {:<9} {:<7} debug",
            "member", "slim", "app", "base", "alone", "verified", "traced"
        );
        for m in &self.members {
            let _ = writeln!(
                s,
                "  {:<12} {:>10} {:>10} {:>10} {:>10}  {:<9} {:<7} {}",
                m.name,
                human_bytes(m.size),
                human_bytes(m.app_size),
                human_bytes(m.base_size),
                human_bytes(m.independent_size),
                status(m.verification),
                if m.traced { "yes" } else { "cached" },
                m.debug
                    .as_ref()
                    .map(|d| format!("+{} ({})", human_bytes(d.layer.size), d.tools.join(",")))
                    .unwrap_or_else(|| "-".into())
            );
        }
        let t = &self.total;
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  unique bytes {} vs {} for independent builds ({:.2}x)",
            human_bytes(t.unique_bytes),
            human_bytes(t.independent_bytes),
            t.ratio
        );
        if t.rebase_would_move > 0 {
            let _ = writeln!(
                s,
                "  {} of base files are in app layers because the lock lacks them; \
                 --rebase would move them into the base",
                human_bytes(t.rebase_would_move)
            );
        }
        for m in &self.members {
            for n in &m.notes {
                let _ = writeln!(s, "  note: {}: {n}", m.name);
            }
        }
        s
    }
}

fn short(d: &str) -> &str {
    &d[..d.len().min(19)]
}
