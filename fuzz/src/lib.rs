//! Shared by the fuzz targets and the seed generator (`examples/gen_seeds.rs`): tiny valid
//! layers and images built in memory, a scratch directory for the targets that must go through
//! files, and the invariants a merged tree must satisfy whatever the input was.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use whittle_fstree::{Content, ContentStore, Entry, EntryKind, FsTree, LayerEntries, NodeKind};
use whittle_image::Digest;

// ---------------------------------------------------------------------------------------------
// Tar building
// ---------------------------------------------------------------------------------------------

/// A small tar writer (GNU headers, so long names and link names become `L`/`K` entries).
pub struct TarW {
    b: tar::Builder<Vec<u8>>,
}

impl Default for TarW {
    fn default() -> Self {
        Self::new()
    }
}

impl TarW {
    pub fn new() -> Self {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        TarW { b }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        h
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.b.append_data(&mut h, path, data).expect("in memory");
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.b
            .append_data(&mut h, path, &[][..])
            .expect("in memory");
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target).expect("in memory");
        self
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.b.append_link(&mut h, path, target).expect("in memory");
        self
    }

    pub fn special(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        let mut h = Self::header(kind, 0o600, 0);
        h.set_device_major(major).expect("gnu header");
        h.set_device_minor(minor).expect("gnu header");
        self.b
            .append_data(&mut h, path, &[][..])
            .expect("in memory");
        self
    }

    /// A PAX extended header (`x`) for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = 1 + k.len() + 1 + v.len() + 1; // ' ' key '=' value '\n'
            let mut len = body + 1;
            while len.to_string().len() + body != len {
                len = len.to_string().len() + body;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path("PaxHeaders/entry").expect("short name");
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, &data[..]).expect("in memory");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("in memory")
    }
}

/// The lower layer of the seed images: every entry kind the layer reader knows, GNU long names
/// and link names, PAX path and xattrs, a hardlink, a whiteout-looking aufs name.
pub fn lower_layer() -> Vec<u8> {
    let long_dir = format!("opt/{}", "d".repeat(120));
    let long_file = format!("{long_dir}/{}", "f".repeat(110));
    let mut t = TarW::new();
    t.dir("./", 0o755)
        .dir("etc/", 0o755)
        .file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n")
        .dir("usr/bin/", 0o755)
        .file("usr/bin/tool", 0o4755, b"\x7fELF tool")
        .hardlink("usr/bin/tool-link", "usr/bin/tool")
        .symlink("bin", "usr/bin")
        .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
        .dir(&long_dir, 0o755)
        .file(&long_file, 0o644, b"long name")
        .hardlink("opt/long-link", &long_file)
        .dir("var/lib/app/", 0o700)
        .file("var/lib/app/state", 0o600, b"state")
        .special("dev/null", tar::EntryType::Char, 1, 3)
        .special("dev/loop0", tar::EntryType::Block, 7, 0)
        .special("run/fifo", tar::EntryType::Fifo, 0, 0)
        .pax(&[
            ("path", b"usr/bin/pax-named-ping"),
            (
                "SCHILY.xattr.security.capability",
                b"\x01\x00\x00\x02\x00\x20\x00\x00",
            ),
            ("mtime", b"1700000000.5"),
        ])
        .file("usr/bin/ping", 0o755, b"ping")
        .file(".wh..wh.plnk/1.2", 0o644, b"");
    t.finish()
}

/// The upper layer: a whiteout, an opaque directory, the hardlink target deleted, a directory
/// replaced by a file and a file replaced by a directory, a duplicate entry, a write and a
/// whiteout through a symlinked parent.
pub fn upper_layer() -> Vec<u8> {
    let mut t = TarW::new();
    t.file("usr/bin/.wh.tool", 0o644, b"")
        .file("var/lib/app/.wh..wh..opq", 0o644, b"")
        .file("var/lib/app/new", 0o644, b"new")
        .file("opt/.wh.long-link", 0o644, b"")
        .file("run", 0o644, b"run is a file now")
        .dir("etc/passwd/", 0o755)
        .file("etc/hosts", 0o644, b"one")
        .file("etc/hosts", 0o644, b"two")
        .file("bin/added-through-symlink", 0o755, b"x")
        .file("bin/.wh.tool-link", 0o644, b"");
    t.finish()
}

