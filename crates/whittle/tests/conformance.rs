//! Conformance corpus: small generated multi-layer images, one per flattening rule of issue 2
//! §3, squashed by whittle and compared with independent implementations of the same rules.
//!
//! For every case the original image is written by hand (an OCI layout and a classic
//! docker-archive holding the same layer tars), whittle squashes each into one layer, and
//! three checks run:
//!
//! * `umoci`  — `umoci unpack` of the original vs `umoci unpack` of whittle's OCI output;
//! * `docker` — `docker load` + `create` + `export` of the original vs the same for whittle's
//!   docker-archive output;
//! * `spec`   — the case's expectations written from the OCI layer spec, checked on whittle's
//!   layer tar itself and on umoci's unpack of it (so a rule both oracles got wrong the same
//!   way would still show), plus: both readers (oci, docker-archive) give the same layer.
//!
//! Every path's type, permission bits, uid, gid, size, sha256, link target, device numbers,
//! mtime, xattrs and hardlink group are compared. Exceptions, each with its reason, are in
//! [`docker_compare`] and on the cases.
//!
//! `WHITTLE_CASES=a,b` runs only the named cases. The table of cases × oracles is printed to
//! stderr (outside the test harness's capture) and written to
//! `$CARGO_TARGET_TMPDIR/conformance-table.txt`.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::engines::{
    docker_load, docker_major_version, docker_view, require_docker, umoci_view, DOCKER_INIT_PATHS,
};
use common::gen::*;
use common::snap::{self, Compare, Snapshot};
use common::{report, squash_ok, tempdir, timer, unique};

