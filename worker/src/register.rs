//! Registration with the coordinator and the heartbeat loop. A coordinator
//! that restarts forgets its workers; the heartbeat answer says so and the
//! worker registers again.

use crate::error::Error;
use crate::health::Health;
use crate::identity::Identity;
use crate::service::WorkerState;
use qala_proto::v1::{self as pb, cluster_client::ClusterClient};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

/// A client of `coordinator`'s cluster listener, with this worker's
/// certificate as it is now (a renewed one is picked up at the next
/// registration).
fn cluster_client(coordinator: &str, identity: Option<&Identity>) -> Result<ClusterClient<Channel>, Error> {
    let transport = |source| Error::Transport { what: format!("coordinator {coordinator}"), source };
    let mut endpoint = Endpoint::from_shared(coordinator.to_string())
        .map_err(transport)?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10));
    if let Some(i) = identity {
        endpoint = i.endpoint(endpoint)?;
    }
    Ok(ClusterClient::new(endpoint.connect_lazy()))
}

pub async fn run(
    coordinator: String,
    request: pb::RegisterRequest,
    state: Arc<WorkerState>,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
    identity: Option<Identity>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut registered: Option<Duration> = None;
    let mut client = match cluster_client(&coordinator, identity.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            warn!(coordinator, error = %e, "cannot make a client of the coordinator; not registering");
            return;
        }
    };
    loop {
        // Before each registration: read the certificate files again (a
        // renewed certificate is used from then on).
        if registered.is_none()
            && let Ok(c) = cluster_client(&coordinator, identity.as_ref())
        {
            client = c;
        }
        let wait = match registered {
            None => match client.register(pb::RegisterRequest { crl_digest: digest(&identity), ..request.clone() }).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if let Some(i) = &identity {
                        i.take_crls(&resp.crls);
                    }
                    info!(coordinator, ruleset_id = resp.ruleset_id, "registered");
                    backoff = Duration::from_millis(100);
                    let interval = Duration::from_millis(resp.heartbeat_interval_ms.clamp(100, 60_000) as u64);
                    registered = Some(interval);
                    health.registered(true);
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
                    bytes_scanned: state.bytes_scanned.load(Ordering::Relaxed),
                    p99_us: state.recent.p99_us(),
                    crl_digest: digest(&identity),
                };
                match client.heartbeat(hb).await {
                    Ok(resp) if resp.get_ref().known => {
                        if let Some(i) = &identity {
                            i.take_crls(&resp.get_ref().crls);
                        }
                        interval
                    }
                    Ok(_) => {
                        info!(coordinator, "coordinator does not know this worker; registering again");
                        registered = None;
                        health.registered(false);
                        Duration::ZERO
                    }
                    Err(e) => {
                        warn!(coordinator, error = %e.message(), "heartbeat failed");
                        registered = None;
                        health.registered(false);
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

/// What this worker says it holds of the revocation lists.
fn digest(identity: &Option<Identity>) -> String {
    identity.as_ref().map(|i| i.crls.digest()).unwrap_or_default()
}
