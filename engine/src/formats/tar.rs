//! Tar (ustar, GNU and pax headers), listed with the `tar` crate; members
//! are read straight from the input slice, so listing costs no copies.

use super::{Container, MAX_LISTED, Slot, unpack_slots};
use crate::filetype::FileType;
use std::io::Cursor;

register!(TAR: "tar", rank 270, unpacks [Tar]);

/// A ustar header (POSIX and GNU archives both carry it), or a Version 7
/// header (no magic): octal mode and size, a regular file's type flag and
/// a checksum that adds up.
fn sniff(data: &[u8]) -> Option<FileType> {
    let header = data.get(..512)?;
    if &header[257..262] == b"ustar" || v7_header(header) {
        return Some(FileType::Tar);
    }
    None
}

/// A header whose checksum adds up (any type flag: pax and GNU long-name
/// headers come first in their archives).
pub(crate) fn header_checksum_ok(h: &[u8]) -> bool {
    h.len() == 512 && checksum(h)
}

fn checksum(h: &[u8]) -> bool {
    let stored =
        h[148..156].iter().filter(|b| b.is_ascii_digit()).fold(0u32, |n, &b| n.wrapping_mul(8).wrapping_add(u32::from(b - b'0')));
    let sum: u32 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
    stored == sum
}

fn v7_header(h: &[u8]) -> bool {
    let octal = |field: &[u8]| {
        let digits = field.iter().take_while(|&&b| b == b' ').count();
        let body = &field[digits..];
        let end = body.iter().position(|&b| b == 0 || b == b' ').unwrap_or(body.len());
        end > 0 && body[..end].iter().all(|b| (b'0'..=b'7').contains(b)) && body[end..].iter().all(|&b| b == 0 || b == b' ')
    };
    if h[0] == 0 || !octal(&h[100..108]) || !octal(&h[124..136]) || !octal(&h[148..156]) || !matches!(h[156], 0 | b'0'..=b'7') {
        return false;
    }
    checksum(h)
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
