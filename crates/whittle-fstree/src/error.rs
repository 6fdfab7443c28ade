use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] whittle_image::Error),
    /// A layer entry breaks the layer rules; `at` names the layer blob. `path` is empty when
    /// the stream itself is broken (no entry to name).
    #[error("{at}: layer {layer}: {}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Entry {
        at: PathBuf,
        layer: usize,
        path: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        match source.downcast::<whittle_image::Error>() {
            Ok(e) => Error::Image(e),
            Err(source) => Error::Io {
                path: path.into(),
                source,
            },
        }
    }
}
