//! Accuracy against the real loader: for every ELF executable and shared library of each
//! root file system in `WHITTLE_DEPS_ROOTS`, the library set whittle computes must equal
//! what `ldd` prints inside `chroot ROOT` — canonicalised inside the root. A third fixture
//! is built here: a merged-/usr root with programs using `DT_RUNPATH` with `$ORIGIN`, an
//! inherited `DT_RPATH`, `$LIB`, a glibc-hwcaps variant and a wrong-class decoy.
//!
//! Files ldd calls "not a dynamic executable" or "statically linked" are skipped (counted),
//! after checking that whittle finds no libraries for them either.
//!
//! Run with `--nocapture` to see the counts.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use whittle_deps::{Analyzer, DirRootFs, ImageConfig, MissingKind};

/// Known, intended differences from ldd: (image path, why).
const EXCEPTIONS: &[(&str, &str)] = &[(
    "/usr/local/bin/wt-link",
    "a symlink to a program with DT_RUNPATH $ORIGIN/../lib: ldd (ld.so --list) takes $ORIGIN \
     from the path it was given (/usr/local/bin), but the kernel's exec gives ld.so the \
     resolved path (/opt/wt/bin), which whittle uses, so whittle finds the libraries ldd \
     misses; running the program finds them too",
)];

#[derive(Debug, Default)]
struct Stats {
    checked: usize,
    skipped_static: usize,
    differences: usize,
    exceptions: usize,
    libs_compared: usize,
}

fn compare(root: &Path, files: &[String]) -> Stats {
    let fs = DirRootFs::new(root).unwrap();
    let mut analyzer = Analyzer::new(&fs);
    let ldd = support::ldd_in_chroot(root, files);
    let config = ImageConfig::default();
    let mut stats = Stats::default();
    for f in files {
        let l = ldd
            .get(f)
            .unwrap_or_else(|| panic!("ldd printed nothing for {f}"));
        let report = analyzer.load_report(f, &config);
        if report.is_err() && l.is_static {
            // Not an object ld.so can run (e.g. the wrong-class decoy): both agree.
            stats.skipped_static += 1;
            println!(
                "skipped (ldd: {}; whittle: not loadable): {f}",
                l.raw.trim()
            );
            continue;
        }
        let (ours, our_missing, our_problems) = match &report {
            Ok(r) => (
                r.ldd_set(),
                r.missing
                    .iter()
                    .filter(|m| matches!(m.kind, MissingKind::Needed | MissingKind::Filter))
                    .filter(|m| r.objects[m.needed_by].at_startup)
                    .map(|m| m.name.clone())
                    .collect::<BTreeSet<_>>(),
                r.problems.len(),
            ),
            Err(e) => panic!("whittle failed on {f}: {e}"),
        };
        if l.is_static {
            stats.skipped_static += 1;
            println!("skipped (ldd: {}): {f}", l.raw.trim());
            if !ours.is_empty() || !our_missing.is_empty() {
                stats.differences += 1;
                println!(
                    "DIFF {}{f}: ldd says static, whittle loads {ours:?} missing {our_missing:?}",
                    root.display()
                );
            }
            continue;
        }
        stats.checked += 1;
        let theirs: BTreeSet<String> = l
            .paths
            .iter()
            .map(|p| {
                analyzer
                    .resolver()
                    .resolve(p, "/", true)
                    .map(|r| r.path.clone())
                    .unwrap_or_else(|e| panic!("ldd path {p} for {f} does not resolve: {e}"))
            })
            .collect();
        stats.libs_compared += theirs.len();
        let ldd_failed = l.status != 0;
        let same = if ldd_failed {
            // ld.so stopped with an error: whittle must have found a problem or a missing
            // library too.
            our_problems > 0 || !our_missing.is_empty()
        } else {
            theirs == ours && l.not_found == our_missing
        };
        if !same {
            if let Some((_, why)) = EXCEPTIONS.iter().find(|(p, _)| p == f) {
                stats.exceptions += 1;
                println!("EXCEPTION {f}: {why}");
                continue;
            }
            stats.differences += 1;
            println!(
                "DIFF {}{f}:\n  ldd only: {:?}\n  whittle only: {:?}\n  ldd not found: {:?}\n  whittle missing: {:?}\n  ldd output:\n{}",
                root.display(),
                theirs.difference(&ours).collect::<Vec<_>>(),
                ours.difference(&theirs).collect::<Vec<_>>(),
                l.not_found,
                our_missing,
                l.raw
            );
        } else if EXCEPTIONS.iter().any(|(p, _)| p == f) {
            panic!("{f} is listed as an exception but now agrees with ldd: remove the exception");
        }
    }
    stats
}

