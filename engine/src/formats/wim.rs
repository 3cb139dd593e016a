//! Windows Imaging (WIM) files, read after Microsoft's published WIM format
//! notes and [MS-XCA] (the `wim` crates are GPL): the header, the offset
//! table of resources (each a stored or chunk-compressed stream named by its
//! SHA-1), and the metadata resource's directory tree, which gives each file
//! its path. Chunks are decoded independently, with our own decoders:
//! XPRESS (Huffman) and WIM's LZX ([`super::lzx`]); LZMS (wimlib's
//! "recovery" compression, rare in Windows images) is reported, not
//! decoded. Every size comes
//! from the file and is checked against it; output stops at the walk's cap.

use super::Container;
use super::Flow;
use super::bytes::{MemberData, le_u16, le_u32, le_u64};
use crate::filetype::FileType;
use std::collections::HashMap;

register!(WIM: "wim", rank 210, unpacks [Wim]);

fn sniff(data: &[u8]) -> Option<FileType> {
    data.starts_with(MAGIC).then_some(FileType::Wim)
}

pub(crate) const MAGIC: &[u8] = b"MSWIM\0\0\0";

const RES_METADATA: u8 = 0x02;
/// Longest path kept for a file, and most paths kept per image set.
const MAX_PATH: usize = 1024;
const MAX_NAMES: usize = 20_000;
const RES_COMPRESSED: u8 = 0x04;
const RES_SPANNED: u8 = 0x10;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Codec {
    Xpress,
    Lzx,
    Lzms,
    Unknown,
}

/// A resource header: where a stream is, how big stored and whole.
#[derive(Clone, Copy, Debug)]
struct Resource {
    stored: u64,
    flags: u8,
    offset: u64,
    size: u64,
}

