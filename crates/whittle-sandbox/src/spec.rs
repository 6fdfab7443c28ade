//! What to run, decided from the image config the way an engine decides it: Entrypoint + Cmd,
//! Env (with a default `PATH`, `HOSTNAME` and `HOME`), WorkingDir, User looked up in the
//! image's own `/etc/passwd` and `/etc/group`, StopSignal, exposed TCP ports.

use std::io::Read;

use serde::Serialize;
use whittle_fstree::{ContentStore, FsTree, NodeKind};
use whittle_image::ConfigView;

use crate::{Error, Result};

/// Docker's default `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Serialize)]
pub struct RunSpec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub hostname: String,
    pub stop_signal: i32,
    pub stop_signal_name: String,
    pub exposed_tcp: Vec<u16>,
}

impl RunSpec {
    /// `command` replaces Cmd (as `docker run IMAGE ARGS…` does).
    pub fn from_config(
        view: &ConfigView,
        tree: &FsTree,
        store: &ContentStore,
        command: Option<Vec<String>>,
        hostname: String,
    ) -> Result<RunSpec> {
        let mut argv = view.entrypoint.clone().unwrap_or_default();
        argv.extend(command.or_else(|| view.cmd.clone()).unwrap_or_default());
        if argv.is_empty() {
            return Err(Error::NoCommand);
        }
        let user = view.user.clone().unwrap_or_default();
        let (uid, gid, groups, home) = resolve_user(&user, tree, store)?;
        let mut env = view.env.clone().unwrap_or_default();
        let has = |env: &Vec<String>, k: &str| {
            env.iter()
                .any(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
        };
        if !has(&env, "PATH") {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        if !has(&env, "HOSTNAME") {
            env.insert(1, format!("HOSTNAME={hostname}"));
        }
        if !has(&env, "HOME") {
            env.push(format!("HOME={home}"));
        }
        let cwd = match view.working_dir.as_deref() {
            Some(d) if !d.is_empty() => d.to_string(),
            _ => "/".to_string(),
        };
        let (stop_signal, stop_signal_name) =
            parse_signal(view.stop_signal.as_deref().unwrap_or("SIGTERM"))?;
        let mut exposed_tcp = Vec::new();
        for k in view.exposed_ports.iter().flat_map(|m| m.keys()) {
            let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
            if proto == "tcp" {
                if let Ok(p) = port.parse() {
                    exposed_tcp.push(p);
                }
            }
        }
        exposed_tcp.sort();
        Ok(RunSpec {
            argv,
            env,
            cwd,
            uid,
            gid,
            groups,
            hostname,
            stop_signal,
            stop_signal_name,
            exposed_tcp,
        })
    }
}

/// `SIGQUIT`, `QUIT` or `3`.
pub fn parse_signal(s: &str) -> Result<(i32, String)> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok((n, format!("{n}")));
        }
    }
    let name = s.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name).to_string();
    let n = match name.as_str() {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "WINCH" => libc::SIGWINCH,
        "STOP" => libc::SIGSTOP,
        "PWR" => libc::SIGPWR,
        "ABRT" => libc::SIGABRT,
        "ALRM" => libc::SIGALRM,
        _ => return Err(Error::Config(format!("unknown StopSignal {s:?}"))),
    };
    Ok((n, format!("SIG{name}")))
}

/// The name of a signal number, for reports.
pub fn signal_name(n: i32) -> String {
    let name = match n {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {n}"),
    };
    name.to_string()
}

