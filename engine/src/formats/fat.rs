//! FAT12/16/32 file-system images (`mkfs.fat` and `mcopy`, USB-stick and
//! floppy images, the file system inside most disk images), with the
//! `fatfs` crate (MIT) over the bytes, read-only: its writes are refused.
//! Long file names are read; every regular file is streamed under the
//! walk's cap and deadline; the listing is capped in files and depth, so a
//! directory that points back at its parent ends.

use super::Container;
use super::Flow;
use super::bytes::{le_u16, read_capped};
use crate::filetype::FileType;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

register!(FAT: "fat", rank 240, unpacks [Fat]);

/// Directories deeper than this are not listed.
const MAX_DEPTH: usize = 32;

/// A boot sector with a jump, the `55 AA` mark, a sane BIOS parameter
/// block and the file-system type string `mkfs.fat` (and Windows) write.
fn sniff(data: &[u8]) -> Option<FileType> {
    let boot = data.get(..512)?;
    let bytes_per_sector = le_u16(boot, 11)?;
    let per_cluster = boot[13];
    let fs_type = |at: usize, what: &[u8]| boot[at..].starts_with(what);
    (matches!(boot[0], 0xEB | 0xE9)
        && boot[510..512] == [0x55, 0xAA]
        && matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && per_cluster.is_power_of_two()
        && le_u16(boot, 14).is_some_and(|r| r > 0)
        && matches!(boot[16], 1 | 2)
        && (fs_type(54, b"FAT12") || fs_type(54, b"FAT16") || fs_type(54, b"FAT ") || fs_type(82, b"FAT32")))
    .then_some(FileType::Fat)
}

/// The image's bytes as a disk that cannot be written.
struct ReadOnly<'a>(Cursor<&'a [u8]>);

impl Read for ReadOnly<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Seek for ReadOnly<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.0.seek(to)
    }
}

impl Write for ReadOnly<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let fs = match fatfs::FileSystem::new(ReadOnly(Cursor::new(data)), fatfs::FsOptions::new()) {
        Ok(fs) => fs,
        Err(e) => return c.error(format!("fat: {e}")),
    };
    let mut listed = super::Listing::default();
    let mut dirs = vec![(fs.root_dir(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = dirs.pop() {
        for entry in dir.iter() {
            if !listed.next(c, "fat") {
                return;
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    c.error(format!("fat: {prefix}: {e}"));
                    break;
                }
            };
            let name = entry.file_name();
            if name == "." || name == ".." || name.is_empty() {
                continue;
            }
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            if entry.is_dir() {
                if depth < MAX_DEPTH {
                    dirs.push((entry.to_dir(), path, depth + 1));
                }
                continue;
            }
            let size = entry.len();
            let deadline = c.deadline();
            if c.member(&path, size, |cap| Ok(read_capped(entry.to_file(), cap, size, &deadline))) == Flow::Stop {
                return;
            }
        }
    }
}
