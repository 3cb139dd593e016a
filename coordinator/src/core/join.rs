//! Join tokens (`worker-enroll`, `agent-enroll`): what one enrollment
//! spends. Each token has a rate (enrollments per minute, on each
//! coordinator) and, when made with `--uses`, a count of enrollments kept
//! in the store and spent under a lock that coordinators sharing the store
//! share, so a token made for 500 pods enrolls 500 and no more. Its expiry
//! (`--expires`) is checked with every call, in [`crate::auth`].

use super::error::CoreError;
use crate::auth::Caller;
use crate::store::Guarded;
use qala_proto::v1::TokenRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one coordinator holds a token's use-count lock at most.
const LOCK_TTL: Duration = Duration::from_secs(5);

/// A token bucket of one join token's enrollments.
struct Bucket {
    left: f64,
    at: Instant,
}

pub struct JoinLimits {
    store: Arc<Guarded>,
    /// Enrollments per minute per token (and the burst).
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl JoinLimits {
    pub fn new(store: Arc<Guarded>, per_minute: u32) -> Self {
        Self { store, per_minute: per_minute.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Take one of the token's enrollments of this minute, or say when the
    /// next one comes.
    fn rate(&self, caller: &Caller) -> Result<(), CoreError> {
        let rate = self.per_minute as f64 / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Forget tokens idle long enough to have refilled.
        if buckets.len() > 10_000 {
            let full = Duration::from_secs_f64(self.per_minute as f64 / rate);
            buckets.retain(|_, b| now.duration_since(b.at) < full);
        }
        let b = buckets.entry(caller.name.clone()).or_insert(Bucket { left: self.per_minute as f64, at: now });
        b.left = (b.left + now.duration_since(b.at).as_secs_f64() * rate).min(self.per_minute as f64);
        b.at = now;
        if b.left >= 1.0 {
            b.left -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - b.left) / rate);
        Err(CoreError::busy(
            format!("join token {:?}: more than {} enrollments a minute", caller.name, self.per_minute),
            wait.max(Duration::from_millis(100)),
        ))
    }

    /// Spend one enrollment of `caller`'s join token: its rate, then (if it
    /// has a use count) one use. A used-up token is refused for good.
    pub async fn spend(&self, caller: &Caller) -> Result<(), CoreError> {
        self.rate(caller)?;
        let Some(record) = self.store.get::<TokenRecord>(&caller.name).await? else {
            return Err(CoreError::Unauthenticated(format!("token {:?} is no longer known", caller.name)));
        };
        if record.max_uses == 0 {
            return Ok(());
        }
        let key = format!("join-token:{}", caller.name);
        let owner = crate::auth::new_token();
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.store.lock(&key, &owner, LOCK_TTL).await {
            if Instant::now() > deadline {
                return Err(CoreError::busy(format!("join token {:?} is being spent elsewhere", caller.name), LOCK_TTL));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let spent = async {
            let mut record = self
                .store
                .get::<TokenRecord>(&caller.name)
                .await?
                .ok_or_else(|| CoreError::Unauthenticated(format!("token {:?} is no longer known", caller.name)))?;
            if record.used >= record.max_uses {
                return Err(CoreError::Denied(format!(
                    "join token {:?} is used up ({} of {} enrollments): make another (token add --uses N)",
                    caller.name, record.used, record.max_uses
                )));
            }
            record.used += 1;
            self.store.put(&record).await?;
            Ok(())
        }
        .await;
        self.store.unlock(&key, &owner).await;
        spent
    }
}
