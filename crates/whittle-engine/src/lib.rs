//! The runtime side's view of running containers.
//!
//! Every runtime command (metrics, and later debug, route and logs) needs the same few facts about
//! a container — its id, name, image, labels, Swarm service, health, main pid, cgroups and network
//! namespace — and needs them to stay true while containers come and go. This crate is the one
//! place that talks to the Engine API for that ([`Engine`]), keeps an up-to-date inventory with the
//! subscribe-then-list discipline ([`watch`]), and reads what the kernel says about a pid
//! ([`procfs`]). It never reads container statistics from the Engine: those come from the kernel.

mod container;
mod error;
pub mod logstream;
pub mod procfs;
mod stop;
pub mod swarm;
pub mod target;
pub mod watch;

pub use container::{Container, NetworkMode, PublishedPort};
pub use error::{Error, Result};
pub use stop::Stop;
pub use target::{Resolved, Target};

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};

/// A connection to a Docker Engine API: `DOCKER_HOST` (or `--host`) or the default socket.
/// podman's Docker-compatible socket works the same way.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: bollard::Docker,
    host: String,
}

impl Engine {
    /// Connects to `host` (`unix:///path`, `tcp://addr:port`, or a bare socket path), else to
    /// `DOCKER_HOST`, else to `/var/run/docker.sock`. Nothing is sent until the first call.
    pub fn connect(host: Option<&str>) -> Result<Self> {
        let env_host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
        let host = host.map(str::to_string).or(env_host);
        let timeout = 120;
        let (docker, shown) = match host.as_deref() {
            None => (
                bollard::Docker::connect_with_unix(
                    "/var/run/docker.sock",
                    timeout,
                    bollard::API_DEFAULT_VERSION,
                ),
                "unix:///var/run/docker.sock".to_string(),
            ),
            Some(h) if h.starts_with("tcp://") || h.starts_with("http://") => (
                bollard::Docker::connect_with_http(h, timeout, bollard::API_DEFAULT_VERSION),
                h.to_string(),
            ),
            Some(h) => {
                let path = h.strip_prefix("unix://").unwrap_or(h);
                (
                    bollard::Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION),
                    format!("unix://{path}"),
                )
            }
        };
        let docker = docker.map_err(|e| Error::Connect {
            host: shown.clone(),
            cause: e.to_string(),
        })?;
        Ok(Self {
            docker,
            host: shown,
        })
    }

    /// Connects and agrees on an API version with the engine: Docker 20.10 speaks 1.41 and
    /// refuses a client that asks for a newer one.
    pub async fn connect_negotiated(host: Option<&str>) -> Result<Self> {
        let e = Self::connect(host)?;
        let host = e.host.clone();
        let docker = e
            .docker
            .negotiate_version()
            .await
            .map_err(|err| Error::Connect {
                host: host.clone(),
                cause: err.to_string(),
            })?;
        Ok(Self { docker, host })
    }

    /// Where this connection goes, for messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The bollard client, for the commands that need a call this crate does not wrap.
    pub fn docker(&self) -> &bollard::Docker {
        &self.docker
    }

    /// Ids of the containers the engine lists (`all`: stopped ones too), in the engine's order.
    pub async fn list_ids(&self, all: bool) -> Result<Vec<String>> {
        let opts = ListContainersOptionsBuilder::new().all(all).build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| self.api("list containers", e))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// One container, with its pid, cgroups and network namespace read from `/proc` when it is
    /// running. `Ok(None)` when the engine no longer knows it (removed meanwhile).
    pub async fn inspect(&self, id: &str, proc: &procfs::ProcRoot) -> Result<Option<Container>> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(r) => Ok(Some(Container::from_inspect(r, proc))),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.api(&format!("inspect {id}"), e)),
        }
    }

    /// Every container (running only unless `all`), inspected: one list call plus one inspect
    /// per container.
    pub async fn containers(&self, all: bool, proc: &procfs::ProcRoot) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        for id in self.list_ids(all).await? {
            if let Some(c) = self.inspect(&id, proc).await? {
                out.push(c);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The engine's version string (`docker version`'s server version), for reports.
    pub async fn server_version(&self) -> Result<String> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| self.api("version", e))?;
        Ok(v.version.unwrap_or_default())
    }

    pub(crate) fn api(&self, what: &str, e: bollard::errors::Error) -> Error {
        Error::Api {
            host: self.host.clone(),
            what: what.to_string(),
            cause: e.to_string(),
        }
    }
}

/// The event filter every watcher uses: container events, and network events (a container
/// connected to or disconnected from a network changes its addresses).
pub(crate) fn container_event_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "type".to_string(),
        vec!["container".to_string(), "network".to_string()],
    )])
}

/// How long a watcher waits before reconnecting after the event stream broke.
pub(crate) const RECONNECT_DELAY: Duration = Duration::from_millis(500);
