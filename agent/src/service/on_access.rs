//! On-access blocking, as root, through fanotify's permission events
//! ([`crate::os::fanotify`]): opens outside the watched paths are allowed
//! at once by the reading thread. The kernel
//!   holds each open until the agent answers, so the answer comes from what
//!   is at hand only: the hash cache or a hash of the open file (up to a
//!   size cap), then verdicts seen before, then one `Lookup` with a short
//!   timeout; never an upload; the whole decision has `on_access_timeout_ms`
//!   (500 ms). `malicious` is denied; content the cluster has not seen is
//!   allowed and scanned at once in the background; an open that cannot be
//!   judged in time (hashing busy, over the size cap, no answer before the
//!   deadline, the coordinator unreachable) is allowed (`fail-open`) or
//!   denied (`fail-closed`), and scanned in the background either way. The agent's own opens are allowed at once
//!   by the reading thread, before anything else. If the agent dies, the
//!   kernel drops the group and allows what was pending.

use super::events::Events;
use super::pipeline::{Memo, rule_names};
use crate::cache::HashCache;
use crate::client::Client;
use crate::os::fanotify::{PERMISSION_EVENTS, content_group, fd_path, hash_fd, process_name, read_loop, respond};
use qala_proto::VerdictKind;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What on-access decisions need.
pub struct OnAccess {
    pub client: Client,
    pub cache: Option<Arc<HashCache>>,
    pub memo: Arc<Memo>,
    pub events: Events,
    pub timeout: Duration,
    pub max_size: u64,
    /// Files to scan in the background (no verdict yet, or too large).
    pub later: mpsc::Sender<PathBuf>,
    /// Hashes of open files at once (a flood of opens of new files is
    /// allowed and scanned after, not hashed all at once).
    pub hashing: tokio::sync::Semaphore,
    /// Deny an open that cannot be judged in time (`fail-closed`) instead
    /// of allowing it.
    pub fail_closed: bool,
}

/// What one open gets.
enum Decision {
    Allow,
    /// Malicious: the file's sha256 and the rules that matched.
    Deny(String, Vec<String>),
    /// No judgement could be had in time (why): allowed or denied as the
    /// mode says, and scanned after.
    Unjudged(String),
}

impl OnAccess {
    /// Judge one open.
    async fn decide(self: &Arc<Self>, fd: RawFd) -> Decision {
        // SAFETY: fd is the event's open descriptor, alive until answered.
        let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let Ok(m) = file.metadata() else { return Decision::Unjudged("no metadata".into()) };
        if !m.is_file() || m.len() == 0 {
            return Decision::Allow;
        }
        let path = fd_path(fd);
        let later = |why: String| {
            if let Some(p) = &path {
                let _ = self.later.try_send(p.clone());
            }
            Decision::Unjudged(why)
        };
        if m.len() > self.max_size {
            return later(format!("over the on-access size cap ({} bytes)", self.max_size));
        }
        let sha = match self.cache.as_ref().and_then(|c| c.get(&crate::os::FileStamp::of(&m))) {
            Some(s) => s,
            None => {
                let Ok(_permit) = self.hashing.try_acquire() else {
                    return later("busy hashing other opens".into());
                };
                let Ok(dup) = file.try_clone() else { return later("descriptor not duplicated".into()) };
                match tokio::task::spawn_blocking(move || hash_fd(dup.as_raw_fd())).await {
                    Ok(Ok(sha)) => sha,
                    _ => return later("not readable".into()),
                }
            }
        };
        if let Some((kind, rules)) = self.memo.get(&sha) {
            return if kind == VerdictKind::Malicious { Decision::Deny(sha, rules) } else { Decision::Allow };
        }
        match self.client.lookup_once(sha.clone(), self.timeout).await {
            Ok(r) => match r.verdicts.into_iter().find(|v| v.sha256 == sha) {
                Some(v) => {
                    self.memo.put(&sha, &v);
                    if crate::output::kind(&v) == VerdictKind::Malicious {
                        Decision::Deny(sha, rule_names(&v))
                    } else {
                        Decision::Allow
                    }
                }
                // Content the cluster has never seen: allowed, and scanned
                // at once in the background (in either mode).
                None => {
                    if let Some(p) = &path {
                        let _ = self.later.try_send(p.clone());
                    }
                    Decision::Allow
                }
            },
            Err(e) => later(format!("no answer from the coordinator: {}", e.message())),
        }
    }

    /// Start blocking on the filesystems of `paths`. The reading thread answers
    /// the agent's own opens itself and hands the rest to tasks on `rt`.
    pub fn start(self: Arc<Self>, paths: &[PathBuf], rt: tokio::runtime::Handle) -> std::io::Result<std::thread::JoinHandle<()>> {
        let group = Arc::new(content_group(paths)?);
        let roots: Vec<PathBuf> = paths.to_vec();
        let me = std::process::id() as i32;
        let reported: Arc<Mutex<HashMap<(String, i32), Instant>>> = Arc::default();
        std::thread::Builder::new().name("fanotify-access".into()).spawn(move || {
            read_loop(group.as_raw_fd(), "on-access", |m, _| {
                if m.fd < 0 {
                    return true;
                }
                // SAFETY: the event's descriptor, owned from here.
                let fd = unsafe { OwnedFd::from_raw_fd(m.fd) };
                if m.mask & PERMISSION_EVENTS == 0 {
                    return true;
                }
                if m.pid == me || !fd_path(fd.as_raw_fd()).is_some_and(|p| roots.iter().any(|r| p.starts_with(r))) {
                    respond(group.as_raw_fd(), fd.as_raw_fd(), true);
                    return true;
                }
                let (this, group, reported, pid) = (self.clone(), group.clone(), reported.clone(), m.pid);
                rt.spawn(async move {
                    let raw = fd.as_raw_fd();
                    let decision = match tokio::time::timeout(this.timeout, this.decide(raw)).await {
                        Ok(d) => d,
                        Err(_) => {
                            if let Some(p) = fd_path(raw) {
                                let _ = this.later.try_send(p);
                            }
                            Decision::Unjudged(format!("no answer within {} ms", this.timeout.as_millis()))
                        }
                    };
                    let allow = match &decision {
                        Decision::Allow => true,
                        Decision::Deny(..) => false,
                        Decision::Unjudged(_) => !this.fail_closed,
                    };
                    // Who asked, read while the process still waits on
                    // the answer (it may exit right after a denial).
                    let who = (!allow).then(|| format!("pid {} ({})", pid, process_name(pid)));
                    respond(group.as_raw_fd(), raw, allow);
                    if let Some(who) = who {
                        let path = fd_path(raw).unwrap_or_default();
                        let (key, verdict, rules, detail) = match decision {
                            Decision::Deny(sha, rules) => (sha, "malicious", rules, who),
                            Decision::Unjudged(why) => {
                                (path.display().to_string(), "unjudged", Vec::new(), format!("{who}: fail-closed: {why}"))
                            }
                            Decision::Allow => unreachable!("allowed"),
                        };
                        // One report per file and process every 10 s.
                        let fresh = {
                            let mut r = reported.lock().expect("reported lock");
                            r.retain(|_, t| t.elapsed() < Duration::from_secs(10));
                            r.insert((key.clone(), pid), Instant::now()).is_none()
                        };
                        if fresh {
                            let sha = if verdict == "malicious" { key.as_str() } else { "" };
                            this.events.action("access_denied", &path, sha, verdict, &rules, &detail);
                        }
                    }
                    drop(fd);
                });
                true
            })
        })
    }
}
