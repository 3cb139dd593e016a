//! How this worker proves who it is: a certificate directory made by
//! `qala-coordinator pki worker` (`--tls DIR`), or one it fills itself by
//! enrolling with a `worker-enroll` token and renews at half its life
//! (`--enroll-token-file`), or nothing at all (`--insecure`, loopback only).

use crate::config::Config;
use crate::error::Error;
use qala_proto::v1::{self as pb, cluster_client::ClusterClient};
use qala_tls::{BearerToken, PeerCert, pki};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tracing::{info, warn};

/// The worker's TLS material: a directory laid out as `pki worker` makes it.
#[derive(Clone, Debug)]
pub struct Identity {
    pub dir: PathBuf,
}

impl Identity {
    pub fn ca(&self) -> PathBuf {
        self.dir.join(pki::CA_CERT)
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join(pki::WORKER_CERT)
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join(pki::WORKER_KEY)
    }

    /// The worker id the certificate names.
    pub fn worker_id(&self) -> Result<String, Error> {
        let certs = qala_tls::load_certs(&self.cert())?;
        let cert = PeerCert::parse(&certs[0])?;
        cert.worker_id()
            .ok_or_else(|| Error::Config(format!("{} is not a worker certificate (no qala:worker:ID)", self.cert().display())))
    }

    /// Client TLS to coordinators: the cluster CA, this worker's certificate.
    /// Read anew for each connection, so a renewed certificate is used.
    pub fn client(&self) -> Result<ClientTlsConfig, Error> {
        Ok(qala_tls::client_config(Some(&self.ca()), Some((&self.cert(), &self.key())))?)
    }
}

/// Trade the enroll token and a new key's CSR for a certificate, write
/// them to `dir`; the certificate's lifetime.
pub async fn enroll(
    coordinator: &str,
    ca: &Path,
    token: &str,
    id: &str,
    hosts: &[String],
    dir: &Path,
) -> Result<Duration, Error> {
    let (csr, key) = pki::worker_csr(id)?;
    let transport = |what: String| move |source| Error::Transport { what, source };
    let endpoint = Endpoint::from_shared(coordinator.to_string())
        .map_err(transport(format!("coordinator URL {coordinator}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .tls_config(qala_tls::client_config(Some(ca), None)?)
        .map_err(transport(format!("TLS to {coordinator}")))?;
    let channel = endpoint.connect().await.map_err(transport(format!("connecting to {coordinator} to enroll")))?;
    let mut client = ClusterClient::with_interceptor(channel, BearerToken::new(Some(token))?);
    let resp = client
        .enroll(pb::EnrollRequest { worker_id: id.to_string(), csr_pem: csr, hosts: hosts.to_vec() })
        .await
        .map_err(|e| Error::Enrollment {
            coordinator: coordinator.to_string(),
            code: e.code(),
            message: e.message().to_string(),
        })?
        .into_inner();
    pki::write_worker_dir(dir, &resp.ca_pem, &resp.cert_pem, &key)?;
    let left = (resp.not_after_ms - qala_common::now_ms()).max(1_000) as u64;
    info!(worker_id = id, dir = %dir.display(), valid_secs = left / 1000, "enrolled: certificate received");
    Ok(Duration::from_millis(left))
}

/// What an enrolled worker needs to renew its certificate.
pub struct Enrolled {
    pub coordinator: String,
    pub ca: PathBuf,
    pub token: String,
    pub id: String,
    pub hosts: Vec<String>,
    pub dir: PathBuf,
}

/// Renew the enrolled certificate at half its life, until `stop`; a failed
/// renewal is tried again every few seconds while the old one is valid.
pub async fn renew(e: Enrolled, mut lifetime: Duration, mut stop: watch::Receiver<bool>) {
    let Enrolled { coordinator, ca, token, id, hosts, dir } = e;
    let mut wait = lifetime / 2;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        match enroll(&coordinator, &ca, &token, &id, &hosts, &dir).await {
            Ok(l) => {
                lifetime = l;
                wait = lifetime / 2;
            }
            Err(e) => {
                warn!(error = %e, "certificate renewal failed; retrying");
                wait = Duration::from_secs(5).min(lifetime / 4);
            }
        }
    }
}

/// Decide how this worker proves itself, enrolling first if asked to.
/// Returns the identity (None for --insecure) and the worker id.
pub async fn establish(config: &Config, advertise_host: &str) -> Result<(Option<Identity>, Option<(Duration, String)>), Error> {
    if let Some(dir) = &config.tls {
        return Ok((Some(Identity { dir: dir.clone() }), None));
    }
    if let Some(token_file) = &config.enroll_token_file {
        let missing = |what: &str| Error::Config(what.to_string());
        let token = qala_tls::read_token(Some(token_file), None)?.ok_or_else(|| missing("empty enroll token"))?;
        let id = config.id.clone().ok_or_else(|| missing("--enroll-token-file needs --id"))?;
        let ca = config.ca.clone().ok_or_else(|| missing("--enroll-token-file needs --ca"))?;
        let coordinator = config.coordinator.first().ok_or_else(|| missing("no coordinator URL"))?.trim().to_string();
        let lifetime = enroll(&coordinator, &ca, &token, &id, &[advertise_host.to_string()], &config.enroll_dir).await?;
        return Ok((Some(Identity { dir: config.enroll_dir.clone() }), Some((lifetime, token))));
    }
    if config.insecure {
        return Ok((None, None));
    }
    Err(Error::Config(
        "give --tls DIR (made by `qala-coordinator pki worker`), --enroll-token-file FILE with --id and --ca, or --insecure on loopback"
            .into(),
    ))
}
