//! The agent's OS specifics on Unix (Linux first: `statfs` magics,
//! `ioprio`, `O_NOFOLLOW` walks).

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where secrets live on a Unix desktop: looked up, never uploaded, unless
/// the admin says otherwise (`--upload-exclude`, `scan.upload_exclude`).
pub const PRIVATE_DATA: &[&str] = &[
    "**/.ssh/**",
    "**/.gnupg/**",
    "**/.local/share/keyrings/**",
    "**/.password-store/**",
    "**/.mozilla/firefox/**",
    "**/.config/google-chrome/**",
    "**/.config/chromium/**",
    "**/.thunderbird/**",
];

/// Whether the agent runs as root (then it may watch whole filesystems,
/// block opens, and keeps its files in the system's places).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// What this machine runs, for the inventory: the distribution's name and
/// the kernel (`Debian GNU/Linux 13 (trixie); Linux 6.18.0`).
pub fn os_description() -> String {
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default();
    format!("{pretty}; Linux {kernel}")
}

/// Which file a path was (device and inode) and the stat fields that must
/// all be unchanged for what the agent knows of its content to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// Nanoseconds of a stat time.
fn ns(s: i64, n: i64) -> i64 {
    s.saturating_mul(1_000_000_000).saturating_add(n)
}

impl FileStamp {
    pub fn of(m: &Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    /// The stamp of the file at `path`, whose `symlink_metadata` is `m`
    /// (here `m` says all; Windows opens the file for its identity).
    pub fn at(_path: &Path, m: &Metadata) -> std::io::Result<Self> {
        Ok(Self::of(m))
    }

    /// The stamp of the open `file`, whose metadata is `m`.
    pub fn open(_file: &File, m: &Metadata) -> std::io::Result<Self> {
        Ok(Self::of(m))
    }

    /// Whether `other` is the same file (not one put at its path since).
    pub fn same_file(&self, other: &FileStamp) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// Open `path` for reading without ever blocking (O_NONBLOCK: a FIFO or
/// device swapped in after the walk saw a file), without following a
/// symbolic link in any of its components (`openat2` with
/// `RESOLVE_NO_SYMLINKS`; one directory at a time where the kernel has no
/// `openat2`): a parent directory swapped for a link since the walk saw the
/// file is refused, not followed. Only a regular file; with its stat,
/// taken before anything is read.
pub fn open_regular(path: &Path) -> std::io::Result<(File, Metadata)> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let cpath = cstr(path.as_os_str())?;
    // SAFETY: open_how is plain data; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: a valid C string and open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            cpath.as_ptr(),
            &how as *const libc::open_how,
            size_of::<libc::open_how>(),
        )
    };
    let f = if fd >= 0 {
        // SAFETY: fd was just opened and is owned here.
        unsafe { File::from_raw_fd(fd as RawFd) }
    } else {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ELOOP) => {
                return Err(std::io::Error::other(format!("{}: a symbolic link on the way; not followed", path.display())));
            }
            Some(libc::ENOSYS) => {
                let (dir, name) = split(path)?;
                DirFd::open_nofollow(dir)?.open_read(name, flags)?
            }
            _ => return Err(e),
        }
    };
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((f, m))
}

/// Whether `e` says another process holds the file locked (Windows only:
/// Unix has no mandatory locks the agent meets).
pub fn is_locked(_e: &std::io::Error) -> bool {
    false
}

/// Filesystems that are views of the kernel, not files: never entered
/// unless named (by `statfs` magic; `/dev`, a devtmpfs that reports itself
/// as tmpfs, is left out by its path).
pub fn is_pseudo_fs(path: &Path) -> bool {
    const PSEUDO: &[i64] = &[
        0x9fa0,      // proc
        0x6265_6572, // sysfs
        0x1373,      // devfs
        0x1cd1,      // devpts
        0x0027_e0eb, // cgroup
        0x6367_7270, // cgroup2
        0x6462_6720, // debugfs
        0x7472_6163, // tracefs
        0x7363_6673, // securityfs
        0x6165_676c, // pstore
        0xcafe_4a11, // bpf
        0x6265_6570, // configfs
        0x6573_5543, // fusectl
        0x1980_0202, // mqueue
        0x4249_4e4d, // binfmt_misc
        0xf97c_ff8c, // selinuxfs
        0xde5e_81e4, // efivarfs
        0x6e73_6673, // nsfs
        0x0187,      // autofs
    ];
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: statfs is plain old data; zeroes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    PSEUDO.contains(&(st.f_type as i64))
}

