//! The verdict store: one interface ([`VerdictStore`]), two backends
//! (embedded redb file, Redis), and the guard every call goes through
//! ([`Guarded`]: degraded mode, and the typed record operations).
//!
//! Verdicts are keyed by ruleset id + sha256, so a verdict produced by other
//! rules is never served as current. What is kept of a verdict, and for how
//! long, is decided once for every backend ([`retention`]); the kinds of
//! records kept besides verdicts are listed in [`records`].

mod backend;
mod embedded;
mod guard;
pub mod records;
mod redis;
pub mod retention;

pub use backend::{Sighting, StoreError, Table, VerdictStore, expired, key};
pub use embedded::EmbeddedStore;
pub use guard::Guarded;
pub use records::{Poisoned, Record, Revoked};
pub use redis::RedisStore;
pub use retention::{Keep, PARTIAL_TTL, POISON_TTL, WORKER_CRASH, detection_event, save};

use std::sync::Arc;

/// A store spec with the secrets and TLS material that never go into it.
#[derive(Debug, Clone, Default)]
pub struct StoreSpec {
    pub spec: String,
    /// Redis password (from a file or the environment).
    pub password: Option<String>,
    /// CA certificate of a `rediss://` server.
    pub ca: Option<std::path::PathBuf>,
    /// The embedded store's page cache, in bytes (default: redb's).
    pub cache_bytes: Option<u64>,
}

impl From<&str> for StoreSpec {
    fn from(spec: &str) -> Self {
        StoreSpec { spec: spec.to_string(), ..Default::default() }
    }
}

/// Open the store named by `spec`: `embedded:PATH`, a bare path, or a Redis
/// spec (`redis://`, `rediss://`, `redis+cluster://`, `redis+sentinel://`;
/// see [`RedisStore::new`]).
pub async fn open(spec: &StoreSpec) -> Result<Arc<dyn VerdictStore>, StoreError> {
    let ca = match &spec.ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| StoreError::Redis(format!("{}: {e}", path.display())))?),
        None => None,
    };
    let cache_bytes = spec.cache_bytes;
    let (spec, password) = (spec.spec.as_str(), spec.password.as_deref());
    if spec.starts_with("redis://") || spec.starts_with("rediss://") || spec.starts_with("redis+") || spec.starts_with("rediss+")
    {
        let store = RedisStore::configure(spec, password, ca)?;
        // Not reachable yet is not fatal: the coordinator starts degraded.
        if let Err(e) = store.ping().await {
            tracing::warn!(error = %e, "verdict store unreachable at start: scanning without the cache until it answers");
        }
        Ok(Arc::new(store))
    } else {
        let path = spec.strip_prefix("embedded:").unwrap_or(spec);
        if path.is_empty() {
            return Err(StoreError::Spec(spec.to_string()));
        }
        let path = std::path::PathBuf::from(path);
        let store = tokio::task::spawn_blocking(move || EmbeddedStore::open_with_cache(&path, cache_bytes))
            .await
            .map_err(|e| StoreError::Embedded(e.to_string()))??;
        Ok(Arc::new(store))
    }
}
