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

/// The console's session cookie (`__Host-`: set only over TLS, for this
/// host, path `/`, by this server).
pub const SESSION_COOKIE: &str = "__Host-qala_session";

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

impl AppState {
    /// Authenticate the request and check its role allows `op`: a bearer
    /// token or client certificate, else the console's session cookie
    /// (cross-site writes with it are refused before this, by
    /// `session::csrf_guard`).
    pub async fn caller(&self, headers: &HeaderMap, peer: Option<&PeerInfo>, op: Op) -> Result<Caller, ApiError> {
        let creds = credentials(headers, peer);
        if creds.token.is_none()
            && creds.cert.is_none()
            && let Some(id) = cookie(headers, SESSION_COOKIE)
        {
            let (caller, _) = self.core.sessions().resolve(id, creds.peer).await?;
            caller.require(op)?;
            return Ok(caller);
        }
        Ok(self.core.caller(&creds, op)?)
    }

    /// The credentials of a request (for login: its bearer token).
    pub fn credentials(&self, headers: &HeaderMap, peer: Option<&PeerInfo>) -> Credentials {
        credentials(headers, peer)
    }
}
