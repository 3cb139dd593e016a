//! What Qala's services share that is neither the protocol (`qala-proto`)
//! nor TLS (`qala-tls`): the wall clock in the unit every record uses, the
//! pool of kept spill files the coordinator and the worker write large
//! uploads to, and (feature `metrics`) the Prometheus families both count
//! verdicts and limits in, and files written safely ([`files`]). Small and
//! synchronous: the agent links it too.

pub mod files;
pub mod kept;
#[cfg(feature = "metrics")]
pub mod metrics;

pub use kept::KeptFiles;

/// Unix time in milliseconds (0 before 1970), the unit of every `*_ms`
/// field Qala stores or sends.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
