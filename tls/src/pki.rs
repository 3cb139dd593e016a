//! The small certificate authority behind `qala-coordinator pki` and worker
//! enrollment (rcgen, ECDSA P-256 keys, ring).
//!
//! A PKI directory holds the cluster CA (`ca.pem`, `ca-key.pem`), the first
//! coordinator's certificate (`coordinator.pem`, `coordinator-key.pem`),
//! and self-contained directories for each further coordinator
//! (`coordinators/NAME/`) and worker (`workers/ID/`): their certificate,
//! key and the CA certificate, never the CA key. Every certificate names
//! its role and identity in a SAN URI (`qala:coordinator:NAME`,
//! `qala:worker:ID`) and the hosts it may be reached at as DNS/IP SANs.
//! Keys are written 0600.

use crate::error::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const COORDINATOR_CERT: &str = "coordinator.pem";
pub const COORDINATOR_KEY: &str = "coordinator-key.pem";
pub const WORKER_CERT: &str = "worker.pem";
pub const WORKER_KEY: &str = "worker-key.pem";
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client-key.pem";

/// Lifetime of the CA.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Lifetime of certificates made by `pki coordinator` / `pki worker`.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(2 * 365 * 86_400);

fn err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Certificate(e.to_string())
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), message: e.to_string() }
}

/// Ids and names go into file paths and URIs: letters, digits, `.`, `_`, `-`.
pub fn check_name(what: &str, name: &str) -> Result<(), TlsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(TlsError::Config(format!("{what} {name:?}: use 1-64 letters, digits, '.', '_' or '-'"))) }
}

fn write_file(path: &Path, data: &str, secret: bool) -> Result<(), TlsError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true).mode(if secret { 0o600 } else { 0o644 });
    let mut f = opts.open(path).map_err(|e| io_err(path, e))?;
    f.write_all(data.as_bytes()).map_err(|e| io_err(path, e))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, e))
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that disagree.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(lifetime.as_secs() as i64);
}

/// Parameters of a leaf certificate for `uri` (the role), reachable at `hosts`.
fn leaf_params(uri: &str, common_name: &str, hosts: &[String], lifetime: Duration) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(err)?;
    params.subject_alt_names.push(SanType::URI(uri.try_into().map_err(err)?));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Qala");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Coordinators and workers are both servers and clients of each other.
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, lifetime);
    Ok(params)
}

/// The CA of the PKI in `dir`, able to sign.
fn issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, TlsError> {
    let key_path = dir.join(CA_KEY);
    let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| io_err(&key_path, e))?;
    Issuer::from_ca_cert_pem(&read(&dir.join(CA_CERT))?, key).map_err(err)
}

