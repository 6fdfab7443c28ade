//! The merged layer view of an image gives the same closure as the same image unpacked by
//! umoci: the adapter reads ELF headers and symlinks straight from the layer blobs.

mod support;

use std::path::PathBuf;

use whittle_deps::image::{config_of, image_closure};
use whittle_deps::{Analyzer, DirRootFs, Request};
use whittle_image::ImageRef;

#[test]
#[allow(clippy::print_stdout)] // the count is part of the test report
fn image_view_equals_unpacked_root() {
    let fixtures = PathBuf::from(std::env::var_os("WHITTLE_FIXTURES").expect(
        "WHITTLE_FIXTURES is not set: run `scripts/test` (or `export WHITTLE_FIXTURES=$(fixtures/build.sh)`)",
    ));
    let mut checked = 0;
    for name in ["nginx", "python"] {
        let Some(root) = support::roots()
            .into_iter()
            .find(|r| r.to_string_lossy().contains(&format!("/{name}/")))
        else {
            panic!("no unpacked {name} root among {:?}", support::roots());
        };
        let r = ImageRef::parse(&format!(
            "docker-archive:{}",
            fixtures.join(format!("{name}.tar")).display()
        ))
        .unwrap();
        let image = whittle_image::open(&r).unwrap();
        let config = config_of(&image.config.view());
        let from_image = image_closure(&r, vec![], None).unwrap();
        let dir = DirRootFs::new(&root).unwrap();
        let from_dir = Analyzer::new(&dir).closure(&Request {
            config,
            paths: vec![],
        });
        let a: Vec<&String> = from_image.files.keys().collect();
        let b: Vec<&String> = from_dir.files.keys().collect();
        assert_eq!(
            a,
            b,
            "{name}: closure differs between the image view and {}",
            root.display()
        );
        assert!(
            from_image.files.len() > 10,
            "{name}: suspiciously small closure"
        );
        checked += from_image.files.len();
        // Globs expand to the image's executables.
        let all = image_closure(&r, vec!["/usr/sbin/*".into()], None).unwrap();
        assert!(
            all.roots.len() > 3,
            "{name}: /usr/sbin/* matched {} programs",
            all.roots.len()
        );
    }
    println!("image view = unpacked root for {checked} closure paths");
}
