//! On-access blocking, as root, through fanotify's permission events
//! ([`crate::os::fanotify`]): opens outside the watched paths are allowed
//! at once by the reading thread. The kernel
//!   holds each open until the agent answers, so the answer comes from what
//!   is at hand only: the hash cache or a hash of the open file (up to a
//!   size cap), then verdicts seen before, then one `Lookup` with a short
//!   timeout; never an upload. `malicious` is denied; anything else, no
//!   verdict yet, a timeout or an error is allowed (fail-open) and the file
//!   scanned in the background. The agent's own opens are allowed at once
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
}

impl OnAccess {
    /// Allow or deny one open; `Some(rules)` means deny.
    async fn decide(self: &Arc<Self>, fd: RawFd) -> Option<(String, Vec<String>)> {
        // SAFETY: fd is the event's open descriptor, alive until answered.
        let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let m = file.metadata().ok()?;
        if !m.is_file() || m.len() == 0 {
            return None;
        }
        let path = fd_path(fd);
        if m.len() > self.max_size {
            if let Some(p) = path {
                let _ = self.later.try_send(p);
            }
            return None;
        }
        let sha = match self.cache.as_ref().and_then(|c| c.get(&m)) {
            Some(s) => s,
            None => {
                let Ok(_permit) = self.hashing.try_acquire() else {
                    if let Some(p) = path {
                        let _ = self.later.try_send(p);
                    }
                    return None;
                };
                let dup = file.try_clone().ok()?;
                tokio::task::spawn_blocking(move || hash_fd(dup.as_raw_fd())).await.ok()?.ok()?
            }
        };
        if let Some((kind, rules)) = self.memo.get(&sha) {
            return (kind == VerdictKind::Malicious).then_some((sha, rules));
        }
        match self.client.lookup_once(sha.clone(), self.timeout).await {
            Ok(r) => match r.verdicts.into_iter().find(|v| v.sha256 == sha) {
                Some(v) => {
                    self.memo.put(&sha, &v);
                    (crate::output::kind(&v) == VerdictKind::Malicious).then(|| (sha, rule_names(&v)))
                }
                None => {
                    if let Some(p) = path {
                        let _ = self.later.try_send(p);
                    }
                    None
                }
            },
            Err(_) => {
                if let Some(p) = path {
                    let _ = self.later.try_send(p);
                }
                None
            }
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
                    let verdict = match tokio::time::timeout(this.timeout, this.decide(raw)).await {
                        Ok(v) => v,
                        Err(_) => {
                            // No answer in time: allowed, and scanned after.
                            if let Some(p) = fd_path(raw) {
                                let _ = this.later.try_send(p);
                            }
                            None
                        }
                    };
                    // Who asked, read while the process still waits on
                    // the answer (it may exit right after a denial).
                    let who = verdict.as_ref().map(|_| format!("pid {} ({})", pid, process_name(pid)));
                    respond(group.as_raw_fd(), raw, verdict.is_none());
                    if let (Some((sha, rules)), Some(who)) = (verdict, who) {
                        let path = fd_path(raw).unwrap_or_default();
                        // One report per file and process every 10 s.
                        let fresh = {
                            let mut r = reported.lock().expect("reported lock");
                            r.retain(|_, t| t.elapsed() < Duration::from_secs(10));
                            r.insert((sha.clone(), pid), Instant::now()).is_none()
                        };
                        if fresh {
                            this.events.action("access_denied", &path, &sha, "malicious", &rules, &who);
                        }
                    }
                    drop(fd);
                });
                true
            })
        })
    }
}
