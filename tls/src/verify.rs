//! Who a client accepts at the other end of a connection made through the
//! cluster CA: not any certificate the CA signed, but the role it dialled.
//!
//! Every Qala client of a coordinator (agent, admin CLI, worker
//! registration, renewal and enrollment) requires `qala:coordinator:` in
//! the server's certificate, as well as the CA's signature, the host name
//! and a certificate not on the revocation list; a coordinator dialling a
//! worker requires `qala:worker:<the id it registered>` (and the CA and
//! the revocation list: the id, not the address, is what a worker is, so
//! its certificate need not name the address it advertises). A certificate
//! of another role is refused during the handshake, before a request (and
//! its bearer token) is sent.

use crate::crl::CrlSet;
use crate::error::TlsError;
use crate::identity::{CertRole, PeerCert};
use crate::pem::load_certs;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};
use std::path::Path;
use std::sync::{Arc, Mutex};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The server a client means to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Any coordinator of the cluster (`qala:coordinator:NAME`), at the
    /// host name dialled.
    Coordinator,
    /// The worker registered under this id (`qala:worker:ID`), wherever it
    /// listens.
    Worker(String),
}

impl Expect {
    fn describe(&self) -> String {
        match self {
            Expect::Coordinator => "a coordinator's".into(),
            Expect::Worker(id) => format!("worker {id:?}'s"),
        }
    }

    fn accepts(&self, role: &Option<CertRole>) -> bool {
        match (self, role) {
            (Expect::Coordinator, Some(CertRole::Coordinator(_))) => true,
            (Expect::Worker(want), Some(CertRole::Worker(id))) => want == id,
            _ => false,
        }
    }
}

pub(crate) fn describe_role(role: &Option<CertRole>) -> String {
    match role {
        Some(CertRole::Coordinator(n)) => format!("coordinator {n:?}'s"),
        Some(CertRole::Worker(id)) => format!("worker {id:?}'s"),
        Some(CertRole::Client { role, name }) => format!("client {name:?}'s ({role})"),
        None => "one without a Qala role".into(),
    }
}

/// The refusal of a certificate of the wrong role or identity: one line
/// that says what was presented and what was wanted.
#[derive(Debug)]
pub(crate) struct WrongPeer(pub(crate) String);

impl std::fmt::Display for WrongPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WrongPeer {}

/// What the holder of a certificate may claim depends on who signed it:
/// a coordinator's or a client's certificate (`qala:coordinator:`,
/// `qala:client:`) must be signed by a root of the cluster CA itself, not by
/// a coordinator's issuing CA (which signs only enrolled workers). So a
/// coordinator's issuing key, stolen, mints no coordinator and no admin.
/// `Err` says why a (chain-verified) certificate is refused.
pub(crate) fn check_issuer(leaf: &[u8], roots: &Roots) -> Result<Option<CertRole>, String> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| e.to_string())?;
    let role = PeerCert::parse(leaf).ok().and_then(|c| c.role());
    if matches!(role, Some(CertRole::Coordinator(_) | CertRole::Client { .. })) && !roots.is_subject(cert.issuer().as_raw()) {
        return Err(format!(
            "{} certificate is signed by {}, not by the cluster's root CA: only workers are enrolled by an issuing CA",
            describe_role(&role),
            cert.issuer()
        ));
    }
    Ok(role)
}

/// The roots of the cluster CA file: what verifiers trust, and the
/// subjects that may sign coordinators and clients.
#[derive(Debug, Clone)]
pub struct Roots {
    pub(crate) store: Arc<rustls::RootCertStore>,
    subjects: Vec<Vec<u8>>,
}

impl Roots {
    pub fn load(ca: &Path) -> Result<Self, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        let mut subjects = Vec::new();
        let file_err = |e: &dyn std::fmt::Display| TlsError::File { path: ca.display().to_string(), message: e.to_string() };
        for c in load_certs(ca)? {
            let (_, cert) = X509Certificate::from_der(c.as_ref()).map_err(|e| file_err(&e))?;
            subjects.push(cert.subject().as_raw().to_vec());
            store.add(c).map_err(|e| file_err(&e))?;
        }
        Ok(Self { store: Arc::new(store), subjects })
    }

    fn is_subject(&self, name: &[u8]) -> bool {
        self.subjects.iter().any(|s| s == name)
    }
}

/// A server certificate verifier: the cluster CA, the revocation lists
/// (followed as they change) and the role (and identity) expected.
#[derive(Debug)]
pub struct PeerVerifier {
    roots: Roots,
    crls: Arc<CrlSet>,
    expect: Expect,
    /// The web PKI verifier for the lists of one version of `crls`.
    inner: Mutex<(u64, Arc<WebPkiServerVerifier>)>,
}

fn web_pki(roots: &Roots, crls: &CrlSet) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut builder = WebPkiServerVerifier::builder(roots.store.clone());
    // No list yet (a client's first contact): the chain alone. Once any is
    // known, every certificate of the chain needs its issuer's list.
    let lists = crls.rustls_crls();
    if !lists.is_empty() {
        builder = builder.with_crls(lists);
    }
    builder.build().map_err(|e| TlsError::Config(e.to_string()))
}

impl PeerVerifier {
    /// Verify against the CA certificates in `ca` (a PEM file) and the
    /// revocation lists in `crls`, expecting `expect`.
    pub fn new(ca: &Path, crls: Arc<CrlSet>, expect: Expect) -> Result<Arc<Self>, TlsError> {
        let roots = Roots::load(ca)?;
        let inner = web_pki(&roots, &crls).map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
        let version = crls.version();
        Ok(Arc::new(Self { roots, inner: Mutex::new((version, inner)), crls, expect }))
    }

    fn inner(&self) -> Result<Arc<WebPkiServerVerifier>, Error> {
        let mut held = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let version = self.crls.version();
        if held.0 != version {
            let fresh = web_pki(&self.roots, &self.crls).map_err(|e| Error::General(e.to_string()))?;
            *held = (version, fresh);
        }
        Ok(held.1.clone())
    }
}

/// A refusal that reads as one plain line (rustls shows an `Other`
/// error's text; a certificate error's, only its debug form).
pub(crate) fn refused(why: String) -> Error {
    Error::Other(OtherError(Arc::new(WrongPeer(why))))
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.inner()?.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(_) => {}
            // A worker is its id, not its address: the name is the last
            // thing the web PKI verifier checks, so this error means the
            // CA's signature, the validity and the revocation list held.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if matches!(self.expect, Expect::Worker(_)) => {}
            Err(e) => return Err(e),
        }
        let role = check_issuer(end_entity.as_ref(), &self.roots).map_err(refused)?;
        if !self.expect.accepts(&role) {
            return Err(refused(format!(
                "the server presented {} certificate where {} was expected",
                describe_role(&role),
                self.expect.describe()
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}
