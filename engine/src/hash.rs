//! The digests of a submission, computed in one pass: sha256 (the cache
//! key, and the identity of every object for seen-object tracking and the
//! object list), and md5 and sha1, which analysts hold from threat reports
//! and IOC lists (crates `sha2`, `md-5`, `sha1`). In the cluster the root's
//! are the coordinator's, computed while it receives the upload; the
//! engine hashes the root only when scanning on its own.

use sha1::Digest as _;
use sha2::Digest as _;

/// The digests of one byte stream, as lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub md5: String,
    pub sha1: String,
}

/// Which digests of objects inside a submission are computed besides
/// sha256 (always): md5 and sha1 cost a pass each, so only while an IOC
/// list of that kind exists (the coordinator says so with each scan).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestKinds {
    pub md5: bool,
    pub sha1: bool,
}

/// The digests of one object inside a submission (an archive member, a
/// decoded attachment), as lower-case hex; md5 and sha1 empty unless asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDigests {
    /// The object's path inside the submission (`outer.zip/inner.txt`).
    pub object: String,
    /// 1-based index, in the same list, of the container it came out of;
    /// 0: the submission itself. Always lower than the object's own index.
    pub parent: u32,
    /// Bytes read of it (all of it unless `truncated`).
    pub size: u64,
    pub sha256: [u8; 32],
    pub md5: Option<[u8; 16]>,
    pub sha1: Option<[u8; 20]>,
    /// Read only in part (a limit): the digests are of the bytes read.
    pub truncated: bool,
}

impl DigestKinds {
    /// sha256 (always) and the asked-for digests of one object, in one pass.
    pub fn digest(self, data: &[u8]) -> ([u8; 32], Option<[u8; 16]>, Option<[u8; 20]>) {
        let mut sha256 = sha2::Sha256::new();
        let mut md5 = self.md5.then(md5::Md5::new);
        let mut sha1 = self.sha1.then(sha1::Sha1::new);
        for piece in data.chunks(64 * 1024) {
            sha256.update(piece);
            if let Some(h) = &mut md5 {
                h.update(piece);
            }
            if let Some(h) = &mut sha1 {
                h.update(piece);
            }
        }
        (sha256.finalize().into(), md5.map(|h| h.finalize().into()), sha1.map(|h| h.finalize().into()))
    }
}

/// Incremental hasher feeding each chunk to every digest while it is hot
/// in cache, so every byte is read from memory once.
#[derive(Clone)]
pub struct Hasher {
    /// None when the caller already verified the sha256.
    sha256: Option<sha2::Sha256>,
    md5: md5::Md5,
    sha1: sha1::Sha1,
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    pub fn new() -> Self {
        Self { sha256: Some(sha2::Sha256::new()), ..Self::without_sha256() }
    }

    /// Every digest but sha256, which the caller already has (verified);
    /// [`Hasher::finish`] then leaves it empty.
    pub fn without_sha256() -> Self {
        Self { sha256: None, md5: md5::Md5::new(), sha1: sha1::Sha1::new() }
    }

    pub fn update(&mut self, data: &[u8]) {
        // 64 KiB slices keep each piece in L2 for the next hash.
        for piece in data.chunks(64 * 1024) {
            if let Some(s) = &mut self.sha256 {
                s.update(piece);
            }
            self.md5.update(piece);
            self.sha1.update(piece);
        }
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha256: self.sha256.map(|s| hex::encode(s.finalize())).unwrap_or_default(),
            md5: hex::encode(self.md5.finalize()),
            sha1: hex::encode(self.sha1.finalize()),
        }
    }

    /// Digests of a whole buffer.
    pub fn digest(data: &[u8]) -> Digests {
        let mut h = Self::new();
        h.update(data);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Hasher;

    #[test]
    fn known_vectors_and_chunking() {
        let d = Hasher::digest(b"abc");
        assert_eq!(d.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(d.sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
        let none = super::DigestKinds::default().digest(b"abc");
        assert_eq!((hex::encode(none.0), none.1, none.2), (d.sha256.clone(), None, None));
        let all = super::DigestKinds { md5: true, sha1: true }.digest(b"abc");
        assert_eq!((hex::encode(all.1.unwrap()), hex::encode(all.2.unwrap())), (d.md5.clone(), d.sha1.clone()));
        let mut trusted = Hasher::without_sha256();
        trusted.update(b"abc");
        let t = trusted.finish();
        assert_eq!((t.sha256.as_str(), t.md5.as_str(), t.sha1.as_str()), ("", d.md5.as_str(), d.sha1.as_str()));

        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Hasher::new();
        for part in data.chunks(7919) {
            h.update(part);
        }
        assert_eq!(h.finish(), Hasher::digest(&data));
    }
}
