//! A RELP client (rsyslog's Reliable Event Logging Protocol, as librelp and `imrelp` speak it).
//!
//! No Rust RELP crate exists, and the protocol is small, so the framing is written here:
//! `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. A session starts with `open` (offers
//! `relp_version`, `relp_software`, `commands=syslog`), carries `syslog` frames each with the
//! next transaction number (1..999999999, then 1 again), and the server answers every frame with
//! `rsp` and a status (`200 OK`). Frames are sent without waiting, up to the caller's window; a
//! frame counts as delivered only when its `rsp 200` arrived. After a reconnect the caller
//! resends every frame not acknowledged, in order, in a new session.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// An acknowledgement (the txnr) or why the session is over.
pub type Ack = std::result::Result<u64, String>;

#[derive(Debug)]
pub struct Relp {
    w: BufWriter<OwnedWriteHalf>,
    acks: mpsc::UnboundedReceiver<Ack>,
    next: u64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Relp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

const OFFERS: &str = "relp_version=0\nrelp_software=whittle\ncommands=syslog";
const MAX_TXNR: u64 = 999_999_999;

impl Relp {
    /// Connects and opens a session.
    pub async fn connect(addr: &str) -> std::result::Result<Self, String> {
        let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out after 5s".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = s.set_nodelay(true);
        let (r, w) = s.into_split();
        let (tx, acks) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_responses(BufReader::with_capacity(64 << 10, r), tx));
        let mut me = Self {
            w: BufWriter::with_capacity(256 << 10, w),
            acks,
            next: 1,
            reader,
        };
        let t = me.frame("open", OFFERS.as_bytes()).await?;
        me.flush().await?;
        match tokio::time::timeout(Duration::from_secs(10), me.acks.recv()).await {
            Ok(Some(Ok(n))) if n == t => Ok(me),
            Ok(Some(Ok(n))) => Err(format!("open answered with txnr {n}, expected {t}")),
            Ok(Some(Err(e))) => Err(format!("open refused: {e}")),
            Ok(None) => Err("connection closed during open".into()),
            Err(_) => Err("no answer to open within 10s".into()),
        }
    }

    async fn frame(&mut self, cmd: &str, data: &[u8]) -> std::result::Result<u64, String> {
        let t = self.next;
        self.next = if t >= MAX_TXNR { 1 } else { t + 1 };
        let head = if data.is_empty() {
            format!("{t} {cmd} 0\n")
        } else {
            format!("{t} {cmd} {} ", data.len())
        };
        let r = async {
            self.w.write_all(head.as_bytes()).await?;
            if !data.is_empty() {
                self.w.write_all(data).await?;
                self.w.write_all(b"\n").await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        r.map_err(|e| format!("send: {e}"))?;
        Ok(t)
    }

    /// Queues one syslog message; returns its txnr.
    pub async fn syslog(&mut self, msg: &[u8]) -> std::result::Result<u64, String> {
        self.frame("syslog", msg).await
    }

    pub async fn flush(&mut self) -> std::result::Result<(), String> {
        self.w.flush().await.map_err(|e| format!("send: {e}"))
    }

    /// The next acknowledgement (cancel-safe).
    pub async fn ack(&mut self) -> Ack {
        self.acks
            .recv()
            .await
            .unwrap_or_else(|| Err("connection closed".into()))
    }

    /// An acknowledgement already received, without waiting.
    pub fn try_ack(&mut self) -> Option<Ack> {
        self.acks.try_recv().ok()
    }

    /// Closes the session politely (shutdown); errors are of no interest then.
    pub async fn close(mut self) {
        if self.frame("close", b"").await.is_ok() && self.flush().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.acks.recv()).await;
        }
    }
}

/// Parses `rsp` frames into acknowledgements; ends with an `Err` saying why.
async fn read_responses(
    mut r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    tx: mpsc::UnboundedSender<Ack>,
) {
    let cause = loop {
        match read_frame(&mut r).await {
            Ok((txnr, cmd, data)) => match cmd.as_str() {
                "rsp" => {
                    let text = String::from_utf8_lossy(&data);
                    if text.starts_with("200") {
                        if tx.send(Ok(txnr)).is_err() {
                            return;
                        }
                    } else {
                        break format!(
                            "server answered txnr {txnr} with `{}`",
                            text.lines().next().unwrap_or("")
                        );
                    }
                }
                "serverclose" => break "server closed the session (serverclose)".to_string(),
                other => break format!("unexpected command `{other}` from the server"),
            },
            Err(e) => break e,
        }
    };
    let _ = tx.send(Err(cause));
}

/// Asks the kernel to acknowledge what arrives on `r` at once. rsyslog writes each `rsp` as a
/// small segment with Nagle's algorithm on; with our delayed ACK (40 ms) in between, a full
/// window waited 40 ms per round trip and throughput was the window size × 25 per second
/// (measured: 1024 records → 23k lines/s). The flag does not stick, so it is set again before
/// each read from the socket.
fn quickack(r: &tokio::net::tcp::OwnedReadHalf) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, owned by `r` for the call; the option value is a
    // c_int that outlives it. A failure only means delayed ACKs, so it is ignored.
    unsafe {
        libc::setsockopt(
            r.as_ref().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The next header token and the byte that ended it (space or LF), scanned in the reader's
/// buffer rather than one read call per byte.
async fn read_token(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> Result<(String, u8), String> {
    let mut tok = Vec::new();
    loop {
        if r.buffer().is_empty() {
            quickack(r.get_ref());
        }
        let buf = r.fill_buf().await.map_err(|e| format!("receive: {e}"))?;
        if buf.is_empty() {
            return Err("connection closed by the server".into());
        }
        let mut used = 0;
        let mut end = None;
        for &b in buf {
            used += 1;
            if b == b' ' || b == b'\n' {
                if tok.is_empty() && b == b'\n' {
                    continue;
                }
                end = Some(b);
                break;
            }
            if tok.len() > 32 {
                return Err("malformed RELP frame header".into());
            }
            tok.push(b);
        }
        r.consume(used);
        if let Some(b) = end {
            return Ok((String::from_utf8_lossy(&tok).into_owned(), b));
        }
    }
}

async fn read_frame(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> Result<(u64, String, Vec<u8>), String> {
    let (txnr, _) = read_token(r).await?;
    let txnr: u64 = txnr
        .parse()
        .map_err(|_| format!("malformed RELP txnr `{txnr}`"))?;
    let (cmd, _) = read_token(r).await?;
    let (len, sep) = read_token(r).await?;
    let len: usize = len
        .parse()
        .map_err(|_| format!("malformed RELP data length `{len}`"))?;
    let mut data = vec![0u8; len];
    if len > 0 {
        if sep != b' ' {
            return Err("malformed RELP frame (no data after the length)".into());
        }
        r.read_exact(&mut data)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        let mut lf = Vec::new();
        r.read_until(b'\n', &mut lf)
            .await
            .map_err(|e| format!("receive: {e}"))?;
    }
    Ok((txnr, cmd, data))
}
