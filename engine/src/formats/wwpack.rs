//! WWPack32 (1.1x, 1.20). Its stub decompresses each packed section in
//! place, reading its compressed bytes from the section's own end; in the
//! samples seen (ClamAV's `clam-wwpack.exe`) the output overruns the input
//! it has not read yet, so running the stub — on a real CPU as in the
//! emulator — corrupts the data. This module decodes statically instead,
//! from a separate buffer: the same bit stream, read as the stub reads it
//! (written from the stub's own instructions):
//!
//! - 32-bit words, most significant bit first, refilled as soon as the
//!   last bit is used; literal bytes are interleaved in the same stream;
//! - a 0 bit is a literal; after a 1 bit, a 2-bit code selects a match of
//!   length 2 (code 3, with a 2-bit class and a 5 to 9-bit offset; offset
//!   0x1FF ends the section), 3 (code 1), 4 (code 2) or a longer coded
//!   length (code 0), with offsets in classes of 5 to 12, 14 or 15 bits.
//!
//! The stub's table (17 bytes per section: distance back from the stub,
//! end offset, size in words and position of the compressed data, and a
//! "more" flag) is found through the stub's instruction that reads it. The
//! relocation pass the stub does afterwards is not repeated (it adds the
//! image base to stored addresses; contents are what scanning needs).

use super::Container;
use super::bytes::le_u32;
use super::pe_image;
use std::borrow::Cow;

/// `sub eax, cs:[ebp+ecx+TABLE]; mov esi, eax; add esi, cs:[ebp+ecx+...]`
const STUB: &[u8] = &[0x2E, 0x2B, 0x84, 0x0D];
const STUB_NEXT: &[u8] = &[0x8B, 0xF0, 0x2E, 0x03, 0xB4, 0x0D];
/// The name of the decoded image.
pub(super) const CHILD: &str = "wwpack-unpacked";

/// The table's offset in the stub's section, when `d` is WWPack32-packed.
fn table(d: &[u8], layout: &pe_image::Layout) -> Option<(u32, u32)> {
    let stub = layout.section_at(layout.entry)?;
    let raw = d.get(stub.raw as usize..)?;
    let raw = &raw[..raw.len().min(stub.raw_size as usize).min(8192)];
    let at = memchr::memmem::find(raw, STUB)?;
    if raw.get(at + 8..at + 14)? != STUB_NEXT {
        return None;
    }
    Some((stub.va, le_u32(raw, at + 4)? as u32))
}

pub(super) fn looks_packed(d: &[u8]) -> bool {
    pe_image::parse(d).is_some_and(|l| table(d, &l).is_some())
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let Some(layout) = pe_image::parse(data) else { return };
    let Some((stub_va, table_at)) = table(data, &layout) else { return };
    let max = c.limits().max_object_size.min(256 << 20);
    let Some(mut image) = layout.map(data, max) else {
        return c.error("wwpack: image larger than the object cap");
    };
    let original = image.clone();
    let entry = |k: usize, o: usize| {
        let at = (stub_va as usize).checked_add(table_at as usize)?.checked_add(17 * k + o)?;
        le_u32(&original, at).map(|v| v as u32)
    };
    for k in 0..64 {
        let (Some(back), Some(end), Some(words), Some(src)) = (entry(k, 0), entry(k, 4), entry(k, 8), entry(k, 12)) else {
            return c.error("wwpack: section table cut short");
        };
        let start = stub_va.checked_sub(back).map(|s| s as usize);
        let input = start.and_then(|s| {
            let last = s.checked_add(src as usize)?.checked_add(4)?;
            original.get(last.checked_sub(words as usize * 4)?..last)
        });
        let (Some(start), Some(input)) = (start, input) else {
            return c.error(format!("wwpack: section {k} outside the image"));
        };
        let room = (end as usize + 4).min(image.len().saturating_sub(start));
        match decode(input, room) {
            Ok(out) => {
                image[start..start + out.len()].copy_from_slice(&out);
                image[start + out.len()..start + room].fill(0);
            }
            Err(e) => return c.error(format!("wwpack: section {k}: {e}")),
        }
        let more = (stub_va as usize + table_at as usize).checked_add(17 * k + 16).and_then(|a| original.get(a));
        if more.is_none_or(|&m| m == 0) {
            break;
        }
    }
    layout.rebuild(&mut image, None);
    c.buffer(CHILD, Cow::Owned(image));
}

struct Bits<'a> {
    src: &'a [u8],
    pos: usize,
    word: u32,
    left: u32,
}

const CUT: &str = "compressed data cut short";

