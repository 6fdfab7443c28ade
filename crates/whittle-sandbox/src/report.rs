//! What a run found: the recorders' raw observations, and the report built from them.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use whittle_fstree::{FsTree, NodeKind};

/// How a path was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Opened for reading, or read (fanotify), or mapped.
    Read,
    /// Opened for writing, truncated, or its metadata changed.
    Write,
    /// Executed (execve, or opened for exec: the ELF interpreter).
    Exec,
    /// stat, lstat, statx, access, chdir, …: looked at without opening.
    Stat,
    Readlink,
    /// A directory opened (to list it).
    List,
    /// Created (mkdir, O_CREAT of a path that did not exist, link, symlink, rename target).
    Create,
    /// Removed or renamed away.
    Delete,
    /// A symlink followed on the way to a path that was used (found by resolving the
    /// recorded paths in the image; not a system call of its own).
    Follow,
}

impl Kind {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
    const ALL: [Kind; 9] = [
        Kind::Read,
        Kind::Write,
        Kind::Exec,
        Kind::Stat,
        Kind::Readlink,
        Kind::List,
        Kind::Create,
        Kind::Delete,
        Kind::Follow,
    ];
}

/// Result of one observed access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome1 {
    Ok,
    NotFound,
    /// Another errno.
    Failed,
    /// The process died before the call returned.
    Unknown,
}

/// Which recorder saw an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Ptrace = 1,
    Fanotify = 2,
    /// Added by resolving symlinks of recorded paths in the image.
    Resolved = 4,
}

#[derive(Debug, Clone, Default)]
pub struct Access {
    pub kinds: u16,
    pub ok: bool,
    pub enoent: bool,
    pub failed: bool,
    pub first_pid: u32,
    pub first_comm: String,
    pub sources: u8,
    /// Order of first sight, to pick the earliest process when merging.
    pub seq: u64,
}

/// Raw observations of one recorder: absolute paths inside the sandbox.
#[derive(Debug, Default)]
pub struct Recorder {
    pub map: HashMap<Vec<u8>, Access>,
    seq: u64,
}

impl Recorder {
    pub fn record(
        &mut self,
        path: Vec<u8>,
        kinds: &[Kind],
        result: Outcome1,
        pid: u32,
        comm: &mut dyn FnMut() -> String,
        source: Source,
    ) {
        self.seq += 1;
        let seq = self.seq;
        let a = self.map.entry(path).or_insert_with(|| Access {
            first_pid: pid,
            first_comm: comm(),
            seq,
            ..Access::default()
        });
        for k in kinds {
            // A failed open did not read or write anything; it was still a lookup.
            if result == Outcome1::Ok || matches!(k, Kind::Stat | Kind::Exec | Kind::Readlink) {
                a.kinds |= k.bit();
            } else {
                a.kinds |= Kind::Stat.bit();
            }
        }
        match result {
            Outcome1::Ok => a.ok = true,
            Outcome1::NotFound => a.enoent = true,
            Outcome1::Failed => a.failed = true,
            Outcome1::Unknown => {}
        }
        a.sources |= source as u8;
    }

    /// Folds `other` in, keeping the earliest first process.
    pub fn merge(&mut self, other: Recorder, offset: u64) {
        for (p, b) in other.map {
            match self.map.get_mut(&p) {
                Some(a) => {
                    a.kinds |= b.kinds;
                    a.ok |= b.ok;
                    a.enoent |= b.enoent;
                    a.failed |= b.failed;
                    a.sources |= b.sources;
                    if b.seq + offset < a.seq && b.first_pid != 0 {
                        a.first_pid = b.first_pid;
                        a.first_comm = b.first_comm;
                    }
                }
                None => {
                    let mut b = b;
                    b.seq += offset;
                    self.map.insert(p, b);
                }
            }
        }
    }
}

