//! The spool step of an upload: a copy of it kept while it is received and
//! streamed to a worker, so that it can be replayed to the next worker if
//! that one dies mid-scan.
//!
//! An upload the coordinator's spool memory budget has room for
//! (`--spool-memory-bytes`, uploads up to [`super::quota::MEMORY_UPLOAD_MAX`]) is held as
//! the chunks it arrived in: the `Bytes` the gRPC decoder sliced from its
//! receive buffer, shared with the worker call, never copied. Otherwise the
//! first [`MEMORY_LIMIT`] bytes stay in memory and the rest goes to an
//! anonymous temporary file (unlinked at creation, gone when dropped), so
//! coordinator memory stays bounded however many large uploads are in
//! flight. Writes come while an upload is received; reads only after it is
//! whole (a replay), never both at once.
//!
//! A spill file outlives its upload in [`KeptFiles`] (up to
//! `--spool-keep-bytes` of them): the next large upload writes over page
//! cache that is already in place. Only the coordinator ever reads these
//! files, and an upload's reads stop at its own length.

use super::quota::SpoolReservation;
use prost::bytes::Bytes;
use qala_common::KeptFiles;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Most spill files kept between uploads, whatever their sizes.
pub const KEEP_FILES: usize = 64;

/// Bytes of an upload without a memory reservation kept in memory before
/// it spills to disk.
pub const MEMORY_LIMIT: usize = 256 << 10;

/// The spill file is an unlinked temporary file written and read at
/// offsets in place (`pwrite`/`pread` into the page cache) rather than
/// through a thread hand-off per chunk, which cost more than the copy.
pub struct Spool {
    /// Chunks as received, until the upload spills to `file`.
    memory: Vec<Bytes>,
    memory_len: usize,
    /// Held while the whole upload may stay in `memory`.
    reservation: Option<SpoolReservation>,
    file: Option<File>,
    /// Where a spill file comes from and goes back to, and the size the
    /// upload announced (to pick a kept file that holds it). A kept file
    /// may be longer than this upload: its reads stop at `len`.
    files: Option<(Arc<KeptFiles>, u64)>,
    len: u64,
    /// Where the next [`Spool::next_chunk`] reads: the offset, and in
    /// memory the chunk and the offset inside it.
    read_at: u64,
    read_chunk: usize,
    read_in_chunk: usize,
}

impl Spool {
    /// A spool that keeps the whole upload in memory while `memory` (a
    /// reservation of the memory budget for its announced size) is given,
    /// and otherwise spills past [`MEMORY_LIMIT`].
    pub fn new(memory: Option<SpoolReservation>) -> Self {
        Self {
            memory: Vec::new(),
            memory_len: 0,
            reservation: memory,
            file: None,
            files: None,
            len: 0,
            read_at: 0,
            read_chunk: 0,
            read_in_chunk: 0,
        }
    }

    /// Take a spill file, if this upload needs one, from `files` (for an
    /// upload announced as `size` bytes), and give it back there once done.
    pub fn reusing(mut self, files: Arc<KeptFiles>, size: u64) -> Self {
        self.files = Some((files, size));
        self
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        let at = self.len;
        self.len += chunk.len() as u64;
        let fits = match &self.reservation {
            Some(r) => self.len <= r.bytes(),
            None => self.memory_len + chunk.len() <= MEMORY_LIMIT,
        };
        if self.file.is_none() && fits {
            self.memory_len += chunk.len();
            self.memory.push(chunk);
            return Ok(());
        }
        if self.file.is_none() {
            let file = match self.files.as_ref().and_then(|(f, size)| f.take(*size)) {
                Some(kept) => kept,
                None => tokio::task::spawn_blocking(tempfile::tempfile).await??,
            };
            let mut offset = 0;
            for c in self.memory.drain(..) {
                file.write_all_at(&c, offset)?;
                offset += c.len() as u64;
            }
            self.memory_len = 0;
            self.reservation = None;
            self.file = Some(file);
        }
        self.file.as_ref().expect("spilled").write_all_at(&chunk, at)
    }

    /// The whole upload in pieces of at most `max` bytes (slices of the
    /// received chunks, no copy), if it is held in memory; `None` once it
    /// has spilled to disk (read it with [`Spool::next_chunk`]).
    pub fn memory_chunks(&self, max: usize) -> Option<Vec<Bytes>> {
        if self.file.is_some() {
            return None;
        }
        let mut out = Vec::with_capacity(self.memory.len());
        for c in &self.memory {
            let mut at = 0;
            while at < c.len() {
                let end = (at + max).min(c.len());
                out.push(c.slice(at..end));
                at = end;
            }
        }
        Some(out)
    }

    /// Start reading the upload again from its first byte.
    pub async fn rewind(&mut self) -> std::io::Result<()> {
        self.read_at = 0;
        self.read_chunk = 0;
        self.read_in_chunk = 0;
        Ok(())
    }

