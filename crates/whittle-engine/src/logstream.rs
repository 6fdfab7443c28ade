//! A container's stdout or stderr as the Engine stored it: records with the engine's own
//! timestamps, resumable at an exact position.
//!
//! bollard's `logs` call takes `since` as whole seconds (its `LogsOptions::since` is an `i32`),
//! and the Engine's `since` is inclusive with nanoseconds: resuming a shipper exactly needs the
//! nanoseconds, so this module sends the request itself (hyper over the same socket) and reads
//! the raw multiplexed stream: an 8-byte header per frame (stream byte, three zero bytes, a
//! big-endian length), then `TIMESTAMP SP payload`. A payload without a final newline is a
//! partial chunk (Docker splits lines over 16 KiB); the chunks of one line share the first
//! chunk's timestamp and are joined here into one record, byte-exact. A record longer than
//! `max_record` is emitted in parts, each marked, never cut silently.
//!
//! One stream (stdout or stderr) per request: within one stream the engine's timestamps only
//! grow, so (timestamp, records already taken at that timestamp) is an exact resume position.
//! With both streams in one request a partial stdout line and a later stderr line interleave and
//! no single timestamp marks "everything before this was taken".

use std::collections::VecDeque;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use tokio::net::{TcpStream, UnixStream};

use crate::{Engine, Error, Result};

/// Which of a container's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One record: a line (without its newline), or one part of a line longer than `max_record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The engine's receive time of the line's first chunk, nanoseconds since the epoch.
    pub ts_ns: u64,
    pub bytes: Vec<u8>,
    /// 0 for a whole line; 1, 2, … for the parts of a split one.
    pub part: u32,
    /// True when this part is not the line's last.
    pub more: bool,
    /// False when the stream ended inside a line (the program wrote no final newline).
    pub newline: bool,
    /// Engine frames (16 KiB chunks) the record was joined from.
    pub chunks: u32,
    /// Two consecutive chunks were byte-identical: a repetitive line, or the follow stream
    /// sending a chunk twice; the reader then reads the line again to know which.
    pub repeated: bool,
}

/// Where to start reading: the first record at or after `ts_ns`, skipping the first `skip`
/// records that carry exactly `ts_ns` (they were taken already).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Since {
    pub ts_ns: u64,
    pub skip: u64,
}

/// What a reader asks for.
#[derive(Debug, Clone)]
pub struct LogRequest {
    pub id: String,
    pub stream: Stream,
    pub since: Option<Since>,
    /// Keep reading while the container runs (the stream ends when it stops).
    pub follow: bool,
    /// Longest record; longer lines are emitted in parts of this size.
    pub max_record: usize,
}

/// An open log stream.
#[derive(Debug)]
pub struct LogReader {
    body: hyper::body::Incoming,
    tty: bool,
    buf: Vec<u8>,
    pos: usize,
    req: LogRequest,
    joiner: Joiner,
    ended: bool,
    host: String,
    engine: Engine,
    repaired: u64,
    /// The container ran when the stream was opened: the stream may catch up with the end of a
    /// log file being written, where Docker 20.10's follow reader can repeat a chunk.
    running: bool,
}

/// Joins partial chunks into records and skips what was taken before the resume position.
#[derive(Debug)]
struct Joiner {
    max: usize,
    since: Option<Since>,
    /// The line being joined from partial chunks: first timestamp, bytes, parts emitted,
    /// chunks joined.
    partial: Option<(u64, Vec<u8>, u32, u32)>,
    /// (length, crc32) of each chunk of the line being joined, and whether one chunk equalled
    /// an earlier one of the same line.
    chunk_sums: Vec<(usize, u32)>,
    repeated: bool,
    ready: VecDeque<LogRecord>,
    skipped: u64,
    /// Timestamp of the last record completed (taken or skipped).
    last_ts: u64,
    /// Frames dropped because the engine sent them again (see [`LogReader::replayed`]).
    replayed: u64,
}

/// Nanoseconds since the epoch from an RFC 3339 timestamp as the engine writes it.
pub fn parse_ts(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(d.as_nanos()).ok()
}

