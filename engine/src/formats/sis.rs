//! Symbian installation files (SIS, EPOC release 3–6): a header of UIDs and
//! counts, then file records pointing at each file's (zlib-compressed,
//! unless the `NoCompress` option is set) data. Own reader after the
//! published SIS file format notes; `flate2` inflates. Simple and
//! multi-language file records are read; `if`/`else` records are stepped
//! over; an options record ends the listing with an error.

use super::Container;
use super::Flow;
use super::bytes::{le_u16, le_u32, read_capped};
use crate::filetype::FileType;

register!(SIS: "sis", rank 180, unpacks [Sis]);

fn sniff(data: &[u8]) -> Option<FileType> {
    is_sis(data).then_some(FileType::Sis)
}

/// UID1 of every SIS file; UID2 is 0x10003A12 (release 6) or 0x1000006D.
pub(crate) fn is_sis(data: &[u8]) -> bool {
    le_u32(data, 8) == Some(0x1000_0419) && matches!(le_u32(data, 4), Some(0x1000_3A12 | 0x1000_006D))
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let (u16_at, u32_at) = (|o| le_u16(data, o), |o| le_u32(data, o));
    let release6 = u32_at(4) == Some(0x1000_3A12);
    let (Some(langs), Some(files), Some(options), Some(mut at)) = (u16_at(0x12), u16_at(0x14), u16_at(0x24), u32_at(0x34)) else {
        return c.error("sis: header cut short");
    };
    let langs = langs.max(1);
    let compressed = options & 0x8 == 0;
    let mut n = 0;
    for _ in 0..files.min(super::MAX_LISTED) {
        // Offsets below are `at` plus small constants: stop before they could wrap.
        let Some(kind) = u32_at(at).filter(|_| at < data.len()) else { return c.error("sis: file records cut short") };
        let per_lang = match kind {
            0 => 1,
            1 => langs,
            // if / else-if: an expression of the given size; else, end-if.
            3 | 4 => {
                at = at.saturating_add(8).saturating_add(u32_at(at + 4).unwrap_or(usize::MAX / 2));
                continue;
            }
            5 | 6 => {
                at += 4;
                continue;
            }
            k => return c.error(format!("sis: file record type {k} is not read")),
        };
        // type, file type, details, source name (len, ptr), destination name (len, ptr)
        let (Some(dest_len), Some(dest_ptr)) = (u32_at(at + 20), u32_at(at + 24)) else {
            return c.error("sis: file record cut short");
        };
        let name = data
            .get(dest_ptr..dest_ptr.saturating_add(dest_len))
            .map(|b| {
                let units: Vec<u16> = b.chunks_exact(2).map(|p| u16::from_le_bytes([p[0], p[1]])).collect();
                if options & 1 != 0 { String::from_utf16_lossy(&units) } else { String::from_utf8_lossy(b).into_owned() }
            })
            .unwrap_or_default();
        let name = name.rsplit(['\\', '/', ':']).next().unwrap_or("").to_string();
        let lens = at + 28;
        let ptrs = lens + 4 * per_lang;
        let originals = ptrs + 4 * per_lang;
        for lang in 0..per_lang {
            let (Some(len), Some(ptr)) = (u32_at(lens + 4 * lang), u32_at(ptrs + 4 * lang)) else {
                return c.error("sis: file record cut short");
            };
            let original = if release6 { u32_at(originals + 4 * lang).unwrap_or(0) as u64 } else { 0 };
            n += 1;
            let child = match (name.is_empty(), per_lang) {
                (true, _) => format!("file-{n}"),
                (false, 1) => name.clone(),
                (false, _) => format!("{lang}-{name}"),
            };
            let Some(stored) = data.get(ptr..ptr.saturating_add(len)) else {
                c.member_error(&child, format!("data at {ptr} ({len} bytes) is outside the file"));
                continue;
            };
            let deadline = c.deadline();
            let flow = c.member(&child, len as u64, |cap| {
                Ok(if compressed {
                    read_capped(flate2::read::ZlibDecoder::new(stored), cap, original, &deadline)
                } else {
                    read_capped(stored, cap, len as u64, &deadline)
                })
            });
            if flow == Flow::Stop {
                return;
            }
        }
        // Release 6 adds original lengths and a MIME type (length, pointer).
        at = if release6 { originals + 4 * per_lang + 8 } else { originals };
    }
}
