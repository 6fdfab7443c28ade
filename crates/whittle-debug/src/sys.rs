//! Path helpers for the session's kernel calls (the calls themselves are `whittle-kernel`'s).

use std::ffi::CString;

/// A path as a C string; paths with a NUL byte cannot name a file and become an error.
pub fn cpath(p: impl AsRef<std::path::Path>) -> Result<CString, crate::Error> {
    let p = p.as_ref();
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| crate::Error::Io {
        path: p.display().to_string(),
        cause: "path contains a NUL byte".into(),
    })
}
