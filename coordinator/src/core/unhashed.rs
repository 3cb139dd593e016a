//! Uploads whose client announces neither size nor digest (clamd's
//! INSTREAM and FILDES, REST `POST /v1/scan`): the adapter pushes the bytes
//! here as they arrive, bounded by a size limit and held in a [`Spool`]
//! (memory, then an unlinked temporary file) while they are hashed; then
//! [`Core::scan_unhashed`] hands them to [`Core::scan`] with the sha256 and
//! size found, like any agent upload (cache, placement, workers, store).

use super::Core;
use crate::auth::Caller;
use crate::spool::Spool;
use futures::StreamExt;
use prost::bytes::Bytes;
use qala_proto::v1 as pb;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tonic::{Code, Status};

/// A busy coordinator is asked again for this long before the error is returned.
const BUSY_PATIENCE: Duration = Duration::from_secs(60);
/// Bytes handed to the core per chunk of the spool.
const REPLAY_CHUNK: usize = 1 << 20;

#[derive(Debug)]
pub enum PushError {
    /// The upload passed its size limit.
    TooLarge,
    Spool(std::io::Error),
}

/// An upload being received: spooled and hashed, at most `max` bytes.
pub struct Unhashed {
    spool: Spool,
    sha: Sha256,
    max: u64,
}

impl Unhashed {
    pub fn new(max: u64) -> Self {
        Self { spool: Spool::new(None), sha: Sha256::new(), max }
    }

    pub fn len(&self) -> u64 {
        self.spool.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room left under the limit.
    pub fn left(&self) -> u64 {
        self.max.saturating_sub(self.len())
    }

    pub async fn push(&mut self, chunk: Bytes) -> Result<(), PushError> {
        if chunk.len() as u64 > self.left() {
            return Err(PushError::TooLarge);
        }
        self.sha.update(&chunk);
        self.spool.write(chunk).await.map_err(PushError::Spool)
    }
}

impl Core {
    /// Scan a whole unhashed upload as `caller`; a busy coordinator
    /// (RESOURCE_EXHAUSTED) is asked again after its hint, for up to a minute.
    pub async fn scan_unhashed(&self, caller: &Caller, upload: Unhashed) -> Result<pb::ScanResponse, Status> {
        let Unhashed { spool, sha, .. } = upload;
        let header = pb::ScanHeader { sha256: hex::encode(sha.finalize()), size: spool.len(), ..Default::default() };
        let spool = Arc::new(Mutex::new(spool));
        let started = Instant::now();
        loop {
            spool.lock().await.rewind().await.map_err(|e| Status::internal(format!("spool: {e}")))?;
            let body = futures::stream::unfold(Some(spool.clone()), |state| async move {
                let s = state?;
                let next = s.lock().await.next_chunk(REPLAY_CHUNK).await;
                match next {
                    Ok(Some(b)) => Some((Ok(b), Some(s))),
                    Ok(None) => None,
                    Err(e) => Some((Err(Status::internal(format!("spool: {e}"))), None)),
                }
            })
            .boxed();
            match self.scan(caller, header.clone(), body).await {
                Err(s) if s.code() == Code::ResourceExhausted && started.elapsed() < BUSY_PATIENCE => {
                    let after =
                        s.metadata().get(super::RETRY_AFTER_MS).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(500);
                    tokio::time::sleep(Duration::from_millis(after.clamp(50, 5000))).await;
                }
                other => return other,
            }
        }
    }
}
