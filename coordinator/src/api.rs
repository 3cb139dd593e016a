//! The agent-facing `qala.v1.Scanner` service and the worker-facing
//! `qala.v1.Cluster` service.
//!
//! A `Scan` is answered from the store when it can be. Otherwise its upload
//! is received whole into a [`Spool`] and checked (size, sha256), always as
//! it arrives, and the first upload of a sha256 leads: every concurrent
//! upload of the same content waits for the leader's verdict instead of
//! scanning again (across coordinators sharing Redis, through a scan lock in
//! the store). If the leader fails (a lying client) a waiter takes over with
//! its own upload. The leader's file goes to the worker rendezvous hashing
//! picks once that worker has a free slot; a worker that fails mid-scan
//! costs nothing but time: the spool is replayed to the next worker in the
//! ranking.

use crate::cluster::{Cluster, WorkerHandle};
use crate::rules::{LoadedRules, RulesManager};
use crate::spool::Spool;
use crate::store::{self, Guarded};
use qala_proto::v1::{self as pb, scan_request::Msg};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

/// Most digests accepted by one `Lookup`.
const MAX_LOOKUP: usize = 10_000;

type Outcome = Option<Result<pb::Verdict, (Code, String)>>;

pub struct ScannerService {
    store: Arc<Guarded>,
    cluster: Arc<Cluster>,
    rules: Arc<RulesManager>,
    inflight: Arc<Mutex<HashMap<String, watch::Receiver<Outcome>>>>,
    /// One permit per upload being received and scanned.
    uploads: Arc<tokio::sync::Semaphore>,
    max_uploads: usize,
    busy_rejections: std::sync::atomic::AtomicU64,
    /// Names this coordinator process in scan-lock tokens.
    instance: String,
    tokens: std::sync::atomic::AtomicU64,
}

/// gRPC metadata key of the retry hint sent with RESOURCE_EXHAUSTED.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Told to agents when every upload slot is taken: how long to wait, a
/// little longer the busier the cluster (the agent adds jitter).
fn busy(max_uploads: usize, scans_in_flight: usize) -> Status {
    let after_ms = 250 + 50 * scans_in_flight.min(100) as u64;
    let mut s =
        Status::resource_exhausted(format!("coordinator busy: {max_uploads} uploads in progress; retry in {after_ms} ms"));
    if let Ok(v) = after_ms.to_string().parse() {
        s.metadata_mut().insert(RETRY_AFTER_MS, v);
    }
    s
}

/// The leader's slot in the in-flight map; removed however the leader ends,
/// and a dropped sender wakes the waiters so one of them takes over.
struct Leader {
    key: String,
    tx: watch::Sender<Outcome>,
    map: Arc<Mutex<HashMap<String, watch::Receiver<Outcome>>>>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

enum Role {
    Leader(Leader),
    Waiter(watch::Receiver<Outcome>),
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "coordinator".into())
}

pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn store_unavailable(e: store::StoreError) -> Status {
    Status::unavailable(format!("verdict store unavailable: {e}"))
}

impl ScannerService {
    pub fn new(store: Arc<Guarded>, cluster: Arc<Cluster>, rules: Arc<RulesManager>, max_uploads: usize) -> Self {
        let max_uploads = max_uploads.max(1);
        let uploads = Arc::new(tokio::sync::Semaphore::new(max_uploads));
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        Self {
            store,
            cluster,
            rules,
            inflight: Arc::default(),
            uploads,
            max_uploads,
            busy_rejections: Default::default(),
            instance: format!("{}-{}-{started:x}", hostname(), std::process::id()),
            tokens: Default::default(),
        }
    }

    fn role(&self, key: &str) -> Role {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(key) {
            return Role::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_string(), rx);
        Role::Leader(Leader { key: key.to_string(), tx, map: self.inflight.clone() })
    }

