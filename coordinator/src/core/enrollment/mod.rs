//! Worker enrollment: a `worker-enroll` join token and a certificate
//! request traded for a short-lived certificate signed by this
//! coordinator's issuing CA, and its renewal over mutual TLS with the
//! certificate held.
//!
//! The coordinator decides what a certificate says: `qala:worker:ID` and
//! only the hosts `--enroll-hosts` allows ([`hosts::HostPolicy`]), never a
//! coordinator's. An id is given to a join token only while nobody holds
//! it: not while a worker of that id is registered and heartbeating, nor
//! while an unexpired, unrevoked certificate for it exists (each one
//! signed is recorded in the store, [`IssuedCert`]; so is each one a worker
//! registers with). Renewal needs no token: the worker proves its key with
//! the certificate it holds, which the TLS layer checked against the
//! revocation lists, and gets the same id and hosts again.

pub mod hosts;

use super::error::CoreError;
use super::join::JoinLimits;
use super::revocation::{crls_for, is_revoked};
use super::shared::Shared;
use crate::audit::Audit;
use crate::auth::{Auth, Caller, Op};
use crate::cluster::Cluster;
use crate::store::Guarded;
use crate::store::records::{CoordinatorNames, IssuedCert};
use hosts::HostPolicy;
use qala_proto::v1 as pb;
use qala_tls::PeerCert;
use qala_tls::pki::{IssuingCa, Signed};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How this coordinator enrolls workers, from its flags and TLS directory.
#[derive(Clone)]
pub struct EnrollSettings {
    /// The issuing CA of the `--tls` directory; none: this coordinator does not enroll.
    pub issuing: Option<Arc<IssuingCa>>,
    /// The root CA certificate (PEM), handed to enrolled workers.
    pub ca_pem: String,
    pub lifetime: Duration,
    pub hosts: HostPolicy,
    /// The `--tls` directory: certificates made there by `pki worker`
    /// (`workers/ID/`) hold their id too.
    pub tls_dir: Option<PathBuf>,
}

pub struct Enrollment {
    store: Arc<Guarded>,
    cluster: Arc<Cluster>,
    auth: Arc<Auth>,
    audit: Arc<Audit>,
    join: Arc<JoinLimits>,
    settings: Option<EnrollSettings>,
}

impl Enrollment {
    pub fn new(s: &Shared, settings: Option<EnrollSettings>, join: Arc<JoinLimits>) -> Self {
        Self { store: s.store.clone(), cluster: s.cluster.clone(), auth: s.auth.clone(), audit: s.audit.clone(), join, settings }
    }

    fn signer(&self) -> Result<(&EnrollSettings, Arc<IssuingCa>), CoreError> {
        let settings = self
            .settings
            .as_ref()
            .ok_or_else(|| CoreError::FailedPrecondition("this coordinator cannot enroll workers: it runs without TLS".into()))?;
        let ca = settings.issuing.clone().ok_or_else(|| {
            CoreError::FailedPrecondition(format!(
                "this coordinator cannot enroll workers: its --tls directory has no {} and {}",
                qala_tls::pki::ISSUING_CERT,
                qala_tls::pki::ISSUING_KEY
            ))
        })?;
        Ok((settings, ca))
    }

    /// Sign an enrolling worker's certificate request.
    pub async fn enroll(&self, caller: &Caller, req: pb::EnrollRequest) -> Result<pb::EnrollResponse, CoreError> {
        caller.require(Op::Enroll)?;
        let (settings, ca) = self.signer()?;
        let id = req.worker_id.clone();
        qala_tls::pki::check_name("worker id", &id).map_err(|e| CoreError::Invalid(e.to_string()))?;
        if self.auth.worker_revoked(&id) {
            return Err(CoreError::Denied(format!("worker {id:?} is revoked")));
        }
        let hosts = self.allowed_hosts(settings, &req.hosts).await?;
        self.id_free(settings, &id).await?;
        self.join.spend(caller).await?;
        let signed = self.sign(&ca, settings, req.csr_pem, &id, &hosts).await?;
        info!(worker = id, client = caller.name, serial = signed.serial, "worker enrolled");
        self.audit.event(
            "admin",
            Some(caller),
            json!({"action": "worker_enrolled", "worker_id": id, "hosts": hosts, "serial": signed.serial}),
        );
        Ok(self.answer(settings, signed))
    }

