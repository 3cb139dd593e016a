//! TNEF (`winmail.dat`, `application/ms-tnef`): Outlook's wrapper for a
//! message's attachments. Own reader of the attribute stream ([MS-OXTNEF]
//! 2.1.3): a signature, a key, then attributes (level, id, length, data,
//! checksum); each `attAttachData` is a child named by the `attAttachTitle`
//! near it. No crate reads TNEF under a usable licence (`ytnef` is GPL).

use super::Container;
use super::Flow;
use crate::filetype::FileType;
use std::borrow::Cow;

register!(TNEF: "tnef", rank 160, unpacks [Tnef]);

fn sniff(data: &[u8]) -> Option<FileType> {
    data.starts_with(MAGIC).then_some(FileType::Tnef)
}

pub(crate) const MAGIC: &[u8] = &[0x78, 0x9F, 0x3E, 0x22];

const ATT_ATTACH_RENDDATA: u32 = 0x0006_9002;
const ATT_ATTACH_TITLE: u32 = 0x0001_8010;
const ATT_ATTACH_DATA: u32 = 0x0006_800F;

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let mut at = 6; // signature and key
    let mut attachments: Vec<(Option<String>, &[u8])> = Vec::new();
    let mut title: Option<String> = None;
    let mut data_seen = false;
    while let Some(h) = data.get(at..at + 9) {
        let id = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
        let len = u32::from_le_bytes([h[5], h[6], h[7], h[8]]) as usize;
        let body_at = at + 9;
        let end = body_at.saturating_add(len);
        let Some(body) = data.get(body_at..end) else {
            c.error(format!("tnef: attribute {id:#010x} at {at} runs past the end"));
            break;
        };
        match id {
            // A new attachment starts: name the previous one's data.
            ATT_ATTACH_RENDDATA => {
                title = None;
                data_seen = false;
            }
            ATT_ATTACH_TITLE => {
                let name = String::from_utf8_lossy(body).trim_end_matches('\0').replace(['/', '\\'], "_");
                if data_seen
                    && let Some(last) = attachments.last_mut()
                    && last.0.is_none()
                {
                    last.0 = Some(name.clone());
                }
                title = Some(name);
            }
            ATT_ATTACH_DATA => {
                attachments.push((title.clone(), body));
                data_seen = true;
            }
            _ => {}
        }
        if attachments.len() >= super::MAX_LISTED {
            break;
        }
        at = end + 2; // checksum
    }
    for (n, (name, body)) in attachments.into_iter().enumerate() {
        let name = name.filter(|n| !n.is_empty()).unwrap_or_else(|| format!("attachment-{}", n + 1));
        if c.buffer(&name, Cow::Borrowed(body)) == Flow::Stop {
            return;
        }
    }
}
