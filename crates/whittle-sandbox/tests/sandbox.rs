//! The sandbox against real images: recording accuracy (strace as the oracle, Python's own
//! import log, a shell script's execs), isolation, limits, bad input, and cleanup after every
//! run (no mounts, processes, temp directories or cgroups left).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use whittle_image::ConfigView;
use whittle_sandbox::{run, Kind, Options, Outcome, PreparedImage, Probe, Report};

fn opts() -> Options {
    Options {
        timeout: Duration::from_secs(60),
        grace: Duration::from_secs(3),
        ..Options::default()
    }
}

fn used(rep: &Report) -> BTreeSet<String> {
    rep.files
        .iter()
        .filter(|f| f.ok)
        .map(|f| f.path.clone())
        .collect()
}

fn sh(cmd: &str) -> Option<Vec<String>> {
    Some(vec!["/bin/sh".into(), "-c".into(), cmd.into()])
}

/// Paths strace shows successfully opened or executed (absolute ones).
fn strace_opened(log: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in log.lines() {
        // "[pid] 12 openat(AT_FDCWD, \"/etc/x\", O_RDONLY) = 3" (with -f: "PID syscall(...")
        let body = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
        let Some((name, rest)) = body.split_once('(') else {
            continue;
        };
        if !matches!(name, "open" | "openat" | "openat2" | "creat" | "execve") {
            continue;
        }
        let Some((_, ret)) = rest.rsplit_once(") = ") else {
            continue;
        };
        if ret.starts_with('-') || ret.starts_with('?') {
            continue;
        }
        let Some(start) = rest.find('"') else {
            continue;
        };
        let Some(len) = rest[start + 1..].find('"') else {
            continue;
        };
        let p = &rest[start + 1..start + 1 + len];
        if !p.starts_with('/') || ["/proc", "/sys", "/dev"].iter().any(|d| p.starts_with(d)) {
            continue;
        }
        out.insert(p.to_string());
    }
    out
}

#[test]
fn nginx_get_matches_strace_oracle() {
    require_root();
    assert!(
        std::path::Path::new("/usr/bin/strace").exists(),
        "the oracle needs strace: apt-get install strace"
    );
    let _g = serial();
    let before = snapshot();

    // whittle's own record of nginx serving GET /.
    let img = prepared("nginx");
    let rep = run(img, &opts()).unwrap();
    assert_eq!(rep.outcome, Outcome::Ok, "{:?} {}", rep.error, rep.render());
    assert_eq!(rep.probes.len(), 1);
    assert_eq!(rep.probes[0].status, Some(200));
    assert!(
        rep.recorders.ptrace && rep.recorders.fanotify,
        "{:?}",
        rep.recorders
    );
    let nginx = rep
        .files
        .iter()
        .find(|f| f.path == "/usr/sbin/nginx")
        .unwrap();
    assert!(nginx.kinds.contains(&Kind::Exec), "{nginx:?}");
    assert!(rep
        .files
        .iter()
        .any(|f| f.path == "/etc/nginx/nginx.conf" && f.ok));
    assert!(rep.timings.start_ms.unwrap() < 2000);

    // The oracle: the same image plus the host's strace, same sandbox, same probe, strace
    // wrapping the entrypoint (whittle's recorders off, ptrace being exclusive).
    let (config, mut flat) = flattened("nginx");
    let mut files = vec![("/usr/bin/strace", PathBuf::from("/usr/bin/strace"), 0o755)];
    for lib in [
        "libunwind-ptrace.so.0",
        "libunwind-x86_64.so.8",
        "libunwind.so.8",
        "liblzma.so.5",
    ] {
        let p = format!("/usr/lib/x86_64-linux-gnu/{lib}");
        files.push((
            Box::leak(p.clone().into_boxed_str()),
            PathBuf::from(p),
            0o644,
        ));
    }
    add_files(&mut flat, &files);
    let oracle_img = PreparedImage::from_flattened("nginx+strace".into(), config, flat).unwrap();
    let mut o = opts();
    o.record = false;
    o.stderr_tail = 64 << 20;
    o.command = Some(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=%file",
            "nginx",
            "-g",
            "daemon off;",
        ]
        .map(String::from)
        .to_vec(),
    );
    let orep = run(&oracle_img, &o).unwrap();
    assert_eq!(orep.probes[0].status, Some(200), "{}", orep.render());
    let oracle = strace_opened(&orep.app.stderr_tail);
    assert!(
        oracle.len() > 20,
        "strace saw too little:\n{}",
        orep.app.stderr_tail
    );
    let ours = used(&rep);
    let missing: Vec<&String> = oracle
        .iter()
        .filter(|p| !ours.contains(*p) && p.as_str() != "/usr/bin/strace")
        .collect();
    assert!(
        missing.is_empty(),
        "strace saw these opened, whittle did not: {missing:?}"
    );
    drop(oracle_img);
    assert_clean(&before);
}