    /// Take the store's scan lock of this content, or, while another
    /// coordinator holds it, wait for that one's verdict. Bounded: past the
    /// scan deadline this coordinator scans without the lock.
    async fn take_turn(&self, ruleset_id: &str, sha256: &str, upload: &mut Upload) -> Result<Turn, Status> {
        if !self.store.shared() {
            return Ok(Turn::Scan(ScanLock::none()));
        }
        let key = store::key(ruleset_id, sha256);
        let token = format!("{}-{}", self.instance, self.tokens.fetch_add(1, Ordering::Relaxed));
        let deadline = tokio::time::Instant::now() + self.cluster.scan_timeout + LOCK_TTL;
        let mut waited = false;
        loop {
            if self.store.lock(&key, &token, LOCK_TTL).await {
                let lock = ScanLock::hold(self.store.clone(), key, token);
                // Its holder may have stored the verdict and let go just now.
                if waited && let Ok(Some(v)) = self.store.get(ruleset_id, sha256).await {
                    return Ok(Turn::Done(Box::new(v)));
                }
                return Ok(Turn::Scan(lock));
            }
            if let Ok(Some(v)) = self.store.get(ruleset_id, sha256).await {
                return Ok(Turn::Done(Box::new(v)));
            }
            if !waited {
                debug!(sha256, "another coordinator is scanning this content; waiting for its verdict");
                waited = true;
            }
            if tokio::time::Instant::now() > deadline {
                warn!(sha256, "another coordinator's scan lock outlived the scan deadline; scanning here too");
                return Ok(Turn::Scan(ScanLock::none()));
            }
            // Go on receiving the upload meanwhile.
            tokio::select! {
                _ = tokio::time::sleep(LOCK_POLL) => {}
                r = upload.wait(), if !upload.finished() => { r?; }
            }
        }
    }

    /// Scan one upload, received whole and checked (size, sha256): send it to
    /// the first worker in its rendezvous ranking when that worker has a free
    /// slot; if that worker fails (killed, unreachable, lost its rules), send
    /// it to the next, up to [`MAX_FAILOVERS`] times.
    ///
    /// The upload is read whole before any worker call opens: a worker is
    /// only ever sent a checked file, and never holds a stream it cannot
    /// read yet (unread streams fill the HTTP/2 connection window the calls
    /// it is serving need).
    async fn scan_upload(&self, header: &pb::ScanHeader, spool: &mut Spool, rules: &LoadedRules) -> Result<pb::Verdict, Status> {
        let mut tried: Vec<String> = Vec::new();
        let mut last: Option<Status> = None;
        let busy_until = tokio::time::Instant::now() + self.cluster.scan_timeout;
        loop {
            let Some(slot) = self.cluster.acquire(&header.sha256, &tried).await else { break };
            let worker = slot.worker.clone();
            if let Some(e) = &last {
                warn!(sha256 = header.sha256, failed = tried.last().map(String::as_str), next = worker.id, error = %e.message(), "worker failed; replaying the upload to the next worker");
            }
            match self.send_to(&worker, header, rules, spool).await {
                Ok(v) => return self.finish(v, &worker, header, rules).await,
                Err(Failed::Upload(s)) => return Err(s),
                // Another coordinator's calls fill it: wait a moment and ask
                // again, for as long as a scan may take.
                Err(Failed::Busy(s)) => {
                    drop(slot);
                    if tokio::time::Instant::now() < busy_until {
                        debug!(sha256 = header.sha256, worker = worker.id, "worker busy; waiting for a slot");
                        tokio::time::sleep(BUSY_PAUSE).await;
                    } else {
                        tried.push(worker.id.clone());
                        last = Some(s);
                    }
                }
                Err(Failed::Worker(s)) => {
                    worker.suspend();
                    tried.push(worker.id.clone());
                    last = Some(s);
                    if tried.len() > MAX_FAILOVERS {
                        break;
                    }
                }
            }
        }
        Err(match last {
            None => Status::unavailable("no live workers"),
            Some(last) => Status::unavailable(format!(
                "no worker could scan {} (tried {}): {}",
                header.sha256,
                tried.join(", "),
                last.message()
            )),
        })
    }

    /// Open a `ScanFile` call on `worker` and send it the header.
    async fn open(&self, worker: &WorkerHandle, header: &pb::ScanHeader, rules: &LoadedRules) -> Result<WorkerCall, Status> {
        worker.ensure_rules(rules).await?;
        let (tx, rx) = mpsc::channel(2);
        let first = pb::WorkerScanRequest {
            msg: Some(pb::worker_scan_request::Msg::Header(pb::WorkerScanHeader {
                sha256: header.sha256.clone(),
                size: header.size,
                file_name: header.file_name.clone(),
                ruleset_id: rules.id.clone(),
            })),
        };
        tx.send(first).await.map_err(|_| Status::internal("worker stream closed"))?;
        let mut client = worker.client.clone();
        let call = tokio::spawn(async move { client.scan_file(ReceiverStream::new(rx)).await });
        Ok(WorkerCall { tx, call })
    }

