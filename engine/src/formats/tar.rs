//! Tar (ustar, GNU and pax headers), listed with the `tar` crate; members
//! are read straight from the input slice, so listing costs no copies.

use super::{Container, MAX_LISTED, Slot, unpack_slots};
use crate::filetype::FileType;
use std::io::Cursor;

register!(TAR: "tar", rank 270, unpacks [Tar]);

/// A ustar header (POSIX and GNU archives both carry it).
fn sniff(data: &[u8]) -> Option<FileType> {
    (data.len() >= 262 && &data[257..262] == b"ustar").then_some(FileType::Tar)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let (slots, error) = members(data);
    unpack_slots(c, data, slots, error);
}

/// The regular files of a tar archive, in order, with their data's place
/// in `data`.
fn members(data: &[u8]) -> (Vec<Slot>, Option<String>) {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(Cursor::new(data));
    let entries = match archive.entries_with_seek() {
        Ok(e) => e,
        Err(e) => return (out, Some(format!("tar: {e}"))),
    };
    for entry in entries {
        if out.len() >= MAX_LISTED {
            return (out, Some(format!("tar: more than {MAX_LISTED} members; the rest not listed")));
        }
        match entry {
            Ok(e) => {
                if !e.header().entry_type().is_file() {
                    continue;
                }
                let name = e.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| "<bad name>".to_string());
                out.push(Slot { name, offset: e.raw_file_position(), size: e.size() });
            }
            Err(e) => return (out, Some(format!("tar: {e}"))),
        }
    }
    (out, None)
}