/// Two layers back to back, as the `layer_tar` target splits its input.
pub fn two_layers() -> Vec<u8> {
    let mut v = lower_layer();
    v.extend_from_slice(&upper_layer());
    v
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

pub const MANIFEST_V2: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_V1: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_V1: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

pub fn config_json(diff_ids: &[Digest]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
    let history: Vec<String> = diff_ids
        .iter()
        .enumerate()
        .map(|(i, _)| format!("{{\"created_by\":\"layer {i}\"}}"))
        .collect();
    format!(
        concat!(
            "{{\"architecture\":\"{arch}\",\"os\":\"linux\",\"created\":\"2024-01-01T00:00:00Z\",",
            "\"config\":{{\"User\":\"app\",\"Env\":[\"PATH=/usr/bin\"],\"Entrypoint\":[\"/usr/bin/tool\"],",
            "\"Cmd\":[\"-x\"],\"WorkingDir\":\"/\",\"ExposedPorts\":{{\"80/tcp\":{{}}}},",
            "\"Volumes\":{{\"/data\":{{}}}},\"Labels\":{{\"a\":\"b\"}},\"StopSignal\":\"SIGQUIT\",",
            "\"Healthcheck\":{{\"Test\":[\"CMD\",\"true\"]}}}},",
            "\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{ids}]}},",
            "\"history\":[{{\"created_by\":\"empty\",\"empty_layer\":true}},{history}]}}"
        ),
        arch = host_arch(),
        ids = ids.join(","),
        history = history.join(","),
    )
    .into_bytes()
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn descriptor(media_type: &str, bytes: &[u8], extra: &str) -> String {
    format!(
        "{{\"mediaType\":\"{media_type}\",\"digest\":\"{}\",\"size\":{}{extra}}}",
        Digest::of(bytes),
        bytes.len()
    )
}

pub fn oci_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let layers: Vec<String> = layers
        .iter()
        .map(|l| descriptor(LAYER_TAR, l, ""))
        .collect();
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{MANIFEST_V2}\",\"config\":{},\"layers\":[{}]}}",
        descriptor(CONFIG_V1, config, ""),
        layers.join(",")
    )
    .into_bytes()
}

/// An index with one entry: `target` of type `media_type`, tagged `latest`, with a platform.
pub fn oci_index(media_type: &str, target: &[u8]) -> Vec<u8> {
    let extra = format!(
        ",\"platform\":{{\"architecture\":\"{}\",\"os\":\"linux\"}},\
         \"annotations\":{{\"org.opencontainers.image.ref.name\":\"latest\"}}",
        host_arch()
    );
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{INDEX_V1}\",\"manifests\":[{}]}}",
        descriptor(media_type, target, &extra)
    )
    .into_bytes()
}

pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

pub fn blob_name(bytes: &[u8]) -> String {
    format!("blobs/sha256/{}", Digest::of(bytes).hex())
}

/// A tar of `members` (regular files) and `links` (symlink name → target).
pub fn tar_of(members: &[(String, Vec<u8>)], links: &[(&str, &str)]) -> Vec<u8> {
    let mut t = TarW::new();
    for (name, data) in members {
        t.file(name, 0o644, data);
    }
    for (name, target) in links {
        t.symlink(name, target);
    }
    t.finish()
}

/// A classic `docker save` archive: `<config-hex>.json`, `<dir>/layer.tar`, `manifest.json`
/// (`manifest` replaces the generated one when given), plus a duplicate layer as a symlink.
pub fn docker_archive(manifest: Option<&[u8]>, config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let config_name = format!("{}.json", Digest::of(config).hex());
    let mut members = vec![(config_name.clone(), config.to_vec())];
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("l{i}/layer.tar");
        members.push((name.clone(), l.to_vec()));
        names.push(format!("\"{name}\""));
    }
    let generated = format!(
        "[{{\"Config\":\"{config_name}\",\"RepoTags\":[\"tiny:latest\"],\"Layers\":[{}]}}]",
        names.join(",")
    );
    members.push((
        "manifest.json".into(),
        manifest.map_or_else(|| generated.into_bytes(), <[u8]>::to_vec),
    ));
    tar_of(&members, &[("dup/layer.tar", "../l0/layer.tar")])
}

