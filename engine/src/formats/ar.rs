//! `ar` archives (Unix static libraries and Debian packages), GNU and BSD
//! long names. Own bounded reader: members are (name, offset, size) inside
//! the input, nothing is copied or allocated from a declared size.

use super::{Container, MAX_LISTED, Slot, unpack_slots};
use crate::filetype::FileType;

register!(AR: "ar", rank 140, unpacks [Ar]);

fn sniff(data: &[u8]) -> Option<FileType> {
    data.starts_with(b"!<arch>\n").then_some(FileType::Ar)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let (slots, error) = members(data);
    unpack_slots(c, data, slots, error);
}

pub(super) fn ascii_num(field: &[u8], radix: u32) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, radix).ok()
}

/// Members of an `ar` archive (GNU and BSD long names).
fn members(data: &[u8]) -> (Vec<Slot>, Option<String>) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let (m, err) = members(&a);
        assert_eq!(err, None);
        let names: Vec<&str> = m.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a-very-long-member-name.txt", "short.o"]);
        assert_eq!(m[1].size, 3);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [&b"070701zzzz"[..], b"070707", &[0xC7, 0x71, 1], b"!<arch>\nshort"] {
            let _ = members(junk);
        }
    }
}
