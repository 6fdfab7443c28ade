//! `whittle build` end to end, against the contract of the command (CLI, exit codes, report
//! schema "whittle.build/v1"): real Debian fixtures (nginx, python, jq) are slimmed, the report
//! is checked for what it promises, and then — independently of whittle — the fat and the slim
//! image are loaded into the Docker Engine, run the same way and compared (GET / from the host
//! for servers, stdout and exit status for the CLI image). Then the failure paths: a forced
//! exclude of a library nginx needs (exit 3, nothing written), auto-include of a file only the
//! slim run looks up, byte reproducibility, `--layers 1`, bad destinations refused before any
//! work, and SIGINT in the middle of a build leaving nothing behind.
//!
//! Every test takes one process-wide lock: builds are timed (the nginx target is ≤ 10 s), and
//! the leftover checks of the SIGINT test (sandbox processes, cgroups) must not see another
//! test's sandbox. Every command whittle runs gets a private TMPDIR, which must be empty when
//! it exits. Docker images and containers get unique names and are removed by guards; the
//! fixtures' own tags (`whittle-fixture/NAME:latest`) are removed again only if this test
//! loaded them (the interop tests share them).
//!
//! Checks inside one test are soft where they are independent (a [`Checks`] list), so one
//! failure does not hide the others; the test fails at the end with all of them.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::engines::{
    docker_export, docker_inspect, docker_load, load_fixture, require_docker, run_cli, serve,
};
use common::gen::{self, Blob, Comp};
use common::{
    fixtures, report, require, run, run_ok, sha256_file, sha256_hex, tempdir, unique, Checks, Run,
};
use serde_json::{json, Value};

/// The nginx target of the issue: layers of the slim image, uncompressed tar bytes.
const NGINX_SLIM_MAX: u64 = 11 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time (see the module comment); a failed test does not poison the others.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn da(p: &Path) -> String {
    format!("docker-archive:{}", p.display())
}

/// What one `whittle build` left behind.
struct Built {
    run: Run,
    secs: f64,
    /// Entries left in the private TMPDIR after whittle exited.
    tmp_left: Vec<String>,
}

