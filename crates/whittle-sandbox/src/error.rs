use std::path::PathBuf;

/// Why a sandboxed run could not be made. A run that starts but whose app then misbehaves
/// (crash, timeout, port never opening) is not an error: it is a [`crate::Report`] with an
/// [`crate::Outcome`] that says so, so the evidence gathered so far is not lost.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] whittle_image::Error),
    #[error(transparent)]
    Tree(#[from] whittle_fstree::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The image has neither Entrypoint nor Cmd (nor a command given).
    #[error("no command specified: the image has no Entrypoint or Cmd")]
    NoCommand,
    /// Bad configuration in the image (user, stop signal, ports).
    #[error("image config: {0}")]
    Config(String),
    /// Bad options given by the caller.
    #[error("{0}")]
    Usage(String),
    /// Something the sandbox needs from the kernel is not there.
    #[error("sandbox setup: {step}: {message}")]
    Setup { step: String, message: String },
    #[error("this machine cannot run the sandbox: {0}")]
    Unsupported(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn setup(step: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Setup {
            step: step.into(),
            message: message.to_string(),
        }
    }
}
