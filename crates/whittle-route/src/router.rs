//! The reconciler: what the engine says (containers, their routes, readiness, stops) against
//! what HAProxy has (servers and their admin state), changed through the runtime API only.
//!
//! A server's life: `add server` in maint → `ready` once the container is ready → `drain` on
//! the `kill` event (the earliest hook of `docker stop`) → `maint` and `del server` once it has
//! no sessions, queue or idle connections. `die`, `unhealthy` and a network disconnect take a
//! server out at once. Servers are named from container ids (`ID12-PORT`), so a restarted
//! whittle finds its servers in `show servers state` and adopts them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use whittle_engine::watch::{ContainerEvent, Inventory};
use whittle_engine::{Container, Engine, NetworkMode};

use crate::attach;
use crate::config::{self, Layout, ServerLine, SERVER_PARAMS};
use crate::haproxy::{parse_servers_state, parse_stat_busy, Proc, Socket};
use crate::probe::{self, Passed};
use crate::spec::{self, Route};
use crate::state::{Convergence, ServerReport, State};
use crate::{process, Error, Log, Options, Result};

/// A server's admin state as whittle set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Maint,
    Ready,
    Drain,
}

impl Admin {
    fn word(self) -> &'static str {
        match self {
            Admin::Maint => "maint",
            Admin::Ready => "ready",
            Admin::Drain => "drain",
        }
    }
}

#[derive(Debug, Clone)]
struct Srv {
    container: String,
    container_name: String,
    addr: String,
    admin: Admin,
    since: SystemTime,
    /// Being removed: since when, and why.
    removing: Option<(Instant, String)>,
    /// `enable health` done (dynamic servers start with checks off).
    health_on: bool,
}

/// What whittle knows of a container beyond the engine's facts.
#[derive(Debug, Default)]
struct Tracked {
    /// A `kill` arrived: drain, never route again.
    stopping: bool,
    /// Its outside probe passed (containers without a HEALTHCHECK).
    probe_passed: bool,
    probe: Option<tokio::task::JoinHandle<()>>,
    /// Last time it was taken out for being unready: the hold-down counts from here.
    out_at: Option<Instant>,
    /// Label errors already logged (once per container).
    complained: bool,
}

/// Why a change happens: for the log line and the convergence numbers.
#[derive(Debug, Clone)]
pub struct Cause {
    pub what: String,
    /// When the triggering event happened (engine time), if there was one.
    pub at: Option<SystemTime>,
}

impl Cause {
    pub fn new(what: impl Into<String>, at: Option<SystemTime>) -> Self {
        Self {
            what: what.into(),
            at,
        }
    }
    fn from_event(e: &ContainerEvent) -> Self {
        let at = u64::try_from(e.time_ns)
            .ok()
            .map(|ns| UNIX_EPOCH + Duration::from_nanos(ns));
        Self::new(e.action.clone(), at)
    }
}

type Key = (String, String);

pub struct Router {
    opts: Options,
    log: Log,
    engine: Engine,
    admin: Socket,
    master: Socket,
    proc: Option<Proc>,
    /// Services in the running config → listen port.
    services: BTreeMap<String, u16>,
    servers: BTreeMap<Key, Srv>,
    tracked: HashMap<String, Tracked>,
    /// Swarm service id → its labels (one inspect per service).
    swarm: HashMap<String, Option<BTreeMap<String, String>>>,
    pub probe_tx: mpsc::UnboundedSender<Passed>,
    reloads: u64,
    /// Engine API calls of this crate (Swarm service inspects).
    api_calls: u64,
    /// Events received, and the watcher's API call count at the last one.
    events: u64,
    watcher_calls: u64,
    conv: Convergence,
    /// Reload mode only: the config must be rewritten and reloaded.
    dirty_config: bool,
    dirty_state: bool,
    /// Attach mode: the worker answering on the socket (a new one means its owner reloaded).
    worker: Option<u32>,
    /// Attach mode: the backends HAProxy has → their balancing algorithm.
    backends: BTreeMap<String, Option<String>>,
    /// Attach mode: backend → why it cannot be routed (`None`: it can), decided once.
    verdicts: BTreeMap<String, Option<String>>,
    /// Attach mode: the socket failed at the last worker check (said once).
    socket_down: bool,
    ticks: u64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("services", &self.services)
            .field("servers", &self.servers.len())
            .finish()
    }
}

fn ms_since(at: Option<SystemTime>) -> Option<f64> {
    let at = at?;
    Some(
        SystemTime::now()
            .duration_since(at)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0,
    )
}

fn server_name(id: &str, port: u16) -> String {
    format!("{}-{port}", &id[..id.len().min(12)])
}

