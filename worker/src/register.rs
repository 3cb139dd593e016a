//! Registration with the coordinator and the heartbeat loop. A coordinator
//! that restarts forgets its workers; the heartbeat answer says so and the
//! worker registers again.

use crate::service::WorkerState;
use qala_proto::v1::{self as pb, cluster_client::ClusterClient};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Endpoint;
use tracing::{info, warn};

pub async fn run(coordinator: String, request: pb::RegisterRequest, state: Arc<WorkerState>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    let mut registered: Option<Duration> = None;
    let endpoint = match Endpoint::from_shared(coordinator.clone()) {
        Ok(e) => e.connect_timeout(Duration::from_secs(3)).timeout(Duration::from_secs(10)),
        Err(e) => {
            warn!(coordinator, error = %e, "invalid coordinator URL; not registering");
            return;
        }
    };
    let mut client = ClusterClient::new(endpoint.connect_lazy());
    loop {
        let wait = match registered {
            None => match client.register(request.clone()).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    info!(coordinator, ruleset_id = resp.ruleset_id, "registered");
                    backoff = Duration::from_millis(100);
                    let interval = Duration::from_millis(resp.heartbeat_interval_ms.clamp(100, 60_000) as u64);
                    registered = Some(interval);
                    interval
                }
                Err(e) => {
                    warn!(coordinator, error = %e.message(), "registration failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            },
            Some(interval) => {
                let hb = pb::HeartbeatRequest {
                    worker_id: request.worker_id.clone(),
                    ruleset_id: state.rules.current_id(),
                    in_flight: state.in_flight.load(Ordering::Relaxed),
                    scanned: state.scanned.load(Ordering::Relaxed),
                };
                match client.heartbeat(hb).await {
                    Ok(resp) if resp.get_ref().known => interval,
                    Ok(_) => {
                        info!(coordinator, "coordinator does not know this worker; registering again");
                        registered = None;
                        Duration::ZERO
                    }
                    Err(e) => {
                        warn!(coordinator, error = %e.message(), "heartbeat failed");
                        registered = None;
                        backoff
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}
