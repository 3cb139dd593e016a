//! InstallShield self-extracting setups: after the PE stub, an
//! `InstallShield` (to 2014) or `ISSetupStream` (2015 on) header lists the
//! files (`setup.ini`, language files, the product's `.msi`, ...), each
//! obfuscated with a key made from its own name (XOR with 13 35 86 07, then
//! per byte: nibbles swapped, XOR key, inverted; restarting every 1,024
//! bytes for the block mode) and, for Unicode setups, zlib-compressed.
//! Own reader, after the format as documented by the MIT-licensed ISx and
//! issunpack tools; zlib via `flate2`. Files are decoded as a stream under
//! the walk's cap.
//!
//! Older setups (InstallShield 6 to 12) append their files plainly: from
//! the overlay's start, four NUL-terminated strings per file (name, path,
//! version, size in decimal) and the file's bytes. The InstallShield
//! cabinets among them (`data1.hdr` with its `dataN.cab` volumes) are
//! opened together by [`super::iscab`].

use super::Flow;
use super::bytes::{le_u16, le_u32, read_capped};
use super::{Container, iscab};
use std::borrow::Cow;
use std::io::Read;

pub(crate) const V1: &[u8] = b"InstallShield\0";
pub(crate) const V2: &[u8] = b"ISSetupStream\0";
const HEADER: usize = 46;
const MAGIC: [u8; 4] = [0x13, 0x35, 0x86, 0x07];

/// One stored file: name, flags, Unicode (zlib) flag, bytes as stored.
struct Stored<'a> {
    name: String,
    flags: u32,
    unicode: bool,
    data: &'a [u8],
}

/// The files after the header at `at`; a cut or lying entry ends the list
/// with an error.
fn files(data: &[u8], at: usize) -> (Vec<Stored<'_>>, Option<String>) {
    let v2 = data[at..].starts_with(V2);
    let count = le_u16(data, at + 14).unwrap_or(0);
    let mut out = Vec::new();
    let mut p = at + HEADER;
    for i in 0..count.min(super::MAX_LISTED) {
        let entry = if v2 {
            // name length, flags, 2, file length, 8, unicode, 3 times, name (UTF-16)
            let (Some(name_len), Some(flags), Some(len), Some(unicode)) =
                (le_u32(data, p), le_u32(data, p + 4), le_u32(data, p + 10), le_u16(data, p + 22))
            else {
                return (out, Some(format!("installshield: entry {i} cut short")));
            };
            let name_at = p + 48;
            let Some(raw) = name_at.checked_add(name_len).and_then(|e| data.get(name_at..e)) else {
                return (out, Some(format!("installshield: entry {i} name cut short")));
            };
            let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            p = name_at + name_len;
            (String::from_utf16_lossy(&units), flags as u32, len, unicode != 0)
        } else {
            // name[260], flags, 4, file length, 8, unicode, 30
            let (Some(name), Some(flags), Some(len), Some(unicode)) =
                (data.get(p..p + 260), le_u32(data, p + 260), le_u32(data, p + 268), le_u16(data, p + 280))
            else {
                return (out, Some(format!("installshield: entry {i} cut short")));
            };
            let name = String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(260)]).into_owned();
            p += 312;
            (name, flags as u32, len, unicode != 0)
        };
        let (name, flags, len, unicode) = entry;
        let Some(body) = p.checked_add(len).and_then(|e| data.get(p..e)) else {
            return (out, Some(format!("installshield: {name}: {len} bytes declared past the end")));
        };
        p += len;
        out.push(Stored { name, flags, unicode, data: body });
        // v2 files are always obfuscated; v1 only when flagged.
        if v2 {
            out.last_mut().expect("just pushed").flags |= 2;
        }
    }
    (out, None)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8], at: usize) {
    let (stored, error) = files(data, at);
    if let Some(e) = error {
        c.error(e);
    }
    for f in stored {
        let base = f.name.rsplit(['\\', '/']).next().unwrap_or("").to_string();
        let name = format!("installshield/{}", if base.is_empty() { "file" } else { &base });
        let deadline = c.deadline();
        let flow = c.member(&name, f.data.len() as u64, |cap| {
            let plain = Deobfuscate::new(&f, f.flags & 6 != 0);
            let size = f.data.len() as u64;
            Ok(if f.unicode && plain.peek2() == [0x78, 0x9C] {
                read_capped(flate2::read::ZlibDecoder::new(plain), cap, size, &deadline)
            } else {
                read_capped(plain, cap, size, &deadline)
            })
        });
        if flow == Flow::Stop {
            return;
        }
    }
}

