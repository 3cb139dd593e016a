//! Entry points for the fuzz targets in `fuzz/` and for the test that
//! replays their corpus (`engine/tests/fuzz_corpus.rs`).
//!
//! Each target forces one unpacker (or the executable parser) on arbitrary
//! bytes, whatever their magic says, and walks everything it extracts under
//! tight limits with no rules: only the parsers are under test. A target
//! "fails" only by panicking out of [`run`] or by running away with memory
//! or time, which is what the fuzzers catch; a report with errors is the
//! expected outcome for most inputs.

use crate::filetype::FileType;
use crate::limits::Limits;
use crate::report::Report;
use crate::walk::{NoInspection, Root, walk};

/// Every fuzz target: its name (the directory of its corpus) and the type
/// its input is forced to. `any` detects the type as a worker does.
pub const TARGETS: &[(&str, Option<FileType>)] = &[
    ("any", None),
    ("zip", Some(FileType::Zip)),
    ("gzip", Some(FileType::Gzip)),
    ("bzip2", Some(FileType::Bzip2)),
    ("xz", Some(FileType::Xz)),
    ("lzma", Some(FileType::Lzma)),
    ("zstd", Some(FileType::Zstd)),
    ("lzip", Some(FileType::Lzip)),
    ("lz4", Some(FileType::Lz4)),
    ("compress_z", Some(FileType::CompressZ)),
    ("records", Some(FileType::Text)),
    ("fat", Some(FileType::Fat)),
    ("ntfs", Some(FileType::Ntfs)),
    ("ext", Some(FileType::Ext)),
    ("disk", Some(FileType::Disk)),
    ("vhd", Some(FileType::Vhd)),
    ("tar", Some(FileType::Tar)),
    ("cpio", Some(FileType::Cpio)),
    ("ar", Some(FileType::Ar)),
    ("iso9660", Some(FileType::Iso)),
    ("sevenz", Some(FileType::SevenZip)),
    ("cab", Some(FileType::Cab)),
    ("ole2", Some(FileType::Ole2)),
    ("pdf", Some(FileType::Pdf)),
    ("rtf", Some(FileType::Rtf)),
    ("mail", Some(FileType::Mail)),
    ("mbox", Some(FileType::Mbox)),
    ("pe", Some(FileType::Pe)),
    ("elf", Some(FileType::Elf)),
    ("macho", Some(FileType::MachO)),
    ("macho_fat", Some(FileType::MachOFat)),
    ("text", Some(FileType::Text)),
    ("tnef", Some(FileType::Tnef)),
    ("ms_compress", Some(FileType::MsCompress)),
    ("sis", Some(FileType::Sis)),
    ("arj", Some(FileType::Arj)),
    ("carve", Some(FileType::Binary)),
    ("upx_elf", Some(FileType::Elf)),
    ("chm", Some(FileType::Chm)),
    ("rar", Some(FileType::Rar)),
    ("lha", Some(FileType::Lha)),
    ("squashfs", Some(FileType::Squashfs)),
    ("wim", Some(FileType::Wim)),
    ("installshield", Some(FileType::Pe)),
    ("emu", Some(FileType::Pe)),
    ("wwpack", Some(FileType::Pe)),
    ("iscab", Some(FileType::Pe)),
    ("wim_lzx", Some(FileType::Wim)),
];

/// The worker's own default limits, so the fuzzers see what production
/// does (10,000 objects, 400 MiB extracted, ...), with a lower memory budget
/// for the sanitizer's overhead under libFuzzer's 2 GiB RSS limit.
pub fn limits() -> Limits {
    Limits { max_scan_memory: 256 << 20, ..Limits::default() }
}

/// Walk `data` as target `target` would; `None` for an unknown target name.
pub fn run(target: &str, data: &[u8]) -> Option<Report> {
    let (_, ty) = TARGETS.iter().find(|(name, _)| *name == target)?;
    Some(walk(&mut NoInspection, &limits(), data, "fuzz-input", *ty, None, Root::Hash, Default::default()))
}

