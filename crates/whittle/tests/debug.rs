//! `whittle debug`, `whittle debug port-forward`, `whittle debug cp` and `whittle ps` against
//! the real kernel and the real Docker Engine: the guarantees, each one checked from
//! outside the session (the engine's inspect and diff, the host's /proc).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::runtime::{
    fixture_image, free_port, http_get, toolbox_image, wait_for, Daemon, TestContainer,
};
use common::{require, run, run_ok, sha256_file, tempdir, unique, whittle, Run};

const NS: [&str; 5] = ["pid", "net", "ipc", "uts", "cgroup"];

fn cache() -> std::ffi::OsString {
    std::env::temp_dir()
        .join("whittle-debug-test-toolbox")
        .into_os_string()
}

/// `whittle debug ARGS` with the test toolbox cache.
fn debug(args: &[&str]) -> Run {
    let mut all = vec!["debug"];
    all.extend_from_slice(args);
    whittle(&all, &[("WHITTLE_TOOLBOX_CACHE", cache().as_os_str())])
}

fn debug_ok(args: &[&str]) -> Run {
    debug(args).ok(&format!("whittle debug {}", args.join(" ")))
}

/// `whittle debug TARGET --toolbox TB FLAGS -- sh -c SCRIPT`, which must succeed.
fn sh_ok(target: &str, tb: &str, flags: &[&str], script: &str) -> Run {
    let mut args = vec![target, "--toolbox", tb];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    debug_ok(&args)
}

fn pid_of(c: &TestContainer) -> u32 {
    run_ok("docker", &os!["inspect", "-f", "{{.State.Pid}}", &c.id])
        .stdout
        .trim()
        .parse()
        .expect("a pid")
}

/// What must not change: StartedAt, RestartCount, Config, the state.
fn engine_view(c: &TestContainer) -> String {
    run_ok(
        "docker",
        &os![
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.StartedAt}} {{.RestartCount}} {{json .Config}} {{json .Mounts}}",
            &c.id
        ],
    )
    .stdout
}

/// `docker diff`, sorted: the engine lists a running and a stopped container's changes in
/// different orders.
fn docker_diff(c: &TestContainer) -> String {
    let mut l: Vec<String> = run_ok("docker", &os!["diff", &c.id])
        .stdout
        .lines()
        .map(str::to_string)
        .collect();
    l.sort();
    l.iter().map(|l| format!("{l}\n")).collect()
}

/// Host pids whose pid namespace is `ns`.
fn pids_in(ns: &str) -> BTreeSet<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns)
        })
        .collect()
}

