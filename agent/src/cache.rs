//! The agent's hash cache: (device, inode) → (size, mtime, ctime, sha256),
//! so a rescan of an unchanged tree costs one `stat` per file and reads no
//! content. It is only a hint: any change of size, mtime or ctime (which no
//! user can set back) means the file is read and hashed again.
//!
//! One small file, read whole at start and written back atomically (a new
//! file renamed over the old, mode 0600) at the end of a scan: a crash
//! loses this scan's additions, never the file's consistency. A file that
//! does not parse is ignored (and replaced), never trusted in part.

use crate::os::FileStamp;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

const MAGIC: &[u8; 8] = b"QALAHC1\n";
const RECORD: usize = 8 * 5 + 32;
/// Entries kept at most (72 bytes each on disk): past this, entries not
/// seen by the current scan are dropped first.
const MAX_ENTRIES: usize = 2_000_000;
/// Files changed this recently are not cached (see [`HashCache::put`]).
const RACY_NS: i64 = 2_000_000_000;

/// The stat fields that must all be unchanged for a cached digest to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Stamp {
    fn of(f: &FileStamp) -> Self {
        Self { size: f.size, mtime_ns: f.mtime_ns, ctime_ns: f.ctime_ns }
    }
}

/// The cache's key of a file: (device, inode), on Windows (volume serial,
/// file index).
fn file_key(f: &FileStamp) -> (u64, u64) {
    (f.dev, f.ino)
}

#[derive(Clone, Copy)]
struct Entry {
    stamp: Stamp,
    sha256: [u8; 32],
    seen: bool,
}

pub struct HashCache {
    path: PathBuf,
    entries: Mutex<HashMap<(u64, u64), Entry>>,
}

impl HashCache {
    /// The cache at `path` (empty if missing or unreadable).
    pub fn open(path: PathBuf) -> Self {
        let entries = std::fs::read(&path).ok().and_then(|d| parse(&d)).unwrap_or_default();
        Self { path, entries: Mutex::new(entries) }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached sha256 of the file `m` describes, if its stamp is unchanged.
    pub fn get(&self, m: &FileStamp) -> Option<String> {
        let mut entries = self.entries.lock().expect("cache lock");
        let e = entries.get_mut(&file_key(m))?;
        if e.stamp != Stamp::of(m) {
            return None;
        }
        e.seen = true;
        Some(hex::encode(e.sha256))
    }

    /// Remember `sha256` for the file `m` (the stat taken before it was read).
    /// A file changed in the last two seconds is not remembered: timestamps
    /// move in clock ticks, so a write in the same tick as the stat would
    /// leave the stamp equal and the digest stale (git's "racy clean").
    pub fn put(&self, m: &FileStamp, sha256: &str) {
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let stamp = Stamp::of(m);
        if now_ns.saturating_sub(stamp.ctime_ns.max(stamp.mtime_ns)) < RACY_NS {
            return;
        }
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(sha256, &mut digest).is_err() {
            return;
        }
        let entry = Entry { stamp, sha256: digest, seen: true };
        self.entries.lock().expect("cache lock").insert(file_key(m), entry);
    }

    /// Write the cache back: a new file (0600) renamed over the old one.
    pub fn save(&self) -> std::io::Result<()> {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() > MAX_ENTRIES {
            entries.retain(|_, e| e.seen);
        }
        let mut out = Vec::with_capacity(MAGIC.len() + entries.len().min(MAX_ENTRIES) * RECORD);
        out.extend_from_slice(MAGIC);
        for (&(dev, ino), e) in entries.iter().take(MAX_ENTRIES) {
            for v in [dev, ino, e.stamp.size, e.stamp.mtime_ns as u64, e.stamp.ctime_ns as u64] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&e.sha256);
        }
        drop(entries);
        crate::fsutil::write_atomic(&self.path, &out)
    }
}

fn parse(d: &[u8]) -> Option<HashMap<(u64, u64), Entry>> {
    let body = d.strip_prefix(MAGIC)?;
    if body.len() % RECORD != 0 || body.len() / RECORD > MAX_ENTRIES {
        return None;
    }
    let mut map = HashMap::with_capacity(body.len() / RECORD);
    for r in body.chunks_exact(RECORD) {
        let u = |i: usize| u64::from_le_bytes(r[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&r[40..72]);
        let stamp = Stamp { size: u(2), mtime_ns: u(3) as i64, ctime_ns: u(4) as i64 };
        map.insert((u(0), u(1)), Entry { stamp, sha256, seen: false });
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_misses_and_the_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a");
        std::fs::write(&file, b"one").unwrap();
        let cache = HashCache::open(dir.path().join("hashes"));
        let m = FileStamp::of(&std::fs::metadata(&file).unwrap());
        assert_eq!(cache.get(&m), None);
        let sha = "ab".repeat(32);
        // Just written: not remembered yet (its stamp may still move).
        cache.put(&m, &sha);
        assert_eq!(cache.get(&m), None);
        std::thread::sleep(std::time::Duration::from_millis(2100));
        cache.put(&m, &sha);
        assert_eq!(cache.get(&m).as_deref(), Some(sha.as_str()));
        cache.save().unwrap();
        let again = HashCache::open(dir.path().join("hashes"));
        assert_eq!(again.get(&m).as_deref(), Some(sha.as_str()));
        let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(dir.path().join("hashes")).unwrap()) & 0o777;
        assert_eq!(mode, 0o600);
        // Same size, new content: the ctime moved, so the entry no longer holds.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, b"two").unwrap();
        assert_eq!(again.get(&FileStamp::of(&std::fs::metadata(&file).unwrap())), None);
        // A damaged cache file is ignored whole.
        std::fs::write(dir.path().join("hashes"), b"QALAHC1\nshort").unwrap();
        assert!(HashCache::open(dir.path().join("hashes")).is_empty());
    }
}
