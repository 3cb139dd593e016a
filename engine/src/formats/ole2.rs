//! OLE2 compound files (legacy Office, MSI, ...), with the `cfb` crate:
//! every stream is a child under its storage path (`Macros/VBA/Module1`),
//! and a VBA project's modules are also scanned as decompressed source
//! (`<storage>/<module>.vba`, see [`super::vba`]).

use super::Container;
use super::bytes::{MemberData, read_capped};
use super::vba;
use crate::limits::Deadline;
use crate::walk::Flow;
use std::io::Cursor;

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let mut ole = match Ole2::open(data) {
        Ok(o) => o,
        Err(e) => return c.error(e),
    };
    let streams = ole.streams();
    for (name, len) in &streams {
        let deadline = c.deadline();
        // Streams are stored uncompressed: their size is their footprint.
        if c.member(name, *len, |cap| ole.read(name, cap, *len, &deadline)) == Flow::Stop {
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