fn ns_link(pid: u32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn root_entries(pid: u32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn target_is_unchanged_and_namespaces_are_shared() {
    let tb = toolbox_image();
    let c = TestContainer::run(
        "debug-same",
        &[&fixture_image("base"), "sh", "-c", "exec sleep infinity"],
    );
    let pid = pid_of(&c);
    let before = engine_view(&c);
    let entries = root_entries(pid);
    let procs = pids_in(&ns_link(pid, "pid"));
    let script = "for n in pid net ipc uts cgroup; do readlink /proc/self/ns/$n; done; \
                  cat /proc/self/cgroup; echo root=$TARGET_ROOT; ls /target/etc/os-release; \
                  ps -o pid,comm";
    let r = sh_ok(&c.name, &tb, &[], script);
    let lines: Vec<&str> = r.stdout.lines().collect();
    for (i, kind) in NS.iter().enumerate() {
        assert_eq!(
            lines[i],
            ns_link(pid, kind),
            "{kind} namespace\n{}",
            r.stdout
        );
    }
    // In every v1 hierarchy the target is in, so is the session.
    let target_cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for l in target_cg.lines().filter(|l| l.contains(&c.id)) {
        assert!(r.stdout.contains(l), "session not in `{l}`:\n{}", r.stdout);
    }
    assert!(target_cg.contains(&c.id), "{target_cg}");
    assert!(r.stdout.contains("root=/target"), "{}", r.stdout);
    assert!(r.stdout.contains("/target/etc/os-release"), "{}", r.stdout);
    // The target's processes are the session's: its pid 1 is the target's sleep.
    assert!(
        r.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "sleep"]),
        "{}",
        r.stdout
    );

    // A session killed with SIGKILL takes its command with it.
    let dir = tempdir("debug-kill");
    let cache = cache();
    let mut d = Daemon::start(
        "whittle debug (to be killed)",
        common::whittle_bin(),
        &os!["debug", &c.name, "--toolbox", &tb, "--", "sleep", "4242"],
        &[("WHITTLE_TOOLBOX_CACHE", cache.to_str().unwrap())],
        &dir.path().join("log"),
    );
    let ns = ns_link(pid, "pid");
    let extra = wait_for(
        "the session's sleep in the target",
        Duration::from_secs(20),
        || {
            let now = pids_in(&ns);
            let new: Vec<u32> = now.difference(&procs).copied().collect();
            new.into_iter().find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.contains("4242"))
            })
        },
    );
    d.stop_with(libc::SIGKILL, Duration::from_secs(5));
    wait_for(
        "the session's process to go",
        Duration::from_secs(10),
        || (!Path::new(&format!("/proc/{extra}")).exists()).then_some(()),
    );

    assert_eq!(docker_diff(&c), "", "docker diff after the sessions");
    assert_eq!(engine_view(&c), before, "docker inspect changed");
    assert_eq!(root_entries(pid), entries, "new entries in /proc/PID/root");
    assert_eq!(pids_in(&ns), procs, "processes left in the target");
    let left = run_ok(
        "docker",
        &os!["ps", "-aq", "--filter", format!("ancestor={tb}")],
    );
    assert_eq!(left.stdout.trim(), "", "containers of the toolbox left");
}

/// A named volume removed on drop.
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = run("docker", &os!["volume", "rm", "-f", &self.0]);
    }
}

#[test]
fn locked_down_target() {
    let tb = toolbox_image();
    let base = fixture_image("base");
    let vol = Volume(unique("debug-vol"));
    run_ok(
        "docker",
        &os![
            "volume",
            "create",
            "--label",
            common::runtime::TEST_LABEL,
            &vol.0
        ],
    );
    run_ok(
        "docker",
        &os![
            "run",
            "--rm",
            "--label",
            common::runtime::TEST_LABEL,
            "--network",
            "none",
            "-v",
            format!("{}:/data", vol.0),
            &base,
            "sh",
            "-c",
            "echo volume-file > /data/f && chown -R 65532 /data"
        ],
    );
    let c = TestContainer::run(
        "debug-locked",
        &[
            "--read-only",
            "--cap-drop",
            "ALL",
            "--user",
            "65532",
            "--tmpfs",
            "/tmp",
            "--network",
            "none",
            "-v",
            &format!("{}:/data", vol.0),
            "-w",
            "/data",
            &base,
            "sh",
            "-c",
            "umask 077 && echo only-65532 > /tmp/secret && touch /tmp/ready && exec sleep infinity",
        ],
    );
    let pid = pid_of(&c);
    wait_for("the target's /tmp/ready", Duration::from_secs(20), || {
        Path::new(&format!("/proc/{pid}/root/tmp/ready"))
            .exists()
            .then_some(())
    });
    let before = engine_view(&c);
    // Docker's own mount point for the volume (`A /data`) is there before any session.
    let diff_before = docker_diff(&c);

    let r = sh_ok(
        &c.name,
        &tb,
        &[],
        "echo shell-ok; ls /target/data /target/tmp",
    );
    assert!(r.stdout.contains("shell-ok"), "{}", r.stdout);
    for f in ["f", "secret", "ready"] {
        assert!(
            r.stdout.lines().any(|l| l == f),
            "no {f} in ls:\n{}",
            r.stdout
        );
    }
    let r = sh_ok(
        &c.name,
        &tb,
        &["--as-target"],
        "id -u; pwd; cat /target/tmp/secret",
    );
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        ["65532", "/target/data", "only-65532"],
        "{}",
        r.stderr
    );
    let mode = run_ok(
        "stat",
        &os!["-c", "%a %u", format!("/proc/{pid}/root/tmp/secret")],
    );
    assert_eq!(mode.stdout.trim(), "600 65532");
    // Root with every capability, outside the target's seccomp profile and cap set.
    let r = sh_ok(&c.name, &tb, &[], "timeout -s INT 2 strace -p 1 2>&1; true");
    assert!(r.stdout.contains("Process 1 attached"), "{}", r.stdout);
    // The session cannot write into the target even as root.
    let r = debug(&[&c.name, "--toolbox", &tb, "--", "touch", "/target/data/new"]);
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert_eq!(docker_diff(&c), diff_before);
    assert_eq!(engine_view(&c), before);
    let vf = run_ok(
        "docker",
        &os![
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            format!("{}:/data", vol.0),
            &base,
            "ls",
            "/data"
        ],
    );
    assert_eq!(vf.stdout.trim(), "f", "the volume changed");
}

