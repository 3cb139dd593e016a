//! UPX-packed executables. UPX compresses a program's image with one of
//! its NRV2B, NRV2D or NRV2E coders (or LZMA) and prepends a stub that
//! unpacks it in memory; its `UPX!` pack header records the method and the
//! sizes. This module finds the header, decompresses the image with its own
//! decoders (written from the published descriptions of the NRV bit
//! streams; UPX's and UCL's sources are GPL and were not used) and hands
//! the walk the result as `upx-unpacked`, where the rules, the executable
//! report and carving see the real program:
//!
//! - PE (format 9, win32): the compressed block starts at the raw data of
//!   the section after the empty `UPX0`, and unpacks to the image from the
//!   first section's address on; it is put there in the packed file's image
//!   and the whole rebuilt as a PE file (raw data = memory);
//! - ELF (formats 10, 12, 14, 22..): `b_info` blocks follow the `l_info` and
//!   `p_info` headers; each unpacks to the next piece of the original file,
//!   so their concatenation is the file itself.
//!
//! Every decoder stops at the walk's cap and at the end of its input; a
//! lying header cannot make it allocate more.

use super::bytes::{MemberData, le_u16, le_u32};
use super::{Container, pe_image};
use crate::limits::Deadline;

/// The name of the unpacked program.
pub(super) const CHILD: &str = "upx-unpacked";

/// The pack header fields this module uses.
#[derive(Debug, Clone, Copy)]
struct PackHeader {
    format: u8,
    method: u8,
    u_len: u32,
    c_len: u32,
}

fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    le_u32(d, o).map(|v| v as u32)
}

/// The first plausible `UPX!` pack header in the first 64 KiB.
fn pack_header(data: &[u8]) -> Option<PackHeader> {
    let window = &data[..data.len().min(64 * 1024)];
    let mut from = 0;
    while let Some(p) = memchr::memmem::find(&window[from..], b"UPX!") {
        let at = from + p;
        from = at + 4;
        let Some(h) = data.get(at..at + 32) else { break };
        let (version, format, method) = (h[4], h[5], h[6]);
        if !(10..=14).contains(&version) {
            continue;
        }
        let header = PackHeader { format, method, u_len: u32_at(h, 16)?, c_len: u32_at(h, 20)? };
        if header.u_len > 0 && header.c_len > 0 {
            return Some(header);
        }
    }
    None
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    if data.starts_with(b"MZ") {
        let Some(h) = pack_header(data) else { return };
        if h.format != 9 {
            return c.error(format!("upx: PE format {} is not unpacked", h.format));
        }
        let Some(start) = first_packed_section(data) else {
            return c.error("upx: no packed section after UPX0");
        };
        let end = start.saturating_add(h.c_len as usize).min(data.len());
        let block = &data[start..end];
        let deadline = c.deadline();
        let layout = pe_image::parse(data);
        c.member(CHILD, block.len() as u64, |cap| {
            let piece = decode(h.method, block, cap.min(u64::from(h.u_len)), &deadline)?;
            // Rebuilt as a PE file: the unpacked bytes where the loader
            // would have them (from the first section on), raw = memory.
            let first = layout.as_ref().and_then(|l| l.sections.first()).map(|s| s.va as usize);
            let image = layout.as_ref().zip(first).and_then(|(l, first)| {
                let mut image = l.map(data, cap)?;
                let room = image.len().checked_sub(first)?;
                let n = piece.data.len().min(room);
                image[first..first + n].copy_from_slice(&piece.data[..n]);
                l.rebuild(&mut image, None);
                Some(image)
            });
            Ok(match image {
                Some(image) => MemberData { data: image, ..piece },
                None => piece,
            })
        });
    } else if data.starts_with(b"\x7FELF") {
        unpack_elf(c, data);
    }
}

/// The raw offset of the section holding the compressed image: the first
/// section with raw data after UPX's empty first section.
fn first_packed_section(d: &[u8]) -> Option<usize> {
    let pe = u32_at(d, 0x3C)? as usize;
    if d.get(pe..pe + 4)? != b"PE\0\0" {
        return None;
    }
    let sections = le_u16(d, pe + 6)?;
    let table = pe + 24 + le_u16(d, pe + 20)?;
    (0..sections.min(96)).find_map(|s| {
        let o = table + 40 * s;
        let (raw_size, raw_at) = (u32_at(d, o + 16)?, u32_at(d, o + 20)?);
        (raw_size > 0).then_some(raw_at as usize)
    })
}

