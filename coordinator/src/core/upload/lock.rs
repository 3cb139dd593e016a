//! The lock step of an upload: the scan lock coordinators sharing a store
//! take before scanning a content, so that it is scanned once across all of
//! them (coalescing does it within one coordinator). Taken for a complete,
//! verified upload, or without waiting when a fast upload is cut through
//! to a worker while it arrives (given back if that is abandoned).

use super::cache::Cache;
use crate::store::{self, Guarded};
use qala_proto::v1 as pb;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::{debug, warn};

/// Life of a scan lock in the store; extended every third of it while the
/// scan runs, so a coordinator that dies holding one frees it this soon.
pub const LOCK_TTL: Duration = Duration::from_secs(10);

/// How often a coordinator waiting on another's scan looks for its verdict.
const LOCK_POLL: Duration = Duration::from_millis(50);

pub enum Taken {
    /// This coordinator scans; the lock (if the store gave one) is held
    /// until the verdict is stored.
    Scan(ScanLock),
    /// Another coordinator scanned it meanwhile.
    Done(Box<pb::Verdict>),
}

/// The scan locks this coordinator takes.
pub struct Locks {
    store: Arc<Guarded>,
    /// Names this coordinator process in lock tokens.
    instance: String,
    tokens: AtomicU64,
    /// How long another coordinator's scan may take.
    scan_timeout: Duration,
}

impl Locks {
    pub fn new(store: Arc<Guarded>, scan_timeout: Duration) -> Self {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let instance = format!("{host}-{}-{started:x}", std::process::id());
        Self { store, instance, tokens: AtomicU64::new(0), scan_timeout }
    }

    fn token(&self) -> String {
        format!("{}-{}", self.instance, self.tokens.fetch_add(1, Ordering::Relaxed))
    }

    /// Take the store's scan lock of this content, or, while another
    /// coordinator holds it, wait for that one's verdict. Bounded: past the
    /// scan deadline this coordinator scans without the lock.
    pub async fn take(&self, cache: &Cache, ruleset_id: &str, sha256: &str) -> Taken {
        if !self.store.shared() {
            return Taken::Scan(ScanLock::none());
        }
        let key = store::key(ruleset_id, sha256);
        let token = self.token();
        let deadline = tokio::time::Instant::now() + self.scan_timeout + LOCK_TTL;
        let mut waited = false;
        loop {
            if self.store.lock(&key, &token, LOCK_TTL).await {
                let lock = ScanLock::hold(self.store.clone(), key, token);
                // Another coordinator may have scanned it, stored the verdict
                // and let go while this upload was still arriving (or just
                // now, while this one waited): look before scanning again.
                if let Some(v) = cache.cached(ruleset_id, sha256).await {
                    return Taken::Done(Box::new(v));
                }
                return Taken::Scan(lock);
            }
            if let Some(v) = cache.cached(ruleset_id, sha256).await {
                return Taken::Done(Box::new(v));
            }
            if !waited {
                debug!(sha256, "another coordinator is scanning this content; waiting for its verdict");
                waited = true;
            }
            if tokio::time::Instant::now() > deadline {
                warn!(sha256, "another coordinator's scan lock outlived the scan deadline; scanning here too");
                return Taken::Scan(ScanLock::none());
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// [`Locks::take`] without waiting: `None` while another coordinator
    /// holds the lock.
    pub async fn try_take(&self, cache: &Cache, ruleset_id: &str, sha256: &str) -> Option<Taken> {
        if !self.store.shared() {
            return Some(Taken::Scan(ScanLock::none()));
        }
        let key = store::key(ruleset_id, sha256);
        let token = self.token();
        if !self.store.lock(&key, &token, LOCK_TTL).await {
            return None;
        }
        let lock = ScanLock::hold(self.store.clone(), key, token);
        if let Some(v) = cache.cached(ruleset_id, sha256).await {
            return Some(Taken::Done(Box::new(v)));
        }
        Some(Taken::Scan(lock))
    }
}

/// A scan lock taken in the store: extended in the background while held,
/// given back when dropped.
pub struct ScanLock {
    held: Option<(Arc<Guarded>, String, String, tokio::task::JoinHandle<()>)>,
}

impl ScanLock {
    fn none() -> Self {
        Self { held: None }
    }

    fn hold(store: Arc<Guarded>, key: String, token: String) -> Self {
        let keeper = tokio::spawn({
            let (store, key, token) = (store.clone(), key.clone(), token.clone());
            async move {
                loop {
                    tokio::time::sleep(LOCK_TTL / 3).await;
                    if !store.relock(&key, &token, LOCK_TTL).await {
                        warn!(key, "scan lock lost to another coordinator (expired)");
                        return;
                    }
                }
            }
        });
        Self { held: Some((store, key, token, keeper)) }
    }
}

impl Drop for ScanLock {
    fn drop(&mut self) {
        if let Some((store, key, token, keeper)) = self.held.take() {
            keeper.abort();
            // Outside a runtime (shutting down) the lock just expires.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { store.unlock(&key, &token).await });
            }
        }
    }
}
