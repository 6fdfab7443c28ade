//! The disk spool between the log readers and the sink, and the checkpoints that go with it.
//!
//! Records are appended to segment files (`seg-NNNNNNNNNNNN.log`, each record `len u32 LE,
//! crc32 u32 LE, postcard bytes`) in batches, each batch fsync'd before the readers' positions
//! count as taken: the segment append is the commit. A reader's checkpoint (timestamp, records
//! taken at that timestamp, sequence number) is therefore "checkpoints.json, then every record
//! still in a segment", rebuilt by scanning at start, and checkpoints.json is rewritten before
//! any segment is deleted. A torn record at the end of the last segment (kill -9 mid-write) is
//! cut off at start.
//!
//! The sender takes records from a read position and reports acknowledged positions; the
//! acknowledged position (`ack.json`) is persisted after the sink acknowledged, so a restart
//! resends what the sink may not have (at-least-once, never less). Segments wholly behind it are
//! deleted. The spool is bounded: when the next batch would pass `max_bytes`, the writer either
//! waits for the sender (`block`: the readers stop reading, the Engine keeps the lines) or deletes
//! the oldest segment (`drop-oldest`), counting every record in it the sender had not taken.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::record::{Record, Source};
use crate::{io_err, Error, Result};

/// What the writer does when the spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    Block,
    DropOldest,
}

/// A position in the spool: the record at byte `off` of segment `seg`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Pos {
    pub seg: u64,
    pub off: u64,
}

/// Where one (container, stream) reader has got to.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub name: String,
    /// The engine timestamp of the last record taken.
    pub ts_ns: u64,
    /// How many records with exactly that timestamp were taken.
    pub at_ts: u64,
    /// The last sequence number given out.
    pub seq: u64,
    /// The container's `StartedAt` when its stream was read to the end after it stopped:
    /// nothing more to read until it starts again.
    #[serde(default)]
    pub drained: Option<String>,
}

impl Checkpoint {
    /// Advances over one record.
    pub fn take(&mut self, ts_ns: u64, seq: u64) {
        if ts_ns == self.ts_ns {
            self.at_ts += 1;
        } else {
            self.ts_ns = ts_ns;
            self.at_ts = 1;
        }
        self.seq = seq;
    }
}

/// Key of a checkpoint: `ID/stdout` or `ID/stderr`.
pub fn key(id: &str, source: Source) -> String {
    format!("{id}/{}", source.as_str())
}

#[derive(Debug, Clone, Copy, Default)]
struct Seg {
    bytes: u64,
    records: u64,
}

/// Counters kept across restarts (`counters.json`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub spooled: u64,
    pub acked: u64,
    pub dropped: u64,
    pub drops: u64,
}

#[derive(Debug)]
struct Inner {
    segs: BTreeMap<u64, Seg>,
    tail: Option<File>,
    tail_id: u64,
    /// Next record the sender takes, and how many records of its segment precede it.
    read: Pos,
    read_index: u64,
    acked: Pos,
    checkpoints: BTreeMap<String, Checkpoint>,
    counters: Counters,
    closed: bool,
    /// The sender's open segment, positioned at `read`: reopening and refilling a buffer on
    /// every `take` copied the segment's next 256 KiB per call, most of the shipper's CPU.
    cursor: Option<Cursor>,
}

/// A buffered reader of segment `seg`, at byte `off` of it.
#[derive(Debug)]
struct Cursor {
    seg: u64,
    off: u64,
    rd: std::io::BufReader<File>,
}

/// The spool directory of one shipper.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    seg_bytes: u64,
    when_full: WhenFull,
    inner: Mutex<Inner>,
    /// The acknowledged position as `ack.json` last holds it; the lock orders those writes.
    ack_file: Mutex<Pos>,
    space: Condvar,
    /// Wakes the sender when records arrive.
    pub arrived: tokio::sync::Notify,
    log: crate::Log,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

const HEADER: usize = 8;
/// The largest record the spool accepts (a record is at most `--max-record` plus metadata).
const MAX_FRAME: u32 = 64 << 20;

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("seg-{id:012}.log"))
}

