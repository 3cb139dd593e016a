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

/// The largest HTTP/2 DATA frame Qala's servers accept (`SETTINGS_MAX_FRAME_SIZE`):
/// a content chunk and its gRPC framing in one frame, not 16 frames of the
/// 16 KiB default, each parsed, flow-controlled and handed on separately.
pub const MAX_FRAME_BYTES: u32 = CHUNK_BYTES as u32 + 1024;
