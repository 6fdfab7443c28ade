//! A whole file from a stranger, opened the ways whittle opens files: as a docker-archive, an
//! oci-archive, a root file system tar (plain, gzip or zstd) and by auto-detection. When it
//! opens, it is flattened (all layers, and from layer 1 with whiteout tracking) and every
//! file's content is read back. Header checksums of the outer tar are fixed up first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whittle_fstree::{flatten, FlattenOptions};
use whittle_fuzz::{
    check_tree, debug, fix_tar_checksums, read_back, settle_threads, write_scratch,
};
use whittle_image::{open, Image, ImageRef, Transport};

fn exercise(image: &Image) {
    let ids = image.config.diff_ids().expect("validated at open");
    if image.reference.transport != Transport::Rootfs {
        assert_eq!(
            ids.len(),
            image.layers.len(),
            "open let a layer count mismatch through"
        );
    }
    let _ = image.config.view();
    let _ = image.config.layer_history();
    for layer in &image.layers {
        let _ = layer.compression();
    }
    for from_layer in [0, 1] {
        if from_layer > 0 && image.layers.len() < 2 {
            continue;
        }
        let opts = FlattenOptions {
            from_layer,
            keep_content: true,
        };
        let f = match flatten(image, opts, None) {
            Ok(f) => f,
            Err(e) => {
                debug(format_args!(
                    "flatten {} from {from_layer}: {e}",
                    image.reference
                ));
                continue;
            }
        };
        debug(format_args!(
            "{} from {from_layer}: {} nodes",
            image.reference,
            f.tree.len()
        ));
        // Layer stream sizes are not returned by flatten; content bounds are checked by
        // reading every file back instead.
        let sizes = vec![u64::MAX; image.layers.len()];
        check_tree(&f.tree, from_layer > 0, &sizes);
        read_back(&f.tree, &f.store);
    }
}

fuzz_target!(|input: &[u8]| {
    settle_threads();
    let mut data = input.to_vec();
    // Tar header checksums are fixed up (not in compressed input: that would corrupt it).
    if !(data.starts_with(&[0x1f, 0x8b]) || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])) {
        fix_tar_checksums(&mut data);
    }
    let path = write_scratch("input.tar", &data);
    for (transport, name) in [
        (Transport::DockerArchive, None),
        (Transport::DockerArchive, Some("@1")),
        (Transport::OciArchive, None),
        (Transport::Rootfs, None),
    ] {
        let r = ImageRef {
            transport,
            path: path.clone(),
            name: name.map(str::to_string),
        };
        match open(&r) {
            Ok(image) => exercise(&image),
            Err(e) => debug(format_args!("open {r}: {e}")),
        }
    }
    if let Ok(r) = ImageRef::detect(&path) {
        assert_eq!(r.path, path);
    }
    settle_threads();
});