#[test]
fn pid_targets_join_the_same_namespaces() {
    let tb = toolbox_image();
    let c = TestContainer::run(
        "debug-pid",
        &[
            "--cap-drop",
            "ALL",
            "--user",
            "65532",
            &fixture_image("base"),
            "sleep",
            "infinity",
        ],
    );
    let pid = pid_of(&c);
    let t = format!("pid:{pid}");
    let r = sh_ok(
        &t,
        &tb,
        &[],
        "for n in pid net ipc uts cgroup; do readlink /proc/self/ns/$n; done",
    );
    let want: Vec<String> = NS.iter().map(|k| ns_link(pid, k)).collect();
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), want);
    let r = debug_ok(&[&t, "--toolbox", &tb, "--as-target", "--", "id", "-u"]);
    assert_eq!(r.stdout.trim(), "65532");
    assert_eq!(docker_diff(&c), "");
}

#[test]
fn exit_codes_and_toolbox_errors() {
    let since = run_ok("date", &os!["+%s"]).stdout.trim().to_string();
    let tb = toolbox_image();
    let c = TestContainer::run("debug-exit", &[&fixture_image("base"), "sleep", "infinity"]);
    let r = debug(&[&c.name, "--toolbox", &tb, "--", "sh", "-c", "exit 7"]);
    assert_eq!(r.code, Some(7), "{}", r.stderr);
    // The shell's codes: 127 not found, 126 not executable; one line naming the command.
    let r = debug(&[&c.name, "--toolbox", &tb, "--", "no-such-tool", "-x"]);
    assert_eq!(r.code, Some(127), "{}", r.stderr);
    assert!(
        r.stderr.contains("no-such-tool: not found in the toolbox"),
        "{}",
        r.stderr
    );
    let r = debug(&[&c.name, "--toolbox", &tb, "--", "/etc/passwd"]);
    assert_eq!(r.code, Some(126), "{}", r.stderr);
    assert!(
        r.stderr.contains("/etc/passwd: cannot be run"),
        "{}",
        r.stderr
    );
    // A private devpts: a terminal can be opened in the session.
    let r = sh_ok(&c.name, &tb, &[], "exec 3<>/dev/ptmx && ls /dev/pts");
    let pts: BTreeSet<&str> = r.stdout.split_whitespace().collect();
    assert!(pts.contains("0") && pts.contains("ptmx"), "{}", r.stdout);
    // auto on an image that is neither slim nor has a debug variant: which flag to pass.
    let r = debug(&[&c.name, "--", "true"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("--toolbox IMAGE"), "{}", r.stderr);
    let r = debug(&[
        &c.name,
        "--toolbox",
        "whittle-test/not-there:1",
        "--",
        "true",
    ]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("never pulls"), "{}", r.stderr);
    // auto finds the `-debug` tag of the target's image.
    let slim = format!("whittle-test/debug-slim-{}", std::process::id());
    run_ok(
        "docker",
        &os!["tag", fixture_image("base"), format!("{slim}:1")],
    );
    run_ok("docker", &os!["tag", &tb, format!("{slim}:1-debug")]);
    let c2 = TestContainer::run("debug-auto", &[&format!("{slim}:1"), "sleep", "infinity"]);
    let r = debug(&[&c2.name, "--", "strace", "-V"]);
    let _ = run(
        "docker",
        &os!["rmi", format!("{slim}:1"), format!("{slim}:1-debug")],
    );
    let r = r.ok("debug with the -debug variant");
    assert!(r.stderr.contains("debug variant"), "{}", r.stderr);
    // Guarantee 3: offline, and not one pull attempt (the engine logs a `pull` event for those,
    // failed ones included) — the missing toolbox above included.
    let events = run_ok(
        "docker",
        &os![
            "events",
            "--since",
            &since,
            "--until",
            run_ok("date", &os!["+%s"]).stdout.trim(),
            "--filter",
            "type=image",
            "--format",
            "{{.Action}} {{.Actor.ID}}"
        ],
    );
    assert!(
        !events.stdout.lines().any(|l| l.starts_with("pull")),
        "image pull events during the sessions:\n{}",
        events.stdout
    );
}

/// A Swarm service removed on drop.
struct Service(String);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = run("docker", &os!["service", "rm", &self.0]);
    }
}

