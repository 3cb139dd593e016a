//! Degraded mode: the store's health, and failing fast while it is down.
//!
//! Every store call goes through [`Guarded`]. A failure marks the store
//! unhealthy; while it is, calls fail at once instead of waiting on a dead
//! Redis, and a probe (a PING every [`PROBE_EVERY`]) brings it back as soon
//! as it answers. The API treats a failing store as a cache miss, so
//! scanning goes on without the cache, and reports the state in `Status`
//! and in gRPC health (`qala.v1.VerdictStore`).

use super::{StoreError, VerdictStore};
use qala_proto::v1::{AgentRecord, DetectionEvent, IocEntry, TokenRecord, Verdict};
use std::sync::atomic::{AtomicBool, Ordering};
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
    keep: RwLock<super::Keep>,
    errors: std::sync::atomic::AtomicU64,
}

impl Guarded {
    pub fn new(inner: Arc<dyn VerdictStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
            changes: watch::Sender::new(true),
            keep: RwLock::new(super::Keep::default()),
            errors: std::sync::atomic::AtomicU64::new(0),
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

    pub async fn get(&self, ruleset_id: &str, sha256: &str) -> Result<Option<Verdict>, StoreError> {
        self.down()?;
        self.record(self.inner.get(ruleset_id, sha256).await)
    }

    pub async fn get_many(&self, ruleset_id: &str, sha256s: &[String]) -> Result<Vec<Verdict>, StoreError> {
        self.down()?;
        self.record(self.inner.get_many(ruleset_id, sha256s).await)
    }

    /// Store `verdict` if it may be cached, kept as long as the retention
    /// settings say; whether it was stored.
    pub async fn save(&self, verdict: &Verdict) -> Result<bool, StoreError> {
        self.down()?;
        let keep = *self.keep.read().unwrap_or_else(|p| p.into_inner());
        self.record(super::save(self.inner.as_ref(), verdict, &keep).await)
    }

    /// Drop detection events older than `keep`, now and every hour, until
    /// `stop`; 0 keeps them.
    pub async fn purge_feed(self: Arc<Self>, keep: Duration, mut stop: watch::Receiver<bool>) {
        if keep.is_zero() {
            return;
        }
        loop {
            let before = super::now_ms() - keep.as_millis().min(i64::MAX as u128) as i64;
            match self.purge_detections(before).await {
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
        super::to_stored_form(v, &keep);
    }

    /// How long verdicts are kept by level (from the coordinator's flags).
    pub fn set_keep(&self, keep: super::Keep) {
        *self.keep.write().unwrap_or_else(|p| p.into_inner()) = keep;
    }

    pub async fn resolve(&self, kind: &str, digest: &str) -> Result<Vec<String>, StoreError> {
        self.down()?;
        self.record(self.inner.resolve(kind, digest).await)
    }

    pub async fn detections(&self, since_ms: i64, limit: usize) -> Result<Vec<DetectionEvent>, StoreError> {
        self.down()?;
        self.record(self.inner.detections(since_ms, limit).await)
    }

    pub async fn purge_detections(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.down()?;
        self.record(self.inner.purge_detections(before_ms).await)
    }

    pub async fn put_iocs(&self, entries: &[IocEntry]) -> Result<(), StoreError> {
        self.down()?;
        self.record(self.inner.put_iocs(entries).await)
    }

    pub async fn remove_ioc(&self, list: &str, kind: &str, digest: &str) -> Result<bool, StoreError> {
        self.down()?;
        self.record(self.inner.remove_ioc(list, kind, digest).await)
    }

    pub async fn iocs(&self) -> Result<Vec<IocEntry>, StoreError> {
        self.down()?;
        self.record(self.inner.iocs().await)
    }

    pub async fn ioc_version(&self) -> Result<u64, StoreError> {
        self.down()?;
        self.record(self.inner.ioc_version().await)
    }

    pub fn shared(&self) -> bool {
        self.inner.shared()
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.down()?;
        self.record(self.inner.tokens().await)
    }

    pub async fn put_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        self.down()?;
        self.record(self.inner.put_token(record).await)
    }

    pub async fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        self.down()?;
        self.record(self.inner.delete_token(name).await)
    }

    pub async fn put_agent(&self, record: &AgentRecord) -> Result<(), StoreError> {
        self.down()?;
        self.record(self.inner.put_agent(record).await)
    }

    pub async fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.down()?;
        self.record(self.inner.agent(agent_id).await)
    }

    pub async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.down()?;
        self.record(self.inner.agents().await)
    }

    pub async fn revoke_worker(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        self.down()?;
        self.record(self.inner.revoke_worker(id, at_ms).await)
    }

    pub async fn revoked_workers(&self) -> Result<Vec<String>, StoreError> {
        self.down()?;
        self.record(self.inner.revoked_workers().await)
    }

    pub async fn poison(&self, sha256: &str, detail: &str, until_ms: i64) -> Result<(), StoreError> {
        self.down()?;
        self.record(self.inner.poison(sha256, detail, until_ms).await)
    }

    pub async fn poisoned(&self, sha256: &str) -> Result<Option<String>, StoreError> {
        self.down()?;
        self.record(self.inner.poisoned(sha256).await)
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
        async fn put_iocs(&self, _: &[IocEntry]) -> Result<(), StoreError> {
            self.ping().await
        }
        async fn remove_ioc(&self, _: &str, _: &str, _: &str) -> Result<bool, StoreError> {
            self.ping().await.map(|_| false)
        }
        async fn iocs(&self) -> Result<Vec<IocEntry>, StoreError> {
            self.ping().await.map(|_| Vec::new())
        }
        async fn ioc_version(&self) -> Result<u64, StoreError> {
            self.ping().await.map(|_| 0)
        }
        async fn put_token(&self, _: &TokenRecord) -> Result<(), StoreError> {
            self.ping().await
        }
        async fn delete_token(&self, _: &str) -> Result<bool, StoreError> {
            self.ping().await.map(|_| false)
        }
        async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
            self.ping().await.map(|_| Vec::new())
        }
        async fn put_agent(&self, _: &AgentRecord) -> Result<(), StoreError> {
            self.ping().await
        }
        async fn agent(&self, _: &str) -> Result<Option<AgentRecord>, StoreError> {
            self.ping().await.map(|_| None)
        }
        async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
            self.ping().await.map(|_| Vec::new())
        }
        async fn revoke_worker(&self, _: &str, _: i64) -> Result<(), StoreError> {
            self.ping().await
        }
        async fn revoked_workers(&self) -> Result<Vec<String>, StoreError> {
            self.ping().await.map(|_| Vec::new())
        }
        async fn poison(&self, _: &str, _: &str, _: i64) -> Result<(), StoreError> {
            self.ping().await
        }
        async fn poisoned(&self, _: &str) -> Result<Option<String>, StoreError> {
            self.ping().await.map(|_| None)
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
        assert!(g.get("r", "s").await.is_ok() && g.healthy());

        flaky.down.store(true, Ordering::Relaxed);
        assert!(g.get("r", "s").await.is_err());
        assert!(!g.healthy() && g.last_error().contains("connection refused"));
        assert!(!*changes.borrow_and_update());
        // While unhealthy, calls fail without reaching the store.
        flaky.down.store(false, Ordering::Relaxed);
        assert!(matches!(g.get("r", "s").await, Err(StoreError::Unavailable(_))));

        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(g.clone().probe(stop));
        tokio::time::timeout(Duration::from_secs(5), changes.wait_for(|h| *h)).await.unwrap().unwrap();
        assert!(g.healthy() && g.get("r", "s").await.is_ok());
    }
}
