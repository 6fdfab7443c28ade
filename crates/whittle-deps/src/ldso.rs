//! An emulation of the dynamic loader's library search: which files glibc's `ld.so` (or
//! musl's) would map for a program, found from the image alone.
//!
//! Why emulate rather than run `ldd`: the image may not contain `ldd`, may be for another
//! architecture, and running its binaries is what static evidence must avoid. The
//! emulation follows glibc 2.36 `elf/dl-load.c` (`_dl_map_object`, `open_path`,
//! `open_verify`) and `elf/dl-deps.c` (breadth-first loading):
//!
//! 1. names containing `/` are opened as paths (after `$ORIGIN`/`$LIB`/`$PLATFORM`
//!    expansion), relative ones against the working directory;
//! 2. a name matching an already loaded object (a name it was loaded under, or its
//!    `DT_SONAME`) is that object — including ld.so itself, loaded first;
//! 3. otherwise the search: `DT_RPATH` of the loading object, of *its* loader, and so on up
//!    to the executable, then the executable's `DT_RPATH` (none of which is used when the
//!    loading object has `DT_RUNPATH`); `LD_LIBRARY_PATH` from the image's `Env`; the loading
//!    object's `DT_RUNPATH`; the directories of `/etc/ld.so.conf` (standing in for
//!    `/etc/ld.so.cache`, see [`crate::ldconf`]); the loader's built-in system directories
//!    (skipped with `DF_1_NODEFLIB`);
//! 4. in each directory, the glibc-hwcaps subdirectories and legacy hwcap subdirectories
//!    before the directory itself;
//! 5. a file of the wrong ELF class or machine is skipped and the search goes on; any
//!    other unusable file ends it with an error (as ld.so does);
//! 6. the same file reached under another name is the same object (ld.so compares
//!    device and inode; the view compares canonical paths).
//!
//! The loader's system directories and `$LIB` are read from the image's own ld.so (glibc
//! stores them as plain strings), so a Fedora image gets `/lib64:/usr/lib64` and a Debian
//! one `/lib/x86_64-linux-gnu:...` without a table of distributions.
//!
//! Hardware capabilities policy: the target CPU is unknown, so the search emulates the
//! most capable one (x86-64-v4: every glibc-hwcaps subdirectory is searched first, which is
//! what `ldd` prints on such a CPU) and, when the library it finds sits in a
//! CPU-dependent subdirectory, keeps searching until a file every CPU can use is found;
//! those fallbacks are loaded too, marked as [`LoadedObject::variant_of`], so a slim image
//! runs on any CPU the fat one ran on. Legacy hwcap subdirectories (`tls`, `x86_64`, ...) are
//! searched only for loaders that still have them (glibc < 2.37, detected from the ld.so).
//!
//! musl: `LD_LIBRARY_PATH`, then `DT_RUNPATH`/`DT_RPATH` (musl treats them alike) of the
//! loading object and each of its loaders, then `/etc/ld-musl-ARCH.path` or
//! `/lib:/usr/local/lib:/usr/lib`; `libc.so`, `libc.musl-*.so.1`, `libpthread.so.0` and the
//! other names musl implements itself resolve to the loader; only `$ORIGIN` is expanded.

use std::collections::HashMap;
use std::rc::Rc;

use serde::Serialize;

use crate::analyzer::{Analyzer, FileClass};
use crate::closure::{MissingKind, Problem, ProblemKind};
use crate::config::ImageConfig;
use crate::elf::{DepKind, ElfClass, ElfInfo, DF_1_NODEFLIB, DF_1_PIE, ET_DYN, ET_EXEC};
use crate::error::FsError;
use crate::ldconf;
use crate::resolve::{absolutize, file_name, parent, Resolved};

/// Which dynamic loader implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoaderFlavor {
    /// GNU libc `ld-linux*.so.*`.
    Glibc,
    /// musl `ld-musl-ARCH.so.1`.
    Musl,
}

/// What the analysis knows about one architecture's loader.
struct Arch {
    machine: u16,
    class: ElfClass,
    glibc_interp: &'static str,
    musl_arch: &'static str,
    platform: &'static str,
    triplet: &'static str,
    hwcaps: &'static [&'static str],
    legacy: &'static [&'static str],
}

