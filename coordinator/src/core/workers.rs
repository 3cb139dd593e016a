//! The workers' side of the cluster: registration and heartbeats, with the
//! checks that make a worker prove who it is, and the revocation lists
//! handed to workers with their answers, and (with a shared store) the
//! registrations every coordinator shares, so that a worker registered
//! with one replica behind a Service is dispatched to by all of them.
//! Enrollment is in [`super::enrollment`].

use super::error::CoreError;
use super::revocation::crls_for;
use super::shared::Shared;
use crate::auth::Auth;
use crate::cluster::{Cluster, Load};
use crate::rules::RulesManager;
use crate::store::Guarded;
use crate::store::records::{IssuedCert, SharedWorker};
use qala_proto::v1 as pb;
use qala_tls::PeerCert;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::watch;
use tracing::{debug, warn};

pub struct Workers {
    cluster: Arc<Cluster>,
    auth: Arc<Auth>,
    rules: Arc<RulesManager>,
    store: Arc<Guarded>,
    /// Whether workers must prove who they are with certificates.
    tls: bool,
}

impl Workers {
    pub fn new(s: &Shared, tls: bool) -> Self {
        Self { cluster: s.cluster.clone(), auth: s.auth.clone(), rules: s.rules.clone(), store: s.store.clone(), tls }
    }

    /// The worker a certificate proves, for `Register` and `Heartbeat`: with
    /// TLS, a worker certificate of the cluster CA naming `claimed`, not
    /// revoked. Without TLS (`--insecure`, loopback only) nobody is checked.
    fn check_worker(&self, cert: Option<&PeerCert>, claimed: &str, what: &str) -> Result<(), CoreError> {
        if self.auth.worker_revoked(claimed) {
            warn!(worker = claimed, "refused a revoked worker");
            return Err(CoreError::Denied(format!("worker {claimed:?} is revoked")));
        }
        if !self.tls {
            return Ok(());
        }
        let Some(cert) = cert else {
            return Err(CoreError::Unauthenticated(format!("{what} needs a worker certificate of the cluster CA")));
        };
        // Revoked after this connection's handshake.
        if self.auth.crls().revokes(cert) {
            warn!(worker = claimed, serial = cert.serial, "refused a revoked certificate");
            return Err(CoreError::Denied(format!("certificate {} is revoked", cert.serial)));
        }
        match cert.worker_id() {
            Some(id) if id == claimed => Ok(()),
            Some(id) => {
                warn!(certificate = id, claimed, "a worker tried to act under another worker's id");
                Err(CoreError::Denied(format!("certificate is worker {id:?}'s, not {claimed:?}'s")))
            }
            None => Err(CoreError::Denied(format!("{what} needs a worker certificate (qala:worker:ID)"))),
        }
    }

    /// A worker registers: the id is its certificate's; the address is
    /// only where the coordinator dials it, and requires that worker's
    /// certificate there (a certificate need not name the address).
    pub async fn register(&self, cert: Option<&PeerCert>, req: pb::RegisterRequest) -> Result<pb::RegisterResponse, CoreError> {
        self.check_worker(cert, &req.worker_id, "Register")?;
        if self.tls && !req.address.starts_with("https://") {
            return Err(CoreError::Invalid(format!("worker address {} must be https://", req.address)));
        }
        if let Some(cert) = cert.filter(|_| self.tls) {
            self.note_certificate(cert, &req.worker_id).await;
        }
        let digest = req.crl_digest.clone();
        self.cluster.register(req)?;
        Ok(pb::RegisterResponse {
            heartbeat_interval_ms: self.cluster.heartbeat_interval.as_millis() as u32,
            ruleset_id: self.rules.current().id.clone(),
            crls: crls_for(self.auth.crls(), &digest),
        })
    }

    /// Record the certificate a worker registered with (one `pki worker`
    /// made, say), so its id is not given to a join token while it is valid.
    async fn note_certificate(&self, cert: &PeerCert, id: &str) {
        match self.store.get::<IssuedCert>(&cert.serial).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let record = IssuedCert {
                    serial: cert.serial.clone(),
                    issuer: cert.issuer.clone(),
                    worker_id: id.to_string(),
                    hosts: cert.dns.iter().cloned().chain(cert.ips.iter().map(|i| i.to_string())).collect(),
                    issued_ms: cert.not_before * 1000,
                    not_after_ms: cert.not_after * 1000,
                    by_root: self.auth.crls().is_root_name(&cert.issuer),
                };
                if let Err(e) = self.store.put(&record).await {
                    debug!(error = %e, "the registered certificate was not recorded");
                }
            }
            Err(e) => debug!(error = %e, "the registered certificate was not looked up"),
        }
    }

    pub fn heartbeat(&self, cert: Option<&PeerCert>, req: &pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, CoreError> {
        self.check_worker(cert, &req.worker_id, "Heartbeat")?;
        let known = self.cluster.heartbeat(req);
        Ok(pb::HeartbeatResponse {
            known,
            ruleset_id: self.rules.current().id.clone(),
            crls: crls_for(self.auth.crls(), &req.crl_digest),
        })
    }
}

impl Workers {
    /// With a shared store, until `stop`: every heartbeat interval, write
    /// the workers registered here, and take in those registered with the
    /// other coordinators (a revoked one never). Nothing with the
    /// embedded store: one coordinator has it.
    pub async fn share(&self, mut stop: watch::Receiver<bool>) {
        if !self.store.shared() {
            return;
        }
        let every = self.cluster.heartbeat_interval;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            let own: Vec<SharedWorker> = self
                .cluster
                .own()
                .iter()
                .map(|w| {
                    let heartbeat_ms = w.last_heartbeat_ms.load(Ordering::Relaxed) as i64;
                    SharedWorker {
                        registration: Some(w.registration.clone()),
                        heartbeat_ms,
                        until_ms: heartbeat_ms + self.cluster.dead_after.as_millis() as i64,
                        in_flight: w.in_flight.load(Ordering::Relaxed),
                        scanned: w.scanned.load(Ordering::Relaxed),
                        bytes_scanned: w.bytes_scanned.load(Ordering::Relaxed),
                        p99_us: w.p99_us.load(Ordering::Relaxed),
                    }
                })
                .collect();
            if !own.is_empty()
                && let Err(e) = self.store.put_all(&own).await
            {
                debug!(error = %e, "workers registered here not shared");
            }
            let all = match self.store.all::<SharedWorker>().await {
                Ok(all) => all,
                Err(e) => {
                    debug!(error = %e, "workers of the other coordinators not read");
                    continue;
                }
            };
            for w in all {
                let Some(reg) = w.registration else { continue };
                if self.auth.worker_revoked(&reg.worker_id) || reg.engine_version != qala_engine::ENGINE_VERSION {
                    continue;
                }
                let load = Load { in_flight: w.in_flight, scanned: w.scanned, bytes_scanned: w.bytes_scanned, p99_us: w.p99_us };
                self.cluster.adopt(reg, w.heartbeat_ms, load);
            }
        }
    }
}
