//! Limits per client (per token name) and on the spool, so one client can
//! neither starve the others nor fill the coordinator's disk.
//!
//! - uploads in flight per client: past it RESOURCE_EXHAUSTED with a retry hint;
//! - bytes per second per client: a token bucket; a client above its rate
//!   is read more slowly (HTTP/2 flow control pushes back on it alone);
//! - spool bytes: uploads being held (memory and temporary files) are
//!   counted by their announced size; past the quota RESOURCE_EXHAUSTED,
//!   the agent retries and nothing is lost;
//! - spool memory: uploads held in memory whole (up to 16 MiB each) while
//!   this budget (64 MiB by default) has room; others go to temporary files;
//! - kept spill files: up to `--spool-keep-bytes` (1 GiB by default, never
//!   more than the spool quota) of temporary files stay open between
//!   uploads, to be written over by the next ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Quotas {
    uploads_per_client: usize,
    bytes_per_sec: u64,
    clients: Mutex<HashMap<String, Arc<ClientQuota>>>,
    spool_max: u64,
    spool_used: Arc<AtomicU64>,
    spool_memory_max: u64,
    spool_memory_used: Arc<AtomicU64>,
    spill_files: Arc<crate::spool::SpillFiles>,
}

pub struct ClientQuota {
    uploads: Arc<Semaphore>,
    bytes_per_sec: u64,
    /// (bytes that may still pass now, when that was computed)
    bucket: Mutex<(f64, Instant)>,
}

impl ClientQuota {
    /// One of the client's upload slots, if it has one free.
    pub fn try_upload(&self) -> Option<OwnedSemaphorePermit> {
        self.uploads.clone().try_acquire_owned().ok()
    }

    /// Account `n` bytes received; how long to wait before reading more.
    pub fn throttle(&self, n: usize) -> Duration {
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        let rate = self.bytes_per_sec as f64;
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // At most one second of burst.
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate);
        b.1 = now;
        b.0 -= n as f64;
        if b.0 >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-b.0 / rate) }
    }
}

/// Spool bytes held for one upload; given back when dropped.
pub struct SpoolReservation {
    bytes: u64,
    used: Arc<AtomicU64>,
}

impl SpoolReservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Take `bytes` from the budget `used` of at most `max`, if it has room.
fn reserve(used: &Arc<AtomicU64>, max: u64, bytes: u64) -> Option<SpoolReservation> {
    let mut now = used.load(Ordering::Relaxed);
    loop {
        let next = now.checked_add(bytes)?;
        if next > max {
            return None;
        }
        match used.compare_exchange_weak(now, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Some(SpoolReservation { bytes, used: used.clone() }),
            Err(n) => now = n,
        }
    }
}

impl Drop for SpoolReservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Quotas {
    pub fn new(uploads_per_client: usize, bytes_per_sec: u64, spool_max: u64) -> Self {
        Self {
            uploads_per_client: uploads_per_client.max(1),
            bytes_per_sec,
            clients: Mutex::default(),
            spool_max,
            spool_used: Arc::default(),
            spool_memory_max: 0,
            spool_memory_used: Arc::default(),
            spill_files: crate::spool::SpillFiles::new(0),
        }
    }

    /// Spill files of up to `bytes` in all (and at most the spool quota)
    /// are kept open between uploads and written over by the next ones.
    pub fn with_spill_keep(mut self, bytes: u64) -> Self {
        self.spill_files = crate::spool::SpillFiles::new(bytes.min(self.spool_max));
        self
    }

    pub fn spill_files(&self) -> Arc<crate::spool::SpillFiles> {
        self.spill_files.clone()
    }

    /// Uploads may be held in memory whole up to `bytes` in all.
    pub fn with_spool_memory(mut self, bytes: u64) -> Self {
        self.spool_memory_max = bytes;
        self
    }

    pub fn uploads_per_client(&self) -> usize {
        self.uploads_per_client
    }

    pub fn client(&self, name: &str) -> Arc<ClientQuota> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(ClientQuota {
                    uploads: Arc::new(Semaphore::new(self.uploads_per_client)),
                    bytes_per_sec: self.bytes_per_sec,
                    bucket: Mutex::new((self.bytes_per_sec as f64, Instant::now())),
                })
            })
            .clone()
    }

    /// Reserve `bytes` of spool, if the quota has room.
    pub fn reserve_spool(&self, bytes: u64) -> Option<SpoolReservation> {
        reserve(&self.spool_used, self.spool_max, bytes)
    }

    pub fn spool_used(&self) -> u64 {
        self.spool_used.load(Ordering::Relaxed)
    }

    /// Reserve memory to hold an upload of `bytes` whole, if it is small
    /// enough and the memory budget has room.
    pub fn reserve_spool_memory(&self, bytes: u64) -> Option<SpoolReservation> {
        if bytes > crate::spool::MEMORY_UPLOAD_MAX {
            return None;
        }
        reserve(&self.spool_memory_used, self.spool_memory_max, bytes)
    }

    pub fn spool_memory_used(&self) -> u64 {
        self.spool_memory_used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_slots_spool_quota_and_rate() {
        let q = Quotas::new(2, 1000, 100);
        let a = q.client("a");
        let (p1, p2) = (a.try_upload(), a.try_upload());
        assert!(p1.is_some() && p2.is_some() && a.try_upload().is_none(), "a third upload of one client is refused");
        assert!(q.client("b").try_upload().is_some(), "another client has its own slots");
        drop(p1);
        assert!(a.try_upload().is_some(), "a slot comes back when its upload ends");

        let r1 = q.reserve_spool(60).unwrap();
        assert!(q.reserve_spool(41).is_none());
        let r2 = q.reserve_spool(40).unwrap();
        drop(r1);
        assert_eq!(q.spool_used(), 40);
        drop(r2);
        assert_eq!(q.spool_used(), 0);

        // 1000 B/s with a one-second burst: the burst passes, then waits grow.
        assert_eq!(a.throttle(1000), Duration::ZERO);
        let wait = a.throttle(500);
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
    }
}
