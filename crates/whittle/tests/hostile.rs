//! Hostile-archive corpus (issue 2 §6): crafted inputs, each asserting the error line and that
//! nothing was written outside the destination.
//!
//! Every case runs in a fresh directory holding `in/` (the crafted source), `out/` (the
//! destination's parent, empty), `sentinel/` (a canary file next to it) and `tmp/` (whittle's
//! TMPDIR). A failure must exit 1 with exactly one stderr line naming the file and the
//! problem, and leave `out/` and `tmp/` empty (no DEST, no temporary), `sentinel/` untouched
//! and nothing new beside them. Each failing input is tried with all three file destinations
//! (docker-archive, oci, oci-archive), since each has its own temporary-file path.

#[macro_use]
mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use common::gen::*;
use common::snap::{self, Snapshot};
use common::{report, sha256_file, sha256_hex, tempdir, whittle, Run};

/// The directories of one case.
struct Scene {
    _root: tempfile::TempDir,
    root: PathBuf,
    input: PathBuf,
    out: PathBuf,
    tmp: PathBuf,
    sentinel: PathBuf,
    sentinel_before: Snapshot,
    passwd_before: String,
}

impl Scene {
    fn new(name: &str) -> Scene {
        // The directory name says nothing about the case, so it cannot satisfy a needle.
        let _ = name;
        let root_dir = tempdir("hostile");
        let root = root_dir.path().to_path_buf();
        let input = root.join("in");
        let out = root.join("out");
        let tmp = root.join("tmp");
        let sentinel = root.join("sentinel");
        for d in [&input, &out, &tmp, &sentinel] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(sentinel.join("canary"), "do not touch\n").unwrap();
        std::fs::create_dir(sentinel.join("etc")).unwrap();
        std::fs::write(sentinel.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let sentinel_before = snap::from_dir(&sentinel);
        Scene {
            _root: root_dir,
            root,
            input,
            out,
            tmp,
            sentinel,
            sentinel_before,
            passwd_before: sha256_file(Path::new("/etc/passwd")),
        }
    }

    /// The three file destinations, as (label, reference).
    fn dests(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "docker-archive",
                format!("docker-archive:{}", self.out.join("dest.tar").display()),
            ),
            (
                "oci",
                format!("oci:{}:t", self.out.join("dest.oci").display()),
            ),
            (
                "oci-archive",
                format!("oci-archive:{}", self.out.join("dest.oci.tar").display()),
            ),
        ]
    }

    /// `whittle squash ARGS` with TMPDIR inside the scene.
    fn squash(&self, args: &[OsString]) -> Run {
        let mut all: Vec<OsString> = vec!["squash".into()];
        all.extend_from_slice(args);
        whittle(&all, &[("TMPDIR", self.tmp.as_os_str())])
    }

    /// Nothing outside `out/` changed, and `tmp/` is empty.
    fn assert_outside_untouched(&self, what: &str) {
        let mut top: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["in", "out", "sentinel", "tmp"],
            "{what}: something was created beside the destination's directory"
        );
        assert_eq!(
            snap::from_dir(&self.sentinel),
            self.sentinel_before,
            "{what}: the sentinel directory changed"
        );
        let left: Vec<_> = std::fs::read_dir(&self.tmp).unwrap().collect();
        assert!(
            left.is_empty(),
            "{what}: temporary files left in TMPDIR: {left:?}"
        );
        assert_eq!(
            sha256_file(Path::new("/etc/passwd")),
            self.passwd_before,
            "{what}: the host's /etc/passwd changed"
        );
    }

    fn out_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Exit 1, one stderr line containing every needle, nothing in `out/`, nothing outside.
    fn assert_clean_failure(&self, what: &str, r: &Run, needles: &[String]) {
        assert_eq!(
            r.code,
            Some(1),
            "{what}: want exit code 1\nstdout: {}\nstderr: {}",
            r.stdout,
            r.stderr
        );
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{what}: want one error line on stderr, got:\n{}",
            r.stderr
        );
        assert!(
            lines[0].starts_with("whittle: error: "),
            "{what}: {}",
            lines[0]
        );
        for n in needles {
            assert!(
                lines[0].contains(n.as_str()),
                "{what}: the error line should contain {n:?}:\n{}",
                lines[0]
            );
        }
        assert!(
            self.out_entries().is_empty(),
            "{what}: left in the destination's directory: {:?}",
            self.out_entries()
        );
        self.assert_outside_untouched(what);
    }
}