impl Built {
    fn show(&self) -> String {
        format!(
            "exit {:?} after {:.1} s\nstdout:\n{}\nstderr:\n{}",
            self.run.code,
            self.secs,
            truncate(&self.run.stdout, 3000),
            truncate(&self.run.stderr, 3000)
        )
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes in all)", &s[..end], s.len())
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `whittle build ARGS` with TMPDIR=`tmp` (created if needed); stdin closed.
fn build(args: &[&OsStr], tmp: &Path) -> Built {
    fs::create_dir_all(tmp).unwrap();
    let t = Instant::now();
    let out = Command::new(common::whittle_bin())
        .arg("build")
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .output()
        .expect("running the whittle binary");
    let secs = t.elapsed().as_secs_f64();
    Built {
        run: Run::from_output(out),
        secs,
        tmp_left: entries(tmp),
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn kept_map(r: &Value) -> BTreeMap<String, Value> {
    arr(&r["kept"])
        .iter()
        .map(|k| (s(&k["path"]).to_string(), k.clone()))
        .collect()
}

fn is_digest(v: &Value) -> bool {
    let d = s(v);
    d.len() == 71 && d.starts_with("sha256:") && d[7..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// src=/href=/url()/@import references that load something from the network.
fn external_refs(html: &str) -> Vec<String> {
    let low = html.to_ascii_lowercase();
    let mut out = Vec::new();
    for attr in ["src=", "href=", "url(", "@import", "srcset="] {
        let mut from = 0;
        while let Some(i) = low[from..].find(attr) {
            let start = from + i + attr.len();
            let rest = low[start..].trim_start_matches(['"', '\'', ' ', '\t', '\n']);
            if rest.starts_with("http:") || rest.starts_with("https:") || rest.starts_with("//") {
                let end = (start + 80).min(low.len());
                let mut e = end;
                while !html.is_char_boundary(e) {
                    e -= 1;
                }
                out.push(html[from + i..e].to_string());
            }
            from = start;
        }
    }
    out
}

/// Checks every successful, verified build must pass. `layers` is the expected roles.
fn check_passed_report(c: &mut Checks, label: &str, r: &Value, dest: &str, roles: &[&str]) {
    c.eq(
        s(&r["schema"]),
        "whittle.build/v1",
        &format!("{label}: schema"),
    );
    c.eq(s(&r["destination"]), dest, &format!("{label}: destination"));
    c.eq(&r["written"], &json!(true), &format!("{label}: written"));
    c.eq(
        s(&r["verification"]["status"]),
        "passed",
        &format!(
            "{label}: verification.status (rounds: {})",
            r["verification"]["rounds"]
        ),
    );
    let rounds = arr(&r["verification"]["rounds"]);
    c.check(
        rounds.last().is_some_and(|x| x["passed"] == json!(true)),
        || format!("{label}: the last verification round did not pass: {rounds:?}"),
    );
    c.check(is_digest(&r["config_digest"]), || {
        format!("{label}: config_digest {}", r["config_digest"])
    });
    c.check(is_digest(&r["source_config_digest"]), || {
        format!(
            "{label}: source_config_digest {}",
            r["source_config_digest"]
        )
    });
    let layers = arr(&r["layers"]);
    let got_roles: Vec<&str> = layers.iter().map(|l| s(&l["role"])).collect();
    c.eq(
        got_roles.as_slice(),
        roles,
        &format!("{label}: layer roles"),
    );
    for (i, l) in layers.iter().enumerate() {
        c.check(is_digest(&l["diff_id"]) && is_digest(&l["digest"]), || {
            format!("{label}: layer {i} digests: {l}")
        });
        c.check(l["entries"].as_u64().is_some_and(|n| n > 0), || {
            format!("{label}: layer {i} has no entries: {l}")
        });
    }
    let before = r["size"]["before"].as_u64().unwrap_or(0);
    let after = r["size"]["after"].as_u64().unwrap_or(u64::MAX);
    c.check(after < before, || {
        format!("{label}: size.after {after} is not below size.before {before}")
    });
    let layer_sum: u64 = layers.iter().filter_map(|l| l["size"].as_u64()).sum();
    c.eq(
        after,
        layer_sum,
        &format!("{label}: size.after == sum of layers[].size"),
    );
    let kept = arr(&r["kept"]);
    c.check(!kept.is_empty(), || format!("{label}: nothing kept"));
    let no_reason: Vec<&str> = kept
        .iter()
        .filter(|k| arr(&k["reasons"]).is_empty())
        .map(|k| s(&k["path"]))
        .collect();
    c.check(no_reason.is_empty(), || {
        format!(
            "{label}: {} kept entries without a reason, e.g. {:?}",
            no_reason.len(),
            &no_reason[..no_reason.len().min(10)]
        )
    });
    let bad_layer: Vec<String> = kept
        .iter()
        .filter(|k| !(1..=roles.len() as u64).contains(&k["layer"].as_u64().unwrap_or(0)))
        .map(|k| format!("{} layer {}", s(&k["path"]), k["layer"]))
        .take(10)
        .collect();
    c.check(bad_layer.is_empty(), || {
        format!(
            "{label}: kept entries with a layer outside 1..={}: {bad_layer:?}",
            roles.len()
        )
    });
    c.eq(
        r["size"]["after_files"].as_u64(),
        Some(kept.iter().filter(|k| s(&k["path"]) != "/").count() as u64),
        &format!("{label}: size.after_files == number of kept entries (the root aside)"),
    );
}

// ---------------------------------------------------------------------------------------------
// Docker oracle
// ---------------------------------------------------------------------------------------------

fn node_char(node: &str) -> char {
    match node {
        "file" => 'f',
        "dir" => 'd',
        "symlink" => 'l',
        "char" => 'c',
        "block" => 'b',
        "fifo" => 'p',
        _ => '?',
    }
}

/// How a fixture's app is exercised.
#[derive(Clone, Copy)]
enum App {
    Server(u16),
    Cli,
}

/// Loads fat and slim into the engine, runs both the same way and compares; compares the
/// slim image's config, layers and file list with the report. Returns a summary line.
fn docker_oracle(
    c: &mut Checks,
    name: &str,
    app: App,
    slim_archive: &Path,
    tag: &str,
    r: &Value,
    scratch: &Path,
) -> String {
    let fat = load_fixture(name);
    let slim = match docker_load(slim_archive, tag) {
        Ok(i) => i,
        Err(e) => {
            c.check(false, || {
                format!("{name}: docker load of the slim image: {e}")
            });
            return String::new();
        }
    };

    // Config: the source's, plus whittle's labels; layers and ids as reported.
    let fi = docker_inspect(&fat.name);
    let si = docker_inspect(&slim.name);
    c.eq(
        s(&si["Id"]),
        s(&r["config_digest"]),
        &format!("{name}: docker image Id of slim == report config_digest"),
    );
    c.eq(
        s(&fi["Id"]),
        s(&r["source_config_digest"]),
        &format!("{name}: docker image Id of fat == report source_config_digest"),
    );
    let want_layers: Vec<&str> = arr(&r["layers"]).iter().map(|l| s(&l["diff_id"])).collect();
    let got_layers: Vec<&str> = arr(&si["RootFS"]["Layers"]).iter().map(s).collect();
    c.eq(
        got_layers,
        want_layers,
        &format!("{name}: docker RootFS.Layers == report diff_ids"),
    );
    let (mut fc, mut sc) = (fi["Config"].clone(), si["Config"].clone());
    let fl = fc
        .as_object_mut()
        .and_then(|o| o.remove("Labels"))
        .unwrap_or(Value::Null);
    let sl = sc
        .as_object_mut()
        .and_then(|o| o.remove("Labels"))
        .unwrap_or(Value::Null);
    c.eq(
        &sc,
        &fc,
        &format!("{name}: slim config (without labels) == fat config"),
    );
    let mut want_labels = fl.as_object().cloned().unwrap_or_default();
    want_labels.insert(
        "org.whittle.source".into(),
        r["source_config_digest"].clone(),
    );
    if let Some(v) = sl.get("org.whittle.version") {
        want_labels.insert("org.whittle.version".into(), v.clone());
    }
    // A server verified with the default probe (GET / on its exposed port, answered 200)
    // carries it as its readiness check for `whittle route`.
    if let App::Server(port) = &app {
        want_labels.insert("org.whittle.probe.http".into(), format!("{port}/").into());
    }
    c.eq(
        sl.clone(),
        Value::Object(want_labels),
        &format!("{name}: slim labels"),
    );
    c.check(
        sl.get("org.whittle.version")
            .is_some_and(|v| !s(v).is_empty()),
        || format!("{name}: no org.whittle.version label: {sl}"),
    );

    // The file list: what the engine sees in the slim image is exactly the kept list.
    match docker_export(&slim.name) {
        Ok(snap) => {
            let init: BTreeSet<&str> = common::engines::DOCKER_INIT_PATHS.iter().copied().collect();
            let kept = kept_map(r);
            let want: BTreeMap<&str, char> = kept
                .iter()
                .filter(|(p, _)| p.as_str() != "/" && !init.contains(p.as_str()))
                .map(|(p, k)| (p.as_str(), node_char(s(&k["node"]))))
                .collect();
            let got: BTreeMap<&str, char> =
                snap.iter().map(|(p, i)| (p.as_str(), i.kind)).collect();
            let diff: Vec<String> = want
                .iter()
                .filter(|(p, k)| got.get(*p) != Some(k))
                .map(|(p, k)| format!("kept {p} ({k}) but image has {:?}", got.get(p)))
                .chain(
                    got.iter()
                        .filter(|(p, _)| !want.contains_key(*p))
                        .map(|(p, k)| format!("image has {p} ({k}), not in kept")),
                )
                .collect();
            c.check(diff.is_empty(), || {
                format!(
                    "{name}: docker export of the slim image differs from the kept list ({} differences): {:?}",
                    diff.len(),
                    &diff[..diff.len().min(15)]
                )
            });
            let sizes: Vec<String> = kept
                .iter()
                .filter(|(_, k)| s(&k["node"]) == "file")
                .filter_map(|(p, k)| {
                    let i = snap.get(p)?;
                    (Some(i.size) != k["size"].as_u64())
                        .then(|| format!("{p}: report {} image {}", k["size"], i.size))
                })
                .take(10)
                .collect();
            c.check(sizes.is_empty(), || {
                format!("{name}: kept file sizes differ from the image's: {sizes:?}")
            });
        }
        Err(e) => {
            c.check(false, || {
                format!("{name}: docker export of the slim image: {e}")
            });
        }
    }

    // Behaviour.
    match app {
        App::Server(port) => {
            let f = serve(&fat.name, port, scratch);
            let sl = serve(&slim.name, port, scratch);
            c.eq(f.0.as_str(), "200", &format!("{name}: fat GET / status"));
            c.eq(
                &sl,
                &f,
                &format!("{name}: slim GET / (status, body sha256, bytes) == fat's"),
            );
            format!(
                "GET :{port}/ fat {} {:.12} ({} B), slim {} {:.12} ({} B)",
                f.0, f.1, f.2, sl.0, sl.1, sl.2
            )
        }
        App::Cli => {
            let f = run_cli(&fat.name);
            let sl = run_cli(&slim.name);
            c.eq(f.0, Some(0), &format!("{name}: fat docker run exit status"));
            c.check(!f.2.is_empty(), || {
                format!("{name}: fat run printed nothing")
            });
            c.eq((sl.0, &sl.1), (f.0, &f.1), &format!("{name}: slim (exit, stdout sha256) == fat's; slim stdout:\n{}\nfat stdout:\n{}", sl.2, f.2));
            format!(
                "docker run: fat exit {:?} stdout {:.12}, slim exit {:?} stdout {:.12}",
                f.0, f.1, sl.0, sl.1
            )
        }
    }
}

/// Item 1 for one fixture: build with --report/--html (and --json when asked), check the
/// report, the HTML and the stderr, then the Docker oracle. Returns the report, the slim
/// archive, the slim tag and the build.
struct FixtureBuild {
    report: Value,
    slim: PathBuf,
    tag: String,
    built: Built,
}

fn build_fixture(c: &mut Checks, name: &str, app: App, dir: &Path, json_out: bool) -> FixtureBuild {
    require_docker();
    require("curl");
    let src = fixture(&format!("{name}.tar"));
    let slim = dir.join("slim.tar");
    let rep = dir.join("r.json");
    let html = dir.join("r.html");
    let tag = unique(&format!("whittle-test/{name}:slim"));
    let mut args: Vec<OsString> = vec![
        da(&src).into(),
        da(&slim).into(),
        "--report".into(),
        rep.clone().into(),
        "--html".into(),
        html.clone().into(),
        "--tag".into(),
        tag.clone().into(),
    ];
    if json_out {
        args.push("--json".into());
    }
    let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
    let src_size = fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
    let b = build(&args, &dir.join("tmp"));
    c.require(b.run.code == Some(0), || {
        format!("{name}: whittle build {}", b.show())
    });
    c.check(b.tmp_left.is_empty(), || {
        format!("{name}: temporaries left in TMPDIR: {:?}", b.tmp_left)
    });
    c.eq(
        fs::metadata(&src).map(|m| m.len()).unwrap_or(0),
        src_size,
        &format!("{name}: source size unchanged"),
    );
    c.check(b.run.stderr.is_empty(), || {
        format!("{name}: stderr is not a terminal, so it must be empty on success (contract: progress only on a terminal); got:\n{}", truncate(&b.run.stderr, 2000))
    });
    let r = match read_json(&rep) {
        Ok(r) => r,
        Err(e) => {
            c.require(false, || format!("{name}: --report: {e}"));
            unreachable!()
        }
    };
    c.require(slim.is_file(), || {
        format!("{name}: {} was not written", slim.display())
    });
    check_passed_report(c, name, &r, &da(&slim), &["base", "app"]);
    c.eq(
        s(&r["source"]),
        da(&src).as_str(),
        &format!("{name}: report source"),
    );
    c.eq(
        s(&r["tag"]),
        tag.as_str(),
        &format!("{name}: report tag (--tag)"),
    );
    let facts = read_json(&fixture(&format!("{name}.json"))).unwrap();
    c.eq(
        r["size"]["before"].as_u64(),
        facts["uncompressed_bytes"].as_u64(),
        &format!("{name}: size.before == the fixture's uncompressed layer tar bytes ({name}.json)"),
    );

    // HTML: there, self-contained, with a chart.
    match fs::read_to_string(&html) {
        Ok(h) => {
            c.check(h.contains("<svg"), || {
                format!("{name}: {} has no <svg", html.display())
            });
            let ext = external_refs(&h);
            c.check(ext.is_empty(), || {
                format!("{name}: the HTML report loads from the network: {ext:?}")
            });
        }
        Err(e) => {
            c.check(false, || format!("{name}: --html {}: {e}", html.display()));
        }
    }

    // stdout: the JSON report with --json, a human summary without.
    if json_out {
        match serde_json::from_str::<Value>(&b.run.stdout) {
            Ok(j) => {
                c.eq(
                    s(&j["schema"]),
                    "whittle.build/v1",
                    &format!("{name}: --json stdout schema"),
                );
                c.check(j == r, || {
                    format!("{name}: --json stdout differs from the --report file")
                });
            }
            Err(e) => {
                c.check(false, || {
                    format!(
                        "{name}: --json stdout is not JSON ({e}):\n{}",
                        truncate(&b.run.stdout, 2000)
                    )
                });
            }
        }
    } else {
        c.check(
            !b.run.stdout.trim().is_empty()
                && serde_json::from_str::<Value>(&b.run.stdout).is_err(),
            || {
                format!(
                    "{name}: without --json stdout must be a human summary, got:\n{}",
                    truncate(&b.run.stdout, 2000)
                )
            },
        );
    }

    let oracle = docker_oracle(c, name, app, &slim, &tag, &r, dir);
    report(&format!(
        "build {name}: {} → {} bytes ({:.1}x), {} → {} files, layers {:?}, rounds {}, {:.1} s wall, timings_ms {}\n  {oracle}\n",
        r["size"]["before"],
        r["size"]["after"],
        r["size"]["ratio"].as_f64().unwrap_or(0.0),
        r["size"]["before_files"],
        r["size"]["after_files"],
        arr(&r["layers"]).iter().map(|l| (s(&l["role"]).to_string(), l["size"].as_u64().unwrap_or(0))).collect::<Vec<_>>(),
        arr(&r["verification"]["rounds"]).len(),
        b.secs,
        r["timings_ms"]
    ));
    FixtureBuild {
        report: r,
        slim,
        tag,
        built: b,
    }
}

// ---------------------------------------------------------------------------------------------
// 1, 4, 6: nginx (with reproducibility and --json), python, jq
// ---------------------------------------------------------------------------------------------

#[test]
fn nginx_slim_serves_the_same_page_and_is_reproducible() {
    let _g = serial();
    let mut c = Checks::new("nginx");
    let dir = tempdir("build-nginx");
    let fb = build_fixture(&mut c, "nginx", App::Server(80), dir.path(), true);
    let r = &fb.report;
    let kept = kept_map(r);
    for (p, layer) in [
        ("/usr/sbin/nginx", 2),
        ("/usr/lib/x86_64-linux-gnu/libc.so.6", 1),
        ("/usr/lib/x86_64-linux-gnu/libssl.so.3", 2),
    ] {
        c.eq(
            kept.get(p).and_then(|k| k["layer"].as_u64()),
            Some(layer),
            &format!("nginx: layer of kept {p}"),
        );
    }
    c.check(
        !kept.contains_key("/usr/share/doc") && !kept.contains_key("/var/lib/apt/lists"),
        || "nginx: docs or apt lists kept".to_string(),
    );

    // 4: a second build with the same flags (no --html/--json: they do not change the image).
    let b2 = dir.path().join("slim2.tar");
    let rep2 = dir.path().join("r2.json");
    let src = da(&fixture("nginx.tar"));
    let again = build(
        &os![src, da(&b2), "--report", rep2, "--tag", fb.tag.as_str()],
        &dir.path().join("tmp"),
    );
    if c.check(again.run.code == Some(0), || {
        format!("nginx second build: {}", again.show())
    }) {
        let r2 = read_json(&rep2).unwrap_or(Value::Null);
        let ids = |r: &Value| -> Vec<(String, String)> {
            arr(&r["layers"])
                .iter()
                .map(|l| (s(&l["diff_id"]).to_string(), s(&l["digest"]).to_string()))
                .collect()
        };
        c.eq(
            s(&r2["config_digest"]),
            s(&r["config_digest"]),
            "reproducible: config_digest",
        );
        c.eq(ids(&r2), ids(r), "reproducible: layer diff_ids and digests");
        c.eq(
            sha256_file(&b2),
            sha256_file(&fb.slim),
            "reproducible: sha256 of the two docker-archives",
        );
        report(&format!(
            "build nginx: second build {:.1} s; config {} both times, archive sha256 {}\n",
            again.secs,
            s(&r2["config_digest"]),
            sha256_file(&b2)
        ));
    }

    let after = r["size"]["after"].as_u64().unwrap_or(u64::MAX);
    report(&format!(
        "build nginx: wall {:.1} s and {:.1} s (target ≤ 10 s)\n",
        fb.built.secs, again.secs
    ));
    c.check(after <= NGINX_SLIM_MAX, || {
        format!(
            "nginx: slim image is {after} bytes ({:.2} MiB) of layer tar, over the issue's target of 11 MiB ({NGINX_SLIM_MAX}); layers {:?}; largest kept files: {:?}",
            after as f64 / 1048576.0,
            arr(&r["layers"]).iter().map(|l| (s(&l["role"]).to_string(), l["size"].clone())).collect::<Vec<_>>(),
            largest(r, 12)
        )
    });
    c.finish();
}

fn largest(r: &Value, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = arr(&r["kept"])
        .iter()
        .map(|k| (s(&k["path"]).to_string(), k["size"].as_u64().unwrap_or(0)))
        .collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    v.truncate(n);
    v
}

#[test]
fn python_slim_serves_the_same_page() {
    let _g = serial();
    let mut c = Checks::new("python");
    let dir = tempdir("build-python");
    let fb = build_fixture(&mut c, "python", App::Server(8000), dir.path(), false);
    let kept = kept_map(&fb.report);
    c.check(kept.contains_key("/srv/www/index.html"), || {
        "python: /srv/www/index.html not kept".into()
    });
    c.finish();
}

#[test]
fn jq_slim_prints_the_same_output() {
    let _g = serial();
    let mut c = Checks::new("jq");
    let dir = tempdir("build-jq");
    let fb = build_fixture(&mut c, "jq", App::Cli, dir.path(), false);
    let kept = kept_map(&fb.report);
    c.check(kept.contains_key("/data/packages.json"), || {
        "jq: /data/packages.json not kept".into()
    });
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// 4b: --layers 1
// ---------------------------------------------------------------------------------------------

#[test]
fn one_layer_build_passes_verification() {
    let _g = serial();
    let mut c = Checks::new("layers-1");
    let dir = tempdir("build-layers1");
    let slim = dir.path().join("slim.tar");
    let rep = dir.path().join("r.json");
    let b = build(
        &os![
            da(&fixture("nginx.tar")),
            da(&slim),
            "--layers",
            "1",
            "--report",
            rep
        ],
        &dir.path().join("tmp"),
    );
    c.require(b.run.code == Some(0), || {
        format!("--layers 1: {}", b.show())
    });
    c.check(b.tmp_left.is_empty(), || {
        format!("temporaries left in TMPDIR: {:?}", b.tmp_left)
    });
    let r = read_json(&rep).unwrap_or(Value::Null);
    check_passed_report(&mut c, "--layers 1", &r, &da(&slim), &["all"]);
    let (entry, config) = docker_archive_meta_small(&slim);
    c.eq(
        arr(&entry["Layers"]).len(),
        1,
        "--layers 1: layers in the written manifest.json",
    );
    c.eq(
        arr(&config["rootfs"]["diff_ids"])
            .iter()
            .map(s)
            .collect::<Vec<_>>(),
        arr(&r["layers"])
            .iter()
            .map(|l| s(&l["diff_id"]))
            .collect::<Vec<_>>(),
        "--layers 1: config rootfs.diff_ids == report",
    );
    report(&format!(
        "build nginx --layers 1: {} bytes in one layer, {:.1} s\n",
        r["size"]["after"], b.secs
    ));
    c.finish();
}

/// manifest.json entry and config of a (small) docker-archive.
fn docker_archive_meta_small(path: &Path) -> (Value, Value) {
    if !path.is_file() {
        return (Value::Null, Value::Null);
    }
    common::docker_archive_meta(path)
}

// ---------------------------------------------------------------------------------------------
// 2: a forced exclude of a library nginx needs
// ---------------------------------------------------------------------------------------------

#[test]
fn forced_exclude_of_a_needed_library_fails_verification() {
    let _g = serial();
    let mut c = Checks::new("exclude");
    let dir = tempdir("build-exclude");
    let src = da(&fixture("nginx.tar"));
    // Premise: nginx links libpcre2-8 (DT_NEEDED), per `whittle deps`.
    let deps =
        common::whittle(["deps", src.as_str(), "/usr/sbin/nginx"], &[]).ok("whittle deps nginx");
    assert!(
        deps.stdout
            .contains("/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0"),
        "premise: nginx needs libpcre2-8:\n{}",
        deps.stdout
    );
    let glob = "/usr/lib/x86_64-linux-gnu/libpcre2-8.so*";
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let slim = out.join("slim.tar");
    let rep = out.join("r.json");
    let html = out.join("r.html");
    let b = build(
        &os![
            src,
            da(&slim),
            "--exclude",
            glob,
            "--report",
            rep,
            "--html",
            html
        ],
        &dir.path().join("tmp"),
    );
    c.eq(
        b.run.code,
        Some(3),
        &format!("exit code (3 = verification failed); {}", b.show()),
    );
    c.check(!slim.exists(), || format!("DEST {} exists", slim.display()));
    c.eq(
        entries(&out),
        vec!["r.html".to_string(), "r.json".to_string()],
        "files beside DEST (no temporaries)",
    );
    c.check(b.tmp_left.is_empty(), || {
        format!("temporaries left in TMPDIR: {:?}", b.tmp_left)
    });
    let r = match read_json(&rep) {
        Ok(r) => r,
        Err(e) => {
            c.require(false, || format!("--report must be written on exit 3: {e}"));
            unreachable!()
        }
    };
    c.eq(
        s(&r["verification"]["status"]),
        "failed",
        "verification.status",
    );
    c.eq(&r["written"], &json!(false), "written");
    c.eq(
        &r["config_digest"],
        &Value::Null,
        "config_digest of an image not written",
    );
    let rounds = arr(&r["verification"]["rounds"]);
    c.check(
        !rounds.is_empty() && rounds.iter().all(|x| x["passed"] == json!(false)),
        || format!("rounds must all have failed: {rounds:?}"),
    );
    c.check(
        rounds.iter().all(|x| !arr(&x["differences"]).is_empty()),
        || format!("every failed round names its differences: {rounds:?}"),
    );
    let missing: Vec<&str> = rounds
        .iter()
        .flat_map(|x| arr(&x["missing"]).iter().map(s))
        .collect();
    c.check(
        missing.iter().any(|m| m.starts_with("/usr/lib/x86_64-linux-gnu/libpcre2-8.so")),
        || format!("no round's \"missing\" names the excluded library (/usr/lib/x86_64-linux-gnu/libpcre2-8.so*): {missing:?}"),
    );
    let added: Vec<&str> = rounds
        .iter()
        .flat_map(|x| arr(&x["added"]).iter().map(s))
        .collect();
    c.check(!added.iter().any(|a| a.contains("libpcre2-8")), || {
        format!(
            "auto-include reports adding (a spelling of) the force-excluded library: {:?}",
            rounds
                .iter()
                .map(|x| (x["round"].clone(), x["added"].clone()))
                .collect::<Vec<_>>()
        )
    });
    let mut seen = BTreeSet::new();
    let again: Vec<&str> = added.iter().copied().filter(|a| !seen.insert(*a)).collect();
    c.check(again.is_empty(), || {
        format!(
            "futile retries: the same path \"added\" in more than one round: {again:?} ({} rounds)",
            rounds.len()
        )
    });
    let kept = kept_map(&r);
    let re_kept: Vec<&String> = kept.keys().filter(|p| p.contains("libpcre2-8")).collect();
    c.check(re_kept.is_empty(), || {
        format!("excluded paths in kept: {re_kept:?}")
    });
    let excluded = arr(&r["dropped"]["classes"])
        .iter()
        .find(|x| s(&x["class"]) == "excluded")
        .and_then(|x| x["files"].as_u64())
        .unwrap_or(0);
    c.check(excluded >= 1, || {
        format!(
            "dropped.classes has no \"excluded\" files: {}",
            r["dropped"]
        )
    });
    c.check(
        fs::read_to_string(&html).is_ok_and(|h| h.contains("<svg")),
        || "--html must be written on exit 3 too".into(),
    );
    report(&format!(
        "build nginx --exclude '{glob}': exit {:?} in {:.1} s, {} rounds, missing {:?}\n",
        b.run.code,
        b.secs,
        rounds.len(),
        missing
    ));
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// 3: auto-include of a file only the slim run looks up
// ---------------------------------------------------------------------------------------------

const BANNER: &str = "whittle auto-include test: hello\n";
const RUN_SH: &str = "#!/bin/sh\n\
if [ -n \"$(ls -A /opt/app/overrides)\" ]; then cat /opt/app/banner.txt; else cat /opt/app/default/banner.txt; fi\n";

fn link_or_copy(from: &Path, to: &Path) {
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).unwrap_or_else(|e| panic!("{} → {}: {e}", from.display(), to.display()));
    }
}

/// The base fixture (its layer shared by hard link) plus one layer with the app: an OCI
/// layout `DIR/app.oci`, tag `latest` (gzip layers), and its uncompressed layer tar bytes.
fn derived_app_image(dir: &Path) -> (PathBuf, u64) {
    let base = fixture("base.oci");
    let (manifest, config) = common::oci_meta(&base);
    let out = dir.join("app.oci");
    let blobs = out.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    for l in arr(&manifest["layers"]) {
        let hex = s(&l["digest"]).trim_start_matches("sha256:");
        link_or_copy(&base.join("blobs/sha256").join(hex), &blobs.join(hex));
    }
    let layer = Blob::from_entries(
        &[
            gen::dir("opt/app"),
            gen::file("opt/app/run.sh", RUN_SH).mode(0o755),
            gen::file("opt/app/banner.txt", BANNER),
            gen::dir("opt/app/default"),
            gen::file("opt/app/default/banner.txt", BANNER),
            gen::dir("opt/app/overrides"),
            gen::file("opt/app/overrides/a.conf", "a=1\n"),
            gen::file("opt/app/overrides/b.conf", "b=2\n"),
        ],
        Comp::Gzip,
    );
    fs::write(
        blobs.join(layer.digest().trim_start_matches("sha256:")),
        &layer.stored,
    )
    .unwrap();
    let mut config = config.clone();
    config["config"]["Entrypoint"] = json!(["/bin/sh", "/opt/app/run.sh"]);
    if let Some(o) = config["config"].as_object_mut() {
        o.remove("Cmd");
        o.remove("ExposedPorts");
    }
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("rootfs.diff_ids")
        .push(json!(layer.diff_id()));
    if let Some(h) = config["history"].as_array_mut() {
        h.push(json!({"created": "2025-05-20T00:00:00Z", "created_by": "whittle test: /opt/app"}));
    }
    let config = serde_json::to_vec(&config).unwrap();
    let config_hex = sha256_hex(&config);
    fs::write(blobs.join(&config_hex), &config).unwrap();
    let mut m = manifest.clone();
    m["config"]["digest"] = json!(format!("sha256:{config_hex}"));
    m["config"]["size"] = json!(config.len());
    m["layers"].as_array_mut().unwrap().push(json!({
        "mediaType": Comp::Gzip.oci_media_type(),
        "digest": layer.digest(),
        "size": layer.stored.len(),
    }));
    let m = serde_json::to_vec(&m).unwrap();
    let m_hex = sha256_hex(&m);
    fs::write(blobs.join(&m_hex), &m).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{m_hex}"),
            "size": m.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let base_bytes = read_json(&fixture("base.json")).unwrap()["uncompressed_bytes"]
        .as_u64()
        .expect("base.json: uncompressed_bytes");
    (out, base_bytes + layer.tar.len() as u64)
}

#[test]
fn auto_include_adds_the_file_only_the_slim_run_looks_up() {
    let _g = serial();
    let mut c = Checks::new("auto-include");
    let dir = tempdir("build-auto");
    let (layout, uncompressed) = derived_app_image(dir.path());
    let src = format!("oci:{}:latest", layout.display());
    let fallback = "/opt/app/default/banner.txt";

    let slim = dir.path().join("slim.tar");
    let rep = dir.path().join("r.json");
    let b = build(
        &os![src, da(&slim), "--report", rep],
        &dir.path().join("tmp"),
    );
    c.check(b.tmp_left.is_empty(), || {
        format!("temporaries left in TMPDIR: {:?}", b.tmp_left)
    });
    c.eq(b.run.code, Some(0), &format!("default build; {}", b.show()));
    let r = read_json(&rep).unwrap_or(Value::Null);
    c.check(slim.is_file(), || "DEST not written".into());
    c.eq(
        s(&r["verification"]["status"]),
        "passed",
        "verification.status",
    );
    c.eq(
        r["size"]["before"].as_u64(),
        Some(uncompressed),
        "size.before of a gzip OCI source: uncompressed layer tar bytes (contract), not stored bytes",
    );
    let rounds = arr(&r["verification"]["rounds"]);
    c.check(rounds.len() >= 2, || {
        format!("verification rounds: want ≥ 2, got {rounds:?}")
    });
    if let Some(r1) = rounds.first() {
        c.eq(r1["round"].as_u64(), Some(1), "rounds[0].round");
        c.eq(&r1["passed"], &json!(false), "round 1 passed");
        c.check(arr(&r1["missing"]).iter().any(|m| s(m) == fallback), || {
            format!("round 1 \"missing\" lacks {fallback}: {}", r1["missing"])
        });
        c.check(arr(&r1["added"]).iter().any(|m| s(m) == fallback), || {
            format!("round 1 \"added\" lacks {fallback}: {}", r1["added"])
        });
    }
    c.check(
        rounds.last().is_some_and(|x| x["passed"] == json!(true)),
        || format!("last round did not pass: {rounds:?}"),
    );
    let kept = kept_map(&r);
    match kept.get(fallback) {
        Some(k) => {
            c.check(
                arr(&k["reasons"])
                    .iter()
                    .any(|x| s(&x["kind"]) == "auto_include" && x["round"].as_u64() == Some(1)),
                || {
                    format!(
                        "kept {fallback} has no auto_include (round 1) reason: {}",
                        k["reasons"]
                    )
                },
            );
        }
        None => {
            c.check(false, || format!("{fallback} is not kept"));
        }
    }
    // The premise: the listed directory is kept without its unused entries.
    c.check(kept.contains_key("/opt/app/overrides"), || {
        "/opt/app/overrides (listed) not kept".into()
    });
    c.check(!kept.contains_key("/opt/app/overrides/a.conf"), || {
        "/opt/app/overrides/a.conf (never opened) kept: a listed directory must be kept without its unused entries".into()
    });
    c.check(kept.contains_key("/opt/app/banner.txt"), || {
        "/opt/app/banner.txt (read by the fat run) not kept".into()
    });
    report(&format!(
        "build auto-include: exit {:?} in {:.1} s, rounds {:?}\n",
        b.run.code,
        b.secs,
        rounds
            .iter()
            .map(|x| (
                x["round"].clone(),
                x["passed"].clone(),
                x["missing"].clone(),
                x["added"].clone()
            ))
            .collect::<Vec<_>>()
    ));

    // --no-auto-include: the first difference is final.
    let slim2 = dir.path().join("slim-noauto.tar");
    let rep2 = dir.path().join("r-noauto.json");
    let b2 = build(
        &os![src, da(&slim2), "--no-auto-include", "--report", rep2],
        &dir.path().join("tmp"),
    );
    c.eq(
        b2.run.code,
        Some(3),
        &format!("--no-auto-include exit code; {}", b2.show()),
    );
    c.check(!slim2.exists(), || "--no-auto-include: DEST written".into());
    c.check(b2.tmp_left.is_empty(), || {
        format!(
            "--no-auto-include: temporaries left in TMPDIR: {:?}",
            b2.tmp_left
        )
    });
    let r2 = read_json(&rep2).unwrap_or(Value::Null);
    c.eq(
        s(&r2["verification"]["status"]),
        "failed",
        "--no-auto-include: verification.status",
    );
    c.eq(
        arr(&r2["verification"]["rounds"]).len(),
        1,
        "--no-auto-include: rounds",
    );
    report(&format!(
        "build auto-include --no-auto-include: exit {:?} in {:.1} s\n",
        b2.run.code, b2.secs
    ));
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// 5: bad input, interrupt
// ---------------------------------------------------------------------------------------------

fn sandbox_dirs(tmp: &Path) -> Vec<String> {
    entries(tmp)
        .into_iter()
        .filter(|n| n.starts_with("whittle-sandbox-"))
        .collect()
}

/// A refusal: exit `code`, one stderr line "whittle: error: …" (containing `needle`), fast,
/// nothing in TMPDIR.
fn refused(c: &mut Checks, what: &str, b: &Built, code: i32, needle: &str) {
    c.eq(
        b.run.code,
        Some(code),
        &format!("{what}: exit code; {}", b.show()),
    );
    let lines: Vec<&str> = b.run.stderr.lines().collect();
    c.check(
        lines.len() == 1 && lines[0].starts_with("whittle: error: ") && lines[0].contains(needle),
        || {
            format!(
                "{what}: stderr must be one line \"whittle: error: …{needle}…\", got {:?}",
                b.run.stderr
            )
        },
    );
    c.check(b.secs < 5.0, || {
        format!("{what}: took {:.1} s (must fail before any work)", b.secs)
    });
    c.check(b.tmp_left.is_empty(), || {
        format!("{what}: TMPDIR not empty (work started?): {:?}", b.tmp_left)
    });
}

#[test]
fn bad_destinations_are_refused_before_any_work() {
    let _g = serial();
    let mut c = Checks::new("bad-input");
    let dir = tempdir("build-bad");
    let d = dir.path();
    let tmp = d.join("tmp");

    // DEST == SRC (a small generated image; a real build of it would need the sandbox, so a
    // refusal after any work would leave a trace in TMPDIR).
    let small = d.join("src.tar");
    gen::Image::from_layers(
        &[vec![gen::dir("etc"), gen::file("etc/hello", "hi\n")]],
        Comp::None,
    )
    .write_docker_archive(&small, "whittle-test/small:latest");
    let sha = sha256_file(&small);
    let same = da(&small);
    let b = build(&os![same, same], &tmp);
    refused(&mut c, "DEST == SRC", &b, 1, &small.display().to_string());
    let spelled = format!("docker-archive:{}/./src.tar", d.display());
    let b = build(&os![same, spelled], &tmp);
    refused(
        &mut c,
        "DEST == SRC spelled differently (DIR/./src.tar)",
        &b,
        1,
        "src.tar",
    );
    c.eq(sha256_file(&small), sha, "source unchanged");
    c.eq(
        entries(d),
        vec!["src.tar".to_string(), "tmp".to_string()],
        "nothing written beside the source",
    );

    // Unwritable destinations, with the big nginx source: refused before reading it.
    let src = da(&fixture("nginx.tar"));
    let missing_dir = d.join("no-such-dir");
    for (what, dest) in [
        (
            "DEST under /proc",
            "docker-archive:/proc/whittle-test/x.tar".to_string(),
        ),
        (
            "DEST with a file as parent",
            "docker-archive:/etc/hostname/x.tar".to_string(),
        ),
        (
            "DEST in a missing directory",
            da(&missing_dir.join("x.tar")),
        ),
        (
            "oci DEST under /proc",
            "oci:/proc/whittle-test/x.oci:slim".to_string(),
        ),
    ] {
        let b = build(&os![src, dest], &tmp);
        refused(&mut c, what, &b, 1, "");
        report(&format!(
            "build bad input: {what}: exit {:?} in {:.2} s: {}\n",
            b.run.code,
            b.secs,
            b.run.stderr.trim()
        ));
    }
    c.check(!missing_dir.exists(), || {
        "the missing destination directory was created".into()
    });
    // An unwritable --report is as fatal as an unwritable DEST, and as early.
    let b = build(
        &os![
            src,
            da(&d.join("ok.tar")),
            "--report",
            "/proc/whittle-test/r.json"
        ],
        &tmp,
    );
    refused(&mut c, "--report under /proc", &b, 1, "");
    c.check(!d.join("ok.tar").exists(), || {
        "DEST written although --report cannot be".into()
    });

    // Usage errors (clap): exit 2.
    let b = build(&os![same, da(&d.join("u.tar")), "--layers", "3"], &tmp);
    c.eq(
        b.run.code,
        Some(2),
        &format!("--layers 3: usage error; {}", b.show()),
    );
    // DEST omitted with a SRC that is not docker-daemon: refused (usage or bad input).
    let b = build(&os![same], &tmp);
    c.check(
        matches!(b.run.code, Some(1) | Some(2)) && b.secs < 5.0 && b.tmp_left.is_empty(),
        || format!("DEST omitted for docker-archive SRC: {}", b.show()),
    );
    c.finish();
}

/// Pids of processes whose command line starts with `prefix`.
fn procs(prefix: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for e in fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) {
            if cmd.starts_with(prefix.as_bytes()) {
                out.insert(pid);
            }
        }
    }
    out
}

/// Processes whose cgroup is named after one of `sandboxes` (the sandbox's pids cgroup is
/// `whittle-<sandbox dir name>`).
fn procs_in_sandbox_cgroups(sandboxes: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cg) = fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            if sandboxes.iter().any(|sb| cg.contains(sb.as_str())) {
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                out.push(format!(
                    "{pid} {}",
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                ));
            }
        }
    }
    out
}

fn ppid(pid: u32) -> Option<u32> {
    let st = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    st.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn sigint_mid_build_leaves_nothing_behind() {
    let _g = serial();
    require("kill");
    let mut c = Checks::new("sigint");
    let dir = tempdir("build-sigint");
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let slim = out.join("slim.tar");
    let masters_before = procs("nginx: master");

    let log_out = fs::File::create(dir.path().join("stdout")).unwrap();
    let log_err = fs::File::create(dir.path().join("stderr")).unwrap();
    let t0 = Instant::now();
    let mut child = Command::new(common::whittle_bin())
        .arg("build")
        .arg(da(&fixture("nginx.tar")))
        .arg(da(&slim))
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(log_out)
        .stderr(log_err)
        .spawn()
        .expect("starting whittle");
    let pid = child.id();

    // Wait for the trace run: a sandbox directory in TMPDIR, then nginx inside it.
    let mut sandboxes: BTreeSet<String> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut early_exit = None;
    while sandboxes.is_empty() && Instant::now() < deadline {
        sandboxes.extend(sandbox_dirs(&tmp));
        if let Some(st) = child.try_wait().unwrap() {
            early_exit = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if sandboxes.is_empty() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "no whittle-sandbox-* directory appeared in TMPDIR within 60 s (whittle exited: {early_exit:?}); stderr: {}",
            fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
        );
    }
    let seen_sandbox = t0.elapsed().as_secs_f64();
    let nginx_deadline = Instant::now() + Duration::from_secs(20);
    let mut nginx_running = false;
    while Instant::now() < nginx_deadline {
        sandboxes.extend(sandbox_dirs(&tmp));
        if procs_in_sandbox_cgroups(&sandboxes)
            .iter()
            .any(|p| p.contains("nginx"))
        {
            nginx_running = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let t_int = t0.elapsed().as_secs_f64();
    run_ok("kill", &os!["-INT", pid.to_string()]);
    let t_sent = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t_sent.elapsed() > Duration::from_secs(30) {
            break None;
        }
        sandboxes.extend(sandbox_dirs(&tmp));
        std::thread::sleep(Duration::from_millis(20));
    };
    let exit_secs = t_sent.elapsed().as_secs_f64();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    c.check(status.is_some(), || {
        "whittle did not exit within 30 s of SIGINT".into()
    });
    if let Some(st) = status {
        use std::os::unix::process::ExitStatusExt;
        c.eq(
            (st.code(), st.signal()),
            (Some(130), None),
            &format!("(exit code, killing signal) after SIGINT; stderr: {stderr}"),
        );
    }
    c.check(!slim.exists(), || "DEST exists after SIGINT".into());
    c.eq(
        entries(&out),
        Vec::<String>::new(),
        "files beside DEST after SIGINT",
    );

    // Give a late cleanup a moment, then nothing may be left.
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle
        && (!entries(&tmp).is_empty() || !procs_in_sandbox_cgroups(&sandboxes).is_empty())
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    c.eq(entries(&tmp), Vec::<String>::new(), "TMPDIR after SIGINT");
    let left = procs_in_sandbox_cgroups(&sandboxes);
    c.check(left.is_empty(), || {
        format!("processes left in the sandbox's cgroup: {left:?}")
    });
    let orphans: Vec<u32> = procs("nginx: master")
        .difference(&masters_before)
        .copied()
        .filter(|p| ppid(*p) == Some(1) || ppid(*p) == Some(pid))
        .collect();
    c.check(orphans.is_empty(), || {
        format!("orphaned nginx master processes: {orphans:?}")
    });
    let mut cgroups = Vec::new();
    for root in [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
    ] {
        for sb in &sandboxes {
            let p = Path::new(root).join(format!("whittle-{sb}"));
            if p.exists() {
                cgroups.push(p.display().to_string());
            }
        }
    }
    c.check(cgroups.is_empty(), || {
        format!("sandbox cgroups left: {cgroups:?}")
    });
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let tmp_s = tmp.display().to_string();
    let m: Vec<&str> = mounts.lines().filter(|l| l.contains(&tmp_s)).collect();
    c.check(m.is_empty(), || format!("mounts left under TMPDIR: {m:?}"));
    report(&format!(
        "build SIGINT: sandbox after {seen_sandbox:.1} s, SIGINT at {t_int:.1} s (nginx running in the sandbox: {nginx_running}), exit {:?} {exit_secs:.1} s later; sandboxes {sandboxes:?}\n",
        status.and_then(|s| s.code())
    ));
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// docker-daemon: source without DEST → NAME:TAG-slim in the same engine
// ---------------------------------------------------------------------------------------------

#[test]
fn daemon_source_defaults_to_a_slim_tag() {
    let _g = serial();
    let mut c = Checks::new("daemon");
    let dir = tempdir("build-daemon");
    let fat = load_fixture("jq");
    let slim = format!("{}-slim", fat.name);
    let _ = run("docker", &os!["rmi", "-f", slim.as_str()]);
    let b = build(
        &os![format!("docker-daemon:{}", fat.name).as_str(), "--json"],
        &dir.path().join("tmp"),
    );
    c.check(b.run.code == Some(0), || format!("build: {}", b.show()));
    if let Ok(r) = serde_json::from_str::<Value>(&b.run.stdout) {
        c.check(
            s(&r["destination"]) == format!("docker-daemon:{slim}"),
            || format!("destination {}", r["destination"]),
        );
        let inspected = run("docker", &os!["image", "inspect", slim.as_str()]);
        c.check(inspected.code == Some(0), || {
            format!("{slim} not in the engine")
        });
        if inspected.code == Some(0) {
            let (fat_code, fat_out, _) = run_cli(&fat.name);
            let (slim_code, slim_out, _) = run_cli(&slim);
            c.check(fat_code == slim_code && fat_out == slim_out, || {
                format!(
                    "docker run: fat {fat_code:?} {fat_out:?} / slim {slim_code:?} {slim_out:?}"
                )
            });
        }
    } else {
        c.check(false, || format!("--json stdout is not JSON: {}", b.show()));
    }
    let _ = run("docker", &os!["rmi", "-f", slim.as_str()]);
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// Probes whose answers vary, and a directory listing as the only difference
// ---------------------------------------------------------------------------------------------

/// An exec probe printing a random UUID differs between any two runs: whittle must notice that
/// the fat image itself answers differently (not blame the slim one) and say so. An exec probe
/// listing /usr/share/doc differs only by the listing (nothing is looked up in vain): the
/// listed directory gets its entries back, and the build passes.
#[test]
fn unstable_answers_and_listings_are_handled() {
    let _g = serial();
    let mut c = Checks::new("unstable");
    let dir = tempdir("build-unstable");
    let src = da(&fixture("nginx.tar"));
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let slim = out.join("slim.tar");
    let b = build(
        &os![
            src,
            da(&slim),
            "--exec-probe",
            "cat /proc/sys/kernel/random/uuid",
            "--exec-probe",
            "ls /usr/share/doc",
            "--json"
        ],
        &dir.path().join("tmp"),
    );
    c.eq(b.run.code, Some(0), &format!("exit code; {}", b.show()));
    let Ok(r) = serde_json::from_str::<Value>(&b.run.stdout) else {
        c.check(false, || format!("--json stdout is not JSON: {}", b.show()));
        c.finish();
        return;
    };
    c.check(s(&r["verification"]["status"]) == "passed", || {
        format!("verification {}", r["verification"])
    });
    let notes: Vec<&str> = arr(&r["notes"]).iter().map(s).collect();
    c.check(
        notes.iter().any(|n| {
            n.contains("cat /proc/sys/kernel/random/uuid")
                && n.contains("two runs of the fat image")
        }),
        || format!("no note about the unstable probe: {notes:?}"),
    );
    let rounds = arr(&r["verification"]["rounds"]);
    c.check(rounds.len() >= 2, || format!("rounds {rounds:?}"));
    let added: Vec<&str> = rounds
        .iter()
        .flat_map(|x| arr(&x["added"]).iter().map(s))
        .collect();
    c.check(
        added.iter().any(|p| p.starts_with("/usr/share/doc/")),
        || format!("listing entries not added: {added:?}"),
    );
    c.check(slim.exists(), || "DEST not written".into());
    c.finish();
}
