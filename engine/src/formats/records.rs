//! More binary-as-text encodings, for [`super::text`]: yEnc (Usenet:
//! `=ybegin` ... `=yend`, bytes shifted by 42 with `=` escapes), Intel HEX
//! (`objcopy -O ihex`: `:LLAAAATT...CC` records) and Motorola S-records
//! (`objcopy -O srec`: `S1`/`S2`/`S3` data records). Own decoders: each
//! grows its output as it reads, stops at the cap, checks every record's
//! checksum (a record that fails ends the block with an error).

use super::bytes::MemberData;
use memchr::memmem;

/// The `=ybegin` lines of `data`, with the name each gives.
pub(crate) fn yenc_blocks(data: &[u8]) -> impl Iterator<Item = (usize, Option<String>)> + '_ {
    memmem::find_iter(data, b"=ybegin ").filter(|&at| at == 0 || data[at - 1] == b'\n').map(move |at| {
        let line_end = memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |p| at + p);
        let line = &data[at..line_end];
        let name = memmem::find(line, b" name=").map(|p| String::from_utf8_lossy(&line[p + 6..]).trim().to_string());
        (at, name.filter(|n| !n.is_empty()))
    })
}

/// Decode the yEnc block starting at its `=ybegin` line.
pub(crate) fn yenc_decode(block: &[u8], cap: u64) -> MemberData {
    let mut out = Vec::new();
    let mut lines = block.split(|&b| b == b'\n').skip(1);
    for line in lines.by_ref() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"=ypart ") {
            continue;
        }
        if line.starts_with(b"=yend") {
            return MemberData::whole(out);
        }
        let mut bytes = line.iter();
        while let Some(&b) = bytes.next() {
            let v = if b == b'=' {
                match bytes.next() {
                    Some(&e) => e.wrapping_sub(64).wrapping_sub(42),
                    None => break,
                }
            } else {
                b.wrapping_sub(42)
            };
            if out.len() as u64 >= cap {
                return MemberData { data: out, truncated: true, error: None };
            }
            out.push(v);
        }
    }
    MemberData { data: out, truncated: false, error: Some("yenc: no =yend line".into()) }
}

fn hex_byte(h: &[u8]) -> Option<u8> {
    let v = |c: u8| (c as char).to_digit(16);
    Some((v(*h.first()?)? * 16 + v(*h.get(1)?)?) as u8)
}

/// A record's bytes after its marker (`:` or `Sx`), hex-decoded.
fn record_bytes(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2).map(hex_byte).collect()
}

/// The object starts with an Intel HEX record whose checksum holds.
pub(crate) fn is_ihex(data: &[u8]) -> bool {
    let line = first_line(data);
    line.first() == Some(&b':') && line.len() >= 11 && record_bytes(&line[1..]).is_some_and(|r| ihex_ok(&r))
}

fn ihex_ok(r: &[u8]) -> bool {
    r.len() >= 5 && r.len() == 5 + r[0] as usize && r.iter().fold(0u8, |s, &b| s.wrapping_add(b)) == 0
}

/// The object starts with an S-record (`S0` header or data) whose checksum holds.
pub(crate) fn is_srec(data: &[u8]) -> bool {
    let line = first_line(data);
    line.len() >= 10 && line[0] == b'S' && matches!(line[1], b'0'..=b'3') && record_bytes(&line[2..]).is_some_and(|r| srec_ok(&r))
}

fn srec_ok(r: &[u8]) -> bool {
    r.len() >= 3 && r.len() == 1 + r[0] as usize && r.iter().fold(0u8, |s, &b| s.wrapping_add(b)) == 0xFF
}