/// One path in the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileRecord {
    /// Absolute path inside the container (lossy UTF-8 for JSON).
    pub path: String,
    /// The exact bytes of the path (file names need not be UTF-8); not in the JSON.
    #[serde(skip)]
    pub raw_path: Vec<u8>,
    pub kinds: Vec<Kind>,
    /// At least one access succeeded.
    pub ok: bool,
    /// At least one lookup failed with ENOENT (the app looked for it and it was not there).
    pub enoent: bool,
    /// The path exists in the image.
    pub in_image: bool,
    /// What the image has at the path: file, dir, symlink, char, block, fifo; null if absent.
    pub node: Option<&'static str>,
    /// Size in the image (regular files).
    pub size: u64,
    pub first: FirstProcess,
    /// Which recorders saw it: ptrace, fanotify, resolved.
    pub via: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FirstProcess {
    /// Host pid.
    pub pid: u32,
    pub comm: String,
}

/// Pseudo file systems the sandbox mounts itself; their paths say nothing about the image.
fn is_pseudo(path: &[u8]) -> bool {
    for top in [&b"/proc"[..], b"/sys", b"/dev"] {
        if path == top || (path.starts_with(top) && path.get(top.len()) == Some(&b'/')) {
            return true;
        }
    }
    false
}

/// What the image has at a path, as reports name it (whiteouts are absence).
fn node_name(k: &NodeKind) -> Option<&'static str> {
    (*k != NodeKind::Whiteout).then(|| k.name())
}

/// Lexical normalization of an absolute path: folds `.`, `..`, repeated `/`.
pub fn normalize_abs(p: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for c in parts {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Resolves `path` in the image, returning every symlink followed (image keys) and the final
/// key, if resolution stays in the image.
fn resolve(tree: &FsTree, path: &[u8]) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
    let mut links = Vec::new();
    let mut todo: Vec<Vec<u8>> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut cur: Vec<u8> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_slice() {
            b"." => continue,
            b".." => {
                cur = whittle_fstree::parent_of(&cur).to_vec();
                continue;
            }
            _ => {}
        }
        let mut next = cur.clone();
        if !next.is_empty() {
            next.push(b'/');
        }
        next.extend_from_slice(&c);
        match tree.get(&next).map(|n| &n.kind) {
            Some(NodeKind::Symlink(t)) => {
                hops += 1;
                if hops > 40 {
                    return (links, None);
                }
                links.push(next);
                if t.starts_with(b"/") {
                    cur.clear();
                }
                for c in t.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev() {
                    todo.push(c.to_vec());
                }
            }
            Some(_) => cur = next,
            None => return (links, None),
        }
    }
    (links, Some(cur))
}

