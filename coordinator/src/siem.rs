//! SIEM export: each detection a worker produced (and each action an agent
//! reported) sent as a JSON event to syslog (RFC 5424 over TCP or TLS,
//! octet-counted frames as RFC 6587 says) and to an HTTP(S) webhook.
//!
//! Each sink has its own bounded queue and task: events are sent in order,
//! a failure is retried with backoff (1 s doubling to 60 s) without losing
//! the event, and past `--siem-queue` events the oldest are dropped and
//! counted, so a dead SIEM never holds up scanning or grows memory.

use anyhow::Context;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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

/// One sink's queue.
struct Queue {
    events: Mutex<VecDeque<Value>>,
    notify: Notify,
    max: usize,
    dropped: AtomicU64,
    sent: AtomicU64,
}

impl Queue {
    fn push(&self, e: Value) {
        let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(e);
        while q.len() > self.max {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(q);
        self.notify.notify_one();
    }

    fn front(&self) -> Option<Value> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).front().cloned()
    }

    fn pop(&self) {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Siem {
    queues: Vec<Arc<Queue>>,
}

impl Siem {
    /// The sinks `config` names, each with its sending task until `stop`.
    pub fn start(config: &SiemConfig, stop: watch::Receiver<bool>) -> anyhow::Result<Arc<Siem>> {
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
                _ => anyhow::bail!("--siem-syslog {s}: use tcp://HOST:PORT or tls://HOST:PORT"),
            };
            sinks.push(Sink::Syslog { addr: addr.to_string(), tls: tls_on.then(|| tls.clone()).flatten() });
        }
        if let Some(url) = &config.webhook {
            let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
                (Some(r), _) => (false, r),
                (_, Some(r)) => (true, r),
                _ => anyhow::bail!("--siem-webhook {url}: use http:// or https://"),
            };
            let (hostport, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
            let port = if https { 443 } else { 80 };
            let addr = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:{port}") };
            let host = hostport.rsplit_once(':').map(|(h, _)| h).unwrap_or(hostport).to_string();
            sinks.push(Sink::Webhook { addr, host, path, tls: https.then(|| tls.clone()).flatten() });
        }
        for sink in sinks {
            let q = Arc::new(Queue {
                events: Mutex::new(VecDeque::new()),
                notify: Notify::new(),
                max: config.queue.max(1),
                dropped: AtomicU64::new(0),
                sent: AtomicU64::new(0),
            });
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
    Webhook { addr: String, host: String, path: String, tls: Option<Arc<rustls::ClientConfig>> },
}

impl Sink {
    fn describe(&self) -> String {
        match self {
            Sink::Syslog { addr, tls } => format!("syslog {}://{addr}", if tls.is_some() { "tls" } else { "tcp" }),
            Sink::Webhook { addr, path, tls, .. } => {
                format!("webhook {}://{addr}{path}", if tls.is_some() { "https" } else { "http" })
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(addr: &str, tls: &Option<Arc<rustls::ClientConfig>>) -> anyhow::Result<Box<dyn Io>> {
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await.context("connect timed out")??;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some(config) => {
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).trim_matches(['[', ']']).to_string();
            let name = rustls::pki_types::ServerName::try_from(host)?;
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
    let hostname =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "-".into());
    let mut conn: Option<Box<dyn Io>> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(event) = q.front() else {
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
                let c = conn.as_mut().context("no connection")?;
                c.write_all(&syslog_frame(&event, &hostname)).await?;
                c.flush().await?;
                anyhow::Ok(())
            }
            .await
            .inspect_err(|_| conn = None),
            Sink::Webhook { addr, host, path, tls } => post(addr, host, path, tls, &event).await,
        };
        match result {
            Ok(()) => {
                q.pop();
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

/// POST one event; any 2xx is delivered.
async fn post(addr: &str, host: &str, path: &str, tls: &Option<Arc<rustls::ClientConfig>>, event: &Value) -> anyhow::Result<()> {
    let body = event.to_string();
    let mut c = connect(addr, tls).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: qala-coordinator/{}\r\nConnection: close\r\n\r\n",
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    c.write_all(head.as_bytes()).await?;
    c.write_all(body.as_bytes()).await?;
    c.flush().await?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 1024];
        while !reply.windows(2).any(|w| w == b"\r\n") {
            let n = c.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
        }
        anyhow::Ok(())
    })
    .await
    .context("no answer within 30 s")??;
    let status_line = String::from_utf8_lossy(&reply).lines().next().unwrap_or_default().to_string();
    let code: u16 = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    if (200..300).contains(&code) { Ok(()) } else { anyhow::bail!("webhook answered {status_line:?}") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn syslog_frames_are_rfc5424_and_octet_counted() {
        let e = serde_json::json!({"event": "detection", "at_ms": 1_795_800_000_123i64, "verdict": "malicious"});
        let f = String::from_utf8(super::syslog_frame(&e, "scan1")).unwrap();
        let (len, msg) = f.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        assert!(msg.starts_with("<106>1 2026-11-27T17:20:00.123Z scan1 qala - DETECTION - {"), "{msg}");
    }
}
