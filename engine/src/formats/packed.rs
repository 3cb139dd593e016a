//! Packed executables unpacked by emulation ([`crate::emu`]): a 32-bit PE
//! whose entry point sits where packers put their stubs is run until it
//! has unpacked, and the memory image, rebuilt as a PE file, is scanned as
//! `emu-unpacked` (rules, the executable report and carving then see the
//! real program). The run and where it stopped are recorded in the
//! container's object metadata.

use super::{Container, pe_image};
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

/// What identifies a stub: the bytes of the section the entry point is in
/// (as the file stores them), and the entry point.
fn stub_key(data: &[u8]) -> Option<[u8; 32]> {
    let h = pe_image::parse(data)?;
    let s = h.section_at(h.entry)?;
    let start = (s.raw as usize).min(data.len());
    let end = start.saturating_add(s.raw_size as usize).min(data.len());
    let mut hasher = blake3::Hasher::new();
    hasher.update(&h.entry.to_le_bytes());
    hasher.update(&data[start..end]);
    Some(*hasher.finalize().as_bytes())
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let not_run = |c: &mut Container<'_>, why: &str| c.meta(vec![("emulation".to_string(), format!("not run: {why}"))]);
    let key = stub_key(data);
    if key.is_some_and(|k| c.walker.tally().endless_stubs.contains(&k)) {
        return not_run(c, "the same stub ran out of its instructions earlier in this submission");
    }
    let limits = c.limits().clone();
    let steps = c.walker.tally().take_work(STEPS, c.path, &limits);
    if steps == 0 {
        return not_run(c, "the submission's work budget is spent");
    }
    let memory = memory(data.len()).min(limits.max_object_size.saturating_mul(2));
    let deadline = c.deadline();
    let run = emu::unpack(data, steps, memory, &deadline);
    let used = run.as_ref().map_or(0, |u| u.steps);
    c.walker.tally().return_work(steps.saturating_sub(used));
    let u = match run {
        Ok(u) => u,
        Err(why) => return not_run(c, &why),
    };
    if matches!(u.stop, emu::Stop::Budget)
        && steps == STEPS
        && let Some(k) = key
    {
        c.walker.tally().endless_stubs.insert(k);
    }
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
