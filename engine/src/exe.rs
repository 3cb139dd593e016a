//! Executable summaries (PE, ELF, Mach-O, fat Mach-O) from goblin.
//!
//! goblin still panics on some malformed inputs, so every parse runs under
//! `catch_unwind`; a panic or a parse error becomes the summary's `error`.
//! Section data is sliced with bounds checks of our own before entropy.

use crate::entropy::shannon;
use crate::filetype::FileType;
use goblin::{elf, mach, pe};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Most import or export names kept per executable.
const MAX_NAMES: usize = 1000;
/// Most symbol-table entries read from one Mach-O (the table declares its
/// own length).
const MAX_SYMBOLS: usize = 1_000_000;

/// Entropy above which a section's data is probably packed or encrypted.
const HIGH_ENTROPY: f64 = 7.2;

/// Section names left by common packers and protectors.
const PACKER_SECTIONS: &[&str] = &[
    "UPX0", "UPX1", "UPX2", "UPX!", ".aspack", ".adata", ".MPRESS1", ".MPRESS2", ".petite", ".nsp0", ".nsp1", ".nsp2", "PEC2",
    ".themida", ".vmp0", ".vmp1", ".enigma1", ".enigma2", "FSG!",
];

/// One section of an executable.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SectionSummary {
    pub name: String,
    pub virtual_address: u64,
    pub virtual_size: u64,
    pub raw_size: u64,
    pub entropy: f64,
    /// `r`, `w`, `x` as the section is readable, writable, executable (`-` when not).
    pub flags: String,
}

fn flags(r: bool, w: bool, x: bool) -> String {
    [(r, 'r'), (w, 'w'), (x, 'x')].iter().map(|&(on, c)| if on { c } else { '-' }).collect()
}

/// What analysts look at first in an executable.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecutableSummary {
    pub object: String,
    pub format: &'static str,
    pub arch: String,
    pub is_64: bool,
    pub entry_point: u64,
    pub sections: Vec<SectionSummary>,
    pub imports: u32,
    pub exports: u32,
    /// Imported symbols (`library!name`), at most 1,000.
    pub import_names: Vec<String>,
    /// Exported symbols, at most 1,000.
    pub export_names: Vec<String>,
    /// Section holding the entry point, if any does.
    pub entry_section: Option<String>,
    /// Bytes after the last byte the headers account for.
    pub overlay_size: u64,
    /// PE resource directory entries (top level).
    pub resources: u32,
    /// PE: a security (Authenticode) directory is present.
    pub signed: bool,
    /// Observations analysts use: `entry_point_outside_first_section`,
    /// `writable_executable_section:NAME`, `high_entropy_section:NAME`,
    /// `packer_section_name:NAME`.
    pub facts: Vec<String>,
    /// Parse failure (or contained panic); the other fields are then partial.
    pub error: Option<String>,
}

impl ExecutableSummary {
    /// Derive `facts` from the sections and entry point.
    fn derive_facts(&mut self, first_section_matters: bool) {
        let mut facts = Vec::new();
        if first_section_matters {
            match (&self.entry_section, self.sections.first()) {
                (None, _) if self.entry_point != 0 => facts.push("entry_point_outside_sections".to_string()),
                (Some(e), Some(first)) if *e != first.name => facts.push("entry_point_outside_first_section".to_string()),
                _ => {}
            }
        }
        for s in &self.sections {
            if s.flags.contains('w') && s.flags.contains('x') {
                facts.push(format!("writable_executable_section:{}", s.name));
            }
            if s.entropy > HIGH_ENTROPY && s.raw_size >= 512 {
                facts.push(format!("high_entropy_section:{}", s.name));
            }
            let bare = s.name.rsplit(',').next().unwrap_or(&s.name);
            if PACKER_SECTIONS.iter().any(|p| p.eq_ignore_ascii_case(bare)) {
                facts.push(format!("packer_section_name:{}", s.name));
            }
        }
        self.facts = facts;
    }
}

fn section_at(sections: &[SectionSummary], addr: u64) -> Option<String> {
    sections
        .iter()
        .find(|s| addr >= s.virtual_address && addr < s.virtual_address.saturating_add(s.virtual_size.max(s.raw_size)))
        .map(|s| s.name.clone())
}

