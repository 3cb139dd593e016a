//! Connection to the coordinator, with deadlines on every call and retries
//! with jittered backoff where a retry is safe.

use qala_proto::v1::{self as pb, agents_client::AgentsClient, scanner_client::ScannerClient};
use qala_tls::{BearerToken, CrlSet};
use rand::Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

type Inner = ScannerClient<InterceptedService<Channel, BearerToken>>;
type AgentsInner = AgentsClient<InterceptedService<Channel, BearerToken>>;

/// How the agent reaches the coordinator and proves who it is.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    pub server: String,
    pub ca: Option<std::path::PathBuf>,
    pub token: Option<String>,
    /// A client certificate and its key, instead of a token.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub insecure: bool,
    /// Where the certificate revocation lists fetched at check-in are kept
    /// (PEM): read here, coordinators' certificates are checked against
    /// them from the first connection on.
    pub crl_file: Option<PathBuf>,
}

const RPC_DEADLINE: Duration = Duration::from_secs(30);
const SCAN_DEADLINE: Duration = Duration::from_secs(15 * 60);
const ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct Client {
    inner: Inner,
    agents: AgentsInner,
    rate: Option<Arc<crate::limits::RateLimit>>,
    /// The revocation lists coordinators are checked against (the roots'
    /// lists of the cluster CA), and the file they are kept in.
    crls: Option<(Arc<CrlSet>, Option<PathBuf>)>,
    /// Ask the coordinator not to record what this agent holds
    /// (`sightings = false`).
    no_sightings: bool,
}

/// Result of one upload.
pub struct Uploaded {
    pub response: pb::ScanResponse,
    /// Bytes of content sent in the successful attempt.
    pub bytes: u64,
}

/// Errors worth another try: the server or network, not the request (nor
/// a certificate refused in the TLS handshake, either side's). Every
/// call the agent makes is idempotent (a scan is keyed by content), so a
/// call cut off with its connection (`Cancelled`: the agent never cancels
/// one itself) is sent again too.
pub fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
    ) && !qala_tls::certificate_refused(s)
}

/// A certificate refused in the TLS handshake (the server's here, or ours
/// there) said as such, as UNAUTHENTICATED with the reason: trying again
/// will not help, and "transport error" would hide why.
pub fn explained(s: Status) -> Status {
    if !qala_tls::certificate_refused(&s) {
        return s;
    }
    let mut reason = s.message().to_string();
    let mut cause = std::error::Error::source(&s);
    while let Some(c) = cause {
        reason = c.to_string();
        cause = c.source();
    }
    let what = if reason.starts_with("received fatal alert") {
        "the server refused this client's certificate"
    } else {
        "the server's certificate was refused"
    };
    Status::unauthenticated(format!("TLS handshake: {what}: {reason}"))
}

/// How long `enroll` waits for a busy coordinator in all.
const ENROLL_PATIENCE: Duration = Duration::from_secs(120);

/// How long a busy coordinator may keep an agent waiting in all.
const BUSY_PATIENCE: Duration = Duration::from_secs(10 * 60);

/// The coordinator's `retry-after-ms` hint, capped at a minute.
fn retry_after(s: &Status) -> Option<Duration> {
    let ms: u64 = s.metadata().get("retry-after-ms")?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_millis(ms.min(60_000)))
}