fn resource(d: &[u8], at: usize) -> Option<Resource> {
    let stored = le_u64(d, at)? & 0x00FF_FFFF_FFFF_FFFF;
    Some(Resource { stored, flags: *d.get(at + 7)?, offset: le_u64(d, at + 8)?, size: le_u64(d, at + 16)? })
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let (Some(flags), Some(chunk), Some(table)) = (le_u32(data, 0x10), le_u32(data, 0x14), resource(data, 0x30)) else {
        return c.error("wim: header cut short");
    };
    let codec = match flags {
        f if f & 0x2 == 0 => None,
        f if f & 0x2_0000 != 0 => Some(Codec::Xpress),
        f if f & 0x4_0000 != 0 => Some(Codec::Lzx),
        f if f & 0x8_0000 != 0 => Some(Codec::Lzms),
        _ => Some(Codec::Unknown),
    };
    let chunk = if chunk == 0 { 32 * 1024 } else { chunk };
    if !(4096..=1 << 26).contains(&chunk) {
        return c.error(format!("wim: chunk size {chunk}"));
    }
    let reader = Reader { data, codec, chunk };
    let cap = c.limits().max_object_size.min(c.limits().max_scan_memory);
    let table = match reader.read(table, cap) {
        Ok(t) => t.data,
        Err(e) => return c.error(format!("wim: offset table: {e}")),
    };
    // Entries: resource header, part number, reference count, SHA-1.
    let entries: Vec<(Resource, [u8; 20])> = table
        .chunks_exact(50)
        .take(super::MAX_LISTED)
        .filter_map(|e| Some((resource(e, 0)?, e[30..50].try_into().ok()?)))
        .collect();
    // Paths from every image's metadata resource, by stream hash.
    let mut names: HashMap<[u8; 20], String> = HashMap::new();
    for (res, _) in entries.iter().filter(|(r, _)| r.flags & RES_METADATA != 0) {
        match reader.read(*res, cap) {
            Ok(meta) => dentry_names(&meta.data, &mut names),
            Err(e) => c.error(format!("wim: metadata: {e}")),
        }
    }
    for (res, hash) in entries.iter().filter(|(r, _)| r.flags & RES_METADATA == 0) {
        let name = names.get(hash).cloned().unwrap_or_else(|| format!("stream-{}", hex::encode(hash)));
        if res.flags & RES_SPANNED != 0 {
            c.member_error(&name, "wim: spans several parts; not read");
            continue;
        }
        if c.member(&name, res.stored, |cap| reader.read(*res, cap)) == Flow::Stop {
            return;
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    codec: Option<Codec>,
    chunk: usize,
}

impl Reader<'_> {
    /// One resource's bytes, at most `cap`.
    fn read(&self, res: Resource, cap: u64) -> Result<MemberData, String> {
        let start = usize::try_from(res.offset).map_err(|_| "offset out of range")?;
        let stored = usize::try_from(res.stored).map_err(|_| "size out of range")?;
        let body = self
            .data
            .get(start..start.checked_add(stored).ok_or("size out of range")?)
            .ok_or_else(|| format!("{stored} bytes at {start} are outside the file of {} bytes", self.data.len()))?;
        let want = res.size.min(cap);
        let truncated = res.size > cap;
        if res.flags & RES_COMPRESSED == 0 {
            let n = body.len().min(want as usize);
            return Ok(MemberData { data: body[..n].to_vec(), truncated, error: None });
        }
        let codec = self.codec.ok_or("a compressed resource in an uncompressed image")?;
        // Chunk table: the offset (past the table) of every chunk but the
        // first, 4 bytes each (8 for resources of 4 GiB or more).
        let chunks = res.size.div_ceil(self.chunk as u64);
        let width = if res.size > u64::from(u32::MAX) { 8 } else { 4 };
        let table_len = usize::try_from(chunks.saturating_sub(1).saturating_mul(width)).map_err(|_| "chunk table too big")?;
        let table = body.get(..table_len).ok_or("chunk table cut short")?;
        let payload = &body[table_len..];
        let offset = |i: usize| -> Option<usize> {
            if i == 0 {
                return Some(0);
            }
            let at = (i - 1) * width as usize;
            if width == 4 { le_u32(table, at) } else { le_u64(table, at).and_then(|v| usize::try_from(v).ok()) }
        };
        let mut out = Vec::new();
        let mut i = 0;
        while (out.len() as u64) < want && (i as u64) < chunks {
            let (Some(from), end) = (offset(i), offset(i + 1)) else { return Err(format!("chunk {i} has no offset")) };
            let end = if i as u64 + 1 >= chunks { payload.len() } else { end.ok_or("chunk table cut short")? };
            let packed = payload.get(from..end).ok_or_else(|| format!("chunk {i} outside the resource"))?;
            let size = (res.size - (i * self.chunk) as u64).min(self.chunk as u64) as usize;
            let piece = if packed.len() == size {
                packed.to_vec()
            } else {
                match codec {
                    Codec::Xpress => xpress_huffman(packed, size)?,
                    Codec::Lzx => {
                        let bits = self.chunk.trailing_zeros();
                        if !self.chunk.is_power_of_two() || !(15..=21).contains(&bits) {
                            return Err(format!("LZX with {}-byte chunks", self.chunk));
                        }
                        super::lzx::decompress_chunk(packed, size, bits)?
                    }
                    Codec::Lzms => return Err("LZMS compression is not decoded".into()),
                    Codec::Unknown => return Err("unknown compression".into()),
                }
            };
            out.extend_from_slice(&piece);
            i += 1;
        }
        out.truncate(want as usize);
        Ok(MemberData { data: out, truncated, error: None })
    }
}

/// XPRESS with Huffman coding ([MS-XCA] 2.2), one chunk of `size` bytes:
/// 256 bytes of 4-bit code lengths for 512 symbols, then a stream of
/// 16-bit words; symbols below 256 are literals, the others a match length
/// nibble and an offset bit count.
fn xpress_huffman(src: &[u8], size: usize) -> Result<Vec<u8>, String> {
    let lengths: Vec<u8> = src.get(..256).ok_or("xpress: table cut short")?.iter().flat_map(|&b| [b & 0xF, b >> 4]).collect();
    // Canonical codes into a 15-bit lookup table: (symbol, length).
    let mut table = vec![(0u16, 0u8); 1 << 15];
    let mut code = 0usize;
    for len in 1..=15u8 {
        for (sym, _) in lengths.iter().enumerate().filter(|&(_, &l)| l == len) {
            let span = 1usize << (15 - len);
            let start = code << (15 - len);
            let slots = table.get_mut(start..start + span).ok_or("xpress: oversubscribed code")?;
            slots.fill((sym as u16, len));
            code += 1;
        }
        code <<= 1;
    }
    let mut at = 256;
    let word = |at: &mut usize| -> u32 {
        let w = le_u16(src, *at).unwrap_or(0) as u32;
        *at += 2;
        w
    };
    let mut bits: u32 = word(&mut at) << 16 | word(&mut at);
    let mut extra: i32 = 16;
    let mut out = Vec::with_capacity(size);
    let consume = |n: u32, bits: &mut u32, extra: &mut i32, at: &mut usize| {
        if n == 0 {
            return;
        }
        *bits = bits.checked_shl(n).unwrap_or(0);
        *extra -= n as i32;
        if *extra < 0 {
            let w = le_u16(src, *at).unwrap_or(0) as u32;
            *at += 2;
            *bits |= w << (-*extra) as u32;
            *extra += 16;
        }
    };
    while out.len() < size {
        if at > src.len() + 4 {
            return Err("xpress: stream cut short".into());
        }
        let (sym, len) = table[(bits >> 17) as usize];
        if len == 0 {
            return Err("xpress: invalid code".into());
        }
        consume(u32::from(len), &mut bits, &mut extra, &mut at);
        if sym < 256 {
            out.push(sym as u8);
            continue;
        }
        let sym = sym - 256;
        let mut length = usize::from(sym & 0xF);
        let offset_bits = u32::from(sym >> 4);
        if length == 15 {
            length = usize::from(*src.get(at).ok_or("xpress: cut short")?);
            at += 1;
            if length == 255 {
                length = le_u16(src, at).ok_or("xpress: cut short")?;
                at += 2;
                if length == 0 {
                    length = le_u32(src, at).ok_or("xpress: cut short")?;
                    at += 4;
                }
                length = length.checked_sub(15).ok_or("xpress: bad length")?;
            }
            length += 15;
        }
        length += 3;
        let offset = if offset_bits == 0 { 0 } else { (bits >> (32 - offset_bits)) as usize } + (1usize << offset_bits);
        consume(offset_bits, &mut bits, &mut extra, &mut at);
        if offset > out.len() {
            return Err(format!("xpress: match {offset} back with {} decoded", out.len()));
        }
        for _ in 0..length.min(size - out.len()) {
            out.push(out[out.len() - offset]);
        }
    }
    Ok(out)
}

/// Walk an image's directory tree (after its security data), recording
/// each file's path by its unnamed stream's hash.
fn dentry_names(meta: &[u8], names: &mut HashMap<[u8; 20], String>) {
    let Some(security) = le_u32(meta, 0) else { return };
    let Some(root) = security.max(8).checked_next_multiple_of(8) else { return };
    let Some(subdir) = le_u64(meta, root + 16).and_then(|v| usize::try_from(v).ok()) else { return };
    // (offset of a directory's first child, its path), depth-first.
    let mut stack = vec![(subdir, String::new())];
    let mut visited = 0usize;
    while let Some((mut at, dir)) = stack.pop() {
        while visited < super::MAX_LISTED {
            visited += 1;
            let Some(len) = le_u64(meta, at).and_then(|v| usize::try_from(v).ok()) else { break };
            if len < 0x66 || at == 0 {
                break;
            }
            let (Some(attributes), Some(child), Some(streams), Some(name_len)) =
                (le_u32(meta, at + 8), le_u64(meta, at + 16), le_u16(meta, at + 0x60), le_u16(meta, at + 0x64))
            else {
                break;
            };
            let units: Vec<u16> = meta
                .get(at + 0x66..at + 0x66 + name_len)
                .unwrap_or_default()
                .chunks_exact(2)
                .map(|p| u16::from_le_bytes([p[0], p[1]]))
                .collect();
            let name = String::from_utf16_lossy(&units).replace(['/', '\\'], "_");
            let path = if dir.is_empty() { name } else { format!("{dir}/{name}") };
            // Names are for reading, not a way to make us hold gigabytes:
            // a path is at most 1 KiB, and at most 20,000 are kept.
            let path = if path.len() > MAX_PATH { format!("{}...", &path[..path.floor_char_boundary(MAX_PATH)]) } else { path };
            if attributes & 0x10 != 0 {
                if let Ok(child) = usize::try_from(child)
                    && child != 0
                    && child != at
                    && stack.len() < 1024
                {
                    stack.push((child, path));
                }
            } else if names.len() < MAX_NAMES
                && let Some(hash) = meta.get(at + 0x40..at + 0x54).and_then(|h| <[u8; 20]>::try_from(h).ok())
            {
                names.entry(hash).or_insert(path);
            }
            // Alternate stream entries follow the dentry, each with its own length.
            let Some(mut next) = at.checked_add(len).and_then(|v| v.checked_next_multiple_of(8)) else { break };
            for _ in 0..streams {
                let Some(l) = le_u64(meta, next).and_then(|v| usize::try_from(v).ok()).filter(|&l| l >= 8) else { break };
                let Some(n) = next.checked_add(l).and_then(|v| v.checked_next_multiple_of(8)) else { break };
                next = n;
            }
            at = next;
        }
    }
}
