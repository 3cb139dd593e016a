//! TLS for Qala's listeners.
//!
//! A [`ServerTls`] holds a rustls server config built from three files (the
//! server's certificate chain, its key, and the CA whose client
//! certificates it accepts) and the revocation lists in force, and builds
//! it again when any of them changes, so a renewed certificate, a new CA or
//! a new revocation takes effect without a restart (connections already
//! open keep theirs). A client certificate is taken only if its chain,
//! its issuer's revocation list and its issuer's right to sign its role
//! hold; while no revocation list is known at all, none is taken. [`incoming`] accepts TCP
//! connections, runs each handshake in a task of its own under a deadline
//! (a slow or silent client never holds up the accept loop) and yields
//! [`Conn`]s, TLS or plain text (`--insecure`), whose [`PeerInfo`] tonic
//! puts in every request's extensions.

use crate::crl::CrlSet;
use crate::error::TlsError;
use crate::identity::PeerCert;
use crate::pem::{load_certs, load_key};
use crate::verify::{Roots, check_issuer, refused};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether and how clients present certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates asked for.
    None,
    /// A certificate of the client CA may be presented (and is verified if
    /// it is); the handlers decide what needs one.
    Optional,
    /// A certificate of the client CA is required to connect at all.
    Required,
}

/// The files a server's TLS is built from.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA of the client certificates accepted (needed unless `ClientAuth::None`).
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsFiles {
    fn paths(&self) -> Vec<&PathBuf> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()].into_iter().flatten().collect()
    }
}

pub struct ServerTls {
    files: ServerTlsFiles,
    auth: ClientAuth,
    http1: bool,
    crls: Arc<CrlSet>,
    config: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Stamps>,
}

/// What the config was built from: the files' times and the lists' version.
type Stamps = (Vec<Option<SystemTime>>, u64);

fn stamps(files: &ServerTlsFiles, crls: &CrlSet) -> Stamps {
    (files.paths().iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect(), crls.version())
}

/// The client certificate verifier: the web PKI one (chain, validity,
/// revocation lists of every issuer in the chain), refusing everything
/// while no list is known, and refusing a coordinator's or client's
/// certificate not signed by a root ([`check_issuer`]).
#[derive(Debug)]
struct ClientGate {
    inner: Arc<dyn ClientCertVerifier>,
    roots: Roots,
    lists_known: bool,
}

impl ClientCertVerifier for ClientGate {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !self.lists_known {
            return Err(refused(
                "no certificate revocation list is known yet (the store has not answered): certificates are refused until one is"
                    .into(),
            ));
        }
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        check_issuer(end_entity.as_ref(), &self.roots).map_err(refused)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn build(files: &ServerTlsFiles, auth: ClientAuth, http1: bool, crls: &CrlSet) -> Result<ServerConfig, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let builder = ServerConfig::builder();
    let builder = match auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let ca = files.client_ca.as_ref().ok_or_else(|| TlsError::Config("client authentication needs a CA file".into()))?;
            let roots = Roots::load(ca)?;
            let mut verifier = WebPkiClientVerifier::builder(roots.store.clone());
            let lists = crls.rustls_crls();
            let lists_known = !lists.is_empty();
            if lists_known {
                // Every certificate of the chain needs its issuer's list:
                // an enrolled worker's issuing CA is checked against the
                // root's, the worker against the issuing CA's.
                verifier = verifier.with_crls(lists);
            }
            if auth == ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let inner = verifier.build().map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(ClientGate { inner, roots, lists_known }))
        }
    };
    let mut config =
        builder.with_single_cert(certs, key).map_err(|e| TlsError::Config(format!("{}: {e}", files.cert.display())))?;
    // gRPC is HTTP/2 only; the REST listener takes HTTP/1.1 too.
    config.alpn_protocols = vec![b"h2".to_vec()];
    if http1 {
        config.alpn_protocols.push(b"http/1.1".to_vec());
    }
    Ok(config)
}

impl ServerTls {
    /// Build from `files`, checking client certificates against the
    /// revocation lists in `crls` (as they change); fails with the file and
    /// reason if any is unusable.
    pub fn load(files: ServerTlsFiles, auth: ClientAuth, crls: Arc<CrlSet>) -> Result<Arc<Self>, TlsError> {
        Self::load_with(files, auth, false, crls)
    }

    /// As [`ServerTls::load`], offering HTTP/1.1 as well as HTTP/2 (the REST listener).
    pub fn load_http(files: ServerTlsFiles, auth: ClientAuth, crls: Arc<CrlSet>) -> Result<Arc<Self>, TlsError> {
        Self::load_with(files, auth, true, crls)
    }

