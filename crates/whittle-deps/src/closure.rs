//! The result of the analysis: every path a program needs, each with the reasons that
//! brought it in, plus what is missing and what could not be understood.
//!
//! Reasons are kept as data (not strings) because the slim build and `whittle deps` both
//! read them: the build needs to know that `/lib` is kept *because* it is on the way to
//! libc, and a person needs `libssl.so.3 ← DT_NEEDED of /usr/sbin/nginx ← entrypoint`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::rootfs::NodeKind;

/// The version tag written into [`Closure::schema`].
pub const SCHEMA: &str = "whittle.deps/v1";

/// Why a path is in the closure. `of`/`to` always name another path of the closure (or a
/// root), so following the first reason of each path gives the chain back to a root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The program the image's Entrypoint + Cmd runs.
    Entrypoint,
    /// A path the caller asked about.
    Explicit,
    /// A file named as an argument of the entrypoint command (e.g. `python3 /app/main.py`).
    Argument {
        /// The command it is an argument of.
        of: String,
    },
    /// The command that an Entrypoint of the form `sh -c "CMD ..."` runs.
    ShellCommand {
        /// The shell.
        of: String,
    },
    /// `PT_INTERP` of an ELF executable (the dynamic loader).
    Interp {
        /// The executable.
        of: String,
    },
    /// `DT_NEEDED` of an ELF object.
    Needed {
        /// The object that needs it.
        of: String,
        /// The `DT_NEEDED` string.
        name: String,
    },
    /// `DT_FILTER` or `DT_AUXILIARY` of an ELF object.
    Filter {
        /// The filter object.
        of: String,
        /// The filtee name.
        name: String,
    },
    /// Listed in `LD_PRELOAD` or `/etc/ld.so.preload`.
    Preload {
        /// The program it is preloaded into.
        of: String,
        /// The name as listed.
        name: String,
    },
    /// A glibc-hwcaps (or legacy hwcap) variant ld.so picks instead on some CPUs.
    HwcapsVariant {
        /// The baseline library it stands in for.
        of: String,
    },
    /// `/etc/ld.so.cache` (or `/etc/ld.so.preload`), read by glibc's loader at start.
    LoaderConfig {
        /// The loader.
        of: String,
    },
    /// An NSS module glibc loads for a service named in `/etc/nsswitch.conf`.
    Nss {
        /// The libc that loads it.
        of: String,
        /// The service name (`files`, `dns`, ...).
        service: String,
    },
    /// `/etc/nsswitch.conf` itself.
    NssConfig {
        /// The libc that reads it.
        of: String,
    },
    /// The interpreter of a `#!` script.
    Shebang {
        /// The script.
        of: String,
    },
    /// The command that `#!/usr/bin/env NAME` runs, found through the image's PATH.
    EnvCommand {
        /// The script.
        of: String,
    },
    /// A symlink crossed on the way to a path of the closure.
    Symlink {
        /// The path it leads to.
        to: String,
    },
    /// A directory on the way to a path of the closure.
    ParentDir {
        /// The path inside it.
        of: String,
    },
    /// `/etc/passwd` or `/etc/group`, read by the engine to start the process as `User`.
    User {
        /// The image's `User` (empty for root).
        user: String,
    },
    /// The home directory of the image's `User`.
    Home {
        /// The image's `User`.
        user: String,
    },
    /// The image's `WorkingDir`.
    WorkingDir,
    /// A CA certificate bundle, kept because a TLS library is in the closure.
    CaBundle {
        /// The TLS library.
        because: String,
    },
}

