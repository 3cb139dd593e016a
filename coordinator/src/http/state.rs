//! What every REST handler shares: the core, and the way from a request's
//! headers and connection to an authenticated caller.

use super::error::ApiError;
use crate::auth::{Caller, Credentials, Op};
use crate::core::Core;
use axum::http::{HeaderMap, header};
use qala_tls::PeerInfo;
use std::sync::Arc;

/// The credentials of a request: its bearer token, peer and client certificate.
fn credentials(headers: &HeaderMap, peer: Option<&PeerInfo>) -> Credentials {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.strip_prefix("Bearer ").or_else(|| s.strip_prefix("bearer ")))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let cert = peer.and_then(|p| p.cert.as_deref()).cloned();
    Credentials { token, peer: peer.and_then(|p| p.remote), cert }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
}

impl AppState {
    /// Authenticate the request and check its role allows `op`.
    pub fn caller(&self, headers: &HeaderMap, peer: Option<&PeerInfo>, op: Op) -> Result<Caller, ApiError> {
        Ok(self.core.caller(&credentials(headers, peer), op)?)
    }
}
