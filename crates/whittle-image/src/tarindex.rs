//! An index of the members of an outer tar (a docker-archive or oci-archive), so each blob can
//! be read in place as a window of the archive file, without extracting anything.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use crate::{BlobWindow, Error, Result};

/// Member name → where its bytes are. Symlink members (old `docker save` links duplicate
/// layers to the first copy) are resolved within the archive.
#[derive(Debug, Default)]
pub struct TarIndex {
    path: PathBuf,
    files: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
}

/// Member names longer than this, or more members than `MAX_MEMBERS`, mean the file is not an
/// image archive; refusing early keeps memory bounded.
const MAX_MEMBERS: usize = 1 << 20;
/// Largest GNU long name or PAX header accepted in an outer archive.
const MAX_EXTENSION: u64 = 1 << 20;

/// The tar crate's errors quote raw header bytes; say what happened, where, briefly.
pub fn tar_error(members_read: usize, e: &std::io::Error) -> String {
    let short: String = e
        .to_string()
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(80)
        .collect();
    if members_read == 0 && e.kind() != std::io::ErrorKind::UnexpectedEof {
        format!("not a tar archive ({short})")
    } else {
        format!("corrupt or truncated tar after {members_read} members ({short})")
    }
}

/// `"<len> <key>=<value>\n"` records of a PAX header; malformed records end the list.
fn pax_records(mut data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    while let Some(sp) = data.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len <= sp + 1 || len > data.len() {
            break;
        }
        let record = &data[sp + 1..len - 1];
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            out.push((&record[..eq], &record[eq + 1..]));
        }
        data = &data[len..];
    }
    out
}

impl TarIndex {
    pub fn scan(path: &Path) -> Result<Self> {
        Self::scan_limited(path, usize::MAX)
    }

    /// Transport detection only needs the first few member names.
    pub(crate) fn scan_for_detection(path: &Path) -> Result<Self> {
        Self::scan_limited(path, 64)
    }

    fn scan_limited(path: &Path, limit: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut archive = tar::Archive::new(file);
        let mut index = TarIndex {
            path: path.to_path_buf(),
            ..Default::default()
        };
        // Raw mode: long names and PAX headers are read here, bounded, because the tar
        // crate reads an extension header of whatever size it claims into memory.
        let entries = archive
            .entries_with_seek()
            .map_err(|e| Error::format(path, format!("not a tar archive: {e}")))?
            .raw(true);
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut real = 0usize;
        for entry in entries {
            if real >= limit {
                break;
            }
            if real >= MAX_MEMBERS {
                return Err(Error::format(path, "too many members for an image archive"));
            }
            let mut entry = entry.map_err(|e| Error::format(path, tar_error(real, &e)))?;
            let et = entry.header().entry_type();
            if matches!(
                et,
                tar::EntryType::GNULongName | tar::EntryType::GNULongLink | tar::EntryType::XHeader
            ) {
                let size = entry.size();
                if size > MAX_EXTENSION {
                    return Err(Error::format(
                        path,
                        format!("tar extension header of {size} bytes is too large"),
                    ));
                }
                let mut data = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| Error::format(path, format!("corrupt or truncated tar: {e}")))?;
                while data.last() == Some(&0) {
                    data.pop();
                }
                match et {
                    tar::EntryType::GNULongName => long_name = Some(data),
                    tar::EntryType::GNULongLink => long_link = Some(data),
                    _ => {
                        for (k, v) in pax_records(&data) {
                            match k {
                                b"path" => long_name = Some(v.to_vec()),
                                b"linkpath" => long_link = Some(v.to_vec()),
                                _ => {}
                            }
                        }
                    }
                }
                continue;
            }
            real += 1;
            let raw_name = long_name
                .take()
                .unwrap_or_else(|| entry.header().path_bytes().into_owned());
            let link = long_link
                .take()
                .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
            let name = normalize_member(&String::from_utf8_lossy(&raw_name));
            match et {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let (offset, size) = (entry.raw_file_position(), entry.size());
                    // The tar crate seeks past a member's data without reading it, so a
                    // member running past the end of the file shows only here.
                    match offset.checked_add(size) {
                        Some(end) if end <= file_len => {}
                        _ => {
                            return Err(Error::format(
                                path,
                                format!(
                                    "truncated archive: member {name:?} needs {size} bytes at \
                                     offset {offset}, the file has {file_len}"
                                ),
                            ))
                        }
                    }
                    index.files.insert(name, (offset, size));
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(target) = link {
                        let target = String::from_utf8_lossy(&target).into_owned();
                        let target = if et == tar::EntryType::Symlink {
                            resolve_relative(&name, &target)
                        } else {
                            normalize_member(&target)
                        };
                        index.links.insert(name, target);
                    }
                }
                _ => {}
            }
        }
        // An empty or non-tar file parses as an empty archive; make sure we say so.
        if index.files.is_empty() && index.links.is_empty() {
            let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
            let len = f
                .seek(std::io::SeekFrom::End(0))
                .map_err(|e| Error::io(path, e))?;
            if len == 0 {
                return Err(Error::format(path, "empty file, not an image archive"));
            }
            let mut head = [0u8; 512];
            f.rewind().map_err(|e| Error::io(path, e))?;
            let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
            if n < 512 || head.iter().any(|&b| b != 0) {
                return Err(Error::format(path, "not a tar archive"));
            }
        }
        Ok(index)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    fn lookup(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = normalize_member(name);
        for _ in 0..16 {
            if let Some(&w) = self.files.get(&name) {
                return Some(w);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    /// The window of member `name`, or an error naming the archive and the member.
    pub fn window(&self, name: &str) -> Result<BlobWindow> {
        let (offset, len) = self.lookup(name).ok_or_else(|| {
            Error::format(&self.path, format!("missing member {name:?} in archive"))
        })?;
        Ok(BlobWindow {
            file: self.path.clone(),
            offset,
            len,
            display: PathBuf::from(format!(
                "{}:{}",
                self.path.display(),
                normalize_member(name)
            )),
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files
            .keys()
            .chain(self.links.keys())
            .map(String::as_str)
    }
}

fn normalize_member(name: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn resolve_relative(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        return normalize_member(target);
    }
    let parent = link.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
    normalize_member(&format!("{parent}/{target}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(normalize_member("./a/b/"), "a/b");
        assert_eq!(
            resolve_relative("x/layer.tar", "../y/layer.tar"),
            "y/layer.tar"
        );
    }
}
