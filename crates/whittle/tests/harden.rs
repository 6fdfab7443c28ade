//! `whittle harden` and `whittle audit` against the real Docker Engine: the emitted settings
//! are started with the emitted `run.sh`, and checked from outside the container (the host's
//! `/proc/PID/status`, the engine's inspect) and from inside with a static busybox (a canary
//! system call outside the list, a write to the read-only root).

mod common;

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::runtime::{fixture_image, TestContainer, TEST_LABEL};
use common::{report, require, run, tempdir, whittle, Checks, Run};

/// A fixture with a static busybox added as /usr/local/bin/busybox (the canaries run with it), built
/// in the test under our own prefix.
fn with_busybox(fixture: &str) -> String {
    static BUILT: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let tag = format!("whittle-test/harden-{fixture}:latest");
    let m = BUILT.get_or_init(Default::default);
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    if m.contains(&tag) {
        return tag;
    }
    require("busybox");
    let base = fixture_image(fixture);
    let ctx = tempdir("harden-img");
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).expect("copy busybox");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {base}\nCOPY busybox /usr/local/bin/busybox\n"),
    )
    .expect("Dockerfile");
    build_image(&tag, ctx.path());
    m.push(tag.clone());
    tag
}

fn build_image(tag: &str, ctx: &Path) {
    let r = run(
        "docker",
        &os!["build", "-q", "--network", "none", "-t", tag, ctx],
    );
    assert_eq!(r.code, Some(0), "docker build {tag}: {}", r.stderr);
}

/// `whittle harden docker-daemon:IMAGE --out DIR --json ARGS…`
fn harden(image: &str, out: &Path, args: &[&str]) -> (Run, serde_json::Value) {
    let src = format!("docker-daemon:{image}");
    let mut all: Vec<&str> = vec!["harden", &src, "--json", "--out"];
    let out_s = out.to_str().expect("utf-8 temp path");
    all.push(out_s);
    all.extend_from_slice(args);
    let t = Instant::now();
    let r = whittle(&all, &[]);
    report(&format!(
        "harden {image} {}: exit {:?} in {:.1} s\n",
        args.join(" "),
        r.code,
        t.elapsed().as_secs_f64()
    ));
    let v = serde_json::from_str(&r.stdout).unwrap_or(serde_json::Value::Null);
    (r, v)
}

/// Every name of the profile resolves in libseccomp (Debian's `seccomp` package).
fn check_names_known(c: &mut Checks, profile: &serde_json::Value) {
    require("scmp_sys_resolver");
    for rule in profile["syscalls"].as_array().into_iter().flatten() {
        for n in rule["names"].as_array().into_iter().flatten() {
            let n = n.as_str().unwrap_or_default();
            let r = run("scmp_sys_resolver", &os!["-a", "x86_64", n]);
            c.check(r.stdout.trim() != "-1", || {
                format!("{n}: unknown to libseccomp")
            });
        }
    }
}

/// `/proc/PID/status` fields of the container's main process, read on the host.
fn status_of(container: &str) -> std::collections::BTreeMap<String, String> {
    let r = run("docker", &os!["inspect", "-f", "{{.State.Pid}}", container]);
    let pid = r.stdout.trim().to_string();
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Starts the emitted `run.sh` with our label and name; the container is removed on drop.
fn start_with_run_sh(out: &Path, prefix: &str) -> TestContainer {
    let name = common::unique(prefix);
    let r = run(
        out.join("run.sh").to_str().expect("utf-8"),
        &os!["--label", TEST_LABEL, "--name", &name],
    );
    let id = r.stdout.trim().to_string();
    let c = TestContainer {
        name: name.clone(),
        id: if id.is_empty() { name } else { id },
    };
    assert_eq!(r.code, Some(0), "run.sh: {}{}", r.stdout, r.stderr);
    c
}

fn cap_mask(caps: &serde_json::Value) -> u64 {
    let all = whittle_sandbox::ALL_CAPS;
    caps.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| all.iter().position(|a| Some(*a) == c.as_str()))
        .fold(0, |m, i| m | (1u64 << i))
}

