//! `whittle logs devlog DIR`: a `/dev/log` socket that survives syslog restarts.
//!
//! Bind-mounting the host's `/dev/log` into a container pins the socket's inode: when the host's
//! syslog restarts it creates a new socket and the container keeps writing into the old, dead
//! one ("can mount /dev/log but don't restart syslog"). Here the socket lives in a directory the
//! containers mount (`-v DIR:/dev/log.d`, with `/dev/log` a symlink to `/dev/log.d/log`), it is
//! owned by this process rather than by syslog, and it is recreated if removed; a restarted
//! syslog is only a sink reconnect, the messages wait in the spool meanwhile. Every datagram is
//! tagged with its sender: the kernel's SCM_CREDENTIALS pid (translated to the host's pid
//! namespace) → `/proc/PID/cgroup` → the container id → its name and image.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UnixDatagram;
use whittle_engine::procfs::ProcRoot;
use whittle_engine::watch::Watcher;
use whittle_engine::Stop;

use crate::pipeline::{Item, Options as PipeOptions, Pipeline};
use crate::record::{Record, Source};
use crate::{io_err, Error, Log, Result};

/// What `devlog` does.
#[derive(Debug, Clone)]
pub struct Options {
    pub host: Option<String>,
    pub dir: PathBuf,
    pub pipe: PipeOptions,
}

/// Runs until SIGTERM or SIGINT.
pub fn run(opts: Options, log: Log) -> Result<()> {
    crate::ship::runtime()?.block_on(run_async(opts, log))
}

fn bind(path: &Path) -> Result<(UnixDatagram, u64)> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path, e)),
    }
    let sock = UnixDatagram::bind(path).map_err(|e| io_err(path, e))?;
    let one: libc::c_int = 1;
    let big: libc::c_int = 4 << 20;
    // SAFETY: setsockopt on a socket this function owns, with pointers to live c_ints and
    // their exact sizes.
    unsafe {
        let fd = sock.as_raw_fd();
        let sz = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&one as *const libc::c_int).cast(),
            sz,
        ) != 0
        {
            return Err(io_err(path, std::io::Error::last_os_error()));
        }
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&big as *const libc::c_int).cast(),
            sz,
        );
    }
    // Any user in any container may log.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| io_err(path, e))?;
    let ino = std::fs::metadata(path).map_err(|e| io_err(path, e))?.ino();
    Ok((sock, ino))
}

/// One datagram and its sender's pid.
fn recv_cred(fd: i32, buf: &mut [u8]) -> std::io::Result<(usize, Option<u32>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one SCM_CREDENTIALS message, u64-aligned.
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header before the fields are set.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: recvmsg writes at most iov_len bytes into `buf` and msg_controllen bytes into
    // `cbuf`, both alive and exclusively borrowed for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut pid = None;
    // SAFETY: the CMSG_* macros walk the control buffer recvmsg just filled, within
    // msg_controllen; SCM_CREDENTIALS data is a `ucred`, read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                pid = u32::try_from(cred.pid).ok().filter(|p| *p > 0);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, pid))
}

/// The 64-hex container id in a pid's cgroup paths (`/docker/ID`, `docker-ID.scope`, podman's
/// `libpod-ID.scope`).
pub fn container_of(cgroup_text: &str) -> Option<String> {
    for line in cgroup_text.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        for part in path.split('/').rev() {
            let p = part
                .trim_end_matches(".scope")
                .rsplit('-')
                .next()
                .unwrap_or(part);
            if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(p.to_string());
            }
        }
    }
    None
}

/// Splits `<PRI>` and an RFC 3164 timestamp off a datagram; returns (pri, rest).
pub fn parse_datagram(d: &[u8]) -> (Option<u8>, &[u8]) {
    let mut d = d;
    while let Some(x) = d.strip_suffix(b"\n").or_else(|| d.strip_suffix(b"\0")) {
        d = x;
    }
    let mut pri = None;
    if d.first() == Some(&b'<') {
        if let Some(end) = d.iter().take(5).position(|&b| b == b'>') {
            pri = std::str::from_utf8(&d[1..end])
                .ok()
                .and_then(|s| s.parse::<u8>().ok())
                .filter(|p| *p < 192);
            if pri.is_some() {
                d = &d[end + 1..];
            }
        }
    }
    // `Mmm dd hh:mm:ss ` as glibc's syslog(3) writes it.
    if d.len() > 16
        && d[3] == b' '
        && d[6] == b' '
        && d[9] == b':'
        && d[12] == b':'
        && d[15] == b' '
    {
        d = &d[16..];
    }
    (pri, d)
}

