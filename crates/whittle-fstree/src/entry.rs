//! Reading one layer tar into a list of entries, with each regular file's data offset.
//!
//! The tar crate is used in raw mode: GNU long names, long link names and PAX headers are
//! interpreted here, with a size bound, because the crate's own handling reads an extension
//! header of any claimed size into memory, and layer tars come from strangers.

use std::io::Read;

use crate::path::{base_name, join, normalize, parent_of};
use crate::tree::Meta;

/// Largest long name, long link name or PAX header accepted. PATH_MAX is 4 KiB and one xattr
/// value is at most 64 KiB; a PAX header carrying a few of them fits easily.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file whose `size` bytes start at `offset` of the uncompressed layer stream.
    File {
        size: u64,
        offset: u64,
    },
    /// A regular file of a host directory read as a layer (`rootfs:DIR`).
    HostFile {
        size: u64,
        path: std::path::PathBuf,
    },
    Dir,
    Symlink(Vec<u8>),
    /// A hardlink to another (normalized) path.
    Hardlink(Vec<u8>),
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// `.wh.<name>`: hides `path` (and its subtree) in lower layers.
    Whiteout,
    /// `.wh..wh..opq`: hides every lower-layer child of the directory `path`.
    Opaque,
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// Normalized path; for whiteouts the path being hidden, for opaque markers the directory.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub meta: Meta,
    /// Size as the tar header records it (0 for links), for per-layer statistics.
    pub header_size: u64,
}

impl Entry {
    /// An entry made by hand (tests, synthesized paths): `mode` bits, other metadata zero.
    pub fn new(path: &str, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            meta: Meta {
                mode,
                ..Meta::default()
            },
            header_size: 0,
        }
    }
}

#[derive(Debug, Default)]
pub struct LayerEntries {
    pub entries: Vec<Entry>,
    /// Bytes of the uncompressed tar stream.
    pub tar_size: u64,
    /// Digests measured while reading (none for a directory layer).
    pub digests: Option<whittle_image::LayerDigests>,
}

#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Vec<(String, Vec<u8>)>,
}

