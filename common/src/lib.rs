//! What Qala's services share that is neither the protocol (`qala-proto`)
//! nor TLS (`qala-tls`): the wall clock in the unit every record uses, the
//! pool of kept spill files the coordinator and the worker write large
//! uploads to, and (feature `metrics`) the Prometheus families both count
//! verdicts and limits in, files written safely ([`files`]), and the
//! exec probes' client of the health endpoints ([`health`]). Small and
//! synchronous: the agent links it too.

pub mod files;
pub mod health;
pub mod kept;
#[cfg(feature = "metrics")]
pub mod metrics;

pub use kept::KeptFiles;

/// Fewer malloc arenas than glibc's default (eight per core): a service
/// whose tokio threads each allocate and free in turn otherwise keeps a
/// heap per thread, and its resident memory grows with the work it has
/// done rather than with what it holds (measured on a coordinator answering
/// 112,000 lookups: 268 MiB peak with the default, 130 MiB with one
/// arena). Call first thing in `main`, before any thread starts; `n` is
/// at least 2. Without glibc, nothing.
pub fn limit_malloc_arenas(n: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; called before threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n.max(2) as libc::c_int);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = n;
}

/// Unix time in milliseconds (0 before 1970), the unit of every `*_ms`
/// field Qala stores or sends.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
