//! Disk images: the partition table (MBR, and GPT behind its protective
//! MBR) and each partition's bytes as a child, for the file-system modules
//! to read. Own reader (a table of four or 128 fixed-size entries); slices
//! of the input, nothing allocated from the table. Logical partitions in
//! an extended one are not followed (reported).

use super::Container;
use super::Flow;
use super::bytes::{le_u32, le_u64};
use crate::filetype::FileType;
use std::borrow::Cow;

register!(DISK: "disk", rank 245, unpacks [Disk]);

const SECTOR: usize = 512;
/// GPT entries read at most.
const MAX_GPT_ENTRIES: usize = 256;

/// An MBR: the `55 AA` mark, four entries whose status is 0x00 or 0x80,
/// at least one partition that starts inside the image. (FAT boot sectors
/// carry the mark too: the `fat` module is asked first.)
fn sniff(data: &[u8]) -> Option<FileType> {
    let mbr = data.get(..SECTOR)?;
    // Hybrid ISO images carry an MBR too: the `iso` module reads those.
    if mbr[510..512] != [0x55, 0xAA] || super::iso::is_iso9660(data) {
        return None;
    }
    let entries = mbr_entries(mbr);
    let sane = (0..4).all(|i| matches!(mbr[446 + 16 * i], 0x00 | 0x80));
    let any =
        entries.iter().any(|&(_, start, len)| start >= 1 && len > 0 && (start as usize).saturating_mul(SECTOR) < data.len());
    (sane && any).then_some(FileType::Disk)
}

/// (type, first sector, sectors) of the MBR's used entries.
fn mbr_entries(mbr: &[u8]) -> Vec<(u8, u64, u64)> {
    (0..4)
        .filter_map(|i| {
            let e = 446 + 16 * i;
            let ty = mbr[e + 4];
            let (start, len) = (le_u32(mbr, e + 8)? as u64, le_u32(mbr, e + 12)? as u64);
            (ty != 0 && len > 0).then_some((ty, start, len))
        })
        .collect()
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let Some(mbr) = data.get(..SECTOR) else { return c.error("disk: shorter than a sector") };
    let entries = mbr_entries(mbr);
    if entries.iter().any(|&(ty, _, _)| ty == 0xEE) {
        return gpt(c, data);
    }
    for (n, &(ty, start, len)) in entries.iter().enumerate() {
        if matches!(ty, 0x05 | 0x0F | 0x85) {
            c.error(format!("disk: partition {n} is an extended partition; its logical partitions are not read"));
            continue;
        }
        if partition(c, data, &format!("partition-{n}"), start, len) == Flow::Stop {
            return;
        }
    }
}

/// Hand the sectors `start..start + len` over (cut at the end of the image).
fn partition(c: &mut Container<'_>, data: &[u8], name: &str, start: u64, len: u64) -> Flow {
    let from = usize::try_from(start).ok().and_then(|s| s.checked_mul(SECTOR)).filter(|&f| f < data.len());
    let Some(from) = from else {
        c.member_error(name, format!("starts at sector {start}, outside the image"));
        return Flow::Continue;
    };
    let to =
        usize::try_from(len).ok().and_then(|l| l.checked_mul(SECTOR)).and_then(|l| from.checked_add(l)).unwrap_or(usize::MAX);
    if to > data.len() {
        c.error(format!("disk: {name} runs past the end of the image; read to the end"));
    }
    c.buffer(name, Cow::Borrowed(&data[from..to.min(data.len())]))
}

/// A GPT: the header at sector 1 (`EFI PART`), its entries.
fn gpt(c: &mut Container<'_>, data: &[u8]) {
    let header = &data[SECTOR.min(data.len())..];
    if !header.starts_with(b"EFI PART") {
        return c.error("disk: a protective MBR without a GPT header");
    }
    let (Some(at), Some(count), Some(size)) = (le_u64(header, 72), le_u32(header, 80), le_u32(header, 84)) else {
        return c.error("disk: GPT header cut short");
    };
    if !(128..=4096).contains(&size) {
        return c.error(format!("disk: GPT entries of {size} bytes"));
    }
    let base = usize::try_from(at).ok().and_then(|a| a.checked_mul(SECTOR)).unwrap_or(usize::MAX);
    for n in 0..count.min(MAX_GPT_ENTRIES) {
        let Some(e) = base.checked_add(n * size).and_then(|o| data.get(o..o.checked_add(size)?)) else {
            return c.error(format!("disk: GPT entry {n} outside the image"));
        };
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (le_u64(e, 32).unwrap_or(0), le_u64(e, 40).unwrap_or(0));
        if last < first {
            c.error(format!("disk: GPT entry {n} ends before it starts"));
            continue;
        }
        if partition(c, data, &format!("partition-{n}"), first, last - first + 1) == Flow::Stop {
            return;
        }
    }
}
