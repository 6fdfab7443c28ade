//! The layer tar reader and the layer rules: `parse_layer` on arbitrary bytes, then the
//! entries applied to a tree, with and without whiteout tracking. Bytes after the first
//! layer's end-of-archive block are a second layer applied on top; the first layer is also
//! applied twice (every entry then meets itself from below). Header checksums are fixed up
//! before parsing, so mutations of header fields reach whittle's code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whittle_fstree::{parse_layer, FsTree, LayerEntries};
use whittle_fuzz::{check_entries, check_retain, check_tree, fix_tar_checksums};

/// Where a second layer starts: after the first one's last entry and the zero blocks that end it.
fn second_layer(data: &[u8], tar_size: u64) -> Option<&[u8]> {
    let mut pos = usize::try_from(tar_size).ok()?;
    while let Some(block) = data.get(pos..pos + 512) {
        if block.iter().any(|&b| b != 0) {
            return Some(&data[pos..]);
        }
        pos += 512;
    }
    None
}

fn apply_all(layers: &[&LayerEntries], track: bool) {
    let mut tree = FsTree::new(track);
    let mut sizes = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        sizes.push(l.tar_size);
        if tree.apply(i as u32, &l.entries).is_err() {
            return;
        }
        check_tree(&tree, track, &sizes);
    }
    check_retain(&tree, track, &sizes);
}

fuzz_target!(|input: &[u8]| {
    let mut data = input.to_vec();
    fix_tar_checksums(&mut data);
    let data = &data[..];
    let Ok(lower) = parse_layer(data) else {
        return;
    };
    check_entries(&lower, data.len() as u64);
    let upper = second_layer(data, lower.tar_size).and_then(|rest| {
        let l = parse_layer(rest).ok()?;
        check_entries(&l, rest.len() as u64);
        Some(l)
    });
    for track in [false, true] {
        apply_all(&[&lower], track);
        apply_all(&[&lower, &lower], track);
        if let Some(upper) = &upper {
            apply_all(&[&lower, upper], track);
        }
    }
});
