//! The merged tree and the layer rules that build it.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;

use crate::entry::{Entry, EntryKind};
use crate::path::{base_name, join, parent_of};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// Permission bits including setuid, setgid and sticky (no file type bits).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    /// Sorted by name; values verbatim (e.g. `security.capability`).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Where a regular file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// `offset` in the uncompressed stream of layer `layer`.
    Layer { layer: u32, offset: u64 },
    /// A file of a root file system directory on the host.
    Host(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    File {
        size: u64,
        content: Content,
    },
    Dir {
        /// Created because a child needed a parent, not by an entry of its own.
        implicit: bool,
        /// Hides lower layers' children (only meaningful for partial flattening).
        opaque: bool,
    },
    Symlink(Vec<u8>),
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// Hides the same path in layers below the flattened range (partial flattening only).
    Whiteout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub meta: Meta,
    /// Paths sharing an inode are hardlinks of one file.
    pub inode: u64,
    /// The layer (index in the image) that last wrote this node.
    pub layer: u32,
}

impl NodeKind {
    /// `file`, `dir`, `symlink`, `char`, `block`, `fifo` or `whiteout`, as reports name them.
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::File { .. } => "file",
            NodeKind::Dir { .. } => "dir",
            NodeKind::Symlink(_) => "symlink",
            NodeKind::Char { .. } => "char",
            NodeKind::Block { .. } => "block",
            NodeKind::Fifo => "fifo",
            NodeKind::Whiteout => "whiteout",
        }
    }
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }
    pub fn size(&self) -> u64 {
        match self.kind {
            NodeKind::File { size, .. } => size,
            _ => 0,
        }
    }
}

/// Path → node for the whole merged file system. Invariant: every proper ancestor of a node
/// is a directory node in the map, so a lookup of a parent answers for the whole chain.
#[derive(Debug, Clone)]
pub struct FsTree {
    nodes: BTreeMap<Vec<u8>, Node>,
    next_inode: u64,
    /// Keep whiteout nodes and opaque flags for content below the flattened range.
    track_whiteouts: bool,
}

const MAX_SYMLINK_HOPS: u32 = 40;

