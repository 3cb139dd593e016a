//! The coordinator core: every operation a client or worker can ask for,
//! whatever protocol it came in by. gRPC (and later REST and clamd) are
//! thin adapters over it: they find the credentials and the bytes, the core
//! authenticates, checks the role, applies quotas, does the work and writes
//! the audit line, once for all of them. Errors are `tonic::Status` codes,
//! the vocabulary every adapter maps to its own.
//!
//! The path of an upload: receive it whole into a [`Spool`] under the
//! client's quotas (stall timeout, byte rate, spool quota), verify size and
//! sha256, then coalesce (the first complete upload of a content leads, the
//! others wait for its verdict), take the scan lock shared by coordinators
//! ([`lock`]), dispatch to the worker rendezvous hashing picks, failing
//! over to the next ([`dispatch`]), and store the verdict. A fast large
//! upload is cut through to its worker while it arrives ([`receive`]): it
//! leads and locks before it is verified, but only while it keeps coming;
//! a pause of 250 ms or a failed check gives leadership and lock back, and
//! its worker never gets the last chunk. So a stalled or lying upload of a
//! content never holds up another client's upload of it for long.

mod admin;
mod agents;
mod dispatch;
pub mod iocs;
mod lock;
mod receive;
pub mod unhashed;

use crate::audit::Audit;
use crate::auth::{Auth, Caller, Credentials, Op, Role};
use crate::cluster::Cluster;
use crate::quota::Quotas;
use crate::rules::RulesManager;
use crate::store::{self, Guarded};
use futures::stream::BoxStream;
use qala_proto::v1 as pb;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Code, Status};

pub use lock::LOCK_TTL;

/// Most digests accepted by one `Lookup`.
const MAX_LOOKUP: usize = 10_000;

/// Largest `Lookup` answer, well under the 16 MiB message cap (a worker's
/// verdict is at most 4 MiB encoded, so one always fits).
const MAX_LOOKUP_BYTES: usize = 12 << 20;

/// The content of an upload after its header, as an adapter hands it over.
pub type Body = BoxStream<'static, Result<prost::bytes::Bytes, Status>>;

type Outcome = Option<Result<pb::Verdict, (Code, String)>>;

/// gRPC metadata key of the retry hint sent with RESOURCE_EXHAUSTED.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Limits of the core, from the coordinator's flags.
#[derive(Debug, Clone)]
pub struct CoreLimits {
    pub max_uploads: usize,
    /// An upload that sends nothing for this long is cancelled.
    pub upload_stall: Duration,
    /// Used while no worker has said its own limit.
    pub max_file_size: u64,
}

/// Certificate authority material for worker enrollment.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub pki_dir: PathBuf,
    pub lifetime: Duration,
}

pub struct Core {
    pub store: Arc<Guarded>,
    pub cluster: Arc<Cluster>,
    pub rules: Arc<RulesManager>,
    pub auth: Arc<Auth>,
    pub audit: Arc<Audit>,
    /// Whether workers must prove who they are with certificates.
    pub tls: bool,
    pub enrollment: Option<Enrollment>,
    /// Hash IOC lists, applied to every verdict answered.
    pub iocs: iocs::Iocs,
    pub metrics: crate::metrics::Metrics,
    /// SIEM export of detections and agent actions (set once at start).
    pub siem: std::sync::OnceLock<Arc<crate::siem::Siem>>,
    quotas: Quotas,
    limits: CoreLimits,
    inflight: Arc<Mutex<HashMap<String, watch::Receiver<Outcome>>>>,
    /// One permit per upload being received and scanned.
    uploads: Arc<tokio::sync::Semaphore>,
    busy_rejections: AtomicU64,
    /// Names this coordinator process in scan-lock tokens.
    instance: String,
    lock_tokens: AtomicU64,
}

