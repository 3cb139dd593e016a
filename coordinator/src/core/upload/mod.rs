//! The path of an upload, whichever front door it came in by, in the order
//! it runs. [`Uploads::scan`] is the entry; each step is a module of its own
//! that owns its state:
//!
//! 1. the entry: the caller's role; a blocked sha256 answered from its IOC
//!    list, a stored verdict from the cache ([`cache`]), a file on the
//!    poison list or too large for any worker answered at once, all before
//!    a byte is read;
//! 2. [`quota`]: the client's upload slots and byte rate, the coordinator's
//!    uploads in all, the spool quota; past one, busy with a retry hint;
//! 3. [`receive`] into a [`spool`] (memory, then an unlinked file), checking
//!    size and sha256; a fast large upload is cut through to its worker
//!    while it arrives (steps 4 to 6 run ahead for it, given back if it
//!    pauses or lies);
//! 4. [`coalesce`]: the first complete upload of a content leads, the
//!    others wait for its verdict;
//! 5. [`lock`]: the scan lock coordinators sharing a store take, so one
//!    content is scanned once across all of them;
//! 6. [`dispatch`] to the worker rendezvous hashing picks, failing over to
//!    the next;
//! 7. [`verdict`]: the answer checked and stored, and then shaped for the
//!    caller as every answer is (IOC lists, role, audit).
//!
//! Uploads with neither size nor digest (clamd, REST) are admitted (step 2)
//! before a byte is read, then hashed into a spool as they arrive
//! ([`unhashed`]), and then take the same path from step 1, steps 2 and 3
//! already done.

pub mod cache;
pub mod coalesce;
pub mod dispatch;
pub mod lock;
pub mod quota;
pub mod receive;
pub mod spool;
pub mod unhashed;
pub mod verdict;

use super::answer::Answers;
use super::digests::valid_sha256;
use super::error::CoreError;
use super::hunts::what_if::WhatIfs;
use super::iocs::IocLists;
use super::shared::Shared;
use super::sightings::Sightings;
use crate::auth::{Caller, Op};
use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::rules::{LoadedRules, RulesManager};
use cache::Cache;
use coalesce::{Coalescer, Turn};
use dispatch::{Dispatcher, Failed};
use lock::{Locks, Taken};
use qala_common::KeptFiles;
use qala_proto::v1 as pb;
use quota::Quotas;
use receive::{CutThrough, Received};
use serde_json::json;
use spool::Spool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use unhashed::Unhashed;
use verdict::Verdicts;

pub use receive::Body;

/// A busy coordinator is asked again for this long before an unhashed
/// upload's error is returned (its client cannot be told to come back).
const BUSY_PATIENCE: Duration = Duration::from_secs(60);
/// Most times a waiter whose leader failed tries again (as leader, maybe).
const MAX_TURNS: usize = 8;

/// Limits of the upload path, from the coordinator's flags.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Most uploads received and scanned at once.
    pub max_uploads: usize,
    pub client_max_uploads: usize,
    /// Bytes per second one client may upload (0: no limit).
    pub client_bytes_per_sec: u64,
    /// Bytes of uploads held at once.
    pub spool_max: u64,
    /// Of those, bytes held in memory.
    pub spool_memory: u64,
    /// Spill files kept between uploads, in bytes.
    pub spool_keep: u64,
    /// An upload that sends nothing for this long is cancelled.
    pub upload_stall: Duration,
    /// Used while no worker has said its own limit.
    pub max_file_size: u64,
}

/// The upload path and its state.
pub struct Uploads {
    settings: UploadSettings,
    quotas: Quotas,
    spill: Arc<KeptFiles>,
    cache: Cache,
    coalescer: Coalescer,
    locks: Locks,
    dispatcher: Dispatcher,
    verdicts: Verdicts,
    cluster: Arc<Cluster>,
    rules: Arc<RulesManager>,
    iocs: Arc<IocLists>,
    answers: Arc<Answers>,
    metrics: Arc<Metrics>,
    sightings: Arc<Sightings>,
    what_ifs: Arc<WhatIfs>,
}

