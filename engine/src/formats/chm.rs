//! Compiled HTML Help (`.chm`, ITSF): an `ITSP` directory of `PMGL`
//! listing chunks names every file with its section, offset and length.
//! Section 0 is stored; section 1 (`MSCompressed`) is one LZX stream whose
//! 32 KiB frames start where its reset table says, decoded frame by frame
//! with the `lzxd` crate (MIT/Apache-2.0; `chmlib` is LGPL). Own reader of
//! the directory, after the published ITSF notes. Only as much of section 1
//! is decoded as the files asked for need, and never more than the walk's
//! cap.

use super::Container;
use super::Flow;
use super::bytes::{MemberData, le_u32 as u32_at, le_u64 as u64_at};
use crate::filetype::FileType;
use std::borrow::Cow;

register!(CHM: "chm", rank 200, unpacks [Chm]);

fn sniff(data: &[u8]) -> Option<FileType> {
    data.starts_with(b"ITSF\x03\0\0\0").then_some(FileType::Chm)
}

const CONTENT: &str = "::DataSpace/Storage/MSCompressed/Content";
const CONTROL: &str = "::DataSpace/Storage/MSCompressed/ControlData";
const RESET_TABLE: &str =
    "::DataSpace/Storage/MSCompressed/Transform/{7FC28940-9D31-11D0-9B27-00A0C91E9C7C}/InstanceData/ResetTable";

/// One directory entry.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    section: u64,
    offset: u64,
    length: u64,
}

