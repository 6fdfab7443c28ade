//! Puts the pieces together: from the image's Entrypoint (or given paths) to the
//! [`Closure`] — programs, their loaders and libraries, script interpreters, the user
//! database, CA bundles — with every symlink and parent directory on the way.
//!
//! One [`Analyzer`] per image: it caches `lstat`s, resolutions and parsed ELF headers, so
//! a library shared by five hundred programs is parsed once.

use std::collections::HashSet;
use std::rc::Rc;

use crate::closure::{Closure, Missing, MissingKind, Problem, ProblemKind, Reason, Root};
use crate::config::{parse_group, parse_passwd, split_user, ImageConfig};
use crate::elf::{self, ElfInfo, ET_DYN, ET_EXEC, HEAD_LEN};
use crate::error::{DepsError, ElfError, FsError};
use crate::ldconf::read_text;
use crate::ldso::{LdCaches, LoadEnv, LoadReport, LoadVia, LoaderFlavor};
use crate::resolve::{file_name, Resolved, Resolver};
use crate::rootfs::{read_exact_or_eof, NodeKind, RootFs};
use crate::script::{env_command, parse_shebang, shell_c_command, Shebang, ShebangError};

/// CA bundle locations kept when a TLS library is in the closure: the files the common
/// TLS libraries and distributions default to. The per-certificate hash links of
/// `/etc/ssl/certs` are not kept: they duplicate the bundle, and OpenSSL reads the
/// bundle (`cert.pem`) as well as the directory. `/usr/lib/ssl/certs` (Debian's OpenSSL
/// directory, a link to `/etc/ssl/certs`) is kept as a link and directory so that a
/// `CApath` lookup finds the directory.
pub const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
    "/usr/lib/ssl/cert.pem",
    "/usr/lib/ssl/certs",
];

/// File-name prefixes of libraries that verify TLS certificates.
pub const TLS_LIBRARIES: &[&str] = &[
    "libssl.so",
    "libcrypto.so",
    "libgnutls.so",
    "libnss3.so",
    "libmbedtls.so",
    "libmbedx509.so",
    "libwolfssl.so",
    "libtls.so",
    "libbearssl.so",
];

/// Shells whose `-c SCRIPT` first command is followed (Docker's shell form).
const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "busybox"];

/// The kernel follows at most this many nested `#!` interpreters (`BINPRM_MAX_RECURSION`
/// is 4; the outermost exec counts as well).
const MAX_SCRIPT_DEPTH: usize = 5;

/// What the analysis starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The image configuration (Env, Entrypoint, Cmd, WorkingDir, User).
    pub config: ImageConfig,
    /// Paths to analyse instead of the Entrypoint + Cmd (empty: use the Entrypoint).
    pub paths: Vec<String>,
}

/// How a file looks from its first bytes.
#[derive(Debug)]
pub(crate) enum FileClass {
    /// Parsed ELF.
    Elf(Rc<ElfInfo>),
    /// ELF magic, but broken; class and machine if the header got that far.
    BadElf(ElfError, Option<(elf::ElfClass, u16)>),
    /// A `#!` script.
    Script(Result<Shebang, ShebangError>),
    /// Anything else.
    Other,
    /// Could not be read.
    Unreadable(FsError),
}

/// Static dependency analysis over one image's root file system.
pub struct Analyzer<'fs> {
    pub(crate) res: Resolver<'fs>,
    classes: std::collections::HashMap<String, Rc<FileClass>>,
    pub(crate) ld: LdCaches,
}

impl std::fmt::Debug for Analyzer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("res", &self.res)
            .field("classified_files", &self.classes.len())
            .finish()
    }
}

struct Build<'c> {
    closure: Closure,
    done: HashSet<String>,
    config: &'c ImageConfig,
    env: LoadEnv,
    cwd: String,
    ca_done: bool,
    nss_conf_done: bool,
    /// Scripts whose interpreter is being analysed (to report `#!` cycles).
    script_stack: Vec<String>,
}

