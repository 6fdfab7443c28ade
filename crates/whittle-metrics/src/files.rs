//! Reading the same kernel files every interval, cheaply.
//!
//! A collection reads about fifteen small pseudo-files per container. Opening each one every
//! second costs an open, a stat, two or three reads and a close; for a hundred containers that
//! was most of whittle's CPU. cgroup and `/proc` files are seq_files that regenerate on a read at
//! offset 0, so a kept descriptor read with one `pread` gives fresh contents: one system call
//! per file per interval. Files that only change on `docker update` (quota, period, limits) are
//! re-read every [`SLOW_EVERY`] collections, and descriptors of files not read in a collection
//! (their container is gone) are closed at the end of it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use whittle_engine::procfs::ProcRoot;

/// Limits and quotas are re-read every this many collections.
pub const SLOW_EVERY: u64 = 10;

/// Where the collector's readers get file contents.
pub(crate) trait Files {
    /// The current contents of `path` (under the root), `None` if it does not exist.
    fn text(&mut self, path: &str) -> Option<String>;
    /// Like `text`, for files that change only when a limit is changed.
    fn text_slow(&mut self, path: &str) -> Option<String> {
        self.text(path)
    }
    /// Opened, read to the end and closed every time: for files whose kept descriptor would
    /// serve stale data (v1 `cgroup.procs`) or pin what it reads (`/proc/PID/net/dev` holds its
    /// network namespace), and whose records may span several reads.
    fn text_fresh(&mut self, path: &str) -> Option<String>;
}

struct Entry {
    file: Option<File>,
    /// The collection that last asked for it.
    used: u64,
    /// For slow files: contents and the collection they were read in.
    slow: Option<(u64, String)>,
}

/// Raises the soft limit on open files to the hard limit: a hundred containers keep about
/// 1,700 descriptors, past the usual soft limit of 1,024.
pub(crate) fn raise_nofile_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit that lives on this stack frame.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Kept descriptors, keyed by path.
#[derive(Default)]
pub(crate) struct Cached {
    entries: HashMap<String, Entry>,
    round: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Cached({} files, round {})",
            self.entries.len(),
            self.round
        )
    }
}

impl Cached {
    /// Starts a collection.
    pub fn begin(&mut self) {
        self.round += 1;
    }

    /// Ends a collection: closes what it did not use.
    pub fn end(&mut self) {
        let round = self.round;
        self.entries.retain(|_, e| e.used == round);
    }

    /// Reads through the kept descriptor; on a failure (the cgroup was recreated by a restart,
    /// the descriptor went stale) opens the path again once.
    fn read_entry(&mut self, root: &ProcRoot, path: &str) -> Option<String> {
        match self.read_once(root, path) {
            Ok(text) => text,
            Err(()) => self.read_once(root, path).ok().flatten(),
        }
    }

    /// `Err` when a kept descriptor failed (worth one more try with a new one).
    fn read_once(&mut self, root: &ProcRoot, path: &str) -> Result<Option<String>, ()> {
        let round = self.round;
        // Look up before inserting: the key is allocated only for a new file.
        if !self.entries.contains_key(path) {
            self.entries.insert(
                path.to_string(),
                Entry {
                    file: None,
                    used: round,
                    slow: None,
                },
            );
        }
        let e = self.entries.get_mut(path).expect("inserted above");
        e.used = round;
        if e.file.is_none() {
            // A missing file is tried again next time: it may appear (a new device line, a
            // process that starts).
            match File::open(root.path(path)) {
                Ok(f) => e.file = Some(f),
                // Out of descriptors: read it the plain way rather than lose the number.
                Err(err) if err.raw_os_error() == Some(libc::EMFILE) => {
                    return Ok(root.read_opt(path))
                }
                Err(_) => return Ok(None),
            }
        }
        let Some(file) = e.file.as_ref() else {
            return Ok(None);
        };
        if self.buf.len() < 64 << 10 {
            self.buf.resize(64 << 10, 0);
        }
        // The files kept open are single-record seq_files (one `show` prints them whole), so a
        // read that does not fill the buffer got everything; multi-record files go through
        // `text_fresh`, which reads to the end.
        let mut total = 0;
        loop {
            match file.read_at(&mut self.buf[total..], total as u64) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    if total < self.buf.len() {
                        break;
                    }
                    let grow = self.buf.len() * 2;
                    self.buf.resize(grow, 0);
                }
                Err(_) => {
                    // The cgroup was removed or recreated under the descriptor.
                    self.entries.remove(path);
                    return Err(());
                }
            }
        }
        Ok(Some(
            String::from_utf8_lossy(&self.buf[..total]).into_owned(),
        ))
    }
}

