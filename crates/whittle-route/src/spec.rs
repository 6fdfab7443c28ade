//! What a container asks for: its routes (`whittle.route`) and, without a HEALTHCHECK, how to
//! tell that it is ready (`org.whittle.probe.*`, which `whittle build` writes into slim images).

use std::collections::BTreeMap;
use std::time::Duration;

/// The routing label: `SERVICE:LISTEN_PORT[:CONTAINER_PORT]`, several comma-separated.
pub const ROUTE_LABEL: &str = "whittle.route";
/// `PORT[/PATH]`: an HTTP GET that must answer 2xx or 3xx.
pub const PROBE_HTTP: &str = "org.whittle.probe.http";
/// `PORT`: a TCP connect that must succeed.
pub const PROBE_TCP: &str = "org.whittle.probe.tcp";
/// How many successes in a row make the container ready (default 2).
pub const PROBE_SUCCESSES: &str = "org.whittle.probe.successes";
/// Time between attempts (default 500ms).
pub const PROBE_INTERVAL: &str = "org.whittle.probe.interval";

/// One route of a container: HAProxy listens on LISTEN_PORT for SERVICE and forwards to the
/// container's CONTAINER_PORT.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub service: String,
    pub listen_port: u16,
    pub container_port: u16,
}

/// A service name HAProxy accepts as a proxy name and that reads well in a server line.
fn valid_service(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Parses the routing label; the error names the entry and what is wrong with it.
pub fn parse_routes(label: &str) -> Result<Vec<Route>, String> {
    let mut out = Vec::new();
    for entry in label.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split(':').collect();
        let port = |p: &str| -> Result<u16, String> {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{ROUTE_LABEL} entry {entry:?}: {p:?} is not a port"))
        };
        let (service, listen, target) = match parts.as_slice() {
            [s, l] => (*s, port(l)?, port(l)?),
            [s, l, c] => (*s, port(l)?, port(c)?),
            _ => {
                return Err(format!(
                    "{ROUTE_LABEL} entry {entry:?}: expected SERVICE:LISTEN_PORT[:CONTAINER_PORT]"
                ))
            }
        };
        if !valid_service(service) {
            return Err(format!(
                "{ROUTE_LABEL} entry {entry:?}: the service name may hold only letters, digits, '-', '_' and '.'"
            ));
        }
        out.push(Route {
            service: service.to_string(),
            listen_port: listen,
            container_port: target,
        });
    }
    if out.is_empty() {
        return Err(format!("{ROUTE_LABEL}={label:?}: no route in it"));
    }
    Ok(out)
}

/// How whittle tells from outside that a container without a HEALTHCHECK is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub successes: u32,
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// GET `path` on container port `port`.
    Http { port: u16, path: String },
    /// Connect to container port `port`.
    Tcp { port: u16 },
}

impl Probe {
    /// The container port the probe reaches.
    pub fn port(&self) -> u16 {
        match &self.kind {
            ProbeKind::Http { port, .. } | ProbeKind::Tcp { port } => *port,
        }
    }
}

/// The probe from the labels; without probe labels a TCP connect to `default_port` (the first
/// route's container port). Errors name the label.
pub fn probe(labels: &BTreeMap<String, String>, default_port: u16) -> Result<Probe, String> {
    let successes = match labels.get(PROBE_SUCCESSES) {
        None => 2,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| format!("{PROBE_SUCCESSES}={v:?}: expected a count from 1 to 100"))?,
    };
    let interval = match labels.get(PROBE_INTERVAL) {
        None => Duration::from_millis(500),
        Some(v) => humantime::parse_duration(v)
            .ok()
            .filter(|d| *d >= Duration::from_millis(50))
            .ok_or_else(|| {
                format!("{PROBE_INTERVAL}={v:?}: expected a duration of 50ms or more")
            })?,
    };
    let kind = if let Some(v) = labels.get(PROBE_HTTP) {
        let (port, path) = match v.find('/') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v.as_str(), "/"),
        };
        let port = port
            .parse()
            .map_err(|_| format!("{PROBE_HTTP}={v:?}: expected PORT[/PATH]"))?;
        ProbeKind::Http {
            port,
            path: path.to_string(),
        }
    } else if let Some(v) = labels.get(PROBE_TCP) {
        ProbeKind::Tcp {
            port: v
                .parse()
                .map_err(|_| format!("{PROBE_TCP}={v:?}: expected a port"))?,
        }
    } else {
        ProbeKind::Tcp { port: default_port }
    };
    Ok(Probe {
        kind,
        successes,
        interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            parse_routes("web:8080, api:9000:80").unwrap(),
            vec![
                Route {
                    service: "web".into(),
                    listen_port: 8080,
                    container_port: 8080
                },
                Route {
                    service: "api".into(),
                    listen_port: 9000,
                    container_port: 80
                }
            ]
        );
        assert!(parse_routes("web")
            .unwrap_err()
            .contains("expected SERVICE"));
        assert!(parse_routes("web:0").unwrap_err().contains("not a port"));
        assert!(parse_routes("we b:80")
            .unwrap_err()
            .contains("service name"));
        assert!(parse_routes("").is_err());
    }

    #[test]
    fn probes() {
        let mut l = BTreeMap::new();
        assert_eq!(probe(&l, 80).unwrap().kind, ProbeKind::Tcp { port: 80 });
        l.insert(PROBE_HTTP.to_string(), "8080/health".to_string());
        l.insert(PROBE_SUCCESSES.to_string(), "3".to_string());
        let p = probe(&l, 80).unwrap();
        assert_eq!(
            p.kind,
            ProbeKind::Http {
                port: 8080,
                path: "/health".into()
            }
        );
        assert_eq!(p.successes, 3);
        l.insert(PROBE_INTERVAL.to_string(), "soon".to_string());
        assert!(probe(&l, 80).unwrap_err().contains(PROBE_INTERVAL));
    }
}
