//! Imports into the IOC lists: text an analyst pastes or a feed exports,
//! one entry per line.

use crate::core::digests::hash_kind;
use qala_proto::v1 as pb;

/// Most entries one import takes.
pub const MAX_IMPORT: usize = 1_000_000;

/// Parse an import: one entry per line, `DIGEST [NAME...]` or CSV
/// `DIGEST,NAME[,...]`; `#` starts a comment; a header line naming
/// `digest`/`hash`/`sha256`/`md5`/`sha1` is skipped. The kind comes from
/// the digest's length.
pub fn parse(list: &str, text: &str, source: &str, now_ms: i64) -> Result<Vec<pb::IocEntry>, String> {
    if list != "block" && list != "allow" {
        return Err(format!("unknown list {list:?}: use block or allow"));
    }
    let mut out = Vec::new();
    let mut first = true;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (digest, name) = match line.split_once(',') {
            Some((d, rest)) => (d.trim(), rest.split(',').next().unwrap_or("").trim()),
            None => match line.split_once(char::is_whitespace) {
                Some((d, rest)) => (d, rest.trim()),
                None => (line, ""),
            },
        };
        let digest = digest.trim_matches('"').to_ascii_lowercase();
        let name = name.trim_matches('"');
        let header = first && ["digest", "hash", "sha256", "md5", "sha1", "ioc", "indicator"].contains(&digest.as_str());
        first = false;
        if header {
            continue;
        }
        let kind = hash_kind(&digest).ok_or_else(|| format!("line {}: {digest:?} is not a sha256, sha1 or md5", n + 1))?;
        if list == "allow" && kind != "sha256" {
            return Err(format!("line {}: allow lists take sha256 only (md5 and sha1 collide too easily)", n + 1));
        }
        out.push(pb::IocEntry {
            list: list.into(),
            kind: kind.into(),
            digest,
            name: name.chars().filter(|c| !c.is_control()).take(200).collect(),
            added_ms: now_ms,
            source: source.into(),
        });
        if out.len() > MAX_IMPORT {
            return Err(format!("more than {MAX_IMPORT} entries in one import"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_take_text_and_csv_and_refuse_weak_allow_entries() {
        let md5 = "44d88612fea8a8f36de82e1278abb02f";
        let sha256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
        let text = format!("# report 7\ndigest,name\n{md5},Eicar.Test\n{} Some Family\n\n{sha256}\n", "A".repeat(40));
        let e = parse("block", &text, "t", 1).unwrap();
        let got: Vec<(&str, &str, &str)> = e.iter().map(|e| (e.kind.as_str(), e.digest.as_str(), e.name.as_str())).collect();
        let sha1 = "a".repeat(40);
        assert_eq!(got, [("md5", md5, "Eicar.Test"), ("sha1", sha1.as_str(), "Some Family"), ("sha256", sha256, "")]);
        assert!(parse("allow", md5, "t", 1).unwrap_err().contains("sha256 only"));
        assert!(parse("block", "xyz", "t", 1).unwrap_err().contains("line 1"));
        assert!(parse("grey", md5, "t", 1).is_err());
    }
}
