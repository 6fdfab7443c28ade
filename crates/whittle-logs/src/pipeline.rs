//! The part `ship` and `devlog` share: a writer thread that commits records to the spool in
//! batches (one fsync per batch, however many records arrived meanwhile), a sender that keeps a
//! window of records in flight to the sink and resends them after a reconnect, and the
//! `status.json` that `logs status` reads.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::record::{hostname, Record};
use crate::sink::{Conn, Target};
use crate::spool::{Pos, Spool, WhenFull};
use crate::{Error, Log, Result};

/// What goes through the writer, in order.
#[derive(Debug)]
pub enum Item {
    /// A record and its share of the in-memory byte budget (released once it is spooled).
    Record(Record, Option<tokio::sync::OwnedSemaphorePermit>),
    /// A stream was read to its end for the run that started at `started_at` (persisted after
    /// every record before it).
    Drained {
        key: String,
        name: String,
        started_at: String,
    },
}

/// Settings shared by `ship` and `devlog`.
#[derive(Debug, Clone)]
pub struct Options {
    pub to: Target,
    pub spool_dir: PathBuf,
    pub spool_max: u64,
    pub when_full: WhenFull,
    /// Records in flight to the sink before waiting for acknowledgements.
    pub window: usize,
    /// File sink: rotate past this size.
    pub rotate_bytes: u64,
}

/// One stream a shipper reads, for `logs status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamStatus {
    pub name: String,
    pub active: bool,
    pub records: u64,
    pub last_ts: Option<String>,
}

/// What `status.json` holds besides the spool's own counters.
#[derive(Debug, Default, serde::Serialize)]
pub struct Shared {
    pub sink_up: bool,
    pub sink_error: Option<String>,
    pub connected_at: Option<String>,
    pub reconnects: u64,
    pub resent: u64,
    pub read: u64,
    pub streams: BTreeMap<String, StreamStatus>,
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    pub tx: mpsc::Sender<Item>,
    /// Bytes of records between the readers and the spool, in KiB: readers wait for permits, so
    /// memory stays bounded whatever the line lengths.
    pub budget: Arc<tokio::sync::Semaphore>,
    pub spool: Arc<Spool>,
    pub shared: Arc<Mutex<Shared>>,
    writer: Option<std::thread::JoinHandle<()>>,
    sender: tokio::task::JoinHandle<Result<()>>,
    stop: watch::Sender<bool>,
    /// Set when the writer failed: the process must stop (and be restarted) rather than read on.
    pub failed: watch::Receiver<Option<String>>,
    status: tokio::task::JoinHandle<()>,
    acks: tokio::task::JoinHandle<()>,
}

impl Pipeline {
    /// Opens the spool and starts the writer, the sender and the status file (on the current
    /// tokio runtime).
    pub fn start(opts: &Options, log: Log) -> Result<Self> {
        let spool = Arc::new(Spool::open(
            &opts.spool_dir,
            opts.spool_max,
            opts.when_full,
            log.clone(),
        )?);
        let (tx, rx) = mpsc::channel::<Item>(4096);
        let (fail_tx, failed) = watch::channel(None);
        let wspool = spool.clone();
        let wlog = log.clone();
        let writer = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || {
                if let Err(e) = write_loop(rx, &wspool) {
                    if !matches!(e, Error::Closed) {
                        wlog(&format!("stopping: the spool cannot be written: {e}"));
                        let _ = fail_tx.send(Some(e.to_string()));
                    }
                }
            })
            .map_err(|e| Error::Usage(format!("cannot start the spool writer: {e}")))?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (stop, stop_rx) = watch::channel(false);
        let sender = tokio::spawn(send_loop(
            spool.clone(),
            opts.clone(),
            shared.clone(),
            log.clone(),
            stop_rx.clone(),
        ));
        let status = tokio::spawn(status_loop(
            spool.clone(),
            opts.clone(),
            shared.clone(),
            stop_rx.clone(),
        ));
        let acks = tokio::spawn(ack_loop(spool.clone(), log.clone(), stop_rx));
        Ok(Self {
            tx,
            budget: Arc::new(tokio::sync::Semaphore::new(BUDGET_KIB)),
            spool,
            shared,
            writer: Some(writer),
            sender,
            stop,
            failed,
            status,
            acks,
        })
    }

    /// Stops: the writer commits what reached it, the sender waits briefly for outstanding
    /// acknowledgements, everything is persisted. Readers must be stopped first (their records
    /// not yet committed are read again next time from the checkpoints).
    pub async fn shutdown(mut self) -> Result<()> {
        drop(self.tx);
        // A writer waiting for space gives up (its records are read again next time).
        self.spool.close();
        if let Some(w) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        let _ = self.stop.send(true);
        let sent = self.sender.await;
        let _ = self.status.await;
        let _ = self.acks.await;
        write_status(&self.spool, "", &self.shared, false);
        self.spool.flush()?;
        match sent {
            Ok(r) => r,
            Err(e) => Err(Error::Usage(format!("the sender stopped: {e}"))),
        }
    }
}