/// What the spec says a path of the flattened image must be.
#[derive(Debug, Clone)]
enum Want {
    Absent,
    File(&'static [u8]),
    Dir,
    Symlink(&'static str),
    /// In the same hardlink group as the other path.
    LinkedTo(&'static str),
    NotLinked,
    Mode(u32),
    Owner(u64, u64),
    Mtime(i64),
    Xattr(&'static str, Vec<u8>),
    NoXattrs,
    Dev(char, u32, u32),
    Fifo,
}

struct Case {
    name: &'static str,
    layers: Vec<Vec<Ent>>,
    /// Stored compression per layer (cycled if shorter than the layers).
    comp: Vec<Comp>,
    want: Vec<(&'static str, Vec<Want>)>,
    /// Why the Docker oracle cannot judge this case, if it cannot.
    docker_na: Option<&'static str>,
}

fn case(name: &'static str, layers: Vec<Vec<Ent>>) -> Case {
    Case {
        name,
        layers: link_meta(layers),
        comp: vec![Comp::None],
        want: Vec::new(),
        docker_na: None,
    }
}

impl Case {
    fn want(mut self, path: &'static str, w: Vec<Want>) -> Self {
        self.want.push((path, w));
        self
    }
    fn comp(mut self, c: Vec<Comp>) -> Self {
        self.comp = c;
        self
    }
    fn docker_na(mut self, why: &'static str) -> Self {
        self.docker_na = Some(why);
        self
    }
}

use Want::*;

fn long(n: usize, c: char) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// The layers shared by the compression cases: a little of everything.
fn combo() -> Vec<Vec<Ent>> {
    link_meta(vec![
        vec![
            dir("etc"),
            file("etc/os-release", "ID=test\n"),
            file("etc/gone", "x"),
            dir("usr"),
            dir("usr/bin"),
            file("usr/bin/tool", vec![7u8; 70_000]).mode(0o755),
            hardlink("usr/bin/tool2", "usr/bin/tool"),
            symlink("usr/bin/t", "tool"),
            dir("var"),
            dir("var/cache"),
            file("var/cache/a", "cached"),
        ],
        vec![
            dir("etc"),
            whiteout("etc/gone"),
            file("etc/new", "new\n").owner(1, 2),
            dir("var"),
            opaque("var"),
            dir("var/lib"),
            dir("usr"),
            dir("usr/bin"),
            file("usr/bin/ping", b"\x7fELF-not-really".repeat(100).as_slice())
                .mode(0o4755)
                .xattr("security.capability", &cap_net_bind_service()),
        ],
        vec![dir("usr"), dir("usr/bin"), whiteout("usr/bin/tool")],
    ])
}

/// Gives each hardlink entry its target's mode, owner and mtime, as every real tar writer
/// does (GNU tar, Go's archive/tar). The header of a link is otherwise ambiguous: Docker
/// applies its mode and owner to the shared inode (moby `createTarFile`, `handleLChmod`),
/// GNU tar and umoci ignore them.
fn link_meta(mut layers: Vec<Vec<Ent>>) -> Vec<Vec<Ent>> {
    let mut seen: BTreeMap<Vec<u8>, (u32, u64, u64, u64)> = BTreeMap::new();
    for layer in &mut layers {
        for e in layer.iter_mut() {
            if let Kind::Hardlink(t) = &e.kind {
                if let Some(&(mode, uid, gid, mtime)) = seen.get(t) {
                    e.mode = mode;
                    e.uid = uid;
                    e.gid = gid;
                    e.mtime = mtime;
                }
            }
            seen.insert(e.path.clone(), (e.mode, e.uid, e.gid, e.mtime));
        }
    }
    layers
}

fn combo_wants(c: Case) -> Case {
    c.want("/etc/gone", vec![Absent])
        .want("/etc/new", vec![File(b"new\n"), Owner(1, 2)])
        .want("/var/cache", vec![Absent])
        .want("/var/lib", vec![Dir])
        .want("/usr/bin/tool", vec![Absent])
        .want("/usr/bin/tool2", vec![NotLinked, Mode(0o755)])
        .want("/usr/bin/t", vec![Symlink("tool")])
        .want(
            "/usr/bin/ping",
            vec![
                Mode(0o4755),
                Xattr("security.capability", cap_net_bind_service()),
            ],
        )
}

fn cases() -> Vec<Case> {
    let gnu_dir = format!("gnu-{}", long(96, 'g'));
    let gnu_file = format!("{gnu_dir}/{}", long(120, 'G'));
    let pax_dir = format!("pax-{}", long(96, 'p'));
    let pax_file = format!("{pax_dir}/{}", long(150, 'P'));
    let long_target = format!("/{}/{}", long(80, 't'), long(80, 'T'));
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let gnu_file_s = leak(format!("/{gnu_file}"));
    let pax_file_s = leak(format!("/{pax_file}"));
    let long_target_s = leak(long_target.clone());
    let gone_long = format!("{gnu_dir}/{}", long(110, 'w'));
    let gone_long_s = leak(format!("/{gone_long}"));
    let hl_gnu = format!("{gnu_dir}/{}", long(105, 'h'));
    let hl_pax = format!("{pax_dir}/{}", long(105, 'H'));

    vec![
        case(
            "whiteout",
            vec![
                vec![
                    dir("etc"),
                    file("etc/keep", "keep"),
                    file("etc/gone", "gone"),
                    dir("opt"),
                    dir("opt/sub"),
                    file("opt/sub/a", "a"),
                    file("opt/b", "b"),
                    file("top", "top"),
                ],
                vec![
                    dir("etc"),
                    whiteout("etc/gone"),
                    whiteout("etc/never-existed"),
                    whiteout("opt"),
                    whiteout("top"),
                ],
                vec![dir("opt"), file("opt/again", "again")],
            ],
        )
        .want("/etc/keep", vec![File(b"keep")])
        .want("/etc/gone", vec![Absent])
        .want("/etc/never-existed", vec![Absent])
        .want("/etc/.wh.gone", vec![Absent])
        .want("/opt/sub", vec![Absent])
        .want("/opt/b", vec![Absent])
        .want("/opt/again", vec![File(b"again")])
        .want("/top", vec![Absent]),
        // The whiteout and the new directory in one layer: the whiteout hides the lower
        // directory, the same layer's directory and children stay.
        case(
            "whiteout-recreate",
            vec![
                vec![
                    dir("re"),
                    file("re/old", "old"),
                    dir("re/olddir"),
                    file("re/olddir/x", "x"),
                ],
                vec![whiteout("re"), dir("re").mode(0o750), file("re/new", "new")],
            ],
        )
        .want("/re", vec![Dir, Mode(0o750)])
        .want("/re/new", vec![File(b"new")])
        .want("/re/old", vec![Absent])
        .want("/re/olddir", vec![Absent])
        .docker_na(
            "Docker's fuse-overlayfs driver keeps `.wh.re` in the layer directory, where it \
             also hides the same layer's `re/` (overlay2 would instead show the lower \
             children); Docker's own layers never hold both",
        ),
        case(
            "opaque-first",
            vec![
                vec![
                    dir("d"),
                    file("d/a", "a"),
                    dir("d/sub"),
                    file("d/sub/x", "x"),
                    file("keep", "keep"),
                ],
                vec![dir("d"), file("d/b", "b")],
                vec![
                    dir("d").mode(0o750),
                    opaque("d"),
                    file("d/c", "c"),
                    dir("d/sub2"),
                    file("d/sub2/y", "y"),
                ],
            ],
        )
        .want("/d", vec![Dir, Mode(0o750)])
        .want("/d/a", vec![Absent])
        .want("/d/b", vec![Absent])
        .want("/d/sub", vec![Absent])
        .want("/d/c", vec![File(b"c")])
        .want("/d/sub2/y", vec![File(b"y")])
        .want("/d/.wh..wh..opq", vec![Absent])
        .want("/keep", vec![File(b"keep")]),
        // The marker after the layer's own entries of that directory: it is still applied
        // first, so it hides only the lower layers.
        case(
            "opaque-last",
            vec![
                vec![
                    dir("d"),
                    file("d/a", "a"),
                    dir("d/sub"),
                    file("d/sub/x", "x"),
                ],
                vec![
                    dir("d"),
                    file("d/c", "c"),
                    dir("d/sub2"),
                    file("d/sub2/y", "y"),
                    opaque("d"),
                    dir("e"),
                    opaque("e"),
                ],
            ],
        )
        .want("/d/a", vec![Absent])
        .want("/d/sub", vec![Absent])
        .want("/d/c", vec![File(b"c")])
        .want("/d/sub2/y", vec![File(b"y")])
        .want("/e", vec![Dir]),
        case(
            "nondir-replaces-dir",
            vec![
                vec![
                    dir("x"),
                    file("x/a", "a"),
                    dir("x/b"),
                    file("x/b/c", "c"),
                    dir("s"),
                    file("s/f", "f"),
                    dir("p"),
                    file("p/q", "q"),
                ],
                vec![file("x", "now a file"), symlink("s", "x"), fifo("p")],
            ],
        )
        .want("/x", vec![File(b"now a file")])
        .want("/x/a", vec![Absent])
        .want("/x/b", vec![Absent])
        .want("/s", vec![Symlink("x")])
        .want("/s/f", vec![Absent])
        .want("/p", vec![Fifo])
        .want("/p/q", vec![Absent]),
        case(
            "dir-replaces-file",
            vec![
                vec![file("y", "file"), symlink("z", "y"), chardev("w", 1, 3)],
                vec![
                    dir("y"),
                    file("y/inner", "inner"),
                    dir("z"),
                    file("z/k", "k"),
                    dir("w"),
                ],
            ],
        )
        .want("/y", vec![Dir])
        .want("/y/inner", vec![File(b"inner")])
        .want("/z", vec![Dir])
        .want("/z/k", vec![File(b"k")])
        .want("/w", vec![Dir]),
        // docker-squash #94/#118, go-containerregistry #977: the link keeps its content.
        case(
            "hardlink-target-deleted",
            vec![
                vec![
                    dir("bin"),
                    file("bin/a", "content of a").mode(0o755).owner(3, 4),
                    hardlink("bin/l", "bin/a"),
                    hardlink("bin/l2", "bin/a"),
                ],
                vec![dir("bin"), whiteout("bin/a")],
            ],
        )
        .want("/bin/a", vec![Absent])
        .want(
            "/bin/l",
            vec![
                File(b"content of a"),
                LinkedTo("/bin/l2"),
                Mode(0o755),
                Owner(3, 4),
            ],
        ),
        case(
            "hardlink-target-overwritten",
            vec![
                vec![
                    dir("bin"),
                    file("bin/b", "old b"),
                    hardlink("bin/m", "bin/b"),
                ],
                vec![dir("bin"), file("bin/b", "new content of b")],
            ],
        )
        .want("/bin/m", vec![File(b"old b"), NotLinked])
        .want("/bin/b", vec![File(b"new content of b"), NotLinked]),
        // A hardlink entry whose target is in a lower layer (OCI allows it; Docker does not
        // build such layers). Docker extracts each layer into its own directory, where the
        // target is not, so the original does not load.
        case(
            "hardlink-cross-layer",
            vec![
                vec![dir("bin"), file("bin/c", "content of c")],
                vec![dir("bin"), hardlink("bin/n", "bin/c")],
                vec![dir("bin"), whiteout("bin/c")],
            ],
        )
        .want("/bin/c", vec![Absent])
        .want("/bin/n", vec![File(b"content of c")])
        .docker_na("docker load cannot link to a file of a lower layer"),
        case(
            "symlinks",
            vec![vec![
                dir("usr"),
                dir("usr/bin"),
                file("usr/bin/tool", "tool"),
                symlink("rel", "usr/bin/tool"),
                symlink("usr/bin/up", "../../etc"),
                symlink("abs", "/usr/bin/tool"),
                symlink("dangling", "/no/such/file"),
                symlink("dirlink", "usr"),
                symlink("loop1", "loop2"),
                symlink("loop2", "loop1"),
                symlink("odd", "a//b/./c/"),
                symlink("owned", "rel")
                    .owner(1000, 1000)
                    .mtime(1_500_000_000),
            ]],
        )
        .want("/rel", vec![Symlink("usr/bin/tool")])
        .want("/usr/bin/up", vec![Symlink("../../etc")])
        .want("/abs", vec![Symlink("/usr/bin/tool")])
        .want("/dangling", vec![Symlink("/no/such/file")])
        .want("/dirlink", vec![Symlink("usr")])
        .want("/loop1", vec![Symlink("loop2")])
        .want("/odd", vec![Symlink("a//b/./c/")])
        .want(
            "/owned",
            vec![Symlink("rel"), Owner(1000, 1000), Mtime(1_500_000_000)],
        ),
        case(
            "long-names",
            vec![
                vec![
                    dir(&gnu_dir),
                    file(&gnu_file, "gnu long name"),
                    file(&gone_long, "to be deleted"),
                    dir(&pax_dir).pax(),
                    file(&pax_file, "pax long name").pax(),
                    symlink("gnu-long-link", &long_target),
                    symlink("pax-long-link", &long_target).pax(),
                    hardlink(&hl_gnu, &gnu_file),
                    hardlink(&hl_pax, &pax_file).pax(),
                ],
                vec![dir(&gnu_dir), whiteout(&gone_long)],
            ],
        )
        .want(gnu_file_s, vec![File(b"gnu long name")])
        .want(pax_file_s, vec![File(b"pax long name")])
        .want(gone_long_s, vec![Absent])
        .want("/gnu-long-link", vec![Symlink(long_target_s)])
        .want("/pax-long-link", vec![Symlink(long_target_s)])
        .want(leak(format!("/{hl_gnu}")), vec![LinkedTo(gnu_file_s)])
        .want(leak(format!("/{hl_pax}")), vec![LinkedTo(pax_file_s)]),
        // Docker's export writes only security.capability (moby pkg/archive reads no other
        // xattr), so the docker oracle sees only that one; the others are checked by umoci
        // and on whittle's layer.
        case(
            "xattrs",
            vec![
                vec![
                    dir("bin"),
                    file("bin/ping", "ping")
                        .mode(0o755)
                        .xattr("security.capability", &cap_net_bind_service()),
                    file("bin/user", "u")
                        .xattr("user.plain", b"value")
                        .xattr("user.binary", b"\x00\x01\n=\xff"),
                    dir("xdir").xattr("user.dir", b"1"),
                    file("bin/dropped", "has xattr").xattr("user.gone", b"x"),
                ],
                vec![dir("bin"), file("bin/dropped", "replaced, no xattr")],
            ],
        )
        .want(
            "/bin/ping",
            vec![Xattr("security.capability", cap_net_bind_service())],
        )
        .want(
            "/bin/user",
            vec![
                Xattr("user.plain", b"value".to_vec()),
                Xattr("user.binary", b"\x00\x01\n=\xff".to_vec()),
            ],
        )
        .want("/xdir", vec![Dir, Xattr("user.dir", b"1".to_vec())])
        .want("/bin/dropped", vec![NoXattrs]),
        case(
            "owners-modes",
            vec![vec![
                dir("bin"),
                file("bin/su", "su").mode(0o4755),
                file("bin/wall", "wall").mode(0o2755).owner(0, 5),
                file("bin/both", "both").mode(0o6711).owner(1000, 50),
                dir("tmp").mode(0o1777),
                dir("private").mode(0o700).owner(33, 33),
                file("private/secret", "s").mode(0o600).owner(1000, 1000),
                file("nothing", "n").mode(0o000),
                file("nobody", "n").owner(65534, 65534).mode(0o640),
                file("big-ids", "b").owner(3_000_000, 2_500_000),
                dir("sticky-owned").mode(0o1770).owner(7, 8),
            ]],
        )
        .want("/bin/su", vec![Mode(0o4755), Owner(0, 0)])
        .want("/bin/wall", vec![Mode(0o2755), Owner(0, 5)])
        .want("/bin/both", vec![Mode(0o6711), Owner(1000, 50)])
        .want("/tmp", vec![Dir, Mode(0o1777)])
        .want("/private/secret", vec![Mode(0o600), Owner(1000, 1000)])
        .want("/nothing", vec![Mode(0)])
        .want("/big-ids", vec![Owner(3_000_000, 2_500_000)])
        .want("/sticky-owned", vec![Mode(0o1770), Owner(7, 8)]),
        case(
            "mtime",
            vec![
                vec![
                    dir("t").mtime(1_234_567_890),
                    file("t/epoch", "0").mtime(0),
                    file("t/one", "1").mtime(1),
                    file("t/future", "2100").mtime(4_102_444_800),
                    file("t/base256", "2286").mtime(10_000_000_000),
                    symlink("t/link", "one").mtime(1_500_000_000),
                    dir("u").mtime(1_000_000_000),
                ],
                vec![dir("u").mtime(1_100_000_000), file("u/new", "n").mtime(42)],
            ],
        )
        .want("/t/epoch", vec![Mtime(0)])
        .want("/t/one", vec![Mtime(1)])
        .want("/t/future", vec![Mtime(4_102_444_800)])
        .want("/t/base256", vec![Mtime(10_000_000_000)])
        .want("/t/link", vec![Mtime(1_500_000_000)])
        .want("/u", vec![Mtime(1_100_000_000)])
        .want("/u/new", vec![Mtime(42)]),
        case(
            "devices",
            vec![vec![
                dir("dev"),
                chardev("dev/null", 1, 3),
                chardev("dev/tty5", 4, 5).mode(0o620).owner(0, 5),
                blockdev("dev/loop7", 7, 7),
                blockdev("dev/nvme", 259, 1),
                fifo("dev/fifo").mode(0o600).owner(10, 10),
            ]],
        )
        .want("/dev/null", vec![Dev('c', 1, 3), Mode(0o666)])
        .want("/dev/tty5", vec![Dev('c', 4, 5), Owner(0, 5)])
        .want("/dev/loop7", vec![Dev('b', 7, 7)])
        .want("/dev/nvme", vec![Dev('b', 259, 1)])
        .want("/dev/fifo", vec![Fifo, Mode(0o600), Owner(10, 10)]),
        case(
            "duplicates",
            vec![vec![
                file("f", "one"),
                file("f", "two"),
                dir("d").mode(0o700),
                dir("d").mode(0o755).owner(1, 1),
                file("s", "file"),
                symlink("s", "f"),
                symlink("t", "x"),
                file("t", "final"),
                file("h", "h1"),
                hardlink("hl", "h"),
                file("h", "h2"),
                dir("e"),
                file("e/child", "c"),
                file("e", "now a file"),
            ]],
        )
        .want("/f", vec![File(b"two")])
        .want("/d", vec![Dir, Mode(0o755), Owner(1, 1)])
        .want("/s", vec![Symlink("f")])
        .want("/t", vec![File(b"final")])
        .want("/hl", vec![File(b"h1"), NotLinked])
        .want("/h", vec![File(b"h2"), NotLinked])
        .want("/e", vec![File(b"now a file")])
        .want("/e/child", vec![Absent])
        .docker_na("docker load refuses a layer naming a path twice"),
        combo_wants(case("gzip", combo()).comp(vec![Comp::Gzip])),
        combo_wants(case("zstd", combo()).comp(vec![Comp::Zstd])),
        combo_wants(case("mixed-compression", combo()).comp(vec![
            Comp::Gzip,
            Comp::None,
            Comp::Zstd,
        ])),
        case(
            "empty-layer",
            vec![
                vec![],
                vec![dir("a"), file("a/f", "f")],
                vec![],
                vec![dir("a"), file("a/g", "g")],
                vec![],
            ],
        )
        .want("/a/f", vec![File(b"f")])
        .want("/a/g", vec![File(b"g")]),
    ]
}

/// Checks the spec expectations on a snapshot; returns the failures as (want, message).
fn check_wants(wants: &[(&'static str, Vec<Want>)], s: &Snapshot) -> Vec<(String, String)> {
    let mut bad = Vec::new();
    for (path, ws) in wants {
        let info = s.get(*path);
        for w in ws {
            let ok = match (w, info) {
                (Absent, None) => true,
                (Absent, Some(_)) | (_, None) => false,
                (File(c), Some(i)) => {
                    i.kind == 'f' && i.sha256 == common::sha256_hex(c) && i.size == c.len() as u64
                }
                (Dir, Some(i)) => i.kind == 'd',
                (Symlink(t), Some(i)) => i.kind == 'l' && i.link == *t,
                (LinkedTo(o), Some(i)) => i.links.contains(&o.to_string()),
                (NotLinked, Some(i)) => i.links.is_empty(),
                (Mode(m), Some(i)) => i.mode == *m,
                (Owner(u, g), Some(i)) => i.uid == *u && i.gid == *g,
                (Mtime(t), Some(i)) => i.mtime == *t,
                (Xattr(k, v), Some(i)) => i.xattrs.get(*k) == Some(&hex::encode(v)),
                (NoXattrs, Some(i)) => i.xattrs.is_empty(),
                (Dev(k, a, b), Some(i)) => i.kind == *k && i.dev == (*a, *b),
                (Fifo, Some(i)) => i.kind == 'p',
            };
            if !ok {
                let want = format!("{path}: want {w:?}");
                let got = info.map_or("nothing".to_string(), |i| i.to_string());
                bad.push((want.clone(), format!("{want}, got {got}")));
            }
        }
    }
    bad
}

/// One oracle's verdict on one case.
#[derive(Debug, Clone)]
enum Verdict {
    Pass,
    Fail(Vec<String>),
    NotApplicable(String),
}

impl Verdict {
    fn cell(&self) -> String {
        match self {
            Verdict::Pass => "pass".into(),
            Verdict::Fail(v) => format!("FAIL ({})", v.len()),
            Verdict::NotApplicable(_) => "n/a".into(),
        }
    }
    fn from_diffs(v: Vec<String>) -> Verdict {
        if v.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail(v)
        }
    }
}

struct Outcome {
    name: &'static str,
    umoci: Verdict,
    docker: Verdict,
    spec: Verdict,
    /// What an oracle could not show (so the spec was judged on whittle's layer alone).
    notes: Vec<String>,
    seconds: f64,
}

/// Which fields the Docker export can be compared on. All of them: moby's export writes only
/// the security.capability xattr (pkg/archive reads no other), so other xattrs are absent on
/// both sides and are judged by umoci and the spec check instead.
fn docker_compare() -> Compare {
    Compare::default()
}

/// The same image with every layer stored uncompressed: same layer tars, same diff_ids. For
/// an oracle that cannot read zstd (umoci 0.4, Docker < 23).
fn plain_twin(blobs: &[Blob]) -> Image {
    Image::new(
        blobs
            .iter()
            .map(|b| Blob::from_tar(b.tar.clone(), Comp::None))
            .collect(),
    )
}

/// Spec checks on an oracle's view of whittle's output. A want the same oracle cannot show
/// for the original either (umoci's 32-bit mtimes, Docker's xattrs) is not held against
/// whittle; it goes into `notes`.
fn spec_on_view(
    c: &Case,
    oracle: &str,
    own: &Snapshot,
    orig: &Snapshot,
    squashed: &Snapshot,
    fail: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let cannot: Vec<String> = check_wants(&c.want, orig)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // An oracle that showed nothing would agree with anything: it must show every path
    // whittle wrote (but Docker's own init layer paths).
    for p in own.keys() {
        if !squashed.contains_key(p) && !DOCKER_INIT_PATHS.contains(&p.as_str()) {
            fail.push(format!("{oracle} view of whittle's output lacks {p}"));
        }
    }
    for (k, msg) in check_wants(&c.want, squashed) {
        if cannot.contains(&k) {
            notes.push(format!(
                "{oracle} cannot show it (not on the original either): {msg}"
            ));
        } else {
            fail.push(format!("{oracle} view of whittle's output: {msg}"));
        }
    }
}

fn run_case(c: &Case, docker_zstd: bool) -> Outcome {
    let elapsed = timer();
    let dir = tempdir(&format!("conf-{}", c.name));
    let d = dir.path();
    let blobs: Vec<Blob> = c
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| Blob::from_entries(l, c.comp[i % c.comp.len()]))
        .collect();
    let has_zstd = blobs.iter().any(|b| b.comp == Comp::Zstd);
    let image = Image::new(blobs.clone());
    let orig_oci = d.join("orig.oci");
    image.write_oci(&orig_oci, "t");
    let orig_tag = unique(&format!("whittle-test/{}:orig", c.name));
    let orig_tar = d.join("orig.tar");
    image.write_docker_archive(&orig_tar, &orig_tag);

    // whittle: OCI in → OCI out, docker-archive in → docker-archive out.
    let sq_oci = d.join("sq.oci");
    let sq_tar = d.join("sq.tar");
    let sq_tag = orig_tag.replace(":orig-", ":squashed-");
    squash_ok(&os![
        format!("oci:{}:t", orig_oci.display()),
        format!("oci:{}:t", sq_oci.display())
    ]);
    squash_ok(&os![
        format!("docker-archive:{}", orig_tar.display()),
        format!("docker-archive:{}", sq_tar.display()),
        "--tag",
        sq_tag
    ]);

    // spec: on whittle's layer itself, and both readers give the same layer.
    let (manifest, oci_config) = common::oci_meta(&sq_oci);
    let (entry, tar_config) = common::docker_archive_meta(&sq_tar);
    let mut spec_fail = Vec::new();
    let mut notes = Vec::new();
    let layers = manifest["layers"].as_array().unwrap();
    if layers.len() != 1 || entry["Layers"].as_array().unwrap().len() != 1 {
        spec_fail.push(format!(
            "expected one layer, got {} (oci) / {} (docker-archive)",
            layers.len(),
            entry["Layers"].as_array().unwrap().len()
        ));
    }
    if oci_config["rootfs"]["diff_ids"] != tar_config["rootfs"]["diff_ids"] {
        spec_fail.push(format!(
            "the oci and docker-archive readers gave different layers: {} vs {}",
            oci_config["rootfs"]["diff_ids"], tar_config["rootfs"]["diff_ids"]
        ));
    }
    let layer_hex = layers[0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let layer_file = std::fs::File::open(sq_oci.join("blobs/sha256").join(&layer_hex)).unwrap();
    let own = snap::from_tar(layer_file);
    for (_, f) in check_wants(&c.want, &own) {
        spec_fail.push(format!("whittle's layer: {f}"));
    }

    // umoci (0.4 cannot read zstd layers: it gets the uncompressed twin of the original).
    let umoci_src = if has_zstd {
        let p = d.join("orig-plain.oci");
        plain_twin(&blobs).write_oci(&p, "t");
        p
    } else {
        orig_oci.clone()
    };
    let umoci = match (
        umoci_view(&umoci_src, "t", &d.join("u-orig")),
        umoci_view(&sq_oci, "t", &d.join("u-sq")),
    ) {
        (Ok(want), Ok(got)) => {
            spec_on_view(c, "umoci", &own, &want, &got, &mut spec_fail, &mut notes);
            Verdict::from_diffs(snap::diff(&want, &got, Compare::default()))
        }
        (Err(e), _) => Verdict::Fail(vec![format!("oracle failed on the original: {e}")]),
        (_, Err(e)) => Verdict::Fail(vec![format!("on whittle's output: {e}")]),
    };

    // docker (< 23 cannot read zstd layers: the uncompressed twin again).
    let docker_src = if has_zstd && !docker_zstd {
        let p = d.join("orig-plain.tar");
        plain_twin(&blobs).write_docker_archive(&p, &orig_tag);
        p
    } else {
        orig_tar.clone()
    };
    let docker = if let Some(why) = c.docker_na {
        // Prove the premise each time: the engine refuses the original, or its view of the
        // original breaks the spec. If it ever handles the case, it must judge it.
        match docker_view(&docker_src, &orig_tag) {
            Err(e) => Verdict::NotApplicable(format!("{why} ({e})")),
            Ok(v) => match check_wants(&c.want, &v).first() {
                Some((_, f)) => {
                    Verdict::NotApplicable(format!("{why} (the engine's own view: {f})"))
                }
                None => Verdict::Fail(vec![format!(
                    "marked n/a ({why}) but the engine handles the original: judge it"
                )]),
            },
        }
    } else {
        match (
            docker_view(&docker_src, &orig_tag),
            docker_view(&sq_tar, &sq_tag),
        ) {
            (Ok(want), Ok(got)) => {
                spec_on_view(c, "docker", &own, &want, &got, &mut spec_fail, &mut notes);
                Verdict::from_diffs(snap::diff(&want, &got, docker_compare()))
            }
            (Err(e), _) => Verdict::Fail(vec![format!("oracle failed on the original: {e}")]),
            (_, Err(e)) => Verdict::Fail(vec![format!("on whittle's output: {e}")]),
        }
    };

    Outcome {
        name: c.name,
        umoci,
        docker,
        spec: Verdict::from_diffs(spec_fail),
        notes,
        seconds: elapsed(),
    }
}

fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "\nconformance corpus: {} cases × oracles\n{:<28} {:<10} {:<10} {:<10} {:>6}\n",
        outcomes.len(),
        "case",
        "umoci",
        "docker",
        "spec",
        "secs"
    ));
    for o in outcomes {
        s.push_str(&format!(
            "{:<28} {:<10} {:<10} {:<10} {:>6.1}\n",
            o.name,
            o.umoci.cell(),
            o.docker.cell(),
            o.spec.cell(),
            o.seconds
        ));
    }
    let mut notes = String::new();
    for o in outcomes {
        for (oracle, v) in [
            ("umoci", &o.umoci),
            ("docker", &o.docker),
            ("spec", &o.spec),
        ] {
            match v {
                Verdict::Fail(lines) => {
                    notes.push_str(&format!("  {} / {oracle}:\n", o.name));
                    for l in lines.iter().take(40) {
                        notes.push_str(&format!("    {l}\n"));
                    }
                    if lines.len() > 40 {
                        notes.push_str(&format!("    … {} more\n", lines.len() - 40));
                    }
                }
                Verdict::NotApplicable(why) => {
                    notes.push_str(&format!("  {} / {oracle}: n/a: {why}\n", o.name))
                }
                Verdict::Pass => {}
            }
        }
        for n in &o.notes {
            notes.push_str(&format!("  {} / note: {n}\n", o.name));
        }
    }
    if !notes.is_empty() {
        s.push_str("notes and failures:\n");
        s.push_str(&notes);
    }
    s
}

#[test]
fn conformance_corpus() {
    require_docker();
    common::require("umoci");
    let only: Option<Vec<String>> = std::env::var("WHITTLE_CASES")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let all = cases();
    let names: Vec<&str> = all.iter().map(|c| c.name).collect();
    if let Some(only) = &only {
        for n in only {
            assert!(
                names.contains(&n.as_str()),
                "no case {n:?}; cases: {names:?}"
            );
        }
    }
    let selected: Vec<&Case> = all
        .iter()
        .filter(|c| only.as_ref().is_none_or(|o| o.iter().any(|n| n == c.name)))
        .collect();
    let docker_zstd = docker_major_version() >= 23;

    // A few cases at a time: most of the time goes to waiting for docker and umoci.
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<usize, Outcome>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(c) = selected.get(i) else { break };
                let o = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_case(c, docker_zstd)
                }))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    let f = Verdict::Fail(vec![format!("case panicked: {msg}")]);
                    Outcome {
                        name: c.name,
                        umoci: f.clone(),
                        docker: f.clone(),
                        spec: f,
                        notes: Vec::new(),
                        seconds: 0.0,
                    }
                });
                results.lock().unwrap().insert(i, o);
            });
        }
    });
    let outcomes: Vec<Outcome> = results.into_inner().unwrap().into_values().collect();
    let t = table(&outcomes);
    report(&t);
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-table.txt"),
        &t,
    );
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| {
            [&o.umoci, &o.docker, &o.spec]
                .iter()
                .any(|v| matches!(v, Verdict::Fail(_)))
        })
        .map(|o| o.name)
        .collect();
    assert!(failed.is_empty(), "failing cases: {failed:?}\n{t}");
    // Every case must have been judged by at least one engine besides the spec.
    for o in &outcomes {
        assert!(
            matches!(o.umoci, Verdict::Pass) || matches!(o.docker, Verdict::Pass),
            "{}: no independent oracle judged it",
            o.name
        );
    }
}

