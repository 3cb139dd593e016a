//! Bounded readers for document formats that carry payloads: PDF streams
//! (with their filters decoded) and RTF embedded objects (`\objdata`).
//! Both are written here rather than taken from a crate: full PDF and RTF
//! parsers do far more than a scanner needs and trust the input more.

use crate::unpack::read_capped;
use crate::unzip::MemberData;

/// One stream of a PDF, still encoded.
pub(crate) struct PdfStream<'a> {
    pub name: String,
    pub filters: Vec<String>,
    pub raw: &'a [u8],
}

/// Largest distance looked back from `stream` for the object's dictionary.
const DICT_WINDOW: usize = 64 * 1024;

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Does the PDF declare encryption (its streams then cannot be decoded)?
pub(crate) fn pdf_encrypted(data: &[u8]) -> bool {
    find(data, b"/Encrypt", 0).is_some()
}

/// Every `stream ... endstream` of a PDF, with the filters its dictionary
/// names. Lengths in dictionaries are often indirect or wrong, so the data
/// runs to the next `endstream`.
pub(crate) fn pdf_streams(data: &[u8]) -> Vec<PdfStream<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(kw) = find(data, b"stream", at) {
        at = kw + 6;
        if kw >= 3 && &data[kw - 3..kw] == b"end" {
            continue;
        }
        let mut start = kw + 6;
        if data.get(start) == Some(&b'\r') {
            start += 1;
        }
        if data.get(start) == Some(&b'\n') {
            start += 1;
        } else if start == kw + 6 {
            continue; // `stream` inside other text
        }
        let end = find(data, b"endstream", start).unwrap_or(data.len());
        let mut raw = &data[start..end];
        raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        raw = raw.strip_suffix(b"\r").unwrap_or(raw);

        let window = &data[kw.saturating_sub(DICT_WINDOW)..kw];
        let obj_at = rfind(window, b" obj");
        let dict = obj_at.map_or(window, |o| &window[o..]);
        let number = obj_at.and_then(|o| object_number(&window[..o])).map_or_else(|| format!("{}", out.len()), |n| n.to_string());
        let embedded = find(dict, b"/EmbeddedFile", 0).is_some();
        let name = if embedded { format!("embedded-{number}.bin") } else { format!("obj-{number}.bin") };
        out.push(PdfStream { name, filters: filters(dict), raw });
        at = end;
    }
    out
}

/// The object number in text ending with `N G` (before ` obj`).
fn object_number(before: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(&before[before.len().saturating_sub(32)..]).into_owned();
    let mut words = text.split_whitespace().rev();
    let _generation = words.next()?;
    words.next()?.parse().ok()
}

fn filters(dict: &[u8]) -> Vec<String> {
    let Some(f) = find(dict, b"/Filter", 0) else { return Vec::new() };
    let rest = &dict[f + 7..];
    let rest = String::from_utf8_lossy(&rest[..rest.len().min(256)]).into_owned();
    let rest = rest.trim_start();
    let names: &str = if let Some(array) = rest.strip_prefix('[') { array.split(']').next().unwrap_or("") } else { rest };
    let mut out = Vec::new();
    for token in names.split('/').skip(1) {
        let name: String = token.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if name.is_empty() {
            break;
        }
        out.push(name);
        if !rest.starts_with('[') {
            break; // a single name
        }
    }
    out
}

/// One byte more than `cap`, so a capped read can tell it was cut.
fn cap_usize(cap: u64) -> usize {
    usize::try_from(cap.saturating_add(1)).unwrap_or(usize::MAX)
}

