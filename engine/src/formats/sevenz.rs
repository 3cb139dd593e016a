//! 7z archives, with `sevenz-rust2`. 7z compresses blocks ("folders"), not
//! members, so a member's footprint for the ratio cap is the whole archive.
//! Encrypted headers (names unreadable) and encrypted members are reported
//! as encrypted, not as errors. The LZMA decoder grows its dictionary with
//! the output (capped by the walk), whatever size the header declares.

use super::Container;
use super::Flow;
use super::bytes::read_capped;
use crate::filetype::FileType;

register!(SEVENZ: "7z", rank 100, unpacks [SevenZip]);

fn sniff(data: &[u8]) -> Option<FileType> {
    data.starts_with(&[b'7', b'z', 0xBC, 0xAF, 0x27, 0x1C]).then_some(FileType::SevenZip)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let mut archive = match sevenz_rust2::ArchiveReader::new(std::io::Cursor::new(data), sevenz_rust2::Password::default()) {
        Ok(a) => a,
        Err(e) if encrypted(&e) => return c.encrypted(None),
        Err(e) => return c.error(format!("7z: {e}")),
    };
    let result = archive.for_each_entries(|entry, reader| {
        if entry.is_directory() || !entry.has_stream() {
            return Ok(true);
        }
        if c.deadline().passed() {
            return Ok(false);
        }
        let size = entry.size();
        let deadline = c.deadline();
        let flow = c.member(entry.name(), data.len() as u64, |cap| Ok(read_capped(reader, cap, size, &deadline)));
        Ok(flow == Flow::Continue)
    });
    match result {
        Ok(()) => {}
        Err(e) if encrypted(&e) => c.encrypted(None),
        Err(e) => c.error(format!("7z: {e}")),
    }
}

/// A password is wanted: asked for, or the AES method (which this build of
/// the reader leaves out: no password is ever tried).
fn encrypted(e: &sevenz_rust2::Error) -> bool {
    match e {
        sevenz_rust2::Error::PasswordRequired | sevenz_rust2::Error::MaybeBadPassword(_) => true,
        sevenz_rust2::Error::UnsupportedCompressionMethod(m) => m.contains("AES"),
        _ => false,
    }
}