/// The container id prefix of a server [`server_name`] named; `None` for any other server
/// (an attached HAProxy's own servers are never whittle's to change).
fn container_of(server: &str) -> Option<&str> {
    let (id, port) = server.split_once('-')?;
    (id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && port.parse::<u16>().is_ok())
    .then_some(id)
}

/// How often (in ticks) an attached HAProxy's worker pid is checked.
const WORKER_CHECK_TICKS: u64 = 20;

impl Router {
    pub fn new(opts: Options, log: Log, engine: Engine) -> (Self, mpsc::UnboundedReceiver<Passed>) {
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let admin_path = opts
            .attach
            .clone()
            .unwrap_or_else(|| opts.state_dir.join(crate::ADMIN_SOCKET));
        let admin = Socket::new(&admin_path, opts.max_commands);
        let master = Socket::new(&opts.state_dir.join(process::MASTER_SOCKET), 100);
        (
            Self {
                opts,
                log,
                engine,
                admin,
                master,
                proc: None,
                services: BTreeMap::new(),
                servers: BTreeMap::new(),
                tracked: HashMap::new(),
                swarm: HashMap::new(),
                probe_tx,
                reloads: 0,
                api_calls: 0,
                events: 0,
                watcher_calls: 0,
                conv: Convergence::default(),
                dirty_config: false,
                dirty_state: true,
                worker: None,
                backends: BTreeMap::new(),
                verdicts: BTreeMap::new(),
                socket_down: false,
                ticks: 0,
            },
            probe_rx,
        )
    }

    fn runtime_api(&self) -> bool {
        !self.opts.reload_always
    }

    /// Finds a running HAProxy of this state directory and adopts its servers, or writes the
    /// config for the services in `inv` and starts one.
    pub async fn start(&mut self, inv: &Inventory) -> Result<()> {
        let previous = State::read(&self.opts.state_dir).ok();
        if self.opts.attach.is_some() {
            self.start_attached(inv).await?;
        } else if let Some(p) = process::probe_master(&mut self.master).await {
            self.proc = Some(p);
            if let Some(prev) = &previous {
                self.reloads = prev.reloads;
            }
            // The services are those of the config HAProxy runs: whittle wrote it, and it is
            // there even when whittle was killed before it could save its own state.
            self.services = config::services_in(&self.opts.state_dir.join(process::CONFIG));
            self.adopt().await?;
            (self.log)(&format!(
                "adopted HAProxy master {} (worker {}): {} services, {} servers",
                p.master,
                p.worker,
                self.services.len(),
                self.servers.len()
            ));
        } else {
            self.services = self.wanted_services(inv).await;
            let text = config::render(&self.layout(), &self.opts.bind, &self.opts.state_dir);
            process::write_config(&self.opts.haproxy, &self.opts.state_dir, &text).await?;
            let p =
                process::start(&self.opts.haproxy, &self.opts.state_dir, &mut self.master).await?;
            self.proc = Some(p);
            self.wait_admin().await?;
            (self.log)(&format!(
                "started HAProxy master {} (worker {}) with {} services on {}",
                p.master,
                p.worker,
                self.services.len(),
                self.opts.bind
            ));
        }
        self.reconcile_all(inv, &Cause::new("first sync", None))
            .await;
        Ok(())
    }

    /// Service → listen port of every route the containers in `inv` ask for.
    async fn wanted_services(&mut self, inv: &Inventory) -> BTreeMap<String, u16> {
        let mut wanted = BTreeMap::new();
        for c in inv.containers.values() {
            for (r, _) in self.routes_of(c).await {
                wanted.entry(r.service).or_insert(r.listen_port);
            }
        }
        wanted
    }

    /// `--attach`: checks the socket is an admin-level one, reads the backends, refuses a
    /// wanted backend that cannot take dynamic servers and adopts whittle's servers.
    async fn start_attached(&mut self, inv: &Inventory) -> Result<()> {
        let socket = self.admin.path().display().to_string();
        if self.opts.reload_always {
            return Err(Error::Unfit(format!(
                "HAProxy socket {socket}: an attached HAProxy is never reloaded by whittle, so reload-always cannot apply"
            )));
        }
        let info = self.admin.ok("show info").await?;
        self.worker = attach::parse_pid(&info);
        let level = self.admin.ok("show cli level").await?;
        if level.trim() != "admin" {
            return Err(Error::Unfit(format!(
                "HAProxy socket {socket}: its level is {}; adding and deleting servers needs `stats socket ... level admin`",
                level.trim()
            )));
        }
        self.read_backends().await?;
        for (svc, port) in self.wanted_services(inv).await {
            match self.verdict(&svc).await? {
                (None, _) => {
                    self.services.insert(svc, port);
                }
                (Some(why), _) if self.backends.contains_key(&svc) => {
                    return Err(Error::Unfit(why));
                }
                (Some(why), _) => (self.log)(&why),
            }
        }
        self.adopt().await?;
        (self.log)(&format!(
            "attached to HAProxy worker {} at {socket}: {} backends there, routing {} services, {} servers adopted",
            self.worker.map_or("?".to_string(), |p| p.to_string()),
            self.backends.len(),
            self.services.len(),
            self.servers.len()
        ));
        Ok(())
    }

