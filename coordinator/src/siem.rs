//! SIEM export: each detection a worker produced (and each action an agent
//! reported) sent as a JSON event to syslog (RFC 5424 over TCP or TLS,
//! octet-counted frames as RFC 6587 says) and to an HTTP(S) webhook.
//!
//! Each sink has its own bounded queue and task: events are sent in order,
//! detections ahead of agents' action reports, a failure is retried with
//! backoff (1 s doubling to 60 s) without losing the event, and past
//! `--siem-queue` events the oldest action reports are dropped first, then
//! the oldest detections, and counted, so a dead SIEM never holds up
//! scanning or grows memory, and reports an agent makes up cannot push
//! detections out.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

/// Where events go, from the coordinator's flags.
#[derive(Debug, Clone, Default)]
pub struct SiemConfig {
    /// `tcp://HOST:PORT` or `tls://HOST:PORT`.
    pub syslog: Option<String>,
    /// `http://` or `https://` URL events are POSTed to.
    pub webhook: Option<String>,
    /// CA of a TLS syslog server or HTTPS webhook (default: system roots).
    pub ca: Option<std::path::PathBuf>,
    /// Events held per sink before the oldest are dropped.
    pub queue: usize,
}

/// One sink's queue: detections, and the other events (agents' action
/// reports) behind them.
struct Queue {
    events: Mutex<[VecDeque<Value>; 2]>,
    notify: Notify,
    max: usize,
    dropped: AtomicU64,
    sent: AtomicU64,
}

/// The lanes of a queue, the first sent first and dropped last.
const DETECTIONS: usize = 0;
const OTHERS: usize = 1;

fn lane(e: &Value) -> usize {
    if e["event"] == "detection" { DETECTIONS } else { OTHERS }
}

