//! Single-stream compression: gzip (`flate2`, multi-member), bzip2
//! (`bzip2`, multi-stream), xz, lzma-alone and lzip (`lzma-rust2`, with a
//! decoder memory limit; lzip's checked here first), zstd (`ruzstd`, pure
//! Rust, every frame), LZ4 frames and the legacy format (`lz4_flex`) and
//! Unix `compress` (own LZW, [`super::lzw`]). One child, read with the
//! walk's cap and stopped at the deadline.

use super::Container;
use super::bytes::{MemberData, read_capped};
use crate::filetype::FileType;
use crate::limits::Deadline;
use std::io::Cursor;

register!(COMPRESSED: "compressed", rank 60, unpacks [Gzip, Bzip2, Xz, Lzma, Zstd, Lzip, Lz4, CompressZ]);

/// Magics of the compressed streams.
pub(crate) const MAGICS: [(&[u8], FileType); 8] = [
    (&[0x1F, 0x8B], FileType::Gzip),
    (b"BZh", FileType::Bzip2),
    (&[0xFD, b'7', b'z', b'X', b'Z', 0x00], FileType::Xz),
    (&[0x28, 0xB5, 0x2F, 0xFD], FileType::Zstd),
    (b"LZIP\x01", FileType::Lzip),
    (&[0x04, 0x22, 0x4D, 0x18], FileType::Lz4),
    (&[0x02, 0x21, 0x4C, 0x18], FileType::Lz4),
    (&[0x1F, 0x9D], FileType::CompressZ),
];

/// The compressed streams by their magics (`.Z` also by a sane flags byte).
fn sniff(data: &[u8]) -> Option<FileType> {
    let ty = MAGICS.iter().find(|(magic, _)| data.starts_with(magic)).map(|(_, ty)| *ty)?;
    (ty != FileType::CompressZ || data.get(2).is_some_and(|f| f & 0x60 == 0 && (9..=16).contains(&(f & 0x1F)))).then_some(ty)
}

// A raw LZMA stream, told last of all: it has no magic.
register!(LZMA_ALONE: "lzma-alone", rank 310, unpacks [], sniff sniff_lzma_alone);

/// The "LZMA alone" header has no magic: a properties byte (lc/lp/pb, 0x5D
/// from every common encoder, at most 224), a dictionary size that encoders
/// write as 2^n or 2^n + 2^(n-1) between 4 KiB and 1.5 GiB, and an
/// uncompressed size that is either unknown (all ones) or plausible. The
/// check runs after every other type, on binary data only.
fn sniff_lzma_alone(data: &[u8]) -> Option<FileType> {
    let header = data.get(..13)?;
    let dict = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    let size = u64::from_le_bytes(header[5..13].try_into().expect("8 bytes"));
    let dict_ok = (1 << 12..=3 << 29).contains(&dict) && {
        let high = 1u32 << (31 - dict.leading_zeros());
        dict == high || dict == high | (high >> 1)
    };
    (header[0] <= 224 && dict_ok && (size == u64::MAX || size < 1 << 40) && data.len() > 13).then_some(FileType::Lzma)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let codec = match c.ty {
        FileType::Gzip => Codec::Gzip,
        FileType::Bzip2 => Codec::Bzip2,
        FileType::Xz => Codec::Xz,
        FileType::Lzma => Codec::Lzma,
        FileType::Zstd => Codec::Zstd,
        FileType::Lzip => Codec::Lzip,
        FileType::Lz4 => Codec::Lz4,
        FileType::CompressZ => Codec::CompressZ,
        _ => return,
    };
    let name = codec.child_name(c.path.rsplit('/').next().unwrap_or(c.path));
    let deadline = c.deadline();
    c.member(&name, data.len() as u64, |cap| Ok(codec.decode(data, cap, &deadline)));
}

/// Largest xz/LZMA decoder memory allowed, in KiB.
const XZ_MEM_LIMIT_KIB: u32 = 128 * 1024;

/// Compressed single streams the engine decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Gzip,
    Bzip2,
    Xz,
    /// LZMA alone (`.lzma`): a 13-byte header, then one LZMA stream.
    Lzma,
    Zstd,
    Lzip,
    Lz4,
    CompressZ,
}

impl Codec {
    /// The name of the decompressed object: the parent's name without the
    /// codec's extension (`logs.tar.gz` -> `logs.tar`, `a.tgz` -> `a.tar`).
    fn child_name(self, parent: &str) -> String {
        // The submission itself has no name (that is the client's): say
        // what was decompressed instead.
        if parent.is_empty() {
            let codec = match self {
                Codec::Gzip => "gzip",
                Codec::Bzip2 => "bzip2",
                Codec::Xz => "xz",
                Codec::Lzma => "lzma",
                Codec::Zstd => "zstd",
                Codec::Lzip => "lzip",
                Codec::Lz4 => "lz4",
                Codec::CompressZ => "compress",
            };
            return format!("{codec}.decompressed");
        }
        let lower = parent.to_ascii_lowercase();
        let (exts, tar_exts): (&[&str], &[&str]) = match self {
            Codec::Gzip => (&[".gz", ".gzip", ".z"], &[".tgz", ".taz"]),
            Codec::Bzip2 => (&[".bz2", ".bzip2", ".bz"], &[".tbz", ".tbz2", ".tb2"]),
            Codec::Xz => (&[".xz"], &[".txz"]),
            Codec::Lzma => (&[".lzma"], &[".tlz"]),
            Codec::Zstd => (&[".zst", ".zstd"], &[".tzst"]),
            Codec::Lzip => (&[".lz"], &[".tlz"]),
            Codec::Lz4 => (&[".lz4"], &[]),
            Codec::CompressZ => (&[".z"], &[".taz"]),
        };
        for e in exts {
            if lower.ends_with(e) && lower.len() > e.len() {
                return parent[..parent.len() - e.len()].to_string();
            }
        }
        for e in tar_exts {
            if lower.ends_with(e) && lower.len() > e.len() {
                return format!("{}.tar", &parent[..parent.len() - e.len()]);
            }
        }
        format!("{parent}.decompressed")
    }

