//! The clamd front door: ClamAV's daemon protocol on a TCP listener and a
//! Unix socket, for mail gateways (clamav-milter, amavis, rspamd), file
//! servers and anything else that already talks to clamd.
//!
//! A thin adapter over the [`Core`]: it reads the protocol's framing
//! ([`protocol`]), holds an INSTREAM's chunks in a [`Spool`] while it
//! hashes them (clamd clients announce neither size nor digest), and hands
//! the upload to [`Core::scan`] like any agent's: same cache, placement,
//! workers, quotas, stored verdict and audit line. The caller is named
//! `clamd@ADDRESS` with the agent role (scan only); clamd has no
//! authentication, so a listener binds loopback unless `--clamd-allow`
//! names the networks allowed, and refuses every other peer. Each session
//! is audited (`clamd_session`: peer, commands, scans, detections).

mod fdpass;
pub mod protocol;

use crate::auth::{Caller, Role};
use crate::config::{ClamdConfig, UnscannableAnswer};
use crate::core::upload::unhashed::{PushError, Unhashed};
use crate::core::{Core, CoreError};
use ipnet::IpNet;
use protocol::{Command, ReadError, Request, Style};
use qala_proto::v1 as pb;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{info, warn};

/// A command must arrive within this long (clamd's CommandReadTimeout).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// An idle session is closed after this long (clamd's IdleTimeout).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// INSTREAMs of one session scanned at once; the next waits for a reply.
const SESSION_PARALLEL: usize = 8;
/// Most bytes read and thrown away after refusing an oversize stream.
const DRAIN_MAX: u64 = 64 << 20;

/// A network allowed to connect (`--clamd-allow`): `NET/PREFIX`, or one
/// address.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("--clamd-allow {s:?}: not an address or NET/PREFIX"))
}

/// Whether `ip` is in `net`; an IPv4-mapped IPv6 peer matches IPv4 networks.
fn allows(net: &IpNet, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    net.contains(&ip)
}

/// A refused or failed scan as clamd says it: `... ERROR`, the one place
/// the core's errors become clamd replies.
fn error_reply(e: &CoreError) -> String {
    protocol::error_text(&e.to_string())
}

/// Counters for STATS.
#[derive(Default)]
struct Counters {
    sessions: AtomicU64,
    streams: AtomicU64,
    found: AtomicU64,
    errors: AtomicU64,
}

/// What every session shares.
struct Server {
    core: Arc<Core>,
    allow: Vec<IpNet>,
    allow_reload: bool,
    unscannable: UnscannableAnswer,
    stream_max: u64,
    connections: Arc<Semaphore>,
    counters: Counters,
}

/// The clamd listeners a coordinator was asked for, bound.
pub struct Listeners {
    tcp: Option<tokio::net::TcpListener>,
    unix: Option<(tokio::net::UnixListener, PathBuf)>,
    config: ClamdConfig,
    allow: Vec<IpNet>,
}

/// Why the clamd listeners could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClamdError {
    #[error("{0}")]
    Config(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// Bind what `config` asks for; refuses a non-loopback TCP address without
/// `--clamd-allow`.
pub async fn bind(config: &ClamdConfig) -> Result<Listeners, ClamdError> {
    let allow = config.clamd_allow.iter().filter(|s| !s.trim().is_empty()).map(|s| parse_net(s)).collect::<Result<Vec<_>, _>>();
    let allow = allow.map_err(ClamdError::Config)?;
    let tcp = match &config.clamd_listen {
        Some(addr) => {
            let io = |e| ClamdError::Io(format!("--clamd-listen {addr}"), e);
            let l = tokio::net::TcpListener::bind(addr).await.map_err(io)?;
            let local = l.local_addr().map_err(io)?;
            if !local.ip().is_loopback() && allow.is_empty() {
                return Err(ClamdError::Config(format!(
                    "--clamd-listen {local}: clamd has no authentication, so a non-loopback address needs --clamd-allow NET[,NET...] naming the clients allowed"
                )));
            }
            Some(l)
        }
        None => None,
    };
    let unix = match &config.clamd_socket {
        Some(path) => {
            // A socket left by an earlier run is replaced; any other file is not.
            let io = |e| ClamdError::Io(format!("--clamd-socket {}", path.display()), e);
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    return Err(ClamdError::Config(format!("--clamd-socket {}: exists and is not a socket", path.display())));
                }
                std::fs::remove_file(path).map_err(io)?;
            }
            // Bound under a umask that leaves others nothing, so the socket
            // is never open to them, not even between bind and chmod (the
            // mask is the process's: the rest of the start waits on it).
            let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
            let bound = tokio::net::UnixListener::bind(path);
            nix::sys::stat::umask(old);
            let l = bound.map_err(io)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
            Some((l, path.clone()))
        }
        None => None,
    };
    Ok(Listeners { tcp, unix, config: config.clone(), allow })
}

