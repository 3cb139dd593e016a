//! File type detection by magic bytes. Only the first bytes of an object are
//! looked at; the answer decides which unpacker or parser runs.

/// Types the engine tells apart. Containers are unpacked, executables
/// summarised; everything is scanned by the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    Zip,
    /// Office Open XML documents (zip packages, told by their main part).
    Docx,
    Xlsx,
    Pptx,
    Pe,
    Elf,
    MachO,
    MachOFat,
    JavaClass,
    Gzip,
    Bzip2,
    Xz,
    /// A raw LZMA stream with the 13-byte "LZMA alone" header (`.lzma`).
    Lzma,
    Zstd,
    SevenZip,
    Rar,
    Cab,
    Pdf,
    Ole2,
    Rtf,
    Tar,
    /// Unix `ar` archive (static libraries, Debian packages).
    Ar,
    Cpio,
    /// ISO 9660 CD/DVD image.
    Iso,
    /// An RFC 822 / MIME message.
    Mail,
    /// An mbox file: messages after `From ` separator lines.
    Mbox,
    /// Outlook's TNEF attachment wrapper (`winmail.dat`).
    Tnef,
    /// MS-DOS `COMPRESS.EXE` output: SZDD or KWAJ (`setup.ex_`).
    MsCompress,
    /// Symbian installation file (EPOC release 3 to 6).
    Sis,
    /// ARJ archive.
    Arj,
    /// Compiled HTML Help (`.chm`, ITSF).
    Chm,
    /// LHA/LZH archive.
    Lha,
    /// SquashFS image.
    Squashfs,
    /// Windows Imaging (WIM) file.
    Wim,
    Text,
    Empty,
    Binary,
}