/// RESOURCE_EXHAUSTED with a retry hint the agent honours (it adds jitter).
fn busy(message: String, after_ms: u64) -> Status {
    let mut s = Status::resource_exhausted(format!("{message}; retry in {after_ms} ms"));
    if let Ok(v) = after_ms.to_string().parse() {
        s.metadata_mut().insert(RETRY_AFTER_MS, v);
    }
    s
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "coordinator".into())
}

/// `md5`, `sha1` or `sha256` for lower-case hex of that digest's length.
pub fn hash_kind(s: &str) -> Option<&'static str> {
    if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    match s.len() {
        32 => Some("md5"),
        40 => Some("sha1"),
        64 => Some("sha256"),
        _ => None,
    }
}

pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn store_unavailable(e: store::StoreError) -> Status {
    Status::unavailable(format!("verdict store unavailable: {e}"))
}

pub fn kind_label(v: &pb::Verdict) -> &'static str {
    pb::VerdictKind::try_from(v.verdict).unwrap_or_default().label()
}

fn detected(v: &pb::Verdict) -> bool {
    matches!(pb::VerdictKind::try_from(v.verdict), Ok(pb::VerdictKind::Malicious | pb::VerdictKind::Suspicious))
}

/// The leader's slot in the in-flight map; removed however the leader ends,
/// and a dropped sender wakes the waiters so one of them takes over.
pub(super) struct Leader {
    key: String,
    tx: watch::Sender<Outcome>,
    map: Arc<Mutex<HashMap<String, watch::Receiver<Outcome>>>>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

pub(super) enum Turn {
    Leader(Leader),
    Waiter(watch::Receiver<Outcome>),
}

#[allow(clippy::too_many_arguments)]
impl Core {
    pub fn new(
        store: Arc<Guarded>,
        cluster: Arc<Cluster>,
        rules: Arc<RulesManager>,
        auth: Arc<Auth>,
        audit: Arc<Audit>,
        quotas: Quotas,
        limits: CoreLimits,
        tls: bool,
        enrollment: Option<Enrollment>,
    ) -> Self {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        Self {
            store,
            cluster,
            rules,
            auth,
            audit,
            tls,
            enrollment,
            iocs: iocs::Iocs::new(),
            metrics: crate::metrics::Metrics::new(),
            siem: std::sync::OnceLock::new(),
            quotas,
            uploads: Arc::new(tokio::sync::Semaphore::new(limits.max_uploads.max(1))),
            limits,
            inflight: Arc::default(),
            busy_rejections: AtomicU64::new(0),
            instance: format!("{}-{}-{started:x}", hostname(), std::process::id()),
            lock_tokens: AtomicU64::new(0),
        }
    }

    /// Uploads being received or scanned now.
    pub fn uploads_in_progress(&self) -> usize {
        self.limits.max_uploads.max(1).saturating_sub(self.uploads.available_permits())
    }

    pub fn busy_rejections(&self) -> u64 {
        self.busy_rejections.load(Ordering::Relaxed)
    }

    /// Queue an event for the SIEM sinks, if any.
    pub fn to_siem(&self, event: serde_json::Value) {
        if let Some(s) = self.siem.get() {
            s.send(event);
        }
    }

    pub fn limits(&self) -> &CoreLimits {
        &self.limits
    }

    /// Authenticate `creds` and check that the caller may do `op`; a refusal
    /// is audited.
    pub fn caller(&self, creds: &Credentials, op: Op) -> Result<Caller, Status> {
        let result = self.auth.authenticate(creds).and_then(|c| c.require(op).map(|_| c));
        if let Err(e) = &result
            && e.code() != Code::Unavailable
        {
            let peer = creds.peer.map(|p| p.to_string());
            let (op, code) = (format!("{op:?}"), format!("{:?}", e.code()));
            self.audit.event("denied", None, json!({"peer": peer, "op": op, "code": code, "reason": e.message()}));
        }
        result
    }

