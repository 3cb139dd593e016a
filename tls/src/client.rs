//! TLS for Qala's clients (agent -> coordinator, worker -> coordinator,
//! coordinator -> worker): a tonic `ClientTlsConfig` from files.

use crate::crl::CrlSet;
use crate::error::TlsError;
use crate::pem::{load_certs, load_key};
use crate::verify::{Expect, PeerVerifier};
use std::path::Path;
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File { path: path.display().to_string(), message: e.to_string() })
}

/// Verify servers against `ca` (a PEM file), or the system's roots when
/// `None`; present `identity` (certificate chain and key files) if given.
/// The files are checked here, so a wrong path fails at start with its name.
pub fn client_config(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<ClientTlsConfig, TlsError> {
    let mut config = ClientTlsConfig::new();
    config = match ca {
        Some(ca) => {
            load_certs(ca)?;
            config.ca_certificate(Certificate::from_pem(read(ca)?))
        }
        None => config.with_native_roots(),
    };
    if let Some((cert, key)) = identity {
        load_certs(cert)?;
        load_key(key)?;
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(config)
}

/// TLS for a client's `endpoint`. Through the cluster CA `ca`, the server
/// must be `expect` (a coordinator, or a given worker) and not revoked in
/// `crls` (followed as they change); without a CA (a coordinator behind a
/// certificate of the system's roots), the host name is checked as any web
/// client checks it. `identity` (certificate chain and key files) is
/// presented if given.
pub fn secure_endpoint(
    endpoint: Endpoint,
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    crls: Arc<CrlSet>,
    expect: Expect,
) -> Result<Endpoint, TlsError> {
    let tonic_error = |e: tonic::transport::Error| TlsError::Config(e.to_string());
    let Some(ca) = ca else { return endpoint.tls_config(client_config(None, identity)?).map_err(tonic_error) };
    let mut config = ClientTlsConfig::new();
    if let Some((cert, key)) = identity {
        load_certs(cert)?;
        load_key(key)?;
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    endpoint.tls_config_with_verifier(config, PeerVerifier::new(ca, crls, expect)?).map_err(tonic_error)
}

/// The alerts a TLS peer sends when it refuses our certificate.
const CERTIFICATE_ALERTS: [rustls::AlertDescription; 5] = [
    rustls::AlertDescription::BadCertificate,
    rustls::AlertDescription::CertificateRevoked,
    rustls::AlertDescription::CertificateExpired,
    rustls::AlertDescription::UnknownCA,
    rustls::AlertDescription::CertificateUnknown,
];

/// Whether `e` (or one of its causes) is a TLS peer's certificate refused
/// here, or ours refused there: trying again will not help.
pub fn certificate_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        let rustls_error = c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(r) = rustls_error {
            return match r {
                rustls::Error::InvalidCertificate(_) | rustls::Error::Other(_) => true,
                rustls::Error::AlertReceived(a) => CERTIFICATE_ALERTS.contains(a),
                _ => false,
            };
        }
        // An alert read after the handshake reaches the caller as text
        // (the I/O layer formats the TLS error): "received fatal alert: X".
        if let Some(alert) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.to_string().strip_prefix("received fatal alert: ").map(str::to_string))
        {
            return CERTIFICATE_ALERTS.iter().any(|a| format!("{a:?}") == alert);
        }
        cause = c.source();
    }
    false
}

/// Adds `authorization: Bearer <token>` to every call of a client.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<Self, TlsError> {
        match token {
            None => Ok(Self(None)),
            Some(t) => format!("Bearer {}", t.trim())
                .parse()
                .map(|v| Self(Some(v)))
                .map_err(|_| TlsError::Config("the token has characters a header cannot carry".into())),
        }
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A token from `file` (first line), or `given` (from the environment, read
/// by the binary) when no file is given. Warns when the file is readable by
/// others.
pub fn read_token(file: Option<&Path>, given: Option<&str>) -> Result<Option<String>, TlsError> {
    match file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| TlsError::File { path: f.display().to_string(), message: e.to_string() })?;
            // (On Windows the file's access list is its directory's.)
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(f) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(file = %f.display(), "token file is readable by other users; chmod 600 it");
                }
            }
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.is_empty() {
                return Err(TlsError::File { path: f.display().to_string(), message: "empty token file".into() });
            }
            Ok(Some(token))
        }
        None => Ok(given.map(|t| t.trim().to_string()).filter(|t| !t.is_empty())),
    }
}

/// A plain rustls client config (for non-gRPC clients such as SIEM export):
/// server certificates checked against `ca`, or the system's roots.
pub fn rustls_client_config(ca: Option<&Path>) -> Result<std::sync::Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            for c in load_certs(ca)? {
                roots.add(c).map_err(|e| TlsError::File { path: ca.display().to_string(), message: e.to_string() })?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}