impl FsTree {
    pub fn new(track_whiteouts: bool) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            Vec::new(),
            Node {
                kind: NodeKind::Dir {
                    implicit: true,
                    opaque: false,
                },
                meta: Meta {
                    mode: 0o755,
                    ..Meta::default()
                },
                inode: 0,
                layer: 0,
            },
        );
        FsTree {
            nodes,
            next_inode: 1,
            track_whiteouts,
        }
    }

    pub fn get(&self, path: &[u8]) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// All nodes in byte order of their paths (parents before children), root first.
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Node)> {
        self.nodes.iter()
    }

    /// The strict descendants of `path`.
    pub fn descendants<'a>(
        &'a self,
        path: &[u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Node)> + 'a {
        self.nodes.range::<Vec<u8>, _>(subtree_bounds(path))
    }

    /// The direct children of directory `path`, in name order. Skips over each child's
    /// subtree with a range seek, so listing `/usr` does not walk everything below it.
    pub fn children<'a>(&'a self, path: &[u8]) -> Vec<(&'a Vec<u8>, &'a Node)> {
        let mut out = Vec::new();
        let (mut lo, hi) = subtree_bounds(path);
        let start = if path.is_empty() { 0 } else { path.len() + 1 };
        loop {
            let mut range = self.nodes.range::<Vec<u8>, _>((lo, hi.clone()));
            let Some((k, n)) = range.next() else { break };
            match k[start..].iter().position(|&b| b == b'/') {
                // A child. Siblings can sort between it and its subtree (`a-b` between `a`
                // and `a/`), so the next key is looked at, not skipped.
                None => {
                    out.push((k, n));
                    lo = Bound::Excluded(k.clone());
                }
                // Inside child `c`'s subtree: everything under `c/` sorts before `c0`.
                Some(i) => {
                    let mut next = k[..start + i].to_vec();
                    next.push(b'0');
                    lo = Bound::Included(next);
                }
            }
        }
        out
    }

    /// Sum of regular file sizes at and under `path`.
    pub fn subtree_size(&self, path: &[u8]) -> u64 {
        self.get(path).map_or(0, Node::size)
            + self.descendants(path).map(|(_, n)| n.size()).sum::<u64>()
    }

    /// Removes nodes for which `keep` is false. Removing a directory removes its subtree;
    /// `keep` is still called for the nodes of that subtree (so callers can count them), but
    /// its answer for them is ignored.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &Node) -> bool) {
        let mut dropped_dirs: Vec<Vec<u8>> = Vec::new();
        self.nodes.retain(|p, n| {
            if p.is_empty() {
                return true;
            }
            let k = keep(p, n);
            // Byte order puts a directory's subtree right after it, except for siblings whose
            // names sort between (`a-b` between `a` and `a/`): check all dropped prefixes.
            if dropped_dirs
                .iter()
                .any(|d| p.len() > d.len() && p.starts_with(d) && p[d.len()] == b'/')
            {
                return false;
            }
            if !k && n.is_dir() {
                dropped_dirs.push(p.clone());
            }
            k
        });
    }

    fn new_inode(&mut self) -> u64 {
        self.next_inode += 1;
        self.next_inode
    }

    fn remove_subtree(&mut self, path: &[u8]) {
        self.nodes.remove(path);
        self.remove_children(path);
    }

    fn remove_children(&mut self, path: &[u8]) {
        let keys: Vec<Vec<u8>> = self
            .nodes
            .range::<Vec<u8>, _>(subtree_bounds(path))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.nodes.remove(&k);
        }
    }

    fn implicit_dir(&mut self, layer: u32) -> Node {
        Node {
            kind: NodeKind::Dir {
                implicit: true,
                opaque: false,
            },
            meta: Meta {
                mode: 0o755,
                ..Meta::default()
            },
            inode: self.new_inode(),
            layer,
        }
    }

    /// Applies one layer: whiteouts and opaque markers first (they hide lower layers only),
    /// then entries in archive order (a later duplicate wins).
    pub fn apply(&mut self, layer: u32, entries: &[Entry]) -> Result<(), (String, String)> {
        for e in entries.iter().filter(|e| e.kind == EntryKind::Opaque) {
            self.remove_children(&e.path);
            if self.track_whiteouts {
                let path = self.ensure_dir_chain(&e.path, layer)?;
                if let Some(Node {
                    kind: NodeKind::Dir { opaque, .. },
                    ..
                }) = self.nodes.get_mut(&path)
                {
                    *opaque = true;
                }
            }
        }
        for e in entries.iter().filter(|e| e.kind == EntryKind::Whiteout) {
            // A symlinked parent is followed, as for every other entry (`place`) and as an
            // engine removing the path would.
            let target = self
                .resolve_dir(parent_of(&e.path))
                .map(|dir| join(&dir, base_name(&e.path)));
            self.remove_subtree(target.as_deref().unwrap_or(&e.path));
            if self.track_whiteouts {
                let parent = self.ensure_dir_chain(parent_of(&e.path), layer)?;
                let path = join(&parent, base_name(&e.path));
                // The whiteout node replaces the whole subtree: nothing may sit below it.
                self.remove_subtree(&path);
                let inode = self.new_inode();
                self.nodes.insert(
                    path,
                    Node {
                        kind: NodeKind::Whiteout,
                        meta: Meta::default(),
                        inode,
                        layer,
                    },
                );
            }
        }
        for e in entries {
            self.add(layer, e)?;
        }
        Ok(())
    }

    fn add(&mut self, layer: u32, e: &Entry) -> Result<(), (String, String)> {
        let shown = || crate::path::display_path(&e.path);
        let node_kind = match &e.kind {
            EntryKind::Whiteout | EntryKind::Opaque => return Ok(()),
            EntryKind::File { size, offset } => NodeKind::File {
                size: *size,
                content: Content::Layer {
                    layer,
                    offset: *offset,
                },
            },
            EntryKind::HostFile { size, path } => NodeKind::File {
                size: *size,
                content: Content::Host(path.clone()),
            },
            EntryKind::Dir => NodeKind::Dir {
                implicit: false,
                opaque: false,
            },
            EntryKind::Symlink(t) => NodeKind::Symlink(t.clone()),
            EntryKind::Char { major, minor } => NodeKind::Char {
                major: *major,
                minor: *minor,
            },
            EntryKind::Block { major, minor } => NodeKind::Block {
                major: *major,
                minor: *minor,
            },
            EntryKind::Fifo => NodeKind::Fifo,
            EntryKind::Hardlink(target) => {
                // The link gets the target's inode as it is *now*: if an upper layer later
                // deletes or replaces the target, the link keeps this content.
                let Some(t) = self.nodes.get(target) else {
                    return Err((
                        shown(),
                        format!(
                            "hardlink target {} does not exist",
                            crate::path::display_path(target)
                        ),
                    ));
                };
                if t.is_dir() || t.kind == NodeKind::Whiteout {
                    return Err((
                        shown(),
                        format!(
                            "hardlink target {} is a directory",
                            crate::path::display_path(target)
                        ),
                    ));
                }
                // Same inode and content as the target, but this layer wrote the path.
                let mut node = t.clone();
                node.layer = layer;
                let path = self.place(&e.path, layer)?;
                if path.is_empty() {
                    return Err((shown(), "hardlink over the root".into()));
                }
                if self.nodes.get(&path).is_some_and(Node::is_dir) {
                    self.remove_subtree(&path);
                }
                self.nodes.insert(path, node);
                return Ok(());
            }
        };
        if e.path.is_empty() {
            let root = self.nodes.get_mut(&Vec::new()).expect("root exists");
            root.meta = e.meta.clone();
            root.kind = NodeKind::Dir {
                implicit: false,
                opaque: false,
            };
            return Ok(());
        }
        let path = self.place(&e.path, layer)?;
        let is_dir = matches!(node_kind, NodeKind::Dir { .. });
        match self.nodes.get_mut(&path) {
            Some(existing) if existing.is_dir() && is_dir => {
                // A directory over a directory merges: new metadata, children kept.
                let opaque = matches!(existing.kind, NodeKind::Dir { opaque: true, .. });
                existing.kind = NodeKind::Dir {
                    implicit: false,
                    opaque,
                };
                existing.meta = e.meta.clone();
                existing.layer = layer;
                return Ok(());
            }
            Some(existing) if existing.is_dir() => self.remove_subtree(&path),
            Some(existing) if existing.kind == NodeKind::Whiteout && is_dir => {
                // Re-created after a whiteout: lower children must stay hidden.
                let inode = self.new_inode();
                self.nodes.insert(
                    path,
                    Node {
                        kind: NodeKind::Dir {
                            implicit: false,
                            opaque: true,
                        },
                        meta: e.meta.clone(),
                        inode,
                        layer,
                    },
                );
                return Ok(());
            }
            _ => {}
        }
        let inode = self.new_inode();
        self.nodes.insert(
            path,
            Node {
                kind: node_kind,
                meta: e.meta.clone(),
                inode,
                layer,
            },
        );
        Ok(())
    }

    /// Makes sure the parent chain of `path` is directories and returns where the entry
    /// really lands: a parent that is a symlink is followed inside the image (as an engine
    /// extracting the layer in a chroot would), a missing parent is created, a non-directory
    /// parent is replaced by a directory.
    fn place(&mut self, path: &[u8], layer: u32) -> Result<Vec<u8>, (String, String)> {
        let parent = parent_of(path);
        if self.nodes.get(parent).is_some_and(Node::is_dir) {
            return Ok(path.to_vec());
        }
        let dir = self.ensure_dir_chain(parent, layer)?;
        Ok(join(&dir, base_name(path)))
    }

    fn ensure_dir_chain(&mut self, dir: &[u8], layer: u32) -> Result<Vec<u8>, (String, String)> {
        if self.nodes.get(dir).is_some_and(Node::is_dir) {
            return Ok(dir.to_vec());
        }
        let mut hops = 0;
        self.walk_dirs(Vec::new(), dir, layer, &mut hops, dir)
    }

    /// Where directory `dir` is now, following symlinks as [`Self::walk_dirs`] does but
    /// changing nothing: `None` when a component is missing or not a directory, or the symlinks
    /// loop or lead above the root.
    fn resolve_dir(&self, dir: &[u8]) -> Option<Vec<u8>> {
        let mut hops = 0;
        self.resolve_from(Vec::new(), dir, &mut hops)
    }

    fn resolve_from(&self, mut cur: Vec<u8>, rest: &[u8], hops: &mut u32) -> Option<Vec<u8>> {
        for comp in rest.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => continue,
                b".." => {
                    if cur.is_empty() {
                        return None;
                    }
                    cur = parent_of(&cur).to_vec();
                    continue;
                }
                _ => {}
            }
            let cand = join(&cur, comp);
            match &self.nodes.get(&cand)?.kind {
                NodeKind::Dir { .. } => cur = cand,
                NodeKind::Symlink(target) => {
                    *hops += 1;
                    if *hops > MAX_SYMLINK_HOPS {
                        return None;
                    }
                    let base = if target.starts_with(b"/") {
                        Vec::new()
                    } else {
                        cur.clone()
                    };
                    cur = self.resolve_from(base, target, hops)?;
                }
                _ => return None,
            }
        }
        Some(cur)
    }

    /// Walks `rest` from directory `cur`, creating and following as needed.
    fn walk_dirs(
        &mut self,
        mut cur: Vec<u8>,
        rest: &[u8],
        layer: u32,
        hops: &mut u32,
        orig: &[u8],
    ) -> Result<Vec<u8>, (String, String)> {
        let shown = || crate::path::display_path(orig);
        for comp in rest.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => continue,
                b".." => {
                    if cur.is_empty() {
                        return Err((
                            shown(),
                            "a symlink on the way leads above the image root".into(),
                        ));
                    }
                    cur = parent_of(&cur).to_vec();
                    continue;
                }
                _ => {}
            }
            let cand = join(&cur, comp);
            match self.nodes.get(&cand).map(|n| n.kind.clone()) {
                Some(NodeKind::Dir { .. }) => cur = cand,
                Some(NodeKind::Symlink(target)) => {
                    *hops += 1;
                    if *hops > MAX_SYMLINK_HOPS {
                        return Err((shown(), "too many levels of symbolic links".into()));
                    }
                    let base = if target.starts_with(b"/") {
                        Vec::new()
                    } else {
                        cur.clone()
                    };
                    cur = self.walk_dirs(base, &target, layer, hops, orig)?;
                }
                Some(_) => {
                    self.remove_subtree(&cand);
                    let d = self.implicit_dir(layer);
                    self.nodes.insert(cand.clone(), d);
                    cur = cand;
                }
                None => {
                    let d = self.implicit_dir(layer);
                    self.nodes.insert(cand.clone(), d);
                    cur = cand;
                }
            }
        }
        Ok(cur)
    }
}

