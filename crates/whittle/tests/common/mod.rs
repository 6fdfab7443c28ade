//! Shared harness of whittle's integration tests: running the CLI, checking that the outside
//! tools the oracles need are there (failing, never skipping, when they are not), generating
//! images byte by byte ([`gen`]), snapshotting file trees ([`snap`]) and driving the Docker
//! Engine, podman and umoci ([`engines`]).
//!
//! Every test binary includes this module and uses a different part of it.

#![allow(dead_code)]

pub mod engines;
pub mod gen;
pub mod load;
pub mod rsyslog;
pub mod runtime;
pub mod snap;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// The CLI under test.
pub fn whittle_bin() -> &'static str {
    env!("CARGO_BIN_EXE_whittle")
}

/// What a finished process left behind.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with the whole output unless the process exited 0.
    pub fn ok(self, what: &str) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "{what} failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `whittle ARGS` with extra environment variables; stdin is closed.
pub fn whittle<I, S>(args: I, envs: &[(&str, &OsStr)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(whittle_bin());
    // Outputs must not depend on the caller's environment unless a test says so.
    c.args(args)
        .stdin(Stdio::null())
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in envs {
        c.env(k, v);
    }
    Run::from_output(c.output().expect("running the whittle binary"))
}

/// Runs `whittle squash ARGS` and panics unless it succeeds.
pub fn squash_ok(args: &[&OsStr]) -> Run {
    let mut all: Vec<&OsStr> = vec![OsStr::new("squash")];
    all.extend_from_slice(args);
    let r = whittle(&all, &[]);
    r.ok(&format!("whittle {}", show_args(&all)))
}

pub fn show_args(args: &[&OsStr]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs any program; returns its output whatever the exit code. Panics (naming the Debian
/// package to install) when the program cannot be started at all.
pub fn run(program: &str, args: &[&OsStr]) -> Run {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {}", install_hint(program)));
    Run::from_output(out)
}

/// Like [`run`] but panics with the output unless the program exits 0.
pub fn run_ok(program: &str, args: &[&OsStr]) -> Run {
    let r = run(program, args);
    let what = format!("{program} {}", show_args(args));
    r.ok(&what)
}

/// `os!["a", path, ...]`: an array of `&OsStr` from strings and paths.
#[macro_export]
macro_rules! os {
    ($($x:expr),* $(,)?) => { [$(::std::convert::AsRef::<::std::ffi::OsStr>::as_ref(&$x)),*] };
}

fn install_hint(program: &str) -> String {
    let pkg = match program {
        "docker" => "docker.io (and start the engine: systemctl start docker)",
        "umoci" => "umoci",
        "skopeo" => "skopeo",
        "podman" => "podman",
        "curl" => "curl",
        "prlimit" | "unshare" | "setpriv" => "util-linux",
        "busybox" => "busybox-static",
        "scmp_sys_resolver" => "seccomp",
        "time" | "/usr/bin/time" => "time",
        other => other,
    };
    format!("install it with `apt-get install {pkg}`, or run scripts/test, which installs everything the tests use")
}

/// Fails the test (never skips it) when `program` is not on PATH.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| is_executable(&d.join(program))))
        .unwrap_or(false)
        || (program.starts_with('/') && is_executable(Path::new(program)));
    assert!(
        found,
        "this test needs `{program}`, which is not installed: {}",
        install_hint(program)
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The fixture set `scripts/test` builds and exports as `WHITTLE_FIXTURES`.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("WHITTLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
            "WHITTLE_FIXTURES is not set. Run the tests with scripts/test, or build the fixtures \
             and point at them: export WHITTLE_FIXTURES=$(fixtures/build.sh)"
        )
        });
    for f in ["nginx.tar", "nginx.oci"] {
        assert!(
            dir.join(f).exists(),
            "{}: no {f}; rebuild the fixtures: export WHITTLE_FIXTURES=$(fixtures/build.sh)",
            dir.display()
        );
    }
    dir
}

/// Soft assertions: every failed check is collected, the test fails at [`Checks::finish`], so
/// one failure does not hide the others.
#[derive(Debug)]
pub struct Checks {
    test: &'static str,
    failed: Vec<String>,
    passed: usize,
}

impl Checks {
    pub fn new(test: &'static str) -> Checks {
        Checks {
            test,
            failed: Vec::new(),
            passed: 0,
        }
    }

    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) -> bool {
        if ok {
            self.passed += 1;
        } else {
            let w = what();
            report(&format!("{}: CHECK FAILED: {w}\n", self.test));
            self.failed.push(w);
        }
        ok
    }

    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, got: T, want: T, what: &str) -> bool {
        let ok = got == want;
        self.check(ok, || format!("{what}: got {got:?}, want {want:?}"))
    }

    /// Fails the test now (with everything collected so far) if `ok` is false: for checks
    /// the rest of the test depends on.
    pub fn require(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !self.check(ok, what) {
            self.finish();
        }
    }

    pub fn finish(&mut self) {
        let failed = std::mem::take(&mut self.failed);
        assert!(
            failed.is_empty(),
            "{}: {} of {} checks failed:\n  - {}",
            self.test,
            failed.len(),
            failed.len() + self.passed,
            failed.join("\n  - ")
        );
    }
}