/// Walk `data` with no rules: what the unpackers alone extract, under
/// `limits` (used by the benchmark to split unpacking from rule time).
pub fn unpack_only(data: &[u8], limits: &Limits) -> Report {
    walk(&mut NoInspection, limits, data, "input", None, None, Root::Hash, Default::default())
}

/// Make the fuzzer see only the panics that are bugs of ours.
///
/// libfuzzer-sys aborts on every panic, caught or not. The engine contains
/// panics of the third-party parsers it calls (goblin, cab, cfb, ...) by
/// design: those become an error in the report, and fuzzing them is their
/// authors' job. A panic raised in our own code (or escaping [`run`]) still
/// aborts, so our readers are held to "never panic". Call it first thing in
/// every fuzz target; it installs the filter once.
pub fn abort_on_own_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let foreign = info.location().is_some_and(|l| l.file().contains("/.cargo/registry/"));
            if !foreign {
                fuzzer_hook(info);
            }
        }));
    });
}

/// An NRV2B (32-bit bit words) stream of `data` as literals only, then the
/// end-of-stream marker: what UPX's method 2 decoder reads. For seeds and
/// tests (no UPX is installed here to make real ones).
pub fn nrv2b_literals(data: &[u8]) -> Vec<u8> {
    #[derive(Default)]
    struct Writer {
        bytes: Vec<u8>,
        word_at: Option<usize>,
        word: u32,
        used: u32,
    }
    impl Writer {
        fn bit(&mut self, b: u32) {
            if self.word_at.is_none() || self.used == 32 {
                self.flush();
                self.word_at = Some(self.bytes.len());
                self.bytes.extend_from_slice(&[0; 4]);
                self.word = 0;
                self.used = 0;
            }
            self.word |= b << (31 - self.used);
            self.used += 1;
        }
        fn flush(&mut self) {
            if let Some(at) = self.word_at {
                self.bytes[at..at + 4].copy_from_slice(&self.word.to_le_bytes());
            }
        }
    }
    let mut w = Writer::default();
    for &b in data {
        w.bit(1);
        w.bytes.push(b);
    }
    // A match whose offset word is 0xFFFFFFFF ends the stream: high part
    // 0x1000002 in the gamma code, then the low byte 0xFF.
    w.bit(0);
    let off: u32 = 0x0100_0002;
    let n = 32 - off.leading_zeros();
    for i in (0..n - 1).rev() {
        w.bit(off >> i & 1);
        w.bit(u32::from(i == 0));
    }
    w.bytes.push(0xFF);
    w.flush();
    w.bytes
}

/// A WWPack32 bit stream as its stub reads it: 32-bit words reserved as
/// soon as the previous one is used up, literal bytes in between. For
/// seeds and tests (WWPack32 itself is a Windows program).
pub struct WwpackWriter {
    bytes: Vec<u8>,
    word_at: usize,
    word: u32,
    used: u32,
}

impl Default for WwpackWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl WwpackWriter {
    pub fn new() -> Self {
        Self { bytes: vec![0; 4], word_at: 0, word: 0, used: 0 }
    }

    /// The low `n` bits of `v`, most significant first.
    pub fn bits(&mut self, v: u32, n: u32) {
        for i in (0..n).rev() {
            self.word |= (v >> i & 1) << (31 - self.used);
            self.used += 1;
            if self.used == 32 {
                self.flush();
                self.word_at = self.bytes.len();
                self.bytes.extend_from_slice(&[0; 4]);
                self.word = 0;
                self.used = 0;
            }
        }
    }

    pub fn literal(&mut self, b: u8) {
        self.bits(0, 1);
        self.bytes.push(b);
    }

    fn flush(&mut self) {
        self.bytes[self.word_at..self.word_at + 4].copy_from_slice(&self.word.to_le_bytes());
    }

    /// The end marker (a length-2 match, 9-bit class, offset 0x1FF), then
    /// the stream padded to whole words.
    pub fn finish(mut self) -> Vec<u8> {
        self.bits(1, 1);
        self.bits(3, 2);
        self.bits(3, 2);
        self.bits(0x1FF, 9);
        self.flush();
        self.bytes.resize(self.bytes.len().div_ceil(4) * 4, 0);
        self.bytes
    }
}
