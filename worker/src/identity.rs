//! How this worker proves who it is: a certificate directory made by
//! `qala-coordinator pki worker` (`--tls DIR`), or one it fills itself by
//! enrolling (`--enroll-token-file`), or nothing at all (`--insecure`,
//! loopback only).
//!
//! An enrolling worker spends its join token once: it trades the token and
//! a certificate request for a short-lived certificate, then renews that
//! certificate at half its life over mutual TLS with the certificate itself
//! (`Renew`, no token), through whichever coordinator answers. It does not
//! keep the token: at a restart it uses the certificate it holds, and
//! reads the token file again only if that certificate has expired (it was
//! down longer than the certificate lived; its id is free again then).
//!
//! The revocation lists the worker goes by (coordinators' certificates
//! checked against them, on its listener and when it dials) come with its
//! enrollment and with every heartbeat answer that has newer ones, and are
//! kept in the worker's data directory (`--crl-cache`) for the next start:
//! a `--tls` directory is the operator's and may be read-only.

use crate::config::Config;
use crate::error::Error;
use qala_proto::v1::{self as pb, cluster_client::ClusterClient};
use qala_tls::{BearerToken, CrlSet, Expect, PeerCert, pki};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Endpoint;
use tracing::{info, warn};

/// The worker's TLS material: a directory laid out as `pki worker` makes
/// it, and the revocation lists in force.
#[derive(Clone, Debug)]
pub struct Identity {
    pub dir: PathBuf,
    /// Where newer revocation lists are kept for the next start.
    pub cache: PathBuf,
    pub crls: Arc<CrlSet>,
}

impl Identity {
    /// The material in `dir`, with the revocation lists kept in `cache` and
    /// in `dir` (`crls.pem`, the root's `crl.pem` of a `pki worker`
    /// directory): the root's lists, which revoke coordinators. The newest
    /// of each wins, whichever file held it.
    pub fn open(dir: &Path, cache: &Path) -> Result<Self, Error> {
        let crls = CrlSet::of_roots(&dir.join(pki::CA_CERT))?;
        for file in [cache.to_path_buf(), dir.join(pki::CRLS), dir.join(pki::CRL)] {
            if let Err(e) = crls.load(&file) {
                warn!(error = %e, file = %file.display(), "a kept revocation list does not load");
            }
        }
        Ok(Self { dir: dir.to_path_buf(), cache: cache.to_path_buf(), crls })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join(pki::CA_CERT)
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join(pki::WORKER_CERT)
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join(pki::WORKER_KEY)
    }

    fn leaf(&self) -> Result<PeerCert, Error> {
        let certs = qala_tls::load_certs(&self.cert())?;
        Ok(PeerCert::parse(&certs[0])?)
    }

    /// The worker id the certificate names.
    pub fn worker_id(&self) -> Result<String, Error> {
        self.leaf()?
            .worker_id()
            .ok_or_else(|| Error::Config(format!("{} is not a worker certificate (no qala:worker:ID)", self.cert().display())))
    }

    /// How long the certificate has left (zero once expired).
    pub fn time_left(&self) -> Result<Duration, Error> {
        let left = self.leaf()?.not_after * 1000 - qala_common::now_ms();
        Ok(Duration::from_millis(left.max(0) as u64))
    }

    /// TLS to a coordinator for `endpoint`: the cluster CA and its
    /// revocation lists (the server must hold an unrevoked coordinator's
    /// certificate) and this worker's certificate, read anew for each
    /// connection, so a renewed certificate is used.
    pub fn endpoint(&self, endpoint: Endpoint) -> Result<Endpoint, Error> {
        let identity = Some((self.cert(), self.key()));
        let identity = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        Ok(qala_tls::secure_endpoint(endpoint, Some(&self.ca()), identity, self.crls.clone(), Expect::Coordinator)?)
    }

