//! VBA macro source from an Office VBA project ([MS-OVBA]).
//!
//! A VBA project is an OLE2 storage (`Macros/VBA` in Word files,
//! `_VBA_PROJECT_CUR/VBA` in Excel files, `VBA` in an OOXML
//! `vbaProject.bin`) with a compressed `dir` stream that lists the modules,
//! and one stream per module whose source starts, compressed, at the
//! module's text offset. Rules want the source text (`AutoOpen`, `Shell`,
//! `CreateObject`), not the compressed bytes, so the engine decompresses it
//! and scans each module as a child object.
//!
//! Both readers here are bounded: output stops at the caller's cap, every
//! read is checked, and malformed input ends in an error, never a panic.

/// A module the `dir` stream describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    pub name: String,
    pub stream: String,
    /// Where the compressed source starts in the module stream.
    pub offset: u32,
}

use super::bytes::MemberData;

/// Decompress an MS-OVBA compressed container (2.4.1), producing at most
/// `cap` bytes. Keeps what was decoded and, if decoding stopped early, says
/// why (truncated input, bad chunk, a copy before the chunk's start).
pub(crate) fn decompress(data: &[u8], cap: usize) -> MemberData {
    let mut out = Vec::new();
    let failed = |data, why: String| MemberData { data, truncated: false, error: Some(why) };
    if data.first() != Some(&0x01) {
        return failed(out, "vba: no compressed container signature".into());
    }
    let mut pos = 1;
    while pos < data.len() {
        let Some(header) = data.get(pos..pos + 2).map(|h| u16::from_le_bytes([h[0], h[1]])) else {
            return failed(out, "vba: truncated chunk header".into());
        };
        if (header >> 12) & 0x7 != 0b011 {
            return failed(out, format!("vba: bad chunk signature at {pos}"));
        }
        let chunk_end = (pos + (header & 0x0FFF) as usize + 3).min(data.len());
        pos += 2;
        let chunk_start = out.len();
        if header & 0x8000 == 0 {
            // A raw chunk: 4096 bytes as they are.
            let end = (pos + 4096).min(data.len());
            out.extend_from_slice(&data[pos..end]);
            pos = end;
        } else {
            while pos < chunk_end {
                let flags = data[pos];
                pos += 1;
                for bit in 0..8 {
                    if pos >= chunk_end || out.len() > cap {
                        break;
                    }
                    if flags & (1 << bit) == 0 {
                        out.push(data[pos]);
                        pos += 1;
                        continue;
                    }
                    let Some(token) = data.get(pos..pos + 2).map(|t| u16::from_le_bytes([t[0], t[1]])) else {
                        return failed(out, "vba: truncated copy token".into());
                    };
                    pos += 2;
                    let (offset, length) = copy_token(token, out.len() - chunk_start);
                    if offset > out.len() - chunk_start {
                        return failed(out, format!("vba: copy token reaches before its chunk at {pos}"));
                    }
                    for _ in 0..length {
                        out.push(out[out.len() - offset]);
                    }
                }
            }
        }
        if out.len() > cap {
            out.truncate(cap);
            return MemberData { data: out, truncated: true, error: None };
        }
    }
    MemberData { data: out, truncated: false, error: None }
}

/// Offset and length of a copy token (2.4.1.3.19.2): the split between the
/// two fields depends on how much of the chunk is already decompressed.
fn copy_token(token: u16, decompressed_in_chunk: usize) -> (usize, usize) {
    let bits = (usize::BITS - decompressed_in_chunk.saturating_sub(1).leading_zeros()).max(4);
    let length_mask = 0xFFFFu16 >> bits;
    let offset = ((token & !length_mask) >> (16 - bits)) as usize + 1;
    let length = (token & length_mask) as usize + 3;
    (offset, length)
}

