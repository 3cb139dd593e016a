//! The `qala.v1.Worker` service: rules loading and per-file scans.

use crate::convert;
use crate::pool::{Outcome, ScanPool};
use crate::rules::RulesCache;
use crate::sandbox::Shipped;
use qala_engine::Ruleset;
use qala_proto::v1::{self as pb, worker_scan_request::Msg};
use qala_proto::{Unscannable, limits};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

/// Largest serialized ruleset accepted (the ReversingLabs set is a few MB).
const MAX_RULES_BYTES: usize = 512 * 1024 * 1024;

/// Longest `LoadRules` waits for idle scan children to load new rules.
const WARM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub struct WorkerState {
    pub worker_id: String,
    pub pool: ScanPool,
    pub rules: RulesCache,
    pub max_file_size: u64,
    pub in_flight: AtomicU64,
    pub scanned: AtomicU64,
    /// Bytes of the files scanned, and the recent scan times (heartbeats).
    pub bytes_scanned: AtomicU64,
    pub recent: crate::latency::Recent,
    pub metrics: crate::metrics::Metrics,
    /// Disk-held uploads' files kept for later ones (`--upload-keep-bytes`).
    pub kept_uploads: Arc<crate::sandbox::KeptUploads>,
    max_in_flight: usize,
    /// Files being received or scanned at once. Each is held in memory, so
    /// this bounds memory. A call past it is refused at once with
    /// RESOURCE_EXHAUSTED, never left waiting: its unread stream would hold
    /// HTTP/2 connection window that the admitted calls need, and enough of
    /// them stall the connection. Coordinators keep to this many calls per
    /// worker; the refusal covers several coordinators sharing a worker.
    admission: Semaphore,
    /// Mutual TLS: only coordinator certificates may load rules or send files.
    tls: bool,
    /// A call that sends nothing for this long is cancelled.
    stall: std::time::Duration,
    /// The revocation lists in force (with TLS).
    crls: Option<Arc<qala_tls::CrlSet>>,
}

impl WorkerState {
    pub fn new(
        worker_id: String,
        pool: ScanPool,
        max_file_size: u64,
        max_in_flight: usize,
        tls: bool,
        stall: std::time::Duration,
    ) -> Self {
        Self {
            tls,
            stall,
            admission: Semaphore::new(max_in_flight.max(1)),
            max_in_flight: max_in_flight.max(1),
            worker_id,
            pool,
            rules: RulesCache::default(),
            max_file_size,
            in_flight: AtomicU64::new(0),
            scanned: AtomicU64::new(0),
            bytes_scanned: AtomicU64::new(0),
            recent: Default::default(),
            metrics: crate::metrics::Metrics::new(),
            kept_uploads: crate::sandbox::KeptUploads::new(0, crate::sandbox::KEEP_FILES),
            crls: None,
        }
    }

    /// Refuse coordinators whose certificate a list in `crls` revokes, on
    /// connections opened before the revocation too.
    pub fn with_crls(mut self, crls: Option<Arc<qala_tls::CrlSet>>) -> Self {
        self.crls = crls;
        self
    }

    /// Keep up to `bytes` of disk-held uploads' files for later uploads.
    pub fn with_kept_uploads(mut self, bytes: u64) -> Self {
        self.kept_uploads = crate::sandbox::KeptUploads::new(bytes, crate::sandbox::KEEP_FILES);
        self
    }

    /// Files taken at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

pub struct WorkerService {
    state: Arc<WorkerState>,
}

impl WorkerService {
    pub fn new(state: Arc<WorkerState>) -> Self {
        Self { state }
    }

    /// With TLS, only a coordinator certificate of the cluster CA may call:
    /// another worker's certificate cannot push rules or files to a peer.
    fn check_coordinator<T>(&self, request: &Request<T>, what: &str) -> Result<(), Status> {
        if !self.state.tls {
            return Ok(());
        }
        let cert = qala_tls::peer_info(request).and_then(|p| p.cert.as_deref());
        if let (Some(c), Some(crls)) = (cert, &self.state.crls)
            && crls.revokes(c)
        {
            warn!(serial = c.serial, "refused {what} from a revoked coordinator certificate");
            return Err(Status::permission_denied(format!("certificate {} is revoked", c.serial)));
        }
        match cert.and_then(|c| c.role()) {
            Some(qala_tls::CertRole::Coordinator(_)) => Ok(()),
            other => {
                warn!(peer = ?qala_tls::peer_info(request).and_then(|p| p.remote), role = ?other, "refused {what} from a non-coordinator certificate");
                Err(Status::permission_denied(format!("{what} is only for coordinator certificates (qala:coordinator:NAME)")))
            }
        }
    }

