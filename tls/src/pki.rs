//! The cluster's certificate authority behind `qala-coordinator pki` and
//! worker enrollment (rcgen, ECDSA P-256 keys, ring).
//!
//! Two levels of signing keys, so that revoking a coordinator means
//! something:
//!
//! - the **root CA** (`ca.pem`, `ca-key.pem`): signs coordinators, each
//!   coordinator's issuing CA, and workers and clients made by hand
//!   (`pki worker`, `pki client`), and the root's revocation list
//!   (`crl.pem`). Its key is needed only by these `pki` commands: keep it
//!   on a machine apart (offline), never on a coordinator;
//! - one **issuing CA per coordinator** (`issuing-ca.pem`,
//!   `issuing-ca-key.pem`, path length 0: it signs end certificates only):
//!   the key a coordinator signs enrolled workers' certificates and its
//!   own revocation list with. Its certificates may name only workers
//!   (verifiers refuse a coordinator's or a client's certificate that a
//!   root did not sign), so a stolen coordinator key mints no coordinator
//!   and no admin; revoking the coordinator (`pki revoke --coordinator`)
//!   revokes its certificate and its issuing CA, and with it every worker
//!   it enrolled.
//!
//! A PKI directory holds the root, the first coordinator's material at
//! its top level (`pki init`), self-contained directories for each further
//! coordinator (`coordinators/NAME/`), worker (`workers/ID/`) and client
//! (`clients/NAME/`) with the root certificate and revocation list but
//! never the root key, an index of what was issued (`index.tsv`) and of
//! what was revoked (`revoked.tsv`). Every certificate names its role and
//! identity in a SAN URI (`qala:coordinator:NAME`, `qala:worker:ID`,
//! `qala:client:ROLE:NAME`), has a random serial, and names the hosts it
//! may be reached at as DNS/IP SANs. Keys are written 0600.

use crate::crl::{CrlSet, pem_of, write_atomic};
use crate::error::TlsError;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const COORDINATOR_CERT: &str = "coordinator.pem";
pub const COORDINATOR_KEY: &str = "coordinator-key.pem";
pub const ISSUING_CERT: &str = "issuing-ca.pem";
pub const ISSUING_KEY: &str = "issuing-ca-key.pem";
pub const WORKER_CERT: &str = "worker.pem";
pub const WORKER_KEY: &str = "worker-key.pem";
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client-key.pem";
/// The root's revocation list, as `pki` last wrote it.
pub const CRL: &str = "crl.pem";
/// Revocation lists received since (a worker's or agent's copy).
pub const CRLS: &str = "crls.pem";
const INDEX: &str = "index.tsv";
const REVOKED: &str = "revoked.tsv";

/// Lifetime of the CA.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Lifetime of certificates made by `pki coordinator` / `pki worker` /
/// `pki client`, and of issuing CAs.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(2 * 365 * 86_400);
/// How long a revocation list says it is good for (verifiers here do not
/// expire lists; a newer one replaces it).
const CRL_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

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

/// A key (`secret`: 0600) or a certificate (0644), created new and renamed
/// into place ([`qala_common::files::replace`]).
fn write_file(path: &Path, data: &str, secret: bool) -> Result<(), TlsError> {
    qala_common::files::replace(path, data.as_bytes(), if secret { 0o600 } else { 0o644 }).map_err(|e| io_err(path, e))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, e))
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// A random positive serial of 16 bytes whose first byte is not zero (so
/// its DER encoding is these very bytes, as revocation lists match them).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn serial_hex(s: &SerialNumber) -> String {
    hex_of(&s.to_bytes())
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    // A little slack for clocks that disagree.
    params.not_before = now() - time::Duration::minutes(5);
    params.not_after = now() + time::Duration::seconds(lifetime.as_secs() as i64);
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Qala");
    dn
}

/// A CA's name: its common name and the cluster's tag (so no two
/// clusters' CAs share a name, nor their revocation lists an issuer).
fn ca_name(common_name: &str, cluster: &str) -> DistinguishedName {
    let mut dn = name(common_name);
    dn.push(DnType::OrganizationalUnitName, cluster);
    dn
}

