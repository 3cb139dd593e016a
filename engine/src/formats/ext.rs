//! ext2, ext3 and ext4 file-system images (`mke2fs -d`, Linux disk and
//! firmware images, Android partitions), with the `ext4-view` crate
//! (Apache-2.0/MIT, read-only, pure Rust): directories walked from the
//! root, each regular file streamed under the walk's cap and deadline;
//! links, devices and sockets are not members. The crate owns its reader,
//! so the image is copied once (at most the object cap). The listing is
//! capped in files and depth.

use super::Container;
use super::Flow;
use super::bytes::{le_u32, read_capped};
use crate::filetype::FileType;
use ext4_view::{Ext4, PathBuf};

register!(EXT: "ext", rank 238, unpacks [Ext]);

/// Directories deeper than this are not listed.
const MAX_DEPTH: usize = 32;

/// The superblock's magic (`53 EF` at 1080) and a block size it allows.
fn sniff(data: &[u8]) -> Option<FileType> {
    (data.get(1080..1082) == Some(&[0x53, 0xEF]) && le_u32(data, 1024 + 24).is_some_and(|l| l <= 6)).then_some(FileType::Ext)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let fs = match Ext4::load(Box::new(data.to_vec())) {
        Ok(fs) => fs,
        Err(e) => return c.error(format!("ext: {e}")),
    };
    let mut listed = super::Listing::default();
    let mut dirs = vec![(PathBuf::new("/"), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let entries = match fs.read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                c.error(format!("ext: {}: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries {
            if !listed.next(c, "ext") {
                return;
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    c.error(format!("ext: {}: {e}", dir.display()));
                    break;
                }
            };
            let name = entry.file_name();
            if name.as_ref() == b"." || name.as_ref() == b".." {
                continue;
            }
            let path = entry.path();
            let shown = path.display().to_string().trim_start_matches('/').to_string();
            let ty = match entry.file_type() {
                Ok(t) => t,
                Err(e) => {
                    c.member_error(&shown, format!("ext: {e}"));
                    continue;
                }
            };
            if ty.is_dir() {
                if depth < MAX_DEPTH {
                    dirs.push((path, depth + 1));
                }
                continue;
            }
            if !ty.is_regular_file() {
                continue;
            }
            let file = match fs.open(&path) {
                Ok(f) => f,
                Err(e) => {
                    c.member_error(&shown, format!("ext: {e}"));
                    continue;
                }
            };
            let size = file.metadata().len();
            let deadline = c.deadline();
            if c.member(&shown, size, |cap| Ok(read_capped(file, cap, size, &deadline))) == Flow::Stop {
                return;
            }
        }
    }
}