    /// Send the checked upload from the spool to `worker` and wait for its verdict.
    async fn send_to(
        &self,
        worker: &WorkerHandle,
        header: &pb::ScanHeader,
        rules: &LoadedRules,
        spool: &mut Spool,
    ) -> Result<pb::Verdict, Failed> {
        let WorkerCall { tx, call } = self.open(worker, header, rules).await.map_err(Failed::Worker)?;
        let spool_error = |e: std::io::Error| Failed::Upload(Status::unavailable(format!("coordinator spool: {e}")));
        spool.rewind().await.map_err(spool_error)?;
        while let Some(chunk) = spool.next_chunk(qala_proto::CHUNK_BYTES).await.map_err(spool_error)? {
            let m = pb::WorkerScanRequest { msg: Some(pb::worker_scan_request::Msg::Chunk(chunk)) };
            if tx.send(m).await.is_err() {
                break; // the worker's answer says why
            }
        }
        drop(tx);
        answer(worker, header, &rules.id, call).await
    }

    /// Check that the verdict is the one asked for, and store it.
    async fn finish(
        &self,
        verdict: pb::Verdict,
        worker: &WorkerHandle,
        header: &pb::ScanHeader,
        rules: &LoadedRules,
    ) -> Result<pb::Verdict, Status> {
        if verdict.ruleset_id != rules.id || verdict.sha256 != header.sha256 {
            return Err(Status::internal(format!(
                "worker {} answered for {}/{} instead of {}/{}",
                worker.id, verdict.ruleset_id, verdict.sha256, rules.id, header.sha256
            )));
        }
        match self.store.save(&verdict).await {
            Ok(stored) => info!(sha256 = %verdict.sha256, worker = worker.id, stored, verdict = kind_label(&verdict), "verdict"),
            // Degraded: the guard already said so once.
            Err(e @ store::StoreError::Unavailable(_)) => debug!(sha256 = %verdict.sha256, error = %e, "verdict not stored"),
            Err(e) => warn!(sha256 = %verdict.sha256, error = %e, "verdict not stored"),
        }
        Ok(verdict)
    }
}

/// The verdict for a scan cancelled at the coordinator's deadline.
fn timeout_verdict(header: &pb::ScanHeader, ruleset_id: &str, worker: &WorkerHandle, e: &Status) -> pb::Verdict {
    pb::Verdict {
        sha256: header.sha256.clone(),
        size: header.size,
        verdict: pb::VerdictKind::Unscannable as i32,
        limits_hit: vec![pb::LimitHit {
            limit: "scan_timeout".into(),
            object: header.file_name.clone(),
            detail: format!("no verdict from worker {} within the coordinator's deadline", worker.id),
        }],
        errors: vec![format!("timeout: {}", e.message())],
        worker_id: worker.id.clone(),
        ruleset_id: ruleset_id.to_string(),
        engine_version: qala_engine::ENGINE_VERSION.to_string(),
        scanned_at_ms: crate::rules::now_ms(),
        ..Default::default()
    }
}

/// Life of a scan lock in the store; extended every third of it while the
/// scan runs, so a coordinator that dies holding one frees it this soon.
const LOCK_TTL: Duration = Duration::from_secs(10);

/// How often a coordinator waiting on another's scan looks for its verdict.
const LOCK_POLL: Duration = Duration::from_millis(50);

enum Turn {
    /// This coordinator scans; the lock (if the store gave one) is held
    /// until the verdict is stored.
    Scan(ScanLock),
    /// Another coordinator scanned it meanwhile.
    Done(Box<pb::Verdict>),
}

/// A scan lock taken in the store: extended in the background while held,
/// given back when dropped.
struct ScanLock {
    held: Option<(Arc<Guarded>, String, String, tokio::task::JoinHandle<()>)>,
}

