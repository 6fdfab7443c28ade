//! The `docker-daemon:` transport against real engines: the Docker Engine on its default socket
//! and podman's Docker-compatible API through `DOCKER_HOST`. One test per binary run, in order,
//! because `DOCKER_HOST` is process-wide.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use whittle_image::compression::Compression;
use whittle_image::write::{LayerOut, NewImage};
use whittle_image::{open, Digest, ImageRef};

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("WHITTLE_FIXTURES").map(PathBuf::from).unwrap_or_else(|| {
        panic!("WHITTLE_FIXTURES is not set: run `scripts/test` (or `export WHITTLE_FIXTURES=$(fixtures/build.sh)`)")
    });
    assert!(
        dir.join("base.tar").is_file(),
        "{}: no base.tar; run fixtures/build.sh",
        dir.display()
    );
    dir
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed? scripts/test installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn diff_ids(r: &ImageRef) -> Vec<Digest> {
    open(r)
        .unwrap()
        .layers
        .iter()
        .map(|l| l.diff_id.unwrap())
        .collect()
}

/// Reads the fixture from the engine, writes it back under a new name, and checks the engine
/// reports the same layers. `engine` is `docker` or `podman ARGS`.
fn round_trip(engine: &[&str], name: &str) {
    let fix = fixtures();
    let archive = ImageRef::parse(&format!(
        "docker-archive:{}",
        fix.join("base.tar").display()
    ))
    .unwrap();
    let want = diff_ids(&archive);
    run(Command::new(engine[0])
        .args(&engine[1..])
        .arg("load")
        .arg("-i")
        .arg(fix.join("base.tar")));
    let src = ImageRef::parse("docker-daemon:whittle-fixture/base:latest").unwrap();
    let image = open(&src).unwrap();
    assert_eq!(
        image
            .layers
            .iter()
            .map(|l| l.diff_id.unwrap())
            .collect::<Vec<_>>(),
        want
    );
    let dest = ImageRef::parse(&format!("docker-daemon:{name}")).unwrap();
    whittle_image::write(
        &dest,
        NewImage {
            config: image.config.clone(),
            layers: image.layers.iter().cloned().map(LayerOut::Copy).collect(),
            tag: None,
            compression: Compression::None,
        },
    )
    .unwrap();
    let layers = run(Command::new(engine[0]).args(&engine[1..]).args([
        "image",
        "inspect",
        "-f",
        "{{json .RootFS.Layers}}",
        name,
    ]));
    let got: Vec<String> = serde_json::from_str(layers.trim()).unwrap();
    assert_eq!(got, want.iter().map(|d| d.to_string()).collect::<Vec<_>>());
    assert_eq!(diff_ids(&dest), want, "reads back through the API");
    run(Command::new(engine[0])
        .args(&engine[1..])
        .args(["image", "rm", name]));
}

#[test]
fn docker_engine_then_podman_socket() {
    let pid = std::process::id();
    round_trip(&["docker"], &format!("whittle-test/daemon-rt:{pid}"));

    let args = std::env::var("WHITTLE_PODMAN_ARGS")
        .expect("WHITTLE_PODMAN_ARGS is not set: run the tests through scripts/test");
    let mut podman: Vec<&str> = vec!["podman"];
    podman.extend(args.split_whitespace());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("podman.sock");
    let service = Command::new("podman")
        .args(args.split_whitespace())
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", sock.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("podman is not installed: scripts/test installs it");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(service);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        sock.exists(),
        "podman system service did not create {}",
        sock.display()
    );
    // This binary has one test, so nothing else reads the environment meanwhile.
    std::env::set_var("DOCKER_HOST", format!("unix://{}", sock.display()));
    round_trip(&podman, &format!("localhost/whittle-test/daemon-rt:{pid}"));
    std::env::remove_var("DOCKER_HOST");
}
