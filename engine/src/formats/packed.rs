//! Packed executables unpacked by emulation ([`crate::emu`]): a 32-bit PE
//! whose entry point sits where packers put their stubs is run until it
//! has unpacked, and the memory image, rebuilt as a PE file, is scanned as
//! `emu-unpacked` (rules, the executable report and carving then see the
//! real program). The run and where it stopped are recorded in the
//! container's object metadata.

use super::Container;
use crate::emu;
use std::borrow::Cow;

/// Instructions one run may take: a count, not a time, so the verdict on a
/// file does not depend on the machine. The stubs of ClamAV's test files
/// take 30,000 (MEW) to 1.6 million (PESpin); a program of a few MiB takes
/// tens of millions. The interpreter runs about 100 million a second here,
/// so a file that only looks packed costs at most about half a second.
/// Fuzzing builds (ten times slower under the sanitizer) take a million.
const STEPS: u64 = if cfg!(fuzzing) { 1_000_000 } else { 50_000_000 };
/// Emulated memory for the image (at most half), stack, system structures
/// and what the stub allocates: 32 times the file, at least 32 MiB, at most
/// 256 MiB (a 1 KiB file declaring a 100 MiB image is not laid out).
fn memory(file_len: usize) -> u64 {
    (file_len as u64).saturating_mul(32).clamp(32 << 20, 256 << 20)
}
/// The name of the dumped image.
pub(super) const CHILD: &str = "emu-unpacked";

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let memory = memory(data.len()).min(c.limits().max_object_size.saturating_mul(2));
    let deadline = c.deadline();
    let u = match emu::unpack(data, STEPS, memory, &deadline) {
        Ok(u) => u,
        Err(why) => return c.meta(vec![("emulation".to_string(), format!("not run: {why}"))]),
    };
    let stop = match &u.stop {
        emu::Stop::Layers => "too many layers".to_string(),
        emu::Stop::Api(name) => format!("call to {name}"),
        emu::Stop::Exit => "exit".to_string(),
        emu::Stop::Unhandled { code, at } => format!("unhandled exception {code:#010x} at {at:#x}"),
        emu::Stop::Unsupported(m) => format!("unsupported instruction {m}"),
        emu::Stop::Budget => "instruction budget".to_string(),
    };
    let entry = u.oep.map_or_else(|| "not found".to_string(), |rva| format!("{rva:#x}"));
    let summary = format!("{} instructions, stopped at {stop}, {} bytes written, entry point {entry}", u.steps, u.written);
    c.meta(vec![("emulation".to_string(), summary)]);
    if u.written > 0 {
        c.buffer(CHILD, Cow::Owned(u.image));
    }
}
