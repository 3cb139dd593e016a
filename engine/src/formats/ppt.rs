//! PowerPoint 97-2003 embedded objects ([MS-PPT] 2.10.34 `ExOleObjStg`):
//! the `PowerPoint Document` stream is a tree of records; an embedded OLE
//! object is an `ExOleObjStg` record whose body is the object's compound
//! file, zlib-compressed after a 32-bit size when the record's instance is
//! 1. Own record walk (no crate), `flate2` for the zlib data.

use super::Container;
use super::Flow;
use super::bytes::read_capped;

/// Record type of an embedded OLE object's storage.
const EX_OLE_OBJ_STG: u16 = 0x1011;

/// One embedded object: its record body and whether it is compressed.
struct Embedded<'a> {
    body: &'a [u8],
    compressed: bool,
}

/// The `ExOleObjStg` records of a `PowerPoint Document` stream, in order.
/// Container records (version 0xF) are entered, others skipped by their
/// length; every step moves forward, so the walk is linear in the stream.
fn embedded(stream: &[u8]) -> Vec<Embedded<'_>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(h) = stream.get(at..at + 8) {
        let ver_inst = u16::from_le_bytes([h[0], h[1]]);
        let kind = u16::from_le_bytes([h[2], h[3]]);
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let body = at + 8;
        if ver_inst & 0xF == 0xF {
            at = body;
            continue;
        }
        if kind == EX_OLE_OBJ_STG {
            let end = body.saturating_add(len).min(stream.len());
            out.push(Embedded { body: &stream[body..end], compressed: ver_inst >> 4 == 1 });
            if out.len() >= super::MAX_LISTED {
                break;
            }
        }
        at = body.saturating_add(len);
    }
    out
}

/// Hand each embedded object of a `PowerPoint Document` stream to the walk
/// as `<stream>/object-N.ole` (itself a compound file, unpacked in turn).
pub(super) fn unpack_stream(c: &mut Container<'_>, name: &str, stream: &[u8]) -> Flow {
    for (n, e) in embedded(stream).into_iter().enumerate() {
        let deadline = c.deadline();
        let child = format!("{name}/object-{}.ole", n + 1);
        let flow = if e.compressed {
            let declared = e.body.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64);
            let zlib = e.body.get(4..).unwrap_or_default();
            c.member(&child, zlib.len() as u64, |cap| {
                Ok(read_capped(flate2::read::ZlibDecoder::new(zlib), cap, declared, &deadline))
            })
        } else {
            c.member(&child, e.body.len() as u64, |cap| Ok(read_capped(e.body, cap, e.body.len() as u64, &deadline)))
        };
        if flow == Flow::Stop {
            return Flow::Stop;
        }
    }
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ver_inst: u16, kind: u16, body: &[u8]) -> Vec<u8> {
        let mut v = ver_inst.to_le_bytes().to_vec();
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn finds_objects_inside_containers_and_skips_the_rest() {
        let object = record(0x10, EX_OLE_OBJ_STG, b"\x03\0\0\0zzz");
        let plain = record(0x00, EX_OLE_OBJ_STG, b"raw");
        let other = record(0x00, 0x0FF5, &[0xFF; 40]);
        let container = record(0x0F, 0x03E8, &[other.clone(), object, plain].concat());
        let found = embedded(&container);
        assert_eq!(found.len(), 2);
        assert!(found[0].compressed && found[0].body == b"\x03\0\0\0zzz");
        assert!(!found[1].compressed && found[1].body == b"raw");
        // A record claiming 4 GiB is cut at the stream's end.
        let lying = [&0u16.to_le_bytes()[..], &EX_OLE_OBJ_STG.to_le_bytes(), &u32::MAX.to_le_bytes(), b"abc"].concat();
        assert_eq!(embedded(&lying)[0].body, b"abc");
    }
}
