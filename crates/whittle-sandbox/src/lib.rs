//! Dynamic evidence: run an image in a daemonless sandbox, exercise it with probes, and record
//! every file it touches.
//!
//! The image is flattened and extracted once ([`PreparedImage`]); each [`run`] mounts a
//! private overlay on that extraction inside new mount, pid, uts, ipc and network namespaces
//! (loopback only), with `/proc`, a read-only `/sys`, a minimal `/dev` and generated
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, and starts Entrypoint + Cmd as the
//! image's user, with Docker's default capabilities and `no_new_privs`. Two recorders watch:
//! ptrace stopping only on file-related system calls (a seccomp filter returns
//! `SECCOMP_RET_TRACE` for them alone), which sees paths that are only stat'ed, readlink'ed or
//! looked up in vain; and fanotify on the root mount, which sees every open, exec and read,
//! including ones no system call names (the ELF interpreter the kernel loads). The report is
//! their union, with the symlinks of the image on the way to each used path added.
//!
//! Cleanup does not depend on the run going well: the sandbox's mounts live in its own mount
//! namespace and vanish with its processes; its init is pid 1 of its pid namespace, so killing
//! it kills all; the outer process dies with whittle's tracer thread (`PR_SET_PDEATHSIG`),
//! tracees with their tracer (`PTRACE_O_EXITKILL`), and temporary directories are removed by
//! drop guards. A pids cgroup bounds fork bombs.
//!
//! # The report (`whittle trace --json`), schema `whittle.trace/v1`
//!
//! ```text
//! {
//!   "schema": "whittle.trace/v1",
//!   "image": "docker-archive:nginx.tar",        // the source as given
//!   "command": ["nginx", "-g", "daemon off;"],   // Entrypoint + Cmd as run
//!   "user": "0:0",                               // uid:gid
//!   "working_dir": "/var/www/html",
//!   "hostname": "4f0c2a9e1b7d",
//!   "mode": "server" | "cli",                    // probed, or run to completion
//!   "outcome": "ok" | "exec_failed" | "crashed" | "not_ready" | "timeout" | "interrupted",
//!   "error": null | "one-line message",          // set for every outcome but ok
//!   "app": {
//!     "pid": 2 | null,                           // pid inside the sandbox
//!     "exit_code": 0 | null,                     // for exec_failed: 126/127 as engines give
//!     "signal": "SIGQUIT" | null,                // what ended it, if a signal did
//!     "stopped_by_whittle": true,
//!     "stdout_sha256": "hex" | null, "stdout_bytes": 0,
//!     "stderr_tail": "last 4 KiB of stderr"
//!   },
//!   "probes": [{
//!     "kind": "http" | "exec" | "host",
//!     "target": "80/" | "command line",
//!     "ok": true,                                // a response came / the command exited
//!     "status": 200 | null,                      // HTTP status
//!     "exit_code": 0 | null,                     // exec and host probes
//!     "sha256": "hex" | null, "bytes": 612 | null, // HTTP body or command stdout
//!     "error": null | "message",
//!     "duration_ms": 3
//!   }],
//!   "recorders": {"ptrace": true, "fanotify": true, "fanotify_events": 812,
//!                 "fanotify_overflow": false, "notes": []},
//!   "timings": {"prepare_ms": 2100, "start_ms": 35, "run_ms": 540},
//!   "summary": {"paths": 245, "used_in_image": 180, "used_bytes": 4718592,
//!               "missing": 40, "created": 6, "pseudo_paths": 12},
//!   "files": [{                                  // sorted by path; /proc, /sys, /dev left out
//!     "path": "/usr/sbin/nginx",
//!     "kinds": ["read", "exec", "stat"],         // read write exec stat readlink list
//!                                                // create delete follow
//!     "ok": true,                                // some access succeeded
//!     "enoent": false,                           // some lookup found nothing
//!     "in_image": true,
//!     "node": "file" | "dir" | "symlink" | "char" | "block" | "fifo" | null,
//!     "size": 1234,                              // in the image, regular files
//!     "first": {"pid": 81234, "comm": "nginx"},  // host pid of the first process seen
//!     "via": ["ptrace", "fanotify", "resolved"]  // resolved: a symlink on the way to, or the
//!                                                // target of, a used path
//!   }]
//! }
//! ```
//! Fields are only ever added in `v1`; a change of meaning gets a new schema name.

mod caps;
mod cgroup;
mod error;
mod fanotify;
mod init;
mod mounts;
mod probes;
mod ptrace;
mod report;
mod rootfs;
mod run;
mod seccomp;
mod signals;
mod spec;
pub mod syscall_log;
mod syscalls;

pub use caps::DOCKER_DEFAULT as DOCKER_DEFAULT_CAPS;
pub use caps::{mask_of as caps_mask_of, names_of as caps_names_of, ALL as ALL_CAPS};
pub use error::{Error, Result};
pub use init::Stage;
pub use probes::{host_command, http_get, in_netns, listening, sha256_hex, Probe, ProbeReport};
pub use report::{FileRecord, FirstProcess, Kind};
pub use rootfs::{remove_leftovers, temp_dir, PreparedImage, TEMP_PREFIX};
pub use run::{
    exec_error, run, trace_image, AppReport, Options, Outcome, Recorders, Report, Summary, Timings,
    SCHEMA,
};
pub use signals::{
    clear_interrupt_flag, install_interrupt_handler, interrupted, raise_interrupt_flag,
};
pub use spec::{split_words, RunSpec};