    /// Take newer revocation lists from a coordinator's answer, and keep
    /// them for the next start.
    pub fn take_crls(&self, ders: &[Vec<u8>]) {
        if ders.is_empty() {
            return;
        }
        match self.crls.merge(ders.iter().map(|d| d.as_slice())) {
            Ok(0) => {}
            Ok(n) => {
                info!(lists = n, "newer certificate revocation lists in force");
                if let Err(e) = self.crls.save(&self.cache) {
                    warn!(error = %e, file = %self.cache.display(), "revocation lists not kept for the next start");
                }
            }
            Err(e) => warn!(error = %e, "revocation lists from the coordinator refused"),
        }
    }
}

fn endpoint_of(coordinator: &str) -> Result<Endpoint, Error> {
    Ok(Endpoint::from_shared(coordinator.to_string())
        .map_err(|source| Error::Transport { what: format!("coordinator URL {coordinator}"), source })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20)))
}

/// What enrollment asks for.
struct Request<'a> {
    id: &'a str,
    hosts: &'a [String],
    dir: &'a Path,
    cache: &'a Path,
}

/// Whether a refusal is for good (a bad, expired or used-up token, an id
/// held by someone, a host not allowed): then the worker stops, with the
/// reason, rather than trying the next coordinator.
fn final_refusal(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unauthenticated | PermissionDenied | AlreadyExists | InvalidArgument)
}

/// A refusal for good, or a certificate refused in the handshake (a server
/// that is no coordinator of this cluster).
fn is_final(e: &Error) -> bool {
    match e {
        Error::Enrollment { code, .. } => final_refusal(*code),
        Error::Transport { source, .. } => qala_tls::certificate_refused(source),
        _ => false,
    }
}

/// How long enrollment keeps trying coordinators that are busy (a join
/// token's rate spent) or unreachable, before the worker gives up.
const ENROLL_PATIENCE: Duration = Duration::from_secs(120);

/// Trade `token` and a new key's CSR for a certificate from the first
/// coordinator that can sign, and write them to `dir`; the certificate's
/// lifetime. Busy or unreachable coordinators are tried again (after the
/// coordinator's retry hint) for [`ENROLL_PATIENCE`]; a refusal for good
/// ends it at once.
async fn enroll(coordinators: &[String], ca: &Path, token: String, req: &Request<'_>) -> Result<(Duration, Identity), Error> {
    let (csr, key) = pki::worker_csr(req.id)?;
    let bearer = BearerToken::new(Some(&token))?;
    drop(token);
    let started = std::time::Instant::now();
    let mut round = 0u32;
    loop {
        let (result, hint) = enroll_round(coordinators, ca, &bearer, req, &csr, &key).await;
        match result {
            Ok(done) => return Ok(done),
            Err(e) if is_final(&e) => return Err(e),
            Err(e) if started.elapsed() >= ENROLL_PATIENCE => return Err(e),
            Err(e) => {
                let wait = hint.unwrap_or(Duration::from_millis(500 << round.min(4))).min(Duration::from_secs(15));
                warn!(error = %e, wait_ms = wait.as_millis() as u64, "enrollment not done yet; trying again");
                tokio::time::sleep(wait).await;
                round += 1;
            }
        }
    }
}

