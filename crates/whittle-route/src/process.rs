//! The HAProxy process: started once in master-worker mode as its own daemon (it outlives
//! whittle, so a restarted or crashed whittle never takes traffic down), found again through
//! its master socket, reloaded only when a new service needs a new frontend.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::haproxy::{parse_show_proc, Proc, Socket};
use crate::{io_err, Error, Result};

/// The master CLI's socket name in the state directory.
pub const MASTER_SOCKET: &str = "master.sock";
pub const CONFIG: &str = "haproxy.cfg";
pub const PID_FILE: &str = "haproxy.pid";

/// `show proc` through the master socket; `None` when no master answers there.
pub async fn probe_master(master: &mut Socket) -> Option<Proc> {
    let out = master.command("show proc").await.ok()?;
    parse_show_proc(&out)
}

/// Writes the config atomically after HAProxy has checked it (`haproxy -c`): a config HAProxy
/// would refuse never replaces the one running.
pub async fn write_config(haproxy: &Path, state_dir: &Path, text: &str) -> Result<()> {
    let path = state_dir.join(CONFIG);
    let tmp = state_dir.join(format!("{CONFIG}.new"));
    std::fs::write(&tmp, text).map_err(|e| io_err(tmp.display(), e))?;
    let out = tokio::process::Command::new(haproxy)
        .arg("-c")
        .arg("-q")
        .arg("-f")
        .arg(&tmp)
        .output()
        .await
        .map_err(|e| io_err(haproxy.display(), e))?;
    if !out.status.success() {
        let first = first_alert(&out.stderr, "rejected");
        return Err(Error::Haproxy(format!(
            "{} rejected the generated config {}: {first}",
            haproxy.display(),
            tmp.display()
        )));
    }
    std::fs::rename(&tmp, &path).map_err(|e| io_err(path.display(), e))
}

/// Starts HAProxy (`-W -D`): the master daemonizes, so it is not whittle's child and survives
/// whittle's exit. Waits until the master answers and reports a worker.
pub async fn start(haproxy: &Path, state_dir: &Path, master: &mut Socket) -> Result<Proc> {
    let _ = std::fs::remove_file(state_dir.join(MASTER_SOCKET));
    let out = tokio::process::Command::new(haproxy)
        .arg("-W")
        .arg("-D")
        .arg("-S")
        .arg(format!(
            "{},mode,600",
            state_dir.join(MASTER_SOCKET).display()
        ))
        .arg("-f")
        .arg(state_dir.join(CONFIG))
        .arg("-p")
        .arg(state_dir.join(PID_FILE))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| io_err(haproxy.display(), e))?;
    if !out.status.success() {
        return Err(Error::Haproxy(format!(
            "{} did not start: {}",
            haproxy.display(),
            first_alert(&out.stderr, "no message").trim()
        )));
    }
    wait_worker(master, None, Duration::from_secs(10)).await
}

/// Reloads through the master CLI and waits for a new worker to answer: the listening
/// sockets pass from the old worker to the new one, which is why no connection is refused.
pub async fn reload(master: &mut Socket, before: Proc) -> Result<Proc> {
    // The master closes the connection on reload: an empty reply or a reset is the normal
    // outcome, so only the new worker appearing says it worked.
    let _ = master.command("reload").await;
    wait_worker(master, Some(before), Duration::from_secs(15)).await
}

async fn wait_worker(master: &mut Socket, before: Option<Proc>, limit: Duration) -> Result<Proc> {
    let t = Instant::now();
    loop {
        if let Some(p) = probe_master(master).await {
            if before.is_none_or(|b| p.worker != b.worker && p.reloads > b.reloads) {
                return Ok(p);
            }
        }
        if t.elapsed() > limit {
            return Err(Error::Haproxy(format!(
                "no {} worker answered on {} within {limit:?}",
                if before.is_some() { "reloaded" } else { "" },
                master.path().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HAProxy's reason for refusing: its first ALERT line, else its first line, else `none`.
fn first_alert(stderr: &[u8], none: &str) -> String {
    let msg = String::from_utf8_lossy(stderr);
    msg.lines()
        .find(|l| l.contains("ALERT"))
        .or_else(|| msg.lines().next())
        .unwrap_or(none)
        .to_string()
}
