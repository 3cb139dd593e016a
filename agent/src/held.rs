//! What this machine holds: path -> sha256 of every file the service has
//! answered, so that a notice about a content ("its verdict changed") finds
//! the paths that hold it, and a content no path holds any more is reported
//! gone. The paths never leave the machine: the coordinator knows only
//! which agent holds which sha256 (its sightings).
//!
//! One file (mode 0600), read whole at start and written back atomically
//! (a new file renamed over the old) at most once a minute and at stop,
//! like the hash cache; a file that does not parse is ignored and replaced.
//! Bounded: past [`MAX_ENTRIES`] the paths least recently answered go.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const MAGIC: &[u8; 8] = b"QALAHI1\n";
/// Paths kept at most.
const MAX_ENTRIES: usize = 2_000_000;
/// Longest path kept (longer ones are not indexed).
const MAX_PATH: usize = 32 * 1024;

struct Entry {
    sha256: [u8; 32],
    /// Answer count when last recorded: the oldest go first past the cap.
    touched: u64,
}

pub struct HeldIndex {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<PathBuf, Entry>,
    /// How many paths hold each content.
    holders: HashMap<[u8; 32], u32>,
    clock: u64,
    dirty: bool,
}

fn raw(sha256: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(sha256, &mut out).ok()?;
    Some(out)
}

impl Inner {
    /// Drop `path`; the content it held, if no other path holds it now.
    fn drop_path(&mut self, path: &Path) -> Option<String> {
        let e = self.entries.remove(path)?;
        self.dirty = true;
        let n = self.holders.get_mut(&e.sha256)?;
        *n -= 1;
        if *n == 0 {
            self.holders.remove(&e.sha256);
            return Some(hex::encode(e.sha256));
        }
        None
    }

    fn insert(&mut self, path: PathBuf, sha256: [u8; 32], touched: u64) {
        *self.holders.entry(sha256).or_default() += 1;
        self.entries.insert(path, Entry { sha256, touched });
        self.dirty = true;
    }
}