#[test]
fn python_http_server_every_loaded_module_is_recorded() {
    require_root();
    let _g = serial();
    let before = snapshot();
    let img = prepared("python");
    let mut o = opts();
    // -v makes Python log every module file it loads (to stderr).
    o.command = Some(
        ["python3", "-v", "-m", "http.server", "8000"]
            .map(String::from)
            .to_vec(),
    );
    o.stderr_tail = 64 << 20;
    let rep = run(img, &o).unwrap();
    assert_eq!(rep.probes.len(), 1, "{}", rep.render());
    assert_eq!(rep.probes[0].status, Some(200), "{}", rep.render());
    let mut loaded = BTreeSet::new();
    for l in rep.app.stderr_tail.lines() {
        // "# code object from '/usr/lib/python3.11/__pycache__/x.cpython-311.pyc'"
        // "# extension module '_json' loaded from '/usr/lib/.../_json.cpython-311-….so'"
        // "# /usr/lib/python3.11/__pycache__/x.pyc matches /usr/lib/python3.11/x.py"
        if let Some(rest) = l.strip_prefix("# code object from '") {
            loaded.insert(rest.trim_end_matches('\'').to_string());
        } else if l.starts_with("# extension module") {
            if let Some((_, p)) = l.rsplit_once(" from '") {
                loaded.insert(p.trim_end_matches('\'').to_string());
            }
        } else if let Some((_, src)) = l.split_once(" matches ") {
            loaded.insert(src.to_string());
        }
    }
    assert!(loaded.len() > 30, "python -v said little: {loaded:?}");
    let ours = used(&rep);
    let missing: Vec<&String> = loaded.iter().filter(|p| !ours.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "modules loaded but not recorded: {missing:?}"
    );
    assert!(ours.contains("/usr/lib/python3.11/http/server.py"));
    assert_clean(&before);
}

/// The base fixture plus one script layer, its Entrypoint the script.
fn script_image(script: &str) -> (PreparedImage, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("job.sh");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(script.as_bytes()).unwrap();
    let (mut config, mut flat) = flattened("base");
    add_files(&mut flat, &[("/usr/local/bin/job.sh", p, 0o755)]);
    config.entrypoint = Some(vec!["/usr/local/bin/job.sh".into()]);
    config.cmd = None;
    config.exposed_ports = None;
    let img = PreparedImage::from_flattened("base+job".into(), config, flat).unwrap();
    (img, dir)
}

