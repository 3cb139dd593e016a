//! Qala coordinator: the one address agents talk to.
//!
//! It compiles the rules once and ships them to workers, places each file on
//! a worker by rendezvous hashing of its sha256, coalesces concurrent scans
//! of the same content, checks every upload's sha256 while streaming it, and
//! keeps verdicts in a store keyed by ruleset id + sha256.

mod api;
mod cluster;
pub mod config;
pub mod placement;
mod rules;
mod spool;
pub mod store;

pub use api::valid_sha256;
pub use config::Config;

use qala_proto::v1::{cluster_server::ClusterServer, scanner_server::ScannerServer};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tracing::info;

/// The gRPC health service name that reports the verdict store.
pub const STORE_HEALTH_SERVICE: &str = "qala.v1.VerdictStore";

/// Run a coordinator on `listener` until `shutdown` resolves; in-flight
/// requests finish before this returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Take over SIGHUP before the slow start-up so it never kills us.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    info!(store = config.store, "opening verdict store");
    let store = store::Guarded::new(store::open(&config.store).await?);
    let rules = rules::RulesManager::load(config.rules.clone()).await?;
    let cluster = cluster::Cluster::new(
        rules.clone(),
        Duration::from_millis(config.heartbeat_ms.max(50)),
        Duration::from_secs(config.scan_timeout_secs.max(1)),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(rules.clone().watch(hup, Duration::from_millis(config.rules_poll_ms.max(100)), stop_rx.clone()));
    let maintainer = tokio::spawn(cluster.clone().maintain(stop_rx.clone()));
    let prober = tokio::spawn(store.clone().probe(stop_rx.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ScannerServer<api::ScannerService>>().await;
    health.set_serving::<ClusterServer<api::ClusterService>>().await;
    // `qala.v1.VerdictStore` in gRPC health: NOT_SERVING while degraded.
    let store_health = tokio::spawn({
        let (health, mut changes, mut stop) = (health.clone(), store.subscribe(), stop_rx);
        async move {
            loop {
                let status = if *changes.borrow_and_update() { ServingStatus::Serving } else { ServingStatus::NotServing };
                health.set_service_status(STORE_HEALTH_SERVICE, status).await;
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                }
            }
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(qala_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let scanner = ScannerServer::new(api::ScannerService::new(store, cluster.clone(), rules.clone(), config.max_uploads))
        .max_decoding_message_size(qala_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(qala_proto::MAX_MESSAGE_BYTES);
    let cluster_service = ClusterServer::new(api::ClusterService::new(cluster, rules));

    info!(addr = %listener.local_addr()?, "coordinator listening");
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(scanner)
        .add_service(cluster_service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
            info!("shutdown requested: finishing in-flight requests");
            health.set_not_serving::<ScannerServer<api::ScannerService>>().await;
        })
        .await;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(watcher, maintainer, prober, store_health);
    info!("coordinator stopped");
    Ok(result?)
}