/// A cache bound to a root for one collection.
pub(crate) struct Session<'a> {
    pub root: &'a ProcRoot,
    pub cache: &'a mut Cached,
}

impl Files for Session<'_> {
    fn text(&mut self, path: &str) -> Option<String> {
        self.cache.read_entry(self.root, path)
    }

    fn text_slow(&mut self, path: &str) -> Option<String> {
        let round = self.cache.round;
        if let Some(e) = self.cache.entries.get_mut(path) {
            if let Some((at, text)) = &e.slow {
                if round - at < SLOW_EVERY {
                    e.used = round;
                    return Some(text.clone());
                }
            }
        }
        let text = self.cache.read_entry(self.root, path);
        // Only a successful read is remembered: a limit must not vanish for ten rounds because
        // one read failed.
        if let (Some(t), Some(e)) = (&text, self.cache.entries.get_mut(path)) {
            e.slow = Some((round, t.clone()));
        }
        text
    }

    fn text_fresh(&mut self, path: &str) -> Option<String> {
        self.root.read_opt(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(root: &ProcRoot, c: &mut Cached, path: &str) -> Option<String> {
        Session { root, cache: c }.text(path)
    }

    #[test]
    fn kept_descriptor_reads_fresh_contents_and_is_closed_when_unused() {
        let d = tempfile::tempdir().unwrap();
        let root = ProcRoot::at(d.path());
        std::fs::write(d.path().join("a"), "one\n").unwrap();
        let mut c = Cached::default();
        c.begin();
        assert_eq!(read(&root, &mut c, "/a").as_deref(), Some("one\n"));
        assert_eq!(read(&root, &mut c, "/missing"), None);
        c.end();
        // Rewritten in place (as the kernel regenerates): the kept descriptor sees it.
        std::fs::write(d.path().join("a"), "two two\n").unwrap();
        c.begin();
        assert_eq!(read(&root, &mut c, "/a").as_deref(), Some("two two\n"));
        std::fs::write(d.path().join("missing"), "now\n").unwrap();
        assert_eq!(read(&root, &mut c, "/missing").as_deref(), Some("now\n"));
        c.end();
        c.begin();
        c.end();
        assert!(c.entries.is_empty(), "unused descriptors are closed");
    }

    #[test]
    fn slow_files_are_reread_every_few_rounds() {
        let d = tempfile::tempdir().unwrap();
        let root = ProcRoot::at(d.path());
        std::fs::write(d.path().join("limit"), "1\n").unwrap();
        let mut c = Cached::default();
        let mut seen = Vec::new();
        for i in 0..(SLOW_EVERY + 2) {
            if i == 1 {
                std::fs::write(d.path().join("limit"), "2\n").unwrap();
            }
            c.begin();
            seen.push(
                Session {
                    root: &root,
                    cache: &mut c,
                }
                .text_slow("/limit")
                .unwrap(),
            );
            c.end();
        }
        assert_eq!(seen[1], "1\n", "cached within the window");
        assert_eq!(
            seen[SLOW_EVERY as usize], "2\n",
            "re-read after SLOW_EVERY rounds"
        );
    }
}
