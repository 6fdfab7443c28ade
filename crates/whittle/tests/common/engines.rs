//! The independent implementations whittle is checked against: the Docker Engine (`docker
//! load`, `create`, `export`, `run`), umoci, skopeo and podman. Everything a test creates in a
//! shared store (images, containers) has a unique name and is removed by a guard's `Drop`,
//! so a failing assertion does not leave it behind.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::snap::{self, Snapshot};
use super::{require, run, run_ok, Run};
use crate::os;

/// Fails the test unless the docker CLI is installed and the engine answers.
pub fn require_docker() {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let r = OK.get_or_init(|| {
        require("docker");
        let r = run("docker", &os!["info", "--format", "{{.ServerVersion}}"]);
        if r.code == Some(0) {
            Ok(())
        } else {
            Err(format!(
                "the Docker Engine does not answer (`docker info`: {}); install docker.io and \
                 start it (systemctl start docker), as scripts/test does",
                r.stderr.trim()
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// The engine's major version (zstd layers load only from 23 on).
pub fn docker_major_version() -> u32 {
    let r = run_ok("docker", &os!["version", "--format", "{{.Server.Version}}"]);
    r.stdout
        .trim()
        .split('.')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An image tag in the engine, removed (untagged, and deleted if nothing else uses it) on drop.
#[derive(Debug)]
pub struct DockerImage {
    pub name: String,
}

impl Drop for DockerImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `docker load -i PATH`; `name` is the tag the archive carries (removed on drop). Returns
/// the output on failure instead of panicking, so callers can report an oracle failure.
pub fn docker_load(path: &Path, name: &str) -> Result<DockerImage, String> {
    let r = run("docker", &os!["load", "-q", "-i", path]);
    // The guard exists even if loading failed half way.
    let img = DockerImage {
        name: name.to_string(),
    };
    if r.code != Some(0) {
        return Err(format!(
            "docker load -i {}: {}",
            path.display(),
            r.stderr.trim()
        ));
    }
    Ok(img)
}

/// A container, removed with `docker rm -f` on drop.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub engine: &'static str,
    pub global_args: Vec<String>,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new(self.engine)
            .args(&self.global_args)
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// What Docker's init layer (moby `daemon/initlayer`) puts on top of every container's file
/// system, with the time of `docker create` as mtime. The export of any image has these, so
/// they say nothing about the image and are left out of its snapshot; `/etc` and `/dev`
/// themselves are in the init layer too, so their metadata is the engine's, not the image's.
pub const DOCKER_INIT_PATHS: &[&str] = &[
    "/.dockerenv",
    "/dev",
    "/dev/console",
    "/dev/pts",
    "/dev/shm",
    "/etc",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/mtab",
    "/etc/resolv.conf",
    "/proc",
    "/sys",
];

/// `docker create` + `docker export`, snapshotted while it streams, without the init layer's
/// entries ([`DOCKER_INIT_PATHS`]).
pub fn docker_export(image: &str) -> Result<Snapshot, String> {
    let r = run(
        "docker",
        &os![
            "create",
            "--name",
            super::unique("whittle-test-export"),
            image,
            "/whittle-none"
        ],
    );
    if r.code != Some(0) {
        return Err(format!("docker create {image}: {}", r.stderr.trim()));
    }
    let c = Container {
        id: r.stdout.trim().to_string(),
        engine: "docker",
        global_args: Vec::new(),
    };
    let mut child = Command::new("docker")
        .args(["export", &c.id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("docker export: {e}"))?;
    let mut snapshot = snap::from_tar(child.stdout.take().unwrap());
    for p in DOCKER_INIT_PATHS {
        snapshot.remove(*p);
    }
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(format!(
            "docker export {image}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(snapshot)
}

/// `docker load` + create + export, and removal of both again: the Docker Engine's merged
/// view of a docker-archive.
pub fn docker_view(archive: &Path, name: &str) -> Result<Snapshot, String> {
    let img = docker_load(archive, name)?;
    docker_export(&img.name)
}

/// `umoci unpack --image DIR:TAG BUNDLE` (as root: owners, devices and xattrs are kept), then
/// a snapshot of BUNDLE/rootfs.
pub fn umoci_view(layout: &Path, tag: &str, bundle: &Path) -> Result<Snapshot, String> {
    require("umoci");
    let image = format!("{}:{tag}", layout.display());
    let r = run("umoci", &os!["unpack", "--image", image, bundle]);
    if r.code != Some(0) {
        return Err(format!("umoci unpack --image {image}: {}", r.stderr.trim()));
    }
    Ok(snap::from_dir(&bundle.join("rootfs")))
}

/// podman's global flags for the test store (`scripts/test` exports them).
pub fn podman_args() -> Vec<String> {
    require("podman");
    let v = std::env::var("WHITTLE_PODMAN_ARGS").unwrap_or_else(|_| {
        panic!(
            "WHITTLE_PODMAN_ARGS is not set; run the tests with scripts/test, or export \
             WHITTLE_PODMAN_ARGS=\"--root /var/lib/whittle-podman/storage --runroot \
             /run/whittle-podman --storage-driver overlay\" (see scripts/lib.sh setup_podman)"
        )
    });
    v.split_whitespace().map(str::to_string).collect()
}

/// `podman $WHITTLE_PODMAN_ARGS ARGS`.
pub fn podman(args: &[&OsStr]) -> Run {
    let mut all: Vec<String> = podman_args();
    all.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
    let all: Vec<&OsStr> = all.iter().map(OsStr::new).collect();
    run("podman", &all)
}

/// A podman image, removed on drop.
#[derive(Debug)]
pub struct PodmanImage {
    pub name: String,
}

impl Drop for PodmanImage {
    fn drop(&mut self) {
        let _ = podman(&os!["rmi", "-f", self.name.as_str()]);
    }
}

/// A loaded fixture; its tag is removed on drop only if it was not there before.
pub struct FixtureImage {
    pub name: String,
    _guard: Option<DockerImage>,
}

pub fn load_fixture(name: &str) -> FixtureImage {
    let tag = format!("whittle-fixture/{name}:latest");
    let existed = run("docker", &os!["image", "inspect", tag.as_str()]).code == Some(0);
    let img = docker_load(&super::fixtures().join(format!("{name}.tar")), &tag)
        .unwrap_or_else(|e| panic!("loading the {name} fixture: {e}"));
    let guard = if existed {
        std::mem::forget(img);
        None
    } else {
        Some(img)
    };
    FixtureImage {
        name: tag,
        _guard: guard,
    }
}

pub fn docker_inspect(name: &str) -> serde_json::Value {
    let r = run_ok("docker", &os!["image", "inspect", name]);
    serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()[0].clone()
}

pub fn container(id: &str) -> Container {
    Container {
        id: id.trim().to_string(),
        engine: "docker",
        global_args: Vec::new(),
    }
}

/// `docker run -d IMAGE`, then GET / on the container's IP from the host with curl, retried
/// until the server answers (30 s): (status, body sha256, body bytes).
pub fn serve(image: &str, port: u16, scratch: &Path) -> (String, String, usize) {
    let r = run(
        "docker",
        &os!["run", "-d", "--name", super::unique("whittle-test"), image],
    );
    assert_eq!(r.code, Some(0), "docker run -d {image}: {}", r.stderr);
    let c = container(&r.stdout);
    let ip = run_ok(
        "docker",
        &os![
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            c.id.as_str()
        ],
    )
    .stdout
    .trim()
    .to_string();
    let url = format!("http://{ip}:{port}/");
    let body = scratch.join(super::unique("body"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run(
            "curl",
            &os![
                "-sS",
                "--max-time",
                "5",
                "-o",
                body.as_path(),
                "-w",
                "%{http_code}",
                url.as_str()
            ],
        );
        let code = r.stdout.trim().to_string();
        if r.code == Some(0) && code != "000" {
            let b = std::fs::read(&body).unwrap_or_default();
            let _ = std::fs::remove_file(&body);
            return (code, super::sha256_hex(&b), b.len());
        }
        if Instant::now() > deadline {
            let logs = run("docker", &os!["logs", c.id.as_str()]);
            let state = run(
                "docker",
                &os!["inspect", "-f", "{{json .State}}", c.id.as_str()],
            );
            panic!(
                "{image}: GET {url} failed for 30 s: {}\ncontainer state: {}\ncontainer logs:\n{}{}",
                r.stderr.trim(),
                state.stdout.trim(),
                logs.stdout,
                logs.stderr
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `docker run --rm IMAGE`: (exit status, stdout sha256, stdout).
pub fn run_cli(image: &str) -> (Option<i32>, String, String) {
    let name = super::unique("whittle-test-cli");
    let r = run(
        "docker",
        &os!["run", "--rm", "--name", name.as_str(), image],
    );
    let _c = container(&name); // removes it if `--rm` did not get to
    (r.code, super::sha256_hex(r.stdout.as_bytes()), r.stdout)
}
