//! Readers and writers that hash what passes through them, so digests are checked in the same
//! pass that does the real work instead of a second read.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::{Digest, Error};

/// Hashes and counts everything read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (Digest, u64) {
        (
            Digest::from_bytes(self.hasher.finalize().into()),
            self.count,
        )
    }
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes and counts everything written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest::from_bytes(self.hasher.finalize().into()),
            self.count,
        )
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes bytes through and, at end of stream, fails the read if the content does not have the
/// expected digest (and size, when known). The error names `path` and `what`, so a corrupted
/// blob is reported where it is detected, in the same pass that consumes it.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: HashingReader<R>,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    path: PathBuf,
    what: String,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(
        inner: R,
        expected: Option<Digest>,
        expected_size: Option<u64>,
        path: PathBuf,
        what: String,
    ) -> Self {
        VerifyingReader {
            inner: HashingReader::new(inner),
            expected,
            expected_size,
            path,
            what,
            verified: false,
        }
    }

    /// Reads whatever is left (a tar parser stops at the end-of-archive blocks and may leave
    /// padding unread) so the digest covers the whole blob, then returns its digest.
    pub fn drain(self) -> io::Result<Digest> {
        Ok(self.drain_counted()?.0)
    }

    /// Like [`VerifyingReader::drain`], also returning the byte count.
    pub fn drain_counted(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.inner.finish())
    }

    /// Digest and size of what has been read so far.
    pub fn digest_so_far(&self) -> (Digest, u64) {
        (
            Digest::from_bytes(self.inner.hasher.clone().finalize().into()),
            self.inner.count,
        )
    }

    fn check(&mut self) -> io::Result<()> {
        if self.verified {
            return Ok(());
        }
        self.verified = true;
        let count = self.inner.count;
        if let Some(size) = self.expected_size {
            if size != count {
                return Err(io::Error::other(Error::format(
                    &self.path,
                    format!("{} has {count} bytes, expected {size}", self.what),
                )));
            }
        }
        if let Some(expected) = self.expected {
            let actual = Digest::from_bytes(self.inner.hasher.clone().finalize().into());
            if actual != expected {
                return Err(io::Error::other(Error::DigestMismatch {
                    path: self.path.clone(),
                    what: self.what.clone(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                }));
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.check()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_reader_accepts_and_rejects() {
        let data = b"hello world".to_vec();
        let good = Digest::of(&data);
        let r = VerifyingReader::new(&data[..], Some(good), Some(11), "x".into(), "blob".into());
        assert_eq!(r.drain().unwrap(), good);

        let bad = Digest::of(b"other");
        let r = VerifyingReader::new(&data[..], Some(bad), None, "f.tar".into(), "layer".into());
        let err = Error::io("ignored", r.drain().unwrap_err());
        let msg = err.to_string();
        assert!(msg.starts_with("f.tar: digest mismatch for layer"), "{msg}");

        let r = VerifyingReader::new(&data[..], None, Some(3), "f".into(), "blob".into());
        assert!(r.drain().is_err());
    }
}
