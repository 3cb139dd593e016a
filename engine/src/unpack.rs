//! Single-stream decompressors (gzip, bzip2, xz, zstd) and tar, read with
//! caps of the caller's choosing. Like the zip reader, nothing here trusts a
//! size an input declares: every read is `take(cap + 1)`.

use crate::unzip::MemberData;
use std::io::{Cursor, Read};

/// Read at most `cap` bytes from `reader`; note whether more was there and
/// keep what came out before an error.
pub(crate) fn read_capped(reader: impl Read, cap: u64, size_hint: u64) -> MemberData {
    let mut data = Vec::with_capacity(size_hint.min(cap).min(1 << 20) as usize);
    let result = reader.take(cap.saturating_add(1)).read_to_end(&mut data);
    let truncated = data.len() as u64 > cap;
    data.truncate(cap as usize);
    MemberData { data, truncated, error: result.err().map(|e| e.to_string()) }
}

/// Largest xz/LZMA decoder memory allowed, in KiB.
const XZ_MEM_LIMIT_KIB: u32 = 128 * 1024;

/// Compressed single streams the engine decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Gzip,
    Bzip2,
    Xz,
    /// LZMA alone (`.lzma`): a 13-byte header, then one LZMA stream.
    Lzma,
    Zstd,
}

impl Codec {
    /// The name of the decompressed object: the parent's name without the
    /// codec's extension (`logs.tar.gz` -> `logs.tar`, `a.tgz` -> `a.tar`).
    pub fn child_name(self, parent: &str) -> String {
        // The submission itself has no name (that is the client's): say
        // what was decompressed instead.
        if parent.is_empty() {
            let codec = match self {
                Codec::Gzip => "gzip",
                Codec::Bzip2 => "bzip2",
                Codec::Xz => "xz",
                Codec::Lzma => "lzma",
                Codec::Zstd => "zstd",
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
    pub fn decode(self, data: &[u8], cap: u64) -> MemberData {
        match self {
            Codec::Gzip => read_capped(flate2::read::MultiGzDecoder::new(data), cap, 0),
            Codec::Bzip2 => read_capped(bzip2::read::MultiBzDecoder::new(data), cap, 0),
            // An xz header may ask for a dictionary of up to 1.5 GiB: refuse
            // more than the decoder memory we allow.
            Codec::Xz => read_capped(lzma_rust2::XzReader::new_mem_limit(data, true, XZ_MEM_LIMIT_KIB), cap, 0),
            Codec::Lzma => match lzma_rust2::LzmaReader::new_mem_limit(data, XZ_MEM_LIMIT_KIB, None) {
                Ok(r) => read_capped(r, cap, 0),
                Err(e) => MemberData { data: Vec::new(), truncated: false, error: Some(format!("lzma: {e}")) },
            },
            Codec::Zstd => match ruzstd::decoding::StreamingDecoder::new(Cursor::new(data)) {
                Ok(r) => read_capped(r, cap, 0),
                Err(e) => MemberData { data: Vec::new(), truncated: false, error: Some(format!("zstd: {e}")) },
            },
        }
    }
}

/// One regular file inside a tar archive, located but not yet read.
pub(crate) struct TarMember {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// The regular files of a tar archive (ustar, GNU and pax headers), in
/// order, with their data's place in `data`. Members are read straight from
/// the input slice, so listing costs no copies.
pub(crate) fn tar_members(data: &[u8]) -> (Vec<TarMember>, Option<String>) {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(Cursor::new(data));
    let entries = match archive.entries_with_seek() {
        Ok(e) => e,
        Err(e) => return (out, Some(format!("tar: {e}"))),
    };
    for entry in entries {
        match entry {
            Ok(e) => {
                if !e.header().entry_type().is_file() {
                    continue;
                }
                let name = e.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| "<bad name>".to_string());
                out.push(TarMember { name, offset: e.raw_file_position(), size: e.size() });
            }
            Err(e) => return (out, Some(format!("tar: {e}"))),
        }
    }
    (out, None)
}

/// The streams of an OLE2 compound file (legacy Office, MSI, ...), with
/// their storage paths (`Macros/VBA/Module1`). VBA project streams are
/// streams like any other and come out too.
pub(crate) struct Ole2<'a> {
    file: cfb::CompoundFile<Cursor<&'a [u8]>>,
}

impl<'a> Ole2<'a> {
    pub fn open(data: &'a [u8]) -> Result<Self, String> {
        cfb::CompoundFile::open(Cursor::new(data)).map(|file| Self { file }).map_err(|e| format!("ole2: {e}"))
    }

    /// Stream paths and declared lengths, in directory order.
    pub fn streams(&self) -> Vec<(String, u64)> {
        self.file
            .walk()
            .filter(|e| e.is_stream())
            .map(|e| (e.path().to_string_lossy().trim_start_matches('/').to_string(), e.len()))
            .collect()
    }

    pub fn read(&mut self, path: &str, cap: u64, declared: u64) -> Result<MemberData, String> {
        let stream = self.file.open_stream(format!("/{path}")).map_err(|e| format!("ole2 stream: {e}"))?;
        Ok(read_capped(stream, cap, declared))
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
