//! One module per format family, behind one small interface: this file.
//!
//! A format module registers a [`Format`] in the one list, [`FORMATS`]:
//! how it recognises its types from an object's first bytes (`sniff`,
//! tried in `rank` order by [`detect`]) and a function `unpack(&mut
//! Container, bytes)` that hands each child of a container to the walk by
//! name ([`Container::member`] for bytes still to decode under a cap,
//! [`Container::buffer`] for bytes already decoded). The walk decides
//! whether a child is read at all (depth, object, byte, ratio and memory
//! budgets), how much of it, and scans what comes out. A module never
//! allocates from a size the input declares, and checks
//! [`Container::deadline`] in its own long loops. Nothing here names a
//! format module: each adds itself to the list (`linkme`).
//!
//! Adding a format is one file here (registering itself with
//! [`register!`]) plus its `mod` line, and a bump of `formats.N` in
//! [`crate::ENGINE_VERSION`]: verdicts cached before the change are then no
//! longer served as current. Crates used, by family:
//!
//! | module | formats | parser |
//! |---|---|---|
//! | `zip` | zip, OOXML, JAR, APK | `zip` (central directory), reads capped here |
//! | `tar` | tar (ustar, GNU, pax) | `tar` |
//! | `ar`, `cpio`, `iso` | ar/deb, cpio (4 encodings), ISO 9660 | own bounded readers (no crate reads them from memory safely) |
//! | `compressed` (+ `lzw`) | gzip, bzip2, xz, lzma, lzip, zstd (every frame), LZ4 (frames, legacy), Unix compress `.Z` | `flate2`, `bzip2`, `lzma-rust2`, `ruzstd`, `lz4_flex`; LZW own |
//! | `sevenz` | 7z | `sevenz-rust2` |
//! | `cab` | Microsoft cabinet | `cab` |
//! | `ole2` (+ `vba`, `ppt`, `ole1`) | OLE2 compound files, MSI stream names, VBA macro source, PowerPoint `ExOleObjStg`, OLE1 `Ole10Native` and Packager objects | `cfb`; MS-OVBA decompression, record walks own; zlib via `flate2` |
//! | `pdf` | PDF streams and their filters | own bounded reader; Flate via `flate2` |
//! | `rtf` | RTF `\objdata` and OLE1 objects | own bounded reader |
//! | `mail` | RFC 822/MIME messages, mbox | `mail-parser` |
//! | `tnef` | Outlook TNEF (`winmail.dat`) attachments | own reader |
//! | `msexpand` | SZDD and KWAJ (`COMPRESS.EXE`) | own LZSS |
//! | `chm` | Compiled HTML Help (ITSF directory, LZX section) | own directory reader; LZX via `lzxd` |
//! | `arj` | ARJ | `unarj-rs` |
//! | `nsis_installer`, `autoit_script` | NSIS installers, compiled AutoIt scripts | `nsis`, `autoit-rs` |
//! | `upx`, `carve`, `executable` | UPX (NRV2B/D/E, LZMA), embedded containers and PEs | own decoders; `aho-corasick`, `memchr` |
//! | `wwpack` | WWPack32 sections (its in-place stub corrupts its own input when run) | own decoder |
//! | `pe_image` | a PE32 laid out as the loader maps it, and rebuilt as a file (for `packed`, `wwpack`) | own |
//! | `packed` | 32-bit PEs packed by anything else (ASPack, MEW, Petite, Upack, PESpin, yC, ...): the stub is emulated until it has unpacked | own interpreter and fake Win32 process in [`crate::emu`]; decoding by `iced-x86` |
//! | `installshield` | InstallShield setups (`InstallShield`, `ISSetupStream` file lists; name-keyed obfuscation, zlib; the plain list of older setups) | own reader; `flate2` |
//! | `iscab` | InstallShield cabinets (`ISc(`: header and volumes, chunked deflate, obfuscation) inside a setup | own reader, after `unshield`'s documentation (MIT); `flate2` |
//! | `rar` | RAR 1.3 to 7 | `rars` |
//! | `lha` | LHA/LZH | `delharc` |
//! | `wim` (+ `lzx`) | Windows Imaging (stored, XPRESS and LZX resources; paths from the metadata; LZMS reported) | own reader, XPRESS and LZX decoders |
//! | `squashfs` | SquashFS v4 (gzip, xz, lzma, zstd, lz4) | `backhand` |
//! | `fat` | FAT12/16/32 images | `fatfs` (read-only over the bytes) |
//! | `ntfs` | NTFS images | `ntfs` |
//! | `ext` | ext2/3/4 images | `ext4-view` |
//! | `disk`, `vhd` | MBR and GPT partition tables; VHD disks (fixed, dynamic) | own readers |
//! | `sis` | Symbian SIS (EPOC 3-6) | own reader; zlib via `flate2` |
//! | `text` (+ `binhex`, `records`) | uuencode, xxencode, BinHex 4.0, yEnc, Intel HEX, S-records, base64 `data:` URIs and long runs, quoted-printable, in any text; containers after a script (makeself) carved | own bounded decoders |