    /// The stored verdict of this content that may answer for it now: under
    /// `ruleset_id`, and with the digests of its nested objects that the IOC
    /// lists need (an archive scanned before the first md5 list lacks their
    /// md5s: it is scanned again). A store error reads as none.
    pub(super) async fn cached(&self, ruleset_id: &str, sha256: &str) -> Option<pb::Verdict> {
        self.store.get(ruleset_id, sha256).await.ok().flatten().filter(|v| self.iocs.covers(v))
    }

    fn served(&self, caller: &Caller, via: &str, v: &pb::Verdict) {
        if detected(v) {
            let rules: Vec<String> = v.detections.iter().map(|d| format!("{}.{}", d.namespace, d.rule)).collect();
            self.audit.event(
                "verdict_served",
                Some(caller),
                json!({"via": via, "sha256": v.sha256, "verdict": kind_label(v), "rules": rules}),
            );
        }
    }

    /// What of a verdict `caller` may see: the metadata of objects (a mail's
    /// headers: From, To, Subject) only for analysts and admins, and the
    /// digests of every object inside (analysts' data: an agent acts on the
    /// verdict, its detections and the IOC match, which name the object).
    fn for_caller(caller: &Caller, v: &mut pb::Verdict) {
        if !matches!(caller.role, Role::Analyst | Role::Admin) {
            v.object_meta.clear();
            v.objects.clear();
        }
    }

    /// A verdict without its executable summaries and object metadata
    /// (most of its size): what a scan's text output and an agent's
    /// actions need (`brief` in `LookupRequest` and `ScanHeader`).
    fn brief(v: &mut pb::Verdict) {
        v.executables.clear();
        v.object_meta.clear();
        v.objects.clear();
    }

    pub async fn lookup(&self, caller: &Caller, sha256s: Vec<String>, brief: bool) -> Result<pb::LookupResponse, Status> {
        caller.require(Op::Lookup)?;
        if sha256s.len() > MAX_LOOKUP {
            return Err(Status::invalid_argument(format!("at most {MAX_LOOKUP} digests per Lookup")));
        }
        if let Some(bad) = sha256s.iter().find(|s| !valid_sha256(s)) {
            return Err(Status::invalid_argument(format!("not a lower-case hex sha256: {bad:?}")));
        }
        let rules = self.rules.current();
        // With the store down every file is unknown: the agent uploads it
        // and it is scanned again (degraded, never wrong).
        self.metrics.lookups.inc_by(sha256s.len() as u64);
        let mut verdicts = self.store.get_many(&rules.id, &sha256s).await.unwrap_or_default();
        // One scanned before an md5/sha1 list needed its objects' digests
        // is unknown to agents: uploaded and scanned again.
        verdicts.retain(|v| self.iocs.covers(v));
        for v in &mut verdicts {
            self.iocs.apply(v);
        }
        // A blocked file nobody scanned yet is answered from its list.
        let known: std::collections::HashSet<String> = verdicts.iter().map(|v| v.sha256.clone()).collect();
        for sha in sha256s.iter().filter(|s| !known.contains(*s)) {
            verdicts.extend(self.iocs.blocked_verdict("sha256", sha, &rules.id));
        }
        if brief {
            verdicts.iter_mut().for_each(Self::brief);
        }
        // Bounded: a batch of large verdicts is cut, and the client asks again.
        let mut bytes = 0;
        let keep = verdicts
            .iter()
            .position(|v| {
                bytes += prost::Message::encoded_len(v) + 8;
                bytes > MAX_LOOKUP_BYTES
            })
            .unwrap_or(verdicts.len());
        let truncated = keep < verdicts.len();
        verdicts.truncate(keep.max(usize::from(truncated && keep == 0)));
        self.audit.event(
            "lookup",
            Some(caller),
            json!({"asked": sha256s.len(), "answered": verdicts.len(), "truncated": truncated}),
        );
        for v in &mut verdicts {
            self.served(caller, "lookup", v);
            Self::for_caller(caller, v);
        }
        Ok(pb::LookupResponse { verdicts, ruleset_id: rules.id.clone(), truncated })
    }

