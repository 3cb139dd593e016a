//! Files written safely, for services that may run as root in directories
//! others can write to: a file is created new (`O_CREAT|O_EXCL`, never
//! through a link, never an existing file reused with its owner or mode),
//! given its final mode on its descriptor before a byte is written
//! (whatever the umask), and renamed into place; a log is appended to only
//! if it is a regular file reached without a link.
//!
//! On Windows the mode is not used: a new file takes the access control
//! list its directory passes on (the agent's directories are made for
//! SYSTEM and Administrators), and `FILE_FLAG_OPEN_REPARSE_POINT` stands
//! for `O_NOFOLLOW`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
#[cfg(windows)]
use std::os::windows::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `FILE_FLAG_OPEN_REPARSE_POINT`: open a link or junction itself, never
/// what it points to.
#[cfg(windows)]
const OPEN_REPARSE_POINT: u32 = 0x0020_0000;
/// `FILE_ATTRIBUTE_REPARSE_POINT`.
#[cfg(windows)]
const ATTRIBUTE_REPARSE_POINT: u32 = 0x400;
use std::sync::atomic::{AtomicU64, Ordering};

/// Create `path`, which must not exist (not even as a link), with `mode`.
#[cfg(unix)]
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let f =
        OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(f)
}

/// Create `path`, which must not exist (not even as a link); its access
/// is its directory's (`mode` is for Unix).
#[cfg(windows)]
pub fn create_new(path: &Path, _mode: u32) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).custom_flags(OPEN_REPARSE_POINT).open(path)
}

/// A temporary name beside `path` that no other writer uses.
fn temporary(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    dir.join(format!(".{name}.{}.{nanos:x}{}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Replace `path` with `data`: a new file with `mode` beside it (made as
/// [`create_new`] makes it), synced, renamed over `path`. A crash leaves
/// the old file or the new one, never a mix; a link at `path` is replaced,
/// not followed. The directory must exist.
pub fn replace(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temporary(path);
    let written = (|| {
        let mut f = create_new(&tmp, mode)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Open `path` to append to, created with `mode` if new; refused if it is
/// a link, or neither a regular file nor a character device (`/dev/null`).
#[cfg(unix)]
pub fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::other(format!("{} is a symbolic link", path.display()))
            } else {
                e
            }
        })?;
    let kind = f.metadata()?.file_type();
    if !kind.is_file() && !std::os::unix::fs::FileTypeExt::is_char_device(&kind) {
        return Err(io::Error::other(format!("{} is not a regular file", path.display())));
    }
    Ok(f)
}

/// Open `path` to append to, created if new; refused if it is a link or
/// junction, or not a regular file (`mode` is for Unix).
#[cfg(windows)]
pub fn open_append(path: &Path, _mode: u32) -> io::Result<File> {
    use std::os::windows::fs::MetadataExt;
    let f = OpenOptions::new().append(true).create(true).custom_flags(OPEN_REPARSE_POINT).open(path)?;
    let m = f.metadata()?;
    if m.file_attributes() & ATTRIBUTE_REPARSE_POINT != 0 {
        return Err(io::Error::other(format!("{} is a link or junction", path.display())));
    }
    if !m.is_file() {
        return Err(io::Error::other(format!("{} is not a regular file", path.display())));
    }
    Ok(f)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_new_file_never_goes_through_a_link_or_keeps_a_mode() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        let link = d.path().join("link");
        symlink(&target, &link).unwrap();
        assert_eq!(create_new(&link, 0o600).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        // Replacing the link replaces the link, not its target.
        replace(&link, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
        // An existing world-readable file is replaced by a private one.
        let open = d.path().join("open");
        std::fs::write(&open, b"old").unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o666)).unwrap();
        replace(&open, b"key", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&open).unwrap().permissions().mode() & 0o777, 0o600);
        // The mode is the one asked for, whatever the umask.
        // SAFETY: umask only swaps the process's file mode mask.
        let old = unsafe { libc::umask(0o077) };
        replace(&d.path().join("public"), b"cert", 0o644).unwrap();
        unsafe { libc::umask(old) };
        assert_eq!(std::fs::metadata(d.path().join("public")).unwrap().permissions().mode() & 0o777, 0o644);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn a_log_is_appended_to_only_as_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("audit.log");
        let mut f = open_append(&log, 0o600).unwrap();
        f.write_all(b"one\n").unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
        let link = d.path().join("audit-link.log");
        symlink(&log, &link).unwrap();
        assert!(open_append(&link, 0o600).unwrap_err().to_string().contains("symbolic link"));
        let fifo = d.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(open_append(&fifo, 0o600).is_err(), "a FIFO is not a log file");
        open_append(Path::new("/dev/null"), 0o600).expect("/dev/null is a log that keeps nothing");
    }
}