/// The checks every hardened server passes, from outside and with the canaries inside.
fn check_hardened_server(
    c: &mut Checks,
    out: &Path,
    v: &serde_json::Value,
    prefix: &str,
    busybox: &str,
) {
    let ct = start_with_run_sh(out, prefix);
    std::thread::sleep(Duration::from_millis(500));
    let st = status_of(&ct.id);
    c.eq(st.get("Seccomp").map(String::as_str), Some("2"), "Seccomp");
    c.eq(
        st.get("NoNewPrivs").map(String::as_str),
        Some("1"),
        "NoNewPrivs",
    );
    let eff = st
        .get("CapEff")
        .and_then(|h| u64::from_str_radix(h, 16).ok());
    c.eq(
        eff,
        Some(cap_mask(&v["plan"]["caps"])),
        "CapEff = the emitted set",
    );
    let uid = v["plan"]["uid"].as_u64().unwrap_or(0);
    let real_uid = st
        .get("Uid")
        .and_then(|u| u.split_whitespace().next())
        .and_then(|u| u.parse::<u64>().ok());
    c.eq(real_uid, Some(uid), "Uid = the emitted user");
    if v["plan"]["user_changed"] == true {
        c.check(uid != 0, || "the user was changed but is root".into());
    }
    // Inside, under the same filter: a write to / fails with EROFS, a canary call with EPERM.
    // mkdir is in the list (the exec probe `busybox mkdir -p DIR` recorded it): the refusal
    // comes from the read-only mount, not from the filter.
    let mkdir = run(
        "docker",
        &os!["exec", &ct.id, busybox, "mkdir", "/whittle-canary"],
    );
    c.check(mkdir.stderr.contains("Read-only file system"), || {
        format!("mkdir in / did not fail with EROFS: {mkdir:?}")
    });
    let unshare = run(
        "docker",
        &os!["exec", &ct.id, busybox, "unshare", "-U", "true"],
    );
    c.check(
        unshare.code != Some(0) && unshare.stderr.contains("Operation not permitted"),
        || format!("unshare was not refused with EPERM: {unshare:?}"),
    );
    let t = Instant::now();
    let stop = run("docker", &os!["stop", "-t", "10", &ct.id]);
    let took = t.elapsed();
    c.check(
        stop.code == Some(0) && took < Duration::from_secs(9),
        || format!("docker stop took {took:?}: {stop:?}"),
    );
}

fn check_report(c: &mut Checks, v: &serde_json::Value, out: &Path) {
    c.eq(v["outcome"].as_str(), Some("proven"), "outcome");
    c.eq(v["recording"]["runs"].as_u64(), Some(2), "recorded twice");
    let allowed = v["allowed"].as_u64().unwrap_or(0);
    let default = v["docker_default_allowed"].as_u64().unwrap_or(0);
    c.check(allowed > 30 && allowed * 2 < default, || {
        format!("allowlist of {allowed} not far below Docker's {default}")
    });
    let profile: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("seccomp.json")).expect("seccomp.json written"),
    )
    .expect("seccomp.json is JSON");
    c.eq(
        profile["defaultAction"].as_str(),
        Some("SCMP_ACT_ERRNO"),
        "defaultAction",
    );
    check_names_known(c, &profile);
    for f in ["run.sh", "compose.yaml", "report.json"] {
        c.check(out.join(f).exists(), || format!("{f} not written"));
    }
}

