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
use tokio::sync::{broadcast, watch};

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

/// What happened, for a caller that needs the individual events and not only the inventory
/// they lead to (route drains on `kill`, times its changes from the event's time).
#[derive(Debug, Clone)]
pub enum Change {
    /// A full list + inspect round finished: reconcile against [`Watcher::current`].
    Synced,
    /// One event, sent after the inventory applied it (`kill` and `health_status`: before,
    /// since the event itself says what changed).
    Event(Box<ContainerEvent>),
}

/// One container (or container-network) event.
#[derive(Debug, Clone)]
pub struct ContainerEvent {
    /// The engine's event time, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// The action's verb: `start`, `kill`, `die`, `health_status`, `disconnect`, …
    pub verb: String,
    /// The full action (`health_status: healthy`).
    pub action: String,
    /// The container the event is about (for network events, the one (dis)connected).
    pub id: String,
    /// The actor's attributes (`signal` for `kill`, `exitCode` for `die`, …).
    pub attributes: BTreeMap<String, String>,
    /// The container as the inventory knows it after the event — before it for `kill` and
    /// `health_status` (`None` when not kept).
    pub container: Option<Container>,
    /// Engine API calls the watcher has made so far, this event's included (the inventory is
    /// only republished when it changed, so its own counter can lag behind).
    pub api_calls: u64,
}

/// How many changes a slow subscriber may fall behind before it must re-read the inventory.
const CHANGE_BACKLOG: usize = 4096;

/// A running watcher: read [`Watcher::current`], or wait for a change with [`Watcher::changed`].
#[derive(Debug)]
pub struct Watcher {
    rx: watch::Receiver<Arc<Inventory>>,
    changes: broadcast::Sender<Change>,
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
        let (changes, _) = broadcast::channel(CHANGE_BACKLOG);
        let task = tokio::spawn(run(engine, proc, running_only, tx, changes.clone(), log));
        Self { rx, changes, task }
    }

    /// Every change from now on. A receiver that lags (`RecvError::Lagged`) has missed events
    /// and should reconcile against [`Watcher::current`].
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
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
    changes: broadcast::Sender<Change>,
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
                let _ = changes.send(Change::Synced);
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
                    let attributes: BTreeMap<String, String> = ev
                        .actor
                        .as_ref()
                        .and_then(|a| a.attributes.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    let network = ev.typ == Some(bollard::models::EventMessageTypeEnum::NETWORK);
                    // A network event's actor is the network; the container is an attribute.
                    let id = if network {
                        attributes.get("container").cloned()
                    } else {
                        ev.actor.as_ref().and_then(|a| a.id.clone())
                    };
                    let (Some(action), Some(id)) = (ev.action.clone(), id) else {
                        continue;
                    };
                    let verb = action
                        .split(':')
                        .next()
                        .unwrap_or(&action)
                        .trim()
                        .to_string();
                    // `kill` and `health_status` say all they mean in the event itself: they go
                    // out before the inspect, so a subscriber is not held up by it.
                    let early = matches!(verb.as_str(), "kill" | "health_status");
                    let event = |inv: &Inventory| {
                        Change::Event(Box::new(ContainerEvent {
                            time_ns: ev
                                .time_nano
                                .unwrap_or_else(|| ev.time.unwrap_or(0) * 1_000_000_000),
                            container: inv.containers.get(&id).cloned(),
                            api_calls: inv.api_calls,
                            verb: verb.clone(),
                            action: action.clone(),
                            id: id.clone(),
                            attributes: attributes.clone(),
                        }))
                    };
                    if early && changes.receiver_count() > 0 {
                        let _ = changes.send(event(&inv));
                    }
                    if apply(&engine, &proc, running_only, &mut inv, &verb, &id).await {
                        inv.events += 1;
                        inv.generation += 1;
                        tx.send_replace(Arc::new(inv.clone()));
                    }
                    if !early && changes.receiver_count() > 0 {
                        let _ = changes.send(event(&inv));
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
        | "update" | "create" | "oom" | "connect" | "disconnect" => {
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

/// A second, narrow event stream for the events a caller must act on at once (`kill`,
/// `health_status`): the watcher applies events one after the other with an inspect each, so
/// in a burst of starts an event waits behind the inspects of the ones before it. These carry
/// no inspect and no inventory (`container` is `None`); the watcher's stream still delivers
/// them too, so a caller that loses this one misses nothing. Ends when the stream breaks.
pub fn urgent_events(
    engine: &Engine,
    verbs: &[&str],
) -> impl futures_util::Stream<Item = ContainerEvent> + Send + 'static {
    let mut filters = crate::container_event_filter();
    filters.insert("type".to_string(), vec!["container".to_string()]);
    filters.insert(
        "event".to_string(),
        verbs.iter().map(|v| v.to_string()).collect(),
    );
    let opts = EventsOptions {
        since: None,
        until: None,
        filters: Some(filters),
    };
    engine
        .docker()
        .events(Some(opts))
        .take_while(|r| futures_util::future::ready(r.is_ok()))
        .filter_map(|r| async move {
            let ev = r.ok()?;
            let action = ev.action.clone()?;
            let actor = ev.actor.as_ref()?;
            Some(ContainerEvent {
                time_ns: ev
                    .time_nano
                    .unwrap_or_else(|| ev.time.unwrap_or(0) * 1_000_000_000),
                verb: action
                    .split(':')
                    .next()
                    .unwrap_or(&action)
                    .trim()
                    .to_string(),
                id: actor.id.clone()?,
                attributes: actor
                    .attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                action,
                container: None,
                api_calls: 0,
            })
        })
}