const ARCHES: &[Arch] = &[
    Arch {
        machine: 62,
        class: ElfClass::Elf64,
        glibc_interp: "/lib64/ld-linux-x86-64.so.2",
        musl_arch: "x86_64",
        platform: "x86_64",
        triplet: "x86_64-linux-gnu",
        hwcaps: &["x86-64-v4", "x86-64-v3", "x86-64-v2"],
        // What glibc 2.36 searches on any x86-64 CPU (AT_PLATFORM x86_64, HWCAP x86_64, tls).
        legacy: &[
            "tls/x86_64/x86_64",
            "tls/x86_64",
            "tls",
            "x86_64/x86_64",
            "x86_64",
        ],
    },
    Arch {
        machine: 3,
        class: ElfClass::Elf32,
        glibc_interp: "/lib/ld-linux.so.2",
        musl_arch: "i386",
        platform: "i686",
        triplet: "i386-linux-gnu",
        hwcaps: &[],
        legacy: &["tls/i686", "tls", "i686"],
    },
    Arch {
        machine: 183,
        class: ElfClass::Elf64,
        glibc_interp: "/lib/ld-linux-aarch64.so.1",
        musl_arch: "aarch64",
        platform: "aarch64",
        triplet: "aarch64-linux-gnu",
        hwcaps: &[],
        legacy: &["tls"],
    },
    Arch {
        machine: 40,
        class: ElfClass::Elf32,
        glibc_interp: "/lib/ld-linux-armhf.so.3",
        musl_arch: "armhf",
        platform: "v7l",
        triplet: "arm-linux-gnueabihf",
        hwcaps: &[],
        legacy: &["tls"],
    },
    Arch {
        machine: 21,
        class: ElfClass::Elf64,
        glibc_interp: "/lib64/ld64.so.2",
        musl_arch: "powerpc64le",
        platform: "power8",
        triplet: "powerpc64le-linux-gnu",
        hwcaps: &["power10", "power9"],
        legacy: &["tls"],
    },
    Arch {
        machine: 22,
        class: ElfClass::Elf64,
        glibc_interp: "/lib/ld64.so.1",
        musl_arch: "s390x",
        platform: "z900",
        triplet: "s390x-linux-gnu",
        hwcaps: &["z16", "z15", "z14", "z13"],
        legacy: &["tls"],
    },
    Arch {
        machine: 243,
        class: ElfClass::Elf64,
        glibc_interp: "/lib/ld-linux-riscv64-lp64d.so.1",
        musl_arch: "riscv64",
        platform: "riscv64",
        triplet: "riscv64-linux-gnu",
        hwcaps: &[],
        legacy: &["tls"],
    },
];

fn arch_for(machine: u16, class: ElfClass) -> Option<&'static Arch> {
    ARCHES
        .iter()
        .find(|a| a.machine == machine && a.class == class)
}

/// The loader a program runs under, as far as library search is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoaderInfo {
    /// glibc or musl.
    pub flavor: LoaderFlavor,
    /// The loader's path as the program names it (`PT_INTERP`), or the architecture's
    /// standard loader for objects without `PT_INTERP`.
    pub interp: String,
    /// Built-in search directories, in order.
    pub system_dirs: Vec<String>,
    /// What `$LIB` expands to.
    pub lib: String,
    /// What `$PLATFORM` expands to (the kernel's base `AT_PLATFORM` for the machine).
    pub platform: String,
    /// CPU-dependent subdirectories, searched first (e.g. `glibc-hwcaps/x86-64-v3`).
    pub hwcaps_subdirs: Vec<String>,
    /// Subdirectories searched on every CPU before the directory itself (legacy hwcaps).
    pub legacy_subdirs: Vec<String>,
}

/// How an object came to be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoadVia {
    /// The program itself.
    Main,
    /// The dynamic loader (`PT_INTERP`), loaded before anything else.
    Interp,
    /// A dependency entry (`DT_NEEDED`, `DT_FILTER`, `DT_AUXILIARY`).
    Dep {
        /// Which kind of entry.
        dep: DepKind,
    },
    /// `LD_PRELOAD` or `/etc/ld.so.preload`.
    Preload,
    /// An NSS module, loaded by libc at run time.
    Nss {
        /// The nsswitch.conf service.
        service: String,
    },
}

/// One object of a program's link map.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedObject {
    /// The name it was first asked for by (`DT_NEEDED` string, preload name, or path).
    pub name: String,
    /// The path the loader opened (its `l_name`), e.g. `/lib/x86_64-linux-gnu/libc.so.6`.
    pub path: String,
    /// The canonical path in the image.
    pub canonical: String,
    /// How it was loaded.
    pub via: LoadVia,
    /// Index of the object whose dependency brought it in (for the loader: the first
    /// object that needs it by name).
    pub needed_by: Option<usize>,
    /// For hwcaps fallbacks: index of the object a more capable CPU loads instead.
    pub variant_of: Option<usize>,
    /// True once something depends on it (the loader itself is listed by `ldd` only then).
    pub referenced: bool,
    /// False for objects not in the startup link map of the emulated CPU: hwcaps
    /// fallbacks and what only they need, NSS modules and their dependencies.
    pub at_startup: bool,
    #[serde(skip)]
    pub(crate) resolved: Rc<Resolved>,
    #[serde(skip)]
    pub(crate) info: Option<Rc<ElfInfo>>,
    /// Other paths the same file was opened under (each one's symlinks are needed too).
    #[serde(skip)]
    pub(crate) aliases: Vec<Rc<Resolved>>,
    #[serde(skip)]
    names: Vec<String>,
    #[serde(skip)]
    origin: Option<String>,
    #[serde(skip)]
    loader: Option<usize>,
}

/// A library the loader could not find or use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingLib {
    /// The name asked for.
    pub name: String,
    /// Index of the object that asked.
    pub needed_by: usize,
    /// What kind of reference.
    pub kind: MissingKind,
    /// False when the program starts without it.
    pub required: bool,
    /// Why, when more than "not found".
    pub detail: Option<String>,
}

/// The link map of one program, as the loader would build it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The loader.
    pub loader: LoaderInfo,
    /// Objects in load order; `objects[0]` is the program.
    pub objects: Vec<LoadedObject>,
    /// Libraries not found or not loadable.
    pub missing: Vec<MissingLib>,
    /// Per-file problems met on the way.
    pub problems: Vec<Problem>,
}

impl LoadReport {
    /// The canonical paths `ldd` lists for the program on a CPU with every hwcaps level:
    /// the objects loaded at startup, without the program itself, hwcaps fallbacks, and
    /// the loader unless something depends on it.
    pub fn ldd_set(&self) -> std::collections::BTreeSet<String> {
        self.objects
            .iter()
            .filter(|o| o.at_startup && o.variant_of.is_none())
            .filter(|o| match o.via {
                LoadVia::Main => false,
                LoadVia::Interp => o.referenced,
                _ => true,
            })
            .map(|o| o.canonical.clone())
            .collect()
    }
}

