//! Carving: containers and executables embedded at any offset of an
//! executable or of unknown data (self-extracting archives, installers,
//! droppers with a payload in a resource or the overlay). One pass of
//! `aho-corasick` finds every known signature; each hit is checked
//! (a header that parses, sizes that fit) before it becomes a child, hits
//! inside a region already carved are skipped, and at most [`MAX_CARVED`]
//! children come out of one object, so random data is not carved a
//! thousand times.

use super::Container;
use super::Flow;
use super::bytes::{le_u16 as u16_at, le_u32 as u32_at, read_capped};
use aho_corasick::AhoCorasick;
use std::sync::OnceLock;

/// Most children carved from one object.
pub(crate) const MAX_CARVED: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sig {
    Zip,
    SevenZip,
    Cab,
    Rar,
    Gzip,
    Ole2,
    Pdf,
    Pe,
    /// NSIS installer data (`\xEF\xBE\xAD\xDENullsoftInst`).
    Nsis,
}

const SIGNATURES: &[(&[u8], Sig)] = &[
    (b"PK\x03\x04", Sig::Zip),
    (b"7z\xBC\xAF\x27\x1C", Sig::SevenZip),
    (b"MSCF\0\0\0\0", Sig::Cab),
    (b"Rar!\x1A\x07", Sig::Rar),
    (b"\x1F\x8B\x08", Sig::Gzip),
    (b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", Sig::Ole2),
    (b"%PDF-", Sig::Pdf),
    (b"MZ", Sig::Pe),
    (b"\xEF\xBE\xAD\xDENullsoftInst", Sig::Nsis),
];

/// Every signature hit in `data`, in order of offset (one pass). Hits are
/// many in executables (`MZ` is two bytes): at most 64 Ki are kept.
pub(crate) fn signatures(data: &[u8]) -> Vec<(usize, Sig)> {
    static AC: OnceLock<AhoCorasick> = OnceLock::new();
    let ac = AC.get_or_init(|| AhoCorasick::new(SIGNATURES.iter().map(|(m, _)| *m)).expect("fixed patterns"));
    ac.find_iter(data).map(|m| (m.start(), SIGNATURES[m.pattern().as_usize()].1)).take(1 << 16).collect()
}

/// Hand every embedded container of `data` (after offset 0, which is the
/// object itself) to the walk as `carved-<offset>.<kind>`.
pub(super) fn unpack(c: &mut Container<'_>, data: &[u8], hits: &[(usize, Sig)]) {
    let mut carved = 0;
    let mut covered = 0usize;
    for &(at, sig) in hits {
        if at == 0 || at < covered {
            continue;
        }
        let Some(len) = region(&data[at..], sig) else { continue };
        if carved >= MAX_CARVED {
            c.error(format!("more than {MAX_CARVED} embedded objects; the rest not carved"));
            return;
        }
        carved += 1;
        covered = at + len;
        let region = &data[at..at + len];
        let deadline = c.deadline();
        let name = format!("carved-{at}.{}", sig.extension());
        if c.member(&name, len as u64, |cap| Ok(read_capped(region, cap, len as u64, &deadline))) == Flow::Stop {
            return;
        }
    }
}

impl Sig {
    fn extension(self) -> &'static str {
        match self {
            Sig::Zip => "zip",
            Sig::SevenZip => "7z",
            Sig::Cab => "cab",
            Sig::Rar => "rar",
            Sig::Gzip => "gz",
            Sig::Ole2 => "ole2",
            Sig::Pdf => "pdf",
            Sig::Pe => "exe",
            Sig::Nsis => "bin",
        }
    }
}

/// How many bytes from the start of `d` the embedded object at its start
/// occupies, if its header checks out. Formats read from their end (zip)
/// or that stop by themselves (gzip, 7z, PDF) take the rest of the data.
fn region(d: &[u8], sig: Sig) -> Option<usize> {
    match sig {
        Sig::Zip => {
            // A local header: version needed < 100, a known method, sane name length.
            let (version, method, name_len) = (u16_at(d, 4)?, u16_at(d, 8)?, u16_at(d, 26)?);
            (version < 100
                && matches!(method, 0 | 1 | 6 | 8 | 9 | 12 | 14 | 93 | 95 | 98 | 99)
                && name_len > 0
                && name_len < 1024)
                .then_some(d.len())
        }
        Sig::SevenZip => (d.get(6) == Some(&0)).then_some(d.len()),
        Sig::Cab => {
            let size = u32_at(d, 8)?;
            (size >= 44 && size <= d.len() && d.get(24..26) == Some(&[3, 1])).then_some(size)
        }
        Sig::Rar => Some(d.len()),
        Sig::Gzip => (d.get(3).is_some_and(|f| f & 0xE0 == 0)).then_some(d.len()),
        Sig::Ole2 => (u16_at(d, 0x1C) == Some(0xFFFE)).then_some(d.len()),
        Sig::Pdf => Some(d.len()),
        Sig::Pe => pe_size(d),
        // Read by its own module (the whole installer), not carved.
        Sig::Nsis => None,
    }
}

/// The size of the PE file at the start of `d`: the end of its furthest
/// section's raw data (the headers if it has none), at most `d`'s length.
pub(crate) fn pe_size(d: &[u8]) -> Option<usize> {
    let pe = u32_at(d, 0x3C)?;
    if !(0x40..=4096).contains(&pe) || d.get(pe..pe + 4)? != b"PE\0\0" {
        return None;
    }
    let sections = u16_at(d, pe + 6)?;
    let optional = u16_at(d, pe + 20)?;
    let table = pe + 24 + optional;
    let mut end = table + 40 * sections;
    for s in 0..sections.min(96) {
        let o = table + 40 * s;
        let (raw_size, raw_at) = (u32_at(d, o + 16)?, u32_at(d, o + 20)?);
        if raw_size > 0 {
            end = end.max(raw_at.saturating_add(raw_size));
        }
    }
    Some(end.min(d.len()))
}