/// Summarise `data` (already detected as `ty`) found at `object`. Returns
/// several summaries for a fat Mach-O (one per architecture).
pub fn summarize_executable(data: &[u8], ty: FileType, object: &str) -> Vec<ExecutableSummary> {
    let format = match ty {
        FileType::Pe => "pe",
        FileType::Elf => "elf",
        FileType::MachO | FileType::MachOFat => "macho",
        _ => return Vec::new(),
    };
    let parsed = catch_unwind(AssertUnwindSafe(|| match ty {
        FileType::Pe => summarize_pe(data).map(|s| vec![s]),
        FileType::Elf => summarize_elf(data).map(|s| vec![s]),
        _ => summarize_mach(data),
    }));
    let failed =
        |error: String| vec![ExecutableSummary { object: object.to_string(), format, error: Some(error), ..Default::default() }];
    match parsed {
        Ok(Ok(mut list)) => {
            for s in &mut list {
                s.object = if s.object.is_empty() { object.to_string() } else { format!("{object}#{}", s.object) };
            }
            list
        }
        Ok(Err(e)) => failed(format!("{format} parse error: {e}")),
        Err(panic) => failed(format!("{format} parser panicked: {}", panic_message(&panic))),
    }
}

/// Text of a caught panic payload.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

fn slice(data: &[u8], offset: u64, size: u64) -> &[u8] {
    let start = (offset as usize).min(data.len());
    let end = start.saturating_add(size as usize).min(data.len());
    &data[start..end]
}

fn summarize_pe(data: &[u8]) -> Result<ExecutableSummary, goblin::error::Error> {
    use goblin::pe::section_table::{IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_READ, IMAGE_SCN_MEM_WRITE};
    let pe = pe::PE::parse(data)?;
    let sections: Vec<SectionSummary> = pe
        .sections
        .iter()
        .map(|s| SectionSummary {
            name: s.name().unwrap_or("").trim_end_matches('\0').to_string(),
            virtual_address: s.virtual_address as u64,
            virtual_size: s.virtual_size as u64,
            raw_size: s.size_of_raw_data as u64,
            entropy: shannon(slice(data, s.pointer_to_raw_data as u64, s.size_of_raw_data as u64)),
            flags: flags(
                s.characteristics & IMAGE_SCN_MEM_READ != 0,
                s.characteristics & IMAGE_SCN_MEM_WRITE != 0,
                s.characteristics & IMAGE_SCN_MEM_EXECUTE != 0,
            ),
        })
        .collect();
    let headers_end = pe.header.optional_header.map(|o| o.windows_fields.size_of_headers as u64).unwrap_or(0);
    let image_end = pe
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data > 0)
        .map(|s| s.pointer_to_raw_data as u64 + s.size_of_raw_data as u64)
        .fold(headers_end, u64::max);
    // The per-directory getters, not `dirs()`: the latter unwraps an index
    // conversion that panics on some malformed headers (goblin 0.10.7).
    let dirs = pe.header.optional_header.map(|o| o.data_directories);
    let signed = dirs.and_then(|d| d.get_certificate_table().copied()).is_some_and(|d| d.size > 0);
    let resources = dirs
        .and_then(|d| d.get_resource_table().copied())
        .and_then(|d| rva_to_offset(&pe.sections, d.virtual_address))
        .and_then(|off| {
            // IMAGE_RESOURCE_DIRECTORY: named and id entry counts at +12, +14.
            let b = data.get(off + 12..off + 16)?;
            Some(u16::from_le_bytes([b[0], b[1]]) as u32 + u16::from_le_bytes([b[2], b[3]]) as u32)
        })
        .unwrap_or(0);
    let entry = pe.entry as u64;
    let mut summary = ExecutableSummary {
        format: "pe",
        arch: pe::header::machine_to_str(pe.header.coff_header.machine).to_string(),
        is_64: pe.is_64,
        entry_point: entry,
        entry_section: section_at(&sections, entry),
        sections,
        imports: pe.imports.len() as u32,
        exports: pe.exports.len() as u32,
        import_names: pe.imports.iter().take(MAX_NAMES).map(|i| format!("{}!{}", i.dll, i.name)).collect(),
        export_names: pe.exports.iter().filter_map(|e| e.name).take(MAX_NAMES).map(str::to_string).collect(),
        overlay_size: (data.len() as u64).saturating_sub(image_end),
        resources,
        signed,
        ..Default::default()
    };
    summary.derive_facts(true);
    Ok(summary)
}