/// Builds the sorted file list from the merged recorder.
pub fn build_files(tree: &FsTree, rec: Recorder) -> (Vec<FileRecord>, u64) {
    let mut map: BTreeMap<Vec<u8>, Access> = BTreeMap::new();
    let mut pseudo = 0u64;
    for (p, a) in rec.map {
        let p = normalize_abs(&p);
        if is_pseudo(&p) {
            pseudo += 1;
            continue;
        }
        match map.get_mut(&p) {
            Some(b) => {
                b.kinds |= a.kinds;
                b.ok |= a.ok;
                b.enoent |= a.enoent;
                b.sources |= a.sources;
            }
            None => {
                map.insert(p, a);
            }
        }
    }
    // Symlinks on the way to every used path, and the paths they lead to.
    let used: Vec<(Vec<u8>, Access)> = map
        .iter()
        .filter(|(_, a)| a.ok)
        .map(|(p, a)| (p.clone(), a.clone()))
        .collect();
    for (p, a) in used {
        let (links, target) = resolve(tree, &p[1..]);
        for l in links {
            let key = [b"/".as_slice(), &l].concat();
            let e = map.entry(key).or_insert_with(|| Access {
                first_pid: a.first_pid,
                first_comm: a.first_comm.clone(),
                ..Access::default()
            });
            e.kinds |= Kind::Follow.bit();
            e.ok = true;
            e.sources |= Source::Resolved as u8;
        }
        if let Some(t) = target {
            let key = [b"/".as_slice(), &t].concat();
            if key != p {
                let e = map.entry(key).or_insert_with(|| Access {
                    first_pid: a.first_pid,
                    first_comm: a.first_comm.clone(),
                    ..Access::default()
                });
                e.kinds |= a.kinds & !Kind::Follow.bit();
                e.ok = true;
                e.sources |= Source::Resolved as u8;
            }
        }
    }
    let files = map
        .into_iter()
        .map(|(p, a)| {
            let node = tree.get(&p[1..]).filter(|n| n.kind != NodeKind::Whiteout);
            let mut kinds: Vec<Kind> = Kind::ALL
                .iter()
                .copied()
                .filter(|k| a.kinds & k.bit() != 0)
                .collect();
            // Reading a directory is listing it.
            if node.is_some_and(|n| n.is_dir()) && kinds.contains(&Kind::Read) {
                kinds.retain(|k| *k != Kind::Read);
                if !kinds.contains(&Kind::List) {
                    kinds.push(Kind::List);
                    kinds.sort();
                }
            }
            let mut via = Vec::new();
            for (s, n) in [
                (Source::Ptrace, "ptrace"),
                (Source::Fanotify, "fanotify"),
                (Source::Resolved, "resolved"),
            ] {
                if a.sources & s as u8 != 0 {
                    via.push(n);
                }
            }
            FileRecord {
                path: String::from_utf8_lossy(&p).into_owned(),
                raw_path: p.clone(),
                kinds,
                ok: a.ok,
                enoent: a.enoent,
                in_image: node.is_some(),
                node: node.and_then(|n| node_name(&n.kind)),
                size: node.map_or(0, |n| n.size()),
                first: FirstProcess {
                    pid: a.first_pid,
                    comm: a.first_comm,
                },
                via,
            }
        })
        .collect();
    (files, pseudo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_fstree::{Entry, EntryKind};

    fn e(path: &str, kind: EntryKind) -> Entry {
        Entry::new(path, kind, 0)
    }

    #[test]
    fn follows_symlinks_of_used_paths_and_drops_pseudo_files() {
        let mut tree = FsTree::new(false);
        tree.apply(
            0,
            &[
                e("usr", EntryKind::Dir),
                e("usr/lib", EntryKind::Dir),
                e(
                    "usr/lib/libc.so.6",
                    EntryKind::HostFile {
                        size: 7,
                        path: "/nonexistent".into(),
                    },
                ),
                e("lib", EntryKind::Symlink(b"usr/lib".to_vec())),
            ],
        )
        .unwrap();
        let mut r = Recorder::default();
        let mut comm = || "app".to_string();
        r.record(
            b"/lib/libc.so.6".to_vec(),
            &[Kind::Read],
            Outcome1::Ok,
            7,
            &mut comm,
            Source::Ptrace,
        );
        r.record(
            b"/etc/missing".to_vec(),
            &[Kind::Read],
            Outcome1::NotFound,
            7,
            &mut comm,
            Source::Ptrace,
        );
        r.record(
            b"/proc/self/maps".to_vec(),
            &[Kind::Read],
            Outcome1::Ok,
            7,
            &mut comm,
            Source::Ptrace,
        );
        let (files, pseudo) = build_files(&tree, r);
        assert_eq!(pseudo, 1);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/missing",
                "/lib",
                "/lib/libc.so.6",
                "/usr/lib/libc.so.6"
            ]
        );
        assert_eq!(files[0].kinds, vec![Kind::Stat]);
        assert!(files[0].enoent && !files[0].ok && !files[0].in_image);
        assert_eq!(files[1].kinds, vec![Kind::Follow]);
        assert_eq!(files[3].kinds, vec![Kind::Read]);
        assert_eq!(files[3].size, 7);
        assert_eq!(files[3].via, vec!["resolved"]);
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize_abs(b"/a/./b/../c//d"), b"/a/c/d");
        assert_eq!(normalize_abs(b"/.."), b"/");
    }
}
