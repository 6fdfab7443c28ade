//! `whittle logs`: every container's output into central syslog with the engine's timestamps,
//! nothing lost.
//!
//! The data path goes one way: the Engine's own log store ([`whittle_engine::logstream`], one
//! stream per container and stream, resumed exactly at a checkpoint) → a bounded disk
//! [`spool`] (the append is the commit; checkpoints are rebuilt from it) → a [`sink`] (RELP,
//! RFC 5424 over TCP, JSON files) that acknowledges what it has, after which the spool forgets
//! it. [`ship`] runs the pipeline, [`devlog`] feeds the same spool and sender from a `/dev/log`
//! socket, [`status`] reads what a running (or stopped) shipper left in its spool directory.

pub mod devlog;
pub mod pipeline;
pub mod record;
pub mod ship;
pub mod sink;
pub mod spool;
pub mod status;

use std::sync::Arc;

/// What can go wrong shipping logs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] whittle_engine::Error),
    #[error("{path}: {cause}")]
    Io { path: String, cause: String },
    #[error("spool {path}: {cause}")]
    Spool { path: String, cause: String },
    #[error("{0}")]
    Usage(String),
    /// The spool was closed while a writer waited for space (shutdown).
    #[error("the spool was closed")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One line per event, with its cause.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

pub(crate) fn io_err(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Error {
    Error::Io {
        path: path.as_ref().display().to_string(),
        cause: e.to_string(),
    }
}

/// Nanoseconds since the epoch, now.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
