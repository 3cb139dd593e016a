//! Unix `compress` (`.Z`) LZW, as a reader: own decoder after ncompress
//! and gzip's `unlzw` (no maintained crate reads `.Z`; `weezl` is GIF/TIFF
//! LZW, with another code layout). A fixed 192 KiB table whatever the
//! input says, output produced as it is read, so the walk's cap and
//! deadline stop it.
//!
//! The format's quirk: codes are written in groups of eight; when the code
//! width grows or the table is cleared, the rest of the current group is
//! padding and skipped.

use std::io::{self, Read};

const CLEAR: u16 = 256;
const INIT_BITS: u32 = 9;

pub(crate) struct Lzw<'a> {
    input: &'a [u8],
    /// Bit position in `input`.
    pos: usize,
    max_bits: u32,
    block_mode: bool,
    n_bits: u32,
    max_code: u32,
    free: u32,
    /// Codes read at the current width (for the group padding).
    codes_in_phase: usize,
    old: Option<u16>,
    fin: u8,
    prefix: Vec<u16>,
    suffix: Vec<u8>,
    /// Decoded bytes not yet handed out, reversed (a stack).
    pending: Vec<u8>,
    done: bool,
}

impl<'a> Lzw<'a> {
    /// A reader of the `.Z` stream `data` (with its 3-byte header).
    pub(crate) fn new(data: &'a [u8]) -> io::Result<Lzw<'a>> {
        if data.len() < 3 || data[..2] != [0x1F, 0x9D] {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a compress (.Z) stream"));
        }
        let max_bits = u32::from(data[2] & 0x1F);
        if !(INIT_BITS..=16).contains(&max_bits) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("compress: {max_bits}-bit codes")));
        }
        let block_mode = data[2] & 0x80 != 0;
        Ok(Lzw {
            input: &data[3..],
            pos: 0,
            max_bits,
            block_mode,
            n_bits: INIT_BITS,
            max_code: (1 << INIT_BITS) - 1,
            free: if block_mode { 257 } else { 256 },
            codes_in_phase: 0,
            old: None,
            fin: 0,
            prefix: vec![0; 1 << 16],
            suffix: (0..=255u8).chain(std::iter::repeat_n(0, (1 << 16) - 256)).collect(),
            pending: Vec::new(),
            done: false,
        })
    }

    /// The rest of the current group of eight codes is padding.
    fn skip_group(&mut self) {
        let rem = self.codes_in_phase % 8;
        if rem != 0 {
            self.pos += (8 - rem) * self.n_bits as usize;
        }
        self.codes_in_phase = 0;
    }

    fn code(&mut self) -> Option<u16> {
        let bits = self.n_bits as usize;
        if self.pos + bits > self.input.len() * 8 {
            return None;
        }
        let byte = self.pos / 8;
        let mut word = 0u32;
        for i in 0..3 {
            word |= u32::from(self.input.get(byte + i).copied().unwrap_or(0)) << (8 * i);
        }
        self.pos += bits;
        self.codes_in_phase += 1;
        Some(((word >> ((self.pos - bits) % 8)) & ((1 << bits) - 1)) as u16)
    }

    /// Decode one code onto `pending`; false at the end of the input.
    fn step(&mut self) -> io::Result<bool> {
        if self.free > self.max_code && self.n_bits < self.max_bits {
            self.skip_group();
            self.n_bits += 1;
            self.max_code = if self.n_bits == self.max_bits { 1 << self.max_bits } else { (1 << self.n_bits) - 1 };
        }
        let Some(code) = self.code() else { return Ok(false) };
        let Some(old) = self.old else {
            if code > 255 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "compress: first code is not a literal"));
            }
            self.old = Some(code);
            self.fin = code as u8;
            self.pending.push(code as u8);
            return Ok(true);
        };
        if code == CLEAR && self.block_mode {
            self.skip_group();
            self.free = 256;
            self.n_bits = INIT_BITS;
            self.max_code = (1 << INIT_BITS) - 1;
            return Ok(true);
        }
        let mut c = u32::from(code);
        if c >= self.free {
            if c > self.free {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "compress: code past the table"));
            }
            self.pending.push(self.fin);
            c = u32::from(old);
        }
        while c >= 256 {
            self.pending.push(self.suffix[c as usize]);
            c = u32::from(self.prefix[c as usize]);
        }
        self.fin = c as u8;
        self.pending.push(self.fin);
        if self.free < 1 << self.max_bits {
            self.prefix[self.free as usize] = old;
            self.suffix[self.free as usize] = self.fin;
            self.free += 1;
        }
        self.old = Some(code);
        Ok(true)
    }
}

impl Read for Lzw<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            if let Some(b) = self.pending.pop() {
                buf[n] = b;
                n += 1;
                continue;
            }
            if self.done {
                break;
            }
            // `pending` is empty here; a chain is at most the table's size,
            // so it stays under 64 KiB.
            if !self.step()? {
                self.done = true;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::Lzw;
    use std::io::Read;

    #[test]
    fn refuses_bad_headers() {
        assert!(Lzw::new(b"\x1f\x9d").is_err());
        assert!(Lzw::new(b"\x1f\x9d\x91").is_err(), "17-bit codes");
        assert!(Lzw::new(b"\x1f\x8b\x90").is_err());
    }

    #[test]
    fn a_code_past_the_table_is_an_error() {
        // 9-bit codes: 'a' (97), then 300 (> next free 257).
        let codes = [97u32, 300];
        let mut bits = 0u64;
        for (i, c) in codes.iter().enumerate() {
            bits |= u64::from(*c) << (9 * i);
        }
        let mut data = vec![0x1F, 0x9D, 0x90];
        data.extend_from_slice(&bits.to_le_bytes()[..3]);
        let mut out = Vec::new();
        assert!(Lzw::new(&data).unwrap().read_to_end(&mut out).is_err());
    }
}