/// Full-tree comparison of Docker's views of the fixture and of whittle's output. The
/// fixture's second layer (made by `umoci repack`) does not list some parent directories of
/// what it adds; Docker creates those in the layer's own directory at load time, so their
/// mtime in the original's view is the load time, not anything in the image (whittle and
/// umoci keep the lower layer's). Those mtimes are left out; everything else is compared.
fn nginx_diff(src: &Path, want: &Snapshot, got: &Snapshot) -> (Vec<String>, usize) {
    let newest = common::max_layer_mtime(src);
    let engine_made = want
        .values()
        .filter(|i| i.kind == 'd' && i.mtime > newest)
        .count();
    let c = Compare {
        engine_dirs_after: Some(newest),
        ..docker_compare()
    };
    (snap::diff(want, got, c), engine_made)
}

/// The real nginx fixture: whittle's squash, as the Docker Engine sees it, is the original.
#[test]
fn nginx_squash_equals_docker_view_of_original() {
    require_docker();
    let fix = common::fixtures();
    let dir = tempdir("conf-nginx");
    let out = dir.path().join("sq.tar");
    let tag = unique("whittle-test/nginx:squashed");
    let t = timer();
    squash_ok(&os![
        format!("docker-archive:{}", fix.join("nginx.tar").display()),
        format!("docker-archive:{}", out.display()),
        "--tag",
        tag
    ]);
    let squash_secs = t();
    // The original is loaded under its own fixture tag; only the squashed tag is ours.
    let orig = docker_load(&fix.join("nginx.tar"), "whittle-fixture/nginx:latest")
        .expect("docker load of the nginx fixture");
    let want = common::engines::docker_export(&orig.name).expect("export of the original");
    std::mem::forget(orig); // the fixture tag stays for other tests and users
    let got = docker_view(&out, &tag).expect("docker view of whittle's squash");
    let (d, engine_made) = nginx_diff(&fix.join("nginx.tar"), &want, &got);
    report(&format!(
        "\nnginx fixture: {} paths compared with docker export of the original ({engine_made} \
         directories with engine-made mtimes), squash {squash_secs:.1}s, {} differences\n",
        want.len(),
        d.len()
    ));
    assert!(
        d.is_empty(),
        "{} differences, first ones:\n{}",
        d.len(),
        d.iter().take(50).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(want.len() > 5000, "suspiciously few paths: {}", want.len());
}

/// `--from-layer 1` keeps layer 1 byte for byte and the whole still equals the original.
#[test]
fn nginx_from_layer_1_keeps_lower_layer() {
    require_docker();
    let fix = common::fixtures();
    let dir = tempdir("conf-nginx-from1");
    let src = fix.join("nginx.tar");
    let out = dir.path().join("sq.tar");
    let tag = unique("whittle-test/nginx:from1");
    squash_ok(&os![
        format!("docker-archive:{}", src.display()),
        format!("docker-archive:{}", out.display()),
        "--from-layer",
        "1",
        "--tag",
        tag
    ]);
    let (src_entry, src_config) = common::docker_archive_meta(&src);
    let (out_entry, out_config) = common::docker_archive_meta(&out);
    let src_digests = common::archive_digests(&src);
    let out_digests = common::archive_digests(&out);
    let src_l0 = &src_digests[src_entry["Layers"][0].as_str().unwrap()];
    let out_l0 = &out_digests[out_entry["Layers"][0].as_str().unwrap()];
    assert_eq!(src_l0, out_l0, "layer 1 (size, sha256) must be unchanged");
    assert_eq!(
        src_config["rootfs"]["diff_ids"][0],
        out_config["rootfs"]["diff_ids"][0]
    );
    assert_eq!(out_entry["Layers"].as_array().unwrap().len(), 2);
    // The OCI output keeps the same blob (the fixture's OCI layout stores it gzip'd: compare
    // there blob for blob too).
    let oci_out = dir.path().join("sq.oci");
    squash_ok(&os![
        format!("oci:{}:latest", fix.join("nginx.oci").display()),
        format!("oci:{}:t", oci_out.display()),
        "--from-layer",
        "1"
    ]);
    let (src_manifest, _) = common::oci_meta(&fix.join("nginx.oci"));
    let (out_manifest, _) = common::oci_meta(&oci_out);
    assert_eq!(
        src_manifest["layers"][0], out_manifest["layers"][0],
        "OCI layer 1 descriptor (digest, size, media type) must be unchanged"
    );

    let orig = docker_load(&src, "whittle-fixture/nginx:latest").expect("docker load");
    let want = common::engines::docker_export(&orig.name).expect("export of the original");
    std::mem::forget(orig);
    let got = docker_view(&out, &tag).expect("docker view of whittle's output");
    let (d, _) = nginx_diff(&src, &want, &got);
    assert!(
        d.is_empty(),
        "{} differences, first ones:\n{}",
        d.len(),
        d.iter().take(50).cloned().collect::<Vec<_>>().join("\n")
    );
}
