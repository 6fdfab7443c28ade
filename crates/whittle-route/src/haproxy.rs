//! HAProxy's runtime API (the stats socket) and its master CLI, spoken by hand.
//!
//! Why by hand: there is no maintained Rust client for the runtime API, and the protocol is a
//! line per command over a Unix socket — connect, write `COMMAND\n`, read until HAProxy closes
//! (non-interactive mode). A few dozen lines do it and keep every reply visible for errors.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::{Error, Result};

/// How long one command may take before the socket is considered stuck.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// One runtime API socket (a worker's stats socket or the master CLI).
#[derive(Debug, Clone)]
pub struct Socket {
    path: PathBuf,
    /// Commands sent, for status and for "commands per event".
    pub sent: u64,
    /// At most this many commands per second: a flapping fleet cannot flood HAProxy.
    max_rate: u32,
    window: Option<(Instant, u32)>,
}

impl Socket {
    pub fn new(path: &Path, max_rate: u32) -> Self {
        Self {
            path: path.to_path_buf(),
            sent: 0,
            max_rate: max_rate.max(1),
            window: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one command and returns HAProxy's reply (trailing blank lines trimmed).
    pub async fn command(&mut self, cmd: &str) -> Result<String> {
        self.pace().await;
        self.sent += 1;
        let path = self.path.clone();
        let fut = async move {
            let mut s = UnixStream::connect(&path).await?;
            s.write_all(cmd.as_bytes()).await?;
            s.write_all(b"\n").await?;
            // The master CLI answers only once the request side is closed.
            s.shutdown().await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
            Ok(Ok(out)) => Ok(out.trim_end().to_string()),
            Ok(Err(e)) => Err(Error::Socket {
                path: self.path.display().to_string(),
                command: cmd.to_string(),
                cause: e.to_string(),
            }),
            Err(_) => Err(Error::Socket {
                path: self.path.display().to_string(),
                command: cmd.to_string(),
                cause: format!("no answer within {COMMAND_TIMEOUT:?}"),
            }),
        }
    }

    /// Like [`Socket::command`], but a reply HAProxy marks as an error becomes an error.
    pub async fn ok(&mut self, cmd: &str) -> Result<String> {
        let out = self.command(cmd).await?;
        if is_error_reply(&out) {
            return Err(Error::Refused {
                command: cmd.to_string(),
                reply: out.lines().next().unwrap_or_default().to_string(),
            });
        }
        Ok(out)
    }

    async fn pace(&mut self) {
        let now = Instant::now();
        match &mut self.window {
            Some((start, n)) if now.duration_since(*start) < Duration::from_secs(1) => {
                if *n >= self.max_rate {
                    let wait = Duration::from_secs(1) - now.duration_since(*start);
                    tokio::time::sleep(wait).await;
                    self.window = Some((Instant::now(), 1));
                } else {
                    *n += 1;
                }
            }
            _ => self.window = Some((now, 1)),
        }
    }
}

/// HAProxy answers errors in plain words (there is no status code in the protocol); these are
/// the forms 2.6 uses for the commands whittle sends.
fn is_error_reply(out: &str) -> bool {
    let first = out.lines().next().unwrap_or_default().trim();
    // Tables (`show stat`, `show servers state`) start with a header or a format version.
    if first.starts_with('#') || first.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let l = first.to_ascii_lowercase();
    l.starts_with("unknown")
        || l.contains("no such")
        || l.starts_with("require ")
        || l.contains("cannot ")
        || l.contains("not found")
        || l.contains("error")
        || l.contains("invalid")
        || l.contains("already exists")
        || l.contains("must ")
        || l.starts_with("permission denied")
}

/// One line of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub backend: String,
    pub name: String,
    pub addr: String,
    pub port: u16,
    /// `srv_admin_state`: bit 0x01 forced maint, 0x04 `disabled` in the config (left set by
    /// `set server state ready`, without effect then), 0x08 drain.
    pub admin: u32,
    /// `srv_op_state`: 0 stopped … 2 running.
    pub op: u32,
    /// `srv_fqdn`: the name DNS resolvers keep the address of (`-` for an address).
    pub fqdn: Option<String>,
}

impl ServerState {
    pub fn maint(&self) -> bool {
        self.admin & 0x23 != 0
    }
    pub fn drain(&self) -> bool {
        self.admin & 0x18 != 0
    }
}

/// Parses `show servers state` (format version 1).
pub fn parse_servers_state(out: &str) -> Vec<ServerState> {
    let mut v = Vec::new();
    for line in out.lines().skip(1) {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state … srv_port is
        // field 18 (0-based) in version 1.
        if f.len() < 19 {
            continue;
        }
        v.push(ServerState {
            backend: f[1].to_string(),
            name: f[3].to_string(),
            addr: f[4].to_string(),
            op: f[5].parse().unwrap_or(0),
            admin: f[6].parse().unwrap_or(0),
            port: f[18].parse().unwrap_or(0),
            fqdn: (f[17] != "-").then(|| f[17].to_string()),
        });
    }
    v
}

/// Current sessions (`scur`) plus queue (`qcur`) per `backend/server`, from `show stat`.
pub fn parse_stat_busy(out: &str) -> std::collections::BTreeMap<(String, String), u64> {
    let mut m = std::collections::BTreeMap::new();
    for line in out.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 5 || f[1] == "FRONTEND" || f[1] == "BACKEND" {
            continue;
        }
        let n = |s: &str| s.parse::<u64>().unwrap_or(0);
        m.insert((f[0].to_string(), f[1].to_string()), n(f[2]) + n(f[4]));
    }
    m
}

