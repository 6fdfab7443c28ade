//! Shared harness of the sandbox tests: fixtures, serial execution, leak checks.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The fixture directory: `$WHITTLE_FIXTURES` (set by scripts/test), else the newest set in
/// the default cache. Fails (never skips) with what to run when there is none.
pub fn fixture(name: &str) -> PathBuf {
    let dir = match std::env::var_os("WHITTLE_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => {
            let mut sets: Vec<PathBuf> = std::fs::read_dir("/var/cache/whittle-fixtures")
                .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            sets.retain(|p| p.join("base.tar").exists());
            sets.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
            sets.pop().unwrap_or_else(|| {
                panic!(
                    "no fixture images: run `fixtures/build.sh` (or scripts/test, which sets \
                     WHITTLE_FIXTURES)"
                )
            })
        }
    };
    let p = dir.join(format!("{name}.tar"));
    assert!(
        p.exists(),
        "fixture {} missing: run `fixtures/build.sh` (WHITTLE_FIXTURES={})",
        p.display(),
        dir.display()
    );
    p
}

/// Must be root: the sandbox makes namespaces and mounts.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the sandbox tests need root (namespaces, mounts, ptrace): run them as root, as \
         scripts/test does"
    );
}

/// Sandbox tests run one at a time: each uses both cores' worth of work, and the leak
/// checks look at machine-wide state.
pub fn serial() -> MutexGuard<'static, ()> {
    static M: OnceLock<Mutex<()>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Machine state a run must leave as it found it.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub mounts: Vec<String>,
    pub temp: Vec<String>,
    pub cgroups: Vec<String>,
}

pub fn snapshot() -> Snapshot {
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains("whittle-sandbox-"))
        .map(str::to_string)
        .collect();
    let list = |d: &str, prefix: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    Snapshot {
        mounts,
        temp: list(
            std::env::temp_dir().to_str().unwrap(),
            "whittle-sandbox-run-",
        ),
        cgroups: list("/sys/fs/cgroup/pids", "whittle-"),
    }
}

/// Children of this process still alive (sandbox processes would be among them or their
/// descendants; the tracer reaps everything it started).
pub fn live_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let ppid = after.split_whitespace().nth(1).unwrap_or("");
        if ppid == me {
            v.push(stat);
        }
    }
    v
}

/// Asserts nothing was left behind by a run that started from `before`.
pub fn assert_clean(before: &Snapshot) {
    let after = snapshot();
    assert_eq!(
        &after, before,
        "a sandbox left mounts, temp dirs or cgroups behind"
    );
    let kids = live_children();
    assert!(kids.is_empty(), "processes left behind: {kids:?}");
}

use std::collections::HashMap;
use whittle_sandbox::PreparedImage;

static IMAGES: OnceLock<Mutex<HashMap<String, &'static PreparedImage>>> = OnceLock::new();
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn remove_prepared() {
    for d in DIRS.lock().map(|v| v.clone()).unwrap_or_default() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A fixture image, flattened and extracted once per test binary (removed at exit).
pub fn prepared(name: &str) -> &'static PreparedImage {
    let map = IMAGES.get_or_init(|| {
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(remove_prepared) };
        Mutex::new(HashMap::new())
    });
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = m.get(name) {
        return i;
    }
    let r = whittle_image::ImageRef::parse(&format!("docker-archive:{}", fixture(name).display()))
        .unwrap();
    let img: &'static PreparedImage = Box::leak(Box::new(PreparedImage::open(&r, None).unwrap()));
    DIRS.lock()
        .unwrap()
        .push(img.lower().parent().unwrap().to_path_buf());
    m.insert(name.to_string(), img);
    img
}

use whittle_fstree::{Entry, EntryKind, Flattened, Meta};
use whittle_image::ConfigView;

/// A fixture flattened afresh (for tests that change it before extracting).
pub fn flattened(name: &str) -> (ConfigView, Flattened) {
    let r = whittle_image::ImageRef::parse(&format!("docker-archive:{}", fixture(name).display()))
        .unwrap();
    let image = whittle_image::open(&r).unwrap();
    let flat =
        whittle_fstree::flatten(&image, whittle_fstree::FlattenOptions::default(), None).unwrap();
    (image.config.view(), flat)
}

/// Adds host files to a flattened tree (a layer made by hand): (image path, host path, mode).
pub fn add_files(flat: &mut Flattened, files: &[(&str, PathBuf, u32)]) {
    let entries: Vec<Entry> = files
        .iter()
        .map(|(p, host, mode)| {
            let host = std::fs::canonicalize(host).unwrap();
            Entry {
                path: p.trim_start_matches('/').as_bytes().to_vec(),
                kind: EntryKind::HostFile {
                    size: std::fs::metadata(&host).unwrap().len(),
                    path: host,
                },
                meta: Meta {
                    mode: *mode,
                    ..Meta::default()
                },
                header_size: 0,
            }
        })
        .collect();
    flat.tree.apply(99, &entries).unwrap();
}
