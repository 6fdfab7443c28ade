//! `whittle logs ship`: one reader per container stream, started from the engine's inventory
//! (subscribe first, then list: a container started at any moment is picked up from its start
//! event), resumed at its checkpoint, feeding the pipeline.
//!
//! Stopped containers are read too: one that exited while the shipper was down still has its
//! log in the engine's store and is read to the end, then marked drained for that run (its
//! `StartedAt`), so it is not read again until it starts again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use whittle_engine::logstream::{LogRequest, Since, Stream};
use whittle_engine::procfs::ProcRoot;
use whittle_engine::watch::Watcher;
use whittle_engine::{Container, Engine, Stop};

use crate::pipeline::{Item, Options as PipeOptions, Pipeline, StreamStatus};
use crate::record::{Record, Source};
use crate::spool::{key, Checkpoint};
use crate::{io_err, Error, Log, Result};

/// `--filter`: which containers to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `label=KEY` or `label=KEY=VALUE`.
    Label(String, Option<String>),
    /// `name=SUBSTRING`.
    Name(String),
}

impl std::str::FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(l) = s.strip_prefix("label=") {
            let (k, v) = match l.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (l, None),
            };
            if k.is_empty() {
                return Err(format!("`{s}`: label= needs a key"));
            }
            Ok(Self::Label(k.to_string(), v))
        } else if let Some(n) = s.strip_prefix("name=") {
            Ok(Self::Name(n.to_string()))
        } else {
            Err(format!("`{s}`: expected label=KEY[=VALUE] or name=TEXT"))
        }
    }
}

impl Filter {
    fn matches(&self, c: &Container) -> bool {
        match self {
            Self::Label(k, v) => c
                .labels
                .get(k)
                .is_some_and(|x| v.as_ref().is_none_or(|v| v == x)),
            Self::Name(n) => c.name.contains(n.as_str()),
        }
    }
}

/// What `ship` does.
#[derive(Debug, Clone)]
pub struct Options {
    pub host: Option<String>,
    pub pipe: PipeOptions,
    pub filters: Vec<Filter>,
    pub max_record: usize,
}

/// The I/O runtime: two workers (readers and sender), the spool writer on its own thread.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the I/O runtime: {e}")))
}

/// Runs until SIGTERM or SIGINT.
pub fn run(opts: Options, log: Log) -> Result<()> {
    runtime()?.block_on(run_async(opts, log))
}

struct Done {
    key: String,
    id: String,
    /// The container's `StartedAt` when the stream was opened.
    started_at: String,
    /// How far the reader got (also after an error: what it sent is not read again).
    cp: Checkpoint,
    error: Option<Error>,
    /// Frames the engine sent a second time (dropped).
    replayed: u64,
}

async fn run_async(opts: Options, log: Log) -> Result<()> {
    let mut stop = Stop::install().map_err(|e| io_err("SIGTERM/SIGINT handlers", e))?;
    let Some(engine) = stop.connect(opts.host.as_deref()).await? else {
        return Ok(());
    };
    let pipe = Pipeline::start(&opts.pipe, log.clone())?;
    let wlog = log.clone();
    let mut watcher = Watcher::spawn(engine.clone(), ProcRoot::real(), false, move |m| wlog(m));
    log(&format!(
        "shipping from {} to {} (spool {})",
        engine.host(),
        opts.pipe.to,
        opts.pipe.spool_dir.display()
    ));
    let mut taken: BTreeMap<String, Checkpoint> = pipe.spool.checkpoints();
    let mut active: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    // A stream read to its end waits REOPEN_DELAY before it is opened again, unless its
    // container started again meanwhile (its `StartedAt` then differs from the one kept here).
    let mut not_before: HashMap<String, (Instant, String)> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut failed = pipe.failed.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut synced = false;
    let result = loop {
        let inv = watcher.current();
        if inv.syncs > 0 {
            if !synced {
                synced = true;
                log(&format!(
                    "engine inventory synced: {} containers, {} match the filters",
                    inv.containers.len(),
                    inv.containers.values().filter(|c| wanted(&opts, c)).count()
                ));
            }
            for c in inv.containers.values().filter(|c| wanted(&opts, c)) {
                // Never started: no log yet; its start event brings it back.
                if c.state == "created" {
                    continue;
                }
                for stream in [Stream::Stdout, Stream::Stderr] {
                    let src = source(stream);
                    let k = key(&c.id, src);
                    if active.contains_key(&k) {
                        continue;
                    }
                    if not_before
                        .get(&k)
                        .is_some_and(|(t, run)| Instant::now() < *t && *run == c.started_at)
                    {
                        continue;
                    }
                    let cp = taken.get(&k).cloned().unwrap_or_default();
                    if !c.is_running() && cp.drained.as_deref() == Some(c.started_at.as_str()) {
                        continue;
                    }
                    let why = if c.is_running() {
                        "running".to_string()
                    } else {
                        format!("{}, its log not read to the end yet", c.state)
                    };
                    if stream == Stream::Stdout {
                        log(&format!(
                            "reading {} ({}, image {}): {why}; {}",
                            c.name,
                            c.short_id(),
                            c.image,
                            if cp.seq > 0 {
                                format!(
                                    "resuming after record {} (at {})",
                                    cp.seq,
                                    crate::record::ts_nanos(cp.ts_ns)
                                )
                            } else {
                                "from its first line".to_string()
                            }
                        ));
                    }
                    {
                        let mut sh = pipe.shared.lock().unwrap_or_else(|p| p.into_inner());
                        let st = sh
                            .streams
                            .entry(k.clone())
                            .or_insert_with(StreamStatus::default);
                        st.name.clone_from(&c.name);
                        st.active = true;
                    }
                    let task = tokio::spawn(read_stream(
                        engine.clone(),
                        c.clone(),
                        stream,
                        cp,
                        opts.max_record,
                        pipe.tx.clone(),
                        pipe.budget.clone(),
                        done_tx.clone(),
                        pipe.shared.clone(),
                    ));
                    active.insert(k, task);
                }
            }
        }
        let now = Instant::now();
        not_before.retain(|_, (t, _)| *t > now);
        let retry = not_before.values().map(|(t, _)| *t).min();
        tokio::select! {
            _ = watcher.changed() => {}
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now).into()), if retry.is_some() => {}
            Some(d) = done_rx.recv() => {
                active.remove(&d.key);
                not_before.insert(d.key.clone(), (Instant::now() + whittle_engine::logstream::REOPEN_DELAY, d.started_at.clone()));
                if let Some(st) = pipe.shared.lock().unwrap_or_else(|p| p.into_inner()).streams.get_mut(&d.key) {
                    st.active = false;
                }
                let cp = d.cp;
                if d.replayed > 0 {
                    log(&format!("{} ({}): the engine's follow stream repeated or garbled {} frames (a Docker 20.10 json-file quirk); dropped or read again", cp.name, d.key, d.replayed));
                }
                match d.error {
                    None => {
                        // Read to the end: if the container is stopped now, its run is drained.
                        let now = watcher.current();
                        let c = now.containers.get(&d.id).cloned();
                        let stopped = match &c {
                            Some(c) => !c.is_running(),
                            None => true,
                        };
                        let mut cp = cp;
                        if stopped {
                            if let Some(c) = c {
                                cp.drained = Some(c.started_at.clone());
                                if d.key.ends_with("/stdout") {
                                    log(&format!("finished {} ({}): stopped and its log read to the end, last record {}", c.name, c.short_id(), cp.seq));
                                }
                                let _ = pipe.tx.send(Item::Drained { key: d.key.clone(), name: c.name.clone(), started_at: c.started_at.clone() }).await;
                            } else if d.key.ends_with("/stdout") {
                                log(&format!("finished {}: removed from the engine, its log read to the end, last record {}", cp.name, cp.seq));
                            }
                        }
                        taken.insert(d.key, cp);
                    }
                    Some(e) => {
                        log(&format!("reading {} ({}) stopped: {e}; reopening after record {}", cp.name, d.key, cp.seq));
                        taken.insert(d.key, cp);
                    }
                }
            }
            _ = failed.changed() => {
                let cause = failed.borrow().clone().unwrap_or_default();
                break Err(Error::Usage(format!("stopped: {cause}")));
            }
            s = stop.recv() => { log(&format!("{s}: stopping")); break Ok(()); }
        }
    };
    for (_, t) in active.drain() {
        t.abort();
    }
    drop(watcher);
    let (ok, dropped) = {
        let c = pipe.spool.counters();
        (c.acked, c.dropped)
    };
    pipe.shutdown().await?;
    log(&format!(
        "stopped; {ok} records acknowledged by the sink in this spool's life, {dropped} dropped"
    ));
    result
}

