//! Swarm services as the runtime commands need them: a task's container carries only the
//! container labels of its service spec, while users put routing and other settings on the
//! service itself (`docker service create --label`). One inspect per service, kept by the caller.

use std::collections::BTreeMap;

use bollard::query_parameters::InspectServiceOptions;

use crate::{Engine, Result};

/// The service a task container belongs to (`com.docker.swarm.service.id`), if any.
pub fn service_id(c: &crate::Container) -> Option<&str> {
    c.labels
        .get("com.docker.swarm.service.id")
        .map(String::as_str)
}

impl Engine {
    /// The labels of Swarm service `id` (its spec's labels, not its tasks' container labels).
    /// `Ok(None)` when the service is gone.
    pub async fn service_labels(&self, id: &str) -> Result<Option<BTreeMap<String, String>>> {
        match self
            .docker()
            .inspect_service(id, None::<InspectServiceOptions>)
            .await
        {
            Ok(s) => Ok(Some(
                s.spec
                    .and_then(|s| s.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            )),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.api(&format!("inspect service {id}"), e)),
        }
    }
}
