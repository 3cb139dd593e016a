//! RFC 822 / MIME messages and mbox files.
//!
//! mail-parser decodes each part (base64, quoted-printable, charsets); this
//! module names the parts, keeps a few message headers as object metadata,
//! and splits mbox files into messages without copying. Text parts are text
//! objects: uuencode and the like in them are the `text` module's.

use super::Container;
use super::Flow;
use crate::filetype::FileType;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use std::borrow::Cow;

register!(MAIL: "mail", rank 280, unpacks [Mail, Mbox]);

/// An mbox file (messages after `From ` lines), else one message.
fn sniff(data: &[u8]) -> Option<FileType> {
    if data.starts_with(b"From ") && looks_like_mail(data, true) {
        Some(FileType::Mbox)
    } else if looks_like_mail(data, false) {
        Some(FileType::Mail)
    } else {
        None
    }
}

/// A message, or each message of an mbox file.
fn unpack(c: &mut Container<'_>, data: &[u8]) {
    match c.ty {
        FileType::Mbox => unpack_mbox(c, data),
        _ => unpack_message(c, data),
    }
}

/// A message: its kept headers become the object's metadata (shown only to
/// analysts), its parts children. mail-parser decodes every part in one
/// pass (base64 and quoted-printable only shrink, so that costs at most the
/// message's size); what it holds is counted against the scan's memory
/// budget, and each part is moved to the walk, not copied.
pub(super) fn unpack_message(c: &mut Container<'_>, data: &[u8]) {
    let Some(parsed) = parse(data) else {
        return c.error("not a parsable message");
    };
    c.meta(parsed.headers);
    let held: u64 = parsed.parts.iter().map(|p| p.data.len() as u64).sum();
    c.walker.tally().live += held;
    for part in parsed.parts {
        if c.deadline().passed() || c.buffer(&part.name, part.data) == Flow::Stop {
            break;
        }
    }
    c.walker.tally().live -= held;
}

/// An mbox file: each message is a child, sliced from the file.
pub(super) fn unpack_mbox(c: &mut Container<'_>, data: &[u8]) {
    for (i, message) in split_mbox(data).into_iter().enumerate() {
        if c.buffer(&format!("message-{}.eml", i + 1), Cow::Borrowed(message)) == Flow::Stop {
            return;
        }
    }
}

/// Headers kept as the message's metadata.
const KEPT_HEADERS: &[&str] =
    &["From", "To", "Cc", "Subject", "Date", "Message-ID", "Return-Path", "Reply-To", "X-Mailer", "User-Agent"];
const MAX_HEADER_VALUE: usize = 512;

/// Headers that mark the start of a message.
const MAIL_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "received",
    "return-path",
    "mime-version",
    "content-type",
    "delivered-to",
    "reply-to",
    "x-mailer",
    "user-agent",
    "sender",
    "x-originating-ip",
    "dkim-signature",
    "authentication-results",
];

/// Does `data` start like a message (a header block with at least two
/// well-known mail headers)? `mbox` asks for the `From ` separator line first.
pub(crate) fn looks_like_mail(data: &[u8], mbox: bool) -> bool {
    let head = &data[..data.len().min(8192)];
    if head.contains(&0) {
        return false;
    }
    let Ok(text) = std::str::from_utf8(&head[..head.len() - trailing_partial_utf8(head)]) else { return false };
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    if mbox && !lines.next().is_some_and(|l| l.starts_with("From ")) {
        return false;
    }
    let mut known = 0;
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) && i > 0 {
            continue;
        }
        let Some((name, _)) = line.split_once(':') else { return false };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return false;
        }
        if MAIL_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            known += 1;
        }
    }
    known >= 2
}

fn trailing_partial_utf8(b: &[u8]) -> usize {
    // A sample cut inside a multi-byte character is still text.
    (1..=3.min(b.len())).find(|&n| std::str::from_utf8(&b[b.len() - n..]).is_err() && b[b.len() - n] >= 0xC0).unwrap_or(0)
}

