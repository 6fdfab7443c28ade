//! Verification: the slim image must answer every probe exactly as the fat image did.
//!
//! Compared: how the run ended; for each probe, whether it got an answer, the HTTP status,
//! the command's exit status and the sha256 of the body or stdout; for a CLI image run to
//! completion, its exit status, the signal that ended it and the sha256 of its stdout. Timing,
//! pids, hostnames and stderr are not compared: they differ between any two runs.

use serde::Serialize;
use whittle_fstree::FsTree;
use whittle_sandbox::{Outcome, ProbeReport, Report};

/// One way the slim run differed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `http 80/`, `exec CMD`, `host CMD`, or `app` for the run itself.
    pub probe: String,
    /// `outcome`, `ok`, `status`, `exit_code`, `signal`, `sha256`, `stdout_sha256`, `probes`.
    pub field: &'static str,
    pub fat: String,
    pub slim: String,
}

fn show<T: std::fmt::Debug>(v: &Option<T>) -> String {
    match v {
        Some(v) => format!("{v:?}").trim_matches('"').to_string(),
        None => "none".into(),
    }
}

fn outcome_name(o: Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn probe_name(p: &ProbeReport) -> String {
    format!("{} {}", p.kind, p.target)
}

/// Every difference between the fat and the slim run (empty: verified).
pub fn compare(fat: &Report, slim: &Report) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut diff = |probe: String, field: &'static str, a: String, b: String| {
        if a != b {
            out.push(Difference {
                probe,
                field,
                fat: a,
                slim: b,
            });
        }
    };
    diff(
        "app".into(),
        "outcome",
        outcome_name(fat.outcome),
        outcome_name(slim.outcome),
    );
    if fat.mode == "cli" {
        diff(
            "app".into(),
            "exit_code",
            show(&fat.app.exit_code),
            show(&slim.app.exit_code),
        );
        diff(
            "app".into(),
            "signal",
            show(&fat.app.signal),
            show(&slim.app.signal),
        );
        diff(
            "app".into(),
            "stdout_sha256",
            show(&fat.app.stdout_sha256),
            show(&slim.app.stdout_sha256),
        );
    }
    diff(
        "app".into(),
        "probes",
        fat.probes.len().to_string(),
        slim.probes.len().to_string(),
    );
    for (a, b) in fat.probes.iter().zip(&slim.probes) {
        let name = probe_name(a);
        diff(name.clone(), "ok", a.ok.to_string(), b.ok.to_string());
        diff(name.clone(), "status", show(&a.status), show(&b.status));
        diff(
            name.clone(),
            "exit_code",
            show(&a.exit_code),
            show(&b.exit_code),
        );
        diff(name, "sha256", show(&a.sha256), show(&b.sha256));
    }
    out
}

/// The paths the slim run looked up and did not find that the fat image has: what the slim
/// image lacks that the app went looking for.
/// Returned as the exact path bytes (file names need not be UTF-8).
pub fn missing(slim: &Report, fat_tree: &FsTree, resolves: impl Fn(&str) -> bool) -> Vec<Vec<u8>> {
    slim.files
        .iter()
        .filter(|f| f.enoent && !f.ok && !f.in_image)
        .filter(|f| {
            fat_tree
                .get(f.raw_path.strip_prefix(b"/").unwrap_or(&f.raw_path))
                .is_some()
                || std::str::from_utf8(&f.raw_path).is_ok_and(&resolves)
        })
        .map(|f| f.raw_path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_sandbox::{AppReport, Recorders, Summary, Timings};

    fn report(mode: &'static str, outcome: Outcome, probes: Vec<ProbeReport>) -> Report {
        Report {
            schema: whittle_sandbox::SCHEMA,
            image: "x".into(),
            command: vec![],
            user: "0:0".into(),
            working_dir: "/".into(),
            hostname: "h".into(),
            mode,
            outcome,
            error: None,
            app: AppReport::default(),
            probes,
            recorders: Recorders::default(),
            timings: Timings::default(),
            summary: Summary::default(),
            files: vec![],
            syscalls: None,
        }
    }

    fn http(status: u16, sha: &str) -> ProbeReport {
        let mut p = ProbeReport::new("http", "80/".into());
        p.ok = true;
        p.status = Some(status);
        p.sha256 = Some(sha.into());
        p.duration_ms = status as u64; // durations differ between runs and must not count
        p
    }

    #[test]
    fn equal_runs_have_no_differences() {
        let a = report("server", Outcome::Ok, vec![http(200, "ab")]);
        let mut b = report("server", Outcome::Ok, vec![http(200, "ab")]);
        b.probes[0].duration_ms = 999;
        b.hostname = "other".into();
        assert!(compare(&a, &b).is_empty());
    }

    #[test]
    fn status_body_and_outcome_differences_are_named() {
        let a = report("server", Outcome::Ok, vec![http(200, "ab")]);
        let b = report("server", Outcome::NotReady, vec![http(404, "cd")]);
        let d = compare(&a, &b);
        let fields: Vec<&str> = d.iter().map(|d| d.field).collect();
        assert_eq!(fields, ["outcome", "status", "sha256"]);
        assert_eq!(d[1].probe, "http 80/");
        assert_eq!((d[1].fat.as_str(), d[1].slim.as_str()), ("200", "404"));
    }

    #[test]
    fn cli_runs_compare_exit_status_and_stdout() {
        let mut a = report("cli", Outcome::Ok, vec![]);
        a.app.exit_code = Some(0);
        a.app.stdout_sha256 = Some("x".into());
        let mut b = a.clone();
        assert!(compare(&a, &b).is_empty());
        b.app.exit_code = Some(1);
        b.app.stdout_sha256 = Some("y".into());
        let fields: Vec<&str> = compare(&a, &b).iter().map(|d| d.field).collect();
        assert_eq!(fields, ["exit_code", "stdout_sha256"]);
    }
}