/// The cluster's tag: the root's organizational unit.
fn cluster_tag(dir: &Path) -> Result<String, TlsError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let path = dir.join(CA_CERT);
    let der = crate::load_certs(&path)?.remove(0);
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| io_err(&path, e))?;
    let tag = cert.subject().iter_organizational_unit().next().and_then(|ou| ou.as_str().ok()).unwrap_or("qala");
    Ok(tag.to_string())
}

/// Parameters of a leaf certificate for `uri` (the role), reachable at `hosts`.
fn leaf_params(uri: &str, common_name: &str, hosts: &[String], lifetime: Duration) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(err)?;
    params.subject_alt_names.push(SanType::URI(uri.try_into().map_err(err)?));
    params.distinguished_name = name(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Coordinators and workers are both servers and clients of each other.
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params, lifetime);
    Ok(params)
}

/// A CA's certificate and key files, able to sign.
fn issuer_from(cert: &Path, key: &Path) -> Result<Issuer<'static, KeyPair>, TlsError> {
    let key_pair = KeyPair::from_pem(&read(key)?).map_err(|e| io_err(key, e))?;
    Issuer::from_ca_cert_pem(&read(cert)?, key_pair).map_err(|e| io_err(cert, e))
}

/// The root CA of the PKI in `dir`, able to sign.
fn root(dir: &Path) -> Result<Issuer<'static, KeyPair>, TlsError> {
    if !dir.join(CA_KEY).exists() {
        return Err(TlsError::Config(format!(
            "{} holds no root CA key ({CA_KEY}): run this where the root is kept",
            dir.display()
        )));
    }
    issuer_from(&dir.join(CA_CERT), &dir.join(CA_KEY))
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

/// Hosts a hand-made worker certificate names: those given, or `localhost`
/// and `127.0.0.1` when none are (a worker on the coordinator's host).
pub fn worker_hosts(extra: &[String]) -> Vec<String> {
    if extra.is_empty() { vec!["localhost".into(), "127.0.0.1".into()] } else { extra.to_vec() }
}

/// One line of the index: what the root issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub serial: String,
    /// `coordinator`, `issuing-ca`, `worker` or `client`.
    pub kind: String,
    pub name: String,
    /// Unix seconds.
    pub not_after: i64,
}

fn record_issued(
    dir: &Path,
    serial: &SerialNumber,
    kind: &str,
    name: &str,
    not_after: time::OffsetDateTime,
) -> Result<(), TlsError> {
    let path = dir.join(INDEX);
    let mut f = qala_common::files::open_append(&path, 0o644).map_err(|e| io_err(&path, e))?;
    writeln!(f, "{}\t{kind}\t{name}\t{}", serial_hex(serial), not_after.unix_timestamp()).map_err(|e| io_err(&path, e))
}

/// What the root of the PKI in `dir` issued, oldest first.
pub fn issued(dir: &Path) -> Result<Vec<Issued>, TlsError> {
    let path = dir.join(INDEX);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(&path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some(Issued {
                serial: f.next()?.to_string(),
                kind: f.next()?.to_string(),
                name: f.next()?.to_string(),
                not_after: f.next()?.parse().ok()?,
            })
        })
        .collect())
}