/// The engine's `since` parameter: seconds.nanoseconds (inclusive).
pub fn since_param(ts_ns: u64) -> String {
    format!("{}.{:09}", ts_ns / 1_000_000_000, ts_ns % 1_000_000_000)
}

impl Engine {
    /// Opens one stream of a container's log. `Ok(None)` when the engine no longer knows it.
    pub async fn open_log(&self, req: LogRequest) -> Result<Option<LogReader>> {
        // A TTY container's log has no frame headers: its bytes come as they are.
        let (tty, running) = match self
            .docker()
            .inspect_container(
                &req.id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(r) => (
                r.config.and_then(|c| c.tty).unwrap_or(false),
                r.state.and_then(|s| s.running).unwrap_or(false),
            ),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(self.api(&format!("inspect {}", req.id), e)),
        };
        let mut q = format!(
            "/v1.41/containers/{}/logs?timestamps=1&{}=1&follow={}",
            req.id,
            req.stream.as_str(),
            u8::from(req.follow)
        );
        if let Some(s) = req.since {
            q.push_str(&format!("&since={}", since_param(s.ts_ns)));
        }
        let Some(body) = self.get_raw(&req.id, &q).await? else {
            return Ok(None);
        };
        let host = self.host();
        Ok(Some(LogReader {
            body,
            engine: self.clone(),
            repaired: 0,
            tty,
            running,
            buf: Vec::new(),
            pos: 0,
            joiner: Joiner {
                max: req.max_record.max(1),
                since: req.since,
                partial: None,
                chunk_sums: Vec::new(),
                repeated: false,
                ready: VecDeque::new(),
                skipped: 0,
                // Records at the resume timestamp itself go through the `skip` count.
                last_ts: req.since.map(|s| s.ts_ns.saturating_sub(1)).unwrap_or(0),
                replayed: 0,
            },
            req,
            ended: false,
            host: host.to_string(),
        }))
    }
    /// One GET on the engine's socket, the body left streaming; `Ok(None)` on 404.
    async fn get_raw(&self, id: &str, q: &str) -> Result<Option<hyper::body::Incoming>> {
        let err = |what: &str, cause: String| Error::Api {
            host: self.host().to_string(),
            what: format!("logs of {id}: {what}"),
            cause,
        };
        let request = hyper::Request::get(q)
            .header("Host", "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| err("request", e.to_string()))?;
        let host = self.host();
        let resp = if let Some(path) = host.strip_prefix("unix://") {
            let s = UnixStream::connect(path)
                .await
                .map_err(|e| err("connect", format!("{path}: {e}")))?;
            send(s, request).await
        } else {
            let addr = host
                .strip_prefix("tcp://")
                .or_else(|| host.strip_prefix("http://"))
                .unwrap_or(host);
            let s = TcpStream::connect(addr)
                .await
                .map_err(|e| err("connect", format!("{addr}: {e}")))?;
            send(s, request).await
        }
        .map_err(|e| err("request", e))?;
        match resp.status().as_u16() {
            200 => Ok(Some(resp.into_body())),
            404 => Ok(None),
            code => {
                let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                let text = body
                    .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                    .unwrap_or_default();
                Err(err("request", format!("HTTP {code}: {text}")))
            }
        }
    }

    /// The line whose chunks carry `ts_ns` (`chunks` of them as the follow stream gave it),
    /// read again from the end of the log store without following. Docker 20.10's follow
    /// stream can repeat a chunk of a long line when it reads at the end of a file being
    /// written (seen: one 16 KiB chunk twice, one follower in three); a plain read does not.
    ///
    /// The engine takes `tail` from the end of the whole log and only then applies `until`, so
    /// the window holds the whole line only if it also holds an older entry: without one the
    /// answer is `None` (not verified), never a line cut at the window's edge. A line worth
    /// checking was just written, near the end, so the first window is a few entries more
    /// than its chunks and a wider one is read only when that held nothing older: each read
    /// makes the engine decode and send the whole window, and a window of 64 entries among
    /// long lines is megabytes per check. A reader far behind the end reads a finished
    /// stretch of the file, which the follow stream does not garble; there the windows miss
    /// and the line stands as read.
    async fn line_at(
        &self,
        id: &str,
        stream: Stream,
        ts_ns: u64,
        chunks: u32,
    ) -> Result<Option<Vec<u8>>> {
        for extra in [8, 64] {
            let q = format!(
                "/v1.41/containers/{id}/logs?timestamps=1&{}=1&follow=0&until={}&tail={}",
                stream.as_str(),
                since_param(ts_ns),
                u64::from(chunks) + extra
            );
            let Some(mut body) = self.get_raw(id, &q).await? else {
                return Ok(None);
            };
            let mut raw = Vec::new();
            while let Some(f) = body.frame().await {
                let f = f.map_err(|e| Error::Api {
                    host: self.host().to_string(),
                    what: format!("logs of {id}"),
                    cause: e.to_string(),
                })?;
                if let Ok(d) = f.into_data() {
                    raw.extend_from_slice(&d);
                }
            }
            match line_in(&raw, ts_ns) {
                Found::Line(l) => return Ok(Some(l)),
                Found::NothingOlder => {}
                Found::NoEnd => return Ok(None),
            }
        }
        Ok(None)
    }
}

/// What a window of the log store says about one line.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// The whole line: the window holds an entry older than it, and its last chunk.
    Line(Vec<u8>),
    /// Nothing older than the line: its first chunks may be outside the window.
    NothingOlder,
    /// An older entry, but not the line's last chunk.
    NoEnd,
}

