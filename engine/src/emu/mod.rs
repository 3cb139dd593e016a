//! Generic unpacking by emulation. Most packers (ASPack, MEW, Petite,
//! Upack, WWPack, PESpin, yC and the many crypters built the same way)
//! prepend a stub that decompresses or decrypts the program in memory and
//! then jumps to it. Rather than one hand-written decoder per packer and
//! version, a 32-bit PE whose entry point looks like such a stub is run in
//! an x86 interpreter ([`cpu`]) inside a tiny fake Win32 process
//! ([`win32`]) until it reaches the unpacked program — execution in a page
//! it wrote, outside the stub's own section — or calls an API it has no
//! business calling before that, or runs out of its instruction budget.
//! The memory image at that point is the unpacked program.
//!
//! Nothing here touches the host: the interpreter reads and writes only
//! its own regions (bounded by a memory budget), every API is a stand-in,
//! and the run is bounded by instructions and by the scan's deadline.

mod cpu;
mod mem;
mod win32;

use crate::formats::bytes::{le_u16, le_u32};
use crate::limits::Deadline;
use cpu::{Cpu, Exit};
use mem::{Memory, PAGE};
use win32::{Called, Process};

/// Why the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Execution went from layer to layer [`MAX_LAYERS`] times.
    Layers,
    /// The program called a function the fake process does not implement.
    Api(String),
    /// ExitProcess or a return from the entry point.
    Exit,
    /// An exception no handler of the program took: its code, and the
    /// address of the instruction that raised it.
    Unhandled { code: u32, at: u32 },
    /// An instruction the interpreter does not implement.
    Unsupported(String),
    /// The instruction budget or the scan's deadline.
    Budget,
}

/// The memory image after the run.
pub(crate) struct Unpacked {
    /// The image, rebuilt as a PE file whose sections' raw data is their
    /// memory (raw offset = virtual address), entry point at the OEP if found.
    pub(crate) image: Vec<u8>,
    pub(crate) stop: Stop,
    /// The last place execution entered a page written by an earlier
    /// layer, outside that layer's section: the original entry point (RVA).
    pub(crate) oep: Option<u32>,
    pub(crate) steps: u64,
    /// Bytes of the image's pages the program wrote.
    pub(crate) written: u64,
}

/// What the loader needs from a PE header.
struct Header {
    base: u32,
    size: u32,
    entry: u32,
    headers: u32,
    import_dir: u32,
    /// (virtual address, virtual size, raw offset, raw size, characteristics)
    sections: Vec<(u32, u32, u32, u32, u32)>,
    table: usize,
}

const WRITABLE: u32 = 0x8000_0000;
/// Layers of unpacking followed before the run stops.
const MAX_LAYERS: u32 = 16;

fn header(d: &[u8]) -> Option<Header> {
    let u32_at = |o: usize| le_u32(d, o).map(|v| v as u32);
    let pe = u32_at(0x3C)? as usize;
    if d.get(pe..pe + 4)? != b"PE\0\0" || le_u16(d, pe + 4)? != 0x14C || le_u16(d, pe + 24)? != 0x10B {
        return None;
    }
    let opt = pe + 24;
    let count = le_u16(d, pe + 6)?.min(96);
    let table = opt + le_u16(d, pe + 20)?;
    let sections = (0..count)
        .map(|s| {
            let o = table + 40 * s;
            Some((u32_at(o + 12)?, u32_at(o + 8)?, u32_at(o + 20)?, u32_at(o + 16)?, u32_at(o + 36)?))
        })
        .collect::<Option<Vec<_>>>()?;
    let dirs = u32_at(opt + 92)?;
    Some(Header {
        base: u32_at(opt + 28)?,
        entry: u32_at(opt + 16)?,
        size: u32_at(opt + 56)?,
        headers: u32_at(opt + 60)?,
        import_dir: if dirs > 1 { u32_at(opt + 104)? } else { 0 },
        sections,
        table,
    })
}

/// Whether `d` is a 32-bit PE whose entry point is where stubs live: in a
/// writable section, or in no section at all. Compilers put the entry
/// point in read-only code; packers in the section they unpack into or
/// one they append.
pub(crate) fn looks_packed(d: &[u8]) -> bool {
    let Some(h) = header(d) else { return false };
    let section = h.sections.iter().find(|&&(va, vs, _, rs, _)| h.entry >= va && h.entry - va < vs.max(rs));
    section.is_none_or(|&(.., ch)| ch & WRITABLE != 0) && h.entry != 0
}

