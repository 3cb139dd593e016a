//! Join tokens (`worker-enroll`, `agent-enroll`): what one enrollment
//! spends. Each token has a rate (enrollments per minute, on each
//! coordinator) and, when made with `--uses`, a count of enrollments kept
//! in the store and spent under a lock that coordinators sharing the store
//! share, so a token made for 500 pods enrolls 500 and no more. Its expiry
//! (`--expires`) is checked with every call, in [`crate::auth`].

use super::error::CoreError;
use super::rate::PerClient;
use crate::auth::Caller;
use crate::store::Guarded;
use qala_proto::v1::TokenRecord;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one coordinator holds a token's use-count lock at most.
const LOCK_TTL: Duration = Duration::from_secs(5);

pub struct JoinLimits {
    store: Arc<Guarded>,
    /// Enrollments per minute per token (and the burst).
    rate: PerClient,
}

impl JoinLimits {
    pub fn new(store: Arc<Guarded>, per_minute: u32) -> Self {
        Self { store, rate: PerClient::new("enrollments", per_minute) }
    }

    /// Spend one enrollment of `caller`'s join token: its rate, then (if it
    /// has a use count) one use. A used-up token is refused for good.
    pub async fn spend(&self, caller: &Caller) -> Result<(), CoreError> {
        self.rate.take(&caller.name, 1).map_err(|e| match e {
            CoreError::Busy { retry_after, .. } => CoreError::busy(
                format!("join token {:?}: more than {} enrollments a minute", caller.name, self.rate.per_minute()),
                retry_after,
            ),
            other => other,
        })?;
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