    /// Decode `data`, producing at most `cap` bytes.
    fn decode(self, data: &[u8], cap: u64, d: &Deadline) -> MemberData {
        match self {
            Codec::Gzip => read_capped(flate2::read::MultiGzDecoder::new(data), cap, 0, d),
            Codec::Bzip2 => read_capped(bzip2::read::MultiBzDecoder::new(data), cap, 0, d),
            // An xz header may ask for a dictionary of up to 1.5 GiB: refuse
            // more than the decoder memory we allow.
            Codec::Xz => read_capped(lzma_rust2::XzReader::new_mem_limit(data, true, XZ_MEM_LIMIT_KIB), cap, 0, d),
            Codec::Lzma => match lzma_rust2::LzmaReader::new_mem_limit(data, XZ_MEM_LIMIT_KIB, None) {
                Ok(r) => read_capped(r, cap, 0, d),
                Err(e) => MemberData::failed(format!("lzma: {e}")),
            },
            Codec::Zstd => read_capped(ZstdFrames { data: Cursor::new(data), frame: None }, cap, 0, d),
            Codec::Lzip => match lzip_dictionaries_fit(data) {
                Ok(()) => read_capped(lzma_rust2::LzipReader::new(data), cap, 0, d),
                Err(e) => MemberData::failed(e),
            },
            Codec::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(data), cap, 0, d),
            Codec::CompressZ => match super::lzw::Lzw::new(data) {
                Ok(r) => read_capped(r, cap, 0, d),
                Err(e) => MemberData::failed(e.to_string()),
            },
        }
    }
}

/// lzip's reader allocates each member's dictionary as its header says (up
/// to 512 MiB) and takes no limit: refuse a stream where any member header
/// asks more than the xz limit before it is read.
fn lzip_dictionaries_fit(data: &[u8]) -> Result<(), String> {
    for at in memchr::memmem::find_iter(data, b"LZIP\x01") {
        let Some(&b) = data.get(at + 5) else { break };
        let base = 1u64 << (b & 0x1F);
        let dict = base - (base / 16) * u64::from(b >> 5);
        if dict > u64::from(XZ_MEM_LIMIT_KIB) * 1024 {
            return Err(format!("lzip: a {} MiB dictionary is over the decoder's limit", dict >> 20));
        }
    }
    Ok(())
}

/// Every frame of a zstd stream (`zstd` writes one per input, and
/// concatenated files stay valid), skippable frames passed over.
struct ZstdFrames<'a> {
    data: Cursor<&'a [u8]>,
    frame: Option<ruzstd::decoding::StreamingDecoder<Cursor<&'a [u8]>, ruzstd::decoding::FrameDecoder>>,
}

impl std::io::Read for ZstdFrames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(frame) = &mut self.frame {
                let n = frame.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                // The frame is done: go on after it.
                let at = frame.get_ref().position();
                self.data.set_position(at);
                self.frame = None;
            }
            let at = self.data.position() as usize;
            let rest = &self.data.get_ref()[at.min(self.data.get_ref().len())..];
            if rest.len() < 8 {
                return Ok(0);
            }
            let magic = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
            if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
                let len = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
                self.data.set_position(at as u64 + 8 + u64::from(len));
                continue;
            }
            if magic != 0xFD2F_B528 {
                return Ok(0);
            }
            let mut inner = Cursor::new(*self.data.get_ref());
            inner.set_position(at as u64);
            match ruzstd::decoding::StreamingDecoder::new(inner) {
                Ok(f) => self.frame = Some(f),
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("zstd: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Codec;

    #[test]
    fn child_names() {
        assert_eq!(Codec::Gzip.child_name("logs.tar.gz"), "logs.tar");
        assert_eq!(Codec::Gzip.child_name("a.TGZ"), "a.tar");
        assert_eq!(Codec::Bzip2.child_name("x.bz2"), "x");
        assert_eq!(Codec::Xz.child_name("x.txz"), "x.tar");
        assert_eq!(Codec::Lzma.child_name("notes.txt.lzma"), "notes.txt");
        assert_eq!(Codec::Lzma.child_name("x.tlz"), "x.tar");
        assert_eq!(Codec::Zstd.child_name("blob"), "blob.decompressed");
        assert_eq!(Codec::Gzip.child_name(".gz"), ".gz.decompressed");
        assert_eq!(Codec::Xz.child_name(""), "xz.decompressed");
    }
}
