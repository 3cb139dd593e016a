//! Compiled AutoIt scripts (`AU3!EA05`, `AU3!EA06`, in a PE's overlay or
//! resources), with the `autoit-rs` crate (Apache-2.0): the decrypted,
//! decompressed script source and every `FileInstall` payload it carries.
//! The crate caps each decompressed record at 64 MiB; the walk's cap then
//! applies.

use super::Container;
use super::Flow;
use super::bytes::MemberData;
use std::borrow::Cow;

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let binary = match ::autoit::AutoItBinary::try_parse(data) {
        Ok(b) => b,
        Err(e) if e.recognition_failure() == Some(::autoit::RecognitionFailure::NotRecognized) => return,
        Err(e) => return c.error(format!("autoit: {e}")),
    };
    for (n, script) in binary.scripts().iter().enumerate() {
        let body: Cow<'_, [u8]> = match script.source_text() {
            Some(text) => Cow::Owned(text.as_bytes().to_vec()),
            None => Cow::Borrowed(script.bytes()),
        };
        if c.buffer(&format!("autoit/script-{}.au3", n + 1), body) == Flow::Stop {
            return;
        }
    }
    for artifact in binary.artifacts() {
        let name = artifact.name().rsplit(['\\', '/']).next().unwrap_or("").to_string();
        let name = if name.is_empty() { "artifact".to_string() } else { name };
        let bytes = artifact.bytes();
        let flow = c.member(&format!("autoit/{name}"), bytes.len() as u64, |cap| {
            let take = bytes.len().min(cap as usize);
            Ok(MemberData { data: bytes[..take].to_vec(), truncated: take < bytes.len(), error: None })
        });
        if flow == Flow::Stop {
            return;
        }
    }
}
