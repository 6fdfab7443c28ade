//! The closure on small hand-made root file systems: host binaries and libraries copied
//! into a merged-/usr tree, test programs built with `cc`, fake configuration files.

mod support;

use support::{cc, MiniRoot};
use whittle_deps::{
    Analyzer, Closure, DirRootFs, ImageConfig, LoaderFlavor, MissingKind, NodeKind, ProblemKind,
    Reason, Request,
};

fn closure(root: &MiniRoot, config: ImageConfig, paths: &[&str]) -> Closure {
    let fs = DirRootFs::new(root.dir.path()).unwrap();
    Analyzer::new(&fs).closure(&Request {
        config,
        paths: paths.iter().map(|s| s.to_string()).collect(),
    })
}

fn entry(args: &[&str]) -> ImageConfig {
    ImageConfig {
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        entrypoint: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn has(c: &Closure, p: &str) -> bool {
    c.files.contains_key(p)
}

const GETPID_LIB: &str = "#include <unistd.h>\nint f(void) { return getpid(); }\n";
const MAIN_F: &str = "int f(void); int main(void) { return f() > 0 ? 0 : 1; }\n";

#[test]
fn entrypoint_through_path_with_loader_libraries_links_and_parents() {
    let root = MiniRoot::new();
    root.copy_host_program("/usr/bin/ls");
    let c = closure(&root, entry(&["ls", "-l"]), &[]);
    assert_eq!(c.roots[0].path.as_deref(), Some("/usr/bin/ls"));
    for p in [
        "/usr/bin/ls",
        "/usr/bin",
        "/usr",
        "/lib64",
        "/usr/lib64",
        "/usr/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libselinux.so.1",
        "/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0",
    ] {
        assert!(has(&c, p), "{p} missing from:\n{}", c.render());
    }
    // The lookup is through the system directory /lib/x86_64-linux-gnu, so /lib is kept.
    assert!(has(&c, "/lib"), "{}", c.render());
    assert_eq!(
        c.files["/lib"].node,
        NodeKind::Symlink {
            target: "usr/lib".into()
        }
    );
    // /bin was not on the way to anything.
    assert!(!has(&c, "/bin"));
    assert!(!has(&c, "/"));
    assert!(c.missing.iter().all(|m| !m.required), "{:?}", c.missing);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let line = c.render_line("/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0");
    assert!(
        line.starts_with("/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0  ← symlink on the way to /usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.")
            && line.ends_with("  ← DT_NEEDED of /usr/lib/x86_64-linux-gnu/libselinux.so.1  ← DT_NEEDED of /usr/bin/ls  ← entrypoint"),
        "{line}"
    );
    // Every of/to points into the closure.
    for (p, e) in &c.files {
        for r in &e.reasons {
            if let Some(of) = r.parent_path() {
                assert!(has(&c, of), "{p}: reason {r:?} points outside the closure");
            }
        }
    }
}

#[test]
fn missing_entrypoint_and_libraries_are_reported_not_fatal() {
    let root = MiniRoot::new();
    let c = closure(&root, entry(&["nope"]), &[]);
    assert!(c.has_required_missing());
    assert_eq!(c.missing[0].kind, MissingKind::Entrypoint);

    cc(
        &root.path("/usr/bin/needy"),
        MAIN_F,
        &[
            "-Wl,--unresolved-symbols=ignore-all",
            "-Wl,--no-as-needed",
            "-l:libz.so.1",
        ],
    );
    let c = closure(&root, entry(&["needy"]), &[]);
    let m = c.missing.iter().find(|m| m.what == "libz.so.1").unwrap();
    assert_eq!(m.kind, MissingKind::Needed);
    assert_eq!(m.needed_by, "/usr/bin/needy");
    assert!(m.required);
}

#[test]
fn scripts_env_split_string_and_shell_form() {
    let root = MiniRoot::new();
    root.copy_host_program("/usr/bin/env");
    root.copy_host_program("/usr/bin/dash");
    root.symlink("/usr/bin/sh", "dash");
    root.write("/app/run", "#!/usr/bin/env -S sh -e\necho hi\n");
    root.chmod("/app/run", 0o755);
    root.write("/app/inner", "#!/app/run\n");
    root.chmod("/app/inner", 0o755);
    let mut cfg = entry(&["./inner"]);
    cfg.working_dir = "/app".into();
    let c = closure(&root, cfg, &[]);
    assert!(has(&c, "/app/inner"));
    assert!(has(&c, "/app/run"));
    assert!(has(&c, "/usr/bin/env"));
    assert!(has(&c, "/usr/bin/sh"), "{}", c.render());
    assert!(has(&c, "/usr/bin/dash"));
    assert!(c.files["/usr/bin/dash"]
        .reasons
        .contains(&Reason::EnvCommand {
            of: "/app/run".into()
        }));
    assert!(c.files["/app"].reasons.contains(&Reason::WorkingDir));

    // Docker's shell form: sh -c "exec prog ...", with the script argument a file.
    cc(
        &root.path("/usr/local/bin/prog"),
        "int main(void){return 0;}",
        &[],
    );
    root.write("/srv/conf.txt", "x");
    let c = closure(
        &root,
        entry(&["/bin/sh", "-c", "exec prog --conf /srv/conf.txt"]),
        &[],
    );
    assert!(has(&c, "/usr/local/bin/prog"), "{}", c.render());
    assert_eq!(
        c.files["/usr/local/bin/prog"].reasons[0],
        Reason::ShellCommand {
            of: "/usr/bin/dash".into()
        }
    );
    // Arguments that name files are kept.
    let c = closure(&root, entry(&["/usr/local/bin/prog", "/srv/conf.txt"]), &[]);
    assert_eq!(
        c.files["/srv/conf.txt"].reasons[0],
        Reason::Argument {
            of: "/usr/local/bin/prog".into()
        }
    );
}

#[test]
fn user_home_and_working_dir() {
    let root = MiniRoot::new();
    cc(&root.path("/usr/bin/app"), "int main(void){return 0;}", &[]);
    root.write(
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/usr/sbin/nologin\n",
    );
    root.write("/etc/group", "root:x:0:\nwww:x:33:\n");
    std::fs::create_dir_all(root.path("/var/www")).unwrap();
    std::fs::create_dir_all(root.path("/srv/app")).unwrap();
    let mut cfg = entry(&["app"]);
    cfg.user = "www:www".into();
    cfg.working_dir = "/srv/app".into();
    let c = closure(&root, cfg.clone(), &[]);
    for p in [
        "/etc/passwd",
        "/etc/group",
        "/var/www",
        "/var",
        "/srv/app",
        "/srv",
    ] {
        assert!(has(&c, p), "{p}: {}", c.render());
    }
    assert_eq!(
        c.files["/var/www"].reasons[0],
        Reason::Home {
            user: "www:www".into()
        }
    );
    assert!(!c.has_required_missing(), "{:?}", c.missing);

    cfg.user = "nobody".into();
    let c = closure(&root, cfg.clone(), &[]);
    assert!(c
        .missing
        .iter()
        .any(|m| m.kind == MissingKind::User && m.required && m.what == "nobody"));
    // A numeric uid absent from passwd is fine (the engine runs it anyway).
    cfg.user = "1234:1234".into();
    cfg.working_dir = "/not/there".into();
    let c = closure(&root, cfg, &[]);
    assert!(!c.has_required_missing(), "{:?}", c.missing);
    assert!(c
        .missing
        .iter()
        .any(|m| m.kind == MissingKind::WorkingDir && !m.required));
}

#[test]
fn nss_modules_with_their_own_dependencies_and_ca_bundles() {
    let root = MiniRoot::new();
    root.copy_host_lib("libz.so.1");
    root.write(
        "/etc/nsswitch.conf",
        "passwd: files mymod\nhosts: files [NOTFOUND=return] dns absent\n",
    );
    // libnss_mymod needs libz; libnss_files is present as a stub, libnss_dns is not.
    cc(
        &root.path("/usr/lib/x86_64-linux-gnu/libnss_mymod.so.2"),
        GETPID_LIB,
        &["-shared", "-fPIC", "-Wl,--no-as-needed", "-l:libz.so.1"],
    );
    cc(
        &root.path("/usr/lib/x86_64-linux-gnu/libnss_files.so.2"),
        GETPID_LIB,
        &["-shared", "-fPIC"],
    );
    // A TLS library: anything named libssl.so.3.
    cc(
        &root.path("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
        GETPID_LIB,
        &["-shared", "-fPIC", "-Wl,-soname,libssl.so.3"],
    );
    root.write(
        "/etc/ssl/certs/ca-certificates.crt",
        "-----BEGIN CERTIFICATE-----\n",
    );
    root.symlink("/etc/ssl/cert.pem", "certs/ca-certificates.crt");
    let lib = root.path("/usr/lib/x86_64-linux-gnu");
    cc(
        &root.path("/usr/bin/tls"),
        MAIN_F,
        &[&format!("-L{}", lib.display()), "-l:libssl.so.3"],
    );
    let c = closure(&root, entry(&["tls"]), &[]);
    let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    assert_eq!(
        c.files["/usr/lib/x86_64-linux-gnu/libnss_mymod.so.2"].reasons[0],
        Reason::Nss {
            of: libc.into(),
            service: "mymod".into()
        }
    );
    assert!(
        has(&c, "/usr/lib/x86_64-linux-gnu/libz.so.1"),
        "{}",
        c.render()
    );
    assert!(has(&c, "/usr/lib/x86_64-linux-gnu/libnss_files.so.2"));
    assert!(has(&c, "/etc/nsswitch.conf"));
    // Missing modules are optional; the built-in dns service is never reported.
    let nss_missing: Vec<_> = c
        .missing
        .iter()
        .filter(|m| m.kind == MissingKind::NssModule)
        .map(|m| (m.what.as_str(), m.required))
        .collect();
    assert_eq!(nss_missing, vec![("libnss_absent.so.2", false)]);
    assert_eq!(
        c.files["/etc/ssl/certs/ca-certificates.crt"].reasons[0],
        Reason::CaBundle {
            because: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into()
        }
    );
    assert!(has(&c, "/etc/ssl/cert.pem"));

    // NSS modules are not part of the startup link map ldd shows.
    let fs = DirRootFs::new(root.dir.path()).unwrap();
    let r = Analyzer::new(&fs)
        .load_report("/usr/bin/tls", &ImageConfig::default())
        .unwrap();
    assert!(!r
        .ldd_set()
        .contains("/usr/lib/x86_64-linux-gnu/libnss_mymod.so.2"));
}

#[test]
fn ld_so_conf_ld_library_path_and_wrong_class() {
    let root = MiniRoot::new();
    root.write("/etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n");
    root.write("/etc/ld.so.conf.d/custom.conf", "/opt/custom/lib\n");
    cc(
        &root.path("/opt/custom/lib/libcustom.so"),
        GETPID_LIB,
        &["-shared", "-fPIC", "-Wl,-soname,libcustom.so"],
    );
    cc(
        &root.path("/opt/env/lib/libenv.so"),
        GETPID_LIB,
        &["-shared", "-fPIC", "-Wl,-soname,libenv.so"],
    );
    // A wrong-class copy of libenv in a directory searched earlier is skipped.
    let mut decoy = std::fs::read(root.path("/opt/env/lib/libenv.so")).unwrap();
    decoy[4] = 1;
    root.write("/opt/decoy/libenv.so", decoy);
    let l = |p: &str| format!("-L{}", root.path(p).display());
    cc(
        &root.path("/usr/bin/app"),
        "int f(void); int main(void){return f();}",
        &[
            &l("/opt/custom/lib"),
            &l("/opt/env/lib"),
            "-Wl,--no-as-needed",
            "-lcustom",
            "-lenv",
        ],
    );
    let mut cfg = entry(&["app"]);
    cfg.env
        .push("LD_LIBRARY_PATH=/opt/decoy:/opt/env/lib".into());
    let c = closure(&root, cfg, &[]);
    assert!(has(&c, "/opt/custom/lib/libcustom.so"), "{}", c.render());
    assert!(has(&c, "/opt/env/lib/libenv.so"));
    assert!(!has(&c, "/opt/decoy/libenv.so"));
    assert!(!c.has_required_missing(), "{:?}", c.missing);
    // Without LD_LIBRARY_PATH, libenv is missing, with the skipped file in the detail.
    let mut cfg = entry(&["app"]);
    cfg.env.push("LD_LIBRARY_PATH=/opt/decoy".into());
    let c = closure(&root, cfg, &[]);
    let m = c.missing.iter().find(|m| m.what == "libenv.so").unwrap();
    assert!(
        m.detail.as_deref().unwrap().contains("wrong ELF class"),
        "{m:?}"
    );
}

#[test]
fn broken_files_are_problems_never_panics() {
    let root = MiniRoot::new();
    let lib = root.path("/usr/lib/x86_64-linux-gnu");
    cc(
        &lib.join("libbroken.so"),
        GETPID_LIB,
        &["-shared", "-fPIC", "-Wl,-soname,libbroken.so"],
    );
    cc(
        &root.path("/usr/bin/app"),
        MAIN_F,
        &[&format!("-L{}", lib.display()), "-lbroken"],
    );
    // Truncate the library after its program headers.
    let bytes = std::fs::read(lib.join("libbroken.so")).unwrap();
    std::fs::write(lib.join("libbroken.so"), &bytes[..1024]).unwrap();
    root.symlink("/usr/bin/loop1", "loop2");
    root.symlink("/usr/bin/loop2", "loop1");
    root.symlink("/usr/bin/dangling", "nowhere");
    root.write("/usr/bin/data", "just text");
    root.chmod("/usr/bin/data", 0o755);
    root.write("/usr/bin/badsb", "#!\n");
    root.chmod("/usr/bin/badsb", 0o755);
    let mut absurd = std::fs::read(root.path("/usr/bin/app")).unwrap();
    absurd[56] = 0xfe;
    absurd[57] = 0xff;
    root.write("/usr/bin/absurd", absurd);
    root.write("/usr/bin/self", "#!/usr/bin/self\n");
    root.chmod("/usr/bin/self", 0o755);
    root.write("/usr/bin/looped-interp", "#!/usr/bin/loop1\n");
    root.chmod("/usr/bin/looped-interp", 0o755);

    let c = closure(
        &root,
        ImageConfig::default(),
        &[
            "/usr/bin/app",
            "/usr/bin/loop1",
            "/usr/bin/dangling",
            "/usr/bin/absurd",
            "/usr/bin/looped-interp",
        ],
    );
    let kinds: Vec<ProblemKind> = c.problems.iter().map(|p| p.kind).collect();
    assert!(
        kinds.contains(&ProblemKind::TruncatedElf),
        "{:?}",
        c.problems
    );
    assert!(
        kinds.contains(&ProblemKind::SymlinkLoop),
        "{:?}",
        c.problems
    );
    assert!(
        kinds.contains(&ProblemKind::DanglingSymlink),
        "{:?}",
        c.problems
    );
    assert!(kinds.contains(&ProblemKind::AbsurdElf), "{:?}", c.problems);
    assert!(c
        .missing
        .iter()
        .any(|m| m.what == "libbroken.so" && m.required));
    assert!(c
        .missing
        .iter()
        .any(|m| m.kind == MissingKind::Shebang && m.needed_by == "/usr/bin/looped-interp"));
    for p in &c.problems {
        assert!(p.message.contains('/'), "problem without a path: {p:?}");
    }

    let c = closure(&root, entry(&["data"]), &[]);
    assert_eq!(c.problems[0].kind, ProblemKind::ExecFormat);
    let c = closure(&root, entry(&["badsb"]), &[]);
    assert_eq!(c.problems[0].kind, ProblemKind::BadShebang);
    let c = closure(&root, entry(&["self"]), &[]);
    // A script that is its own interpreter ends, reported (the kernel says ELOOP).
    assert!(has(&c, "/usr/bin/self"));
    assert_eq!(c.problems[0].kind, ProblemKind::ScriptTooDeep);
}

#[test]
fn hwcaps_variants_are_kept_as_fallbacks() {
    let root = MiniRoot::new();
    let lib = root.path("/usr/lib/x86_64-linux-gnu");
    cc(
        &lib.join("libfast.so.1"),
        GETPID_LIB,
        &["-shared", "-fPIC", "-Wl,-soname,libfast.so.1"],
    );
    cc(
        &lib.join("glibc-hwcaps/x86-64-v3/libfast.so.1"),
        GETPID_LIB,
        &["-shared", "-fPIC", "-Wl,-soname,libfast.so.1"],
    );
    cc(
        &root.path("/usr/bin/app"),
        MAIN_F,
        &[&format!("-L{}", lib.display()), "-l:libfast.so.1"],
    );
    let c = closure(&root, entry(&["app"]), &[]);
    let v3 = "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libfast.so.1";
    let base = "/usr/lib/x86_64-linux-gnu/libfast.so.1";
    assert!(matches!(c.files[v3].reasons[0], Reason::Needed { .. }));
    assert_eq!(
        c.files[base].reasons[0],
        Reason::HwcapsVariant { of: v3.into() }
    );
}

#[test]
fn musl_search_order_and_reserved_names() {
    let root = MiniRoot::new();
    // A stand-in for musl's loader: any ELF shared object at the musl path.
    cc(
        &root.path("/lib/ld-musl-x86_64.so.1"),
        GETPID_LIB,
        &["-shared", "-fPIC", "-nostdlib"],
    );
    cc(
        &root.path("/usr/local/lib/libm1.so"),
        "int f(void){return 1;}",
        &["-shared", "-fPIC", "-nostdlib", "-Wl,-soname,libm1.so"],
    );
    cc(
        &root.path("/opt/alt/libm1.so"),
        "int f(void){return 1;}",
        &["-shared", "-fPIC", "-nostdlib", "-Wl,-soname,libm1.so"],
    );
    let l = format!("-L{}", root.path("/usr/local/lib").display());
    cc(
        &root.path("/usr/bin/mprog"),
        MAIN_F,
        &[
            "-Wl,--dynamic-linker=/lib/ld-musl-x86_64.so.1",
            &l,
            "-lm1",
            "-Wl,--no-as-needed",
            "-lpthread",
        ],
    );
    let fs = DirRootFs::new(root.dir.path()).unwrap();
    let mut a = Analyzer::new(&fs);
    let r = a
        .load_report("/usr/bin/mprog", &ImageConfig::default())
        .unwrap();
    assert_eq!(r.loader.flavor, LoaderFlavor::Musl);
    assert_eq!(
        r.loader.system_dirs,
        vec!["/lib", "/usr/local/lib", "/usr/lib"]
    );
    let set = r.ldd_set();
    // libc.so.6 and libpthread resolve to musl's loader itself, not to the glibc files.
    assert!(set.contains("/usr/lib/ld-musl-x86_64.so.1"), "{set:?}");
    assert!(
        !set.contains("/usr/lib/x86_64-linux-gnu/libc.so.6"),
        "{set:?}"
    );
    assert!(set.contains("/usr/local/lib/libm1.so"), "{set:?}");

    // /etc/ld-musl-x86_64.path replaces the default directories.
    drop(a);
    root.write("/etc/ld-musl-x86_64.path", "/opt/alt\n/lib\n");
    let fs = DirRootFs::new(root.dir.path()).unwrap();
    let r = Analyzer::new(&fs)
        .load_report("/usr/bin/mprog", &ImageConfig::default())
        .unwrap();
    assert!(r.ldd_set().contains("/opt/alt/libm1.so"));
    // No NSS for musl.
    assert!(r.objects.iter().all(|o| o.at_startup));
}

#[test]
fn json_output_round_trips_with_stable_names() {
    let root = MiniRoot::new();
    root.copy_host_program("/usr/bin/ls");
    let c = closure(&root, entry(&["ls"]), &[]);
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["schema"], "whittle.deps/v1");
    assert_eq!(v["roots"][0]["reason"]["kind"], "entrypoint");
    assert_eq!(v["files"]["/lib"]["kind"], "symlink");
    assert_eq!(v["files"]["/lib"]["target"], "usr/lib");
    assert_eq!(v["files"]["/usr/bin"]["kind"], "dir");
    let libc = &v["files"]["/usr/lib/x86_64-linux-gnu/libc.so.6"];
    assert_eq!(libc["kind"], "file");
    assert_eq!(libc["reasons"][0]["kind"], "needed");
    assert_eq!(libc["reasons"][0]["name"], "libc.so.6");
    let back: Closure = serde_json::from_value(v).unwrap();
    assert_eq!(back, c);
}

#[test]
fn static_programs_need_nothing_and_libraries_alone_get_their_loader() {
    let root = MiniRoot::new();
    cc(
        &root.path("/usr/bin/static"),
        "int main(void){return 0;}",
        &["-static-pie"],
    );
    let c = closure(&root, ImageConfig::default(), &["/usr/bin/static"]);
    assert!(has(&c, "/usr/bin/static"));
    assert!(
        !c.files
            .keys()
            .any(|p| p.contains("ld-linux") || p.contains("libc.so")),
        "{}",
        c.render()
    );
    assert!(!has(&c, "/etc/ld.so.cache"));
    // libc on its own needs the loader (by SONAME), like ldd shows.
    let c = closure(
        &root,
        ImageConfig::default(),
        &["/usr/lib/x86_64-linux-gnu/libc.so.6"],
    );
    assert!(
        has(&c, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        "{}",
        c.render()
    );
}
