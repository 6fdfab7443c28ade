//! The selection: which paths of the fat image the slim image keeps, each with the reasons
//! that brought it in, and a class for every byte it drops.
//!
//! Evidence arrives from several places (the trace, the static closure, the config, the
//! user's includes, auto-include after a failed verification); all of it goes through
//! [`Selection::keep`], and [`Selection::complete`] then adds what any kept path needs to
//! resolve the same way it did in the fat image: every symlink on the way (and its target),
//! and every parent directory with its original metadata. Excludes are applied last and win
//! over everything, so a forced exclude stays excluded even when the slim run asks for it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use whittle_deps::image::ImageRootFs;
use whittle_deps::{Analyzer, Reason as StaticReason, Request, Resolver};
use whittle_fstree::{display_path, ContentStore, FsTree, Node, NodeKind};
use whittle_rules::Rules;
use whittle_sandbox::{FileRecord, Kind};

/// Why a path is kept. Serialized as `{"kind": "...", ...}` in the report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The fat run touched it.
    Trace {
        accesses: Vec<Kind>,
        /// The first process that did.
        by: String,
    },
    /// The static closure (ELF dependencies, scripts, loader and NSS configuration).
    Static { why: StaticKey },
    /// A symlink on the way to a kept path, or the target of a kept symlink.
    Symlink { to: String },
    /// A directory on the way to a kept path.
    ParentDir { of: String },
    /// Needed by the image config (`WorkingDir`, `Volumes`, `User`, `tmp`).
    Config { field: &'static str },
    /// A directory the app created files in or wrote into.
    WrittenByApp,
    /// `--include PATH` (or inside it) and `--include-exe NAME`.
    Include { arg: String },
    /// Added after verification round `round` found the slim run looking for it.
    AutoInclude { round: u32 },
    /// In the shared base layer of an image family (another member needs it).
    FamilyBase,
}

/// A static-closure reason, kept as JSON so the report shows the deps crate's own form
/// (`{"kind": "needed", "of": ..., "name": ...}`) and reasons stay orderable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StaticKey(String);

impl StaticKey {
    fn of(r: &StaticReason) -> StaticKey {
        StaticKey(serde_json::to_string(r).unwrap_or_default())
    }
}

impl Serialize for StaticKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v: serde_json::Value = serde_json::from_str(&self.0).unwrap_or_default();
        v.serialize(s)
    }
}

/// A reason list keeps at most this many entries per path (a libc kept for 300 programs
/// would otherwise list 300 `needed` reasons); the first ones are the most direct.
const MAX_REASONS: usize = 8;

/// The kept paths of one fat image.
#[derive(Debug)]
pub struct Selection<'a> {
    tree: &'a FsTree,
    store: &'a ContentStore,
    /// Tree keys (no leading `/`) → reasons.
    kept: BTreeMap<Vec<u8>, BTreeSet<Reason>>,
    excludes: Option<Rules>,
    /// Paths that matched an exclude (tree keys), for the report and for auto-include.
    excluded: BTreeSet<Vec<u8>>,
}

fn key_of(abs: &str) -> Vec<u8> {
    abs.trim_start_matches('/').as_bytes().to_vec()
}

