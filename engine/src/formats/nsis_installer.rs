//! NSIS installers, with the `nsis` crate (Apache-2.0): the installer data
//! after the PE stub, its header and every embedded file, decompressed
//! (deflate, bzip2 or LZMA, solid or not) within the walk's object cap.

use super::Container;
use super::Flow;
use super::bytes::MemberData;

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    // A solid installer is decompressed whole when parsed: the object cap
    // bounds it (the crate truncates there and says so).
    let budget = usize::try_from(c.limits().max_object_size.min(c.limits().max_scan_memory)).unwrap_or(usize::MAX);
    let installer = match ::nsis::NsisInstaller::builder(data).max_decompressed_size(budget).parse() {
        Ok(i) => i,
        Err(e) => return c.error(format!("nsis: {e}")),
    };
    let mut used = std::collections::HashSet::new();
    for (n, file) in installer.files().enumerate() {
        if n >= super::MAX_LISTED {
            break;
        }
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                c.error(format!("nsis: file {n}: {e}"));
                continue;
            }
        };
        let base = file.name().map(|s| s.to_string().rsplit(['\\', '/']).next().unwrap_or("").to_string()).unwrap_or_default();
        let base = if base.is_empty() { format!("file-{n}") } else { base };
        let name = if used.insert(base.clone()) { format!("nsis/{base}") } else { format!("nsis/{n}-{base}") };
        let stored = file.data().len() as u64;
        let flow = c.member(&name, stored, |cap| {
            let mut out = file.decompress().map_err(|e| format!("nsis: {e}"))?;
            let truncated = out.len() as u64 > cap;
            out.truncate(cap as usize);
            Ok(MemberData { data: out, truncated, error: None })
        });
        if flow == Flow::Stop {
            return;
        }
    }
}
