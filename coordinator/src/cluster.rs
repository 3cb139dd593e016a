//! Worker membership, health and rule shipping.
//!
//! Workers register and heartbeat; one that misses heartbeats for
//! `dead_after` leaves the ring until it registers again. Before a worker is
//! given a file it must hold the rules in force: they are pushed when it
//! registers, when rules change, and lazily before a scan if it missed both.

use crate::core::error::CoreError;
use crate::fair::{FairPermit, FairSlots};
use crate::placement;
use crate::rules::{LoadedRules, RulesManager};
use qala_proto::v1::{self as pb, worker_client::WorkerClient};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

/// Chunk size for shipping compiled rules.
const RULES_CHUNK: usize = 1024 * 1024;

/// Rulesets a worker keeps (the worker's own `KEEP`).
const WORKER_RULESETS: usize = 3;

pub struct WorkerHandle {
    pub id: String,
    pub address: String,
    pub threads: u32,
    /// Largest file the worker scans (0: it did not say).
    pub max_file_size: u64,
    pub client: WorkerClient<Channel>,
    last_seen: RwLock<Instant>,
    pub last_heartbeat_ms: AtomicU64,
    /// Ruleset ids the worker holds, newest first, mirroring the worker's
    /// own cache; the lock is held while pushing.
    loaded: tokio::sync::Mutex<VecDeque<String>>,
    /// The newest of them, for status.
    loaded_id: RwLock<String>,
    pub in_flight: AtomicU64,
    pub scanned: AtomicU64,
    /// Bytes it scanned since it started, and its recent p99 scan time (us),
    /// as its last heartbeat said.
    pub bytes_scanned: AtomicU64,
    pub p99_us: AtomicU64,
    /// A call to it failed: out of the ring until its next heartbeat (a
    /// killed worker never sends one; a restarted one registers anew).
    suspect: AtomicBool,
    /// Learned from the store (it heartbeats with another coordinator),
    /// not here: its liveness is the heartbeats recorded there. A heartbeat
    /// here makes it this coordinator's again.
    shared: AtomicBool,
    /// What it registered with (written to the store for the others).
    pub registration: pb::RegisterRequest,
    /// Calls this coordinator may have open on the worker at once: as many
    /// as the worker admits (`max_in_flight` when it registered). A file
    /// waits for one in the coordinator's spool, not as an unread stream on
    /// the worker's connection, where it would hold HTTP/2 window that the
    /// admitted calls need. Shared fairly between clients ([`FairSlots`]).
    slots: FairSlots,
}

/// What a worker's heartbeat says of its load.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub in_flight: u64,
    pub scanned: u64,
    pub bytes_scanned: u64,
    pub p99_us: u64,
}

impl Load {
    pub fn of(w: &WorkerHandle) -> Load {
        Load {
            in_flight: w.in_flight.load(Ordering::Relaxed),
            scanned: w.scanned.load(Ordering::Relaxed),
            bytes_scanned: w.bytes_scanned.load(Ordering::Relaxed),
            p99_us: w.p99_us.load(Ordering::Relaxed),
        }
    }
}

impl WorkerHandle {
    /// Heard of at `at_ms` (a heartbeat here, or one recorded in the store).
    fn heard(&self, at_ms: i64, load: Load) {
        let ago = Duration::from_millis((qala_common::now_ms() - at_ms).max(0) as u64);
        *self.last_seen.write().unwrap_or_else(|p| p.into_inner()) = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
        self.last_heartbeat_ms.store(at_ms.max(0) as u64, Ordering::Relaxed);
        self.in_flight.store(load.in_flight, Ordering::Relaxed);
        self.scanned.store(load.scanned, Ordering::Relaxed);
        self.bytes_scanned.store(load.bytes_scanned, Ordering::Relaxed);
        self.p99_us.store(load.p99_us, Ordering::Relaxed);
        self.suspect.store(false, Ordering::Relaxed);
    }

