//! Where records go: RELP (acknowledged per record), RFC 5424 over TCP (octet-counted framing,
//! RFC 6587 §3.4.1; delivered = written and flushed, TCP gives no more), or JSON lines in a file
//! (delivered = written and fsync'd), rotated by size.

pub mod relp;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

use crate::record::Record;

/// A sink address as given to `--to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Relp(String),
    Tcp(String),
    File(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let addr = |a: &str| -> Result<String, String> {
            let (h, p) = a
                .rsplit_once(':')
                .ok_or_else(|| format!("`{s}`: expected HOST:PORT"))?;
            if h.is_empty() || p.parse::<u16>().is_err() {
                return Err(format!("`{s}`: expected HOST:PORT with a port number"));
            }
            Ok(a.to_string())
        };
        if let Some(a) = s.strip_prefix("relp://") {
            Ok(Self::Relp(addr(a)?))
        } else if let Some(a) = s.strip_prefix("tcp://") {
            Ok(Self::Tcp(addr(a)?))
        } else if let Some(p) = s.strip_prefix("file:") {
            if p.is_empty() {
                return Err(format!("`{s}`: file: needs a path"));
            }
            Ok(Self::File(PathBuf::from(p)))
        } else {
            Err(format!(
                "`{s}`: unknown sink; use relp://HOST:PORT, tcp://HOST:PORT or file:PATH"
            ))
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Relp(a) => write!(f, "relp://{a}"),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
            Self::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// An open connection to a sink.
#[derive(Debug)]
pub enum Conn {
    Relp(relp::Relp),
    Tcp(BufWriter<TcpStream>),
    File(FileSink),
}

impl Conn {
    pub async fn open(t: &Target, rotate_bytes: u64) -> Result<Self, String> {
        match t {
            Target::Relp(a) => Ok(Self::Relp(relp::Relp::connect(a).await?)),
            Target::Tcp(a) => {
                let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(a))
                    .await
                    .map_err(|_| "connect timed out after 5s".to_string())?
                    .map_err(|e| format!("connect: {e}"))?;
                let _ = s.set_nodelay(true);
                Ok(Self::Tcp(BufWriter::with_capacity(256 << 10, s)))
            }
            Target::File(p) => Ok(Self::File(FileSink::open(p, rotate_bytes)?)),
        }
    }

    /// True when a flush is the acknowledgement (TCP, file); RELP acknowledges per frame.
    pub fn acks_on_flush(&self) -> bool {
        !matches!(self, Self::Relp(_))
    }

    /// Sends one record; returns its RELP txnr (0 for the others).
    pub async fn send(&mut self, r: &Record, hostname: &str) -> Result<u64, String> {
        match self {
            Self::Relp(c) => c.syslog(&r.rfc5424(hostname)).await,
            Self::Tcp(w) => {
                let m = r.rfc5424(hostname);
                let head = format!("{} ", m.len());
                w.write_all(head.as_bytes())
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                w.write_all(&m).await.map_err(|e| format!("send: {e}"))?;
                Ok(0)
            }
            Self::File(f) => {
                f.write(&r.json_line())?;
                Ok(0)
            }
        }
    }

    pub async fn flush(&mut self) -> Result<(), String> {
        match self {
            Self::Relp(c) => c.flush().await,
            Self::Tcp(w) => w.flush().await.map_err(|e| format!("send: {e}")),
            Self::File(f) => f.sync(),
        }
    }

    pub async fn ack(&mut self) -> relp::Ack {
        match self {
            Self::Relp(c) => c.ack().await,
            _ => std::future::pending().await,
        }
    }

    /// An acknowledgement already received, without waiting.
    pub fn try_ack(&mut self) -> Option<relp::Ack> {
        match self {
            Self::Relp(c) => c.try_ack(),
            _ => None,
        }
    }

    pub async fn close(self) {
        match self {
            Self::Relp(c) => c.close().await,
            Self::Tcp(mut w) => {
                let _ = w.flush().await;
                let _ = w.shutdown().await;
            }
            Self::File(mut f) => {
                let _ = f.sync();
            }
        }
    }
}

/// JSON lines appended to PATH; past `rotate_bytes` it becomes PATH.1 (PATH.1 → PATH.2, …,
/// five kept) and a new PATH starts.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    size: u64,
    rotate_bytes: u64,
    /// Not a regular file (`/dev/null`, a FIFO, a terminal): never renamed, and written
    /// without fsync (which such files refuse with EINVAL).
    special: bool,
}

const KEEP: u32 = 5;

impl FileSink {
    fn open(path: &Path, rotate_bytes: u64) -> Result<Self, String> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let meta = f
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: std::io::BufWriter::with_capacity(256 << 10, f),
            size: meta.len(),
            rotate_bytes,
            special: !meta.file_type().is_file(),
        })
    }

    fn write(&mut self, line: &[u8]) -> Result<(), String> {
        use std::io::Write;
        if !self.special && self.size > 0 && self.size + line.len() as u64 > self.rotate_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(line)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        use std::io::Write;
        self.file
            .flush()
            .and_then(|()| {
                if self.special {
                    Ok(())
                } else {
                    self.file.get_ref().sync_data()
                }
            })
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    fn rotate(&mut self) -> Result<(), String> {
        self.sync()?;
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        for i in (1..KEEP).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        std::fs::rename(&self.path, name(1))
            .map_err(|e| format!("{}: rotating: {e}", self.path.display()))?;
        *self = Self::open(&self.path, self.rotate_bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_or_say_why() {
        assert_eq!(
            "relp://127.0.0.1:2514".parse::<Target>(),
            Ok(Target::Relp("127.0.0.1:2514".into()))
        );
        assert_eq!(
            "file:/tmp/x.jsonl".parse::<Target>(),
            Ok(Target::File("/tmp/x.jsonl".into()))
        );
        assert!("udp://h:1"
            .parse::<Target>()
            .unwrap_err()
            .contains("unknown sink"));
        assert!("tcp://h"
            .parse::<Target>()
            .unwrap_err()
            .contains("HOST:PORT"));
    }

    #[test]
    fn dev_null_is_written_never_synced_or_rotated() {
        // fsync of /dev/null is EINVAL, and rotating it would rename /dev/null itself.
        let mut f = FileSink::open(Path::new("/dev/null"), 10).expect("open /dev/null");
        for _ in 0..3 {
            f.write(b"a line longer than ten bytes\n").expect("write");
        }
        f.sync().expect("sync of /dev/null");
        assert!(Path::new("/dev/null").exists());
        assert!(!Path::new("/dev/null.1").exists());
    }
}
