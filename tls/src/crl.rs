//! Certificate revocation lists: the certificates, by serial, that their
//! issuers no longer vouch for.
//!
//! A [`CrlSet`] holds at most one list per issuer (the root CA, each
//! coordinator's issuing CA), the newest by CRL number: an older list never
//! replaces a newer one, so nobody can bring a revoked certificate back by
//! replaying an old list. A list issued by a root of the cluster CA file is
//! taken only if the root's signature holds. Every TLS endpoint built with
//! a set ([`crate::ServerTls::load`], [`crate::secure_endpoint`])
//! follows it as it changes; [`CrlSet::version`] counts the changes.

use crate::error::TlsError;
use crate::pem::load_certs;
use rustls_pki_types::CertificateRevocationListDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use x509_parser::prelude::*;

/// One revocation list, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    pub der: Vec<u8>,
    /// The issuer's distinguished name, e.g. `CN=Qala cluster CA, O=Qala`.
    pub issuer: String,
    /// The issuer's name as encoded (what certificates' issuer fields match).
    pub issuer_raw: Vec<u8>,
    /// The CRL number, big-endian without leading zeros.
    pub number: Vec<u8>,
    /// Unix seconds.
    pub this_update: i64,
    /// Serials revoked, lower-case hex.
    pub serials: Vec<String>,
}

impl Crl {
    /// Parse a DER revocation list.
    pub fn parse(der: &[u8]) -> Result<Self, TlsError> {
        let bad = |e: String| TlsError::Certificate(format!("certificate revocation list: {e}"));
        let (rest, crl) = parse_x509_crl(der).map_err(|e| bad(e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes".into()));
        }
        let number = crl.crl_number().map(|n| n.to_bytes_be()).unwrap_or_default();
        let number = number.iter().skip_while(|b| **b == 0).copied().collect();
        Ok(Self {
            der: der.to_vec(),
            issuer: crl.issuer().to_string(),
            issuer_raw: crl.issuer().as_raw().to_vec(),
            number,
            this_update: crl.last_update().timestamp(),
            serials: crl.iter_revoked_certificates().map(|r| hex_of(r.raw_serial())).collect(),
        })
    }

    /// Whether this list is newer than `other` (a higher CRL number).
    fn newer_than(&self, other: &Crl) -> bool {
        (self.number.len(), &self.number) > (other.number.len(), &other.number)
    }

    /// The CRL number in hex (`0` when it has none).
    pub fn number_hex(&self) -> String {
        if self.number.is_empty() { "0".into() } else { hex_of(&self.number) }
    }

    pub fn pem(&self) -> String {
        pem_of("X509 CRL", &self.der)
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// PEM text of `der` under `label` (the `pem` crate).
pub(crate) fn pem_of(label: &str, der: &[u8]) -> String {
    ::pem::encode_config(&::pem::Pem::new(label, der), ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF))
}

/// A root CA whose lists are checked before they are taken.
struct Root {
    subject_raw: Vec<u8>,
    subject: String,
    spki_der: Vec<u8>,
}

#[derive(Default)]
struct State {
    version: u64,
    lists: BTreeMap<Vec<u8>, Crl>,
}

/// The revocation lists an endpoint goes by; shared, changing as newer
/// lists arrive.
#[derive(Default)]
pub struct CrlSet {
    roots: Vec<Root>,
    /// Take the roots' lists only (an agent's or worker's set: they check
    /// coordinators, which only a root signs; a list of an issuing CA they
    /// cannot check would only make them refuse).
    roots_only: bool,
    state: RwLock<State>,
}

impl std::fmt::Debug for CrlSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("CrlSet").field("version", &s.version).field("issuers", &s.lists.len()).finish()
    }
}

impl CrlSet {
    /// An empty set that takes lists of any issuer unchecked (their
    /// signatures are checked where they are used, in the handshake).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An empty set that takes only the lists of the roots in `ca` (a PEM
    /// file), their signatures checked: what checks coordinators needs.
    pub fn of_roots(ca: &Path) -> Result<Arc<Self>, TlsError> {
        let mut set = Self::roots_of(ca)?;
        set.roots_only = true;
        Ok(Arc::new(set))
    }

