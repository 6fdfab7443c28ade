//! The haproxy.cfg whittle writes: one frontend and one backend per service, and — so that a
//! reload (only ever for a new service) starts the new worker with the membership the old one
//! had — every current server written into it with its state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// A server line's settings. `add server` does not inherit `default-server` (HAProxy 2.6), so
/// whittle never uses one: the same explicit words go into the config and into `add server`.
pub const SERVER_PARAMS: &str =
    "check inter 2s fastinter 500ms downinter 1s rise 2 fall 2 weight 100 maxconn 0";

/// One server as written into the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    pub name: String,
    pub addr: String,
    /// Out of rotation (`disabled`): not ready yet.
    pub disabled: bool,
}

/// Everything the config holds.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Service → listen port.
    pub services: BTreeMap<String, u16>,
    /// Service → its servers.
    pub servers: BTreeMap<String, Vec<ServerLine>>,
}

pub fn render(layout: &Layout, bind: &str, state_dir: &Path) -> String {
    let admin = state_dir.join(crate::ADMIN_SOCKET);
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Written by whittle route; rewritten when a service appears."
    );
    let _ = writeln!(c, "global");
    let _ = writeln!(c, "    master-worker");
    // expose-fd listeners: a reload's new worker takes the listening sockets from the old
    // one, so no connection is refused while the two swap.
    let _ = writeln!(
        c,
        "    stats socket {} mode 600 level admin expose-fd listeners",
        admin.display()
    );
    let _ = writeln!(c, "    stats timeout 30s");
    // An old worker finishes its in-flight requests after a reload, but not forever.
    let _ = writeln!(c, "    hard-stop-after 60s");
    let _ = writeln!(c, "    maxconn 4096");
    let _ = writeln!(c);
    let _ = writeln!(c, "defaults");
    let _ = writeln!(c, "    mode http");
    let _ = writeln!(c, "    timeout connect 2s");
    let _ = writeln!(c, "    timeout client 60s");
    let _ = writeln!(c, "    timeout server 60s");
    let _ = writeln!(c, "    timeout queue 10s");
    let _ = writeln!(c, "    timeout http-keep-alive 10s");
    // A backend that went away between the decision and the connection: try another one, but
    // replay only what is safe to replay (HAProxy's L7 retries apply to idempotent methods).
    let _ = writeln!(c, "    retries 3");
    let _ = writeln!(c, "    option redispatch 1");
    let _ = writeln!(
        c,
        "    retry-on conn-failure empty-response response-timeout"
    );
    // No idle server connections: `del server` waits for zero of them, and a pooled
    // connection to a container that just died would fail the next request.
    let _ = writeln!(c, "    option http-server-close");
    for (svc, port) in &layout.services {
        let _ = writeln!(c);
        let _ = writeln!(c, "frontend {svc}");
        let _ = writeln!(c, "    bind {bind}:{port}");
        let _ = writeln!(c, "    default_backend {svc}");
        let _ = writeln!(c);
        let _ = writeln!(c, "backend {svc}");
        // roundrobin: a dynamic algorithm, which `add server` requires.
        let _ = writeln!(c, "    balance roundrobin");
        for s in layout.servers.get(svc).into_iter().flatten() {
            let _ = writeln!(
                c,
                "    server {} {} {SERVER_PARAMS}{}",
                s.name,
                s.addr,
                if s.disabled { " disabled" } else { "" }
            );
        }
    }
    c
}

/// The services (frontend name → listen port) of a config [`render`] wrote.
pub fn services_in(path: &Path) -> BTreeMap<String, u16> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut frontend = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(name) = l.strip_prefix("frontend ") {
            frontend = Some(name.trim().to_string());
        } else if let (Some(name), Some(bind)) = (&frontend, l.strip_prefix("bind ")) {
            if let Some(port) = bind.rsplit(':').next().and_then(|p| p.trim().parse().ok()) {
                out.insert(name.clone(), port);
            }
            frontend = None;
        } else if !line.starts_with(' ') {
            frontend = None;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_services_and_servers() {
        let mut l = Layout::default();
        l.services.insert("web".into(), 8080);
        l.servers.insert(
            "web".into(),
            vec![ServerLine {
                name: "abc-80".into(),
                addr: "127.0.0.1:32768".into(),
                disabled: true,
            }],
        );
        let c = render(&l, "127.0.0.1", Path::new("/run/w"));
        assert!(c.contains("frontend web\n    bind 127.0.0.1:8080\n"));
        assert!(c.contains("balance roundrobin"));
        assert!(c.contains(&format!(
            "server abc-80 127.0.0.1:32768 {SERVER_PARAMS} disabled\n"
        )));
        assert!(c.contains("stats socket /run/w/admin.sock"));
        assert!(!c.contains("default-server"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("h.cfg"), &c).unwrap();
        assert_eq!(
            services_in(&dir.path().join("h.cfg")),
            BTreeMap::from([("web".to_string(), 8080)])
        );
    }
}