/// Add the format module this is written in to [`FORMATS`], with its
/// `sniff` and `unpack` functions: `register!(ZIP: "zip", rank 10, unpacks
/// [Zip, Docx]);` (see [`Format`] for the ranks).
macro_rules! register {
    ($entry:ident: $name:literal, rank $rank:literal, unpacks [$($ty:ident),*] $(, sniff $sniff:ident)?) => {
        #[linkme::distributed_slice(crate::formats::FORMATS)]
        static $entry: crate::formats::Format = crate::formats::Format {
            name: $name,
            rank: $rank,
            unpacks: &[$(crate::filetype::FileType::$ty),*],
            sniff: register!(@sniff $($sniff)?),
            unpack,
        };
    };
    (@sniff) => { sniff };
    (@sniff $sniff:ident) => { $sniff };
}

mod ar;
mod arj;
mod autoit_script;
mod binhex;
pub(crate) mod bytes;
mod cab;
pub(crate) mod carve;
mod chm;
mod compressed;
mod cpio;
mod disk;
mod executable;
mod ext;
mod fat;
mod installshield;
mod iscab;
pub(crate) mod iso;
pub(crate) mod lha;
pub(crate) mod lzw;
mod lzx;
pub(crate) mod mail;
pub(crate) mod msexpand;
mod nsis_installer;
mod ntfs;
mod ole1;
mod ole2;
mod packed;
mod pdf;
pub(crate) mod pe_image;
mod ppt;
mod rar;
mod records;
mod rtf;
mod sevenz;
pub(crate) mod sis;
pub(crate) mod squashfs;
pub(crate) mod tar;
mod text;
pub(crate) mod tnef;
mod upx;
mod vba;
mod vhd;
pub(crate) mod wim;
mod wwpack;
pub(crate) mod zip;

use crate::filetype::FileType;
use crate::limits::{Deadline, Limits};
use crate::report::{Detection, ObjectMeta, Severity};
use crate::tally::Tally;
pub(crate) use bytes::MemberData;
use bytes::read_capped;
use linkme::distributed_slice;
use std::borrow::Cow;
use std::sync::OnceLock;

/// How a format hands its children to the walk.
pub(crate) type Unpack = fn(&mut Container<'_>, &[u8]);

/// A format family's entry in [`FORMATS`].
pub(crate) struct Format {
    /// For listings and tests.
    pub name: &'static str,
    /// When `sniff` is tried: lower first. Types told by a magic at offset
    /// 0 come first (10 to 240), then those told by a marker further in
    /// (PDF 250, ISO 9660 260, tar 270), then by their content (mail 280,
    /// text 300), and a raw LZMA stream, which has no magic, last (310).
    pub rank: u16,
    /// The types this module unpacks.
    pub unpacks: &'static [FileType],
    /// This module's type of an object, from its first bytes, if it is one.
    pub sniff: fn(&[u8]) -> Option<FileType>,
    pub unpack: Unpack,
}

/// Every format family, each added by its own module.
#[distributed_slice]
pub(crate) static FORMATS: [Format];

/// [`FORMATS`] in sniffing order.
fn by_rank() -> &'static [&'static Format] {
    static SORTED: OnceLock<Vec<&'static Format>> = OnceLock::new();
    SORTED.get_or_init(|| {
        let mut all: Vec<&Format> = FORMATS.iter().collect();
        all.sort_by_key(|f| (f.rank, f.name));
        all
    })
}

/// The type of `data`, from its first bytes: the first format (in rank
/// order) that recognises it, else [`FileType::Binary`].
pub fn detect(data: &[u8]) -> FileType {
    if data.is_empty() {
        return FileType::Empty;
    }
    by_rank().iter().find_map(|f| (f.sniff)(data)).unwrap_or(FileType::Binary)
}

/// The unpacker of each container type.
pub(crate) fn unpacker(ty: FileType) -> Option<Unpack> {
    FORMATS.iter().find(|f| f.unpacks.contains(&ty)).map(|f| f.unpack)
}

/// Whether the walk goes on with the next sibling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// No further sibling may be read (a submission-wide limit).
    Stop,
}

