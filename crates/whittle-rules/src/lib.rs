//! Junk: what the talk this project grew from says a deployed image does not need (docs, man
//! pages, locales, time zones, package manager caches, logs and temporary files), and the
//! user's own `--drop` globs. One classifier serves both `squash --drop-junk` and the junk
//! report of `inspect`, so what inspect promises is exactly what squash removes.

use std::collections::{BTreeMap, HashSet};

use globset::{Glob, GlobSet, GlobSetBuilder};
use whittle_fstree::{FsTree, Node};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JunkClass {
    Docs,
    Man,
    Info,
    Locales,
    Zoneinfo,
    PackageManager,
    Cache,
    Logs,
    Tmp,
    /// Matched a user `--drop` glob.
    UserDrop,
}

impl JunkClass {
    pub fn name(self) -> &'static str {
        match self {
            JunkClass::Docs => "docs",
            JunkClass::Man => "man",
            JunkClass::Info => "info",
            JunkClass::Locales => "locales",
            JunkClass::Zoneinfo => "zoneinfo",
            JunkClass::PackageManager => "package-manager",
            JunkClass::Cache => "cache",
            JunkClass::Logs => "logs",
            JunkClass::Tmp => "tmp",
            JunkClass::UserDrop => "user-drop",
        }
    }
}

/// Locales every program may ask for and that cost almost nothing.
const KEEP_LOCALES: &[&[u8]] = &[b"C", b"C.UTF-8", b"C.utf8", b"POSIX"];

/// Directories whose whole subtree is junk (the directory itself stays).
const SUBTREES: &[(&[u8], JunkClass)] = &[
    (b"usr/share/doc", JunkClass::Docs),
    (b"usr/share/doc-base", JunkClass::Docs),
    (b"usr/share/gtk-doc", JunkClass::Docs),
    (b"usr/share/man", JunkClass::Man),
    (b"usr/local/share/man", JunkClass::Man),
    (b"usr/share/info", JunkClass::Info),
    (b"usr/share/zoneinfo", JunkClass::Zoneinfo),
    (b"var/lib/apt/lists", JunkClass::PackageManager),
    (b"var/cache/apt", JunkClass::PackageManager),
];

/// Directories whose files are junk but whose subdirectories stay: programs expect their log,
/// cache and scratch directories to exist (nginx will not start without /var/log/nginx).
const FILES_ONLY: &[(&[u8], JunkClass)] = &[
    (b"var/cache", JunkClass::Cache),
    (b"var/log", JunkClass::Logs),
    (b"tmp", JunkClass::Tmp),
    (b"var/tmp", JunkClass::Tmp),
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClassTotal {
    pub files: u64,
    pub bytes: u64,
}

/// The classifier for one tree.
#[derive(Debug)]
pub struct Rules {
    junk: bool,
    globs: Option<GlobSet>,
    /// Zone files (and links on the way) that /etc/localtime needs, plus their parents.
    keep: HashSet<Vec<u8>>,
}

impl Rules {
    /// `drop_junk` enables the junk classes; `globs` are matched against `/absolute/paths`,
    /// and a matching directory takes its subtree with it.
    pub fn new(tree: &FsTree, drop_junk: bool, globs: &[String]) -> Result<Self, String> {
        let globs = if globs.is_empty() {
            None
        } else {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g).map_err(|e| format!("bad --drop glob {g:?}: {e}"))?);
            }
            Some(b.build().map_err(|e| e.to_string())?)
        };
        let mut keep = HashSet::new();
        for p in localtime_chain(tree) {
            let mut cur = p.as_slice();
            keep.insert(cur.to_vec());
            while let Some(i) = cur.iter().rposition(|&b| b == b'/') {
                cur = &cur[..i];
                keep.insert(cur.to_vec());
            }
        }
        Ok(Rules {
            junk: drop_junk,
            globs,
            keep,
        })
    }

    /// The class that drops `path`, if any.
    pub fn class_of(&self, path: &[u8], node: &Node) -> Option<JunkClass> {
        if let Some(g) = &self.globs {
            if g.is_match(whittle_fstree::display_path(path)) {
                return Some(JunkClass::UserDrop);
            }
        }
        if self.junk {
            return self.junk_class(path, node);
        }
        None
    }

    /// The junk class of `path` whether or not junk dropping is on (for reports).
    pub fn junk_class(&self, path: &[u8], node: &Node) -> Option<JunkClass> {
        for (root, class) in SUBTREES {
            if under(path, root) {
                if *class == JunkClass::Zoneinfo && self.keep.contains(path) {
                    return None;
                }
                return Some(*class);
            }
        }
        if let Some(c) = locale_class(path, node.is_dir()) {
            return Some(c);
        }
        if let Some(rest) = path.strip_prefix(b"var/lib/dpkg/".as_slice()) {
            if rest.ends_with(b"-old") && !rest.contains(&b'/') {
                return Some(JunkClass::PackageManager);
            }
        }
        if let Some(rest) = path.strip_prefix(b"var/cache/debconf/".as_slice()) {
            if rest.ends_with(b"-old") {
                return Some(JunkClass::PackageManager);
            }
        }
        if !node.is_dir() {
            for (root, class) in FILES_ONLY {
                if under(path, root) {
                    return Some(*class);
                }
            }
        }
        None
    }

    /// Removes everything these rules drop from `tree`; returns totals per class.
    pub fn apply(&self, tree: &mut FsTree) -> BTreeMap<JunkClass, ClassTotal> {
        let mut totals: BTreeMap<JunkClass, ClassTotal> = BTreeMap::new();
        let mut dropped_under: Option<(Vec<u8>, JunkClass)> = None;
        tree.retain(|path, node| {
            // Descendants of a dropped directory are counted under that directory's class
            // (the tree drops them with it whatever this returns).
            if let Some((dir, class)) = &dropped_under {
                if under(path, dir) {
                    if !node.is_dir() {
                        let t = totals.entry(*class).or_default();
                        t.files += 1;
                        t.bytes += node.size();
                    }
                    return false;
                }
            }
            match self.class_of(path, node) {
                Some(class) => {
                    if node.is_dir() {
                        dropped_under = Some((path.to_vec(), class));
                    } else {
                        let t = totals.entry(class).or_default();
                        t.files += 1;
                        t.bytes += node.size();
                    }
                    false
                }
                None => true,
            }
        });
        totals
    }

    /// What [`Rules::apply`] would drop, without changing the tree.
    pub fn measure(&self, tree: &FsTree) -> BTreeMap<JunkClass, ClassTotal> {
        let mut copy = tree.clone();
        self.apply(&mut copy)
    }
}

