//! `--attach SOCKET`: an HAProxy someone else started, with its own config, driven through
//! its stats socket only. whittle cannot write that config or reload it, so before it touches
//! a backend it asks whether `add server` can work there at all.
//!
//! What HAProxy 2.6 refuses, tried against the real binary: `add server` answers "Backend must
//! use a dynamic load balancing to support dynamic servers." for `balance static-rr` and for
//! every hash algorithm (`source`, `uri`, `url_param`, `hdr()`, `rdp-cookie`) with the default
//! map-based hashing; `roundrobin`, `leastconn`, `first`, `random` and any hash with
//! `hash-type consistent` take dynamic servers. The runtime API reports the algorithm (`show
//! stat`, column `algo`) but not the hash type, so for a hash a trial server answers the
//! question exactly. A backend whose servers come from DNS (`default-server ... resolvers`,
//! `server-template`) is refused too: its membership already belongs to the resolvers.

use std::collections::{BTreeMap, BTreeSet};

use crate::haproxy::{ServerState, Socket};
use crate::Result;

/// The trial server's name: not `ID12-PORT`, so no whittle ever adopts it.
const TRIAL: &str = "whittle-fitcheck";

/// Algorithms `add server` always accepts (`random` is reported as `unknown` by 2.6).
const DYNAMIC: [&str; 4] = ["roundrobin", "leastconn", "first", "unknown"];

/// The backends `show backend` lists.
pub fn parse_backends(out: &str) -> BTreeSet<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Backend → balancing algorithm, from `show stat -1 2 -1` (the `algo` column of the
/// BACKEND lines, found by its name in the header).
pub fn parse_algos(out: &str) -> BTreeMap<String, String> {
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default().trim_start_matches("# ");
    let Some(col) = header.split(',').position(|h| h == "algo") else {
        return BTreeMap::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            if f.get(1) != Some(&"BACKEND") {
                return None;
            }
            Some((f[0].to_string(), f.get(col)?.to_string()))
        })
        .collect()
}

/// The `Pid:` of `show info`: the worker that answers on the socket.
pub fn parse_pid(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|p| p.trim().parse().ok())
}

/// Why `backend` cannot take the servers whittle adds, or `None` when it can.
pub async fn unfit(
    admin: &mut Socket,
    backend: &str,
    algo: Option<&str>,
    servers: &[ServerState],
) -> Result<Option<String>> {
    if let Some(s) = servers
        .iter()
        .find(|s| s.backend == backend && s.fqdn.is_some())
    {
        return Ok(Some(format!(
            "server {} is resolved from the name {} through DNS resolvers (`default-server \
             ... resolvers` or `server-template`): the resolvers own this backend's membership",
            s.name,
            s.fqdn.as_deref().unwrap_or_default()
        )));
    }
    let algo = algo.unwrap_or("unknown");
    if algo == "static-rr" {
        return Ok(Some(
            "balance static-rr is a static algorithm: HAProxy refuses `add server` there \
             (roundrobin, leastconn, first, random or a hash with `hash-type consistent` work)"
                .to_string(),
        ));
    }
    if DYNAMIC.contains(&algo) {
        return Ok(None);
    }
    // A hash: dynamic only with `hash-type consistent`, which the runtime API does not show.
    // The trial server starts in maint (dynamic servers always do) and goes at once; one a
    // killed whittle left behind goes first (no such server is the usual answer).
    admin
        .command(&format!("del server {backend}/{TRIAL}"))
        .await?;
    let reply = admin
        .command(&format!("add server {backend}/{TRIAL} 127.0.0.1:1"))
        .await?;
    if reply.contains("registered") {
        admin.ok(&format!("del server {backend}/{TRIAL}")).await?;
        return Ok(None);
    }
    Ok(Some(format!(
        "balance {algo} with map-based hashing (the default hash-type) is static, and HAProxy \
         refused a trial `add server`: {} (`hash-type consistent` makes it dynamic)",
        reply.lines().next().unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_algos_and_pid() {
        assert_eq!(
            parse_backends("# name\nweb\nstatic\n"),
            BTreeSet::from(["web".to_string(), "static".to_string()])
        );
        // The real layout of 2.6: algo is column 77 of a long header.
        let mut header = vec!["pxname", "svname"];
        header.extend(["x"; 74]);
        header.push("algo");
        let row = |px: &str, sv: &str, algo: &str| {
            let mut r = vec![px, sv];
            r.extend(["0"; 74]);
            r.push(algo);
            r.join(",")
        };
        let out = format!(
            "# {}\n{}\n{}\n{}\n",
            header.join(","),
            row("web", "BACKEND", "roundrobin"),
            row("web", "abc-80", ""),
            row("old", "BACKEND", "static-rr"),
        );
        assert_eq!(
            parse_algos(&out),
            BTreeMap::from([
                ("web".to_string(), "roundrobin".to_string()),
                ("old".to_string(), "static-rr".to_string())
            ])
        );
        assert_eq!(
            parse_pid("Name: HAProxy\nPid: 4242\nUptime: 1s\n"),
            Some(4242)
        );
    }
}
