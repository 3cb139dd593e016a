//! MS-DOS `COMPRESS.EXE` / `EXPAND.EXE` files: SZDD (LZSS) and KWAJ
//! (stored, XOR, LZSS) — `setup.ex_`, `driver.dl_`. Own decoder, following
//! libmspack's format notes: a 4 KiB window filled with spaces, a flag byte
//! per eight items, literals or (offset, length 3..18) pairs. KWAJ's LZH and
//! MSZIP methods are reported, not decoded.

use super::Container;
use super::bytes::{MemberData, le_u16, le_u32};
use crate::filetype::FileType;
use crate::limits::Deadline;

register!(MSEXPAND: "msexpand", rank 170, unpacks [MsCompress]);

fn sniff(data: &[u8]) -> Option<FileType> {
    (data.starts_with(SZDD_MAGIC) || data.starts_with(KWAJ_MAGIC)).then_some(FileType::MsCompress)
}

pub(crate) const SZDD_MAGIC: &[u8] = b"SZDD\x88\xF0\x27\x33";
pub(crate) const KWAJ_MAGIC: &[u8] = b"KWAJ\x88\xF0\x27\xD1";

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let deadline = c.deadline();
    if data.starts_with(SZDD_MAGIC) {
        let Some(h) = data.get(..14) else { return c.error("szdd: header cut short") };
        let declared = u32::from_le_bytes([h[10], h[11], h[12], h[13]]) as u64;
        // The header keeps the last character of the name that `_` replaced.
        let last = h[9];
        let name = if last.is_ascii_alphanumeric() { format!("expanded.{}", last as char) } else { "expanded".into() };
        c.member(&name, data.len() as u64, |cap| Ok(lzss(&data[14..], cap.min(declared.max(1)), declared, &deadline)));
        return;
    }
    let Some(h) = data.get(..14) else { return c.error("kwaj: header cut short") };
    let method = u16::from_le_bytes([h[8], h[9]]);
    let offset = u16::from_le_bytes([h[10], h[11]]) as usize;
    let flags = u16::from_le_bytes([h[12], h[13]]);
    let mut at = 14usize;
    let mut declared = None;
    let mut name = String::new();
    let u16_at = |o| le_u16(data, o);
    if flags & 1 != 0 {
        declared = le_u32(data, at).map(|v| v as u64);
        at += 4;
    }
    if flags & 2 != 0 {
        at += 2;
    }
    if flags & 4 != 0 {
        at += 2 + u16_at(at).unwrap_or(0);
    }
    for (bit, max, sep) in [(8u16, 9usize, ""), (16, 4, ".")] {
        if flags & bit != 0 {
            let field = data.get(at..).unwrap_or_default();
            let len = field.iter().take(max).position(|&b| b == 0).unwrap_or(field.len().min(max));
            name.push_str(sep);
            name.extend(field[..len].iter().filter(|b| b.is_ascii_graphic()).map(|&b| b as char));
            at += len + usize::from(len < max || field.get(len) == Some(&0));
        }
    }
    let body = data.get(offset..).unwrap_or_default();
    let name = if name.is_empty() || name == "." { "expanded".to_string() } else { name };
    let stored = body.len() as u64;
    c.member(&name, stored, |cap| {
        let cap = declared.map_or(cap, |d| cap.min(d.max(1)));
        match method {
            0 => Ok(MemberData::whole(body[..body.len().min(cap as usize)].to_vec())),
            1 => Ok(MemberData::whole(body[..body.len().min(cap as usize)].iter().map(|b| b ^ 0xFF).collect())),
            2 => Ok(lzss(body, cap, declared.unwrap_or(0), &deadline)),
            m => Err(format!("kwaj: compression method {m} (LZH or MSZIP) is not decoded")),
        }
    });
}

/// SZDD's LZSS: at most `cap` bytes out.
fn lzss(src: &[u8], cap: u64, declared: u64, deadline: &Deadline) -> MemberData {
    let mut window = [b' '; 4096];
    let mut pos = 4096 - 16;
    let mut out = Vec::with_capacity(declared.min(cap).min(1 << 20) as usize);
    let mut i = 0;
    let cap = cap as usize;
    let more = declared > cap as u64;
    'outer: while i < src.len() {
        if out.len().is_multiple_of(1 << 16) && deadline.passed() {
            return MemberData { data: out, truncated: false, error: Some(super::bytes::OUT_OF_TIME.into()) };
        }
        let flags = src[i];
        i += 1;
        for bit in 0..8 {
            if out.len() >= cap {
                break 'outer;
            }
            if flags >> bit & 1 == 1 {
                let Some(&b) = src.get(i) else { break 'outer };
                i += 1;
                out.push(b);
                window[pos] = b;
                pos = (pos + 1) & 4095;
            } else {
                let (Some(&lo), Some(&hi)) = (src.get(i), src.get(i + 1)) else { break 'outer };
                i += 2;
                let mut from = usize::from(lo) | usize::from(hi & 0xF0) << 4;
                for _ in 0..usize::from(hi & 0x0F) + 3 {
                    if out.len() >= cap {
                        break 'outer;
                    }
                    let b = window[from];
                    out.push(b);
                    window[pos] = b;
                    pos = (pos + 1) & 4095;
                    from = (from + 1) & 4095;
                }
            }
        }
    }
    let truncated = out.len() >= cap && (more || i < src.len());
    MemberData { data: out, truncated, error: None }
}

/// SZDD-compress `data` with literals only (tests).
#[cfg(test)]
pub(crate) fn szdd_stored(data: &[u8]) -> Vec<u8> {
    let mut v = SZDD_MAGIC.to_vec();
    v.push(b'A');
    v.push(b'e');
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    for chunk in data.chunks(8) {
        v.push(0xFF);
        v.extend_from_slice(chunk);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lzss_literals_matches_and_caps() {
        let forever = Deadline::new(Duration::from_secs(60), None);
        let data = szdd_stored(b"hello world");
        assert_eq!(lzss(&data[14..], 100, 11, &forever).data, b"hello world");
        // One literal 'a' then a match of 18 from the window position of 'a'.
        let src = [0b0000_0001, b'a', 0xF0, 0xFF];
        let out = lzss(&src, 100, 19, &forever);
        assert_eq!(out.data, vec![b'a'; 19]);
        let capped = lzss(&src, 5, 19, &forever);
        assert_eq!((capped.data.len(), capped.truncated), (5, true));
    }
}