fn write_loop(mut rx: mpsc::Receiver<Item>, spool: &Spool) -> Result<()> {
    let mut batch = Vec::new();
    let mut marks = Vec::new();
    let mut permits = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut bytes = 0;
        let mut lingered = false;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Record(r, permit) => {
                    bytes += r.msg.len();
                    batch.push(r);
                    permits.push(permit);
                }
                Item::Drained {
                    key,
                    name,
                    started_at,
                } => marks.push((key, name, started_at)),
            }
            if batch.len() < 8192 && bytes < (4 << 20) {
                next = rx.try_recv().ok();
                if next.is_none() && !lingered {
                    lingered = true;
                    std::thread::sleep(LINGER);
                    next = rx.try_recv().ok();
                }
            }
        }
        spool.append(&batch)?;
        batch.clear();
        permits.clear();
        for (k, n, s) in marks.drain(..) {
            spool.mark_drained(&k, &n, &s)?;
        }
    }
    Ok(())
}

/// How long the writer waits for more records once the channel is empty, before it commits a
/// batch: at a steady trickle from many containers every line would otherwise be its own
/// batch, with its own fsync and its own wake-up of the sender; with it, 20 containers × 250
/// lines/s made about 85 fsyncs a second, for 5 ms of a latency budget of a second.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// The readers' in-memory budget: 8 MiB.
const BUDGET_KIB: usize = 8 << 10;

/// Waits for a record's share of the budget (at most the whole budget).
pub async fn permit(
    budget: &Arc<tokio::sync::Semaphore>,
    len: usize,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let kib = u32::try_from((len >> 10).clamp(1, BUDGET_KIB)).unwrap_or(1);
    budget.clone().acquire_many_owned(kib).await.ok()
}

struct Inflight {
    pos: Pos,
    rec: Record,
    txnr: u64,
}

const WINDOW_BYTES: usize = 8 << 20;