impl Uploads {
    pub fn new(settings: UploadSettings, s: &Shared, sightings: Arc<Sightings>, what_ifs: Arc<WhatIfs>) -> Self {
        let quotas = Quotas::new(settings.client_max_uploads, settings.client_bytes_per_sec, settings.spool_max)
            .with_max_uploads(settings.max_uploads)
            .with_spool_memory(settings.spool_memory);
        let spill = KeptFiles::new(settings.spool_keep.min(settings.spool_max), spool::KEEP_FILES);
        Self {
            quotas,
            spill,
            cache: Cache::new(s.store.clone(), s.iocs.clone()),
            coalescer: Coalescer::default(),
            locks: Locks::new(s.store.clone(), s.cluster.scan_timeout),
            dispatcher: Dispatcher::new(s.cluster.clone(), s.iocs.clone()),
            verdicts: Verdicts::new(s.store.clone(), s.siem.clone()),
            cluster: s.cluster.clone(),
            rules: s.rules.clone(),
            iocs: s.iocs.clone(),
            answers: s.answers.clone(),
            metrics: s.metrics.clone(),
            sightings,
            what_ifs,
            settings,
        }
    }

    /// An upload that sends nothing for this long is cancelled.
    pub fn upload_stall(&self) -> Duration {
        self.settings.upload_stall
    }

    /// The largest upload scanned: the smallest limit among live workers, or
    /// the coordinator's own when none has said.
    pub fn max_file_size(&self) -> u64 {
        let said = self.cluster.live().iter().map(|w| w.max_file_size).filter(|&m| m > 0).min();
        said.unwrap_or(self.settings.max_file_size)
    }

    /// Uploads being received or scanned now.
    pub fn in_progress(&self) -> usize {
        self.quotas.in_progress()
    }

    /// Uploads refused as busy since start.
    pub fn busy_rejections(&self) -> u64 {
        self.quotas.busy_rejections()
    }

    /// Scan one upload, `header` then `body`, as `caller`: the entry of the
    /// path (see the module documentation). The answer is shaped for the
    /// caller, counted and audited.
    pub async fn scan(&self, caller: &Caller, header: pb::ScanHeader, body: Body) -> Result<pb::ScanResponse, CoreError> {
        self.serve(caller, header, Source::Body(body)).await
    }

    /// [`Uploads::scan`] of a body still to receive, or received already.
    async fn serve(&self, caller: &Caller, header: pb::ScanHeader, source: Source) -> Result<pb::ScanResponse, CoreError> {
        caller.require(Op::Scan)?;
        let started = Instant::now();
        let mut result = self.answer(caller, &header, source).await;
        if let Ok(pb::ScanResponse { verdict: Some(v), .. }) = &mut result {
            // The agent holds what it uploaded (its digest was checked).
            self.sightings.seen(caller, [&v.sha256], header.no_sightings);
            self.iocs.apply(v);
            Answers::for_caller(caller, v);
            if header.brief {
                Answers::brief(v);
            }
        }
        let outcome = result.as_ref().ok().map(|r| (r.verdict.as_ref(), r.cached));
        self.metrics.scanned(header.size, outcome, started.elapsed());
        let audit = self.answers.audit();
        match &result {
            Ok(r) => {
                let none = pb::Verdict::default();
                let v = r.verdict.as_ref().unwrap_or(&none);
                let mut fields = json!({"sha256": header.sha256, "size": header.size, "verdict": qala_proto::VerdictKind::of(v).label(), "cached": r.cached});
                if !header.hunt_id.is_empty() {
                    fields["what_if"] = json!(header.hunt_id);
                }
                audit.event("scan", Some(caller), fields);
                self.answers.served(caller, "scan", v);
            }
            Err(e) => {
                audit.event("scan", Some(caller), json!({"sha256": header.sha256, "size": header.size, "error": e.audit_code()}))
            }
        }
        result
    }

