/// What can go wrong in a debug session, a port-forward or a copy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] whittle_engine::Error),
    /// The caller lacks a capability the operation needs.
    #[error("{what} needs {caps} (run whittle as root, e.g. with sudo)")]
    Privilege { what: String, caps: String },
    /// A kernel call failed.
    #[error("{call}: {cause}")]
    Sys { call: String, cause: String },
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io { path: String, cause: String },
    /// No toolbox could be chosen or prepared.
    #[error("toolbox: {0}")]
    Toolbox(String),
    /// The target cannot be used the way it was asked for.
    #[error("{target}: {cause}")]
    Target { target: String, cause: String },
    /// Reading or unpacking the toolbox image failed.
    #[error("toolbox image {image}: {cause}")]
    Image { image: String, cause: String },
    /// The session's setup inside the target's namespaces failed (reported by the child).
    #[error("{0}")]
    Session(String),
    /// The session was set up but its command could not be run: `code` is 127 (not found) or
    /// 126 (not executable), the shell's convention, so scripts can tell it from the command's
    /// own failure.
    #[error("{message}")]
    Command { code: i32, message: String },
}

impl Error {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            cause: e.to_string(),
        }
    }

    /// A failed kernel call, with `errno` read as the capability it most likely lacked:
    /// `EPERM` from these calls means a missing capability, never a file mode.
    pub(crate) fn sys(call: impl Into<String>, errno: i32) -> Self {
        let call = call.into();
        let cause = std::io::Error::from_raw_os_error(errno).to_string();
        let cause = match errno {
            libc::EPERM | libc::EACCES => format!("{cause} ({})", needs_of(&call)),
            _ => cause,
        };
        Self::Sys { call, cause }
    }
}

/// Opens a file of another process under `/proc`; a refusal there is ptrace access control,
/// so it is reported as the capability `caps` that would grant it.
pub(crate) fn open_proc(path: &str, caps: &str) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => Error::Privilege {
            what: format!("opening {path}"),
            caps: caps.into(),
        },
        _ => Error::io(path, e),
    })
}

fn needs_of(call: &str) -> &'static str {
    if call.starts_with("open /proc/") || call.starts_with("openat2") {
        "needs CAP_SYS_PTRACE or the target's uid"
    } else if call.starts_with("write ") {
        "needs write access to the target's cgroup: root"
    } else {
        "needs CAP_SYS_ADMIN"
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
