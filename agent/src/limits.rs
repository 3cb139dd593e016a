//! Keeping a workstation usable: an upload bandwidth cap (a token bucket)
//! and a cap on the CPU share hashing may take (hashing threads sleep when
//! the process has used more than its share of one core over the last
//! moments). The process's low CPU and I/O priority is set by the binary,
//! before any thread starts ([`crate::os::lower_priority`]).

use crate::os::process_cpu;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Bytes per second for uploads, shared by every upload of the process.
pub struct RateLimit {
    rate: u64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> Self {
        Self { rate: bytes_per_sec.max(1), state: Mutex::new((0.0, Instant::now())) }
    }

    /// Wait until `n` more bytes may be sent. A burst of up to a quarter
    /// second's worth is allowed.
    pub async fn take(&self, n: u64) {
        let wait = {
            let mut s = self.state.lock().expect("rate lock");
            let now = Instant::now();
            let burst = self.rate as f64 / 4.0;
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate as f64;
            s.0 = (s.0 + refill).min(burst) - n as f64;
            s.1 = now;
            if s.0 < 0.0 { Duration::from_secs_f64(-s.0 / self.rate as f64) } else { Duration::ZERO }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Percent of one core hashing may use (0: no cap).
static CPU_PERCENT: AtomicU32 = AtomicU32::new(0);

pub fn set_cpu_share(percent: u32) {
    CPU_PERCENT.store(percent, Ordering::Relaxed);
}

static WINDOW: Mutex<Option<(Instant, Duration)>> = Mutex::new(None);

/// Called by hashing threads between pieces: sleeps as long as the process
/// is above its CPU share since the start of the current one-second window.
pub fn cpu_throttle() {
    let percent = CPU_PERCENT.load(Ordering::Relaxed);
    if percent == 0 {
        return;
    }
    let sleep = {
        let mut w = WINDOW.lock().expect("window lock");
        let now = Instant::now();
        let cpu = process_cpu();
        let (start, cpu0) = match *w {
            Some((s, c)) if now.duration_since(s) < Duration::from_secs(1) => (s, c),
            _ => {
                *w = Some((now, cpu));
                (now, cpu)
            }
        };
        let used = cpu.saturating_sub(cpu0).as_secs_f64();
        let allowed = now.duration_since(start).as_secs_f64() * percent as f64 / 100.0;
        // Sleep until the used CPU time is within the share of the window.
        (used > allowed)
            .then(|| Duration::from_secs_f64((used * 100.0 / percent as f64) - now.duration_since(start).as_secs_f64()))
    };
    if let Some(d) = sleep {
        std::thread::sleep(d.min(Duration::from_secs(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bucket_paces_bytes() {
        let r = RateLimit::new(1 << 20);
        let t = Instant::now();
        for _ in 0..8 {
            r.take(256 << 10).await;
        }
        // 2 MiB at 1 MiB/s, less the quarter-second burst.
        assert!(t.elapsed() >= Duration::from_millis(1500), "{:?}", t.elapsed());
    }
}
