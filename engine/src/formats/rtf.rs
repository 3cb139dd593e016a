//! RTF: every `\objdata` is a child, hex-decoded as the walk asks for it;
//! an OLE1 embedded object gives its native data (often an OLE2 file), a
//! Packager object the file it carries. Own bounded reader, no crate: an object's hex data ends at the
//! next control word or closing brace, and at most the walk's cap of it is
//! decoded, so a crafted document of thousands of unterminated `\objdata`
//! runs costs its own size, not its size times the number of runs.

use super::Flow;
use super::bytes::hex_decode;
use super::{Container, ole1};
use crate::filetype::FileType;
use crate::limits::Deadline;
use std::borrow::Cow;

register!(RTF: "rtf", rank 240, unpacks [Rtf]);

fn sniff(data: &[u8]) -> Option<FileType> {
    data.starts_with(b"{\\rtf").then_some(FileType::Rtf)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let max = usize::try_from(c.limits().max_object_size.saturating_add(1)).unwrap_or(usize::MAX);
    for object in rtf_objects(data, max, c.deadline()) {
        if c.buffer(&object.name, Cow::Owned(object.data)) == Flow::Stop {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

/// One `\objdata` object of an RTF document.
struct RtfObject {
    pub name: String,
    pub data: Vec<u8>,
}

/// The `\objdata` objects of an RTF document, decoded one at a time as
/// the walk asks for them (so its object and byte limits stop the work, not
/// just the output); an OLE1 embedded object gives its native data (often
/// an OLE2 file or a Package). An object's hex data ends at the next control
/// word or closing brace, and at most `max_bytes` of it are decoded: a
/// crafted document of thousands of unterminated `\objdata` runs costs its
/// own size, not its size times the number of runs.
fn rtf_objects(data: &[u8], max_bytes: usize, deadline: Deadline) -> impl Iterator<Item = RtfObject> + '_ {
    let mut at = 0;
    let mut n = 0;
    std::iter::from_fn(move || {
        if deadline.passed() {
            return None;
        }
        let p = find(data, b"\\objdata", at)?;
        at = p + 8;
        let (decoded, read) = hex_decode(&data[at..], b"\\}", max_bytes, &deadline);
        at += read;
        n += 1;
        let (name, body) = match ole1_native(&decoded) {
            // A Packager object: the file it carries, by its label.
            Some((class, native)) if class == "Package" => match ole1::package(native) {
                Some(p) => (format!("object-{n}.Package/{}", ole1::file_name(&p)), p.data.to_vec()),
                None => (format!("object-{n}.Package"), native.to_vec()),
            },
            Some((class, native)) => (format!("object-{n}.{class}"), native.to_vec()),
            None => (format!("object-{n}.bin"), decoded),
        };
        Some(RtfObject { name, data: body })
    })
}

/// OLE1 `EmbeddedObject`: version, format id 2, class name, topic, item,
/// then the native data's size and bytes.
fn ole1_native(d: &[u8]) -> Option<(String, &[u8])> {
    let u32_at = |o: usize| d.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if u32_at(4)? != 2 {
        return None;
    }
    let mut o = 8;
    let mut class = String::new();
    for i in 0..3 {
        let len = u32_at(o)?;
        let s = d.get(o + 4..(o + 4).checked_add(len)?)?;
        if i == 0 {
            class = String::from_utf8_lossy(s).trim_end_matches('\0').chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        }
        o += 4 + len;
    }
    let size = u32_at(o)?;
    let native = d.get(o + 4..)?;
    Some((if class.is_empty() { "bin".into() } else { class }, &native[..size.min(native.len())]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unterminated_objdata_runs_stop_at_the_next_control_word() {
        let rtf: Vec<u8> = b"{\\rtf1".iter().copied().chain(b"\\objdata 41414141 ".repeat(1000)).collect();
        let forever = Deadline::new(std::time::Duration::from_secs(60), None);
        let objects: Vec<RtfObject> = rtf_objects(&rtf, 1 << 20, forever).collect();
        assert_eq!(objects.len(), 1000);
        assert!(objects.iter().all(|o| o.data == b"AAAA"));
    }
}
