//! The store step of an upload: the worker's verdict checked (it is for
//! this content and these rules), the file put on the poison list if it
//! killed scan processes, a detection sent to the SIEM, and the verdict
//! stored in the form every later cached answer of it will have. And the
//! verdicts the coordinator answers itself, without a worker: a file too
//! large for any worker, a file on the poison list.

use crate::core::error::CoreError;
use crate::rules::LoadedRules;
use crate::siem::Siem;
use crate::store::{self, Guarded, Poisoned};
use qala_proto::v1 as pb;
use qala_proto::{Unscannable, VerdictKind, limits};
use std::sync::Arc;
use tracing::{debug, info, warn};

pub struct Verdicts {
    store: Arc<Guarded>,
    siem: Arc<Siem>,
}

impl Verdicts {
    pub fn new(store: Arc<Guarded>, siem: Arc<Siem>) -> Self {
        Self { store, siem }
    }

    /// What `sha256` did, if it is on the poison list now: it goes to no
    /// worker then (every coordinator sees the list). A store error reads
    /// as not listed.
    pub async fn poisoned(&self, sha256: &str) -> Option<String> {
        match self.store.get::<Poisoned>(sha256).await {
            Ok(p) => p.map(|p| p.detail),
            Err(e) => {
                debug!(sha256, error = %e, "poison list not read");
                None
            }
        }
    }

    /// Check that `verdict` (from worker `worker`) is the one asked for,
    /// and store it; the answer is the verdict as stored.
    pub async fn finish(
        &self,
        mut verdict: pb::Verdict,
        worker: &str,
        header: &pb::ScanHeader,
        rules: &LoadedRules,
    ) -> Result<pb::Verdict, CoreError> {
        if verdict.ruleset_id != rules.id || verdict.sha256 != header.sha256 {
            return Err(CoreError::Internal(format!(
                "worker {worker} answered for {}/{} instead of {}/{}",
                verdict.ruleset_id, verdict.sha256, rules.id, header.sha256
            )));
        }
        if let Some(crash) = verdict.limits_hit.iter().find(|l| l.limit == limits::WORKER_CRASH) {
            let until_ms = qala_common::now_ms() + store::POISON_TTL.as_millis() as i64;
            let entry = Poisoned { sha256: verdict.sha256.clone(), detail: crash.detail.clone(), until_ms };
            match self.store.put(&entry).await {
                Ok(()) => warn!(sha256 = %verdict.sha256, worker, detail = crash.detail, "poison file: listed for an hour"),
                Err(e) => warn!(sha256 = %verdict.sha256, error = %e, "poison file not listed"),
            }
        }
        // The answer is the verdict as stored, so it equals every cached answer.
        self.store.finalize(&mut verdict);
        if let Some(e) = store::detection_event(&verdict) {
            self.siem.send(serde_json::json!({
                "event": "detection",
                "at_ms": e.at_ms,
                "verdict": VerdictKind::of(&verdict).label(),
                "sha256": e.sha256, "sha1": e.sha1, "md5": e.md5, "size": e.size, "file_type": e.file_type,
                "ruleset_id": e.ruleset_id, "worker_id": e.worker_id,
                "detections": e.detections.iter().map(|d| serde_json::json!({
                    "rule": d.rule, "namespace": d.namespace, "object": d.object, "techniques": d.techniques,
                    "severity": VerdictKind::try_from(d.severity).unwrap_or_default().label(),
                })).collect::<Vec<_>>(),
            }));
        }
        match self.store.save(&verdict).await {
            Ok(stored) => info!(sha256 = %verdict.sha256, worker, stored, verdict = VerdictKind::of(&verdict).label(), "verdict"),
            // Degraded: the guard already said so once.
            Err(e @ store::StoreError::Unavailable(_)) => debug!(sha256 = %verdict.sha256, error = %e, "verdict not stored"),
            Err(e) => warn!(sha256 = %verdict.sha256, error = %e, "verdict not stored"),
        }
        Ok(verdict)
    }
}

/// The verdict for an upload larger than any worker scans: the one a
/// worker would give (`unscannable`, limit `max_file_size`), never cached.
pub fn too_big(header: &pb::ScanHeader, max: u64, ruleset_id: &str) -> pb::Verdict {
    let detail = format!("{} bytes is over the workers' limit of {max}", header.size);
    let error = format!("file larger than {max} bytes");
    Unscannable { limit: limits::MAX_FILE_SIZE, detail, error }.verdict(
        &header.sha256,
        header.size,
        ruleset_id,
        qala_engine::ENGINE_VERSION,
        "",
    )
}

/// The answer for a file on the poison list: what the workers said when it
/// killed their scan processes.
pub fn poisoned(header: &pb::ScanHeader, ruleset_id: &str, detail: &str) -> pb::Verdict {
    let error = format!("on the poison list (it killed scan processes): {detail}");
    Unscannable { limit: limits::WORKER_CRASH, detail: detail.to_string(), error }.verdict(
        &header.sha256,
        header.size,
        ruleset_id,
        qala_engine::ENGINE_VERSION,
        "",
    )
}
