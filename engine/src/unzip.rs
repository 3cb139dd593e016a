//! Bounded reading of zip members from an in-memory archive.
//!
//! The zip crate trusts the sizes an archive declares, so every read here is
//! capped by the caller (`take(cap + 1)`) and the caller decides what the cap
//! is (object size, remaining submission budget, compression ratio). Members
//! are read one at a time so the engine holds at most one member per nesting
//! level.

use std::io::{Cursor, Read};
use zip::ZipArchive;
use zip::result::ZipError;

/// An open archive and what the central directory says about it.
pub(crate) struct ZipReader<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
}

/// Central-directory facts about one member, before any decompression.
pub(crate) struct MemberInfo {
    pub name: String,
    pub is_dir: bool,
    pub encrypted: bool,
    pub compressed_size: u64,
    /// Where the member's compressed bytes sit in the archive.
    pub data_start: u64,
}

/// Bytes read from one member: at most `cap` of them.
pub(crate) struct MemberData {
    pub data: Vec<u8>,
    /// More data was there than `cap` allowed.
    pub truncated: bool,
    /// Decompression failed part way; `data` holds what came out before.
    pub error: Option<String>,
}

impl<'a> ZipReader<'a> {
    pub fn open(data: &'a [u8]) -> Result<Self, String> {
        ZipArchive::new(Cursor::new(data)).map(|archive| Self { archive }).map_err(|e| format!("zip: {e}"))
    }

    pub fn len(&self) -> usize {
        self.archive.len()
    }

    pub fn info(&mut self, index: usize) -> Result<MemberInfo, String> {
        let f = self.archive.by_index_raw(index).map_err(|e| format!("zip member #{index}: {e}"))?;
        Ok(MemberInfo {
            name: f.name().map(|n| n.into_owned()).unwrap_or_else(|_| String::from_utf8_lossy(f.name_raw()).into_owned()),
            is_dir: f.is_dir(),
            encrypted: f.encrypted(),
            compressed_size: f.compressed_size(),
            data_start: f.data_start().unwrap_or(f.header_start()),
        })
    }

    /// Decompress member `index`, reading at most `cap` bytes of output.
    pub fn read(&mut self, index: usize, cap: u64) -> Result<MemberData, String> {
        let f = match self.archive.by_index(index) {
            Ok(f) => f,
            Err(ZipError::UnsupportedArchive(msg)) => return Err(format!("unsupported: {msg}")),
            Err(e) => return Err(e.to_string()),
        };
        // Never trust the declared size for the allocation.
        let mut data = Vec::with_capacity(f.size().min(cap).min(1 << 20) as usize);
        let result = f.take(cap.saturating_add(1)).read_to_end(&mut data);
        let truncated = data.len() as u64 > cap;
        data.truncate(cap as usize);
        Ok(MemberData { data, truncated, error: result.err().map(|e| e.to_string()) })
    }
}