/// Apply a stream's filters, each stage capped at `cap` bytes.
pub(crate) fn pdf_decode(stream: &PdfStream, cap: u64) -> MemberData {
    let mut data = stream.raw.to_vec();
    let mut truncated = false;
    for f in &stream.filters {
        let step = match f.as_str() {
            "FlateDecode" | "Fl" => read_capped(flate2::read::ZlibDecoder::new(&data[..]), cap, 0),
            "ASCIIHexDecode" | "AHx" => read_capped(&hex_decode(&data, b">", cap_usize(cap)).0[..], cap, 0),
            "ASCII85Decode" | "A85" => read_capped(&ascii85_decode(&data, cap_usize(cap))[..], cap, 0),
            "LZWDecode" | "LZW" => read_capped(&lzw_decode(&data, cap)[..], cap, 0),
            "RunLengthDecode" | "RL" => read_capped(&run_length_decode(&data, cap)[..], cap, 0),
            // Images and unknown filters: scan the bytes as they are.
            _ => break,
        };
        truncated |= step.truncated;
        if let Some(e) = step.error {
            return MemberData { data: step.data, truncated, error: Some(format!("{f}: {e}")) };
        }
        data = step.data;
    }
    let mut out = read_capped(&data[..], cap, data.len() as u64);
    out.truncated |= truncated;
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Hex digits to bytes, skipping whitespace, stopping at `>` (PDF) or `}` (RTF).
/// Hex digits up to the first byte of `stop` (other bytes are skipped, as
/// whitespace is), at most `max` bytes out: the decoded bytes and how many
/// input bytes were read. Grows as it decodes, never by the input's size.
pub(crate) fn hex_decode(data: &[u8], stop: &[u8], max: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut high: Option<u8> = None;
    let mut read = data.len();
    for (i, &b) in data.iter().enumerate() {
        if stop.contains(&b) || out.len() >= max {
            read = i;
            break;
        }
        let Some(v) = hex_value(b) else { continue };
        match high.take() {
            Some(h) => out.push(h << 4 | v),
            None => high = Some(v),
        }
    }
    if let Some(h) = high.filter(|_| out.len() < max) {
        out.push(h << 4);
    }
    (out, read)
}

/// ASCII85, at most `max` bytes out (a `z` is four zero bytes: a run of
/// them expands fourfold, so the cap matters).
fn ascii85_decode(data: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut group = [0u32; 5];
    let mut n = 0;
    let body = data.strip_prefix(b"<~").unwrap_or(data);
    for &b in body {
        if out.len() >= max {
            out.truncate(max);
            return out;
        }
        match b {
            b'~' => break,
            b'z' if n == 0 => out.extend_from_slice(&[0; 4]),
            b'!'..=b'u' => {
                group[n] = (b - b'!') as u32;
                n += 1;
                if n == 5 {
                    let v = group.iter().fold(0u32, |acc, &d| acc.wrapping_mul(85).wrapping_add(d));
                    out.extend_from_slice(&v.to_be_bytes());
                    n = 0;
                }
            }
            _ => {}
        }
    }
    if n > 1 {
        for d in group.iter_mut().skip(n) {
            *d = 84;
        }
        let v = group.iter().fold(0u32, |acc, &d| acc.wrapping_mul(85).wrapping_add(d));
        out.extend_from_slice(&v.to_be_bytes()[..n - 1]);
    }
    out
}

fn run_length_decode(data: &[u8], cap: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() && (out.len() as u64) <= cap {
        let n = data[i] as usize;
        i += 1;
        match n {
            0..=127 => {
                let end = (i + n + 1).min(data.len());
                out.extend_from_slice(&data[i..end]);
                i = end;
            }
            128 => break,
            _ => {
                if let Some(&b) = data.get(i) {
                    out.extend(std::iter::repeat_n(b, 257 - n));
                }
                i += 1;
            }
        }
    }
    out
}

/// PDF LZW (early change, MSB-first codes), stopping past `cap` bytes.
fn lzw_decode(data: &[u8], cap: u64) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut table: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    table.push(Vec::new()); // 256 clear
    table.push(Vec::new()); // 257 end
    let (mut bits, mut acc, mut nbits) = (9u32, 0u32, 0u32);
    let mut prev: Option<Vec<u8>> = None;
    for &byte in data {
        acc = acc << 8 | byte as u32;
        nbits += 8;
        while nbits >= bits {
            let code = (acc >> (nbits - bits)) & ((1 << bits) - 1);
            nbits -= bits;
            match code {
                256 => {
                    table.truncate(258);
                    bits = 9;
                    prev = None;
                    continue;
                }
                257 => return out,
                _ => {}
            }
            let entry = if (code as usize) < table.len() {
                table[code as usize].clone()
            } else if let Some(p) = &prev {
                let mut e = p.clone();
                e.push(p[0]);
                e
            } else {
                return out; // corrupt
            };
            out.extend_from_slice(&entry);
            if out.len() as u64 > cap {
                return out;
            }
            if let Some(mut p) = prev.take() {
                p.push(entry[0]);
                if table.len() < 4096 {
                    table.push(p);
                }
            }
            prev = Some(entry);
            bits = match table.len() + 1 {
                n if n >= 2048 => 12,
                n if n >= 1024 => 11,
                n if n >= 512 => 10,
                _ => 9,
            };
        }
    }
    out
}

/// One `\objdata` object of an RTF document.
pub(crate) struct RtfObject {
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
pub(crate) fn rtf_objects(data: &[u8], max_bytes: usize) -> impl Iterator<Item = RtfObject> + '_ {
    let mut at = 0;
    let mut n = 0;
    std::iter::from_fn(move || {
        let p = find(data, b"\\objdata", at)?;
        at = p + 8;
        let (decoded, read) = hex_decode(&data[at..], b"\\}", max_bytes);
        at += read;
        n += 1;
        let (name, body) = match ole1_native(&decoded) {
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
    fn filters_parse() {
        assert_eq!(filters(b"<< /Length 5 /Filter /FlateDecode >>"), ["FlateDecode"]);
        assert_eq!(filters(b"<< /Filter [/ASCIIHexDecode /FlateDecode] >>"), ["ASCIIHexDecode", "FlateDecode"]);
        assert!(filters(b"<< /Length 3 >>").is_empty());
    }

    #[test]
    fn ascii85_and_hex_and_run_length() {
        assert_eq!(ascii85_decode(b"<~87cURD]i,\"Ebo80~>", 1000), b"Hello World!");
        assert_eq!(ascii85_decode(b"<~zzzzzzzz~>", 10).len(), 10, "a z run stops at the cap");
        assert_eq!(hex_decode(b"48 65 6c6C6f>", b">", 100), (b"Hello".to_vec(), 12));
        assert_eq!(hex_decode(b"48656c6c6f", b">", 2).0, b"He");
        // Unterminated \objdata runs: each stops at the next control word.
        let rtf: Vec<u8> = b"{\\rtf1".iter().copied().chain(b"\\objdata 41414141 ".repeat(1000)).collect();
        let objects: Vec<RtfObject> = rtf_objects(&rtf, 1 << 20).collect();
        assert_eq!(objects.len(), 1000);
        assert!(objects.iter().all(|o| o.data == b"AAAA"));
        assert_eq!(run_length_decode(&[2, b'a', b'b', b'c', 254, b'z', 128], 100), b"abczzz");
    }

    #[test]
    fn lzw_spec_example() {
        // The example from the PDF reference (7.4.4.2).
        let enc = [0x80, 0x0B, 0x60, 0x50, 0x22, 0x0C, 0x0C, 0x85, 0x01];
        assert_eq!(lzw_decode(&enc, 1000), [45, 45, 45, 45, 45, 65, 45, 45, 45, 66]);
    }
}
