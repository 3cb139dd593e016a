//! Revocation: of worker ids and client certificate names (refused by the
//! coordinators from then on), and of certificates by serial, at the TLS
//! layer, through revocation lists.
//!
//! Each issuer has one list, signed by its own key: the root's is made by
//! `pki revoke` where the root is kept and published here
//! ([`Revocation::publish`], or found in the `--tls` directory at start);
//! each coordinator makes its issuing CA's list from the serials revoked in
//! the store ([`RevokedCert`]) and stores it ([`Revocation::sync`]). Every
//! coordinator reads every stored list ([`crate::auth::Auth::refresh`]),
//! hands them to workers with heartbeats and to agents at check-in
//! ([`crls_for`]); every TLS endpoint follows them.

use super::error::CoreError;
use super::shared::Shared;
use crate::audit::Audit;
use crate::auth::{self, Auth, Caller, Op};
use crate::cluster::Cluster;
use crate::store::records::{CrlRecord, IssuedCert, RevokedCert};
use crate::store::{Guarded, Revoked};
use qala_proto::v1 as pb;
use qala_tls::pki::IssuingCa;
use qala_tls::{Crl, CrlSet};
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// The lists to send a worker or agent that holds lists of digest `held`:
/// none when it holds these.
pub fn crls_for(crls: &CrlSet, held: &str) -> Vec<Vec<u8>> {
    if crls.known() && crls.digest() != held { crls.ders() } else { Vec::new() }
}

/// Whether `serial` is revoked: on a list in force, or in the store (not
/// yet on its issuer's list).
pub async fn is_revoked(store: &Guarded, crls: &CrlSet, serial: &str) -> Result<bool, CoreError> {
    if crls.lists().iter().any(|l| l.serials.iter().any(|s| s == serial)) {
        return Ok(true);
    }
    Ok(store.get::<RevokedCert>(serial).await?.is_some())
}

/// Put `certs` on their issuers' lists, in the store (each coordinator's
/// list follows within a refresh): the serials a coordinator's list will
/// carry, and those only the root's list can (made by `pki worker`).
pub async fn revoke_in_store(store: &Guarded, certs: &[IssuedCert]) -> Result<pb::RevokeWorkerResponse, CoreError> {
    let mut answer = pb::RevokeWorkerResponse::default();
    for c in certs {
        if c.by_root {
            answer.root_serials.push(c.serial.clone());
            continue;
        }
        let record = RevokedCert {
            serial: c.serial.clone(),
            issuer: c.issuer.clone(),
            subject: format!("worker:{}", c.worker_id),
            at_ms: qala_common::now_ms(),
            not_after_ms: c.not_after_ms,
        };
        store.put(&record).await?;
        answer.serials.push(c.serial.clone());
    }
    Ok(answer)
}

/// The certificates the store knows of worker `id`.
pub async fn certificates_of(store: &Guarded, id: &str) -> Result<Vec<IssuedCert>, CoreError> {
    Ok(store.all::<IssuedCert>().await?.into_iter().filter(|c| c.worker_id == id).collect())
}

/// Parse a revocation list given as PEM or DER.
pub fn pem_or_der(bytes: &[u8]) -> Result<Vec<u8>, CoreError> {
    if bytes.starts_with(b"-----") || (!bytes.is_empty() && bytes.iter().take(64).all(|b| b.is_ascii())) {
        let der: rustls::pki_types::CertificateRevocationListDer = rustls::pki_types::pem::PemObject::from_pem_slice(bytes)
            .map_err(|e| CoreError::Invalid(format!("not a PEM revocation list: {e}")))?;
        return Ok(der.as_ref().to_vec());
    }
    Ok(bytes.to_vec())
}

pub struct Revocation {
    store: Arc<Guarded>,
    auth: Arc<Auth>,
    cluster: Arc<Cluster>,
    audit: Arc<Audit>,
    /// This coordinator's issuing CA, whose list it keeps.
    issuing: Option<Arc<IssuingCa>>,
    /// The serials of the last list made here.
    made: Mutex<Option<Vec<(String, i64)>>>,
}

impl Revocation {
    pub fn new(s: &Shared, issuing: Option<Arc<IssuingCa>>) -> Self {
        Self {
            store: s.store.clone(),
            auth: s.auth.clone(),
            cluster: s.cluster.clone(),
            audit: s.audit.clone(),
            issuing,
            made: Mutex::new(None),
        }
    }

