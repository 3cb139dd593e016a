//! Virtual PC / Hyper-V VHD disks (`qemu-img convert -O vpc`, Windows'
//! disk management): a fixed disk is its bytes and a 512-byte footer; a
//! dynamic one a block table (BAT) whose blocks follow a sector bitmap.
//! The disk is rebuilt as the guest sees it (unallocated blocks read as
//! zeros) under the walk's cap, for the `disk` and file-system modules.
//! Own reader (the format is a footer, a header and a table); differencing
//! disks need their parent and are reported.

use super::Container;
use super::bytes::MemberData;
use crate::filetype::FileType;
use std::borrow::Cow;

register!(VHD: "vhd", rank 246, unpacks [Vhd], sniff sniff_vhd);

const FOOTER: usize = 512;

fn be_u32(d: &[u8], o: usize) -> Option<u32> {
    d.get(o..o.checked_add(4)?).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be_u64(d: &[u8], o: usize) -> Option<u64> {
    d.get(o..o.checked_add(8)?).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// The footer: at the end of every VHD, and copied at the start of a
/// dynamic one (which is where an image cut short still shows it).
fn footer(data: &[u8]) -> Option<&[u8]> {
    let end = data.len().checked_sub(FOOTER).and_then(|at| data.get(at..)).filter(|f| f.starts_with(b"conectix"));
    end.or_else(|| data.get(..FOOTER).filter(|f| f.starts_with(b"conectix")))
}

fn sniff_vhd(data: &[u8]) -> Option<FileType> {
    footer(data).filter(|f| matches!(be_u32(f, 60), Some(2..=4))).map(|_| FileType::Vhd)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let Some(f) = footer(data) else { return c.error("vhd: no footer") };
    let disk_size = be_u64(f, 48).unwrap_or(0);
    match be_u32(f, 60) {
        // Fixed: the disk is everything before the footer.
        Some(2) => {
            let end = data.len().saturating_sub(FOOTER).min(usize::try_from(disk_size).unwrap_or(usize::MAX));
            let _ = c.buffer("disk", Cow::Borrowed(&data[..end]));
        }
        Some(3) => {
            let deadline = c.deadline();
            let _ = c.member("disk", data.len() as u64, |cap| dynamic(data, f, disk_size, cap, &deadline));
        }
        _ => c.error("vhd: a differencing disk (its parent is not here)"),
    }
}

/// Rebuild a dynamic disk, at most `cap` bytes of it.
fn dynamic(data: &[u8], f: &[u8], disk_size: u64, cap: u64, deadline: &crate::limits::Deadline) -> Result<MemberData, String> {
    let header_at = be_u64(f, 16).and_then(|o| usize::try_from(o).ok()).ok_or("vhd: no dynamic header offset")?;
    let h = data
        .get(header_at..header_at.saturating_add(1024))
        .filter(|h| h.starts_with(b"cxsparse"))
        .ok_or("vhd: no dynamic header")?;
    let bat_at = be_u64(h, 16).and_then(|o| usize::try_from(o).ok()).ok_or("vhd: bad table offset")?;
    let entries = be_u32(h, 28).unwrap_or(0) as usize;
    let block = be_u32(h, 32).unwrap_or(0) as usize;
    if !block.is_power_of_two() || !(512..=256 << 20).contains(&block) {
        return Err(format!("vhd: blocks of {block} bytes"));
    }
    // The sector bitmap before each block's data, in whole sectors.
    let bitmap = (block / 512).div_ceil(8).div_ceil(512) * 512;
    let want = disk_size.min(cap) as usize;
    let mut out = Vec::new();
    for n in 0..entries {
        if out.len() >= want {
            break;
        }
        if deadline.passed() {
            return Ok(MemberData { data: out, truncated: false, error: Some(super::bytes::OUT_OF_TIME.into()) });
        }
        let take = block.min(want - out.len());
        let sector = bat_at
            .checked_add(4 * n)
            .and_then(|o| be_u32(data, o))
            .ok_or_else(|| format!("vhd: block table entry {n} outside the file"))?;
        if sector == u32::MAX {
            out.resize(out.len() + take, 0);
            continue;
        }
        let at = (sector as usize).saturating_mul(512).saturating_add(bitmap);
        match data.get(at..at.saturating_add(take)) {
            Some(bytes) => out.extend_from_slice(bytes),
            None => {
                return Ok(MemberData { data: out, truncated: false, error: Some(format!("vhd: block {n} outside the file")) });
            }
        }
    }
    let truncated = disk_size > cap;
    Ok(MemberData { data: out, truncated, error: None })
}
