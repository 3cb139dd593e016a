//! Recent scan times, for the heartbeat's p99 (the console's cluster
//! health): the last [`KEEP`] scans of the last [`WINDOW`], in memory.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Scans remembered at most.
const KEEP: usize = 2048;
/// How far back the percentile looks.
pub const WINDOW: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct Recent {
    scans: Mutex<VecDeque<(Instant, u64)>>,
}

impl Recent {
    /// One scan that took `us` microseconds, finished now.
    pub fn record(&self, us: u64) {
        let mut q = self.scans.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back((Instant::now(), us));
    }

    /// The 99th percentile of the scan times within [`WINDOW`] (0: none).
    pub fn p99_us(&self) -> u64 {
        let q = self.scans.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<u64> = q.iter().filter(|(at, _)| at.elapsed() <= WINDOW).map(|(_, us)| *us).collect();
        if v.is_empty() {
            return 0;
        }
        v.sort_unstable();
        // Nearest rank: the smallest time at or above 99% of the scans.
        let rank = (v.len() * 99).div_ceil(100).max(1);
        v[rank - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_the_nearest_rank_of_recent_scans() {
        let r = Recent::default();
        assert_eq!(r.p99_us(), 0);
        for us in 1..=100 {
            r.record(us);
        }
        assert_eq!(r.p99_us(), 99);
        r.record(1_000_000);
        assert_eq!(r.p99_us(), 100);
        for _ in 0..KEEP {
            r.record(5);
        }
        assert_eq!(r.p99_us(), 5, "old scans fall out once KEEP newer ones came");
    }
}
