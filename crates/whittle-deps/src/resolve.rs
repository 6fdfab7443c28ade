//! Path resolution inside the image, the way the kernel does it after `chroot(2)`.
//!
//! Why not let the host do it: an absolute symlink in the image (`/lib -> /usr/lib`) must
//! land in the image, and every symlink and directory crossed on the way is part of what a
//! slim image has to keep — drop `/lib -> usr/lib` from a merged-/usr image and nothing
//! starts. So resolution walks component by component and records them.
//!
//! Semantics follow `path_resolution(7)`: symlinks in any component, relative targets
//! relative to the link's directory, absolute targets from the image root, `..` of the
//! physical directory (so `..` after a followed link goes to the target's parent), `..` at
//! the root stays at the root, and ELOOP after 40 links.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::error::FsError;
use crate::rootfs::{NodeKind, RootFs};

/// The kernel's limit on symlinks followed in one lookup (`MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// The result of resolving a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The canonical path: no symlink in any component (but the last when not following).
    pub path: String,
    /// What is there.
    pub node: NodeKind,
    /// Every symlink followed, by its canonical location, in order.
    pub symlinks: Vec<String>,
    /// Every directory walked through (not `/`, not the final path), in order, deduplicated.
    pub dirs: Vec<String>,
}

/// Lexically normalises an image path: makes it absolute against `cwd` and removes empty
/// and `.` components. `..` is kept: its meaning depends on symlinks.
pub fn absolutize(path: &str, cwd: &str) -> String {
    let mut out = String::with_capacity(path.len() + cwd.len() + 1);
    let joined;
    let full = if path.starts_with('/') {
        path
    } else {
        joined = format!("{cwd}/{path}");
        &joined
    };
    for c in full.split('/') {
        if c.is_empty() || c == "." {
            continue;
        }
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The directory part of a canonical path (`/` for top-level names).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" || dir.is_empty() {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

type Memo = HashMap<(String, bool), Result<Rc<Resolved>, FsError>>;

/// Resolves paths of one [`RootFs`], caching `lstat` answers and whole resolutions (library
/// search probes the same directories thousands of times).
pub struct Resolver<'fs> {
    fs: &'fs dyn RootFs,
    lstat_cache: RefCell<HashMap<String, Option<NodeKind>>>,
    memo: RefCell<Memo>,
}

impl std::fmt::Debug for Resolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("cached_lstats", &self.lstat_cache.borrow().len())
            .field("cached_resolutions", &self.memo.borrow().len())
            .finish()
    }
}

impl<'fs> Resolver<'fs> {
    /// A resolver over `fs`.
    pub fn new(fs: &'fs dyn RootFs) -> Self {
        Resolver {
            fs,
            lstat_cache: RefCell::new(HashMap::new()),
            memo: RefCell::new(HashMap::new()),
        }
    }

