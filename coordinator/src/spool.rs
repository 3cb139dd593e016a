//! A copy of one upload kept while it is streamed to a worker, so that the
//! upload can be replayed to the next worker if that one dies mid-scan.
//!
//! Small uploads stay in memory; from [`MEMORY_LIMIT`] on, the bytes go to
//! an anonymous temporary file (unlinked at creation, gone when dropped), so
//! coordinator memory stays bounded however many large uploads are in
//! flight. Writes come while an upload is received; reads only after it is
//! whole (a replay), never both at once.

use std::os::unix::fs::FileExt;

/// Bytes of one upload kept in memory before it spills to disk.
pub const MEMORY_LIMIT: usize = 256 << 10;

/// The spill file is an unlinked temporary file written and read at
/// offsets in place (`pwrite`/`pread` into the page cache) rather than
/// through a thread hand-off per chunk, which cost more than the copy.
pub struct Spool {
    memory: Vec<u8>,
    file: Option<std::fs::File>,
    len: u64,
    /// Where the next [`Spool::next_chunk`] reads.
    read_at: u64,
}

impl Spool {
    pub fn new() -> Self {
        Self { memory: Vec::new(), file: None, len: 0, read_at: 0 }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let at = self.len;
        self.len += chunk.len() as u64;
        if self.file.is_none() && self.memory.len() + chunk.len() <= MEMORY_LIMIT {
            self.memory.extend_from_slice(chunk);
            return Ok(());
        }
        if self.file.is_none() {
            let file = tokio::task::spawn_blocking(tempfile::tempfile).await??;
            file.write_all_at(&self.memory, 0)?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        self.file.as_ref().expect("spilled").write_all_at(chunk, at)
    }

    /// Start reading the upload again from its first byte.
    pub async fn rewind(&mut self) -> std::io::Result<()> {
        self.read_at = 0;
        Ok(())
    }

    /// The next at most `max` bytes after [`Spool::rewind`]; `None` at the end.
    pub async fn next_chunk(&mut self, max: usize) -> std::io::Result<Option<Vec<u8>>> {
        let n = (max as u64).min(self.len - self.read_at) as usize;
        if n == 0 {
            return Ok(None);
        }
        let chunk = match self.file.as_ref() {
            None => self.memory[self.read_at as usize..self.read_at as usize + n].to_vec(),
            Some(file) => {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, self.read_at)?;
                buf
            }
        };
        self.read_at += n as u64;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut small = Spool::new();
        small.write(b"hello ").await.unwrap();
        small.write(b"world").await.unwrap();
        assert!(small.file.is_none());
        assert_eq!(replayed(&mut small).await, b"hello world");

        let data: Vec<u8> = (0..3 * MEMORY_LIMIT as u32 + 17).map(|i| (i % 251) as u8).collect();
        let mut large = Spool::new();
        for c in data.chunks(256 * 1024) {
            large.write(c).await.unwrap();
        }
        assert!(large.file.is_some() && large.memory.is_empty());
        assert_eq!(large.len(), data.len() as u64);
        assert_eq!(replayed(&mut large).await, data);
        assert_eq!(replayed(&mut large).await, data, "a second replay starts again from the start");
    }
}
