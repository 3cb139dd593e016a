//! Binary payloads written as text, wherever they sit in a text object (a
//! mail body, an HTML page, a script, a log): uuencode and xxencode blocks
//! (`begin 644 name` ... `end`), BinHex 4.0, yEnc, Intel HEX and
//! S-records ([`super::records`]), base64 `data:` URIs, long base64 runs,
//! and quoted-printable bodies; and containers after a script's text
//! (shell self-extractors), carved. Own bounded decoders (the
//! `uuencoding` and `binhex` crates allocate from declared sizes or are
//! GPL): every decoder grows its output as it decodes, stops at the walk's
//! cap, and a text object yields at most [`MAX_CARVED`] children, so a page
//! of a million `data:` URIs costs one pass over it.

use super::Container;
use super::Flow;
use super::binhex::{self, Fork};
use super::bytes::MemberData;
use super::{carve, records};
use crate::filetype::FileType;
use memchr::memmem;

register!(TEXT: "text", rank 300, unpacks [Text]);

/// Printable ASCII / UTF-8 in the first 8 KiB: no NUL bytes and few
/// control characters.
fn sniff(data: &[u8]) -> Option<FileType> {
    let sample = &data[..data.len().min(8192)];
    // yEnc is 8-bit (control characters too) but line-based text.
    if records::yenc_blocks(sample).next().is_some() {
        return Some(FileType::Text);
    }
    if sample.contains(&0) {
        return None;
    }
    let control = sample.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C | 0x1B)).count();
    (control * 100 <= sample.len()).then_some(FileType::Text)
}

/// Most children carved out of one text object.
const MAX_CARVED: usize = 64;
/// A base64 run shorter than this (not counting line breaks) is left alone:
/// identifiers, hashes and keys are shorter; a payload worth scanning is not.
const MIN_BASE64_RUN: usize = 256;

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let mut carved = 0usize;
    let mut emit = |c: &mut Container<'_>, name: String, stored: u64, read: &mut dyn FnMut(u64) -> MemberData| -> Flow {
        if carved >= MAX_CARVED {
            return Flow::Stop;
        }
        carved += 1;
        c.member(&name, stored, |cap| Ok(read(cap)))
    };
    // uuencode / xxencode blocks.
    for (n, block) in begin_blocks(data).enumerate() {
        let name = block.name.clone().unwrap_or_else(|| format!("{}-{n}", block.kind.as_str()));
        let stored = block.body.len() as u64;
        if emit(c, name, stored, &mut |cap| block.decode(cap)) == Flow::Stop {
            return;
        }
    }
    // yEnc.
    for (n, (at, name)) in records::yenc_blocks(data).enumerate() {
        let block = &data[at..];
        let name = name.unwrap_or_else(|| format!("yenc-{n}"));
        if emit(c, name, block.len() as u64, &mut |cap| records::yenc_decode(block, cap)) == Flow::Stop {
            return;
        }
    }
    // A whole object of Intel HEX or S-records (what `objcopy` writes).
    for (is, srec, name) in [(records::is_ihex as fn(&[u8]) -> bool, false, "ihex.data"), (records::is_srec, true, "srec.data")] {
        if is(data)
            && emit(c, name.into(), data.len() as u64, &mut |cap| records::hex_records_decode(data, srec, cap)) == Flow::Stop
        {
            return;
        }
    }
    // A script with binary data after it (makeself and other shell
    // self-extractors): what follows is carved as from unknown data.
    if let Some(nul) = memchr::memchr(0, data) {
        let hits: Vec<_> = carve::signatures(&data[nul.saturating_sub(4096)..])
            .into_iter()
            .map(|(at, sig)| (at + nul.saturating_sub(4096), sig))
            .filter(|&(_, sig)| sig != carve::Sig::Text)
            .collect();
        carve::unpack(c, data, &hits);
    }
    // BinHex 4.0.
    if let Some(start) = memmem::find(data, b"(This file must be converted") {
        let body = &data[start..];
        let stored = body.len() as u64;
        for (fork, name) in [(Fork::Data, "binhex.data"), (Fork::Resource, "binhex.resource")] {
            if emit(c, name.into(), stored, &mut |cap| binhex::decode(body, fork, cap)) == Flow::Stop {
                return;
            }
        }
    }
    // base64: `data:` URIs first (any length), then long bare runs.
    let mut uris: Vec<(usize, usize)> = Vec::new();
    let mut n = 0;
    let mut at = 0;
    while let Some(p) = memmem::find(&data[at..], b";base64,") {
        let start = at + p + 8;
        let len = base64_run(&data[start..]);
        at = start + len;
        uris.push((start, at));
        if len < 4 {
            continue;
        }
        n += 1;
        let run = &data[start..start + len];
        if emit(c, format!("data-uri-{n}"), len as u64, &mut |cap| decode_base64(run, cap)) == Flow::Stop {
            return;
        }
    }
    let mut n = 0;
    for (start, len) in base64_runs(data) {
        let run = &data[start..start + len];
        let in_uri = uris.iter().any(|&(s, e)| start >= s && start < e);
        if in_uri || !worth_decoding(run) {
            continue;
        }
        n += 1;
        if emit(c, format!("base64-{n}"), len as u64, &mut |cap| decode_base64(run, cap)) == Flow::Stop {
            return;
        }
    }
    // Quoted-printable text outside a message (a saved body, a .qp file).
    if looks_quoted_printable(data) {
        let _ = emit(c, "quoted-printable".into(), data.len() as u64, &mut |cap| decode_quoted_printable(data, cap));
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Uu,
    Xx,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Uu => "uuencoded",
            Kind::Xx => "xxencoded",
        }
    }

    fn value(self, c: u8) -> Option<u8> {
        match self {
            // Both space and backquote stand for zero.
            Kind::Uu => (0x20..=0x60).contains(&c).then(|| (c - 0x20) & 0x3F),
            Kind::Xx => XX.iter().position(|&x| x == c).map(|v| v as u8),
        }
    }
}