fn read_image_file(tree: &FsTree, store: &ContentStore, path: &str) -> Option<String> {
    let n = tree.get(path.as_bytes())?;
    if !matches!(n.kind, NodeKind::File { .. }) {
        return None;
    }
    let mut s = String::new();
    store
        .open(n)
        .ok()?
        .take(16 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// `USER` as Docker reads it: `name`, `uid`, `name:group`, `uid:gid`; names looked up in the
/// image. Returns uid, gid, supplementary groups and home.
pub fn resolve_user(
    user: &str,
    tree: &FsTree,
    store: &ContentStore,
) -> Result<(u32, u32, Vec<u32>, String)> {
    let passwd = read_image_file(tree, store, "etc/passwd").unwrap_or_default();
    let group = read_image_file(tree, store, "etc/group").unwrap_or_default();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let found = entries
        .iter()
        .find(|f| f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u));
    let (uid, mut gid, name, home) = match (found, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse()
                .map_err(|_| Error::Config(format!("bad uid in /etc/passwd for {u}")))?,
            f[3].parse().unwrap_or(0),
            Some(f[0].to_string()),
            f[5].to_string(),
        ),
        (None, Ok(n)) => (n, 0, None, "/".to_string()),
        (None, Err(_)) => {
            return Err(Error::Config(format!(
                "unable to find user {u}: no matching entries in passwd file"
            )))
        }
    };
    let groups_of: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups_of
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    let mut groups = vec![gid];
    if let Some(name) = &name {
        for f in &groups_of {
            if f[3].split(',').any(|m| m == name) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if !groups.contains(&n) {
                        groups.push(n);
                    }
                }
            }
        }
    }
    let home = if home.is_empty() { "/".into() } else { home };
    Ok((uid, gid, groups, home))
}

/// Splits a command line into words: whitespace separates, single and double quotes group,
/// backslash escapes (a small subset of the shell, for `--exec-probe`).
pub fn split_words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(Error::Usage(format!("unclosed ' in {s:?}"))),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.extend(chars.next()),
                        Some(c) => cur.push(c),
                        None => return Err(Error::Usage(format!("unclosed \" in {s:?}"))),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_fstree::{Entry, EntryKind, Meta};

    fn tree_with(files: &[(&str, &str)]) -> (FsTree, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut entries = vec![Entry {
            path: b"etc".to_vec(),
            kind: EntryKind::Dir,
            meta: Meta::default(),
            header_size: 0,
        }];
        for (i, (p, c)) in files.iter().enumerate() {
            let host = dir.path().join(i.to_string());
            std::fs::write(&host, c).unwrap();
            entries.push(Entry {
                path: p.as_bytes().to_vec(),
                kind: EntryKind::HostFile {
                    size: c.len() as u64,
                    path: host,
                },
                meta: Meta::default(),
                header_size: 0,
            });
        }
        let mut t = FsTree::new(false);
        t.apply(0, &entries).unwrap();
        (t, dir)
    }

    #[test]
    fn users_like_docker() {
        let (t, _d) = tree_with(&[
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www:/var/www:/usr/sbin/nologin\n",
            ),
            ("etc/group", "root:x:0:\nwww-data:x:33:\nadm:x:4:www-data\n"),
        ]);
        let s = ContentStore::default();
        assert_eq!(
            resolve_user("", &t, &s).unwrap(),
            (0, 0, vec![0], "/root".into())
        );
        assert_eq!(
            resolve_user("www-data", &t, &s).unwrap(),
            (33, 33, vec![33, 4], "/var/www".into())
        );
        assert_eq!(
            resolve_user("1234:adm", &t, &s).unwrap(),
            (1234, 4, vec![4], "/".into())
        );
        let e = resolve_user("nobody2", &t, &s).unwrap_err().to_string();
        assert!(e.contains("unable to find user nobody2"), "{e}");
    }

    #[test]
    fn words_and_signals() {
        assert_eq!(
            split_words(r#"sh -c 'ls /x | wc' "a b" c\ d"#).unwrap(),
            ["sh", "-c", "ls /x | wc", "a b", "c d"]
        );
        assert_eq!(parse_signal("SIGQUIT").unwrap().0, libc::SIGQUIT);
        assert_eq!(parse_signal("term").unwrap().0, libc::SIGTERM);
        assert_eq!(parse_signal("9").unwrap().0, 9);
        assert!(parse_signal("SIGNOPE").is_err());
    }
}
