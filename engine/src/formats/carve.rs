//! Carving: containers and executables embedded at any offset of an
//! executable or of unknown data (self-extracting archives, installers,
//! droppers with a payload in a resource or the overlay, any archive
//! appended to a program). One pass of `aho-corasick` finds every known
//! signature; each hit is checked (a header that parses, sizes that fit:
//! for most formats, the format's own sniffing) before it becomes a child,
//! hits inside a region already carved are skipped, and at most
//! [`MAX_CARVED`] children come out of one object, so random data is not
//! carved a thousand times.

use super::Container;
use super::Flow;
use super::bytes::{le_u16 as u16_at, le_u32 as u32_at, read_capped};
use crate::filetype::FileType;
use aho_corasick::AhoCorasick;
use memchr::memmem;
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
    /// A format told by its own sniffing at the hit (the rest of the data
    /// is handed over: each of these readers stops at its own end).
    Other(FileType),
    /// Text with a payload encoded in it (uuencode, BinHex, yEnc, MIME),
    /// up to the first NUL byte.
    Text,
}

/// Each signature, and how far into its format it sits (tar's `ustar` is
/// 257 bytes into its header, ISO 9660's `CD001` 32769 into the image).
const SIGNATURES: &[(&[u8], Sig, usize)] = &[
    (b"PK\x03\x04", Sig::Zip, 0),
    (b"7z\xBC\xAF\x27\x1C", Sig::SevenZip, 0),
    (b"MSCF\0\0\0\0", Sig::Cab, 0),
    (b"Rar!\x1A\x07", Sig::Rar, 0),
    (b"\x1F\x8B\x08", Sig::Gzip, 0),
    (b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", Sig::Ole2, 0),
    (b"%PDF-", Sig::Pdf, 0),
    (b"MZ", Sig::Pe, 0),
    (b"\xEF\xBE\xAD\xDENullsoftInst", Sig::Nsis, 0),
    (b"\xFD7zXZ\0", Sig::Other(FileType::Xz), 0),
    (b"BZh", Sig::Other(FileType::Bzip2), 0),
    (b"\x28\xB5\x2F\xFD", Sig::Other(FileType::Zstd), 0),
    (b"LZIP\x01", Sig::Other(FileType::Lzip), 0),
    (b"\x04\x22\x4D\x18", Sig::Other(FileType::Lz4), 0),
    (b"\x02\x21\x4C\x18", Sig::Other(FileType::Lz4), 0),
    (b"\x1F\x9D\x90", Sig::Other(FileType::CompressZ), 0),
    (b"\x1F\x9D\x8C", Sig::Other(FileType::CompressZ), 0),
    (b"ustar", Sig::Other(FileType::Tar), 257),
    (b"!<arch>\n", Sig::Other(FileType::Ar), 0),
    (b"070701", Sig::Other(FileType::Cpio), 0),
    (b"070702", Sig::Other(FileType::Cpio), 0),
    (b"070707", Sig::Other(FileType::Cpio), 0),
    (b"\xC7\x71", Sig::Other(FileType::Cpio), 0),
    (b"\x71\xC7", Sig::Other(FileType::Cpio), 0),
    (b"\x60\xEA", Sig::Other(FileType::Arj), 0),
    (b"-lh", Sig::Other(FileType::Lha), 2),
    (b"\x01CD001\x01", Sig::Other(FileType::Iso), 16 * 2048),
    (b"hsqs", Sig::Other(FileType::Squashfs), 0),
    (b"MSWIM\0\0\0", Sig::Other(FileType::Wim), 0),
    (b"ITSF\x03\0\0\0", Sig::Other(FileType::Chm), 0),
    (b"SZDD\x88\xF0\x27\x33", Sig::Other(FileType::MsCompress), 0),
    (b"KWAJ\x88\xF0\x27\xD1", Sig::Other(FileType::MsCompress), 0),
    (b"FAT12   ", Sig::Other(FileType::Fat), 54),
    (b"FAT16   ", Sig::Other(FileType::Fat), 54),
    (b"FAT32   ", Sig::Other(FileType::Fat), 82),
    (b"conectix", Sig::Other(FileType::Vhd), 0),
    (b"NTFS    ", Sig::Other(FileType::Ntfs), 3),
    (b"begin 6", Sig::Text, 0),
    (b"begin-base64 ", Sig::Text, 0),
    (b"(This file must be converted", Sig::Text, 0),
    (b"=ybegin ", Sig::Text, 0),
    (b"MIME-Version: ", Sig::Text, 0),
];

/// Every signature hit in `data`, in order of offset (one pass), at the
/// start of its format. Hits are many in executables (`MZ` is two bytes):
/// at most 64 Ki are kept.
pub(crate) fn signatures(data: &[u8]) -> Vec<(usize, Sig)> {
    static AC: OnceLock<AhoCorasick> = OnceLock::new();
    let ac = AC.get_or_init(|| AhoCorasick::new(SIGNATURES.iter().map(|(m, _, _)| *m)).expect("fixed patterns"));
    let mut hits: Vec<(usize, Sig)> = ac
        .find_iter(data)
        .filter_map(|m| {
            let (_, sig, back) = SIGNATURES[m.pattern().as_usize()];
            Some((m.start().checked_sub(back)?, sig))
        })
        .take(1 << 16)
        .collect();
    // Only the signatures found inside their format move back.
    hits.sort_by_key(|&(at, _)| at);
    hits
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
        // A self-extractor's zip whose offsets count from the start of the
        // program (`zip -A` adjusts them so): read in place, as one.
        if sig == Sig::Zip
            && let Some(start) = zip_start(data, at)
        {
            super::zip::unpack(c, &data[start..]);
            return;
        }
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
            Sig::Other(ty) => ty.as_str(),
            Sig::Text => "txt",
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
        // An installer's data follows its program: a PE followed by NSIS
        // data is carved with it (the NSIS reader finds it in the overlay).
        Sig::Pe => pe_size(d).map(|n| if memmem::find(&d[n..d.len().min(n + 4096)], NSIS).is_some() { d.len() } else { n }),
        // Read by its own module (the whole installer), not carved.
        Sig::Nsis => None,
        Sig::Other(ty) => (super::detect(d) == ty && plausible(d, ty)).then_some(d.len()),
        Sig::Text => {
            let end = memchr::memchr(0, d).unwrap_or(d.len());
            (end >= 128 && matches!(super::detect(&d[..end]), FileType::Text | FileType::Mail | FileType::Mbox)).then_some(end)
        }
    }
}