    /// The verdict of one upload, before it is shaped for its caller.
    async fn answer(&self, caller: &Caller, header: &pb::ScanHeader, source: Source) -> Result<pb::ScanResponse, CoreError> {
        let cached = |v| Ok(pb::ScanResponse { verdict: Some(v), cached: true });
        let rules = self.rules.current();
        // Answered without reading a byte: blocked by an IOC list, known,
        // on the poison list, or too large for any worker.
        if !valid_sha256(&header.sha256) {
            return Err(CoreError::Invalid(format!("header sha256 is not a lower-case hex sha256: {:?}", header.sha256)));
        }
        if !header.hunt_id.is_empty() {
            return self.what_if(caller, header, source).await;
        }
        if let Some(v) = self.iocs.blocked_verdict("sha256", &header.sha256, &rules.id) {
            return cached(v);
        }
        if let Some(v) = self.cache.cached(&rules.id, &header.sha256).await {
            return cached(v);
        }
        if let Some(detail) = self.verdicts.poisoned(&header.sha256).await {
            tracing::warn!(sha256 = header.sha256, detail, "poison file: not sent to any worker");
            return Ok(pb::ScanResponse { verdict: Some(verdict::poisoned(header, &rules.id, &detail)), cached: false });
        }
        let max = self.max_file_size();
        if header.size > max {
            return Ok(pb::ScanResponse { verdict: Some(verdict::too_big(header, max, &rules.id)), cached: false });
        }
        let (_admitted, mut spool, digests) = match source {
            Source::Body(body) => {
                // Bounded work, per client and in all: past a limit the
                // client is asked to come back later instead of being
                // queued without bound.
                let mut admitted = self.quotas.admit(&caller.name, header.size, self.coalescer.len())?;
                let spool = Spool::new(admitted.memory.take()).reusing(self.spill.clone(), header.size);
                let cut = CutThrough {
                    client: &caller.name,
                    coalescer: &self.coalescer,
                    locks: &self.locks,
                    cache: &self.cache,
                    dispatcher: &self.dispatcher,
                    rules: &rules,
                };
                let Received { mut spool, live, digests } =
                    receive::receive(header, body, &admitted.client, spool, self.settings.upload_stall, Some(cut)).await?;
                if let Some(live) = live {
                    return self.finish_live(&caller.name, header, &mut spool, &rules, live, &digests).await;
                }
                (admitted, spool, digests)
            }
            Source::Spooled(held) => {
                let (spool, admitted, digests) = *held;
                (admitted, spool, digests)
            }
        };
        // Scanned while this one was arriving?
        if let Some(v) = self.cache.cached(&rules.id, &header.sha256).await {
            return cached(v);
        }
        let key = format!("{}:{}", rules.id, header.sha256);
        for _ in 0..MAX_TURNS {
            match self.coalescer.turn(&key) {
                Turn::Leader(leader) => {
                    // Coordinators sharing the store scan one content once:
                    // wait for another's verdict if it is scanning this one.
                    let (result, cached) = match self.locks.take(&self.cache, &rules.id, &header.sha256).await {
                        Taken::Done(v) => (Ok(*v), true),
                        Taken::Scan(_lock) => (self.scan_spool(&caller.name, header, &mut spool, &rules, &digests).await, false),
                    };
                    leader.finish(&result);
                    return result.map(|v| pb::ScanResponse { verdict: Some(v), cached });
                }
                Turn::Waiter(waiter) => {
                    if let Some(v) = waiter.verdict().await {
                        return cached(v);
                    }
                    // The leader failed or went away: try again, maybe as leader.
                }
            }
        }
        Err(CoreError::Unavailable("could not complete the scan after repeated failures of concurrent scans".into()))
    }

    /// An upload a what-if hunt asked for: received and checked as any,
    /// scanned with that hunt's rules only, recorded in its results; no
    /// cache, no coalescing with uploads under the rules in force, nothing
    /// stored as a verdict.
    async fn what_if(&self, caller: &Caller, header: &pb::ScanHeader, source: Source) -> Result<pb::ScanResponse, CoreError> {
        // Agents (and admins) upload what a hunt asked of them.
        caller.require(Op::AgentReport)?;
        let rules = self.what_ifs.rules_of(&header.hunt_id).await?;
        let max = self.max_file_size();
        if header.size > max {
            return Ok(pb::ScanResponse { verdict: Some(verdict::too_big(header, max, &rules.id)), cached: false });
        }
        let (_admitted, mut spool, digests) = match source {
            Source::Body(body) => {
                let mut admitted = self.quotas.admit(&caller.name, header.size, self.coalescer.len())?;
                let spool = Spool::new(admitted.memory.take()).reusing(self.spill.clone(), header.size);
                let Received { spool, digests, .. } =
                    receive::receive(header, body, &admitted.client, spool, self.settings.upload_stall, None).await?;
                (admitted, spool, digests)
            }
            Source::Spooled(held) => {
                let (spool, admitted, digests) = *held;
                (admitted, spool, digests)
            }
        };
        let (mut v, _worker) = self.dispatcher.dispatch(&caller.name, header, &mut spool, &rules).await?;
        with_digests(&mut v, &digests);
        self.what_ifs.record(&header.hunt_id, &v).await?;
        Ok(pb::ScanResponse { verdict: Some(v), cached: false })
    }