#[test]
fn shell_script_cli_every_exec_is_recorded() {
    require_root();
    let _g = serial();
    let before = snapshot();
    let (img, _d) = script_image(
        "#!/bin/sh\nset -e\nls / >/dev/null\ngrep -q ID /etc/os-release\ndate +%s >/dev/null\n\
         id -u\nsed -n 1p /etc/passwd | cut -d: -f1\nuname -s >/dev/null\n\
         env | sort | head -1 >/dev/null\necho done\n",
    );
    let rep = run(&img, &opts()).unwrap();
    assert_eq!(rep.mode, "cli");
    assert_eq!(rep.outcome, Outcome::Ok, "{}", rep.render());
    assert_eq!(rep.app.exit_code, Some(0), "{}", rep.render());
    let expected = "0\nroot\ndone\n";
    assert_eq!(
        rep.app.stdout_sha256.as_deref(),
        Some(sha256(expected.as_bytes()).as_str())
    );
    let execs: BTreeSet<&str> = rep
        .files
        .iter()
        .filter(|f| f.ok && f.kinds.contains(&Kind::Exec))
        .map(|f| f.path.as_str())
        .collect();
    for prog in [
        "job.sh", "dash", "ls", "grep", "date", "id", "sed", "cut", "uname", "env", "sort", "head",
    ] {
        assert!(
            execs.iter().any(|p| p.ends_with(&format!("/{prog}"))),
            "{prog} not recorded as executed: {execs:?}"
        );
    }
    // The loader the kernel maps for every dynamic program (no system call names it).
    assert!(execs.iter().any(|p| p.contains("ld-linux")), "{execs:?}");
    drop(img);
    assert_clean(&before);
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn isolation_pids_network_and_files() {
    require_root();
    let _g = serial();
    let before = snapshot();
    // A host listener on the host's loopback: the sandbox has its own loopback, so it must
    // not reach this one.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (img, _d) = script_image(&format!(
        "#!/bin/bash\nexec 1>&2\n\
         echo procs=$(ls /proc | grep -c '^[0-9]')\n\
         echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,)\n\
         if timeout 3 bash -c 'echo x > /dev/tcp/127.0.0.1/{port}' 2>/dev/null; then echo hostnet=reached; else echo hostnet=refused; fi\n\
         echo hacked >> /etc/passwd && echo etc=written\n\
         touch /whittle-isolation-probe && echo root=written\n\
         echo hostname=$(hostname)\n\
         echo caps=$(grep CapEff /proc/self/status | cut -f2)\n\
         echo nnp=$(grep NoNewPrivs /proc/self/status | cut -f2)\n"
    ));
    let passwd_before = std::fs::read(img.lower().join("etc/passwd")).unwrap();
    let rep = run(&img, &opts()).unwrap();
    assert_eq!(rep.outcome, Outcome::Ok, "{}", rep.render());
    let out = &rep.app.stderr_tail;
    let procs: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(procs < 10, "the sandbox sees {procs} processes:\n{out}");
    assert!(out.contains("ifaces=lo,\n"), "{out}");
    assert!(out.contains("hostnet=refused"), "{out}");
    assert!(
        out.contains("etc=written") && out.contains("root=written"),
        "{out}"
    );
    assert!(out.contains(&format!("hostname={}", rep.hostname)), "{out}");
    assert!(out.contains("caps=00000000a80425fb"), "{out}");
    assert!(out.contains("nnp=1"), "{out}");
    // Neither the image's extraction nor the host changed.
    assert_eq!(
        std::fs::read(img.lower().join("etc/passwd")).unwrap(),
        passwd_before
    );
    assert!(!img.lower().join("whittle-isolation-probe").exists());
    assert!(!std::path::Path::new("/whittle-isolation-probe").exists());
    // The writes were recorded.
    assert!(rep
        .files
        .iter()
        .any(|f| f.path == "/etc/passwd" && f.kinds.contains(&Kind::Write)));
    assert!(rep
        .files
        .iter()
        .any(|f| f.path == "/whittle-isolation-probe" && f.kinds.contains(&Kind::Create)));
    drop(listener);
    drop(img);
    assert_clean(&before);
}

#[test]
fn never_exiting_program_and_fork_bomb_are_killed_at_the_timeout() {
    require_root();
    let _g = serial();
    let before = snapshot();
    let img = prepared("base");
    for (cmd, pids_max) in [
        ("exec sleep 1000", 4096),
        ("f() { f | f & }; f; sleep 1000", 256),
    ] {
        let mut o = opts();
        o.timeout = Duration::from_secs(4);
        o.pids_max = pids_max;
        o.command = sh(cmd);
        let t = Instant::now();
        let rep = run(img, &o).unwrap();
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        assert_eq!(rep.outcome, Outcome::Timeout, "{cmd}: {}", rep.render());
        assert!(rep.error.as_deref().unwrap().contains("timed out"));
        assert!(rep.app.stopped_by_whittle);
        assert_clean(&before);
    }
}

#[test]
fn interrupt_stops_and_cleans_up() {
    require_root();
    let _g = serial();
    let before = snapshot();
    let img = prepared("base");
    let mut o = opts();
    o.command = sh("exec sleep 1000");
    let t = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(800));
        whittle_sandbox::raise_interrupt_flag(libc::SIGINT);
    });
    let rep = run(img, &o).unwrap();
    t.join().unwrap();
    whittle_sandbox::clear_interrupt_flag();
    assert_eq!(rep.outcome, Outcome::Interrupted, "{}", rep.render());
    assert_clean(&before);
}

