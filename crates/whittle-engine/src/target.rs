//! What a runtime command points at: a container by name or id, a Swarm service (its running
//! task on this node), or any process by pid. Every runtime command that takes a TARGET
//! resolves it here, so `whittle debug web`, `whittle debug pid:4242` and later commands agree
//! on what `web` means.

use std::collections::HashMap;

use bollard::query_parameters::ListContainersOptionsBuilder;

use crate::procfs::ProcRoot;
use crate::{Container, Engine, Error, Result};

/// A target as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `pid:N`: a process, whatever started it (containerd, LXC, nspawn, unshare).
    Pid(u32),
    /// A container name or id, or a Swarm service or task name.
    Name(String),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(p) = s.strip_prefix("pid:") {
            return match p.parse::<u32>() {
                Ok(n) if n > 0 => Ok(Self::Pid(n)),
                _ => Err(format!("`{s}`: pid:N needs a positive process id")),
            };
        }
        if s.is_empty() {
            return Err("empty target: pass a container name or id, a service, or pid:N".into());
        }
        Ok(Self::Name(s.to_string()))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pid(p) => write!(f, "pid:{p}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// A resolved target: the container when there is one, and the main process while it runs.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub target: Target,
    pub container: Option<Container>,
    pub pid: Option<u32>,
}

impl Resolved {
    /// How to name it in messages: `name (id)` or `pid:N`.
    pub fn describe(&self) -> String {
        match &self.container {
            Some(c) => format!("container {} ({})", c.name, c.short_id()),
            None => self.target.to_string(),
        }
    }
}

impl Target {
    /// Resolves without an engine: only `pid:N` can be, the others need [`Target::resolve`].
    pub fn resolve_pid(&self, proc: &ProcRoot) -> Option<Result<Resolved>> {
        let Self::Pid(pid) = self else {
            return None;
        };
        let p = proc.path(format!("/proc/{pid}"));
        Some(if p.is_dir() {
            Ok(Resolved {
                target: self.clone(),
                container: None,
                pid: Some(*pid),
            })
        } else {
            Err(Error::Proc {
                path: p.display().to_string(),
                cause: format!("no process {pid}"),
            })
        })
    }

    /// Resolves a name: a container first (what `docker inspect` finds: name, id or id prefix),
    /// else a Swarm service or task whose task container runs on this node.
    pub async fn resolve(&self, engine: &Engine, proc: &ProcRoot) -> Result<Resolved> {
        if let Some(r) = self.resolve_pid(proc) {
            return r;
        }
        let Self::Name(name) = self else {
            unreachable!("pid targets return above");
        };
        if let Some(c) = engine.inspect(name, proc).await? {
            return Ok(self.with(c));
        }
        // A service, a task by its full name or id, or `SERVICE.SLOT` as `docker service ps`
        // shows it (the task name is `SERVICE.SLOT.TASKID`).
        let slot = name
            .rsplit_once('.')
            .filter(|(svc, n)| !svc.is_empty() && n.parse::<u32>().is_ok());
        let mut queries = vec![
            ("com.docker.swarm.service.name", name.as_str(), None),
            ("com.docker.swarm.task.name", name.as_str(), None),
            ("com.docker.swarm.task.id", name.as_str(), None),
        ];
        if let Some((svc, _)) = slot {
            queries.push((
                "com.docker.swarm.service.name",
                svc,
                Some(format!("{name}.")),
            ));
        }
        for (label, value, task_prefix) in queries {
            let filters = HashMap::from([
                ("label".to_string(), vec![format!("{label}={value}")]),
                ("status".to_string(), vec!["running".to_string()]),
            ]);
            let opts = ListContainersOptionsBuilder::new()
                .filters(&filters)
                .build();
            let list = engine
                .docker()
                .list_containers(Some(opts))
                .await
                .map_err(|e| engine.api(&format!("list tasks of {name}"), e))?;
            // Several replicas on this node: the oldest is the stable choice between calls.
            let mut ids: Vec<(i64, String)> = list
                .into_iter()
                .filter(|c| {
                    task_prefix.as_deref().is_none_or(|p| {
                        c.labels
                            .as_ref()
                            .and_then(|l| l.get("com.docker.swarm.task.name"))
                            .is_some_and(|t| t.starts_with(p))
                    })
                })
                .filter_map(|c| Some((c.created.unwrap_or(0), c.id?)))
                .collect();
            ids.sort();
            if let Some((_, id)) = ids.first() {
                if let Some(c) = engine.inspect(id, proc).await? {
                    return Ok(self.with(c));
                }
            }
        }
        Err(Error::NotFound {
            host: engine.host().to_string(),
            target: name.clone(),
        })
    }

    fn with(&self, c: Container) -> Resolved {
        Resolved {
            target: self.clone(),
            pid: c.pid,
            container: Some(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pids_and_names() {
        assert_eq!("pid:42".parse::<Target>(), Ok(Target::Pid(42)));
        assert!("pid:0".parse::<Target>().is_err());
        assert!("pid:x".parse::<Target>().is_err());
        assert!("".parse::<Target>().is_err());
        assert_eq!("web".parse::<Target>(), Ok(Target::Name("web".into())));
        assert_eq!(Target::Pid(7).to_string(), "pid:7");
    }

    #[test]
    fn pid_targets_resolve_from_proc() {
        let me = std::process::id();
        let r = Target::Pid(me)
            .resolve_pid(&ProcRoot::real())
            .unwrap()
            .unwrap();
        assert_eq!(r.pid, Some(me));
        let dir = tempfile::tempdir().unwrap();
        assert!(Target::Pid(1)
            .resolve_pid(&ProcRoot::at(dir.path()))
            .unwrap()
            .is_err());
        assert!(Target::Name("x".into())
            .resolve_pid(&ProcRoot::real())
            .is_none());
    }
}