    /// The view this resolver reads.
    pub fn fs(&self) -> &'fs dyn RootFs {
        self.fs
    }

    /// `lstat` of an already-canonical path, cached.
    pub fn lstat(&self, path: &str) -> Result<Option<NodeKind>, FsError> {
        let cached = self.lstat_cache.borrow().get(path).cloned();
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let node = self.fs.lstat(path)?;
        self.lstat_cache
            .borrow_mut()
            .insert(path.to_owned(), node.clone());
        Ok(node)
    }

    /// Resolves `path` (relative paths are relative to `cwd`), following a final symlink
    /// when `follow` is true, like `stat(2)` vs `lstat(2)`.
    pub fn resolve(&self, path: &str, cwd: &str, follow: bool) -> Result<Rc<Resolved>, FsError> {
        // A trailing slash asks for a directory, following a final link (as the kernel does).
        let must_be_dir = path.len() > 1 && path.ends_with('/');
        let abs = absolutize(path, cwd);
        let key = (abs, follow || must_be_dir);
        let cached = self.memo.borrow().get(&key).cloned();
        let result = match cached {
            Some(hit) => hit,
            None => {
                let result = self.resolve_uncached(&key.0, key.1).map(Rc::new);
                self.memo.borrow_mut().insert(key.clone(), result.clone());
                result
            }
        };
        match result {
            Ok(r) if must_be_dir && !r.node.is_dir() => Err(FsError::NotADirectory {
                path: key.0,
                component: r.path.clone(),
            }),
            other => other,
        }
    }

    fn resolve_uncached(&self, path: &str, follow: bool) -> Result<Resolved, FsError> {
        // Remaining components, last one on top of the stack.
        let mut stack: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .rev()
            .map(str::to_owned)
            .collect();
        let mut cur = String::from("/");
        let mut node = NodeKind::Dir { mode: 0o755 };
        if let Some(root) = self.lstat("/")? {
            node = root;
        }
        let mut links = 0usize;
        let mut symlinks = Vec::new();
        let mut dirs: Vec<String> = Vec::new();
        let mut last_link: Option<(String, String)> = None;

        while let Some(comp) = stack.pop() {
            if comp == ".." {
                // `..` needs the current node to be a directory (it is: we only descend
                // into directories) and stops at the root.
                cur = parent(&cur).to_owned();
                node = NodeKind::Dir { mode: 0 };
                if cur != "/" {
                    if let Some(n) = self.lstat(&cur)? {
                        node = n;
                    }
                }
                continue;
            }
            let cand = join(&cur, &comp);
            let is_last = stack.is_empty();
            let found = match self.lstat(&cand) {
                Ok(n) => n,
                Err(FsError::NotADirectory { .. }) => {
                    return Err(FsError::NotADirectory {
                        path: path.to_owned(),
                        component: cur,
                    })
                }
                Err(e) => return Err(e),
            };
            let Some(found) = found else {
                if let Some((link, target)) = last_link {
                    return Err(FsError::Dangling {
                        path: path.to_owned(),
                        link,
                        target,
                    });
                }
                return Err(FsError::NotFound {
                    path: path.to_owned(),
                    missing: cand,
                });
            };
            match found {
                NodeKind::Symlink { target } if !is_last || follow => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(FsError::Loop {
                            path: path.to_owned(),
                        });
                    }
                    if !symlinks.contains(&cand) {
                        symlinks.push(cand.clone());
                    }
                    if target.is_empty() {
                        return Err(FsError::Dangling {
                            path: path.to_owned(),
                            link: cand,
                            target,
                        });
                    }
                    if target.starts_with('/') {
                        cur = String::from("/");
                    }
                    stack.extend(
                        target
                            .split('/')
                            .filter(|c| !c.is_empty() && *c != ".")
                            .rev()
                            .map(str::to_owned),
                    );
                    last_link = Some((cand, target));
                    // The target may be "/" (or only dots): then the walk ends at the root.
                    if stack.is_empty() {
                        node = self.lstat("/")?.unwrap_or(NodeKind::Dir { mode: 0o755 });
                    }
                }
                NodeKind::Dir { .. } => {
                    if !is_last && !dirs.contains(&cand) {
                        dirs.push(cand.clone());
                    }
                    cur = cand;
                    node = found;
                }
                other => {
                    if !is_last {
                        return Err(FsError::NotADirectory {
                            path: path.to_owned(),
                            component: cand,
                        });
                    }
                    cur = cand;
                    node = other;
                }
            }
        }
        // A walk that ended inside a directory reached through `..` or a link may have
        // recorded the final directory itself; it is the result, not a parent.
        dirs.retain(|d| *d != cur);
        Ok(Resolved {
            path: cur,
            node,
            symlinks,
            dirs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::DirRootFs;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::create_dir_all(r.join("etc/alternatives")).unwrap();
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"x").unwrap();
        std::fs::write(r.join("usr/bin/dash"), b"x").unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("dash", r.join("usr/bin/sh")).unwrap();
        symlink("/etc/alternatives/awk", r.join("usr/bin/awk")).unwrap();
        symlink("/usr/bin/dash", r.join("etc/alternatives/awk")).unwrap();
        symlink("../../../../../../../usr/bin/dash", r.join("usr/bin/up")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        symlink("nowhere", r.join("dangling")).unwrap();
        symlink("/", r.join("rootlink")).unwrap();
        // The host has /etc/hostname; the image does not: an absolute link must not see it.
        symlink("/etc/hostname", r.join("escape")).unwrap();
        symlink("../../../../etc/hostname", r.join("usr/escape2")).unwrap();
        tmp
    }

    #[test]
    fn resolves_directory_links_and_records_them() {
        let tmp = tree();
        let fs = DirRootFs::new(tmp.path()).unwrap();
        let r = Resolver::new(&fs);
        let res = r
            .resolve("/lib/x86_64-linux-gnu/libc.so.6", "/", true)
            .unwrap();
        assert_eq!(res.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(res.symlinks, vec!["/lib"]);
        assert_eq!(
            res.dirs,
            vec!["/usr", "/usr/lib", "/usr/lib/x86_64-linux-gnu"]
        );
    }

    #[test]
    fn follows_absolute_chains_and_dotdot_like_the_kernel() {
        let tmp = tree();
        let fs = DirRootFs::new(tmp.path()).unwrap();
        let r = Resolver::new(&fs);
        let res = r.resolve("/bin/awk", "/", true).unwrap();
        assert_eq!(res.path, "/usr/bin/dash");
        assert_eq!(
            res.symlinks,
            vec!["/bin", "/usr/bin/awk", "/etc/alternatives/awk"]
        );
        // `..` beyond the root stays at the root.
        let res = r.resolve("/usr/bin/up", "/", true).unwrap();
        assert_eq!(res.path, "/usr/bin/dash");
        // `..` after a followed directory link is the target's parent.
        let res = r
            .resolve("/bin/../lib/x86_64-linux-gnu", "/", true)
            .unwrap();
        assert_eq!(res.path, "/usr/lib/x86_64-linux-gnu");
        let res = r.resolve("sh", "/bin", false).unwrap();
        assert_eq!(res.path, "/usr/bin/sh");
        assert!(matches!(res.node, NodeKind::Symlink { .. }));
        let res = r.resolve("/rootlink/rootlink/usr", "/", true).unwrap();
        assert_eq!(res.path, "/usr");
        let res = r.resolve("/rootlink", "/", true).unwrap();
        assert_eq!(res.path, "/");
        assert!(res.node.is_dir());
    }

    #[test]
    fn reports_loops_dangling_and_notdir() {
        let tmp = tree();
        let fs = DirRootFs::new(tmp.path()).unwrap();
        let r = Resolver::new(&fs);
        assert!(matches!(
            r.resolve("/loop1", "/", true),
            Err(FsError::Loop { .. })
        ));
        assert!(r.resolve("/loop1", "/", false).is_ok());
        assert!(matches!(
            r.resolve("/dangling", "/", true),
            Err(FsError::Dangling { .. })
        ));
        assert!(matches!(
            r.resolve("/usr/bin/dash/x", "/", true),
            Err(FsError::NotADirectory { .. })
        ));
        assert!(matches!(
            r.resolve("/usr/nope/x", "/", true),
            Err(FsError::NotFound { .. })
        ));
        assert!(matches!(
            r.resolve("/escape", "/", true),
            Err(FsError::Dangling { .. })
        ));
        assert!(matches!(
            r.resolve("/usr/escape2", "/", true),
            Err(FsError::Dangling { .. })
        ));
    }

    #[test]
    fn forty_links_resolve_and_forty_one_loop() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("target"), b"x").unwrap();
        symlink("target", tmp.path().join("l0")).unwrap();
        for i in 1..=40 {
            symlink(format!("l{}", i - 1), tmp.path().join(format!("l{i}"))).unwrap();
        }
        let fs = DirRootFs::new(tmp.path()).unwrap();
        let r = Resolver::new(&fs);
        assert_eq!(r.resolve("/l39", "/", true).unwrap().path, "/target");
        assert!(matches!(
            r.resolve("/l40", "/", true),
            Err(FsError::Loop { .. })
        ));
    }

    #[test]
    fn absolutize_keeps_dotdot() {
        assert_eq!(absolutize("a/./b//c/", "/w"), "/w/a/b/c");
        assert_eq!(absolutize("../x", "/w"), "/w/../x");
        assert_eq!(absolutize("", "/"), "/");
    }
}
