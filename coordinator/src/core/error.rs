//! What the core answers when it cannot do what was asked, in its own
//! words: each front door maps these to its protocol's codes in one place
//! (gRPC status codes in `grpc.rs`, HTTP statuses in `http/mod.rs`, clamd's
//! reply text in `clamd/mod.rs`), as garage maps its errors per API.

use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoreError {
    /// Past a limit (the client's uploads, the coordinator's, the spool):
    /// come back after `retry_after`; nothing was lost.
    #[error("{message}; retry in {} ms", retry_after.as_millis())]
    Busy { message: String, retry_after: Duration },
    /// The request or upload is wrong (bad digest, size or sha256
    /// mismatch, malformed cursor, ...): asking again will not help.
    #[error("{0}")]
    Invalid(String),
    /// No credentials, or credentials nobody issued (or revoked).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    /// This coordinator cannot do it as configured (no CA key to enroll).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The name or id asked for is taken (a token name, a live worker id).
    #[error("{0}")]
    AlreadyExists(String),
    /// Something the core needs does not answer (the store, every worker):
    /// asking again later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The client sent nothing for too long.
    #[error("{0}")]
    Timeout(String),
    /// The client went away in the middle of its upload.
    #[error("{0}")]
    Interrupted(String),
    /// A fault of the coordinator or of a worker's answer.
    #[error("{0}")]
    Internal(String),
}

impl CoreError {
    pub fn busy(message: impl Into<String>, retry_after: Duration) -> Self {
        CoreError::Busy { message: message.into(), retry_after }
    }

    /// The retry hint of a busy answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CoreError::Busy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The audit log's name of the kind (`PermissionDenied`,
    /// `ResourceExhausted`, ...: gRPC's code names, as the log has always
    /// written them, whichever front door the call came by).
    pub fn audit_code(&self) -> &'static str {
        match self {
            CoreError::Busy { .. } => "ResourceExhausted",
            CoreError::Invalid(_) => "InvalidArgument",
            CoreError::Unauthenticated(_) => "Unauthenticated",
            CoreError::Denied(_) => "PermissionDenied",
            CoreError::NotFound(_) => "NotFound",
            CoreError::FailedPrecondition(_) => "FailedPrecondition",
            CoreError::AlreadyExists(_) => "AlreadyExists",
            CoreError::Unavailable(_) => "Unavailable",
            CoreError::Timeout(_) => "DeadlineExceeded",
            CoreError::Interrupted(_) => "Cancelled",
            CoreError::Internal(_) => "Internal",
        }
    }

    /// A short stable name of the kind, for REST's JSON errors.
    pub fn kind(&self) -> &'static str {
        match self {
            CoreError::Busy { .. } => "busy",
            CoreError::Invalid(_) => "invalid_argument",
            CoreError::Unauthenticated(_) => "unauthenticated",
            CoreError::Denied(_) => "permission_denied",
            CoreError::NotFound(_) => "not_found",
            CoreError::FailedPrecondition(_) => "failed_precondition",
            CoreError::AlreadyExists(_) => "already_exists",
            CoreError::Unavailable(_) => "unavailable",
            CoreError::Timeout(_) => "timeout",
            CoreError::Interrupted(_) => "cancelled",
            CoreError::Internal(_) => "internal",
        }
    }
}

/// A store error as the core reports it.
impl From<crate::store::StoreError> for CoreError {
    fn from(e: crate::store::StoreError) -> Self {
        CoreError::Unavailable(format!("verdict store: {e}"))
    }
}
