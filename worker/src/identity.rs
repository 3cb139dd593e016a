//! How this worker proves who it is: a certificate directory made by
//! `qala-coordinator pki worker` (`--tls DIR`), or one it fills itself by
//! enrolling with a `worker-enroll` token and renews at half its life
//! (`--enroll-token-file`), or nothing at all (`--insecure`, loopback only).

use crate::Config;
use anyhow::{Context, bail};
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
    pub fn worker_id(&self) -> anyhow::Result<String> {
        let certs = qala_tls::load_certs(&self.cert())?;
        let cert = PeerCert::parse(&certs[0])?;
        cert.worker_id().with_context(|| format!("{} is not a worker certificate (no qala:worker:ID)", self.cert().display()))
    }

    /// Client TLS to coordinators: the cluster CA, this worker's certificate.
    /// Read anew for each connection, so a renewed certificate is used.
    pub fn client(&self) -> anyhow::Result<ClientTlsConfig> {
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
) -> anyhow::Result<Duration> {
    let (csr, key) = pki::worker_csr(id)?;
    let endpoint = Endpoint::from_shared(coordinator.to_string())
        .with_context(|| format!("coordinator URL {coordinator}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .tls_config(qala_tls::client_config(Some(ca), None)?)?;
    let channel = endpoint.connect().await.with_context(|| format!("connecting to {coordinator} to enroll"))?;
    let mut client = ClusterClient::with_interceptor(channel, BearerToken::new(Some(token))?);
    let resp = client
        .enroll(pb::EnrollRequest { worker_id: id.to_string(), csr_pem: csr, hosts: hosts.to_vec() })
        .await
        .map_err(|e| anyhow::anyhow!("enrollment refused by {coordinator}: {:?}: {}", e.code(), e.message()))?
        .into_inner();
    pki::write_worker_dir(dir, &resp.ca_pem, &resp.cert_pem, &key)?;
    let left = (resp.not_after_ms - now_ms()).max(1_000) as u64;
    info!(worker_id = id, dir = %dir.display(), valid_secs = left / 1000, "enrolled: certificate received");
    Ok(Duration::from_millis(left))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
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
pub async fn establish(config: &Config, advertise_host: &str) -> anyhow::Result<(Option<Identity>, Option<(Duration, String)>)> {
    if let Some(dir) = &config.tls {
        return Ok((Some(Identity { dir: dir.clone() }), None));
    }
    if let Some(token_file) = &config.enroll_token_file {
        let token = qala_tls::read_token(Some(token_file), "")?.context("empty enroll token")?;
        let id = config.id.clone().context("--enroll-token-file needs --id")?;
        let ca = config.ca.clone().context("--enroll-token-file needs --ca")?;
        let coordinator = config.coordinator.first().context("no coordinator URL")?.trim().to_string();
        let lifetime = enroll(&coordinator, &ca, &token, &id, &[advertise_host.to_string()], &config.enroll_dir).await?;
        return Ok((Some(Identity { dir: config.enroll_dir.clone() }), Some((lifetime, token))));
    }
    if config.insecure {
        return Ok((None, None));
    }
    bail!(
        "give --tls DIR (made by `qala-coordinator pki worker`), --enroll-token-file FILE with --id and --ca, or --insecure on loopback"
    )
}
