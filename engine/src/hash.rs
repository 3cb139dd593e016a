//! sha256 and blake3 of the same bytes, computed in one pass.

use sha2::{Digest, Sha256};

/// Both digests of one byte stream, as lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub blake3: String,
}

/// Incremental hasher feeding each chunk to sha256 and blake3 while it is hot
/// in cache, so every byte is read from memory once.
#[derive(Default, Clone)]
pub struct Hasher {
    sha256: Sha256,
    blake3: blake3::Hasher,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        // 64 KiB slices keep each piece in L2 for the second hash.
        for piece in data.chunks(64 * 1024) {
            self.sha256.update(piece);
            self.blake3.update(piece);
        }
    }

    pub fn finish(self) -> Digests {
        Digests { sha256: hex::encode(self.sha256.finalize()), blake3: self.blake3.finalize().to_hex().to_string() }
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
        assert_eq!(d.blake3, "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");

        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Hasher::new();
        for part in data.chunks(7919) {
            h.update(part);
        }
        assert_eq!(h.finish(), Hasher::digest(&data));
    }
}
