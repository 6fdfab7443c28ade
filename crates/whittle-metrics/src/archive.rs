//! The metrics archive: append-only, checksummed, compressed frames of [`Snapshot`]s.
//!
//! Layout: `DIR/<start-ns>.wmarch`, one file per recorder run, names sorting in time order. Each
//! file starts with an 8-byte magic, then frames:
//!
//! ```text
//! "WMFR" kind:u8 seq:u64 key_seq:u64 time_ns:u64 len:u32 crc32:u32 payload[len]
//! ```
//! (little-endian; the CRC covers everything after the marker up to the CRC, then the payload).
//! The payload is a postcard-encoded snapshot, zstd-compressed. A *key* frame stands alone; a
//! *delta* frame is compressed with the uncompressed bytes of key frame `key_seq` as zstd's raw
//! dictionary, so an idle container costs a few bytes per interval. A delta depends only on its
//! key, never on the frame before it: a damaged frame loses itself (a damaged key, its minute).
//!
//! Crash safety: a frame is written with one `write` and `fdatasync`ed; a `kill -9` can leave at
//! most a torn last frame, which the reader reports and skips. The marker lets the reader find
//! the next frame after damage. Hand-written because no maintained crate offers checksummed,
//! dictionary-delta frames; the pieces (zstd, crc32fast, postcard) are crates.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::sample::Snapshot;
use crate::{io_err, Error, Result};

const FILE_MAGIC: &[u8; 8] = b"WHMARCH1";
const MARKER: &[u8; 4] = b"WMFR";
const HEADER: usize = 4 + 1 + 8 + 8 + 8 + 4 + 4;
const MAX_PAYLOAD: usize = 64 << 20;
/// A key frame every this many frames (a minute at the default interval).
pub const KEY_EVERY: u64 = 60;
const LEVEL: i32 = 6;
const KIND_KEY: u8 = 0;
const KIND_DELTA: u8 = 1;
pub const EXTENSION: &str = "wmarch";

/// Appends snapshots to a new archive file in a directory.
pub struct ArchiveWriter {
    path: PathBuf,
    file: File,
    seq: u64,
    /// The last key frame: its sequence number and a compressor with its bytes loaded as the
    /// dictionary (loaded once per key frame, not once per delta).
    key: Option<(u64, zstd::bulk::Compressor<'static>)>,
    bytes: u64,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ArchiveWriter({}, frame {})",
            self.path.display(),
            self.seq
        )
    }
}

