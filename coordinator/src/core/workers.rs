//! The workers' side of the cluster: registration, heartbeats and
//! enrollment, with the checks that make a worker prove who it is.

use super::error::CoreError;
use super::shared::Shared;
use crate::audit::Audit;
use crate::auth::{Auth, Caller, Op};
use crate::cluster::Cluster;
use crate::rules::RulesManager;
use qala_proto::v1 as pb;
use qala_tls::PeerCert;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Certificate authority material for worker enrollment.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub pki_dir: PathBuf,
    pub lifetime: Duration,
}

pub struct Workers {
    cluster: Arc<Cluster>,
    auth: Arc<Auth>,
    rules: Arc<RulesManager>,
    audit: Arc<Audit>,
    /// Whether workers must prove who they are with certificates.
    tls: bool,
    enrollment: Option<Enrollment>,
}

impl Workers {
    pub fn new(s: &Shared, tls: bool, enrollment: Option<Enrollment>) -> Self {
        Self { cluster: s.cluster.clone(), auth: s.auth.clone(), rules: s.rules.clone(), audit: s.audit.clone(), tls, enrollment }
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
        match cert.worker_id() {
            Some(id) if id == claimed => Ok(()),
            Some(id) => {
                warn!(certificate = id, claimed, "a worker tried to act under another worker's id");
                Err(CoreError::Denied(format!("certificate is worker {id:?}'s, not {claimed:?}'s")))
            }
            None => Err(CoreError::Denied(format!("{what} needs a worker certificate (qala:worker:ID)"))),
        }
    }

    pub fn register(&self, cert: Option<&PeerCert>, req: pb::RegisterRequest) -> Result<pb::RegisterResponse, CoreError> {
        self.check_worker(cert, &req.worker_id, "Register")?;
        if let Some(cert) = cert.filter(|_| self.tls) {
            let host = qala_tls::url_host(&req.address).unwrap_or_default();
            if !req.address.starts_with("https://") {
                return Err(CoreError::Invalid(format!("worker address {} must be https://", req.address)));
            }
            if !cert.names_host(&host) {
                warn!(
                    worker = req.worker_id,
                    address = req.address,
                    "a worker registered an address its certificate does not name"
                );
                return Err(CoreError::Denied(format!(
                    "worker {}'s certificate does not name {host:?} (it names {})",
                    req.worker_id,
                    cert.dns.iter().cloned().chain(cert.ips.iter().map(|i| i.to_string())).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        self.cluster.register(req)?;
        Ok(pb::RegisterResponse {
            heartbeat_interval_ms: self.cluster.heartbeat_interval.as_millis() as u32,
            ruleset_id: self.rules.current().id.clone(),
        })
    }

    pub fn heartbeat(&self, cert: Option<&PeerCert>, req: &pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, CoreError> {
        self.check_worker(cert, &req.worker_id, "Heartbeat")?;
        let known = self.cluster.heartbeat(req);
        Ok(pb::HeartbeatResponse { known, ruleset_id: self.rules.current().id.clone() })
    }

    /// Sign an enrolling worker's certificate request.
    pub async fn enroll(&self, caller: &Caller, req: pb::EnrollRequest) -> Result<pb::EnrollResponse, CoreError> {
        caller.require(Op::Enroll)?;
        let Some(enrollment) = self.enrollment.clone() else {
            return Err(CoreError::FailedPrecondition(
                "this coordinator cannot enroll workers: its --tls directory has no ca-key.pem".into(),
            ));
        };
        if self.auth.worker_revoked(&req.worker_id) {
            return Err(CoreError::Denied(format!("worker {:?} is revoked", req.worker_id)));
        }
        let (id, hosts) = (req.worker_id.clone(), req.hosts.clone());
        let signed = tokio::task::spawn_blocking(move || {
            let cert = qala_tls::pki::sign_worker_csr(
                &enrollment.pki_dir,
                &req.csr_pem,
                &req.worker_id,
                &req.hosts,
                enrollment.lifetime,
            )?;
            let ca = std::fs::read_to_string(enrollment.pki_dir.join(qala_tls::pki::CA_CERT))
                .map_err(|e| qala_tls::TlsError::Config(e.to_string()))?;
            Ok::<_, qala_tls::TlsError>((cert, ca, enrollment.lifetime))
        })
        .await
        .map_err(|e| CoreError::Internal(e.to_string()))?
        .map_err(|e| CoreError::Invalid(e.to_string()))?;
        let (cert_pem, ca_pem, lifetime) = signed;
        let not_after_ms = qala_common::now_ms() + lifetime.as_millis() as i64;
        info!(worker = id, client = caller.name, "worker enrolled");
        self.audit.event("admin", Some(caller), json!({"action": "worker_enrolled", "worker_id": id, "hosts": hosts}));
        Ok(pb::EnrollResponse { cert_pem, ca_pem, not_after_ms })
    }
}