#[test]
fn swarm_service_and_task_targets() {
    let state = run_ok(
        "docker",
        &os!["info", "--format", "{{.Swarm.LocalNodeState}}"],
    );
    assert_eq!(
        state.stdout.trim(),
        "active",
        "this test needs a single-node Swarm: docker swarm init --advertise-addr 127.0.0.1 \
         (scripts/test does it)"
    );
    let tb = toolbox_image();
    let svc = Service(unique("debug-svc"));
    run_ok(
        "docker",
        &os![
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--label",
            "org.whittle.test=debug",
            "--container-label",
            common::runtime::TEST_LABEL,
            "--replicas",
            "2",
            "--name",
            &svc.0,
            fixture_image("base"),
            "sleep",
            "infinity"
        ],
    );
    let tasks = |slot: &str| {
        run_ok(
            "docker",
            &os![
                "ps",
                "--no-trunc",
                "--filter",
                format!("label=com.docker.swarm.service.name={}", svc.0),
                "--filter",
                "status=running",
                "--format",
                "{{.ID}} {{.Label \"com.docker.swarm.task.name\"}} {{.Label \"com.docker.swarm.task.id\"}}"
            ],
        )
        .stdout
        .lines()
        .filter(|l| slot.is_empty() || l.split(' ').nth(1).is_some_and(|t| t.starts_with(slot)))
        .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect::<Vec<_>>()
    };
    wait_for("both tasks running", Duration::from_secs(60), || {
        (tasks("").len() == 2).then_some(())
    });
    let pid = |id: &str| -> u32 {
        run_ok("docker", &os!["inspect", "-f", "{{.State.Pid}}", id])
            .stdout
            .trim()
            .parse()
            .unwrap()
    };
    let net_of = |target: &str| {
        let r = debug_ok(&[
            target,
            "--toolbox",
            &tb,
            "--",
            "readlink",
            "/proc/self/ns/net",
        ]);
        r.stdout.trim().to_string()
    };
    // Slot 2 by `SERVICE.2`, by the full task name and by the task id: that task's namespace.
    let two = tasks(&format!("{}.2.", svc.0)).remove(0);
    let want = ns_link(pid(&two[0]), "net");
    assert_eq!(net_of(&format!("{}.2", svc.0)), want, "SERVICE.SLOT");
    assert_eq!(net_of(&two[1]), want, "task name");
    assert_eq!(net_of(&two[2]), want, "task id");
    // The service name: one of its running tasks on this node.
    let svc_net = net_of(&svc.0);
    let all: BTreeSet<String> = tasks("")
        .iter()
        .map(|t| ns_link(pid(&t[0]), "net"))
        .collect();
    assert!(all.contains(&svc_net), "{svc_net} not one of {all:?}");
    let r = debug(&[&format!("{}.9", svc.0), "--toolbox", &tb, "--", "true"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("{}.9", svc.0)), "{}", r.stderr);
}