async fn send_loop(
    spool: Arc<Spool>,
    opts: Options,
    shared: Arc<Mutex<Shared>>,
    log: Log,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let host = hostname();
    let mut window: VecDeque<Inflight> = VecDeque::new();
    let mut down: Option<(Instant, String)> = None;
    let mut backoff = Duration::from_millis(100);
    // A sink that accepts the connection and then fails before acknowledging anything (a
    // full disk, a file that refuses fsync, a server that closes at once) is retried with the
    // same backoff as one that refuses to connect, and the same failure is logged once, then
    // counted every 30 s: not a reconnect loop writing a log line per attempt.
    let mut flapping: Option<(String, u64, Instant)> = None;
    let mut first = true;
    let set = |f: &dyn Fn(&mut Shared)| f(&mut shared.lock().unwrap_or_else(|p| p.into_inner()));
    'connect: loop {
        if *stop.borrow() {
            break;
        }
        let mut conn = match Conn::open(&opts.to, opts.rotate_bytes).await {
            Ok(c) => c,
            Err(e) => {
                if down.as_ref().map(|d| &d.1) != Some(&e) {
                    log(&format!(
                        "sink {} is down: {e}; records wait in the spool, retrying",
                        opts.to
                    ));
                }
                set(&|s| {
                    s.sink_up = false;
                    s.sink_error = Some(e.clone());
                });
                let since = down.take().map(|d| d.0).unwrap_or_else(Instant::now);
                down = Some((since, e));
                // Down, not flapping: its coming back is worth a line.
                flapping = None;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let resend = window.len();
        let after = down
            .take()
            .map(|(t, _)| format!(" after {:.1}s down", t.elapsed().as_secs_f64()))
            .unwrap_or_default();
        if flapping.is_none() {
            log(&format!(
                "sink {} connected{after}; resending {resend} unacknowledged records",
                opts.to
            ));
        }
        set(&|s| {
            s.sink_up = true;
            s.sink_error = None;
            s.connected_at = Some(crate::record::ts_nanos(crate::now_ns()));
            if !first {
                s.reconnects += 1;
            }
            s.resent += resend as u64;
        });
        first = false;
        let mut wbytes;
        let mut progressed = false;
        let broke: String = 'session: {
            for f in window.iter_mut() {
                match conn.send(&f.rec, &host).await {
                    Ok(t) => f.txnr = t,
                    Err(e) => break 'session e,
                }
            }
            wbytes = window.iter().map(|f| f.rec.msg.len()).sum();
            if let Err(e) = conn.flush().await {
                break 'session e;
            }
            loop {
                let room = opts.window.saturating_sub(window.len());
                // Refill in batches (a quarter of the window at least, or when it is empty),
                // not one record per acknowledgement.
                let can_take = room > 0
                    && (window.is_empty() || room >= (opts.window / 4).max(1))
                    && wbytes < WINDOW_BYTES;
                let mut sent = false;
                if can_take && !*stop.borrow() {
                    // Into the window first: a send that fails leaves them there for the resend.
                    let start = window.len();
                    for (pos, rec) in spool.take(room, WINDOW_BYTES - wbytes)? {
                        wbytes += rec.msg.len();
                        window.push_back(Inflight { pos, rec, txnr: 0 });
                    }
                    for f in window.iter_mut().skip(start) {
                        match conn.send(&f.rec, &host).await {
                            Ok(txnr) => {
                                f.txnr = txnr;
                                sent = true;
                            }
                            Err(e) => break 'session e,
                        }
                    }
                    if sent {
                        if let Err(e) = conn.flush().await {
                            break 'session e;
                        }
                    }
                }
                if conn.acks_on_flush() {
                    if let Some(last) = window.back() {
                        spool.ack(last.pos, window.len() as u64, false)?;
                        progressed = true;
                        window.clear();
                        wbytes = 0;
                    }
                    if *stop.borrow() {
                        break 'session String::new();
                    }
                    if !sent {
                        tokio::select! {
                            _ = spool.arrived.notified() => {}
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = stop.changed() => {}
                        }
                    }
                    continue;
                }
                if *stop.borrow() && window.is_empty() {
                    break 'session String::new();
                }
                let wait_more = can_take && !sent && !*stop.borrow();
                let ack = tokio::select! {
                    biased;
                    a = conn.ack() => Some(a),
                    _ = spool.arrived.notified(), if wait_more => None,
                    _ = stop.changed(), if !*stop.borrow() => None,
                    _ = tokio::time::sleep(Duration::from_secs(3)), if *stop.borrow() => {
                        break 'session "stopping with unacknowledged records (they are resent next time)".to_string();
                    }
                    _ = std::future::ready(()), if sent && can_take => None,
                };
                match ack {
                    None => {}
                    Some(Err(e)) => break 'session e,
                    Some(Ok(t)) => {
                        // Every acknowledgement already received is taken in one go: one spool
                        // update per wake-up, not per record.
                        let mut upto = t;
                        let mut broken = None;
                        while let Some(a) = conn.try_ack() {
                            match a {
                                Ok(t) => upto = t,
                                Err(e) => {
                                    broken = Some(e);
                                    break;
                                }
                            }
                        }
                        let mut n = 0;
                        let mut last = None;
                        while let Some(f) = window.pop_front() {
                            n += 1;
                            wbytes -= f.rec.msg.len();
                            last = Some(f.pos);
                            if f.txnr == upto {
                                break;
                            }
                        }
                        if let Some(p) = last {
                            spool.ack(p, n, false)?;
                            progressed = true;
                        }
                        if let Some(e) = broken {
                            break 'session e;
                        }
                    }
                }
            }
        };
        if *stop.borrow() && broke.is_empty() {
            conn.close().await;
            break 'connect;
        }
        let again = !progressed && flapping.as_ref().is_some_and(|f| f.0 == broke);
        if again {
            if let Some(f) = flapping.as_mut() {
                f.1 += 1;
                if f.2.elapsed() >= Duration::from_secs(30) {
                    log(&format!(
                        "sink {} connection lost {} more times in {:.0} s, acknowledging nothing: {broke}",
                        opts.to,
                        f.1,
                        f.2.elapsed().as_secs_f64()
                    ));
                    f.1 = 0;
                    f.2 = Instant::now();
                }
            }
        } else {
            log(&format!(
                "sink {} connection lost: {broke}; {} records in flight will be resent",
                opts.to,
                window.len()
            ));
            flapping = (!progressed).then(|| (broke.clone(), 0, Instant::now()));
        }
        set(&|s| {
            s.sink_up = false;
            s.sink_error = Some(broke.clone());
        });
        down = Some((Instant::now(), broke));
        if *stop.borrow() {
            break;
        }
        if progressed {
            backoff = Duration::from_millis(100);
        } else {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
    Ok(())
}

/// Persists the sink's acknowledged position every 100 ms, on a blocking thread: the fsyncs
/// stay off the sender's task, and a kill -9 resends at most the last 100 ms.
async fn ack_loop(spool: Arc<Spool>, log: Log, mut stop: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return,
        }
        let s = spool.clone();
        let r = tokio::task::spawn_blocking(move || s.save_ack()).await;
        match r {
            Ok(Err(e)) if !failing => {
                log(&format!(
                    "cannot save the acknowledged position: {e}; retrying"
                ));
                failing = true;
            }
            Ok(Ok(())) => failing = false,
            _ => {}
        }
    }
}

