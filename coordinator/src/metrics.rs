//! Prometheus metrics of the coordinator (prometheus-client), served at
//! `/metrics` on the REST listener to a `metrics` or `admin` token.
//! Counters are bumped where things happen (the core's scan path, the
//! store guard, rule reloads); gauges are read from the core when scraped.

use crate::core::Core;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListLabel {
    pub list: String,
}

pub struct Metrics {
    registry: Registry,
    pub uploads: Counter,
    pub upload_bytes: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub lookups: Counter,
    pub verdicts: Family<VerdictLabel, Counter>,
    pub limits_hit: Family<LimitLabel, Counter>,
    pub scan_seconds: Histogram,
    pub errors: Counter,
    uploads_in_progress: Gauge,
    slots_in_use: Gauge,
    slots: Gauge,
    workers_alive: Gauge,
    store_healthy: Gauge,
    store_errors: Gauge,
    rule_reloads: Gauge,
    rule_reload_failures: Gauge,
    rules: Gauge,
    busy_rejections: Gauge,
    ioc_entries: Family<ListLabel, Gauge>,
    siem_sent: Gauge,
    siem_dropped: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("qala");
        let m = Metrics {
            uploads: Counter::default(),
            upload_bytes: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            lookups: Counter::default(),
            verdicts: Family::default(),
            limits_hit: Family::default(),
            scan_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            errors: Counter::default(),
            uploads_in_progress: Gauge::default(),
            slots_in_use: Gauge::default(),
            slots: Gauge::default(),
            workers_alive: Gauge::default(),
            store_healthy: Gauge::default(),
            store_errors: Gauge::default(),
            rule_reloads: Gauge::default(),
            rule_reload_failures: Gauge::default(),
            rules: Gauge::default(),
            busy_rejections: Gauge::default(),
            ioc_entries: Family::default(),
            siem_sent: Gauge::default(),
            siem_dropped: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("uploads", "Scan calls answered (any front door)", m.uploads.clone());
        registry.register("upload_bytes", "Bytes of the files in scan calls", m.upload_bytes.clone());
        registry.register("cache_hits", "Scan calls answered from the store or another scan in flight", m.cache_hits.clone());
        registry.register("cache_misses", "Scan calls that were scanned by a worker", m.cache_misses.clone());
        registry.register("lookup_hashes", "Hashes asked for in lookups", m.lookups.clone());
        registry.register("verdicts", "Verdicts answered, by level", m.verdicts.clone());
        registry.register("limits_hit", "Scan limits hit, by kind", m.limits_hit.clone());
        registry.register("scan_duration_seconds", "Scan calls from request to verdict (not cached)", m.scan_seconds.clone());
        registry.register("scan_errors", "Scan calls that ended in an error", m.errors.clone());
        registry.register("uploads_in_progress", "Uploads being received or scanned (the queue)", m.uploads_in_progress.clone());
        registry.register("worker_slots_in_use", "Scans in progress on workers", m.slots_in_use.clone());
        registry.register("worker_slots", "Scan threads of the live workers", m.slots.clone());
        registry.register("workers_alive", "Workers registered and heartbeating", m.workers_alive.clone());
        registry.register("store_healthy", "1 while the verdict store answers", m.store_healthy.clone());
        registry.register("store_errors", "Verdict store calls that failed (since start)", m.store_errors.clone());
        registry.register("rule_reloads", "Rule reloads that produced a new ruleset (since start)", m.rule_reloads.clone());
        registry.register(
            "rule_reload_failures",
            "Rule reloads refused for errors (since start)",
            m.rule_reload_failures.clone(),
        );
        registry.register("rules", "Rules in the ruleset in force", m.rules.clone());
        registry.register(
            "busy_rejections",
            "Uploads refused as busy (RESOURCE_EXHAUSTED) since start",
            m.busy_rejections.clone(),
        );
        registry.register("ioc_entries", "Entries on the hash IOC lists", m.ioc_entries.clone());
        registry.register("siem_events_sent", "Events delivered to SIEM sinks (since start)", m.siem_sent.clone());
        registry.register("siem_events_dropped", "Events dropped from full SIEM queues (since start)", m.siem_dropped.clone());
        // Every label known up front, so each series exists (at 0) from the start.
        for verdict in ["clean", "suspicious", "malicious", "unscannable"] {
            let _ = m.verdicts.get_or_create(&VerdictLabel { verdict: verdict.into() });
        }
        let known = qala_engine::Limit::ALL.map(|l| l.as_str()).into_iter().chain(["max_file_size", "worker_crash"]);
        for limit in known {
            let _ = m.limits_hit.get_or_create(&LimitLabel { limit: limit.into() });
        }
        Metrics { registry, ..m }
    }

    /// Count one answered scan call.
    pub fn scanned(&self, size: u64, result: &Result<qala_proto::v1::ScanResponse, tonic::Status>, elapsed: std::time::Duration) {
        self.uploads.inc();
        self.upload_bytes.inc_by(size);
        match result {
            Ok(r) => {
                if r.cached {
                    self.cache_hits.inc();
                } else {
                    self.cache_misses.inc();
                    self.scan_seconds.observe(elapsed.as_secs_f64());
                }
                if let Some(v) = &r.verdict {
                    self.verdicts.get_or_create(&VerdictLabel { verdict: crate::core::kind_label(v).into() }).inc();
                    if !r.cached {
                        for l in &v.limits_hit {
                            self.limits_hit.get_or_create(&LimitLabel { limit: l.limit.clone() }).inc();
                        }
                    }
                }
            }
            Err(_) => {
                self.errors.inc();
            }
        }
    }

    /// The text exposition, gauges read from `core` now.
    pub fn render(&self, core: &Core) -> String {
        let live = core.cluster.live();
        self.workers_alive.set(live.len() as i64);
        self.slots.set(live.iter().map(|w| i64::from(w.threads)).sum());
        self.slots_in_use.set(live.iter().map(|w| w.in_flight.load(Ordering::Relaxed) as i64).sum());
        self.uploads_in_progress.set(core.uploads_in_progress() as i64);
        self.store_healthy.set(i64::from(core.store.healthy()));
        self.store_errors.set(core.store.errors() as i64);
        let (reloads, failures) = core.rules.reload_counts();
        self.rule_reloads.set(reloads as i64);
        self.rule_reload_failures.set(failures as i64);
        self.rules.set(i64::from(core.rules.current().rule_count));
        self.busy_rejections.set(core.busy_rejections() as i64);
        let (block, allow) = core.iocs.counts();
        self.ioc_entries.get_or_create(&ListLabel { list: "block".into() }).set(block as i64);
        self.ioc_entries.get_or_create(&ListLabel { list: "allow".into() }).set(allow as i64);
        let (sent, dropped) = core.siem.get().map(|s| s.counts()).unwrap_or_default();
        self.siem_sent.set(sent as i64);
        self.siem_dropped.set(dropped as i64);
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