impl ScanLock {
    fn none() -> Self {
        Self { held: None }
    }

    fn hold(store: Arc<Guarded>, key: String, token: String) -> Self {
        let keeper = tokio::spawn({
            let (store, key, token) = (store.clone(), key.clone(), token.clone());
            async move {
                loop {
                    tokio::time::sleep(LOCK_TTL / 3).await;
                    if !store.relock(&key, &token, LOCK_TTL).await {
                        warn!(key, "scan lock lost to another coordinator (expired)");
                        return;
                    }
                }
            }
        });
        Self { held: Some((store, key, token, keeper)) }
    }
}

impl Drop for ScanLock {
    fn drop(&mut self) {
        if let Some((store, key, token, keeper)) = self.held.take() {
            keeper.abort();
            // Outside a runtime (shutting down) the lock just expires.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { store.unlock(&key, &token).await });
            }
        }
    }
}

/// Most workers a failed scan moves on to.
const MAX_FAILOVERS: usize = 3;

/// Pause before asking a busy worker again.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// An upload being received into a spool by a task of its own, so that it
/// is read while its call waits for something else; aborted if the call
/// goes away first.
struct Upload {
    task: Option<tokio::task::JoinHandle<Result<Spool, Status>>>,
    result: Option<Result<Spool, Status>>,
}

impl Upload {
    fn start(header: pb::ScanHeader, mut stream: Streaming<pb::ScanRequest>) -> Self {
        let task = tokio::spawn(async move { receive(&header, &mut stream).await });
        Self { task: Some(task), result: None }
    }

    fn finished(&self) -> bool {
        self.result.is_some()
    }

