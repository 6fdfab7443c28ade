//! `whittle logs status`: what a shipper (running or not) left in its spool directory.

use std::path::Path;

use crate::{io_err, Error, Result};

/// The status document (`status.json`), with `running` corrected by looking at the pid.
pub fn read(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("status.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "{}: no status here; is this the --spool directory of `whittle logs ship` or `logs devlog`?",
                path.display()
            )))
        }
        Err(e) => return Err(io_err(&path, e)),
    };
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Spool {
        path: path.display().to_string(),
        cause: format!("not valid JSON: {e}"),
    })?;
    let pid = v["pid"].as_u64().unwrap_or(0);
    let alive = v["running"].as_bool().unwrap_or(false) && pid > 0 && is_whittle(pid);
    v["running"] = alive.into();
    if !alive {
        v["sink_up"] = false.into();
    }
    Ok(v)
}

fn is_whittle(pid: u64) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .next()
                .is_some_and(|a| a.ends_with(b"whittle"))
        })
        .unwrap_or(false)
}

/// The human-readable form.
pub fn render_text(v: &serde_json::Value) -> String {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let mut out = String::new();
    let state = if v["running"].as_bool().unwrap_or(false) {
        format!("running (pid {})", n("pid"))
    } else {
        format!(
            "not running (last status {})",
            v["updated"].as_str().unwrap_or("?")
        )
    };
    out.push_str(&format!("shipper:   {state}\n"));
    let sink = if v["sink_up"].as_bool().unwrap_or(false) {
        "connected".to_string()
    } else {
        format!(
            "down{}",
            v["sink_error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    };
    out.push_str(&format!(
        "sink:      {} {sink}, {} reconnects, {} records resent\n",
        v["sink"].as_str().unwrap_or("?"),
        n("reconnects"),
        n("resent")
    ));
    out.push_str(&format!(
        "records:   {} spooled, {} shipped, {} dropped ({} drop events), {} pending\n",
        n("spooled"),
        n("shipped"),
        n("dropped"),
        n("drop_events"),
        n("pending")
    ));
    out.push_str(&format!(
        "spool:     {} bytes in {} segments\n",
        n("spool_bytes"),
        n("spool_segments")
    ));
    if let Some(streams) = v["streams"].as_object() {
        if !streams.is_empty() {
            out.push_str(&format!(
                "\n{:<24} {:<19} {:<7} {:>10}  {}\n",
                "CONTAINER", "STREAM", "STATE", "SEQ", "CHECKPOINT"
            ));
        }
        for (k, s) in streams {
            let (id, stream) = k.rsplit_once('/').unwrap_or((k, ""));
            let state = if s["active"].as_bool().unwrap_or(false) {
                "reading"
            } else if s["drained"].as_bool().unwrap_or(false) {
                "done"
            } else {
                "idle"
            };
            out.push_str(&format!(
                "{:<24} {:<19} {:<7} {:>10}  {}\n",
                s["name"].as_str().unwrap_or(""),
                format!("{}/{stream}", &id[..id.len().min(12)]),
                state,
                s["seq"].as_u64().unwrap_or(0),
                if s["seq"].as_u64().unwrap_or(0) == 0 {
                    "-"
                } else {
                    s["checkpoint_ts"].as_str().unwrap_or("")
                }
            ));
        }
    }
    out
}
