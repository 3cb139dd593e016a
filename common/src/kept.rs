//! Large uploads' files kept open (unlinked) between uploads, so the next
//! large upload writes over page cache already in place instead of taking
//! new pages from the kernel for every byte (on a VM that hands freed
//! memory back to its host, several times the cost of the copy itself).
//! The coordinator keeps its spill files here, the worker the files of
//! disk-held uploads; each decides when a file may come back (the worker
//! only once no scan child holds it).

use std::fs::File;
use std::sync::{Arc, Mutex};

/// Files between uploads, while their sizes add up to at most `keep` bytes
/// and they are at most `max_files`.
pub struct KeptFiles {
    keep: u64,
    max_files: usize,
    idle: Mutex<Vec<(File, u64)>>,
}

impl KeptFiles {
    /// Keep up to `keep` bytes in at most `max_files` files (0 bytes: none).
    pub fn new(keep: u64, max_files: usize) -> Arc<Self> {
        Arc::new(Self { keep, max_files, idle: Mutex::new(Vec::new()) })
    }

    /// A file for an upload of `size` bytes: the smallest kept one that
    /// holds it whole, else the largest kept one; `None` when none is kept.
    /// It may be longer than `size`: its user reads only its own bytes (or
    /// cuts it).
    pub fn take(&self, size: u64) -> Option<File> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let fits = idle.iter().enumerate().filter(|(_, (_, len))| *len >= size).min_by_key(|(_, (_, len))| *len);
        let at = match fits {
            Some((i, _)) => i,
            None => idle.iter().enumerate().max_by_key(|(_, (_, len))| *len)?.0,
        };
        Some(idle.swap_remove(at).0)
    }

    /// Keep `file` for a later upload if the bounds allow; otherwise it is
    /// closed (and, unlinked, its space freed).
    pub fn give_back(&self, file: File) {
        let Ok(len) = file.metadata().map(|m| m.len()) else { return };
        if len > self.keep {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let held: u64 = idle.iter().map(|(_, l)| l).sum();
        if idle.len() < self.max_files && held + len <= self.keep {
            idle.push((file, len));
        }
    }

    /// Bytes of the files kept now.
    pub fn kept_bytes(&self) -> u64 {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, l)| l).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(len: usize) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![1u8; len]).unwrap();
        f
    }

    #[test]
    fn the_smallest_file_that_fits_comes_back_within_the_bounds() {
        let kept = KeptFiles::new(1000, 2);
        kept.give_back(file(600));
        kept.give_back(file(300));
        assert_eq!(kept.kept_bytes(), 900);
        kept.give_back(file(50));
        assert_eq!(kept.kept_bytes(), 900, "a third file is more than may be kept");
        assert_eq!(kept.take(200).unwrap().metadata().unwrap().len(), 300, "the smallest that holds 200 bytes");
        assert_eq!(kept.take(2000).unwrap().metadata().unwrap().len(), 600, "none holds it: the largest");
        assert!(kept.take(1).is_none());
        kept.give_back(file(1001));
        assert_eq!(kept.kept_bytes(), 0, "larger than all that may be kept");
        let none = KeptFiles::new(0, 8);
        none.give_back(file(1));
        assert_eq!(none.kept_bytes(), 0);
    }
}
