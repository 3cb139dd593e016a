//! cpio archives in all four encodings (newc, crc, odc, and binary in
//! both byte orders). Own bounded reader: members are (name, offset, size)
//! inside the input, nothing is copied or allocated from a declared size.

use super::ar::ascii_num;
use super::{Container, MAX_LISTED, Slot, unpack_slots};
use crate::filetype::FileType;

register!(CPIO: "cpio", rank 150, unpacks [Cpio]);

/// newc, crc and odc headers, and the binary one in either byte order.
fn sniff(data: &[u8]) -> Option<FileType> {
    let starts = |m: &[u8]| data.starts_with(m);
    (starts(b"070701") || starts(b"070702") || starts(b"070707") || starts(&[0xC7, 0x71]) || starts(&[0x71, 0xC7]))
        .then_some(FileType::Cpio)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let (slots, error) = members(data);
    unpack_slots(c, data, slots, error);
}

/// Members of a cpio archive in any of its four encodings.
fn members(data: &[u8]) -> (Vec<Slot>, Option<String>) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() && out.len() < MAX_LISTED {
        let rest = &data[at..];
        let parsed = if rest.starts_with(b"070701") || rest.starts_with(b"070702") {
            newc(rest)
        } else if rest.starts_with(b"070707") {
            odc(rest)
        } else if rest.starts_with(&[0xC7, 0x71]) {
            binary(rest, u16::from_le_bytes)
        } else if rest.starts_with(&[0x71, 0xC7]) {
            binary(rest, u16::from_be_bytes)
        } else {
            return (out, Some(format!("cpio: no header at offset {at}")));
        };
        let Some(h) = parsed else { return (out, Some(format!("cpio: bad header at offset {at}"))) };
        if h.name == "TRAILER!!!" {
            break;
        }
        if h.mode & 0o170000 == 0o100000 {
            out.push(Slot { name: h.name, offset: (at + h.data_start) as u64, size: h.size });
        }
        at = match at.checked_add(h.data_start).and_then(|x| x.checked_add(h.size as usize)) {
            Some(end) => end + (h.align - end % h.align) % h.align,
            None => break,
        };
    }
    (out, None)
}

struct CpioHeader {
    name: String,
    mode: u64,
    size: u64,
    /// Offset of the data from the header's start.
    data_start: usize,
    /// Alignment of the next header.
    align: usize,
}

fn name_at(rest: &[u8], start: usize, namesize: usize) -> Option<String> {
    let raw = rest.get(start..start.checked_add(namesize)?)?;
    Some(String::from_utf8_lossy(raw).trim_end_matches('\0').to_string())
}

fn newc(rest: &[u8]) -> Option<CpioHeader> {
    let h = rest.get(..110)?;
    let field = |i: usize| ascii_num(&h[6 + i * 8..14 + i * 8], 16);
    let (mode, size, namesize) = (field(1)?, field(6)?, field(11)? as usize);
    let name = name_at(rest, 110, namesize)?;
    let data_start = (110 + namesize).next_multiple_of(4);
    Some(CpioHeader { name, mode, size, data_start, align: 4 })
}

fn odc(rest: &[u8]) -> Option<CpioHeader> {
    let h = rest.get(..76)?;
    let (mode, namesize, size) = (ascii_num(&h[18..24], 8)?, ascii_num(&h[59..65], 8)? as usize, ascii_num(&h[65..76], 8)?);
    let name = name_at(rest, 76, namesize)?;
    Some(CpioHeader { name, mode, size, data_start: 76 + namesize, align: 1 })
}

fn binary(rest: &[u8], word: fn([u8; 2]) -> u16) -> Option<CpioHeader> {
    let h = rest.get(..26)?;
    let w = |i: usize| word([h[i * 2], h[i * 2 + 1]]) as u64;
    let (mode, namesize, size) = (w(3), w(10) as usize, w(11) << 16 | w(12));
    let name = name_at(rest, 26, namesize)?;
    Some(CpioHeader { name, mode, size, data_start: (26 + namesize).next_multiple_of(2), align: 2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newc_entry(name: &str, data: &[u8], mode: u32) -> Vec<u8> {
        let mut h = format!("070701{:08x}{:08x}", 1, mode).into_bytes();
        for v in [0u32, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0] {
            h.extend_from_slice(format!("{v:08x}").as_bytes());
        }
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        while h.len() % 4 != 0 {
            h.push(0);
        }
        h.extend_from_slice(data);
        while h.len() % 4 != 0 {
            h.push(0);
        }
        h
    }

    #[test]
    fn newc_lists_regular_files_only() {
        let mut a = newc_entry("dir", b"", 0o040755);
        a.extend(newc_entry("dir/a.txt", b"hello", 0o100644));
        a.extend(newc_entry("b.bin", b"xyz!", 0o100600));
        a.extend(newc_entry("TRAILER!!!", b"", 0));
        let (m, err) = members(&a);
        assert_eq!(err, None);
        let names: Vec<&str> = m.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dir/a.txt", "b.bin"]);
        assert_eq!(&a[m[0].offset as usize..][..5], b"hello");
    }

    #[test]
    fn odc_and_binary_both_endians() {
        let mut odc = b"070707".to_vec();
        for (v, w) in [(0u64, 6), (0, 6), (0o100644, 6), (0, 6), (0, 6), (1, 6), (0, 6), (0, 11), (2, 6), (3, 11)] {
            odc.extend_from_slice(format!("{v:0w$o}").as_bytes());
        }
        odc.extend_from_slice(b"a\0abc");
        let (m, _) = members(&odc);
        assert_eq!(m, vec![Slot { name: "a".into(), offset: 78, size: 3 }]);

        for le in [true, false] {
            let w = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
            let mut b = Vec::new();
            for v in [0o070707u16, 0, 0, 0o100644, 0, 0, 1, 0, 0, 0, 2, 0, 4] {
                b.extend_from_slice(&w(v));
            }
            b.extend_from_slice(b"z\0data");
            let (m, err) = members(&b);
            assert_eq!(err, None);
            assert_eq!(m, vec![Slot { name: "z".into(), offset: 28, size: 4 }], "le={le}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [&b"070701zzzz"[..], b"070707", &[0xC7, 0x71, 1], b"!<arch>\nshort"] {
            let _ = members(junk);
        }
        assert!(members(b"070701garbage").1.is_some());
    }
}
