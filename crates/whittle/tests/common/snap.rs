//! Snapshots of a file tree — from a directory on disk (what `umoci unpack` made) or from a
//! tar stream (what `docker export` gives) — and a field-by-field comparison of two of them.
//!
//! A snapshot records, per path: type, permission bits (with setuid/setgid/sticky), uid,
//! gid, size and sha256 of regular files, link target, device numbers, mtime, xattrs, and
//! which other paths are hardlinks of the same file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::Digest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// `f` file, `d` directory, `l` symlink, `c` char device, `b` block device, `p` fifo.
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Regular files only (directory sizes are a file system detail).
    pub size: u64,
    pub sha256: String,
    pub link: String,
    pub dev: (u32, u32),
    pub mtime: i64,
    /// name → hex value.
    pub xattrs: BTreeMap<String, String>,
    /// Every path of this file's hardlink group (itself included), sorted; empty if alone.
    pub links: Vec<String>,
}

impl Info {
    fn new(kind: char) -> Info {
        Info {
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            sha256: String::new(),
            link: String::new(),
            dev: (0, 0),
            mtime: 0,
            xattrs: BTreeMap::new(),
            links: Vec::new(),
        }
    }
}

impl fmt::Display for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{} mtime={}",
            self.kind, self.mode, self.uid, self.gid, self.mtime
        )?;
        match self.kind {
            'f' => write!(f, " size={} sha256={:.12}", self.size, self.sha256)?,
            'l' => write!(f, " -> {}", self.link)?,
            'c' | 'b' => write!(f, " dev={}:{}", self.dev.0, self.dev.1)?,
            _ => {}
        }
        if !self.xattrs.is_empty() {
            write!(f, " xattrs={:?}", self.xattrs)?;
        }
        if !self.links.is_empty() {
            write!(f, " links={:?}", self.links)?;
        }
        Ok(())
    }
}

/// Path (absolute, `/a/b`) → info. The root itself is not included.
pub type Snapshot = BTreeMap<String, Info>;

/// Snapshot of a directory tree (not following symlinks), paths relative to `root`.
pub fn from_dir(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    walk(root, root, &mut out, &mut inodes);
    link_groups(&mut out, inodes.into_values());
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut Snapshot,
    inodes: &mut HashMap<(u64, u64), Vec<String>>,
) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = format!(
            "/{}",
            String::from_utf8_lossy(p.strip_prefix(root).unwrap().as_os_str().as_bytes())
        );
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_file() {
            'f'
        } else if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        let mut info = Info::new(kind);
        info.mode = m.mode() & 0o7777;
        info.uid = m.uid() as u64;
        info.gid = m.gid() as u64;
        info.mtime = m.mtime();
        match kind {
            'f' => {
                info.size = m.len();
                info.sha256 = super::sha256_file(&p);
                if m.nlink() > 1 {
                    inodes
                        .entry((m.dev(), m.ino()))
                        .or_default()
                        .push(rel.clone());
                }
            }
            'l' => {
                info.link =
                    String::from_utf8_lossy(std::fs::read_link(&p).unwrap().as_os_str().as_bytes())
                        .into_owned()
            }
            'c' | 'b' => info.dev = split_dev(m.rdev()),
            _ => {}
        }
        if kind != 'l' {
            if let Ok(names) = xattr::list(&p) {
                for n in names {
                    if let Ok(Some(v)) = xattr::get(&p, &n) {
                        info.xattrs
                            .insert(n.to_string_lossy().into_owned(), hex::encode(v));
                    }
                }
            }
        }
        out.insert(rel, info);
        if kind == 'd' {
            walk(root, &p, out, inodes);
        }
    }
}

/// glibc's `gnu_dev_major` / `gnu_dev_minor`.
fn split_dev(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff);
    (major as u32, minor as u32)
}

fn link_groups(out: &mut Snapshot, groups: impl Iterator<Item = Vec<String>>) {
    for mut g in groups {
        if g.len() < 2 {
            continue;
        }
        g.sort();
        for p in &g {
            if let Some(i) = out.get_mut(p) {
                i.links = g.clone();
            }
        }
    }
}

