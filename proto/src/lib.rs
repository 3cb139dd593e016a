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