const XX: &[u8; 64] = b"+-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// One `begin MODE NAME` block: its body runs to `end` or the end of text.
struct Block<'a> {
    kind: Kind,
    name: Option<String>,
    body: &'a [u8],
}

impl Block<'_> {
    fn decode(&self, cap: u64) -> MemberData {
        let mut out = Vec::new();
        for line in lines(self.body) {
            if line == b"end" || line.is_empty() {
                break;
            }
            let Some(n) = self.kind.value(line[0]).map(usize::from) else { break };
            let mut quad = [0u8; 4];
            let mut got = 0;
            let mut produced = 0;
            for &ch in &line[1..] {
                let Some(v) = self.kind.value(ch) else { break };
                quad[got] = v;
                got += 1;
                if got == 4 {
                    for b in [quad[0] << 2 | quad[1] >> 4, quad[1] << 4 | quad[2] >> 2, quad[2] << 6 | quad[3]] {
                        if produced < n {
                            out.push(b);
                            produced += 1;
                        }
                    }
                    got = 0;
                }
            }
            if got > 1 && produced < n {
                quad[got..].fill(0);
                for b in [quad[0] << 2 | quad[1] >> 4, quad[1] << 4 | quad[2] >> 2] {
                    if produced < n {
                        out.push(b);
                        produced += 1;
                    }
                }
            }
            if out.len() as u64 > cap {
                out.truncate(cap as usize);
                return MemberData { data: out, truncated: true, error: None };
            }
        }
        MemberData::whole(out)
    }
}

fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// The uuencoded and xxencoded blocks of `data`, found with one pass for
/// `begin `.
fn begin_blocks(data: &[u8]) -> impl Iterator<Item = Block<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        loop {
            let p = at + memmem::find(&data[at..], b"begin ")?;
            at = p + 6;
            if p > 0 && data[p - 1] != b'\n' {
                continue;
            }
            let line_end = memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |e| at + e);
            let header = data[at..line_end].strip_suffix(b"\r").unwrap_or(&data[at..line_end]);
            let mut fields = header.splitn(2, |&b| b == b' ');
            let mode = fields.next().unwrap_or_default();
            if mode.is_empty() || mode.len() > 4 || !mode.iter().all(|b| (b'0'..=b'7').contains(b)) {
                continue;
            }
            let name = String::from_utf8_lossy(fields.next().unwrap_or_default()).trim().replace(['/', '\\'], "_");
            let body = data.get(line_end + 1..).unwrap_or_default();
            // xxencode's full line starts with `h` (45 bytes) and uses
            // lower case; uuencode's with `M` and never does.
            let first = lines(body).next().unwrap_or_default();
            let kind = if first.iter().any(u8::is_ascii_lowercase) { Kind::Xx } else { Kind::Uu };
            at = line_end;
            return Some(Block { kind, name: (!name.is_empty()).then_some(name), body });
        }
    })
}