impl FileType {
    /// Detect the type of `data` from its leading bytes.
    pub fn detect(data: &[u8]) -> FileType {
        let starts = |m: &[u8]| data.starts_with(m);
        if data.is_empty() {
            return FileType::Empty;
        }
        if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") || starts(b"PK\x07\x08") {
            return ooxml_kind(data).unwrap_or(FileType::Zip);
        }
        if starts(b"MZ") {
            return FileType::Pe;
        }
        if starts(b"\x7fELF") {
            return FileType::Elf;
        }
        if starts(&[0xFE, 0xED, 0xFA, 0xCE])
            || starts(&[0xFE, 0xED, 0xFA, 0xCF])
            || starts(&[0xCE, 0xFA, 0xED, 0xFE])
            || starts(&[0xCF, 0xFA, 0xED, 0xFE])
        {
            return FileType::MachO;
        }
        if starts(&[0xCA, 0xFE, 0xBA, 0xBE]) {
            // Java class files share the magic; their next field is a
            // version (>= 45), a fat header's is a small architecture count.
            let n = data.get(4..8).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            return match n {
                Some(n) if n > 0 && n < 30 => FileType::MachOFat,
                _ => FileType::JavaClass,
            };
        }
        if starts(&[0x1F, 0x8B]) {
            return FileType::Gzip;
        }
        if starts(b"BZh") {
            return FileType::Bzip2;
        }
        if starts(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
            return FileType::Xz;
        }
        if starts(&[0x28, 0xB5, 0x2F, 0xFD]) {
            return FileType::Zstd;
        }
        if starts(&[b'7', b'z', 0xBC, 0xAF, 0x27, 0x1C]) {
            return FileType::SevenZip;
        }
        if starts(b"Rar!\x1A\x07") {
            return FileType::Rar;
        }
        if starts(b"MSCF") {
            return FileType::Cab;
        }
        if starts(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
            return FileType::Ole2;
        }
        if starts(b"!<arch>\n") {
            return FileType::Ar;
        }
        if starts(b"070701") || starts(b"070702") || starts(b"070707") || starts(&[0xC7, 0x71]) || starts(&[0x71, 0xC7]) {
            return FileType::Cpio;
        }
        if starts(crate::formats::tnef::MAGIC) {
            return FileType::Tnef;
        }
        if starts(crate::formats::msexpand::SZDD_MAGIC) || starts(crate::formats::msexpand::KWAJ_MAGIC) {
            return FileType::MsCompress;
        }
        if crate::formats::sis::is_sis(data) {
            return FileType::Sis;
        }
        if starts(&[0x60, 0xEA]) && data.len() > 10 {
            return FileType::Arj;
        }
        if starts(b"ITSF\x03\0\0\0") {
            return FileType::Chm;
        }
        if starts(crate::formats::wim::MAGIC) {
            return FileType::Wim;
        }
        if starts(crate::formats::squashfs::MAGIC) {
            return FileType::Squashfs;
        }
        if crate::formats::lha::is_lha(data) {
            return FileType::Lha;
        }
        if starts(b"{\\rtf") {
            return FileType::Rtf;
        }
        // PDF readers accept the header anywhere in the first KiB.
        if memfind(&data[..data.len().min(1024)], b"%PDF-").is_some() {
            return FileType::Pdf;
        }
        if crate::formats::iso::is_iso9660(data) {
            return FileType::Iso;
        }
        if data.len() >= 262 && &data[257..262] == b"ustar" {
            return FileType::Tar;
        }
        if data.starts_with(b"From ") && crate::formats::mail::looks_like_mail(data, true) {
            return FileType::Mbox;
        }
        if crate::formats::mail::looks_like_mail(data, false) {
            return FileType::Mail;
        }
        if looks_like_text(&data[..data.len().min(8192)]) {
            return FileType::Text;
        }
        if looks_like_lzma_alone(data) {
            return FileType::Lzma;
        }
        FileType::Binary
    }

    /// Name used in verdicts and the `qala_file_type` rule global.
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::Zip => "zip",
            FileType::Docx => "docx",
            FileType::Xlsx => "xlsx",
            FileType::Pptx => "pptx",
            FileType::Pe => "pe",
            FileType::Elf => "elf",
            FileType::MachO => "macho",
            FileType::MachOFat => "macho-fat",
            FileType::JavaClass => "java-class",
            FileType::Gzip => "gzip",
            FileType::Bzip2 => "bzip2",
            FileType::Xz => "xz",
            FileType::Lzma => "lzma",
            FileType::Zstd => "zstd",
            FileType::SevenZip => "7z",
            FileType::Rar => "rar",
            FileType::Cab => "cab",
            FileType::Pdf => "pdf",
            FileType::Ole2 => "ole2",
            FileType::Rtf => "rtf",
            FileType::Tar => "tar",
            FileType::Ar => "ar",
            FileType::Cpio => "cpio",
            FileType::Iso => "iso9660",
            FileType::Mail => "mail",
            FileType::Mbox => "mbox",
            FileType::Tnef => "tnef",
            FileType::MsCompress => "ms-compress",
            FileType::Sis => "sis",
            FileType::Arj => "arj",
            FileType::Chm => "chm",
            FileType::Lha => "lha",
            FileType::Squashfs => "squashfs",
            FileType::Wim => "wim",
            FileType::Text => "text",
            FileType::Empty => "empty",
            FileType::Binary => "binary",
        }
    }

    /// Containers the engine unpacks.
    pub fn is_container(self) -> bool {
        matches!(
            self,
            FileType::Zip
                | FileType::Docx
                | FileType::Xlsx
                | FileType::Pptx
                | FileType::Tar
                | FileType::Gzip
                | FileType::Bzip2
                | FileType::Xz
                | FileType::Lzma
                | FileType::Zstd
                | FileType::Mail
                | FileType::Mbox
                | FileType::Ole2
                | FileType::Ar
                | FileType::Cpio
                | FileType::Iso
                | FileType::SevenZip
                | FileType::Cab
                | FileType::Pdf
                | FileType::Rtf
                | FileType::Text
                | FileType::Tnef
                | FileType::MsCompress
                | FileType::Sis
                | FileType::Arj
                | FileType::Chm
                | FileType::Rar
                | FileType::Lha
                | FileType::Squashfs
                | FileType::Wim
        )
    }

    /// Executable formats that get a goblin summary.
    pub fn is_executable(self) -> bool {
        matches!(self, FileType::Pe | FileType::Elf | FileType::MachO | FileType::MachOFat)
    }
}

impl FileType {
    /// Word, Excel and PowerPoint documents in the OOXML format.
    pub fn is_ooxml(self) -> bool {
        matches!(self, FileType::Docx | FileType::Xlsx | FileType::Pptx)
    }
}