/// Runs `src` against every file destination; each must fail cleanly with `needles`.
fn fails(name: &str, scene: &Scene, src: &str, needles: &[String]) {
    let mut first = String::new();
    for (label, dest) in scene.dests() {
        let r = scene.squash(&[src.into(), dest.into()]);
        scene.assert_clean_failure(&format!("{name} → {label}"), &r, needles);
        if first.is_empty() {
            first = r.stderr.trim().to_string();
        }
    }
    report(&format!("hostile {name:<28} exit 1: {first}\n"));
}

/// A docker-archive `in/src.tar` holding one image with these layer tars (uncompressed).
fn docker_src(scene: &Scene, layers: Vec<Vec<u8>>) -> (String, PathBuf) {
    let path = scene.input.join("src.tar");
    Image::new(
        layers
            .into_iter()
            .map(|t| Blob::from_tar(t, Comp::None))
            .collect(),
    )
    .write_docker_archive(&path, "hostile/x:1");
    (format!("docker-archive:{}", path.display()), path)
}

/// An OCI layout `in/src.oci` with these blobs.
fn oci_src(scene: &Scene, blobs: Vec<Blob>) -> (String, PathBuf) {
    let path = scene.input.join("src.oci");
    Image::new(blobs).write_oci(&path, "t");
    (format!("oci:{}:t", path.display()), path)
}

fn s(x: impl std::fmt::Display) -> String {
    x.to_string()
}

fn tar_of(entries: &[Ent]) -> Vec<u8> {
    layer_tar(entries)
}

/// A raw entry with any name (the `..` cases).
fn raw_file(t: &mut RawTar, name: &[u8], data: &[u8]) {
    let h = Header::new(name, b'0', data.len() as u64);
    t.header(&h).data(data);
}

fn raw_link(t: &mut RawTar, typeflag: u8, name: &[u8], target: &[u8]) {
    let mut h = Header::new(name, typeflag, 0);
    h.link = target.to_vec();
    h.mode = 0o777;
    t.header(&h);
}

// ---------------------------------------------------------------------------------------------
// Names and links that try to leave the root
// ---------------------------------------------------------------------------------------------

#[test]
fn dotdot_names_are_refused() {
    for (i, name) in [
        &b"../escape"[..],
        b"a/../../escape",
        b"./../../sentinel/pwned",
        b"../../../../../../tmp/pwned",
    ]
    .iter()
    .enumerate()
    {
        let sc = Scene::new("dotdot");
        let mut t = RawTar::new();
        t.dir_member("a/");
        raw_file(&mut t, name, b"escaped!");
        let (src, path) = docker_src(&sc, vec![t.finish()]);
        fails(
            &format!("dotdot-{i}"),
            &sc,
            &src,
            &[
                s(path.display()),
                s(String::from_utf8_lossy(name)),
                s("climbs above the root"),
            ],
        );
    }
}

#[test]
fn absolute_names_land_inside_the_root() {
    let sc = Scene::new("absolute");
    let mut t = RawTar::new();
    raw_file(&mut t, b"/etc/passwd", b"fake:x:0:0\n");
    raw_file(&mut t, b"//abs//file", b"abs");
    raw_file(&mut t, b"/tmp/../sentinel/pwned", b"inside");
    let (src, _) = docker_src(&sc, vec![t.finish()]);
    let dest = sc.out.join("dest.tar");
    let r = sc.squash(&[
        src.into(),
        format!("docker-archive:{}", dest.display()).into(),
    ]);
    let r = r.ok("squash of absolute names");
    assert_eq!(sc.out_entries(), ["dest.tar"], "only DEST in its directory");
    sc.assert_outside_untouched("absolute names");
    let tree = squashed_tree(&dest);
    assert_eq!(tree["/etc/passwd"].sha256, sha256_hex(b"fake:x:0:0\n"));
    assert_eq!(tree["/abs/file"].sha256, sha256_hex(b"abs"));
    assert_eq!(tree["/sentinel/pwned"].sha256, sha256_hex(b"inside"));
    report(&format!(
        "hostile {:<28} exit 0: normalized into the root ({} paths){}\n",
        "absolute-names",
        tree.len(),
        if r.stderr.is_empty() {
            ""
        } else {
            ", stderr not empty"
        }
    ));
}