    pub async fn get_verdict(&self, caller: &Caller, hash: &str) -> Result<pb::GetVerdictResponse, Status> {
        let verdicts = self.verdicts_by_hash(caller, hash, "get_verdict").await?;
        Ok(pb::GetVerdictResponse { verdict: verdicts.first().cloned(), ruleset_id: self.rules.current().id.clone(), verdicts })
    }

    /// For each of `hashes` (sha256, sha1 or md5, checked by the caller),
    /// the verdicts under the current rules of the files with that digest.
    pub async fn lookup_any(&self, caller: &Caller, hashes: &[String]) -> Result<Vec<Vec<pb::Verdict>>, Status> {
        caller.require(Op::Lookup)?;
        let rules = self.rules.current();
        let mut wanted: Vec<Vec<String>> = Vec::with_capacity(hashes.len());
        for h in hashes {
            wanted.push(match hash_kind(h) {
                Some("sha256") => vec![h.clone()],
                Some(kind) => self.store.resolve(kind, h).await.map_err(store_unavailable)?,
                None => return Err(Status::invalid_argument(format!("not a hex sha256, sha1 or md5: {h:?}"))),
            });
        }
        let mut all: Vec<String> = wanted.iter().flatten().cloned().collect();
        all.sort();
        all.dedup();
        let found: HashMap<String, pb::Verdict> = self
            .store
            .get_many(&rules.id, &all)
            .await
            .map_err(store_unavailable)?
            .into_iter()
            .map(|v| (v.sha256.clone(), v))
            .collect();
        let mut out = Vec::with_capacity(hashes.len());
        let mut answered = 0;
        for (h, shas) in hashes.iter().zip(wanted) {
            let mut vs: Vec<pb::Verdict> = shas.iter().filter_map(|s| found.get(s).cloned()).collect();
            for v in &mut vs {
                self.iocs.apply(v);
                self.served(caller, "rest_lookup", v);
                Self::for_caller(caller, v);
            }
            if vs.is_empty() {
                vs.extend(self.iocs.blocked_verdict(hash_kind(h).unwrap_or("sha256"), h, &rules.id));
            }
            answered += usize::from(!vs.is_empty());
            out.push(vs);
        }
        self.audit.event("lookup", Some(caller), json!({"asked": hashes.len(), "answered": answered, "via": "rest"}));
        Ok(out)
    }

    /// Every verdict under the current rules of a file whose sha256, sha1
    /// or md5 (told apart by length) is `hash`.
    pub async fn verdicts_by_hash(&self, caller: &Caller, hash: &str, via: &str) -> Result<Vec<pb::Verdict>, Status> {
        caller.require(Op::GetVerdict)?;
        let hash = hash.trim().to_ascii_lowercase();
        let kind =
            hash_kind(&hash).ok_or_else(|| Status::invalid_argument(format!("not a hex sha256, sha1 or md5: {hash:?}")))?;
        let rules = self.rules.current();
        let sha256s = match kind {
            "sha256" => vec![hash.clone()],
            _ => self.store.resolve(kind, &hash).await.map_err(store_unavailable)?,
        };
        let mut verdicts = self.store.get_many(&rules.id, &sha256s).await.map_err(store_unavailable)?;
        verdicts.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        for v in &mut verdicts {
            self.iocs.apply(v);
        }
        if verdicts.is_empty() {
            verdicts.extend(self.iocs.blocked_verdict(kind, &hash, &rules.id));
        }
        self.audit.event(via, Some(caller), json!({"hash": hash, "kind": kind, "found": verdicts.len()}));
        for v in &mut verdicts {
            self.served(caller, via, v);
            Self::for_caller(caller, v);
        }
        Ok(verdicts)
    }

    /// The largest upload scanned: the smallest limit among live workers, or
    /// the coordinator's own when none has said.
    pub fn max_file_size(&self) -> u64 {
        self.cluster.live().iter().map(|w| w.max_file_size).filter(|&m| m > 0).min().unwrap_or(self.limits.max_file_size)
    }