/// The path of a child object: `parent/name`, or just `name` under the root,
/// whose path is empty (a submission's own name is the client's, not part of
/// its content).
pub(crate) fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") }
}

/// Reads one child, producing at most the cap it is given.
pub(crate) type Read<'a> = Box<dyn FnOnce(u64) -> Result<MemberData, String> + 'a>;

/// What the walk offers a format module (implemented by the walk itself).
pub(crate) trait Walker {
    /// Admit one child under the limits, read it with the tightest cap and
    /// scan it. `stored_size` is what the child occupies in its parent.
    fn extract(&mut self, child: &str, stored_size: u64, depth: u32, parent: FileType, read: Read<'_>) -> Flow;
    /// What the walk has found so far.
    fn tally(&mut self) -> &mut Tally;
    fn limits(&self) -> &Limits;
    fn deadline(&self) -> &Deadline;
}

/// One container being unpacked: its place in the submission, and the way
/// to the walk for its children and findings.
pub(crate) struct Container<'a> {
    pub(crate) walker: &'a mut dyn Walker,
    /// Object path of the container (`""` for the submission itself).
    pub(crate) path: &'a str,
    pub(crate) depth: u32,
    pub(crate) ty: FileType,
}

impl Container<'_> {
    pub(crate) fn limits(&self) -> &Limits {
        self.walker.limits()
    }

    /// A clone to move into decoders (checked in their loops).
    pub(crate) fn deadline(&self) -> Deadline {
        self.walker.deadline().clone()
    }

    /// Hand a child to the walk; `read(cap)` produces at most `cap` bytes.
    /// `Stop` means no further sibling may be read (a submission-wide limit).
    pub(crate) fn member(&mut self, name: &str, stored_size: u64, read: impl FnOnce(u64) -> Result<MemberData, String>) -> Flow {
        let child = join(self.path, name);
        self.walker.extract(&child, stored_size, self.depth, self.ty, Box::new(read))
    }

    /// A child already whole in memory (a decoded mail part, an RTF
    /// object, an mbox message): its footprint is its own size, so the
    /// ratio cap never bites; the other limits do. An owned buffer that fits
    /// is moved, not copied.
    pub(crate) fn buffer(&mut self, name: &str, data: Cow<'_, [u8]>) -> Flow {
        let len = data.len() as u64;
        let deadline = self.deadline();
        self.member(name, len, move |cap| {
            Ok(match data {
                Cow::Owned(v) if v.len() as u64 <= cap => MemberData::whole(v),
                other => read_capped(&other[..], cap, len, &deadline),
            })
        })
    }

    /// Something about this container could not be read.
    pub(crate) fn error(&mut self, what: impl std::fmt::Display) {
        let message = at(self.path, what);
        self.walker.tally().errors.push(message);
    }

    /// Something about child `name` could not be read.
    pub(crate) fn member_error(&mut self, name: &str, what: impl std::fmt::Display) {
        let message = format!("{}: {what}", join(self.path, name));
        self.walker.tally().errors.push(message);
    }

    /// A child (or, with `None`, the container itself) is encrypted.
    pub(crate) fn encrypted(&mut self, name: Option<&str>) {
        let object = name.map_or_else(|| self.path.to_string(), |n| join(self.path, n));
        self.walker.tally().encrypted.push(object);
    }

    /// The container is built like an attack on scanners: a `suspicious`
    /// detection of the engine itself, in the `qala` namespace.
    pub(crate) fn heuristic(&mut self, rule: &str, description: &str) {
        let detection = Detection {
            rule: rule.to_string(),
            namespace: "qala".to_string(),
            tags: vec!["heuristic".to_string()],
            meta: vec![("description".to_string(), description.to_string())],
            object: self.path.to_string(),
            severity: Severity::Suspicious,
            techniques: Vec::new(),
        };
        self.walker.tally().detections.push(detection);
    }

    /// Metadata of the container itself (a message's headers).
    pub(crate) fn meta(&mut self, meta: Vec<(String, String)>) {
        if !meta.is_empty() {
            let object = self.path.to_string();
            self.walker.tally().object_meta.push(ObjectMeta { object, meta });
        }
    }
}

/// `what`, prefixed with the object it is about (nothing for the root).
pub(crate) fn at(path: &str, what: impl std::fmt::Display) -> String {
    if path.is_empty() { what.to_string() } else { format!("{path}: {what}") }
}

/// A regular file inside an uncompressed archive: where its bytes are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// Most members listed from one archive; the object limit applies anyway,
/// this bounds the listing itself.
pub(crate) const MAX_LISTED: usize = 100_000;