    /// Revoke worker `id` (or, with `client`, the client certificate name
    /// `id`): refused by every coordinator from now on; a worker's
    /// certificates known to the store go on their issuers' lists.
    pub async fn revoke(&self, caller: &Caller, id: &str, client: bool) -> Result<pb::RevokeWorkerResponse, CoreError> {
        caller.require(Op::Admin)?;
        qala_tls::pki::check_name(if client { "client name" } else { "worker id" }, id)
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        let key = if client { auth::client_revocation_key(id) } else { id.to_string() };
        self.store.put(&Revoked { id: key.clone(), at_ms: qala_common::now_ms() }).await?;
        self.auth.note_revoked(&key);
        if client {
            self.audit.event("admin", Some(caller), json!({"action": "client_certificate_revoked", "client": id}));
            return Ok(pb::RevokeWorkerResponse::default());
        }
        self.cluster.evict(id);
        let answer = self.revoke_certs(&certificates_of(&self.store, id).await?).await?;
        self.audit.event(
            "admin",
            Some(caller),
            json!({"action": "worker_revoked", "worker_id": id, "serials": answer.serials, "root_serials": answer.root_serials}),
        );
        Ok(answer)
    }

    /// Revoke the certificate `serial` (one a coordinator's issuing CA
    /// signed, or one a worker registered with).
    pub async fn revoke_serial(&self, caller: &Caller, serial: &str) -> Result<pb::RevokeWorkerResponse, CoreError> {
        caller.require(Op::Admin)?;
        let serial = serial.trim().trim_start_matches("0x").replace(':', "").to_ascii_lowercase();
        if serial.is_empty() || serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CoreError::Invalid(format!("{serial:?} is not a certificate serial (hex)")));
        }
        let Some(cert) = self.store.get::<IssuedCert>(&serial).await? else {
            return Err(CoreError::NotFound(format!(
                "no certificate of serial {serial} is known to the store: one made by `pki` is revoked with \
                 `qala-coordinator pki revoke DIR --serial {serial}` where the root is kept, and its list published"
            )));
        };
        let answer = self.revoke_certs(std::slice::from_ref(&cert)).await?;
        self.audit.event(
            "admin",
            Some(caller),
            json!({"action": "certificate_revoked", "serial": serial, "worker_id": cert.worker_id, "issuer": cert.issuer}),
        );
        Ok(answer)
    }

    async fn revoke_certs(&self, certs: &[IssuedCert]) -> Result<pb::RevokeWorkerResponse, CoreError> {
        let answer = revoke_in_store(&self.store, certs).await?;
        // This coordinator's own list now; the others' within a refresh.
        self.sync().await;
        let _ = self.auth.refresh().await;
        Ok(answer)
    }

    /// Take a root's revocation list (DER or PEM) made where the root is kept.
    pub async fn publish(&self, caller: &Caller, crl: &[u8]) -> Result<pb::PublishCrlResponse, CoreError> {
        caller.require(Op::Admin)?;
        let der = pem_or_der(crl)?;
        let list = self.auth.crls().check(&der).map_err(|e| CoreError::Invalid(e.to_string()))?;
        if !self.auth.crls().is_root(&list.issuer_raw) {
            return Err(CoreError::Invalid(format!(
                "the list of {} is not the root's: a coordinator's issuing CA keeps its own list",
                list.issuer
            )));
        }
        self.store_list(&list).await?;
        self.audit.event(
            "admin",
            Some(caller),
            json!({"action": "crl_published", "issuer": list.issuer, "number": list.number_hex(), "revoked": list.serials.len()}),
        );
        Ok(pb::PublishCrlResponse { issuer: list.issuer.clone(), number: list.number_hex(), revoked: list.serials.len() as u32 })
    }

    /// Store `list` unless the store holds a newer one of its issuer
    /// (refused: no list is taken back), and take it here.
    async fn store_list(&self, list: &Crl) -> Result<bool, CoreError> {
        if let Some(held) = self.store.get::<CrlRecord>(&list.issuer).await?
            && let Ok(held) = Crl::parse(&held.der)
            && (held.number.len(), &held.number) >= (list.number.len(), &list.number)
        {
            if held.der == list.der {
                return Ok(false);
            }
            return Err(CoreError::AlreadyExists(format!(
                "the store holds list number {} of {}, not older than this one ({})",
                held.number_hex(),
                list.issuer,
                list.number_hex()
            )));
        }
        self.store
            .put(&CrlRecord { issuer: list.issuer.clone(), der: list.der.clone(), stored_ms: qala_common::now_ms() })
            .await?;
        self.auth.crls().merge([list.der.as_slice()]).map_err(|e| CoreError::Invalid(e.to_string()))?;
        info!(issuer = list.issuer, number = list.number_hex(), revoked = list.serials.len(), "revocation list stored");
        Ok(true)
    }

    /// Until the root's list is known (the store was down at start, say):
    /// [`Revocation::publish_file`].
    pub async fn publish_file_once(&self, path: &Path) {
        let crls = self.auth.crls();
        if !crls.lists().iter().any(|l| crls.is_root(&l.issuer_raw)) {
            self.publish_file(path).await;
        }
    }

    /// At start: the root's list in the `--tls` directory, stored if the
    /// store holds none as new.
    pub async fn publish_file(&self, path: &Path) {
        let set = CrlSet::new();
        match set.load(path) {
            Ok(0) => {}
            Ok(_) => {
                for list in set.lists() {
                    match self.auth.crls().check(&list.der) {
                        Ok(l) if self.auth.crls().is_root(&l.issuer_raw) => match self.store_list(&l).await {
                            Ok(_) | Err(CoreError::AlreadyExists(_)) => {}
                            Err(e) => warn!(path = %path.display(), error = %e, "the root's revocation list was not stored"),
                        },
                        Ok(l) => warn!(path = %path.display(), issuer = l.issuer, "not the root's revocation list; ignored"),
                        Err(e) => warn!(path = %path.display(), error = %e, "revocation list refused"),
                    }
                }
            }
            Err(e) => warn!(error = %e, "the root's revocation list does not load"),
        }
    }

    /// Make this coordinator's issuing CA's list again if the serials
    /// revoked under it changed (or the store has none), and store it.
    pub async fn sync(&self) {
        let Some(ca) = &self.issuing else { return };
        let revoked = match self.store.all::<RevokedCert>().await {
            Ok(r) => r,
            Err(_) => return,
        };
        let mut serials: Vec<(String, i64)> =
            revoked.into_iter().filter(|r| r.issuer == ca.name).map(|r| (r.serial, r.at_ms / 1000)).collect();
        serials.sort();
        let stored = match self.store.get::<CrlRecord>(&ca.name).await {
            Ok(s) => s.and_then(|r| Crl::parse(&r.der).ok()),
            Err(_) => return,
        };
        let same = self.made.lock().unwrap_or_else(|p| p.into_inner()).as_ref() == Some(&serials);
        let stored_same = stored.as_ref().is_some_and(|s| {
            let mut held = s.serials.clone();
            held.sort();
            held == serials.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>()
        });
        if same && stored_same {
            return;
        }
        if stored_same {
            *self.made.lock().unwrap_or_else(|p| p.into_inner()) = Some(serials);
            if let Some(s) = stored {
                let _ = self.auth.crls().merge([s.der.as_slice()]);
            }
            return;
        }
        let previous = stored.map_or(0, |s| s.number.iter().fold(0u64, |n, b| n.saturating_mul(256).saturating_add(*b as u64)));
        let number = previous.saturating_add(1).max(qala_common::now_ms() as u64 / 1000);
        let (ca2, list) = (ca.clone(), serials.clone());
        let made = tokio::task::spawn_blocking(move || ca2.crl(&list, number)).await;
        let der = match made {
            Ok(Ok(der)) => der,
            Ok(Err(e)) => return warn!(error = %e, "cannot sign this coordinator's revocation list"),
            Err(e) => return warn!(error = %e, "cannot sign this coordinator's revocation list"),
        };
        let list = match Crl::parse(&der) {
            Ok(l) => l,
            Err(e) => return warn!(error = %e, "this coordinator's revocation list does not parse"),
        };
        match self.store_list(&list).await {
            Ok(_) | Err(CoreError::AlreadyExists(_)) => {
                *self.made.lock().unwrap_or_else(|p| p.into_inner()) = Some(serials);
            }
            Err(e) => warn!(error = %e, "cannot store this coordinator's revocation list"),
        }
    }
}
