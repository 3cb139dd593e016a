//! Whether this worker is alive and ready, for probes: `GET /healthz` and
//! `GET /readyz` on the plain-HTTP metrics listener (`--metrics-listen`),
//! beside `/metrics`. The listener opens before the worker enrolls, so a
//! probe can see why it is not ready yet (enrolling, its join token
//! refused). Ready = it holds an identity, is registered with at least one
//! coordinator and holds the rules in force there.

use crate::service::WorkerState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Default)]
pub struct Health {
    /// Before the worker serves: what it is doing, or why it cannot.
    starting: Mutex<Option<String>>,
    state: OnceLock<Arc<WorkerState>>,
    /// Coordinators this worker is registered with now.
    registered: AtomicUsize,
    coordinators: AtomicUsize,
}

impl Health {
    pub fn new(coordinators: usize) -> Arc<Self> {
        let h = Health { starting: Mutex::new(Some("starting".into())), ..Default::default() };
        h.coordinators.store(coordinators, Ordering::Relaxed);
        Arc::new(h)
    }

    /// What the worker is doing before it serves (shown by `/readyz`).
    pub fn starting(&self, what: impl Into<String>) {
        *self.starting.lock().unwrap_or_else(|p| p.into_inner()) = Some(what.into());
    }

    /// The worker serves from now on.
    pub fn serving(&self, state: Arc<WorkerState>) {
        let _ = self.state.set(state);
        *self.starting.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A coordinator registered this worker (true) or forgot it (false).
    pub fn registered(&self, yes: bool) {
        if yes {
            self.registered.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = self.registered.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Whether the worker can scan, and if not, why not.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let mut reasons = Vec::new();
        if let Some(s) = self.starting.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            reasons.push(s);
        }
        let registered = self.registered.load(Ordering::Relaxed);
        let rules = self.state.get().map(|s| s.rules.current_id()).unwrap_or_default();
        if self.state.get().is_some() {
            if registered == 0 {
                reasons.push("not registered with any coordinator".to_string());
            }
            if rules.is_empty() {
                reasons.push("no rules loaded yet".to_string());
            }
        }
        let ready = reasons.is_empty();
        let body = json!({
            "ready": ready,
            "reasons": reasons,
            "worker_id": self.state.get().map(|s| s.worker_id.clone()),
            "registered_with": registered,
            "coordinators": self.coordinators.load(Ordering::Relaxed),
            "ruleset_id": rules,
        });
        (ready, body)
    }

    fn metrics(&self) -> String {
        match self.state.get() {
            Some(s) => s.metrics.render(s.in_flight.load(Ordering::Relaxed), s.max_in_flight()),
            None => String::new(),
        }
    }
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, health: Arc<Health>, mut stop: watch::Receiver<bool>) {
    let addr = listener.local_addr().ok();
    if addr.is_some_and(|a| !a.ip().is_loopback()) {
        warn!(?addr, "metrics listener on a non-loopback address: anyone who reaches it can read the counters");
    }
    info!(?addr, "metrics and health listener (plain HTTP) listening");
    let (m, r) = (health.clone(), health);
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = m.metrics();
                async move { ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { axum::Json(json!({"live": true})) }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let (ready, body) = r.readiness();
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