    /// The whole, checked upload (or why it is not). Cancel-safe.
    async fn wait(&mut self) -> Result<&mut Spool, Status> {
        if let Some(task) = self.task.as_mut() {
            let r = task.await.unwrap_or_else(|e| Err(Status::internal(format!("upload task failed: {e}"))));
            self.task = None;
            self.result = Some(r);
        }
        match self.result.as_mut().expect("set once the task ends") {
            Ok(spool) => Ok(spool),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Receive an upload whole into a spool (memory, then a temporary file),
/// checking it against its header: no more and no fewer bytes than
/// announced, and the announced sha256.
async fn receive(header: &pb::ScanHeader, stream: &mut Streaming<pb::ScanRequest>) -> Result<Spool, Status> {
    let mut spool = Spool::new();
    let mut hasher = Sha256::new();
    while let Some(msg) = stream.message().await.map_err(|e| Status::cancelled(format!("upload interrupted: {}", e.message())))? {
        let Some(Msg::Chunk(chunk)) = msg.msg else {
            return Err(Status::invalid_argument("Scan: only the first message may be a header"));
        };
        if spool.len() + chunk.len() as u64 > header.size {
            return Err(Status::invalid_argument(format!("upload is larger than the announced {} bytes", header.size)));
        }
        hasher.update(&chunk);
        spool.write(&chunk).await.map_err(|e| Status::unavailable(format!("coordinator spool: {e}")))?;
    }
    if spool.len() != header.size {
        return Err(Status::invalid_argument(format!("upload has {} bytes, header announced {}", spool.len(), header.size)));
    }
    let actual = hex::encode(hasher.finalize());
    if actual != header.sha256 {
        warn!(claimed = header.sha256, actual, agent = header.agent_id, "sha256 mismatch");
        return Err(Status::invalid_argument(format!("sha256 mismatch: header claims {}, content is {actual}", header.sha256)));
    }
    Ok(spool)
}

/// An open `ScanFile` call: its request stream and the pending answer.
struct WorkerCall {
    tx: mpsc::Sender<pb::WorkerScanRequest>,
    call: tokio::task::JoinHandle<Result<Response<pb::Verdict>, Status>>,
}

/// Why one attempt failed.
enum Failed {
    /// The upload itself is bad (size, sha256, protocol): no other worker
    /// would answer differently, the agent gets this error.
    Upload(Status),
    /// The worker failed: the next one in the ranking gets the upload.
    Worker(Status),
    /// The worker has no room (its slots are taken by other coordinators'
    /// calls): the same or another worker gets the upload in a moment.
    Busy(Status),
}

/// The worker's answer to a call whose upload was sent whole.
async fn answer(
    worker: &WorkerHandle,
    header: &pb::ScanHeader,
    ruleset_id: &str,
    call: tokio::task::JoinHandle<Result<Response<pb::Verdict>, Status>>,
) -> Result<pb::Verdict, Failed> {
    match call.await {
        Ok(Ok(v)) => Ok(v.into_inner()),
        // Past the deadline the call is cancelled (the worker's stream is
        // reset). Another worker would most likely take as long: the answer
        // is `unscannable`, reason timeout, which is never cached.
        Ok(Err(e)) if e.code() == Code::DeadlineExceeded || e.code() == Code::Cancelled && e.message().contains("Timeout") => {
            warn!(sha256 = header.sha256, worker = worker.id, "scan exceeded the coordinator's deadline");
            Ok(timeout_verdict(header, ruleset_id, worker, &e))
        }
        Ok(Err(e)) if e.code() == Code::InvalidArgument => Err(Failed::Upload(e)),
        Ok(Err(e)) if e.code() == Code::ResourceExhausted => Err(Failed::Busy(e)),
        Ok(Err(e)) if e.code() == Code::FailedPrecondition => {
            worker.rules_lost().await;
            Err(Failed::Worker(Status::unavailable(format!("worker {} lacked the rules: {}", worker.id, e.message()))))
        }
        Ok(Err(e)) => Err(Failed::Worker(Status::unavailable(format!("worker {} failed: {}", worker.id, e.message())))),
        Err(e) => Err(Failed::Worker(Status::internal(format!("worker call task failed: {e}")))),
    }
}

pub fn kind_label(v: &pb::Verdict) -> &'static str {
    pb::VerdictKind::try_from(v.verdict).unwrap_or_default().label()
}

#[tonic::async_trait]
impl pb::scanner_server::Scanner for ScannerService {
    async fn lookup(&self, request: Request<pb::LookupRequest>) -> Result<Response<pb::LookupResponse>, Status> {
        let req = request.into_inner();
        if req.sha256.len() > MAX_LOOKUP {
            return Err(Status::invalid_argument(format!("at most {MAX_LOOKUP} digests per Lookup")));
        }
        if let Some(bad) = req.sha256.iter().find(|s| !valid_sha256(s)) {
            return Err(Status::invalid_argument(format!("not a lower-case hex sha256: {bad:?}")));
        }
        let rules = self.rules.current();
        // With the store down every file is unknown: the agent uploads it
        // and it is scanned again (degraded, never wrong).
        let verdicts = self.store.get_many(&rules.id, &req.sha256).await.unwrap_or_default();
        Ok(Response::new(pb::LookupResponse { verdicts, ruleset_id: rules.id.clone() }))
    }

    async fn scan(&self, request: Request<Streaming<pb::ScanRequest>>) -> Result<Response<pb::ScanResponse>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await?.and_then(|m| m.msg) {
            Some(Msg::Header(h)) => h,
            _ => return Err(Status::invalid_argument("Scan: the first message must be a header")),
        };
        if !valid_sha256(&header.sha256) {
            return Err(Status::invalid_argument(format!("header sha256 is not a lower-case hex sha256: {:?}", header.sha256)));
        }
        let rules = self.rules.current();
        if let Ok(Some(v)) = self.store.get(&rules.id, &header.sha256).await {
            return Ok(Response::new(pb::ScanResponse { verdict: Some(v), cached: true }));
        }
        // Bounded work: past the limit the agent is asked to come back later
        // instead of being queued without bound.
        let Ok(_permit) = self.uploads.clone().try_acquire_owned() else {
            let scans_in_flight = self.inflight.lock().unwrap_or_else(|p| p.into_inner()).len();
            self.busy_rejections.fetch_add(1, Ordering::Relaxed);
            return Err(busy(self.max_uploads, scans_in_flight));
        };
        // The upload is received from now on, whatever this call then waits
        // for (a concurrent scan of the same content, another coordinator's
        // scan lock): a stream left unread would hold flow-control window
        // that the agent's other uploads on the connection need.
        let mut upload = Upload::start(header.clone(), stream);
        let key = format!("{}:{}", rules.id, header.sha256);
        // A waiter whose leader failed takes over; a bound stops a loop.
        for _ in 0..8 {
            match self.role(&key) {
                Role::Leader(leader) => {
                    // Coordinators sharing the store scan one content once:
                    // wait for another's verdict if it is scanning this one.
                    let (result, cached) = match self.take_turn(&rules.id, &header.sha256, &mut upload).await {
                        Ok(Turn::Done(v)) => (Ok(*v), true),
                        Ok(Turn::Scan(_lock)) => match upload.wait().await {
                            Ok(spool) => (self.scan_upload(&header, spool, &rules).await, false),
                            Err(e) => (Err(e), false),
                        },
                        Err(e) => (Err(e), false),
                    };
                    let _ = leader.tx.send(Some(result.clone().map_err(|s| (s.code(), s.message().to_string()))));
                    return result.map(|v| Response::new(pb::ScanResponse { verdict: Some(v), cached }));
                }
                Role::Waiter(mut rx) => {
                    let outcome = loop {
                        tokio::select! {
                            o = rx.wait_for(|o| o.is_some()) => break o.ok().and_then(|o| o.clone()),
                            r = upload.wait(), if !upload.finished() => { r?; }
                        }
                    };
                    if let Some(Ok(v)) = outcome {
                        return Ok(Response::new(pb::ScanResponse { verdict: Some(v), cached: true }));
                    }
                    // The leader failed or went away: try again, maybe as leader.
                }
            }
        }
        Err(Status::unavailable("could not complete the scan after repeated failures of concurrent uploads"))
    }

    async fn get_verdict(&self, request: Request<pb::GetVerdictRequest>) -> Result<Response<pb::GetVerdictResponse>, Status> {
        let sha = request.into_inner().sha256.to_ascii_lowercase();
        if !valid_sha256(&sha) {
            return Err(Status::invalid_argument(format!("not a hex sha256: {sha:?}")));
        }
        let rules = self.rules.current();
        let verdict = self.store.get(&rules.id, &sha).await.map_err(store_unavailable)?;
        Ok(Response::new(pb::GetVerdictResponse { verdict, ruleset_id: rules.id.clone() }))
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let rules = self.rules.current();
        let failure = self.rules.last_failure();
        let workers = self
            .cluster
            .live()
            .into_iter()
            .map(|w| pb::WorkerStatus {
                worker_id: w.id.clone(),
                address: w.address.clone(),
                threads: w.threads,
                ruleset_id: w.loaded_ruleset(),
                last_heartbeat_ms: w.last_heartbeat_ms.load(Ordering::Relaxed) as i64,
                in_flight: w.in_flight.load(Ordering::Relaxed),
                scanned: w.scanned.load(Ordering::Relaxed),
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            rules: Some(pb::RulesStatus {
                ruleset_id: rules.id.clone(),
                rule_count: rules.rule_count,
                file_count: rules.file_count,
                loaded_at_ms: rules.loaded_at_ms,
                last_errors: failure
                    .as_ref()
                    .map(|f| {
                        f.errors
                            .iter()
                            .map(|e| pb::RuleFileError { path: e.path.display().to_string(), message: e.message.clone() })
                            .collect()
                    })
                    .unwrap_or_default(),
                last_error_at_ms: failure.map(|f| f.at_ms).unwrap_or(0),
            }),
            workers,
            store: self.store.describe(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            busy_rejections: self.busy_rejections.load(Ordering::Relaxed),
            store_healthy: self.store.healthy(),
            store_error: if self.store.healthy() { String::new() } else { self.store.last_error() },
        }))
    }
}

pub struct ClusterService {
    cluster: Arc<Cluster>,
    rules: Arc<RulesManager>,
}

impl ClusterService {
    pub fn new(cluster: Arc<Cluster>, rules: Arc<RulesManager>) -> Self {
        Self { cluster, rules }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        self.cluster.register(request.into_inner())?;
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.cluster.heartbeat_interval.as_millis() as u32,
            ruleset_id: self.rules.current().id.clone(),
        }))
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let known = self.cluster.heartbeat(request.get_ref());
        Ok(Response::new(pb::HeartbeatResponse { known, ruleset_id: self.rules.current().id.clone() }))
    }
}
