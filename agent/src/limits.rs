//! Keeping a workstation usable: an upload bandwidth cap (a token bucket),
//! low CPU and I/O priority for the whole process (nice, ionice: set before
//! any thread starts, so every thread inherits them), and a cap on the CPU
//! share hashing may take (hashing threads sleep when the process has used
//! more than its share of one core over the last moments).

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

/// I/O scheduling class for `ionice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    Idle,
    BestEffortLow,
    Unchanged,
}

/// Lower this process's CPU priority to `nice` and its I/O class, before
/// any other thread exists (Linux applies both per thread; new threads
/// inherit them). Returns what could not be set.
pub fn lower_priority(nice: i32, io: IoClass) -> Vec<String> {
    let mut failed = Vec::new();
    if nice != 0 {
        // SAFETY: setpriority on the calling thread; no pointers.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
            failed.push(format!("nice {nice}: {}", std::io::Error::last_os_error()));
        }
    }
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const CLASS_SHIFT: libc::c_long = 13;
    let prio = match io {
        IoClass::Idle => 3 << CLASS_SHIFT,
        IoClass::BestEffortLow => (2 << CLASS_SHIFT) | 7,
        IoClass::Unchanged => return failed,
    };
    // SAFETY: ioprio_set(who, 0 = this thread, prio); no pointers.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0 as libc::c_long, prio) } != 0 {
        failed.push(format!("ionice: {}", std::io::Error::last_os_error()));
    }
    failed
}

/// The current I/O priority value of this thread (for tests and status).
pub fn io_priority() -> i64 {
    // SAFETY: ioprio_get(who = process, 0 = self); no pointers.
    unsafe { libc::syscall(libc::SYS_ioprio_get, 1 as libc::c_long, 0 as libc::c_long) }
}

/// Percent of one core hashing may use (0: no cap).
static CPU_PERCENT: AtomicU32 = AtomicU32::new(0);

pub fn set_cpu_share(percent: u32) {
    CPU_PERCENT.store(percent, Ordering::Relaxed);
}

fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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