/// The line with timestamp `ts_ns` in a multiplexed log.
fn line_in(raw: &[u8], ts_ns: u64) -> Found {
    let mut older = false;
    let mut line = Vec::new();
    for payload in split_frames(raw) {
        let (ts, content) = split_ts(payload);
        if ts < ts_ns {
            older = true;
        } else if ts == ts_ns && older {
            match content.strip_suffix(b"\n") {
                Some(c) => {
                    line.extend_from_slice(c);
                    return Found::Line(line);
                }
                None => line.extend_from_slice(content),
            }
        }
    }
    if older {
        Found::NoEnd
    } else {
        Found::NothingOlder
    }
}

async fn send<S>(
    s: S,
    req: hyper::Request<Empty<Bytes>>,
) -> std::result::Result<hyper::Response<hyper::body::Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| e.to_string())
}

impl LogReader {
    /// Frames the engine sent twice and that were dropped (a Docker json-file follow quirk).
    pub fn replayed(&self) -> u64 {
        self.joiner.replayed
    }

    /// Joined lines whose chunks the follow stream got wrong, replaced by a plain read.
    pub fn repaired(&self) -> u64 {
        self.repaired
    }

    /// The next record; `Ok(None)` at the end of the stream (the container stopped, or not
    /// following and everything was read).
    pub async fn next(&mut self) -> Result<Option<LogRecord>> {
        loop {
            if let Some(mut r) = self.joiner.ready.pop_front() {
                // A joined line with a repeated chunk is read again without following (see
                // `Engine::line_at`); a line split into parts is not (its parts are out).
                if r.repeated && r.part == 0 && r.newline && !self.tty && self.running {
                    if let Some(b) = self
                        .engine
                        .line_at(&self.req.id, self.req.stream, r.ts_ns, r.chunks)
                        .await?
                    {
                        if b != r.bytes && b.len() <= self.joiner.max {
                            self.repaired += 1;
                            r.bytes = b;
                        }
                    }
                }
                return Ok(Some(r));
            }
            if self.ended {
                return Ok(None);
            }
            if !self.parse_frames() {
                match self.body.frame().await {
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            if self.pos > 0 {
                                self.buf.drain(..self.pos);
                                self.pos = 0;
                            }
                            self.buf.extend_from_slice(&data);
                        }
                    }
                    Some(Err(e)) => {
                        return Err(Error::Api {
                            host: self.host.clone(),
                            what: format!("logs of {}", self.req.id),
                            cause: e.to_string(),
                        })
                    }
                    None => {
                        self.ended = true;
                        self.joiner.finish();
                    }
                }
            }
        }
    }

    /// Parses whole frames out of the buffer; false when more bytes are needed.
    fn parse_frames(&mut self) -> bool {
        let mut progressed = false;
        loop {
            let avail = &self.buf[self.pos..];
            let (start, end) = if self.tty {
                // Lines as they are: `TIMESTAMP SP bytes LF`.
                let Some(nl) = avail.iter().position(|&b| b == b'\n') else {
                    break;
                };
                (self.pos, self.pos + nl + 1)
            } else {
                if avail.len() < 8 {
                    break;
                }
                let len = u32::from_be_bytes([avail[4], avail[5], avail[6], avail[7]]) as usize;
                if avail.len() < 8 + len {
                    break;
                }
                (self.pos + 8, self.pos + 8 + len)
            };
            self.pos = end;
            progressed = true;
            self.joiner.chunk(&self.buf[start..end]);
        }
        progressed || !self.joiner.ready.is_empty()
    }
}

