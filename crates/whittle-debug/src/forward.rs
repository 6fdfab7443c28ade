//! `port-forward`: a host port that reaches a port the target listens on inside its network
//! namespace only. Namespaces belong to threads, so each connection is dialed from a thread
//! that joined the target's network namespace; the relay lives in whittle, nothing is added to
//! the target, and closing whittle closes every forwarded connection.

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::{Error, Result};

/// `LOCAL:[ADDR:]PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub local: u16,
    pub remote: SocketAddr,
}

impl std::str::FromStr for Spec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || {
            format!("`{s}`: expected LOCAL:[ADDR:]PORT, e.g. 18080:8080 or 18080:127.0.0.1:8080")
        };
        let (local, rest) = s.split_once(':').ok_or_else(bad)?;
        let local: u16 = local.parse().map_err(|_| bad())?;
        let (addr, port) = match rest.rsplit_once(':') {
            Some((a, p)) => (
                a.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map_err(|_| bad())?,
                p,
            ),
            None => (IpAddr::V4(Ipv4Addr::LOCALHOST), rest),
        };
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
        Ok(Self {
            local,
            remote: SocketAddr::new(addr, port),
        })
    }
}

/// The target's network namespace, held open: a connection made after the target restarted
/// still goes to the namespace the forward was started for, or fails.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    what: String,
}

impl NetNs {
    pub fn of_pid(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/ns/net");
        let file = crate::error::open_proc(&path, "CAP_SYS_PTRACE")?;
        Ok(Self {
            file,
            what: format!("network namespace of pid {pid}"),
        })
    }

    /// Joins the namespace in the calling thread only.
    fn enter(&self) -> Result<()> {
        // SAFETY: setns(2) reads the descriptor, which `self.file` keeps open.
        if unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) => Error::Privilege {
                    what: format!("joining the {}", self.what),
                    caps: "CAP_SYS_ADMIN".into(),
                },
                _ => Error::Sys {
                    call: format!("setns({})", self.what),
                    cause: e.to_string(),
                },
            });
        }
        Ok(())
    }

    /// Connects to `addr` from inside the namespace.
    pub fn connect(self: &Arc<Self>, addr: SocketAddr) -> Result<TcpStream> {
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            me.enter()?;
            TcpStream::connect(addr).map_err(|e| Error::Sys {
                call: format!("connect {addr} in the {}", me.what),
                cause: e.to_string(),
            })
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Session("the connecting thread panicked".into())))
    }
}

/// Listens on 127.0.0.1:`spec.local` and relays each connection until the process ends.
/// `ready` gets the bound address once listening; `log` one line per connection.
pub fn serve(
    ns: NetNs,
    spec: Spec,
    ready: impl FnOnce(SocketAddr),
    log: impl Fn(&str) + Send + Sync + 'static,
) -> Result<()> {
    let ns = Arc::new(ns);
    // Fail now, not at the first connection, when the namespace cannot be joined.
    std::thread::spawn({
        let ns = Arc::clone(&ns);
        move || ns.enter()
    })
    .join()
    .unwrap_or_else(|_| Err(Error::Session("setns probe panicked".into())))?;
    let bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), spec.local);
    let listener = TcpListener::bind(bind).map_err(|e| Error::io(bind.to_string(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io(bind.to_string(), e))?;
    ready(local);
    let log = Arc::new(log);
    for conn in listener.incoming() {
        let client = match conn {
            Ok(c) => c,
            Err(e) => {
                log(&format!("accept on {local}: {e}"));
                continue;
            }
        };
        let ns = Arc::clone(&ns);
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let peer = client
                .peer_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            match ns.connect(spec.remote) {
                Ok(upstream) => {
                    let (up, down) = relay(client, upstream);
                    log(&format!(
                        "{peer} → {}: {up} bytes up, {down} down",
                        spec.remote
                    ));
                }
                Err(e) => log(&format!("{peer}: {e}")),
            }
        });
    }
    Ok(())
}

/// Copies both ways until both sides are done; returns (client → target, target → client)
/// byte counts. Each direction's end is passed on as a half close.
fn relay(client: TcpStream, upstream: TcpStream) -> (u64, u64) {
    let pair = |a: &TcpStream, b: &TcpStream| Some((a.try_clone().ok()?, b.try_clone().ok()?));
    let Some((mut c2, mut u2)) = pair(&client, &upstream) else {
        return (0, 0);
    };
    let up = std::thread::spawn(move || {
        let n = io::copy(&mut c2, &mut u2).unwrap_or(0);
        let _ = u2.shutdown(Shutdown::Write);
        n
    });
    let (mut c, mut u) = (client, upstream);
    let down = io::copy(&mut u, &mut c).unwrap_or(0);
    let _ = c.flush();
    let _ = c.shutdown(Shutdown::Write);
    (up.join().unwrap_or(0), down)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s: Spec = "18080:8080".parse().unwrap();
        assert_eq!(s.local, 18080);
        assert_eq!(s.remote, "127.0.0.1:8080".parse().unwrap());
        let s: Spec = "0:10.0.0.5:80".parse().unwrap();
        assert_eq!(s.remote, "10.0.0.5:80".parse().unwrap());
        let s: Spec = "1:[::1]:80".parse().unwrap();
        assert_eq!(s.remote, "[::1]:80".parse().unwrap());
        assert!("8080".parse::<Spec>().is_err());
        assert!("x:80".parse::<Spec>().is_err());
        assert!("1:0".parse::<Spec>().is_err());
    }

    #[test]
    fn relays_in_own_namespace() {
        use std::io::Read;
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).unwrap();
            buf.reverse();
            s.write_all(&buf).unwrap();
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let faddr = front.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (c, _) = front.accept().unwrap();
            relay(c, TcpStream::connect(addr).unwrap())
        });
        let mut c = TcpStream::connect(faddr).unwrap();
        c.write_all(b"abc").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out, "cba");
        assert_eq!(t.join().unwrap(), (3, 3));
    }
}