/// Create a PKI in `dir`: the root CA, its (empty) revocation list, and
/// the first coordinator's certificate and issuing CA (named `name`), at
/// the top of `dir`. Refuses to overwrite an existing CA.
pub fn init(dir: &Path, name_: &str, hosts: &[String]) -> Result<(), TlsError> {
    check_name("coordinator name", name_)?;
    if dir.join(CA_CERT).exists() || dir.join(CA_KEY).exists() {
        return Err(TlsError::Config(format!("{} already holds a CA; not overwriting it", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let mut params = CertificateParams::default();
    let mut tag = [0u8; 4];
    rand::rng().fill_bytes(&mut tag);
    params.distinguished_name = ca_name("Qala cluster CA", &format!("cluster {}", hex_of(&tag)));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(random_serial());
    validity(&mut params, CA_LIFETIME);
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    write_file(&dir.join(CA_KEY), &key.serialize_pem(), true)?;
    write_file(&dir.join(CA_CERT), &cert.pem(), false)?;
    write_root_crl(dir)?;
    coordinator_files(dir, dir, name_, hosts)
}

/// Sign a new key for `uri` with the root: (cert PEM, key PEM), recorded
/// in the index.
fn issue(dir: &Path, kind: &str, uri: &str, cn: &str, hosts: &[String]) -> Result<(String, String), TlsError> {
    let issuer = root(dir)?;
    let key = KeyPair::generate().map_err(err)?;
    let params = leaf_params(uri, cn, hosts, LEAF_LIFETIME)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    record_issued(dir, params.serial_number.as_ref().expect("set"), kind, cn, params.not_after)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A coordinator's material in `out`: its certificate and key, its
/// issuing CA and key, the root certificate and revocation list.
fn coordinator_files(dir: &Path, out: &Path, name_: &str, hosts: &[String]) -> Result<(), TlsError> {
    let (cert, key) = issue(dir, "coordinator", &format!("qala:coordinator:{name_}"), name_, &coordinator_hosts(hosts))?;
    // The issuing CA: end certificates only (path length 0), and lists.
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name(&format!("Qala issuing CA {name_}"), &cluster_tag(dir)?);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params, LEAF_LIFETIME);
    let issuing_key = KeyPair::generate().map_err(err)?;
    let issuing = params.signed_by(&issuing_key, &root(dir)?).map_err(err)?;
    record_issued(dir, params.serial_number.as_ref().expect("set"), "issuing-ca", name_, params.not_after)?;
    if out != dir {
        write_file(&out.join(CA_CERT), &read(&dir.join(CA_CERT))?, false)?;
        write_file(&out.join(CRL), &read(&dir.join(CRL))?, false)?;
    }
    write_file(&out.join(ISSUING_KEY), &issuing_key.serialize_pem(), true)?;
    write_file(&out.join(ISSUING_CERT), &issuing.pem(), false)?;
    write_file(&out.join(COORDINATOR_KEY), &key, true)?;
    write_file(&out.join(COORDINATOR_CERT), &cert, false)
}

/// `dir/<sub>/<name>/` with the root certificate and revocation list, a
/// certificate and its key.
fn bundle(
    dir: &Path,
    sub: &str,
    kind: &str,
    name_: &str,
    files: (&str, &str),
    uri: &str,
    hosts: &[String],
) -> Result<PathBuf, TlsError> {
    let out = dir.join(sub).join(name_);
    std::fs::create_dir_all(&out).map_err(|e| io_err(&out, e))?;
    let (cert, key) = issue(dir, kind, uri, name_, hosts)?;
    write_file(&out.join(CA_CERT), &read(&dir.join(CA_CERT))?, false)?;
    write_file(&out.join(CRL), &read(&dir.join(CRL))?, false)?;
    write_file(&out.join(files.1), &key, true)?;
    write_file(&out.join(files.0), &cert, false)?;
    Ok(out)
}

/// Another coordinator's material: `dir/coordinators/NAME/` (its
/// certificate, its issuing CA, the root certificate and list).
pub fn coordinator(dir: &Path, name_: &str, hosts: &[String]) -> Result<PathBuf, TlsError> {
    check_name("coordinator name", name_)?;
    let out = dir.join("coordinators").join(name_);
    std::fs::create_dir_all(&out).map_err(|e| io_err(&out, e))?;
    coordinator_files(dir, &out, name_, hosts)?;
    Ok(out)
}

/// A worker's certificate: `dir/workers/ID/`, to copy to the worker's host.
pub fn worker(dir: &Path, id: &str, hosts: &[String]) -> Result<PathBuf, TlsError> {
    check_name("worker id", id)?;
    let uri = format!("qala:worker:{id}");
    bundle(dir, "workers", "worker", id, (WORKER_CERT, WORKER_KEY), &uri, &worker_hosts(hosts))
}

/// A client certificate (`qala:client:ROLE:NAME`), for a client that
/// authenticates with a certificate instead of a token:
/// `dir/clients/NAME/` (ca.pem, crl.pem, client.pem, client-key.pem).
pub fn client(dir: &Path, name_: &str, role: &str) -> Result<PathBuf, TlsError> {
    check_name("client name", name_)?;
    check_name("role", role)?;
    bundle(dir, "clients", "client", name_, (CLIENT_CERT, CLIENT_KEY), &format!("qala:client:{role}:{name_}"), &[])
}

/// What `pki revoke` revokes.
#[derive(Debug, Clone)]
pub enum Revoke {
    /// One certificate, by its serial (hex).
    Serial(String),
    /// Every certificate of this coordinator, and its issuing CA.
    Coordinator(String),
    /// Every hand-made certificate of this worker id.
    Worker(String),
    /// Every certificate of this client name.
    Client(String),
}

/// Revoke with the root of `dir`: the serials are added to `revoked.tsv`
/// and a new root list is written to `dir/crl.pem`. Returns the serials
/// newly revoked (an error if there are none).
pub fn revoke(dir: &Path, what: &Revoke) -> Result<Vec<Issued>, TlsError> {
    root(dir)?;
    let index = issued(dir)?;
    let matching: Vec<Issued> = match what {
        Revoke::Serial(s) => {
            let s = s.trim().trim_start_matches("0x").replace(':', "").to_ascii_lowercase();
            index.iter().filter(|i| i.serial == s).cloned().collect()
        }
        Revoke::Coordinator(n) => {
            index.iter().filter(|i| (i.kind == "coordinator" || i.kind == "issuing-ca") && &i.name == n).cloned().collect()
        }
        Revoke::Worker(n) => index.iter().filter(|i| i.kind == "worker" && &i.name == n).cloned().collect(),
        Revoke::Client(n) => index.iter().filter(|i| i.kind == "client" && &i.name == n).cloned().collect(),
    };
    if matching.is_empty() {
        return Err(TlsError::Config(format!("{what:?}: the root of {} issued no such certificate", dir.display())));
    }
    let already: Vec<String> = revoked_serials(dir)?.into_iter().map(|(s, _)| s).collect();
    let fresh: Vec<Issued> = matching.into_iter().filter(|i| !already.contains(&i.serial)).collect();
    if fresh.is_empty() {
        return Err(TlsError::Config(format!("{what:?}: already revoked")));
    }
    let path = dir.join(REVOKED);
    let mut f = qala_common::files::open_append(&path, 0o644).map_err(|e| io_err(&path, e))?;
    let at = now().unix_timestamp();
    for i in &fresh {
        writeln!(f, "{}\t{at}\t{}\t{}", i.serial, i.kind, i.name).map_err(|e| io_err(&path, e))?;
    }
    drop(f);
    write_root_crl(dir)?;
    Ok(fresh)
}

/// (serial, revoked at) of `revoked.tsv`.
fn revoked_serials(dir: &Path) -> Result<Vec<(String, i64)>, TlsError> {
    let path = dir.join(REVOKED);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect())
}

/// The next CRL number after the list at `path`: at least the time in
/// seconds, so lists made on two machines still go forward.
fn next_crl_number(path: &Path) -> u64 {
    let held = CrlSet::new();
    let previous = held
        .load(path)
        .ok()
        .and_then(|_| held.lists().first().cloned())
        .map(|c| c.number.iter().fold(0u64, |n, b| n.saturating_mul(256).saturating_add(*b as u64)));
    let now = now().unix_timestamp().max(0) as u64;
    previous.map_or(now, |p| p.saturating_add(1).max(now))
}

/// A revocation list of `serials` (hex, revoked at Unix seconds) signed by `issuer`.
fn crl_der(issuer: &Issuer<'_, KeyPair>, serials: &[(String, i64)], number: u64) -> Result<Vec<u8>, TlsError> {
    let revoked_certs = serials
        .iter()
        .map(|(s, at)| {
            let bytes = (0..s.len() / 2)
                .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| TlsError::Config(format!("serial {s:?} is not hex")))?;
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: time::OffsetDateTime::from_unix_timestamp(*at).unwrap_or_else(|_| now()),
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, TlsError>>()?;
    let params = CertificateRevocationListParams {
        this_update: now() - time::Duration::minutes(5),
        next_update: now() + time::Duration::seconds(CRL_LIFETIME.as_secs() as i64),
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(issuer).map_err(err)?.der().to_vec())
}

/// Write the root's list of `revoked.tsv` to `dir/crl.pem`.
fn write_root_crl(dir: &Path) -> Result<(), TlsError> {
    let path = dir.join(CRL);
    let der = crl_der(&root(dir)?, &revoked_serials(dir)?, next_crl_number(&path))?;
    write_atomic(&path, pem_of("X509 CRL", &der).as_bytes())
}

/// A coordinator's issuing CA: signs enrolled workers' certificates and
/// its own revocation list.
pub struct IssuingCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    /// The CA's subject, e.g. `CN=Qala issuing CA main, O=Qala`: the issuer
    /// of what it signs.
    pub name: String,
}

/// A certificate an issuing CA signed.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The certificate and the issuing CA's after it (the chain to present).
    pub chain_pem: String,
    pub serial: String,
    /// Unix milliseconds.
    pub not_after_ms: i64,
}

impl IssuingCa {
    /// The issuing CA in `dir` (`issuing-ca.pem`, `issuing-ca-key.pem`),
    /// `None` if `dir` has none.
    pub fn load(dir: &Path) -> Result<Option<Self>, TlsError> {
        let (cert, key) = (dir.join(ISSUING_CERT), dir.join(ISSUING_KEY));
        if !cert.exists() && !key.exists() {
            return Ok(None);
        }
        let cert_pem = read(&cert)?;
        let subject = crate::PeerCert::subject_of(&crate::load_certs(&cert)?[0]).map_err(|e| io_err(&cert, e))?;
        Ok(Some(Self { issuer: issuer_from(&cert, &key)?, cert_pem, name: subject }))
    }

    /// Sign an enrolling worker's CSR (whose signature proves it holds the
    /// key). Only the CSR's public key is used: the coordinator decides
    /// what the certificate says (`qala:worker:ID`, `hosts`, `lifetime`).
    pub fn sign_worker(&self, csr_pem: &str, id: &str, hosts: &[String], lifetime: Duration) -> Result<Signed, TlsError> {
        check_name("worker id", id)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| err(format!("certificate request: {e}")))?;
        let params = leaf_params(&format!("qala:worker:{id}"), id, hosts, lifetime)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer).map_err(err)?;
        Ok(Signed {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            serial: serial_hex(params.serial_number.as_ref().expect("set")),
            not_after_ms: params.not_after.unix_timestamp() * 1000,
        })
    }

    /// This CA's revocation list of `serials` (hex, revoked at Unix
    /// seconds), numbered `number`.
    pub fn crl(&self, serials: &[(String, i64)], number: u64) -> Result<Vec<u8>, TlsError> {
        crl_der(&self.issuer, serials, number)
    }
}

