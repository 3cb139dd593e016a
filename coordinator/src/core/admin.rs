//! Administration (tokens, rules, worker revocation) and the workers' side
//! of the cluster (registration, heartbeats, enrollment), with the checks
//! that make a worker prove who it is.

use super::Core;
use crate::auth::{self, Caller, Op, Role};
use qala_proto::v1 as pb;
use qala_tls::PeerCert;
use serde_json::json;
use tonic::Status;
use tracing::{info, warn};

fn store_error(e: crate::store::StoreError) -> Status {
    Status::unavailable(format!("verdict store: {e}"))
}

impl Core {
    pub async fn add_token(&self, caller: &Caller, name: &str, role: &str) -> Result<pb::AddTokenResponse, Status> {
        caller.require(Op::Admin)?;
        let role = Role::parse(role).map_err(Status::invalid_argument)?;
        let (token, mut record) = auth::add_token(&self.store, name, role).await?;
        let _ = self.auth.refresh().await;
        self.audit.event("admin", Some(caller), json!({"action": "token_added", "token_name": name, "token_role": role.label()}));
        record.sha256.clear();
        Ok(pb::AddTokenResponse { token, record: Some(record) })
    }

    pub async fn list_tokens(&self, caller: &Caller) -> Result<pb::ListTokensResponse, Status> {
        caller.require(Op::Admin)?;
        let mut tokens = self.store.tokens().await.map_err(store_error)?;
        tokens.sort_by(|a, b| a.name.cmp(&b.name));
        for t in &mut tokens {
            t.sha256.clear();
        }
        Ok(pb::ListTokensResponse { tokens })
    }

    pub async fn revoke_token(&self, caller: &Caller, name: &str) -> Result<pb::RevokeTokenResponse, Status> {
        caller.require(Op::Admin)?;
        let revoked = self.store.delete_token(name).await.map_err(store_error)?;
        let _ = self.auth.refresh().await;
        self.audit.event("admin", Some(caller), json!({"action": "token_revoked", "token_name": name, "existed": revoked}));
        Ok(pb::RevokeTokenResponse { revoked })
    }

    pub async fn reload_rules(&self, caller: &Caller) -> Result<pb::ReloadRulesResponse, Status> {
        caller.require(Op::Admin)?;
        let result = self.rules.reload().await;
        let ruleset_id = self.rules.current().id.clone();
        let (changed, errors) = match result {
            Ok(changed) => (changed, Vec::new()),
            Err(qala_engine::RulesError::Compile(list)) => (
                false,
                list.iter()
                    .map(|e| pb::RuleFileError { path: e.path.display().to_string(), message: e.message.clone() })
                    .collect(),
            ),
            Err(e) => (false, vec![pb::RuleFileError { path: String::new(), message: e.to_string() }]),
        };
        self.audit.event(
            "admin",
            Some(caller),
            json!({"action": "rules_reloaded", "ruleset_id": ruleset_id, "changed": changed, "errors": errors.len()}),
        );
        Ok(pb::ReloadRulesResponse { ruleset_id, changed, errors })
    }

    /// Revoke worker `id`, or the client certificate name `id` if `client`.
    pub async fn revoke(&self, caller: &Caller, id: &str, client: bool) -> Result<pb::RevokeWorkerResponse, Status> {
        caller.require(Op::Admin)?;
        qala_tls::pki::check_name(if client { "client name" } else { "worker id" }, id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let key = if client { auth::client_revocation_key(id) } else { id.to_string() };
        self.store.revoke_worker(&key, crate::rules::now_ms()).await.map_err(store_error)?;
        self.auth.note_revoked(&key);
        if client {
            self.audit.event("admin", Some(caller), json!({"action": "client_certificate_revoked", "client": id}));
        } else {
            self.cluster.evict(id);
            self.audit.event("admin", Some(caller), json!({"action": "worker_revoked", "worker_id": id}));
        }
        Ok(pb::RevokeWorkerResponse {})
    }

    /// The worker a certificate proves, for `Register` and `Heartbeat`: with
    /// TLS, a worker certificate of the cluster CA naming `claimed`, not
    /// revoked. Without TLS (`--insecure`, loopback only) nobody is checked.
    fn check_worker(&self, cert: Option<&PeerCert>, claimed: &str, what: &str) -> Result<(), Status> {
        if self.auth.worker_revoked(claimed) {
            warn!(worker = claimed, "refused a revoked worker");
            return Err(Status::permission_denied(format!("worker {claimed:?} is revoked")));
        }
        if !self.tls {
            return Ok(());
        }
        let Some(cert) = cert else {
            return Err(Status::unauthenticated(format!("{what} needs a worker certificate of the cluster CA")));
        };
        match cert.worker_id() {
            Some(id) if id == claimed => Ok(()),
            Some(id) => {
                warn!(certificate = id, claimed, "a worker tried to act under another worker's id");
                Err(Status::permission_denied(format!("certificate is worker {id:?}'s, not {claimed:?}'s")))
            }
            None => Err(Status::permission_denied(format!("{what} needs a worker certificate (qala:worker:ID)"))),
        }
    }

    pub fn register_worker(&self, cert: Option<&PeerCert>, req: pb::RegisterRequest) -> Result<pb::RegisterResponse, Status> {
        self.check_worker(cert, &req.worker_id, "Register")?;
        if let Some(cert) = cert.filter(|_| self.tls) {
            let host = qala_tls::url_host(&req.address).unwrap_or_default();
            if !req.address.starts_with("https://") {
                return Err(Status::invalid_argument(format!("worker address {} must be https://", req.address)));
            }
            if !cert.names_host(&host) {
                warn!(
                    worker = req.worker_id,
                    address = req.address,
                    "a worker registered an address its certificate does not name"
                );
                return Err(Status::permission_denied(format!(
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

    pub fn heartbeat(&self, cert: Option<&PeerCert>, req: &pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, Status> {
        self.check_worker(cert, &req.worker_id, "Heartbeat")?;
        let known = self.cluster.heartbeat(req);
        Ok(pb::HeartbeatResponse { known, ruleset_id: self.rules.current().id.clone() })
    }

    /// Sign an enrolling worker's certificate request.
    pub async fn enroll(&self, caller: &Caller, req: pb::EnrollRequest) -> Result<pb::EnrollResponse, Status> {
        caller.require(Op::Enroll)?;
        let Some(enrollment) = self.enrollment.clone() else {
            return Err(Status::failed_precondition(
                "this coordinator cannot enroll workers: its --tls directory has no ca-key.pem",
            ));
        };
        if self.auth.worker_revoked(&req.worker_id) {
            return Err(Status::permission_denied(format!("worker {:?} is revoked", req.worker_id)));
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
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (cert_pem, ca_pem, lifetime) = signed;
        let not_after_ms = crate::rules::now_ms() + lifetime.as_millis() as i64;
        info!(worker = id, client = caller.name, "worker enrolled");
        self.audit.event("admin", Some(caller), json!({"action": "worker_enrolled", "worker_id": id, "hosts": hosts}));
        Ok(pb::EnrollResponse { cert_pem, ca_pem, not_after_ms })
    }
}