fn rva_to_offset(sections: &[pe::section_table::SectionTable], rva: u32) -> Option<usize> {
    sections.iter().find_map(|s| {
        let size = s.virtual_size.max(s.size_of_raw_data);
        (rva >= s.virtual_address && rva < s.virtual_address.saturating_add(size))
            .then(|| (rva - s.virtual_address) as usize + s.pointer_to_raw_data as usize)
    })
}

fn summarize_elf(data: &[u8]) -> Result<ExecutableSummary, goblin::error::Error> {
    use elf::section_header::{SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_NOBITS};
    let elf = elf::Elf::parse(data)?;
    let sections: Vec<SectionSummary> = elf
        .section_headers
        .iter()
        .filter(|sh| sh.sh_type != elf::section_header::SHT_NULL)
        .map(|sh| {
            let bytes = if sh.sh_type == SHT_NOBITS { &[][..] } else { slice(data, sh.sh_offset, sh.sh_size) };
            SectionSummary {
                name: elf.shdr_strtab.get_at(sh.sh_name).unwrap_or("").to_string(),
                virtual_address: sh.sh_addr,
                virtual_size: sh.sh_size,
                raw_size: bytes.len() as u64,
                entropy: shannon(bytes),
                flags: flags(
                    sh.sh_flags & SHF_ALLOC as u64 != 0,
                    sh.sh_flags & SHF_WRITE as u64 != 0,
                    sh.sh_flags & SHF_EXECINSTR as u64 != 0,
                ),
            }
        })
        .collect();
    let sections_end = elf
        .section_headers
        .iter()
        .filter(|sh| sh.sh_type != SHT_NOBITS)
        .map(|sh| sh.sh_offset.saturating_add(sh.sh_size))
        .chain(elf.program_headers.iter().map(|ph| ph.p_offset.saturating_add(ph.p_filesz)))
        .chain(std::iter::once(elf.header.e_shoff.saturating_add(elf.header.e_shnum as u64 * elf.header.e_shentsize as u64)))
        .max()
        .unwrap_or(0);
    let named = || elf.dynsyms.iter().filter(|s| s.st_name != 0);
    let name = |s: &elf::Sym| elf.dynstrtab.get_at(s.st_name).unwrap_or("").to_string();
    let mut summary = ExecutableSummary {
        format: "elf",
        arch: elf::header::machine_to_str(elf.header.e_machine).to_string(),
        is_64: elf.is_64,
        entry_point: elf.entry,
        entry_section: section_at(&sections, elf.entry),
        sections,
        imports: named().filter(|s| s.is_import()).count() as u32,
        exports: named().filter(|s| !s.is_import() && s.st_bind() != elf::sym::STB_LOCAL).count() as u32,
        import_names: named().filter(|s| s.is_import()).take(MAX_NAMES).map(|s| name(&s)).collect(),
        export_names: named()
            .filter(|s| !s.is_import() && s.st_bind() != elf::sym::STB_LOCAL)
            .take(MAX_NAMES)
            .map(|s| name(&s))
            .collect(),
        overlay_size: (data.len() as u64).saturating_sub(sections_end),
        ..Default::default()
    };
    // An ELF's first section is rarely its code: that fact is PE-only.
    summary.derive_facts(false);
    Ok(summary)
}

