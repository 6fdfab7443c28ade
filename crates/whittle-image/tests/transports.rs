//! Every transport reads the same real image to the same layers, and every writer's output
//! reads back identically. Uses the fixtures built by `fixtures/build.sh` (`scripts/test`
//! exports WHITTLE_FIXTURES).

use std::path::{Path, PathBuf};

use whittle_image::compression::Compression;
use whittle_image::write::{LayerOut, NewImage};
use whittle_image::{open, Digest, Image, ImageRef, Transport};

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("WHITTLE_FIXTURES").map(PathBuf::from).unwrap_or_else(|| {
        panic!("WHITTLE_FIXTURES is not set: run `scripts/test` (or `export WHITTLE_FIXTURES=$(fixtures/build.sh)`)")
    });
    assert!(
        dir.join("nginx.tar").is_file(),
        "{}: no nginx.tar; run fixtures/build.sh",
        dir.display()
    );
    dir
}

fn diff_ids(image: &Image) -> Vec<Digest> {
    image
        .layers
        .iter()
        .map(|l| l.diff_id.expect("diff_id"))
        .collect()
}

/// Reads every layer to the end, which verifies stored digests and diff_ids.
fn read_all_layers(image: &Image) -> Vec<Digest> {
    image
        .layers
        .iter()
        .map(|l| {
            let mut s = l.open_tar().unwrap();
            std::io::copy(&mut s, &mut std::io::sink()).unwrap();
            s.finish().unwrap().diff_id
        })
        .collect()
}

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

#[test]
fn docker_archive_and_oci_layout_agree() {
    let fix = fixtures();
    let da = open(&r(&format!(
        "docker-archive:{}",
        fix.join("nginx.tar").display()
    )))
    .unwrap();
    let oci = open(&r(&format!(
        "oci:{}:latest",
        fix.join("nginx.oci").display()
    )))
    .unwrap();
    assert_eq!(da.layers.len(), 2);
    assert_eq!(diff_ids(&da), diff_ids(&oci));
    assert_eq!(read_all_layers(&da), diff_ids(&da));
    assert_eq!(read_all_layers(&oci), diff_ids(&oci));
    assert_eq!(da.config.view().cmd, oci.config.view().cmd);
    // A bare path is detected.
    let bare = open(&ImageRef::parse(fix.join("nginx.tar").to_str().unwrap()).unwrap()).unwrap();
    assert_eq!(bare.reference.transport, Transport::DockerArchive);
    let bare = open(&ImageRef::parse(fix.join("nginx.oci").to_str().unwrap()).unwrap());
    // The fixture layout holds one tag, so no tag is needed.
    assert_eq!(diff_ids(&bare.unwrap()), diff_ids(&da));
}

