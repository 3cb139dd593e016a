//! Degraded mode: the store's health, and failing fast while it is down.
//!
//! Every store call goes through [`Guarded`] ([`Guarded::call`], and the
//! typed record operations written once over it). A failure marks the store
//! unhealthy; while it is, calls fail at once instead of waiting on a dead
//! Redis, and a probe (a PING every [`PROBE_EVERY`]) brings it back as soon
//! as it answers. The API treats a failing store as a cache miss, so
//! scanning goes on without the cache, and reports the state in `Status`
//! and in gRPC health (`qala.v1.VerdictStore`).

use super::backend::{StoreError, VerdictStore};
use super::records::Record;
use super::retention::{self, Keep};
use futures::future::BoxFuture;
use qala_proto::v1::Verdict;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

pub const PROBE_EVERY: Duration = Duration::from_millis(500);

pub struct Guarded {
    inner: Arc<dyn VerdictStore>,
    healthy: AtomicBool,
    last_error: Mutex<String>,
    changes: watch::Sender<bool>,
    keep: RwLock<Keep>,
    errors: AtomicU64,
}

impl Guarded {
    pub fn new(inner: Arc<dyn VerdictStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
            changes: watch::Sender::new(true),
            keep: RwLock::new(Keep::default()),
            errors: AtomicU64::new(0),
        })
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> String {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Health changes (true = healthy), for the gRPC health reporter.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }

    pub fn describe(&self) -> String {
        self.inner.describe()
    }

    fn record<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.set_healthy(true, ""),
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.set_healthy(false, &e.to_string())
            }
        }
        result
    }

    /// Store calls that failed since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn set_healthy(&self, healthy: bool, error: &str) {
        if !healthy {
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error.to_string();
        }
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                info!(store = self.describe(), "verdict store answers again: cache back in use");
            } else {
                warn!(store = self.describe(), error, "verdict store failing: scanning without the cache (degraded)");
            }
            self.changes.send_replace(healthy);
        }
    }

    fn down(&self) -> Result<(), StoreError> {
        if self.healthy() { Ok(()) } else { Err(StoreError::Unavailable(self.last_error())) }
    }

    /// Run `f`, one call of the store's interface, unless the store is
    /// down (then it fails at once), noting whether it answered:
    /// `store.call(|s| s.get(ruleset_id, sha256)).await`.
    pub async fn call<'a, T>(
        &'a self,
        f: impl FnOnce(&'a dyn VerdictStore) -> BoxFuture<'a, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.down()?;
        let result = f(self.inner.as_ref()).await;
        self.record(result)
    }

    /// Store `verdict` if it may be cached, kept as long as the retention
    /// settings say; whether it was stored.
    pub async fn save(&self, verdict: &Verdict) -> Result<bool, StoreError> {
        let keep = *self.keep.read().unwrap_or_else(|p| p.into_inner());
        self.call(|s| Box::pin(retention::save(s, verdict, &keep))).await
    }

    /// Drop detection events older than `keep`, now and every hour, until
    /// `stop`; 0 keeps them.
    pub async fn purge_feed(self: Arc<Self>, keep: Duration, mut stop: watch::Receiver<bool>) {
        if keep.is_zero() {
            return;
        }
        loop {
            let before = qala_common::now_ms() - keep.as_millis().min(i64::MAX as u128) as i64;
            match self.call(|s| s.purge_detections(before)).await {
                Ok(n) if n > 0 => info!(events = n, "detections feed: dropped events past their retention"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "detections feed: purge failed; trying again later"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Put a fresh verdict in the form the store keeps it (partial flag,
    /// expiry), so the answer equals every cached answer of it.
    pub fn finalize(&self, v: &mut Verdict) {
        let keep = *self.keep.read().unwrap_or_else(|p| p.into_inner());
        retention::to_stored_form(v, &keep);
    }

    /// How long verdicts are kept by level (from the coordinator's flags).
    pub fn set_keep(&self, keep: Keep) {
        *self.keep.write().unwrap_or_else(|p| p.into_inner()) = keep;
    }

    pub fn shared(&self) -> bool {
        self.inner.shared()
    }

    /// Add or replace `record` (in its kind's table, by its key).
    pub async fn put<R: Record>(&self, record: &R) -> Result<(), StoreError> {
        self.put_all(std::slice::from_ref(record)).await
    }

    /// Add or replace `records` at once; the table's version moves once.
    /// In a table of expiring records, the expired ones go meanwhile.
    pub async fn put_all<R: Record>(&self, records: &[R]) -> Result<(), StoreError> {
        let rows: Vec<(String, Vec<u8>)> = records.iter().map(|r| (r.key(), r.encode_to_vec())).collect();
        self.call(|s| s.put_rows(R::TABLE, &rows)).await?;
        if R::EXPIRES {
            let now = qala_common::now_ms();
            let gone: Vec<String> = self.all_rows::<R>().await?.into_iter().filter(|r| r.expired(now)).map(|r| r.key()).collect();
            if !gone.is_empty() {
                self.call(|s| s.delete_rows(R::TABLE, &gone)).await?;
            }
        }
        Ok(())
    }

    /// The record of `key`, unless there is none or it has expired.
    pub async fn get<R: Record>(&self, key: &str) -> Result<Option<R>, StoreError> {
        let Some(bytes) = self.call(|s| s.get_row(R::TABLE, key)).await? else { return Ok(None) };
        let record = R::decode(bytes.as_slice())?;
        Ok((!record.expired(qala_common::now_ms())).then_some(record))
    }

    /// Remove the record of `key`; whether there was one.
    pub async fn delete<R: Record>(&self, key: &str) -> Result<bool, StoreError> {
        let keys = [key.to_string()];
        Ok(self.call(|s| s.delete_rows(R::TABLE, &keys)).await? > 0)
    }

    /// Every record of the kind that has not expired.
    pub async fn all<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        let now = qala_common::now_ms();
        Ok(self.all_rows::<R>().await?.into_iter().filter(|r| !r.expired(now)).collect())
    }

    async fn all_rows<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        let rows = self.call(|s| s.rows(R::TABLE)).await?;
        rows.iter().map(|b| R::decode(b.as_slice()).map_err(StoreError::from)).collect()
    }

    /// A number that changes whenever records of the kind do.
    pub async fn version<R: Record>(&self) -> Result<u64, StoreError> {
        self.call(|s| s.table_version(R::TABLE)).await
    }

    /// [`VerdictStore::lock`]; with the store down every lock is granted
    /// (degraded: coordinators may then scan one content twice, never wrongly).
    pub async fn lock(&self, key: &str, token: &str, ttl: Duration) -> bool {
        if self.down().is_err() {
            return true;
        }
        self.record(self.inner.lock(key, token, ttl).await).unwrap_or(true)
    }

    /// [`VerdictStore::relock`]; false only when the store says the lock is someone else's.
    pub async fn relock(&self, key: &str, token: &str, ttl: Duration) -> bool {
        if self.down().is_err() {
            return true;
        }
        self.record(self.inner.relock(key, token, ttl).await).unwrap_or(true)
    }

    pub async fn unlock(&self, key: &str, token: &str) {
        if self.down().is_ok() {
            let _ = self.record(self.inner.unlock(key, token).await);
        }
    }

    /// Probe the store until `stop`: marks it unhealthy when a PING fails
    /// (even with no traffic) and healthy again when one succeeds.
    pub async fn probe(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {
                    let r = self.inner.ping().await;
                    self.record(r).ok();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::Table;
    use qala_proto::v1::DetectionEvent;

    /// A store that fails while `down` is set.
    struct Flaky {
        down: AtomicBool,
    }

    #[async_trait::async_trait]
    impl VerdictStore for Flaky {
        async fn get(&self, _: &str, _: &str) -> Result<Option<Verdict>, StoreError> {
            self.ping().await.map(|_| None)
        }
        async fn get_many(&self, _: &str, _: &[String]) -> Result<Vec<Verdict>, StoreError> {
            self.ping().await.map(|_| Vec::new())
        }
        async fn put(&self, _: &Verdict, _: Option<&DetectionEvent>) -> Result<(), StoreError> {
            self.ping().await
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn resolve(&self, _: &str, _: &str) -> Result<Vec<String>, StoreError> {
            self.ping().await.map(|_| Vec::new())
        }
        async fn detections(&self, _: i64, _: usize) -> Result<Vec<DetectionEvent>, StoreError> {
            self.ping().await.map(|_| Vec::new())
        }
        async fn purge_detections(&self, _: i64) -> Result<u64, StoreError> {
            self.ping().await.map(|_| 0)
        }
        async fn put_rows(&self, _: Table, _: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
            self.ping().await
        }
        async fn get_row(&self, _: Table, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.ping().await.map(|_| None)
        }
        async fn delete_rows(&self, _: Table, _: &[String]) -> Result<u64, StoreError> {
            self.ping().await.map(|_| 0)
        }
        async fn rows(&self, _: Table) -> Result<Vec<Vec<u8>>, StoreError> {
            self.ping().await.map(|_| Vec::new())
        }
        async fn table_version(&self, _: Table) -> Result<u64, StoreError> {
            self.ping().await.map(|_| 0)
        }
        async fn record_sightings(&self, _: &[crate::store::Sighting], _: u64) -> Result<(), StoreError> {
            self.ping().await
        }
        async fn forget_sightings(&self, _: &str, _: &[String]) -> Result<u64, StoreError> {
            self.ping().await.map(|_| 0)
        }
        async fn sightings_of(&self, _: &str) -> Result<Vec<crate::store::Sighting>, StoreError> {
            self.ping().await.map(|_| Vec::new())
        }
        async fn sightings_by(&self, _: &str, _: usize) -> Result<(Vec<crate::store::Sighting>, bool), StoreError> {
            self.ping().await.map(|_| (Vec::new(), false))
        }
        async fn purge_sightings(&self, _: i64) -> Result<u64, StoreError> {
            self.ping().await.map(|_| 0)
        }
        async fn sighted_since(&self, _: i64, _: usize) -> Result<(Vec<String>, bool), StoreError> {
            self.ping().await.map(|_| (Vec::new(), false))
        }
        async fn ping(&self) -> Result<(), StoreError> {
            if self.down.load(Ordering::Relaxed) { Err(StoreError::Redis("connection refused".into())) } else { Ok(()) }
        }
    }

    #[tokio::test]
    async fn failure_degrades_fails_fast_and_the_probe_restores() {
        let flaky = Arc::new(Flaky { down: AtomicBool::new(false) });
        let g = Guarded::new(flaky.clone());
        let mut changes = g.subscribe();
        let get = async || g.call(|s| s.get("r", "s")).await;
        assert!(get().await.is_ok() && g.healthy());

        flaky.down.store(true, Ordering::Relaxed);
        assert!(get().await.is_err());
        assert!(!g.healthy() && g.last_error().contains("connection refused"));
        assert!(!*changes.borrow_and_update());
        // While unhealthy, calls fail without reaching the store.
        flaky.down.store(false, Ordering::Relaxed);
        assert!(matches!(get().await, Err(StoreError::Unavailable(_))));

        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(g.clone().probe(stop));
        tokio::time::timeout(Duration::from_secs(5), changes.wait_for(|h| *h)).await.unwrap().unwrap();
        assert!(g.healthy() && get().await.is_ok());
    }
}
