//! Qala's TLS plumbing, shared by the coordinator, the worker and the agent.
//!
//! - one crypto provider for everything: rustls with `ring` ([`install_crypto_provider`]);
//! - servers accept through [`ServerTls`], whose certificate, key and client
//!   CA are files reloaded when they change ([`incoming`] hands tonic one
//!   connection type for TLS and plain text, with the peer's certificates);
//! - clients dial through [`secure_endpoint`]: the cluster CA, the role
//!   expected of the server ([`Expect`]) and the revocation lists;
//! - revocation lists, newest per issuer, shared by every endpoint of a
//!   process and followed as they change ([`CrlSet`]);
//! - certificates carry their role and identity in a SAN URI
//!   (`qala:worker:ID`, `qala:coordinator:NAME`): [`PeerCert`];
//! - with the `pki` feature, the small certificate authority behind
//!   `qala-coordinator pki` and worker enrollment ([`pki`]).

mod client;
mod crl;
mod error;
mod identity;
mod pem;
#[cfg(feature = "pki")]
pub mod pki;
mod server;
mod verify;

pub use client::{BearerToken, certificate_refused, client_config, read_token, rustls_client_config, secure_endpoint};
pub use crl::{Crl, CrlSet};
pub use error::TlsError;
pub use identity::{CertRole, PeerCert};
pub use pem::{load_certs, load_key};
pub use server::{ClientAuth, Conn, PeerInfo, ServerTls, ServerTlsFiles, incoming, peer_info};
pub use verify::{Expect, PeerVerifier, Roots};

use std::net::SocketAddr;

/// Make rustls with `ring` the process-wide crypto provider (idempotent).
/// Every binary calls it first, so nothing ever picks another provider.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A plain-text (`--insecure`) listener may only bind a loopback address:
/// refuse anything else, with a reason.
pub fn check_plaintext_bind(addr: &SocketAddr) -> Result<(), TlsError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(TlsError::Insecure(format!(
            "--insecure refuses to listen on {addr}: plain text is only allowed on a loopback address; use TLS (--tls DIR)"
        )))
    }
}

/// A plain-text (`--insecure`) client may only dial a loopback host.
pub fn check_plaintext_url(url: &str) -> Result<(), TlsError> {
    let host = url_host(url).unwrap_or_default();
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false);
    if url.starts_with("http://") && loopback {
        Ok(())
    } else {
        Err(TlsError::Insecure(format!(
            "{url}: plain text (http://) is only allowed to a loopback address with --insecure; use https:// and a CA file"
        )))
    }
}

/// The host of `scheme://host[:port][/...]`, without brackets for IPv6.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return Some(v6.split(']').next()?.to_string());
    }
    Some(authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(url_host("https://127.0.0.1:7001").as_deref(), Some("127.0.0.1"));
        assert_eq!(url_host("https://scan.example.org/x").as_deref(), Some("scan.example.org"));
        assert_eq!(url_host("https://[::1]:7001").as_deref(), Some("::1"));
        assert_eq!(url_host("http://localhost").as_deref(), Some("localhost"));
    }

    #[test]
    fn plain_text_only_on_loopback() {
        assert!(check_plaintext_bind(&"127.0.0.1:7000".parse().unwrap()).is_ok());
        assert!(check_plaintext_bind(&"[::1]:7000".parse().unwrap()).is_ok());
        assert!(check_plaintext_bind(&"0.0.0.0:7000".parse().unwrap()).is_err());
        assert!(check_plaintext_bind(&"10.1.2.3:7000".parse().unwrap()).is_err());
        assert!(check_plaintext_url("http://127.0.0.1:7000").is_ok());
        assert!(check_plaintext_url("http://scan.example.org:7000").is_err());
    }
}
