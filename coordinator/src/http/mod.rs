//! The REST/JSON front door (axum on the coordinator's runtime, on its own
//! listener, `--http-listen`): verdict lookups by sha256, sha1 or md5,
//! batch lookups, scans of raw or multipart bodies, the detections feed,
//! cluster and rules status, IOC lists, Prometheus metrics and the OpenAPI
//! document. Same TLS (HTTP/2 and HTTP/1.1) and tokens as gRPC:
//! `Authorization: Bearer <token>`, or a client certificate of the cluster
//! CA. A thin adapter: every call goes to the [`crate::core::Core`], which checks the
//! role, applies quotas and audits; errors are JSON with a stable `code`.

mod console;
mod error;
pub mod health;
mod hunts;
pub mod model;
mod request;
mod routes;
mod session;
mod state;
mod views;

use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use qala_tls::ServerTls;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::Connected;
use tracing::{debug, info};

pub use error::ApiError;
pub use routes::ApiDoc;
pub use state::AppState;

/// Request headers must arrive within this long (HTTP/1.1); HTTP/2
/// connections are pinged at this interval.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
