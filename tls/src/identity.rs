//! Who a certificate says its holder is.
//!
//! Qala certificates name their role and identity in a SAN URI:
//! `qala:worker:ID`, `qala:coordinator:NAME` or, for a client that uses a
//! certificate instead of a token, `qala:client:ROLE:NAME`; their DNS and
//! IP SANs are the addresses the holder may be reached at.

use crate::error::TlsError;
use std::net::IpAddr;
use x509_parser::prelude::*;

/// The role a certificate was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertRole {
    Worker(String),
    Coordinator(String),
    /// A client: its role (as a token's) and name.
    Client {
        role: String,
        name: String,
    },
}

/// What Qala reads from a (verified) leaf certificate.
#[derive(Debug, Clone, Default)]
pub struct PeerCert {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Serial number, lower-case hex (as revocation lists name it).
    pub serial: String,
    /// The issuer's distinguished name, e.g. `CN=Qala issuing CA main, O=Qala`.
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Serials of the other certificates the peer presented (its issuing
    /// CA's): a revoked issuer revokes what it signed.
    pub chain: Vec<String>,
}

impl PeerCert {
    /// Parse a DER certificate (already verified by the TLS handshake).
    pub fn parse(der: &[u8]) -> Result<Self, TlsError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| TlsError::Certificate(e.to_string()))?;
        let mut out = PeerCert {
            serial: cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect(),
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            ..Default::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => out.uris.push(u.to_string()),
                    GeneralName::DNSName(d) => out.dns.push(d.to_ascii_lowercase()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => out.ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                        16 => out.ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// The leaf of a presented chain, with the serials of the rest.
    pub fn parse_chain(certs: &[impl AsRef<[u8]>]) -> Result<Self, TlsError> {
        let leaf = certs.first().ok_or_else(|| TlsError::Certificate("no certificate".into()))?;
        let mut out = Self::parse(leaf.as_ref())?;
        for c in &certs[1..] {
            if let Ok((_, cert)) = X509Certificate::from_der(c.as_ref()) {
                out.chain.push(cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect());
            }
        }
        Ok(out)
    }

    /// This certificate's serial and its chain's.
    pub fn serials(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.serial.as_str()).chain(self.chain.iter().map(String::as_str))
    }

    /// The subject's distinguished name of a DER certificate.
    pub fn subject_of(der: &[u8]) -> Result<String, TlsError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(cert.subject().to_string())
    }

    /// The Qala role in the certificate, if it names exactly one.
    pub fn role(&self) -> Option<CertRole> {
        let mut roles = self.uris.iter().filter_map(|u| {
            let rest = u.strip_prefix("qala:")?;
            let (kind, id) = rest.split_once(':')?;
            if id.is_empty() {
                return None;
            }
            match kind {
                "worker" => Some(CertRole::Worker(id.to_string())),
                "coordinator" => Some(CertRole::Coordinator(id.to_string())),
                "client" => {
                    let (role, name) = id.split_once(':')?;
                    (!role.is_empty() && !name.is_empty())
                        .then(|| CertRole::Client { role: role.to_string(), name: name.to_string() })
                }
                _ => None,
            }
        });
        let first = roles.next()?;
        roles.next().is_none().then_some(first)
    }

    /// The worker id, if this is a worker certificate.
    pub fn worker_id(&self) -> Option<String> {
        match self.role()? {
            CertRole::Worker(id) => Some(id),
            CertRole::Coordinator(_) | CertRole::Client { .. } => None,
        }
    }

    /// Whether the certificate names `host` (a DNS name or an IP address).
    pub fn names_host(&self, host: &str) -> bool {
        match host.parse::<IpAddr>() {
            Ok(ip) => self.ips.contains(&ip),
            Err(_) => self.dns.iter().any(|d| d.eq_ignore_ascii_case(host)),
        }
    }
}
