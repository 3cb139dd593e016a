//! Uploads whose client announces neither size nor digest (clamd's
//! INSTREAM and FILDES, REST `POST /v1/scan`). The upload is admitted
//! before a byte of it is read (`Uploads::admit_unhashed`: the client's
//! upload slot, a coordinator slot), under the same quotas as any upload:
//! the front door pushes the bytes here as they arrive, each chunk paced by
//! the client's byte rate and taken from the spool quota, bounded by a size
//! limit, held in a [`Spool`] (memory, then an unlinked temporary file)
//! while they are hashed; then `Uploads::scan_unhashed` hands them to the
//! upload path with the sha256 and size found, like any agent upload
//! (cache, placement, workers, store), under the same admission.

use super::quota::Admission;
use super::spool::Spool;
use prost::bytes::Bytes;

#[derive(Debug)]
pub enum PushError {
    /// The upload passed its size limit.
    TooLarge,
    /// The coordinator's spool quota has no room for more.
    SpoolFull,
    Spool(std::io::Error),
}

/// An admitted upload being received: spooled and hashed, at most `max`
/// bytes.
pub struct Unhashed {
    spool: Spool,
    hasher: qala_engine::Hasher,
    max: u64,
    admission: Admission,
}

impl Unhashed {
    pub(super) fn new(max: u64, admission: Admission) -> Self {
        Self { spool: Spool::new(None), hasher: qala_engine::Hasher::new(), max, admission }
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

    /// Add `chunk`: a client above its byte rate waits here (it is read
    /// more slowly), and the chunk's bytes come out of the spool quota.
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), PushError> {
        if chunk.len() as u64 > self.left() {
            return Err(PushError::TooLarge);
        }
        let wait = self.admission.client.throttle(chunk.len());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if !self.admission.grow_spool(chunk.len() as u64) {
            return Err(PushError::SpoolFull);
        }
        self.hasher.update(&chunk);
        self.spool.write(chunk).await.map_err(PushError::Spool)
    }

    /// The spool, the digests of what was pushed and the admission.
    pub(super) fn finish(self) -> (Spool, qala_engine::Digests, Admission) {
        (self.spool, self.hasher.finish(), self.admission)
    }
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::TooLarge => write!(f, "size limit exceeded"),
            PushError::SpoolFull => write!(f, "coordinator busy: spool full"),
            PushError::Spool(e) => write!(f, "spool: {e}"),
        }
    }
}