impl Bits<'_> {
    fn next_word(&mut self) -> Result<u32, &'static str> {
        let w = le_u32(self.src, self.pos).ok_or(CUT)? as u32;
        self.pos += 4;
        Ok(w)
    }

    fn byte(&mut self) -> Result<u8, &'static str> {
        let b = *self.src.get(self.pos).ok_or(CUT)?;
        self.pos += 1;
        Ok(b)
    }

    fn bit(&mut self) -> Result<u32, &'static str> {
        let b = self.word >> 31;
        self.word <<= 1;
        self.left -= 1;
        if self.left == 0 {
            self.word = self.next_word()?;
            self.left = 32;
        }
        Ok(b)
    }

    /// `n` (1 to 15) bits, most significant first.
    fn bits(&mut self, n: u32) -> Result<u32, &'static str> {
        let top = |w: u32, n: u32| if n == 0 { 0 } else { w >> (32 - n) };
        if n < self.left {
            let v = top(self.word, n);
            self.word <<= n;
            self.left -= n;
            Ok(v)
        } else if n == self.left {
            let v = top(self.word, n);
            self.word = self.next_word()?;
            self.left = 32;
            Ok(v)
        } else {
            let k = n - self.left;
            let v = top(self.word, self.left);
            let w = self.next_word()?;
            self.word = w << k;
            self.left = 32 - k;
            Ok((v << k) | top(w, k))
        }
    }
}

/// Decode one section's stream into at most `cap` bytes.
fn decode(src: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    let mut b = Bits { src, pos: 0, word: 0, left: 32 };
    b.word = b.next_word()?;
    let mut out: Vec<u8> = Vec::new();
    loop {
        if b.bit()? == 0 {
            if out.len() >= cap {
                return Err(format!("output past the section's {cap} bytes"));
            }
            out.push(b.byte()?);
            continue;
        }
        let code = b.bits(2)?;
        let offset = if code == 3 {
            let class = b.bits(2)?;
            let (width, base) =
                if class >= 2 { (class + 6, (1u32 << (class + 6)) - 0x9F) } else { (class + 5, (1 << (class + 5)) - 0x1F) };
            let v = b.bits(width)?;
            if v == 0x1FF {
                return Ok(out);
            }
            (v + base) & 0xFFFF
        } else {
            let class = b.bits(3)?;
            let width = match class {
                0..=2 => class + 5,
                3 => 8 + b.bit()?,
                4 => 10 + b.bit()?,
                5 => 12,
                6 => 0,
                _ => 1,
            };
            match width {
                0 => (b.bits(14)? + 0x1FE1) & 0xFFFF,
                1 => (b.bits(15)? + 0x5FE1) & 0xFFFF,
                w => (b.bits(w)? + (1 << w) - 0x1F) & 0xFFFF,
            }
        };
        let len = match code {
            3 => 2,
            1 => 3,
            2 => 4,
            _ => long_length(&mut b)?,
        } as usize;
        let offset = offset as usize;
        if offset == 0 || offset > out.len() {
            return Err(format!("match {offset} bytes back with {} decoded", out.len()));
        }
        if out.len() + len > cap {
            return Err(format!("output past the section's {cap} bytes"));
        }
        for _ in 0..len {
            out.push(out[out.len() - offset]);
        }
    }
}

/// The length of a code-0 match: 5 to 6, 7 to 13, 14 to 28, then classes of
/// 5, 6 and 7 bits over 29, 61 and 125, then 14 bits.
fn long_length(b: &mut Bits<'_>) -> Result<u32, &'static str> {
    if b.bit()? == 0 {
        return Ok(5 + b.bit()?);
    }
    let v = b.bits(3)?;
    if v != 0 {
        return Ok(v + 6);
    }
    let v = b.bits(4)?;
    if v != 0 {
        return Ok(v + 13);
    }
    let (mut width, mut base) = (4, 0xD);
    loop {
        if width == 7 {
            return b.bits(14);
        }
        base = (base + 2) * 2 - 1;
        let more = b.bit()?;
        width += 1;
        if more == 1 {
            return Ok(b.bits(width)? + base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decode;
    use crate::fuzzing::WwpackWriter as Writer;

    #[test]
    fn literals_matches_and_the_end_marker() {
        let mut w = Writer::new();
        let text = b"WWPack32 literal run, long enough to cross several bit words.";
        for &b in text {
            w.literal(b);
        }
        // a 3-byte match (code 1) 3 bytes back: class 0 (5 bits) stores offset - 1
        w.bits(1, 1);
        w.bits(1, 2);
        w.bits(0, 3);
        w.bits(2, 5);
        let stream = w.finish();
        let out = decode(&stream, 4096).unwrap();
        let mut want = text.to_vec();
        want.extend_from_slice(b"ds.");
        assert_eq!(out, want);
        // The section's size bounds the output; a cut stream is an error.
        assert!(decode(&stream, 10).unwrap_err().contains("past the section"));
        assert!(decode(&stream[..stream.len() / 2], 4096).is_err());
        // A match before the start of the output is refused.
        let mut w = Writer::new();
        w.literal(b'a');
        w.bits(1, 1);
        w.bits(1, 2);
        w.bits(0, 3);
        w.bits(5, 5);
        assert!(decode(&w.finish(), 4096).unwrap_err().contains("back with 1 decoded"));
    }
}