    fn load_with(files: ServerTlsFiles, auth: ClientAuth, http1: bool, crls: Arc<CrlSet>) -> Result<Arc<Self>, TlsError> {
        let config = build(&files, auth, http1, &crls)?;
        Ok(Arc::new(Self {
            stamps: Mutex::new(stamps(&files, &crls)),
            files,
            auth,
            http1,
            crls,
            config: RwLock::new(Arc::new(config)),
        }))
    }

    /// The config for the next handshake: built again first if the
    /// revocation lists changed, so a revocation holds from the next
    /// connection on (files are looked at by [`ServerTls::watch`]).
    pub fn config(&self) -> Arc<ServerConfig> {
        let built_for = self.stamps.lock().unwrap_or_else(|p| p.into_inner()).1;
        if built_for != self.crls.version() {
            self.reload_if_changed();
        }
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Build the config again if a file or the revocation lists changed; a
    /// broken new file is logged and the config in force stays. True if it
    /// was replaced.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.files, &self.crls);
        let mut seen = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return false;
        }
        let lists_changed = seen.1 != now.1;
        *seen = now;
        match build(&self.files, self.auth, self.http1, &self.crls) {
            Ok(config) => {
                *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                if lists_changed {
                    info!(cert = %self.files.cert.display(), "certificate revocation lists changed; TLS reloaded");
                } else {
                    info!(cert = %self.files.cert.display(), "TLS certificate files changed; reloaded");
                }
                true
            }
            Err(e) => {
                warn!(error = %e, "TLS certificate files changed but do not load; keeping the ones in force");
                false
            }
        }
    }

    /// Check the files every `every` until `stop` flips.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => { self.reload_if_changed(); }
                _ = stop.changed() => return,
            }
        }
    }
}

/// What a handler knows of the connection a request came on.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The client's leaf certificate, verified by the handshake (TLS with a
    /// client certificate), parsed once per connection, not on every call.
    pub cert: Option<Arc<PeerCert>>,
    pub tls: bool,
}

/// The [`PeerInfo`] of a request served through [`incoming`].
pub fn peer_info<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

/// A connection accepted by [`incoming`].
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(s) => PeerInfo { remote: s.peer_addr().ok(), cert: None, tls: false },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                let cert = session.peer_certificates().and_then(|c| PeerCert::parse_chain(c).ok()).map(Arc::new);
                PeerInfo { remote: tcp.peer_addr().ok(), cert, tls: true }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Whether a failed handshake refused the client's certificate.
fn certificate_refused(e: &io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::Other(_))
    )
}

/// Accept connections on `listener`: with `tls`, each after its handshake
/// (run in a task of its own, at most [`HANDSHAKE_TIMEOUT`]); without, as
/// plain text. Ends when the returned stream is dropped.
pub fn incoming(listener: TcpListener, tls: Option<Arc<ServerTls>>) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match &tls {
                None => {
                    if tx.send(Ok(Conn::Plain(tcp))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = TlsAcceptor::from(tls.config());
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(Conn::Tls(Box::new(stream)))).await;
                            }
                            // A certificate refused (revoked, of another CA, of
                            // a role its issuer may not sign) is worth a line;
                            // the rest (port scans, plain text) is noise.
                            Ok(Err(e)) if certificate_refused(&e) => {
                                warn!(%remote, error = %e, "TLS handshake: refused the client's certificate")
                            }
                            Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(%remote, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(all(test, feature = "pki"))]
mod tests {
    use super::*;
    use crate::pki;

    #[test]
    fn changed_files_are_reloaded_and_broken_ones_ignored() {
        crate::install_crypto_provider();
        let d = tempfile::tempdir().unwrap();
        pki::init(d.path(), "main", &[]).unwrap();
        let files = ServerTlsFiles {
            cert: d.path().join(pki::COORDINATOR_CERT),
            key: d.path().join(pki::COORDINATOR_KEY),
            client_ca: Some(d.path().join(pki::CA_CERT)),
        };
        let tls = ServerTls::load(files.clone(), ClientAuth::Optional, CrlSet::new()).unwrap();
        let first = tls.config();
        assert!(!tls.reload_if_changed(), "nothing changed");
        // A renewed certificate: another coordinator bundle copied over.
        std::thread::sleep(Duration::from_millis(20));
        let other = pki::coordinator(d.path(), "main", &[]).unwrap();
        std::fs::copy(other.join(pki::COORDINATOR_KEY), &files.key).unwrap();
        std::fs::copy(other.join(pki::COORDINATOR_CERT), &files.cert).unwrap();
        assert!(tls.reload_if_changed());
        let second = tls.config();
        assert!(!Arc::ptr_eq(&first, &second), "the new files are in force");
        // A broken certificate keeps the one in force.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&files.cert, "not a certificate").unwrap();
        assert!(!tls.reload_if_changed());
        assert!(Arc::ptr_eq(&second, &tls.config()));
    }
}
