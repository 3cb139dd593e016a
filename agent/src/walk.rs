//! Walking like a scanner: every regular file under the given paths,
//! hashed (sha256, streamed) on the walker's threads — or answered from the
//! hash cache when its stat is unchanged. Symbolic links are not followed;
//! FIFOs, sockets and devices are never opened (a FIFO must not hang the
//! walk); pseudo-filesystems (`/proc`, `/sys`, `/dev`, cgroup, debugfs, ...)
//! are not entered unless named as a path to scan; `--exclude` globs, a size cap and
//! `--one-file-system` prune the walk. A file that cannot be read is
//! reported, never dropped; a file left out by a rule is reported skipped.

use crate::cache::HashCache;
use crate::os::{FileStamp, is_locked, is_mount_point, is_pseudo_fs, open_regular};
use globset::{GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// One file found by the walk.
#[derive(Debug)]
pub enum Found {
    File {
        path: PathBuf,
        sha256: String,
        size: u64,
    },
    Error {
        path: PathBuf,
        error: String,
    },
    /// Left out on purpose (a rule of the walk), with the reason.
    Skipped {
        path: PathBuf,
        reason: String,
    },
}

/// How to walk.
#[derive(Clone, Default)]
pub struct WalkOptions {
    pub threads: usize,
    /// Paths matching any of these are left out (a glob without `/` is
    /// matched against the file name, one with `/` against the whole path).
    pub exclude: Vec<String>,
    pub max_file_size: Option<u64>,
    pub one_file_system: bool,
    pub cache: Option<Arc<HashCache>>,
}

/// What the walk cost: file content read, and files answered by the cache.
#[derive(Default, Debug)]
pub struct WalkStats {
    pub bytes_read: AtomicU64,
    pub from_cache: AtomicU64,
}

/// Compiled exclusion globs.
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    pub fn new(globs: &[String]) -> Result<Self, globset::Error> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for g in globs {
            // Windows: paths are matched with `/` for `\` and case ignored,
            // as the file system does.
            let g = if cfg!(windows) { g.replace('\\', "/") } else { g.clone() };
            let glob = globset::GlobBuilder::new(&g).case_insensitive(cfg!(windows)).build()?;
            if g.contains('/') {
                paths.add(glob)
            } else {
                names.add(glob)
            };
        }
        Ok(Self { names: names.build()?, paths: paths.build()? })
    }

    pub fn matches(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| self.names.is_match(n)) || self.paths.is_match(path)
    }
}

/// sha256 and size of an open file, read in 1 MiB pieces.
pub fn hash_reader(f: impl Read, stats: Option<&WalkStats>) -> std::io::Result<(String, u64)> {
    thread_local! {
        // One read buffer per walking thread, not a zeroed MiB per file.
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        if buf.is_empty() {
            buf.resize(1 << 20, 0);
        }
        hash_with(f, buf, stats)
    })
}

fn hash_with(mut f: impl Read, buf: &mut [u8], stats: Option<&WalkStats>) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
        crate::limits::cpu_throttle();
    }
    if let Some(s) = stats {
        s.bytes_read.fetch_add(size, Ordering::Relaxed);
    }
    Ok((hex::encode(h.finalize()), size))
}

/// sha256 and size of the regular file at `path`.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    hash_reader(open_regular(path)?.0, None)
}

/// One regular file: from the cache if its stat is unchanged, else read.
fn file(path: PathBuf, opts: &WalkOptions, stats: &WalkStats) -> Found {
    // One lstat decides the size cap and the cache: an unchanged file is
    // not even opened.
    if let Ok(m) = path.symlink_metadata() {
        if let Some(max) = opts.max_file_size
            && m.len() > max
        {
            return Found::Skipped { path, reason: format!("larger than --max-file-size ({max} bytes)") };
        }
        if let Some(cache) = &opts.cache
            && m.is_file()
            && let Ok(stamp) = FileStamp::at(&path, &m)
            && let Some(sha256) = cache.get(&stamp)
        {
            stats.from_cache.fetch_add(1, Ordering::Relaxed);
            return Found::File { path, sha256, size: m.len() };
        }
    }
    let (f, m) = match open_regular(&path) {
        Ok(x) => x,
        Err(e) if is_locked(&e) => return Found::Skipped { path, reason: e.to_string() },
        Err(e) => return Found::Error { path, error: e.to_string() },
    };
    let stamp = FileStamp::open(&f, &m);
    match hash_reader(f, Some(stats)) {
        Ok((sha256, size)) => {
            if let Some(cache) = &opts.cache
                && let Ok(stamp) = stamp
            {
                cache.put(&stamp, &sha256);
            }
            Found::File { path, sha256, size }
        }
        Err(e) => Found::Error { path, error: e.to_string() },
    }
}

