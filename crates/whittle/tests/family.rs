//! `whittle family build` and the debug variant end to end, against the real Docker Engine:
//! a family of four Debian fixtures (nginx, a Python HTTP server, redis, jq) FROM one local
//! base is built, grown by a member under a lock, rebuilt unchanged, rebased; every image is
//! loaded into Docker, which says — independently of whittle — which layers they share and
//! whether each slim image answers like its fat one. Then the refusals (bad family files, a
//! member on another base, a missing debug tool, a conflicting toolbox) and the cleanup of a
//! killed build's extraction.
//!
//! One family is built once and shared by all its assertions (building is the slow part).
//! Docker images get unique names and are removed by guards; containers too. Each test uses
//! its own cache directory (WHITTLE_CACHE_DIR), so what it finds cached it cached itself.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::engines::{
    container, docker_inspect, docker_load, load_fixture, require_docker, run_cli, serve,
    DockerImage,
};
use common::gen::{self, Blob, Comp};
use common::{
    archive_members, docker_archive_meta, fixtures, run, sha256_file, sha256_hex, tempdir, unique,
    whittle, Checks, Run,
};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time: each runs sandboxes and Docker containers on a 2-core machine.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(format!("{name}.tar"))
}

fn require_redis_fixture() {
    assert!(
        fixture("redis").exists(),
        "{}: no redis fixture; rebuild the fixtures: export WHITTLE_FIXTURES=$(fixtures/build.sh)",
        fixtures().display()
    );
}

/// `whittle ARGS` with the test's cache directory.
fn wh(args: &[&OsStr], cache: &Path) -> Run {
    whittle(args, &[("WHITTLE_CACHE_DIR", cache.as_os_str())])
}

fn family_json(toml: &Path, extra: &[&str], cache: &Path) -> Value {
    let mut args: Vec<&OsStr> = vec![OsStr::new("family"), OsStr::new("build"), toml.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    args.push(OsStr::new("--json"));
    let r = wh(&args, cache).ok(&format!(
        "whittle family build {} {extra:?}",
        toml.display()
    ));
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("--json output: {e}\n{}", r.stdout))
}

/// A member of the family under test: fixture, probe args, how Docker exercises it.
struct M {
    name: &'static str,
    args: &'static [&'static str],
    debug: bool,
    app: App,
}

#[derive(Clone, Copy)]
enum App {
    Http(u16),
    Redis,
    Cli,
}

const WEB: M = M {
    name: "nginx",
    args: &["--http-probe", "80/"],
    debug: true,
    app: App::Http(80),
};
const PY: M = M {
    name: "python",
    args: &["--http-probe", "8000/"],
    debug: false,
    app: App::Http(8000),
};
const JQ: M = M {
    name: "jq",
    args: &[],
    debug: false,
    app: App::Cli,
};
const REDIS: M = M {
    name: "redis",
    args: &["--exec-probe", "redis-cli ping"],
    debug: true,
    app: App::Redis,
};

fn tag(prefix: &str, m: &M) -> String {
    format!("{prefix}/{}:1", m.name)
}

fn write_family(path: &Path, prefix: &str, members: &[&M]) {
    let mut s = format!(
        "base = \"docker-archive:{}\"\nlock = \"family.lock\"\n",
        fixture("base").display()
    );
    for m in members {
        let args: Vec<String> = m.args.iter().map(|a| format!("{a:?}")).collect();
        s.push_str(&format!(
            "\n[[member]]\nname = \"{n}\"\nsource = \"docker-archive:{src}\"\n\
             dest = \"docker-archive:out/{n}.tar:{tag}\"\nargs = [{args}]\ndebug = {debug}\n",
            n = m.name,
            src = fixture(m.name).display(),
            tag = tag(prefix, m),
            args = args.join(", "),
            debug = m.debug
        ));
    }
    fs::write(path, s).unwrap();
}