/// ELF: `l_info` (checksum, `UPX!`, size, version, format), `p_info`
/// (progid, file size, block size), then `b_info` blocks
/// (uncompressed size, compressed size, method, filter, cto, unused) each
/// followed by its data; a zero uncompressed size ends the list.
fn unpack_elf(c: &mut Container<'_>, data: &[u8]) {
    let Some(l_info) = memchr::memmem::find(&data[..data.len().min(64 * 1024)], b"UPX!").and_then(|p| p.checked_sub(4)) else {
        return;
    };
    let Some(file_size) = u32_at(data, l_info + 12 + 4) else { return };
    let mut at = l_info + 24;
    let deadline = c.deadline();
    let stored = data.len().saturating_sub(at) as u64;
    c.member(CHILD, stored, |cap| {
        let cap = cap.min(u64::from(file_size));
        let mut out = Vec::new();
        let mut error = None;
        while let (Some(u), Some(cz)) = (u32_at(data, at), u32_at(data, at + 4)) {
            let method = data.get(at + 8).copied().unwrap_or(0);
            if u == 0 || out.len() as u64 >= cap {
                break;
            }
            let body = at + 12;
            let Some(block) = data.get(body..body + cz as usize) else {
                error = Some(format!("upx: block at {at} runs past the end"));
                break;
            };
            let room = cap - out.len() as u64;
            if cz == u {
                out.extend_from_slice(&block[..block.len().min(room as usize)]);
            } else {
                let piece = decode(method, block, room.min(u64::from(u)), &deadline)?;
                out.extend_from_slice(&piece.data);
                if piece.error.is_some() {
                    error = piece.error;
                    break;
                }
            }
            at = body + cz as usize;
            // Blocks are 4-byte aligned.
            at = (at + 3) & !3;
        }
        let truncated = out.len() as u64 >= cap && cap < u64::from(file_size);
        Ok(MemberData { data: out, truncated, error })
    });
}

/// Decode one UPX block with `method`, at most `cap` bytes out.
fn decode(method: u8, src: &[u8], cap: u64, deadline: &Deadline) -> Result<MemberData, String> {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let (variant, width) = match method {
        2 => (Nrv::B, Width::Le32),
        3 => (Nrv::B, Width::Byte),
        4 => (Nrv::B, Width::Le16),
        5 => (Nrv::D, Width::Le32),
        6 => (Nrv::D, Width::Byte),
        7 => (Nrv::D, Width::Le16),
        8 => (Nrv::E, Width::Le32),
        9 => (Nrv::E, Width::Byte),
        10 => (Nrv::E, Width::Le16),
        14 => return Ok(lzma(src, cap, deadline)),
        m => return Err(format!("upx: compression method {m} is not decoded")),
    };
    Ok(nrv(variant, width, src, cap, deadline))
}

#[derive(Clone, Copy, PartialEq)]
enum Nrv {
    B,
    D,
    E,
}

#[derive(Clone, Copy, PartialEq)]
enum Width {
    Byte,
    Le16,
    Le32,
}

/// The NRV bit reader: bits come most significant first out of 8-, 16- or
/// 32-bit little-endian words, interleaved in the stream with whole bytes
/// (literals and offset low bytes).
struct Bits<'a> {
    src: &'a [u8],
    at: usize,
    word: u32,
    left: u32,
    width: Width,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        if self.left == 0 {
            let (n, bits) = match self.width {
                Width::Byte => (1, 8),
                Width::Le16 => (2, 16),
                Width::Le32 => (4, 32),
            };
            let b = self.src.get(self.at..self.at + n)?;
            self.word = b.iter().rev().fold(0u32, |w, &x| w << 8 | u32::from(x));
            self.at += n;
            self.left = bits;
        }
        self.left -= 1;
        Some(self.word >> self.left & 1)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.src.get(self.at)?;
        self.at += 1;
        Some(b)
    }
}