#[test]
fn nginx_is_hardened_proven_and_runs_confined() {
    let mut c = Checks::new("nginx_is_hardened_proven_and_runs_confined");
    let img = with_busybox("nginx");
    let dir = tempdir("harden-nginx");
    let out = dir.path().join("out");
    let (r, v) = harden(&img, &out, &["--exec-probe", "busybox mkdir -p /etc"]);
    c.require(r.code == Some(0), || format!("harden failed: {r:?}"));
    check_report(&mut c, &v, &out);
    let allowed = v["allowed"].as_u64().unwrap_or(0);
    c.check((40..=170).contains(&allowed), || {
        format!("nginx allows {allowed} calls, expected about 100-150")
    });
    // nginx's master switches to www-data: that is the user it gets, with no capability and
    // the unprivileged-port sysctl instead of CAP_NET_BIND_SERVICE.
    c.eq(v["plan"]["uid"].as_u64(), Some(33), "uid www-data");
    c.eq(
        v["plan"]["caps"].as_array().map(Vec::len),
        Some(0),
        "no capabilities",
    );
    c.eq(
        v["plan"]["sysctls"]["net.ipv4.ip_unprivileged_port_start"].as_str(),
        Some("80"),
        "low port through the sysctl",
    );
    c.eq(
        v["plan"]["read_only"].as_bool(),
        Some(true),
        "read-only root",
    );
    c.check(v["recording"]["stable"] == true, || {
        format!("the two recordings differ: {}", v["recording"]["unstable"])
    });
    let bind = v["syscalls"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "bind");
    c.check(
        bind.is_some_and(|b| b["evidence"].to_string().contains("nginx")),
        || format!("bind has no evidence naming nginx: {bind:?}"),
    );
    check_hardened_server(&mut c, &out, &v, "harden-nginx", "busybox");
    c.finish();
}

#[test]
fn nginx_without_bind_fails_and_names_bind_and_the_probe() {
    let img = with_busybox("nginx");
    let dir = tempdir("harden-nobind");
    let out = dir.path().join("out");
    let (r, v) = harden(&img, &out, &["--deny", "bind"]);
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(
        r.stderr.contains("bind") && r.stderr.contains("http 80/"),
        "the error does not name bind and the probe: {}",
        r.stderr
    );
    assert_eq!(v["outcome"], "refused");
    assert!(
        v["refused"].to_string().contains("system call bind"),
        "{}",
        v["refused"]
    );
    assert!(!out.exists(), "nothing is written when not proven");
}

#[test]
fn nginx_as_root_without_setuid_names_the_capability() {
    let img = with_busybox("nginx");
    let dir = tempdir("harden-nosetuid");
    let out = dir.path().join("out");
    let (r, v) = harden(&img, &out, &["--keep-user", "--no-cap", "SETUID"]);
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(
        r.stderr.contains("CAP_SETUID"),
        "the error does not name CAP_SETUID: {}",
        r.stderr
    );
    assert!(
        v["refused"].to_string().contains("setuid 33"),
        "{}",
        v["refused"]
    );
}

#[test]
fn names_match_libseccomp() {
    require("scmp_sys_resolver");
    let mut c = Checks::new("names_match_libseccomp");
    for (nr, name) in whittle_harden::names::X86_64 {
        let r = run("scmp_sys_resolver", &os!["-a", "x86_64", name]);
        c.eq(r.stdout.trim().parse::<i64>().ok(), Some(*nr), name);
    }
    c.finish();
}

/// The static binary: busybox httpd alone in an image built FROM scratch.
fn static_busybox_image() -> String {
    require("busybox");
    let tag = "whittle-test/harden-static:latest".to_string();
    let ctx = tempdir("harden-static");
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).expect("copy busybox");
    std::fs::create_dir(ctx.path().join("www")).expect("www");
    std::fs::write(ctx.path().join("www/index.html"), "<h1>static</h1>\n").expect("index");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nEXPOSE 8080\n\
         ENTRYPOINT [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .expect("Dockerfile");
    build_image(&tag, ctx.path());
    tag
}

