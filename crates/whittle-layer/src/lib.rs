//! Writing a tree as a layer tar, the same bytes every time for the same tree.
//!
//! Entries go out in byte order of their paths (a parent before its children), with numeric
//! owners only, no user or group names, no access or change times, and xattrs in a PAX header
//! sorted by name. Files that share an inode become one file and hardlinks to it, the first
//! path in that order carrying the content, so a link never precedes its target.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use whittle_fstree::{display_path, ContentStore, FsTree, Meta, NodeKind};

#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOptions {
    /// Write directories that exist only because a child needed them. A layer that will sit
    /// on top of untouched lower layers leaves them out, so it does not override the lower
    /// layers' real metadata for those directories with invented defaults.
    pub skip_implicit_dirs: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub files: u64,
    pub file_bytes: u64,
}

/// Writes `tree` as an uncompressed tar into `out`.
pub fn write_layer(
    tree: &FsTree,
    store: &ContentStore,
    out: &mut dyn Write,
    opts: LayerOptions,
) -> io::Result<LayerStats> {
    let mut b = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, out));
    let mut stats = LayerStats::default();
    let mut first_path: HashMap<u64, &[u8]> = HashMap::new();
    for (path, node) in tree.iter() {
        if path.is_empty() {
            continue;
        }
        let name = Path::new(OsStr::from_bytes(path));
        let mut h = header(&node.meta);
        match &node.kind {
            NodeKind::Dir { implicit, opaque } => {
                if !(*implicit && opts.skip_implicit_dirs) {
                    xattrs(&mut b, &node.meta)?;
                    h.set_entry_type(tar::EntryType::Directory);
                    b.append_data(&mut h, name, io::empty())?;
                    stats.entries += 1;
                }
                if *opaque {
                    let marker = [path.as_slice(), b"/.wh..wh..opq"].concat();
                    marker_entry(&mut b, &marker)?;
                    stats.entries += 1;
                }
            }
            NodeKind::Whiteout => {
                let (dir, base) = match path.iter().rposition(|&c| c == b'/') {
                    Some(i) => (&path[..=i], &path[i + 1..]),
                    None => (&b""[..], path.as_slice()),
                };
                marker_entry(&mut b, &[dir, b".wh.", base].concat())?;
                stats.entries += 1;
            }
            NodeKind::File { size, .. } => {
                if let Some(target) = first_path.get(&node.inode) {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, name, Path::new(OsStr::from_bytes(target)))?;
                } else {
                    first_path.insert(node.inode, path);
                    xattrs(&mut b, &node.meta)?;
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(*size);
                    let reader = store.open(node).map_err(|e| with_path(path, e))?;
                    let reader = Exact {
                        inner: reader,
                        left: *size,
                        path,
                    };
                    b.append_data(&mut h, name, reader)
                        .map_err(|e| with_path(path, e))?;
                    stats.files += 1;
                    stats.file_bytes += size;
                }
                stats.entries += 1;
            }
            NodeKind::Symlink(target) => {
                xattrs(&mut b, &node.meta)?;
                h.set_entry_type(tar::EntryType::Symlink);
                // Verbatim: `append_link` would canonicalize the target (`a//b/./c` → `a/b/c`).
                symlink_target(&mut b, &mut h, target)?;
                b.append_data(&mut h, name, io::empty())?;
                stats.entries += 1;
            }
            NodeKind::Char { major, minor } | NodeKind::Block { major, minor } => {
                xattrs(&mut b, &node.meta)?;
                h.set_entry_type(if matches!(node.kind, NodeKind::Char { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                b.append_data(&mut h, name, io::empty())?;
                stats.entries += 1;
            }
            NodeKind::Fifo => {
                xattrs(&mut b, &node.meta)?;
                h.set_entry_type(tar::EntryType::Fifo);
                b.append_data(&mut h, name, io::empty())?;
                stats.entries += 1;
            }
        }
    }
    b.into_inner()?.flush()?;
    Ok(stats)
}

fn with_path(path: &[u8], e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", display_path(path)))
}

fn header(meta: &Meta) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(meta.mode & 0o7777);
    h.set_uid(meta.uid);
    h.set_gid(meta.gid);
    h.set_mtime(meta.mtime.max(0) as u64);
    h.set_size(0);
    h
}

/// Puts a symlink target into `h` byte for byte; one longer than the header field goes into a
/// GNU long link entry written before it.
fn symlink_target<W: Write>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    target: &[u8],
) -> io::Result<()> {
    if target.len() <= 100 {
        return h.set_link_name_literal(target);
    }
    let mut data = target.to_vec();
    data.push(0);
    let mut k = tar::Header::new_gnu();
    k.as_gnu_mut().expect("gnu header").name[..13].copy_from_slice(b"././@LongLink");
    k.set_mode(0o644);
    k.set_mtime(0);
    k.set_entry_type(tar::EntryType::GNULongLink);
    k.set_size(data.len() as u64);
    k.set_cksum();
    b.append(&k, &data[..])?;
    h.set_link_name_literal(&target[..100])
}

