//! The coordinator's plain-HTTP listener for machines that watch it
//! (`--metrics-listen`): Prometheus `/metrics` without a token, and the
//! probes' `/healthz` (the process answers) and `/readyz` (it can answer
//! scans: rules in force, a live worker holding them; the core's
//! overview decides). No TLS: a kubelet's HTTP probe
//! and a scraper on the cluster's network reach it; nothing on it reads a
//! request body or changes anything.

use crate::core::Core;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

pub async fn serve(listener: TcpListener, core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let addr = listener.local_addr().ok();
    if addr.is_some_and(|a| !a.ip().is_loopback()) {
        warn!(?addr, "metrics listener on a non-loopback address: anyone who reaches it can read the counters");
    }
    info!(?addr, "metrics and health listener (plain HTTP) listening");
    let (m, r) = (core.clone(), core);
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = m.plain_metrics();
                async move { ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { axum::Json(json!({"live": true})) }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let (ready, body) = r.overview().readiness();
                let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                async move { (code, axum::Json(body)).into_response() }
            }),
        );
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
}
