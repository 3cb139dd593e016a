//! ARJ archives, with the `unarj-rs` crate (MIT/Apache-2.0; methods 1-3
//! through `delharc`'s LH6 decoder, method 4 its own). The crate sizes its
//! buffers from the member's declared sizes, so each member is checked
//! first: its compressed bytes must be present and its declared size within
//! the walk's cap, or it is reported and skipped. Garbled (encrypted)
//! members are reported as encrypted.

use super::Container;
use super::Flow;
use super::bytes::MemberData;
use crate::filetype::FileType;
use std::io::Cursor;
use unarj_rs::arj_archive::ArjArchieve;
use unarj_rs::local_file_header::FileType as ArjType;

register!(ARJ: "arj", rank 190, unpacks [Arj]);

fn sniff(data: &[u8]) -> Option<FileType> {
    (data.starts_with(&[0x60, 0xEA]) && data.len() > 10).then_some(FileType::Arj)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let mut cursor = Cursor::new(data);
    let mut archive = match ArjArchieve::new(&mut cursor) {
        Ok(a) => a,
        Err(e) => return c.error(format!("arj: {e}")),
    };
    for n in 0..super::MAX_LISTED {
        let header = match archive.get_next_entry() {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => return c.error(format!("arj: {e}")),
        };
        let name = header.name.replace('\\', "/");
        let name = if name.is_empty() { format!("member-{n}") } else { name };
        if !matches!(header.file_type, ArjType::Binary | ArjType::Text7Bit) {
            if archive.skip(&header).is_err() {
                return;
            }
            continue;
        }
        if header.is_garbled() {
            c.encrypted(Some(&name));
            if archive.skip(&header).is_err() {
                return;
            }
            continue;
        }
        let stored = u64::from(header.compressed_size);
        let declared = u64::from(header.original_size);
        let flow = c.member(&name, stored, |cap| {
            if stored > data.len() as u64 {
                return Err(format!("arj: {stored} compressed bytes declared, the archive has {}", data.len()));
            }
            if declared > cap {
                // Step over its data so the next header is read in its place.
                let _ = archive.skip(&header);
                return Err(format!("arj: member of {declared} bytes is over the cap of {cap}; not decoded"));
            }
            archive.read(&header).map(MemberData::whole).map_err(|e| format!("arj: {e}"))
        });
        if flow == Flow::Stop {
            return;
        }
    }
}