    /// The next message of a call, or DEADLINE_EXCEEDED if it stalls.
    async fn next<T>(&self, stream: &mut Streaming<T>) -> Result<Option<T>, Status> {
        match tokio::time::timeout(self.state.stall, stream.message()).await {
            Ok(m) => m,
            Err(_) => {
                Err(Status::deadline_exceeded(format!("call stalled: nothing received for {} s", self.state.stall.as_secs())))
            }
        }
    }
}

/// Decrements the in-flight gauge however the call ends.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(g: &'a AtomicU64) -> Self {
        g.fetch_add(1, Ordering::Relaxed);
        Self(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerService {
    async fn load_rules(&self, request: Request<Streaming<pb::RulesChunk>>) -> Result<Response<pb::LoadRulesResponse>, Status> {
        self.check_coordinator(&request, "LoadRules")?;
        let mut stream = request.into_inner();
        let mut id = String::new();
        let mut what_if = false;
        let mut bytes = Vec::new();
        while let Some(chunk) = self.next(&mut stream).await? {
            if id.is_empty() {
                id = chunk.ruleset_id;
                what_if = chunk.what_if;
                if id.is_empty() {
                    return Err(Status::invalid_argument("LoadRules: the first chunk must carry ruleset_id"));
                }
                // Already held (a rolling update going back and forth): make
                // it current (unless it is a what-if hunt's) and answer
                // before the rest is sent.
                if let Some(r) = self.state.rules.get(&id) {
                    if !what_if {
                        self.state.rules.insert(r.clone());
                    }
                    return Ok(Response::new(pb::LoadRulesResponse { ruleset_id: id, rule_count: r.rule_count }));
                }
            }
            if bytes.len() + chunk.data.len() > MAX_RULES_BYTES {
                return Err(Status::resource_exhausted("ruleset larger than 512 MiB"));
            }
            bytes.extend_from_slice(&chunk.data);
        }
        if id.is_empty() {
            return Err(Status::invalid_argument("LoadRules: empty stream"));
        }
        let start = Instant::now();
        let loaded_id = id.clone();
        // Checked here (deserializing re-JITs the rules: seconds of CPU, off
        // the runtime), then kept as bytes in a sealed memfd that each scan
        // child maps and loads for itself.
        let shipped = tokio::task::spawn_blocking(move || {
            let ruleset = Ruleset::from_bytes(loaded_id.clone(), &bytes).map_err(|e| Status::invalid_argument(e.to_string()))?;
            Shipped::new(loaded_id, ruleset.rule_count as u32, ruleset.limits.clone(), &bytes)
                .map_err(|e| Status::internal(format!("cannot hold the rules in memory: {e}")))
        })
        .await
        .map_err(|e| Status::internal(format!("rules loader failed: {e}")))??;
        let rule_count = shipped.rule_count;
        let shipped = Arc::new(shipped);
        if what_if {
            // Kept beside the rules in force; no scan child is switched to
            // them until a scan names them.
            self.state.rules.insert_what_if(shipped);
            info!(ruleset_id = id, rule_count, "what-if rules loaded");
            return Ok(Response::new(pb::LoadRulesResponse { ruleset_id: id, rule_count }));
        }
        self.state.rules.insert(shipped.clone());
        // Answered once the idle scan children hold the rules: the JIT
        // compile of a child's load is not paid by the first files.
        match tokio::time::timeout(WARM_TIMEOUT, self.state.pool.warm(shipped)).await {
            Ok(Ok(children)) => {
                info!(ruleset_id = id, rule_count, children, elapsed_ms = start.elapsed().as_millis() as u64, "rules loaded")
            }
            Ok(Err(e)) => warn!(ruleset_id = id, error = e, "rules loaded, but no scan child could start with them"),
            Err(_) => warn!(ruleset_id = id, "rules loaded; scan children still starting after {WARM_TIMEOUT:?}"),
        }
        Ok(Response::new(pb::LoadRulesResponse { ruleset_id: id, rule_count }))
    }

    async fn scan_file(&self, request: Request<Streaming<pb::WorkerScanRequest>>) -> Result<Response<pb::Verdict>, Status> {
        self.check_coordinator(&request, "ScanFile")?;
        let _gauge = InFlight::enter(&self.state.in_flight);
        let _admitted = match self.state.admission.try_acquire() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                self.state.metrics.busy.inc();
                return Err(Status::resource_exhausted(format!("worker busy: {} files in flight", self.state.max_in_flight)));
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Status::unavailable("worker is shutting down")),
        };
        let mut stream = request.into_inner();
        let header = match self.next(&mut stream).await?.and_then(|m| m.msg) {
            Some(Msg::Header(h)) => h,
            _ => return Err(Status::invalid_argument("ScanFile: the first message must be a header")),
        };
        let ruleset = self
            .state
            .rules
            .get(&header.ruleset_id)
            .ok_or_else(|| Status::failed_precondition(format!("ruleset {} not loaded on this worker", header.ruleset_id)))?;

        let too_big = header.size > self.state.max_file_size;
        // The bytes go straight into a memfd (or, from 64 MiB on, an
        // unlinked file on disk) that the scan child maps: the file is
        // received once and never copied again.
        let mut file = if too_big {
            None
        } else {
            let upload = crate::sandbox::Upload::reusing(header.size, &self.state.kept_uploads);
            Some(upload.map_err(|e| Status::internal(format!("holding the upload: {e}")))?)
        };
        let mut received = 0u64;
        while let Some(m) = self.next(&mut stream).await? {
            let Some(Msg::Chunk(chunk)) = m.msg else {
                return Err(Status::invalid_argument("ScanFile: a second header"));
            };
            received += chunk.len() as u64;
            if received > header.size {
                return Err(Status::invalid_argument(format!("ScanFile: more than the announced {} bytes", header.size)));
            }
            if let Some(f) = file.as_mut() {
                f.file().write_all(&chunk).map_err(|e| Status::resource_exhausted(format!("holding the upload: {e}")))?;
            }
        }
        if received != header.size {
            return Err(Status::invalid_argument(format!("ScanFile: got {received} bytes, header announced {}", header.size)));
        }

        // The coordinator (authenticated by its certificate) verified the
        // sha256 of what its client sent, and computed its md5 and sha1 as
        // it received it: the scan child takes the sha256 as the root's and
        // does not hash the content at all.
        let sha256 = header.sha256.clone();
        let kinds = qala_engine::DigestKinds { md5: header.object_md5, sha1: header.object_sha1 };
        let verdict = match file {
            None => too_big_verdict(&header, sha256, &ruleset.id, &self.state),
            Some(file) => {
                let (file, keep) = file.freeze().map_err(|e| Status::internal(format!("freezing the upload: {e}")))?;
                let released = keep.wanted().then(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));
                let outcome = self
                    .state
                    .pool
                    .scan(ruleset.clone(), file, sha256.clone(), true, kinds, released.clone())
                    .await
                    .ok_or_else(|| Status::unavailable("worker is shutting down"))?;
                let verdict = match outcome {
                    Outcome::Verdict(v) => {
                        let mut v = *v;
                        // The child reports the header's sha256 when it is a
                        // well-formed one, and otherwise hashes the content:
                        // a malformed header is refused here.
                        check_sha(&v.sha256, &header.sha256)?;
                        v.worker_id = self.state.worker_id.clone();
                        v
                    }
                    Outcome::Crashed(detail) => {
                        warn!(sha256, detail, "file killed its scan child each time it was scanned alone; unscannable");
                        self.state.metrics.crashes.inc();
                        convert::crashed(sha256, header.size, &ruleset.id, &self.state.worker_id, &detail)
                    }
                    Outcome::Failed(e) => return Err(Status::internal(e)),
                };
                // Every child is done with it, or it is not kept.
                keep.give_back(released.is_some_and(|r| r.load(Ordering::Relaxed)));
                verdict
            }
        };
        self.state.scanned.fetch_add(1, Ordering::Relaxed);
        self.state.bytes_scanned.fetch_add(verdict.size, Ordering::Relaxed);
        self.state.recent.record(verdict.scan_duration_us);
        self.state.metrics.scanned(&verdict);
        info!(sha256 = %verdict.sha256, verdict = pb::VerdictKind::try_from(verdict.verdict).unwrap_or_default().label(),
              us = verdict.scan_duration_us, "scanned");
        Ok(Response::new(verdict))
    }
}

fn check_sha(actual: &str, claimed: &str) -> Result<(), Status> {
    if actual != claimed {
        warn!(claimed, actual, "content does not match the claimed sha256");
        return Err(Status::invalid_argument(format!("sha256 mismatch: header claims {claimed}, content is {actual}")));
    }
    Ok(())
}

fn too_big_verdict(header: &pb::WorkerScanHeader, sha256: String, ruleset_id: &str, state: &WorkerState) -> pb::Verdict {
    let detail = format!("{} bytes is over the worker's limit of {}", header.size, state.max_file_size);
    let error = format!("file larger than {} bytes", state.max_file_size);
    Unscannable { limit: limits::MAX_FILE_SIZE, detail, error }.verdict(
        &sha256,
        header.size,
        ruleset_id,
        qala_engine::ENGINE_VERSION,
        &state.worker_id,
    )
}
