//! SquashFS images (v4, little-endian), with the `backhand` crate
//! (MIT/Apache-2.0) for the structure and our own block decompressor
//! plugged into it: gzip (`flate2`), xz and lzma (`lzma-rust2`), zstd (`ruzstd`),
//! lz4 (`lz4_flex`), all pure Rust and each block bounded by the image's
//! block size (backhand's own xz and zstd need C libraries, its lzo feature
//! is GPL; LZO images are reported, not read). Every regular file is streamed through
//! the crate's reader under the walk's cap and deadline; the listing is
//! capped.

use super::Container;
use super::Flow;
use super::bytes::read_capped;
use crate::filetype::FileType;
use backhand::compression::{CompressionAction, Compressor};
use backhand::kind::Kind;
use backhand::{BackhandError, FilesystemCompressor, FilesystemReader, InnerNode, SuperBlock};
use std::io::{Cursor, Read};

register!(SQUASHFS: "squashfs", rank 220, unpacks [Squashfs]);

fn sniff(data: &[u8]) -> Option<FileType> {
    data.starts_with(MAGIC).then_some(FileType::Squashfs)
}

pub(crate) const MAGIC: &[u8] = b"hsqs";

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    static BLOCKS: Blocks = Blocks;
    let fs = match FilesystemReader::from_reader_with_offset_and_kind(Cursor::new(data), 0, Kind::new_v4(&BLOCKS)) {
        Ok(fs) => fs,
        Err(e) => return c.error(format!("squashfs: {e}")),
    };
    for node in fs.files().take(super::MAX_LISTED) {
        let InnerNode::File(file) = &node.inner else { continue };
        let name = node.fullpath.to_string_lossy().trim_start_matches('/').to_string();
        let size = file.file_len() as u64;
        let deadline = c.deadline();
        let flow = c.member(&name, size, |cap| Ok(read_capped(fs.file(file).reader(), cap, size, &deadline)));
        if flow == Flow::Stop {
            return;
        }
    }
}

/// Block decompression for backhand: pure-Rust codecs, output bounded by
/// the room backhand gives (the block size, at most 1 MiB), so a block
/// that inflates without end costs one block.
struct Blocks;

impl CompressionAction for Blocks {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = SuperBlock;

    fn decompress(&self, bytes: &[u8], out: &mut Vec<u8>, compressor: Compressor) -> Result<(), BackhandError> {
        let room = out.capacity().clamp(8192, 1 << 20) as u64;
        let bad = |_| BackhandError::CorruptedOrInvalidSquashfs;
        let reader: Box<dyn Read + '_> = match compressor {
            Compressor::Uncompressed => Box::new(bytes),
            Compressor::Gzip => Box::new(flate2::read::ZlibDecoder::new(bytes)),
            Compressor::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(bytes, false, 128 * 1024)),
            // Each block an "LZMA alone" stream (13-byte header).
            Compressor::Lzma => Box::new(lzma_rust2::LzmaReader::new_mem_limit(bytes, 128 * 1024, None).map_err(bad)?),
            Compressor::Zstd => {
                Box::new(ruzstd::decoding::StreamingDecoder::new(bytes).map_err(|_| BackhandError::CorruptedOrInvalidSquashfs)?)
            }
            Compressor::Lz4 => {
                // A raw LZ4 block: decoded into exactly the room there is.
                let start = out.len();
                out.resize(start + room as usize, 0);
                let n = lz4_flex::block::decompress_into(bytes, &mut out[start..])
                    .map_err(|_| BackhandError::CorruptedOrInvalidSquashfs)?;
                out.truncate(start + n);
                return Ok(());
            }
            _ => return Err(BackhandError::UnsupportedCompression(format!("{compressor:?}"))),
        };
        reader.take(room + 1).read_to_end(out).map_err(bad)?;
        if out.len() as u64 > room {
            return Err(BackhandError::CorruptedOrInvalidSquashfs);
        }
        Ok(())
    }

    fn compress(&self, _: &[u8], _: FilesystemCompressor, _: u32) -> Result<Vec<u8>, BackhandError> {
        Err(BackhandError::UnsupportedCompression("reading only".to_string()))
    }
}
