//! What the cluster is doing, for the people and tools that watch it: the
//! `Status` call (rules in force, workers, store), the load clamd's STATS
//! reports, the rules listing, and the Prometheus text, whose gauges are
//! filled here from the core's parts at each scrape.

use super::error::CoreError;
use super::iocs::IocLists;
use super::shared::Shared;
use crate::auth::{Caller, Op};
use crate::cluster::Cluster;
use crate::metrics::{Gauges, Metrics};
use crate::rules::{LoadedRules, RulesManager};
use crate::siem::Siem;
use crate::store::Guarded;
use qala_proto::v1 as pb;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The upload path's load, from its quotas.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadLoad {
    pub in_progress: usize,
    pub busy_rejections: u64,
}

/// The workers' scan threads, live and busy.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterLoad {
    pub workers: usize,
    pub threads: u64,
    pub busy: u64,
}

/// One rule file of the ruleset in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFile {
    /// Relative to the rules path.
    pub path: String,
    pub bytes: u64,
}

/// The rules in force, and the last reload that failed.
#[derive(Debug, Clone, Default)]
pub struct RulesStatus {
    pub status: pb::RulesStatus,
    pub files: Vec<RuleFile>,
    /// The compiler's warnings on the rules in force: file, report.
    pub warnings: Vec<(String, String)>,
}

pub struct Overview {
    cluster: Arc<Cluster>,
    rules: Arc<RulesManager>,
    store: Arc<Guarded>,
    iocs: Arc<IocLists>,
    siem: Arc<Siem>,
    metrics: Arc<Metrics>,
}

impl Overview {
    pub fn new(s: &Shared) -> Self {
        Self {
            cluster: s.cluster.clone(),
            rules: s.rules.clone(),
            store: s.store.clone(),
            iocs: s.iocs.clone(),
            siem: s.siem.clone(),
            metrics: s.metrics.clone(),
        }
    }

    /// The ruleset in force.
    pub fn ruleset(&self) -> Arc<LoadedRules> {
        self.rules.current()
    }

    pub fn cluster_load(&self) -> ClusterLoad {
        let live = self.cluster.live();
        let threads: u64 = live.iter().map(|w| u64::from(w.threads)).sum();
        let busy = live.iter().map(|w| w.in_flight.load(Ordering::Relaxed)).sum::<u64>().min(threads);
        ClusterLoad { workers: live.len(), threads, busy }
    }

    fn rules_status(&self) -> pb::RulesStatus {
        let rules = self.rules.current();
        let failure = self.rules.last_failure();
        pb::RulesStatus {
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
        }
    }

    /// The `Status` call: rules, live workers, store.
    pub fn status(&self, caller: &Caller, load: UploadLoad) -> Result<pb::StatusResponse, CoreError> {
        caller.require(Op::Status)?;
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
                bytes_scanned: w.bytes_scanned.load(Ordering::Relaxed),
                p99_us: w.p99_us.load(Ordering::Relaxed),
            })
            .collect();
        let healthy = self.store.healthy();
        Ok(pb::StatusResponse {
            rules: Some(self.rules_status()),
            workers,
            store: self.store.describe(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            busy_rejections: load.busy_rejections,
            store_healthy: healthy,
            store_error: if healthy { String::new() } else { self.store.last_error() },
        })
    }

    /// The rules in force, file by file, and the last failed reload.
    pub fn rules(&self, caller: &Caller) -> Result<RulesStatus, CoreError> {
        caller.require(Op::Status)?;
        let current = self.rules.current();
        let files = current.files.iter().map(|(path, bytes)| RuleFile { path: path.clone(), bytes: *bytes }).collect();
        Ok(RulesStatus { status: self.rules_status(), files, warnings: current.warnings.clone() })
    }

    /// Whether this coordinator can answer scans (`/readyz`), and why not:
    /// ready = rules in force and a live worker holding them. A store that
    /// does not answer leaves it ready (it scans without the cache, never
    /// wrongly) and is named under `degraded`.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let rules = self.rules.current();
        let live = self.cluster.live();
        let holding = live.iter().filter(|w| w.loaded_ruleset() == rules.id).count();
        let mut reasons = Vec::new();
        if rules.id.is_empty() {
            reasons.push("no rules in force".to_string());
        }
        if live.is_empty() {
            reasons.push("no live worker".to_string());
        } else if holding == 0 {
            reasons.push("no live worker holds the rules in force yet".to_string());
        }
        let mut degraded = Vec::new();
        if !self.store.healthy() {
            degraded.push(format!("verdict store not answering: {}", self.store.last_error()));
        }
        let ready = reasons.is_empty();
        (
            ready,
            serde_json::json!({
                "ready": ready,
                "reasons": reasons,
                "degraded": degraded,
                "ruleset_id": rules.id,
                "workers": live.len(),
                "workers_holding_rules": holding,
                "store": self.store.describe(),
                "store_healthy": self.store.healthy(),
            }),
        )
    }

    /// The Prometheus text exposition, gauges read now.
    pub fn metrics(&self, caller: &Caller, load: UploadLoad) -> Result<String, CoreError> {
        caller.require(Op::Metrics)?;
        Ok(self.render_metrics(load))
    }

    /// The exposition without a caller: for the plain metrics listener.
    pub fn render_metrics(&self, load: UploadLoad) -> String {
        let cluster = self.cluster_load();
        let (rule_reloads, rule_reload_failures) = self.rules.reload_counts();
        let (ioc_block, ioc_allow) = self.iocs.counts();
        let (siem_sent, siem_dropped) = self.siem.counts();
        self.metrics.render(&Gauges {
            workers_alive: cluster.workers as i64,
            slots: cluster.threads as i64,
            slots_in_use: self.cluster.live().iter().map(|w| w.in_flight.load(Ordering::Relaxed) as i64).sum(),
            uploads_in_progress: load.in_progress as i64,
            store_healthy: i64::from(self.store.healthy()),
            store_errors: self.store.errors() as i64,
            rule_reloads: rule_reloads as i64,
            rule_reload_failures: rule_reload_failures as i64,
            rules: i64::from(self.rules.current().rule_count),
            busy_rejections: load.busy_rejections as i64,
            ioc_block: ioc_block as i64,
            ioc_allow: ioc_allow as i64,
            siem_sent: siem_sent as i64,
            siem_dropped: siem_dropped as i64,
        })
    }
}
