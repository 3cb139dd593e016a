//! fanotify, as root: whole filesystems watched without a watch descriptor
//! per directory, and on-access blocking.
//!
//! - **Watch**: a notification group reporting the parent directory and
//!   name (`FAN_REPORT_DFID_NAME`) of files closed after writing and of
//!   files or directories moved in, on the filesystem of each watched path;
//!   events outside the watched paths are dropped.
//! - **On access**: a content group with `FAN_OPEN_PERM` and
//!   `FAN_OPEN_EXEC_PERM` on the filesystem of each watched path (a
//!   filesystem mark, not a mount mark: the systemd unit runs the agent in
//!   its own mount namespace, whose copies of the mounts other processes
//!   never open through); opens outside the watched paths are allowed at
//!   once by the reading thread. The kernel
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
use qala_proto::VerdictKind;
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const FAN_CLOEXEC: u32 = 0x1;
const FAN_CLASS_NOTIF: u32 = 0x0;
const FAN_CLASS_CONTENT: u32 = 0x4;
const FAN_REPORT_DFID_NAME: u32 = 0x0000_0c00;
const FAN_MARK_ADD: u32 = 0x1;
const FAN_MARK_FILESYSTEM: u32 = 0x100;
const FAN_CLOSE_WRITE: u64 = 0x8;
const FAN_MOVED_TO: u64 = 0x80;
const FAN_Q_OVERFLOW: u64 = 0x4000;
const FAN_OPEN_PERM: u64 = 0x1_0000;
const FAN_OPEN_EXEC_PERM: u64 = 0x4_0000;
const FAN_ONDIR: u64 = 0x4000_0000;
const FAN_ALLOW: u32 = 0x1;
const FAN_DENY: u32 = 0x2;
const FAN_EVENT_INFO_TYPE_DFID_NAME: u8 = 2;
const METADATA_LEN: usize = 24;

fn init(flags: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd returned is owned here.
    let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by fanotify_init.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mark(fd: &OwnedFd, flags: u32, mask: u64, path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("NUL in path"))?;
    // SAFETY: fd is a fanotify group; c is a valid path.
    let r = unsafe { libc::fanotify_mark(fd.as_raw_fd(), flags, mask, libc::AT_FDCWD, c.as_ptr()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("fanotify_mark {}: {e}", path.display())));
    }
    Ok(())
}

fn read_events(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Read events from group `fd` for ever, calling `each` with every event's
/// metadata and the bytes of its info records; stops when `each` says so
/// or a read fails (logged as `what`).
fn read_loop(fd: RawFd, what: &str, mut each: impl FnMut(&Meta, &[u8]) -> bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match read_events(fd, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "{what}: read failed; stopped (the kernel allows what is pending)");
                return;
            }
        };
        let mut off = 0;
        while let Some(m) = parse_meta(&buf[off..n]) {
            if !each(&m, &buf[off + m.meta_len..off + m.len]) {
                return;
            }
            off += m.len;
        }
    }
}

struct Meta {
    len: usize,
    meta_len: usize,
    mask: u64,
    fd: i32,
    pid: i32,
}

fn parse_meta(b: &[u8]) -> Option<Meta> {
    if b.len() < METADATA_LEN {
        return None;
    }
    let len = u32::from_ne_bytes(b[0..4].try_into().ok()?) as usize;
    let meta_len = u16::from_ne_bytes(b[6..8].try_into().ok()?) as usize;
    if len < METADATA_LEN || len > b.len() || meta_len < METADATA_LEN || meta_len > len {
        return None;
    }
    Some(Meta {
        len,
        meta_len,
        mask: u64::from_ne_bytes(b[8..16].try_into().ok()?),
        fd: i32::from_ne_bytes(b[16..20].try_into().ok()?),
        pid: i32::from_ne_bytes(b[20..24].try_into().ok()?),
    })
}

fn fd_path(fd: RawFd) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