/// Run the stub of packed PE `d` with at most `steps` instructions and
/// `memory` bytes of emulated memory. `None` when the image cannot be laid
/// out (no PE32 header, an image larger than `memory`).
pub(crate) fn unpack(d: &[u8], steps: u64, memory: u64, deadline: &Deadline) -> Option<Unpacked> {
    let h = header(d)?;
    let size = h.size.checked_add(PAGE - 1)? & !(PAGE - 1);
    if size == 0 || u64::from(size) > memory / 2 || u64::from(h.base) + u64::from(size) > 0x7000_0000 {
        return None;
    }
    let mut mem = Memory::new(memory);
    if !mem.map(h.base, size) {
        return None;
    }
    // Headers, then each section's raw data at its address (as the loader).
    let head = (h.headers.max(0x200) as usize).min(d.len()).min(size as usize);
    mem.load(h.base, &d[..head]).ok()?;
    for &(va, vs, raw, rs, _) in &h.sections {
        let len = rs.min(if vs == 0 { rs } else { vs.max(rs) });
        let raw = raw as usize & !0x1FF;
        let Some(bytes) = d.get(raw..).map(|r| &r[..r.len().min(len as usize)]) else { continue };
        let room = size.saturating_sub(va) as usize;
        let _ = mem.load(h.base.wrapping_add(va), &bytes[..bytes.len().min(room)]);
    }
    let mut cpu = Cpu::new();
    let mut process = Process::new(&mut cpu, &mut mem, d, h.base, size, h.base.wrapping_add(h.entry)).ok()?;
    if h.import_dir != 0 {
        process.bind_imports(&mut mem, h.base, h.import_dir);
    }
    let section_of = |rva: u32| {
        h.sections.iter().find(|&&(va, vs, _, rs, _)| rva >= va && rva - va < vs.max(rs)).map(|&(va, vs, _, rs, _)| {
            let start = h.base.wrapping_add(va);
            start..start.wrapping_add(vs.max(rs))
        })
    };
    // The section of the layer running now; entering a written page of
    // another section starts the next layer (or the program itself).
    let mut stub = section_of(h.entry);
    let mut oep = None;
    let mut layers = 0;
    let image = h.base..h.base.wrapping_add(size);
    let mut taken = 0u64;
    let stop = loop {
        if taken + cpu.extra >= steps || (taken.is_multiple_of(0x10000) && deadline.passed()) {
            break Stop::Budget;
        }
        taken += 1;
        let eip = cpu.eip;
        if Process::is_thunk(eip) {
            match process.call(&mut cpu, &mut mem) {
                Ok(()) => continue,
                Err(Called::Exit) => break Stop::Exit,
                Err(Called::Other(name)) => break Stop::Api(name),
                Err(Called::Unhandled(code)) => break Stop::Unhandled { code, at: eip },
            }
        }
        let in_stub = stub.as_ref().is_some_and(|s| s.contains(&eip));
        if image.contains(&eip) && !in_stub && eip >= h.base + PAGE && mem.was_written(eip) {
            // Layers of packers and crypters run one after the other: keep
            // going until the program calls out, with the last transition
            // as its entry point.
            oep = Some(eip - h.base);
            layers += 1;
            if layers >= MAX_LAYERS {
                break Stop::Layers;
            }
            stub = section_of(eip - h.base);
        }
        match cpu.step(&mut mem) {
            Ok(()) => {}
            Err(Exit::Unsupported(m)) => break Stop::Unsupported(format!("{m:?}")),
            Err(e) => {
                if let Err(called) = process.raise(&mut cpu, &mut mem, e) {
                    break match called {
                        Called::Unhandled(_) | Called::Exit | Called::Other(_) => match e {
                            Exit::Exception { code, .. } => Stop::Unhandled { code, at: eip },
                            Exit::Unsupported(m) => Stop::Unsupported(format!("{m:?}")),
                        },
                    };
                }
            }
        }
    };
    let steps_taken = taken + cpu.extra;
    let region = mem.region(h.base)?;
    let mut image = region.data.clone();
    let written = (0..size / PAGE).filter(|&p| mem.was_written(h.base + p * PAGE)).count() as u64 * u64::from(PAGE);
    rebuild_headers(&mut image, &h, oep);
    Some(Unpacked { image, stop, oep, steps: steps_taken, written })
}

/// Make the dumped image a PE file again: each section's raw data is its
/// memory, and the entry point is the OEP when the run found one.
fn rebuild_headers(image: &mut [u8], h: &Header, oep: Option<u32>) {
    let u32_at = |d: &[u8], o: usize| le_u32(d, o).map(|v| v as u32);
    let put = |d: &mut [u8], o: usize, v: u32| {
        if let Some(b) = d.get_mut(o..o + 4) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    };
    let Some(pe) = u32_at(image, 0x3C).map(|p| p as usize) else { return };
    if image.get(pe..pe + 4) != Some(b"PE\0\0") {
        return;
    }
    if let Some(rva) = oep {
        put(image, pe + 24 + 16, rva);
    }
    let len = image.len() as u32;
    for (s, &(va, vs, ..)) in h.sections.iter().enumerate() {
        let o = h.table + 40 * s;
        let size = vs.min(len.saturating_sub(va));
        put(image, o + 16, size);
        put(image, o + 20, va);
    }
}