#[test]
fn a_killed_sessions_exited_view_is_removed_by_the_next_run() {
    let tb = toolbox_image();
    let c = TestContainer::run("debug-view", &[&fixture_image("base"), "true"]);
    wait_for("the target to exit", Duration::from_secs(20), || {
        let s = run_ok("docker", &os!["inspect", "-f", "{{.State.Status}}", &c.id]);
        (s.stdout.trim() == "exited").then_some(())
    });
    let tmp = tempdir("debug-view-tmp");
    let dir = tempdir("debug-view-log");
    let cache = cache();
    let envs = [
        ("WHITTLE_TOOLBOX_CACHE", cache.to_str().unwrap()),
        ("TMPDIR", tmp.path().to_str().unwrap()),
    ];
    let views = || -> Vec<String> {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("debug-view"))
            .collect()
    };
    let mut d = Daemon::start(
        "whittle debug of an exited target (to be killed)",
        common::whittle_bin(),
        &os!["debug", &c.name, "--toolbox", &tb, "--", "sleep", "4343"],
        &envs,
        &dir.path().join("log"),
    );
    let left = wait_for("the view directory", Duration::from_secs(30), || {
        let v = views();
        (!v.is_empty() && d.log_text().contains("with toolbox")).then_some(v)
    });
    d.stop_with(libc::SIGKILL, Duration::from_secs(5));
    // Its children die with it (parent-death signal), a moment later.
    wait_for("the session's sleep to go", Duration::from_secs(10), || {
        run("pgrep", &os!["-f", "^sleep 4343$"])
            .code
            .is_some_and(|c| c != 0)
            .then_some(())
    });
    assert_eq!(views(), left, "the view is left behind by SIGKILL");
    let r = whittle(os!["ps", "--json"], &[("TMPDIR", tmp.path().as_os_str())])
        .ok("whittle ps after the killed session");
    assert_eq!(views(), Vec::<String>::new(), "view still there");
    assert!(r.stderr.contains(&left[0]), "{}", r.stderr);
}

/// An image with the host's JDK (Debian 12 on both sides) on the base fixture and a class that
/// idles: a JVM to profile from outside, and a toolbox with `jcmd`.
fn jvm_image() -> String {
    require("javac");
    let jdk = std::fs::canonicalize("/usr/lib/jvm/java-17-openjdk-amd64").unwrap_or_else(|e| {
        panic!("/usr/lib/jvm/java-17-openjdk-amd64: {e}: apt-get install openjdk-17-jdk-headless")
    });
    let ctx = tempdir("jvm-ctx");
    std::fs::write(
        ctx.path().join("Idle.java"),
        "public class Idle { public static void main(String[] a) throws Exception { \
         while (true) Thread.sleep(1000); } }",
    )
    .unwrap();
    run_ok(
        "javac",
        &os!["-d", ctx.path(), ctx.path().join("Idle.java")],
    );
    run_ok("cp", &os!["-a", &jdk, ctx.path().join("jdk")]);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}\nCOPY jdk /opt/jdk\nCOPY Idle.class /app/\nENV PATH=/opt/jdk/bin:$PATH\n",
            fixture_image("base")
        ),
    )
    .unwrap();
    let tag = "whittle-test/debug-jvm:latest".to_string();
    run_ok(
        "docker",
        &os!["build", "-q", "--network", "none", "-t", &tag, ctx.path()],
    );
    tag
}

