//! The worker's Prometheus metrics (prometheus-client), on a listener of
//! its own (`--metrics-listen`, plain HTTP, with the health endpoints:
//! [`crate::health`]; the scan listener only accepts the coordinator's
//! certificate). Counts scans by
//! verdict, their latency, bytes scanned, limits hit, scan children lost
//! and busy refusals; reports slots in use.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use qala_common::metrics::VerdictFamilies;
use qala_proto::{VerdictKind, limits};

pub struct Metrics {
    registry: Registry,
    families: VerdictFamilies,
    pub scan_seconds: Histogram,
    pub bytes: Counter,
    pub crashes: Counter,
    pub busy: Counter,
    in_flight: Gauge,
    slots: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("qala_worker");
        let m = Metrics {
            families: VerdictFamilies::seeded(
                VerdictKind::LEVELS.map(VerdictKind::label),
                qala_engine::Limit::ALL.map(|l| l.as_str()).into_iter().chain(limits::ALL),
            ),
            scan_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            bytes: Counter::default(),
            crashes: Counter::default(),
            busy: Counter::default(),
            in_flight: Gauge::default(),
            slots: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("scans", "Files scanned, by verdict", m.families.verdicts.clone());
        registry.register("scan_duration_seconds", "Scan time of a file in its scan child", m.scan_seconds.clone());
        registry.register("scanned_bytes", "Bytes of the files scanned", m.bytes.clone());
        registry.register("limits_hit", "Scan limits hit, by kind", m.families.limits_hit.clone());
        registry.register(
            "scan_child_crashes",
            "Files that killed their scan child each time (answered unscannable)",
            m.crashes.clone(),
        );
        registry.register("busy_refusals", "ScanFile calls refused: every slot in use", m.busy.clone());
        registry.register("slots_in_use", "Files being received or scanned", m.in_flight.clone());
        registry.register("slots", "Files this worker takes at once", m.slots.clone());
        Metrics { registry, ..m }
    }

    /// Count one verdict given.
    pub fn scanned(&self, v: &qala_proto::v1::Verdict) {
        self.families.verdict(VerdictKind::of(v).label());
        self.scan_seconds.observe(v.scan_duration_us as f64 / 1e6);
        self.bytes.inc_by(v.size);
        for l in &v.limits_hit {
            self.families.limit_hit(&l.limit);
        }
    }

    /// The text exposition, with the slots in use and in all as given.
    pub fn render(&self, in_flight: u64, slots: usize) -> String {
        self.in_flight.set(in_flight as i64);
        self.slots.set(slots as i64);
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
