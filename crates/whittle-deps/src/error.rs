//! Typed errors. Every variant names the image path it is about, because a closure over
//! thousands of files is useless if a failure says "No such file" without saying which.
//!
//! Errors are `Clone` (I/O errors are shared behind an `Arc`) so that resolution results,
//! failures included, can be memoised: a failed lookup is asked again many times when
//! library search paths are probed.

use std::sync::Arc;

/// A failure looking up or reading a path in a [`RootFs`](crate::RootFs) view.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    /// The path, or one of its components, does not exist.
    #[error("{path}: no such file or directory ({missing} does not exist)")]
    NotFound {
        /// The path that was asked for.
        path: String,
        /// The first component that does not exist, after symlink resolution.
        missing: String,
    },
    /// A symlink on the way points at something that does not exist.
    #[error("{path}: dangling symlink {link} -> {target}")]
    Dangling {
        /// The path that was asked for.
        path: String,
        /// The last symlink that was followed.
        link: String,
        /// Its target, as stored.
        target: String,
    },
    /// A non-directory was used as a directory.
    #[error("{path}: not a directory ({component} is not a directory)")]
    NotADirectory {
        /// The path that was asked for.
        path: String,
        /// The component that is not a directory.
        component: String,
    },
    /// More than 40 symlinks were followed (the kernel's ELOOP).
    #[error("{path}: too many levels of symbolic links (ELOOP)")]
    Loop {
        /// The path that was asked for.
        path: String,
    },
    /// The path given to a [`RootFs`](crate::RootFs) is not absolute and normalised, or
    /// crosses a symlink that the caller should have resolved.
    #[error("{path}: invalid path for a root file system view: {why}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// Why it was rejected.
        why: &'static str,
    },
    /// A name in the image is not valid UTF-8 (whittle keeps image paths as strings).
    #[error("{path}: name or symlink target is not valid UTF-8")]
    NotUtf8 {
        /// The path whose name or target is not UTF-8.
        path: String,
    },
    /// The operation needs a regular file (or a symlink, or a directory) and got something else.
    #[error("{path}: {why}")]
    WrongKind {
        /// The path.
        path: String,
        /// What was expected.
        why: &'static str,
    },
    /// An I/O error from the backing store.
    #[error("{path}: {source}")]
    Io {
        /// The image path being read.
        path: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl FsError {
    /// The image path this error is about.
    pub fn path(&self) -> &str {
        match self {
            FsError::NotFound { path, .. }
            | FsError::Dangling { path, .. }
            | FsError::NotADirectory { path, .. }
            | FsError::Loop { path }
            | FsError::InvalidPath { path, .. }
            | FsError::NotUtf8 { path }
            | FsError::WrongKind { path, .. }
            | FsError::Io { path, .. } => path,
        }
    }

    pub(crate) fn io(path: &str, source: std::io::Error) -> Self {
        FsError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }

    /// True when the error means "nothing there" (ENOENT, dangling link, ENOTDIR): the
    /// cases in which ld.so's search goes on to the next candidate.
    pub fn is_absent(&self) -> bool {
        matches!(
            self,
            FsError::NotFound { .. } | FsError::Dangling { .. } | FsError::NotADirectory { .. }
        )
    }
}

/// A file that looks like ELF but cannot be understood. The analysis records it as a
/// per-file problem and carries on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ElfError {
    /// A structure the headers point at lies (partly) past the end of the file.
    #[error("{path}: truncated ELF: {what}")]
    Truncated {
        /// The file.
        path: String,
        /// Which structure is cut short.
        what: String,
    },
    /// The bytes are not a well-formed ELF structure.
    #[error("{path}: malformed ELF: {what}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// A header field has a value no real toolchain produces (and that would make a naive
    /// reader allocate or loop without bound).
    #[error("{path}: absurd ELF header value: {field} = {value}")]
    Absurd {
        /// The file.
        path: String,
        /// The field name, e.g. `e_phnum`.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// Reading the file failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl ElfError {
    /// The image path this error is about.
    pub fn path(&self) -> &str {
        match self {
            ElfError::Truncated { path, .. }
            | ElfError::Malformed { path, .. }
            | ElfError::Absurd { path, .. } => path,
            ElfError::Fs(e) => e.path(),
        }
    }
}

/// Errors of the high-level API (everything else is reported inside a
/// [`Closure`](crate::Closure) as a per-file problem, never as an `Err`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DepsError {
    /// The file system view failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// An ELF file could not be parsed.
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// The file is not an ELF object.
    #[error("{path}: not an ELF file")]
    NotElf {
        /// The file.
        path: String,
    },
}
