//! BinHex 4.0 (`.hqx`): the classic Mac encoding of a file's data and
//! resource forks as text. Own decoder (the `binhex` crate is GPL): 6-bit
//! characters between `:` marks, then run-length expansion (`0x90 n`), then
//! a header (name, type, creator, flags, fork lengths) and the two forks.
//! The output grows only as the input decodes, so a lying fork length or a
//! run-length bomb costs at most the cap.

use super::bytes::MemberData;

const ALPHABET: &[u8; 64] = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Fork {
    Data,
    Resource,
}

/// Decode one fork of the BinHex file that starts in `text` (at or before
/// its `(This file must be converted ...)` line); at most `cap` bytes.
pub(crate) fn decode(text: &[u8], fork: Fork, cap: u64) -> MemberData {
    let Some(start) = text.iter().position(|&b| b == b':') else {
        return MemberData::failed("binhex: no opening ':'".into());
    };
    let mut rle = Rle { last: None, marker: false, out: Vec::new() };
    // Header, then the data fork, then its CRC, then the resource fork:
    // decode only as far as the wanted fork needs.
    let mut want: Option<(usize, usize)> = None; // (fork start, fork length)
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut truncated = false;
    for &ch in &text[start + 1..] {
        if ch == b':' {
            break;
        }
        let Some(v) = ALPHABET.iter().position(|&a| a == ch) else {
            if ch.is_ascii_whitespace() {
                continue;
            }
            return MemberData::failed(format!("binhex: byte {ch:#04x} is not BinHex"));
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            rle.push((acc >> bits) as u8, cap_for(want, cap));
            acc &= (1 << bits) - 1;
        }
        if want.is_none() {
            want = header(&rle.out, fork);
        }
        if let Some((from, len)) = want {
            let limit = (from as u64).saturating_add((len as u64).min(cap));
            if rle.out.len() as u64 >= limit {
                truncated = (len as u64) > cap;
                break;
            }
        }
    }
    let Some((from, len)) = want else {
        return MemberData::failed("binhex: header cut short".into());
    };
    let end = from.saturating_add(len.min(cap as usize)).min(rle.out.len());
    let data = rle.out.get(from..end).unwrap_or_default().to_vec();
    let error = (data.len() < len.min(cap as usize)).then(|| format!("binhex: fork cut short at {} of {len} bytes", data.len()));
    MemberData { data, truncated, error }
}

/// Bytes the run-length decoder may produce: the wanted fork's end, or
/// room for a header plus `cap` before the header is read.
fn cap_for(want: Option<(usize, usize)>, cap: u64) -> usize {
    match want {
        Some((from, len)) => from.saturating_add(len.min(cap as usize)),
        None => 300usize.saturating_add(cap as usize),
    }
}

/// Where the wanted fork starts and how long it says it is, once the
/// header has been decoded.
fn header(out: &[u8], fork: Fork) -> Option<(usize, usize)> {
    let n = *out.first()? as usize;
    // name, version byte, type, creator, flags
    let lens = 1 + n + 1 + 4 + 4 + 2;
    let be = |o: usize| out.get(o..o + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let data_len = be(lens)?;
    let rsrc_len = be(lens + 4)?;
    let data_start = lens + 8 + 2;
    out.get(..data_start)?;
    Some(match fork {
        Fork::Data => (data_start, data_len),
        Fork::Resource => (data_start.checked_add(data_len)?.checked_add(2)?, rsrc_len),
    })
}

/// BinHex run-length decoding: `0x90 0` is a literal 0x90, `0x90 n`
/// repeats the previous byte to make n copies in all.
struct Rle {
    last: Option<u8>,
    marker: bool,
    out: Vec<u8>,
}

impl Rle {
    fn push(&mut self, b: u8, limit: usize) {
        if self.marker {
            self.marker = false;
            if b == 0 {
                self.emit(0x90, limit);
                self.last = Some(0x90);
            } else if let Some(prev) = self.last {
                for _ in 1..b {
                    self.emit(prev, limit);
                }
            }
        } else if b == 0x90 {
            self.marker = true;
        } else {
            self.emit(b, limit);
            self.last = Some(b);
        }
    }

    fn emit(&mut self, b: u8, limit: usize) {
        if self.out.len() < limit {
            self.out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_runs() {
        // Round trips are in engine/tests/depth.rs; here, the header read
        // from a hand-made decoded prefix and the run-length decoder.
        let mut head = vec![1, b'a', 0];
        head.extend_from_slice(b"TYPECRTR\0\0");
        head.extend_from_slice(&5u32.to_be_bytes());
        head.extend_from_slice(&3u32.to_be_bytes());
        head.extend_from_slice(&[0, 0]);
        assert_eq!(header(&head, Fork::Data), Some((head.len(), 5)));
        assert_eq!(header(&head, Fork::Resource), Some((head.len() + 7, 3)));
        assert_eq!(header(&head[..10], Fork::Data), None);
        // A run: 'A' then 0x90 0xFF makes 255 copies in all.
        let mut r = Rle { last: None, marker: false, out: Vec::new() };
        for b in [b'A', 0x90, 0xFF] {
            r.push(b, 100);
        }
        assert_eq!(r.out, vec![b'A'; 100], "runs stop at the limit");
    }
}