/// One try at each coordinator in turn: the certificate, or the last error
/// (and the retry hint a busy coordinator gave).
async fn enroll_round(
    coordinators: &[String],
    ca: &Path,
    bearer: &BearerToken,
    req: &Request<'_>,
    csr: &str,
    key: &str,
) -> (Result<(Duration, Identity), Error>, Option<Duration>) {
    let mut last = None;
    let mut hint = None;
    for coordinator in coordinators {
        // Before any certificate: the CA alone (no lists yet: a first contact).
        let endpoint = match endpoint_of(coordinator)
            .and_then(|e| Ok(qala_tls::secure_endpoint(e, Some(ca), None, CrlSet::new(), Expect::Coordinator)?))
        {
            Ok(e) => e,
            Err(e) => return (Err(e), None),
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(source) => {
                warn!(coordinator, error = %chain(&source), "cannot reach the coordinator to enroll");
                let e = Error::Transport { what: format!("connecting to {coordinator} to enroll"), source };
                if is_final(&e) {
                    return (Err(e), None);
                }
                last = Some(e);
                continue;
            }
        };
        let mut client = ClusterClient::with_interceptor(channel, bearer.clone());
        let asked = pb::EnrollRequest { worker_id: req.id.to_string(), csr_pem: csr.to_string(), hosts: req.hosts.to_vec() };
        match client.enroll(asked).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                let identity = match store(req.dir, req.cache, &resp, key) {
                    Ok(i) => i,
                    Err(e) => return (Err(e), None),
                };
                let left = (resp.not_after_ms - qala_common::now_ms()).max(1_000) as u64;
                info!(worker_id = req.id, coordinator, dir = %req.dir.display(), serial = resp.serial, valid_secs = left / 1000,
                      "enrolled: certificate received");
                return (Ok((Duration::from_millis(left), identity)), None);
            }
            Err(e) => {
                let refusal =
                    Error::Enrollment { coordinator: coordinator.clone(), code: e.code(), message: e.message().to_string() };
                if final_refusal(e.code()) {
                    return (Err(refusal), None);
                }
                let retry_after = e.metadata().get("retry-after-ms").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                hint = hint.or(retry_after.map(Duration::from_millis));
                warn!(coordinator, error = %refusal, "enrollment failed here");
                last = Some(refusal);
            }
        }
    }
    (Err(last.unwrap_or_else(|| Error::Config("no coordinator URL".into()))), hint)
}

/// Renew over mutual TLS with the certificate in `identity`, through the
/// first coordinator that can sign; the new certificate's lifetime.
async fn renew_once(coordinators: &[String], identity: &Identity, id: &str) -> Result<Duration, Error> {
    let (csr, key) = pki::worker_csr(id)?;
    let mut last = None;
    for coordinator in coordinators {
        let endpoint = identity.endpoint(endpoint_of(coordinator)?)?;
        let result =
            async {
                let channel = endpoint
                    .connect()
                    .await
                    .map_err(|source| Error::Transport { what: format!("connecting to {coordinator} to renew"), source })?;
                ClusterClient::new(channel).renew(pb::RenewRequest { csr_pem: csr.clone() }).await.map_err(|e| {
                    Error::Enrollment { coordinator: coordinator.clone(), code: e.code(), message: e.message().to_string() }
                })
            }
            .await;
        match result {
            Ok(resp) => {
                let resp = resp.into_inner();
                store(&identity.dir, &identity.cache, &resp, &key)?;
                identity.take_crls(&resp.crls);
                let left = (resp.not_after_ms - qala_common::now_ms()).max(1_000) as u64;
                info!(worker_id = id, coordinator, serial = resp.serial, valid_secs = left / 1000, "certificate renewed");
                return Ok(Duration::from_millis(left));
            }
            Err(e) => {
                warn!(coordinator, error = %e, "renewal failed here");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Config("no coordinator URL".into())))
}

/// Write what a coordinator signed to `dir`; the identity there.
fn store(dir: &Path, cache: &Path, resp: &pb::EnrollResponse, key: &str) -> Result<Identity, Error> {
    pki::write_worker_dir(dir, &resp.ca_pem, &resp.cert_pem, key)?;
    let identity = Identity::open(dir, cache)?;
    identity.take_crls(&resp.crls);
    Ok(identity)
}

/// A transport error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// What an enrolled worker needs to keep its certificate.
pub struct Enrolled {
    pub coordinators: Vec<String>,
    pub ca: PathBuf,
    /// Read again only to enroll anew after the certificate expired.
    pub token_file: PathBuf,
    pub id: String,
    pub hosts: Vec<String>,
    pub identity: Identity,
}

/// Renew the enrolled certificate at half its life, until `stop`; a failed
/// renewal is tried again every few seconds while the old one is valid,
/// and once it has expired the worker enrolls anew with the token file.
pub async fn renew(e: Enrolled, mut lifetime: Duration, mut stop: watch::Receiver<bool>) {
    let mut wait = lifetime / 2;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let left = e.identity.time_left().unwrap_or_default();
        let result = if left.is_zero() {
            warn!(worker_id = e.id, "certificate expired; enrolling anew with the join token");
            match qala_tls::read_token(Some(&e.token_file), None) {
                Ok(Some(token)) => {
                    let req = Request { id: &e.id, hosts: &e.hosts, dir: &e.identity.dir, cache: &e.identity.cache };
                    enroll(&e.coordinators, &e.ca, token, &req).await.map(|(l, _)| l)
                }
                Ok(None) => Err(Error::Config("empty join token file".into())),
                Err(err) => Err(err.into()),
            }
        } else {
            renew_once(&e.coordinators, &e.identity, &e.id).await
        };
        match result {
            Ok(l) => {
                lifetime = l;
                wait = lifetime / 2;
            }
            Err(err) => {
                warn!(error = %err, "certificate renewal failed; retrying");
                wait = Duration::from_secs(5).min(lifetime / 4).max(Duration::from_millis(500));
            }
        }
    }
}