/// Walk `paths`, sending every file (hashed), error or skip to `tx`.
/// Blocks until the walk is done; run it off the async runtime.
pub fn walk(paths: &[PathBuf], opts: &WalkOptions, excludes: Arc<Excludes>, stats: Arc<WalkStats>, tx: mpsc::Sender<Found>) {
    let mut roots = Vec::new();
    for p in paths {
        let skip = |reason: &str| Found::Skipped { path: p.clone(), reason: reason.to_string() };
        let found = match p.symlink_metadata() {
            Err(e) => Some(Found::Error { path: p.clone(), error: e.to_string() }),
            Ok(m) if m.file_type().is_symlink() => Some(skip("symbolic link, not followed")),
            Ok(m) if m.is_dir() => {
                roots.push(p.clone());
                None
            }
            Ok(m) if m.is_file() => Some(file(p.clone(), opts, &stats)),
            Ok(_) => Some(skip("not a regular file (FIFO, socket or device)")),
        };
        if let Some(f) = found
            && tx.blocking_send(f).is_err()
        {
            return;
        }
    }
    let mut roots = roots.into_iter();
    let Some(first) = roots.next() else { return };
    let mut builder = ignore::WalkBuilder::new(first);
    for p in roots {
        builder.add(p);
    }
    // A security scan looks at everything: hidden files and ignored ones too.
    builder.standard_filters(false).follow_links(false).same_file_system(opts.one_file_system).threads(opts.threads.max(1));
    let filter = excludes.clone();
    builder.filter_entry(move |e| {
        if filter.matches(e.path()) {
            return false;
        }
        // Named roots are walked whatever they are (all of `/proc` if it is
        // named); below them, no pseudo-filesystem mounted there is entered.
        let dir = e.file_type().is_some_and(|t| t.is_dir());
        !(dir && e.depth() > 0 && (e.path() == Path::new("/dev") || (is_mount_point(e.path()) && is_pseudo_fs(e.path()))))
    });
    builder.build_parallel().run(|| {
        let (tx, opts, stats) = (tx.clone(), opts.clone(), stats.clone());
        Box::new(move |entry| {
            let found = match entry {
                Err(e) => {
                    let path = match &e {
                        ignore::Error::WithPath { path, .. } => path.clone(),
                        _ => PathBuf::new(),
                    };
                    Some(Found::Error { path, error: e.to_string() })
                }
                // Only regular files are read: FIFOs, sockets, devices and
                // links are passed over.
                Ok(entry) => match entry.file_type() {
                    Some(t) if t.is_file() => Some(file(entry.into_path(), &opts, &stats)),
                    _ => None,
                },
            };
            match found.map(|f| tx.blocking_send(f)) {
                Some(Err(_)) => ignore::WalkState::Quit,
                _ => ignore::WalkState::Continue,
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_and_pseudo_filesystems() {
        let ex = Excludes::new(&["*.iso".into(), "/home/*/.cache/**".into()]).unwrap();
        assert!(ex.matches(Path::new("/data/disk.iso")));
        assert!(ex.matches(Path::new("/home/ann/.cache/x/y.bin")));
        assert!(!ex.matches(Path::new("/home/ann/doc.txt")));
        assert!(is_pseudo_fs(Path::new("/proc")) && is_pseudo_fs(Path::new("/sys")));
        assert!(!is_pseudo_fs(&std::env::temp_dir()));
        // Left out where mounted, walked whole when named.
        assert!(is_mount_point(Path::new("/proc")) && !is_mount_point(Path::new("/proc/sys")));
    }

    #[test]
    fn a_fifo_is_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