fn first_line(data: &[u8]) -> &[u8] {
    let line = &data[..memchr::memchr(b'\n', data).unwrap_or(data.len())];
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The data of Intel HEX or S-records, in record order, as long as each
/// record follows the last (the image `objcopy` wrote); an end record ends
/// it, a jump in the addresses or a bad record too, with an error.
pub(crate) fn hex_records_decode(data: &[u8], srec: bool, cap: u64) -> MemberData {
    let mut out = Vec::new();
    let mut next: Option<u64> = None;
    let mut base = 0u64;
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let (addr, payload) = if srec {
            let Some(r) = (line.len() >= 4 && line[0] == b'S').then(|| record_bytes(&line[2..])).flatten().filter(|r| srec_ok(r))
            else {
                return MemberData { data: out, truncated: false, error: Some("srec: a bad record".into()) };
            };
            let alen = match line[1] {
                b'1' => 2,
                b'2' => 3,
                b'3' => 4,
                b'0' | b'4' | b'5' | b'6' => continue,
                _ => break,
            };
            let Some(body) = r.get(1 + alen..r.len() - 1) else { break };
            let addr = r[1..1 + alen].iter().fold(0u64, |a, &b| a << 8 | u64::from(b));
            (addr, body.to_vec())
        } else {
            let Some(r) = line.strip_prefix(b":").and_then(record_bytes).filter(|r| ihex_ok(r)) else {
                return MemberData { data: out, truncated: false, error: Some("ihex: a bad record".into()) };
            };
            let offset = u64::from(u16::from_be_bytes([r[1], r[2]]));
            let body = &r[4..r.len() - 1];
            match r[3] {
                0x00 => (base + offset, body.to_vec()),
                0x01 => break,
                0x02 if body.len() == 2 => {
                    base = u64::from(u16::from_be_bytes([body[0], body[1]])) << 4;
                    continue;
                }
                0x04 if body.len() == 2 => {
                    base = u64::from(u16::from_be_bytes([body[0], body[1]])) << 16;
                    continue;
                }
                _ => continue,
            }
        };
        if next.is_some_and(|n| n != addr) {
            let kind = if srec { "srec" } else { "ihex" };
            return MemberData {
                data: out,
                truncated: false,
                error: Some(format!("{kind}: the addresses jump to {addr:#x}; the rest is not read")),
            };
        }
        next = Some(addr + payload.len() as u64);
        let room = cap.saturating_sub(out.len() as u64) as usize;
        if payload.len() > room {
            out.extend_from_slice(&payload[..room]);
            return MemberData { data: out, truncated: true, error: None };
        }
        out.extend_from_slice(&payload);
    }
    MemberData::whole(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yenc_round_trip() {
        let payload: Vec<u8> = (0..=255u8).collect();
        let mut text = b"=ybegin line=128 size=256 name=a.exe\r\n".to_vec();
        for &b in &payload {
            let e = b.wrapping_add(42);
            if matches!(e, 0 | b'\n' | b'\r' | b'=') {
                text.extend_from_slice(&[b'=', e.wrapping_add(64)]);
            } else {
                text.push(e);
            }
        }
        text.extend_from_slice(b"\r\n=yend size=256\r\n");
        let blocks: Vec<_> = yenc_blocks(&text).collect();
        assert_eq!(blocks, [(0, Some("a.exe".to_string()))]);
        assert_eq!(yenc_decode(&text, 1000).data, payload);
        assert!(yenc_decode(&text, 10).truncated);
    }

    #[test]
    fn intel_hex_and_srec() {
        let ihex = b":0400000001020304F2\n:0400040005060708DE\n:00000001FF\n";
        assert!(is_ihex(ihex));
        assert_eq!(hex_records_decode(ihex, false, 100).data, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(!is_ihex(b":0400000001020304F3\n"), "bad checksum");
        let srec = b"S00600004844521B\nS107000001020304EE\nS9030000FC\n";
        assert!(is_srec(srec));
        assert_eq!(hex_records_decode(srec, true, 100).data, [1, 2, 3, 4]);
        assert_eq!(hex_records_decode(b":0400000001020304F3\n", false, 100).error.as_deref(), Some("ihex: a bad record"));
    }
}