#[test]
fn python_redis_and_a_static_binary_are_hardened() {
    let mut c = Checks::new("python_redis_and_a_static_binary_are_hardened");
    let cases: Vec<(String, Vec<&str>, &str, &str)> = vec![
        (
            with_busybox("python"),
            vec!["--exec-probe", "busybox mkdir -p /etc"],
            "harden-py",
            "busybox",
        ),
        (
            with_busybox("redis"),
            vec![
                "--exec-probe",
                "redis-cli ping",
                "--exec-probe",
                "busybox mkdir -p /etc",
            ],
            "harden-redis",
            "busybox",
        ),
        (
            static_busybox_image(),
            vec!["--exec-probe", "/bin/busybox mkdir -p /www"],
            "harden-static",
            "/bin/busybox",
        ),
    ];
    for (img, args, prefix, bb) in cases {
        let dir = tempdir(prefix);
        let out = dir.path().join("out");
        let (r, v) = harden(&img, &out, &args);
        if !c.check(r.code == Some(0), || format!("harden {img} failed: {r:?}")) {
            continue;
        }
        check_report(&mut c, &v, &out);
        c.check(v["plan"]["uid"].as_u64() != Some(0), || {
            format!("{img}: still root: {}", v["widenings"])
        });
        check_hardened_server(&mut c, &out, &v, prefix, bb);
    }
    c.finish();
}

#[test]
fn a_cli_image_is_hardened_and_prints_the_same() {
    let mut c = Checks::new("a_cli_image_is_hardened_and_prints_the_same");
    let img = fixture_image("jq");
    let dir = tempdir("harden-jq");
    let out = dir.path().join("out");
    let (r, v) = harden(&img, &out, &[]);
    c.require(r.code == Some(0), || format!("harden jq failed: {r:?}"));
    check_report(&mut c, &v, &out);
    c.eq(v["plan"]["uid"].as_u64(), Some(65534), "jq runs as nobody");
    let want = run("docker", &os!["run", "--rm", "--label", TEST_LABEL, &img]);
    let ct = start_with_run_sh(&out, "harden-jq");
    let code = run("docker", &os!["wait", &ct.id]);
    c.eq(
        code.stdout.trim(),
        "0",
        "exit code under the hardened settings",
    );
    let got = run("docker", &os!["logs", &ct.id]);
    c.eq(got.stdout, want.stdout, "stdout");
    c.finish();
}

#[test]
fn audit_shows_fat_and_slim_side_by_side() {
    let fat = fixture_image("nginx");
    let stat = static_busybox_image();
    let r = whittle(
        [
            "audit",
            &format!("docker-daemon:{fat}"),
            &format!("docker-daemon:{stat}"),
            "--json",
        ],
        &[],
    )
    .ok("whittle audit");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("audit JSON");
    assert_eq!(v["schema"], "whittle.audit/v1");
    let (a, b) = (&v["images"][0], &v["images"][1]);
    assert_eq!(a["runs_as_root"], true);
    assert!(
        a["shells"].to_string().contains("/bin/sh"),
        "{}",
        a["shells"]
    );
    assert!(a["package_managers"].to_string().contains("apt-get"));
    assert!(
        a["setuid"].to_string().contains("/usr/bin/su"),
        "{}",
        a["setuid"]
    );
    assert_eq!(a["listening"], serde_json::json!([80]));
    assert_eq!(b["package_managers"], serde_json::json!([]));
    assert_eq!(b["setuid"], serde_json::json!([]));
    assert_eq!(b["listening"], serde_json::json!([8080]));
    let table = whittle(
        ["audit", &format!("docker-daemon:{fat}"), "--no-trace"],
        &[],
    )
    .ok("whittle audit (table)");
    assert!(
        table.stdout.contains("package managers"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("not traced"), "{}", table.stdout);
}

#[test]
fn build_harden_hardens_the_slim_image_it_wrote() {
    let fat = fixture_image("nginx");
    let slim = format!("{}:latest", common::unique("whittle-test/harden-slim"));
    let dir = tempdir("harden-build");
    let out = dir.path().join("out");
    let r = whittle(
        [
            "build",
            &format!("docker-daemon:{fat}"),
            &format!("docker-daemon:{slim}"),
            "--harden",
            "--out",
            out.to_str().expect("utf-8"),
        ],
        &[],
    );
    let _ = run("docker", &os!["rmi", &slim]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("outcome    proven"), "{}", r.stdout);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json"))
            .expect("JSON");
    assert_eq!(v["image"].as_str(), Some(slim.as_str()));
    assert_eq!(v["outcome"], "proven");
}