/// Tars a directory (an OCI layout) as-is, plus extra members.
fn tar_dir(dir: &Path, out: &Path, extra: &[(&str, Vec<u8>)]) {
    let f = std::fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(f);
    b.append_dir_all(".", dir).unwrap();
    for (name, data) in extra {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn oci_archive_and_docker25_layout() {
    let fix = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let oci_dir = fix.join("nginx.oci");
    let oci = open(&r(&format!("oci:{}:latest", oci_dir.display()))).unwrap();

    let archive = tmp.path().join("nginx.oci.tar");
    tar_dir(&oci_dir, &archive, &[]);
    let oa = open(&r(&format!("oci-archive:{}", archive.display()))).unwrap();
    assert_eq!(diff_ids(&oa), diff_ids(&oci));
    assert_eq!(read_all_layers(&oa), diff_ids(&oci));

    // Docker >= 25 writes an OCI layout plus a manifest.json pointing into blobs/.
    let config = format!("blobs/sha256/{}", oci.config_digest.hex());
    let layers: Vec<String> = oci
        .layers
        .iter()
        .map(|l| format!("blobs/sha256/{}", l.digest.unwrap().hex()))
        .collect();
    let manifest = serde_json::json!([{"Config": config, "RepoTags": ["whittle-test/d25:v1"], "Layers": layers}]);
    let d25 = tmp.path().join("docker25.tar");
    tar_dir(
        &oci_dir,
        &d25,
        &[("manifest.json", serde_json::to_vec(&manifest).unwrap())],
    );
    let img = open(&r(&format!(
        "docker-archive:{}:whittle-test/d25:v1",
        d25.display()
    )))
    .unwrap();
    assert_eq!(img.reference.transport, Transport::DockerArchive);
    assert!(
        img.layers.iter().all(|l| l.digest.is_some()),
        "blob digests come from the names"
    );
    assert_eq!(read_all_layers(&img), diff_ids(&oci));
    let e = open(&r(&format!(
        "docker-archive:{}:other/name:v1",
        d25.display()
    )))
    .unwrap_err();
    assert!(
        e.to_string().contains("no image tagged \"other/name:v1\""),
        "{e}"
    );
}

#[test]
fn writers_round_trip_every_transport() {
    let fix = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let src = open(&r(&format!(
        "docker-archive:{}",
        fix.join("nginx.tar").display()
    )))
    .unwrap();
    let oci_src = open(&r(&format!(
        "oci:{}:latest",
        fix.join("nginx.oci").display()
    )))
    .unwrap();
    let want = diff_ids(&src);
    let dests = [
        format!(
            "docker-archive:{}/a.tar:whittle-test/rt:v1",
            tmp.path().display()
        ),
        format!("oci:{}/layout:v1", tmp.path().display()),
        format!("oci-archive:{}/b.tar:v1", tmp.path().display()),
    ];
    for source in [&src, &oci_src] {
        for (i, d) in dests.iter().enumerate() {
            let dest = r(d);
            let summary = whittle_image::write(
                &dest,
                NewImage {
                    config: source.config.clone(),
                    layers: source.layers.iter().cloned().map(LayerOut::Copy).collect(),
                    tag: dest.name.clone(),
                    compression: Compression::None,
                },
            )
            .unwrap_or_else(|e| panic!("writing {d}: {e}"));
            assert_eq!(
                summary.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>(),
                want
            );
            let back = open(&dest).unwrap();
            assert_eq!(diff_ids(&back), want, "{d}");
            assert_eq!(read_all_layers(&back), want, "{d}");
            // Copied layers are byte-identical: same stored digest as the source.
            for (a, b) in source.layers.iter().zip(&summary.layers) {
                if let Some(d) = a.digest {
                    assert_eq!(d, b.digest);
                }
            }
            assert_eq!(back.config.value, source.config.value, "config preserved");
            // Leave no temporary files beside the destination.
            let names: Vec<_> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(
                names
                    .iter()
                    .all(|n| !n.to_string_lossy().contains(".whittle-")),
                "{names:?}"
            );
            if i == 1 {
                std::fs::remove_dir_all(tmp.path().join("layout")).unwrap();
            }
        }
    }
}

#[test]
fn new_layer_compression_and_rootfs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let want = Digest::of(&data);
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let dest = r(&format!("oci:{}/c-{c:?}", tmp.path().display()));
        let d2 = data.clone();
        whittle_image::write(
            &dest,
            NewImage {
                config: whittle_image::ImageConfig::empty(),
                layers: vec![LayerOut::New(Box::new(move |w| w.write_all(&d2)))],
                tag: None,
                compression: c,
            },
        )
        .unwrap();
        let img = open(&dest).unwrap();
        assert_eq!(img.layers[0].compression().unwrap(), c);
        assert_eq!(read_all_layers(&img), vec![want]);
    }
    let rootfs = tmp.path().join("root.tar");
    std::fs::write(&rootfs, &data).unwrap();
    let img = open(&r(&format!("rootfs:{}", rootfs.display()))).unwrap();
    assert_eq!(img.layers.len(), 1);
    let bare = open(&ImageRef::parse(rootfs.to_str().unwrap()).unwrap()).unwrap();
    assert_eq!(bare.reference.transport, Transport::Rootfs);
}
