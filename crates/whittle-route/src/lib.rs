//! `whittle route`: every node runs HAProxy on localhost, and whittle keeps it in step with
//! where the containers are — readiness-gated, drained on stop, membership changed through the
//! runtime API only.
//!
//! Where peers hurt (marathon-lb, traefik, docker-gen, consul-template) and what this crate
//! does instead: it subscribes to events before listing (whittle-engine's watcher), re-syncs
//! fully on every reconnect, drains on the `kill` event instead of after `die`, routes nothing
//! before Docker says `healthy` or whittle's own probe passed, and never reloads for a
//! membership change (only for a new service, whose frontend a 2.6 runtime cannot add).

mod attach;
mod config;
mod error;
pub mod haproxy;
mod probe;
pub mod process;
mod router;
pub mod spec;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use whittle_engine::procfs::ProcRoot;
use whittle_engine::watch::{Change, Watcher};
use whittle_engine::Stop;

pub(crate) use error::io_err;
pub use error::{Error, Result};
pub use router::Cause;

/// The worker's stats socket (admin level) in the state directory.
pub const ADMIN_SOCKET: &str = "admin.sock";

pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// What `route run` does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Engine address, else `DOCKER_HOST`, else the default socket.
    pub host: Option<String>,
    /// Address the frontends listen on.
    pub bind: String,
    pub haproxy: PathBuf,
    /// haproxy.cfg, the sockets, the pid file and route.json.
    pub state_dir: PathBuf,
    /// Reach containers at their address on this network instead of a published port.
    pub network: Option<String>,
    /// Route only containers (or services) with these labels (`KEY` or `KEY=VALUE`).
    pub only: Vec<(String, Option<String>)>,
    /// A container taken out for being unready stays out at least this long.
    pub hold_down: Duration,
    /// At most this many runtime API commands per second.
    pub max_commands: u32,
    /// How long a draining server may keep sessions before they are cut.
    pub drain_timeout: Duration,
    /// The peers' approach, for the benchmark: rewrite the config and reload on every change.
    pub reload_always: bool,
    /// Drive the HAProxy whose admin-level stats socket this is (its own config, started by
    /// someone else) instead of starting one: no config written, never reloaded.
    pub attach: Option<PathBuf>,
}

/// Periodic work (deleting drained servers, hold-downs, the state file).
const TICK: Duration = Duration::from_millis(100);

/// Runs until SIGTERM or SIGINT. HAProxy keeps running after whittle exits.
pub fn run(opts: Options, log: Log) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_err("the I/O runtime", e))?;
    rt.block_on(run_async(opts, log))
}

async fn run_async(opts: Options, log: Log) -> Result<()> {
    let mut stop = Stop::install().map_err(|e| io_err("SIGTERM/SIGINT handlers", e))?;
    std::fs::create_dir_all(&opts.state_dir).map_err(|e| io_err(opts.state_dir.display(), e))?;
    let Some(engine) = stop.connect(opts.host.as_deref()).await? else {
        return Ok(());
    };
    let wlog = log.clone();
    let mut watcher = Watcher::spawn(engine.clone(), ProcRoot::real(), true, move |m| wlog(m));
    // Subscribed before the first sync finishes: nothing between the listing and the first
    // event is lost (the watcher replays events since before its listing).
    let mut changes = watcher.subscribe();
    if stop.or_stop(watcher.synced()).await.is_none() {
        return Ok(());
    }
    let (mut router, mut probes) = router::Router::new(opts, log.clone(), engine);
    router.start(&watcher.current()).await?;
    router.write_state(&watcher.current());
    log(&format!(
        "routing; state in {}",
        router.state_dir().display()
    ));
    // kill and health_status also come on their own stream, so they never wait behind the
    // watcher's inspects of a burst of starts.
    let (urgent_tx, mut urgent) = tokio::sync::mpsc::unbounded_channel();
    let urgent_engine = router.engine().clone();
    let urgent_log = log.clone();
    let _urgent = tokio::spawn(async move {
        use futures_util::StreamExt;
        loop {
            let mut s = std::pin::pin!(whittle_engine::watch::urgent_events(
                &urgent_engine,
                &["kill", "health_status"]
            ));
            while let Some(e) = s.next().await {
                if urgent_tx.send(e).is_err() {
                    return;
                }
            }
            urgent_log(
                "the kill/health event stream ended; reconnecting (the watcher covers the gap)",
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ch = changes.recv() => match ch {
                Ok(Change::Event(e)) => router.on_event(*e, &watcher.current()).await,
                Ok(Change::Synced) => {
                    router.reconcile_all(&watcher.current(), &Cause::new("re-sync", None)).await;
                }
                Err(RecvError::Lagged(n)) => {
                    log(&format!("{n} events behind; reconciling against the inventory"));
                    router.reconcile_all(&watcher.current(), &Cause::new("catch-up", None)).await;
                }
                Err(RecvError::Closed) => {
                    log("the engine watcher stopped; exiting");
                    break;
                }
            },
            Some(p) = probes.recv() => router.on_probe(p, &watcher.current()).await,
            Some(e) = urgent.recv() => router.on_urgent(e, &watcher.current()).await,
            _ = tick.tick() => router.tick(&watcher.current()).await,
            s = stop.recv() => { log(&format!("{s}: stopping (HAProxy keeps serving)")); break; }
        }
    }
    router.write_state(&watcher.current());
    Ok(())
}