impl Listeners {
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serve until `stop` turns true; sessions in progress finish on their own.
    pub async fn serve(self, core: Arc<Core>, mut stop: watch::Receiver<bool>) {
        let server = Arc::new(Server {
            core,
            allow: self.allow.clone(),
            allow_reload: self.config.clamd_allow_reload,
            unscannable: self.config.clamd_unscannable,
            stream_max: self.config.clamd_stream_max_length,
            connections: Arc::new(Semaphore::new(self.config.clamd_max_connections.max(1))),
            counters: Counters::default(),
        });
        if let Some(addr) = self.tcp_addr() {
            info!(%addr, "clamd listener (TCP) listening");
        }
        if let Some((_, path)) = &self.unix {
            info!(path = %path.display(), "clamd listener (Unix socket) listening");
        }
        let tcp = async {
            let Some(l) = &self.tcp else { return std::future::pending().await };
            loop {
                let permit = server.connections.clone().acquire_owned().await;
                match l.accept().await {
                    Ok((s, peer)) => {
                        let server = server.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            let _ = s.set_nodelay(true);
                            server.accept(s, Some(peer), None).await
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "clamd accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        let unix = async {
            let Some((l, _)) = &self.unix else { return std::future::pending().await };
            loop {
                let permit = server.connections.clone().acquire_owned().await;
                match l.accept().await {
                    Ok((s, _)) => {
                        let server = server.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            let (s, fds) = fdpass::FdStream::new(s);
                            server.accept(s, None, Some(fds)).await
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "clamd accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        tokio::select! {
            _ = tcp => {},
            _ = unix => {},
            _ = stop.wait_for(|s| *s) => {},
        }
        if let Some((_, path)) = &self.unix {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One session's tally, for its audit line.
#[derive(Default)]
struct Tally {
    commands: AtomicU64,
    streams: AtomicU64,
    found: AtomicU64,
    errors: AtomicU64,
}

impl Server {
    async fn accept<S: AsyncRead + AsyncWrite + Send + 'static>(
        self: Arc<Self>,
        stream: S,
        peer: Option<SocketAddr>,
        fds: Option<fdpass::Fds>,
    ) {
        let allowed = match peer {
            None => true, // the Unix socket: its file mode decides
            Some(p) => p.ip().is_loopback() || self.allow.iter().any(|n| allows(n, p.ip())),
        };
        let caller = Caller {
            name: match peer {
                Some(p) => format!("clamd@{}", p.ip()),
                None => "clamd@unix".into(),
            },
            role: Role::Agent,
            peer,
        };
        if !allowed {
            self.core.audit("denied", Some(&caller), json!({"via": "clamd", "reason": "address not in --clamd-allow"}));
            return;
        }
        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let tally = Arc::new(Tally::default());
        let end = self.clone().session(stream, &caller, tally.clone(), fds).await;
        let t = &tally;
        self.core.audit(
            "clamd_session",
            Some(&caller),
            json!({
                "commands": t.commands.load(Ordering::Relaxed),
                "streams": t.streams.load(Ordering::Relaxed),
                "found": t.found.load(Ordering::Relaxed),
                "errors": t.errors.load(Ordering::Relaxed),
                "duration_ms": started.elapsed().as_millis() as u64,
                "end": end,
            }),
        );
    }

    /// Run one connection; returns how it ended, for the audit line.
    async fn session<S: AsyncRead + AsyncWrite + Send + 'static>(
        self: Arc<Self>,
        stream: S,
        caller: &Caller,
        tally: Arc<Tally>,
        fds: Option<fdpass::Fds>,
    ) -> &'static str {
        let (r, mut w) = tokio::io::split(stream);
        let mut r = BufReader::with_capacity(64 << 10, r);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(SESSION_PARALLEL * 2);
        let writer = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if w.write_all(&line).await.is_err() {
                    return;
                }
            }
            let _ = w.shutdown().await;
        });
        let parallel = Arc::new(Semaphore::new(SESSION_PARALLEL));
        // Inside IDSESSION: the number of the next command (the session's
        // own command being 0, its first command is 1).
        let mut session: Option<u32> = None;
        let end = loop {
            let wait = if session.is_some() { IDLE_TIMEOUT } else { COMMAND_TIMEOUT };
            let request = match tokio::time::timeout(wait, protocol::read_request(&mut r)).await {
                Err(_) => break "timeout",
                Ok(Err(ReadError::Eof)) => break "closed",
                Ok(Err(ReadError::Io(_))) => break "io error",
                Ok(Err(ReadError::TooLong)) => {
                    let _ = tx.send(protocol::reply(None, "UNKNOWN COMMAND", Style::Newline)).await;
                    break "command too long";
                }
                Ok(Ok(r)) => r,
            };
            tally.commands.fetch_add(1, Ordering::Relaxed);
            let Request { command, style } = request;
            let id = session;
            let send = |text: String| protocol::reply(id, &text, style);
            if session.is_some() && style == Style::Plain {
                let _ = tx.send(send(protocol::error_text("Only nCMDS\\n and zCMDS\\0 are accepted inside IDSESSION."))).await;
                break "plain command in session";
            }
            match command {
                Command::Ping => {
                    let _ = tx.send(send("PONG".into())).await;
                }
                Command::Version => {
                    let _ = tx.send(send(self.version())).await;
                }
                Command::VersionCommands => {
                    let fildes = if fds.is_some() { " FILDES" } else { "" };
                    let text = format!("{}| COMMANDS: {}{fildes}", self.version(), protocol::COMMANDS.join(" "));
                    let _ = tx.send(send(text)).await;
                }
                Command::Stats => {
                    let _ = tx.send(send(self.stats())).await;
                }
                Command::IdSession if session.is_none() => {
                    session = Some(0);
                }
                Command::End if session.is_some() => break "end",
                Command::Reload if session.is_none() => {
                    if !self.allow_reload {
                        let _ = tx.send(send("COMMAND UNAVAILABLE".into())).await;
                        break "reload refused";
                    }
                    let _ = tx.send(send("RELOADING".into())).await;
                    let (core, admin) = (self.core.clone(), Caller { role: Role::Admin, ..caller.clone() });
                    tokio::spawn(async move {
                        if let Err(e) = core.admin().reload_rules(&admin).await {
                            warn!(error = %e, "clamd RELOAD failed");
                        }
                    });
                    break "reload";
                }
                Command::Instream => {
                    let received = self.receive_stream(caller, &mut r).await;
                    let data = match received {
                        Ok(d) => d,
                        Err(StreamError::TooLarge) => {
                            let _ = tx.send(send(protocol::error_text("INSTREAM size limit exceeded."))).await;
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                            // Read what the client still sends, so closing
                            // does not reset the connection before it has
                            // read the reply.
                            drain(&mut r).await;
                            break "stream too large";
                        }
                        Err(StreamError::Broken(why)) => {
                            let _ = tx.send(send(format!("stream: {}", protocol::error_text(&why)))).await;
                            break "stream broken";
                        }
                        Err(StreamError::Refused(why)) => {
                            let _ = tx.send(send(format!("stream: {}", protocol::error_text(&why)))).await;
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                            drain(&mut r).await;
                            break "stream refused";
                        }
                    };
                    let reply_to = Reply { id, style, name: "stream".into(), in_session: session.is_some() };
                    if !self.answer_scan(&parallel, caller, &tx, &tally, data, reply_to).await {
                        break "closed";
                    }
                }
                Command::Fildes => {
                    let Some(fds) = &fds else {
                        let _ = tx.send(send("COMMAND UNAVAILABLE".into())).await;
                        break "FILDES on TCP";
                    };
                    // The byte that carried the descriptor.
                    let mut byte = [0u8; 1];
                    if tokio::time::timeout(COMMAND_TIMEOUT, r.read_exact(&mut byte)).await.map(|r| r.is_err()).unwrap_or(true) {
                        break "closed";
                    }
                    let Some(fd) = fds.take() else {
                        let _ = tx.send(send(protocol::error_text("FILDES: didn't receive file descriptor."))).await;
                        break "no descriptor";
                    };
                    let name = format!("fd[{}]", std::os::fd::AsRawFd::as_raw_fd(&fd));
                    let data = match self.receive_file(caller, fd).await {
                        Ok(d) => d,
                        Err(why) => {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                            let _ = tx.send(send(format!("{name}: {}", protocol::error_text(&why)))).await;
                            if session.is_some() {
                                session = session.map(|n| n + 1);
                                continue;
                            }
                            break "bad descriptor";
                        }
                    };
                    let reply_to = Reply { id, style, name, in_session: session.is_some() };
                    if !self.answer_scan(&parallel, caller, &tx, &tally, data, reply_to).await {
                        break "closed";
                    }
                }
                Command::Unavailable(_) => {
                    let _ = tx.send(send("COMMAND UNAVAILABLE".into())).await;
                    break "unavailable command";
                }
                Command::IdSession | Command::End | Command::Reload if session.is_some() => {
                    let _ = tx.send(send(protocol::error_text("Command invalid inside IDSESSION."))).await;
                    break "invalid in session";
                }
                _ => {
                    let _ = tx.send(send("UNKNOWN COMMAND".into())).await;
                    break "unknown command";
                }
            }
            match &mut session {
                // One command per connection outside a session, as clamd.
                None => break "done",
                Some(n) => *n += 1,
            }
        };
        // Replies of scans still running are sent before the connection closes.
        let _ = parallel.acquire_many(SESSION_PARALLEL as u32).await;
        drop(tx);
        let _ = writer.await;
        end
    }

    /// Scan `data` and send `NAME: RESULT` to `reply_to`: inside a session
    /// on a task of its own (up to [`SESSION_PARALLEL`] at once, replies in
    /// the order scans finish), else before the next command is read.
    /// False if the session is closing.
    async fn answer_scan(
        self: &Arc<Self>,
        parallel: &Arc<Semaphore>,
        caller: &Caller,
        tx: &mpsc::Sender<Vec<u8>>,
        tally: &Arc<Tally>,
        data: Unhashed,
        reply_to: Reply,
    ) -> bool {
        let Ok(permit) = parallel.clone().acquire_owned().await else { return false };
        let (server, caller, tx, tally) = (self.clone(), caller.clone(), tx.clone(), tally.clone());
        let Reply { id, style, name, in_session } = reply_to;
        let task = async move {
            let text = server.scan(&caller, data, &tally).await;
            let _ = tx.send(protocol::reply(id, &format!("{name}: {text}"), style)).await;
            drop(permit);
        };
        if in_session {
            tokio::spawn(task);
        } else {
            task.await;
        }
        true
    }

    /// `ClamAV VERSION/DB/DATE`, the ruleset standing in for ClamAV's
    /// database: its load time as version number and date.
    fn version(&self) -> String {
        let rules = self.core.overview().ruleset();
        let secs = rules.loaded_at_ms / 1000;
        format!("ClamAV {}-qala/{}/{}", env!("CARGO_PKG_VERSION"), secs, protocol::ctime(secs))
    }

    /// clamd's STATS layout, with the cluster's scan threads as the pool.
    fn stats(&self) -> String {
        let load = self.core.overview().cluster_load();
        let (threads, busy) = (load.threads, load.busy);
        let c = &self.counters;
        format!(
            "POOLS: 1\n\nSTATE: VALID PRIMARY\nTHREADS: live {busy}  idle {} max {threads} idle-timeout {}\nQUEUE: 0 items\n\
             QALA: workers {} ruleset {} sessions {} streams {} found {} errors {}\n\n\
             MEMSTATS: heap N/A mmap N/A used N/A free N/A releasable N/A pools 1 pools_used 0.000M pools_total 0.000M\nEND",
            threads - busy,
            IDLE_TIMEOUT.as_secs(),
            load.workers,
            self.core.overview().ruleset().id,
            c.sessions.load(Ordering::Relaxed),
            c.streams.load(Ordering::Relaxed),
            c.found.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
        )
    }

    /// Read INSTREAM chunks into an unhashed upload, admitted under the
    /// caller's quotas before the first is read.
    async fn receive_stream<R: AsyncRead + Unpin>(&self, caller: &Caller, r: &mut R) -> Result<Unhashed, StreamError> {
        let stall = self.core.uploads().upload_stall();
        let uploads = self.core.uploads();
        let mut upload =
            uploads.admit_unhashed(caller, self.stream_max).await.map_err(|e| StreamError::Refused(e.to_string()))?;
        let broken = |e: std::io::Error| StreamError::Broken(format!("INSTREAM: {e}"));
        let late = || StreamError::Broken("INSTREAM: no data within the stall timeout".into());
        loop {
            let mut len = [0u8; 4];
            tokio::time::timeout(stall, r.read_exact(&mut len)).await.map_err(|_| late())?.map_err(broken)?;
            let mut n = u64::from(u32::from_be_bytes(len));
            if n == 0 {
                break;
            }
            // Refused before a byte of it is read, as clamd does.
            if n > upload.left() {
                return Err(StreamError::TooLarge);
            }
            while n > 0 {
                let take = n.min(256 << 10) as usize;
                let mut buf = vec![0u8; take];
                tokio::time::timeout(stall, r.read_exact(&mut buf)).await.map_err(|_| late())?.map_err(broken)?;
                upload.push(buf.into()).await.map_err(|e| match e {
                    PushError::SpoolFull => StreamError::Refused(e.to_string()),
                    e => StreamError::Broken(e.to_string()),
                })?;
                n -= take as u64;
            }
        }
        Ok(upload)
    }

    /// Read the regular file behind a passed descriptor, from its start,
    /// into a spool, hashing it.
    async fn receive_file(&self, caller: &Caller, fd: std::os::fd::OwnedFd) -> Result<Unhashed, String> {
        use tokio::io::AsyncSeekExt;
        let file = std::fs::File::from(fd);
        let meta = file.metadata().map_err(|e| format!("FILDES: {e}"))?;
        if !meta.is_file() {
            return Err("Not a regular file".into());
        }
        if meta.len() > self.stream_max {
            return Err(format!("File size limit exceeded ({} bytes, the limit is {})", meta.len(), self.stream_max));
        }
        let mut file = tokio::fs::File::from_std(file);
        file.seek(std::io::SeekFrom::Start(0)).await.map_err(|e| format!("FILDES: {e}"))?;
        let mut upload = self.core.uploads().admit_unhashed(caller, self.stream_max).await.map_err(|e| e.to_string())?;
        loop {
            let mut buf = vec![0u8; 256 << 10];
            let n = file.read(&mut buf).await.map_err(|e| format!("FILDES: {e}"))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            upload.push(buf.into()).await.map_err(|e| match e {
                PushError::TooLarge => format!("File size limit exceeded (the limit is {})", self.stream_max),
                e => e.to_string(),
            })?;
        }
        Ok(upload)
    }

    /// Scan one stream or file through the core; the text after `stream: `.
    async fn scan(&self, caller: &Caller, data: Unhashed, tally: &Tally) -> String {
        self.counters.streams.fetch_add(1, Ordering::Relaxed);
        tally.streams.fetch_add(1, Ordering::Relaxed);
        let result = self.core.uploads().scan_unhashed(caller, data).await;
        let t = tally;
        match result {
            Ok(pb::ScanResponse { verdict: Some(v), .. }) => {
                let text = protocol::verdict_text(&v, self.unscannable);
                if text.ends_with(" FOUND") {
                    self.counters.found.fetch_add(1, Ordering::Relaxed);
                    t.found.fetch_add(1, Ordering::Relaxed);
                } else if text.ends_with(" ERROR") {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    t.errors.fetch_add(1, Ordering::Relaxed);
                }
                text
            }
            Ok(_) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                t.errors.fetch_add(1, Ordering::Relaxed);
                protocol::error_text("no verdict")
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                t.errors.fetch_add(1, Ordering::Relaxed);
                error_reply(&e)
            }
        }
    }
}

/// Discard input until the client closes, for at most a few seconds and
/// [`DRAIN_MAX`] bytes.
async fn drain<R: AsyncRead + Unpin>(r: &mut R) {
    let mut sink = tokio::io::sink();
    let _ = tokio::time::timeout(Duration::from_secs(5), tokio::io::copy(&mut r.take(DRAIN_MAX), &mut sink)).await;
}

/// Where a scan's reply goes: its session number, framing and name (`stream`, `fd[N]`).
struct Reply {
    id: Option<u32>,
    style: Style,
    name: String,
    in_session: bool,
}

enum StreamError {
    TooLarge,
    Broken(String),
    /// Refused by the quotas: busy, or the spool full.
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_match_networks_and_mapped_addresses() {
        let ok = |net: &str, ip: &str| allows(&parse_net(net).unwrap(), ip.parse().unwrap());
        assert!(ok("10.1.0.0/16", "10.1.200.3") && !ok("10.1.0.0/16", "10.2.0.1"));
        assert!(ok("10.1.0.0/16", "::ffff:10.1.2.3"), "IPv4-mapped IPv6 peers match IPv4 networks");
        assert!(ok("192.0.2.7", "192.0.2.7") && !ok("192.0.2.7", "192.0.2.8"));
        assert!(ok("0.0.0.0/0", "203.0.113.9"));
        assert!(ok("2001:db8::/32", "2001:db8:1::5"));
        assert!(parse_net("10.0.0.0/33").is_err() && parse_net("example.org").is_err());
    }
}