/// musl implements these libraries itself (`ldso/dynlink.c`, `load_library`).
const MUSL_RESERVED: &[&str] = &["c.", "pthread.", "rt.", "m.", "dl.", "util.", "xnet."];

fn musl_reserved(name: &str) -> bool {
    name.strip_prefix("lib")
        .is_some_and(|rest| MUSL_RESERVED.iter().any(|r| rest.starts_with(r)))
}

/// A candidate file found by a search.
struct Hit {
    path: String,
    resolved: Rc<Resolved>,
    info: Rc<ElfInfo>,
}

enum SearchEnd {
    /// Nothing usable; `other_class` tells a wrong-class file was skipped.
    NotFound { other_class: Option<String> },
    /// ld.so would stop with an error for this file.
    Fatal(Problem),
}

/// Environment of one load.
pub(crate) struct LoadEnv {
    pub cwd: String,
    pub ld_library_path: Option<String>,
    pub ld_preload: Option<String>,
}

impl LoadEnv {
    pub(crate) fn from_config(config: &ImageConfig) -> LoadEnv {
        LoadEnv {
            cwd: config.cwd(),
            ld_library_path: config
                .env_var("LD_LIBRARY_PATH")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            ld_preload: config
                .env_var("LD_PRELOAD")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }
    }
}

/// Loader-independent caches kept by the [`Analyzer`].
#[derive(Default)]
pub(crate) struct LdCaches {
    loaders: HashMap<(String, u16, ElfClass), Rc<LoaderInfo>>,
    conf_dirs: Option<Rc<Vec<String>>>,
    musl_paths: HashMap<String, Rc<Vec<String>>>,
    nss_services: Option<Rc<Vec<String>>>,
    preload_file: Option<Rc<Vec<String>>>,
}