    /// An empty set that checks the signature of lists issued by the roots
    /// in `ca` (a PEM file) before taking them, and takes the others (each
    /// coordinator's issuing CA's) as they are: what checks workers needs.
    pub fn with_roots(ca: &Path) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self::roots_of(ca)?))
    }

    fn roots_of(ca: &Path) -> Result<Self, TlsError> {
        let mut roots = Vec::new();
        for der in load_certs(ca)? {
            let (_, cert) = X509Certificate::from_der(der.as_ref())
                .map_err(|e| TlsError::File { path: ca.display().to_string(), message: e.to_string() })?;
            roots.push(Root {
                subject_raw: cert.subject().as_raw().to_vec(),
                subject: cert.subject().to_string(),
                spki_der: cert.public_key().raw.to_vec(),
            });
        }
        Ok(Self { roots, roots_only: false, state: RwLock::default() })
    }

    /// Take the lists in `ders` that are newer than the ones held for their
    /// issuers; the number taken. A list that does not parse, or whose root
    /// signature does not hold, is an error (the others are still taken).
    pub fn merge<'a>(&self, ders: impl IntoIterator<Item = &'a [u8]>) -> Result<usize, TlsError> {
        let mut taken = 0;
        let mut first_error = None;
        for der in ders {
            match self.check(der) {
                Ok(crl) if self.roots_only && !self.is_root(&crl.issuer_raw) => {}
                Ok(crl) => {
                    let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                    let newer = state.lists.get(&crl.issuer_raw).is_none_or(|held| crl.newer_than(held));
                    if newer {
                        state.lists.insert(crl.issuer_raw.clone(), crl);
                        state.version += 1;
                        taken += 1;
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if taken == 0 => Err(e),
            Some(e) => {
                tracing::warn!(error = %e, "a certificate revocation list was not taken");
                Ok(taken)
            }
            None => Ok(taken),
        }
    }

    /// Parse `der` and, if a root issued it, check the root's signature.
    pub fn check(&self, der: &[u8]) -> Result<Crl, TlsError> {
        let crl = Crl::parse(der)?;
        if let Some(root) = self.roots.iter().find(|r| r.subject_raw == crl.issuer_raw) {
            let (_, parsed) = parse_x509_crl(der).map_err(|e| TlsError::Certificate(e.to_string()))?;
            let (_, spki) = SubjectPublicKeyInfo::from_der(&root.spki_der).map_err(|e| TlsError::Certificate(e.to_string()))?;
            parsed.verify_signature(&spki).map_err(|e| {
                TlsError::Certificate(format!("certificate revocation list of {}: signature does not hold ({e})", crl.issuer))
            })?;
        }
        Ok(crl)
    }

    /// Whether `issuer` (an encoded name) is one of the roots this set checks lists of.
    pub fn is_root(&self, issuer: &[u8]) -> bool {
        self.roots.iter().any(|r| r.subject_raw == issuer)
    }

    /// Whether `issuer` (a distinguished name as text) is one of the roots.
    pub fn is_root_name(&self, issuer: &str) -> bool {
        self.roots.iter().any(|r| r.subject == issuer)
    }

    /// Whether a list in force names `serial` (lower-case hex).
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.state.read().unwrap_or_else(|p| p.into_inner()).lists.values().any(|l| l.serials.iter().any(|s| s == serial))
    }

    /// Whether a list in force revokes `cert` or a certificate of the chain
    /// it came with: a connection opened before the revocation is refused at
    /// its next call.
    pub fn revokes(&self, cert: &crate::identity::PeerCert) -> bool {
        cert.serials().any(|s| self.is_revoked(s))
    }

    /// Whether any list is held (with none, certificate-authenticated
    /// callers are refused: nothing says they are not revoked).
    pub fn known(&self) -> bool {
        !self.state.read().unwrap_or_else(|p| p.into_inner()).lists.is_empty()
    }

    /// Counts the changes: a holder rebuilds what depends on the lists when it moves.
    pub fn version(&self) -> u64 {
        self.state.read().unwrap_or_else(|p| p.into_inner()).version
    }

    pub fn lists(&self) -> Vec<Crl> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).lists.values().cloned().collect()
    }

    pub fn ders(&self) -> Vec<Vec<u8>> {
        self.lists().into_iter().map(|c| c.der).collect()
    }

    pub(crate) fn rustls_crls(&self) -> Vec<CertificateRevocationListDer<'static>> {
        self.lists().into_iter().map(|c| CertificateRevocationListDer::from(c.der)).collect()
    }

    /// A digest of the lists held: equal digests, equal lists (what a
    /// worker or agent says it holds, so a coordinator sends lists only
    /// when they differ).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for c in self.lists() {
            h.update((c.der.len() as u64).to_be_bytes());
            h.update(&c.der);
        }
        hex_of(&h.finalize())
    }

    /// Merge the lists of a PEM file (`X509 CRL` blocks); a missing file
    /// is none.
    pub fn load(&self, path: &Path) -> Result<usize, TlsError> {
        let file_err = |e: &dyn std::fmt::Display| TlsError::File { path: path.display().to_string(), message: e.to_string() };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(file_err(&e)),
        };
        let ders = CertificateRevocationListDer::pem_slice_iter(&text)
            .map(|d| d.map(|d| d.as_ref().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err(&e))?;
        self.merge(ders.iter().map(|d| d.as_slice())).map_err(|e| file_err(&e))
    }

    /// Write the lists held to `path` as PEM (0644, replaced atomically).
    pub fn save(&self, path: &Path) -> Result<(), TlsError> {
        let text: String = self.lists().iter().map(Crl::pem).collect();
        write_atomic(path, text.as_bytes())
    }
}

/// Write `data` to `path` through a temporary file in the same directory.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    let err = |e: std::io::Error| TlsError::File { path: path.display().to_string(), message: e.to_string() };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    qala_common::files::replace(path, data, 0o644).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        for len in [0usize, 1, 2, 3, 4, 47, 48, 49, 200] {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let pem = pem_of("X509 CRL", &der);
            let back = CertificateRevocationListDer::from_pem_slice(pem.as_bytes());
            if len == 0 {
                continue;
            }
            assert_eq!(back.unwrap().as_ref(), der.as_slice(), "{len}");
        }
    }
}
