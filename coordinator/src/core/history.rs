//! The last hour of this coordinator's view of the cluster, for the
//! console's health charts without Prometheus: every [`EVERY`] a sample of
//! its own counters (scan calls, bytes, cache hits) and of every live
//! worker's (files and bytes scanned, p99 scan time, slots), [`KEEP`]
//! samples in memory. Rates are differences between samples; each
//! coordinator keeps its own (workers' counters are the workers' own, so
//! every coordinator charts the same worker rates).

use super::error::CoreError;
use super::shared::Shared;
use crate::auth::{Caller, Op};
use crate::cluster::{Cluster, Load};
use crate::metrics::Metrics;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
pub const KEEP: usize = 360;

/// One worker at one sample.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WorkerSample {
    pub worker_id: String,
    pub threads: u32,
    pub in_flight: u64,
    pub scanned: u64,
    pub bytes_scanned: u64,
    pub p99_us: u64,
}

/// The cluster as this coordinator saw it at `at_ms`; counters since it
/// started (the workers': since each worker started).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Sample {
    pub at_ms: i64,
    pub uploads: u64,
    pub upload_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub errors: u64,
    pub store_healthy: bool,
    pub workers: Vec<WorkerSample>,
}

pub struct History {
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
    store: Arc<crate::store::Guarded>,
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn new(s: &Shared) -> Self {
        Self {
            cluster: s.cluster.clone(),
            metrics: s.metrics.clone(),
            store: s.store.clone(),
            samples: Mutex::new(VecDeque::with_capacity(KEEP)),
        }
    }

    /// The cluster now.
    pub fn now(&self) -> Sample {
        let m = &self.metrics;
        let mut workers: Vec<WorkerSample> = self
            .cluster
            .live()
            .iter()
            .map(|w| {
                let l = Load::of(w);
                WorkerSample {
                    worker_id: w.id.clone(),
                    threads: w.threads,
                    in_flight: l.in_flight,
                    scanned: l.scanned,
                    bytes_scanned: l.bytes_scanned,
                    p99_us: l.p99_us,
                }
            })
            .collect();
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Sample {
            at_ms: qala_common::now_ms(),
            uploads: m.uploads.get(),
            upload_bytes: m.upload_bytes.get(),
            cache_hits: m.cache_hits.get(),
            cache_misses: m.cache_misses.get(),
            errors: m.errors.get(),
            store_healthy: self.store.healthy(),
            workers,
        }
    }

    fn take(&self) {
        let s = self.now();
        let mut q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// Sample every [`EVERY`] until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => self.take(),
            }
        }
    }

    /// The samples kept, oldest first, and one taken now.
    pub fn samples(&self, caller: &Caller) -> Result<Vec<Sample>, CoreError> {
        caller.require(Op::Status)?;
        let mut v: Vec<Sample> = self.samples.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        v.push(self.now());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_samples_is_kept() {
        assert_eq!(Duration::from_secs(3600), EVERY * KEEP as u32);
    }
}