impl Joiner {
    /// The stream ended inside a line: the program wrote no final newline.
    fn finish(&mut self) {
        if let Some((ts, bytes, part, chunks)) = self.partial.take() {
            let repeated = std::mem::take(&mut self.repeated);
            self.emit(LogRecord {
                ts_ns: ts,
                bytes,
                part: if part > 0 { part + 1 } else { 0 },
                more: false,
                newline: false,
                chunks,
                repeated,
            });
        }
    }

    fn chunk(&mut self, payload: &[u8]) {
        let (ts, content) = split_ts(payload);
        // Within one stream the engine's timestamps only grow (a line's chunks share its first
        // one; two lines never get the same nanosecond). Docker 20.10's json-file follow reader
        // sometimes sends a stretch of the file again — seen starting in the middle of a chunked
        // line — so a frame not newer than the last record, or not of the line being joined, is
        // a replay and is dropped.
        match &self.partial {
            None if ts != 0 && ts <= self.last_ts => {
                self.replayed += 1;
                return;
            }
            Some((ts0, ..)) if ts != *ts0 => {
                if ts < *ts0 {
                    self.replayed += 1;
                    return;
                }
                // The rest of the joined line never came: keep what did, marked.
                self.finish();
            }
            _ => {}
        }
        let (content, complete) = match content.strip_suffix(b"\n") {
            Some(c) => (c, true),
            None => (content, false),
        };
        let max = self.max;
        let (ts0, mut bytes, mut part, mut chunks) = self
            .partial
            .take()
            .unwrap_or_else(|| (ts, Vec::new(), 0, 0));
        chunks += 1;
        // A chunk equal to an earlier one of the same line is worth a check: the follow stream
        // repeats one chunk, or a stretch of them (1 2 3 2 3 4), and a line can also repeat
        // itself. Lines in one chunk, nearly all of them, are not hashed.
        if chunks == 1 {
            self.chunk_sums.clear();
        }
        if chunks > 1 || !complete {
            let sum = (content.len(), crc32fast::hash(content));
            if self.chunk_sums.contains(&sum) {
                self.repeated = true;
            }
            self.chunk_sums.push(sum);
        }
        let mut rest = content;
        while bytes.len() + rest.len() > max || (bytes.len() == max && !rest.is_empty()) {
            let take = max - bytes.len();
            bytes.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            part += 1;
            self.emit(LogRecord {
                ts_ns: ts0,
                bytes: std::mem::take(&mut bytes),
                part,
                more: true,
                newline: true,
                chunks,
                repeated: false,
            });
        }
        bytes.extend_from_slice(rest);
        if complete {
            let repeated = std::mem::take(&mut self.repeated);
            self.emit(LogRecord {
                ts_ns: ts0,
                bytes,
                part: if part > 0 { part + 1 } else { 0 },
                more: false,
                newline: true,
                chunks,
                repeated,
            });
        } else {
            self.partial = Some((ts0, bytes, part, chunks));
        }
    }

    /// Queues a record unless it is one of the `skip` already taken at the resume timestamp.
    fn emit(&mut self, r: LogRecord) {
        self.last_ts = self.last_ts.max(r.ts_ns);
        if let Some(s) = self.since {
            if r.ts_ns < s.ts_ns {
                return;
            }
            if r.ts_ns == s.ts_ns && self.skipped < s.skip {
                self.skipped += 1;
                return;
            }
        }
        self.ready.push_back(r);
    }
}

/// The payloads of whole frames in a multiplexed stream.
fn split_frames(mut raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if raw.len() < 8 {
            return None;
        }
        let len = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) as usize;
        let p = raw.get(8..8 + len)?;
        raw = &raw[8 + len..];
        Some(p)
    })
}