/// More than a magic, for the formats whose magic is short or whose
/// sniffing is loose: a carved region takes the rest of the data, so a
/// false hit would hide what follows it.
fn plausible(d: &[u8], ty: FileType) -> bool {
    match ty {
        // A basic header whose CRC-32 checks out.
        FileType::Arj => {
            let Some(size) = u16_at(d, 2).filter(|&n| (30..=2600).contains(&n)) else { return false };
            let (Some(header), Some(crc)) = (d.get(4..4 + size), u32_at(d, 4 + size)) else { return false };
            let mut sum = flate2::Crc::new();
            sum.update(header);
            sum.sum() as usize == crc
        }
        // A block or end-of-stream marker after the level.
        FileType::Bzip2 => {
            matches!(d.get(3), Some(b'1'..=b'9'))
                && matches!(d.get(4..10), Some(b"1AY&SY" | [0x17, 0x72, 0x45, 0x38, 0x50, 0x90]))
        }
        // The rest of an ASCII header is hex (newc, crc) or octal (odc)
        // digits; a binary header's name fits and ends in its NUL.
        FileType::Cpio if d[0] == b'0' => d.get(6..54).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
        FileType::Cpio => {
            // Written in the writer's byte order: `C7 71` little-endian, `71 C7` big.
            let at = |o: usize| {
                if d[0] == 0xC7 { u16_at(d, o) } else { d.get(o..o + 2).map(|b| usize::from(b[0]) << 8 | usize::from(b[1])) }
            };
            at(20).filter(|&n| (2..=1024).contains(&n)).is_some_and(|n| {
                d.get(26..26 + n).is_some_and(|name| name[n - 1] == 0 && name[..n - 1].iter().all(|&b| b >= 0x20))
            })
        }
        // A header level 0 to 3 and a header length that fits.
        FileType::Lha => d.get(20).is_some_and(|&l| l <= 3) && (d[20] == 2 || d[0] > 21),
        // Frame descriptor version 01.
        FileType::Lz4 => d.starts_with(&[0x02, 0x21, 0x4C, 0x18]) || d.get(4).is_some_and(|f| f & 0xC0 == 0x40),
        FileType::Tar => super::tar::header_checksum_ok(&d[..512.min(d.len())]),
        // Its first codes decode.
        FileType::CompressZ => super::lzw::Lzw::new(d).is_ok_and(|r| {
            let mut first = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(r, 256), &mut first).is_ok() && first.len() == 256
        }),
        _ => true,
    }
}

/// Where the zip whose local header is at `at` starts, if its central
/// directory's offset counts from before `at` (a self-extractor's, which
/// `zip -A` adjusts to count from the start of its program).
fn zip_start(data: &[u8], at: usize) -> Option<usize> {
    let eocd = memmem::rfind(&data[at..], b"PK\x05\x06")? + at;
    let (cd_size, cd_at) = (u32_at(data, eocd + 12)?, u32_at(data, eocd + 16)?);
    let start = eocd.checked_sub(cd_size)?.checked_sub(cd_at)?;
    (start < at && data.get(start + cd_at..start + cd_at + 4) == Some(b"PK\x01\x02")).then_some(start)
}

const NSIS: &[u8] = b"\xEF\xBE\xAD\xDENullsoftInst";

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