#[test]
fn ldd_agrees_on_every_elf_file_of_the_fixture_roots() {
    let mut total = 0;
    for root in support::roots() {
        let files = support::elf_files(&root);
        assert!(!files.is_empty(), "no ELF files under {}", root.display());
        let s = compare(&root, &files);
        println!(
            "{}: {} ELF files checked ({} libraries compared), {} skipped as static, {} differences, {} documented exceptions",
            root.display(),
            s.checked,
            s.libs_compared,
            s.skipped_static,
            s.differences,
            s.exceptions
        );
        assert!(s.checked > 0);
        total += s.differences;
    }
    assert_eq!(total, 0, "whittle and ldd disagree (see DIFF lines above)");
}

// Each library calls into libc so that it really depends on it (a library without
// DT_NEEDED is "statically linked" to ldd).
const LIB_SRC: &str = "#include <unistd.h>\nint wt_core(void) { return getpid() > 0; }\n";
const MID_SRC: &str = "int wt_core(void); int wt_mid(void) { return wt_core() + 1; }\n";
const MAIN_MID: &str = "int wt_mid(void); int main(void) { return wt_mid() == 2 ? 0 : 1; }\n";
const R2_SRC: &str = "#include <unistd.h>\nint wt_r2(void) { return getpid() > 0 ? 2 : 0; }\n";
const R1_SRC: &str = "int wt_r2(void); int wt_r1(void) { return wt_r2(); }\n";
const MAIN_R1: &str = "int wt_r1(void); int main(void) { return wt_r1() == 2 ? 0 : 1; }\n";
const LIBLIB_SRC: &str = "#include <unistd.h>\nint wt_lib(void) { return getpid() > 0 ? 3 : 0; }\n";
const MAIN_LIB: &str = "int wt_lib(void); int main(void) { return wt_lib() == 3 ? 0 : 1; }\n";

/// Builds the RUNPATH/RPATH fixture programs into `root` (a merged-/usr root).
fn build_fixture(root: &Path) -> Vec<String> {
    let p = |s: &str| root.join(s.trim_start_matches('/'));
    // DT_RUNPATH $ORIGIN chain: main -> libwtmid (RUNPATH $ORIGIN) -> libwtcore (SONAME
    // libwtcore.so.1, file libwtcore.so.1.0, link libwtcore.so.1) -> libz.
    support::cc(
        &p("/opt/wt/lib/libwtcore.so.1.0"),
        LIB_SRC,
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libwtcore.so.1",
            "-l:libz.so.1",
        ],
    );
    std::os::unix::fs::symlink("libwtcore.so.1.0", p("/opt/wt/lib/libwtcore.so.1")).unwrap();
    support::cc(
        &p("/opt/wt/lib/libwtmid.so.1"),
        MID_SRC,
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libwtmid.so.1",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN",
            &format!("-L{}", p("/opt/wt/lib").display()),
            "-l:libwtcore.so.1",
        ],
    );
    support::cc(
        &p("/opt/wt/bin/wt-runpath"),
        MAIN_MID,
        &[
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN/../lib",
            &format!("-L{}", p("/opt/wt/lib").display()),
            &format!("-Wl,-rpath-link,{}", p("/opt/wt/lib").display()),
            "-l:libwtmid.so.1",
        ],
    );
    // A glibc-hwcaps variant of libwtcore: ld.so on an x86-64-v2 CPU picks it first.
    support::cc(
        &p("/opt/wt/lib/glibc-hwcaps/x86-64-v2/libwtcore.so.1"),
        LIB_SRC,
        &["-shared", "-fPIC", "-Wl,-soname,libwtcore.so.1"],
    );
    // Inherited DT_RPATH: main (RPATH /opt/wt/rlib:/opt/wt/decoy) -> libwtr1 (no RPATH)
    // -> libwtr2, only in /opt/wt/rlib, found through the executable's RPATH. A copy of
    // libwtr2 with ELFCLASS32 in its identification sits first in the path: ld.so skips it.
    support::cc(
        &p("/opt/wt/rlib/libwtr2.so"),
        R2_SRC,
        &["-shared", "-fPIC", "-Wl,-soname,libwtr2.so"],
    );
    let mut decoy = std::fs::read(p("/opt/wt/rlib/libwtr2.so")).unwrap();
    decoy[4] = 1;
    std::fs::create_dir_all(p("/opt/wt/decoy")).unwrap();
    std::fs::write(p("/opt/wt/decoy/libwtr2.so"), decoy).unwrap();
    support::cc(
        &p("/opt/wt/r1/libwtr1.so"),
        R1_SRC,
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libwtr1.so",
            &format!("-L{}", p("/opt/wt/rlib").display()),
            "-lwtr2",
        ],
    );
    support::cc(
        &p("/opt/wt/bin/wt-rpath"),
        MAIN_R1,
        &[
            "-Wl,--disable-new-dtags",
            "-Wl,-rpath,/opt/wt/decoy:/opt/wt/r1:/opt/wt/rlib",
            &format!("-L{}", p("/opt/wt/r1").display()),
            &format!("-L{}", p("/opt/wt/rlib").display()),
            &format!("-Wl,-rpath-link,{}", p("/opt/wt/rlib").display()),
            "-lwtr1",
        ],
    );
    // $LIB: RUNPATH /opt/wt/$LIB, library in /opt/wt/lib/x86_64-linux-gnu on Debian.
    support::cc(
        &p("/opt/wt/lib/x86_64-linux-gnu/libwtlib.so"),
        LIBLIB_SRC,
        &["-shared", "-fPIC", "-Wl,-soname,libwtlib.so"],
    );
    support::cc(
        &p("/opt/wt/bin/wt-lib"),
        MAIN_LIB,
        &[
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,/opt/wt/$LIB",
            &format!("-L{}", p("/opt/wt/lib/x86_64-linux-gnu").display()),
            "-lwtlib",
        ],
    );
    std::fs::create_dir_all(p("/usr/local/bin")).unwrap();
    std::os::unix::fs::symlink("/opt/wt/bin/wt-runpath", p("/usr/local/bin/wt-link")).unwrap();
    let mut files = support::elf_files(root)
        .into_iter()
        .filter(|f| f.starts_with("/opt/wt/"))
        .collect::<Vec<_>>();
    files.push("/usr/local/bin/wt-link".into());
    files
}

