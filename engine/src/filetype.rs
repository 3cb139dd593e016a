//! The types the engine tells apart, and their names. Each format module
//! says how it recognises its own ([`crate::formats::detect`]); the type
//! decides which unpacker or parser runs.

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
    /// lzip (`.lz`): LZMA members with a CRC and sizes.
    Lzip,
    /// LZ4 frames (`.lz4`) and the legacy format of `lz4 -l`.
    Lz4,
    /// Unix `compress` (`.Z`): LZW.
    CompressZ,
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
    /// FAT12/16/32 file-system image.
    Fat,
    /// NTFS file-system image.
    Ntfs,
    /// ext2/3/4 file-system image.
    Ext,
    /// A disk's partition table (MBR or GPT) and its partitions.
    Disk,
    /// A virtual disk (VHD) holding a disk image.
    Vhd,
    Text,
    Empty,
    Binary,
}

impl FileType {
    /// Every type.
    pub const ALL: [FileType; 45] = [
        FileType::Zip,
        FileType::Docx,
        FileType::Xlsx,
        FileType::Pptx,
        FileType::Pe,
        FileType::Elf,
        FileType::MachO,
        FileType::MachOFat,
        FileType::JavaClass,
        FileType::Gzip,
        FileType::Bzip2,
        FileType::Xz,
        FileType::Lzma,
        FileType::Zstd,
        FileType::Lzip,
        FileType::Lz4,
        FileType::CompressZ,
        FileType::SevenZip,
        FileType::Rar,
        FileType::Cab,
        FileType::Pdf,
        FileType::Ole2,
        FileType::Rtf,
        FileType::Tar,
        FileType::Ar,
        FileType::Cpio,
        FileType::Iso,
        FileType::Mail,
        FileType::Mbox,
        FileType::Tnef,
        FileType::MsCompress,
        FileType::Sis,
        FileType::Arj,
        FileType::Chm,
        FileType::Lha,
        FileType::Squashfs,
        FileType::Wim,
        FileType::Fat,
        FileType::Ntfs,
        FileType::Ext,
        FileType::Disk,
        FileType::Vhd,
        FileType::Text,
        FileType::Empty,
        FileType::Binary,
    ];

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
            FileType::Lzip => "lzip",
            FileType::Lz4 => "lz4",
            FileType::CompressZ => "compress",
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
            FileType::Fat => "fat",
            FileType::Ntfs => "ntfs",
            FileType::Ext => "ext",
            FileType::Disk => "disk",
            FileType::Vhd => "vhd",
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
                | FileType::Lzip
                | FileType::Lz4
                | FileType::CompressZ
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
                | FileType::Fat
                | FileType::Ntfs
                | FileType::Ext
                | FileType::Disk
                | FileType::Vhd
        )
    }

    /// Executable formats that get a goblin summary.
    pub fn is_executable(self) -> bool {
        matches!(self, FileType::Pe | FileType::Elf | FileType::MachO | FileType::MachOFat)
    }

    /// Word, Excel and PowerPoint documents in the OOXML format.
    pub fn is_ooxml(self) -> bool {
        matches!(self, FileType::Docx | FileType::Xlsx | FileType::Pptx)
    }
}

#[cfg(test)]
mod tests {
    use super::FileType;

    #[test]
    fn names_are_distinct() {
        let mut names: Vec<&str> = FileType::ALL.iter().map(|t| t.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FileType::ALL.len());
    }
}
