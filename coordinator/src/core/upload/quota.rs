//! The quota step of an upload: limits per client (per token name), on the
//! coordinator's uploads in all and on the spool, so one client can neither
//! starve the others nor fill the coordinator's disk. Past any of them the
//! upload is refused as busy with a retry hint the agent honours.
//!
//! - uploads in flight per client, and in all (`--max-uploads`);
//! - bytes per second per client: a token bucket; a client above its rate
//!   is read more slowly (HTTP/2 flow control pushes back on it alone);
//! - spool bytes: uploads being held (memory and temporary files) are
//!   counted by their announced size;
//! - spool memory: uploads held in memory whole (up to [`MEMORY_UPLOAD_MAX`]
//!   each) while this budget (64 MiB by default) has room; others go to
//!   temporary files.

use crate::core::error::CoreError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest upload held in memory whole (when the memory budget has room).
pub const MEMORY_UPLOAD_MAX: u64 = 16 << 20;

pub struct Quotas {
    uploads_per_client: usize,
    bytes_per_sec: u64,
    clients: Mutex<HashMap<String, Arc<ClientQuota>>>,
    /// One permit per upload being received and scanned.
    uploads: Arc<Semaphore>,
    max_uploads: usize,
    spool_max: u64,
    spool_used: Arc<AtomicU64>,
    spool_memory_max: u64,
    spool_memory_used: Arc<AtomicU64>,
    busy_rejections: AtomicU64,
}

/// What an admitted upload holds until it is answered: its client's slot
/// and rate, a coordinator slot and its spool bytes; and, if it may be held
/// in memory whole, that memory (for its spool to take).
pub struct Admission {
    pub client: Arc<ClientQuota>,
    pub memory: Option<SpoolReservation>,
    _client_slot: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
    spool: SpoolReservation,
}

impl Admission {
    /// Take `n` more bytes of spool for an upload whose size was not known
    /// when it was admitted; false if the spool quota has no room.
    pub fn grow_spool(&mut self, n: u64) -> bool {
        self.spool.grow(n)
    }
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
    max: u64,
    used: Arc<AtomicU64>,
}

impl SpoolReservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Take `n` more bytes, if the budget has room.
    pub fn grow(&mut self, n: u64) -> bool {
        match reserve(&self.used, self.max, n) {
            Some(more) => {
                std::mem::forget(more);
                self.bytes += n;
                true
            }
            None => false,
        }
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
            Ok(_) => return Some(SpoolReservation { bytes, max, used: used.clone() }),
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
            uploads: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            max_uploads: Semaphore::MAX_PERMITS,
            spool_max,
            spool_used: Arc::default(),
            spool_memory_max: 0,
            spool_memory_used: Arc::default(),
            busy_rejections: AtomicU64::new(0),
        }
    }

    /// At most `n` uploads received and scanned at once, whoever sends them.
    pub fn with_max_uploads(mut self, n: usize) -> Self {
        self.max_uploads = n.clamp(1, Semaphore::MAX_PERMITS);
        self.uploads = Arc::new(Semaphore::new(self.max_uploads));
        self
    }

    /// The spool quota, in bytes.
    pub fn spool_max(&self) -> u64 {
        self.spool_max
    }

    /// Admit an upload of `size` bytes from client `name`, or refuse it as
    /// busy with a retry hint (later the longer `scans_in_flight` there are).
    pub fn admit(&self, name: &str, size: u64, scans_in_flight: usize) -> Result<Admission, CoreError> {
        let client = self.client(name);
        let busy = |message: String, after_ms: u64| {
            self.busy_rejections.fetch_add(1, Ordering::Relaxed);
            CoreError::busy(message, Duration::from_millis(after_ms))
        };
        let Some(client_slot) = client.try_upload() else {
            return Err(busy(format!("client {name:?} has {} uploads in progress", self.uploads_per_client), 500));
        };
        let Ok(slot) = self.uploads.clone().try_acquire_owned() else {
            let after_ms = 250 + 50 * scans_in_flight.min(100) as u64;
            return Err(busy(format!("coordinator busy: {} uploads in progress", self.max_uploads), after_ms));
        };
        let Some(spool) = self.reserve_spool(size) else {
            return Err(busy(format!("coordinator spool full ({} bytes held)", self.spool_used()), 1000));
        };
        let memory = self.reserve_spool_memory(size);
        Ok(Admission { client, memory, _client_slot: client_slot, _slot: slot, spool })
    }

    /// Uploads being received or scanned now.
    pub fn in_progress(&self) -> usize {
        self.max_uploads.saturating_sub(self.uploads.available_permits())
    }

    /// Uploads refused as busy since start.
    pub fn busy_rejections(&self) -> u64 {
        self.busy_rejections.load(Ordering::Relaxed)
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
        if bytes > MEMORY_UPLOAD_MAX {
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
        let mut r2 = q.reserve_spool(30).unwrap();
        assert!(!r2.grow(11), "growing past the quota is refused");
        assert!(r2.grow(10) && r2.bytes() == 40);
        drop(r1);
        assert_eq!(q.spool_used(), 40);
        drop(r2);
        assert_eq!(q.spool_used(), 0);

        // 1000 B/s with a one-second burst: the burst passes, then waits grow.
        assert_eq!(a.throttle(1000), Duration::ZERO);
        let wait = a.throttle(500);
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
    }

    #[test]
    fn admission_takes_every_quota_and_refusals_say_when_to_come_back() {
        let q = Quotas::new(1, 0, 100).with_max_uploads(2).with_spool_memory(50);
        let a = q.admit("a", 40, 0).unwrap();
        assert!(a.memory.is_some(), "small enough to be held in memory");
        let e = q.admit("a", 10, 0).err().unwrap();
        assert_eq!(e.retry_after(), Some(Duration::from_millis(500)), "{e}");
        let b = q.admit("b", 60, 3).unwrap();
        assert!(b.memory.is_none(), "the memory budget is spent");
        let e = q.admit("c", 1, 3).err().unwrap();
        assert!(e.to_string().contains("2 uploads in progress") && e.retry_after() == Some(Duration::from_millis(400)), "{e}");
        assert_eq!((q.in_progress(), q.busy_rejections()), (2, 2));
        drop(a);
        let e = q.admit("c", 50, 0).err().unwrap();
        assert!(e.to_string().contains("spool full"), "{e}");
        drop(b);
        assert!(q.admit("c", 100, 0).is_ok());
        assert_eq!((q.in_progress(), q.spool_used(), q.spool_memory_used()), (0, 0, 0));
    }
}