fn norm_tar_path(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let parts: Vec<&str> = s
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// Snapshot of a tar stream of a whole tree (`docker export`, a rootfs tar, or a single
/// flattened layer). Hardlink entries take their target's content and join its group;
/// whiteout files are kept as plain files (callers decide what they mean).
///
/// Extension headers are read here rather than by the `tar` crate, whose PAX parser splits
/// records at newlines and so fails on binary xattr values.
pub fn from_tar<R: Read>(r: R) -> Snapshot {
    let mut out = Snapshot::new();
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut ar = tar::Archive::new(r);
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    for e in ar.entries().expect("a tar stream").raw(true) {
        let mut e = e.expect("a tar entry");
        let h = e.header().clone();
        let et = h.entry_type();
        let mut data = Vec::new();
        match et {
            tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                e.read_to_end(&mut data).unwrap();
                match et {
                    tar::EntryType::XHeader => pax = parse_pax(&data),
                    tar::EntryType::GNULongName => long_name = Some(trim_nul(data)),
                    _ => long_link = Some(trim_nul(data)),
                }
                continue;
            }
            tar::EntryType::XGlobalHeader => continue,
            _ => {}
        }
        let records = std::mem::take(&mut pax);
        let mut name = long_name
            .take()
            .unwrap_or_else(|| h.path_bytes().into_owned());
        let mut link = long_link
            .take()
            .or_else(|| h.link_name_bytes().map(|l| l.into_owned()))
            .unwrap_or_default();
        let mut xattrs = BTreeMap::new();
        let mut mtime = h.mtime().unwrap() as i64;
        let mut uid = h.uid().unwrap();
        let mut gid = h.gid().unwrap();
        for (key, value) in records {
            let text = String::from_utf8_lossy(&value).into_owned();
            match key.as_str() {
                "path" => name = value,
                "linkpath" => link = value,
                "mtime" => mtime = text.split('.').next().unwrap().parse().unwrap_or(mtime),
                "uid" => uid = text.parse().unwrap_or(uid),
                "gid" => gid = text.parse().unwrap_or(gid),
                k => {
                    if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                        xattrs.insert(x.to_string(), hex::encode(&value));
                    }
                }
            }
        }
        let path = norm_tar_path(&name);
        if path == "/" {
            continue;
        }
        let kind = match et {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Link => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            other => panic!("{path}: unexpected tar entry type {other:?}"),
        };
        let kind = if kind == 'f' && name.ends_with(b"/") {
            'd'
        } else {
            kind
        };
        // A later duplicate replaces an earlier entry (and leaves its hardlink group).
        for g in groups.values_mut() {
            g.remove(&path);
        }
        if et == tar::EntryType::Link {
            let target = norm_tar_path(&link);
            let t = out
                .get(&target)
                .unwrap_or_else(|| panic!("{path}: hardlink to {target}, not seen before"))
                .clone();
            let root = groups
                .iter()
                .find(|(_, g)| g.contains(&target))
                .map(|(k, _)| k.clone())
                .unwrap_or(target.clone());
            let g = groups.entry(root).or_default();
            g.insert(target);
            g.insert(path.clone());
            out.insert(path, t);
            continue;
        }
        let mut info = Info::new(kind);
        info.mode = h.mode().unwrap() & 0o7777;
        info.uid = uid;
        info.gid = gid;
        info.mtime = mtime;
        info.xattrs = xattrs;
        match kind {
            'f' => {
                let mut hasher = sha2::Sha256::new();
                info.size = std::io::copy(&mut e, &mut hasher).unwrap();
                info.sha256 = hex::encode(hasher.finalize());
            }
            'l' => info.link = String::from_utf8_lossy(&link).into_owned(),
            'c' | 'b' => {
                info.dev = (
                    h.device_major().unwrap().unwrap_or(0),
                    h.device_minor().unwrap().unwrap_or(0),
                )
            }
            _ => {}
        }
        out.insert(path, info);
    }
    let groups: Vec<Vec<String>> = groups
        .into_values()
        .map(|g| g.into_iter().filter(|p| out.contains_key(p)).collect())
        .collect();
    link_groups(&mut out, groups.into_iter());
    out
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// PAX records, `"<len> <key>=<value>\n"`, values may hold any byte.
pub fn parse_pax(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .expect("PAX record length");
        let len: usize = std::str::from_utf8(&data[..sp]).unwrap().parse().unwrap();
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=').expect("PAX key=value");
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            rec[eq + 1..].to_vec(),
        ));
        data = &data[len..];
    }
    out
}

/// Which fields to compare.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    pub mtime: bool,
    pub xattrs: bool,
    /// Compare mtimes of directories too (some extractors touch a directory when they
    /// create entries in it).
    pub dir_mtime: bool,
    /// A directory of the original whose mtime is later than this was made by the engine
    /// (Docker extracts each layer into its own directory and creates the parents a layer
    /// does not list with the time of loading); its mtime says nothing about the image.
    pub engine_dirs_after: Option<i64>,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            mtime: true,
            xattrs: true,
            dir_mtime: true,
            engine_dirs_after: None,
        }
    }
}

/// Human-readable differences between `want` (the oracle's view of the original) and `got`
/// (the same oracle's view of whittle's output). Empty means equal.
pub fn diff(want: &Snapshot, got: &Snapshot, c: Compare) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    for k in keys {
        match (want.get(k), got.get(k)) {
            (Some(_), None) => out.push(format!("{k}: missing (want {})", want[k])),
            (None, Some(g)) => out.push(format!("{k}: unexpected (got {g})")),
            (Some(w), Some(g)) => {
                let mut w = w.clone();
                let mut g = g.clone();
                let engine_made = w.kind == 'd'
                    && g.kind == 'd'
                    && c.engine_dirs_after.is_some_and(|t| w.mtime > t);
                if !c.mtime || (!c.dir_mtime && w.kind == 'd') || engine_made {
                    w.mtime = 0;
                    g.mtime = 0;
                }
                if !c.xattrs {
                    w.xattrs.clear();
                    g.xattrs.clear();
                }
                if w != g {
                    out.push(format!("{k}:\n      want {w}\n      got  {g}"));
                }
            }
            (None, None) => unreachable!(),
        }
    }
    out
}