    /// Scan one upload: `header` then `body`. See the module documentation.
    pub async fn scan(&self, caller: &Caller, header: pb::ScanHeader, body: Body) -> Result<pb::ScanResponse, Status> {
        caller.require(Op::Scan)?;
        let started = std::time::Instant::now();
        let mut result = match self.iocs.blocked_verdict("sha256", &header.sha256, &self.rules.current().id) {
            // Blocked: answered from its list, without reading a byte.
            Some(v) if valid_sha256(&header.sha256) => Ok(pb::ScanResponse { verdict: Some(v), cached: true }),
            _ => self.scan_inner(caller, &header, body).await,
        };
        if let Ok(pb::ScanResponse { verdict: Some(v), .. }) = &mut result {
            self.iocs.apply(v);
            Self::for_caller(caller, v);
            if header.brief {
                Self::brief(v);
            }
        }
        self.metrics.scanned(header.size, &result, started.elapsed());
        match &result {
            Ok(r) => {
                let none = pb::Verdict::default();
                let v = r.verdict.as_ref().unwrap_or(&none);
                self.audit.event(
                    "scan",
                    Some(caller),
                    json!({"sha256": header.sha256, "size": header.size, "verdict": kind_label(v), "cached": r.cached}),
                );
                self.served(caller, "scan", v);
            }
            Err(e) => self.audit.event(
                "scan",
                Some(caller),
                json!({"sha256": header.sha256, "size": header.size, "error": format!("{:?}", e.code())}),
            ),
        }
        result
    }

    async fn scan_inner(&self, caller: &Caller, header: &pb::ScanHeader, body: Body) -> Result<pb::ScanResponse, Status> {
        if !valid_sha256(&header.sha256) {
            return Err(Status::invalid_argument(format!("header sha256 is not a lower-case hex sha256: {:?}", header.sha256)));
        }
        let rules = self.rules.current();
        if let Some(v) = self.cached(&rules.id, &header.sha256).await {
            return Ok(pb::ScanResponse { verdict: Some(v), cached: true });
        }
        // Too large for any worker: answered now, without reading a byte.
        let max = self.max_file_size();
        if header.size > max {
            return Ok(pb::ScanResponse { verdict: Some(too_big_verdict(header, max, &rules.id)), cached: false });
        }
        // Bounded work, per client and in all: past a limit the agent is
        // asked to come back later instead of being queued without bound.
        let client = self.quotas.client(&caller.name);
        let Some(_client_permit) = client.try_upload() else {
            self.busy_rejections.fetch_add(1, Ordering::Relaxed);
            return Err(busy(
                format!("client {:?} has {} uploads in progress", caller.name, self.quotas.uploads_per_client()),
                500,
            ));
        };
        let Ok(_permit) = self.uploads.clone().try_acquire_owned() else {
            let scans_in_flight = self.inflight.lock().unwrap_or_else(|p| p.into_inner()).len();
            self.busy_rejections.fetch_add(1, Ordering::Relaxed);
            let after_ms = 250 + 50 * scans_in_flight.min(100) as u64;
            return Err(busy(format!("coordinator busy: {} uploads in progress", self.limits.max_uploads), after_ms));
        };
        let Some(_spool_quota) = self.quotas.reserve_spool(header.size) else {
            self.busy_rejections.fetch_add(1, Ordering::Relaxed);
            return Err(busy(format!("coordinator spool full ({} bytes held)", self.quotas.spool_used()), 1000));
        };
        let memory = self.quotas.reserve_spool_memory(header.size);
        let receive::Received { mut spool, live } = self.receive(header, body, &client, memory, &rules).await?;
        if let Some(live) = live {
            return self.finish_live(header, &mut spool, &rules, live).await;
        }
        // Scanned while this one was arriving?
        if let Some(v) = self.cached(&rules.id, &header.sha256).await {
            return Ok(pb::ScanResponse { verdict: Some(v), cached: true });
        }
        let key = format!("{}:{}", rules.id, header.sha256);
        // A waiter whose leader failed takes over; a bound stops a loop.
        for _ in 0..8 {
            match self.turn(&key) {
                Turn::Leader(leader) => {
                    // Coordinators sharing the store scan one content once:
                    // wait for another's verdict if it is scanning this one.
                    let (result, cached) = match self.take_lock(&rules.id, &header.sha256).await {
                        lock::Taken::Done(v) => (Ok(*v), true),
                        lock::Taken::Scan(_lock) => (self.dispatch(header, &mut spool, &rules).await, false),
                    };
                    let _ = leader.tx.send(Some(result.clone().map_err(|s| (s.code(), s.message().to_string()))));
                    return result.map(|v| pb::ScanResponse { verdict: Some(v), cached });
                }
                Turn::Waiter(mut rx) => {
                    let outcome = rx.wait_for(|o| o.is_some()).await.ok().and_then(|o| o.clone());
                    if let Some(Ok(v)) = outcome {
                        return Ok(pb::ScanResponse { verdict: Some(v), cached: true });
                    }
                    // The leader failed or went away: try again, maybe as leader.
                }
            }
        }
        Err(Status::unavailable("could not complete the scan after repeated failures of concurrent scans"))
    }

