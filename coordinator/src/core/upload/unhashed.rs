//! Uploads whose client announces neither size nor digest (clamd's
//! INSTREAM and FILDES, REST `POST /v1/scan`): the front door pushes the
//! bytes here as they arrive, bounded by a size limit and held in a
//! [`Spool`] (memory, then an unlinked temporary file) while they are
//! hashed; then `Uploads::scan_unhashed` hands them to the upload path with
//! the sha256 and size found, like any agent upload (cache, placement,
//! workers, store).

use super::spool::Spool;
use prost::bytes::Bytes;
use sha2::{Digest, Sha256};

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

    /// The spool and the sha256 (hex) of what was pushed.
    pub fn finish(self) -> (Spool, String) {
        (self.spool, hex::encode(self.sha.finalize()))
    }
}
