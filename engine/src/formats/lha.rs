//! LHA/LZH archives (`-lh0-` to `-lh7-`, `-lhx-`, `-lzs-`, `-lz5-`, `-pm?-`),
//! with the `delharc` crate (MIT/Apache-2.0): it decodes each member as a
//! stream, read here under the walk's cap and deadline (a member's declared
//! size sizes nothing).

use super::Container;
use super::Flow;
use super::bytes::read_capped;
use crate::filetype::FileType;
use std::io::Cursor;

register!(LHA: "lha", rank 230, unpacks [Lha]);

fn sniff(data: &[u8]) -> Option<FileType> {
    is_lha(data).then_some(FileType::Lha)
}

/// `-lh5-` and its kin at offset 2 of the first header.
pub(crate) fn is_lha(data: &[u8]) -> bool {
    data.len() > 21
        && data[2] == b'-'
        && data[6] == b'-'
        && matches!(&data[3..5], b"lh" | b"lz" | b"pm")
        && (data[5].is_ascii_alphanumeric())
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let mut lha = match delharc::LhaDecodeReader::new(Cursor::new(data)) {
        Ok(r) => r,
        Err(e) => return c.error(format!("lha: {e}")),
    };
    for n in 0..super::MAX_LISTED {
        let header = lha.header();
        let name = header.parse_pathname_to_str().replace('\\', "/");
        let name = if name.is_empty() { format!("member-{n}") } else { name };
        let (stored, size) = (header.compressed_size, header.original_size);
        if !header.is_directory() {
            if lha.is_decoder_supported() {
                let deadline = c.deadline();
                let flow = c.member(&name, stored, |cap| Ok(read_capped(&mut lha, cap, size, &deadline)));
                if flow == Flow::Stop {
                    return;
                }
            } else {
                let method = String::from_utf8_lossy(&header.compression).into_owned();
                c.member_error(&name, format!("lha: method {method} is not decoded"));
            }
        }
        match lha.next_file() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return c.error(format!("lha: {e}")),
        }
    }
}