/// Key range of the strict descendants of `path`: `path/` up to (not including) `path0`,
/// since `0` is the byte after `/`.
fn subtree_bounds(path: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    if path.is_empty() {
        return (Bound::Excluded(Vec::new()), Bound::Unbounded);
    }
    let mut lo = path.to_vec();
    lo.push(b'/');
    let mut hi = path.to_vec();
    hi.push(b'0');
    (Bound::Included(lo), Bound::Excluded(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            ..Meta::default()
        }
    }
    fn file(path: &str, offset: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File { size: 1, offset },
            meta: meta(0o644),
            header_size: 1,
        }
    }
    fn dir(path: &str) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::Dir,
            meta: meta(0o755),
            header_size: 0,
        }
    }
    fn special(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            meta: meta(0o777),
            header_size: 0,
        }
    }
    fn paths(t: &FsTree) -> Vec<String> {
        t.iter()
            .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty())
            .collect()
    }
    fn offset_of(t: &FsTree, p: &str) -> u64 {
        match &t.get(p.as_bytes()).unwrap().kind {
            NodeKind::File {
                content: Content::Layer { offset, .. },
                ..
            } => *offset,
            k => panic!("{p} is {k:?}"),
        }
    }

    #[test]
    fn whiteouts_hide_lower_layers_only() {
        let mut t = FsTree::new(false);
        t.apply(0, &[dir("a"), file("a/x", 1), file("a/y", 2), file("b", 3)])
            .unwrap();
        // The same layer whites out a/x and re-creates it: the new one survives.
        t.apply(
            1,
            &[
                special("a/x", EntryKind::Whiteout),
                file("a/x", 10),
                special("b", EntryKind::Whiteout),
            ],
        )
        .unwrap();
        assert_eq!(paths(&t), ["a", "a/x", "a/y"]);
        assert_eq!(offset_of(&t, "a/x"), 10);
    }

    #[test]
    fn opaque_applies_first_whatever_its_position() {
        let mut t = FsTree::new(false);
        t.apply(0, &[dir("d"), file("d/old", 1)]).unwrap();
        t.apply(
            1,
            &[dir("d"), file("d/new", 2), special("d", EntryKind::Opaque)],
        )
        .unwrap();
        assert_eq!(paths(&t), ["d", "d/new"]);
    }

    #[test]
    fn file_replaces_directory_subtree_and_back() {
        let mut t = FsTree::new(false);
        t.apply(0, &[dir("d"), dir("d/e"), file("d/e/f", 1), file("g", 2)])
            .unwrap();
        t.apply(1, &[file("d", 3), dir("g"), file("g/h", 4)])
            .unwrap();
        assert_eq!(paths(&t), ["d", "g", "g/h"]);
        assert!(!t.get(b"d").unwrap().is_dir());
        assert!(t.get(b"g").unwrap().is_dir());
    }

    #[test]
    fn hardlinks_keep_content_after_target_changes() {
        let mut t = FsTree::new(false);
        t.apply(
            0,
            &[
                file("t1", 1),
                file("t2", 2),
                special("l1", EntryKind::Hardlink(b"t1".to_vec())),
            ],
        )
        .unwrap();
        t.apply(
            1,
            &[
                special("l2", EntryKind::Hardlink(b"t2".to_vec())),
                special("t1", EntryKind::Whiteout),
            ],
        )
        .unwrap();
        t.apply(2, &[file("t2", 20)]).unwrap();
        assert_eq!(
            offset_of(&t, "l1"),
            1,
            "target deleted: the link keeps its content"
        );
        assert_eq!(
            offset_of(&t, "l2"),
            2,
            "target overwritten: the link keeps the old content"
        );
        assert_eq!(offset_of(&t, "t2"), 20);
        assert_ne!(t.get(b"l2").unwrap().inode, t.get(b"t2").unwrap().inode);
        let e = t
            .apply(
                3,
                &[special("l3", EntryKind::Hardlink(b"missing".to_vec()))],
            )
            .unwrap_err();
        assert!(e.1.contains("does not exist"), "{e:?}");
    }

    #[test]
    fn duplicate_entries_last_wins() {
        let mut t = FsTree::new(false);
        t.apply(
            0,
            &[
                file("f", 1),
                file("f", 2),
                dir("d"),
                file("d/x", 3),
                file("d", 4),
            ],
        )
        .unwrap();
        assert_eq!(offset_of(&t, "f"), 2);
        assert_eq!(paths(&t), ["d", "f"]);
    }

    #[test]
    fn symlink_parents_are_followed_inside_the_root() {
        let mut t = FsTree::new(false);
        t.apply(
            0,
            &[
                dir("usr"),
                dir("usr/lib"),
                special("lib", EntryKind::Symlink(b"usr/lib".to_vec())),
            ],
        )
        .unwrap();
        t.apply(
            1,
            &[
                file("lib/libx.so", 5),
                special("abs", EntryKind::Symlink(b"/usr".to_vec())),
            ],
        )
        .unwrap();
        t.apply(2, &[file("abs/y", 6)]).unwrap();
        assert_eq!(offset_of(&t, "usr/lib/libx.so"), 5);
        assert_eq!(offset_of(&t, "usr/y"), 6);
        assert!(t
            .get(b"lib")
            .is_some_and(|n| matches!(n.kind, NodeKind::Symlink(_))));

        t.apply(
            3,
            &[special("evil", EntryKind::Symlink(b"../../..".to_vec()))],
        )
        .unwrap();
        let e = t.apply(4, &[file("evil/x", 7)]).unwrap_err();
        assert!(e.1.contains("above the image root"), "{e:?}");
        t.apply(5, &[special("loop", EntryKind::Symlink(b"loop".to_vec()))])
            .unwrap();
        let e = t.apply(6, &[file("loop/x", 8)]).unwrap_err();
        assert!(e.1.contains("too many levels"), "{e:?}");
    }

    /// Caught by the `layer_tar` fuzz target's tree invariant (every parent is a directory):
    /// `l/.wh.x` with `l -> d` left `d/x/y` in place, below a whiteout node when tracking
    /// whiteouts and visible in the merged view otherwise.
    #[test]
    fn whiteout_under_a_symlinked_parent_hides_the_resolved_subtree() {
        let lower = [
            dir("d"),
            dir("d/x"),
            file("d/x/y", 1),
            special("l", EntryKind::Symlink(b"d".to_vec())),
        ];
        for track in [false, true] {
            let mut t = FsTree::new(track);
            t.apply(0, &lower).unwrap();
            t.apply(1, &[special("l/x", EntryKind::Whiteout)]).unwrap();
            assert!(t.get(b"d/x/y").is_none(), "track={track}");
            assert_eq!(
                t.get(b"d/x").map(|n| &n.kind),
                track.then_some(&NodeKind::Whiteout),
                "track={track}"
            );
            for (p, _) in t.iter().filter(|(p, _)| !p.is_empty()) {
                assert!(t.get(parent_of(p)).is_some_and(Node::is_dir), "{p:?}");
            }
        }
    }

    /// Caught by the `layer_tar` fuzz target's check of `children` against iteration: after
    /// `a` the listing jumped to `a0` and lost the siblings that sort between `a` and `a/`
    /// (`a-b`, `libc.so.6` after `libc.so`, `python3.11` after `python3`).
    #[test]
    fn children_include_siblings_that_sort_before_a_subtree() {
        let mut t = FsTree::new(false);
        t.apply(
            0,
            &[
                dir("lib"),
                file("lib/libc.so", 1),
                file("lib/libc.so.6", 2),
                dir("lib/python3"),
                file("lib/python3/x", 3),
                dir("lib/python3.11"),
                file("lib/python3.11/y", 4),
                file("lib/python30", 5),
                file("lib-x", 6),
            ],
        )
        .unwrap();
        let names = |p: &[u8]| -> Vec<String> {
            t.children(p)
                .iter()
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        assert_eq!(
            names(b"lib"),
            [
                "lib/libc.so",
                "lib/libc.so.6",
                "lib/python3",
                "lib/python3.11",
                "lib/python30"
            ]
        );
        assert_eq!(names(b""), ["lib", "lib-x"]);
        assert_eq!(names(b"lib/python3"), ["lib/python3/x"]);
    }

    #[test]
    fn partial_flattening_keeps_whiteouts_for_lower_layers() {
        let mut t = FsTree::new(true);
        t.apply(
            1,
            &[
                special("gone", EntryKind::Whiteout),
                special("d", EntryKind::Opaque),
                file("d/n", 1),
            ],
        )
        .unwrap();
        t.apply(2, &[special("re", EntryKind::Whiteout)]).unwrap();
        t.apply(3, &[dir("re")]).unwrap();
        assert_eq!(t.get(b"gone").unwrap().kind, NodeKind::Whiteout);
        assert!(matches!(
            t.get(b"d").unwrap().kind,
            NodeKind::Dir { opaque: true, .. }
        ));
        assert!(
            matches!(
                t.get(b"re").unwrap().kind,
                NodeKind::Dir { opaque: true, .. }
            ),
            "re-created dir hides lower children"
        );
    }

    #[test]
    fn retain_drops_subtrees_and_reports_them() {
        let mut t = FsTree::new(false);
        t.apply(0, &[dir("a"), file("a/x", 1), file("a-b", 2), file("c", 3)])
            .unwrap();
        let mut seen = Vec::new();
        t.retain(|p, _| {
            seen.push(String::from_utf8_lossy(p).into_owned());
            p != b"a"
        });
        assert_eq!(paths(&t), ["a-b", "c"]);
        assert!(seen.contains(&"a/x".to_string()));
        assert_eq!(t.children(b"").len(), 2);
    }
}
