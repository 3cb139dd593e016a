//! Small bounded readers for uncompressed archives that need no crate:
//! `ar` (Unix archives and Debian packages) and `cpio` (newc, crc, odc and
//! binary in both byte orders). Each lists its regular files as
//! (name, offset, size) inside the input; nothing is copied or allocated
//! from a size the input declares.

/// A regular file inside an archive: where its bytes are in the input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// Most members listed from one archive; the object limit applies anyway,
/// this bounds the listing itself.
const MAX_LISTED: usize = 100_000;

fn ascii_num(field: &[u8], radix: u32) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, radix).ok()
}

/// Members of an `ar` archive (GNU and BSD long names).
pub(crate) fn ar_members(data: &[u8]) -> (Vec<Slot>, Option<String>) {
    let mut out = Vec::new();
    let mut long_names: &[u8] = &[];
    let mut at = 8usize;
    while at + 60 <= data.len() && out.len() < MAX_LISTED {
        let h = &data[at..at + 60];
        if &h[58..60] != b"`\n" {
            return (out, Some(format!("ar: bad header at offset {at}")));
        }
        let Some(size) = ascii_num(&h[48..58], 10) else { return (out, Some(format!("ar: bad size at offset {at}"))) };
        let raw_name = std::str::from_utf8(&h[..16]).unwrap_or("").trim_end().to_string();
        let mut start = at + 60;
        let mut len = size;
        let name = if raw_name == "/" || raw_name == "/SYM64/" || raw_name == "__.SYMDEF" || raw_name == "__.SYMDEF SORTED" {
            None
        } else if raw_name == "//" {
            long_names = data.get(start..start.saturating_add(size as usize).min(data.len())).unwrap_or(&[]);
            None
        } else if let Some(n) = raw_name.strip_prefix("#1/") {
            // BSD: the name is the first n bytes of the data.
            let n: usize = n.parse().unwrap_or(0);
            let name = data.get(start..start + n).map(|b| String::from_utf8_lossy(b).trim_end_matches('\0').to_string());
            start += n;
            len = len.saturating_sub(n as u64);
            name
        } else if let Some(off) = raw_name.strip_prefix('/').and_then(|n| n.parse::<usize>().ok()) {
            let rest = long_names.get(off..).unwrap_or(&[]);
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            Some(String::from_utf8_lossy(&rest[..end]).trim_end_matches('/').to_string())
        } else {
            Some(raw_name.trim_end_matches('/').to_string())
        };
        if let Some(name) = name {
            out.push(Slot { name, offset: start as u64, size: len });
        }
        at = match (at + 60).checked_add(size as usize) {
            Some(next) => next + (next & 1),
            None => break,
        };
    }
    (out, None)
}

/// Members of a cpio archive in any of its four encodings.
pub(crate) fn cpio_members(data: &[u8]) -> (Vec<Slot>, Option<String>) {
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

/// Sector size of ISO 9660 images.
const ISO_SECTOR: usize = 2048;
/// Deepest directory nesting followed inside an image.
const ISO_MAX_DEPTH: usize = 32;

/// Does `data` carry an ISO 9660 volume descriptor at sector 16?
pub(crate) fn is_iso9660(data: &[u8]) -> bool {
    data.get(16 * ISO_SECTOR + 1..16 * ISO_SECTOR + 6) == Some(b"CD001")
}

/// Regular files of an ISO 9660 image (primary volume, ISO names without
/// the `;1` version), found by walking directory extents; each extent is
/// visited once, so looping directories end.
pub(crate) fn iso_members(data: &[u8]) -> (Vec<Slot>, Option<String>) {
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
        let (m, err) = cpio_members(&a);
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
        let (m, _) = cpio_members(&odc);
        assert_eq!(m, vec![Slot { name: "a".into(), offset: 78, size: 3 }]);

        for le in [true, false] {
            let w = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
            let mut b = Vec::new();
            for v in [0o070707u16, 0, 0, 0o100644, 0, 0, 1, 0, 0, 0, 2, 0, 4] {
                b.extend_from_slice(&w(v));
            }
            b.extend_from_slice(b"z\0data");
            let (m, err) = cpio_members(&b);
            assert_eq!(err, None);
            assert_eq!(m, vec![Slot { name: "z".into(), offset: 28, size: 4 }], "le={le}");
        }
    }

    #[test]
    fn ar_with_gnu_long_names() {
        let mut a = b"!<arch>\n".to_vec();
        let long = b"a-very-long-member-name.txt/\n";
        let mut entry = |name: &str, data: &[u8]| {
            a.extend_from_slice(format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", 0, 0, 0, 644, data.len()).as_bytes());
            a.extend_from_slice(data);
            if data.len() % 2 == 1 {
                a.push(b'\n');
            }
        };
        entry("//", long);
        entry("/0", b"long one");
        entry("short.o/", b"odd");
        let (m, err) = ar_members(&a);
        assert_eq!(err, None);
        let names: Vec<&str> = m.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a-very-long-member-name.txt", "short.o"]);
        assert_eq!(m[1].size, 3);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [&b"070701zzzz"[..], b"070707", &[0xC7, 0x71, 1], b"!<arch>\nshort"] {
            let _ = cpio_members(junk);
            let _ = ar_members(junk);
        }
        assert!(cpio_members(b"070701garbage").1.is_some());
    }
}
