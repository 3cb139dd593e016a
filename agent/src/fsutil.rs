//! Small file helpers shared by the agent's state files.

use std::path::Path;

/// Replace `path` with `data` atomically: a new file (mode 0600, synced,
/// never through a link) beside it, renamed over it
/// ([`qala_common::files::replace`]). A crash leaves the old file or the
/// new one, never a mix. Makes the directory if missing.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    qala_common::files::replace(path, data, 0o600)
}

/// A path as bytes for a state file: its bytes on Unix, its UTF-16 code
/// units (little-endian) on Windows; [`path_from_bytes`] reads them back.
pub fn path_bytes(p: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    }
    #[cfg(windows)]
    {
        use std::os::windows::ffi::OsStrExt;
        p.as_os_str().encode_wide().flat_map(u16::to_le_bytes).collect()
    }
}

/// The path [`path_bytes`] wrote (None if the bytes cannot be one).
pub fn path_from_bytes(b: &[u8]) -> Option<std::path::PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Some(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b)))
    }
    #[cfg(windows)]
    {
        use std::os::windows::ffi::OsStringExt;
        if b.len() % 2 != 0 {
            return None;
        }
        let wide: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        Some(std::path::PathBuf::from(std::ffi::OsString::from_wide(&wide)))
    }
}
