//! The offline spool: files still to be answered while the coordinator is
//! unreachable. Paths with their sha256 and stat, never copies: a file
//! changed since it was spooled is hashed again when the spool drains. One
//! small file, rewritten atomically (0600) on every change, so it survives
//! an agent restart or a crash; bounded: past `max` entries a file is not
//! queued and the caller reports it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub sha256: String,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub spooled_ms: i64,
}

pub struct Spool {
    path: PathBuf,
    max: usize,
    entries: Mutex<BTreeMap<PathBuf, Entry>>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    path: PathBuf,
    #[serde(flatten)]
    entry: Entry,
}

impl Spool {
    /// The spool at `path` (its entries if the file exists; lines that do
    /// not parse are dropped, with a warning).
    pub fn open(path: &Path, max: usize) -> Self {
        let mut entries = BTreeMap::new();
        // Line by line from the bytes: a damaged line (even one that is not
        // UTF-8) costs that entry, never the rest of the spool.
        if let Ok(bytes) = std::fs::read(path) {
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.trim_ascii().is_empty()) {
                match serde_json::from_slice::<Line>(line) {
                    Ok(l) => {
                        entries.insert(l.path, l.entry);
                    }
                    Err(e) => tracing::warn!(spool = %path.display(), error = %e, "spool line dropped"),
                }
            }
        }
        Self { path: path.to_path_buf(), max: max.max(1), entries: Mutex::new(entries) }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("spool lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue `items` (a path already queued gets the newer entry); returns
    /// the paths refused because the spool is full.
    pub fn add(&self, items: Vec<(PathBuf, Entry)>) -> std::io::Result<Vec<PathBuf>> {
        let mut refused = Vec::new();
        let mut entries = self.entries.lock().expect("spool lock");
        for (path, e) in items {
            if entries.len() >= self.max && !entries.contains_key(&path) {
                refused.push(path);
            } else {
                entries.insert(path, e);
            }
        }
        self.persist(&entries)?;
        Ok(refused)
    }

    /// Up to `n` queued entries, oldest path order.
    pub fn peek(&self, n: usize) -> Vec<(PathBuf, Entry)> {
        self.entries.lock().expect("spool lock").iter().take(n).map(|(p, e)| (p.clone(), e.clone())).collect()
    }

    /// Drop `paths` (answered) if their entry is still `sha256` (a newer
    /// entry spooled meanwhile stays).
    pub fn remove(&self, answered: &[(PathBuf, String)]) -> std::io::Result<()> {
        let mut entries = self.entries.lock().expect("spool lock");
        for (p, sha) in answered {
            if entries.get(p).is_some_and(|e| &e.sha256 == sha) {
                entries.remove(p);
            }
        }
        self.persist(&entries)
    }

    fn persist(&self, entries: &BTreeMap<PathBuf, Entry>) -> std::io::Result<()> {
        let mut out = Vec::new();
        for (path, entry) in entries {
            serde_json::to_writer(&mut out, &Line { path: path.clone(), entry: entry.clone() }).map_err(std::io::Error::other)?;
            out.push(b'\n');
        }
        crate::fsutil::write_atomic(&self.path, &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(sha: &str) -> Entry {
        Entry { sha256: sha.into(), size: 1, dev: 1, ino: 2, mtime_ns: 3, ctime_ns: 4, spooled_ms: 5 }
    }

    #[test]
    fn survives_reopen_bounded_and_removes_only_answered_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spool");
        let s = Spool::open(&p, 2);
        let refused = s.add(vec![("/a".into(), e("1")), ("/b".into(), e("2")), ("/c".into(), e("3"))]).unwrap();
        assert_eq!(refused, vec![PathBuf::from("/c")]);
        // A newer entry of a queued path is taken even when full.
        assert!(s.add(vec![("/a".into(), e("9"))]).unwrap().is_empty());
        let s = Spool::open(&p, 2);
        assert_eq!(s.len(), 2);
        s.remove(&[("/a".into(), "1".into()), ("/b".into(), "2".into())]).unwrap();
        let s = Spool::open(&p, 2);
        assert_eq!(s.peek(10), vec![(PathBuf::from("/a"), e("9"))]);
        // Garbage lines (a damaged file) are dropped, the good ones kept.
        let mut text = std::fs::read(&p).unwrap();
        text.extend_from_slice(b"{not json\n\xff\xfe garbage\n{\"path\":\"/z\"}\n");
        std::fs::write(&p, &text).unwrap();
        assert_eq!(Spool::open(&p, 2).peek(10), vec![(PathBuf::from("/a"), e("9"))]);
    }
}