fn under(path: &[u8], root: &[u8]) -> bool {
    path.len() > root.len() && path.starts_with(root) && path[root.len()] == b'/'
}

/// `usr/share/locale/<lang>/…` and `usr/lib/locale/<lang>/…` for every language but C and
/// POSIX. Plain files directly in `usr/share/locale` (locale.alias) are kept; the compiled
/// `usr/lib/locale/locale-archive` holds every generated locale and is junk.
fn locale_class(path: &[u8], is_dir: bool) -> Option<JunkClass> {
    for root in [b"usr/share/locale".as_slice(), b"usr/lib/locale".as_slice()] {
        if !under(path, root) {
            continue;
        }
        let rest = &path[root.len() + 1..];
        let first = rest.split(|&b| b == b'/').next().unwrap_or(rest);
        if KEEP_LOCALES.contains(&first) {
            return None;
        }
        let top_level_file = rest == first && !is_dir;
        if top_level_file && root == b"usr/share/locale" {
            return None;
        }
        return Some(JunkClass::Locales);
    }
    None
}

/// The paths /etc/localtime resolves through (it is usually a symlink into zoneinfo, whose
/// target may itself be a link).
fn localtime_chain(tree: &FsTree) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = b"etc/localtime".to_vec();
    for _ in 0..40 {
        let Some(node) = tree.get(&cur) else { break };
        let whittle_fstree::NodeKind::Symlink(target) = &node.kind else {
            out.push(cur);
            break;
        };
        out.push(cur.clone());
        let joined = if target.starts_with(b"/") {
            target.clone()
        } else {
            [whittle_fstree::parent_of(&cur), b"/", target].concat()
        };
        match whittle_fstree::normalize(&joined) {
            Ok(n) => cur = n,
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_rules() {
        let l = |p: &[u8], d| locale_class(p, d);
        assert_eq!(
            l(b"usr/share/locale/de/LC_MESSAGES/x.mo", false),
            Some(JunkClass::Locales)
        );
        assert_eq!(l(b"usr/share/locale/de", true), Some(JunkClass::Locales));
        assert_eq!(l(b"usr/share/locale/C.UTF-8/LC_MESSAGES/x.mo", false), None);
        assert_eq!(l(b"usr/share/locale/locale.alias", false), None);
        assert_eq!(l(b"usr/lib/locale/C.utf8/LC_CTYPE", false), None);
        assert_eq!(
            l(b"usr/lib/locale/locale-archive", false),
            Some(JunkClass::Locales)
        );
        assert_eq!(
            l(b"usr/lib/locale/en_US.utf8/LC_CTYPE", false),
            Some(JunkClass::Locales)
        );
        assert_eq!(l(b"usr/share/localex/de", true), None);
    }
}
