//! PDF: every `stream ... endstream` is a child, with its filters decoded
//! (Flate via `flate2`; ASCIIHex, ASCII85, LZW and RunLength here, each
//! capped and checking the deadline). Own reader rather than a crate: full
//! PDF parsers do far more than a scanner needs and trust the input more.
//! Streams are found one at a time as the walk asks for them, and the
//! dictionary of each is looked for only back to the previous stream, so a
//! file of 50,000 `stream` keywords costs its own size, not 50,000 windows.

use super::Container;
use super::Flow;
use super::bytes::{MemberData, hex_decode, read_capped};
use crate::filetype::FileType;
use crate::limits::Deadline;
use std::borrow::Cow;

register!(PDF: "pdf", rank 250, unpacks [Pdf]);

/// PDF readers accept the header anywhere in the first KiB.
fn sniff(data: &[u8]) -> Option<FileType> {
    memchr::memmem::find(&data[..data.len().min(1024)], b"%PDF-").map(|_| FileType::Pdf)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    if pdf_encrypted(data) {
        c.encrypted(None);
    }
    for stream in pdf_streams(data) {
        let deadline = c.deadline();
        if deadline.passed() {
            return;
        }
        if c.member(&stream.name, stream.raw.len() as u64, |cap| Ok(pdf_decode(&stream, cap, &deadline))) == Flow::Stop {
            return;
        }
    }
}

/// One stream of a PDF, still encoded.
struct PdfStream<'a> {
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
fn pdf_encrypted(data: &[u8]) -> bool {
    find(data, b"/Encrypt", 0).is_some()
}

/// Every `stream ... endstream` of a PDF, with the filters its dictionary
/// names, found lazily. Lengths in dictionaries are often indirect or
/// wrong, so the data runs to the next `endstream`.
fn pdf_streams(data: &[u8]) -> impl Iterator<Item = PdfStream<'_>> {
    let mut at = 0;
    // Where the previous stream's data ended: no dictionary lies before it.
    let mut floor = 0;
    let mut count = 0usize;
    std::iter::from_fn(move || {
        loop {
            let kw = find(data, b"stream", at)?;
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

            let window = &data[kw.saturating_sub(DICT_WINDOW).max(floor).min(kw)..kw];
            let obj_at = rfind(window, b" obj");
            let dict = obj_at.map_or(window, |o| &window[o..]);
            let number = obj_at.and_then(|o| object_number(&window[..o])).map_or_else(|| count.to_string(), |n| n.to_string());
            let embedded = find(dict, b"/EmbeddedFile", 0).is_some();
            let name = if embedded { format!("embedded-{number}.bin") } else { format!("obj-{number}.bin") };
            count += 1;
            at = end;
            floor = end;
            return Some(PdfStream { name, filters: filters(dict), raw });
        }
    })
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
fn pdf_decode(stream: &PdfStream, cap: u64, deadline: &Deadline) -> MemberData {
    let mut data: Cow<'_, [u8]> = Cow::Borrowed(stream.raw);
    let mut truncated = false;
    for f in &stream.filters {
        let step = match f.as_str() {
            "FlateDecode" | "Fl" => read_capped(flate2::read::ZlibDecoder::new(&data[..]), cap, 0, deadline),
            "ASCIIHexDecode" | "AHx" => capped(hex_decode(&data, b">", cap_usize(cap), deadline).0, cap),
            "ASCII85Decode" | "A85" => capped(ascii85_decode(&data, cap_usize(cap), deadline), cap),
            "LZWDecode" | "LZW" => capped(lzw_decode(&data, cap, deadline), cap),
            "RunLengthDecode" | "RL" => capped(run_length_decode(&data, cap, deadline), cap),
            // Images and unknown filters: scan the bytes as they are.
            _ => break,
        };
        truncated |= step.truncated;
        if let Some(e) = step.error {
            return MemberData { data: step.data, truncated, error: Some(format!("{f}: {e}")) };
        }
        data = Cow::Owned(step.data);
    }
    let mut out = match data {
        Cow::Owned(v) => capped(v, cap),
        // No filter ran: copy no more than the cap (and one byte to tell).
        Cow::Borrowed(raw) => capped(raw[..raw.len().min(cap_usize(cap))].to_vec(), cap),
    };
    out.truncated |= truncated;
    out
}

