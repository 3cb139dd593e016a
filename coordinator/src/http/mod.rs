//! The REST/JSON front door (axum on the coordinator's runtime, on its own
//! listener, `--http-listen`): verdict lookups by sha256, sha1 or md5,
//! batch lookups, scans of raw or multipart bodies, the detections feed,
//! cluster and rules status, IOC lists, Prometheus metrics and the OpenAPI
//! document. Same TLS (HTTP/2 and HTTP/1.1) and tokens as gRPC:
//! `Authorization: Bearer <token>`, or a client certificate of the cluster
//! CA. A thin adapter: every call goes to the [`Core`], which checks the
//! role, applies quotas and audits; errors are JSON with a stable `code`.

pub mod model;
mod routes;

use crate::auth::{Credentials, Op};
use crate::core::Core;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use qala_tls::{PeerInfo, ServerTls};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::Connected;
use tracing::{debug, info};

pub use routes::ApiDoc;

/// Request headers must arrive within this long (HTTP/1.1); HTTP/2
/// connections are pinged at this interval.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

/// The gRPC status vocabulary of the core, mapped to HTTP.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code::*;
        let (status, code) = match s.code() {
            InvalidArgument | OutOfRange => (StatusCode::BAD_REQUEST, "invalid_argument"),
            Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Cancelled | Aborted => (StatusCode::BAD_REQUEST, "cancelled"),
            FailedPrecondition => (StatusCode::CONFLICT, "failed_precondition"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let retry_after_ms = s
            .metadata()
            .get(crate::core::RETRY_AFTER_MS)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .or((code == "busy").then_some(1000));
        Self { status, code, message: s.message().to_string(), retry_after_ms }
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
    pub fn caller(&self, headers: &HeaderMap, peer: Option<&PeerInfo>, op: Op) -> Result<crate::auth::Caller, ApiError> {
        Ok(self.core.caller(&credentials(headers, peer), op)?)
    }
}

/// Serve the REST API on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    state: AppState,
    max_body: usize,
    mut stop: watch::Receiver<bool>,
) {
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), tls = tls.is_some(), "REST API listening");
    let router = routes::router(state, max_body);
    let mut incoming = qala_tls::incoming(listener, tls);
    loop {
        let conn = tokio::select! {
            c = incoming.next() => match c { Some(Ok(c)) => c, Some(Err(_)) => continue, None => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        let peer = conn.connect_info();
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer.clone());
                let router = router.clone();
                async move { tower::ServiceExt::oneshot(router, req.map(axum::body::Body::new)).await }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that never finishes its request headers is dropped.
            builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(HEADER_TIMEOUT));
            if let Err(e) = builder.serve_connection(TokioIo::new(conn), service).await {
                debug!(error = %e, "REST connection ended with an error");
            }
        });
    }
}
