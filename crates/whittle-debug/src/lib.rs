//! Troubleshooting thin containers from outside, without touching them.
//!
//! A whittle slim image has no shell by design. `whittle debug` brings one — a toolbox image's
//! root file system, unpacked once into a cache — and runs it in the target's pid, net, ipc,
//! uts and cgroup namespaces, with the target's own file system visible read-only at
//! `/target`. Nothing is written into the target, no container is created, and the target's
//! seccomp profile and dropped capabilities do not apply to the session (it is not in the
//! container; it only shares its namespaces), so `strace -p 1` works on a locked-down target.
//! [`forward`] relays a host port into the target's network namespace and [`copy`] reads
//! files out of it, running or stopped.

pub mod copy;
mod error;
pub mod forward;
pub mod ps;
pub mod run;
pub mod session;
pub mod sys;
pub mod toolbox;

pub use error::{Error, Result};

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use whittle_engine::procfs::ProcRoot;
use whittle_engine::{Engine, Resolved, Target};

use crate::session::{Plan, TargetRoot};

/// What `whittle debug` was asked to do.
#[derive(Debug, Clone)]
pub struct DebugOptions {
    pub host: Option<String>,
    pub target: Target,
    pub toolbox: toolbox::Choice,
    pub as_target: bool,
    /// The session's /tmp is the target's (see [`Plan::target_tmp`]).
    pub target_tmp: bool,
    /// Empty: the toolbox's `/bin/sh`.
    pub command: Vec<String>,
    pub cache: PathBuf,
}

const CAP_SYS_CHROOT: u32 = 18;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// Fails with one line naming the missing capabilities, before anything is done.
pub fn require_caps(what: &str, caps: &[(u32, &str)]) -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("/proc/self/status", e))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = caps
        .iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|(_, n)| *n)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Privilege {
        what: what.to_string(),
        caps: missing.join(", "),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Session(format!("cannot start the async runtime: {e}")))
}

/// Resolves a target: `pid:N` without the engine, names through it.
pub fn resolve(host: Option<&str>, target: &Target) -> Result<(Option<Engine>, Resolved)> {
    let proc = ProcRoot::real();
    if let Some(r) = target.resolve_pid(&proc) {
        return Ok((None, r?));
    }
    let rt = runtime()?;
    rt.block_on(async {
        let engine = Engine::connect_negotiated(host).await?;
        let r = target.resolve(&engine, &proc).await?;
        Ok((Some(engine), r))
    })
}

