//! Shared harness of the integration tests: building tiny ELF programs with the host's C
//! compiler, finding the root file systems to compare against, and running `ldd` inside
//! them with `chroot`.

#![allow(dead_code, clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles C source into `out` with extra `cc` arguments; panics with the compiler's
/// output on failure.
pub fn cc(out: &Path, src: &str, args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("src.c");
    std::fs::write(&c, src).unwrap();
    if let Some(p) = out.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    let output = Command::new("cc")
        .arg("-o")
        .arg(out)
        .arg(&c)
        .args(args)
        .output()
        .expect("running cc (install build-essential)");
    assert!(
        output.status.success(),
        "cc {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The root file systems to compare against: `WHITTLE_DEPS_ROOTS` (colon-separated
/// directories), or else the nginx and python images of the fixture set in
/// `WHITTLE_FIXTURES` (what `scripts/test` exports), unpacked by `tests/roots.sh`. Fails —
/// never skips — when neither is there, saying how to make them.
pub fn roots() -> Vec<PathBuf> {
    static ROOTS: std::sync::OnceLock<Result<Vec<PathBuf>, String>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(find_roots)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn find_roots() -> Result<Vec<PathBuf>, String> {
    const HOW: &str = "set WHITTLE_DEPS_ROOTS to colon-separated root file system directories:\n  \
        export WHITTLE_DEPS_ROOTS=$(crates/whittle-deps/tests/roots.sh)   # fixture images, unpacked\n\
        or by hand:\n  \
        mmdebstrap --variant=minbase --include=nginx-light bookworm /tmp/deps-root-nginx\n  \
        mmdebstrap --variant=minbase --include=python3,ca-certificates bookworm /tmp/deps-root-python\n  \
        export WHITTLE_DEPS_ROOTS=/tmp/deps-root-nginx:/tmp/deps-root-python\n\
        (or set WHITTLE_FIXTURES to a fixtures/build.sh set; the roots need ldd, i.e. libc-bin)";
    let var = match std::env::var("WHITTLE_DEPS_ROOTS") {
        Ok(v) => v,
        Err(_) if std::env::var_os("WHITTLE_FIXTURES").is_some() => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/roots.sh");
            let out = Command::new("bash")
                .arg(&script)
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| format!("running {}: {e}\n{HOW}", script.display()))?;
            if !out.status.success() {
                return Err(format!("{} failed\n{HOW}", script.display()));
            }
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
        Err(_) => return Err(format!("WHITTLE_DEPS_ROOTS is not set: {HOW}")),
    };
    let roots: Vec<PathBuf> = var
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    if roots.is_empty() {
        return Err(format!("WHITTLE_DEPS_ROOTS is empty: {HOW}"));
    }
    for r in &roots {
        if !(r.join("usr/bin/ldd").exists() || r.join("bin/ldd").exists()) {
            return Err(format!(
                "{} is not a root file system with ldd: {HOW}",
                r.display()
            ));
        }
    }
    Ok(roots)
}

/// Every regular file under `root` (not crossing /proc, /sys, /dev) that is an ELF
/// executable or shared object, as image paths, sorted.
pub fn elf_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            if ["/proc", "/sys", "/dev"].contains(&rel.as_str()) {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let mut head = [0u8; 20];
                let n = std::fs::File::open(&p)
                    .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
                    .unwrap_or(0);
                if n == 20 && &head[..4] == b"\x7fELF" {
                    let e_type = if head[5] == 2 {
                        u16::from_be_bytes([head[16], head[17]])
                    } else {
                        u16::from_le_bytes([head[16], head[17]])
                    };
                    if e_type == 2 || e_type == 3 {
                        out.push(rel);
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// What `ldd` said about one file.
#[derive(Debug, Clone, Default)]
pub struct LddResult {
    /// Paths of loaded objects, as printed.
    pub paths: Vec<String>,
    /// Names printed as "not found".
    pub not_found: BTreeSet<String>,
    /// "not a dynamic executable" / "statically linked".
    pub is_static: bool,
    /// ldd's exit status.
    pub status: i32,
    /// The raw output.
    pub raw: String,
}

/// Runs `ldd` on each file inside `chroot root`, in batches (one shell per batch), with a
/// clean environment.
pub fn ldd_in_chroot(root: &Path, files: &[String]) -> BTreeMap<String, LddResult> {
    let mut out = BTreeMap::new();
    for batch in files.chunks(200) {
        let output = Command::new("chroot")
            .arg(root)
            .args([
                "/bin/sh",
                "-c",
                r#"for f; do printf '\n@@@file %s\n' "$f"; ldd "$f" 2>&1; printf '\n@@@rc %s\n' "$?"; done"#,
                "sh",
            ])
            .args(batch)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .output()
            .expect("running chroot (needs root)");
        assert!(
            output.status.success(),
            "chroot {} failed: {}",
            root.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let mut cur: Option<(String, LddResult)> = None;
        for line in text.lines() {
            if let Some(f) = line.strip_prefix("@@@file ") {
                cur = Some((f.to_owned(), LddResult::default()));
                continue;
            }
            let Some((_, res)) = cur.as_mut() else {
                continue;
            };
            if let Some(rc) = line.strip_prefix("@@@rc ") {
                res.status = rc.trim().parse().unwrap_or(-1);
                let (f, r) = cur.take().unwrap();
                out.insert(f, r);
                continue;
            }
            res.raw.push_str(line);
            res.raw.push('\n');
            let l = line.trim();
            if l.contains("not a dynamic executable") || l == "statically linked" {
                res.is_static = true;
            } else if let Some((name, rest)) = l.split_once(" => ") {
                if rest.trim() == "not found" {
                    res.not_found.insert(name.trim().to_owned());
                } else if let Some(p) = rest.split(" (0x").next() {
                    if p.starts_with('/') {
                        res.paths.push(p.trim().to_owned());
                    }
                }
            } else if l.starts_with('/') {
                if let Some(p) = l.split(" (0x").next() {
                    res.paths.push(p.trim().to_owned());
                }
            }
        }
    }
    out
}

/// A small merged-/usr root file system in a temp dir, filled with the host's own
/// binaries and libraries (the host is Debian, like the images).
pub struct MiniRoot {
    pub dir: tempfile::TempDir,
}

impl MiniRoot {
    /// `/lib -> usr/lib`, `/lib64 -> usr/lib64`, `/bin -> usr/bin`, `/sbin -> usr/sbin`,
    /// the loader and libc.
    pub fn new() -> MiniRoot {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "usr/bin",
            "usr/sbin",
            "usr/lib/x86_64-linux-gnu",
            "usr/lib64",
            "etc",
            "tmp",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for (link, target) in [
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
        ] {
            std::os::unix::fs::symlink(target, r.join(link)).unwrap();
        }
        let m = MiniRoot { dir };
        m.copy_host("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        std::os::unix::fs::symlink(
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            m.path("/usr/lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        m.copy_host("/usr/lib/x86_64-linux-gnu/libc.so.6");
        m
    }

    /// The host path of an image path.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    /// Copies a host file (symlinks followed) to the same image path.
    pub fn copy_host(&self, host: &str) {
        let dst = self.path(host);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(host, &dst).unwrap_or_else(|e| panic!("copy {host}: {e}"));
    }

    /// Copies a host program and every library the host's ldd lists for it, each to its
    /// canonical host path under /usr (merged-/usr).
    pub fn copy_host_program(&self, host: &str) {
        self.copy_host(host);
        let out = Command::new("ldd").arg(host).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let p = match line.split_once(" => ") {
                Some((_, rest)) => rest.split(" (0x").next().unwrap_or("").trim().to_owned(),
                None => line.trim().split(" (0x").next().unwrap_or("").to_owned(),
            };
            if !p.starts_with('/') {
                continue;
            }
            let canon = std::fs::canonicalize(&p).unwrap();
            let canon = canon.to_str().unwrap();
            if !self.path(canon).exists() {
                self.copy_host(canon);
            }
            // Keep the name ld.so looks for (e.g. libz.so.1 -> libz.so.1.2.13).
            let name = Path::new(&p)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let dst = self.path(&format!("/usr/lib/x86_64-linux-gnu/{name}"));
            if std::fs::symlink_metadata(&dst).is_err() {
                let target = Path::new(canon).file_name().unwrap();
                std::os::unix::fs::symlink(target, &dst).unwrap();
            }
        }
    }

    /// Writes a file, creating parents.
    pub fn write(&self, p: &str, content: impl AsRef<[u8]>) {
        let dst = self.path(p);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(dst, content).unwrap();
    }

    /// Makes a symlink, creating parents.
    pub fn symlink(&self, p: &str, target: &str) {
        let dst = self.path(p);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, dst).unwrap();
    }

    /// Sets permission bits.
    pub fn chmod(&self, p: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(p), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

impl MiniRoot {
    /// Copies a host library by its soname link (e.g. `libz.so.1`) from the multiarch
    /// directory: the real file under its own name, plus the link.
    pub fn copy_host_lib(&self, name: &str) {
        let host = format!("/usr/lib/x86_64-linux-gnu/{name}");
        let canon = std::fs::canonicalize(&host).unwrap();
        let canon = canon.to_str().unwrap().to_owned();
        self.copy_host(&canon);
        if canon != host {
            let target = Path::new(&canon).file_name().unwrap().to_str().unwrap();
            self.symlink(&host, target);
        }
    }
}
