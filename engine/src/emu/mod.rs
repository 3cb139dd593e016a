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

use crate::formats::pe_image;
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

/// Layer changes followed before the run stops. Real stubs have a few
/// layers, but code may bounce between a stub's section and one it wrote
/// (calling helpers it unpacked): only a run that does nothing else stops
/// here before its budget.
const MAX_LAYERS: u32 = 1024;
/// What an API call and an exception dispatch count against the budget, in
/// instructions (about what they cost in time): a stub that faults in a loop
/// runs out as soon as one that spins.
const API_COST: u64 = 20;
const EXCEPTION_COST: u64 = 200;

/// Whether `d` is a 32-bit PE whose entry point is where stubs live: in a
/// writable section, or in no section at all. Compilers put the entry
/// point in read-only code; packers in the section they unpack into or
/// one they append.
pub(crate) fn looks_packed(d: &[u8]) -> bool {
    let Some(h) = pe_image::parse(d) else { return false };
    h.section_at(h.entry).is_none_or(|s| s.flags & pe_image::WRITABLE != 0) && h.entry != 0
}

/// Run the stub of packed PE `d` with at most `steps` instructions and
/// `memory` bytes of emulated memory. An error when the image cannot be
/// laid out (no PE32 header, an image over half of `memory`, a base where
/// the system's structures are).
pub(crate) fn unpack(d: &[u8], steps: u64, memory: u64, deadline: &Deadline) -> Result<Unpacked, String> {
    let h = pe_image::parse(d).ok_or("no PE32 header")?;
    let size = h.size;
    let unmappable = || format!("image of {size} bytes at {:#x} cannot be laid out", h.base);
    if u64::from(h.base) + u64::from(size) > 0x7000_0000 {
        return Err(unmappable());
    }
    let mut mem = Memory::new(memory);
    let loaded = h.map(d, memory / 2).ok_or_else(|| format!("image of {size} bytes over the {} byte budget", memory / 2))?;
    if !mem.map(h.base, size) || mem.load(h.base, &loaded).is_err() {
        return Err(unmappable());
    }
    drop(loaded);
    let mut cpu = Cpu::new();
    let mut process =
        Process::new(&mut cpu, &mut mem, d, h.base, size, h.base.wrapping_add(h.entry)).map_err(|_| unmappable())?;
    if h.import_dir != 0 {
        process.bind_imports(&mut mem, h.base, h.import_dir);
    }
    let section_of = |rva: u32| {
        h.section_at(rva).map(|s| {
            let start = h.base.wrapping_add(s.va);
            start..start.wrapping_add(s.span())
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
        if taken + cpu.extra >= steps || (taken % 0x10000 < 256 && deadline.passed()) {
            break Stop::Budget;
        }
        taken += 1;
        let eip = cpu.eip;
        if Process::is_thunk(eip) {
            taken += API_COST;
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
            Err(e @ Exit::Exception { code, .. }) => {
                taken += EXCEPTION_COST;
                if process.raise(&mut cpu, &mut mem, e).is_err() {
                    break Stop::Unhandled { code, at: eip };
                }
            }
        }
    };
    let steps_taken = taken + cpu.extra;
    let written = (0..size / PAGE).filter(|&p| mem.was_written(h.base + p * PAGE)).count() as u64 * u64::from(PAGE);
    // The image's memory itself, not a copy (it may be 128 MiB).
    let mut image = mem.take(h.base).ok_or_else(unmappable)?;
    h.rebuild(&mut image, oep);
    Ok(Unpacked { image, stop, oep, steps: steps_taken, written })
}