/// Finds the loader's built-in directories in its own bytes: glibc keeps them as one
/// string constant of NUL-separated absolute directory names ending in `/`.
fn scan_system_dirs(bytes: &[u8]) -> Option<Vec<String>> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'/' && (i == 0 || bytes[i - 1] == 0) {
            let mut dirs = Vec::new();
            let mut j = i;
            while j < bytes.len() && bytes[j] == b'/' {
                let end = match bytes[j..].iter().position(|&b| b == 0) {
                    Some(e) => j + e,
                    None => break,
                };
                let s = &bytes[j..end];
                let ok = s.len() > 1
                    && s.ends_with(b"/")
                    && s.iter().all(|b| b.is_ascii_graphic())
                    && s.windows(3).any(|w| w == b"lib");
                if !ok {
                    break;
                }
                dirs.push(String::from_utf8_lossy(&s[..s.len() - 1]).into_owned());
                j = end + 1;
            }
            if dirs.len() >= 2 {
                return Some(dirs);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    None
}

/// Finds `$LIB`'s expansion: in glibc's ld.so the string follows the DST names.
fn scan_lib_token(bytes: &[u8]) -> Option<String> {
    let marker = b"ORIGIN\0PLATFORM\0LIB\0";
    let pos = bytes.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let end = bytes[pos..].iter().position(|&b| b == 0)? + pos;
    let s = &bytes[pos..end];
    (!s.is_empty()
        && s.len() < 64
        && s.iter().all(|b| b.is_ascii_graphic())
        && !s.starts_with(b"/"))
    .then(|| String::from_utf8_lossy(s).into_owned())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Expands `$ORIGIN`, `$LIB`, `$PLATFORM` (and `${...}` forms). `None` when a needed
/// expansion is unavailable (ld.so then drops the path element).
fn expand_dst(
    s: &str,
    origin: Option<&str>,
    lib: &str,
    platform: &str,
    musl: bool,
) -> Option<String> {
    if !s.contains('$') {
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(s.len() + 32);
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(e) => (&inner[..e], e + 2),
                None => ("", 0),
            }
        } else {
            let e = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..e], e)
        };
        let value = match name {
            "ORIGIN" => Some(origin?.to_owned()),
            "LIB" if !musl => Some(lib.to_owned()),
            "PLATFORM" if !musl => Some(platform.to_owned()),
            _ => None,
        };
        match value {
            Some(v) if len > 0 => {
                out.push_str(&v);
                rest = &after[len..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// Splits a search path (`:` separated; `;` too for LD_LIBRARY_PATH) and expands each
/// element; empty elements mean the working directory.
fn split_path_list(
    list: &str,
    seps: &[char],
    origin: Option<&str>,
    loader: &LoaderInfo,
    cwd: &str,
) -> Vec<String> {
    let musl = loader.flavor == LoaderFlavor::Musl;
    let mut out: Vec<String> = Vec::new();
    for elem in list.split(seps) {
        let Some(e) = expand_dst(elem, origin, &loader.lib, &loader.platform, musl) else {
            continue;
        };
        let e = if e.is_empty() {
            cwd.to_owned()
        } else {
            absolutize(&e, cwd)
        };
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

impl Analyzer<'_> {
    /// The loader for a program: its `PT_INTERP` if it has one, else the standard loader of
    /// its architecture that exists in the image (glibc first, then musl).
    pub(crate) fn loader_for(&mut self, info: &ElfInfo) -> Rc<LoaderInfo> {
        let arch = arch_for(info.machine, info.class);
        let interp = match &info.interp {
            Some(i) => i.clone(),
            None => {
                let glibc = arch.map(|a| a.glibc_interp).unwrap_or("/lib/ld-linux.so.2");
                let musl = arch.map(|a| format!("/lib/ld-musl-{}.so.1", a.musl_arch));
                if self.res.resolve(glibc, "/", true).is_ok() {
                    glibc.to_owned()
                } else if let Some(m) = musl.filter(|m| self.res.resolve(m, "/", true).is_ok()) {
                    m
                } else {
                    glibc.to_owned()
                }
            }
        };
        let key = (interp.clone(), info.machine, info.class);
        if let Some(l) = self.ld.loaders.get(&key) {
            return l.clone();
        }
        let l = Rc::new(self.describe_loader(&interp, arch));
        self.ld.loaders.insert(key, l.clone());
        l
    }

    fn describe_loader(&mut self, interp: &str, arch: Option<&'static Arch>) -> LoaderInfo {
        let triplet = arch.map(|a| a.triplet).unwrap_or("");
        let base = file_name(interp);
        if let Some(rest) = base.strip_prefix("ld-musl-") {
            let musl_arch = rest.split(".so").next().unwrap_or(rest);
            let paths = self.musl_path(musl_arch);
            return LoaderInfo {
                flavor: LoaderFlavor::Musl,
                interp: interp.to_owned(),
                system_dirs: paths.to_vec(),
                lib: String::new(),
                platform: String::new(),
                hwcaps_subdirs: Vec::new(),
                legacy_subdirs: Vec::new(),
            };
        }
        // Read the image's own ld.so (bounded: ld.so is a few hundred KiB).
        let bytes = self
            .res
            .resolve(interp, "/", true)
            .ok()
            .filter(|r| r.node.is_file())
            .and_then(|r| self.res.fs().read_head(&r.path, 16 << 20).ok())
            .unwrap_or_default();
        let multiarch = !triplet.is_empty()
            && self
                .res
                .resolve(&format!("/usr/lib/{triplet}"), "/", true)
                .is_ok();
        let is64 = arch.is_none_or(|a| a.class == ElfClass::Elf64);
        let system_dirs = scan_system_dirs(&bytes).unwrap_or_else(|| {
            if multiarch {
                vec![
                    format!("/lib/{triplet}"),
                    format!("/usr/lib/{triplet}"),
                    "/lib".into(),
                    "/usr/lib".into(),
                ]
            } else if is64 {
                vec!["/lib64".into(), "/usr/lib64".into()]
            } else {
                vec!["/lib".into(), "/usr/lib".into()]
            }
        });
        let lib = scan_lib_token(&bytes).unwrap_or_else(|| {
            if multiarch {
                format!("lib/{triplet}")
            } else if is64 {
                "lib64".into()
            } else {
                "lib".into()
            }
        });
        // glibc-hwcaps exists since 2.33; legacy hwcaps subdirectories were removed in 2.37,
        // whose ld.so --help no longer has the "Legacy HWCAP" section.
        let has_hwcaps = bytes.is_empty() || contains(&bytes, b"glibc-hwcaps");
        let has_legacy = bytes.is_empty() || contains(&bytes, b"Legacy HWCAP") || !has_hwcaps;
        LoaderInfo {
            flavor: LoaderFlavor::Glibc,
            interp: interp.to_owned(),
            system_dirs,
            lib,
            platform: arch.map(|a| a.platform).unwrap_or("").to_owned(),
            hwcaps_subdirs: if has_hwcaps {
                arch.map(|a| {
                    a.hwcaps
                        .iter()
                        .map(|h| format!("glibc-hwcaps/{h}"))
                        .collect()
                })
                .unwrap_or_default()
            } else {
                Vec::new()
            },
            legacy_subdirs: if has_legacy {
                arch.map(|a| a.legacy.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        }
    }

    fn musl_path(&mut self, arch: &str) -> Rc<Vec<String>> {
        if let Some(p) = self.ld.musl_paths.get(arch) {
            return p.clone();
        }
        let file = format!("/etc/ld-musl-{arch}.path");
        let paths = match ldconf::read_text(&self.res, &file, 1 << 20) {
            Some(text) => ldconf::musl_path_file(&text),
            None => vec!["/lib".into(), "/usr/local/lib".into(), "/usr/lib".into()],
        };
        let paths = Rc::new(paths);
        self.ld.musl_paths.insert(arch.to_owned(), paths.clone());
        paths
    }

    fn conf_dirs(&mut self) -> Rc<Vec<String>> {
        if let Some(d) = &self.ld.conf_dirs {
            return d.clone();
        }
        let d = Rc::new(ldconf::ld_so_conf_dirs(&self.res));
        self.ld.conf_dirs = Some(d.clone());
        d
    }

    pub(crate) fn nss_service_list(&mut self) -> Rc<Vec<String>> {
        if let Some(s) = &self.ld.nss_services {
            return s.clone();
        }
        let s = match ldconf::read_text(&self.res, "/etc/nsswitch.conf", 1 << 20) {
            Some(text) => ldconf::nss_services(&text),
            // glibc's built-in default: files everywhere, dns for hosts.
            None => vec!["files".into(), "dns".into()],
        };
        let s = Rc::new(s);
        self.ld.nss_services = Some(s.clone());
        s
    }

    fn preload_file(&mut self) -> Rc<Vec<String>> {
        if let Some(p) = &self.ld.preload_file {
            return p.clone();
        }
        let p = Rc::new(
            ldconf::read_text(&self.res, "/etc/ld.so.preload", 1 << 20)
                .map(|t| ldconf::preload_names(&t))
                .unwrap_or_default(),
        );
        self.ld.preload_file = Some(p.clone());
        p
    }

    /// Builds the link map of the ELF program `main` (already resolved), as its loader would
    /// at startup, followed by the NSS modules glibc loads later.
    pub(crate) fn load(
        &mut self,
        main: Rc<Resolved>,
        info: Rc<ElfInfo>,
        env: &LoadEnv,
        with_nss: bool,
    ) -> LoadReport {
        let loader = self.loader_for(&info);
        let mut st = LoadState {
            loader: loader.clone(),
            objects: Vec::new(),
            missing: Vec::new(),
            problems: Vec::new(),
            main_class: info.class,
            main_machine: info.machine,
            startup: true,
            pending_variants: Vec::new(),
        };
        st.objects.push(LoadedObject {
            name: main.path.clone(),
            path: main.path.clone(),
            canonical: main.path.clone(),
            via: LoadVia::Main,
            needed_by: None,
            variant_of: None,
            referenced: false,
            at_startup: true,
            origin: Some(parent(&main.path).to_owned()),
            names: Vec::new(),
            aliases: Vec::new(),
            loader: None,
            resolved: main,
            info: Some(info.clone()),
        });

        // The loader itself is mapped before anything else; DT_NEEDED entries naming its
        // SONAME (libc.so.6 needs ld-linux-x86-64.so.2) resolve to it.
        let is_dynamic = info.interp.is_some() || info.has_dynamic;
        if is_dynamic {
            match self.res.resolve(&loader.interp, "/", true) {
                Ok(r) if r.node.is_file() => {
                    let rinfo = match &*self.classify(&r.path) {
                        FileClass::Elf(i) => Some(i.clone()),
                        _ => None,
                    };
                    let mut names = vec![loader.interp.clone()];
                    if let Some(so) = rinfo.as_ref().and_then(|i| i.soname.clone()) {
                        names.push(so);
                    }
                    st.objects.push(LoadedObject {
                        name: loader.interp.clone(),
                        path: loader.interp.clone(),
                        canonical: r.path.clone(),
                        via: LoadVia::Interp,
                        needed_by: None,
                        variant_of: None,
                        referenced: false,
                        at_startup: true,
                        origin: Some(parent(&loader.interp).to_owned()),
                        names,
                        aliases: Vec::new(),
                        loader: None,
                        resolved: r,
                        info: rinfo,
                    });
                }
                Ok(_) | Err(_) => {
                    // Reported by the closure as a missing PT_INTERP; without it nothing
                    // loads, but the search below still tells what else is needed.
                }
            }
        }

        // Preloads: LD_PRELOAD, then /etc/ld.so.preload (glibc only), searched as if
        // needed by the program.
        if is_dynamic {
            let mut preloads: Vec<String> = env
                .ld_preload
                .as_deref()
                .map(|s| {
                    s.split([' ', ':'])
                        .filter(|x| !x.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if loader.flavor == LoaderFlavor::Glibc {
                preloads.extend(self.preload_file().iter().cloned());
            }
            for name in preloads {
                self.load_one(&mut st, &name, 0, LoadVia::Preload, env);
            }
        }

        self.process_queue(&mut st, 0, env);
        // Fallbacks for lesser CPUs are loaded after the startup link map is complete, so
        // that they cannot change it (and are not mistaken for part of it).
        st.startup = false;
        self.flush_variants(&mut st, env);

        if with_nss && loader.flavor == LoaderFlavor::Glibc {
            let libc = st.objects.iter().position(|o| {
                o.variant_of.is_none()
                    && o.info
                        .as_ref()
                        .is_some_and(|i| i.soname.as_deref() == Some("libc.so.6"))
            });
            if let Some(libc) = libc {
                let first_new = st.objects.len();
                for service in self.nss_service_list().iter() {
                    let module = format!("libnss_{service}.so.2");
                    self.load_one(
                        &mut st,
                        &module,
                        libc,
                        LoadVia::Nss {
                            service: service.clone(),
                        },
                        env,
                    );
                }
                self.process_queue(&mut st, first_new, env);
                self.flush_variants(&mut st, env);
            }
        }

        LoadReport {
            loader: (*loader).clone(),
            objects: st.objects,
            missing: st.missing,
            problems: st.problems,
        }
    }

    /// Adds the hwcaps fallbacks found so far, and what they need, until none are left.
    fn flush_variants(&mut self, st: &mut LoadState, env: &LoadEnv) {
        while !st.pending_variants.is_empty() {
            let first_new = st.objects.len();
            for (name, expanded, hit, by, via, of) in std::mem::take(&mut st.pending_variants) {
                st.add_object(&name, &expanded, hit, by, via, Some(of));
            }
            self.process_queue(st, first_new, env);
        }
    }

    /// Loads the dependencies of every object from index `from` on, breadth first.
    fn process_queue(&mut self, st: &mut LoadState, from: usize, env: &LoadEnv) {
        let mut idx = from;
        while idx < st.objects.len() {
            // The loader's own dependencies are not loaded again (it has none anyway).
            if st.objects[idx].via != LoadVia::Interp {
                if let Some(info) = st.objects[idx].info.clone() {
                    for (kind, name) in &info.deps {
                        self.load_one(st, name, idx, LoadVia::Dep { dep: *kind }, env);
                    }
                }
            }
            idx += 1;
        }
    }

    /// Loads one object named `name` on behalf of object `by`.
    fn load_one(
        &mut self,
        st: &mut LoadState,
        name: &str,
        by: usize,
        via: LoadVia,
        env: &LoadEnv,
    ) -> Option<usize> {
        let loader = st.loader.clone();
        let musl = loader.flavor == LoaderFlavor::Musl;
        let (kind, required) = match &via {
            LoadVia::Dep {
                dep: DepKind::Needed,
            } => (MissingKind::Needed, true),
            LoadVia::Dep {
                dep: DepKind::Filter,
            } => (MissingKind::Filter, true),
            LoadVia::Dep {
                dep: DepKind::Auxiliary,
            } => (MissingKind::Filter, false),
            LoadVia::Preload => (MissingKind::Preload, false),
            LoadVia::Nss { .. } => (MissingKind::NssModule, false),
            LoadVia::Main | LoadVia::Interp => (MissingKind::Needed, true),
        };
        let missing = |st: &mut LoadState, detail: Option<String>| {
            st.missing.push(MissingLib {
                name: name.to_owned(),
                needed_by: by,
                kind,
                required,
                detail,
            });
        };

        if musl && musl_reserved(name) {
            if let Some(i) = st.objects.iter().position(|o| o.via == LoadVia::Interp) {
                let o = &mut st.objects[i];
                if o.needed_by.is_none() {
                    o.needed_by = Some(by);
                    o.name = name.to_owned();
                }
                o.referenced = true;
                return Some(i);
            }
        }
        let origin = st.objects[by].origin.clone();
        let Some(expanded) =
            expand_dst(name, origin.as_deref(), &loader.lib, &loader.platform, musl)
        else {
            missing(st, Some("$ORIGIN cannot be expanded".into()));
            return None;
        };

        // An object already loaded under this name (or with this SONAME) is reused.
        if let Some(i) = st.find_by_name(&expanded, musl) {
            let o = &mut st.objects[i];
            if o.via == LoadVia::Interp && o.needed_by.is_none() {
                // Remember who needs the loader by name (libc.so.6 needs ld-linux...).
                o.needed_by = Some(by);
                o.name = expanded.clone();
            }
            o.referenced = true;
            if !o.names.contains(&expanded) {
                o.names.push(expanded);
            }
            return Some(i);
        }

        let (primary, variants) = if expanded.contains('/') {
            let path = absolutize(&expanded, &env.cwd);
            match self.probe(&path, st) {
                Probe::Found(resolved, info) => (
                    Hit {
                        path,
                        resolved,
                        info,
                    },
                    Vec::new(),
                ),
                Probe::Absent | Probe::Abort => {
                    missing(st, None);
                    return None;
                }
                Probe::OtherClass(why) => {
                    missing(st, Some(why));
                    return None;
                }
                Probe::Fatal(p) => {
                    missing(st, Some(p.message.clone()));
                    st.problems.push(p);
                    return None;
                }
            }
        } else {
            match self.search(st, &expanded, by, env) {
                Ok(mut hits) => {
                    let primary = hits.remove(0);
                    (primary, hits)
                }
                Err(SearchEnd::NotFound { other_class }) => {
                    missing(st, other_class);
                    return None;
                }
                Err(SearchEnd::Fatal(p)) => {
                    missing(st, Some(p.message.clone()));
                    st.problems.push(p);
                    return None;
                }
            }
        };

        let idx = st.add_object(name, &expanded, primary, by, via.clone(), None);
        for v in variants {
            st.pending_variants
                .push((name.to_owned(), expanded.clone(), v, by, via.clone(), idx));
        }
        Some(idx)
    }

    /// Runs the search for a bare name; returns the primary hit first, then fallbacks.
    fn search(
        &mut self,
        st: &mut LoadState,
        name: &str,
        by: usize,
        env: &LoadEnv,
    ) -> Result<Vec<Hit>, SearchEnd> {
        let loader = st.loader.clone();
        let mut lists: Vec<Vec<String>> = Vec::new();
        let obj_info = |st: &LoadState, i: usize| st.objects[i].info.clone();
        match loader.flavor {
            LoaderFlavor::Glibc => {
                let by_info = obj_info(st, by);
                let by_has_runpath = by_info.as_ref().is_some_and(|i| i.runpath.is_some());
                if !by_has_runpath {
                    let mut did_main = false;
                    let mut cur = Some(by);
                    while let Some(i) = cur {
                        if let Some(rp) = obj_info(st, i).and_then(|x| x.rpath.clone()) {
                            let origin = st.objects[i].origin.clone();
                            lists.push(split_path_list(
                                &rp,
                                &[':'],
                                origin.as_deref(),
                                &loader,
                                &env.cwd,
                            ));
                            did_main |= i == 0;
                        }
                        cur = st.objects[i].loader;
                    }
                    if !did_main {
                        if let Some(rp) = obj_info(st, 0).and_then(|x| x.rpath.clone()) {
                            let origin = st.objects[0].origin.clone();
                            lists.push(split_path_list(
                                &rp,
                                &[':'],
                                origin.as_deref(),
                                &loader,
                                &env.cwd,
                            ));
                        }
                    }
                }
                if let Some(llp) = &env.ld_library_path {
                    let origin = st.objects[0].origin.clone();
                    lists.push(split_path_list(
                        llp,
                        &[':', ';'],
                        origin.as_deref(),
                        &loader,
                        &env.cwd,
                    ));
                }
                if let Some(rp) = by_info.as_ref().and_then(|i| i.runpath.clone()) {
                    let origin = st.objects[by].origin.clone();
                    lists.push(split_path_list(
                        &rp,
                        &[':'],
                        origin.as_deref(),
                        &loader,
                        &env.cwd,
                    ));
                }
                let nodeflib = by_info
                    .as_ref()
                    .is_some_and(|i| i.flags_1 & DF_1_NODEFLIB != 0);
                let conf = self.conf_dirs();
                lists.push(
                    conf.iter()
                        .filter(|d| !nodeflib || !loader.system_dirs.contains(d))
                        .cloned()
                        .collect(),
                );
                if !nodeflib {
                    lists.push(loader.system_dirs.clone());
                }
            }
            LoaderFlavor::Musl => {
                if let Some(llp) = &env.ld_library_path {
                    lists.push(split_path_list(llp, &[':', '\n'], None, &loader, &env.cwd));
                }
                let mut cur = Some(by);
                while let Some(i) = cur {
                    if let Some(info) = obj_info(st, i) {
                        if let Some(rp) = info.runpath.clone().or_else(|| info.rpath.clone()) {
                            let origin = st.objects[i].origin.clone();
                            lists.push(split_path_list(
                                &rp,
                                &[':'],
                                origin.as_deref(),
                                &loader,
                                &env.cwd,
                            ));
                        }
                    }
                    cur = st.objects[i].loader;
                }
                lists.push(loader.system_dirs.clone());
            }
        }

        let mut hits: Vec<Hit> = Vec::new();
        let mut other_class = None;
        for list in lists {
            for dir in &list {
                let mut subs: Vec<(&str, bool)> = Vec::new();
                subs.extend(loader.hwcaps_subdirs.iter().map(|s| (s.as_str(), true)));
                subs.extend(loader.legacy_subdirs.iter().map(|s| (s.as_str(), false)));
                subs.push(("", false));
                let mut abort = false;
                for (sub, conditional) in subs {
                    let cand = if sub.is_empty() {
                        absolutize(name, dir)
                    } else {
                        absolutize(&format!("{sub}/{name}"), dir)
                    };
                    if hits.iter().any(|h| h.path == cand) {
                        continue;
                    }
                    match self.probe(&cand, st) {
                        Probe::Absent => {}
                        Probe::Abort => abort = sub.is_empty(),
                        Probe::OtherClass(why) => {
                            other_class.get_or_insert(why);
                        }
                        Probe::Fatal(p) => {
                            if hits.is_empty() {
                                return Err(SearchEnd::Fatal(p));
                            }
                            // A fallback for lesser CPUs is broken: the capable-CPU file
                            // still loads; report the broken one.
                            st.problems.push(p);
                            return Ok(hits);
                        }
                        Probe::Found(resolved, info) => {
                            let dup = hits.iter().any(|h| h.resolved.path == resolved.path);
                            if !dup {
                                hits.push(Hit {
                                    path: cand,
                                    resolved,
                                    info,
                                });
                            }
                            if !conditional {
                                return Ok(hits);
                            }
                        }
                    }
                }
                if abort {
                    // open_path gives up on this list when an error other than ENOENT
                    // (ENOTDIR, ELOOP) remains after trying a directory.
                    break;
                }
            }
        }
        if hits.is_empty() {
            Err(SearchEnd::NotFound { other_class })
        } else {
            Ok(hits)
        }
    }

    /// Checks a candidate file the way `open_verify` does.
    fn probe(&mut self, path: &str, st: &LoadState) -> Probe {
        let resolved = match self.res.resolve(path, "/", true) {
            Ok(r) => r,
            Err(FsError::NotFound { .. } | FsError::Dangling { .. }) => return Probe::Absent,
            Err(FsError::NotADirectory { .. } | FsError::Loop { .. }) => return Probe::Abort,
            Err(e) => return Probe::Fatal(Problem::from_fs(&e)),
        };
        if resolved.node.is_dir() {
            // open() of a directory succeeds, reading it fails with EISDIR: ld.so gives up.
            return Probe::Fatal(Problem {
                path: resolved.path.clone(),
                kind: ProblemKind::NotLoadable,
                message: format!("{}: is a directory", resolved.path),
            });
        }
        let class = self.classify(&resolved.path);
        let info = match &*class {
            FileClass::Elf(info) => info.clone(),
            FileClass::BadElf(e, ident) => {
                let musl = st.loader.flavor == LoaderFlavor::Musl;
                if let Some((class, machine)) = ident {
                    if !musl && (*class != st.main_class || *machine != st.main_machine) {
                        return Probe::OtherClass(format!(
                            "skipped {} ({class:?}, machine {machine}): wrong ELF class or machine",
                            resolved.path
                        ));
                    }
                }
                return Probe::Fatal(Problem::from_elf(e));
            }
            FileClass::Unreadable(e) => return Probe::Fatal(Problem::from_fs(e)),
            FileClass::Script(_) | FileClass::Other => {
                let size = match resolved.node {
                    crate::rootfs::NodeKind::File { size, .. } => size,
                    _ => 0,
                };
                let why = if size < 64 {
                    "file too short"
                } else {
                    "invalid ELF header"
                };
                return Probe::Fatal(Problem {
                    path: resolved.path.clone(),
                    kind: ProblemKind::NotLoadable,
                    message: format!("{}: {why}", resolved.path),
                });
            }
        };
        let musl = st.loader.flavor == LoaderFlavor::Musl;
        let mismatch = info.class != st.main_class || info.machine != st.main_machine;
        if mismatch && !musl {
            return Probe::OtherClass(format!(
                "skipped {} ({:?}, machine {}): wrong ELF class or machine",
                resolved.path, info.class, info.machine
            ));
        }
        let not_loadable = |why: String| {
            Probe::Fatal(Problem {
                path: resolved.path.clone(),
                kind: ProblemKind::NotLoadable,
                message: format!("{}: {why}", resolved.path),
            })
        };
        if mismatch {
            return not_loadable("wrong ELF class or machine for musl's loader".into());
        }
        if !musl {
            // VALID_ELF_OSABI / VALID_ELF_ABIVERSION: SYSV or GNU, ABI version 0 (GNU up to
            // the unique/IFUNC level, which glibc accepts as 1..=3 in practice).
            if info.osabi != 0 && info.osabi != 3 {
                return not_loadable(format!("ELF file OS ABI invalid ({})", info.osabi));
            }
            if info.abiversion > 3 || (info.osabi == 0 && info.abiversion != 0) {
                return not_loadable(format!(
                    "ELF file ABI version invalid ({})",
                    info.abiversion
                ));
            }
        }
        if info.e_type != ET_DYN && info.e_type != ET_EXEC {
            return not_loadable("only ET_DYN and ET_EXEC can be loaded".into());
        }
        if info.e_type == ET_EXEC {
            return not_loadable("cannot dynamically load executable".into());
        }
        if info.flags_1 & DF_1_PIE != 0 {
            return not_loadable("cannot dynamically load position-independent executable".into());
        }
        Probe::Found(resolved, info)
    }
}

enum Probe {
    Absent,
    Abort,
    OtherClass(String),
    Fatal(Problem),
    Found(Rc<Resolved>, Rc<ElfInfo>),
}

struct LoadState {
    loader: Rc<LoaderInfo>,
    objects: Vec<LoadedObject>,
    missing: Vec<MissingLib>,
    problems: Vec<Problem>,
    main_class: ElfClass,
    main_machine: u16,
    startup: bool,
    pending_variants: Vec<(String, String, Hit, usize, LoadVia, usize)>,
}

impl LoadState {
    /// `_dl_name_match_p` plus the SONAME check of `_dl_map_object` (musl matches only the
    /// names objects were loaded under).
    fn find_by_name(&self, name: &str, musl: bool) -> Option<usize> {
        self.objects.iter().position(|o| {
            o.variant_of.is_none()
                && o.via != LoadVia::Main
                && (o.path == name
                    || o.names.iter().any(|n| n == name)
                    || (!musl
                        && o.info
                            .as_ref()
                            .is_some_and(|i| i.soname.as_deref() == Some(name))))
        })
    }

    fn add_object(
        &mut self,
        name: &str,
        expanded: &str,
        hit: Hit,
        by: usize,
        via: LoadVia,
        variant_of: Option<usize>,
    ) -> usize {
        // The same file under another name is the same object (ld.so compares st_dev/st_ino).
        if let Some(i) = self
            .objects
            .iter()
            .position(|o| o.canonical == hit.resolved.path)
        {
            let o = &mut self.objects[i];
            o.referenced = true;
            if variant_of.is_none() && !o.names.iter().any(|n| n == expanded) {
                o.names.push(expanded.to_owned());
            }
            if o.resolved.symlinks != hit.resolved.symlinks
                && !o
                    .aliases
                    .iter()
                    .any(|a| a.symlinks == hit.resolved.symlinks)
            {
                o.aliases.push(hit.resolved);
            }
            return i;
        }
        self.objects.push(LoadedObject {
            name: name.to_owned(),
            origin: Some(parent(&hit.path).to_owned()),
            canonical: hit.resolved.path.clone(),
            path: hit.path,
            via,
            needed_by: Some(by),
            variant_of,
            referenced: true,
            at_startup: self.startup,
            names: vec![expanded.to_owned()],
            aliases: Vec::new(),
            loader: Some(by),
            resolved: hit.resolved,
            info: Some(hit.info),
        });
        self.objects.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_dirs_and_lib_from_the_host_loader() {
        let bytes = std::fs::read("/lib64/ld-linux-x86-64.so.2").unwrap();
        assert_eq!(
            scan_system_dirs(&bytes).unwrap(),
            vec![
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib",
                "/usr/lib"
            ]
        );
        assert_eq!(scan_lib_token(&bytes).unwrap(), "lib/x86_64-linux-gnu");
        assert!(contains(&bytes, b"Legacy HWCAP"));
    }

    #[test]
    fn dst_expansion() {
        let e = |s| expand_dst(s, Some("/opt/app/bin"), "lib64", "x86_64", false);
        assert_eq!(e("$ORIGIN/../lib").unwrap(), "/opt/app/bin/../lib");
        assert_eq!(
            e("${ORIGIN}/x:$LIB/$PLATFORM").unwrap(),
            "/opt/app/bin/x:lib64/x86_64"
        );
        assert_eq!(e("$ORIGINX/y").unwrap(), "$ORIGINX/y");
        assert_eq!(e("/a$").unwrap(), "/a$");
        assert_eq!(expand_dst("$ORIGIN", None, "", "", false), None);
        assert_eq!(
            expand_dst("$LIB/$ORIGIN", Some("/o"), "lib", "p", true).unwrap(),
            "$LIB//o"
        );
    }

    #[test]
    fn musl_reserved_names() {
        assert!(musl_reserved("libc.so"));
        assert!(musl_reserved("libc.musl-x86_64.so.1"));
        assert!(musl_reserved("libpthread.so.0"));
        assert!(!musl_reserved("libcrypto.so.3"));
        assert!(!musl_reserved("libz.so.1"));
    }
}
