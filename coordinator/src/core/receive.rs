//! Receiving an upload whole into a spool, under the client's quotas.

use super::Body;
use crate::quota::{ClientQuota, SpoolReservation};
use crate::spool::Spool;
use futures::StreamExt;
use qala_proto::v1 as pb;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tonic::Status;
use tracing::warn;

/// Receive `body` whole, checking it against `header`: no more and no fewer
/// bytes than announced, and the announced sha256. An upload that sends
/// nothing for `stall` is cancelled; a client above its byte rate is read
/// more slowly.
pub(super) async fn receive(
    header: &pb::ScanHeader,
    mut body: Body,
    stall: Duration,
    quota: &ClientQuota,
    memory: Option<SpoolReservation>,
) -> Result<Spool, Status> {
    let mut spool = Spool::new(memory);
    let mut hasher = Sha256::new();
    loop {
        let next = match tokio::time::timeout(stall, body.next()).await {
            Ok(next) => next,
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "upload stalled: nothing received for {} s after {} of {} bytes",
                    stall.as_secs(),
                    spool.len(),
                    header.size
                )));
            }
        };
        let Some(chunk) = next else { break };
        let chunk = chunk?;
        if spool.len() + chunk.len() as u64 > header.size {
            return Err(Status::invalid_argument(format!("upload is larger than the announced {} bytes", header.size)));
        }
        hasher.update(&chunk);
        let n = chunk.len();
        spool.write(chunk).await.map_err(|e| Status::unavailable(format!("coordinator spool: {e}")))?;
        let wait = quota.throttle(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    if spool.len() != header.size {
        return Err(Status::invalid_argument(format!("upload has {} bytes, header announced {}", spool.len(), header.size)));
    }
    let actual = hex::encode(hasher.finalize());
    if actual != header.sha256 {
        warn!(claimed = header.sha256, actual, agent = header.agent_id, "sha256 mismatch");
        return Err(Status::invalid_argument(format!("sha256 mismatch: header claims {}, content is {actual}", header.sha256)));
    }
    Ok(spool)
}
