//! What an executable (or unknown data) carries beyond its own code:
//! NSIS installer files, compiled AutoIt scripts, InstallShield setup
//! files, UPX-packed programs
//! rebuilt, and embedded containers and executables carved out.
//!
//! The cost on the many executables that carry nothing is kept to a few
//! vectorised substring searches: signatures are looked for in the overlay
//! only (the bytes after the last section or segment, where installers,
//! self-extractors and droppers put their payload), embedded PE files
//! anywhere by `PE\0\0` and the `MZ` header pointing at it, UPX by its
//! header near the start, and AutoIt by its marker. Unknown data gets the
//! full signature pass.

use super::bytes::{le_u16, le_u32, le_u64};
use super::carve::{self, Sig};
use super::{Container, autoit_script, installshield, nsis_installer, packed, upx, wwpack};
use crate::filetype::FileType;
use memchr::memmem;

register!(EXECUTABLE: "executable", rank 20, unpacks [Pe, Elf, MachO, MachOFat, Binary]);

/// PE (`MZ`), ELF, Mach-O and fat Mach-O; Java class files share the fat
/// magic: their next field is a version (>= 45), a fat header's is a small
/// architecture count.
fn sniff(data: &[u8]) -> Option<FileType> {
    let starts = |m: &[u8]| data.starts_with(m);
    if starts(b"MZ") {
        return Some(FileType::Pe);
    }
    if starts(b"\x7fELF") {
        return Some(FileType::Elf);
    }
    if [[0xFE, 0xED, 0xFA, 0xCE], [0xFE, 0xED, 0xFA, 0xCF], [0xCE, 0xFA, 0xED, 0xFE], [0xCF, 0xFA, 0xED, 0xFE]]
        .iter()
        .any(|m| starts(m))
    {
        return Some(FileType::MachO);
    }
    if starts(&[0xCA, 0xFE, 0xBA, 0xBE]) {
        let n = data.get(4..8).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        return Some(match n {
            Some(n) if n > 0 && n < 30 => FileType::MachOFat,
            _ => FileType::JavaClass,
        });
    }
    None
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    // An image an unpacker produced is not unpacked again.
    let unpacked_image = [packed::CHILD, wwpack::CHILD, upx::CHILD].iter().any(|child| c.path.ends_with(child));
    if !unpacked_image && memmem::find(&data[..data.len().min(64 * 1024)], b"UPX!").is_some() {
        upx::unpack(c, data);
    }
    let overlay = match c.ty {
        // A program an unpacker restored is searched whole: what a packer
        // hid is in its sections, not after them.
        FileType::Pe if unpacked_image => 0,
        // Headers that do not parse: the whole file is unknown data.
        FileType::Pe => carve::pe_size(data).unwrap_or(0),
        FileType::Elf => elf_size(data).unwrap_or(0),
        FileType::MachO | FileType::MachOFat => data.len(),
        _ => 0,
    };
    let mut hits: Vec<(usize, Sig)> =
        carve::signatures(&data[overlay..]).into_iter().map(|(at, sig)| (at + overlay, sig)).collect();
    if c.ty == FileType::Pe {
        if !unpacked_image && crate::emu::looks_packed(data) {
            // WWPack32's stub cannot be run (see `wwpack`): decoded statically.
            if wwpack::looks_packed(data) {
                wwpack::unpack(c, data);
            } else {
                packed::unpack(c, data);
            }
        }
        if hits.iter().any(|&(_, s)| s == Sig::Nsis) {
            nsis_installer::unpack(c, data);
        }
        if memmem::find(data, b"AU3!EA0").is_some() {
            autoit_script::unpack(c, data);
        }
        // InstallShield's file list sits in the overlay, after the stub:
        // plainly at its start (older setups) or behind a header.
        let tail = &data[overlay..];
        if let Some((files, error)) = installshield::legacy_files(data, overlay) {
            installshield::unpack_legacy(c, files, error);
        } else if let Some(at) =
            [installshield::V1, installshield::V2].iter().filter_map(|sig| memmem::find(tail, sig)).min().map(|p| p + overlay)
        {
            installshield::unpack(c, data, at);
        }
    }
    if matches!(c.ty, FileType::Pe | FileType::Elf) {
        // Programs inside programs (droppers, resources, packers that
        // store the original): each `PE\0\0` whose `MZ` header points at it.
        hits.extend(embedded_pes(&data[..overlay]).into_iter().map(|p| (p, Sig::Pe)));
        hits.sort_unstable_by_key(|&(at, _)| at);
    }
    carve::unpack(c, data, &hits);
}

/// Offsets of PE files embedded in `d` (not at 0): for each `PE\0\0`, an
/// `MZ` at most 1 KiB before it whose header offset (`e_lfanew`) is its
/// distance. One vectorised search; at most 64 candidates checked.
fn embedded_pes(d: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    for p in memmem::find_iter(d, b"PE\0\0").take(64) {
        let found = (p.saturating_sub(1024)..p.saturating_sub(0x3F)).rev().find(|&s| {
            s > 0
                && d[s..].starts_with(b"MZ")
                && d.get(s + 0x3C..s + 0x40).is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize == p - s)
        });
        out.extend(found);
    }
    out
}

/// Where an ELF file's own bytes end: the furthest of its section header
/// table and its segments' file images (little-endian 32 and 64-bit).
fn elf_size(d: &[u8]) -> Option<usize> {
    let le = *d.get(5)? == 1;
    if !le {
        return None;
    }
    let (u16_at, u32_at) = (|o| le_u16(d, o), |o| le_u32(d, o));
    let u64_at = |o| le_u64(d, o).and_then(|v| usize::try_from(v).ok());
    let (phoff, shoff, phentsize, phnum, shentsize, shnum, off, size) = match *d.get(4)? {
        1 => (u32_at(0x1C)?, u32_at(0x20)?, u16_at(0x2A)?, u16_at(0x2C)?, u16_at(0x2E)?, u16_at(0x30)?, 4, 16),
        2 => (u64_at(0x20)?, u64_at(0x28)?, u16_at(0x36)?, u16_at(0x38)?, u16_at(0x3A)?, u16_at(0x3C)?, 8, 32),
        _ => return None,
    };
    let read = |o: usize| if off == 4 { u32_at(o) } else { u64_at(o) };
    let mut end = shoff.saturating_add(shentsize.saturating_mul(shnum));
    for i in 0..phnum.min(256) {
        let ph = phoff.checked_add(i * phentsize)?;
        let (offset, filesz) = (read(ph.checked_add(off)?)?, read(ph.checked_add(size)?)?);
        end = end.max(offset.saturating_add(filesz));
    }
    Some(end.min(d.len()))
}
