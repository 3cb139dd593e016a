//! Prometheus metrics of the coordinator (prometheus-client), served at
//! `/metrics` on the REST listener to a `metrics` or `admin` token.
//! Counters are bumped where things happen (the core's upload path and
//! lookups); gauges are set by the core at each scrape ([`Gauges`]). This
//! module knows the series, not the core.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use qala_common::metrics::VerdictFamilies;
use qala_proto::v1 as pb;
use qala_proto::{VerdictKind, limits};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListLabel {
    pub list: String,
}

/// The gauges, as read at a scrape.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub workers_alive: i64,
    pub slots: i64,
    pub slots_in_use: i64,
    pub uploads_in_progress: i64,
    pub store_healthy: i64,
    pub store_errors: i64,
    pub rule_reloads: i64,
    pub rule_reload_failures: i64,
    pub rules: i64,
    pub busy_rejections: i64,
    pub ioc_block: i64,
    pub ioc_allow: i64,
    pub siem_sent: i64,
    pub siem_dropped: i64,
}

pub struct Metrics {
    registry: Registry,
    pub uploads: Counter,
    pub upload_bytes: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub lookups: Counter,
    pub sightings: Counter,
    pub sightings_dropped: Counter,
    pub notices: Counter,
    families: VerdictFamilies,
    pub scan_seconds: Histogram,
    pub errors: Counter,
    gauges: [Gauge; 12],
    ioc_entries: Family<ListLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Gauges by position in `Metrics::gauges`: name, help.
const GAUGES: [(&str, &str); 12] = [
    ("uploads_in_progress", "Uploads being received or scanned (the queue)"),
    ("worker_slots_in_use", "Scans in progress on workers"),
    ("worker_slots", "Scan threads of the live workers"),
    ("workers_alive", "Workers registered and heartbeating"),
    ("store_healthy", "1 while the verdict store answers"),
    ("store_errors", "Verdict store calls that failed (since start)"),
    ("rule_reloads", "Rule reloads that produced a new ruleset (since start)"),
    ("rule_reload_failures", "Rule reloads refused for errors (since start)"),
    ("rules", "Rules in the ruleset in force"),
    ("busy_rejections", "Uploads refused as busy (RESOURCE_EXHAUSTED) since start"),
    ("siem_events_sent", "Events delivered to SIEM sinks (since start)"),
    ("siem_events_dropped", "Events dropped from full SIEM queues (since start)"),
];

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("qala");
        let families = VerdictFamilies::seeded(
            VerdictKind::LEVELS.map(VerdictKind::label),
            qala_engine::Limit::ALL.map(|l| l.as_str()).into_iter().chain(limits::ALL),
        );
        let m = Metrics {
            uploads: Counter::default(),
            upload_bytes: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            lookups: Counter::default(),
            sightings: Counter::default(),
            sightings_dropped: Counter::default(),
            notices: Counter::default(),
            families,
            scan_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            errors: Counter::default(),
            gauges: Default::default(),
            ioc_entries: Family::default(),
            registry: Registry::default(),
        };
        registry.register("uploads", "Scan calls answered (any front door)", m.uploads.clone());
        registry.register("upload_bytes", "Bytes of the files in scan calls", m.upload_bytes.clone());
        registry.register("cache_hits", "Scan calls answered from the store or another scan in flight", m.cache_hits.clone());
        registry.register("cache_misses", "Scan calls that were scanned by a worker", m.cache_misses.clone());
        registry.register("lookup_hashes", "Hashes asked for in lookups", m.lookups.clone());
        registry.register("sightings_written", "Sightings written to the store (agent, content pairs)", m.sightings.clone());
        registry.register(
            "sightings_dropped",
            "Sightings dropped while the store did not take them (the in-memory batch was full)",
            m.sightings_dropped.clone(),
        );
        registry.register("notices_sent", "Notices sent to connected agents", m.notices.clone());
        registry.register("verdicts", "Verdicts answered, by level", m.families.verdicts.clone());
        registry.register("limits_hit", "Scan limits hit, by kind", m.families.limits_hit.clone());
        registry.register("scan_duration_seconds", "Scan calls from request to verdict (not cached)", m.scan_seconds.clone());
        registry.register("scan_errors", "Scan calls that ended in an error", m.errors.clone());
        for ((name, help), gauge) in GAUGES.iter().zip(&m.gauges) {
            registry.register(*name, *help, gauge.clone());
        }
        registry.register("ioc_entries", "Entries on the hash IOC lists", m.ioc_entries.clone());
        Metrics { registry, ..m }
    }

    /// Count one answered scan call of a file of `size` bytes: its verdict
    /// and whether it was answered without a scan, or `None` for an error.
    pub fn scanned(&self, size: u64, outcome: Option<(Option<&pb::Verdict>, bool)>, elapsed: std::time::Duration) {
        self.uploads.inc();
        self.upload_bytes.inc_by(size);
        let Some((verdict, cached)) = outcome else {
            self.errors.inc();
            return;
        };
        if cached {
            self.cache_hits.inc();
        } else {
            self.cache_misses.inc();
            self.scan_seconds.observe(elapsed.as_secs_f64());
        }
        if let Some(v) = verdict {
            self.families.verdict(VerdictKind::of(v).label());
            if !cached {
                for l in &v.limits_hit {
                    self.families.limit_hit(&l.limit);
                }
            }
        }
    }

    /// The text exposition, with `g` as the gauges.
    pub fn render(&self, g: &Gauges) -> String {
        let values = [
            g.uploads_in_progress,
            g.slots_in_use,
            g.slots,
            g.workers_alive,
            g.store_healthy,
            g.store_errors,
            g.rule_reloads,
            g.rule_reload_failures,
            g.rules,
            g.busy_rejections,
            g.siem_sent,
            g.siem_dropped,
        ];
        for (gauge, v) in self.gauges.iter().zip(values) {
            gauge.set(v);
        }
        self.ioc_entries.get_or_create(&ListLabel { list: "block".into() }).set(g.ioc_block);
        self.ioc_entries.get_or_create(&ListLabel { list: "allow".into() }).set(g.ioc_allow);
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