async fn run_async(opts: Options, log: Log) -> Result<()> {
    let mut stop = Stop::install().map_err(|e| io_err("SIGTERM/SIGINT handlers", e))?;
    if !opts.dir.is_dir() {
        return Err(Error::Usage(format!(
            "{}: not a directory (create it; containers mount it, e.g. -v {}:/dev/log.d)",
            opts.dir.display(),
            opts.dir.display()
        )));
    }
    let Some(engine) = stop.connect(opts.host.as_deref()).await? else {
        return Ok(());
    };
    let pipe = Pipeline::start(&opts.pipe, log.clone())?;
    let wlog = log.clone();
    let watcher = Watcher::spawn(engine.clone(), ProcRoot::real(), true, move |m| wlog(m));
    // Containers the inventory did not list yet (a sender that logs at once after its start).
    let mut inspected: HashMap<String, Option<whittle_engine::Container>> = HashMap::new();
    let path = opts.dir.join("log");
    let (mut sock, mut ino) = bind(&path)?;
    log(&format!(
        "listening on {} (mount {} into containers); shipping to {}",
        path.display(),
        opts.dir.display(),
        opts.pipe.to
    ));
    let mut seq = crate::now_ns();
    let mut buf = vec![0u8; 256 << 10];
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut known: HashMap<u32, Option<String>> = HashMap::new();
    let mut failed = pipe.failed.clone();
    let result = loop {
        tokio::select! {
            r = sock.async_io(Interest::READABLE, || recv_cred(sock.as_raw_fd(), &mut buf)) => {
                let (n, pid) = match r {
                    Ok(x) => x,
                    Err(e) => { log(&format!("{}: receive failed: {e}", path.display())); continue; }
                };
                let n = n.min(buf.len());
                let (pri, msg) = parse_datagram(&buf[..n]);
                // The pid's cgroup, read now: a short-lived sender may be gone a moment later.
                let id = pid.and_then(|p| {
                    if known.len() > 4096 { known.clear(); }
                    known.entry(p).or_insert_with(|| {
                        std::fs::read_to_string(format!("/proc/{p}/cgroup")).ok().and_then(|t| container_of(&t))
                    }).clone()
                });
                let inv = watcher.current();
                let mut c = id.as_ref().and_then(|i| inv.containers.get(i)).cloned();
                if c.is_none() {
                    if let Some(i) = &id {
                        if !inspected.contains_key(i) {
                            if inspected.len() > 1024 { inspected.clear(); }
                            let got = engine.inspect(i, &ProcRoot::real()).await.ok().flatten();
                            inspected.insert(i.clone(), got);
                        }
                        c = inspected.get(i).cloned().flatten();
                    }
                }
                let c = c.as_ref();
                seq += 1;
                let rec = Record {
                    id: id.clone().unwrap_or_default(),
                    name: c.map(|c| c.name.clone()).unwrap_or_else(|| if id.is_some() { String::new() } else { "host".into() }),
                    image: c.map(|c| c.image.clone()).unwrap_or_default(),
                    service: c.and_then(|c| c.swarm_service.clone()),
                    task: c.and_then(|c| c.swarm_task.clone()),
                    source: Source::Devlog,
                    pri,
                    ts_ns: crate::now_ns(),
                    seq,
                    part: 0,
                    more: false,
                    no_newline: false,
                    pid,
                    msg: msg.to_vec(),
                };
                let permit = crate::pipeline::permit(&pipe.budget, rec.msg.len()).await;
                if pipe.tx.send(Item::Record(rec, permit)).await.is_err() {
                    break Ok(());
                }
            }
            _ = check.tick() => {
                let now = std::fs::metadata(&path).map(|m| m.ino()).ok();
                if now != Some(ino) {
                    let (s, i) = bind(&path)?;
                    sock = s;
                    ino = i;
                    log(&format!("{}: the socket was removed or replaced; recreated it (containers mounting the directory see the new one)", path.display()));
                }
            }
            _ = failed.changed() => {
                let cause = failed.borrow().clone().unwrap_or_default();
                break Err(Error::Usage(format!("stopped: {cause}")));
            }
            s = stop.recv() => { log(&format!("{s}: stopping")); break Ok(()); }
        }
    };
    drop(watcher);
    let _ = std::fs::remove_file(&path);
    pipe.shutdown().await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "a".repeat(64);
        assert_eq!(
            container_of(&format!("12:memory:/docker/{id}\n")),
            Some(id.clone())
        );
        assert_eq!(
            container_of(&format!("0::/system.slice/docker-{id}.scope\n")),
            Some(id)
        );
        assert_eq!(container_of("0::/user.slice\n"), None);
    }

    #[test]
    fn datagram_pri_and_timestamp() {
        let (p, m) = parse_datagram(b"<14>Dec  4 18:00:00 app[7]: hello\n");
        assert_eq!(p, Some(14));
        assert_eq!(m, b"app[7]: hello");
        let (p, m) = parse_datagram(b"plain");
        assert_eq!((p, m), (None, &b"plain"[..]));
    }
}