#[test]
fn bad_input_gives_one_clear_error() {
    require_root();
    let _g = serial();
    let before = snapshot();
    let img = prepared("base");

    // No Entrypoint, no Cmd.
    let (_, flat) = flattened("base");
    let bare = PreparedImage::from_flattened("bare".into(), ConfigView::default(), flat).unwrap();
    let e = run(&bare, &opts()).unwrap_err().to_string();
    assert_eq!(
        e,
        "no command specified: the image has no Entrypoint or Cmd"
    );
    drop(bare);

    // Entrypoint missing or not executable: exit code and message as the engine gives.
    for (argv0, code, msg) in [
        (
            "nosuchprogram",
            127,
            "exec: \"nosuchprogram\": executable file not found in $PATH",
        ),
        (
            "/nonexistent",
            127,
            "exec: \"/nonexistent\": stat /nonexistent: no such file or directory",
        ),
        (
            "/etc/passwd",
            126,
            "exec: \"/etc/passwd\": permission denied",
        ),
    ] {
        let mut o = opts();
        o.command = Some(vec![argv0.into()]);
        let rep = run(img, &o).unwrap();
        assert_eq!(rep.outcome, Outcome::ExecFailed);
        assert_eq!(rep.app.exit_code, Some(code), "{argv0}");
        assert_eq!(rep.error.as_deref(), Some(msg));
    }

    // A probed port that never opens: an error after the ready timeout, with stderr's tail.
    let mut o = opts();
    o.command = sh("echo warming up the flux capacitor >&2; exec sleep 1000");
    o.probes = vec![Probe::Http {
        port: 8080,
        path: "/".into(),
    }];
    o.ready_timeout = Duration::from_secs(2);
    let t = Instant::now();
    let rep = run(img, &o).unwrap();
    assert!(t.elapsed() >= Duration::from_secs(2));
    assert_eq!(rep.outcome, Outcome::NotReady, "{}", rep.render());
    assert_eq!(
        rep.error.as_deref(),
        Some("port 8080 did not start listening within 2 s")
    );
    assert!(rep.app.stderr_tail.contains("flux capacitor"));
    assert!(rep.render().contains("flux capacitor"));

    // The app crashes before it is probed.
    let mut o = opts();
    o.command = sh("echo segfault imminent >&2; exit 3");
    o.probes = vec![Probe::Http {
        port: 8080,
        path: "/".into(),
    }];
    let rep = run(img, &o).unwrap();
    assert_eq!(rep.outcome, Outcome::Crashed, "{}", rep.render());
    assert_eq!(rep.app.exit_code, Some(3));
    assert_eq!(
        rep.error.as_deref(),
        Some("the app exited with code 3 before it was stopped")
    );
    assert!(rep.app.stderr_tail.contains("segfault imminent"));
    assert_clean(&before);
}

#[test]
fn exec_and_host_probes() {
    require_root();
    let _g = serial();
    let before = snapshot();
    let img = prepared("base");
    let mut o = opts();
    o.command = sh("exec sleep 1000");
    o.grace = Duration::from_secs(1);
    o.probes = vec![
        Probe::Exec("cat /etc/debian_version".into()),
        Probe::Host("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '".into()),
    ];
    let rep = run(img, &o).unwrap();
    assert_eq!(rep.outcome, Outcome::Ok, "{}", rep.render());
    assert_eq!(rep.probes[0].exit_code, Some(0));
    assert!(rep
        .files
        .iter()
        .any(|f| f.path == "/etc/debian_version" && f.kinds.contains(&Kind::Read)));
    // The host command ran in the sandbox's network namespace: it sees only `lo`.
    assert_eq!(rep.probes[1].exit_code, Some(0));
    assert_eq!(
        rep.probes[1].sha256.as_deref(),
        Some(sha256(b"lo\n").as_str())
    );
    // Its own files (the host's /bin/cat …) are not in the record.
    assert!(!rep.files.iter().any(|f| f.path == "/proc/net/dev"));
    // sleep was stopped with SIGTERM (sh exec'd it; pid 2 is sleep, not pid 1).
    assert_eq!(rep.app.signal.as_deref(), Some("SIGTERM"));
    assert_clean(&before);
}
