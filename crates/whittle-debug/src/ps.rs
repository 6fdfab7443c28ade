//! `whittle ps`: what can be a debug target, and whether its image is a whittle slim image.

use std::collections::HashMap;

use bollard::query_parameters::ListContainersOptionsBuilder;
use whittle_engine::procfs::ProcRoot;
use whittle_engine::Engine;

use crate::toolbox::image_labels;
use crate::{Error, Result};

/// One row of `whittle ps` (schema `whittle.ps/v1`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub name: String,
    pub id: String,
    pub image: String,
    pub image_id: String,
    /// True when the image config carries whittle's `org.whittle.source` label.
    pub slim: bool,
    /// The slim image's source image id (`org.whittle.source`).
    pub source: Option<String>,
    /// The whittle version that built the slim image (`org.whittle.version`).
    pub whittle_version: Option<String>,
    pub state: String,
    pub pid: Option<u32>,
    /// Published and exposed ports, `docker ps` style: `127.0.0.1:8080->80/tcp`, `443/tcp`.
    pub ports: Vec<String>,
    pub health: Option<String>,
    pub swarm_service: Option<String>,
}

/// The containers (running only unless `all`), sorted by name.
pub async fn rows(engine: &Engine, all: bool) -> Result<Vec<Row>> {
    let proc = ProcRoot::real();
    let opts = ListContainersOptionsBuilder::new().all(all).build();
    let list = engine
        .docker()
        .list_containers(Some(opts))
        .await
        .map_err(|e| Error::Target {
            target: engine.host().to_string(),
            cause: format!("list containers: {e}"),
        })?;
    let mut labels: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut out = Vec::new();
    for summary in list {
        let Some(id) = summary.id.as_deref() else {
            continue;
        };
        let Some(c) = engine.inspect(id, &proc).await? else {
            continue;
        };
        if !labels.contains_key(&c.image_id) {
            let l = image_labels(engine, &c.image_id).await?.unwrap_or_default();
            labels.insert(c.image_id.clone(), l);
        }
        let l = &labels[&c.image_id];
        let mut ports: Vec<String> = summary
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let typ = p.typ.map(|t| t.to_string()).unwrap_or_else(|| "tcp".into());
                match (p.ip.filter(|i| !i.is_empty()), p.public_port) {
                    (Some(ip), Some(pp)) => format!("{ip}:{pp}->{}/{typ}", p.private_port),
                    _ => format!("{}/{typ}", p.private_port),
                }
            })
            .collect();
        ports.sort();
        ports.dedup();
        out.push(Row {
            slim: l.contains_key("org.whittle.source"),
            source: l.get("org.whittle.source").cloned(),
            whittle_version: l.get("org.whittle.version").cloned(),
            name: c.name,
            id: c.id,
            image: c.image,
            image_id: c.image_id,
            state: c.state,
            pid: c.pid,
            ports,
            health: c.health,
            swarm_service: c.swarm_service,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