async fn backoff(attempt: u32) {
    let base = 200u64 << attempt.min(6);
    let jitter = rand::rng().random_range(0..=base / 2);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// A client that cannot be made as asked.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid server URL {server:?}: {message}")]
    Url { server: String, message: String },
    #[error("{0}: use an https:// URL (or --insecure for a loopback coordinator without TLS)")]
    NotHttps(String),
    #[error(transparent)]
    Tls(#[from] qala_tls::TlsError),
}

impl Client {
    /// Create a client; the connection is made on first use. TLS unless
    /// `insecure` (then only to a loopback `http://` URL).
    pub fn new(c: &Connect) -> Result<Self, ConnectError> {
        let server = &c.server;
        let url = |e: &dyn std::fmt::Display| ConnectError::Url { server: server.clone(), message: e.to_string() };
        let mut endpoint = Endpoint::from_shared(server.to_string())
            .map_err(|e| url(&e))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if c.insecure {
            qala_tls::check_plaintext_url(server)?;
        } else {
            if !server.starts_with("https://") {
                return Err(ConnectError::NotHttps(server.clone()));
            }
            let identity = c.identity.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()));
            // Through the cluster CA, the lists kept from earlier check-ins;
            // the server must hold a coordinator's certificate.
            let crls = match &c.ca {
                Some(ca) => {
                    let set = CrlSet::of_roots(ca)?;
                    if let Some(file) = &c.crl_file
                        && let Err(e) = set.load(file)
                    {
                        tracing::warn!(error = %e, "kept revocation lists do not load; checking the chain alone until a check-in");
                    }
                    Some((set, c.crl_file.clone()))
                }
                None => None,
            };
            let set = crls.as_ref().map_or_else(CrlSet::new, |(s, _)| s.clone());
            endpoint = qala_tls::secure_endpoint(endpoint, c.ca.as_deref(), identity, set, qala_tls::Expect::Coordinator)?;
            return Self::over(endpoint.connect_lazy(), c.token.as_deref(), crls);
        }
        Self::over(endpoint.connect_lazy(), c.token.as_deref(), None)
    }

    fn over(channel: Channel, token: Option<&str>, crls: Option<(Arc<CrlSet>, Option<PathBuf>)>) -> Result<Self, ConnectError> {
        let inner = ScannerClient::with_interceptor(channel.clone(), BearerToken::new(token)?)
            .max_decoding_message_size(qala_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(qala_proto::MAX_MESSAGE_BYTES);
        let agents = AgentsClient::with_interceptor(channel, BearerToken::new(token)?);
        Ok(Self { inner, agents, rate: None, crls, no_sightings: false })
    }

    /// Cap uploads at `bytes_per_sec` (0: no cap), for every clone made after.
    /// Whether the coordinator may record what this agent holds (its
    /// sightings: agent id and sha256, never a path).
    pub fn with_sightings(mut self, on: bool) -> Self {
        self.no_sightings = !on;
        self
    }

    pub fn with_upload_rate(mut self, bytes_per_sec: u64) -> Self {
        self.rate = (bytes_per_sec > 0).then(|| Arc::new(crate::limits::RateLimit::new(bytes_per_sec)));
        self
    }

    /// Trade this client's token (a fleet join token) for an agent token.
    /// A coordinator that is busy (the join token's enrollment rate spent)
    /// says when to come back: waited for, up to [`ENROLL_PATIENCE`].
    pub async fn enroll(&self, info: pb::AgentInfo) -> Result<pb::EnrollAgentResponse, Status> {
        let started = std::time::Instant::now();
        loop {
            let mut c = self.agents.clone();
            let mut req = tonic::Request::new(pb::EnrollAgentRequest { info: Some(info.clone()) });
            req.set_timeout(RPC_DEADLINE);
            match c.enroll(req).await {
                Err(s) if s.code() == Code::ResourceExhausted && started.elapsed() < ENROLL_PATIENCE => {
                    let Some(after) = retry_after(&s) else { return Err(s) };
                    let jitter = rand::rng().random_range(0..=after.as_millis() as u64 / 4);
                    tracing::info!(retry_in_ms = after.as_millis() as u64, "{}", s.message());
                    tokio::time::sleep(after + Duration::from_millis(jitter)).await;
                }
                other => return other.map(|r| r.into_inner()).map_err(explained),
            }
        }
    }

    /// Tell the coordinator this agent is alive (its inventory record), and
    /// take the revocation lists it answers with when they differ from the
    /// ones held, keeping them for the next start.
    /// Notices made after `notices_after_ms` come with the answer (what a
    /// notice stream that was down missed; 0: none).
    pub async fn checkin(&self, info: pb::AgentInfo, notices_after_ms: i64) -> Result<pb::CheckinResponse, Status> {
        let mut c = self.agents.clone();
        let crl_digest = self.crls.as_ref().map(|(set, _)| set.digest()).unwrap_or_default();
        let mut req = tonic::Request::new(pb::CheckinRequest { info: Some(info), crl_digest, notices_after_ms });
        req.set_timeout(RPC_DEADLINE);
        let resp = c.checkin(req).await.map(|r| r.into_inner()).map_err(explained)?;
        if let Some((set, file)) = &self.crls
            && !resp.crls.is_empty()
        {
            match set.merge(resp.crls.iter().map(|d| d.as_slice())) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(lists = n, "newer certificate revocation lists in force");
                    if let Some(file) = file
                        && let Err(e) = set.save(file)
                    {
                        tracing::warn!(error = %e, "revocation lists not kept for the next start");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "revocation lists from the coordinator refused"),
            }
        }
        Ok(resp)
    }

    /// Contents this agent no longer holds: its sightings of them go.
    pub async fn gone(&self, sha256: Vec<String>) -> Result<u32, Status> {
        let mut c = self.agents.clone();
        let mut req = tonic::Request::new(pb::GoneRequest { sha256 });
        req.set_timeout(RPC_DEADLINE);
        c.gone(req).await.map(|r| r.into_inner().dropped).map_err(explained)
    }

    /// Open the stream of notices for this agent (no deadline: it lives
    /// until the coordinator or the network ends it); notices made after
    /// `after_ms` come first. `uploads`: this agent uploads what a hunt asks for.
    pub async fn notices(&self, after_ms: i64, uploads: bool) -> Result<tonic::Streaming<pb::Notice>, Status> {
        let mut c = self.agents.clone();
        c.notices(pb::NoticesRequest { after_ms, uploads }).await.map(|r| r.into_inner()).map_err(explained)
    }

    /// Report actions taken on detections (audited by the coordinator).
    pub async fn report_actions(&self, actions: Vec<pb::AgentAction>) -> Result<pb::ReportActionsResponse, Status> {
        let mut c = self.agents.clone();
        let mut req = tonic::Request::new(pb::ReportActionsRequest { actions });
        req.set_timeout(RPC_DEADLINE);
        c.report_actions(req).await.map(|r| r.into_inner()).map_err(explained)
    }

    /// Lookup without retries, cut off after `timeout` (on-access decisions).
    pub async fn lookup_once(&self, sha256: String, timeout: Duration) -> Result<pb::LookupResponse, Status> {
        let mut c = self.inner.clone();
        let mut req =
            tonic::Request::new(pb::LookupRequest { sha256: vec![sha256], brief: true, no_sightings: self.no_sightings });
        req.set_timeout(timeout);
        match tokio::time::timeout(timeout, c.lookup(req)).await {
            Ok(r) => r.map(|r| r.into_inner()).map_err(explained),
            Err(_) => Err(Status::deadline_exceeded("lookup timed out")),
        }
    }

    async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(Inner) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut attempt = 0;
        let mut busy_since: Option<std::time::Instant> = None;
        loop {
            match call(self.inner.clone()).await {
                // A busy coordinator says when to come back: wait that long
                // (with jitter), for as long as BUSY_PATIENCE, without using
                // up the attempts meant for failures.
                Err(s) if s.code() == Code::ResourceExhausted && retry_after(&s).is_some() => {
                    let since = *busy_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > BUSY_PATIENCE {
                        return Err(s);
                    }
                    let after = retry_after(&s).unwrap_or_default();
                    let jitter = rand::rng().random_range(0..=after.as_millis() as u64 / 2);
                    tokio::time::sleep(after + Duration::from_millis(jitter)).await;
                }
                Err(s) if retryable(&s) && attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    backoff(attempt).await;
                }
                other => return other.map_err(explained),
            }
        }
    }

    /// Whether this client may scan at all: a `Scan` with no header is
    /// refused for its credentials first (UNAUTHENTICATED, PERMISSION_DENIED),
    /// else for the missing header (INVALID_ARGUMENT), without any effect.
    pub async fn check_scan_access(&self) -> Result<(), Status> {
        let result = self
            .retry(|mut c| {
                let mut req = tonic::Request::new(tokio_stream::iter(Vec::<pb::ScanRequest>::new()));
                req.set_timeout(RPC_DEADLINE);
                async move { c.scan(req).await.map(|_| ()) }
            })
            .await;
        match result {
            Err(s) if s.code() == Code::InvalidArgument => Ok(()),
            other => other,
        }
    }

    /// Verdicts by digest; `brief` leaves out executable summaries and
    /// object metadata (most of a verdict's size).
    pub async fn lookup(&self, sha256: Vec<String>, brief: bool) -> Result<pb::LookupResponse, Status> {
        let no_sightings = self.no_sightings;
        self.retry(|mut c| {
            let mut req = tonic::Request::new(pb::LookupRequest { sha256: sha256.clone(), brief, no_sightings });
            req.set_timeout(RPC_DEADLINE);
            async move { c.lookup(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// [`Client::lookup`], asking again for the digests a truncated answer
    /// left out (large verdicts), until every known one is in.
    pub async fn lookup_all(&self, sha256: Vec<String>, brief: bool) -> Result<pb::LookupResponse, Status> {
        let mut resp = self.lookup(sha256.clone(), brief).await?;
        while resp.truncated {
            let have: std::collections::HashSet<&str> = resp.verdicts.iter().map(|v| v.sha256.as_str()).collect();
            let rest: Vec<String> = sha256.iter().filter(|s| !have.contains(s.as_str())).cloned().collect();
            let more = self.lookup(rest, brief).await?;
            if more.verdicts.is_empty() {
                break;
            }
            resp.truncated = more.truncated;
            resp.verdicts.extend(more.verdicts);
        }
        Ok(resp)
    }

    pub async fn get_verdict(&self, sha256: &str) -> Result<pb::GetVerdictResponse, Status> {
        self.retry(|mut c| {
            let mut req = tonic::Request::new(pb::GetVerdictRequest { sha256: sha256.to_string() });
            req.set_timeout(RPC_DEADLINE);
            async move { c.get_verdict(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    pub async fn status(&self) -> Result<pb::StatusResponse, Status> {
        self.retry(|mut c| {
            let mut req = tonic::Request::new(pb::StatusRequest {});
            req.set_timeout(RPC_DEADLINE);
            async move { c.status(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Upload `path` (whose content hashed to `sha256`, `size` bytes) and wait
    /// for its verdict, retrying transient failures; `brief` as in
    /// [`Client::lookup`].
    pub async fn upload(&self, path: &Path, sha256: &str, size: u64, agent_id: &str, brief: bool) -> Result<Uploaded, Status> {
        let header = pb::ScanHeader {
            sha256: sha256.to_string(),
            size,
            // The name stays on the endpoint: verdicts depend on content only.
            file_name: String::new(),
            agent_id: agent_id.to_string(),
            brief,
            no_sightings: self.no_sightings,
            hunt_id: String::new(),
        };
        self.send_file(path, header).await
    }

    /// Upload `path` for a what-if hunt that asked for it (`hunt_id`): the
    /// coordinator scans it with that hunt's rules only and stores no
    /// verdict; the answer is for the log, never acted on.
    pub async fn upload_for_hunt(&self, path: &Path, sha256: &str, size: u64, hunt_id: &str) -> Result<Uploaded, Status> {
        let header = pb::ScanHeader {
            sha256: sha256.to_string(),
            size,
            brief: true,
            no_sightings: self.no_sightings,
            hunt_id: hunt_id.to_string(),
            ..Default::default()
        };
        self.send_file(path, header).await
    }

    /// Stream `path` under `header` and wait for the answer, retrying
    /// transient failures.
    async fn send_file(&self, path: &Path, header: pb::ScanHeader) -> Result<Uploaded, Status> {
        let size = header.size;
        let sent = Arc::new(AtomicU64::new(0));
        let response = self
            .retry(|mut c| {
                sent.store(0, Ordering::Relaxed);
                let (tx, rx) = mpsc::channel(4);
                let reader =
                    tokio::spawn(stream_file(path.to_path_buf(), size, header.clone(), tx, sent.clone(), self.rate.clone()));
                let mut req = tonic::Request::new(ReceiverStream::new(rx));
                req.set_timeout(SCAN_DEADLINE);
                async move {
                    let result = c.scan(req).await.map(|r| r.into_inner());
                    reader.abort();
                    result
                }
            })
            .await?;
        Ok(Uploaded { response, bytes: sent.load(Ordering::Relaxed) })
    }
}

/// Feed the header and then the file's first `size` bytes into `tx`, chunk
/// by chunk; the channel's bound keeps memory to a few chunks.
async fn stream_file(
    path: std::path::PathBuf,
    size: u64,
    header: pb::ScanHeader,
    tx: mpsc::Sender<pb::ScanRequest>,
    sent: Arc<AtomicU64>,
    rate: Option<Arc<crate::limits::RateLimit>>,
) {
    use pb::scan_request::Msg;
    // One blocking task reads the whole file (a thread hand-off per chunk
    // cost more than the read), into buffers that are not zeroed first. The
    // header goes with the first chunk: a small file's call is then ready
    // whole when the stream is first read, and leaves in one frame.
    let runtime = tokio::runtime::Handle::current();
    let _ = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut header = Some(pb::ScanRequest { msg: Some(Msg::Header(header)) });
        let send_header = |header: &mut Option<pb::ScanRequest>| header.take().is_none_or(|h| tx.blocking_send(h).is_ok());
        // Never blocks on a FIFO swapped in since the walk, never follows a link.
        let Ok((file, _)) = crate::os::open_regular(&path) else {
            send_header(&mut header); // the coordinator answers the missing bytes
            return;
        };
        let mut file = file.take(size);
        loop {
            // Sized to what is left: a small file takes a small buffer.
            let want = file.limit().min(qala_proto::CHUNK_BYTES as u64);
            let mut buf = Vec::with_capacity(want as usize);
            let read = (&mut file).take(want).read_to_end(&mut buf);
            if !send_header(&mut header) {
                return;
            }
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let n = buf.len() as u64;
            if let Some(rate) = &rate {
                runtime.block_on(rate.take(n));
            }
            sent.fetch_add(n, Ordering::Relaxed);
            if tx.blocking_send(pb::ScanRequest { msg: Some(Msg::Chunk(buf.into())) }).is_err() {
                return;
            }
        }
    })
    .await;
}
