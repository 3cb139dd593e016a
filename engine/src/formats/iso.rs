//! ISO 9660 images (primary volume, ISO names without the `;1` version).
//! Own bounded reader: directory extents are walked once each (a looping
//! directory ends), at most 32 levels deep; files are (name, offset, size)
//! inside the input.

use super::{Container, MAX_LISTED, Slot, unpack_slots};
use crate::filetype::FileType;

register!(ISO: "iso", rank 260, unpacks [Iso]);

fn sniff(data: &[u8]) -> Option<FileType> {
    is_iso9660(data).then_some(FileType::Iso)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let (slots, error) = members(data);
    unpack_slots(c, data, slots, error);
}

/// Sector size of ISO 9660 images.
const ISO_SECTOR: usize = 2048;
/// Most bytes of member paths listed from one image.
const MAX_NAME_BYTES: usize = 16 << 20;
/// Deepest directory nesting followed inside an image.
const ISO_MAX_DEPTH: usize = 32;

/// Does `data` carry an ISO 9660 volume descriptor at sector 16?
pub(crate) fn is_iso9660(data: &[u8]) -> bool {
    data.get(16 * ISO_SECTOR + 1..16 * ISO_SECTOR + 6) == Some(b"CD001")
}

/// Regular files of an ISO 9660 image (primary volume, ISO names without
/// the `;1` version), found by walking directory extents; each extent is
/// visited once, so looping directories end.
fn members(data: &[u8]) -> (Vec<Slot>, Option<String>) {
    let mut out = Vec::new();
    // Find the primary volume descriptor (type 1) among the descriptors.
    let mut pvd = None;
    for n in 16..64 {
        let Some(d) = data.get(n * ISO_SECTOR..(n + 1) * ISO_SECTOR) else { break };
        if &d[1..6] != b"CD001" || d[0] == 255 {
            break;
        }
        if d[0] == 1 {
            pvd = Some(d);
            break;
        }
    }
    let Some(pvd) = pvd else { return (out, Some("iso9660: no primary volume descriptor".into())) };
    let root = &pvd[156..190];
    let mut queue = vec![(dir_extent(root), String::new(), 0usize)];
    let mut seen = std::collections::HashSet::new();
    // Paths repeat their directories' names: a deep directory of many files
    // would cost depth x files in names. Listing stops at this many bytes.
    let mut name_bytes = 0usize;
    while let Some(((lba, len), prefix, depth)) = queue.pop() {
        if depth > ISO_MAX_DEPTH || !seen.insert(lba) || out.len() >= MAX_LISTED {
            continue;
        }
        let start = (lba as usize).saturating_mul(ISO_SECTOR);
        let Some(dir) = data.get(start..start.saturating_add(len as usize).min(data.len())) else {
            return (out, Some(format!("iso9660: directory extent {lba} outside the image")));
        };
        let mut at = 0;
        while at < dir.len() {
            let rec_len = dir[at] as usize;
            if rec_len == 0 {
                // Records do not cross sectors: skip to the next one.
                at = (at / ISO_SECTOR + 1) * ISO_SECTOR;
                continue;
            }
            let Some(rec) = dir.get(at..at + rec_len).filter(|r| r.len() >= 34) else { break };
            at += rec_len;
            let name_len = rec[32] as usize;
            let Some(raw) = rec.get(33..33 + name_len) else { continue };
            if raw == [0] || raw == [1] {
                continue; // `.` and `..`
            }
            let name = String::from_utf8_lossy(raw);
            let name = name.split(';').next().unwrap_or("").trim_end_matches('.').to_string();
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let (lba, size) = dir_extent(rec);
            name_bytes += path.len();
            if name_bytes > MAX_NAME_BYTES {
                return (out, Some(format!("iso9660: more than {MAX_NAME_BYTES} bytes of paths; the rest not listed")));
            }
            if rec[25] & 2 != 0 {
                queue.push(((lba, size), path, depth + 1));
            } else {
                out.push(Slot { name: path, offset: lba as u64 * ISO_SECTOR as u64, size: size as u64 });
            }
        }
    }
    (out, None)
}

/// (extent LBA, data length) of a directory record (little-endian halves).
fn dir_extent(rec: &[u8]) -> (u32, u32) {
    let le = |o: usize| u32::from_le_bytes([rec[o], rec[o + 1], rec[o + 2], rec[o + 3]]);
    (le(2), le(10))
}
