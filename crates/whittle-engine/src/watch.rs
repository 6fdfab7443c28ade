//! An inventory of containers that stays true while containers come and go.
//!
//! The discipline every watcher needs (DESIGN.md): the engine's event replay keeps only the last
//! 256 events and loses them when the daemon restarts, and a container started between a listing
//! and a subscription is otherwise missed (docker-gen#57). So each round notes a time T0, lists and
//! inspects everything, then subscribes to events *since T0* — anything that happened during the
//! listing is replayed — and applies each event with at most one inspect. When the stream ends or
//! fails, the next round starts with a full re-sync.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::procfs::ProcRoot;
use crate::{container_event_filter, Container, Engine, RECONNECT_DELAY};

/// The containers known at one moment, with counters that tell how they were kept current.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub containers: BTreeMap<String, Container>,
    /// Bumped on every change.
    pub generation: u64,
    /// Full list + inspect rounds done (1 after the first sync).
    pub syncs: u64,
    /// Events applied.
    pub events: u64,
    /// Engine API calls made (lists and inspects), so callers can report calls per event.
    pub api_calls: u64,
    /// Containers whose inspect failed in the last full sync (kept as they were known).
    pub inspect_failures: u64,
}

/// A running watcher: read [`Watcher::current`], or wait for a change with [`Watcher::changed`].
#[derive(Debug)]
pub struct Watcher {
    rx: watch::Receiver<Arc<Inventory>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    /// Starts watching on the current tokio runtime. `running_only` keeps only running (or
    /// paused) containers. `log` receives one line per notable happening (resyncs, errors).
    pub fn spawn(
        engine: Engine,
        proc: ProcRoot,
        running_only: bool,
        log: impl Fn(&str) + Send + Sync + 'static,
    ) -> Self {
        let (tx, rx) = watch::channel(Arc::new(Inventory::default()));
        let task = tokio::spawn(run(engine, proc, running_only, tx, log));
        Self { rx, task }
    }

    /// The inventory now (empty until the first sync finished).
    pub fn current(&self) -> Arc<Inventory> {
        self.rx.borrow().clone()
    }

    /// Waits until the first full sync is done.
    pub async fn synced(&mut self) -> Arc<Inventory> {
        loop {
            if self.rx.borrow().syncs > 0 {
                return self.rx.borrow().clone();
            }
            if self.rx.changed().await.is_err() {
                return self.rx.borrow().clone();
            }
        }
    }

    /// Waits for the next change.
    pub async fn changed(&mut self) -> Arc<Inventory> {
        let _ = self.rx.changed().await;
        self.rx.borrow().clone()
    }
}

/// `since` for the events call: seconds.nanoseconds, a second before now so that clock
/// granularity cannot hide an event from the listing's window.
fn since_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(std::time::Duration::from_secs(1));
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

async fn run(
    engine: Engine,
    proc: ProcRoot,
    running_only: bool,
    tx: watch::Sender<Arc<Inventory>>,
    log: impl Fn(&str) + Send + Sync + 'static,
) {
    let mut inv = Inventory::default();
    loop {
        let since = since_now();
        match full_sync(&engine, &proc, running_only, &mut inv).await {
            Ok(()) => {
                inv.syncs += 1;
                inv.generation += 1;
                tx.send_replace(Arc::new(inv.clone()));
            }
            Err(e) => {
                log(&format!("sync failed, retrying: {e}"));
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
        }
        let opts = EventsOptions {
            since: Some(since),
            until: None,
            filters: Some(container_event_filter()),
        };
        let mut events = engine.docker().events(Some(opts));
        let cause = loop {
            match events.next().await {
                None => break "event stream ended".to_string(),
                Some(Err(e)) => break format!("event stream failed: {e}"),
                Some(Ok(ev)) => {
                    let (Some(action), Some(id)) = (
                        ev.action.as_deref(),
                        ev.actor.as_ref().and_then(|a| a.id.clone()),
                    ) else {
                        continue;
                    };
                    if apply(&engine, &proc, running_only, &mut inv, action, &id).await {
                        inv.events += 1;
                        inv.generation += 1;
                        tx.send_replace(Arc::new(inv.clone()));
                    }
                }
            }
        };
        log(&format!("{cause}; re-syncing with the engine"));
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn full_sync(
    engine: &Engine,
    proc: &ProcRoot,
    running_only: bool,
    inv: &mut Inventory,
) -> crate::Result<()> {
    let ids = engine.list_ids(!running_only).await?;
    inv.api_calls += 1;
    let mut fresh = BTreeMap::new();
    let mut failed = 0;
    for id in ids {
        inv.api_calls += 1;
        match engine.inspect(&id, proc).await {
            Ok(Some(c)) if !running_only || c.is_running() => {
                fresh.insert(c.id.clone(), c);
            }
            Ok(_) => {}
            // One container the engine cannot describe must not keep the others unwatched:
            // keep what was known of it and go on.
            Err(_) => {
                failed += 1;
                if let Some(old) = inv.containers.get(&id) {
                    fresh.insert(id.clone(), old.clone());
                }
            }
        }
    }
    inv.containers = fresh;
    inv.inspect_failures = failed;
    Ok(())
}

/// Applies one event; true when the inventory changed. Events that cannot change what a
/// container is (exec, attach, resize, top, …) cost no API call.
async fn apply(
    engine: &Engine,
    proc: &ProcRoot,
    running_only: bool,
    inv: &mut Inventory,
    action: &str,
    id: &str,
) -> bool {
    let verb = action.split(':').next().unwrap_or(action).trim();
    match verb {
        "destroy" => inv.containers.remove(id).is_some(),
        "start" | "restart" | "die" | "stop" | "rename" | "health_status" | "pause" | "unpause"
        | "update" | "create" | "oom" => {
            inv.api_calls += 1;
            match engine.inspect(id, proc).await {
                Ok(Some(c)) if !running_only || c.is_running() => {
                    let changed = inv.containers.get(id) != Some(&c);
                    inv.containers.insert(id.to_string(), c);
                    changed
                }
                Ok(_) => inv.containers.remove(id).is_some(),
                // A failed inspect says nothing about the container: keep what is known (the
                // next event or re-sync corrects it) rather than drop a running container.
                Err(_) => false,
            }
        }
        _ => false,
    }
}