/// A Docker >= 25 `docker save` archive: an OCI layout plus `manifest.json` pointing into it.
pub fn docker_archive_oci(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let manifest = oci_manifest(config, layers);
    let mut members = vec![
        ("oci-layout".to_string(), OCI_LAYOUT.to_vec()),
        ("index.json".to_string(), oci_index(MANIFEST_V2, &manifest)),
        (blob_name(&manifest), manifest.clone()),
        (blob_name(config), config.to_vec()),
    ];
    let mut names = Vec::new();
    for l in layers {
        members.push((blob_name(l), l.to_vec()));
        names.push(format!("\"{}\"", blob_name(l)));
    }
    let dm = format!(
        "[{{\"Config\":\"{}\",\"RepoTags\":[\"tiny:latest\"],\"Layers\":[{}]}}]",
        blob_name(config),
        names.join(",")
    );
    members.push(("manifest.json".into(), dm.into_bytes()));
    tar_of(&members, &[])
}

/// Members of an OCI layout: `oci-layout`, `index.json` and the given blobs.
pub fn oci_members(layout: &[u8], index: &[u8], blobs: &[&[u8]]) -> Vec<(String, Vec<u8>)> {
    let mut members = vec![
        ("oci-layout".to_string(), layout.to_vec()),
        ("index.json".to_string(), index.to_vec()),
    ];
    for b in blobs {
        members.push((blob_name(b), b.to_vec()));
    }
    members
}

/// A complete OCI image of `layers` (uncompressed), as layout members.
pub fn oci_image(layers: &[&[u8]]) -> Vec<(String, Vec<u8>)> {
    let ids: Vec<Digest> = layers.iter().map(|l| Digest::of(l)).collect();
    let config = config_json(&ids);
    let manifest = oci_manifest(&config, layers);
    let index = oci_index(MANIFEST_V2, &manifest);
    let mut blobs: Vec<&[u8]> = vec![&manifest, &config];
    blobs.extend_from_slice(layers);
    oci_members(OCI_LAYOUT, &index, &blobs)
}

// ---------------------------------------------------------------------------------------------
// Scratch files
// ---------------------------------------------------------------------------------------------

/// A per-process directory on tmpfs (`/dev/shm` when there is one). Spool files of compressed
/// layers go there too (`TMPDIR` is pointed at it on first use).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        // Remove what earlier fuzzer processes that are gone left behind.
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("whittle-fuzz-")) else {
                    continue;
                };
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("whittle-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        std::env::set_var("TMPDIR", &dir);
        dir
    })
}

pub fn write_scratch(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, data).expect("write scratch file");
    p
}

/// Writes `members` as a fresh directory `name` (removing what an earlier run left there, so
/// no blob of an earlier input can be found).
pub fn write_scratch_dir(name: &str, members: &[(String, Vec<u8>)]) -> PathBuf {
    let root = scratch().join(name);
    let _ = std::fs::remove_dir_all(&root);
    for (n, data) in members {
        let p = root.join(n);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write");
    }
    std::fs::create_dir_all(&root).expect("mkdir");
    root
}

// ---------------------------------------------------------------------------------------------
// Invariants
// ---------------------------------------------------------------------------------------------

fn assert_normalized(path: &[u8], what: &str) {
    assert!(!path.contains(&0), "{what}: NUL in {path:?}");
    if path.is_empty() {
        return;
    }
    for comp in path.split(|&b| b == b'/') {
        assert!(
            !comp.is_empty() && comp != b"." && comp != b"..",
            "{what}: path not normalized: {:?}",
            String::from_utf8_lossy(path)
        );
    }
}

/// What `parse_layer` promises about its output for a stream of `stream_len` bytes.
pub fn check_entries(l: &LayerEntries, stream_len: u64) {
    assert!(
        l.tar_size <= stream_len,
        "tar_size {} > stream {stream_len}",
        l.tar_size
    );
    for e in &l.entries {
        check_entry(e, l.tar_size);
    }
}