    /// Renew the certificate `cert` (verified by the handshake) proves.
    pub async fn renew(&self, cert: Option<&PeerCert>, req: pb::RenewRequest) -> Result<pb::EnrollResponse, CoreError> {
        let cert = cert.ok_or_else(|| {
            CoreError::Unauthenticated(
                "Renew needs the worker's current certificate (mutual TLS); enroll with a token first".into(),
            )
        })?;
        let id = cert.worker_id().ok_or_else(|| CoreError::Denied("Renew is for worker certificates (qala:worker:ID)".into()))?;
        let (settings, ca) = self.signer()?;
        if self.auth.worker_revoked(&id) || self.auth.crls().revokes(cert) {
            return Err(CoreError::Denied(format!("worker {id:?} (certificate {}) is revoked", cert.serial)));
        }
        let held: Vec<String> = cert.dns.iter().cloned().chain(cert.ips.iter().map(|i| i.to_string())).collect();
        let hosts = self.allowed_hosts(settings, &held).await?;
        let signed = self.sign(&ca, settings, req.csr_pem, &id, &hosts).await?;
        info!(worker = id, old_serial = cert.serial, serial = signed.serial, "worker certificate renewed");
        self.audit.event(
            "admin",
            None,
            json!({"action": "worker_renewed", "worker_id": id, "old_serial": cert.serial, "serial": signed.serial}),
        );
        Ok(self.answer(settings, signed))
    }

    /// `asked`, each checked against `--enroll-hosts` and the coordinators' names.
    async fn allowed_hosts(&self, settings: &EnrollSettings, asked: &[String]) -> Result<Vec<String>, CoreError> {
        if asked.len() > 16 {
            return Err(CoreError::Invalid("at most 16 hosts per certificate".into()));
        }
        let mut hosts: Vec<String> = Vec::new();
        if asked.is_empty() {
            return Ok(hosts);
        }
        let coordinators: Vec<String> = self.store.all::<CoordinatorNames>().await?.into_iter().flat_map(|c| c.hosts).collect();
        for h in asked {
            settings.hosts.check(h, &coordinators).map_err(|why| {
                warn!(host = h, why, "enrollment asked for a host it may not have");
                CoreError::Denied(why)
            })?;
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        Ok(hosts)
    }

    /// Refuse `id` while a worker holds it: live here, or with a
    /// certificate that is still valid.
    async fn id_free(&self, settings: &EnrollSettings, id: &str) -> Result<(), CoreError> {
        if self.cluster.is_live(id) {
            return Err(CoreError::AlreadyExists(format!(
                "worker id {id:?} is registered and heartbeating; a join token cannot take it"
            )));
        }
        let now = qala_common::now_ms();
        let crls = self.auth.crls();
        for c in self.store.all::<IssuedCert>().await? {
            if c.worker_id == id && c.not_after_ms > now && !is_revoked(&self.store, crls, &c.serial).await? {
                return Err(CoreError::AlreadyExists(format!(
                    "worker id {id:?} holds a certificate valid until {} (serial {}): use it, let it expire, or revoke it \
                     (qala-coordinator pki revoke --serial {})",
                    crate::auth::utc(c.not_after_ms),
                    c.serial,
                    c.serial
                )));
            }
        }
        // Made by hand in this coordinator's PKI directory.
        if let Some(dir) = &settings.tls_dir {
            let path = dir.join("workers").join(id).join(qala_tls::pki::WORKER_CERT);
            if let Ok(certs) = qala_tls::load_certs(&path)
                && let Ok(cert) = PeerCert::parse(&certs[0])
                && cert.not_after * 1000 > now
                && !is_revoked(&self.store, crls, &cert.serial).await?
            {
                return Err(CoreError::AlreadyExists(format!(
                    "worker id {id:?} has a certificate made by `pki worker` ({}), valid until {}",
                    path.display(),
                    crate::auth::utc(cert.not_after * 1000)
                )));
            }
        }
        Ok(())
    }

    async fn sign(
        &self,
        ca: &Arc<IssuingCa>,
        settings: &EnrollSettings,
        csr: String,
        id: &str,
        hosts: &[String],
    ) -> Result<Signed, CoreError> {
        let (ca2, id2, hosts2, lifetime) = (ca.clone(), id.to_string(), hosts.to_vec(), settings.lifetime);
        let signed = tokio::task::spawn_blocking(move || ca2.sign_worker(&csr, &id2, &hosts2, lifetime))
            .await
            .map_err(|e| CoreError::Internal(e.to_string()))?
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        let record = IssuedCert {
            serial: signed.serial.clone(),
            issuer: ca.name.clone(),
            worker_id: id.to_string(),
            hosts: hosts.to_vec(),
            issued_ms: qala_common::now_ms(),
            not_after_ms: signed.not_after_ms,
            by_root: false,
        };
        self.store.put(&record).await?;
        Ok(signed)
    }

    /// The certificate, the root, and every revocation list in force (the
    /// worker's listener takes no coordinator's certificate without them).
    fn answer(&self, settings: &EnrollSettings, signed: Signed) -> pb::EnrollResponse {
        pb::EnrollResponse {
            cert_pem: signed.chain_pem,
            ca_pem: settings.ca_pem.clone(),
            not_after_ms: signed.not_after_ms,
            crls: crls_for(self.auth.crls(), ""),
            serial: signed.serial,
        }
    }
}