    async fn read_backends(&mut self) -> Result<()> {
        let names = attach::parse_backends(&self.admin.ok("show backend").await?);
        let algos = attach::parse_algos(&self.admin.ok("show stat -1 2 -1").await?);
        self.backends = names
            .into_iter()
            .map(|b| {
                let algo = algos.get(&b).cloned();
                (b, algo)
            })
            .collect();
        self.verdicts.clear();
        Ok(())
    }

    /// Attach mode: why service `svc` cannot be routed (its backend is missing or static), or
    /// `None`; decided once per backend. The flag says whether this call decided it.
    async fn verdict(&mut self, svc: &str) -> Result<(Option<String>, bool)> {
        if let Some(v) = self.verdicts.get(svc) {
            return Ok((v.clone(), false));
        }
        let socket = self.admin.path().display().to_string();
        let why = match self.backends.get(svc).cloned() {
            None => Some(format!(
                "service {svc}: the attached HAProxy ({socket}) has no backend {svc}, and HAProxy 2.6 cannot add one at runtime; {svc} is not routed until its config has `backend {svc}` (the other services are)"
            )),
            Some(algo) => {
                let out = self.admin.ok(&format!("show servers state {svc}")).await?;
                attach::unfit(
                    &mut self.admin,
                    svc,
                    algo.as_deref(),
                    &parse_servers_state(&out),
                )
                .await?
                .map(|r| format!("HAProxy socket {socket}: backend {svc}: {r}"))
            }
        };
        self.verdicts.insert(svc.to_string(), why.clone());
        Ok((why, true))
    }

    /// Attach mode: a new worker (its owner reloaded) has only its config's servers — the
    /// ones whittle added are gone — so whittle reads the backends again and re-adds.
    async fn check_worker(&mut self, inv: &Inventory) {
        let pid = match self.admin.ok("show info").await {
            Ok(out) => {
                self.socket_down = false;
                attach::parse_pid(&out)
            }
            Err(e) => {
                if !self.socket_down {
                    (self.log)(&format!(
                        "{e}; the servers stay as they are until it answers"
                    ));
                }
                self.socket_down = true;
                return;
            }
        };
        if pid.is_none() || pid == self.worker {
            return;
        }
        (self.log)(&format!(
            "the attached HAProxy has a new worker ({} → {}; its owner reloaded it): re-reading its backends and re-adding the servers",
            self.worker.map_or("?".to_string(), |p| p.to_string()),
            pid.map_or("?".to_string(), |p| p.to_string())
        ));
        self.worker = pid;
        self.servers.clear();
        self.services.clear();
        self.dirty_state = true;
        let adopted = match self.read_backends().await {
            Ok(()) => self.adopt().await,
            Err(e) => Err(e),
        };
        if let Err(e) = adopted {
            (self.log)(&format!("{e}"));
        }
        self.reconcile_all(inv, &Cause::new("attached HAProxy reloaded", None))
            .await;
    }

