//! InstallShield cabinets (`ISc(`, InstallShield 5 to 2012): a header
//! file (`data1.hdr`, or the first cabinet itself) lists the files and says
//! for each which volume (`dataN.cab`) holds it, where, how large, and
//! whether it is compressed (chunks of raw deflate, each behind a 16-bit
//! length) or obfuscated (per byte: XOR 0xD5, rotate right 2, minus the
//! position modulo 0x47). Own reader, after the format as the MIT-licensed
//! `unshield` documents it; inflate via `flate2`.
//!
//! A set needs its header and its volumes together, so this module is
//! called by a container that holds them all (InstallShield's
//! self-extracting setups); each file comes out as `<header>/<dir>/<name>`.
//! Files split across volumes are reported, not joined.

use super::Container;
use super::Flow;
use super::bytes::{MemberData, le_u16, le_u32, le_u64};
use crate::limits::Deadline;

const SIGNATURE: &[u8] = b"ISc(";
const COMPRESSED: u16 = 4;
const OBFUSCATED: u16 = 2;
const SPLIT: u16 = 1;
const INVALID: u16 = 8;
const LINK_PREVIOUS: u8 = 1;

/// One file of the set, as the header describes it.
#[derive(Debug)]
struct Entry {
    path: String,
    flags: u16,
    expanded: u64,
    compressed: u64,
    offset: u64,
    volume: u16,
    duplicate: bool,
}

/// Whether `d` is a cabinet header (has a descriptor).
fn is_header(d: &[u8]) -> bool {
    d.starts_with(SIGNATURE) && le_u32(d, 16).is_some_and(|size| size != 0)
}

/// The files a header lists.
fn entries(h: &[u8]) -> Result<Vec<Entry>, String> {
    let cut = |what: &str| format!("iscab: {what} outside the header");
    let u32_at = |o: usize| le_u32(h, o).ok_or_else(|| cut("a field"));
    let version = u32_at(4)?;
    let major = match version >> 24 {
        1 => (version >> 12) & 0xF,
        2 | 4 => (version & 0xFFFF) / 100,
        _ => 0,
    };
    let descriptor = u32_at(12)?;
    let table = descriptor.checked_add(u32_at(descriptor + 0xC)?).ok_or_else(|| cut("the file table"))?;
    let directories = u32_at(descriptor + 0x1C)?;
    let files = u32_at(descriptor + 0x28)?;
    if directories.saturating_add(files) > super::MAX_LISTED {
        return Err(format!("iscab: {files} files and {directories} directories listed"));
    }
    let string = |o: usize| -> String {
        let raw = h.get(o..).unwrap_or_default();
        let raw = &raw[..raw.iter().take(1024).position(|&b| b == 0).unwrap_or(raw.len().min(1024))];
        String::from_utf8_lossy(raw).chars().filter(|c| !c.is_control()).map(|c| if c == '\\' { '/' } else { c }).collect()
    };
    let slot = |k: usize| u32_at(table + 4 * k).map(|o| table + o);
    let mut out = Vec::new();
    for index in 0..files {
        let e = if major <= 5 {
            let p = slot(directories + index)?;
            let dir = le_u16(h, p + 4).ok_or_else(|| cut("a file"))?;
            Entry {
                path: join_dir(&string(slot(dir)?), &string(table + u32_at(p)?)),
                flags: le_u16(h, p + 8).ok_or_else(|| cut("a file"))? as u16,
                expanded: u32_at(p + 10)? as u64,
                compressed: u32_at(p + 14)? as u64,
                offset: u32_at(p + 38)? as u64,
                volume: 1,
                duplicate: false,
            }
        } else {
            let p = table
                .checked_add(u32_at(descriptor + 0x2C)?)
                .and_then(|t| t.checked_add(index * 0x57))
                .ok_or_else(|| cut("a file"))?;
            let u64_at = |o: usize| le_u64(h, o).ok_or_else(|| cut("a file"));
            let dir = le_u16(h, p + 0x3E).ok_or_else(|| cut("a file"))?;
            Entry {
                path: join_dir(&string(slot(dir)?), &string(table + u32_at(p + 0x3A)?)),
                flags: le_u16(h, p).ok_or_else(|| cut("a file"))? as u16,
                expanded: u64_at(p + 2)?,
                compressed: u64_at(p + 10)?,
                offset: u64_at(p + 18)?,
                duplicate: h.get(p + 0x54).ok_or_else(|| cut("a file"))? & LINK_PREVIOUS != 0,
                volume: le_u16(h, p + 0x55).ok_or_else(|| cut("a file"))? as u16,
            }
        };
        out.push(e);
    }
    Ok(out)
}

fn join_dir(dir: &str, name: &str) -> String {
    let name = if name.is_empty() { "file" } else { name };
    if dir.is_empty() { name.to_string() } else { format!("{}/{name}", dir.trim_matches('/')) }
}