/// A certificate kept from an earlier run is used (and renewed at once if
/// past half its life) while it has this much life left; with less, the
/// worker lets it expire and enrolls anew (while it is valid its id is not
/// free).
const KEEP_MARGIN: Duration = Duration::from_secs(5);

/// Decide how this worker proves itself, enrolling first if it must.
/// Returns the identity (None for --insecure) and, for an enrolled worker,
/// what keeps its certificate fresh and the certificate's life left.
pub async fn establish(
    config: &Config,
    id: &str,
    hosts: &[String],
) -> Result<(Option<Identity>, Option<(Enrolled, Duration)>), Error> {
    if let Some(dir) = &config.tls {
        return Ok((Some(Identity::open(dir, &config.crl_cache)?), None));
    }
    if let Some(token_file) = &config.enroll_token_file {
        let ca = config.ca.clone().ok_or_else(|| Error::Config("--enroll-token-file needs --ca".into()))?;
        let coordinators: Vec<String> =
            config.coordinator.iter().map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
        let dir = &config.enroll_dir;
        // A certificate of this id from an earlier run, still good: keep it.
        if dir.join(pki::WORKER_CERT).exists() && dir.join(pki::WORKER_KEY).exists() {
            let held = Identity::open(dir, &config.crl_cache)?;
            match (held.worker_id(), held.time_left()) {
                (Ok(held_id), Ok(left)) if held_id == id && left > KEEP_MARGIN => {
                    info!(worker_id = id, valid_secs = left.as_secs(), "using the certificate enrolled earlier");
                    let enrolled = Enrolled {
                        coordinators,
                        ca,
                        token_file: token_file.clone(),
                        id: id.to_string(),
                        hosts: hosts.to_vec(),
                        identity: held.clone(),
                    };
                    return Ok((Some(held), Some((enrolled, left))));
                }
                (Ok(held_id), Ok(left)) if held_id == id => {
                    if !left.is_zero() {
                        info!(worker_id = id, "the certificate enrolled earlier is about to expire; enrolling anew once it has");
                        tokio::time::sleep(left + Duration::from_secs(1)).await;
                    }
                    info!(worker_id = id, "the certificate enrolled earlier has expired");
                }
                (Ok(held_id), Ok(_)) => info!(held = held_id, worker_id = id, "the certificate enrolled earlier is another id's"),
                (Err(e), _) | (_, Err(e)) => warn!(error = %e, "the certificate enrolled earlier does not load"),
            }
        }
        let token = qala_tls::read_token(Some(token_file), None)?.ok_or_else(|| Error::Config("empty join token file".into()))?;
        let (lifetime, identity) =
            enroll(&coordinators, &ca, token, &Request { id, hosts, dir, cache: &config.crl_cache }).await?;
        let enrolled = Enrolled {
            coordinators,
            ca,
            token_file: token_file.clone(),
            id: id.to_string(),
            hosts: hosts.to_vec(),
            identity: identity.clone(),
        };
        return Ok((Some(identity), Some((enrolled, lifetime))));
    }
    if config.insecure {
        return Ok((None, None));
    }
    Err(Error::Config(
        "give --tls DIR (made by `qala-coordinator pki worker`), --enroll-token-file FILE with --ca, or --insecure on loopback"
            .into(),
    ))
}
