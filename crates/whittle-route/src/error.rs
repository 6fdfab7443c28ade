/// What can go wrong routing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] whittle_engine::Error),
    /// A runtime API socket could not be used.
    #[error("HAProxy socket {path}: `{command}`: {cause}")]
    Socket {
        path: String,
        command: String,
        cause: String,
    },
    /// HAProxy answered a command with an error.
    #[error("HAProxy refused `{command}`: {reply}")]
    Refused { command: String, reply: String },
    /// A file in the state directory (or HAProxy's binary) could not be used.
    #[error("{path}: {cause}")]
    Io { path: String, cause: String },
    /// HAProxy did not start or reload.
    #[error("HAProxy: {0}")]
    Haproxy(String),
    /// An existing HAProxy (`--attach`) whittle cannot drive: a backend that cannot work
    /// dynamically, a socket below admin level.
    #[error("{0}")]
    Unfit(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_string(),
        cause: e.to_string(),
    }
}
