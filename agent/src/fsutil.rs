//! Small file helpers shared by the agent's state files.

use std::path::Path;

/// Replace `path` with `data` atomically: a new file (mode 0600, synced)
/// beside it, `.<name>.<pid>.tmp`, renamed over it. A crash leaves the old
/// file or the new one, never a mix. Makes the directory if missing.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    crate::os::write_private(&tmp, data)?;
    std::fs::rename(&tmp, path)
}