/// A zip package is an OOXML document when its central directory (in the
/// last 256 KiB) names `[Content_Types].xml` and the main part of a kind.
fn ooxml_kind(data: &[u8]) -> Option<FileType> {
    let tail = &data[data.len().saturating_sub(256 * 1024)..];
    memfind(tail, b"[Content_Types].xml")?;
    [(&b"word/document.xml"[..], FileType::Docx), (b"xl/workbook.xml", FileType::Xlsx), (b"ppt/presentation.xml", FileType::Pptx)]
        .into_iter()
        .find(|(part, _)| memfind(tail, part).is_some())
        .map(|(_, ty)| ty)
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Printable ASCII / UTF-8 with no NUL bytes and few control characters.
fn looks_like_text(sample: &[u8]) -> bool {
    if sample.contains(&0) {
        return false;
    }
    let control = sample.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C | 0x1B)).count();
    control * 100 <= sample.len()
}

/// The "LZMA alone" header has no magic: a properties byte (lc/lp/pb, 0x5D
/// from every common encoder, at most 224), a dictionary size that encoders
/// write as 2^n or 2^n + 2^(n-1) between 4 KiB and 1.5 GiB, and an
/// uncompressed size that is either unknown (all ones) or plausible. The
/// check runs after every magic-based type, on binary data only.
fn looks_like_lzma_alone(data: &[u8]) -> bool {
    let Some(header) = data.get(..13) else { return false };
    let dict = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    let size = u64::from_le_bytes(header[5..13].try_into().expect("8 bytes"));
    let dict_ok = (1 << 12..=3 << 29).contains(&dict) && {
        let high = 1u32 << (31 - dict.leading_zeros());
        dict == high || dict == high | (high >> 1)
    };
    header[0] <= 224 && dict_ok && (size == u64::MAX || size < 1 << 40) && data.len() > 13
}

#[cfg(test)]
mod tests {
    use super::FileType;

    #[test]
    fn magics() {
        assert_eq!(FileType::detect(b""), FileType::Empty);
        // LZMA alone: props 0x5D, 8 MiB dictionary, unknown or plausible size.
        let lzma = [&[0x5D, 0, 0, 0x80, 0][..], &[0xFF; 8], b"\x00\x12\x34"].concat();
        assert_eq!(FileType::detect(&lzma), FileType::Lzma);
        let sized = [&[0x5D, 0, 0, 0x30, 0][..], &1234u64.to_le_bytes(), b"\x00\x12\x34"].concat();
        assert_eq!(FileType::detect(&sized), FileType::Lzma, "3 MiB = 2^21 + 2^20 is a valid dictionary");
        let odd_dict = [&[0x5D, 0x01, 0, 0x80, 0][..], &[0xFF; 8], b"\x00\x12\x34"].concat();
        assert_eq!(FileType::detect(&odd_dict), FileType::Binary);
        let huge = [&[0x5D, 0, 0, 0x80, 0][..], &(1u64 << 50).to_le_bytes(), b"\x00"].concat();
        assert_eq!(FileType::detect(&huge), FileType::Binary);
        assert_eq!(FileType::detect(b"PK\x03\x04rest"), FileType::Zip);
        assert_eq!(FileType::detect(b"MZ\x90\x00"), FileType::Pe);
        assert_eq!(FileType::detect(b"\x7fELF\x02\x01"), FileType::Elf);
        assert_eq!(FileType::detect(&[0xCF, 0xFA, 0xED, 0xFE, 7, 0, 0, 1]), FileType::MachO);
        assert_eq!(FileType::detect(&[0xCA, 0xFE, 0xBA, 0xBE, 0, 0, 0, 2]), FileType::MachOFat);
        assert_eq!(FileType::detect(&[0xCA, 0xFE, 0xBA, 0xBE, 0, 0, 0, 52]), FileType::JavaClass);
        assert_eq!(FileType::detect(&[0x1F, 0x8B, 8, 0]), FileType::Gzip);
        assert_eq!(FileType::detect(b"%PDF-1.7\n"), FileType::Pdf);
        assert_eq!(FileType::detect(b"hello world\n"), FileType::Text);
        assert_eq!(FileType::detect(b"Subject: x\nFrom: a@b\n\nhi"), FileType::Mail);
        assert_eq!(FileType::detect(b"From x Mon\nSubject: x\nDate: y\n\nhi"), FileType::Mbox);
        assert_eq!(FileType::detect(&[0u8, 1, 2, 3, 200]), FileType::Binary);
    }
}