    /// The verdict of a cut-through upload, now whole and verified: its
    /// worker gets the last chunk; if that worker fails, the spool is
    /// replayed to the next as for any upload.
    async fn finish_live(
        &self,
        header: &pb::ScanHeader,
        spool: &mut crate::spool::Spool,
        rules: &crate::rules::LoadedRules,
        live: receive::Live,
    ) -> Result<pb::ScanResponse, Status> {
        let (answer, live) = live.finish(header, &rules.id).await;
        let receive::Live { slot, leader, lock, .. } = live;
        let worker = slot.worker.clone();
        let result = match answer {
            Ok(v) => self.finish(v, &worker, header, rules).await,
            Err(dispatch::Failed::Upload(s)) => Err(s),
            Err(dispatch::Failed::Busy(_)) => {
                drop(slot);
                self.dispatch_after(header, spool, rules, Vec::new(), None).await
            }
            Err(dispatch::Failed::Worker(s)) => {
                worker.suspend();
                drop(slot);
                tracing::warn!(sha256 = header.sha256, worker = worker.id, error = %s.message(), "worker failed during cut-through; replaying the upload from the spool");
                self.dispatch_after(header, spool, rules, vec![worker.id.clone()], Some(s)).await
            }
        };
        drop(lock);
        let _ = leader.tx.send(Some(result.clone().map_err(|s| (s.code(), s.message().to_string()))));
        result.map(|v| pb::ScanResponse { verdict: Some(v), cached: false })
    }

    fn turn(&self, key: &str) -> Turn {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(key) {
            return Turn::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_string(), rx);
        Turn::Leader(Leader { key: key.to_string(), tx, map: self.inflight.clone() })
    }

    pub async fn status(&self, caller: &Caller) -> Result<pb::StatusResponse, Status> {
        caller.require(Op::Status)?;
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
        Ok(pb::StatusResponse {
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
        })
    }
}

/// The verdict for an upload larger than any worker scans: the one a
/// worker would give (`unscannable`, limit `max_file_size`), never cached.
fn too_big_verdict(header: &pb::ScanHeader, max: u64, ruleset_id: &str) -> pb::Verdict {
    pb::Verdict {
        sha256: header.sha256.clone(),
        size: header.size,
        verdict: pb::VerdictKind::Unscannable as i32,
        limits_hit: vec![pb::LimitHit {
            limit: "max_file_size".into(),
            object: String::new(),
            detail: format!("{} bytes is over the workers' limit of {max}", header.size),
        }],
        ruleset_id: ruleset_id.to_string(),
        engine_version: qala_engine::ENGINE_VERSION.to_string(),
        scanned_at_ms: crate::rules::now_ms(),
        errors: vec![format!("file larger than {max} bytes")],
        ..Default::default()
    }
}