/// Long base64 runs of `data` as (start, length), found line by line so
/// that prose costs a `memchr` per line: a line with a space is looked into
/// byte by byte only if it is long enough to hold a run on its own; lines
/// of nothing but base64 (a wrapped body) join into one run.
fn base64_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut run: Option<(usize, usize)> = None; // start, end
    // The length of the run's first line: encoders write fixed-width lines.
    let mut width: Option<usize> = None;
    let close = |run: &mut Option<(usize, usize)>, out: &mut Vec<(usize, usize)>| {
        if let Some((s, e)) = run.take()
            && e - s >= MIN_BASE64_RUN
        {
            out.push((s, e - s));
        }
    };
    let mut start = 0;
    while start < data.len() && out.len() < MAX_CARVED {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |p| start + p);
        let line = &data[start..end];
        let body = line.strip_suffix(b"\r").unwrap_or(line);
        let all_base64 = memchr::memchr2(b' ', b'\t', body).is_none() && body.iter().all(|&b| is_base64(b) || b == b'=');
        if body.len() >= 16 && all_base64 {
            if width.is_some_and(|w| body.len() > w) {
                close(&mut run, &mut out);
            }
            if run.is_none() {
                width = Some(body.len());
            }
            run = Some((run.map_or(start, |(s, _)| s), start + body.len()));
            // A line shorter than the run's is its last.
            if width.is_some_and(|w| body.len() < w) {
                close(&mut run, &mut out);
                width = None;
            }
        } else if let Some((s, _)) = run.filter(|_| all_base64 && !body.is_empty() && body.len() < 16) {
            // The short last line of an encoder's fixed-width run.
            run = Some((s, start + body.len()));
            close(&mut run, &mut out);
            width = None;
        } else {
            width = None;
            close(&mut run, &mut out);
            if body.len() >= MIN_BASE64_RUN {
                let mut i = 0;
                while i < body.len() {
                    if !is_base64(body[i]) {
                        i += 1;
                        continue;
                    }
                    let len = base64_run(&body[i..]);
                    if len >= MIN_BASE64_RUN {
                        out.push((start + i, len));
                    }
                    i += len.max(1);
                }
            }
        }
        start = end + 1;
    }
    close(&mut run, &mut out);
    out
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// Length of the base64 run at the start of `data`: alphabet bytes, `=`
/// padding and line breaks between lines of it.
fn base64_run(data: &[u8]) -> usize {
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        let line_break_inside = (b == b'\r' || b == b'\n') && data.get(i + 1).is_some_and(|&n| is_base64(n) || n == b'\n');
        if is_base64(b) || b == b'=' || line_break_inside {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// A bare run is worth decoding when it is long and looks like encoded
/// bytes, not a word: mixed case and digits or `+`/`/`.
fn worth_decoding(run: &[u8]) -> bool {
    if run.len() < MIN_BASE64_RUN {
        return false;
    }
    let sample = &run[..run.len().min(4096)];
    let upper = sample.iter().any(u8::is_ascii_uppercase);
    let lower = sample.iter().any(u8::is_ascii_lowercase);
    let other = sample.iter().any(|b| b.is_ascii_digit() || matches!(b, b'+' | b'/'));
    upper && lower && other
}

/// Decode standard or URL-safe base64, skipping line breaks, stopping at
/// padding; at most `cap` bytes out.
fn decode_base64(run: &[u8], cap: u64) -> MemberData {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in run {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            if out.len() as u64 >= cap {
                return MemberData { data: out, truncated: true, error: None };
            }
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    MemberData::whole(out)
}

/// Many `=XX` escapes and soft line breaks, few other `=`: a body written
/// as quoted-printable.
fn looks_quoted_printable(data: &[u8]) -> bool {
    let sample = &data[..data.len().min(64 * 1024)];
    let (mut escapes, mut soft, mut other) = (0usize, 0usize, 0usize);
    for i in memchr::memchr_iter(b'=', sample) {
        match (sample.get(i + 1), sample.get(i + 2)) {
            (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => soft += 1,
            (Some(a), Some(b)) if is_upper_hex(*a) && is_upper_hex(*b) => escapes += 1,
            _ => other += 1,
        }
    }
    soft >= 4 && escapes >= 16 && other * 10 < escapes
}

fn is_upper_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

fn decode_quoted_printable(data: &[u8], cap: u64) -> MemberData {
    let mut out = Vec::new();
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16).map(|v| v as u8);
    while i < data.len() {
        if out.len() as u64 >= cap {
            return MemberData { data: out, truncated: true, error: None };
        }
        match data[i] {
            b'=' => match (data.get(i + 1).copied(), data.get(i + 2).copied()) {
                (Some(b'\n'), _) => i += 2,
                (Some(b'\r'), Some(b'\n')) => i += 3,
                (Some(a), Some(b)) if hex(a).is_some() && hex(b).is_some() => {
                    out.push(hex(a).unwrap_or(0) << 4 | hex(b).unwrap_or(0));
                    i += 3;
                }
                _ => {
                    out.push(b'=');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    MemberData::whole(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uu_and_xx_blocks() {
        let text = b"hello\nbegin 644 cat.txt\n#0V%T\n`\nend\nbye\n";
        let blocks: Vec<_> = begin_blocks(text).collect();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].kind, Kind::Uu);
        assert_eq!(blocks[0].name.as_deref(), Some("cat.txt"));
        assert_eq!(blocks[0].decode(100).data, b"Cat");
        // `xxencode` of "Cat": length 3 is '1', then the four digits.
        let xx = b"begin 644 cat.txt\n1Eq3o\n+\nend\n";
        let blocks: Vec<_> = begin_blocks(xx).collect();
        assert_eq!(blocks[0].kind, Kind::Xx);
        assert_eq!(blocks[0].decode(100).data, b"Cat");
        // Not at a line start, or no octal mode: not a block.
        assert_eq!(begin_blocks(b"we begin 644 x\n").count(), 0);
        assert_eq!(begin_blocks(b"begin here\n").count(), 0);
    }

    #[test]
    fn base64_runs_and_caps() {
        assert_eq!(decode_base64(b"SGVs\nbG8=", 100).data, b"Hello");
        let r = decode_base64(b"SGVsbG8=", 2);
        assert_eq!((r.data.as_slice(), r.truncated), (&b"He"[..], true));
        assert_eq!(base64_run(b"QUJD\r\nREVG;x"), 10);
        assert!(!worth_decoding(&[b'a'; 1000]), "a word repeated is not a payload");
    }

    #[test]
    fn quoted_printable() {
        let body = "caf=C3=A9 =3D=3D=3D=3D=3D=3D=3D=3D=3D=3D=3D=3D=3D=3D=3D=\n=\n=\n=\nend";
        assert!(looks_quoted_printable(body.as_bytes()));
        assert_eq!(decode_quoted_printable(body.as_bytes(), 1000).data, "café ===============end".as_bytes());
        assert!(!looks_quoted_printable(b"a = b\nc = d\n"));
    }
}