async fn status_loop(
    spool: Arc<Spool>,
    opts: Options,
    shared: Arc<Mutex<Shared>>,
    mut stop: watch::Receiver<bool>,
) {
    let to = opts.to.to_string();
    loop {
        write_status(&spool, &to, &shared, true);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Writes `status.json` (atomically; losing one to a crash costs nothing, so no fsync).
fn write_status(spool: &Spool, to: &str, shared: &Mutex<Shared>, running: bool) {
    let (bytes, pending, segments) = spool.usage();
    let c = spool.counters();
    let ckpts = spool.checkpoints();
    let s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let path = spool.dir().join("status.json");
    let old: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let to = if to.is_empty() {
        old["sink"].as_str().unwrap_or_default().to_string()
    } else {
        to.to_string()
    };
    let streams: serde_json::Map<String, serde_json::Value> = ckpts
        .iter()
        .map(|(k, cp)| {
            let st = s.streams.get(k);
            (
                k.clone(),
                serde_json::json!({
                    "name": cp.name,
                    "active": st.is_some_and(|x| x.active),
                    "seq": cp.seq,
                    "checkpoint_ts": crate::record::ts_nanos(cp.ts_ns),
                    "records_at_ts": cp.at_ts,
                    "drained": cp.drained.is_some(),
                }),
            )
        })
        .collect();
    let v = serde_json::json!({
        "pid": std::process::id(),
        "running": running,
        "updated": crate::record::ts_nanos(crate::now_ns()),
        "sink": to,
        "sink_up": s.sink_up && running,
        "sink_error": s.sink_error,
        "connected_at": s.connected_at,
        "reconnects": s.reconnects,
        "resent": s.resent,
        "read": s.read,
        "spooled": c.spooled,
        "shipped": c.acked,
        "dropped": c.dropped,
        "drop_events": c.drops,
        "pending": pending,
        "spool_bytes": bytes,
        "spool_segments": segments,
        "streams": streams,
    });
    let b = serde_json::to_vec_pretty(&v).expect("JSON of plain data");
    let tmp = spool.dir().join(".status.json.tmp");
    if std::fs::write(&tmp, b).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}
