use std::path::PathBuf;

/// Everything that can go wrong reading or writing an image. Each variant names the file (or
/// blob) and the problem, so the CLI can print it as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        path: PathBuf,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Reference(String),
    #[error("docker engine: {0}")]
    Daemon(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        // A digest failure detected inside a streaming reader travels as an io::Error; unwrap it
        // so the message names the blob rather than a generic I/O failure.
        match source.downcast::<Error>() {
            Ok(inner) => inner,
            Err(source) => Error::Io {
                path: path.into(),
                source,
            },
        }
    }

    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io { source, .. } if source.get_ref().is_none() => source,
            other => std::io::Error::other(other),
        }
    }
}
