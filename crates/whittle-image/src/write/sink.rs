//! Where blobs go: members of a tar being written (docker-archive, oci-archive) or files in a
//! directory (OCI layout). Both write under a temporary name and rename on commit.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Digest, Error, HashingWriter, Result};

/// Produces a blob's stored bytes into the writer it is given and returns its diff_id, or
/// `None` when the blob is an uncompressed tar (its diff_id is its digest, hashed once).
pub(crate) type Produce<'a> = dyn FnMut(&mut dyn Write) -> io::Result<Option<Digest>> + 'a;

/// Size of the chunks handed to the hashing thread.
const CHUNK: usize = 1 << 20;

/// Runs `produce` while a second thread hashes and writes what it produces into `out`.
/// sha256 costs about as much CPU as generating a layer tar does, so on a 2-core machine this
/// pipeline nearly halves the time of writing a large layer.
pub(crate) fn hashed_pipe<W: Write + Send, T>(
    out: W,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> io::Result<(T, Digest, u64)> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let writer = s.spawn(move || -> io::Result<(Digest, u64)> {
            let mut hw = HashingWriter::new(out);
            for mut buf in rx {
                hw.write_all(&buf)?;
                buf.clear();
                let _ = free_tx.try_send(buf);
            }
            hw.flush()?;
            let (_, d, n) = hw.finish();
            Ok((d, n))
        });
        let mut sender = ChunkSender {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            free: free_rx,
        };
        let produced = produce(&mut sender);
        let flushed = sender.finish();
        let written = writer
            .join()
            .map_err(|_| io::Error::other("hashing thread panicked"))?;
        // A write failure (disk full) shows up on the producer side as a closed channel;
        // report the real cause first.
        let (d, n) = written?;
        let t = produced?;
        flushed?;
        Ok((t, d, n))
    })
}

struct ChunkSender {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
    free: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        let next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        self.tx
            .as_ref()
            .expect("open until finish")
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "blob writer stopped"))
    }

    fn finish(&mut self) -> io::Result<()> {
        let r = if self.buf.is_empty() {
            Ok(())
        } else {
            self.send()
        };
        self.tx = None;
        r
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) trait BlobSink {
    /// Streams a blob whose name is known only after its digests are: `name(stored, diff_id)`.
    /// Returns the stored digest and size. A blob whose name was already written is not
    /// stored twice.
    fn put_stream(
        &mut self,
        produce: &mut Produce<'_>,
        name: &dyn Fn(&Digest, &Digest) -> String,
    ) -> io::Result<(Digest, u64)>;

    fn put_file(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;

    /// Declares a directory (`blobs/sha256/`) before members are written into it.
    fn mkdir(&mut self, name: &str) -> io::Result<()>;
}

/// A tar written to a temporary file beside its destination.
///
/// Member sizes are not known before a layer is produced, and buffering a layer to learn its
/// size would double the I/O; so the header is written as a placeholder and patched in place
/// once the data is written (the file is ours and seekable). The tar crate's `Builder` has no
/// such mode, hence this small writer.
pub(crate) struct TarSink {
    out: BufWriter<File>,
    temp: tempfile::NamedTempFile,
    dest: PathBuf,
    pos: u64,
    names: HashSet<String>,
    raw: bool,
}

fn padding(len: u64) -> usize {
    ((512 - len % 512) % 512) as usize
}

impl TarSink {
    pub(crate) fn create(dest: &Path) -> Result<Self> {
        Self::new(dest, false)
    }

    /// A sink whose whole content is one stream (a root file system tar).
    pub(crate) fn create_raw(dest: &Path) -> Result<Self> {
        Self::new(dest, true)
    }

    fn new(dest: &Path, raw: bool) -> Result<Self> {
        let (parent, prefix) = temp_beside(dest);
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .tempfile_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        let file = temp.reopen().map_err(|e| Error::io(temp.path(), e))?;
        Ok(TarSink {
            out: BufWriter::with_capacity(1 << 20, file),
            temp,
            dest: dest.to_path_buf(),
            pos: 0,
            names: HashSet::new(),
            raw,
        })
    }

    pub(crate) fn raw<T>(&mut self, f: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<T> {
        debug_assert!(self.raw);
        f(&mut self.out)
    }

    fn header(name: &str, size: u64) -> io::Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)?;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        Ok(h)
    }

    pub(crate) fn commit(mut self) -> Result<()> {
        let path = self.temp.path().to_path_buf();
        let io = |e| Error::io(&path, e);
        if !self.raw {
            self.out.write_all(&[0u8; 1024]).map_err(io)?;
        }
        self.out.flush().map_err(io)?;
        // Temporary files are created 0600; an image file is as readable as any other.
        set_mode(self.temp.path(), 0o644).map_err(io)?;
        self.temp
            .persist(&self.dest)
            .map_err(|e| Error::io(&self.dest, e.error))?;
        Ok(())
    }
}