    async fn wait_admin(&mut self) -> Result<()> {
        let t = Instant::now();
        loop {
            match self.admin.command("show info").await {
                Ok(out) if out.contains("Pid:") => return Ok(()),
                Ok(_) | Err(_) if t.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(out) => {
                    return Err(Error::Haproxy(format!(
                        "{}: unexpected answer to show info: {out}",
                        self.admin.path().display()
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads `show servers state` and takes every server whittle named as its own.
    async fn adopt(&mut self) -> Result<()> {
        self.wait_admin().await?;
        let out = self.admin.ok("show servers state").await?;
        let attached = self.opts.attach.is_some();
        for s in parse_servers_state(&out) {
            let Some(id) = container_of(&s.name) else {
                continue;
            };
            if !self.services.contains_key(&s.backend) {
                // Attached: a backend whose containers went while no whittle ran still has
                // whittle's servers, which are whittle's to remove.
                if !(attached && self.backends.contains_key(&s.backend)) {
                    continue;
                }
                self.services.insert(s.backend.clone(), 0);
            }
            let admin = if s.maint() {
                Admin::Maint
            } else if s.drain() {
                Admin::Drain
            } else {
                Admin::Ready
            };
            self.servers.insert(
                (s.backend.clone(), s.name.clone()),
                Srv {
                    container: id.to_string(),
                    container_name: String::new(),
                    addr: format!("{}:{}", s.addr, s.port),
                    admin,
                    since: SystemTime::now(),
                    removing: None,
                    health_on: true,
                },
            );
        }
        Ok(())
    }

    fn layout(&self) -> Layout {
        let mut l = Layout {
            services: self.services.clone(),
            servers: BTreeMap::new(),
        };
        for ((svc, name), s) in &self.servers {
            // A server being removed stays with the old worker until its requests finish.
            if s.removing.is_some() {
                continue;
            }
            l.servers.entry(svc.clone()).or_default().push(ServerLine {
                name: name.clone(),
                addr: s.addr.clone(),
                disabled: s.admin != Admin::Ready,
            });
        }
        l
    }

    /// The labels that say how to route `c`: its own, over its Swarm service's.
    async fn labels_of(&mut self, c: &Container) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        if let Some(sid) = whittle_engine::swarm::service_id(c) {
            if !self.swarm.contains_key(sid) {
                self.api_calls += 1;
                let l = match self.engine.service_labels(sid).await {
                    Ok(l) => l,
                    Err(e) => {
                        (self.log)(&format!("{e}; its tasks are not routed for now"));
                        return BTreeMap::new();
                    }
                };
                self.swarm.insert(sid.to_string(), l);
            }
            if let Some(Some(l)) = self.swarm.get(sid) {
                labels.extend(l.clone());
            }
        }
        labels.extend(c.labels.clone());
        labels
    }

    fn selected(&self, labels: &BTreeMap<String, String>) -> bool {
        self.opts.only.iter().all(|(k, v)| match v {
            Some(v) => labels.get(k) == Some(v),
            None => labels.contains_key(k),
        })
    }

    /// The container's routes with their backend address; routes without an address are left
    /// out (and said once).
    async fn routes_of(&mut self, c: &Container) -> Vec<(Route, String)> {
        let labels = self.labels_of(c).await;
        let Some(label) = labels.get(spec::ROUTE_LABEL) else {
            return Vec::new();
        };
        if !self.selected(&labels) {
            return Vec::new();
        }
        let routes = match spec::parse_routes(label) {
            Ok(r) => r,
            Err(e) => {
                self.complain(c, &e);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for r in routes {
            match self.address(c, r.container_port) {
                Some(a) => out.push((r, a)),
                None => self.complain(
                    c,
                    &format!(
                        "route {}: container port {} is neither published on the host nor reachable on {}",
                        r.service,
                        r.container_port,
                        self.opts
                            .network
                            .as_deref()
                            .map(|n| format!("network {n}"))
                            .unwrap_or_else(|| "a --network".to_string())
                    ),
                ),
            }
        }
        out
    }

    fn complain(&mut self, c: &Container, msg: &str) {
        let t = self.tracked.entry(c.id.clone()).or_default();
        if !t.complained {
            t.complained = true;
            (self.log)(&format!("{} ({}): {msg}", c.name, c.short_id()));
        }
    }

    /// Where HAProxy reaches container port `port`: the named network's address, 127.0.0.1
    /// for host networking, else the host address the port is published on.
    fn address(&self, c: &Container, port: u16) -> Option<String> {
        if let Some(net) = &self.opts.network {
            if let Some(ip) = c.networks.get(net) {
                return Some(format!("{ip}:{port}"));
            }
        }
        if c.network_mode == NetworkMode::Host {
            return Some(format!("127.0.0.1:{port}"));
        }
        let p = c
            .published
            .get(&port)?
            .iter()
            .find(|p| !p.host_ip.contains(':'))?;
        let ip = if p.host_ip == "0.0.0.0" {
            "127.0.0.1"
        } else {
            p.host_ip.as_str()
        };
        Some(format!("{ip}:{}", p.host_port))
    }

    /// Ready for traffic: Docker's health when it has a HEALTHCHECK, else whittle's probe.
    fn ready(&self, c: &Container) -> bool {
        if c.state != "running" {
            return false;
        }
        match &c.health {
            Some(h) => h == "healthy",
            None => self.tracked.get(&c.id).is_some_and(|t| t.probe_passed),
        }
    }

    pub async fn reconcile_all(&mut self, inv: &Inventory, cause: &Cause) {
        let mut ids: Vec<String> = inv.containers.keys().cloned().collect();
        for s in self.servers.values() {
            if !inv.containers.contains_key(&s.container)
                && !ids.iter().any(|i| i.starts_with(&s.container))
            {
                ids.push(s.container.clone());
            }
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            let c = inv.containers.get(&id).cloned();
            self.reconcile(&id, c.as_ref(), cause).await;
        }
        let known: Vec<String> = inv.containers.keys().cloned().collect();
        self.tracked.retain(|id, t| {
            let keep = known.contains(id);
            if !keep {
                if let Some(p) = t.probe.take() {
                    p.abort();
                }
            }
            keep
        });
    }

    pub async fn on_event(&mut self, e: ContainerEvent, inv: &Inventory) {
        self.events += 1;
        self.watcher_calls = self.watcher_calls.max(e.api_calls);
        self.dirty_state = true;
        let cause = Cause::from_event(&e);
        match e.verb.as_str() {
            "kill" => {
                let signal = e.attributes.get("signal").map(String::as_str).unwrap_or("");
                let fatal = matches!(signal, "9" | "KILL" | "SIGKILL");
                let t = self.tracked.entry(e.id.clone()).or_default();
                t.stopping = true;
                let keys: Vec<Key> = self.keys_of(&e.id);
                for k in keys {
                    let why = format!("kill (signal {signal})");
                    self.begin_removal(&k, !fatal, &why, &cause).await;
                }
            }
            "destroy" => {
                self.reconcile(&e.id, None, &cause).await;
                if let Some(mut t) = self.tracked.remove(&e.id) {
                    if let Some(p) = t.probe.take() {
                        p.abort();
                    }
                }
            }
            "start" | "restart" => {
                // A restarted container is a new life: it must prove itself ready again.
                if let Some(t) = self.tracked.get_mut(&e.id) {
                    t.stopping = false;
                    t.probe_passed = false;
                    if let Some(p) = t.probe.take() {
                        p.abort();
                    }
                }
                let c = e
                    .container
                    .clone()
                    .or_else(|| inv.containers.get(&e.id).cloned());
                self.reconcile(&e.id, c.as_ref(), &cause).await;
            }
            "health_status" => {
                // Sent before the watcher's inspect: the health is the event's own word.
                let mut c = e
                    .container
                    .clone()
                    .or_else(|| inv.containers.get(&e.id).cloned());
                if let (Some(c), Some((_, h))) = (c.as_mut(), e.action.split_once(':')) {
                    c.health = Some(h.trim().to_string());
                }
                self.reconcile(&e.id, c.as_ref(), &cause).await;
            }
            _ => {
                let c = e
                    .container
                    .clone()
                    .or_else(|| inv.containers.get(&e.id).cloned());
                self.reconcile(&e.id, c.as_ref(), &cause).await;
            }
        }
    }

    /// A `kill` or `health_status` from the urgent stream: handled like the watcher's copy
    /// (which arrives later and then changes nothing), but not counted as a second event.
    pub async fn on_urgent(&mut self, e: ContainerEvent, inv: &Inventory) {
        // Not yet in the inventory: the watcher's own copy of the event will handle it.
        if !inv.containers.contains_key(&e.id) {
            return;
        }
        let (events, calls) = (self.events, self.watcher_calls);
        self.on_event(e, inv).await;
        self.events = events;
        self.watcher_calls = calls;
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub async fn on_probe(&mut self, p: Passed, inv: &Inventory) {
        if let Some(t) = self.tracked.get_mut(&p.id) {
            t.probe_passed = true;
            t.probe = None;
        }
        let c = inv.containers.get(&p.id).cloned();
        self.reconcile(&p.id, c.as_ref(), &Cause::new("probe passed", Some(p.at)))
            .await;
    }

    fn keys_of(&self, id: &str) -> Vec<Key> {
        self.servers
            .iter()
            .filter(|(_, s)| id.starts_with(&s.container) || s.container.starts_with(id))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Brings HAProxy in line with one container.
    async fn reconcile(&mut self, id: &str, c: Option<&Container>, cause: &Cause) {
        let stopping = self.tracked.get(id).is_some_and(|t| t.stopping);
        let mut wanted = match c {
            Some(c) if c.is_running() && !stopping => self.routes_of(c).await,
            _ => Vec::new(),
        };
        // New services first: they need a reload (a 2.6 backend cannot be added at runtime).
        let new: Vec<(String, u16)> = wanted
            .iter()
            .filter(|(r, _)| !self.services.contains_key(&r.service))
            .map(|(r, _)| (r.service.clone(), r.listen_port))
            .collect();
        if self.opts.attach.is_some() {
            self.attach_services(&new, &mut wanted).await;
        } else if !new.is_empty() {
            for (s, p) in &new {
                self.services.entry(s.clone()).or_insert(*p);
            }
            let names: Vec<&str> = new.iter().map(|(s, _)| s.as_str()).collect();
            if let Err(e) = self
                .reload(&format!("new service {}", names.join(", ")))
                .await
            {
                (self.log)(&format!("{e}"));
                for (s, _) in &new {
                    self.services.remove(s);
                }
                return;
            }
        }
        let mut ready = c.is_some_and(|c| self.ready(c));
        let hold = self.opts.hold_down;
        if ready {
            if let Some(out) = self.tracked.get(id).and_then(|t| t.out_at) {
                // Hold-down: a container that just went unready waits before it returns, so
                // a flapping one cannot churn the API; the tick looks again.
                if out.elapsed() < hold {
                    ready = false;
                }
            }
        }
        if let Some(c) = c {
            self.ensure_probe(c, &wanted);
        }
        let mut keep = Vec::new();
        for (r, addr) in &wanted {
            let key = (r.service.clone(), server_name(id, r.container_port));
            keep.push(key.clone());
            let name = c.map(|c| c.name.clone()).unwrap_or_default();
            if let Err(e) = self.ensure(&key, id, &name, addr, ready, cause).await {
                (self.log)(&format!("{}/{}: {e}", key.0, key.1));
            }
        }
        for k in self.keys_of(id) {
            if !keep.contains(&k) {
                let graceful = stopping && c.is_some_and(|c| c.is_running());
                let why = match c {
                    None => "container gone".to_string(),
                    Some(c) if !c.is_running() => format!("container {}", c.state),
                    Some(_) if stopping => "stopping".to_string(),
                    Some(_) => "no longer routed (labels or address)".to_string(),
                };
                self.begin_removal(&k, graceful, &why, cause).await;
            }
        }
    }

    /// Attach mode: the new services whose backend can be routed join; the routes to the
    /// others are dropped (each said once).
    async fn attach_services(&mut self, new: &[(String, u16)], wanted: &mut Vec<(Route, String)>) {
        for (r, _) in wanted.iter() {
            // A service adopted from HAProxy alone learns its listen port from a container.
            if let Some(p) = self.services.get_mut(&r.service).filter(|p| **p == 0) {
                *p = r.listen_port;
            }
        }
        let mut skip = Vec::new();
        for (s, p) in new {
            match self.verdict(s).await {
                Ok((None, _)) => {
                    self.services.insert(s.clone(), *p);
                    self.dirty_state = true;
                }
                Ok((Some(why), first)) => {
                    if first {
                        (self.log)(&why);
                    }
                    skip.push(s.clone());
                }
                Err(e) => {
                    (self.log)(&format!("backend {s}: {e}; not routed for now"));
                    skip.push(s.clone());
                }
            }
        }
        wanted.retain(|(r, _)| !skip.contains(&r.service));
    }

    fn ensure_probe(&mut self, c: &Container, wanted: &[(Route, String)]) {
        if c.health.is_some() || wanted.is_empty() || c.state != "running" {
            return;
        }
        let default_port = wanted[0].0.container_port;
        let probe = match spec::probe(&c.labels, default_port) {
            Ok(p) => p,
            Err(e) => {
                self.complain(c, &e);
                return;
            }
        };
        let addr = self.address(c, probe.port());
        let t = self.tracked.entry(c.id.clone()).or_default();
        if t.probe_passed || t.probe.is_some() {
            return;
        }
        let Some(addr) = addr else {
            return;
        };
        t.probe = Some(probe::spawn(
            c.id.clone(),
            addr,
            probe,
            self.probe_tx.clone(),
        ));
    }

    /// One server present with the wanted address and admin state.
    async fn ensure(
        &mut self,
        key: &Key,
        id: &str,
        container_name: &str,
        addr: &str,
        ready: bool,
        cause: &Cause,
    ) -> Result<()> {
        let (svc, name) = key;
        let exists = self
            .servers
            .get(key)
            .map(|s| (s.addr.clone(), s.removing.is_some()));
        match exists {
            Some((_, true)) => return Ok(()), // being removed: a stopping container stays out
            Some((a, false)) if a != addr => {
                if self.runtime_api() {
                    let (ip, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
                    self.admin
                        .ok(&format!("set server {svc}/{name} addr {ip} port {port}"))
                        .await?;
                }
                if let Some(s) = self.servers.get_mut(key) {
                    s.addr = addr.to_string();
                }
                self.dirty_config = true;
                (self.log)(&format!(
                    "{svc}/{name}: address now {addr} ({})",
                    cause.what
                ));
            }
            Some(_) => {}
            None => {
                if self.runtime_api() {
                    // A dynamic server starts in maint (2.6); every check setting is spelled
                    // out because `default-server` is not inherited.
                    self.admin
                        .ok(&format!("add server {svc}/{name} {addr} {SERVER_PARAMS}"))
                        .await?;
                }
                self.servers.insert(
                    key.clone(),
                    Srv {
                        container: id.to_string(),
                        container_name: container_name.to_string(),
                        addr: addr.to_string(),
                        admin: Admin::Maint,
                        since: SystemTime::now(),
                        removing: None,
                        health_on: false,
                    },
                );
                self.dirty_config = true;
                self.dirty_state = true;
                (self.log)(&format!(
                    "{svc}/{name}: added in maint for {container_name} at {addr} ({})",
                    cause.what
                ));
            }
        }
        if let Some(s) = self.servers.get_mut(key) {
            if s.container_name.is_empty() {
                s.container_name = container_name.to_string();
            }
        }
        let target = if ready { Admin::Ready } else { Admin::Maint };
        let cur = self.servers.get(key).map(|s| (s.admin, s.health_on));
        let Some((admin, health_on)) = cur else {
            return Ok(());
        };
        if admin == target {
            return Ok(());
        }
        if self.runtime_api() {
            if target == Admin::Ready && !health_on {
                self.admin
                    .ok(&format!("enable health {svc}/{name}"))
                    .await?;
            }
            self.admin
                .ok(&format!("set server {svc}/{name} state {}", target.word()))
                .await?;
        } else {
            self.dirty_config = true;
            self.apply_reload_mode().await;
        }
        if let Some(s) = self.servers.get_mut(key) {
            s.admin = target;
            s.since = SystemTime::now();
            if target == Admin::Ready {
                s.health_on = true;
            }
        }
        if target == Admin::Maint {
            // Out for being unready: start the hold-down.
            self.tracked.entry(id.to_string()).or_default().out_at = Some(Instant::now());
        }
        let took = ms_since(cause.at);
        if target == Admin::Ready {
            if let Some(ms) = took {
                self.conv.routed.push(ms);
            }
        }
        self.dirty_state = true;
        (self.log)(&format!(
            "{svc}/{name}: {} ({}){}",
            target.word(),
            cause.what,
            took.map(|ms| format!(", applied {ms:.1} ms after the event"))
                .unwrap_or_default()
        ));
        Ok(())
    }

    /// Takes a server out: `drain` when the container is stopping gracefully (in-flight
    /// requests finish, then the tick deletes it), `maint` at once otherwise.
    async fn begin_removal(&mut self, key: &Key, graceful: bool, why: &str, cause: &Cause) {
        let Some(s) = self.servers.get(key) else {
            return;
        };
        let target = if graceful { Admin::Drain } else { Admin::Maint };
        if s.removing.is_some() && (s.admin == target || s.admin == Admin::Maint) {
            return;
        }
        let (svc, name) = key;
        if self.runtime_api() && s.admin != target {
            if let Err(e) = self
                .admin
                .ok(&format!("set server {svc}/{name} state {}", target.word()))
                .await
            {
                (self.log)(&format!("{svc}/{name}: {e}"));
            }
        }
        let took = ms_since(cause.at);
        if let Some(ms) = took {
            if graceful {
                self.conv.drained.push(ms);
            } else {
                self.conv.removed.push(ms);
            }
        }
        if let Some(s) = self.servers.get_mut(key) {
            s.admin = target;
            s.since = SystemTime::now();
            if s.removing.is_none() {
                s.removing = Some((Instant::now(), why.to_string()));
            }
        }
        self.dirty_state = true;
        self.dirty_config = true;
        (self.log)(&format!(
            "{svc}/{name}: {} ({why}){}",
            target.word(),
            took.map(|ms| format!(", applied {ms:.1} ms after the event"))
                .unwrap_or_default()
        ));
        if !self.runtime_api() {
            self.apply_reload_mode().await;
        }
    }

    /// Periodic work: delete drained servers, end hold-downs, write the state file.
    pub async fn tick(&mut self, inv: &Inventory) {
        self.ticks += 1;
        if self.opts.attach.is_some() && self.ticks % WORKER_CHECK_TICKS == 0 {
            self.check_worker(inv).await;
        }
        if !self.runtime_api() {
            self.servers.retain(|_, s| s.removing.is_none());
            self.apply_reload_mode().await;
        } else {
            self.delete_drained().await;
        }
        // Hold-downs that ended: look again at containers held out.
        let held: Vec<String> = self
            .tracked
            .iter()
            .filter(|(_, t)| {
                t.out_at
                    .is_some_and(|o| o.elapsed() >= self.opts.hold_down && !t.stopping)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in held {
            if let Some(t) = self.tracked.get_mut(&id) {
                t.out_at = None;
            }
            if let Some(c) = inv.containers.get(&id).cloned() {
                if self.ready(&c) {
                    self.reconcile(&id, Some(&c), &Cause::new("hold-down over", None))
                        .await;
                }
            }
        }
        if self.dirty_state {
            self.write_state(inv);
        }
    }

    async fn delete_drained(&mut self) {
        let pending: Vec<(Key, Admin, Instant)> = self
            .servers
            .iter()
            .filter_map(|(k, s)| s.removing.as_ref().map(|(t, _)| (k.clone(), s.admin, *t)))
            .collect();
        if pending.is_empty() {
            return;
        }
        let busy = match self.admin.ok("show stat -1 4 -1").await {
            Ok(out) => parse_stat_busy(&out),
            Err(e) => {
                (self.log)(&format!("{e}; removals wait"));
                return;
            }
        };
        for (key, admin, since) in pending {
            let (svc, name) = &key;
            let n = busy.get(&key).copied().unwrap_or(0);
            let overdue = since.elapsed() > self.opts.drain_timeout;
            if admin == Admin::Drain && n > 0 && !overdue {
                continue;
            }
            if admin != Admin::Maint {
                if let Err(e) = self
                    .admin
                    .ok(&format!("set server {svc}/{name} state maint"))
                    .await
                {
                    (self.log)(&format!("{svc}/{name}: {e}"));
                    continue;
                }
                if let Some(s) = self.servers.get_mut(&key) {
                    s.admin = Admin::Maint;
                }
            }
            if overdue && n > 0 {
                let _ = self
                    .admin
                    .ok(&format!("shutdown sessions server {svc}/{name}"))
                    .await;
            }
            match self
                .admin
                .command(&format!("del server {svc}/{name}"))
                .await
            {
                Ok(out) if out.contains("deleted") || out.contains("No such server") => {
                    self.servers.remove(&key);
                    self.dirty_state = true;
                    (self.log)(&format!(
                        "{svc}/{name}: deleted after {:.0} ms out of rotation",
                        since.elapsed().as_secs_f64() * 1000.0
                    ));
                }
                // Connections, idle ones or a queue remain: HAProxy refuses, the next tick
                // tries again.
                Ok(_) | Err(_) => {}
            }
        }
    }

    /// Writes the config with the new services and the current servers, and reloads.
    async fn reload(&mut self, why: &str) -> Result<()> {
        let text = config::render(&self.layout(), &self.opts.bind, &self.opts.state_dir);
        process::write_config(&self.opts.haproxy, &self.opts.state_dir, &text).await?;
        let before = match self.proc {
            Some(p) => p,
            None => process::probe_master(&mut self.master)
                .await
                .ok_or_else(|| Error::Haproxy("no master answers to reload".into()))?,
        };
        let p = process::reload(&mut self.master, before).await?;
        self.proc = Some(p);
        self.reloads += 1;
        self.wait_admin().await?;
        // The new worker has the config's servers; checks are on for every one of them.
        for s in self.servers.values_mut() {
            s.health_on = true;
        }
        self.servers.retain(|_, s| s.removing.is_none());
        self.dirty_config = false;
        self.dirty_state = true;
        (self.log)(&format!(
            "reloaded HAProxy for {why}: worker {} → {}",
            before.worker, p.worker
        ));
        Ok(())
    }

    /// The peers' way, for comparison (`--reload-always`): every change rewrites the config
    /// and reloads.
    async fn apply_reload_mode(&mut self) {
        if !self.dirty_config {
            return;
        }
        if let Err(e) = self.reload("membership change").await {
            (self.log)(&format!("{e}"));
        }
    }

    pub fn write_state(&mut self, inv: &Inventory) {
        let servers = self
            .servers
            .iter()
            .map(|((svc, name), s)| ServerReport {
                service: svc.clone(),
                server: name.clone(),
                container: s.container.clone(),
                container_name: s.container_name.clone(),
                address: s.addr.clone(),
                state: if s.removing.is_some() && s.admin == Admin::Maint {
                    "removing".to_string()
                } else {
                    s.admin.word().to_string()
                },
                since: humantime::format_rfc3339_millis(s.since).to_string(),
            })
            .collect();
        let st = State {
            pid: std::process::id(),
            bind: self.opts.bind.clone(),
            haproxy_master: self.proc.map(|p| p.master),
            haproxy_worker: self.proc.map(|p| p.worker).or(self.worker),
            attached: self.opts.attach.as_ref().map(|p| p.display().to_string()),
            reloads: self.reloads,
            services: self.services.clone(),
            servers,
            events: self.events,
            engine_api_calls: self.watcher_calls.max(inv.api_calls) + self.api_calls,
            haproxy_commands: self.admin.sent,
            convergence_ms: self.conv.clone(),
        };
        match st.write(&self.opts.state_dir) {
            Ok(()) => self.dirty_state = false,
            Err(e) => (self.log)(&format!("{e}")),
        }
    }

    pub fn state_dir(&self) -> &PathBuf {
        &self.opts.state_dir
    }
}