/// The entries a file-system walk (`fat`, `ntfs`, `ext`) has listed: it
/// stops at [`MAX_LISTED`] of them, saying so, or at the deadline.
#[derive(Default)]
pub(crate) struct Listing(usize);

impl Listing {
    /// Whether one more entry may be listed.
    pub(crate) fn next(&mut self, c: &mut Container<'_>, kind: &str) -> bool {
        if self.0 >= MAX_LISTED {
            c.error(format!("{kind}: more than {MAX_LISTED} entries; the rest not listed"));
            return false;
        }
        self.0 += 1;
        !c.deadline().passed()
    }
}

/// Hand the members of an uncompressed archive to the walk, read straight
/// from the input slice.
pub(crate) fn unpack_slots(c: &mut Container<'_>, data: &[u8], slots: Vec<Slot>, error: Option<String>) {
    if let Some(e) = error {
        c.error(e);
    }
    for m in slots {
        let deadline = c.deadline();
        let flow = c.member(&m.name, m.size, |cap| {
            let start = (m.offset as usize).min(data.len());
            let end = start.saturating_add(m.size as usize).min(data.len());
            let mut member = read_capped(&data[start..end], cap, m.size, &deadline);
            if ((end - start) as u64) < m.size && member.error.is_none() {
                member.error = Some(format!("truncated: {} of {} bytes present", end - start, m.size));
            }
            Ok(member)
        });
        if flow == Flow::Stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_is_listed_once_and_every_container_type_has_an_unpacker() {
        let mut names: Vec<&str> = FORMATS.iter().map(|f| f.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a name listed twice: {names:?}");
        assert!(n >= 24, "{names:?}");
        for ty in FileType::ALL {
            let unpacked = FORMATS.iter().filter(|f| f.unpacks.contains(&ty)).count();
            assert!(unpacked <= 1, "{ty:?} unpacked by {unpacked} formats");
            assert_eq!(unpacked == 1, ty.is_container() || ty.is_executable() || ty == FileType::Binary, "{ty:?}");
        }
    }

    #[test]
    fn magics() {
        assert_eq!(detect(b""), FileType::Empty);
        // LZMA alone: props 0x5D, 8 MiB dictionary, unknown or plausible size.
        let lzma = [&[0x5D, 0, 0, 0x80, 0][..], &[0xFF; 8], b"\x00\x12\x34"].concat();
        assert_eq!(detect(&lzma), FileType::Lzma);
        let sized = [&[0x5D, 0, 0, 0x30, 0][..], &1234u64.to_le_bytes(), b"\x00\x12\x34"].concat();
        assert_eq!(detect(&sized), FileType::Lzma, "3 MiB = 2^21 + 2^20 is a valid dictionary");
        let odd_dict = [&[0x5D, 0x01, 0, 0x80, 0][..], &[0xFF; 8], b"\x00\x12\x34"].concat();
        assert_eq!(detect(&odd_dict), FileType::Binary);
        let huge = [&[0x5D, 0, 0, 0x80, 0][..], &(1u64 << 50).to_le_bytes(), b"\x00"].concat();
        assert_eq!(detect(&huge), FileType::Binary);
        assert_eq!(detect(b"PK\x03\x04rest"), FileType::Zip);
        assert_eq!(detect(b"MZ\x90\x00"), FileType::Pe);
        assert_eq!(detect(b"\x7fELF\x02\x01"), FileType::Elf);
        assert_eq!(detect(&[0xCF, 0xFA, 0xED, 0xFE, 7, 0, 0, 1]), FileType::MachO);
        assert_eq!(detect(&[0xCA, 0xFE, 0xBA, 0xBE, 0, 0, 0, 2]), FileType::MachOFat);
        assert_eq!(detect(&[0xCA, 0xFE, 0xBA, 0xBE, 0, 0, 0, 52]), FileType::JavaClass);
        assert_eq!(detect(&[0x1F, 0x8B, 8, 0]), FileType::Gzip);
        assert_eq!(detect(b"%PDF-1.7\n"), FileType::Pdf);
        assert_eq!(detect(b"hello world\n"), FileType::Text);
        assert_eq!(detect(b"Subject: x\nFrom: a@b\n\nhi"), FileType::Mail);
        assert_eq!(detect(b"From x Mon\nSubject: x\nDate: y\n\nhi"), FileType::Mbox);
        assert_eq!(detect(&[0u8, 1, 2, 3, 200]), FileType::Binary);
        // A magic at offset 0 wins over a marker further in.
        assert_eq!(detect(b"PK\x03\x04 %PDF-1.4"), FileType::Zip);
    }
}