    /// The next at most `max` bytes after [`Spool::rewind`]; `None` at the
    /// end. From memory, a slice of a received chunk (no copy).
    pub async fn next_chunk(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        let n = (max as u64).min(self.len - self.read_at) as usize;
        if n == 0 {
            return Ok(None);
        }
        let chunk = match self.file.as_ref() {
            None => {
                let Some(c) = self.memory.get(self.read_chunk) else { return Ok(None) };
                let end = (self.read_in_chunk + n).min(c.len());
                let piece = c.slice(self.read_in_chunk..end);
                if end == c.len() {
                    self.read_chunk += 1;
                    self.read_in_chunk = 0;
                } else {
                    self.read_in_chunk = end;
                }
                piece
            }
            Some(file) => {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, self.read_at)?;
                Bytes::from(buf)
            }
        };
        self.read_at += chunk.len() as u64;
        Ok(Some(chunk))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let (Some(file), Some((files, _))) = (self.file.take(), self.files.take()) {
            files.give_back(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::upload::quota::Quotas;

    async fn replayed(spool: &mut Spool) -> Vec<u8> {
        let mut out = Vec::new();
        spool.rewind().await.unwrap();
        while let Some(c) = spool.next_chunk(100_000).await.unwrap() {
            assert!(c.len() <= 100_000);
            out.extend_from_slice(&c);
        }
        out
    }

    #[tokio::test]
    async fn small_uploads_stay_in_memory_large_ones_spill_and_both_replay() {
        let mut small = Spool::new(None);
        small.write(Bytes::from_static(b"hello ")).await.unwrap();
        small.write(Bytes::from_static(b"world")).await.unwrap();
        assert!(small.file.is_none());
        assert_eq!(replayed(&mut small).await, b"hello world");
        let pieces = small.memory_chunks(4).unwrap();
        assert_eq!(pieces.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 2, 4, 1]);
        assert_eq!(pieces.concat(), b"hello world");

        let data: Vec<u8> = (0..3 * MEMORY_LIMIT as u32 + 17).map(|i| (i % 251) as u8).collect();
        let mut large = Spool::new(None);
        for c in data.chunks(256 * 1024) {
            large.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        assert!(large.file.is_some() && large.memory.is_empty());
        assert!(large.memory_chunks(1 << 20).is_none(), "spilled: read from the file");
        assert_eq!(large.len(), data.len() as u64);
        assert_eq!(replayed(&mut large).await, data);
        assert_eq!(replayed(&mut large).await, data, "a second replay starts again from the start");
    }

    #[tokio::test]
    async fn a_reserved_upload_stays_in_memory_and_spills_if_it_outgrows_its_reservation() {
        let quotas = Quotas::new(1, 0, u64::MAX).with_spool_memory(10 << 20);
        let data: Vec<u8> = (0..5 * MEMORY_LIMIT as u32 + 3).map(|i| (i % 253) as u8).collect();
        let mut held = Spool::new(quotas.reserve_spool_memory(data.len() as u64));
        assert_eq!(quotas.spool_memory_used(), data.len() as u64);
        for c in data.chunks(300_000) {
            held.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        assert!(held.file.is_none(), "held in memory whole");
        assert_eq!(replayed(&mut held).await, data);
        assert_eq!(replayed(&mut held).await, data);

        // A client that sends more than it announced spills (and is then
        // refused by the size check) instead of growing memory.
        let mut liar = Spool::new(quotas.reserve_spool_memory(1000));
        liar.write(Bytes::from(vec![7u8; 900])).await.unwrap();
        assert!(liar.file.is_none());
        liar.write(Bytes::from(vec![8u8; 900])).await.unwrap();
        assert!(liar.file.is_some() && liar.reservation.is_none(), "spilled, memory given back");
        let mut want = vec![7u8; 900];
        want.extend(vec![8u8; 900]);
        assert_eq!(replayed(&mut liar).await, want);
        drop((held, liar));
        assert_eq!(quotas.spool_memory_used(), 0);
    }

    fn inode(file: &File) -> u64 {
        use std::os::unix::fs::MetadataExt;
        file.metadata().unwrap().ino()
    }

    #[tokio::test]
    async fn a_kept_spill_file_is_written_over_by_the_next_upload_which_reads_only_its_own_bytes() {
        let files = KeptFiles::new(4 << 20, KEEP_FILES);
        let big: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 249) as u8).collect();
        let mut first = Spool::new(None).reusing(files.clone(), big.len() as u64);
        for c in big.chunks(100_000) {
            first.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        let kept = inode(first.file.as_ref().unwrap());
        drop(first);
        assert_eq!(files.kept_bytes(), big.len() as u64, "kept, at its length");

        // A smaller upload takes the same file, and a replay of it ends at
        // its own last byte, not the earlier upload's.
        let small: Vec<u8> = (0..MEMORY_LIMIT as u32 * 3).map(|i| (i % 241) as u8 ^ 0x5a).collect();
        let mut second = Spool::new(None).reusing(files.clone(), small.len() as u64);
        for c in small.chunks(64 << 10) {
            second.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        assert_eq!(inode(second.file.as_ref().unwrap()), kept, "the kept file was taken");
        assert_eq!(files.kept_bytes(), 0, "taken out while in use");
        assert_eq!(replayed(&mut second).await, small);
        drop(second);
        assert_eq!(files.kept_bytes(), big.len() as u64);

        // A file longer than what may be kept is closed, not kept; and
        // without a keeper nothing is kept.
        let huge = vec![1u8; (4 << 20) + 1];
        let mut third = Spool::new(None).reusing(files.clone(), huge.len() as u64);
        let mut fourth = Spool::new(None).reusing(files.clone(), big.len() as u64);
        third.write(Bytes::from(huge)).await.unwrap();
        fourth.write(Bytes::from(big.clone())).await.unwrap();
        assert_ne!(inode(third.file.as_ref().unwrap()), inode(fourth.file.as_ref().unwrap()));
        drop(third);
        assert_eq!(files.kept_bytes(), 0, "4 MiB + 1 is more than may be kept");
        drop(fourth);
        assert_eq!(files.kept_bytes(), big.len() as u64);
        let nobody = KeptFiles::new(0, KEEP_FILES);
        let mut fifth = Spool::new(None).reusing(nobody.clone(), big.len() as u64);
        fifth.write(Bytes::from(big)).await.unwrap();
        drop(fifth);
        assert_eq!(nobody.kept_bytes(), 0);
    }
}