/// A whiteout or opaque marker: an empty regular file.
fn marker_entry<W: Write>(b: &mut tar::Builder<W>, name: &[u8]) -> io::Result<()> {
    let mut h = header(&Meta::default());
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, Path::new(OsStr::from_bytes(name)), io::empty())
}

/// xattrs travel in a PAX extended header (`SCHILY.xattr.<name>`), which GNU tar, Docker,
/// containerd and umoci all read. The tar crate writes no PAX headers itself.
fn xattrs<W: Write>(b: &mut tar::Builder<W>, meta: &Meta) -> io::Result<()> {
    if meta.xattrs.is_empty() {
        return Ok(());
    }
    let mut data = Vec::new();
    for (k, v) in &meta.xattrs {
        let body_len = b" SCHILY.xattr.".len() + k.len() + 1 + v.len() + 1;
        // The length prefix counts its own digits.
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len = len.to_string().len() + body_len;
        }
        data.extend_from_slice(len.to_string().as_bytes());
        data.extend_from_slice(b" SCHILY.xattr.");
        data.extend_from_slice(k);
        data.push(b'=');
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("././@PaxHeader")?;
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, &data[..])
}

/// Passes exactly `left` bytes through, failing loudly if the source is short (a layer whose
/// content ends early must not turn into a tar with a misaligned next header).
struct Exact<'a, R> {
    inner: R,
    left: u64,
    path: &'a [u8],
}

impl<R: Read> Read for Exact<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = out.len().min(self.left as usize);
        let n = self.inner.read(&mut out[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: content shorter than its header says",
                    display_path(self.path)
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_fstree::{parse_layer, Entry, EntryKind, Meta};

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            meta: Meta {
                mode: 0o4755,
                uid: 7,
                gid: 8,
                mtime: 1234,
                xattrs: vec![],
            },
            header_size: 0,
        }
    }

    #[test]
    fn round_trips_through_the_reader_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("content");
        std::fs::write(&host, b"hello").unwrap();
        let long = format!("d/{}", "n".repeat(150));
        let mut f = entry(
            "b/f",
            EntryKind::HostFile {
                size: 5,
                path: host.clone(),
            },
        );
        f.meta.xattrs = vec![(
            b"security.capability".to_vec(),
            vec![1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        )];
        let entries = vec![
            f,
            entry("a-link", EntryKind::Hardlink(b"b/f".to_vec())),
            entry("s", EntryKind::Symlink(long.clone().into_bytes())),
            entry(
                &long,
                EntryKind::HostFile {
                    size: 5,
                    path: host.clone(),
                },
            ),
            entry("dev/null", EntryKind::Char { major: 1, minor: 3 }),
            entry("p", EntryKind::Fifo),
            entry("o", EntryKind::Dir),
        ];
        let mut tree = FsTree::new(true);
        tree.apply(0, &entries).unwrap();
        tree.apply(
            1,
            &[
                entry("gone", EntryKind::Whiteout),
                entry("o", EntryKind::Opaque),
            ],
        )
        .unwrap();
        let store = ContentStore::default();
        let mut a = Vec::new();
        write_layer(&tree, &store, &mut a, LayerOptions::default()).unwrap();
        let mut b = Vec::new();
        write_layer(&tree, &store, &mut b, LayerOptions::default()).unwrap();
        assert_eq!(a, b, "same tree, same bytes");

        let parsed = parse_layer(&a[..]).unwrap().entries;
        let find = |p: &str| {
            parsed
                .iter()
                .find(|e| e.path == p.as_bytes())
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        // The first path of the inode in output order carries the content.
        assert!(matches!(
            find("a-link").kind,
            EntryKind::File { size: 5, .. }
        ));
        assert_eq!(find("b/f").kind, EntryKind::Hardlink(b"a-link".to_vec()));
        assert_eq!(find("a-link").meta.xattrs[0].0, b"security.capability");
        assert_eq!(find("a-link").meta.mode, 0o4755);
        assert_eq!(
            (
                find("a-link").meta.uid,
                find("a-link").meta.gid,
                find("a-link").meta.mtime
            ),
            (7, 8, 1234)
        );
        assert_eq!(
            find("s").kind,
            EntryKind::Symlink(long.clone().into_bytes())
        );
        assert!(matches!(find(&long).kind, EntryKind::File { size: 5, .. }));
        assert_eq!(
            find("dev/null").kind,
            EntryKind::Char { major: 1, minor: 3 }
        );
        assert_eq!(find("p").kind, EntryKind::Fifo);
        assert_eq!(find("gone").kind, EntryKind::Whiteout);
        assert!(parsed
            .iter()
            .any(|e| e.path == b"o" && e.kind == EntryKind::Opaque));
        // Parents come before children.
        let pos = |p: &str| parsed.iter().position(|e| e.path == p.as_bytes()).unwrap();
        assert!(pos("dev") < pos("dev/null"));
    }
}