fn wanted(opts: &Options, c: &Container) -> bool {
    opts.filters.iter().all(|f| f.matches(c))
}

fn source(s: Stream) -> Source {
    match s {
        Stream::Stdout => Source::Stdout,
        Stream::Stderr => Source::Stderr,
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_stream(
    engine: Engine,
    c: Container,
    stream: Stream,
    mut cp: Checkpoint,
    max_record: usize,
    tx: mpsc::Sender<Item>,
    budget: Arc<tokio::sync::Semaphore>,
    done: mpsc::UnboundedSender<Done>,
    shared: Arc<std::sync::Mutex<crate::pipeline::Shared>>,
) {
    let src = source(stream);
    let k = key(&c.id, src);
    let mut unreported = 0u64;
    let mut replayed = 0;
    let result: Result<()> = async {
        let since = (cp.seq > 0).then_some(Since {
            ts_ns: cp.ts_ns,
            skip: cp.at_ts,
        });
        let Some(mut reader) = engine
            .open_log(LogRequest {
                id: c.id.clone(),
                stream,
                since,
                follow: true,
                max_record,
            })
            .await?
        else {
            return Ok(());
        };
        cp.name.clone_from(&c.name);
        while let Some(r) = reader.next().await? {
            let seq = cp.seq + 1;
            let rec = Record {
                id: c.id.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                service: c.swarm_service.clone(),
                task: c.swarm_task.clone(),
                source: src,
                pri: None,
                ts_ns: r.ts_ns,
                seq,
                part: r.part,
                more: r.more,
                no_newline: !r.newline,
                pid: None,
                msg: r.bytes,
            };
            replayed = reader.replayed() + reader.repaired();
            let ts = r.ts_ns;
            let permit = crate::pipeline::permit(&budget, rec.msg.len()).await;
            if tx.send(Item::Record(rec, permit)).await.is_err() {
                break;
            }
            cp.take(ts, seq);
            unreported += 1;
            if unreported >= 256 {
                report(&shared, &k, &cp, &mut unreported);
            }
        }
        Ok(())
    }
    .await;
    report(&shared, &k, &cp, &mut unreported);
    let _ = done.send(Done {
        key: k,
        id: c.id.clone(),
        started_at: c.started_at.clone(),
        cp,
        error: result.err(),
        replayed,
    });
}

fn report(
    shared: &std::sync::Mutex<crate::pipeline::Shared>,
    k: &str,
    cp: &Checkpoint,
    unreported: &mut u64,
) {
    let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
    sh.read += *unreported;
    *unreported = 0;
    if let Some(st) = sh.streams.get_mut(k) {
        st.records = cp.seq;
        st.last_ts = Some(crate::record::ts_nanos(cp.ts_ns));
    }
}
