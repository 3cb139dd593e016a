//! fanotify, Linux's filesystem-wide notification and permission API, as
//! the agent's service uses it (as root): the kernel side only. What to do
//! with an open is decided in `service::on_access`.
//!
//! - [`watch`]: a notification group reporting the parent directory and
//!   name (`FAN_REPORT_DFID_NAME`) of files closed after writing and of
//!   files or directories moved in, on the filesystem of each watched path;
//!   events outside the watched paths are dropped.
//! - [`content_group`]: a content group with `FAN_OPEN_PERM` and
//!   `FAN_OPEN_EXEC_PERM` on the filesystem of each watched path (a
//!   filesystem mark, not a mount mark: the systemd unit runs the agent in
//!   its own mount namespace, whose copies of the mounts other processes
//!   never open through); each open waits for [`respond`].

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Events of a content group that wait for an answer.
pub const PERMISSION_EVENTS: u64 = libc::FAN_OPEN_PERM | libc::FAN_OPEN_EXEC_PERM;

/// Size of `struct fanotify_event_metadata`.
const METADATA_LEN: usize = std::mem::size_of::<libc::fanotify_event_metadata>();

fn init(flags: libc::c_uint) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd returned is owned here.
    let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by fanotify_init.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mark(fd: &OwnedFd, flags: libc::c_uint, mask: u64, path: &Path) -> std::io::Result<()> {
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
pub fn read_loop(fd: RawFd, what: &str, mut each: impl FnMut(&Meta, &[u8]) -> bool) {
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

/// One event's metadata.
pub struct Meta {
    len: usize,
    meta_len: usize,
    pub mask: u64,
    /// The event's open descriptor (permission events: owned by the reader
    /// until answered), or negative.
    pub fd: i32,
    pub pid: i32,
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

/// The path an open descriptor is at now.
pub fn fd_path(fd: RawFd) -> Option<PathBuf> {
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
    let fd = init(libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_REPORT_DFID_NAME)?;
    let mut mount_fds = Vec::new();
    for p in paths {
        mark(
            &fd,
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            libc::FAN_CLOSE_WRITE | libc::FAN_MOVED_TO | libc::FAN_ONDIR,
            p,
        )?;
        let f = std::fs::File::open(p)?;
        mount_fds.push(OwnedFd::from(f));
    }
    let roots: Vec<PathBuf> = paths.to_vec();
    std::thread::Builder::new().name("fanotify-watch".into()).spawn(move || {
        read_loop(fd.as_raw_fd(), "fanotify watch", |m, info| {
            if m.mask & libc::FAN_Q_OVERFLOW != 0 {
                tracing::warn!("fanotify watch: queue overflow, events lost (the next scheduled rescan finds them)");
            }
            let mut i = 0;
            while i + 4 <= info.len() {
                let info_len = u16::from_ne_bytes([info[i + 2], info[i + 3]]) as usize;
                if info_len < 4 || i + info_len > info.len() {
                    break;
                }
                if info[i] == libc::FAN_EVENT_INFO_TYPE_DFID_NAME
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

/// A content group holding every open on the filesystems of `paths` until
/// it is answered ([`respond`]).
pub fn content_group(paths: &[PathBuf]) -> std::io::Result<OwnedFd> {
    let group = init(libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC)?;
    for p in paths {
        mark(&group, libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM, PERMISSION_EVENTS, p)?;
    }
    Ok(group)
}

/// Answer a permission event: allow or deny the open of `fd`.
pub fn respond(group: RawFd, fd: RawFd, allow: bool) {
    let resp = libc::fanotify_response { fd, response: if allow { libc::FAN_ALLOW } else { libc::FAN_DENY } };
    // SAFETY: resp is a complete struct fanotify_response.
    unsafe { libc::write(group, (&raw const resp).cast(), std::mem::size_of::<libc::fanotify_response>()) };
}

/// The name of process `pid` (its `comm`).
pub fn process_name(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Hash an open file from its start (the event's own descriptor: reading
/// it raises no new event).
pub fn hash_fd(fd: RawFd) -> std::io::Result<String> {
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