#[test]
fn ldd_agrees_on_runpath_origin_fixture() {
    let base = support::roots().remove(0);
    // A hard-linked copy of a fixture root (cheap, and the original is left untouched:
    // only new files are added to the copy).
    let parent = base.parent().unwrap_or(Path::new("/tmp"));
    let tmp = tempfile::Builder::new()
        .prefix(".whittle-deps-runpath-")
        .tempdir_in(parent)
        .unwrap();
    let root = tmp.path().join("root");
    let status = std::process::Command::new("cp")
        .arg("-al")
        .arg(&base)
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success(), "cp -al {} failed", base.display());
    assert!(
        std::fs::symlink_metadata(root.join("lib"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the fixture must be merged-/usr (/lib -> usr/lib)"
    );
    let files = build_fixture(&root);
    assert_eq!(files.len(), 11, "{files:?}");
    let s = compare(&root, &files);
    println!(
        "runpath fixture: {} ELF files checked ({} libraries compared), {} skipped as static, {} differences, {} documented exceptions",
        s.checked, s.libs_compared, s.skipped_static, s.differences, s.exceptions
    );
    assert_eq!(s.exceptions, 1);
    assert_eq!(s.differences, 0);
    assert_eq!(
        s.skipped_static, 1,
        "only the wrong-class decoy is not loadable"
    );

    // The programs really run (so the fixture means what it says), /proc mounted as in a
    // container: ld.so takes the program's $ORIGIN from /proc/self/exe.
    for prog in [
        "/opt/wt/bin/wt-runpath",
        "/opt/wt/bin/wt-rpath",
        "/opt/wt/bin/wt-lib",
        "/usr/local/bin/wt-link",
    ] {
        let st = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t proc proc "$1/proc" && exec chroot "$1" "$2""#)
            .arg("sh")
            .arg(&root)
            .arg(prog)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .status()
            .unwrap();
        assert!(st.success(), "{prog} does not run in the fixture");
    }

    // What whittle resolves for them, precisely.
    let fs = DirRootFs::new(&root).unwrap();
    let mut a = Analyzer::new(&fs);
    let r = a
        .load_report("/opt/wt/bin/wt-rpath", &ImageConfig::default())
        .unwrap();
    assert!(r.ldd_set().contains("/opt/wt/rlib/libwtr2.so"));
    let r = a
        .load_report("/usr/local/bin/wt-link", &ImageConfig::default())
        .unwrap();
    let set = r.ldd_set();
    assert!(set.contains("/opt/wt/lib/libwtmid.so.1"), "{set:?}");
    assert!(
        set.contains("/opt/wt/lib/glibc-hwcaps/x86-64-v2/libwtcore.so.1"),
        "{set:?}"
    );
    // The baseline libwtcore is kept as the fallback for CPUs below x86-64-v2.
    assert!(r
        .objects
        .iter()
        .any(|o| o.canonical == "/opt/wt/lib/libwtcore.so.1.0" && o.variant_of.is_some()));
}