impl<'a> Selection<'a> {
    /// `excludes` are globs on `/absolute/paths`; a matching directory excludes its subtree.
    pub fn new(
        tree: &'a FsTree,
        store: &'a ContentStore,
        excludes: &[String],
    ) -> Result<Selection<'a>, String> {
        let excludes = if excludes.is_empty() {
            None
        } else {
            Some(Rules::new(tree, false, excludes).map_err(|e| e.replace("--drop", "--exclude"))?)
        };
        Ok(Selection {
            tree,
            store,
            kept: BTreeMap::new(),
            excludes,
            excluded: BTreeSet::new(),
        })
    }

    /// A selection made earlier (its [`Selection::kept`]), to continue from: a family adds
    /// the shared base layer's paths to each member's own selection.
    pub fn restore(
        tree: &'a FsTree,
        store: &'a ContentStore,
        excludes: &[String],
        kept: BTreeMap<Vec<u8>, BTreeSet<Reason>>,
    ) -> Result<Selection<'a>, String> {
        let mut s = Selection::new(tree, store, excludes)?;
        s.kept = kept;
        Ok(s)
    }

    pub fn tree(&self) -> &FsTree {
        self.tree
    }

    /// Keeps `key` (a tree key) for `reason`, if the fat image has it. Returns whether it does.
    pub fn keep(&mut self, key: &[u8], reason: Reason) -> bool {
        match self.tree.get(key) {
            Some(n) if n.kind != NodeKind::Whiteout => {
                let set = self.kept.entry(key.to_vec()).or_default();
                if set.len() < MAX_REASONS {
                    set.insert(reason);
                }
                true
            }
            _ => false,
        }
    }

    /// Keeps an absolute path however it is spelled: through symlinks in its parents (the
    /// canonical path and every symlink crossed are kept). Returns whether the image has it.
    pub fn keep_spelled(&mut self, abs: &str, reason: Reason) -> bool {
        if self.keep(&key_of(abs), reason.clone()) {
            return true;
        }
        let fs = ImageRootFs {
            tree: self.tree,
            store: self.store,
        };
        let Ok(r) = Resolver::new(&fs).resolve(abs, "/", false) else {
            return false;
        };
        let (path, symlinks) = (r.path.clone(), r.symlinks.clone());
        for l in symlinks {
            self.keep(&key_of(&l), Reason::Symlink { to: path.clone() });
        }
        self.keep(&key_of(&path), reason)
    }

    /// [`Selection::keep_spelled`] for exact path bytes: a name that is not UTF-8 is kept
    /// when the image has it at that very path (the resolver works on UTF-8 paths).
    pub fn keep_raw(&mut self, abs: &[u8], reason: Reason) -> bool {
        match std::str::from_utf8(abs) {
            Ok(s) => self.keep_spelled(s, reason),
            Err(_) => self.keep(abs.strip_prefix(b"/").unwrap_or(abs), reason),
        }
    }

    /// The tree key `abs` names once symlinks in its parents are resolved (not the last
    /// component's), if the image has it.
    pub fn canonical(&self, abs: &[u8]) -> Option<Vec<u8>> {
        let key = abs.strip_prefix(b"/").unwrap_or(abs).to_vec();
        if self.tree.get(&key).is_some() {
            return Some(key);
        }
        let abs = std::str::from_utf8(abs).ok()?;
        let fs = ImageRootFs {
            tree: self.tree,
            store: self.store,
        };
        let r = Resolver::new(&fs).resolve(abs, "/", false).ok()?;
        Some(key_of(&r.path))
    }

    /// The program `name` as the shell would find it: `name` itself when it has a slash, else
    /// the first executable regular file `DIR/name` for DIR in `path` (symlinks followed).
    pub fn which(&self, name: &str, path: &str) -> Option<String> {
        let fs = ImageRootFs {
            tree: self.tree,
            store: self.store,
        };
        let resolver = Resolver::new(&fs);
        let candidates: Vec<String> = if name.contains('/') {
            vec![name.to_string()]
        } else {
            path.split(':')
                .filter(|d| d.starts_with('/'))
                .map(|d| format!("{}/{name}", d.trim_end_matches('/')))
                .collect()
        };
        candidates.into_iter().find(|c| {
            resolver
                .resolve(c, "/", true)
                .is_ok_and(|r| r.node.is_file() && r.node.mode() & 0o111 != 0)
        })
    }

    /// `--include-exe NAME`: the program found through `config`'s PATH, with its closure,
    /// kept for `reason`. Returns its path, or `None` when there is no such program.
    pub fn add_exe(
        &mut self,
        name: &str,
        config: &whittle_deps::ImageConfig,
        reason: Reason,
    ) -> Option<String> {
        let path = self.which(name, config.path_var())?;
        let req = Request {
            config: config.clone(),
            paths: vec![path.clone()],
        };
        self.add_closure(&req, |_| reason.clone());
        Some(path)
    }

    pub fn store(&self) -> &'a ContentStore {
        self.store
    }

    pub fn is_kept(&self, key: &[u8]) -> bool {
        self.kept.contains_key(key)
    }

    /// Whether `key` or one of its parent directories matches an exclude glob.
    pub fn is_excluded(&self, key: &[u8]) -> bool {
        let Some(rules) = &self.excludes else {
            return false;
        };
        let mut cur = key;
        loop {
            if let Some(n) = self.tree.get(cur) {
                if rules.class_of(cur, n).is_some() {
                    return true;
                }
            }
            match cur.iter().rposition(|&b| b == b'/') {
                Some(i) => cur = &cur[..i],
                None => return false,
            }
        }
    }

    /// The trace's evidence: every path of the image the fat run touched; directories the app
    /// created things in or wrote into; the programs it executed (returned, for the closure).
    pub fn add_trace(&mut self, files: &[FileRecord]) -> Vec<String> {
        let mut executed = Vec::new();
        for f in files {
            let key = f
                .raw_path
                .strip_prefix(b"/")
                .unwrap_or(&f.raw_path)
                .to_vec();
            if f.in_image {
                self.keep_raw(
                    &f.raw_path,
                    Reason::Trace {
                        accesses: f.kinds.clone(),
                        by: f.first.comm.clone(),
                    },
                );
                if f.kinds.contains(&Kind::Exec) && f.node == Some("file") {
                    executed.push(f.path.clone());
                }
            }
            let wrote = f
                .kinds
                .iter()
                .any(|k| matches!(k, Kind::Create | Kind::Write));
            if f.ok && wrote && !f.in_image {
                // The app made this path: the directory it made it in must exist in the slim
                // image, as must the nearest existing ancestor if it made a whole chain.
                let mut cur = key.as_slice();
                while let Some(i) = cur.iter().rposition(|&b| b == b'/') {
                    cur = &cur[..i];
                    if self.tree.get(cur).is_some_and(Node::is_dir) {
                        self.keep(cur, Reason::WrittenByApp);
                        break;
                    }
                }
            }
        }
        executed
    }

    /// The static closure of `req` (the entrypoint when `req.paths` is empty). Returns the
    /// closure's required-missing lines (for notes).
    pub fn add_closure(
        &mut self,
        req: &Request,
        wrap: impl Fn(StaticKey) -> Reason,
    ) -> Vec<String> {
        let fs = ImageRootFs {
            tree: self.tree,
            store: self.store,
        };
        let closure = Analyzer::new(&fs).closure(req);
        for (path, entry) in &closure.files {
            for r in &entry.reasons {
                self.keep(&key_of(path), wrap(StaticKey::of(r)));
            }
        }
        closure
            .missing
            .iter()
            .filter(|m| m.required)
            .map(|m| format!("{} (needed by {})", m.what, m.needed_by))
            .collect()
    }

    /// `--include PATH`: the path (a directory with its whole subtree), plus the closure of
    /// every program and library in it. Returns false when the image has no such path.
    pub fn add_include(&mut self, arg: &str, config: &whittle_deps::ImageConfig) -> bool {
        let reason = Reason::Include {
            arg: arg.to_string(),
        };
        // The path as spelled (symlinks crossed on the way kept too); it may itself be a
        // symlink whose target exists only at run time (`/dev/stdout`, a mounted secret).
        if !self.keep_spelled(arg, reason.clone()) {
            return false;
        }
        let fs = ImageRootFs {
            tree: self.tree,
            store: self.store,
        };
        let resolved = match Resolver::new(&fs).resolve(arg, "/", true) {
            Ok(r) => r.path.clone(),
            Err(_) => return true,
        };
        let rkey = key_of(&resolved);
        self.keep(&rkey, reason.clone());
        let mut programs = Vec::new();
        let mut inside: Vec<Vec<u8>> = vec![rkey.clone()];
        inside.extend(self.tree.descendants(&rkey).map(|(k, _)| k.clone()));
        for k in inside {
            let Some(n) = self.tree.get(&k) else { continue };
            self.keep(&k, reason.clone());
            if let NodeKind::File { .. } = n.kind {
                let name = display_path(&k);
                if n.meta.mode & 0o111 != 0 || name.contains(".so") {
                    programs.push(name);
                }
            }
        }
        if !programs.is_empty() {
            let req = Request {
                config: config.clone(),
                paths: programs,
            };
            let arg = arg.to_string();
            self.add_closure(&req, |_| Reason::Include { arg: arg.clone() });
        }
        true
    }

    /// What any kept path needs to resolve as in the fat image: symlinks on the way and the
    /// targets of kept symlinks, and all parent directories. Then drops excluded paths.
    pub fn complete(&mut self) {
        let fs = ImageRootFs {
            tree: self.tree,
            store: self.store,
        };
        let resolver = Resolver::new(&fs);
        let mut todo: Vec<Vec<u8>> = self.kept.keys().cloned().collect();
        let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
        while let Some(key) = todo.pop() {
            if !seen.insert(key.clone()) {
                continue;
            }
            let abs = display_path(&key);
            // Symlinks crossed on the way to the path (and, for a symlink, to its target).
            let follow = matches!(
                self.tree.get(&key).map(|n| &n.kind),
                Some(NodeKind::Symlink(_))
            );
            if let Ok(r) = resolver.resolve(&abs, "/", follow) {
                for s in &r.symlinks {
                    let k = key_of(s);
                    if self.keep(&k, Reason::Symlink { to: r.path.clone() }) {
                        todo.push(k);
                    }
                }
                if r.path != abs {
                    let k = key_of(&r.path);
                    if self.keep(&k, Reason::Symlink { to: r.path.clone() }) {
                        todo.push(k);
                    }
                }
            }
            // Parent directories with their own metadata.
            let mut cur = key.as_slice();
            while let Some(i) = cur.iter().rposition(|&b| b == b'/') {
                cur = &cur[..i];
                if self.kept.contains_key(cur) && seen.contains(cur) {
                    break;
                }
                if self.keep(cur, Reason::ParentDir { of: abs.clone() }) {
                    todo.push(cur.to_vec());
                }
            }
        }
        if self.excludes.is_some() {
            let out: Vec<Vec<u8>> = self
                .kept
                .keys()
                .filter(|k| self.is_excluded(k))
                .cloned()
                .collect();
            for k in out {
                self.kept.remove(&k);
                self.excluded.insert(k);
            }
        }
    }

    /// The slim tree: a copy of the fat tree with only the kept paths (parents of a kept path
    /// are kept by [`Selection::complete`], so the tree's invariant holds).
    pub fn slim_tree(&self) -> FsTree {
        let mut t = self.tree.clone();
        t.retain(|k, _| self.kept.contains_key(k));
        t
    }

    pub fn kept(&self) -> &BTreeMap<Vec<u8>, BTreeSet<Reason>> {
        &self.kept
    }

    pub fn excluded(&self) -> &BTreeSet<Vec<u8>> {
        &self.excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_fstree::{Entry, EntryKind};

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry::new(path, kind, 0o755)
    }

    fn tree() -> FsTree {
        let mut t = FsTree::new(false);
        t.apply(
            0,
            &[
                entry("usr", EntryKind::Dir),
                entry("usr/lib", EntryKind::Dir),
                entry("lib", EntryKind::Symlink(b"usr/lib".to_vec())),
                entry(
                    "usr/lib/libx.so.1",
                    EntryKind::Symlink(b"libx.so.1.2".to_vec()),
                ),
                entry(
                    "usr/lib/libx.so.1.2",
                    EntryKind::File { size: 0, offset: 0 },
                ),
                entry("usr/lib/other", EntryKind::File { size: 0, offset: 0 }),
                entry("opt", EntryKind::Dir),
                entry("opt/a", EntryKind::Dir),
                entry("opt/a/b", EntryKind::File { size: 0, offset: 0 }),
            ],
        )
        .unwrap();
        t
    }

    #[test]
    fn symlinks_on_the_way_and_parents_are_kept() {
        let t = tree();
        let store = ContentStore::default();
        let mut s = Selection::new(&t, &store, &[]).unwrap();
        // Spelled through the `lib` symlink, as a program may name it.
        assert!(s.keep_spelled("/lib/libx.so.1", Reason::WrittenByApp));
        assert!(!s.keep_spelled("/lib/nothing", Reason::WrittenByApp));
        s.complete();
        let kept: Vec<String> = s.kept().keys().map(|k| display_path(k)).collect();
        assert_eq!(
            kept,
            [
                "/lib",
                "/usr",
                "/usr/lib",
                "/usr/lib/libx.so.1",
                "/usr/lib/libx.so.1.2"
            ]
        );
        let t2 = s.slim_tree();
        assert!(t2.get(b"usr/lib/other").is_none());
        assert!(t2.get(b"usr/lib/libx.so.1.2").is_some());
    }

    #[test]
    fn traced_names_that_are_not_utf8_are_kept() {
        let mut t = FsTree::new(false);
        t.apply(
            0,
            &[
                entry("opt", EntryKind::Dir),
                Entry {
                    path: b"opt/caf\xe9.txt".to_vec(),
                    ..entry("x", EntryKind::File { size: 0, offset: 0 })
                },
            ],
        )
        .unwrap();
        let store = ContentStore::default();
        let mut s = Selection::new(&t, &store, &[]).unwrap();
        let raw = b"/opt/caf\xe9.txt".to_vec();
        s.add_trace(&[FileRecord {
            path: String::from_utf8_lossy(&raw).into_owned(),
            raw_path: raw,
            kinds: vec![Kind::Read],
            ok: true,
            enoent: false,
            in_image: true,
            node: Some("file"),
            size: 0,
            first: whittle_sandbox::FirstProcess {
                pid: 1,
                comm: "cat".into(),
            },
            via: vec!["ptrace"],
        }]);
        s.complete();
        assert!(s.is_kept(b"opt/caf\xe9.txt"));
        assert!(s.is_kept(b"opt"));
    }

    #[test]
    fn excludes_win_and_take_subtrees() {
        let t = tree();
        let store = ContentStore::default();
        let mut s = Selection::new(&t, &store, &["/opt/a".to_string()]).unwrap();
        s.keep(b"opt/a/b", Reason::WrittenByApp);
        s.complete();
        assert!(!s.is_kept(b"opt/a/b"));
        assert!(!s.is_kept(b"opt/a"));
        assert!(s.is_kept(b"opt"));
        assert!(s.excluded().contains(&b"opt/a/b".to_vec()));
    }
}
