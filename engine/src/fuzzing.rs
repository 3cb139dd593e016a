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
use crate::walk::{NoInspection, walk};

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
    Some(walk(&mut NoInspection, &limits(), data, "fuzz-input", *ty, None))
}

/// Walk `data` with no rules: what the unpackers alone extract, under
/// `limits` (used by the benchmark to split unpacking from rule time).
pub fn unpack_only(data: &[u8], limits: &Limits) -> Report {
    walk(&mut NoInspection, limits, data, "input", None, None)
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