impl BlobSink for TarSink {
    fn mkdir(&mut self, name: &str) -> io::Result<()> {
        if self.names.insert(name.to_string()) {
            let mut h = tar::Header::new_ustar();
            h.set_path(name)?;
            h.set_size(0);
            h.set_mode(0o755);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Directory);
            h.set_cksum();
            self.out.write_all(h.as_bytes())?;
            self.pos += 512;
        }
        Ok(())
    }

    fn put_stream(
        &mut self,
        produce: &mut Produce<'_>,
        name: &dyn Fn(&Digest, &Digest) -> String,
    ) -> io::Result<(Digest, u64)> {
        let start = self.pos;
        self.out.write_all(&[0u8; 512])?;
        let (diff_id, stored, size) = hashed_pipe(&mut self.out, produce)?;
        let name = name(&stored, &diff_id.unwrap_or(stored));
        if self.names.contains(&name) {
            // Same content already in the archive (two identical layers): drop this copy.
            self.out.seek(SeekFrom::Start(start))?;
            self.out.get_ref().set_len(start)?;
            return Ok((stored, size));
        }
        self.out.write_all(&vec![0u8; padding(size)])?;
        let end = start + 512 + size + padding(size) as u64;
        self.out.seek(SeekFrom::Start(start))?;
        self.out.write_all(Self::header(&name, size)?.as_bytes())?;
        self.out.seek(SeekFrom::Start(end))?;
        self.pos = end;
        self.names.insert(name);
        Ok((stored, size))
    }

    fn put_file(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if !self.names.insert(name.to_string()) {
            return Ok(());
        }
        self.out
            .write_all(Self::header(name, bytes.len() as u64)?.as_bytes())?;
        self.out.write_all(bytes)?;
        self.out
            .write_all(&vec![0u8; padding(bytes.len() as u64)])?;
        self.pos += 512 + bytes.len() as u64 + padding(bytes.len() as u64) as u64;
        Ok(())
    }
}

/// The directory a temporary for `dest` goes in (the same file system, so the final rename is
/// atomic) and a builder naming it `.NAME.whittle-XXXX`, hidden and traceable to its target.
fn temp_beside(dest: &Path) -> (PathBuf, String) {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (parent, format!(".{name}.whittle-"))
}

/// Sets permission bits, minus the process umask (as creating the file normally would).
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask has no preconditions; it is set straight back to what it was.
    let mask = unsafe {
        let m = libc::umask(0);
        libc::umask(m);
        m
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !(mask as u32)))
}

/// A directory written under a temporary name beside its destination.
pub(crate) struct DirSink {
    temp: tempfile::TempDir,
    dest: PathBuf,
}

impl DirSink {
    pub(crate) fn create(dest: &Path) -> Result<Self> {
        let (parent, prefix) = temp_beside(dest);
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        let blobs = temp.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
        Ok(DirSink {
            temp,
            dest: dest.to_path_buf(),
        })
    }

    pub(crate) fn commit(self) -> Result<()> {
        if self.dest.is_dir() {
            // Checked empty by Destination::prepare.
            std::fs::remove_dir(&self.dest).map_err(|e| Error::io(&self.dest, e))?;
        }
        let temp = self.temp.keep();
        for dir in [temp.join("blobs/sha256"), temp.join("blobs"), temp.clone()] {
            set_mode(&dir, 0o755).map_err(|e| Error::io(&dir, e))?;
        }
        std::fs::rename(&temp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        Ok(())
    }
}

impl BlobSink for DirSink {
    fn mkdir(&mut self, name: &str) -> io::Result<()> {
        std::fs::create_dir_all(self.temp.path().join(name))
    }

    fn put_stream(
        &mut self,
        produce: &mut Produce<'_>,
        name: &dyn Fn(&Digest, &Digest) -> String,
    ) -> io::Result<(Digest, u64)> {
        let tmp = tempfile::NamedTempFile::new_in(self.temp.path().join("blobs/sha256"))?;
        let mut out = BufWriter::with_capacity(1 << 20, tmp.reopen()?);
        let (diff_id, stored, size) = hashed_pipe(&mut out, produce)?;
        out.flush()?;
        let path = self
            .temp
            .path()
            .join(name(&stored, &diff_id.unwrap_or(stored)));
        set_mode(tmp.path(), 0o644)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok((stored, size))
    }

    fn put_file(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.temp.path().join(name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(path, bytes)
    }
}
