//! REST's errors: JSON with a stable `code`, and the core's errors mapped to
//! HTTP statuses in one place.

use super::model;
use crate::core::CoreError;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A refusal or failure, as JSON `{"code": ..., "message": ...}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_ms: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    /// The stable code and the message, for an error sent inside a stream.
    pub fn parts(&self) -> (&'static str, &str) {
        (self.code, &self.message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

/// The core's errors as HTTP statuses and stable JSON codes: the one place
/// REST maps them.
impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let status = match &e {
            CoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            CoreError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            CoreError::Denied(_) => StatusCode::FORBIDDEN,
            CoreError::NotFound(_) => StatusCode::NOT_FOUND,
            CoreError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            CoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            CoreError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            CoreError::Interrupted(_) => StatusCode::BAD_REQUEST,
            CoreError::FailedPrecondition(_) | CoreError::AlreadyExists(_) => StatusCode::CONFLICT,
            CoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after_ms = e.retry_after().map(|d| d.as_millis() as u64);
        Self { status, code: e.kind(), message: e.to_string(), retry_after_ms }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(model::ApiError { code: self.code.into(), message: self.message });
        let mut r = (self.status, body).into_response();
        if let Some(ms) = self.retry_after_ms
            && let Ok(v) = ms.div_ceil(1000).max(1).to_string().parse()
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        r
    }
}