impl ArchiveWriter {
    /// Creates `dir` if needed and a new file in it named after `start_ns`.
    pub fn create(dir: &Path, start_ns: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let path = dir.join(format!("{start_ns:020}.{EXTENSION}"));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        file.write_all(FILE_MAGIC).map_err(|e| io_err(&path, e))?;
        file.sync_data().map_err(|e| io_err(&path, e))?;
        // The new name must survive a power loss too, not only the frames.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, e))?;
        Ok(Self {
            path,
            file,
            seq: 0,
            key: None,
            bytes: FILE_MAGIC.len() as u64,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends one snapshot and makes it durable.
    pub fn append(&mut self, snap: &Snapshot) -> Result<()> {
        let raw = postcard::to_stdvec(snap).map_err(|e| Error::Archive {
            path: self.path.display().to_string(),
            cause: format!("encoding a snapshot: {e}"),
        })?;
        let seq = self.seq;
        let is_key = self.key.is_none() || seq % KEY_EVERY == 0;
        let (kind, key_seq, payload) = if is_key {
            let c = zstd::bulk::compress(&raw, LEVEL).map_err(|e| io_err(&self.path, e))?;
            (KIND_KEY, seq, c)
        } else {
            let (key_seq, comp) = self.key.as_mut().expect("a key frame was written");
            let c = comp.compress(&raw).map_err(|e| io_err(&self.path, e))?;
            (KIND_DELTA, *key_seq, c)
        };
        let frame = encode_frame(kind, seq, key_seq, snap.time_ns, &payload);
        self.file
            .write_all(&frame)
            .map_err(|e| io_err(&self.path, e))?;
        self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
        self.bytes += frame.len() as u64;
        if is_key {
            let comp = zstd::bulk::Compressor::with_dictionary(LEVEL, &raw)
                .map_err(|e| io_err(&self.path, e))?;
            self.key = Some((seq, comp));
        }
        self.seq += 1;
        Ok(())
    }
}

fn encode_frame(kind: u8, seq: u64, key_seq: u64, time_ns: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER + payload.len());
    f.extend_from_slice(MARKER);
    f.push(kind);
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&key_seq.to_le_bytes());
    f.extend_from_slice(&time_ns.to_le_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&f[4..]);
    h.update(payload);
    f.extend_from_slice(&h.finalize().to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// Where one readable frame is.
#[derive(Debug, Clone)]
pub struct FrameRef {
    pub time_ns: u64,
    file: usize,
    key: bool,
    seq: u64,
    key_seq: u64,
    payload: std::ops::Range<usize>,
}

/// An archive directory, indexed. Frames are decoded on demand, so a long archive is not held
/// in memory as snapshots.
#[derive(Debug)]
pub struct Archive {
    files: Vec<(PathBuf, Vec<u8>)>,
    /// Every frame that passed its checksum, in time order.
    pub frames: Vec<FrameRef>,
    /// One line per damaged or unreadable part, naming the file and offset.
    pub warnings: Vec<String>,
    /// (file, seq) of each key frame → its index in `frames`.
    keys: std::collections::HashMap<(usize, u64), usize>,
}

impl Archive {
    /// Reads and indexes every archive file in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let rd = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Error::Archive {
                path: dir.display().to_string(),
                cause: format!("no *.{EXTENSION} archive files (is this a `whittle metrics record` directory?)"),
            });
        }
        let mut a = Self {
            files: Vec::new(),
            frames: Vec::new(),
            warnings: Vec::new(),
            keys: Default::default(),
        };
        for p in paths {
            let bytes = std::fs::read(&p).map_err(|e| io_err(&p, e))?;
            let idx = a.files.len();
            a.index_file(idx, &p, &bytes);
            a.files.push((p, bytes));
        }
        a.frames.sort_by_key(|f| (f.time_ns, f.file, f.seq));
        a.keys = a
            .frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.key)
            .map(|(i, f)| ((f.file, f.seq), i))
            .collect();
        Ok(a)
    }

    fn index_file(&mut self, file: usize, path: &Path, b: &[u8]) {
        if b.len() < FILE_MAGIC.len() || &b[..FILE_MAGIC.len()] != FILE_MAGIC {
            self.warnings.push(format!(
                "{}: not a whittle metrics archive (bad magic); skipped",
                path.display()
            ));
            return;
        }
        let mut pos = FILE_MAGIC.len();
        while pos < b.len() {
            if b.len() - pos < HEADER || &b[pos..pos + 4] != MARKER {
                let next = find_marker(b, pos + 1);
                self.warnings.push(format!(
                    "{}: offset {pos}: {} bytes that are not a frame (torn or damaged); skipped",
                    path.display(),
                    next.unwrap_or(b.len()) - pos
                ));
                match next {
                    Some(n) => {
                        pos = n;
                        continue;
                    }
                    None => break,
                }
            }
            let h = &b[pos..pos + HEADER];
            let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
            let kind = h[4];
            let seq = u64_at(5);
            let key_seq = u64_at(13);
            let time_ns = u64_at(21);
            let len = u32::from_le_bytes(h[29..33].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(h[33..37].try_into().expect("4 bytes"));
            let start = pos + HEADER;
            let ok = len <= MAX_PAYLOAD && start + len <= b.len() && kind <= KIND_DELTA && {
                let mut hs = crc32fast::Hasher::new();
                hs.update(&h[4..33]);
                hs.update(&b[start..start + len]);
                hs.finalize() == crc
            };
            if !ok {
                self.warnings.push(format!(
                    "{}: offset {pos}: frame fails its checksum or is cut short; skipped",
                    path.display()
                ));
                pos = find_marker(b, pos + 1).unwrap_or(b.len());
                continue;
            }
            self.frames.push(FrameRef {
                time_ns,
                file,
                key: kind == KIND_KEY,
                seq,
                key_seq,
                payload: start..start + len,
            });
            pos = start + len;
        }
    }

    /// Decodes frame `i`. A delta whose key frame was lost cannot be decoded: `Err` names it.
    pub fn snapshot(&self, i: usize) -> Result<Snapshot> {
        let f = &self.frames[i];
        let (path, bytes) = &self.files[f.file];
        let bad = |cause: String| Error::Archive {
            path: format!("{} frame {}", path.display(), f.seq),
            cause,
        };
        let payload = &bytes[f.payload.clone()];
        let raw = if f.key {
            zstd::bulk::decompress(payload, MAX_PAYLOAD).map_err(|e| bad(e.to_string()))?
        } else {
            let key = self
                .keys
                .get(&(f.file, f.key_seq))
                .map(|&k| &self.frames[k])
                .ok_or_else(|| bad(format!("its key frame {} is damaged or missing", f.key_seq)))?;
            let dict = zstd::bulk::decompress(&bytes[key.payload.clone()], MAX_PAYLOAD)
                .map_err(|e| bad(e.to_string()))?;
            let mut d =
                zstd::bulk::Decompressor::with_dictionary(&dict).map_err(|e| bad(e.to_string()))?;
            d.decompress(payload, MAX_PAYLOAD)
                .map_err(|e| bad(e.to_string()))?
        };
        postcard::from_bytes(&raw).map_err(|e| bad(format!("decoding: {e}")))
    }

    /// The index of the last frame at or before `time_ns`.
    pub fn at(&self, time_ns: u64) -> Option<usize> {
        let n = self.frames.partition_point(|f| f.time_ns <= time_ns);
        n.checked_sub(1)
    }

    /// Total bytes of the archive files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, b)| b.len() as u64).sum()
    }
}

