//! Probes: what exercises the app while it is watched. HTTP requests and host commands run in
//! the sandbox's network namespace only (a thread or child that `setns`es into it), so they
//! reach the app on the sandbox's own loopback and nothing else.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A probe to run, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// GET `path` on `port` (`PORT[/PATH]`).
    Http { port: u16, path: String },
    /// A command run inside the container, like `docker exec` (its files count).
    Exec(String),
    /// A host command run in the container's network namespace only (its files do not count).
    Host(String),
}

impl std::str::FromStr for Probe {
    type Err = String;
    /// `PORT[/PATH]` for HTTP probes.
    fn from_str(s: &str) -> Result<Self, String> {
        let (port, path) = match s.find('/') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, "/"),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: expected PORT[/PATH], e.g. 8080/health"))?;
        Ok(Probe::Http {
            port,
            path: path.to_string(),
        })
    }
}

/// The outcome of one probe, as reported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProbeReport {
    /// `http`, `exec` or `host`.
    pub kind: &'static str,
    /// `PORT/PATH` or the command.
    pub target: String,
    pub ok: bool,
    /// HTTP status.
    pub status: Option<u16>,
    /// Exit code of a command (null when killed by a signal or not run).
    pub exit_code: Option<i32>,
    /// sha256 of the HTTP body or of the command's stdout.
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl ProbeReport {
    pub fn new(kind: &'static str, target: String) -> Self {
        ProbeReport {
            kind,
            target,
            ok: false,
            status: None,
            exit_code: None,
            sha256: None,
            bytes: None,
            error: None,
            duration_ms: 0,
        }
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Whether something listens on TCP `port` in the network namespace of `pid`.
pub fn listening(pid: i32, port: u16) -> bool {
    for f in ["tcp", "tcp6"] {
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")) else {
            continue;
        };
        for line in s.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || cols[3] != "0A" {
                continue;
            }
            if let Some((_, p)) = cols[1].rsplit_once(':') {
                if u16::from_str_radix(p, 16) == Ok(port) {
                    return true;
                }
            }
        }
    }
    false
}

/// Runs `f` on a thread that has joined the network namespace `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &OwnedFd,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let fd = netns.try_clone()?;
    std::thread::spawn(move || -> std::io::Result<T> {
        // SAFETY: setns of this thread only; the fd is a network namespace fd.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| std::io::Error::other("probe thread panicked"))?
}

/// One `GET` over HTTP/1.0 on the loopback of the current network namespace.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let addrs = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ];
    let mut last = String::new();
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(mut s) => {
                s.set_read_timeout(Some(timeout)).ok();
                s.set_write_timeout(Some(timeout)).ok();
                let req = format!(
                    "GET {path} HTTP/1.0\r\nHost: localhost:{port}\r\nUser-Agent: whittle\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                );
                s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                let mut resp = Vec::new();
                let deadline = Instant::now() + timeout;
                let mut buf = [0u8; 16384];
                loop {
                    if Instant::now() > deadline || resp.len() > 256 << 20 {
                        return Err("response took too long".into());
                    }
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => resp.extend_from_slice(&buf[..n]),
                        Err(e) => return Err(format!("reading response: {e}")),
                    }
                }
                return parse_response(&resp);
            }
            Err(e) => last = format!("connect to {a}: {e}"),
        }
    }
    Err(last)
}

fn parse_response(resp: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header in response")?;
    let head = String::from_utf8_lossy(&resp[..end]);
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    Ok((status, resp[end + 4..].to_vec()))
}

/// Runs `sh -c CMD` on the host, joined to the network namespace `netns`; returns exit code
/// (None if killed) and stdout.
pub fn host_command(
    netns: &OwnedFd,
    cmd: &str,
    timeout: Duration,
) -> Result<(Option<i32>, Vec<u8>), String> {
    use std::os::unix::process::CommandExt;
    let fd = netns.as_raw_fd();
    let mut c = std::process::Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    // SAFETY: setns is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = c.spawn().map_err(|e| format!("starting /bin/sh: {e}"))?;
    let mut out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let stdout = reader.join().unwrap_or_default();
    Ok((status.code(), stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_specs_and_responses() {
        assert_eq!(
            "80".parse::<Probe>().unwrap(),
            Probe::Http {
                port: 80,
                path: "/".into()
            }
        );
        assert_eq!(
            "8080/health?x=1".parse::<Probe>().unwrap(),
            Probe::Http {
                port: 8080,
                path: "/health?x=1".into()
            }
        );
        assert!("x/y".parse::<Probe>().is_err());
        let (s, b) = parse_response(b"HTTP/1.1 404 Not Found\r\nA: b\r\n\r\nbody").unwrap();
        assert_eq!((s, b.as_slice()), (404, &b"body"[..]));
    }
}