fn member<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no member {name} in {r}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// `docker run -d` the image, then `redis-cli ping` inside until it answers (30 s).
fn redis_ping(image: &str) -> String {
    let name = unique("whittle-test-redis");
    let r = run("docker", &os!["run", "-d", "--name", name.as_str(), image]);
    assert_eq!(r.code, Some(0), "docker run -d {image}: {}", r.stderr);
    let _c = container(&name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run("docker", &os!["exec", name.as_str(), "redis-cli", "ping"]);
        if r.code == Some(0) && !r.stdout.trim().is_empty() {
            return r.stdout.trim().to_string();
        }
        if Instant::now() > deadline {
            let logs = run("docker", &os!["logs", name.as_str()]);
            panic!(
                "{image}: redis-cli ping failed for 30 s: {}\n{}",
                r.stderr, logs.stderr
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How the image answers, as Docker runs it.
fn answer(image: &str, app: App, scratch: &Path) -> String {
    match app {
        App::Http(port) => {
            let (code, hash, len) = serve(image, port, scratch);
            format!("HTTP {code} {len} bytes sha256 {hash}")
        }
        App::Redis => redis_ping(image),
        App::Cli => {
            let (code, hash, _) = run_cli(image);
            format!("exit {code:?} stdout sha256 {hash}")
        }
    }
}

/// `docker load` (the tag removed when `guards` drops), then `docker image inspect`: the
/// image and its layers' diff_ids.
fn load_and_inspect(path: &Path, tag: &str, guards: &mut Vec<DockerImage>) -> (Value, Vec<String>) {
    guards.push(docker_load(path, tag).unwrap_or_else(|e| panic!("{e}")));
    let i = docker_inspect(tag);
    let ids = i["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| s(v).to_string())
        .collect();
    (i, ids)
}

fn app_digests(r: &Value) -> BTreeMap<String, String> {
    r["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (s(&m["name"]).to_string(), s(&m["app_diff_id"]).to_string()))
        .collect()
}

#[test]
fn a_family_of_four_shares_one_base_layer() {
    let _s = serial();
    require_docker();
    require_redis_fixture();
    let dir = tempdir("family");
    let cache = dir.path().join("cache");
    let toml = dir.path().join("shop.toml");
    let lock = dir.path().join("family.lock");
    let prefix = unique("whittle-test-family");
    let mut c = Checks::new("family a_family_of_four_shares_one_base_layer");

    // Three members first: the lock is written from them.
    write_family(&toml, &prefix, &[&WEB, &PY, &JQ]);
    let r1 = family_json(&toml, &[], &cache);
    c.eq(s(&r1["base"]["lock"]), "written", "first build: lock");
    let base1 = s(&r1["base"]["diff_id"]).to_string();
    let lock1 = fs::read(&lock).expect("the lock is written on the first build");
    for m in ["nginx", "python", "jq"] {
        c.eq(
            member(&r1, m)["traced"].as_bool(),
            Some(true),
            &format!("first build: {m} traced"),
        );
        c.eq(
            s(&member(&r1, m)["verification"]),
            "passed",
            &format!("{m} verification"),
        );
    }

    // A fourth member under the lock: the base stays, redis's extra base files go into its
    // app layer, and the others are not traced again.
    write_family(&toml, &prefix, &[&WEB, &PY, &JQ, &REDIS]);
    let r2 = family_json(&toml, &[], &cache);
    c.eq(s(&r2["base"]["lock"]), "honoured", "second build: lock");
    c.eq(
        s(&r2["base"]["diff_id"]),
        base1.as_str(),
        "base diff_id after adding a member",
    );
    c.check(fs::read(&lock).unwrap() == lock1, || {
        "the lock file changed when a member was added".into()
    });
    for m in ["nginx", "python", "jq"] {
        c.eq(
            member(&r2, m)["traced"].as_bool(),
            Some(false),
            &format!("{m} traced again after adding redis"),
        );
        c.eq(
            member(&r2, m)["cached"].as_bool(),
            Some(true),
            &format!("{m} cached"),
        );
    }
    c.eq(
        member(&r2, "redis")["traced"].as_bool(),
        Some(true),
        "redis traced",
    );
    let outside = member(&r2, "redis")["outside_lock"]["bytes"]
        .as_u64()
        .unwrap();
    c.check(outside > 0, || {
        "redis needs base files the lock lacks, yet outside_lock is 0".into()
    });
    c.eq(
        r2["total"]["rebase_would_move"].as_u64(),
        Some(outside),
        "rebase_would_move",
    );

    // Unchanged: nothing traced, every image byte-identical.
    let sums = |r: &Value| -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for mem in r["members"].as_array().unwrap() {
            let mut paths = vec![PathBuf::from(
                s(&mem["destination"])
                    .trim_start_matches("docker-archive:")
                    .split(':')
                    .next()
                    .unwrap(),
            )];
            if let Some(d) = mem["debug"].as_object() {
                paths.push(PathBuf::from(
                    s(&d["destination"])
                        .trim_start_matches("docker-archive:")
                        .split(':')
                        .next()
                        .unwrap(),
                ));
            }
            for p in paths {
                m.insert(p.display().to_string(), sha256_file(&p));
            }
        }
        m
    };
    let sums2 = sums(&r2);
    let r3 = family_json(&toml, &[], &cache);
    for mem in r3["members"].as_array().unwrap() {
        c.eq(
            mem["traced"].as_bool(),
            Some(false),
            &format!("unchanged rebuild: {} traced", mem["name"]),
        );
    }
    c.eq(sums(&r3), sums2.clone(), "archives of an unchanged rebuild");

    // Docker's view of everything written.
    let scratch = dir.path();
    let mut guards: Vec<DockerImage> = Vec::new();
    let members = [&WEB, &PY, &JQ, &REDIS];
    let mut layers_seen: BTreeSet<String> = BTreeSet::new();
    let mut want_layers: BTreeSet<String> = BTreeSet::from([base1.clone()]);
    for m in members {
        let rm = member(&r3, m.name);
        c.eq(
            s(&rm["verification"]),
            "passed",
            &format!("{}: verification", m.name),
        );
        let slim_tag = tag(&prefix, m);
        let path = dir.path().join(format!("out/{}.tar", m.name));
        let (si, ids) = load_and_inspect(&path, &slim_tag, &mut guards);
        c.eq(
            ids.first().map(String::as_str),
            Some(base1.as_str()),
            &format!("{}: docker's base layer", m.name),
        );
        c.eq(ids.len(), 2, &format!("{}: layers", m.name));
        c.eq(
            s(&si["Id"]),
            s(&rm["config_digest"]),
            &format!("{}: image id", m.name),
        );
        let labels = &si["Config"]["Labels"];
        c.eq(
            labels["org.whittle.base.diff_id"].as_str(),
            Some(base1.as_str()),
            &format!("{}: base diff_id label", m.name),
        );
        c.check(
            labels["org.opencontainers.image.base.name"]
                .as_str()
                .is_some_and(|n| n.ends_with("base.tar")),
            || format!("{}: base.name label {}", m.name, labels),
        );
        c.check(
            labels["org.opencontainers.image.base.digest"]
                .as_str()
                .is_some_and(|d| d.starts_with("sha256:")),
            || format!("{}: base.digest label", m.name),
        );
        want_layers.insert(s(&rm["app_diff_id"]).to_string());
        layers_seen.extend(ids.iter().cloned());
        if m.debug {
            let d = &rm["debug"];
            let dtag = format!("{slim_tag}-debug");
            c.eq(
                d["tag"].as_str(),
                Some(dtag.as_str()),
                &format!("{}: debug tag", m.name),
            );
            let dpath = dir.path().join(format!("out/{}-debug.tar", m.name));
            let (di, dids) = load_and_inspect(&dpath, &dtag, &mut guards);
            c.eq(
                dids.len(),
                ids.len() + 1,
                &format!("{}: debug layers = slim + 1", m.name),
            );
            c.eq(
                &dids[..ids.len().min(dids.len())],
                &ids[..],
                &format!("{}: debug's lower layers", m.name),
            );
            c.eq(
                di["Config"]["Labels"]["org.whittle.debug-of"].as_str(),
                si["Id"].as_str(),
                &format!("{}: org.whittle.debug-of", m.name),
            );
            c.eq(
                di["Config"]["Entrypoint"].clone(),
                si["Config"]["Entrypoint"].clone(),
                &format!("{}: debug entrypoint", m.name),
            );
            c.eq(
                di["Config"]["Cmd"].clone(),
                si["Config"]["Cmd"].clone(),
                &format!("{}: debug cmd", m.name),
            );
            want_layers.insert(s(&d["layer"]["diff_id"]).to_string());
            layers_seen.extend(dids);
            // The tools run.
            let name = unique("whittle-test-debug");
            let out = run(
                "docker",
                &os![
                    "run",
                    "--rm",
                    "--name",
                    name.as_str(),
                    "--entrypoint",
                    "sh",
                    dtag.as_str(),
                    "-c",
                    "ls /; cat /etc/passwd"
                ],
            );
            let _c = container(&name);
            c.check(
                out.code == Some(0)
                    && out.stdout.contains("root:x:0:0:")
                    && out.stdout.contains("usr\n"),
                || {
                    format!(
                        "{}: sh -c 'ls /; cat /etc/passwd' in the debug image: exit {:?}\n{}{}",
                        m.name, out.code, out.stdout, out.stderr
                    )
                },
            );
            let inspect = whittle(os!["inspect", dpath.as_path()], &[])
                .ok("whittle inspect of the debug variant");
            c.check(
                inspect.stdout.contains(&format!(
                    "debug variant of the slim image with config {}",
                    s(&rm["config_digest"])
                )),
                || {
                    format!(
                        "whittle inspect does not show the debug relation:\n{}",
                        inspect.stdout
                    )
                },
            );
        }
    }
    c.eq(
        layers_seen.len(),
        1 + 4 + 2,
        "distinct layers in Docker: one base + 4 app + 2 tools",
    );
    c.eq(
        layers_seen.clone(),
        want_layers.clone(),
        "Docker's layers are the report's",
    );
    // What Docker stores for them, from the report's layer sizes, is the report's total.
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for mem in r3["members"].as_array().unwrap() {
        for l in mem["layers"].as_array().unwrap() {
            sizes.insert(s(&l["diff_id"]).to_string(), l["size"].as_u64().unwrap());
        }
        if let Some(d) = mem["debug"].as_object() {
            sizes.insert(
                s(&d["layer"]["diff_id"]).to_string(),
                d["layer"]["size"].as_u64().unwrap(),
            );
        }
    }
    c.eq(
        sizes.values().sum::<u64>(),
        r3["total"]["unique_bytes"].as_u64().unwrap(),
        "unique bytes",
    );
    c.check(
        r3["total"]["unique_bytes"].as_u64() < r3["total"]["independent_bytes"].as_u64(),
        || "the family stores no less than independent builds".into(),
    );

    // Every member answers like its fat image; the debug variant still runs the app.
    for m in members {
        let fat = load_fixture(m.name);
        let want = answer(&fat.name, m.app, scratch);
        let got = answer(&tag(&prefix, m), m.app, scratch);
        c.eq(
            got,
            want.clone(),
            &format!("{}: slim answer vs fat", m.name),
        );
        if m.debug {
            let got = answer(&format!("{}-debug", tag(&prefix, m)), m.app, scratch);
            c.eq(got, want, &format!("{}: debug answer vs fat", m.name));
        }
    }

    // --rebase: redis's base files move into the base; the others keep their app layers.
    let apps3 = app_digests(&r3);
    let r4 = family_json(&toml, &["--rebase"], &cache);
    c.eq(s(&r4["base"]["lock"]), "rebased", "rebase: lock");
    c.check(s(&r4["base"]["diff_id"]) != base1, || {
        "--rebase kept the old base although redis needs more of it".into()
    });
    c.check(fs::read(&lock).unwrap() != lock1, || {
        "--rebase did not rewrite the lock".into()
    });
    let apps4 = app_digests(&r4);
    for m in ["nginx", "python", "jq"] {
        c.eq(
            apps4.get(m),
            apps3.get(m),
            &format!("rebase: {m}'s app layer"),
        );
        c.eq(
            s(&member(&r4, m)["verification"]),
            "passed",
            &format!("rebase: {m} verification"),
        );
    }
    c.check(apps4.get("redis") != apps3.get("redis"), || {
        "rebase: redis's app layer did not change".into()
    });
    c.eq(
        r4["total"]["rebase_would_move"].as_u64(),
        Some(0),
        "after --rebase nothing is outside the lock",
    );
    c.finish();
}

#[test]
fn bad_family_files_are_refused_with_one_line() {
    let _s = serial();
    let dir = tempdir("family-bad");
    let cache = dir.path().join("cache");
    let toml = dir.path().join("f.toml");
    let jq = fixture("jq");
    let member = |extra: &str| {
        format!(
            "[[member]]\nname = \"cli\"\nsource = \"docker-archive:{}\"\ndest = \"docker-archive:out/cli.tar\"\n{extra}",
            jq.display()
        )
    };
    // A member on another base: a generated one-layer image.
    let other = dir.path().join("other.tar");
    gen::Image::from_layers(&[vec![gen::file("hello", "hi\n")]], Comp::None)
        .write_docker_archive(&other, "whittle-test/other:1");
    let other_id = Blob::from_entries(&[gen::file("hello", "hi\n")], Comp::None).diff_id();
    let (_, base_cfg) = docker_archive_meta(&fixture("base"));
    let base_id = s(&base_cfg["rootfs"]["diff_ids"][0]).to_string();
    let cases: Vec<(String, &str, Vec<String>)> = vec![
        ("base = [\n".into(), "malformed", vec!["f.toml: line".into()]),
        (member("debgu = true\n"), "unknown field", vec!["unknown field `debgu`".into()]),
        (format!("{}{}", member(""), member("")), "duplicate", vec!["member \"cli\": duplicate member name".into()]),
        (member("args = [\"--probe-http\", \"80/\"]\n"), "bad args", vec!["member \"cli\": args: unexpected argument '--probe-http'".into()]),
        (member("").replace(jq.to_str().unwrap(), "/nonexistent/x.tar"), "missing source", vec!["member \"cli\": source docker-archive:/nonexistent/x.tar: no such file".into()]),
        (
            format!("base = \"docker-archive:{}\"\n{}[[member]]\nname = \"other\"\nsource = \"docker-archive:{}\"\ndest = \"docker-archive:out/other.tar\"\nargs = [\"--no-verify\"]\n", fixture("base").display(), member(""), other.display()),
            "other base",
            vec![format!("member other: built on {other_id}"), base_id.clone()],
        ),
    ];
    let mut c = Checks::new("family bad_family_files_are_refused_with_one_line");
    for (text, what, needles) in cases {
        fs::write(&toml, text).unwrap();
        let r = wh(&os!["family", "build", toml.as_path()], &cache);
        c.eq(r.code, Some(1), &format!("{what}: exit code"));
        let line = r.stderr.trim();
        c.check(
            line.lines().count() == 1 && line.starts_with("whittle: error: "),
            || format!("{what}: not one error line: {line}"),
        );
        for n in &needles {
            c.check(line.contains(n.as_str()), || {
                format!("{what}: {line:?} does not contain {n:?}")
            });
        }
        c.check(
            !dir.path().join("out").exists()
                || fs::read_dir(dir.path().join("out"))
                    .unwrap()
                    .next()
                    .is_none(),
            || format!("{what}: something was written under out/"),
        );
        c.check(!dir.path().join("f.lock").exists(), || {
            format!("{what}: a lock was written")
        });
    }
    c.finish();
}

/// A toolbox whose libc differs from the slim image's: the base fixture's layer plus a layer
/// replacing libc with other bytes.
fn conflicting_toolbox(dir: &Path) -> PathBuf {
    let (entry, _) = docker_archive_meta(&fixture("base"));
    let layer_name = s(&entry["Layers"][0]).to_string();
    let layer = archive_members(&fixture("base"))
        .remove(&layer_name)
        .unwrap();
    let layer_file = dir.join("base-layer.tar");
    fs::write(&layer_file, &layer).unwrap();
    let libc_path = "usr/lib/x86_64-linux-gnu/libc.so.6";
    let mut libc = archive_members(&layer_file)
        .remove(libc_path)
        .unwrap_or_else(|| panic!("the base fixture has no {libc_path}"));
    libc.extend_from_slice(b"\0not the slim image's libc\0");
    let out = dir.join("toolbox.tar");
    gen::Image::new(vec![
        Blob::from_tar(layer, Comp::None),
        Blob::from_entries(&[gen::file(libc_path, &libc).mode(0o755)], Comp::None),
    ])
    .write_docker_archive(&out, "whittle-test/toolbox:1");
    out
}

#[test]
fn debug_variant_of_a_single_build() {
    let _s = serial();
    let dir = tempdir("debug-variant");
    let cache = dir.path().join("cache");
    let jq = fixture("jq");
    let dest = dir.path().join("jq-slim.tar");
    let ddest = dir.path().join("jq-slim-debug.tar");
    let mut c = Checks::new("family debug_variant_of_a_single_build");

    let r = wh(
        &os![
            "build",
            jq.as_path(),
            format!("docker-archive:{}", dest.display()),
            "--debug-variant",
            "--debug-tools",
            "sh,ls,cat",
            "--json"
        ],
        &cache,
    )
    .ok("whittle build --debug-variant");
    let rep: Value = serde_json::from_str(&r.stdout).unwrap();
    let (_, slim_cfg) = docker_archive_meta(&dest);
    let (dentry, dcfg) = docker_archive_meta(&ddest);
    let slim_ids = slim_cfg["rootfs"]["diff_ids"].as_array().unwrap().clone();
    let dids = dcfg["rootfs"]["diff_ids"].as_array().unwrap().clone();
    c.eq(
        dids.len(),
        slim_ids.len() + 1,
        "debug diff_ids = slim's + one",
    );
    c.eq(
        &dids[..slim_ids.len()],
        &slim_ids[..],
        "debug's lower diff_ids",
    );
    let members = archive_members(&dest);
    let slim_cfg_name = docker_archive_meta(&dest).0["Config"]
        .as_str()
        .unwrap()
        .to_string();
    let slim_digest = format!("sha256:{}", sha256_hex(&members[&slim_cfg_name]));
    c.eq(
        dcfg["config"]["Labels"]["org.whittle.debug-of"].as_str(),
        Some(slim_digest.as_str()),
        "org.whittle.debug-of",
    );
    c.eq(
        s(&rep["debug"]["debug_of"]),
        slim_digest.as_str(),
        "report debug_of",
    );
    c.check(
        dentry["RepoTags"][0]
            .as_str()
            .is_some_and(|t| t.ends_with("whittle-fixture/jq:latest-slim-debug")),
        || format!("debug tag: {}", dentry["RepoTags"]),
    );
    c.eq(
        rep["debug"]["tools"].clone(),
        serde_json::json!(["sh", "ls", "cat"]),
        "tools",
    );

    // An explicitly named tool the toolbox lacks: an error naming it, nothing written.
    let refused = |c: &mut Checks, what: &str, extra: &[String], needle: &str| {
        let dest2 = dir.path().join("x.tar");
        let mut args: Vec<String> = vec![
            "build".into(),
            jq.display().to_string(),
            format!("docker-archive:{}", dest2.display()),
            "--debug-variant".into(),
        ];
        args.extend(extra.iter().cloned());
        let r = wh(&args.iter().map(OsStr::new).collect::<Vec<_>>(), &cache);
        c.eq(r.code, Some(1), &format!("{what}: exit code"));
        c.check(r.stderr.contains(needle), || {
            format!("{what}: {}", r.stderr)
        });
        c.check(
            !dest2.exists() && !dir.path().join("x-debug.tar").exists(),
            || format!("{what}: something was written"),
        );
    };
    refused(
        &mut c,
        "missing tool",
        &["--debug-tools".into(), "sh,nosuchtool".into()],
        "--debug-tools nosuchtool: no executable of that name",
    );
    // A toolbox whose libc is not the slim image's: refused, naming the path.
    let toolbox = conflicting_toolbox(dir.path());
    refused(
        &mut c,
        "conflicting toolbox",
        &[
            "--debug-tools".into(),
            "sh".into(),
            "--debug-from".into(),
            format!("docker-archive:{}", toolbox.display()),
        ],
        "/usr/lib/x86_64-linux-gnu/libc.so.6 differs from the slim image's",
    );
    c.finish();
}

#[test]
fn a_killed_builds_extraction_is_removed_by_the_next_run() {
    let _s = serial();
    let scratch = PathBuf::from(format!("/dev/shm/{}", unique("whittle-test-scratch")));
    fs::create_dir_all(&scratch).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(scratch.clone());
    let dir = tempdir("leftovers");
    let env = [("WHITTLE_SCRATCH", scratch.as_os_str())];
    let mut child = std::process::Command::new(common::whittle_bin())
        .args([
            OsStr::new("build"),
            fixture("nginx").as_os_str(),
            OsStr::new(&format!("docker-archive:{}/n.tar", dir.path().display())),
        ])
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let extraction = || -> Option<PathBuf> {
        fs::read_dir(&scratch)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("whittle-sandbox-rootfs-")
                    && p.join("lower/usr").exists()
            })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let left = loop {
        if let Some(p) = extraction() {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no extraction appeared in {} within 60 s",
            scratch.display()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before its extraction was seen"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL: no drop guard runs
    child.wait().unwrap();
    assert!(
        left.exists(),
        "the killed build's extraction is gone already"
    );
    // A directory of a live owner (this test process) must stay.
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let live = scratch.join(format!(
        "whittle-sandbox-rootfs-{}.{start}-live",
        std::process::id()
    ));
    fs::create_dir(&live).unwrap();
    let r = whittle(os!["inspect", fixture("base").as_path()], &env);
    assert_eq!(r.code, Some(0), "whittle inspect: {}", r.stderr);
    assert!(
        !left.exists(),
        "the next run left {} behind",
        left.display()
    );
    assert!(
        r.stderr.contains("left behind by a killed whittle run"),
        "stderr: {}",
        r.stderr
    );
    assert!(
        live.exists(),
        "the next run removed a live process's directory"
    );
}

#[test]
fn help_ends_with_examples_and_completions_and_man_are_generated() {
    let commands: &[&[&str]] = &[
        &[],
        &["build"],
        &["family"],
        &["family", "build"],
        &["squash"],
        &["inspect"],
        &["deps"],
        &["trace"],
        &["completions"],
        &["man"],
        &["metrics"],
        &["metrics", "serve"],
        &["metrics", "record"],
        &["metrics", "replay"],
        &["metrics", "plot"],
        &["metrics", "pcp"],
        &["top"],
    ];
    let mut c = Checks::new("family help_ends_with_examples_and_completions_and_man_are_generated");
    for cmd in commands {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let r = whittle(&args, &[]);
        c.eq(
            r.code,
            Some(0),
            &format!("whittle {}: exit code", args.join(" ")),
        );
        let tail: Vec<&str> = r.stdout.trim_end().lines().rev().take(4).collect();
        let examples = tail
            .iter()
            .filter(|l| l.trim_start().starts_with("whittle "))
            .count();
        c.check(r.stdout.contains("\nExamples:\n") && examples >= 2, || {
            format!(
                "whittle {} does not end with examples:\n{}",
                args.join(" "),
                r.stdout
            )
        });
    }
    for (shell, needle) in [
        ("bash", "_whittle()"),
        ("zsh", "#compdef whittle"),
        ("fish", "complete -c whittle"),
    ] {
        let r = whittle(["completions", shell], &[]);
        c.check(
            r.code == Some(0) && r.stdout.contains(needle) && r.stdout.contains("family"),
            || {
                format!(
                    "completions {shell}: exit {:?}, {} bytes",
                    r.code,
                    r.stdout.len()
                )
            },
        );
    }
    let r = whittle(["man"], &[]);
    c.check(
        r.code == Some(0) && r.stdout.contains(".TH whittle"),
        || {
            format!(
                "man: exit {:?}\n{}",
                r.code,
                &r.stdout[..r.stdout.len().min(300)]
            )
        },
    );
    let dir = tempdir("man");
    let r = whittle(os!["man", "--dir", dir.path()], &[]);
    c.eq(r.code, Some(0), "man --dir");
    for page in ["whittle.1", "whittle-build.1", "whittle-family.1"] {
        c.check(dir.path().join(page).exists(), || {
            format!("man --dir wrote no {page}")
        });
    }
    c.finish();
}