fn check_entry(e: &Entry, tar_size: u64) {
    assert_normalized(&e.path, "entry");
    assert!(
        e.meta.mode <= 0o7777,
        "mode has type bits: {:o}",
        e.meta.mode
    );
    assert!(
        e.meta.xattrs.windows(2).all(|w| w[0] <= w[1]),
        "xattrs not sorted"
    );
    match &e.kind {
        EntryKind::File { size, offset } => {
            assert_eq!(offset % 512, 0, "data offset not block aligned");
            assert!(
                offset.checked_add(*size).is_some_and(|end| end <= tar_size),
                "file data {offset}+{size} beyond the tar end {tar_size}"
            );
        }
        EntryKind::Hardlink(t) => {
            assert!(!t.is_empty(), "hardlink to the root");
            assert_normalized(t, "hardlink target");
        }
        EntryKind::Symlink(t) => assert!(!t.is_empty(), "empty symlink target"),
        EntryKind::Whiteout => assert!(!e.path.is_empty(), "whiteout of the root"),
        _ => {}
    }
    if e.path.is_empty() {
        assert!(
            matches!(e.kind, EntryKind::Dir | EntryKind::Opaque),
            "root entry that is not a directory: {:?}",
            e.kind
        );
    }
}

/// What every merged tree must satisfy. `tar_sizes[i]` is the stream length of layer `i`.
pub fn check_tree(tree: &FsTree, track_whiteouts: bool, tar_sizes: &[u64]) {
    let root = tree.get(b"").expect("root exists");
    assert!(root.is_dir(), "root is not a directory");
    let mut by_inode: HashMap<u64, (&Vec<u8>, &whittle_fstree::Node)> = HashMap::new();
    let mut prev: Option<&Vec<u8>> = None;
    for (path, node) in tree.iter() {
        if let Some(p) = prev {
            assert!(p < path, "iteration not sorted");
        }
        prev = Some(path);
        assert_normalized(path, "tree");
        if !path.is_empty() {
            let parent = whittle_fstree::parent_of(path);
            let pn = tree.get(parent).unwrap_or_else(|| {
                panic!("{:?} has no parent node", String::from_utf8_lossy(path))
            });
            assert!(
                pn.is_dir(),
                "parent of {:?} is not a directory: {:?}",
                String::from_utf8_lossy(path),
                pn.kind
            );
        }
        assert!(
            (node.layer as usize) < tar_sizes.len().max(1),
            "node from layer {} but {} layers applied",
            node.layer,
            tar_sizes.len()
        );
        match &node.kind {
            NodeKind::Whiteout => assert!(track_whiteouts, "whiteout node without tracking"),
            NodeKind::Dir { opaque: true, .. } => {
                assert!(track_whiteouts, "opaque dir without tracking")
            }
            NodeKind::Symlink(t) => assert!(!t.is_empty(), "empty symlink"),
            NodeKind::File {
                size,
                content: Content::Layer { layer, offset },
            } => {
                let len = *tar_sizes
                    .get(*layer as usize)
                    .expect("content layer applied");
                assert!(
                    offset.checked_add(*size).is_some_and(|end| end <= len),
                    "content {offset}+{size} beyond layer {layer} end {len}"
                );
            }
            _ => {}
        }
        if let Some((other_path, other)) = by_inode.insert(node.inode, (path, node)) {
            assert!(
                !node.is_dir() && !other.is_dir(),
                "directory shares inode {} ({:?}, {:?})",
                node.inode,
                String::from_utf8_lossy(path),
                String::from_utf8_lossy(other_path)
            );
            assert!(
                other.kind == node.kind && other.meta == node.meta,
                "hardlinks {:?} and {:?} disagree",
                String::from_utf8_lossy(path),
                String::from_utf8_lossy(other_path)
            );
        }
    }
    // Whole-tree queries must agree with iteration.
    let total: u64 = tree.iter().map(|(_, n)| n.size()).sum();
    assert_eq!(tree.subtree_size(b""), total);
    assert_eq!(tree.descendants(b"").count() + 1, tree.len());
    let mut children: HashMap<&[u8], Vec<&Vec<u8>>> = HashMap::new();
    for (path, _) in tree.iter().filter(|(p, _)| !p.is_empty()) {
        children
            .entry(whittle_fstree::parent_of(path))
            .or_default()
            .push(path);
    }
    for (path, node) in tree.iter().filter(|(_, n)| n.is_dir()) {
        let listed: Vec<&Vec<u8>> = tree.children(path).into_iter().map(|(p, _)| p).collect();
        let expected = children.get(path.as_slice()).cloned().unwrap_or_default();
        assert!(
            listed == expected,
            "children({:?}) lists {:?}, the tree has {:?} ({:?})",
            String::from_utf8_lossy(path),
            listed
                .iter()
                .map(|p| String::from_utf8_lossy(p))
                .collect::<Vec<_>>(),
            expected
                .iter()
                .map(|p| String::from_utf8_lossy(p))
                .collect::<Vec<_>>(),
            node.kind
        );
    }
}

