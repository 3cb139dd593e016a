//! Executable summaries (PE, ELF, Mach-O, fat Mach-O) from goblin.
//!
//! goblin still panics on some malformed inputs, so every parse runs under
//! `catch_unwind`; a panic or a parse error becomes the summary's `error`.
//! Section data is sliced with bounds checks of our own before entropy.

use crate::entropy::shannon;
use crate::filetype::FileType;
use goblin::{elf, mach, pe};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// One section of an executable.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionSummary {
    pub name: String,
    pub virtual_address: u64,
    pub virtual_size: u64,
    pub raw_size: u64,
    pub entropy: f64,
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
    /// Parse failure (or contained panic); the other fields are then partial.
    pub error: Option<String>,
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
    let pe = pe::PE::parse(data)?;
    let sections = pe
        .sections
        .iter()
        .map(|s| SectionSummary {
            name: s.name().unwrap_or("").trim_end_matches('\0').to_string(),
            virtual_address: s.virtual_address as u64,
            virtual_size: s.virtual_size as u64,
            raw_size: s.size_of_raw_data as u64,
            entropy: shannon(slice(data, s.pointer_to_raw_data as u64, s.size_of_raw_data as u64)),
        })
        .collect();
    Ok(ExecutableSummary {
        format: "pe",
        arch: pe::header::machine_to_str(pe.header.coff_header.machine).to_string(),
        is_64: pe.is_64,
        entry_point: pe.entry as u64,
        sections,
        imports: pe.imports.len() as u32,
        exports: pe.exports.len() as u32,
        ..Default::default()
    })
}

fn summarize_elf(data: &[u8]) -> Result<ExecutableSummary, goblin::error::Error> {
    let elf = elf::Elf::parse(data)?;
    let sections = elf
        .section_headers
        .iter()
        .map(|sh| {
            let bytes =
                if sh.sh_type == elf::section_header::SHT_NOBITS { &[][..] } else { slice(data, sh.sh_offset, sh.sh_size) };
            SectionSummary {
                name: elf.shdr_strtab.get_at(sh.sh_name).unwrap_or("").to_string(),
                virtual_address: sh.sh_addr,
                virtual_size: sh.sh_size,
                raw_size: bytes.len() as u64,
                entropy: shannon(bytes),
            }
        })
        .collect();
    let dynsyms = || elf.dynsyms.iter().filter(|s| s.st_name != 0);
    Ok(ExecutableSummary {
        format: "elf",
        arch: elf::header::machine_to_str(elf.header.e_machine).to_string(),
        is_64: elf.is_64,
        entry_point: elf.entry,
        sections,
        imports: dynsyms().filter(|s| s.is_import()).count() as u32,
        exports: dynsyms().filter(|s| !s.is_import() && s.st_bind() != elf::sym::STB_LOCAL).count() as u32,
        ..Default::default()
    })
}

fn summarize_macho(m: &mach::MachO) -> ExecutableSummary {
    let mut sections = Vec::new();
    for seg in m.segments.iter() {
        for (sec, bytes) in seg.sections().unwrap_or_default() {
            sections.push(SectionSummary {
                name: format!("{},{}", sec.segname().unwrap_or(""), sec.name().unwrap_or("")),
                virtual_address: sec.addr,
                virtual_size: sec.size,
                raw_size: bytes.len() as u64,
                entropy: shannon(bytes),
            });
        }
    }
    ExecutableSummary {
        format: "macho",
        arch: mach::constants::cputype::get_arch_name_from_types(m.header.cputype(), m.header.cpusubtype())
            .unwrap_or("unknown")
            .to_string(),
        is_64: m.is_64,
        entry_point: m.entry,
        sections,
        imports: m.imports().map(|v| v.len()).unwrap_or(0) as u32,
        exports: m.exports().map(|v| v.len()).unwrap_or(0) as u32,
        ..Default::default()
    }
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
        let ty = FileType::detect(&me);
        assert_eq!(ty, FileType::Elf);
        let s = &summarize_executable(&me, ty, "self")[0];
        assert_eq!(s.error, None);
        assert_eq!(s.format, "elf");
        assert!(s.entry_point > 0);
        assert!(s.sections.iter().any(|s| s.name == ".text" && s.entropy > 4.0), "{:?}", s.sections);
    }
}