impl Reason {
    /// The closure path this reason points back to, if any.
    pub fn parent_path(&self) -> Option<&str> {
        match self {
            Reason::Entrypoint
            | Reason::Explicit
            | Reason::WorkingDir
            | Reason::User { .. }
            | Reason::Home { .. } => None,
            Reason::Argument { of }
            | Reason::ShellCommand { of }
            | Reason::Interp { of }
            | Reason::Needed { of, .. }
            | Reason::Filter { of, .. }
            | Reason::Preload { of, .. }
            | Reason::HwcapsVariant { of }
            | Reason::LoaderConfig { of }
            | Reason::Nss { of, .. }
            | Reason::NssConfig { of }
            | Reason::Shebang { of }
            | Reason::EnvCommand { of }
            | Reason::ParentDir { of } => Some(of),
            Reason::Symlink { to } => Some(to),
            Reason::CaBundle { because } => Some(because),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Entrypoint => write!(f, "entrypoint"),
            Reason::Explicit => write!(f, "requested"),
            Reason::Argument { of } => write!(f, "argument of {of}"),
            Reason::ShellCommand { of } => write!(f, "command run by {of} -c"),
            Reason::Interp { of } => write!(f, "PT_INTERP of {of}"),
            Reason::Needed { of, .. } => write!(f, "DT_NEEDED of {of}"),
            Reason::Filter { of, .. } => write!(f, "filtee of {of}"),
            Reason::Preload { of, .. } => write!(f, "preloaded into {of}"),
            Reason::HwcapsVariant { of } => write!(f, "hwcaps variant of {of}"),
            Reason::LoaderConfig { of } => write!(f, "read by {of}"),
            Reason::Nss { of, service } => write!(f, "NSS module '{service}' of {of}"),
            Reason::NssConfig { of } => write!(f, "NSS configuration of {of}"),
            Reason::Shebang { of } => write!(f, "interpreter of {of}"),
            Reason::EnvCommand { of } => write!(f, "env command of {of}"),
            Reason::Symlink { to } => write!(f, "symlink on the way to {to}"),
            Reason::ParentDir { of } => write!(f, "parent directory of {of}"),
            Reason::User { user } if user.is_empty() => write!(f, "user database (User root)"),
            Reason::User { user } => write!(f, "user database (User {user})"),
            Reason::Home { user } if user.is_empty() => write!(f, "home of User root"),
            Reason::Home { user } => write!(f, "home of User {user}"),
            Reason::WorkingDir => write!(f, "WorkingDir"),
            Reason::CaBundle { because } => write!(f, "CA bundle for {because}"),
        }
    }
}

/// One path of the closure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What the path is, with its metadata.
    #[serde(flatten)]
    pub node: NodeKind,
    /// Why it is needed; the first reason is the one shown in chains.
    pub reasons: Vec<Reason>,
}

/// Why something is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingKind {
    /// The entrypoint command (not found through PATH / WorkingDir).
    Entrypoint,
    /// A path the caller asked about.
    Explicit,
    /// A `DT_NEEDED` library.
    Needed,
    /// A `DT_FILTER` / `DT_AUXILIARY` filtee.
    Filter,
    /// A preloaded library.
    Preload,
    /// The `PT_INTERP` loader.
    Interp,
    /// A `#!` interpreter.
    Shebang,
    /// The command of `#!/usr/bin/env NAME`.
    EnvCommand,
    /// An NSS module named in `/etc/nsswitch.conf`.
    NssModule,
    /// The `User` (or its group) is not in `/etc/passwd` (`/etc/group`).
    User,
    /// The `User`'s home directory.
    Home,
    /// The `WorkingDir` (the engine creates it).
    WorkingDir,
}

/// Something a program needs that the image does not have.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Missing {
    /// What was looked for: a library name, a path or a user.
    pub what: String,
    /// Who needs it (a path of the closure, or `config` for image configuration).
    pub needed_by: String,
    /// What kind of reference it is.
    pub kind: MissingKind,
    /// False when the program can start without it (NSS modules, auxiliary filtees,
    /// preloads, a `WorkingDir` the engine creates, a home directory).
    pub required: bool,
    /// More detail (e.g. "found /usr/lib32/libfoo.so but it is ELFCLASS32").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What went wrong with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// An ELF structure lies past the end of the file.
    TruncatedElf,
    /// Not a well-formed ELF structure.
    MalformedElf,
    /// An absurd header value.
    AbsurdElf,
    /// More than 40 symlinks (ELOOP).
    SymlinkLoop,
    /// A symlink to nothing.
    DanglingSymlink,
    /// A non-directory used as a directory.
    NotADirectory,
    /// A read failed.
    Io,
    /// A `#!` line the kernel would reject.
    BadShebang,
    /// Scripts nested deeper than the kernel allows.
    ScriptTooDeep,
    /// Neither ELF nor `#!`: exec would fail with ENOEXEC.
    ExecFormat,
    /// ld.so found the file but refuses to load it (bad ELF identification, an executable
    /// as a library, a different architecture for musl).
    NotLoadable,
}

/// A per-file problem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Problem {
    /// The file.
    pub path: String,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// A human-readable message (it names the path).
    pub message: String,
}

impl Problem {
    pub(crate) fn from_fs(e: &crate::error::FsError) -> Problem {
        use crate::error::FsError;
        let kind = match e {
            FsError::Loop { .. } => ProblemKind::SymlinkLoop,
            FsError::Dangling { .. } => ProblemKind::DanglingSymlink,
            FsError::NotADirectory { .. } => ProblemKind::NotADirectory,
            _ => ProblemKind::Io,
        };
        Problem {
            path: e.path().to_owned(),
            kind,
            message: e.to_string(),
        }
    }