/// The directory a DFID_NAME record names, joined with the name.
fn resolve(info: &[u8], mount_fds: &[OwnedFd]) -> Option<PathBuf> {
    // header (4) + fsid (8) + file_handle { handle_bytes u32, type i32, f_handle[] } + name\0
    let handle_bytes = u32::from_ne_bytes(info.get(12..16)?.try_into().ok()?) as usize;
    let handle = info.get(12..20 + handle_bytes)?;
    let name_bytes = info.get(20 + handle_bytes..)?;
    let name = &name_bytes[..name_bytes.iter().position(|&b| b == 0)?];
    // struct file_handle needs 4-byte alignment: copy it out.
    let mut aligned = vec![0u32; handle.len().div_ceil(4)];
    // SAFETY: aligned holds at least handle.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(handle.as_ptr(), aligned.as_mut_ptr().cast::<u8>(), handle.len()) };
    for m in mount_fds {
        // SAFETY: aligned is a complete struct file_handle.
        let dir = unsafe {
            libc::syscall(libc::SYS_open_by_handle_at, m.as_raw_fd(), aligned.as_ptr(), libc::O_PATH | libc::O_CLOEXEC)
        };
        if dir < 0 {
            continue;
        }
        // SAFETY: dir was just opened.
        let dir = unsafe { OwnedFd::from_raw_fd(dir as RawFd) };
        let path = fd_path(dir.as_raw_fd())?;
        if name.is_empty() || name == b"." {
            return Some(path);
        }
        return Some(path.join(std::ffi::OsStr::from_bytes(name)));
    }
    None
}

/// Watch the filesystems of `paths`; events under `paths` go to `tx`.
/// Runs on its own thread until `tx` closes.
pub fn watch(paths: &[PathBuf], tx: mpsc::Sender<PathBuf>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let fd = init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_REPORT_DFID_NAME)?;
    let mut mount_fds = Vec::new();
    for p in paths {
        mark(&fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_CLOSE_WRITE | FAN_MOVED_TO | FAN_ONDIR, p)?;
        let f = std::fs::File::open(p)?;
        mount_fds.push(OwnedFd::from(f));
    }
    let roots: Vec<PathBuf> = paths.to_vec();
    std::thread::Builder::new().name("fanotify-watch".into()).spawn(move || {
        read_loop(fd.as_raw_fd(), "fanotify watch", |m, info| {
            if m.mask & FAN_Q_OVERFLOW != 0 {
                tracing::warn!("fanotify watch: queue overflow, events lost (the next scheduled rescan finds them)");
            }
            let mut i = 0;
            while i + 4 <= info.len() {
                let info_len = u16::from_ne_bytes([info[i + 2], info[i + 3]]) as usize;
                if info_len < 4 || i + info_len > info.len() {
                    break;
                }
                if info[i] == FAN_EVENT_INFO_TYPE_DFID_NAME
                    && let Some(p) = resolve(&info[i..i + info_len], &mount_fds)
                    && roots.iter().any(|r| p.starts_with(r))
                    && tx.blocking_send(p).is_err()
                {
                    return false;
                }
                i += info_len;
            }
            true
        })
    })
}

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

fn respond(group: RawFd, fd: RawFd, allow: bool) {
    let resp: [u32; 2] = [fd as u32, if allow { FAN_ALLOW } else { FAN_DENY }];
    // SAFETY: resp is a complete struct fanotify_response.
    unsafe { libc::write(group, resp.as_ptr().cast(), 8) };
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Hash an open file from its start (the event's own descriptor: reading
/// it raises no new event).
fn hash_fd(fd: RawFd) -> std::io::Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off: i64 = 0;
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n as usize]);
        off += n as i64;
    }
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
        let group = Arc::new(init(FAN_CLASS_CONTENT | FAN_CLOEXEC)?);
        for p in paths {
            mark(&group, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM, p)?;
        }
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
                if m.mask & (FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM) == 0 {
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
                    let who = verdict.as_ref().map(|_| format!("pid {} ({})", pid, comm(pid)));
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
