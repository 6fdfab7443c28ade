//! `whittle metrics serve` and `record`: collect on an interval, serve the latest snapshot as
//! OpenMetrics, append it to an archive — one loop for both.
//!
//! A scrape never triggers a collection: it renders the snapshot of the last tick. That keeps a
//! scrape cheap whatever the number of scrapers, and makes what was served at time T exactly
//! what the archive holds for T (`metrics replay --at T` prints the same bytes).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use whittle_engine::procfs::ProcRoot;
use whittle_engine::watch::Watcher;
use whittle_engine::{Engine, Stop};

use crate::archive::ArchiveWriter;
use crate::openmetrics::{render, Format};
use crate::{io_err, Collector, Error, Result, Snapshot};

/// What the loop does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Engine address (`--host`), else `DOCKER_HOST`, else the default socket.
    pub host: Option<String>,
    /// Serve OpenMetrics here (`serve`); `None` for `record` alone.
    pub listen: Option<SocketAddr>,
    pub interval: Duration,
    /// Append every snapshot to an archive in this directory.
    pub archive: Option<PathBuf>,
    /// Where `metrics.json` (pid, bound address, archive file) is kept while running.
    pub state_dir: Option<PathBuf>,
}

type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// The single-threaded I/O runtime the engine calls and the server run on.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the I/O runtime: {e}")))
}

/// Runs until SIGTERM or SIGINT; returns after the last frame is durable.
pub fn run(opts: Options, log: Log) -> Result<()> {
    runtime()?.block_on(run_async(opts, log))
}

async fn run_async(opts: Options, log: Log) -> Result<()> {
    let mut stop = Stop::install().map_err(|e| io_err("SIGTERM/SIGINT handlers", e))?;
    let Some(engine) = stop.connect(opts.host.as_deref()).await? else {
        return Ok(());
    };
    let wlog = log.clone();
    let mut watcher = Watcher::spawn(engine.clone(), ProcRoot::real(), true, move |m| wlog(m));
    if stop.or_stop(watcher.synced()).await.is_none() {
        return Ok(());
    }
    let collector = Collector::new(ProcRoot::real())?;
    // A first collection before anything is served: a scrape never sees an empty page.
    let first = {
        let inv = watcher.current();
        let list: Vec<_> = inv.containers.values().collect();
        collector.collect(&list)
    };
    let latest: Arc<RwLock<Arc<Snapshot>>> = Arc::new(RwLock::new(Arc::new(first)));

    let listener = match opts.listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| io_err(format!("listen address {addr}"), e))?;
            Some(l)
        }
        None => None,
    };
    let bound = listener.as_ref().and_then(|l| l.local_addr().ok());
    let mut writer = match &opts.archive {
        Some(dir) => Some(ArchiveWriter::create(dir, crate::collect::now_ns())?),
        None => None,
    };
    if let Some(a) = bound {
        log(&format!(
            "serving OpenMetrics on http://{a}/metrics (engine {})",
            engine.host()
        ));
    }
    if let Some(w) = &writer {
        log(&format!(
            "recording every {:?} to {}",
            opts.interval,
            w.path().display()
        ));
    }
    if let Some(dir) = &opts.state_dir {
        write_state(dir, bound, writer.as_ref().map(|w| w.path().to_path_buf()))?;
    }

    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    let mut known_generation = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let inv = watcher.current();
                // The inventory changes on events only: compare it when it did.
                if known_generation != Some(inv.generation) {
                known_generation = Some(inv.generation);
                for (id, c) in &inv.containers {
                    if !known.contains_key(id) {
                        log(&format!("watching {} ({}, image {}): running", c.name, c.short_id(), c.image));
                    }
                }
                for (id, name) in &known {
                    if !inv.containers.contains_key(id) {
                        log(&format!("stopped watching {name} ({}): no longer running", &id[..id.len().min(12)]));
                    }
                }
                known = inv.containers.iter().map(|(id, c)| (id.clone(), c.name.clone())).collect();
                }
                let list: Vec<_> = inv.containers.values().collect();
                let snap = Arc::new(collector.collect(&list));
                if let Some(w) = writer.as_mut() {
                    // A full or failing disk must not stop the serving: say so, try again next
                    // interval.
                    if let Err(e) = w.append(&snap) {
                        log(&format!("archive: {e}; this collection is not recorded"));
                    }
                }
                *latest.write().unwrap_or_else(|p| p.into_inner()) = snap;
            }
            conn = async { listener.as_ref().expect("guarded").accept().await }, if listener.is_some() => {
                if let Ok((stream, _)) = conn {
                    let latest = latest.clone();
                    tokio::spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let svc = hyper::service::service_fn(move |req| {
                            let snap = latest.read().unwrap_or_else(|p| p.into_inner()).clone();
                            async move { Ok::<_, Infallible>(respond(&req, &snap)) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    });
                }
            }
            s = stop.recv() => { log(&format!("{s}: stopping")); break; }
        }
    }
    if let Some(dir) = &opts.state_dir {
        let _ = std::fs::remove_file(dir.join(STATE_FILE));
    }
    Ok(())
}

fn respond<B>(req: &Request<B>, snap: &Snapshot) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if req.method() != hyper::Method::GET || (path != "/metrics" && path != "/") {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(
                b"whittle: only GET /metrics is served\n",
            )))
            .expect("static response");
    }
    if path == "/" {
        return Response::new(Full::new(Bytes::from_static(
            b"whittle metrics: OpenMetrics at /metrics\n",
        )));
    }
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    Response::builder()
        .header(hyper::header::CONTENT_TYPE, format.content_type())
        .body(Full::new(Bytes::from(render(snap, format))))
        .expect("valid response")
}

/// Name of the state file in `--state-dir`.
pub const STATE_FILE: &str = "metrics.json";

fn write_state(
    dir: &std::path::Path,
    listen: Option<SocketAddr>,
    archive: Option<PathBuf>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let state = serde_json::json!({
        "pid": std::process::id(),
        "listen": listen.map(|a| a.to_string()),
        "archive_file": archive.map(|p| p.display().to_string()),
        "started_ns": crate::collect::now_ns(),
    });
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let fin = dir.join(STATE_FILE);
    std::fs::write(&tmp, serde_json::to_vec_pretty(&state).unwrap_or_default())
        .map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, &fin).map_err(|e| io_err(&fin, e))
}

/// One collection (or two, `interval` apart, for rates) for `top --once` and `metrics snapshot`.
pub fn collect_once(
    host: Option<&str>,
    processes: bool,
) -> Result<(Engine, Collector, Vec<whittle_engine::Container>)> {
    runtime()?.block_on(async {
        let engine = Engine::connect_negotiated(host).await?;
        let containers = engine.containers(false, &ProcRoot::real()).await?;
        let mut collector = Collector::new(ProcRoot::real())?;
        collector.processes = processes;
        Ok((engine, collector, containers))
    })
}