#[test]
fn jcmd_reaches_a_locked_down_jvm_from_outside() {
    let img = jvm_image();
    let c = TestContainer::run(
        "debug-jvm",
        &[
            "--read-only",
            "--cap-drop",
            "ALL",
            "--user",
            "65532",
            "--tmpfs",
            "/tmp",
            &img,
            "java",
            "-Xmx64m",
            "-cp",
            "/app",
            "Idle",
        ],
    );
    let before = engine_view(&c);
    // Without --target-tmp, jcmd's rendezvous files are in the session's private /tmp, which
    // the JVM never looks at: the attach fails, and nothing reached the target.
    let r = debug(&[
        &c.name,
        "--toolbox",
        &img,
        "--",
        "/opt/jdk/bin/jcmd",
        "1",
        "VM.version",
    ]);
    assert_ne!(r.code, Some(0), "{}", r.stdout);
    for flags in [&["--target-tmp"][..], &["--target-tmp", "--as-target"][..]] {
        let mut args = vec![c.name.as_str(), "--toolbox", img.as_str()];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "/opt/jdk/bin/jcmd", "1", "Thread.print"]);
        let r = debug_ok(&args);
        assert!(
            r.stdout.contains("Full thread dump") && r.stdout.contains("\"main\""),
            "jcmd {flags:?}:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }
    assert_eq!(engine_view(&c), before, "docker inspect changed");
    // The read-only root is untouched: the attach files went to the target's tmpfs /tmp.
    assert_eq!(docker_diff(&c), "", "docker diff after jcmd");
}

#[test]
fn missing_privilege_is_one_line_naming_it() {
    require("setpriv");
    let c = TestContainer::run("debug-priv", &[&fixture_image("base"), "sleep", "infinity"]);
    let t = format!("pid:{}", pid_of(&c));
    let dest = tempdir("debug-priv");
    let out = dest.path().join("x");
    for args in [
        vec!["debug", &t, "--toolbox", "x", "--", "true"],
        vec!["debug", "port-forward", &t, "0:80"],
        vec![
            "debug",
            "cp",
            &format!("{t}:/etc/hostname"),
            out.to_str().unwrap(),
        ],
    ] {
        let mut all = vec![
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            common::whittle_bin(),
        ];
        all.extend(args.iter().copied());
        let all: Vec<&std::ffi::OsStr> = all.iter().map(std::ffi::OsStr::new).collect();
        let r = run("setpriv", &all);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", r.stderr);
        assert!(lines[0].contains("CAP_SYS_"), "{args:?}: {}", lines[0]);
        assert!(
            !lines[0].ends_with("Permission denied (os error 13)"),
            "{}",
            lines[0]
        );
    }
}

#[test]
fn port_forward_reaches_an_unpublished_loopback_port() {
    let c = TestContainer::run(
        "debug-pf",
        &[
            &fixture_image("python"), "sh", "-c",
            "cd /tmp && echo hello-from-inside > index.html && exec python3 -m http.server --bind 127.0.0.1 8080",
        ],
    );
    c.wait_log("Serving HTTP", Duration::from_secs(30));
    let ports = run_ok("docker", &os!["port", &c.id]);
    assert_eq!(ports.stdout.trim(), "", "the target publishes nothing");
    let diff_before = docker_diff(&c);
    let local = free_port();
    let dir = tempdir("debug-pf");
    let mut d = Daemon::start(
        "whittle debug port-forward",
        common::whittle_bin(),
        &os!["debug", "port-forward", &c.name, format!("{local}:8080")],
        &[],
        &dir.path().join("log"),
    );
    let addr = format!("127.0.0.1:{local}");
    let (status, _, body) = wait_for("the forwarded port", Duration::from_secs(20), || {
        d.assert_running();
        http_get(&addr, "/index.html", None).ok()
    });
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), "hello-from-inside\n");
    // Several at once: each connection dials from its own thread in the target's netns.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let a = addr.clone();
            std::thread::spawn(move || http_get(&a, "/index.html", None).unwrap().2)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), b"hello-from-inside\n");
    }
    let st = d.stop_with(libc::SIGTERM, Duration::from_secs(10));
    assert!(st.is_some(), "port-forward did not stop on SIGTERM");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still listening after SIGTERM"
    );
    assert_eq!(
        docker_diff(&c),
        diff_before,
        "the relay added something to the target"
    );
}

