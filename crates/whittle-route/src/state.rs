//! `route.json` in the state directory: what `route status` shows, and what a restarted
//! `route run` reads to adopt the running HAProxy (its services and their listen ports).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{io_err, Result};

pub const STATE_FILE: &str = "route.json";

/// How long changes took from the triggering event to HAProxy applying them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Convergence {
    /// Event (healthy, probe passed, start) → server `ready`.
    pub routed: Vec<f64>,
    /// `kill` event → server `drain`.
    pub drained: Vec<f64>,
    /// `die`, `unhealthy`, disconnect, `kill -9` → server `maint`.
    pub removed: Vec<f64>,
}

impl Convergence {
    /// Keeps the newest samples only, so the file stays small on a long run.
    fn trim(&mut self) {
        const KEEP: usize = 2000;
        for v in [&mut self.routed, &mut self.drained, &mut self.removed] {
            if v.len() > KEEP {
                v.drain(..v.len() - KEEP);
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerReport {
    pub service: String,
    pub server: String,
    /// The container id (a 12-digit prefix for servers adopted from HAProxy).
    pub container: String,
    pub container_name: String,
    pub address: String,
    /// `ready`, `maint` (not ready yet), `drain` (stopping, requests finishing), `removing`.
    pub state: String,
    /// When it entered that state (RFC 3339).
    pub since: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// The `route run` process.
    pub pid: u32,
    pub bind: String,
    pub haproxy_master: Option<u32>,
    pub haproxy_worker: Option<u32>,
    /// The stats socket of the HAProxy `--attach` drives (`None`: whittle started its own).
    #[serde(default)]
    pub attached: Option<String>,
    /// Reloads whittle asked for (only ever for a new service, unless --reload-always).
    pub reloads: u64,
    /// Service → listen port.
    pub services: BTreeMap<String, u16>,
    pub servers: Vec<ServerReport>,
    /// Engine events received, and Engine API calls made (list, inspect, service inspect).
    pub events: u64,
    pub engine_api_calls: u64,
    /// Runtime API commands sent to the worker.
    pub haproxy_commands: u64,
    pub convergence_ms: Convergence,
}

impl State {
    pub fn read(dir: &Path) -> Result<State> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(path.display(), e))?;
        serde_json::from_str(&text).map_err(|e| crate::Error::Io {
            path: path.display().to_string(),
            cause: format!("not a whittle route state file: {e}"),
        })
    }

    /// Written to a temporary name and renamed: a reader never sees half a file.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let mut s = self.clone();
        s.convergence_ms.trim();
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(&s).map_err(|e| crate::Error::Io {
            path: path.display().to_string(),
            cause: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(|e| io_err(tmp.display(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err(path.display(), e))
    }
}
