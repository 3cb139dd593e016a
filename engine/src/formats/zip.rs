//! Zip (and everything built on it: OOXML, JAR, APK), with the `zip` crate
//! reading the central directory. The crate trusts the sizes an archive
//! declares, so every member is read through [`read_capped`] with the cap
//! the walk chooses; members are read one at a time, so the walk holds at
//! most one member per nesting level. Members whose bytes overlap another's
//! (many names for one stream, the shape of an overlapping-entry bomb) are
//! not followed and raise a heuristic.

use super::Container;
use super::Flow;
use super::bytes::{MemberData, read_capped};
use crate::filetype::FileType;
use crate::limits::Deadline;
use std::io::Cursor;
use zip::ZipArchive;
use zip::result::ZipError;

register!(ZIP: "zip", rank 10, unpacks [Zip, Docx, Xlsx, Pptx]);

/// `PK` headers; an OOXML document is told by its parts.
fn sniff(data: &[u8]) -> Option<FileType> {
    let zip = data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") || data.starts_with(b"PK\x07\x08");
    zip.then(|| ooxml_kind(data).unwrap_or(FileType::Zip))
}

/// A zip package is an OOXML document when its central directory (in the
/// last 256 KiB) names `[Content_Types].xml` and the main part of a kind.
fn ooxml_kind(data: &[u8]) -> Option<FileType> {
    let tail = &data[data.len().saturating_sub(256 * 1024)..];
    let has = |part: &[u8]| memchr::memmem::find(tail, part).is_some();
    if !has(b"[Content_Types].xml") {
        return None;
    }
    [(&b"word/document.xml"[..], FileType::Docx), (b"xl/workbook.xml", FileType::Xlsx), (b"ppt/presentation.xml", FileType::Pptx)]
        .into_iter()
        .find(|(part, _)| has(part))
        .map(|(_, ty)| ty)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let mut zip = match ZipReader::open(data) {
        Ok(z) => z,
        Err(e) => return c.error(e),
    };
    let mut spans = Spans::default();
    let mut overlapping = 0usize;
    // Office Open XML: the parts that carry code or other programs' data.
    let mut active = Vec::new();
    for index in 0..zip.len() {
        let info = match zip.info(index) {
            Ok(i) => i,
            Err(e) => {
                c.error(e);
                continue;
            }
        };
        if info.is_dir {
            continue;
        }
        if !spans.insert(info.data_start, info.compressed_size) {
            overlapping += 1;
            continue;
        }
        if info.encrypted {
            c.encrypted(Some(&info.name));
            continue;
        }
        if c.ty.is_ooxml() && is_active_part(&info.name) && active.len() < 100 {
            active.push(info.name.clone());
        }
        let deadline = c.deadline();
        if c.member(&info.name, info.compressed_size, |cap| zip.read(index, cap, &deadline)) == Flow::Stop {
            break;
        }
    }
    if !active.is_empty() {
        c.meta(vec![("ooxml_active_parts".to_string(), active.join(", "))]);
    }
    if overlapping > 0 {
        let why = format!("{overlapping} member(s) share bytes with another member (zip bomb shape); not extracted");
        c.heuristic("Heuristics_Zip_OverlappingFiles", &why);
    }
}

/// Parts of an OOXML document that carry macros, embedded OLE objects or
/// ActiveX controls (each is an OLE2 file, unpacked in turn).
fn is_active_part(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    base == "vbaproject.bin"
        || (base.starts_with("oleobject") && base.ends_with(".bin"))
        || (name.contains("/activeX/") && base.ends_with(".bin"))
        || name.contains("/embeddings/")
}

/// An open archive and what the central directory says about it.
struct ZipReader<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
}

/// Central-directory facts about one member, before any decompression.
struct MemberInfo {
    name: String,
    is_dir: bool,
    encrypted: bool,
    compressed_size: u64,
    /// Where the member's compressed bytes sit in the archive.
    data_start: u64,
}

impl<'a> ZipReader<'a> {
    fn open(data: &'a [u8]) -> Result<Self, String> {
        ZipArchive::new(Cursor::new(data)).map(|archive| Self { archive }).map_err(|e| format!("zip: {e}"))
    }

    fn len(&self) -> usize {
        self.archive.len()
    }

    fn info(&mut self, index: usize) -> Result<MemberInfo, String> {
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
    fn read(&mut self, index: usize, cap: u64, deadline: &Deadline) -> Result<MemberData, String> {
        let f = match self.archive.by_index(index) {
            Ok(f) => f,
            Err(ZipError::UnsupportedArchive(msg)) => return Err(format!("unsupported: {msg}")),
            Err(e) => return Err(e.to_string()),
        };
        let declared = f.size();
        Ok(read_capped(f, cap, declared, deadline))
    }
}

/// Disjoint byte ranges of a container, to tell members that share bytes.
#[derive(Default)]
struct Spans(std::collections::BTreeMap<u64, u64>);

impl Spans {
    /// Record `[start, start + len)`; false (and nothing recorded) if it
    /// overlaps a range already there. Empty ranges never overlap.
    fn insert(&mut self, start: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let end = start.saturating_add(len);
        let before = self.0.range(..end).next_back();
        if before.is_some_and(|(_, &e)| e > start) {
            return false;
        }
        self.0.insert(start, end);
        true
    }
}
