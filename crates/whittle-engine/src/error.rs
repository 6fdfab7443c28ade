/// What can go wrong talking to the engine or reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be set up for the engine address.
    #[error("Docker Engine at {host}: cannot connect: {cause}")]
    Connect { host: String, cause: String },
    /// An Engine API call failed.
    #[error("Docker Engine at {host}: {what}: {cause}")]
    Api {
        host: String,
        what: String,
        cause: String,
    },
    /// No container, service or task of that name.
    #[error("Docker Engine at {host}: no container, Swarm service or task named `{target}`")]
    NotFound { host: String, target: String },
    /// A file under `/proc` or `/sys` could not be read or made no sense.
    #[error("{path}: {cause}")]
    Proc { path: String, cause: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