/// Drops a pseudo-random part of the tree and checks the parent invariant still holds.
pub fn check_retain(tree: &FsTree, track_whiteouts: bool, tar_sizes: &[u64]) {
    let mut t = tree.clone();
    let mut seen = 0usize;
    t.retain(|p, _| {
        seen += 1;
        p.iter()
            .fold(0u32, |a, &b| a.wrapping_mul(31).wrapping_add(b as u32))
            % 3
            != 0
    });
    assert_eq!(
        seen,
        tree.len() - 1,
        "retain did not visit every non-root node"
    );
    check_tree(&t, track_whiteouts, tar_sizes);
}

/// Reads back every regular file (bounded), as squash and inspect do.
pub fn read_back(tree: &FsTree, store: &ContentStore) {
    let mut buf = [0u8; 64];
    for (_, node) in tree.iter() {
        if let NodeKind::File { size, .. } = node.kind {
            if let Ok(r) = store.open(node) {
                let mut sink = Vec::new();
                if r.take(1 << 20).read_to_end(&mut sink).is_ok() {
                    assert_eq!(sink.len() as u64, size.min(1 << 20), "content length");
                }
            }
            let _ = store.read_at(node, 0, &mut buf);
            let _ = store.read_at(node, size.saturating_sub(3), &mut buf);
        }
    }
}

/// With `WHITTLE_FUZZ_DEBUG=1`, targets say how far each input got (to check that seeds reach
/// the deep paths: `cargo fuzz run T fuzz/seeds/T -- -runs=0`).
pub fn debug(what: std::fmt::Arguments<'_>) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("WHITTLE_FUZZ_DEBUG").is_some()) {
        eprintln!("whittle-fuzz: {what}");
    }
}

/// Recomputes the header checksum of every tar header in `data`, walking it as a tar reader
/// does (header, data rounded up to 512 bytes; zero blocks are skipped, so several archives
/// back to back are all fixed). Without this nearly every mutation of a header is rejected by
/// the checksum before it reaches whittle's code.
pub fn fix_tar_checksums(data: &mut [u8]) {
    let mut pos = 0usize;
    while let Some(block) = pos.checked_add(512).and_then(|end| data.get_mut(pos..end)) {
        if block.iter().all(|&b| b == 0) {
            pos += 512;
            continue;
        }
        let header = tar::Header::from_byte_slice(block);
        let Ok(size) = header.entry_size() else {
            return;
        };
        let sum: u32 = block[..148]
            .iter()
            .chain(&block[156..])
            .map(|&b| b as u32)
            .sum::<u32>()
            + 8 * 32;
        let field = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(field.as_bytes());
        let Some(next) = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_add(511))
            .map(|s| s & !511)
            .and_then(|s| s.checked_add(pos + 512))
        else {
            return;
        };
        pos = next;
    }
}

/// Waits until the threads whittle started have exited (call at the start and the end of each
/// input). `flatten` reads layers on scoped threads; `std::thread::scope` returns once their
/// closures are done, but the OS threads may still be tearing down (thread-local destructors,
/// the thread handle), and libFuzzer's per-input leak check would report those allocations as
/// leaks. A thread that never exits shows up as a real leak after a second.
pub fn settle_threads() {
    fn count() -> usize {
        std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
    }
    static BASE: OnceLock<usize> = OnceLock::new();
    let base = *BASE.get_or_init(count);
    let start = std::time::Instant::now();
    while count() > base && start.elapsed() < std::time::Duration::from_secs(1) {
        std::thread::yield_now();
    }
}