/// A decoder's output, cut to `cap` (decoders stop one byte past it, so
/// the cut is known).
fn capped(mut data: Vec<u8>, cap: u64) -> MemberData {
    let truncated = data.len() as u64 > cap;
    data.truncate(usize::try_from(cap).unwrap_or(usize::MAX));
    MemberData { data, truncated, error: None }
}

/// Decoders check the deadline every this many input bytes.
const STEP: usize = 1 << 16;

/// ASCII85, at most `max` bytes out (a `z` is four zero bytes: a run of
/// them expands fourfold, so the cap matters).
fn ascii85_decode(data: &[u8], max: usize, deadline: &Deadline) -> Vec<u8> {
    let mut out = Vec::new();
    let mut group = [0u32; 5];
    let mut n = 0;
    let body = data.strip_prefix(b"<~").unwrap_or(data);
    for (i, &b) in body.iter().enumerate() {
        if out.len() >= max || (i % STEP == STEP - 1 && deadline.passed()) {
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

fn run_length_decode(data: &[u8], cap: u64, deadline: &Deadline) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut steps = 0usize;
    while i < data.len() && (out.len() as u64) <= cap {
        steps += 1;
        if steps.is_multiple_of(STEP) && deadline.passed() {
            break;
        }
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
fn lzw_decode(data: &[u8], cap: u64, deadline: &Deadline) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut table: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    table.push(Vec::new()); // 256 clear
    table.push(Vec::new()); // 257 end
    let (mut bits, mut acc, mut nbits) = (9u32, 0u32, 0u32);
    let mut prev: Option<Vec<u8>> = None;
    for (i, &byte) in data.iter().enumerate() {
        if i % STEP == STEP - 1 && deadline.passed() {
            return out;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        assert_eq!(filters(b"<< /Length 5 /Filter /FlateDecode >>"), ["FlateDecode"]);
        assert_eq!(filters(b"<< /Filter [/ASCIIHexDecode /FlateDecode] >>"), ["ASCIIHexDecode", "FlateDecode"]);
        assert!(filters(b"<< /Length 3 >>").is_empty());
    }

    fn forever() -> Deadline {
        Deadline::new(std::time::Duration::from_secs(60), None)
    }

    #[test]
    fn ascii85_and_run_length() {
        assert_eq!(ascii85_decode(b"<~87cURD]i,\"Ebo80~>", 1000, &forever()), b"Hello World!");
        assert_eq!(ascii85_decode(b"<~zzzzzzzz~>", 10, &forever()).len(), 10, "a z run stops at the cap");
        assert_eq!(run_length_decode(&[2, b'a', b'b', b'c', 254, b'z', 128], 100, &forever()), b"abczzz");
    }

    #[test]
    fn streams_are_found_lazily_with_their_dictionaries() {
        let pdf =
            b"%PDF-1.4\n1 0 obj << /Filter /ASCIIHexDecode >> stream\n414243>\nendstream\n2 0 obj << >> stream\nxyz\nendstream";
        let streams: Vec<_> = pdf_streams(pdf).collect();
        assert_eq!(streams.len(), 2);
        assert_eq!((streams[0].name.as_str(), streams[0].filters.as_slice()), ("obj-1.bin", &["ASCIIHexDecode".to_string()][..]));
        assert_eq!(pdf_decode(&streams[0], 100, &forever()).data, b"ABC");
        // The second stream's dictionary does not reach back into the first.
        assert!(streams[1].filters.is_empty());
        assert_eq!(streams[1].raw, b"xyz");
    }

    #[test]
    fn lzw_spec_example() {
        // The example from the PDF reference (7.4.4.2).
        let enc = [0x80, 0x0B, 0x60, 0x50, 0x22, 0x0C, 0x0C, 0x85, 0x01];
        assert_eq!(lzw_decode(&enc, 1000, &forever()), [45, 45, 45, 45, 45, 65, 45, 45, 45, 66]);
    }
}
