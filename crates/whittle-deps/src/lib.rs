//! whittle-deps: static evidence — the files a program needs, read from an image's root
//! file system without running anything.
//!
//! The slim build keeps the union of static and dynamic evidence. This crate is the static
//! half: starting from the image's Entrypoint + Cmd (or given paths) it follows what the
//! kernel and the dynamic loader would open — `#!` interpreters, `PT_INTERP`, `DT_NEEDED`
//! resolved exactly as glibc's or musl's `ld.so` resolves it, NSS modules, CA bundles, the
//! user database — and records every symlink and parent directory on the way, each path
//! with the reasons that brought it in.
//!
//! Everything is read through [`RootFs`], a read-only view of the image's `/`; symlinks are
//! resolved inside the view like after `chroot(2)` ([`resolve`]). [`DirRootFs`] serves a
//! directory; the merged layer view of an image implements the same trait.
//!
//! ```no_run
//! use whittle_deps::{Analyzer, DirRootFs, ImageConfig, Request};
//! let fs = DirRootFs::new("/tmp/rootfs").unwrap();
//! let mut analyzer = Analyzer::new(&fs);
//! let closure = analyzer.closure(&Request {
//!     config: ImageConfig {
//!         entrypoint: vec!["nginx".into()],
//!         cmd: vec!["-g".into(), "daemon off;".into()],
//!         env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
//!         ..Default::default()
//!     },
//!     paths: vec![],
//! });
//! print!("{}", closure.render());
//! ```
//!
//! # JSON form of a [`Closure`] (`whittle deps --json`)
//!
//! Schema `whittle.deps/v1`. Field names are stable; new fields may be added, and new
//! `kind` values may appear in `reasons`, `missing` and `problems` (consumers should ignore
//! what they do not know).
//!
//! ```json
//! {
//!   "schema": "whittle.deps/v1",
//!   "roots": [
//!     { "requested": "nginx", "path": "/usr/sbin/nginx", "reason": { "kind": "entrypoint" } }
//!   ],
//!   "files": {
//!     "/lib": {
//!       "kind": "symlink", "target": "usr/lib",
//!       "reasons": [ { "kind": "symlink", "to": "/usr/lib/x86_64-linux-gnu/libc.so.6" } ]
//!     },
//!     "/usr/lib/x86_64-linux-gnu": {
//!       "kind": "dir", "mode": "0755",
//!       "reasons": [ { "kind": "parent_dir", "of": "/usr/lib/x86_64-linux-gnu/libc.so.6" } ]
//!     },
//!     "/usr/lib/x86_64-linux-gnu/libssl.so.3": {
//!       "kind": "file", "size": 696240, "mode": "0644",
//!       "reasons": [ { "kind": "needed", "of": "/usr/sbin/nginx", "name": "libssl.so.3" } ]
//!     },
//!     "/usr/sbin/nginx": {
//!       "kind": "file", "size": 1203264, "mode": "0755",
//!       "reasons": [ { "kind": "entrypoint" } ]
//!     }
//!   },
//!   "missing": [
//!     { "what": "libfoo.so.1", "needed_by": "/usr/bin/bar", "kind": "needed", "required": true,
//!       "detail": "skipped /usr/lib32/libfoo.so.1 (Elf32, machine 3): wrong ELF class or machine" }
//!   ],
//!   "problems": [
//!     { "path": "/usr/lib/broken.so", "kind": "truncated_elf",
//!       "message": "/usr/lib/broken.so: truncated ELF: dynamic section" }
//!   ]
//! }
//! ```
//!
//! - `files`: an object keyed by canonical path (no symlink in any parent component),
//!   sorted. Each value has `kind` — `file` (with `size` in bytes and `mode`), `dir`
//!   (`mode`), `symlink` (`target`, exactly as stored) or `other` (`mode`; devices, FIFOs,
//!   sockets) — where `mode` is the permission bits as an octal string, and `reasons`, a
//!   non-empty array; the first reason is the one shown in `whittle deps` chains.
//! - `reasons[].kind` and its fields:
//!   `entrypoint`, `explicit` (a path asked for), `working_dir` — roots, no fields;
//!   `user` / `home` (`user`: the image's User, empty for root) — `/etc/passwd`,
//!   `/etc/group`, the home directory;
//!   `argument` (`of`) — a file named in the entrypoint's arguments;
//!   `shell_command` (`of`: the shell) — the command of `sh -c "..."`;
//!   `interp` (`of`) — `PT_INTERP`;
//!   `needed` (`of`, `name`: the `DT_NEEDED` string);
//!   `filter` (`of`, `name`) — `DT_FILTER`/`DT_AUXILIARY`;
//!   `preload` (`of`, `name`) — `LD_PRELOAD`, `/etc/ld.so.preload`;
//!   `hwcaps_variant` (`of`: the library a more capable CPU loads instead);
//!   `loader_config` (`of`: the loader) — `/etc/ld.so.cache`, `/etc/ld.so.preload`;
//!   `nss` (`of`: libc, `service`) and `nss_config` (`of`) — NSS modules and
//!   `/etc/nsswitch.conf`;
//!   `shebang` (`of`: the script) — its interpreter; `env_command` (`of`) — the command of
//!   `#!/usr/bin/env NAME`;
//!   `symlink` (`to`: the path it leads to); `parent_dir` (`of`);
//!   `ca_bundle` (`because`: the TLS library).
//!   Every `of`/`to`/`because` is itself a key of `files`, so following first reasons
//!   leads back to a root.
//! - `missing[]`: `what` (library name, path or user), `needed_by` (a path, or `config`
//!   for the image configuration), `kind` (`entrypoint`, `explicit`, `needed`, `filter`,
//!   `preload`, `interp`, `shebang`, `env_command`, `nss_module`, `user`, `home`,
//!   `working_dir`), `required` (false when the program starts without it), optional
//!   `detail`.
//! - `problems[]`: `path`, `kind` (`truncated_elf`, `malformed_elf`, `absurd_elf`,
//!   `symlink_loop`, `dangling_symlink`, `not_a_directory`, `io`, `bad_shebang`,
//!   `script_too_deep`, `exec_format`, `not_loadable`), `message` (names the path).
//!
//! # Policies worth knowing
//!
//! - Library search emulates glibc 2.36 / musl (see [`ldso`]). `/etc/ld.so.conf` stands in
//!   for `/etc/ld.so.cache` (see [`ldconf`]); the cache file itself is kept.
//! - hwcaps: the most capable CPU is emulated, and fallbacks for lesser CPUs are kept too.
//! - NSS: when glibc's `libc.so.6` is loaded, `libnss_SERVICE.so.2` for every service of
//!   `/etc/nsswitch.conf` is loaded if present (glibc ≥ 2.34 has `files` and `dns` built
//!   in; their stubs are kept when present and never reported missing).
//! - CA bundles: see [`analyzer::CA_BUNDLES`] and [`analyzer::TLS_LIBRARIES`].
//! - The root directory `/` itself is never listed.

pub mod analyzer;
pub mod closure;
pub mod config;
pub mod elf;
pub mod error;
pub mod image;
pub mod ldconf;
pub mod ldso;
pub mod resolve;
pub mod rootfs;
pub mod script;

pub use analyzer::{Analyzer, Request};
pub use closure::{
    Closure, Entry, Missing, MissingKind, Problem, ProblemKind, Reason, Root, SCHEMA,
};
pub use config::ImageConfig;
pub use elf::ElfInfo;
pub use error::{DepsError, ElfError, FsError};
pub use ldso::{LoadReport, LoadVia, LoadedObject, LoaderFlavor, LoaderInfo};
pub use resolve::{Resolved, Resolver};
pub use rootfs::{DirRootFs, NodeKind, ReadAt, RootFs};

/// Computes the closure of `req` over `fs` (a fresh [`Analyzer`]; keep one analyzer per
/// image to share its caches between calls).
pub fn closure(fs: &dyn RootFs, req: &Request) -> Closure {
    Analyzer::new(fs).closure(req)
}