/// Writes `name` in `dir` atomically and durably: temp file, fsync, rename, fsync of the dir.
pub fn write_durable(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_data().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| io_err(&dst, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Spool {
            path: path.display().to_string(),
            cause: format!("not valid JSON: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Encodes one record as a spool frame.
fn frame(r: &Record) -> Vec<u8> {
    let body = postcard::to_allocvec(r).expect("postcard encodes plain data");
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads the frame at the reader's position: `Ok(None)` at a clean end, `Err` on a torn or
/// corrupt frame.
fn read_frame(f: &mut impl Read) -> std::result::Result<Option<(Record, u64)>, String> {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match f.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("torn record header".into()),
            Ok(n) => got += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_FRAME {
        return Err(format!("record length {len} is past the limit"));
    }
    let mut body = vec![0u8; len as usize];
    f.read_exact(&mut body)
        .map_err(|_| "torn record".to_string())?;
    if crc32fast::hash(&body) != crc {
        return Err("record checksum mismatch".into());
    }
    let r: Record = postcard::from_bytes(&body).map_err(|e| format!("undecodable record: {e}"))?;
    Ok(Some((r, HEADER as u64 + u64::from(len))))
}

impl Spool {
    /// Opens (or creates) the spool in `dir` and rebuilds the checkpoints from it.
    pub fn open(dir: &Path, max_bytes: u64, when_full: WhenFull, log: crate::Log) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut checkpoints: BTreeMap<String, Checkpoint> =
            read_json(&dir.join("checkpoints.json"))?;
        let counters: Counters = read_json(&dir.join("counters.json"))?;
        let acked: Pos = read_json(&dir.join("ack.json"))?;
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| io_err(dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let mut segs = BTreeMap::new();
        let last = ids.last().copied();
        for id in ids {
            let path = seg_path(dir, id);
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))?;
            let mut rd = std::io::BufReader::new(&mut f);
            let mut seg = Seg::default();
            loop {
                match read_frame(&mut rd) {
                    Ok(None) => break,
                    Ok(Some((r, n))) => {
                        seg.bytes += n;
                        seg.records += 1;
                        if r.source != Source::Devlog {
                            let c = checkpoints.entry(key(&r.id, r.source)).or_default();
                            c.name.clone_from(&r.name);
                            c.take(r.ts_ns, r.seq);
                            c.drained = None;
                        }
                    }
                    Err(cause) if Some(id) == last => {
                        log(&format!(
                            "{}: cutting a torn record at byte {} ({cause}; the shipper was killed mid-write, the record is read again from the engine)",
                            path.display(),
                            seg.bytes
                        ));
                        drop(rd);
                        f.set_len(seg.bytes).map_err(|e| io_err(&path, e))?;
                        f.sync_all().map_err(|e| io_err(&path, e))?;
                        break;
                    }
                    Err(cause) => {
                        return Err(Error::Spool {
                            path: path.display().to_string(),
                            cause: format!("{cause} at byte {}", seg.bytes),
                        })
                    }
                }
            }
            segs.insert(id, seg);
        }
        let tail_id = segs.keys().next_back().copied().unwrap_or(1);
        // The sender starts where the sink last acknowledged (or at the oldest segment kept).
        let mut read = acked;
        if !segs.contains_key(&read.seg) {
            read = Pos {
                seg: segs
                    .range(read.seg..)
                    .next()
                    .map(|(k, _)| *k)
                    .unwrap_or(tail_id),
                off: 0,
            };
        }
        let read_index = count_before(dir, read)?;
        let seg_bytes = (max_bytes / 8).clamp(64 << 10, 64 << 20);
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            seg_bytes,
            when_full,
            inner: Mutex::new(Inner {
                segs,
                tail: None,
                tail_id,
                read,
                read_index,
                acked: read,
                checkpoints,
                counters,
                closed: false,
                cursor: None,
            }),
            ack_file: Mutex::new(acked),
            space: Condvar::new(),
            arrived: tokio::sync::Notify::new(),
            log,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checkpoints as of the last durable append.
    pub fn checkpoints(&self) -> BTreeMap<String, Checkpoint> {
        self.lock().checkpoints.clone()
    }

    /// Marks a stream as read to its end for the container run that started at `started_at`.
    pub fn mark_drained(&self, key: &str, name: &str, started_at: &str) -> Result<()> {
        let mut g = self.lock();
        let c = g.checkpoints.entry(key.to_string()).or_default();
        c.name = name.to_string();
        c.drained = Some(started_at.to_string());
        self.save_checkpoints(&g)
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// Bytes in segments, records not yet acknowledged, segments.
    pub fn usage(&self) -> (u64, u64, usize) {
        let g = self.lock();
        let bytes = g.segs.values().map(|s| s.bytes).sum();
        (
            bytes,
            g.counters
                .spooled
                .saturating_sub(g.counters.acked + g.counters.dropped),
            g.segs.len(),
        )
    }

    fn save_checkpoints(&self, g: &Inner) -> Result<()> {
        let b = serde_json::to_vec_pretty(&g.checkpoints).expect("JSON of plain data");
        write_durable(&self.dir, "checkpoints.json", &b)
    }

    fn save_counters(&self, g: &Inner) -> Result<()> {
        let b = serde_json::to_vec_pretty(&g.counters).expect("JSON of plain data");
        write_durable(&self.dir, "counters.json", &b)
    }

    /// Stops a writer waiting for space (shutdown).
    pub fn close(&self) {
        self.lock().closed = true;
        self.space.notify_all();
    }

    /// Appends a batch durably; returns when it is fsync'd. Blocks while the spool is full in
    /// `block` mode.
    pub fn append(&self, batch: &[Record]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let frames: Vec<Vec<u8>> = batch.iter().map(frame).collect();
        let size: u64 = frames.iter().map(|f| f.len() as u64).sum();
        let mut g = self.lock();
        loop {
            let used: u64 = g.segs.values().map(|s| s.bytes).sum();
            if used == 0 || used + size <= self.max_bytes {
                break;
            }
            match self.when_full {
                WhenFull::Block => {
                    if g.closed {
                        return Err(Error::Closed);
                    }
                    g = self
                        .space
                        .wait_timeout(g, Duration::from_millis(200))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                WhenFull::DropOldest => {
                    if g.segs.len() <= 1 {
                        // Only the segment being written: start a new one so the old one can go.
                        self.rotate(&mut g)?;
                    }
                    self.drop_oldest(&mut g)?;
                }
            }
        }
        if g.tail.is_none()
            || g.segs
                .get(&g.tail_id)
                .is_some_and(|s| s.bytes >= self.seg_bytes)
        {
            if g.tail.is_some() {
                self.rotate(&mut g)?;
            } else {
                let id = g.tail_id;
                let path = seg_path(&self.dir, id);
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io_err(&path, e))?;
                g.tail = Some(f);
                g.segs.entry(id).or_default();
            }
        }
        let id = g.tail_id;
        let path = seg_path(&self.dir, id);
        // The write and fsync happen outside the lock, so the sender's takes and acks do not
        // wait for the disk: only this thread appends (and rotates or drops segments), and the
        // sender reads a segment only up to `seg.bytes`, which counts the batch once it is
        // durable.
        let mut f = g.tail.take().expect("tail opened above");
        drop(g);
        let mut all = Vec::with_capacity(size as usize);
        for fr in &frames {
            all.extend_from_slice(fr);
        }
        f.write_all(&all).map_err(|e| io_err(&path, e))?;
        f.sync_data().map_err(|e| io_err(&path, e))?;
        let mut g = self.lock();
        g.tail = Some(f);
        let seg = g.segs.entry(id).or_default();
        seg.bytes += size;
        seg.records += batch.len() as u64;
        g.counters.spooled += batch.len() as u64;
        for r in batch {
            if r.source != Source::Devlog {
                let c = g.checkpoints.entry(key(&r.id, r.source)).or_default();
                c.name.clone_from(&r.name);
                c.take(r.ts_ns, r.seq);
                c.drained = None;
            }
        }
        drop(g);
        self.arrived.notify_one();
        Ok(())
    }

    fn rotate(&self, g: &mut Inner) -> Result<()> {
        let id = g.tail_id + 1;
        let path = seg_path(&self.dir, id);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&self.dir, e))?;
        g.tail = Some(f);
        g.tail_id = id;
        g.segs.insert(id, Seg::default());
        Ok(())
    }

    fn drop_oldest(&self, g: &mut Inner) -> Result<()> {
        let Some((&id, &seg)) = g.segs.iter().next() else {
            return Ok(());
        };
        if id == g.tail_id {
            return Ok(());
        }
        // Records the sender already took are its to deliver (it resends them from memory);
        // the rest of the segment is lost, and counted.
        let lost = if g.read.seg > id {
            0
        } else if g.read.seg == id {
            seg.records - g.read_index
        } else {
            seg.records
        };
        self.save_checkpoints(g)?;
        let path = seg_path(&self.dir, id);
        std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        g.segs.remove(&id);
        if g.read.seg <= id {
            let next = g.segs.keys().next().copied().unwrap_or(g.tail_id);
            g.read = Pos { seg: next, off: 0 };
            g.read_index = 0;
        }
        g.counters.dropped += lost;
        g.counters.drops += 1;
        self.save_counters(g)?;
        (self.log)(&format!(
            "spool full ({} bytes max, --when-full drop-oldest): dropped {lost} records (segment {id}); {} dropped in all",
            self.max_bytes, g.counters.dropped
        ));
        Ok(())
    }

    /// Takes up to `max` records (and `max_bytes` of payload) after the read position, each with
    /// the position just after it.
    pub fn take(&self, max: usize, max_bytes: usize) -> Result<Vec<(Pos, Record)>> {
        let mut g = self.lock();
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < max && bytes < max_bytes {
            let Some(seg) = g.segs.get(&g.read.seg).copied() else {
                // Dropped or deleted under the reader: go on at the next one kept.
                match g.segs.range(g.read.seg..).next() {
                    Some((&k, _)) => {
                        g.read = Pos { seg: k, off: 0 };
                        g.read_index = 0;
                        continue;
                    }
                    None => break,
                }
            };
            if g.read.off >= seg.bytes {
                if g.read.seg < g.tail_id {
                    let next = g.segs.range(g.read.seg + 1..).next().map(|(k, _)| *k);
                    if let Some(k) = next {
                        g.read = Pos { seg: k, off: 0 };
                        g.read_index = 0;
                        continue;
                    }
                }
                break;
            }
            let path = seg_path(&self.dir, g.read.seg);
            let read = g.read;
            let mut cur = match g.cursor.take() {
                Some(c) if c.seg == read.seg && c.off == read.off => c,
                _ => {
                    let mut f = File::open(&path).map_err(|e| io_err(&path, e))?;
                    f.seek(SeekFrom::Start(read.off))
                        .map_err(|e| io_err(&path, e))?;
                    Cursor {
                        seg: read.seg,
                        off: read.off,
                        rd: std::io::BufReader::with_capacity(256 << 10, f),
                    }
                }
            };
            // A batch counts in `seg.bytes` once it is written and fsync'd; the file may already
            // hold the next one past it (the writer appends outside the lock). Frames are taken
            // only below `seg.bytes`; bytes the buffer read ahead of it stay valid (segments are
            // append-only) and are decoded once they count.
            while out.len() < max && bytes < max_bytes && cur.off < seg.bytes {
                match read_frame(&mut cur.rd) {
                    Ok(Some((r, n))) => {
                        cur.off += n;
                        g.read.off = cur.off;
                        g.read_index += 1;
                        bytes += r.msg.len();
                        out.push((g.read, r));
                    }
                    Ok(None) => {
                        return Err(Error::Spool {
                            path: path.display().to_string(),
                            cause: format!(
                                "the segment ends at byte {}, {} were written",
                                cur.off, seg.bytes
                            ),
                        })
                    }
                    Err(cause) => {
                        return Err(Error::Spool {
                            path: path.display().to_string(),
                            cause: format!("{cause} at byte {}", g.read.off),
                        })
                    }
                }
            }
            g.cursor = Some(cur);
            if out.len() >= max || bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Writes `ack.json` if `pos` is not what it holds.
    fn write_ack(&self, pos: Pos) -> Result<()> {
        let mut last = self.ack_file.lock().unwrap_or_else(|p| p.into_inner());
        if *last != pos {
            let b = serde_json::to_vec(&pos).expect("JSON of plain data");
            write_durable(&self.dir, "ack.json", &b)?;
            *last = pos;
        }
        Ok(())
    }

    /// Persists the acknowledged position (the pipeline calls this every 100 ms, off the
    /// sender's task: a position older than the sink's only means records sent again).
    pub fn save_ack(&self) -> Result<()> {
        let pos = self.lock().acked;
        self.write_ack(pos)
    }

    /// Records that the sink acknowledged everything before `pos` (`n` more records). Deletes
    /// segments wholly behind it, after persisting the position; otherwise persists it only
    /// if `force` (see [`Spool::save_ack`]).
    pub fn ack(&self, pos: Pos, n: u64, force: bool) -> Result<()> {
        let mut g = self.lock();
        if pos > g.acked {
            g.acked = pos;
        }
        g.counters.acked += n;
        let behind: Vec<u64> = g
            .segs
            .keys()
            .copied()
            .filter(|&k| k < g.acked.seg && k != g.tail_id)
            .collect();
        if force || !behind.is_empty() {
            self.write_ack(g.acked)?;
        }
        if !behind.is_empty() {
            self.save_checkpoints(&g)?;
            self.save_counters(&g)?;
            for k in behind {
                let path = seg_path(&self.dir, k);
                std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
                g.segs.remove(&k);
            }
            drop(g);
            self.space.notify_all();
        }
        Ok(())
    }

    /// Persists everything (shutdown).
    pub fn flush(&self) -> Result<()> {
        let g = self.lock();
        self.write_ack(g.acked)?;
        self.save_checkpoints(&g)?;
        self.save_counters(&g)
    }

    /// The sender lost its connection: records it took but that were not acknowledged are
    /// taken again from the acknowledged position.
    pub fn rewind(&self) -> Result<()> {
        let mut g = self.lock();
        let acked = g.acked;
        if g.segs.contains_key(&acked.seg) {
            g.read = acked;
            g.read_index = count_before(&self.dir, acked)?;
        }
        Ok(())
    }
}

/// How many records precede `pos` in its segment.
fn count_before(dir: &Path, pos: Pos) -> Result<u64> {
    if pos.off == 0 {
        return Ok(0);
    }
    let path = seg_path(dir, pos.seg);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(&path, e)),
    };
    let mut rd = std::io::BufReader::new(f.take(pos.off));
    let mut n = 0;
    while let Ok(Some(_)) = read_frame(&mut rd) {
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn rec(seq: u64, ts: u64) -> Record {
        Record {
            id: "c1".into(),
            name: "n".into(),
            image: "i".into(),
            service: None,
            task: None,
            source: Source::Stdout,
            pri: None,
            ts_ns: ts,
            seq,
            part: 0,
            more: false,
            no_newline: false,
            pid: None,
            msg: vec![b'x'; 1000],
        }
    }

    fn quiet() -> crate::Log {
        Arc::new(|_: &str| {})
    }

    #[test]
    fn checkpoints_survive_a_torn_tail_and_acks_resume() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(d.path(), 1 << 30, WhenFull::Block, quiet()).unwrap();
            s.append(&[rec(1, 10), rec(2, 10), rec(3, 11)]).unwrap();
            let got = s.take(2, usize::MAX).unwrap();
            assert_eq!(got.len(), 2);
            s.ack(got[1].0, 2, true).unwrap();
        }
        // A torn record at the end, as a kill -9 mid-write leaves it.
        let seg = seg_path(d.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&frame(&rec(4, 12))[..20]).unwrap();
        let s = Spool::open(d.path(), 1 << 30, WhenFull::Block, quiet()).unwrap();
        let c = &s.checkpoints()["c1/stdout"];
        assert_eq!((c.ts_ns, c.at_ts, c.seq), (11, 1, 3));
        let got = s.take(10, usize::MAX).unwrap();
        assert_eq!(got.iter().map(|g| g.1.seq).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn drop_oldest_counts_exactly() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path(), 256 << 10, WhenFull::DropOldest, quiet()).unwrap();
        let mut seq = 0;
        for _ in 0..100 {
            let batch: Vec<_> = (0..10)
                .map(|_| {
                    seq += 1;
                    rec(seq, seq)
                })
                .collect();
            s.append(&batch).unwrap();
        }
        let mut got = 0;
        loop {
            let t = s.take(1000, usize::MAX).unwrap();
            if t.is_empty() {
                break;
            }
            got += t.len() as u64;
        }
        let c = s.counters();
        assert!(c.dropped > 0);
        assert_eq!(got + c.dropped, 1000);
    }
}