/// `TIMESTAMP SP content` → (nanoseconds, content); 0 when there is no timestamp.
fn split_ts(payload: &[u8]) -> (u64, &[u8]) {
    let sp = payload
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(payload.len());
    let ts = std::str::from_utf8(&payload[..sp])
        .ok()
        .and_then(parse_ts)
        .unwrap_or(0);
    (ts, payload.get(sp + 1..).unwrap_or_default())
}

/// hyper's I/O traits over a tokio stream (hyper-util's `TokioIo`, written out so this crate
/// needs no hyper-util).
#[derive(Debug)]
struct TokioIo<T>(T);

impl<T: tokio::io::AsyncRead + Unpin> hyper::rt::Read for TokioIo<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // SAFETY: the uninitialised bytes are only handed to tokio's ReadBuf, which writes
        // before it reports them filled; `advance` is called with exactly that count.
        let n = unsafe {
            let mut tbuf = tokio::io::ReadBuf::uninit(buf.as_mut());
            match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.0), cx, &mut tbuf) {
                std::task::Poll::Ready(Ok(())) => tbuf.filled().len(),
                other => return other,
            }
        };
        // SAFETY: `n` bytes were just initialised by the read above.
        unsafe { buf.advance(n) };
        std::task::Poll::Ready(Ok(()))
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> hyper::rt::Write for TokioIo<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.0), cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut self.0), cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.0), cx)
    }
}