/// Runs a debug session; returns the command's exit code. `note` gets the one line that says
/// what the session is (toolbox, target).
pub fn debug(o: &DebugOptions, note: &dyn Fn(&str)) -> Result<i32> {
    require_caps(
        "whittle debug (joining the target's namespaces and mounting the toolbox)",
        &[
            (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
            (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
            (CAP_SYS_CHROOT, "CAP_SYS_CHROOT"),
        ],
    )?;
    let proc = ProcRoot::real();
    let rt = runtime()?;
    let (resolved, chosen) = rt.block_on(async {
        let engine = Engine::connect_negotiated(o.host.as_deref()).await?;
        let resolved = match o.target.resolve_pid(&proc) {
            Some(r) => r?,
            None => o.target.resolve(&engine, &proc).await?,
        };
        let image = resolved.container.as_ref().map(|c| c.image.as_str());
        let chosen = toolbox::choose(&engine, &o.toolbox, image).await?;
        Ok::<_, Error>((resolved, chosen))
    })?;
    let what = resolved.describe();
    // The toolbox reader talks to the engine on its own; the stopped target's view needs the
    // archive API. Both before the fork, and the runtime gone before it.
    let root = toolbox::unpack(&chosen, &o.cache)?;
    let mut _view = None;
    let target_root = match resolved.pid {
        Some(pid) => {
            let cg = proc.cgroups(pid)?;
            let mounts = proc.cgroup_mounts()?;
            let cgroup_procs = mounts
                .all_dirs(&cg)
                .into_iter()
                .map(|d| PathBuf::from(d).join("cgroup.procs"))
                .collect();
            TargetRoot::Live { pid, cgroup_procs }
        }
        None => {
            let c = resolved.container.as_ref().ok_or_else(|| Error::Target {
                target: what.clone(),
                cause: "not running".into(),
            })?;
            // An owned temp dir (pid and start time in its name): a session killed with
            // SIGKILL cannot delete its view, and the next whittle run removes it.
            let dir = whittle_sandbox::temp_dir("debug-view").map_err(|e| Error::Io {
                path: std::env::temp_dir().display().to_string(),
                cause: e.to_string(),
            })?;
            let engine = rt.block_on(Engine::connect_negotiated(o.host.as_deref()))?;
            let tar = rt.block_on(archive(&engine, &c.id, "/"))?;
            unpack_view(&tar, dir.path(), &what)?;
            let p = dir.path().to_path_buf();
            _view = Some(dir);
            TargetRoot::Dir(p)
        }
    };
    drop(rt);
    let (identity, env, cwd) = match (o.as_target, resolved.pid) {
        (true, Some(pid)) => {
            let mut env = proc.environ(pid)?;
            env.retain(|(k, _)| k != "TARGET_ROOT");
            env.push(("TARGET_ROOT".into(), "/target".into()));
            if !env.iter().any(|(k, _)| k == "PATH") {
                env.push(("PATH".into(), DEFAULT_PATH.into()));
            }
            let cwd = proc.cwd(pid)?;
            let cwd = Path::new("/target").join(cwd.strip_prefix("/").unwrap_or(&cwd));
            (Some(proc.identity(pid)?), env, cwd)
        }
        (true, None) => {
            return Err(Error::Target {
                target: what,
                cause: "--as-target needs a running target (a stopped one has no process to \
                        take the identity of)"
                    .into(),
            })
        }
        (false, _) => (None, default_env(), PathBuf::from("/")),
    };
    let command = if o.command.is_empty() {
        if !root.join("bin/sh").exists() {
            return Err(Error::Toolbox(format!(
                "{} has no /bin/sh: pass a command after `--`",
                chosen.reference
            )));
        }
        vec!["/bin/sh".to_string()]
    } else {
        o.command.clone()
    };
    note(&format!(
        "whittle debug: {what} with toolbox {} ({}); target's root at /target",
        chosen.reference, chosen.why
    ));
    let plan = Plan {
        root: target_root,
        toolbox: root,
        identity,
        env,
        cwd,
        command,
        target_tmp: o.target_tmp,
    };
    run::run(&plan)
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn default_env() -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOME".to_string(), "/root".to_string()),
        ("TARGET_ROOT".to_string(), "/target".to_string()),
    ];
    if let Ok(t) = std::env::var("TERM") {
        env.push(("TERM".into(), t));
    }
    env
}

/// The Engine's archive of `path` in container `id` (works on stopped containers too).
pub async fn archive(engine: &Engine, id: &str, path: &str) -> Result<Vec<u8>> {
    let opts = bollard::query_parameters::DownloadFromContainerOptionsBuilder::new()
        .path(path)
        .build();
    let mut s = engine.docker().download_from_container(id, Some(opts));
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| Error::Target {
            target: format!("{id}:{path}"),
            cause: format!("archive from {}: {e}", engine.host()),
        })?;
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn unpack_view(tar_bytes: &[u8], dir: &Path, what: &str) -> Result<()> {
    let mut ar = tar::Archive::new(tar_bytes);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(false);
    for entry in ar.entries().map_err(|e| Error::io(dir, e))? {
        let mut entry = entry.map_err(|e| Error::io(dir, e))?;
        // Devices and fifos of a stopped container are not needed to read its files.
        if matches!(
            entry.header().entry_type(),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
        ) {
            continue;
        }
        copy::unpack_entry(&mut entry, dir).map_err(|e| Error::Target {
            target: what.to_string(),
            cause: format!("unpacking its file system into {}: {e}", dir.display()),
        })?;
    }
    Ok(())
}

/// `whittle debug cp`: copies `path` out of the target (running: through its root; stopped:
/// through the archive API).
pub fn cp(host: Option<&str>, target: &Target, path: &Path, dest: &Path) -> Result<copy::Copied> {
    let (engine, resolved) = resolve(host, target)?;
    if let Some(pid) = resolved.pid {
        return copy::from_running(pid, path, dest);
    }
    let (Some(engine), Some(c)) = (engine, resolved.container) else {
        return Err(Error::Target {
            target: target.to_string(),
            cause: "not running".into(),
        });
    };
    let rt = runtime()?;
    let tar = rt.block_on(archive(&engine, &c.id, &path.to_string_lossy()))?;
    copy::from_archive(&tar[..], path, dest)
}

/// `whittle debug port-forward`: the target's network namespace, opened (and checked) now.
pub fn netns_of(host: Option<&str>, target: &Target) -> Result<(String, forward::NetNs)> {
    require_caps(
        "whittle debug port-forward (joining the target's network namespace)",
        &[(CAP_SYS_ADMIN, "CAP_SYS_ADMIN")],
    )?;
    let (_, r) = resolve(host, target)?;
    let pid = r.pid.ok_or_else(|| Error::Target {
        target: r.describe(),
        cause: "not running: a stopped container has no network namespace to forward into".into(),
    })?;
    Ok((r.describe(), forward::NetNs::of_pid(pid)?))
}
