//! NTFS file-system images (`mkntfs`, and the file system of most VHD and
//! VHDX disks made on Windows), with the `ntfs` crate (MIT/Apache-2.0):
//! the directory indexes walked from the root, each file's unnamed `$DATA`
//! stream read (resident, non-resident and sparse) under the walk's cap
//! and deadline. Short (DOS) duplicates of names are skipped; the metadata
//! files of the root (`$MFT`, `$LogFile`, ...) are not members. The listing
//! is capped in files and depth, and a directory seen once is not entered
//! again.

use super::Container;
use super::Flow;
use super::bytes::MemberData;
use crate::filetype::FileType;
use ntfs::structured_values::NtfsFileNamespace;
use ntfs::{Ntfs, NtfsFile, NtfsReadSeek};
use std::collections::HashSet;
use std::io::Cursor;

register!(NTFS: "ntfs", rank 239, unpacks [Ntfs]);

/// Directories deeper than this are not listed.
const MAX_DEPTH: usize = 32;

/// The boot sector's OEM name and the `55 AA` mark.
fn sniff(data: &[u8]) -> Option<FileType> {
    let boot = data.get(..512)?;
    (&boot[3..11] == b"NTFS    " && boot[510..512] == [0x55, 0xAA]).then_some(FileType::Ntfs)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let mut fs = Cursor::new(data);
    let ntfs = match Ntfs::new(&mut fs) {
        Ok(n) => n,
        Err(e) => return c.error(format!("ntfs: {e}")),
    };
    let root = match ntfs.root_directory(&mut fs) {
        Ok(r) => r,
        Err(e) => return c.error(format!("ntfs: root directory: {e}")),
    };
    let mut seen = HashSet::from([root.file_record_number()]);
    let mut dirs: Vec<(NtfsFile<'_>, String, usize)> = vec![(root, String::new(), 0)];
    let mut listed = super::Listing::default();
    while let Some((dir, prefix, depth)) = dirs.pop() {
        let index = match dir.directory_index(&mut fs) {
            Ok(i) => i,
            Err(e) => {
                c.error(format!("ntfs: {prefix}: {e}"));
                continue;
            }
        };
        let mut entries = index.entries();
        while let Some(entry) = entries.next(&mut fs) {
            if !listed.next(c, "ntfs") {
                return;
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    c.error(format!("ntfs: {prefix}: {e}"));
                    break;
                }
            };
            let Some(Ok(key)) = entry.key() else { continue };
            if key.namespace() == NtfsFileNamespace::Dos {
                continue;
            }
            let name = key.name().to_string_lossy();
            if name == "." || (depth == 0 && name.starts_with('$')) {
                continue;
            }
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let file = match entry.to_file(&ntfs, &mut fs) {
                Ok(f) => f,
                Err(e) => {
                    c.member_error(&path, format!("ntfs: {e}"));
                    continue;
                }
            };
            if key.is_directory() {
                if depth < MAX_DEPTH && seen.insert(file.file_record_number()) {
                    dirs.push((file, path, depth + 1));
                }
                continue;
            }
            let deadline = c.deadline();
            let flow = c.member(&path, data.len() as u64, |cap| read_data(&file, &mut fs, cap, &deadline));
            if flow == Flow::Stop {
                return;
            }
        }
    }
}

/// The file's unnamed `$DATA` stream, at most `cap` bytes of it.
fn read_data(
    file: &NtfsFile<'_>,
    fs: &mut Cursor<&[u8]>,
    cap: u64,
    deadline: &crate::limits::Deadline,
) -> Result<MemberData, String> {
    let item = match file.data(fs, "") {
        Some(item) => item.map_err(|e| format!("ntfs: {e}"))?,
        None => return Ok(MemberData::whole(Vec::new())),
    };
    let attribute = item.to_attribute().map_err(|e| format!("ntfs: {e}"))?;
    let mut value = attribute.value(fs).map_err(|e| format!("ntfs: {e}"))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if deadline.passed() {
            return Ok(MemberData { data: out, truncated: false, error: Some(super::bytes::OUT_OF_TIME.into()) });
        }
        let n = match value.read(fs, &mut buf) {
            Ok(n) => n,
            Err(e) => return Ok(MemberData { data: out, truncated: false, error: Some(format!("ntfs: {e}")) }),
        };
        if n == 0 {
            return Ok(MemberData::whole(out));
        }
        let room = cap.saturating_sub(out.len() as u64) as usize;
        if n > room {
            out.extend_from_slice(&buf[..room]);
            return Ok(MemberData { data: out, truncated: true, error: None });
        }
        out.extend_from_slice(&buf[..n]);
    }
}
