//! Starting a worker: its identity, its sandboxed scan pool, registration
//! with each coordinator, and the gRPC server; draining on shutdown.

use crate::config::Config;
use crate::error::Error;
use crate::health::{self, Health};
use crate::{identity, pool, register, sandbox, service};
use qala_proto::v1::worker_server::WorkerServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How long a worker whose join token was refused waits before it reads
/// the token file and tries again (with a health listener only).
const ENROLL_RETRY: Duration = Duration::from_secs(30);

/// Run a worker on `listener` until `shutdown` resolves. In-flight scans are
/// finished before this returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    qala_tls::install_crypto_provider();
    let local = listener.local_addr().map_err(|e| Error::Io("listener".into(), e))?;
    let mut coordinators: Vec<String> =
        config.coordinator.iter().map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
    coordinators.dedup();
    if coordinators.is_empty() {
        return Err(Error::Config("no coordinator URL given".into()));
    }
    if config.insecure {
        qala_tls::check_plaintext_bind(&local)?;
        for c in &coordinators {
            qala_tls::check_plaintext_url(c)?;
        }
    } else if let Some(c) = coordinators.iter().find(|c| !c.starts_with("https://")) {
        return Err(Error::Config(format!("coordinator URL {c} must be https:// (or run with --insecure on loopback)")));
    }
    let advertise = advertise(&config, local);
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    // Enrolling, the id is asked for: this host's name unless given.
    let asked_id = config.id.clone().unwrap_or_else(|| hostname.clone());
    if config.enroll_token_file.is_some() {
        qala_tls::pki::check_name("worker id (--id, or this host's name)", &asked_id)?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (shut_tx, mut shut_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = shut_tx.send(true);
    });
    // Health first: a probe sees why the worker is not ready yet.
    let health = Health::new(coordinators.len());
    let mut background = Vec::new();
    if let Some(addr) = &config.metrics_listen {
        let l = TcpListener::bind(addr).await.map_err(|e| Error::Io(format!("--metrics-listen {addr}"), e))?;
        background.push(tokio::spawn(health::serve(l, health.clone(), stop_rx.clone())));
    }
    info!("establishing this worker's identity");
    health.starting("establishing this worker's identity");
    let (identity, enrolled) = loop {
        let attempt = tokio::select! {
            r = identity::establish(&config, &asked_id, &config.cert_hosts) => r,
            _ = shut_rx.wait_for(|s| *s) => {
                let _ = stop_tx.send(true);
                info!("stopped before the worker's identity was established");
                return Ok(());
            }
        };
        match attempt {
            Ok(done) => break done,
            // With a health listener (a probe watches it, as under
            // Kubernetes) a refused join token is reported and tried again:
            // a Secret rotated in place is picked up without a restart.
            Err(e @ (Error::Enrollment { .. } | Error::Transport { .. })) if config.metrics_listen.is_some() => {
                error!(error = %e, retry_secs = ENROLL_RETRY.as_secs(), "enrollment failed; the join token file is read again before the next try");
                health.starting(format!("enrollment failed: {e}"));
                tokio::select! {
                    _ = tokio::time::sleep(ENROLL_RETRY) => {}
                    _ = shut_rx.wait_for(|s| *s) => {
                        let _ = stop_tx.send(true);
                        return Err(e);
                    }
                }
            }
            Err(e) => {
                let _ = stop_tx.send(true);
                return Err(e);
            }
        }
    };
    let worker_id = match &identity {
        Some(i) => {
            let id = i.worker_id()?;
            if let Some(asked) = config.id.as_ref().filter(|asked| **asked != id) {
                return Err(Error::Config(format!("--id {asked} differs from the worker id in the certificate ({id})")));
            }
            id
        }
        None => config.id.clone().unwrap_or_else(|| format!("{hostname}-{}", local.port())),
    };
    // Only coordinators (unrevoked certificates of the cluster CA) may connect.
    let server_tls = match &identity {
        Some(i) => Some(qala_tls::ServerTls::load(
            qala_tls::ServerTlsFiles { cert: i.cert(), key: i.key(), client_ca: Some(i.ca()) },
            qala_tls::ClientAuth::Required,
            i.crls.clone(),
        )?),
        None => None,
    };
    let threads = config.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));

    // Scans run in sandboxed children: check now that this machine can
    // confine them, rather than at the first file.
    let settings = sandbox::Settings::new(config.scan_child_memory_mib.saturating_mul(1 << 20))
        .map_err(|e| Error::Io("the worker's own executable".into(), e))?;
    let probe = settings.clone();
    let confinement = tokio::task::spawn_blocking(move || sandbox::probe(&probe))
        .await
        .map_err(|e| Error::Config(format!("sandbox probe: {e}")))?
        .map_err(|e| Error::Config(format!("scan children cannot be confined on this machine: {e}")))?;
    info!(
        worker_id,
        threads,
        confinement,
        memory_limit_mib = config.scan_child_memory_mib,
        "starting scan pool (one sandboxed scan child per thread)"
    );
    let pool = pool::ScanPool::start(threads, settings);
    // Two files per thread: one scanning, one arriving.
    let max_in_flight = threads * 2;
    let state = Arc::new(
        service::WorkerState::new(
            worker_id.clone(),
            pool,
            config.max_file_size,
            max_in_flight,
            identity.is_some(),
            Duration::from_secs(config.upload_stall_secs.max(1)),
        )
        .with_kept_uploads(config.upload_keep_bytes)
        .with_crls(identity.as_ref().map(|i| i.crls.clone())),
    );

    health.serving(state.clone());
    let request = qala_proto::v1::RegisterRequest {
        worker_id: worker_id.clone(),
        address: advertise.clone(),
        threads: threads as u32,
        max_in_flight: max_in_flight as u32,
        engine_version: qala_engine::ENGINE_VERSION.to_string(),
        max_file_size: config.max_file_size,
        crl_digest: String::new(),
    };
    if let Some((enrolled, lifetime)) = enrolled {
        background.push(tokio::spawn(identity::renew(enrolled, lifetime, stop_rx.clone())));
    }
    if let Some(tls) = &server_tls {
        background.push(tokio::spawn(tls.clone().watch(Duration::from_secs(2), stop_rx.clone())));
    }
    // One registration and heartbeat loop per coordinator: each keeps its
    // own view of membership and its own share of this worker's slots.
    let registrations: Vec<_> = coordinators
        .into_iter()
        .map(|coordinator| {
            info!(coordinator, advertise, "registering with coordinator");
            tokio::spawn(register::run(
                coordinator,
                request.clone(),
                state.clone(),
                health.clone(),
                stop_rx.clone(),
                identity.clone(),
            ))
        })
        .collect();

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<WorkerServer<service::WorkerService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(qala_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("gRPC reflection: {e}")))?;
    let svc = WorkerServer::new(service::WorkerService::new(state.clone()))
        .max_decoding_message_size(qala_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(qala_proto::MAX_MESSAGE_BYTES);

    info!(%local, worker_id, "worker listening");
    // Draining: stop heartbeating (the coordinator takes the worker out of
    // the ring), refuse new calls (GOAWAY: the coordinator sends those files
    // to the next worker) and let the scans in flight finish, for at most
    // the drain timeout.
    let (draining_tx, mut draining) = watch::channel(false);
    let serve = tonic::transport::Server::builder()
        .max_frame_size(Some(qala_proto::H2_MAX_FRAME_BYTES))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(svc)
        .serve_with_incoming_shutdown(qala_tls::incoming(listener, server_tls), async move {
            let _ = shut_rx.wait_for(|s| *s).await;
            info!(in_flight = state.in_flight.load(std::sync::atomic::Ordering::Relaxed), "draining: finishing in-flight scans");
            let _ = stop_tx.send(true);
            let _ = draining_tx.send(true);
            health.set_not_serving::<WorkerServer<service::WorkerService>>().await;
        });
    let drain_timeout = Duration::from_secs(config.drain_timeout_secs);
    let result = tokio::select! {
        r = serve => r,
        _ = async { let _ = draining.wait_for(|d| *d).await; tokio::time::sleep(drain_timeout).await } => {
            warn!(?drain_timeout, "drain timeout: exiting with scans in flight (the coordinator replays them)");
            Ok(())
        }
    };
    for r in registrations.into_iter().chain(background) {
        let _ = r.await;
    }
    info!("worker stopped");
    Ok(result?)
}

/// The URL coordinators dial: `--advertise`, else the first `--cert-host`,
/// else this host's name when listening on every address, else the bound
/// address.
fn advertise(config: &Config, local: std::net::SocketAddr) -> String {
    let scheme = if config.insecure { "http" } else { "https" };
    if let Some(a) = &config.advertise {
        return a.clone();
    }
    let host = match config.cert_hosts.first() {
        Some(h) => h.clone(),
        None if local.ip().is_unspecified() => gethostname::gethostname().to_string_lossy().into_owned(),
        None => return format!("{scheme}://{local}"),
    };
    let host = if host.parse::<std::net::Ipv6Addr>().is_ok() { format!("[{host}]") } else { host };
    format!("{scheme}://{host}:{}", local.port())
}
