//! One container as the runtime commands need it: the engine's facts plus the kernel's.

use std::collections::BTreeMap;

use bollard::models::ContainerInspectResponse;

use crate::procfs::{Cgroups, ProcRoot};

/// How a container's network namespace was set up (`HostConfig.NetworkMode`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "of")]
pub enum NetworkMode {
    /// Its own namespace on the default bridge or a named network.
    Private,
    /// The host's namespace: its counters are the host's.
    Host,
    /// Another container's namespace (`container:ID`).
    Container(String),
    /// Only a loopback interface.
    None,
}

impl NetworkMode {
    fn parse(mode: &str) -> Self {
        match mode {
            "host" => Self::Host,
            "none" => Self::None,
            m => match m.strip_prefix("container:") {
                Some(id) => Self::Container(id.to_string()),
                None => Self::Private,
            },
        }
    }
}

/// A container: identity, state, and — while it runs — its pid, cgroups and netns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Container {
    pub id: String,
    /// The name without Docker's leading `/`.
    pub name: String,
    /// The image as the container was created from it (`Config.Image`: a name or an id).
    pub image: String,
    /// The image id (`sha256:…`).
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    /// `running`, `exited`, `paused`, …
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`; `None` without a HEALTHCHECK.
    pub health: Option<String>,
    /// The main process on the host (0 is never stored: `None` when not running).
    pub pid: Option<u32>,
    pub started_at: String,
    pub network_mode: NetworkMode,
    /// Network name → IPv4 address (empty addresses left out).
    pub networks: BTreeMap<String, String>,
    /// Container TCP port → the host addresses it is published on (`-p`, Swarm host mode).
    pub published: BTreeMap<u16, Vec<PublishedPort>>,
    /// `com.docker.swarm.service.name` / `com.docker.swarm.task.name`, for Swarm tasks.
    pub swarm_service: Option<String>,
    pub swarm_task: Option<String>,
    pub oom_killed: bool,
    /// Read from `/proc/PID/cgroup` when the container runs.
    pub cgroups: Option<Cgroups>,
    /// Inode of the network namespace (`/proc/PID/ns/net`) when the container runs.
    pub netns: Option<u64>,
}

impl Container {
    /// The first 12 hex digits of the id, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    pub fn is_running(&self) -> bool {
        self.state == "running" || self.state == "paused"
    }

    pub(crate) fn from_inspect(r: ContainerInspectResponse, proc: &ProcRoot) -> Self {
        let config = r.config.unwrap_or_default();
        let state = r.state.unwrap_or_default();
        let labels: BTreeMap<String, String> =
            config.labels.unwrap_or_default().into_iter().collect();
        let pid = state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        let network_mode = NetworkMode::parse(
            r.host_config
                .as_ref()
                .and_then(|h| h.network_mode.as_deref())
                .unwrap_or("default"),
        );
        let published = r
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref())
            .map(published_ports)
            .unwrap_or_default();
        let networks = r
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(net, ep)| {
                ep.ip_address
                    .filter(|ip| !ip.is_empty())
                    .map(|ip| (net, ip))
            })
            .collect();
        // A process can exit between the inspect and these reads: then the container is
        // reported without kernel facts rather than failing the whole listing.
        let cgroups = pid.and_then(|p| proc.cgroups(p).ok());
        let netns = pid.and_then(|p| proc.netns(p).ok());
        Self {
            id: r.id.unwrap_or_default(),
            name: r
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: config.image.unwrap_or_default(),
            image_id: r.image.unwrap_or_default(),
            swarm_service: labels.get("com.docker.swarm.service.name").cloned(),
            swarm_task: labels.get("com.docker.swarm.task.name").cloned(),
            labels,
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            pid,
            started_at: state.started_at.unwrap_or_default(),
            network_mode,
            networks,
            published,
            oom_killed: state.oom_killed.unwrap_or(false),
            cgroups,
            netns,
        }
    }
}

/// One host address a container port is published on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PublishedPort {
    /// The host IP (`0.0.0.0` when published on every address).
    pub host_ip: String,
    pub host_port: u16,
}

fn published_ports(ports: &bollard::models::PortMap) -> BTreeMap<u16, Vec<PublishedPort>> {
    let mut out: BTreeMap<u16, Vec<PublishedPort>> = BTreeMap::new();
    for (key, bindings) in ports {
        let Some(port) = key.strip_suffix("/tcp").and_then(|p| p.parse().ok()) else {
            continue;
        };
        for b in bindings.iter().flatten() {
            let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse().ok()) else {
                continue;
            };
            let host_ip = match b.host_ip.as_deref() {
                None | Some("") => "0.0.0.0".to_string(),
                Some(ip) => ip.to_string(),
            };
            out.entry(port)
                .or_default()
                .push(PublishedPort { host_ip, host_port });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes() {
        assert_eq!(NetworkMode::parse("host"), NetworkMode::Host);
        assert_eq!(NetworkMode::parse("default"), NetworkMode::Private);
        assert_eq!(NetworkMode::parse("bridge"), NetworkMode::Private);
        assert_eq!(NetworkMode::parse("mynet"), NetworkMode::Private);
        assert_eq!(
            NetworkMode::parse("container:abc"),
            NetworkMode::Container("abc".into())
        );
        assert_eq!(NetworkMode::parse("none"), NetworkMode::None);
    }
}
