//! Readiness probes from outside the container, for containers without a HEALTHCHECK: N
//! successes in a row of an HTTP GET (2xx/3xx) or a TCP connect. A probe stops at the first
//! run of successes — after that HAProxy's own checks watch the server — and is aborted when
//! the container goes away.

use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::spec::{Probe, ProbeKind};

/// A probe's verdict: the container `id` passed at `at`.
#[derive(Debug, Clone)]
pub struct Passed {
    pub id: String,
    pub at: SystemTime,
}

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

pub fn spawn(
    id: String,
    addr: String,
    probe: Probe,
    tx: mpsc::UnboundedSender<Passed>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut streak = 0;
        loop {
            let ok = tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(&addr, &probe.kind))
                .await
                .unwrap_or(false);
            streak = if ok { streak + 1 } else { 0 };
            if streak >= probe.successes {
                let _ = tx.send(Passed {
                    id,
                    at: SystemTime::now(),
                });
                return;
            }
            tokio::time::sleep(probe.interval).await;
        }
    })
}

async fn attempt(addr: &str, kind: &ProbeKind) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    match kind {
        ProbeKind::Tcp { .. } => true,
        ProbeKind::Http { path, .. } => {
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: whittle-route-probe\r\n\r\n"
            );
            if s.write_all(req.as_bytes()).await.is_err() {
                return false;
            }
            let mut buf = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                match s.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let code: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            (200..400).contains(&code)
        }
    }
}