fn summarize_macho(m: &mach::MachO) -> ExecutableSummary {
    const S_ATTR_PURE_INSTRUCTIONS: u32 = 0x8000_0000;
    const S_ATTR_SOME_INSTRUCTIONS: u32 = 0x0000_0400;
    let mut sections = Vec::new();
    for seg in m.segments.iter() {
        for (sec, bytes) in seg.sections().unwrap_or_default() {
            let x = sec.flags & (S_ATTR_PURE_INSTRUCTIONS | S_ATTR_SOME_INSTRUCTIONS) != 0 || seg.initprot & 4 != 0;
            sections.push(SectionSummary {
                name: format!("{},{}", sec.segname().unwrap_or(""), sec.name().unwrap_or("")),
                virtual_address: sec.addr,
                virtual_size: sec.size,
                raw_size: bytes.len() as u64,
                entropy: shannon(bytes),
                flags: flags(seg.initprot & 1 != 0, seg.initprot & 2 != 0, x),
            });
        }
    }
    let imports = m.imports().unwrap_or_default();
    // Exports come from the symbol table, not goblin's export-trie walk: a
    // crafted trie makes that walk exponential in time and memory (found by
    // the macho fuzz target; the input is in fuzz/corpus/macho).
    let exports: Vec<String> = m
        .symbols()
        .take(MAX_SYMBOLS)
        .filter_map(Result::ok)
        .filter(|(_, n)| n.is_global() && !n.is_undefined() && !n.is_stab())
        .map(|(name, _)| name.to_string())
        .collect();
    let mut summary = ExecutableSummary {
        format: "macho",
        arch: mach::constants::cputype::get_arch_name_from_types(m.header.cputype(), m.header.cpusubtype())
            .unwrap_or("unknown")
            .to_string(),
        is_64: m.is_64,
        entry_point: m.entry,
        entry_section: section_at(&sections, m.entry),
        sections,
        imports: imports.len() as u32,
        exports: exports.len() as u32,
        import_names: imports.iter().take(MAX_NAMES).map(|i| format!("{}!{}", i.dylib, i.name)).collect(),
        export_names: exports.iter().take(MAX_NAMES).cloned().collect(),
        ..Default::default()
    };
    summary.derive_facts(false);
    summary
}

fn summarize_mach(data: &[u8]) -> Result<Vec<ExecutableSummary>, goblin::error::Error> {
    match mach::Mach::parse(data)? {
        mach::Mach::Binary(m) => Ok(vec![summarize_macho(&m)]),
        mach::Mach::Fat(fat) => {
            let mut out = Vec::new();
            // A fat header claims its own arch count; cap it.
            for i in 0..fat.narches.min(16) {
                match fat.get(i) {
                    Ok(mach::SingleArch::MachO(m)) => {
                        let mut s = summarize_macho(&m);
                        s.object = format!("{i}:{}", s.arch);
                        out.push(s);
                    }
                    Ok(mach::SingleArch::Archive(_)) => {}
                    Err(e) => out.push(ExecutableSummary {
                        object: format!("{i}"),
                        format: "macho",
                        error: Some(format!("macho parse error: {e}")),
                        ..Default::default()
                    }),
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_executables_report_errors_not_panics() {
        for (data, ty) in [
            (&b"MZ\x00\x00garbage"[..], FileType::Pe),
            (&b"\x7fELF\x02\x01\x01"[..], FileType::Elf),
            (&[0xCF, 0xFA, 0xED, 0xFE, 1, 2][..], FileType::MachO),
            (&[0xCA, 0xFE, 0xBA, 0xBE, 0, 0, 0, 9, 1][..], FileType::MachOFat),
        ] {
            let s = summarize_executable(data, ty, "x");
            assert!(!s.is_empty());
            assert!(s.iter().all(|s| s.error.is_some()), "{ty:?}: {s:?}");
        }
    }

    #[test]
    fn own_test_binary_is_summarised() {
        // The test binary itself is a real ELF (on Linux, where CI runs).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let ty = crate::formats::detect(&me);
        assert_eq!(ty, FileType::Elf);
        let s = &summarize_executable(&me, ty, "self")[0];
        assert_eq!(s.error, None);
        assert_eq!(s.format, "elf");
        assert!(s.entry_point > 0);
        assert_eq!(s.entry_section.as_deref(), Some(".text"));
        let text = s.sections.iter().find(|s| s.name == ".text").expect(".text");
        assert!(text.entropy > 4.0 && text.flags == "r-x", "{text:?}");
        assert!(s.import_names.iter().any(|n| n.contains("malloc") || n.contains("__libc_start_main")), "{:?}", s.import_names);
        assert!(s.import_names.len() <= s.imports as usize, "names are capped, never more than the count");
        assert!(!s.facts.iter().any(|f| f.starts_with("writable_executable")), "{:?}", s.facts);
    }
}