/// A scratch directory for one test, removed on drop (kept when WHITTLE_KEEP_TEST_DIRS is
/// set, for debugging).
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    let mut d = tempfile::Builder::new()
        .prefix(&format!("whittle-{prefix}-"))
        .tempdir()
        .expect("creating a temporary directory");
    if std::env::var_os("WHITTLE_KEEP_TEST_DIRS").is_some() {
        d.disable_cleanup(true);
    }
    d
}

/// Writes a report straight to the process's stderr, past the test harness's capture, so it
/// shows in `cargo test` output whether the test passes or fails.
pub fn report(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes());
    let _ = e.flush();
}

/// Unique-per-process suffix for names in shared places (Docker image tags, containers).
pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Times a step; the returned closure gives the elapsed seconds.
pub fn timer() -> impl Fn() -> f64 {
    let t = Instant::now();
    move || t.elapsed().as_secs_f64()
}

/// Calls `f(name, content)` for every regular member of a tar archive, streamed, with the
/// name normalized (no leading `./`).
fn each_regular_member(path: &Path, mut f: impl FnMut(String, &mut dyn std::io::Read)) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut ar = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        f(name, &mut e);
    }
}

/// The members of a (small) tar archive, by normalized name.
pub fn archive_members(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    each_regular_member(path, |name, r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        out.insert(name, v);
    });
    out
}

/// Name → (size, sha256) of every regular member of a tar archive, streamed.
pub fn archive_digests(path: &Path) -> std::collections::BTreeMap<String, (u64, String)> {
    use sha2::Digest;
    let mut out = std::collections::BTreeMap::new();
    each_regular_member(path, |name, r| {
        let mut h = sha2::Sha256::new();
        let n = std::io::copy(r, &mut h).unwrap();
        out.insert(name, (n, hex::encode(h.finalize())));
    });
    out
}

/// The manifest entry and config of a docker-archive (classic layout).
pub fn docker_archive_meta(path: &Path) -> (serde_json::Value, serde_json::Value) {
    let m = archive_members(path);
    let manifest: serde_json::Value = serde_json::from_slice(&m["manifest.json"]).unwrap();
    let entry = manifest[0].clone();
    let config: serde_json::Value =
        serde_json::from_slice(&m[entry["Config"].as_str().unwrap()]).unwrap();
    (entry, config)
}

/// The manifest and config of the only image of an OCI layout directory.
pub fn oci_meta(dir: &Path) -> (serde_json::Value, serde_json::Value) {
    let blob = |d: &serde_json::Value| -> serde_json::Value {
        let d = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(d)).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = blob(&index["manifests"][0]["digest"]);
    let config = blob(&manifest["config"]["digest"]);
    (manifest, config)
}

/// The latest mtime of any entry in any layer of a docker-archive (layers uncompressed or
/// gzip/zstd), streamed.
pub fn max_layer_mtime(archive: &Path) -> i64 {
    use std::io::{BufRead, BufReader, Read};
    let f = std::fs::File::open(archive).unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
    let (entry, _) = docker_archive_meta(archive);
    let layers: Vec<String> = entry["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let mut outer = tar::Archive::new(BufReader::with_capacity(1 << 20, f));
    let mut max = 0i64;
    for e in outer.entries().unwrap() {
        let e = e.unwrap();
        let name = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if !layers.contains(&name) {
            continue;
        }
        let mut r = BufReader::new(e);
        let head = r.fill_buf().unwrap().to_vec();
        let inner: Box<dyn Read> = match head.as_slice() {
            [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(zstd::Decoder::with_buffer(r).unwrap()),
            _ => Box::new(r),
        };
        let mut ar = tar::Archive::new(inner);
        for le in ar.entries().unwrap().raw(true) {
            let le = le.unwrap();
            max = max.max(le.header().mtime().unwrap_or(0) as i64);
        }
    }
    max
}