/// CHM's variable-length integer: 7 bits a byte, high bit = more follow.
fn encint(d: &[u8], at: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for _ in 0..9 {
        let b = *d.get(*at)?;
        *at += 1;
        v = v << 7 | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The directory entries and where section 0's content starts.
fn directory(d: &[u8]) -> Result<(Vec<Entry>, usize), String> {
    let cut = || "chm: header cut short".to_string();
    let dir_at = usize::try_from(u64_at(d, 0x48).ok_or_else(cut)?).map_err(|_| cut())?;
    let content_at = if u32_at(d, 4) == Some(3) {
        u64_at(d, 0x58).ok_or_else(cut)?
    } else {
        u64_at(d, 0x48).ok_or_else(cut)?.saturating_add(u64_at(d, 0x50).ok_or_else(cut)?)
    };
    let content_at = usize::try_from(content_at).map_err(|_| cut())?;
    if dir_at > d.len() || d.get(dir_at..dir_at + 4) != Some(b"ITSP") {
        return Err("chm: no ITSP directory where the header says".into());
    }
    let header_len = u32_at(d, dir_at + 8).ok_or_else(cut)?;
    let chunk_size = u32_at(d, dir_at + 0x10).ok_or_else(cut)?;
    let chunks = u32_at(d, dir_at + 0x2C).ok_or_else(cut)?;
    if !(32..=1 << 20).contains(&chunk_size) {
        return Err(format!("chm: directory chunk size {chunk_size}"));
    }
    let mut entries = Vec::new();
    let first = dir_at.saturating_add(header_len);
    for i in 0..chunks {
        let Some(chunk) = first.checked_add(i * chunk_size).and_then(|s| d.get(s..s.checked_add(chunk_size)?)) else {
            break;
        };
        if &chunk[..4] != b"PMGL" {
            continue;
        }
        let end = chunk_size.saturating_sub(u32_at(chunk, 4).unwrap_or(chunk_size));
        let mut at = 20;
        while at < end && entries.len() < super::MAX_LISTED {
            let Some(len) = encint(chunk, &mut at).and_then(|l| usize::try_from(l).ok()) else { break };
            let Some(name) = chunk.get(at..at.saturating_add(len)) else { break };
            at += len;
            let (Some(section), Some(offset), Some(length)) =
                (encint(chunk, &mut at), encint(chunk, &mut at), encint(chunk, &mut at))
            else {
                break;
            };
            entries.push(Entry { name: String::from_utf8_lossy(name).into_owned(), section, offset, length });
        }
    }
    Ok((entries, content_at))
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let (entries, content_at) = match directory(data) {
        Ok(d) => d,
        Err(e) => return c.error(e),
    };
    let stored = |e: &Entry| -> Option<&[u8]> {
        let start = content_at.checked_add(usize::try_from(e.offset).ok()?)?;
        data.get(start..start.checked_add(usize::try_from(e.length).ok()?)?)
    };
    let by_name = |n: &str| entries.iter().find(|e| e.name == n && e.section == 0).and_then(stored);
    // Files: names starting `/`, not directories; the `::` ones are internal.
    let files: Vec<&Entry> =
        entries.iter().filter(|e| e.name.starts_with('/') && !e.name.ends_with('/') && e.length > 0).collect();
    // Section 1, decoded once as far as the files need (and the cap allows).
    let wanted = files.iter().filter(|e| e.section == 1).map(|e| e.offset.saturating_add(e.length)).max().unwrap_or(0);
    let cap = c.limits().max_object_size.min(c.limits().max_scan_memory);
    let mut section1: Option<Result<MemberData, String>> = None;
    if wanted > 0 {
        let (content, control, reset) = (by_name(CONTENT), by_name(CONTROL), by_name(RESET_TABLE));
        section1 = Some(match (content, control, reset) {
            (Some(content), Some(control), Some(reset)) => lzx_section(content, control, reset, wanted.min(cap), &c.deadline()),
            _ => Err("chm: compressed section without its content, control data or reset table".into()),
        });
    }
    match &section1 {
        Some(Err(e)) => c.error(e),
        // Decoded in part: say why (the files past that point come out short).
        Some(Ok(MemberData { error: Some(e), .. })) => c.error(e),
        _ => {}
    }
    for e in files {
        let name = e.name.trim_start_matches('/');
        let body: Option<&[u8]> = match e.section {
            0 => stored(e),
            1 => match &section1 {
                Some(Ok(s)) => {
                    let start = usize::try_from(e.offset).unwrap_or(usize::MAX).min(s.data.len());
                    let end = start.saturating_add(usize::try_from(e.length).unwrap_or(usize::MAX)).min(s.data.len());
                    Some(&s.data[start..end])
                }
                _ => continue,
            },
            _ => None,
        };
        let Some(body) = body else {
            c.member_error(name, format!("section {} at {} ({} bytes) is outside the file", e.section, e.offset, e.length));
            continue;
        };
        if c.buffer(name, Cow::Borrowed(body)) == Flow::Stop {
            return;
        }
    }
}

/// Decode the first `want` bytes of the LZX section: control data gives
/// the window and reset interval (in 32 KiB frames for version 2), the
/// reset table the compressed offset of every frame.
fn lzx_section(
    content: &[u8],
    control: &[u8],
    reset: &[u8],
    want: u64,
    deadline: &crate::limits::Deadline,
) -> Result<MemberData, String> {
    if control.get(4..8) != Some(b"LZXC") {
        return Err("chm: control data is not LZXC".into());
    }
    let version = u32_at(control, 8).unwrap_or(0);
    let unit = if version == 2 { 0x8000 } else { 1 };
    let reset_frames = (u32_at(control, 12).unwrap_or(0).saturating_mul(unit) / 0x8000).max(1);
    let window = u32_at(control, 16).unwrap_or(0).saturating_mul(unit);
    let window = match window {
        0x8000 => lzxd::WindowSize::KB32,
        0x1_0000 => lzxd::WindowSize::KB64,
        0x2_0000 => lzxd::WindowSize::KB128,
        0x4_0000 => lzxd::WindowSize::KB256,
        0x8_0000 => lzxd::WindowSize::KB512,
        0x10_0000 => lzxd::WindowSize::MB1,
        0x20_0000 => lzxd::WindowSize::MB2,
        w => return Err(format!("chm: LZX window of {w} bytes")),
    };
    let (entries, header_len) = (u32_at(reset, 4).unwrap_or(0), u32_at(reset, 12).unwrap_or(0));
    let total = u64_at(reset, 16).unwrap_or(0);
    let frames: Vec<usize> = (0..entries.min(1 << 20))
        .map_while(|i| u64_at(reset, header_len + 8 * i).and_then(|o| usize::try_from(o).ok()))
        .collect();
    // The table's length can fall short of what the directory places in
    // the section (chmcmd's does, by the files it adds last): decode as far
    // as the files need, within the cap the caller gave.
    let total = total.max(want);
    let mut lzx = lzxd::Lzxd::new(window);
    let mut out = Vec::new();
    for (i, &start) in frames.iter().enumerate() {
        if out.len() as u64 >= want {
            break;
        }
        if deadline.passed() {
            return Ok(MemberData { data: out, truncated: false, error: Some(super::bytes::OUT_OF_TIME.into()) });
        }
        if i > 0 && i % reset_frames == 0 {
            lzx.reset();
        }
        let end = frames.get(i + 1).copied().unwrap_or(content.len()).min(content.len());
        let Some(chunk) = content.get(start..end) else {
            return Ok(MemberData { data: out, truncated: false, error: Some(format!("chm: frame {i} outside the content")) });
        };
        // Every frame but the last is whole, whatever the table's length says.
        let size = if i + 1 < frames.len() { 0x8000 } else { (total.saturating_sub(out.len() as u64)).min(0x8000) as usize };
        match lzx.decompress_next(chunk, size) {
            Ok(frame) => out.extend_from_slice(frame),
            Err(e) => return Ok(MemberData { data: out, truncated: false, error: Some(format!("chm: lzx frame {i}: {e}")) }),
        }
    }
    Ok(MemberData::whole(out))
}