/// Whether `dir` is on another filesystem than its parent.
pub fn is_mount_point(dir: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (dir.symlink_metadata(), dir.parent().map(Path::symlink_metadata)) else { return false };
    me.dev() != parent.dev()
}

/// I/O scheduling class for `ionice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    Idle,
    BestEffortLow,
    Unchanged,
}

/// Lower this process's CPU priority to `nice` and its I/O class, before
/// any other thread exists (Linux applies both per thread; new threads
/// inherit them). Returns what could not be set.
pub fn lower_priority(nice: i32, io: IoClass) -> Vec<String> {
    let mut failed = Vec::new();
    if nice != 0 {
        // SAFETY: setpriority on the calling thread; no pointers.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
            failed.push(format!("nice {nice}: {}", std::io::Error::last_os_error()));
        }
    }
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const CLASS_SHIFT: libc::c_long = 13;
    let prio = match io {
        IoClass::Idle => 3 << CLASS_SHIFT,
        IoClass::BestEffortLow => (2 << CLASS_SHIFT) | 7,
        IoClass::Unchanged => return failed,
    };
    // SAFETY: ioprio_set(who, 0 = this thread, prio); no pointers.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0 as libc::c_long, prio) } != 0 {
        failed.push(format!("ionice: {}", std::io::Error::last_os_error()));
    }
    failed
}

/// CPU time this process has used.
pub fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// All bytes this process has read through read(2) so far (`rchar` of
/// `/proc/self/io`: files, the hash cache, sockets): what the summary
/// reports next to the file content read.
pub fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("rchar:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Create `path`, which must not exist (not even as a link), readable by
/// its owner alone (0600).
pub fn create_private(path: &Path) -> std::io::Result<File> {
    qala_common::files::create_new(path, 0o600)
}

/// Create directory `dir` and its parents, `dir` itself for its owner
/// alone (0700, set again if it existed); refused if `dir` is a symbolic
/// link or not a directory.
pub fn mkdir_private(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    if !std::fs::symlink_metadata(dir)?.is_dir() {
        return Err(std::io::Error::other(format!("{}: not a directory", dir.display())));
    }
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
}

fn cstr(p: &std::ffi::OsStr) -> std::io::Result<CString> {
    CString::new(p.as_bytes()).map_err(|_| std::io::Error::other("NUL in a path"))
}

/// Visit directory `dir` (open as `fd`) and every directory below it,
/// each reached from its parent's descriptor without following a link
/// (`openat(O_NOFOLLOW|O_DIRECTORY)`): `on_dir` sees each directory (false:
/// not entered), `on_file` each regular file's path. Links, FIFOs, sockets
/// and devices are passed over; what cannot be opened is skipped.
pub fn walk_nofollow(
    dir: PathBuf,
    fd: OwnedFd,
    on_dir: &mut dyn FnMut(&Path, &OwnedFd) -> bool,
    on_file: &mut dyn FnMut(PathBuf),
) {
    let mut todo = vec![(dir, fd)];
    while let Some((dir, fd)) = todo.pop() {
        if !on_dir(&dir, &fd) {
            continue;
        }
        // The directory's own descriptor, by its magic link: never a path
        // that could have become a link since.
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) else { continue };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            let name = e.file_name();
            if t.is_dir() {
                let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
                let Ok(c) = cstr(&name) else { continue };
                // SAFETY: an open directory and a valid C string.
                let sub = unsafe { libc::openat(fd.as_raw_fd(), c.as_ptr(), flags) };
                if sub >= 0 {
                    // SAFETY: sub was just opened.
                    todo.push((dir.join(&name), unsafe { OwnedFd::from_raw_fd(sub) }));
                }
            } else if t.is_file() {
                on_file(dir.join(&name));
            }
        }
    }
}