impl<'fs> Analyzer<'fs> {
    /// An analyzer over `fs`.
    pub fn new(fs: &'fs dyn RootFs) -> Self {
        Analyzer {
            res: Resolver::new(fs),
            classes: Default::default(),
            ld: LdCaches::default(),
        }
    }

    /// The path resolver (shares this analyzer's caches).
    pub fn resolver(&self) -> &Resolver<'fs> {
        &self.res
    }

    /// Reads the head of a canonical regular file and classifies it, cached.
    pub(crate) fn classify(&mut self, canonical: &str) -> Rc<FileClass> {
        if let Some(c) = self.classes.get(canonical) {
            return c.clone();
        }
        let class = Rc::new(self.classify_uncached(canonical));
        self.classes.insert(canonical.to_owned(), class.clone());
        class
    }

    fn classify_uncached(&self, path: &str) -> FileClass {
        let file = match self.res.fs().open(path) {
            Ok(f) => f,
            Err(e) => return FileClass::Unreadable(e),
        };
        let head = match read_exact_or_eof(&*file, 0, HEAD_LEN) {
            Ok(h) => h,
            Err(e) => return FileClass::Unreadable(e),
        };
        if elf::is_elf(&head) {
            match elf::parse(path, &*file, &head) {
                Ok(info) => FileClass::Elf(Rc::new(info)),
                Err(e) => FileClass::BadElf(e, elf::ident(&head)),
            }
        } else if let Some(sb) = parse_shebang(&head) {
            FileClass::Script(sb)
        } else {
            FileClass::Other
        }
    }

    /// The parsed ELF headers of a file (symlinks followed).
    pub fn elf_info(&mut self, path: &str) -> Result<Rc<ElfInfo>, DepsError> {
        let r = self.res.resolve(path, "/", true)?;
        match &*self.classify(&r.path) {
            FileClass::Elf(i) => Ok(i.clone()),
            FileClass::BadElf(e, _) => Err(e.clone().into()),
            FileClass::Unreadable(e) => Err(e.clone().into()),
            _ => Err(DepsError::NotElf {
                path: r.path.clone(),
            }),
        }
    }

    /// The link map of one ELF program or library, as its loader would build it
    /// (plus NSS modules, marked `at_startup: false`). `config` supplies `Env`
    /// (`LD_LIBRARY_PATH`, `LD_PRELOAD`) and `WorkingDir`.
    pub fn load_report(
        &mut self,
        path: &str,
        config: &ImageConfig,
    ) -> Result<LoadReport, DepsError> {
        let env = LoadEnv::from_config(config);
        let r = self.res.resolve(path, &env.cwd, true)?;
        let info = self.elf_info(&r.path)?;
        Ok(self.load(r, info, &env, true))
    }

    /// Computes the closure for a request. Never fails: what cannot be found or parsed is
    /// listed in [`Closure::missing`] and [`Closure::problems`].
    pub fn closure(&mut self, req: &Request) -> Closure {
        let config = &req.config;
        let mut b = Build {
            closure: Closure::default(),
            done: HashSet::new(),
            config,
            env: LoadEnv::from_config(config),
            cwd: config.cwd(),
            ca_done: false,
            nss_conf_done: false,
            script_stack: Vec::new(),
        };
        self.add_user(&mut b);
        self.add_working_dir(&mut b);
        if req.paths.is_empty() {
            self.add_entrypoint(&mut b);
        } else {
            for p in &req.paths {
                let root = match self.res.resolve(p, &b.cwd, true) {
                    Ok(r) => {
                        let path = r.path.clone();
                        self.add_program(&mut b, r, Reason::Explicit, false, 0);
                        Some(path)
                    }
                    Err(e) => {
                        b.missing_fs(p, "request", MissingKind::Explicit, true, &e);
                        None
                    }
                };
                b.closure.roots.push(Root {
                    requested: p.clone(),
                    path: root,
                    reason: Reason::Explicit,
                });
            }
        }
        b.closure
    }

    /// Adds a resolved path with its symlinks and parent directories.
    fn add_resolved(&self, b: &mut Build<'_>, r: &Resolved, reason: Reason) {
        let fin = &r.path;
        if fin != "/" {
            b.closure.add(fin, &r.node, reason);
        }
        for s in &r.symlinks {
            if let Ok(Some(node)) = self.res.lstat(s) {
                b.closure.add(s, &node, Reason::Symlink { to: fin.clone() });
            }
        }
        for d in &r.dirs {
            if let Ok(Some(node)) = self.res.lstat(d) {
                b.closure
                    .add(d, &node, Reason::ParentDir { of: fin.clone() });
            }
        }
        // Parents of the final path are walked too, but a path reached through `..` or a
        // link may have ancestors the walk did not record: add them all.
        let mut p = crate::resolve::parent(fin);
        while p != "/" {
            if let Ok(Some(node)) = self.res.lstat(p) {
                b.closure
                    .add(p, &node, Reason::ParentDir { of: fin.clone() });
            }
            p = crate::resolve::parent(p);
        }
    }

    fn add_user(&mut self, b: &mut Build<'_>) {
        let user = b.config.user.clone();
        for f in ["/etc/passwd", "/etc/group"] {
            if let Ok(r) = self.res.resolve(f, "/", true) {
                self.add_resolved(b, &r, Reason::User { user: user.clone() });
            }
        }
        let (u, g) = split_user(&user);
        let passwd = read_text(&self.res, "/etc/passwd", 16 << 20)
            .map(|t| parse_passwd(&t))
            .unwrap_or_default();
        let u = if u.is_empty() { "0" } else { u };
        let entry = match u.parse::<u32>() {
            Ok(uid) => passwd.iter().find(|e| e.uid == uid),
            Err(_) => {
                let e = passwd.iter().find(|e| e.name == u);
                if e.is_none() {
                    // runc: "unable to find user NAME: no matching entries in passwd file".
                    b.closure.add_missing(Missing {
                        what: u.to_owned(),
                        needed_by: "config".into(),
                        kind: MissingKind::User,
                        required: true,
                        detail: Some("User is not in /etc/passwd".into()),
                    });
                }
                e
            }
        };
        if let Some(g) = g.filter(|g| !g.is_empty() && g.parse::<u32>().is_err()) {
            let groups = read_text(&self.res, "/etc/group", 16 << 20)
                .map(|t| parse_group(&t))
                .unwrap_or_default();
            if !groups.iter().any(|(n, _)| n == g) {
                b.closure.add_missing(Missing {
                    what: g.to_owned(),
                    needed_by: "config".into(),
                    kind: MissingKind::User,
                    required: true,
                    detail: Some("group is not in /etc/group".into()),
                });
            }
        }
        if let Some(e) = entry {
            if !e.home.is_empty() && e.home != "/" {
                match self.res.resolve(&e.home, "/", true) {
                    Ok(r) => self.add_resolved(b, &r, Reason::Home { user: user.clone() }),
                    Err(err) => b.missing_fs(&e.home, "config", MissingKind::Home, false, &err),
                }
            }
        }
    }

    fn add_working_dir(&mut self, b: &mut Build<'_>) {
        if b.config.working_dir.is_empty() {
            return;
        }
        let wd = b.cwd.clone();
        match self.res.resolve(&wd, "/", true) {
            Ok(r) => self.add_resolved(b, &r, Reason::WorkingDir),
            // The engine creates a missing WorkingDir.
            Err(e) => b.missing_fs(&wd, "config", MissingKind::WorkingDir, false, &e),
        }
    }

    /// Finds a command like the engine (Go's `exec.LookPath` in the container) or
    /// `execvp`: names with a slash relative to the working directory, others through
    /// `path_var` (empty elements mean the working directory).
    fn lookup_command(&self, name: &str, path_var: &str, cwd: &str) -> Option<Rc<Resolved>> {
        let executable = |r: &Rc<Resolved>| match r.node {
            NodeKind::File { mode, .. } => mode & 0o111 != 0,
            _ => false,
        };
        if name.contains('/') {
            return self.res.resolve(name, cwd, true).ok();
        }
        if name.is_empty() {
            return None;
        }
        for dir in path_var.split(':') {
            let dir = if dir.is_empty() { "." } else { dir };
            let cand = format!("{dir}/{name}");
            if let Ok(r) = self.res.resolve(&cand, cwd, true) {
                if executable(&r) {
                    return Some(r);
                }
            }
        }
        None
    }

    fn add_entrypoint(&mut self, b: &mut Build<'_>) {
        let argv = b.config.argv();
        let Some(cmd) = argv.first().cloned() else {
            b.closure.add_missing(Missing {
                what: "(no Entrypoint or Cmd)".into(),
                needed_by: "config".into(),
                kind: MissingKind::Entrypoint,
                required: true,
                detail: None,
            });
            return;
        };
        let path_var = b.config.path_var().to_owned();
        let Some(r) = self.lookup_command(&cmd, &path_var, &b.cwd) else {
            b.closure.add_missing(Missing {
                what: cmd.clone(),
                needed_by: "config".into(),
                kind: MissingKind::Entrypoint,
                required: true,
                detail: Some(format!(
                    "not found in PATH {path_var} or WorkingDir {}",
                    b.cwd
                )),
            });
            b.closure.roots.push(Root {
                requested: cmd,
                path: None,
                reason: Reason::Entrypoint,
            });
            return;
        };
        let prog = r.path.clone();
        b.closure.roots.push(Root {
            requested: cmd.clone(),
            path: Some(prog.clone()),
            reason: Reason::Entrypoint,
        });
        self.add_program(b, r, Reason::Entrypoint, true, 0);

        let is_shell = SHELLS.contains(&file_name(&cmd)) || SHELLS.contains(&file_name(&prog));
        let mut rest = &argv[1..];
        if is_shell && argv.len() > 2 && argv[1] == "-c" {
            if let Some(inner) = shell_c_command(&argv[2]) {
                if let Some(r) = self.lookup_command(&inner, &path_var, &b.cwd) {
                    self.add_program(b, r, Reason::ShellCommand { of: prog.clone() }, true, 0);
                }
            }
            rest = &argv[3..];
        }
        // Files named as arguments (`python3 app.py`, `java -jar /app.jar`).
        for arg in rest {
            if arg.starts_with('-') || arg.is_empty() || arg.contains('\0') {
                continue;
            }
            if let Ok(r) = self.res.resolve(arg, &b.cwd, true) {
                if r.node.is_file() {
                    self.add_resolved(b, &r, Reason::Argument { of: prog.clone() });
                }
            }
        }
    }

    /// Adds a program (or any file asked for) and everything it needs to run.
    fn add_program(
        &mut self,
        b: &mut Build<'_>,
        r: Rc<Resolved>,
        reason: Reason,
        as_program: bool,
        depth: usize,
    ) {
        self.add_resolved(b, &r, reason);
        if !r.node.is_file() || !b.done.insert(r.path.clone()) {
            return;
        }
        let me = r.path.clone();
        match &*self.classify(&me) {
            FileClass::Elf(info) => {
                if info.e_type == ET_EXEC || info.e_type == ET_DYN {
                    let info = info.clone();
                    self.add_elf(b, r, info);
                }
            }
            FileClass::BadElf(e, _) => b.closure.add_problem(Problem::from_elf(e)),
            FileClass::Unreadable(e) => b.closure.add_problem(Problem::from_fs(e)),
            FileClass::Script(Err(e)) => {
                if as_program {
                    b.closure.add_problem(Problem {
                        path: me.clone(),
                        kind: ProblemKind::BadShebang,
                        message: format!("{me}: bad #! line: {e:?}"),
                    });
                }
            }
            FileClass::Script(Ok(sb)) => {
                let sb = sb.clone();
                self.add_script(b, &me, &sb, depth);
            }
            FileClass::Other => {
                if as_program {
                    b.closure.add_problem(Problem {
                        path: me.clone(),
                        kind: ProblemKind::ExecFormat,
                        message: format!("{me}: neither ELF nor #! script (exec format error)"),
                    });
                }
            }
        }
    }

    fn add_script(&mut self, b: &mut Build<'_>, me: &str, sb: &Shebang, depth: usize) {
        if depth + 1 >= MAX_SCRIPT_DEPTH {
            b.closure.add_problem(Problem {
                path: me.to_owned(),
                kind: ProblemKind::ScriptTooDeep,
                message: format!("{me}: #! interpreters nested too deeply (ELOOP)"),
            });
            return;
        }
        let cwd = b.cwd.clone();
        match self.res.resolve(&sb.interpreter, &cwd, true) {
            Ok(ir) => {
                if ir.path == me || b.script_stack.contains(&ir.path) {
                    // The kernel would recurse until ELOOP.
                    b.closure.add_problem(Problem {
                        path: me.to_owned(),
                        kind: ProblemKind::ScriptTooDeep,
                        message: format!(
                            "{me}: #! interpreter {} leads back to the script (ELOOP)",
                            ir.path
                        ),
                    });
                }
                b.script_stack.push(me.to_owned());
                let reason = Reason::Shebang { of: me.to_owned() };
                self.add_program(b, ir, reason, true, depth + 1);
                b.script_stack.pop();
            }
            Err(e) => {
                b.missing_fs(&sb.interpreter, me, MissingKind::Shebang, true, &e);
                return;
            }
        }
        if file_name(&sb.interpreter) == "env" {
            let args: Vec<String> = sb.arg.iter().cloned().collect();
            if let Some(cmd) = env_command(&args) {
                // env(1) searches the PATH it inherits; without one, execvp's default.
                let path_var = b
                    .config
                    .env_var("PATH")
                    .unwrap_or("/bin:/usr/bin")
                    .to_owned();
                match self.lookup_command(&cmd, &path_var, &cwd) {
                    Some(r) => self.add_program(
                        b,
                        r,
                        Reason::EnvCommand { of: me.to_owned() },
                        true,
                        depth + 1,
                    ),
                    None => b.closure.add_missing(Missing {
                        what: cmd,
                        needed_by: me.to_owned(),
                        kind: MissingKind::EnvCommand,
                        required: true,
                        detail: Some(format!("not found in PATH {path_var}")),
                    }),
                }
            }
        }
    }

    fn add_elf(&mut self, b: &mut Build<'_>, r: Rc<Resolved>, info: Rc<ElfInfo>) {
        let me = r.path.clone();
        let report = self.load(r, info.clone(), &b.env, true);
        let glibc = report.loader.flavor == LoaderFlavor::Glibc;

        let mut interp_path = None;
        if let Some(interp) = &info.interp {
            match self.res.resolve(interp, &b.cwd, true) {
                Ok(ir) => {
                    interp_path = Some(ir.path.clone());
                    self.add_resolved(b, &ir, Reason::Interp { of: me.clone() });
                }
                Err(e) => b.missing_fs(interp, &me, MissingKind::Interp, true, &e),
            }
        }
        let dynamic = info.interp.is_some() || !info.deps.is_empty();
        if glibc && dynamic {
            let of = interp_path
                .clone()
                .unwrap_or_else(|| report.loader.interp.clone());
            for f in ["/etc/ld.so.cache", "/etc/ld.so.preload"] {
                if let Ok(cr) = self.res.resolve(f, "/", true) {
                    self.add_resolved(b, &cr, Reason::LoaderConfig { of: of.clone() });
                }
            }
        }

        let objs = &report.objects;
        let mut libc = None;
        let mut tls = None;
        for o in objs.iter().skip(1) {
            let by = o.needed_by.map(|i| objs[i].canonical.clone());
            let reason = if let Some(v) = o.variant_of {
                Reason::HwcapsVariant {
                    of: objs[v].canonical.clone(),
                }
            } else {
                match &o.via {
                    LoadVia::Main => continue,
                    // The loader is kept as PT_INTERP; a DT_NEEDED naming it (libc.so.6 needs
                    // ld-linux-x86-64.so.2) is a reason too, and the only one for a library
                    // analysed on its own.
                    LoadVia::Interp => match by {
                        Some(of) => Reason::Needed {
                            of,
                            name: o.name.clone(),
                        },
                        None => continue,
                    },
                    LoadVia::Dep { dep } => match dep {
                        crate::elf::DepKind::Needed => Reason::Needed {
                            of: by.unwrap_or_else(|| me.clone()),
                            name: o.name.clone(),
                        },
                        _ => Reason::Filter {
                            of: by.unwrap_or_else(|| me.clone()),
                            name: o.name.clone(),
                        },
                    },
                    LoadVia::Preload => Reason::Preload {
                        of: me.clone(),
                        name: o.name.clone(),
                    },
                    LoadVia::Nss { service } => Reason::Nss {
                        of: by.unwrap_or_else(|| me.clone()),
                        service: service.clone(),
                    },
                }
            };
            self.add_resolved(b, &o.resolved, reason.clone());
            for a in &o.aliases {
                self.add_resolved(b, a, reason.clone());
            }
            if let Some(i) = &o.info {
                if i.soname.as_deref() == Some("libc.so.6") && o.variant_of.is_none() {
                    libc.get_or_insert(o.canonical.clone());
                }
            }
            let is_tls = |n: &str| TLS_LIBRARIES.iter().any(|t| n.starts_with(t));
            if is_tls(file_name(&o.canonical)) || is_tls(&o.name) {
                tls.get_or_insert(o.canonical.clone());
            }
        }
        for m in &report.missing {
            // glibc >= 2.34 has the files and dns services built in: absent stubs are fine.
            if m.kind == MissingKind::NssModule
                && (m.name == "libnss_files.so.2" || m.name == "libnss_dns.so.2")
            {
                continue;
            }
            b.closure.add_missing(Missing {
                what: m.name.clone(),
                needed_by: objs[m.needed_by].canonical.clone(),
                kind: m.kind,
                required: m.required,
                detail: m.detail.clone(),
            });
        }
        for p in &report.problems {
            b.closure.add_problem(p.clone());
        }
        if let (Some(libc), false) = (&libc, b.nss_conf_done) {
            b.nss_conf_done = true;
            if let Ok(r) = self.res.resolve("/etc/nsswitch.conf", "/", true) {
                self.add_resolved(b, &r, Reason::NssConfig { of: libc.clone() });
            }
        }
        if let (Some(lib), false) = (tls, b.ca_done) {
            b.ca_done = true;
            for f in CA_BUNDLES {
                if let Ok(r) = self.res.resolve(f, "/", true) {
                    self.add_resolved(
                        b,
                        &r,
                        Reason::CaBundle {
                            because: lib.clone(),
                        },
                    );
                }
            }
        }
    }
}

impl Build<'_> {
    fn missing_fs(&mut self, what: &str, by: &str, kind: MissingKind, required: bool, e: &FsError) {
        // A plain ENOENT is only "missing"; a dangling link, a loop or a file used as a
        // directory is also a problem of that file.
        if !matches!(e, FsError::NotFound { .. }) {
            self.closure.add_problem(Problem::from_fs(e));
        }
        self.closure.add_missing(Missing {
            what: what.to_owned(),
            needed_by: by.to_owned(),
            kind,
            required,
            detail: Some(e.to_string()),
        });
    }
}