    /// Dispatch a received upload and store the verdict.
    async fn scan_spool(
        &self,
        client: &str,
        header: &pb::ScanHeader,
        spool: &mut Spool,
        rules: &LoadedRules,
        digests: &qala_engine::Digests,
    ) -> Result<pb::Verdict, CoreError> {
        let (mut v, worker) = self.dispatcher.dispatch(client, header, spool, rules).await?;
        with_digests(&mut v, digests);
        self.verdicts.finish(v, &worker.id, header, rules).await
    }

    /// The verdict of a cut-through upload, now whole and verified: its
    /// worker gets the last chunk; if that worker fails, the spool is
    /// replayed to the next as for any upload.
    async fn finish_live(
        &self,
        client: &str,
        header: &pb::ScanHeader,
        spool: &mut Spool,
        rules: &LoadedRules,
        live: receive::Live,
        digests: &qala_engine::Digests,
    ) -> Result<pb::ScanResponse, CoreError> {
        let (answer, live) = live.finish(header, &rules.id).await;
        let receive::Live { slot, leader, lock, .. } = live;
        let worker = slot.worker.clone();
        let dispatched = match answer {
            Ok(v) => Ok((v, worker)),
            Err(Failed::Upload(s)) => Err(CoreError::Invalid(s.message().to_string())),
            Err(Failed::Busy(_)) => {
                drop(slot);
                self.dispatcher.dispatch_after(client, header, spool, rules, Vec::new(), None).await
            }
            Err(Failed::Worker(s)) => {
                worker.suspend();
                drop(slot);
                tracing::warn!(sha256 = header.sha256, worker = worker.id, error = %s.message(), "worker failed during cut-through; replaying the upload from the spool");
                self.dispatcher.dispatch_after(client, header, spool, rules, vec![worker.id.clone()], Some(s)).await
            }
        };
        let result = match dispatched {
            Ok((mut v, worker)) => {
                with_digests(&mut v, digests);
                self.verdicts.finish(v, &worker.id, header, rules).await
            }
            Err(e) => Err(e),
        };
        drop(lock);
        leader.finish(&result);
        result.map(|v| pb::ScanResponse { verdict: Some(v), cached: false })
    }

    /// Admit an upload of `caller` whose size and digest are not known
    /// (clamd, REST) before a byte of it is read, under the quotas of every
    /// upload ([`quota`]); a busy coordinator is asked again after its hint,
    /// for up to [`BUSY_PATIENCE`] (the bytes wait unread meanwhile). At
    /// most `max` bytes.
    pub async fn admit_unhashed(&self, caller: &Caller, max: u64) -> Result<Unhashed, CoreError> {
        caller.require(Op::Scan)?;
        let started = Instant::now();
        loop {
            match self.quotas.admit(&caller.name, 0, self.coalescer.len()) {
                Ok(admitted) => return Ok(Unhashed::new(max, admitted)),
                Err(CoreError::Busy { retry_after, .. }) if started.elapsed() < BUSY_PATIENCE => {
                    tokio::time::sleep(retry_after.clamp(Duration::from_millis(50), Duration::from_secs(5))).await;
                }
                Err(e) => {
                    let fields = json!({"size": 0, "error": e.audit_code()});
                    self.answers.audit().event("scan", Some(caller), fields);
                    return Err(e);
                }
            }
        }
    }

    /// Scan a whole unhashed upload as `caller`, under the admission it was
    /// received with.
    pub async fn scan_unhashed(&self, caller: &Caller, upload: Unhashed) -> Result<pb::ScanResponse, CoreError> {
        let (spool, digests, admitted) = upload.finish();
        let header = pb::ScanHeader { sha256: digests.sha256.clone(), size: spool.len(), ..Default::default() };
        self.serve(caller, header, Source::Spooled(Box::new((spool, admitted, digests)))).await
    }
}

/// What an upload's bytes are: to be received, or received (an unhashed
/// upload, admitted before it was read).
enum Source {
    Body(Body),
    Spooled(Box<(Spool, quota::Admission, qala_engine::Digests)>),
}

/// The root's md5 and sha1, computed here as the upload was received (the
/// worker hashes none of the root), put in the worker's verdict.
fn with_digests(v: &mut pb::Verdict, d: &qala_engine::Digests) {
    (v.md5, v.sha1) = (d.md5.clone(), d.sha1.clone());
}
