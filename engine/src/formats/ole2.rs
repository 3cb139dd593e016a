//! OLE2 compound files (legacy Office, MSI, ...), with the `cfb` crate:
//! every stream is a child under its storage path (`Macros/VBA/Module1`),
//! and a VBA project's modules are also scanned as decompressed source
//! (`<storage>/<module>.vba`, see [`super::vba`]).

use super::Flow;
use super::bytes::{MemberData, read_capped};
use super::vba;
use super::{Container, ole1, ppt};
use crate::filetype::FileType;
use crate::limits::Deadline;
use std::borrow::Cow;
use std::io::Cursor;

register!(OLE2: "ole2", rank 130, unpacks [Ole2]);

fn sniff(data: &[u8]) -> Option<FileType> {
    data.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]).then_some(FileType::Ole2)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let mut ole = match Ole2::open(data) {
        Ok(o) => o,
        Err(e) => return c.error(e),
    };
    let streams = ole.streams();
    for (name, len) in &streams {
        let deadline = c.deadline();
        // Streams are stored uncompressed: their size is their footprint.
        if c.member(&msi_name(name), *len, |cap| ole.read(name, cap, *len, &deadline)) == Flow::Stop {
            return;
        }
    }
    // PowerPoint keeps embedded objects in records of its main stream.
    for (name, len) in streams.iter().filter(|(n, _)| n.rsplit('/').next() == Some("PowerPoint Document")) {
        let deadline = c.deadline();
        match ole.read(name, c.limits().max_object_size, *len, &deadline) {
            Ok(s) if ppt::unpack_stream(c, name, &s.data) == Flow::Stop => return,
            Ok(_) => {}
            Err(e) => c.member_error(name, e),
        }
    }
    // OLE1 objects embedded in the document: the file a Packager object
    // carries, or the native data of any other class.
    for (name, len) in streams.iter().filter(|(n, _)| n.rsplit('/').next() == Some("\u{1}Ole10Native")) {
        let deadline = c.deadline();
        let stream = match ole.read(name, c.limits().max_object_size, *len, &deadline) {
            Ok(s) => s.data,
            Err(e) => {
                c.member_error(name, e);
                continue;
            }
        };
        let Some(native) = ole1::ole10native(&stream) else { continue };
        let flow = match ole1::package(native) {
            Some(p) => c.buffer(&format!("{name}/{}", ole1::file_name(&p)), Cow::Borrowed(p.data)),
            None => c.buffer(&format!("{name}/native"), Cow::Borrowed(native)),
        };
        if flow == Flow::Stop {
            return;
        }
    }
    // A VBA project (a storage with `dir` and `_VBA_PROJECT`) lists its
    // modules in `dir`.
    let is_vba = |storage: &str| streams.iter().any(|(n, _)| *n == format!("{storage}_VBA_PROJECT"));
    for (name, _) in streams.iter().filter(|(n, _)| n == "dir" || n.ends_with("/dir")) {
        let storage = name.strip_suffix("dir").unwrap_or("");
        if is_vba(storage) && unpack_vba(c, &mut ole, &streams, storage) == Flow::Stop {
            return;
        }
    }
}

fn unpack_vba(c: &mut Container<'_>, ole: &mut Ole2, streams: &[(String, u64)], storage: &str) -> Flow {
    let max = c.limits().max_object_size;
    let deadline = c.deadline();
    let dir_name = format!("{storage}dir");
    let dir = match ole.read(&dir_name, max, 0, &deadline) {
        Ok(raw) => vba::decompress(&raw.data, max as usize),
        Err(e) => {
            c.member_error(&dir_name, e);
            return Flow::Continue;
        }
    };
    if let Some(e) = &dir.error {
        c.member_error(&dir_name, e);
    }
    for module in vba::modules(&dir.data) {
        let stream = format!("{storage}{}", module.stream);
        // The compressed stream is the source's footprint (ratio cap).
        let stored = streams.iter().find(|(n, _)| *n == stream).map_or(0, |(_, len)| *len);
        let flow = c.member(&format!("{storage}{}.vba", module.name), stored, |cap| {
            let raw = ole.read(&stream, max, 0, &deadline)?;
            let source = raw.data.get(module.offset as usize..).unwrap_or_default();
            Ok(vba::decompress(source, cap as usize))
        });
        if flow == Flow::Stop {
            return Flow::Stop;
        }
    }
    Flow::Continue
}

/// MSI databases store stream names in their own encoding: each character
/// in U+3800..U+4840 packs one or two characters of a 64-letter alphabet,
/// U+4840 marks a table. Decoded here so `Binary.setup.cab` reads as such.
fn msi_name(raw: &str) -> String {
    const ALPHABET: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._";
    let mut out = String::with_capacity(raw.len());
    for ch in raw.chars() {
        let c = ch as u32;
        match c {
            0x3800..0x4800 => {
                let c = c - 0x3800;
                out.push(ALPHABET[(c & 0x3F) as usize] as char);
                out.push(ALPHABET[(c >> 6 & 0x3F) as usize] as char);
            }
            0x4800..0x4840 => out.push(ALPHABET[(c - 0x4800) as usize] as char),
            0x4840 => out.push('!'),
            _ => out.push(ch),
        }
    }
    out
}

/// The streams of a compound file, with their storage paths.
struct Ole2<'a> {
    file: cfb::CompoundFile<Cursor<&'a [u8]>>,
}

impl<'a> Ole2<'a> {
    fn open(data: &'a [u8]) -> Result<Self, String> {
        cfb::CompoundFile::open(Cursor::new(data)).map(|file| Self { file }).map_err(|e| format!("ole2: {e}"))
    }

    /// Stream paths and declared lengths, in directory order.
    fn streams(&self) -> Vec<(String, u64)> {
        self.file
            .walk()
            .filter(|e| e.is_stream())
            .take(super::MAX_LISTED)
            .map(|e| (e.path().to_string_lossy().trim_start_matches('/').to_string(), e.len()))
            .collect()
    }

    fn read(&mut self, path: &str, cap: u64, declared: u64, deadline: &Deadline) -> Result<MemberData, String> {
        let stream = self.file.open_stream(format!("/{path}")).map_err(|e| format!("ole2 stream: {e}"))?;
        Ok(read_capped(stream, cap, declared, deadline))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn msi_stream_names_decode() {
        // "Binary.x" as MSI writes it: pairs packed into one character each.
        let pack = |a: usize, b: usize| char::from_u32(0x3800 + (a | b << 6) as u32).unwrap();
        let idx = |c: char| "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._".find(c).unwrap();
        let mut raw = String::from('\u{4840}');
        for pair in ["Bi", "na", "ry", ".x"] {
            let mut cs = pair.chars();
            raw.push(pack(idx(cs.next().unwrap()), idx(cs.next().unwrap())));
        }
        raw.push(char::from_u32(0x4800 + idx('z') as u32).unwrap());
        assert_eq!(super::msi_name(&raw), "!Binary.xz");
        assert_eq!(super::msi_name("WordDocument"), "WordDocument");
    }
}
