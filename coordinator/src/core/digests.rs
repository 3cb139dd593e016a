//! Digests as clients write them: which kind a hex string is, and whether
//! it is a well-formed sha256 (the key of every verdict).

/// `md5`, `sha1` or `sha256` for lower-case hex of that digest's length.
pub fn hash_kind(s: &str) -> Option<&'static str> {
    if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    match s.len() {
        32 => Some("md5"),
        40 => Some("sha1"),
        64 => Some("sha256"),
        _ => None,
    }
}

pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_length_and_case() {
        assert_eq!(hash_kind(&"a".repeat(32)), Some("md5"));
        assert_eq!(hash_kind(&"0".repeat(40)), Some("sha1"));
        assert_eq!(hash_kind(&"f".repeat(64)), Some("sha256"));
        assert_eq!(hash_kind(&"F".repeat(64)), None, "lower-case only");
        assert_eq!(hash_kind("abc"), None);
        assert!(valid_sha256(&"9".repeat(64)) && !valid_sha256(&"g".repeat(64)));
    }
}