impl Queue {
    fn new(max: usize) -> Self {
        Self {
            events: Mutex::new([VecDeque::new(), VecDeque::new()]),
            notify: Notify::new(),
            max: max.max(1),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    fn push(&self, e: Value) {
        let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        q[lane(&e)].push_back(e);
        while q[DETECTIONS].len() + q[OTHERS].len() > self.max {
            let from = if q[OTHERS].is_empty() { DETECTIONS } else { OTHERS };
            q[from].pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(q);
        self.notify.notify_one();
    }

    /// The next event to send, and its lane.
    fn front(&self) -> Option<(usize, Value)> {
        let q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        [DETECTIONS, OTHERS].into_iter().find_map(|l| q[l].front().map(|e| (l, e.clone())))
    }

    /// The event `front` gave, sent (unless dropped meanwhile).
    fn pop(&self, lane: usize, sent: &Value) {
        let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if q[lane].front() == Some(sent) {
            q[lane].pop_front();
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// A sink that cannot be set up as given.
#[derive(Debug, thiserror::Error)]
pub enum SiemError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] qala_tls::TlsError),
}

/// Why one delivery failed (it is retried).
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Refused(String),
}

#[derive(Default)]
pub struct Siem {
    queues: Vec<Arc<Queue>>,
}

impl Siem {
    /// The sinks `config` names, each with its sending task until `stop`.
    pub fn start(config: &SiemConfig, stop: watch::Receiver<bool>) -> Result<Arc<Siem>, SiemError> {
        let mut queues = Vec::new();
        let tls = if config.syslog.as_deref().is_some_and(|s| s.starts_with("tls://"))
            || config.webhook.as_deref().is_some_and(|s| s.starts_with("https://"))
        {
            Some(qala_tls::rustls_client_config(config.ca.as_deref())?)
        } else {
            None
        };
        let mut sinks: Vec<Sink> = Vec::new();
        if let Some(s) = &config.syslog {
            let (tls_on, addr) = match (s.strip_prefix("tcp://"), s.strip_prefix("tls://")) {
                (Some(a), _) => (false, a),
                (_, Some(a)) => (true, a),
                _ => return Err(SiemError::Config(format!("--siem-syslog {s}: use tcp://HOST:PORT or tls://HOST:PORT"))),
            };
            sinks.push(Sink::Syslog { addr: addr.to_string(), tls: tls_on.then(|| tls.clone()).flatten() });
        }
        if let Some(url) = &config.webhook {
            let bad = |why: &str| SiemError::Config(format!("--siem-webhook {url}: {why}"));
            let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
            let https = match uri.scheme_str() {
                Some("http") => false,
                Some("https") => true,
                _ => return Err(bad("use http:// or https://")),
            };
            let host = uri.host().ok_or_else(|| bad("no host"))?.trim_matches(['[', ']']).to_string();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            sinks.push(Sink::Webhook { addr, host, uri, tls: https.then(|| tls.clone()).flatten() });
        }
        for sink in sinks {
            let q = Arc::new(Queue::new(config.queue));
            info!(sink = sink.describe(), "SIEM export on");
            tokio::spawn(run(sink, q.clone(), stop.clone()));
            queues.push(q);
        }
        Ok(Arc::new(Siem { queues }))
    }

    /// Queue `event` (a JSON object with at least `event` and `at_ms`) for every sink.
    pub fn send(&self, event: Value) {
        for q in &self.queues {
            q.push(event.clone());
        }
    }

    /// (sent, dropped) over all sinks.
    pub fn counts(&self) -> (u64, u64) {
        self.queues.iter().fold((0, 0), |(s, d), q| (s + q.sent.load(Ordering::Relaxed), d + q.dropped.load(Ordering::Relaxed)))
    }
}

enum Sink {
    Syslog { addr: String, tls: Option<Arc<rustls::ClientConfig>> },
    Webhook { addr: String, host: String, uri: http::Uri, tls: Option<Arc<rustls::ClientConfig>> },
}

impl Sink {
    fn describe(&self) -> String {
        match self {
            Sink::Syslog { addr, tls } => format!("syslog {}://{addr}", if tls.is_some() { "tls" } else { "tcp" }),
            Sink::Webhook { uri, .. } => format!("webhook {uri}"),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(addr: &str, tls: &Option<Arc<rustls::ClientConfig>>) -> Result<Box<dyn Io>, SendError> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{addr}: connect timed out"));
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await.map_err(|_| timed_out())??;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some(config) => {
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).trim_matches(['[', ']']).to_string();
            let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| SendError::Tls(e.to_string()))?;
            let s = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await?;
            Ok(Box::new(s))
        }
    }
}

/// RFC 5424 severity of an event: critical for malicious, warning for
/// suspicious, notice for agent actions.
fn severity(e: &Value) -> u8 {
    if e["event"] != "detection" {
        return 5;
    }
    match e["verdict"].as_str() {
        Some("malicious") => 2,
        Some("suspicious") => 4,
        _ => 5,
    }
}

/// One RFC 5424 message (facility 13, log audit), octet-counted.
pub fn syslog_frame(e: &Value, hostname: &str) -> Vec<u8> {
    let at = e["at_ms"].as_i64().unwrap_or(0);
    let ts = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "-".into());
    let msgid = e["event"].as_str().unwrap_or("event").to_ascii_uppercase();
    let msg = format!("<{}>1 {ts} {hostname} qala - {msgid} - {e}", 13 * 8 + u32::from(severity(e)));
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

async fn run(sink: Sink, q: Arc<Queue>, mut stop: watch::Receiver<bool>) {
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let mut conn: Option<Box<dyn Io>> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some((lane, event)) = q.front() else {
            tokio::select! {
                _ = q.notify.notified() => continue,
                _ = stop.wait_for(|s| *s) => return,
            }
        };
        let result = match &sink {
            Sink::Syslog { addr, tls } => async {
                if conn.is_none() {
                    conn = Some(connect(addr, tls).await?);
                }
                let Some(c) = conn.as_mut() else { return Err(SendError::Refused("no connection".into())) };
                c.write_all(&syslog_frame(&event, &hostname)).await?;
                c.flush().await?;
                Ok(())
            }
            .await
            .inspect_err(|_| conn = None),
            Sink::Webhook { addr, host, uri, tls } => post(addr, host, uri, tls, &event).await,
        };
        match result {
            Ok(()) => {
                q.pop(lane, &event);
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                warn!(sink = sink.describe(), error = %e, retry_in_s = backoff.as_secs(), "SIEM export failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// POST one event with a hyper client on a connection of its own; any
/// 2xx is delivered.
async fn post(
    addr: &str,
    host: &str,
    uri: &http::Uri,
    tls: &Option<Arc<rustls::ClientConfig>>,
    event: &Value,
) -> Result<(), SendError> {
    let io = hyper_util::rt::TokioIo::new(connect(addr, tls).await?);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = http::Request::post(path)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("qala-coordinator/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(event.to_string())))
        .map_err(|e| SendError::Refused(e.to_string()))?;
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        // Read the answer to its end, so the connection closes cleanly.
        let _ = response.into_body().collect().await;
        Ok::<_, SendError>(status)
    })
    .await;
    driver.abort();
    let status = answered.map_err(|_| SendError::Refused("no answer within 30 s".into()))??;
    if status.is_success() { Ok(()) } else { Err(SendError::Refused(format!("webhook answered {status}"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detections_go_first_and_are_dropped_last() {
        let q = Queue::new(3);
        let action = |n: u32| serde_json::json!({"event": "agent_action", "n": n});
        let detection = |n: u32| serde_json::json!({"event": "detection", "n": n});
        q.push(action(1));
        q.push(detection(1));
        q.push(action(2));
        q.push(detection(2));
        q.push(action(3)); // over 3: the oldest actions go first
        assert_eq!(q.dropped.load(Ordering::Relaxed), 2);
        let mut order = Vec::new();
        while let Some((l, e)) = q.front() {
            q.pop(l, &e);
            order.push(format!("{}{}", e["event"].as_str().unwrap(), e["n"]));
        }
        assert_eq!(order, ["detection1", "detection2", "agent_action3"]);
        for n in 0..5 {
            q.push(action(n));
        }
        q.push(detection(9));
        q.push(detection(10));
        q.push(detection(11));
        q.push(detection(12)); // only detections left to drop: the oldest
        let kept: Vec<Value> =
            std::iter::from_fn(|| q.front().inspect(|(l, e)| q.pop(*l, e)).map(|(_, e)| e["n"].clone())).collect();
        assert_eq!(kept, [10, 11, 12]);
    }

    #[test]
    fn syslog_frames_are_rfc5424_and_octet_counted() {
        let e = serde_json::json!({"event": "detection", "at_ms": 1_795_800_000_123i64, "verdict": "malicious"});
        let f = String::from_utf8(super::syslog_frame(&e, "scan1")).unwrap();
        let (len, msg) = f.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        assert!(msg.starts_with("<106>1 2026-11-27T17:20:00.123Z scan1 qala - DETECTION - {"), "{msg}");
    }
}