/// How long a caller should wait before reopening a stream that ended while its container
/// still looked running (the stop event is usually just behind).
pub const REOPEN_DELAY: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    struct Fed(Joiner, Vec<LogRecord>);

    impl Fed {
        fn feed(&mut self, payload: &[u8]) {
            self.0.chunk(payload);
            self.1.extend(self.0.ready.drain(..));
        }
    }

    fn reader(max: usize, since: Option<Since>) -> Fed {
        Fed(
            Joiner {
                max,
                since,
                partial: None,
                chunk_sums: Vec::new(),
                repeated: false,
                ready: VecDeque::new(),
                skipped: 0,
                last_ts: since.map(|s| s.ts_ns.saturating_sub(1)).unwrap_or(0),
                replayed: 0,
            },
            Vec::new(),
        )
    }

    #[test]
    fn joins_partial_chunks_under_the_first_timestamp() {
        let mut r = reader(1 << 20, None);
        r.feed(b"2026-12-04T18:00:00.000000001Z aaaa");
        r.feed(b"2026-12-04T18:00:00.000000001Z bbbb");
        r.feed(b"2026-12-04T18:00:00.000000001Z cc\n");
        r.feed(b"2026-12-04T18:00:00.000000002Z next\n");
        assert_eq!(r.1.len(), 2);
        assert_eq!(r.1[0].bytes, b"aaaabbbbcc");
        assert_eq!(r.1[0].part, 0);
        assert_eq!(r.1[1].bytes, b"next");
        assert_eq!(r.1[1].ts_ns - r.1[0].ts_ns, 1);
    }

    #[test]
    fn a_chunk_equal_to_any_earlier_one_of_its_line_marks_it_for_a_check() {
        let mut r = reader(1 << 20, None);
        // Distinct chunks: no check.
        r.feed(b"2026-12-04T18:00:00.000000001Z aaaa");
        r.feed(b"2026-12-04T18:00:00.000000001Z bbbb");
        r.feed(b"2026-12-04T18:00:00.000000001Z cc\n");
        // A stretch sent again (1 2 3 2 3 4), not one chunk twice in a row.
        for c in [&b"dddd"[..], b"eeee", b"ffff", b"eeee", b"ffff", b"gg\n"] {
            let mut f = b"2026-12-04T18:00:00.000000002Z ".to_vec();
            f.extend_from_slice(c);
            r.feed(&f);
        }
        // One chunk twice in a row.
        r.feed(b"2026-12-04T18:00:00.000000003Z hhhh");
        r.feed(b"2026-12-04T18:00:00.000000003Z hhhh");
        r.feed(b"2026-12-04T18:00:00.000000003Z i\n");
        // The next line's chunks are compared with its own only.
        r.feed(b"2026-12-04T18:00:00.000000004Z hhhh");
        r.feed(b"2026-12-04T18:00:00.000000004Z j\n");
        let marks: Vec<bool> = r.1.iter().map(|x| x.repeated).collect();
        assert_eq!(marks, vec![false, true, true, false]);
    }

    #[test]
    fn splits_long_lines_into_marked_parts() {
        let mut r = reader(4, None);
        r.feed(b"2026-12-04T18:00:00Z 0123456789\n");
        let parts: Vec<_> =
            r.1.iter()
                .map(|x| (x.bytes.clone(), x.part, x.more))
                .collect();
        assert_eq!(
            parts,
            vec![
                (b"0123".to_vec(), 1, true),
                (b"4567".to_vec(), 2, true),
                (b"89".to_vec(), 3, false)
            ]
        );
        let mut r = reader(4, None);
        r.feed(b"2026-12-04T18:00:00Z 0123\n");
        assert_eq!(r.1.len(), 1);
        assert_eq!(r.1[0].part, 0);
    }

    #[test]
    fn drops_frames_the_engine_sends_again() {
        let mut r = reader(1 << 20, None);
        r.feed(b"2026-12-04T18:00:00.000000001Z aaaa");
        r.feed(b"2026-12-04T18:00:00.000000001Z bb\n");
        r.feed(b"2026-12-04T18:00:00.000000002Z c\n");
        // Replayed from the middle of the first line.
        r.feed(b"2026-12-04T18:00:00.000000001Z bb\n");
        r.feed(b"2026-12-04T18:00:00.000000002Z c\n");
        r.feed(b"2026-12-04T18:00:00.000000003Z d\n");
        let got: Vec<_> = r.1.iter().map(|x| x.bytes.clone()).collect();
        assert_eq!(got, vec![b"aaaabb".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        assert_eq!(r.0.replayed, 2);
    }

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut raw = Vec::new();
        for p in payloads {
            raw.extend_from_slice(&[1, 0, 0, 0]);
            raw.extend_from_slice(&(p.len() as u32).to_be_bytes());
            raw.extend_from_slice(p);
        }
        raw
    }

    #[test]
    fn a_line_read_again_counts_only_with_its_first_chunk() {
        let t = parse_ts("2026-12-04T18:00:00.000000002Z").unwrap();
        let whole = framed(&[
            b"2026-12-04T18:00:00.000000001Z before\n",
            b"2026-12-04T18:00:00.000000002Z aa",
            b"2026-12-04T18:00:00.000000002Z aa",
            b"2026-12-04T18:00:00.000000002Z b\n",
        ]);
        assert_eq!(line_in(&whole, t), Found::Line(b"aaaab".to_vec()));
        // The engine's `tail` window began inside the line: its first chunk may be missing.
        let cut = framed(&[
            b"2026-12-04T18:00:00.000000002Z aa",
            b"2026-12-04T18:00:00.000000002Z b\n",
        ]);
        assert_eq!(line_in(&cut, t), Found::NothingOlder);
        // The line's last chunk is not in the log yet.
        let open = framed(&[
            b"2026-12-04T18:00:00.000000001Z before\n",
            b"2026-12-04T18:00:00.000000002Z aa",
        ]);
        assert_eq!(line_in(&open, t), Found::NoEnd);
    }

    #[test]
    fn skips_what_was_taken_at_the_resume_timestamp() {
        let t = parse_ts("2026-12-04T18:00:00.5Z").unwrap();
        // Two parts of a split line were taken; the third and the next line were not.
        let mut r = reader(4, Some(Since { ts_ns: t, skip: 2 }));
        r.feed(b"2026-12-04T18:00:00.4Z old\n");
        r.feed(b"2026-12-04T18:00:00.5Z 0123");
        r.feed(b"2026-12-04T18:00:00.5Z 456789\n");
        r.feed(b"2026-12-04T18:00:00.6Z d\n");
        let got: Vec<_> = r.1.iter().map(|x| (x.bytes.clone(), x.part)).collect();
        assert_eq!(got, vec![(b"89".to_vec(), 3), (b"d".to_vec(), 0)]);
        assert_eq!(since_param(t), "1796407200.500000000");
    }
}
