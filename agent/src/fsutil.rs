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
