//! Rates per client: a token bucket for each token or certificate name,
//! for the calls whose cost is not bounded by the upload quotas (join
//! tokens' enrollments, agents' action reports, IOC list writes), so one
//! valid credential cannot drown the others.

use super::error::CoreError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets of more clients than this are forgotten once full again.
const MAX_TRACKED: usize = 10_000;

struct Bucket {
    left: f64,
    at: Instant,
}

/// `per_minute` units per client and minute, and as the burst.
pub struct PerClient {
    what: &'static str,
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl PerClient {
    /// `what` names the unit in the refusal ("enrollments", "actions").
    pub fn new(what: &'static str, per_minute: u32) -> Self {
        Self { what, per_minute: per_minute.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Take `n` units of `client`'s minute, or say (busy, with a retry
    /// hint) when they will be there. A call of more than a minute's worth
    /// costs a whole minute.
    pub fn take(&self, client: &str, n: u32) -> Result<(), CoreError> {
        let cap = self.per_minute as f64;
        let n = n.min(self.per_minute);
        let rate = cap / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > MAX_TRACKED {
            buckets.retain(|_, b| b.left + now.duration_since(b.at).as_secs_f64() * rate < cap);
        }
        let b = buckets.entry(client.to_string()).or_insert(Bucket { left: cap, at: now });
        b.left = (b.left + now.duration_since(b.at).as_secs_f64() * rate).min(cap);
        b.at = now;
        if b.left >= n as f64 {
            b.left -= n as f64;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((n as f64 - b.left) / rate);
        Err(CoreError::busy(
            format!("{client:?}: more than {} {} a minute", self.per_minute, self.what),
            wait.max(Duration::from_millis(100)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_spends_its_own_minute_only() {
        let r = PerClient::new("actions", 10);
        r.take("a", 6).unwrap();
        r.take("a", 4).unwrap();
        let Err(CoreError::Busy { message, retry_after }) = r.take("a", 1) else { panic!("not refused") };
        assert!(message.contains("more than 10 actions a minute"), "{message}");
        assert!(retry_after >= Duration::from_secs(5) && retry_after <= Duration::from_secs(7), "{retry_after:?}");
        r.take("b", 25).unwrap();
        assert!(matches!(r.take("b", 1), Err(CoreError::Busy { .. })), "a call of more than a minute's worth empties it");
    }
}