#[test]
fn cp_from_overlay_volume_tmpfs_and_an_exited_target() {
    let tb = toolbox_image();
    let c = TestContainer::run(
        "debug-cp",
        &[
            "--tmpfs", "/scratch", "-v", "/data", "--network", "none", &fixture_image("base"), "sh", "-c",
            "for d in /root /data /scratch; do head -c 300000 /dev/urandom > $d/blob; done; \
             mkdir -p /root/tree/sub && echo a > /root/tree/sub/a && ln -s /root/blob /root/tree/link; \
             ln -s /data/blob /root/abs-link; touch /ready; exec sleep infinity",
        ],
    );
    let pid = pid_of(&c);
    wait_for("/ready", Duration::from_secs(20), || {
        Path::new(&format!("/proc/{pid}/root/ready"))
            .exists()
            .then_some(())
    });
    let inside = |p: &str| {
        run_ok("docker", &os!["exec", &c.id, "sha256sum", p])
            .stdout
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let want: Vec<(&str, String)> = ["/root/blob", "/data/blob", "/scratch/blob"]
        .into_iter()
        .map(|p| (p, inside(p)))
        .collect();
    let out = tempdir("debug-cp");
    let cp = |src: &str, dest: &Path| {
        whittle(os!["debug", "cp", format!("{}:{src}", c.name), dest], &[]).ok(&format!("cp {src}"))
    };
    for (i, (p, sum)) in want.iter().enumerate() {
        let d = out.path().join(format!("running-{i}"));
        cp(p, &d);
        assert_eq!(&sha256_file(&d), sum, "{p}");
    }
    // An absolute symlink resolves inside the target's root, not on the host.
    let d = out.path().join("abs-link");
    cp("/root/abs-link", &d);
    assert_eq!(sha256_file(&d), want[1].1);
    // A directory, with its symlink kept as a symlink.
    cp("/root/tree", out.path());
    assert_eq!(
        std::fs::read_to_string(out.path().join("tree/sub/a")).unwrap(),
        "a\n"
    );
    assert_eq!(
        std::fs::read_link(out.path().join("tree/link")).unwrap(),
        Path::new("/root/blob")
    );
    let before_diff = docker_diff(&c);

    run_ok("docker", &os!["stop", "-t", "1", &c.id]);
    let stopped = engine_view(&c);
    for (i, (p, sum)) in want.iter().take(2).enumerate() {
        let d = out.path().join(format!("stopped-{i}"));
        cp(p, &d);
        assert_eq!(&sha256_file(&d), sum, "{p} from the exited container");
    }
    cp("/root/tree", &out.path().join("stopped-tree"));
    assert_eq!(
        std::fs::read_to_string(out.path().join("stopped-tree/sub/a")).unwrap(),
        "a\n"
    );
    // A debug session on the exited target sees its files read-only; it stays exited.
    let r = sh_ok(
        &c.name,
        &tb,
        &[],
        "sha256sum /target/root/blob /target/data/blob; touch /target/x 2>&1; true",
    );
    assert!(r.stdout.contains(&want[0].1), "{}", r.stdout);
    assert!(r.stdout.contains(&want[1].1), "{}", r.stdout);
    assert!(r.stdout.contains("Read-only file system"), "{}", r.stdout);
    assert_eq!(engine_view(&c), stopped, "the exited container changed");
    assert!(stopped.starts_with("exited "), "{stopped}");
    assert_eq!(docker_diff(&c), before_diff);
}

#[test]
fn ps_lists_targets_and_slim_images() {
    let c = TestContainer::run(
        "debug-ps",
        &[
            "-p",
            "127.0.0.1::80",
            &fixture_image("base"),
            "sleep",
            "infinity",
        ],
    );
    let r = whittle(os!["ps", "--json"], &[]).ok("whittle ps --json");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["schema"], "whittle.ps/v1");
    let row = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == c.name.as_str())
        .unwrap_or_else(|| panic!("{} not in {}", c.name, r.stdout));
    assert_eq!(row["pid"], pid_of(&c));
    assert_eq!(row["slim"], false);
    let port = c.host_port(80);
    assert_eq!(row["ports"][0], format!("127.0.0.1:{port}->80/tcp"));
    let table = whittle(os!["ps"], &[]).ok("whittle ps");
    assert!(
        table.stdout.lines().next().unwrap().starts_with("NAME"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains(&c.name));
    // `--json | head`: a reader that is gone is not a crash (the pipe is closed before whittle
    // has even reached the engine).
    let mut child = std::process::Command::new(common::whittle_bin())
        .args(["ps", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("whittle ps");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("whittle ps to end");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A podman container removed on drop.
struct PodmanContainer(String);

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let _ = common::engines::podman(&os!["rm", "-f", "-v", &self.0]);
    }
}

#[test]
fn podman_socket_target() {
    let fix = common::fixtures().join("base.tar");
    let loaded = common::engines::podman(&os!["load", "-q", "-i", fix]).ok("podman load");
    let image = loaded
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .or_else(|| {
            loaded
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("Loaded image(s): "))
        })
        .unwrap_or_else(|| panic!("podman load said: {}", loaded.stdout))
        .trim()
        .to_string();
    let dir = tempdir("debug-podman");
    let sock = dir.path().join("podman.sock");
    let host = format!("unix://{}", sock.display());
    let mut args = common::engines::podman_args();
    args.extend(["system", "service", "--time", "0", &host].map(String::from));
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let mut svc = Daemon::start(
        "podman system service",
        "podman",
        &args,
        &[],
        &dir.path().join("svc.log"),
    );
    wait_for("podman's socket", Duration::from_secs(30), || {
        svc.assert_running();
        sock.exists().then_some(())
    });
    let name = unique("debug-podman");
    let mut run_args = vec![
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        common::runtime::TEST_LABEL,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--user",
        "65532",
    ];
    let extra = std::env::var("WHITTLE_PODMAN_RUN_ARGS").unwrap_or_default();
    run_args.extend(extra.split_whitespace());
    run_args.extend([image.as_str(), "sleep", "infinity"]);
    let run_args: Vec<&std::ffi::OsStr> = run_args.iter().map(std::ffi::OsStr::new).collect();
    common::engines::podman(&run_args).ok("podman run");
    let _c = PodmanContainer(name.clone());
    let inspect = || {
        common::engines::podman(&os![
            "inspect",
            "-f",
            "{{.State.Pid}} {{.State.StartedAt}} {{.RestartCount}}",
            &name
        ])
        .ok("podman inspect")
        .stdout
    };
    let before = inspect();
    let pid: u32 = before.split_whitespace().next().unwrap().parse().unwrap();
    let diff_before = common::engines::podman(&os!["diff", &name])
        .ok("podman diff")
        .stdout;
    let cache = cache();
    let envs = [("WHITTLE_TOOLBOX_CACHE", cache.as_os_str())];
    let r = whittle(
        os!["debug", &name, "--host", &host, "--toolbox", &image, "--", "sh", "-c", "for n in pid net ipc uts cgroup; do readlink /proc/self/ns/$n; done; ls /target/etc/os-release"],
        &envs,
    )
    .ok("whittle debug over podman's socket");
    let mut want: Vec<String> = NS.iter().map(|k| ns_link(pid, k)).collect();
    want.push("/target/etc/os-release".into());
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), want);
    let r = whittle(
        os![
            "debug",
            &name,
            "--host",
            &host,
            "--toolbox",
            &image,
            "--as-target",
            "--",
            "id",
            "-u"
        ],
        &envs,
    )
    .ok("whittle debug --as-target over podman's socket");
    assert_eq!(r.stdout.trim(), "65532");
    assert_eq!(inspect(), before, "podman inspect changed");
    assert_eq!(
        common::engines::podman(&os!["diff", &name]).stdout,
        diff_before
    );
}