/// A key pair and a certificate signing request for worker `id` (the
/// enrolling worker's side): (CSR PEM, key PEM).
pub fn worker_csr(id: &str) -> Result<(String, String), TlsError> {
    check_name("worker id", id)?;
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.distinguished_name = name(id);
    let csr = params.serialize_request(&key).map_err(err)?;
    Ok((csr.pem().map_err(err)?, key.serialize_pem()))
}

/// Write an enrolled worker's material to `dir` (as `pki worker` lays it
/// out): the root certificate, the certificate chain and its key.
pub fn write_worker_dir(dir: &Path, ca_pem: &str, chain_pem: &str, key_pem: &str) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    write_file(&dir.join(CA_CERT), ca_pem, false)?;
    // Key first: the certificate's change is what reloads the server.
    write_file(&dir.join(WORKER_KEY), key_pem, true)?;
    write_file(&dir.join(WORKER_CERT), chain_pem, false)
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
        assert!(w.join(CRL).exists(), "a worker directory holds the root's revocation list");
        let cert = PeerCert::parse(&load_certs(&w.join(WORKER_CERT)).unwrap()[0]).unwrap();
        assert_eq!(cert.worker_id().as_deref(), Some("w1"));
        assert!(cert.names_host("10.0.0.7") && !cert.names_host("127.0.0.1"));
        let w2 = PeerCert::parse(&load_certs(&worker(d.path(), "w2", &[]).unwrap().join(WORKER_CERT)).unwrap()[0]).unwrap();
        assert_ne!(cert.serial, w2.serial, "serials are random");
        assert_eq!(cert.serial.len(), 32);

        let ca = IssuingCa::load(d.path()).unwrap().expect("init makes an issuing CA");
        assert!(ca.name.starts_with("CN=Qala issuing CA main, O=Qala, OU=cluster "), "{}", ca.name);
        let root = PeerCert::subject_of(&load_certs(&d.path().join(CA_CERT)).unwrap()[0]).unwrap();
        assert_eq!(root.rsplit_once("OU=").unwrap().1, ca.name.rsplit_once("OU=").unwrap().1, "one cluster tag");
        let (csr, _key) = worker_csr("w9").unwrap();
        let signed = ca.sign_worker(&csr, "w9", &[], Duration::from_secs(600)).unwrap();
        let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(signed.chain_pem.as_bytes()).collect();
        assert_eq!(chain.len(), 2, "the certificate and its issuing CA's");
        let cert = PeerCert::parse(chain[0].as_ref().unwrap()).unwrap();
        assert_eq!(cert.worker_id().as_deref(), Some("w9"));
        assert_eq!(cert.serial, signed.serial);
        assert!(cert.dns.is_empty() && cert.ips.is_empty(), "no host unless the coordinator allows one");
        assert!(cert.not_after - cert.not_before <= 600 + 300 + 1);
        assert!(check_name("worker id", "../etc").is_err());
        assert!(ca.sign_worker("not a request", "w9", &[], Duration::from_secs(600)).is_err());
    }

    #[test]
    fn revocation_lists_grow_and_go_forward() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), "main", &[]).unwrap();
        let set = CrlSet::with_roots(&d.path().join(CA_CERT)).unwrap();
        assert_eq!(set.load(&d.path().join(CRL)).unwrap(), 1);
        assert!(set.lists()[0].serials.is_empty());
        worker(d.path(), "w1", &[]).unwrap();
        coordinator(d.path(), "second", &[]).unwrap();
        let revoked = revoke(d.path(), &Revoke::Coordinator("second".into())).unwrap();
        assert_eq!(revoked.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>(), ["coordinator", "issuing-ca"]);
        assert!(revoke(d.path(), &Revoke::Coordinator("second".into())).is_err(), "already revoked");
        assert!(revoke(d.path(), &Revoke::Worker("nobody".into())).is_err());
        let w1 = revoke(d.path(), &Revoke::Worker("w1".into())).unwrap();
        assert_eq!(set.load(&d.path().join(CRL)).unwrap(), 1, "a newer list replaces the first");
        let list = &set.lists()[0];
        assert_eq!(list.serials.len(), 3);
        assert!(list.serials.contains(&w1[0].serial));
        // An older list is not taken back.
        let old = set.lists()[0].clone();
        revoke(d.path(), &Revoke::Client("x".into())).unwrap_err();
        assert_eq!(set.merge([old.der.as_slice()]).unwrap(), 0);
        // A newer list under the root's name but signed by another key is refused.
        let ca_pem = std::fs::read_to_string(d.path().join(CA_CERT)).unwrap();
        let forger = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::generate().unwrap()).unwrap();
        let forged = crl_der(&forger, &[], u64::MAX / 2).unwrap();
        let e = set.merge([forged.as_slice()]).unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");
        assert_eq!(set.lists()[0].serials.len(), 3, "the genuine list stays");
        // A set of the roots' lists only leaves the others out.
        let roots_only = CrlSet::of_roots(&d.path().join(CA_CERT)).unwrap();
        let ca = IssuingCa::load(d.path()).unwrap().unwrap();
        let issuing_list = ca.crl(&[], 1).unwrap();
        assert_eq!(roots_only.merge([issuing_list.as_slice()]).unwrap(), 0);
        assert_eq!(set.merge([issuing_list.as_slice()]).unwrap(), 1);
    }
}