/// The master's view from `show proc`: the current worker pid and the master's reload count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub master: u32,
    pub worker: u32,
    pub reloads: u64,
}

pub fn parse_show_proc(out: &str) -> Option<Proc> {
    let mut master = None;
    let mut worker = None;
    let mut section_workers = false;
    for line in out.lines() {
        let l = line.trim();
        if l.starts_with("# workers") {
            section_workers = true;
            continue;
        }
        if l.starts_with('#') {
            section_workers = l.starts_with("# workers");
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if f[1] == "master" {
            master = Some((f[0].parse().ok()?, f[2].parse().ok()?));
        } else if section_workers && f[1] == "worker" && worker.is_none() {
            worker = f[0].parse().ok();
        }
    }
    let (master, reloads) = master?;
    Some(Proc {
        master,
        worker: worker?,
        reloads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_proc() {
        let out = "#<PID>          <type>          <reloads>       <uptime>        <version>\n\
1162            master          5 [failed: 0]   0d00h02m07s     2.6.12\n\
# workers\n\
1271            worker          1               0d00h00m00s     2.6.12\n\
# old workers\n\
1233            worker          3               0d00h00m43s     2.6.12\n";
        assert_eq!(
            parse_show_proc(out),
            Some(Proc {
                master: 1162,
                worker: 1271,
                reloads: 5
            })
        );
    }

    #[test]
    fn servers_state() {
        let out = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
3 web 1 abc-80 127.0.0.1 2 8 100 100 5 6 3 4 6 0 0 0 - 32768 - 0 0 - - 0\n";
        let s = parse_servers_state(out);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "abc-80");
        assert_eq!(s[0].port, 32768);
        assert!(s[0].drain() && !s[0].maint());
        assert_eq!(s[0].fqdn, None);
        assert!(is_error_reply("unknown keyword 'bogus'."));
    }

    #[test]
    fn errors() {
        assert!(is_error_reply("No such server."));
        assert!(is_error_reply(
            "Server still has connections attached to it, cannot remove it."
        ));
        assert!(!is_error_reply("New server registered."));
        assert!(!is_error_reply("Server deleted."));
        assert!(!is_error_reply(""));
        assert!(!is_error_reply(
            "# pxname,svname,h2_detected_conn_protocol_errors\n"
        ));
    }
}