/// The merged tree of the only layer of a docker-archive whittle wrote.
fn squashed_tree(archive: &Path) -> Snapshot {
    let (entry, _) = common::docker_archive_meta(archive);
    let layers = entry["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let members = common::archive_members(archive);
    snap::from_tar(&members[layers[0].as_str().unwrap()][..])
}

#[test]
fn symlink_dotdot_redirect_is_refused() {
    // Same layer, and across layers (symlink below, entry through it above).
    let sc = Scene::new("symlink-dotdot");
    let mut t = RawTar::new();
    raw_link(&mut t, b'2', b"evil", b"../../..");
    raw_file(&mut t, b"evil/x", b"escaped!");
    let (src, path) = docker_src(&sc, vec![t.finish()]);
    fails(
        "symlink-dotdot-same-layer",
        &sc,
        &src,
        &[
            s(path.display()),
            s("evil"),
            s("leads above the image root"),
        ],
    );

    let sc = Scene::new("symlink-dotdot-2");
    let mut lower = RawTar::new();
    raw_link(&mut lower, b'2', b"evil", b"../../../sentinel");
    let mut upper = RawTar::new();
    raw_file(&mut upper, b"evil/pwned", b"escaped!");
    let (src, path) = docker_src(&sc, vec![lower.finish(), upper.finish()]);
    fails(
        "symlink-dotdot-next-layer",
        &sc,
        &src,
        &[
            s(path.display()),
            s("layer 2"),
            s("leads above the image root"),
        ],
    );
}

#[test]
fn symlink_to_absolute_dir_resolves_inside_the_root() {
    // `evil -> /etc` then `evil/passwd`: as an engine extracting in a chroot would, whittle
    // follows the link inside the image: the file becomes the image's /etc/passwd.
    let sc = Scene::new("symlink-etc");
    let mut t = RawTar::new();
    raw_link(&mut t, b'2', b"evil", b"/etc");
    raw_file(&mut t, b"evil/passwd", b"image passwd\n");
    raw_link(&mut t, b'2', b"s", b"/sentinel");
    raw_file(&mut t, b"s/canary", b"image canary\n");
    let (src, _) = docker_src(&sc, vec![t.finish()]);
    let dest = sc.out.join("dest.tar");
    sc.squash(&[
        src.into(),
        format!("docker-archive:{}", dest.display()).into(),
    ])
    .ok("squash through an absolute symlink");
    assert_eq!(sc.out_entries(), ["dest.tar"]);
    sc.assert_outside_untouched("symlink to /etc");
    let tree = squashed_tree(&dest);
    assert_eq!(tree["/evil"].link, "/etc");
    assert_eq!(tree["/etc"].kind, 'd');
    assert_eq!(tree["/etc/passwd"].sha256, sha256_hex(b"image passwd\n"));
    assert_eq!(
        tree["/sentinel/canary"].sha256,
        sha256_hex(b"image canary\n")
    );
    assert!(!tree.contains_key("/evil/passwd"));
    report(&format!(
        "hostile {:<28} exit 0: evil/passwd written as the image's /etc/passwd\n",
        "symlink-to-/etc"
    ));
}

#[test]
fn hardlink_outside_is_refused() {
    let sc = Scene::new("hardlink-outside");
    let mut t = RawTar::new();
    raw_file(&mut t, b"a", b"a");
    raw_link(&mut t, b'1', b"l", b"../../etc/passwd");
    let (src, path) = docker_src(&sc, vec![t.finish()]);
    fails(
        "hardlink-outside",
        &sc,
        &src,
        &[
            s(path.display()),
            s("hardlink target"),
            s("climbs above the root"),
        ],
    );
}

#[test]
fn hardlink_to_missing_target_is_refused() {
    let sc = Scene::new("hardlink-missing");
    let mut t = RawTar::new();
    raw_link(&mut t, b'1', b"l", b"nope");
    let (src, path) = docker_src(&sc, vec![t.finish()]);
    fails(
        "hardlink-missing",
        &sc,
        &src,
        &[
            s(path.display()),
            s("/l"),
            s("hardlink target /nope does not exist"),
        ],
    );
}

#[test]
fn hardlink_to_directory_is_refused() {
    let sc = Scene::new("hardlink-dir");
    let mut t = RawTar::new();
    t.dir_member("d/");
    raw_link(&mut t, b'1', b"l", b"d");
    let (src, path) = docker_src(&sc, vec![t.finish()]);
    fails(
        "hardlink-to-dir",
        &sc,
        &src,
        &[s(path.display()), s("is a directory")],
    );
}

#[test]
fn symlink_loop_parent_is_refused() {
    let sc = Scene::new("symlink-loop");
    let mut t = RawTar::new();
    raw_link(&mut t, b'2', b"a", b"b");
    raw_link(&mut t, b'2', b"b", b"a");
    raw_file(&mut t, b"a/x", b"x");
    let (src, path) = docker_src(&sc, vec![t.finish()]);
    fails(
        "symlink-loop-parent",
        &sc,
        &src,
        &[s(path.display()), s("too many levels of symbolic links")],
    );
}

#[test]
fn invalid_whiteout_and_nul_names_are_refused() {
    let sc = Scene::new("bad-whiteout");
    let mut t = RawTar::new();
    raw_file(&mut t, b"d/.wh.", b"");
    let (src, path) = docker_src(&sc, vec![t.finish()]);
    fails(
        "bare-whiteout",
        &sc,
        &src,
        &[s(path.display()), s("invalid whiteout name")],
    );

    let sc = Scene::new("nul-name");
    let mut t = RawTar::new();
    t.pax(&[("path", b"a\0/../../x")]);
    raw_file(&mut t, b"placeholder", b"x");
    let (src, path) = docker_src(&sc, vec![t.finish()]);
    fails("nul-in-pax-name", &sc, &src, &[s(path.display()), s("NUL")]);
}

// ---------------------------------------------------------------------------------------------
// Broken streams and lying headers
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_layer_tar_is_refused() {
    // The diff_id is that of the truncated bytes, so only the tar itself is wrong.
    let sc = Scene::new("truncated-layer");
    let full = tar_of(&[file("big", vec![b'x'; 10_000]), file("after", "after")]);
    let cut = full[..512 + 5000].to_vec();
    let (src, path) = docker_src(&sc, vec![cut]);
    fails(
        "truncated-layer-tar",
        &sc,
        &src,
        &[s(path.display()), s("truncated")],
    );
}

#[test]
fn truncated_archive_is_refused() {
    let sc = Scene::new("truncated-archive");
    let layer = tar_of(&[file("big", vec![b'y'; 100_000])]);
    let (src, path) = docker_src(&sc, vec![layer]);
    // Members are written layers first, then config and manifest.json: cut inside the layer.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..60_000]).unwrap();
    fails(
        "truncated-archive",
        &sc,
        &src,
        &[s(path.display()), s("truncated")],
    );
}

/// Flips two bytes in the middle of a compressed stream.
fn corrupt_middle(mut v: Vec<u8>) -> Vec<u8> {
    let i = v.len() / 2;
    v[i] ^= 0x55;
    v[i + 1] ^= 0xaa;
    v
}

/// A layer tar of poorly compressible content, so the middle of the stream is data.
fn noisy_tar() -> Vec<u8> {
    let content: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    tar_of(&[file("data", &content)])
}

/// `stored` as the layer of an OCI layout (whose manifest has the digest of these very
/// bytes, so only the decoder or the diff_id can notice) and of a docker-archive; both must
/// fail naming the blob and containing `needle`.
fn corrupt_layer(name: &str, tar: &[u8], stored: Vec<u8>, comp: Comp, needle: &str) {
    let bad = Blob {
        tar: tar.to_vec(),
        stored,
        comp,
    };
    let sc = Scene::new(name);
    let (src, path) = oci_src(&sc, vec![bad.clone()]);
    let blob = path.join("blobs/sha256").join(&bad.digest()[7..]);
    fails(
        &format!("{name}-oci"),
        &sc,
        &src,
        &[s(blob.display()), s(needle)],
    );
    let sc = Scene::new(name);
    let archive = sc.input.join("src.tar");
    Image::new(vec![bad]).write_docker_archive(&archive, "hostile/x:1");
    fails(
        &format!("{name}-docker-archive"),
        &sc,
        &format!("docker-archive:{}", archive.display()),
        &[s(archive.display()), s(needle)],
    );
}

#[test]
fn corrupt_gzip_is_refused() {
    let tar = noisy_tar();
    let gz = Comp::Gzip.compress(&tar);
    corrupt_layer(
        "corrupt-gzip",
        &tar,
        corrupt_middle(gz.clone()),
        Comp::Gzip,
        "gzip",
    );
    let half = gz[..gz.len() / 2].to_vec();
    corrupt_layer("truncated-gzip", &tar, half, Comp::Gzip, "truncated");
}

#[test]
fn corrupt_zstd_is_refused() {
    let tar = noisy_tar();
    // With a content checksum in the frame the decoder itself notices.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    std::io::Write::write_all(&mut enc, &tar).unwrap();
    let zs = enc.finish().unwrap();
    corrupt_layer(
        "corrupt-zstd",
        &tar,
        corrupt_middle(zs.clone()),
        Comp::Zstd,
        "checksum",
    );
    let half = zs[..zs.len() / 2].to_vec();
    corrupt_layer("truncated-zstd", &tar, half, Comp::Zstd, "truncated");
    // Without one (the default of most writers) corrupt data may decode to other bytes:
    // then the diff_id catches it.
    let plain = Comp::Zstd.compress(&tar);
    corrupt_layer(
        "corrupt-zstd-no-checksum",
        &tar,
        corrupt_middle(plain),
        Comp::Zstd,
        "digest mismatch",
    );
}

/// Runs whittle under a 1 GiB address-space limit and reports its peak RSS (KiB).
fn bounded_run(sc: &Scene, src: &str, dest: &str) -> (Run, u64) {
    common::require("prlimit");
    common::require("/usr/bin/time");
    let rss_file = sc.root.join("rss");
    let out = std::process::Command::new("prlimit")
        .arg(format!("--as={}", 1u64 << 30))
        .arg("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(common::whittle_bin())
        .args(["squash", src, dest])
        .env("TMPDIR", &sc.tmp)
        .output()
        .unwrap();
    let rss: u64 = std::fs::read_to_string(&rss_file)
        .unwrap_or_default()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    std::fs::remove_file(&rss_file).unwrap();
    (Run::from_output(out), rss)
}

/// Fails in one clear line under the memory bound, with peak RSS under 200 MiB.
fn fails_bounded(name: &str, sc: &Scene, src: &str, needles: &[String]) {
    let dest = format!("docker-archive:{}", sc.out.join("dest.tar").display());
    let (mut r, rss) = bounded_run(sc, src, &dest);
    // /usr/bin/time adds "Command exited with non-zero status 1" to stderr.
    r.stderr = r
        .stderr
        .lines()
        .filter(|l| !l.starts_with("Command exited with non-zero status"))
        .map(|l| format!("{l}\n"))
        .collect();
    sc.assert_clean_failure(name, &r, needles);
    assert!(rss > 0 && rss < 200 * 1024, "{name}: peak RSS {rss} KiB");
    report(&format!(
        "hostile {name:<28} exit 1 (peak RSS {} MiB under a 1 GiB limit): {}\n",
        rss / 1024,
        r.stderr.trim()
    ));
}

#[test]
fn absurd_size_in_layer_header_is_bounded() {
    let sc = Scene::new("absurd-size");
    let mut t = RawTar::new();
    let h = Header::new("huge", b'0', 1 << 40);
    t.header(&h).data(b"tiny");
    let (src, path) = docker_src(&sc, vec![t.finish()]);
    fails_bounded(
        "absurd-size-layer-entry",
        &sc,
        &src,
        &[s(path.display()), s("truncated")],
    );
}

#[test]
fn absurd_size_in_archive_member_is_bounded() {
    // A docker-archive whose layer member claims 2^40 bytes and holds four.
    let sc = Scene::new("absurd-member");
    let path = sc.input.join("src.tar");
    let img = Image::new(vec![Blob::from_entries(&[file("f", "x")], Comp::None)]);
    let mut t = RawTar::new();
    for (name, data) in img.docker_members("hostile/x:1") {
        if name.ends_with("layer.tar") {
            continue;
        }
        t.member(&name, &data);
    }
    let (entry_name, _) = img
        .docker_members("hostile/x:1")
        .into_iter()
        .find(|(n, _)| n.ends_with("layer.tar"))
        .unwrap();
    let h = Header::new(&entry_name, b'0', 1 << 40);
    t.header(&h).data(b"tiny");
    std::fs::write(&path, t.finish()).unwrap();
    fails_bounded(
        "absurd-size-archive-member",
        &sc,
        &format!("docker-archive:{}", path.display()),
        &[s(path.display()), s("truncated")],
    );
}

#[test]
fn gnu_long_name_of_1gb_is_bounded() {
    let sc = Scene::new("longname-1g");
    let mut t = RawTar::new();
    let h = Header::new("././@LongLink", b'L', 1 << 30);
    t.header(&h).data(b"short");
    let (src, path) = docker_src(&sc, vec![t.finish()]);
    fails_bounded(
        "gnu-long-name-1GiB",
        &sc,
        &src,
        &[s(path.display()), s("GNU long name of 1073741824 bytes")],
    );

    let sc = Scene::new("pax-1g");
    let mut t = RawTar::new();
    let h = Header::new("./PaxHeaders/x", b'x', 1 << 30);
    t.header(&h).data(b"10 a=bcd\n");
    let (src, path) = docker_src(&sc, vec![t.finish()]);
    fails_bounded(
        "pax-header-1GiB",
        &sc,
        &src,
        &[s(path.display()), s("PAX header of 1073741824 bytes")],
    );
}

// ---------------------------------------------------------------------------------------------
// Digests, missing and broken metadata
// ---------------------------------------------------------------------------------------------

#[test]
fn docker_archive_diff_id_mismatch_is_refused() {
    let sc = Scene::new("diffid");
    let path = sc.input.join("src.tar");
    let mut img = Image::new(vec![Blob::from_entries(&[file("f", "real")], Comp::None)]);
    img.keep_diff_ids = true;
    img.config["rootfs"]["diff_ids"] =
        serde_json::json!([format!("sha256:{}", sha256_hex(b"something else"))]);
    img.write_docker_archive(&path, "hostile/x:1");
    fails(
        "diff-id-mismatch",
        &sc,
        &format!("docker-archive:{}", path.display()),
        &[
            s(path.display()),
            s("digest mismatch"),
            s(sha256_hex(b"something else")),
        ],
    );
}

#[test]
fn oci_blob_digest_mismatch_is_refused() {
    let sc = Scene::new("blob-digest");
    let blob = Blob::from_entries(&[file("f", "real content")], Comp::Gzip);
    let (src, path) = oci_src(&sc, vec![blob.clone()]);
    // Same size, different bytes: rewrite the layer with the content of another layer.
    let other = Blob::from_entries(&[file("f", "evil content")], Comp::Gzip);
    assert_eq!(other.stored.len(), blob.stored.len());
    let blob_path = path.join("blobs/sha256").join(&blob.digest()[7..]);
    std::fs::write(&blob_path, &other.stored).unwrap();
    fails(
        "oci-blob-digest-mismatch",
        &sc,
        &src,
        &[s(blob_path.display()), s("digest mismatch")],
    );
}

#[test]
fn oci_blob_size_mismatch_is_refused() {
    let sc = Scene::new("blob-size");
    let blob = Blob::from_entries(&[file("f", "x")], Comp::None);
    let (src, path) = oci_src(&sc, vec![blob.clone()]);
    let blob_path = path.join("blobs/sha256").join(&blob.digest()[7..]);
    let mut bytes = blob.stored.clone();
    bytes.extend_from_slice(&[0u8; 512]);
    std::fs::write(&blob_path, &bytes).unwrap();
    fails(
        "oci-blob-size-mismatch",
        &sc,
        &src,
        &[s(blob_path.display()), s("bytes")],
    );
}

#[test]
fn missing_blobs_are_refused() {
    let sc = Scene::new("missing-oci");
    let blob = Blob::from_entries(&[file("f", "x")], Comp::None);
    let (src, path) = oci_src(&sc, vec![blob.clone()]);
    let blob_path = path.join("blobs/sha256").join(&blob.digest()[7..]);
    std::fs::remove_file(&blob_path).unwrap();
    fails(
        "missing-oci-blob",
        &sc,
        &src,
        &[s(blob_path.display()), s("missing blob")],
    );

    let sc = Scene::new("missing-member");
    let path = sc.input.join("src.tar");
    let img = Image::new(vec![Blob::from_entries(&[file("f", "x")], Comp::None)]);
    let members: Vec<(String, Vec<u8>)> = img
        .docker_members("hostile/x:1")
        .into_iter()
        .filter(|(n, _)| !n.ends_with("layer.tar"))
        .collect();
    std::fs::write(&path, members_tar(&members)).unwrap();
    fails(
        "missing-archive-member",
        &sc,
        &format!("docker-archive:{}", path.display()),
        &[s(path.display()), s("layer.tar"), s("missing member")],
    );
}

/// A docker-archive whose member `name` is replaced by `bytes`.
fn docker_with_member(sc: &Scene, name: &str, bytes: &[u8]) -> PathBuf {
    let path = sc.input.join("src.tar");
    let img = Image::new(vec![Blob::from_entries(&[file("f", "x")], Comp::None)]);
    let members: Vec<(String, Vec<u8>)> = img
        .docker_members("hostile/x:1")
        .into_iter()
        .map(|(n, v)| {
            if n == name {
                (n, bytes.to_vec())
            } else {
                (n, v)
            }
        })
        .collect();
    std::fs::write(&path, members_tar(&members)).unwrap();
    path
}

#[test]
fn broken_manifest_json_is_refused() {
    let sc = Scene::new("broken-manifest");
    let path = docker_with_member(&sc, "manifest.json", b"[{\"Config\": ");
    fails(
        "broken-manifest.json",
        &sc,
        &format!("docker-archive:{}", path.display()),
        &[s(path.display()), s("manifest.json"), s("malformed")],
    );
    let sc = Scene::new("manifest-not-list");
    let path = docker_with_member(&sc, "manifest.json", b"{\"Config\": 1}");
    fails(
        "manifest.json-wrong-shape",
        &sc,
        &format!("docker-archive:{}", path.display()),
        &[s(path.display()), s("manifest.json")],
    );
}

#[test]
fn broken_index_json_is_refused() {
    let sc = Scene::new("broken-index");
    let blob = Blob::from_entries(&[file("f", "x")], Comp::None);
    let (src, path) = oci_src(&sc, vec![blob]);
    std::fs::write(
        path.join("index.json"),
        b"{\"schemaVersion\": 2, \"manifests\": [",
    )
    .unwrap();
    fails(
        "broken-index.json",
        &sc,
        &src,
        &[s(path.join("index.json").display()), s("malformed")],
    );
}

#[test]
fn broken_oci_manifest_is_refused() {
    // A manifest blob that is not JSON, with the right digest.
    let sc = Scene::new("broken-oci-manifest");
    let blob = Blob::from_entries(&[file("f", "x")], Comp::None);
    let (src, path) = oci_src(&sc, vec![blob]);
    let garbage = b"{\"schemaVersion\": 2, \"layers\": 7".to_vec();
    let hex = sha256_hex(&garbage);
    std::fs::write(path.join("blobs/sha256").join(&hex), &garbage).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{hex}"), "size": garbage.len(),
        "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(path.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fails("broken-oci-manifest", &sc, &src, &[s(hex), s("malformed")]);
}

#[test]
fn broken_config_json_is_refused() {
    let garbage = b"{\"rootfs\": {\"diff_ids\": [".to_vec();
    let config_hex = sha256_hex(&garbage);
    let mut img = Image::new(vec![Blob::from_entries(&[file("f", "x")], Comp::None)]);
    img.raw_config = Some(garbage);

    let sc = Scene::new("broken-config-docker");
    let path = sc.input.join("src.tar");
    img.write_docker_archive(&path, "hostile/x:1");
    fails(
        "broken-config-docker-archive",
        &sc,
        &format!("docker-archive:{}", path.display()),
        &[
            s(path.display()),
            s(&config_hex),
            s("malformed image config JSON"),
        ],
    );

    // OCI: the config blob is not JSON; its digest in the manifest is right.
    let sc = Scene::new("broken-config-oci");
    let (src, path) = (
        format!("oci:{}:t", sc.input.join("src.oci").display()),
        sc.input.join("src.oci"),
    );
    img.write_oci(&path, "t");
    fails(
        "broken-config-oci",
        &sc,
        &src,
        &[
            s(path.join("blobs/sha256").join(&config_hex).display()),
            s("malformed image config JSON"),
        ],
    );
}

#[test]
fn layer_count_mismatch_is_refused() {
    let sc = Scene::new("layer-count");
    let path = sc.input.join("src.tar");
    let mut img = Image::new(vec![Blob::from_entries(&[file("f", "x")], Comp::None)]);
    img.keep_diff_ids = true;
    let id = img.layers[0].diff_id();
    img.config["rootfs"]["diff_ids"] = serde_json::json!([id, id]);
    img.write_docker_archive(&path, "hostile/x:1");
    fails(
        "layer-count-mismatch",
        &sc,
        &format!("docker-archive:{}", path.display()),
        &[s(path.display()), s("diff_ids")],
    );
}

#[test]
fn unsupported_and_non_archives_are_refused() {
    let sc = Scene::new("bzip2");
    let mut bz = b"BZh91AY&SY".to_vec();
    bz.extend_from_slice(&[0u8; 100]);
    let blob = Blob {
        tar: Vec::new(),
        stored: bz,
        comp: Comp::None,
    };
    let path = sc.input.join("src.tar");
    let mut img = Image::new(vec![blob]);
    img.keep_diff_ids = true;
    img.config["rootfs"]["diff_ids"] = serde_json::json!([format!("sha256:{}", "0".repeat(64))]);
    img.write_docker_archive(&path, "hostile/x:1");
    fails(
        "bzip2-layer",
        &sc,
        &format!("docker-archive:{}", path.display()),
        &[s(path.display()), s("bzip2")],
    );

    let sc = Scene::new("not-a-tar");
    let path = sc.input.join("src.tar");
    std::fs::write(&path, b"this is not a tar archive at all\n".repeat(40)).unwrap();
    fails(
        "not-a-tar",
        &sc,
        &format!("docker-archive:{}", path.display()),
        &[s(path.display()), s("not a tar")],
    );
}

// ---------------------------------------------------------------------------------------------
// References and destinations
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_transport_is_refused() {
    let sc = Scene::new("transport");
    fails(
        "unknown-transport",
        &sc,
        "foo:bar",
        &[s("foo:bar"), s("unknown transport \"foo\"")],
    );
    // As destination too.
    let good = sc.input.join("src.tar");
    Image::new(vec![Blob::from_entries(&[file("f", "x")], Comp::None)])
        .write_docker_archive(&good, "hostile/x:1");
    let r = sc.squash(&[
        format!("docker-archive:{}", good.display()).into(),
        "ftp:somewhere".into(),
    ]);
    sc.assert_clean_failure(
        "unknown destination transport",
        &r,
        &[s("unknown transport \"ftp\"")],
    );
}

#[test]
fn nonexistent_source_is_refused() {
    for (i, src) in [
        "docker-archive:/nonexistent/whittle/src.tar".to_string(),
        "oci:/nonexistent/whittle/src.oci:t".to_string(),
        "oci-archive:/nonexistent/whittle/src.tar".to_string(),
        "/nonexistent/whittle/src.tar".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let sc = Scene::new("nonexistent");
        fails(
            &format!("nonexistent-source-{i}"),
            &sc,
            src,
            &[
                s("/nonexistent/whittle/src"),
                s("No such file or directory"),
            ],
        );
    }
}

fn good_source(sc: &Scene) -> (String, PathBuf) {
    let path = sc.input.join("src.tar");
    Image::new(vec![Blob::from_entries(
        &[dir("etc"), file("etc/x", "x")],
        Comp::None,
    )])
    .write_docker_archive(&path, "hostile/x:1");
    (format!("docker-archive:{}", path.display()), path)
}

#[test]
fn read_only_destination_is_refused() {
    common::require("unshare");
    let sc = Scene::new("read-only");
    let (src, _) = good_source(&sc);
    for (label, dest) in sc.dests() {
        // A read-only bind mount of out/ over itself, in a private mount namespace that dies
        // with the process: nothing to clean up on the host.
        let script = format!(
            "mount --bind -o ro {out} {out} && exec \"$@\"",
            out = sc.out.display()
        );
        let out = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
            .arg(common::whittle_bin())
            .args(["squash", &src, &dest])
            .env("TMPDIR", &sc.tmp)
            .output()
            .unwrap();
        let r = Run::from_output(out);
        sc.assert_clean_failure(
            &format!("read-only → {label}"),
            &r,
            &[s(sc.out.display()), s("Read-only file system")],
        );
        report(&format!(
            "hostile {:<28} exit 1: {}\n",
            format!("read-only-dest-{label}"),
            r.stderr.trim()
        ));
    }
    // Under /proc nothing can be created at all.
    let r = sc.squash(&[
        src.clone().into(),
        "docker-archive:/proc/whittle-test.tar".into(),
    ]);
    sc.assert_clean_failure("dest under /proc", &r, &[s("/proc")]);
    assert!(!Path::new("/proc/whittle-test.tar").exists());
    // A parent that is a file.
    let r = sc.squash(&[
        src.into(),
        format!(
            "docker-archive:{}",
            sc.sentinel.join("canary/dest.tar").display()
        )
        .into(),
    ]);
    sc.assert_clean_failure("parent is a file", &r, &[s("canary")]);
}

#[test]
fn destination_equal_to_source_is_refused() {
    let sc = Scene::new("dest-is-src");
    let (src, path) = good_source(&sc);
    let before = sha256_file(&path);
    let spellings = [
        src.clone(),
        format!("docker-archive:{}/../in/./src.tar", sc.input.display()),
    ];
    for dest in &spellings {
        let r = sc.squash(&[src.clone().into(), dest.into()]);
        assert_eq!(r.code, Some(1), "{dest}: {}", r.stderr);
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", r.stderr);
        assert!(
            lines[0].contains("destination is the source"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("src.tar"), "{}", lines[0]);
    }
    // Through a symlink to the source.
    let link = sc.out.join("link.tar");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let r = sc.squash(&[
        src.into(),
        format!("docker-archive:{}", link.display()).into(),
    ]);
    assert_eq!(r.code, Some(1), "via symlink: {}", r.stderr);
    assert!(
        r.stderr.contains("destination is the source"),
        "{}",
        r.stderr
    );
    std::fs::remove_file(&link).unwrap();
    assert_eq!(sha256_file(&path), before, "the source changed");
    let mut inputs: Vec<_> = std::fs::read_dir(&sc.input)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    inputs.sort();
    assert_eq!(inputs, ["src.tar"], "temporaries left beside the source");
    sc.assert_outside_untouched("dest = src");
    report(&format!(
        "hostile {:<28} exit 1: {}\n",
        "dest-equals-source",
        r.stderr.trim()
    ));
}