/// Parses a whole layer stream. `reader` must count bytes from the start of the tar, since
/// data offsets are positions in that stream.
pub fn parse_layer<R: Read>(reader: R) -> Result<LayerEntries, (String, String)> {
    let mut archive = tar::Archive::new(reader);
    let mut out = LayerEntries::default();
    let entries = archive
        .entries()
        .map_err(|e| (String::new(), format!("not a tar stream: {e}")))?
        .raw(true);
    let mut pending = Pending::default();
    let mut last_end = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            (
                String::new(),
                whittle_image::tar_error(out.entries.len(), &e),
            )
        })?;
        let header = entry.header().clone();
        let et = header.entry_type();
        let raw_name = header.path_bytes().into_owned();
        let name_for_errors = String::from_utf8_lossy(&raw_name).into_owned();
        let err = |m: String| (name_for_errors.clone(), m);
        let size = header
            .entry_size()
            .map_err(|e| err(format!("bad size field: {e}")))?;
        last_end = entry.raw_file_position() + size.div_ceil(512) * 512;
        let read_ext =
            |entry: &mut tar::Entry<'_, R>, what: &str| -> Result<Vec<u8>, (String, String)> {
                if size > MAX_EXTENSION_BYTES {
                    return Err(err(format!(
                        "{what} of {size} bytes exceeds the {MAX_EXTENSION_BYTES}-byte limit"
                    )));
                }
                let mut v = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut v)
                    .map_err(|e| err(format!("truncated {what}: {e}")))?;
                if v.len() as u64 != size {
                    return Err(err(format!("truncated {what}")));
                }
                Ok(v)
            };
        match et {
            tar::EntryType::GNULongName => {
                let mut v = read_ext(&mut entry, "GNU long name")?;
                while v.last() == Some(&0) {
                    v.pop();
                }
                pending.long_name = Some(v);
                continue;
            }
            tar::EntryType::GNULongLink => {
                let mut v = read_ext(&mut entry, "GNU long link name")?;
                while v.last() == Some(&0) {
                    v.pop();
                }
                pending.long_link = Some(v);
                continue;
            }
            tar::EntryType::XHeader => {
                let v = read_ext(&mut entry, "PAX header")?;
                pending.pax = parse_pax(&v).map_err(err)?;
                continue;
            }
            tar::EntryType::XGlobalHeader => {
                read_ext(&mut entry, "PAX global header")?;
                continue;
            }
            tar::EntryType::GNUSparse => {
                return Err(err("GNU sparse files are not supported".into()));
            }
            _ => {}
        }
        let p = std::mem::take(&mut pending);
        let mut name = p.long_name.unwrap_or(raw_name);
        let mut link = p
            .long_link
            .or_else(|| header.link_name_bytes().map(|c| c.into_owned()));
        let mut meta = Meta {
            mode: header
                .mode()
                .map_err(|e| err(format!("bad mode field: {e}")))?
                & 0o7777,
            uid: header
                .uid()
                .map_err(|e| err(format!("bad uid field: {e}")))?,
            gid: header
                .gid()
                .map_err(|e| err(format!("bad gid field: {e}")))?,
            mtime: header
                .mtime()
                .map_err(|e| err(format!("bad mtime field: {e}")))? as i64,
            xattrs: Vec::new(),
        };
        let mut data_size = size;
        for (key, value) in p.pax {
            let text = || String::from_utf8_lossy(&value).into_owned();
            match key.as_str() {
                "path" => name = value,
                "linkpath" => link = Some(value),
                "uid" => meta.uid = text().parse().map_err(|_| err("bad PAX uid".into()))?,
                "gid" => meta.gid = text().parse().map_err(|_| err("bad PAX gid".into()))?,
                "mtime" => {
                    let t = text();
                    let secs = t.split('.').next().unwrap_or("0");
                    meta.mtime = secs.parse().map_err(|_| err("bad PAX mtime".into()))?;
                }
                "size" => {
                    data_size = text().parse().map_err(|_| err("bad PAX size".into()))?;
                    if data_size != size {
                        return Err(err("PAX size overrides the header size; unsupported".into()));
                    }
                }
                k => {
                    if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                        meta.xattrs.push((x.as_bytes().to_vec(), value));
                    }
                }
            }
        }
        meta.xattrs.sort();
        let path =
            normalize(&name).map_err(|m| (String::from_utf8_lossy(&name).into_owned(), m))?;
        let shown = String::from_utf8_lossy(&name).into_owned();
        let err = |m: String| (shown.clone(), m);
        let base = base_name(&path);
        if let Some(rest) = base.strip_prefix(b".wh.") {
            let parent = parent_of(&path).to_vec();
            let kind = if rest == b".wh..opq" {
                EntryKind::Opaque
            } else if rest.starts_with(b".wh.") {
                // aufs bookkeeping (.wh..wh.plnk etc.), meaningless outside aufs.
                continue;
            } else if rest.is_empty() || rest == b"." || rest == b".." {
                return Err(err("invalid whiteout name".into()));
            } else {
                EntryKind::Whiteout
            };
            let target = if kind == EntryKind::Opaque {
                parent
            } else {
                join(&parent, rest)
            };
            out.entries.push(Entry {
                path: target,
                kind,
                meta,
                header_size: 0,
            });
            continue;
        }
        let need_link = || -> Result<Vec<u8>, (String, String)> {
            link.clone()
                .filter(|l| !l.is_empty())
                .ok_or_else(|| err("link without a target".into()))
        };
        let kind = match et {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File {
                size: data_size,
                offset: entry.raw_file_position(),
            },
            // Old tars mark directories only by a trailing slash on a regular entry.
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink(need_link()?),
            tar::EntryType::Link => {
                let target =
                    normalize(&need_link()?).map_err(|m| err(format!("hardlink target: {m}")))?;
                if target.is_empty() {
                    return Err(err("hardlink to the root directory".into()));
                }
                EntryKind::Hardlink(target)
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                if et == tar::EntryType::Char {
                    EntryKind::Char { major, minor }
                } else {
                    EntryKind::Block { major, minor }
                }
            }
            tar::EntryType::Fifo => EntryKind::Fifo,
            other => {
                return Err(err(format!(
                    "unsupported tar entry type {:?}",
                    other.as_byte() as char
                )))
            }
        };
        let kind = match kind {
            EntryKind::File { .. } if name.ends_with(b"/") && size == 0 => EntryKind::Dir,
            k => k,
        };
        if path.is_empty() && kind != EntryKind::Dir {
            return Err(err("the root must be a directory".into()));
        }
        out.entries.push(Entry {
            path,
            kind,
            meta,
            header_size: size,
        });
    }
    out.tar_size = last_end;
    Ok(out)
}

/// PAX extended header records: `"<len> <key>=<value>\n"`.
fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("malformed PAX record")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("malformed PAX record length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("malformed PAX record length".into());
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without '='")?;
        let key = String::from_utf8_lossy(&record[..eq]).into_owned();
        out.push((key, record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records() {
        let r = parse_pax(b"20 path=a/very/long\n27 SCHILY.xattr.user.x=abc\n").unwrap();
        assert_eq!(r[0], ("path".to_string(), b"a/very/long".to_vec()));
        assert_eq!(r[1].0, "SCHILY.xattr.user.x");
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"x path=x\n").is_err());
    }
}
