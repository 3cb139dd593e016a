//! inotify, as the agent's service uses it when it is not fanotify: a
//! recursive watch that never follows a symbolic link.
//!
//! Every directory is reached one component at a time without following a
//! link ([`DirFd::open_nofollow`], then `openat(O_NOFOLLOW|O_DIRECTORY)`
//! below it) and watched through its descriptor (`/proc/self/fd/N`), so a
//! watch is always on the directory that was opened, never on where a link
//! swapped in since points. A directory created or moved in is added the
//! same way; the regular files it holds are reported, the directory itself
//! never is (nothing downstream lists a path that could have become a
//! link). inotify gives one watch per directory inode: a directory moved
//! within the tree keeps its watch, found again under its new name.

use super::{DirFd, walk_nofollow};
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Events that mean "look at this path", and those that keep the map of
/// watches right.
const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_EXCL_UNLINK;

/// The watch; stops (within half a second) when dropped.
pub struct Watch {
    stop: Arc<AtomicBool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Tree {
    fd: OwnedFd,
    dirs: HashMap<i32, PathBuf>,
}

impl Tree {
    /// Watch directory `dir`, open as `fd`, and every directory below it,
    /// reporting the regular files found with `report` (none at start).
    fn add(&mut self, dir: PathBuf, fd: OwnedFd, report: &mut dyn FnMut(PathBuf)) {
        let ino = self.fd.as_raw_fd();
        let dirs = &mut self.dirs;
        let mut watch = |dir: &std::path::Path, fd: &OwnedFd| {
            let magic = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
            // SAFETY: an inotify descriptor and a valid C string.
            let wd = unsafe { libc::inotify_add_watch(ino, magic.as_ptr(), MASK) };
            if wd < 0 {
                let e = std::io::Error::last_os_error();
                tracing::warn!(dir = %dir.display(), error = %e, "inotify: not watched (raise fs.inotify.max_user_watches?)");
                return false;
            }
            dirs.insert(wd, dir.to_path_buf());
            true
        };
        walk_nofollow(dir, fd, &mut watch, report);
    }
}

/// Watch `paths` (directories, absolute, their links resolved at start)
/// recursively; paths of files to look at go to `tx`.
pub fn watch(paths: &[PathBuf], tx: mpsc::Sender<PathBuf>) -> std::io::Result<Watch> {
    // SAFETY: plain syscall; the descriptor is owned below.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just returned by inotify_init1.
    let mut tree = Tree { fd: unsafe { OwnedFd::from_raw_fd(fd) }, dirs: HashMap::new() };
    for p in paths {
        let dir = DirFd::open_nofollow(p).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        tree.add(p.clone(), dir.into_owned(), &mut |_| {});
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new().name("inotify".into()).spawn(move || run(tree, tx, &stopped))?;
    Ok(Watch { stop })
}

fn run(mut tree: Tree, tx: mpsc::Sender<PathBuf>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    let raw: RawFd = tree.fd.as_raw_fd();
    while !stop.load(Ordering::Relaxed) && !tx.is_closed() {
        let mut pfd = libc::pollfd { fd: raw, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 500) } <= 0 {
            continue;
        }
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let mut off = 0usize;
        let head = std::mem::size_of::<libc::inotify_event>();
        while off + head <= n as usize {
            // SAFETY: the kernel wrote a whole event here; read unaligned.
            let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let name_bytes = &buf[off + head..off + head + ev.len as usize];
            let name = OsStr::from_bytes(&name_bytes[..name_bytes.iter().position(|&b| b == 0).unwrap_or(name_bytes.len())]);
            off += head + ev.len as usize;
            let mut report = |p: PathBuf| {
                let _ = tx.blocking_send(p);
            };
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                tracing::warn!("inotify: events lost (raise fs.inotify.max_queued_events?)");
                continue;
            }
            if ev.mask & libc::IN_IGNORED != 0 {
                tree.dirs.remove(&ev.wd);
                continue;
            }
            let Some(dir) = tree.dirs.get(&ev.wd).cloned() else { continue };
            if name.is_empty() {
                continue; // about the directory itself (moved, deleted)
            }
            let path = dir.join(name);
            if ev.mask & libc::IN_ISDIR != 0 {
                if ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0
                    && let Ok(d) = DirFd::open_nofollow(&path)
                {
                    tree.add(path, d.into_owned(), &mut report);
                }
                continue;
            }
            report(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn next(rx: &mut mpsc::Receiver<PathBuf>) -> Option<PathBuf> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.ok().flatten() })
    }

    #[test]
    fn reports_files_below_new_directories_and_never_follows_a_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let (watched, secret) = (root.join("w"), root.join("secret"));
        std::fs::create_dir_all(watched.join("a")).unwrap();
        std::fs::create_dir(&secret).unwrap();
        std::os::unix::fs::symlink(&secret, watched.join("link")).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let _w = watch(std::slice::from_ref(&watched), tx).unwrap();
        std::fs::write(watched.join("a/f"), b"x").unwrap();
        assert_eq!(next(&mut rx), Some(watched.join("a/f")));
        // A file written through the link is in a directory not watched.
        std::fs::write(secret.join("s"), b"x").unwrap();
        // A directory moved in: the files it holds are reported, and it is
        // watched from then on.
        let outside = root.join("outside");
        std::fs::create_dir_all(outside.join("deep")).unwrap();
        std::fs::write(outside.join("deep/g"), b"x").unwrap();
        std::fs::rename(&outside, watched.join("moved")).unwrap();
        let mut seen = Vec::new();
        while let Some(p) = next(&mut rx) {
            seen.push(p);
            if seen.contains(&watched.join("moved/deep/g")) {
                break;
            }
        }
        assert!(seen.iter().all(|p| !p.starts_with(watched.join("link")) && !p.starts_with(&secret)), "{seen:?}");
        std::fs::write(watched.join("moved/deep/h"), b"x").unwrap();
        assert_eq!(next(&mut rx), Some(watched.join("moved/deep/h")));
    }
}