/// The modules listed in a decompressed `dir` stream (2.3.4.2). Records are
/// an id (u16), a size (u32) and data, except PROJECTVERSION whose size
/// field does not count its 6 bytes of data.
pub(crate) fn modules(dir: &[u8]) -> Vec<Module> {
    const PROJECTVERSION: u16 = 0x0009;
    const MODULENAME: u16 = 0x0019;
    const MODULESTREAMNAME: u16 = 0x001A;
    const MODULEOFFSET: u16 = 0x0031;
    const MODULE_TERMINATOR: u16 = 0x002B;
    const DIR_TERMINATOR: u16 = 0x0010;

    let mut out = Vec::new();
    let mut current: Option<Module> = None;
    let mut pos = 0usize;
    while let Some(head) = dir.get(pos..pos + 6) {
        let id = u16::from_le_bytes([head[0], head[1]]);
        let size = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let len = if id == PROJECTVERSION { 6 } else { size };
        let start = pos + 6;
        let Some(body) = dir.get(start..start.saturating_add(len)) else { break };
        pos = start + len;
        let text = || String::from_utf8_lossy(body).into_owned();
        match id {
            MODULENAME => current = Some(Module { name: text(), stream: String::new(), offset: 0 }),
            MODULESTREAMNAME => {
                if let Some(m) = current.as_mut() {
                    m.stream = text();
                }
            }
            MODULEOFFSET if body.len() == 4 => {
                if let Some(m) = current.as_mut() {
                    m.offset = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                }
            }
            MODULE_TERMINATOR => out.extend(current.take().filter(|m| !m.stream.is_empty())),
            DIR_TERMINATOR => break,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of MS-OVBA 3.2.3: 89 bytes of text, one compressed chunk
    /// that uses copy tokens at several distances.
    #[test]
    fn spec_example_decompresses() {
        let compressed: &[u8] = &[
            0x01, 0x2F, 0xB0, 0x00, 0x23, 0x61, 0x61, 0x61, 0x62, 0x63, 0x64, 0x65, 0x82, 0x66, 0x00, 0x70, 0x61, 0x67, 0x68,
            0x69, 0x6A, 0x01, 0x38, 0x08, 0x61, 0x6B, 0x6C, 0x00, 0x30, 0x6D, 0x6E, 0x6F, 0x70, 0x06, 0x71, 0x02, 0x70, 0x04,
            0x10, 0x72, 0x73, 0x74, 0x75, 0x76, 0x10, 0x77, 0x78, 0x79, 0x7A, 0x00, 0x3C,
        ];
        let out = decompress(compressed, 1 << 20);
        assert_eq!(out.error, None);
        assert_eq!(out.data, b"#aaabcdefaaaaghijaaaaaklaaamnopqaaaaaaaaaaaarstuvwxyzaaa");
    }

    #[test]
    fn raw_chunk_cap_and_errors() {
        let mut raw = vec![0x01, 0xFF, 0x3F];
        raw.extend(std::iter::repeat_n(b'x', 4096));
        let whole = decompress(&raw, 1 << 20);
        assert_eq!((whole.data.len(), whole.truncated), (4096, false));
        let capped = decompress(&raw, 100);
        assert_eq!((capped.data.len(), capped.truncated), (100, true));
        assert!(decompress(b"\x02abc", 100).error.is_some());
        assert!(decompress(&[0x01, 0x05, 0x00], 100).error.is_some(), "bad signature bits");
        // A copy token as the very first token reaches before the chunk.
        assert!(decompress(&[0x01, 0x03, 0xB0, 0x01, 0x00, 0x00], 100).error.is_some());
    }

    #[test]
    fn copy_token_split_follows_the_chunk_position() {
        assert_eq!(copy_token(0x0000, 1), (1, 3));
        assert_eq!(copy_token(0x1000, 16), (2, 3));
        assert_eq!(copy_token(0x0800, 17), (2, 3), "five offset bits once past 16 bytes");
        assert_eq!(copy_token(0x000F, 3), (1, 18));
    }
}