    pub(crate) fn from_elf(e: &crate::error::ElfError) -> Problem {
        use crate::error::ElfError;
        let kind = match e {
            ElfError::Truncated { .. } => ProblemKind::TruncatedElf,
            ElfError::Malformed { .. } => ProblemKind::MalformedElf,
            ElfError::Absurd { .. } => ProblemKind::AbsurdElf,
            ElfError::Fs(fs) => return Problem::from_fs(fs),
        };
        Problem {
            path: e.path().to_owned(),
            kind,
            message: e.to_string(),
        }
    }
}

/// A starting point of the analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// The path as asked (e.g. `nginx` or `/usr/bin/python3`).
    pub requested: String,
    /// The canonical path it resolved to, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `entrypoint` or `explicit`.
    pub reason: Reason,
}

/// Everything the analysed programs need. See the crate documentation for the JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// What the analysis started from.
    pub roots: Vec<Root>,
    /// Every needed path (canonical: no symlink in any parent component), sorted.
    pub files: BTreeMap<String, Entry>,
    /// What is needed but absent.
    pub missing: Vec<Missing>,
    /// Files that could not be understood.
    pub problems: Vec<Problem>,
}

impl Default for Closure {
    fn default() -> Self {
        Closure {
            schema: SCHEMA.to_owned(),
            roots: Vec::new(),
            files: BTreeMap::new(),
            missing: Vec::new(),
            problems: Vec::new(),
        }
    }
}

impl Closure {
    /// True if some required piece is missing (what `whittle deps --strict` fails on).
    pub fn has_required_missing(&self) -> bool {
        self.missing.iter().any(|m| m.required)
    }

    /// The chain of first reasons from `path` back to a root, e.g.
    /// `[DT_NEEDED of /usr/sbin/nginx, entrypoint]`.
    pub fn chain(&self, path: &str) -> Vec<&Reason> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = path;
        while seen.insert(cur) {
            let Some(reason) = self.files.get(cur).and_then(|e| e.reasons.first()) else {
                break;
            };
            out.push(reason);
            match reason.parent_path() {
                Some(p) => cur = p,
                None => break,
            }
        }
        out
    }

    /// One line per path: `path  ← reason  ← reason ...`.
    pub fn render_line(&self, path: &str) -> String {
        let mut line = path.to_owned();
        for r in self.chain(path) {
            line.push_str("  ← ");
            line.push_str(&r.to_string());
        }
        line
    }

    /// The whole closure as text: one line per path, then missing pieces and problems.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for path in self.files.keys() {
            out.push_str(&self.render_line(path));
            out.push('\n');
        }
        for m in &self.missing {
            out.push_str(&format!(
                "MISSING{} {} ({:?}) needed by {}",
                if m.required { "" } else { " (optional)" },
                m.what,
                m.kind,
                m.needed_by
            ));
            if let Some(d) = &m.detail {
                out.push_str(&format!(": {d}"));
            }
            out.push('\n');
        }
        for p in &self.problems {
            out.push_str(&format!("PROBLEM {}\n", p.message));
        }
        out
    }

    /// Adds `reason` to `path`, creating the entry with `node` if new. Returns true if the
    /// path was new.
    pub(crate) fn add(&mut self, path: &str, node: &NodeKind, reason: Reason) -> bool {
        match self.files.get_mut(path) {
            Some(e) => {
                if !e.reasons.contains(&reason) {
                    e.reasons.push(reason);
                }
                false
            }
            None => {
                self.files.insert(
                    path.to_owned(),
                    Entry {
                        node: node.clone(),
                        reasons: vec![reason],
                    },
                );
                true
            }
        }
    }

    pub(crate) fn add_missing(&mut self, m: Missing) {
        if !self.missing.contains(&m) {
            self.missing.push(m);
        }
    }

    pub(crate) fn add_problem(&mut self, p: Problem) {
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_renders_back_to_the_root_and_survives_cycles() {
        let mut c = Closure::default();
        let f = NodeKind::File {
            size: 1,
            mode: 0o755,
        };
        c.add("/usr/sbin/nginx", &f, Reason::Entrypoint);
        c.add(
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            &f,
            Reason::Needed {
                of: "/usr/sbin/nginx".into(),
                name: "libssl.so.3".into(),
            },
        );
        assert_eq!(
            c.render_line("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
            "/usr/lib/x86_64-linux-gnu/libssl.so.3  ← DT_NEEDED of /usr/sbin/nginx  ← entrypoint"
        );
        c.add("/a", &f, Reason::Symlink { to: "/b".into() });
        c.add("/b", &f, Reason::Symlink { to: "/a".into() });
        assert_eq!(c.chain("/a").len(), 2);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["schema"], SCHEMA);
        let e = &json["files"]["/usr/sbin/nginx"];
        assert_eq!(e["kind"], "file");
        assert_eq!(e["mode"], "0755");
        assert_eq!(e["reasons"][0]["kind"], "entrypoint");
        let back: Closure = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }
}