/// The regular files below directory `dir`, reached without following a
/// link ([`walk_nofollow`]); directories `skip` matches are not entered.
pub fn files_below(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let fd = DirFd::open_nofollow(dir)?;
    let mut files = Vec::new();
    walk_nofollow(dir.to_path_buf(), fd.into_owned(), &mut |d, _| !skip(d), &mut |f| {
        if !skip(&f) {
            files.push(f)
        }
    });
    Ok(files)
}

/// An open directory, reached one component at a time without following a
/// symbolic link; names are created and removed relative to it, so a
/// directory of the path swapped for a link since changes nothing.
pub struct DirFd(OwnedFd);

impl DirFd {
    /// The descriptor.
    pub fn into_owned(self) -> OwnedFd {
        self.0
    }

    /// Open directory `dir` (absolute) one component at a time, never
    /// following a symbolic link.
    pub fn open_nofollow(dir: &Path) -> std::io::Result<DirFd> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a constant, valid C string.
        let root = unsafe { libc::open(c"/".as_ptr(), flags) };
        if root < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: root was just opened.
        let mut fd = unsafe { OwnedFd::from_raw_fd(root) };
        for c in dir.components() {
            let Component::Normal(part) = c else { continue };
            let name = cstr(part)?;
            // SAFETY: fd is an open directory, name a valid C string.
            let next = unsafe { libc::openat(fd.as_raw_fd(), name.as_ptr(), flags) };
            if next < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
                    return Err(std::io::Error::other(format!("{}: a symbolic link or not a directory", part.to_string_lossy())));
                }
                return Err(e);
            }
            // SAFETY: next was just opened.
            fd = unsafe { OwnedFd::from_raw_fd(next) };
        }
        Ok(DirFd(fd))
    }

    /// Create `name` in this directory for writing: never over an existing
    /// file, never through a link (0600 until its mode is set).
    pub fn create_new(&self, name: &std::ffi::OsStr) -> std::io::Result<File> {
        let cname = cstr(name)?;
        // SAFETY: self is an open directory, cname a valid C string.
        let fd = unsafe {
            libc::openat(
                self.0.as_raw_fd(),
                cname.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned here.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Open `name` in this directory with `flags` (which should hold
    /// O_NOFOLLOW).
    fn open_read(&self, name: &std::ffi::OsStr, flags: i32) -> std::io::Result<File> {
        let cname = cstr(name)?;
        // SAFETY: self is an open directory, cname a valid C string.
        let fd = unsafe { libc::openat(self.0.as_raw_fd(), cname.as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned here.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// The stat of `name` in this directory, not following a link.
    pub fn stat(&self, name: &std::ffi::OsStr) -> std::io::Result<FileStamp> {
        let cname = cstr(name)?;
        // SAFETY: stat is plain data filled by the call.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: self is an open directory, cname a valid C string, st writable.
        if unsafe { libc::fstatat(self.0.as_raw_fd(), cname.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FileStamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
        })
    }

    /// Remove `name` from this directory.
    pub fn unlink(&self, name: &std::ffi::OsStr) -> std::io::Result<()> {
        let cname = cstr(name)?;
        // SAFETY: self is an open directory, cname a valid C string.
        if unsafe { libc::unlinkat(self.0.as_raw_fd(), cname.as_ptr(), 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A path the admin named (a root to scan or watch), with the links in it
/// resolved once, here: what the agent opens below it is then reached
/// without following any ([`open_regular`]). A path that does not resolve
/// (not there yet) is made absolute as it is.
pub fn resolve_root(path: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// `path`'s directory and its last component.
fn split(path: &Path) -> std::io::Result<(&Path, &std::ffi::OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if path.is_absolute() => Ok((dir, name)),
        _ => Err(std::io::Error::other(format!("{}: not an absolute path to a file", path.display()))),
    }
}

/// Remove `path` only if it is still the file `stamp` describes: its
/// directory reached one component at a time without following a link,
/// the name checked and unlinked in that directory, so a directory of the
/// path swapped for a link (or the file for another) is never acted on.
pub fn remove_same(path: &Path, stamp: &FileStamp) -> std::io::Result<()> {
    let (dir, name) = split(path)?;
    let dir = DirFd::open_nofollow(dir)?;
    if !dir.stat(name)?.same_file(stamp) {
        return Err(std::io::Error::other(format!("{}: replaced since it was scanned; not removed", path.display())));
    }
    dir.unlink(name)
}

/// A file's owner, mode and times, to put back on a copy of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (with setuid, setgid and sticky).
    pub mode: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
}

impl Ownership {
    pub fn of(m: &Metadata) -> Self {
        Self {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
            atime_ns: m.atime().saturating_mul(1_000_000_000).saturating_add(m.atime_nsec()),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec()),
        }
    }

    /// Set this owner, mode and times on the open `file`.
    pub fn apply(&self, file: &File) -> std::io::Result<()> {
        let fd = file.as_raw_fd();
        let ts = |ns: i64| libc::timespec { tv_sec: ns.div_euclid(1_000_000_000), tv_nsec: ns.rem_euclid(1_000_000_000) };
        let times = [ts(self.atime_ns), ts(self.mtime_ns)];
        // SAFETY: fd is open; times is two valid timespecs.
        let ok = unsafe {
            libc::fchown(fd, self.uid, self.gid) == 0
                && libc::fchmod(fd, self.mode) == 0
                && libc::futimens(fd, times.as_ptr()) == 0
        };
        if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of the path swapped for a link to another (a root-only
    /// one, say): the file behind it is neither opened nor removed.
    #[test]
    fn a_parent_swapped_for_a_link_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let watched = d.path().join("watched");
        let secret = d.path().join("secret");
        std::fs::create_dir_all(&watched).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(watched.join("f"), b"dropped").unwrap();
        std::fs::write(secret.join("f"), b"canary").unwrap();
        let path = watched.join("f");
        let (_, m) = open_regular(&path).unwrap();
        let seen = FileStamp::of(&m);
        // The swap: the watched directory becomes a link to the secret one.
        std::fs::rename(&watched, d.path().join("watched.old")).unwrap();
        std::os::unix::fs::symlink(&secret, &watched).unwrap();
        let e = open_regular(&path).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(remove_same(&path, &seen).is_err());
        let canary = std::fs::metadata(secret.join("f")).unwrap();
        assert!(remove_same(&path, &FileStamp::of(&canary)).is_err(), "not even the canary's own stamp opens the way");
        assert_eq!(std::fs::read(secret.join("f")).unwrap(), b"canary");
        // Back as a directory: the file there is removed, if it is the one seen.
        std::fs::remove_file(&watched).unwrap();
        std::fs::rename(d.path().join("watched.old"), &watched).unwrap();
        std::fs::write(watched.join("g"), b"other").unwrap();
        assert!(remove_same(&watched.join("g"), &seen).is_err(), "another file at a path is not the one seen");
        remove_same(&path, &seen).unwrap();
        assert!(!path.exists());
        // A link the admin names as a root is followed once, there.
        let named = d.path().join("named");
        std::os::unix::fs::symlink(&secret, &named).unwrap();
        let root = resolve_root(&named);
        assert_eq!(root, std::fs::canonicalize(&secret).unwrap());
        let (mut f, _) = open_regular(&root.join("f")).unwrap();
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut read).unwrap();
        assert_eq!(read, b"canary");
        assert!(open_regular(&named.join("f")).is_err(), "not when the link is on the way unresolved");
    }
}