fn find_marker(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?
        .windows(MARKER.len())
        .position(|w| w == MARKER)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{ContainerSample, Cpu};

    fn snap(t: u64, usage: u64) -> Snapshot {
        Snapshot {
            time_ns: t,
            containers: vec![ContainerSample {
                id: "c1".into(),
                name: "web".into(),
                cpu: Cpu {
                    usage_ns: Some(usage),
                    ..Default::default()
                },
                ..Default::default()
            }],
        }
    }

    #[test]
    fn round_trip_keys_and_deltas() {
        let d = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::create(d.path(), 1).unwrap();
        for i in 0..150 {
            w.append(&snap(1000 + i, i * 7)).unwrap();
        }
        let a = Archive::open(d.path()).unwrap();
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        assert_eq!(a.frames.len(), 150);
        assert_eq!(a.frames.iter().filter(|f| f.key).count(), 3);
        for i in [0, 1, 59, 60, 61, 149] {
            assert_eq!(a.snapshot(i).unwrap(), snap(1000 + i as u64, i as u64 * 7));
        }
        assert_eq!(a.at(1000 + 75), Some(75));
        assert_eq!(a.at(999), None);
    }

    #[test]
    fn damage_is_skipped_with_a_warning() {
        let d = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::create(d.path(), 1).unwrap();
        for i in 0..10 {
            w.append(&snap(1000 + i, i)).unwrap();
        }
        let path = w.path().to_path_buf();
        drop(w);
        let mut b = std::fs::read(&path).unwrap();
        // Flip a byte inside the payload of frame 5 (located by its marker), and tear the end.
        let marks: Vec<usize> = (0..b.len() - 4)
            .filter(|&i| &b[i..i + 4] == MARKER)
            .collect();
        b[marks[5] + HEADER + 2] ^= 0xff;
        b.truncate(b.len() - 3);
        std::fs::write(&path, &b).unwrap();
        let a = Archive::open(d.path()).unwrap();
        assert_eq!(a.frames.len(), 8, "frame 5 and the torn frame 9 are gone");
        assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
        assert!(a
            .warnings
            .iter()
            .all(|w| w.contains(&path.display().to_string())));
        for i in 0..a.frames.len() {
            a.snapshot(i).unwrap();
        }
    }
}