/// The messages of an mbox file, as slices of it.
fn split_mbox(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if data[at..].starts_with(b"From ") && (at == 0 || data[at - 1] == b'\n') {
            starts.push(at);
        }
        at += data[at..].iter().position(|&b| b == b'\n').map_or(data.len() - at, |p| p + 1);
    }
    let mut out = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(data.len());
        // Skip the separator line itself: what follows is the message.
        let body = &data[s..end];
        let first = body.iter().position(|&b| b == b'\n').map_or(body.len(), |p| p + 1);
        out.push(&body[first..]);
    }
    out
}

/// One decoded part of a message (borrowed from the message where it
/// needed no decoding).
struct Part<'a> {
    name: String,
    data: Cow<'a, [u8]>,
}

/// A parsed message: its kept headers and its parts, decoded.
struct Parsed<'a> {
    headers: Vec<(String, String)>,
    parts: Vec<Part<'a>>,
}

fn parse(data: &[u8]) -> Option<Parsed<'_>> {
    let mut message = MessageParser::default().parse(data)?;
    let mut headers = Vec::new();
    let mut received = 0;
    for (name, value) in message.headers_raw() {
        if name.eq_ignore_ascii_case("Received") {
            received += 1;
        } else if let Some(k) = KEPT_HEADERS.iter().find(|k| k.eq_ignore_ascii_case(name)) {
            let mut v = value.trim().replace(['\r', '\n'], " ");
            if v.len() > MAX_HEADER_VALUE {
                let cut = (0..=MAX_HEADER_VALUE).rev().find(|&i| v.is_char_boundary(i)).unwrap_or(0);
                v.truncate(cut);
            }
            headers.push((k.to_string(), v));
        }
    }
    if received > 0 {
        headers.push(("Received-Count".to_string(), received.to_string()));
    }

    let mut parts = Vec::new();
    let mut used = std::collections::HashSet::new();
    for (i, part) in std::mem::take(&mut message.parts).into_iter().enumerate() {
        let ext = match &part.body {
            PartType::Multipart(_) => continue,
            PartType::Text(_) => "txt",
            PartType::Html(_) => "html",
            PartType::Message(_) => "eml",
            PartType::Binary(_) | PartType::InlineBinary(_) => "bin",
        };
        let mut name = part
            .attachment_name()
            .map(|n| n.replace(['/', '\\'], "_"))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("part-{i}.{ext}"));
        if !used.insert(name.clone()) {
            name = format!("{i}-{name}");
        }
        let contents: Cow<'_, [u8]> = match part.body {
            PartType::Text(Cow::Borrowed(t)) | PartType::Html(Cow::Borrowed(t)) => Cow::Borrowed(t.as_bytes()),
            PartType::Text(Cow::Owned(t)) | PartType::Html(Cow::Owned(t)) => Cow::Owned(t.into_bytes()),
            PartType::Binary(b) | PartType::InlineBinary(b) => b,
            PartType::Message(m) => {
                // The nested message's own bytes, as mail-parser's `contents` gives them.
                let span = m.parts.first().map_or(0..0, |p| p.offset_header as usize..p.offset_end as usize);
                match m.raw_message {
                    Cow::Borrowed(raw) => Cow::Borrowed(raw.get(span).unwrap_or_default()),
                    Cow::Owned(raw) => Cow::Owned(raw.get(span).unwrap_or_default().to_vec()),
                }
            }
            PartType::Multipart(_) => continue,
        };
        parts.push(Part { name, data: contents });
    }
    Some(Parsed { headers, parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_mail_and_not_other_text() {
        assert!(looks_like_mail(b"From: a@b\r\nTo: c@d\r\nSubject: hi\r\n\r\nbody", false));
        assert!(looks_like_mail(b"From someone Mon Jan 1 00:00:00 2024\nFrom: a@b\nDate: x\n\nhi\n", true));
        assert!(!looks_like_mail(b"Name: value\nOther: thing\n\n", false));
        assert!(!looks_like_mail(b"just some text: with a colon\n", false));
        assert!(!looks_like_mail(b"From: a@b\nTo: c@d\n", true));
    }

    #[test]
    fn mbox_splits_on_from_lines() {
        let mbox = b"From a Mon\nSubject: one\n\nbody one\n\nFrom b Tue\nSubject: two\n\nbody two\n";
        let msgs = split_mbox(mbox);
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].starts_with(b"Subject: one"));
        assert!(msgs[1].starts_with(b"Subject: two"));
    }
}
