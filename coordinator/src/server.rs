//! Starting a coordinator: its listeners, the core, the front doors and
//! the background tasks, in that order, each step announced in the log; and
//! stopping it, in-flight requests finished first.

use crate::core::enrollment::EnrollSettings;
use crate::core::enrollment::hosts::HostPolicy;
use crate::core::shared::Shared;
use crate::core::upload::UploadSettings;
use crate::core::{self, Core};
use crate::error::Error;
use crate::store::records::CoordinatorNames;
use crate::{audit, auth, clamd, cluster, config::Config, grpc, http, rules, siem, store};
use qala_proto::v1::{
    admin_server::AdminServer, agents_server::AgentsServer, cluster_server::ClusterServer, hunts_server::HuntsServer,
    scanner_server::ScannerServer,
};
use qala_tls::{ClientAuth, CrlSet, PeerCert, ServerTls, ServerTlsFiles, pki};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tracing::info;

/// The gRPC health service name that reports the verdict store.
pub const STORE_HEALTH_SERVICE: &str = "qala.v1.VerdictStore";

/// The coordinator's two sockets: agents/analysts/admins, and workers.
pub struct Listeners {
    pub api: TcpListener,
    pub cluster: TcpListener,
}

/// HTTP/2 keep-alive: a dead client's connection (and its streams) goes away.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Run a coordinator on `listeners` until `shutdown` resolves; in-flight
/// requests finish before this returns.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    qala_tls::install_crypto_provider();
    // Take over SIGHUP before the slow start-up so it never kills us.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let rules_path = config.rules.clone().ok_or_else(|| Error::Config("--rules is required".into()))?;
    if config.tls.is_none() && !config.insecure {
        return Err(Error::Config(
            "give --tls DIR (made by `qala-coordinator pki init DIR`), or --insecure for plain text on loopback".into(),
        ));
    }
    let local = |l: &TcpListener| l.local_addr().map_err(|e| Error::Io("listener".into(), e));
    if config.insecure {
        qala_tls::check_plaintext_bind(&local(&listeners.api)?)?;
        qala_tls::check_plaintext_bind(&local(&listeners.cluster)?)?;
    }

    info!("loading TLS material");
    // The revocation lists every TLS endpoint here follows: none until the
    // store (or the auth cache) gives them, and no certificate taken till then.
    let crls = match &config.tls {
        Some(dir) => CrlSet::with_roots(&dir.join(pki::CA_CERT))?,
        None => CrlSet::new(),
    };
    let tls = match &config.tls {
        Some(dir) => {
            let files = ServerTlsFiles {
                cert: dir.join(pki::COORDINATOR_CERT),
                key: dir.join(pki::COORDINATOR_KEY),
                client_ca: Some(dir.join(pki::CA_CERT)),
            };
            // The agents' and REST listeners may present a web-PKI certificate.
            let public = match (&config.public_cert, &config.public_key) {
                (Some(cert), Some(key)) => ServerTlsFiles { cert: cert.clone(), key: key.clone(), ..files.clone() },
                _ => files.clone(),
            };
            // Clients may present a certificate (`pki client`) instead of a token.
            let api = ServerTls::load(public.clone(), ClientAuth::Optional, crls.clone())?;
            // Workers present certificates; an enrolling one has none yet.
            let cluster = ServerTls::load(files.clone(), ClientAuth::Optional, crls.clone())?;
            let http = ServerTls::load_http(public, ClientAuth::Optional, crls.clone())?;
            let client = cluster::WorkerTls {
                ca: dir.join(pki::CA_CERT),
                cert: files.cert.clone(),
                key: files.key.clone(),
                crls: crls.clone(),
            };
            let own = PeerCert::parse(&qala_tls::load_certs(&files.cert)?[0])?;
            let own_hosts: Vec<String> = own.dns.iter().cloned().chain(own.ips.iter().map(|i| i.to_string())).collect();
            let enrollment = EnrollSettings {
                issuing: pki::IssuingCa::load(dir)?.map(Arc::new),
                ca_pem: std::fs::read_to_string(dir.join(pki::CA_CERT))
                    .map_err(|e| Error::Io(dir.join(pki::CA_CERT).display().to_string(), e))?,
                lifetime: Duration::from_secs(config.enroll_cert_secs.max(10)),
                hosts: HostPolicy::parse(&config.enroll_hosts, &own_hosts).map_err(Error::Config)?,
                tls_dir: Some(dir.clone()),
            };
            let name = match own.role() {
                Some(qala_tls::CertRole::Coordinator(n)) => n,
                _ => return Err(Error::Config(format!("{} is not a coordinator certificate", files.cert.display()))),
            };
            Some((api, cluster, client, enrollment, http, CoordinatorNames { name, hosts: own_hosts, started_ms: 0 }))
        }
        None => None,
    };

    info!(store = config.store, "opening verdict store");
    let store = store::Guarded::new(store::open(&config.store_auth.spec(&config.store)?).await?);
    store.set_keep(config.retention.keep());
    let rules = rules::RulesManager::load(rules_path, config.policy.limits()).await?;
    let cluster = cluster::Cluster::new(
        rules.clone(),
        Duration::from_millis(config.heartbeat_ms.max(50)),
        Duration::from_secs(config.scan_timeout_secs.max(1)),
        tls.as_ref().map(|t| t.2.clone()),
    );
    info!("loading client tokens and revocation lists");
    let auth = auth::Auth::start(store.clone(), Some(config.auth_cache.clone()), crls.clone()).await;
    let audit = audit::Audit::open(&config.audit_log).map_err(|e| Error::Io(format!("audit log {}", config.audit_log), e))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let siem = siem::Siem::start(
        &siem::SiemConfig {
            syslog: config.siem_syslog.clone(),
            webhook: config.siem_webhook.clone(),
            ca: config.siem_ca.clone(),
            queue: config.siem_queue,
        },
        stop_rx.clone(),
    )?;
    let core = Arc::new(Core::new(
        Shared::new(store.clone(), cluster.clone(), rules.clone(), auth.clone(), audit, siem, config.ioc_write_rate),
        core::Settings {
            uploads: UploadSettings {
                max_uploads: config.max_uploads,
                client_max_uploads: config.client_max_uploads,
                client_bytes_per_sec: config.client_max_bytes_per_sec,
                spool_max: config.spool_max_bytes,
                spool_memory: config.spool_memory_bytes,
                spool_keep: config.spool_keep_bytes,
                upload_stall: Duration::from_secs(config.upload_stall_secs.max(1)),
                max_file_size: config.max_file_size,
            },
            tls: tls.is_some(),
            enrollment: tls.as_ref().map(|t| t.3.clone()),
            join_per_minute: config.enroll_rate,
            actions_per_minute: config.agent_actions_rate,
            sightings: config.retention.sightings(),
            hunts: config.retention.hunts(),
            sessions: config.retention.sessions(),
        },
    ));
    if let (Some(t), Some(dir)) = (&tls, &config.tls) {
        // This coordinator's names (no enrolled certificate may carry one),
        // the root's list from the TLS directory, and this coordinator's own.
        let names = CoordinatorNames { started_ms: qala_common::now_ms(), ..t.5.clone() };
        if let Err(e) = store.put(&names).await {
            tracing::warn!(error = %e, "this coordinator's names were not stored");
        }
        core.revocation().publish_file(&dir.join(pki::CRL)).await;
        core.revocation().sync().await;
        let _ = auth.refresh().await;
        if !crls.known() {
            tracing::warn!(
                "no certificate revocation list known (the store has none, or does not answer, and the auth cache has none): \
                 certificates (workers, client certificates) are refused until one is"
            );
        }
    }

    let clamd = clamd::bind(&config.clamd).await?;
    let http_listener = match &config.http_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.map_err(|e| Error::Io(format!("--http-listen {addr}"), e))?;
            if config.insecure {
                qala_tls::check_plaintext_bind(&local(&l)?)?;
            }
            Some(l)
        }
        None => None,
    };
    let metrics_listener = match &config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| Error::Io(format!("--metrics-listen {addr}"), e))?),
        None => None,
    };
    let mut tasks = vec![
        tokio::spawn(clamd.serve(core.clone(), stop_rx.clone())),
        tokio::spawn(core.iocs().clone().keep_fresh(stop_rx.clone())),
        tokio::spawn(core.sightings().clone().run(stop_rx.clone())),
        tokio::spawn(core.notices().clone().run(stop_rx.clone())),
        tokio::spawn(core.history().clone().run(stop_rx.clone())),
        tokio::spawn({
            // Live uploads first: a hunt asks for nothing while they fill
            // half the upload slots.
            let (c, half) = (core.clone(), config.max_uploads.div_ceil(2).max(1));
            core.hunts().clone().run(move || c.uploads().in_progress() >= half, stop_rx.clone())
        }),
        tokio::spawn({
            let (tls, state, stop) = (tls.as_ref().map(|t| t.4.clone()), http::AppState { core: core.clone() }, stop_rx.clone());
            let max_body = usize::try_from(config.max_file_size).unwrap_or(usize::MAX);
            async move {
                if let Some(l) = http_listener {
                    http::serve(l, tls, state, max_body, stop).await
                }
            }
        }),
        tokio::spawn({
            let (core, stop) = (core.clone(), stop_rx.clone());
            async move {
                if let Some(l) = metrics_listener {
                    http::health::serve(l, core, stop).await
                }
            }
        }),
        tokio::spawn(store.clone().purge_feed(config.retention.detections(), stop_rx.clone())),
        tokio::spawn(rules.clone().watch(hup, Duration::from_millis(config.rules_poll_ms.max(100)), stop_rx.clone())),
        tokio::spawn(cluster.clone().maintain(stop_rx.clone())),
        tokio::spawn({
            let (core, stop) = (core.clone(), stop_rx.clone());
            async move { core.workers().share(stop).await }
        }),
        tokio::spawn(store.clone().probe(stop_rx.clone())),
        tokio::spawn({
            let cluster = cluster.clone();
            auth.keep_fresh(Duration::from_millis(config.auth_refresh_ms.max(100)), stop_rx.clone(), move |id| cluster.evict(id))
        }),
        tokio::spawn({
            let (core, every, mut stop) = (core.clone(), Duration::from_millis(config.auth_refresh_ms.max(100)), stop_rx.clone());
            let root_list = config.tls.as_ref().map(|d| d.join(pki::CRL));
            async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {
                            if let Some(file) = &root_list {
                                core.revocation().publish_file_once(file).await;
                            }
                            core.revocation().sync().await;
                        }
                        _ = stop.changed() => return,
                    }
                }
            }
        }),
    ];
    if let Some((api, cl, _, _, http, _)) = &tls {
        tasks.push(tokio::spawn(http.clone().watch(Duration::from_secs(2), stop_rx.clone())));
        tasks.push(tokio::spawn(api.clone().watch(Duration::from_secs(2), stop_rx.clone())));
        tasks.push(tokio::spawn(cl.clone().watch(Duration::from_secs(2), stop_rx.clone())));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ScannerServer<grpc::ScannerService>>().await;
    health.set_serving::<ClusterServer<grpc::ClusterService>>().await;
    // `qala.v1.VerdictStore` in gRPC health: NOT_SERVING while degraded.
    tasks.push(tokio::spawn({
        let (health, mut changes, mut stop) = (health.clone(), store.subscribe(), stop_rx.clone());
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
    }));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(qala_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("gRPC reflection: {e}")))?;
    // Each call's credentials are checked before its message is decoded.
    let admission = grpc::Admission::new(core.clone());
    let scanner = tonic::service::interceptor::InterceptedService::new(
        ScannerServer::new(grpc::ScannerService::new(core.clone()))
            .max_decoding_message_size(qala_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(qala_proto::MAX_MESSAGE_BYTES),
        admission.clone(),
    );
    let admin = tonic::service::interceptor::InterceptedService::new(
        AdminServer::new(grpc::AdminService::new(core.clone()))
            .max_decoding_message_size(qala_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(qala_proto::MAX_MESSAGE_BYTES),
        admission.clone(),
    );
    let agents = tonic::service::interceptor::InterceptedService::new(
        AgentsServer::new(grpc::AgentsService::new(core.clone())),
        admission.clone(),
    );
    let hunts =
        tonic::service::interceptor::InterceptedService::new(HuntsServer::new(grpc::HuntsService::new(core.clone())), admission);
    let cluster_service = ClusterServer::new(grpc::ClusterService::new(core.clone()));

    // One shutdown for both servers.
    let (down_tx, down_rx) = watch::channel(false);
    tokio::spawn({
        let (health, core) = (health.clone(), core.clone());
        async move {
            shutdown.await;
            info!("shutdown requested: finishing in-flight requests");
            health.set_not_serving::<ScannerServer<grpc::ScannerService>>().await;
            core.notices().close_streams();
            let _ = down_tx.send(true);
        }
    });
    let down = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|d| *d).await;
    };
    let server = || {
        tonic::transport::Server::builder()
            .max_concurrent_streams(config.max_streams_per_connection.max(1))
            .max_frame_size(Some(qala_proto::API_H2_MAX_FRAME_BYTES))
            .http2_keepalive_interval(Some(KEEPALIVE))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
    };
    info!(addr = %local(&listeners.api)?, tls = tls.is_some(), "coordinator listening");
    info!(addr = %local(&listeners.cluster)?, "cluster listener (workers) listening");
    let api = server()
        .add_service(health_service.clone())
        .add_service(reflection)
        .add_service(scanner)
        .add_service(admin)
        .add_service(agents)
        .add_service(hunts)
        .serve_with_incoming_shutdown(
            qala_tls::incoming(listeners.api, tls.as_ref().map(|t| t.0.clone())),
            down(down_rx.clone()),
        );
    let cluster_server = server()
        .add_service(health_service)
        .add_service(cluster_service)
        .serve_with_incoming_shutdown(qala_tls::incoming(listeners.cluster, tls.as_ref().map(|t| t.1.clone())), down(down_rx));
    let (a, c) = tokio::join!(api, cluster_server);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    info!("coordinator stopped");
    a?;
    c?;
    Ok(())
}
