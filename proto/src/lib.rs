//! Qala's gRPC API (`qala.v1`), generated from `proto/qala/v1/qala.proto`.
//!
//! Every server registers [`FILE_DESCRIPTOR_SET`] with tonic-reflection so
//! `grpcurl` and friends can list and call the services.

/// Generated messages and services of `qala.v1`.
pub mod v1 {
    tonic::include_proto!("qala.v1");
}

/// Encoded `FileDescriptorSet` of the API, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/qala_descriptor.bin"));

pub use v1::VerdictKind;

impl VerdictKind {
    /// The levels a verdict can have, mildest first (`Unspecified` is none).
    pub const LEVELS: [VerdictKind; 4] =
        [VerdictKind::Clean, VerdictKind::Suspicious, VerdictKind::Malicious, VerdictKind::Unscannable];

    /// The level of `verdict` (`Unspecified` for a value this build does not know).
    pub fn of(verdict: &v1::Verdict) -> VerdictKind {
        VerdictKind::try_from(verdict.verdict).unwrap_or_default()
    }

    /// Malicious or suspicious: what agents act on.
    pub fn is_detection(self) -> bool {
        matches!(self, VerdictKind::Malicious | VerdictKind::Suspicious)
    }

    /// Short lower-case name used in CLI output and JSON (`clean`, `malicious`, ...).
    pub fn label(self) -> &'static str {
        match self {
            VerdictKind::Unspecified => "unknown",
            VerdictKind::Clean => "clean",
            VerdictKind::Suspicious => "suspicious",
            VerdictKind::Malicious => "malicious",
            VerdictKind::Unscannable => "unscannable",
        }
    }
}

/// Largest gRPC message any Qala server or client accepts (rule bundles are chunked below it).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Size of content chunks in `Scan` / `ScanFile` streams.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Largest HTTP/2 frame a worker accepts (SETTINGS_MAX_FRAME_SIZE, 16 KiB
/// by default): room for a whole [`CHUNK_BYTES`] chunk message, so a chunk
/// from the coordinator arrives as one DATA frame instead of sixteen. Only
/// the worker's listener: a connection's read buffer grows to the largest
/// frame and keeps that size, which for a handful of coordinator
/// connections is nothing, but the coordinator's own listener holds one
/// connection per agent (100 agents sending 8 MiB files raised its peak RSS
/// from 126 to 201 MiB with these frames there too).
pub const H2_MAX_FRAME_BYTES: u32 = CHUNK_BYTES as u32 + 1024;

/// Largest HTTP/2 frame the coordinator's listeners accept: four times the
/// default, so an agent's upload leaves in a quarter of the frames (and
/// socket writes), while a connection's read buffer stays small (100 agents
/// sending 8 MiB files: peak RSS 132 -> 138 MiB, against 201 MiB with
/// [`H2_MAX_FRAME_BYTES`]).
pub const API_H2_MAX_FRAME_BYTES: u32 = 64 * 1024;

/// Names of the limits the services themselves report in `LimitHit.limit`,
/// beside the engine's own (`max_depth`, `max_objects`, ...).
pub mod limits {
    /// A file larger than the workers scan (answered without reading it).
    pub const MAX_FILE_SIZE: &str = "max_file_size";
    /// A file that killed its scan process each time (put on the poison list).
    pub const WORKER_CRASH: &str = "worker_crash";
    /// No verdict from the worker within the coordinator's deadline.
    pub const SCAN_TIMEOUT: &str = "scan_timeout";
    /// A verdict too large to send.
    pub const VERDICT_SIZE: &str = "verdict_size";
    /// All of them.
    pub const ALL: [&str; 4] = [MAX_FILE_SIZE, WORKER_CRASH, SCAN_TIMEOUT, VERDICT_SIZE];
}

/// An `unscannable` verdict: the one limit that made a file so, what it
/// means and the error to show. Every service that answers one for a file
/// the engine could not judge (too large, killed its scan process, no
/// answer in time, on the poison list) builds it here.
pub struct Unscannable {
    pub limit: &'static str,
    pub detail: String,
    pub error: String,
}

impl Unscannable {
    /// The verdict on `sha256` (`size` bytes), judged now under
    /// `ruleset_id` by `engine_version` on worker `worker_id` (empty: none).
    pub fn verdict(self, sha256: &str, size: u64, ruleset_id: &str, engine_version: &str, worker_id: &str) -> v1::Verdict {
        v1::Verdict {
            sha256: sha256.to_string(),
            size,
            verdict: VerdictKind::Unscannable as i32,
            limits_hit: vec![v1::LimitHit { limit: self.limit.to_string(), object: String::new(), detail: self.detail }],
            errors: vec![self.error],
            ruleset_id: ruleset_id.to_string(),
            engine_version: engine_version.to_string(),
            worker_id: worker_id.to_string(),
            scanned_at_ms: qala_common::now_ms(),
            ..Default::default()
        }
    }
}
