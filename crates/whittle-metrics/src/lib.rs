//! Per-container performance numbers, read from the kernel, for the tools people already run.
//!
//! The data path is one way: containers (discovery and events only, from `whittle-engine`; the
//! Engine's `/stats` is never called) → [`collect`] reads cgroup v1/v2 files, `/proc/PID/net/dev`
//! (the container's own network namespace, without entering it) and the cgroup's processes → a
//! [`Snapshot`] → [`openmetrics`] text (served by [`serve`]), the [`archive`] (recorded and
//! replayed to the same bytes), [`rates`] for the live view ([`top`]) and charts ([`plot`]).

pub mod archive;
mod cgroup;
pub mod collect;
mod files;
pub mod openmetrics;
pub mod plot;
pub mod rates;
pub mod sample;
pub mod serve;
pub mod top;

pub use collect::Collector;
pub use sample::Snapshot;

/// What can go wrong collecting, serving or archiving metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] whittle_engine::Error),
    #[error("{path}: {cause}")]
    Io { path: String, cause: String },
    #[error("{path}: {cause}")]
    Archive { path: String, cause: String },
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Error {
    Error::Io {
        path: path.as_ref().display().to_string(),
        cause: e.to_string(),
    }
}