/// Unpack every cabinet set among `files` (name, bytes): each header
/// (`<prefix>N.hdr`, or a `<prefix>N.cab` that carries its own) with the
/// volumes `<prefix>K.cab` next to it.
pub(super) fn unpack_sets(c: &mut Container<'_>, files: &[(String, &[u8])]) {
    let base = |n: &str| n.rsplit(['/', '\\']).next().unwrap_or("").to_ascii_lowercase();
    for (name, header) in files {
        let lower = base(name);
        let Some(stem) = lower.strip_suffix(".hdr").or_else(|| lower.strip_suffix(".cab")) else { continue };
        if !is_header(header) || (lower.ends_with(".cab") && files.iter().any(|(n, _)| base(n) == format!("{stem}.hdr"))) {
            continue;
        }
        let prefix = stem.trim_end_matches(|ch: char| ch.is_ascii_digit());
        let list = match entries(header) {
            Ok(list) => list,
            Err(e) => {
                c.member_error(name, e);
                continue;
            }
        };
        for e in list {
            if e.flags & INVALID != 0 || e.offset == 0 || e.duplicate || e.expanded == 0 {
                continue;
            }
            let child = format!("{name}/{}", e.path);
            let volume_name = format!("{prefix}{}.cab", e.volume);
            let Some((_, volume)) = files.iter().find(|(n, _)| base(n) == volume_name) else {
                c.member_error(&child, format!("iscab: volume {volume_name} is not in the setup"));
                continue;
            };
            if e.flags & SPLIT != 0 {
                c.member_error(&child, "iscab: file split across volumes, not joined");
                continue;
            }
            let deadline = c.deadline();
            let stored = if e.flags & COMPRESSED != 0 { e.compressed } else { e.expanded };
            if c.member(&child, stored, |cap| Ok(read(volume, &e, cap, &deadline))) == Flow::Stop {
                return;
            }
        }
    }
}

/// One file's bytes from its volume, at most `cap` of them.
fn read(volume: &[u8], e: &Entry, cap: u64, deadline: &Deadline) -> MemberData {
    let stored = if e.flags & COMPRESSED != 0 { e.compressed } else { e.expanded };
    let start = usize::try_from(e.offset).unwrap_or(usize::MAX);
    let end = usize::try_from(stored).ok().and_then(|n| start.checked_add(n));
    let Some(raw) = end.and_then(|end| volume.get(start..end)) else {
        return MemberData::failed(format!("iscab: {stored} bytes at {start} past the volume's end"));
    };
    let mut bytes = raw.to_vec();
    if e.flags & OBFUSCATED != 0 {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (*b ^ 0xD5).rotate_right(2).wrapping_sub((i % 0x47) as u8);
        }
    }
    let cap = usize::try_from(cap.min(e.expanded)).unwrap_or(usize::MAX);
    if e.flags & COMPRESSED == 0 {
        let truncated = bytes.len() > cap;
        bytes.truncate(cap);
        return MemberData { data: bytes, truncated, error: None };
    }
    // Chunks: a 16-bit length, then that many bytes of raw deflate ending
    // in a sync flush; each inflated on its own.
    let mut out = Vec::new();
    let mut at = 0;
    while at + 2 <= bytes.len() && out.len() < cap {
        if deadline.passed() {
            return MemberData { data: out, truncated: false, error: Some(super::bytes::OUT_OF_TIME.to_string()) };
        }
        let len = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
        let Some(chunk) = bytes.get(at + 2..at + 2 + len) else {
            return MemberData { data: out, truncated: false, error: Some("iscab: chunk cut short".to_string()) };
        };
        if let Err(why) = inflate_chunk(chunk, &mut out, cap) {
            return MemberData { data: out, truncated: false, error: Some(format!("iscab: {why}")) };
        }
        at += 2 + len;
    }
    let truncated = out.len() >= cap && (cap as u64) < e.expanded;
    MemberData { data: out, truncated, error: None }
}

/// Inflate one raw-deflate chunk onto `out`, stopping at `cap` bytes.
fn inflate_chunk(chunk: &[u8], out: &mut Vec<u8>, cap: usize) -> Result<(), String> {
    let mut z = flate2::Decompress::new(false);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (before_in, before_out) = (z.total_in(), z.total_out());
        let input = &chunk[z.total_in() as usize..];
        let status = z.decompress(input, &mut buf, flate2::FlushDecompress::Sync).map_err(|e| e.to_string())?;
        let produced = (z.total_out() - before_out) as usize;
        let room = cap - out.len();
        out.extend_from_slice(&buf[..produced.min(room)]);
        if out.len() >= cap || status == flate2::Status::StreamEnd || z.total_in() as usize >= chunk.len() {
            return Ok(());
        }
        if z.total_in() == before_in && produced == 0 {
            return Err("deflate chunk makes no progress".to_string());
        }
    }
}
