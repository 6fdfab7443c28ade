//! Writes the seed corpora under `fuzz/seeds/<target>/` (run by `fuzz/seeds.sh`).

use std::path::{Path, PathBuf};

use whittle_fuzz::*;
use whittle_image::Digest;

fn put(dir: &Path, name: &str, data: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

fn with_sel(sel: u8, doc: &[u8]) -> Vec<u8> {
    let mut v = vec![sel];
    v.extend_from_slice(doc);
    v
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    let lower = lower_layer();
    let upper = upper_layer();

    // layer_tar: one layer, two layers back to back, an empty archive.
    let d = out.join("layer_tar");
    put(&d, "lower.tar", &lower);
    put(&d, "upper.tar", &upper);
    put(&d, "two-layers.tar", &two_layers());
    put(&d, "empty.tar", &[0u8; 1024]);

    // image_json: each selector with a valid document.
    let d = out.join("image_json");
    let config = config_json(&[Digest::of(&lower)]);
    let manifest = oci_manifest(&config, &[&lower]);
    let dm = |cfg: &str, layers: &str| {
        format!(
            "[{{\"Config\":\"{cfg}\",\"RepoTags\":[\"tiny:latest\"],\"Layers\":[\"{layers}\"]}}]"
        )
    };
    let cfg_name = format!("{}.json", Digest::of(&config).hex());
    put(
        &d,
        "0-docker-manifest",
        &with_sel(0, &dm(&cfg_name, "l0/layer.tar").into_bytes()),
    );
    put(
        &d,
        "0-docker-manifest-symlinked-layer",
        &with_sel(0x30, &dm(&cfg_name, "dup/layer.tar").into_bytes()),
    );
    put(
        &d,
        "1-oci-index",
        &with_sel(1, &oci_index(MANIFEST_V2, &manifest)),
    );
    put(
        &d,
        "1-oci-index-dir-tag",
        &with_sel(0x19, &oci_index(MANIFEST_V2, &manifest)),
    );
    put(&d, "2-oci-manifest", &with_sel(2, &manifest));
    put(
        &d,
        "3-nested-index",
        &with_sel(3, &oci_index(MANIFEST_V2, &manifest)),
    );
    put(&d, "4-config-docker", &with_sel(4, &config));
    put(&d, "5-config-oci", &with_sel(5, &config));
    put(&d, "6-oci-layout", &with_sel(6, OCI_LAYOUT));
    put(
        &d,
        "7-docker25-manifest",
        &with_sel(7, &dm(&blob_name(&config), &blob_name(&lower)).into_bytes()),
    );

    // archive: whole images in every transport whittle reads from a file.
    let d = out.join("archive");
    let config2 = config_json(&[Digest::of(&lower), Digest::of(&upper)]);
    put(
        &d,
        "docker-archive.tar",
        &docker_archive(None, &config2, &[&lower, &upper]),
    );
    put(
        &d,
        "docker25-archive.tar",
        &docker_archive_oci(&config, &[&lower]),
    );
    put(
        &d,
        "oci-archive.tar",
        &tar_of(&oci_image(&[&lower, &upper]), &[]),
    );
    put(&d, "rootfs.tar", &lower);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &upper).unwrap();
    put(&d, "rootfs.tar.gz", &gz.finish().unwrap());
    put(
        &d,
        "rootfs.tar.zst",
        &zstd::encode_all(&upper[..], 19).unwrap(),
    );
}
