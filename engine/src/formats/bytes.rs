//! Bounded byte decoding shared by the format modules: every read is capped
//! by the caller and stops when the submission's time is up.

use crate::limits::Deadline;
use std::io::Read;

/// Bytes read from one child: at most the cap it was read with.
pub(crate) struct MemberData {
    pub data: Vec<u8>,
    /// More data was there than the cap allowed.
    pub truncated: bool,
    /// Decoding failed part way; `data` holds what came out before.
    pub error: Option<String>,
}

impl MemberData {
    pub(crate) fn whole(data: Vec<u8>) -> Self {
        Self { data, truncated: false, error: None }
    }

    pub(crate) fn failed(why: String) -> Self {
        Self { data: Vec::new(), truncated: false, error: Some(why) }
    }
}

/// Output is read in steps of this much between deadline checks.
const STEP: u64 = 1 << 20;

pub(crate) const OUT_OF_TIME: &str = "decoding stopped: the submission's time ran out";

/// Read at most `cap` bytes from `reader`; note whether more was there, keep
/// what came out before an error, and stop when `deadline` passes. Nothing is
/// reserved from `size_hint` beyond 1 MiB.
pub(crate) fn read_capped(mut reader: impl Read, cap: u64, size_hint: u64, deadline: &Deadline) -> MemberData {
    let mut data = Vec::with_capacity(size_hint.min(cap).min(STEP) as usize);
    let limit = cap.saturating_add(1);
    let mut error = None;
    loop {
        let have = data.len() as u64;
        if have >= limit {
            break;
        }
        if deadline.passed() {
            error = Some(OUT_OF_TIME.to_string());
            break;
        }
        match (&mut reader).take((limit - have).min(STEP)).read_to_end(&mut data) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let truncated = data.len() as u64 > cap;
    data.truncate(cap as usize);
    MemberData { data, truncated, error }
}

/// Little-endian integers at offset `o` of untrusted data: `None` past the
/// end, and an offset near `usize::MAX` is past the end too (no overflow).
pub(crate) fn le_u16(d: &[u8], o: usize) -> Option<usize> {
    d.get(o..o.checked_add(2)?).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
}

pub(crate) fn le_u32(d: &[u8], o: usize) -> Option<usize> {
    d.get(o..o.checked_add(4)?).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

pub(crate) fn le_u64(d: &[u8], o: usize) -> Option<u64> {
    d.get(o..o.checked_add(8)?).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Hex digits up to the first byte of `stop` (`>` in PDF, `\` or `}` in
/// RTF; other bytes are skipped, as whitespace is), at most `max` bytes out:
/// the decoded bytes and how many input bytes were read. Grows as it
/// decodes, never by the input's size.
pub(crate) fn hex_decode(data: &[u8], stop: &[u8], max: usize, deadline: &Deadline) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut high: Option<u8> = None;
    let mut read = data.len();
    for (i, &b) in data.iter().enumerate() {
        if stop.contains(&b) || out.len() >= max || (i % STEP as usize == STEP as usize - 1 && deadline.passed()) {
            read = i;
            break;
        }
        let Some(v) = hex_value(b) else { continue };
        match high.take() {
            Some(h) => out.push(h << 4 | v),
            None => high = Some(v),
        }
    }
    if let Some(h) = high.filter(|_| out.len() < max) {
        out.push(h << 4);
    }
    (out, read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[test]
    fn capped_reads_note_truncation_and_time() {
        let forever = Deadline::new(Duration::from_secs(60), None);
        let r = read_capped(&[7u8; 100][..], 10, 1 << 40, &forever);
        assert_eq!((r.data.len(), r.truncated, r.error), (10, true, None));
        let r = read_capped(&[7u8; 10][..], 10, 0, &forever);
        assert_eq!((r.data.len(), r.truncated), (10, false));

        // An endless stream stops at the deadline or the cancel flag.
        let cancel = Arc::new(AtomicBool::new(true));
        let r = read_capped(std::io::repeat(0), u64::MAX / 2, 0, &Deadline::new(Duration::from_secs(60), Some(cancel)));
        assert_eq!(r.error.as_deref(), Some(OUT_OF_TIME));
        let r = read_capped(std::io::repeat(0), u64::MAX / 2, 0, &Deadline::new(Duration::from_millis(50), None));
        assert_eq!(r.error.as_deref(), Some(OUT_OF_TIME));
        assert!(!r.truncated);
    }

    #[test]
    fn hex() {
        let d = Deadline::new(Duration::from_secs(60), None);
        assert_eq!(hex_decode(b"48 65 6c6C6f>", b">", 100, &d), (b"Hello".to_vec(), 12));
        assert_eq!(hex_decode(b"48656c6c6f", b">", 2, &d).0, b"He");
    }
}