/// NRV2B, NRV2D and NRV2E: literals flagged by a 1 bit, matches by an
/// Elias-gamma-like offset (high part, then a low byte) and length.
fn nrv(v: Nrv, width: Width, src: &[u8], cap: usize, deadline: &Deadline) -> MemberData {
    let mut bits = Bits { src, at: 0, word: 0, left: 0, width };
    let mut out: Vec<u8> = Vec::with_capacity(cap.min(src.len().saturating_mul(4)).min(1 << 24));
    let mut last_off: usize = 1;
    let mut full = false;
    let result = (|| -> Result<(), String> {
        let cut = || "upx: compressed data cut short".to_string();
        loop {
            if out.len().is_multiple_of(4096) && deadline.passed() {
                return Err(super::bytes::OUT_OF_TIME.into());
            }
            while bits.bit().ok_or_else(cut)? == 1 {
                if out.len() >= cap {
                    full = true;
                    return Ok(());
                }
                out.push(bits.byte().ok_or_else(cut)?);
            }
            // The offset's high part.
            let mut off: usize = 1;
            let mut len: usize;
            loop {
                off = off * 2 + bits.bit().ok_or_else(cut)? as usize;
                if off > 1 << 25 {
                    return Err("upx: offset out of range".into());
                }
                if bits.bit().ok_or_else(cut)? == 1 {
                    break;
                }
                if v != Nrv::B {
                    off = (off - 1) * 2 + bits.bit().ok_or_else(cut)? as usize;
                }
            }
            if off == 2 {
                off = last_off;
                len = if v == Nrv::B { 0 } else { bits.bit().ok_or_else(cut)? as usize };
            } else {
                let low = bits.byte().ok_or_else(cut)? as usize;
                let word = ((off as u64 - 3) << 8) | low as u64;
                if word == 0xFFFF_FFFF {
                    return Ok(()); // end of stream
                }
                let word = u32::try_from(word).map_err(|_| "upx: offset out of range".to_string())?;
                if v == Nrv::B {
                    off = word as usize + 1;
                    len = 0;
                } else {
                    len = ((word ^ u32::MAX) & 1) as usize;
                    off = (word >> 1) as usize + 1;
                }
                last_off = off;
            }
            let gamma = |bits: &mut Bits<'_>, add: usize| -> Result<usize, String> {
                let mut n: usize = 1;
                loop {
                    n = n * 2 + bits.bit().ok_or_else(cut)? as usize;
                    if n > 1 << 24 {
                        return Err("upx: length out of range".into());
                    }
                    if bits.bit().ok_or_else(cut)? == 1 {
                        return Ok(n + add);
                    }
                }
            };
            len = match v {
                Nrv::B | Nrv::D => {
                    let l = len * 2 + bits.bit().ok_or_else(cut)? as usize;
                    if v == Nrv::B {
                        // 2B reads two bits here.
                        let l2 = l * 2 + bits.bit().ok_or_else(cut)? as usize;
                        if l2 == 0 { gamma(&mut bits, 2)? } else { l2 }
                    } else if l == 0 {
                        gamma(&mut bits, 2)?
                    } else {
                        l
                    }
                }
                Nrv::E => {
                    if len == 1 {
                        1 + bits.bit().ok_or_else(cut)? as usize
                    } else if bits.bit().ok_or_else(cut)? == 1 {
                        3 + bits.bit().ok_or_else(cut)? as usize
                    } else {
                        gamma(&mut bits, 3)?
                    }
                }
            };
            let far = match v {
                Nrv::B => 0xD00,
                Nrv::D | Nrv::E => 0x500,
            };
            len += usize::from(off > far) + 1;
            if off > out.len() {
                return Err(format!("upx: match {off} bytes back with {} decoded", out.len()));
            }
            for _ in 0..len {
                if out.len() >= cap {
                    full = true;
                    return Ok(());
                }
                out.push(out[out.len() - off]);
            }
        }
    })();
    MemberData { data: out, truncated: full, error: result.err() }
}

/// UPX's LZMA (method 14): two bytes of properties ((pb, lp) and lc), then
/// a raw LZMA stream; decoded with `lzma-rust2` under the cap. Untested on
/// a real sample: no UPX-LZMA file is at hand here (`upx` is not in this
/// Debian release, and the ClamAV samples use NRV); malformed input ends in
/// an error, never more than the cap.
fn lzma(src: &[u8], cap: usize, deadline: &Deadline) -> MemberData {
    let Some(&[b0, b1]) = src.get(..2).map(|b| <&[u8; 2]>::try_from(b).expect("two bytes")) else {
        return MemberData::failed("upx: lzma header cut short".into());
    };
    let (pb, lp, lc) = (u32::from(b0 & 7), u32::from(b0 >> 3), u32::from(b1 >> 4));
    if pb > 4 || lp > 4 || lc > 8 {
        return MemberData::failed("upx: lzma properties out of range".into());
    }
    let dict = (cap as u64).clamp(4096, 64 << 20) as u32;
    match lzma_rust2::LzmaReader::new(&src[2..], u64::MAX, lc, lp, pb, dict, None) {
        Ok(reader) => super::bytes::read_capped(reader, cap as u64, cap as u64, deadline),
        Err(e) => MemberData::failed(format!("upx: lzma: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::nrv2b_literals;
    use std::time::Duration;

    #[test]
    fn nrv2b_literals_round_trip_and_cap() {
        let d = Deadline::new(Duration::from_secs(60), None);
        let data: Vec<u8> = (0..200u8).collect();
        let packed = nrv2b_literals(&data);
        let out = nrv(Nrv::B, Width::Le32, &packed, 1 << 20, &d);
        assert_eq!(out.error, None);
        assert_eq!(out.data, data);
        let capped = nrv(Nrv::B, Width::Le32, &packed, 10, &d);
        assert_eq!((capped.data.len(), capped.truncated), (10, true));
        // Cut short: an error, and what decoded so far.
        let cut = nrv(Nrv::B, Width::Le32, &packed[..50], 1 << 20, &d);
        assert!(cut.error.is_some() && !cut.data.is_empty());
    }
}
