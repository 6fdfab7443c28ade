//! The image JSON readers: docker-archive `manifest.json`, OCI `index.json`, image manifests,
//! nested (multi-platform) indexes, image configs and `oci-layout`.
//!
//! Input: one selector byte, then the document. The selector picks which document of an
//! otherwise valid tiny image the bytes replace (digests and sizes of the documents that point
//! at it are fixed up, so the fuzzer gets past verification), which transport carries the
//! image (archive or directory) and which name is asked for. Every document also goes straight
//! through `ImageConfig::parse`.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use whittle_fstree::{flatten, FlattenOptions};
use whittle_fuzz::*;
use whittle_image::{open, Digest, ImageConfig, ImageRef, Transport};

struct Fixed {
    layer: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let layer = lower_layer();
        let config = config_json(&[Digest::of(&layer)]);
        let manifest = oci_manifest(&config, &[&layer]);
        Fixed {
            layer,
            config,
            manifest,
        }
    })
}

fn exercise_config(c: &ImageConfig) {
    let _ = c.view();
    let _ = c.history();
    let _ = c.layer_history();
    let _ = c.created();
    let _ = c.architecture();
    let _ = c.os();
    let ids = c.diff_ids().expect("validated by parse");
    let bytes = c.to_bytes();
    let again = ImageConfig::parse(&bytes, Path::new("again.json")).expect("own output parses");
    assert_eq!(again.to_bytes(), bytes, "serialization is not stable");
    let mut c2 = c.clone();
    c2.set_diff_ids(&ids);
    assert_eq!(c2.diff_ids().unwrap(), ids);
}

/// Writes an OCI layout as a directory or an archive and returns its reference.
fn oci(members: &[(String, Vec<u8>)], as_dir: bool, name: Option<&str>) -> ImageRef {
    let (transport, path) = if as_dir {
        (Transport::Oci, write_scratch_dir("layout", members))
    } else {
        (
            Transport::OciArchive,
            write_scratch("layout.tar", &tar_of(members, &[])),
        )
    };
    ImageRef {
        transport,
        path,
        name: name.map(str::to_string),
    }
}

fn docker(archive: &[u8], name: Option<&str>) -> ImageRef {
    ImageRef {
        transport: Transport::DockerArchive,
        path: write_scratch("docker.tar", archive),
        name: name.map(str::to_string),
    }
}

fuzz_target!(|input: &[u8]| {
    settle_threads();
    let Some((&sel, doc)) = input.split_first() else {
        return;
    };
    if let Ok(c) = ImageConfig::parse(doc, Path::new("config.json")) {
        exercise_config(&c);
    }
    let f = fixed();
    let as_dir = sel & 0x08 != 0;
    let docker_name = [None, Some("@0"), Some("@1"), Some("tiny:latest")][(sel >> 4) as usize % 4];
    let oci_name = [None, Some("latest"), Some("other"), None][(sel >> 4) as usize % 4];
    let layout_of = |index: &[u8], blobs: &[&[u8]]| {
        let mut all: Vec<&[u8]> = vec![&f.manifest, &f.config, &f.layer];
        all.extend_from_slice(blobs);
        oci_members(OCI_LAYOUT, index, &all)
    };
    let r = match sel & 0x07 {
        // docker-archive manifest.json
        0 => docker(
            &docker_archive(Some(doc), &f.config, &[&f.layer]),
            docker_name,
        ),
        // OCI index.json
        1 => oci(&layout_of(doc, &[]), as_dir, oci_name),
        // OCI image manifest, pointed at by a generated index
        2 => oci(
            &layout_of(&oci_index(MANIFEST_V2, doc), &[doc]),
            as_dir,
            oci_name,
        ),
        // A nested image index (multi-platform image)
        3 => oci(
            &layout_of(&oci_index(INDEX_V1, doc), &[doc]),
            as_dir,
            oci_name,
        ),
        // Image config in a docker-archive
        4 => docker(&docker_archive(None, doc, &[&f.layer]), docker_name),
        // Image config in an OCI layout
        5 => {
            let manifest = oci_manifest(doc, &[&f.layer]);
            oci(
                &layout_of(&oci_index(MANIFEST_V2, &manifest), &[&manifest, doc]),
                as_dir,
                oci_name,
            )
        }
        // oci-layout
        6 => {
            let members = oci_members(
                doc,
                &oci_index(MANIFEST_V2, &f.manifest),
                &[&f.manifest, &f.config, &f.layer],
            );
            oci(&members, as_dir, oci_name)
        }
        // A Docker >= 25 archive whose manifest.json is the document
        _ => {
            let mut members = oci_members(
                OCI_LAYOUT,
                &oci_index(MANIFEST_V2, &f.manifest),
                &[&f.manifest, &f.config, &f.layer],
            );
            members.push(("manifest.json".into(), doc.to_vec()));
            docker(&tar_of(&members, &[]), docker_name)
        }
    };
    let image = match open(&r) {
        Ok(i) => i,
        Err(e) => {
            debug(format_args!("selector {sel:#04x}: open {r}: {e}"));
            return;
        }
    };
    exercise_config(&image.config);
    let ids = image.config.diff_ids().expect("validated");
    assert_eq!(ids.len(), image.layers.len());
    for (layer, id) in image.layers.iter().zip(&ids) {
        assert_eq!(layer.diff_id.as_ref(), Some(id));
    }
    let opts = FlattenOptions {
        from_layer: 0,
        keep_content: false,
    };
    match flatten(&image, opts, None) {
        Ok(flat) => {
            assert!(flat.tree.len() > 1);
            debug(format_args!(
                "selector {sel:#04x}: {r}: {} nodes",
                flat.tree.len()
            ));
        }
        Err(e) => debug(format_args!("selector {sel:#04x}: flatten {r}: {e}")),
    }
    settle_threads();
});