/// Hosts a coordinator certificate names: `localhost`, `127.0.0.1`, `::1`
/// and any given.
pub fn coordinator_hosts(extra: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    for h in extra {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    hosts
}

/// Hosts a worker certificate names: those given, or `localhost` and
/// `127.0.0.1` when none are (a worker on the coordinator's host).
pub fn worker_hosts(extra: &[String]) -> Vec<String> {
    if extra.is_empty() { vec!["localhost".into(), "127.0.0.1".into()] } else { extra.to_vec() }
}

/// Create a PKI in `dir`: the cluster CA and the first coordinator's
/// certificate (named `name`). Refuses to overwrite an existing CA.
pub fn init(dir: &Path, name: &str, hosts: &[String]) -> Result<(), TlsError> {
    check_name("coordinator name", name)?;
    if dir.join(CA_CERT).exists() || dir.join(CA_KEY).exists() {
        return Err(TlsError::Config(format!("{} already holds a CA; not overwriting it", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Qala cluster CA");
    dn.push(DnType::OrganizationName, "Qala");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, CA_LIFETIME);
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    write_file(&dir.join(CA_KEY), &key.serialize_pem(), true)?;
    write_file(&dir.join(CA_CERT), &cert.pem(), false)?;
    let (cert, key) = issue(dir, &format!("qala:coordinator:{name}"), name, &coordinator_hosts(hosts), LEAF_LIFETIME)?;
    write_file(&dir.join(COORDINATOR_KEY), &key, true)?;
    write_file(&dir.join(COORDINATOR_CERT), &cert, false)
}

/// A new key and a certificate for it signed by the CA in `dir`: (cert PEM, key PEM).
fn issue(dir: &Path, uri: &str, cn: &str, hosts: &[String], lifetime: Duration) -> Result<(String, String), TlsError> {
    let issuer = issuer(dir)?;
    let key = KeyPair::generate().map_err(err)?;
    let cert = leaf_params(uri, cn, hosts, lifetime)?.signed_by(&key, &issuer).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// `dir/<sub>/<name>/` with the CA certificate, a certificate and its key.
fn bundle(dir: &Path, sub: &str, name: &str, files: (&str, &str), uri: &str, hosts: &[String]) -> Result<PathBuf, TlsError> {
    let out = dir.join(sub).join(name);
    std::fs::create_dir_all(&out).map_err(|e| io_err(&out, e))?;
    let (cert, key) = issue(dir, uri, name, hosts, LEAF_LIFETIME)?;
    write_file(&out.join(CA_CERT), &read(&dir.join(CA_CERT))?, false)?;
    write_file(&out.join(files.1), &key, true)?;
    write_file(&out.join(files.0), &cert, false)?;
    Ok(out)
}

/// Another coordinator's certificate: `dir/coordinators/NAME/`.
pub fn coordinator(dir: &Path, name: &str, hosts: &[String]) -> Result<PathBuf, TlsError> {
    check_name("coordinator name", name)?;
    let uri = format!("qala:coordinator:{name}");
    bundle(dir, "coordinators", name, (COORDINATOR_CERT, COORDINATOR_KEY), &uri, &coordinator_hosts(hosts))
}

/// A worker's certificate: `dir/workers/ID/`, to copy to the worker's host.
pub fn worker(dir: &Path, id: &str, hosts: &[String]) -> Result<PathBuf, TlsError> {
    check_name("worker id", id)?;
    bundle(dir, "workers", id, (WORKER_CERT, WORKER_KEY), &format!("qala:worker:{id}"), &worker_hosts(hosts))
}

/// A client certificate (`qala:client:ROLE:NAME`), for a client that
/// authenticates with a certificate instead of a token:
/// `dir/clients/NAME/` (ca.pem, client.pem, client-key.pem).
pub fn client(dir: &Path, name: &str, role: &str) -> Result<PathBuf, TlsError> {
    check_name("client name", name)?;
    check_name("role", role)?;
    bundle(dir, "clients", name, (CLIENT_CERT, CLIENT_KEY), &format!("qala:client:{role}:{name}"), &[])
}

/// A key pair and a certificate signing request for worker `id` (the
/// enrolling worker's side): (CSR PEM, key PEM).
pub fn worker_csr(id: &str) -> Result<(String, String), TlsError> {
    check_name("worker id", id)?;
    let key = KeyPair::generate().map_err(err)?;
    let params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    let csr = params.serialize_request(&key).map_err(err)?;
    Ok((csr.pem().map_err(err)?, key.serialize_pem()))
}

/// Sign an enrolling worker's CSR with the CA in `dir`. Only the CSR's
/// public key is used: the coordinator decides what the certificate says
/// (`qala:worker:ID`, the hosts asked for, `lifetime`).
pub fn sign_worker_csr(dir: &Path, csr_pem: &str, id: &str, hosts: &[String], lifetime: Duration) -> Result<String, TlsError> {
    check_name("worker id", id)?;
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(err)?;
    let params = leaf_params(&format!("qala:worker:{id}"), id, &worker_hosts(hosts), lifetime)?;
    Ok(params.signed_by(&csr.public_key, &issuer(dir)?).map_err(err)?.pem())
}

/// Write an enrolled worker's material to `dir` (as `pki worker` lays it out).
pub fn write_worker_dir(dir: &Path, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    write_file(&dir.join(CA_CERT), ca_pem, false)?;
    // Key first: the certificate's change is what reloads the server.
    write_file(&dir.join(WORKER_KEY), key_pem, true)?;
    write_file(&dir.join(WORKER_CERT), cert_pem, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertRole, PeerCert, load_certs};
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn init_and_worker_certificates_name_role_and_hosts() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), "main", &["scan.example.org".into()]).unwrap();
        assert!(init(d.path(), "main", &[]).is_err(), "a second init must not overwrite the CA");
        let mode = std::fs::metadata(d.path().join(CA_KEY)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);

        let coord = PeerCert::parse(&load_certs(&d.path().join(COORDINATOR_CERT)).unwrap()[0]).unwrap();
        assert_eq!(coord.role(), Some(CertRole::Coordinator("main".into())));
        assert!(coord.names_host("localhost") && coord.names_host("127.0.0.1") && coord.names_host("scan.example.org"));

        let w = worker(d.path(), "w1", &["10.0.0.7".into()]).unwrap();
        assert!(!w.join(CA_KEY).exists(), "a worker directory never holds the CA key");
        let cert = PeerCert::parse(&load_certs(&w.join(WORKER_CERT)).unwrap()[0]).unwrap();
        assert_eq!(cert.worker_id().as_deref(), Some("w1"));
        assert!(cert.names_host("10.0.0.7") && !cert.names_host("127.0.0.1"));

        let (csr, _key) = worker_csr("w9").unwrap();
        let signed = sign_worker_csr(d.path(), &csr, "w9", &[], Duration::from_secs(600)).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(signed.as_bytes()).unwrap();
        let cert = PeerCert::parse(&der).unwrap();
        assert_eq!(cert.worker_id().as_deref(), Some("w9"));
        assert!(cert.not_after - cert.not_before <= 600 + 300 + 1);
        assert!(check_name("worker id", "../etc").is_err());
    }
}