impl HeldIndex {
    /// The index at `path` (empty if missing or unreadable).
    pub fn open(path: PathBuf) -> Self {
        let mut inner = Inner::default();
        if let Some(entries) = std::fs::read(&path).ok().and_then(|d| parse(&d)) {
            for (i, (p, sha)) in entries.into_iter().enumerate() {
                inner.insert(p, sha, i as u64);
            }
            inner.clock = inner.entries.len() as u64;
        }
        inner.dirty = false;
        Self { path, inner: Mutex::new(inner) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `path` holds `sha256` now. Returns the content it held before if no
    /// path holds that any more (gone from this machine).
    pub fn record(&self, path: &Path, sha256: &str) -> Vec<String> {
        let Some(sha) = raw(sha256) else { return Vec::new() };
        if path.as_os_str().len() > MAX_PATH {
            return Vec::new();
        }
        let mut g = self.lock();
        g.clock += 1;
        let clock = g.clock;
        if let Some(e) = g.entries.get_mut(path)
            && e.sha256 == sha
        {
            e.touched = clock;
            return Vec::new();
        }
        let mut gone: Vec<String> = g.drop_path(path).into_iter().collect();
        g.insert(path.to_path_buf(), sha, clock);
        if g.entries.len() > MAX_ENTRIES {
            // The least recently answered tenth goes.
            let mut ages: Vec<(u64, PathBuf)> = g.entries.iter().map(|(p, e)| (e.touched, p.clone())).collect();
            ages.sort_unstable();
            for (_, p) in ages.into_iter().take(MAX_ENTRIES / 10) {
                gone.extend(g.drop_path(&p));
            }
        }
        gone
    }

    /// `path` no longer holds a file. Returns its content if no other
    /// path holds it.
    pub fn remove(&self, path: &Path) -> Option<String> {
        self.lock().drop_path(path)
    }

    /// The paths that held `sha256` when last answered.
    pub fn paths_of(&self, sha256: &str) -> Vec<PathBuf> {
        let Some(sha) = raw(sha256) else { return Vec::new() };
        let g = self.lock();
        if !g.holders.contains_key(&sha) {
            return Vec::new();
        }
        let mut out: Vec<PathBuf> = g.entries.iter().filter(|(_, e)| e.sha256 == sha).map(|(p, _)| p.clone()).collect();
        out.sort();
        out
    }

    /// The indexed paths at or below any of `roots` that are not in
    /// `found` (candidates for gone: the caller checks they are). Roots
    /// that are indexed files (what watch events name) are looked up
    /// directly; the whole index is read only for a directory, or a root
    /// that is gone (a directory removed with what it held).
    pub fn missing_under(&self, roots: &[PathBuf], found: &HashSet<PathBuf>) -> Vec<PathBuf> {
        let g = self.lock();
        let (files, trees): (Vec<&PathBuf>, Vec<&PathBuf>) =
            roots.iter().partition(|r| g.entries.contains_key(r.as_path()) && !r.is_dir());
        let mut out: Vec<PathBuf> = files.into_iter().filter(|r| !found.contains(*r)).cloned().collect();
        if !trees.is_empty() {
            out.extend(g.entries.keys().filter(|p| !found.contains(*p) && trees.iter().any(|r| p.starts_with(r))).cloned());
        }
        out.sort();
        out.dedup();
        out
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the index if it changed (atomically, mode 0600).
    pub fn save(&self) -> std::io::Result<()> {
        let bytes = {
            let mut g = self.lock();
            if !g.dirty {
                return Ok(());
            }
            g.dirty = false;
            let mut rows: Vec<(&PathBuf, &Entry)> = g.entries.iter().collect();
            // Oldest first, so a reload keeps the order of age.
            rows.sort_unstable_by_key(|(_, e)| e.touched);
            let mut out = Vec::with_capacity(8 + rows.len() * 100);
            out.extend_from_slice(MAGIC);
            for (p, e) in rows {
                let b = crate::fsutil::path_bytes(p);
                out.extend_from_slice(&e.sha256);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(&b);
            }
            out
        };
        crate::fsutil::write_atomic(&self.path, &bytes)
    }
}

fn parse(d: &[u8]) -> Option<Vec<(PathBuf, [u8; 32])>> {
    let mut rest = d.strip_prefix(MAGIC.as_slice())?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 36 {
            return None;
        }
        let sha: [u8; 32] = rest[..32].try_into().ok()?;
        let len = u32::from_le_bytes(rest[32..36].try_into().ok()?) as usize;
        if len > MAX_PATH || rest.len() < 36 + len {
            return None;
        }
        out.push((crate::fsutil::path_from_bytes(&rest[36..36 + len])?, sha));
        rest = &rest[36 + len..];
        if out.len() > MAX_ENTRIES {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn contents_are_gone_when_no_path_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let idx = HeldIndex::open(dir.path().join("held"));
        let (a, b) = (Path::new("/h/a"), Path::new("/h/b"));
        assert!(idx.record(a, &sha('1')).is_empty());
        assert!(idx.record(b, &sha('1')).is_empty());
        assert!(idx.record(a, &sha('1')).is_empty(), "unchanged");
        assert_eq!(idx.paths_of(&sha('1')), vec![a.to_path_buf(), b.to_path_buf()]);
        // a changes: 1 is still held by b.
        assert!(idx.record(a, &sha('2')).is_empty());
        // b is deleted: nothing holds 1 now.
        assert_eq!(idx.remove(b), Some(sha('1')));
        assert_eq!(idx.remove(b), None);
        assert!(idx.paths_of(&sha('1')).is_empty());
        // a changes again: 2 is gone.
        assert_eq!(idx.record(a, &sha('3')), vec![sha('2')]);
        assert!(idx.record(Path::new("/h/c"), "not hex").is_empty());
        // Saved and read back (0600), the same.
        idx.save().unwrap();
        let again = HeldIndex::open(dir.path().join("held"));
        assert_eq!(again.paths_of(&sha('3')), vec![a.to_path_buf()]);
        assert_eq!(again.len(), 1);
        let found: HashSet<PathBuf> = HashSet::new();
        assert_eq!(again.missing_under(&[PathBuf::from("/h")], &found), vec![a.to_path_buf()]);
        assert!(again.missing_under(&[PathBuf::from("/other")], &found).is_empty());
        // A watch event names the file itself: looked up, not searched for.
        assert_eq!(again.missing_under(&[a.to_path_buf()], &found), vec![a.to_path_buf()]);
        let met: HashSet<PathBuf> = [a.to_path_buf()].into();
        assert!(again.missing_under(&[a.to_path_buf(), PathBuf::from("/h")], &met).is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("held")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A damaged file is ignored, not trusted in part.
        std::fs::write(dir.path().join("held"), b"QALAHI1\nshort").unwrap();
        assert!(HeldIndex::open(dir.path().join("held")).is_empty());
    }
}
