//! RAR archives (1.3 to 7, solid or not), with the `rars` crate
//! (Apache-2.0, pure Rust; UnRAR's source is not open source). The archive
//! is decoded in one pass (a solid archive cannot be read member by member
//! without decoding everything before each): every member goes into its own
//! buffer, which stops taking bytes at the object cap (the write fails, so
//! the decoder stops too, and the member is reported cut), while the whole
//! pass is held to the submission's remaining byte and memory budgets and
//! to a dictionary cap. Header counts and sizes are capped before parsing.
//! Encrypted members are listed as encrypted, not decoded.

use super::Container;
use super::Flow;
use super::bytes::MemberData;
use crate::filetype::FileType;
use rars::{ArchiveReadOptions, ArchiveReader, ExtractionDecision, ExtractionErrorAction};
use std::io::Write;
use std::sync::{Arc, Mutex};

register!(RAR: "rar", rank 110, unpacks [Rar]);

fn sniff(data: &[u8]) -> Option<FileType> {
    data.starts_with(b"Rar!\x1A\x07").then_some(FileType::Rar)
}

/// Largest RAR 5 dictionary a member may declare (RAR 7 allows 64 GiB).
const MAX_DICTIONARY: u64 = 256 << 20;

/// One member's output, shared with the decoder's writer.
#[derive(Default)]
struct Sink {
    data: Vec<u8>,
    truncated: bool,
}

struct CappedWriter {
    sink: Arc<Mutex<Sink>>,
    cap: usize,
}

impl Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut sink = self.sink.lock().expect("not poisoned");
        let room = self.cap.saturating_sub(sink.data.len());
        sink.data.extend_from_slice(&buf[..buf.len().min(room)]);
        if buf.len() > room {
            sink.truncated = true;
            return Err(std::io::Error::other("member reached the object cap"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let limits = c.limits();
    let budget = limits.max_total_bytes.min(limits.max_scan_memory);
    let cap = usize::try_from(limits.max_object_size.min(budget)).unwrap_or(usize::MAX);
    let options = ArchiveReadOptions::new()
        .with_max_header_count(super::MAX_LISTED as u64 + 16)
        .with_max_header_bytes(64 << 20)
        .with_rar50_dictionary_size_limit(MAX_DICTIONARY)
        .with_max_total_output_bytes(budget)
        .with_rar50_buffered_decode_limit(MAX_DICTIONARY);
    let archive = match ArchiveReader::read_with_options(data, options) {
        Ok(a) => a,
        Err(e) => return c.error(format!("rar: {e}")),
    };
    let mut members: Vec<(String, u64, Arc<Mutex<Sink>>)> = Vec::new();
    let mut encrypted = Vec::new();
    let mut errors = Vec::new();
    let result = archive.extract_with_control_and_errors(
        options,
        |m| {
            if members.len() >= super::MAX_LISTED {
                return Ok(ExtractionDecision::Stop);
            }
            let name = String::from_utf8_lossy(&m.meta.name).replace('\\', "/");
            if m.meta.is_directory || m.meta.is_redirection {
                return Ok(ExtractionDecision::Skip);
            }
            if m.meta.is_encrypted {
                encrypted.push(name);
                return Ok(ExtractionDecision::Skip);
            }
            let sink = Arc::new(Mutex::new(Sink::default()));
            members.push((name, m.meta.packed_size, Arc::clone(&sink)));
            Ok(ExtractionDecision::Extract(Box::new(CappedWriter { sink, cap })))
        },
        |m, e| {
            // A member cut at the cap is reported as a limit by the walk.
            if !e.to_string().contains("object cap") {
                errors.push(format!("{}: {e}", String::from_utf8_lossy(&m.meta.name)));
            }
            Ok(ExtractionErrorAction::Continue)
        },
    );
    if let Err(e) = result {
        c.error(format!("rar: {e}"));
    }
    for name in encrypted {
        c.encrypted(Some(&name));
    }
    for e in errors {
        c.error(format!("rar: {e}"));
    }
    for (name, packed, sink) in members {
        let sink = std::mem::take(&mut *sink.lock().expect("not poisoned"));
        let flow = c.member(&name, packed, |cap| {
            let mut data = sink.data;
            let truncated = sink.truncated || data.len() as u64 > cap;
            data.truncate(usize::try_from(cap).unwrap_or(usize::MAX));
            Ok(MemberData { data, truncated, error: None })
        });
        if flow == Flow::Stop {
            return;
        }
    }
}
