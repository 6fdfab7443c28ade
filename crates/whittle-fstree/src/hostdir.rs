//! A root file system directory on the host (`rootfs:DIR`) read as one layer. Nothing is
//! followed: symlinks are recorded as links, and content is read from the host path later.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::entry::{Entry, EntryKind};
use crate::tree::Meta;
use crate::{Error, Result};

/// Entries of `root` in sorted order, as if it were one layer tar.
pub(crate) fn read_dir_layer(root: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut inodes: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    walk(root, Vec::new(), &mut out, &mut inodes)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    rel: Vec<u8>,
    out: &mut Vec<Entry>,
    inodes: &mut HashMap<(u64, u64), Vec<u8>>,
) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|d| d.map(|d| d.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir, e))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let md = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        let rel_path = crate::path::join(&rel, name.as_encoded_bytes());
        let xattrs = read_xattrs(&path);
        let meta = Meta {
            mode: md.mode() & 0o7777,
            uid: md.uid() as u64,
            gid: md.gid() as u64,
            mtime: md.mtime(),
            xattrs,
        };
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
            EntryKind::Symlink(t.into_os_string().into_encoded_bytes())
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = inodes.get(&(md.dev(), md.ino())) {
                    out.push(Entry {
                        path: rel_path,
                        kind: EntryKind::Hardlink(first.clone()),
                        meta,
                        header_size: 0,
                    });
                    continue;
                }
                inodes.insert((md.dev(), md.ino()), rel_path.clone());
            }
            EntryKind::HostFile {
                size: md.len(),
                path: path.clone(),
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = md.rdev();
            let (major, minor) = (libc::major(rdev), libc::minor(rdev));
            if ft.is_char_device() {
                EntryKind::Char { major, minor }
            } else {
                EntryKind::Block { major, minor }
            }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            // Sockets cannot be stored in a layer; an engine skips them too.
            continue;
        };
        let header_size = match kind {
            EntryKind::HostFile { size, .. } => size,
            _ => 0,
        };
        let is_dir = kind == EntryKind::Dir;
        out.push(Entry {
            path: rel_path.clone(),
            kind,
            meta,
            header_size,
        });
        if is_dir {
            walk(&path, rel_path, out, inodes)?;
        }
    }
    Ok(())
}

fn read_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v = Vec::new();
    if let Ok(names) = xattr::list(path) {
        for n in names {
            if let Ok(Some(val)) = xattr::get(path, &n) {
                v.push((n.into_encoded_bytes(), val));
            }
        }
    }
    v.sort();
    v
}