/// The de-obfuscated bytes of one file, as a stream.
struct Deobfuscate<'a> {
    data: &'a [u8],
    key: Vec<u8>,
    at: usize,
    on: bool,
    block: bool,
}

impl<'a> Deobfuscate<'a> {
    fn new(f: &Stored<'a>, on: bool) -> Self {
        let key: Vec<u8> = f.name.bytes().enumerate().map(|(i, b)| b ^ MAGIC[i % 4]).collect();
        Self { data: f.data, on: on && !key.is_empty(), key, at: 0, block: f.flags & 4 != 0 }
    }

    fn byte(&self, i: usize) -> u8 {
        let b = self.data[i];
        if !self.on {
            return b;
        }
        let k = self.key[if self.block { i % 1024 } else { i } % self.key.len()];
        !(k ^ b.rotate_left(4))
    }

    fn peek2(&self) -> [u8; 2] {
        if self.data.len() < 2 { [0, 0] } else { [self.byte(0), self.byte(1)] }
    }
}

impl Read for Deobfuscate<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.at);
        for (i, slot) in buf[..n].iter_mut().enumerate() {
            *slot = self.byte(self.at + i);
        }
        self.at += n;
        Ok(n)
    }
}

/// An older setup's files: path and bytes.
pub(crate) type Files<'a> = Vec<(String, &'a [u8])>;

/// One NUL-terminated field of at most 260 bytes at `p`, and where the
/// next starts.
fn field(data: &[u8], p: usize) -> Option<(&[u8], usize)> {
    let rest = data.get(p..)?;
    let end = rest.iter().take(261).position(|&b| b == 0)?;
    Some((&rest[..end], p + end + 1))
}

/// The plain file list of an older setup at `at` (the overlay's start):
/// `None` unless the first entry is well formed; a cut entry ends the
/// list with an error.
pub(crate) fn legacy_files(data: &[u8], at: usize) -> Option<(Files<'_>, Option<String>)> {
    let mut out = Vec::new();
    let mut p = at;
    while p < data.len() && out.len() < super::MAX_LISTED {
        let entry = (|| {
            let (name, p) = field(data, p)?;
            let (path, p) = field(data, p)?;
            let (version, p) = field(data, p)?;
            let (size, p) = field(data, p)?;
            let printable = |s: &[u8]| !s.is_empty() && s.iter().all(|&b| (0x20..0x7F).contains(&b));
            let numeric = |s: &[u8], dots: bool| !s.is_empty() && s.iter().all(|&b| b.is_ascii_digit() || (dots && b == b'.'));
            if !(printable(name) && printable(path) && numeric(version, true) && numeric(size, false) && size.len() <= 12) {
                return None;
            }
            let size: usize = std::str::from_utf8(size).ok()?.parse().ok()?;
            Some((String::from_utf8_lossy(path).replace('\\', "/"), p, size))
        })();
        let Some((path, body_at, size)) = entry else {
            if out.is_empty() {
                return None;
            }
            // Whatever follows the last file (padding, a signature).
            break;
        };
        let Some(body) = body_at.checked_add(size).and_then(|e| data.get(body_at..e)) else {
            let error = format!("installshield: {path}: {size} bytes declared past the end");
            return Some((out, Some(error)));
        };
        out.push((path, body));
        p = body_at + size;
    }
    Some((out, None))
}

/// An older setup's files, and the cabinets among them opened.
pub(super) fn unpack_legacy(c: &mut Container<'_>, files: Files<'_>, error: Option<String>) {
    if let Some(e) = error {
        c.error(e);
    }
    for (path, body) in &files {
        if c.buffer(path, Cow::Borrowed(body)) == Flow::Stop {
            return;
        }
    }
    iscab::unpack_sets(c, &files);
}