    pub fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Relaxed)
    }

    fn slots_total(&self) -> usize {
        slots_of(&self.registration)
    }

    pub fn loaded_ruleset(&self) -> String {
        self.loaded_id.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn alive(&self, dead_after: Duration) -> bool {
        !self.suspect.load(Ordering::Relaxed) && self.last_seen.read().unwrap_or_else(|p| p.into_inner()).elapsed() < dead_after
    }

    /// Take the worker out of the ring until it heartbeats again.
    pub fn suspend(&self) {
        if !self.suspect.swap(true, Ordering::Relaxed) {
            warn!(worker = self.id, "worker failed a scan; out of the ring until its next heartbeat");
        }
    }

    /// Make sure this worker holds `rules`, pushing them if needed.
    pub async fn ensure_rules(&self, rules: &LoadedRules) -> Result<(), Status> {
        let mut loaded = self.loaded.lock().await;
        if loaded.contains(&rules.id) {
            return Ok(());
        }
        let chunks: Vec<pb::RulesChunk> = rules
            .bytes
            .chunks(RULES_CHUNK)
            .enumerate()
            .map(|(i, c)| pb::RulesChunk {
                ruleset_id: if i == 0 { rules.id.clone() } else { String::new() },
                data: c.to_vec(),
                what_if: i == 0 && rules.what_if,
            })
            .collect();
        let start = Instant::now();
        let resp = self.client.clone().load_rules(tokio_stream::iter(chunks)).await.map_err(|e| {
            warn!(worker = self.id, error = %e.message(), "shipping rules failed");
            Status::unavailable(format!("worker {} could not load rules: {}", self.id, e.message()))
        })?;
        info!(
            worker = self.id,
            ruleset_id = rules.id,
            rules = resp.get_ref().rule_count,
            ms = start.elapsed().as_millis() as u64,
            "rules shipped"
        );
        loaded.push_front(rules.id.clone());
        loaded.truncate(WORKER_RULESETS);
        if !rules.what_if {
            *self.loaded_id.write().unwrap_or_else(|p| p.into_inner()) = rules.id.clone();
        }
        Ok(())
    }

    /// Forget what the worker holds (it answered that it lacks the rules).
    pub async fn rules_lost(&self) {
        self.loaded.lock().await.clear();
        self.loaded_id.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The calls a worker admits at once: what it said, else two per thread.
fn slots_of(req: &pb::RegisterRequest) -> usize {
    match req.max_in_flight {
        0 => req.threads.max(1) as usize * 2,
        n => n as usize,
    }
}

/// The right to have one `ScanFile` call open on `worker`.
pub struct Slot {
    pub worker: Arc<WorkerHandle>,
    _permit: FairPermit,
}

/// How long an upload waits for its worker's slot before it looks at the
/// ranking again.
const SLOT_RECHECK: Duration = Duration::from_secs(1);

/// How a coordinator dials its workers: the cluster CA and its revocation
/// lists (the worker must hold an unrevoked certificate of the id it
/// registered) and this coordinator's own certificate and key.
#[derive(Debug, Clone)]
pub struct WorkerTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub crls: Arc<qala_tls::CrlSet>,
}

pub struct Cluster {
    workers: RwLock<HashMap<String, Arc<WorkerHandle>>>,
    rules: Arc<RulesManager>,
    pub heartbeat_interval: Duration,
    pub dead_after: Duration,
    pub scan_timeout: Duration,
    /// Mutual TLS to workers: the cluster CA and this coordinator's certificate.
    tls: Option<WorkerTls>,
}

impl Cluster {
    pub fn new(
        rules: Arc<RulesManager>,
        heartbeat_interval: Duration,
        scan_timeout: Duration,
        tls: Option<WorkerTls>,
    ) -> Arc<Self> {
        Arc::new(Self {
            tls,
            workers: RwLock::new(HashMap::new()),
            rules,
            heartbeat_interval,
            dead_after: heartbeat_interval * 3,
            scan_timeout,
        })
    }

    /// Add or replace a worker and ship it the rules in the background.
    pub fn register(self: &Arc<Self>, req: pb::RegisterRequest) -> Result<Arc<WorkerHandle>, CoreError> {
        self.insert(req, None)
    }

    /// Take in a worker another coordinator registered (from the store),
    /// last heard of at `heartbeat_ms`: a new one is added; one known from
    /// the store is refreshed (added anew if its address changed); one
    /// registered here is left as it is.
    pub fn adopt(self: &Arc<Self>, req: pb::RegisterRequest, heartbeat_ms: i64, load: Load) {
        let known = self.workers.read().unwrap_or_else(|p| p.into_inner()).get(&req.worker_id).cloned();
        match known {
            // Registered here: it stays this coordinator's while it
            // heartbeats here; once silent here but heard elsewhere (its
            // connection went to another replica behind the same name), the
            // store's word is taken.
            Some(w) if !w.is_shared() => {
                if !w.alive(self.dead_after)
                    && heartbeat_ms > w.last_heartbeat_ms.load(Ordering::Relaxed) as i64
                    && w.address == req.address
                {
                    w.shared.store(true, Ordering::Relaxed);
                    w.heard(heartbeat_ms, load);
                }
            }
            Some(w) if w.address == req.address && w.slots_total() == slots_of(&req) => {
                if heartbeat_ms > w.last_heartbeat_ms.load(Ordering::Relaxed) as i64 {
                    w.heard(heartbeat_ms, load);
                }
            }
            _ => {
                if let Ok(w) = self.insert(req, Some(heartbeat_ms)) {
                    w.heard(heartbeat_ms, load);
                }
            }
        }
    }

    /// Workers registered here (not learned from the store) and live.
    pub fn own(&self) -> Vec<Arc<WorkerHandle>> {
        self.live().into_iter().filter(|w| !w.is_shared()).collect()
    }

    fn insert(self: &Arc<Self>, req: pb::RegisterRequest, shared: Option<i64>) -> Result<Arc<WorkerHandle>, CoreError> {
        if req.worker_id.is_empty() {
            return Err(CoreError::Invalid("worker_id is empty".into()));
        }
        if req.engine_version != qala_engine::ENGINE_VERSION {
            return Err(CoreError::FailedPrecondition(format!(
                "worker engine {} differs from coordinator engine {}: compiled rules would not load",
                req.engine_version,
                qala_engine::ENGINE_VERSION
            )));
        }
        let mut endpoint = Endpoint::from_shared(req.address.clone())
            .map_err(|e| CoreError::Invalid(format!("bad worker address {}: {e}", req.address)))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(self.scan_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            let identity = Some((tls.cert.as_path(), tls.key.as_path()));
            let expect = qala_tls::Expect::Worker(req.worker_id.clone());
            endpoint = qala_tls::secure_endpoint(endpoint, Some(&tls.ca), identity, tls.crls.clone(), expect)
                .map_err(|e| CoreError::Invalid(format!("worker address {}: {e}", req.address)))?;
        }
        let client = WorkerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(qala_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(qala_proto::MAX_MESSAGE_BYTES);
        let handle = Arc::new(WorkerHandle {
            id: req.worker_id.clone(),
            address: req.address.clone(),
            threads: req.threads,
            max_file_size: req.max_file_size,
            client,
            last_seen: RwLock::new(Instant::now()),
            last_heartbeat_ms: AtomicU64::new(qala_common::now_ms() as u64),
            loaded: tokio::sync::Mutex::new(VecDeque::new()),
            loaded_id: RwLock::new(String::new()),
            in_flight: AtomicU64::new(0),
            scanned: AtomicU64::new(0),
            bytes_scanned: AtomicU64::new(0),
            p99_us: AtomicU64::new(0),
            suspect: AtomicBool::new(false),
            slots: FairSlots::new(slots_of(&req), req.threads.max(1) as usize),
            shared: AtomicBool::new(shared.is_some()),
            registration: req.clone(),
        });
        self.workers.write().unwrap_or_else(|p| p.into_inner()).insert(req.worker_id.clone(), handle.clone());
        if shared.is_some() {
            info!(
                worker = req.worker_id,
                address = req.address,
                "worker registered with another coordinator: taken from the store"
            );
        } else {
            info!(worker = req.worker_id, address = req.address, threads = req.threads, "worker registered");
        }
        let (w, rules) = (handle.clone(), self.rules.current());
        tokio::spawn(async move {
            let _ = w.ensure_rules(&rules).await;
        });
        Ok(handle)
    }

    /// Record a heartbeat; false if the worker is unknown (it must
    /// register). One known from the store is this coordinator's from now
    /// on (it is written to the store from here).
    pub fn heartbeat(&self, req: &pb::HeartbeatRequest) -> bool {
        let workers = self.workers.read().unwrap_or_else(|p| p.into_inner());
        let Some(w) = workers.get(&req.worker_id) else { return false };
        w.heard(
            qala_common::now_ms(),
            Load { in_flight: req.in_flight, scanned: req.scanned, bytes_scanned: req.bytes_scanned, p99_us: req.p99_us },
        );
        w.shared.store(false, Ordering::Relaxed);
        true
    }

    /// Whether worker `id` is registered here and heartbeating.
    pub fn is_live(&self, id: &str) -> bool {
        self.workers.read().unwrap_or_else(|p| p.into_inner()).get(id).is_some_and(|w| w.alive(self.dead_after))
    }

    /// Take a worker out of the ring now (it was revoked).
    pub fn evict(&self, id: &str) {
        if self.workers.write().unwrap_or_else(|p| p.into_inner()).remove(id).is_some() {
            warn!(worker = id, "worker revoked: removed from the ring");
        }
    }

    /// Live workers.
    pub fn live(&self) -> Vec<Arc<WorkerHandle>> {
        let workers = self.workers.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = workers.values().filter(|w| w.alive(self.dead_after)).cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Live workers in rendezvous order for `sha256`.
    pub fn ranked(&self, sha256: &str) -> Vec<Arc<WorkerHandle>> {
        let live = self.live();
        let ids: Vec<&str> = live.iter().map(|w| w.id.as_str()).collect();
        let order = placement::rank(&ids, sha256);
        order.into_iter().filter_map(|id| live.iter().find(|w| w.id == *id).cloned()).collect()
    }

    /// A slot on the first live worker not in `exclude` in the rendezvous
    /// ranking of `sha256`, for `client`, waiting its turn (slots are
    /// shared fairly between clients: [`FairSlots`]); `None` when no such
    /// worker is live. Placement stays the ranking's even when that worker
    /// is busy: a file goes elsewhere only when its worker fails.
    pub async fn acquire(&self, sha256: &str, exclude: &[String], client: &str) -> Option<Slot> {
        loop {
            let worker = self.ranked(sha256).into_iter().find(|w| !exclude.contains(&w.id))?;
            let mut waiting = match worker.slots.request(client) {
                Ok(permit) => return Some(Slot { worker, _permit: permit }),
                Err(w) => w,
            };
            // Look at the ranking again now and then in case membership
            // changed (the worker left, or one ranked higher came); the
            // place in the queue is kept while it has not.
            loop {
                if let Ok(permit) = tokio::time::timeout(SLOT_RECHECK, waiting.granted()).await {
                    return Some(Slot { worker, _permit: permit });
                }
                let first = self.ranked(sha256).into_iter().find(|w| !exclude.contains(&w.id));
                if !first.is_some_and(|f| Arc::ptr_eq(&f, &worker)) {
                    break;
                }
                worker.slots.poke();
            }
        }
    }

    /// A slot on the first live worker in the ranking of `sha256` if one is
    /// free for `client` now; never waits (a cut-through call opens only
    /// then).
    pub fn try_acquire(&self, sha256: &str, client: &str) -> Option<Slot> {
        let worker = self.ranked(sha256).into_iter().next()?;
        let permit = worker.slots.try_acquire(client)?;
        Some(Slot { worker, _permit: permit })
    }

    /// Drop dead workers and push new rules to live ones, until `stop`.
    pub async fn maintain(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut rules = self.rules.subscribe();
        let mut tick = tokio::time::interval(self.heartbeat_interval);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {
                    self.workers.write().unwrap_or_else(|p| p.into_inner()).retain(|id, w| {
                        let alive = w.alive(self.dead_after * 3);
                        if !alive {
                            warn!(worker = id, "worker missed heartbeats; removed");
                        }
                        alive
                    });
                    // A push that failed (the worker was not listening yet)
                    // is tried again, one at a time per worker.
                    let current = self.rules.current();
                    for w in self.live() {
                        if w.loaded_ruleset() != current.id && w.loaded.try_lock().is_ok() {
                            let r = current.clone();
                            tokio::spawn(async move { let _ = w.ensure_rules(&r).await; });
                        }
                    }
                }
                Ok(()) = rules.changed() => {
                    let current = rules.borrow_and_update().clone();
                    for w in self.live() {
                        let r = current.clone();
                        tokio::spawn(async move { let _ = w.ensure_rules(&r).await; });
                    }
                }
            }
        }
    }
}
