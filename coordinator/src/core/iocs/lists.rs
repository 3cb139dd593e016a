//! The IOC lists as a coordinator holds them in memory, and what they do
//! to a verdict: a blocked digest (the file's own, or any object's inside
//! it) makes it `malicious`, naming the entry; an allowed sha256 clears the
//! detections of that object and of what is inside it (a false-positive
//! override). Applied when a verdict is read, never stored with it.

use qala_engine::DigestKinds;
use qala_proto::v1 as pb;
use std::collections::HashMap;

/// Every entry, sorted by (list, kind, digest), and indexes into them.
#[derive(Default)]
pub struct Lists {
    /// Listed page by page.
    all: Vec<pb::IocEntry>,
    /// `kind:digest` -> index in `all`.
    block: HashMap<String, usize>,
    /// sha256 -> index in `all`.
    allow: HashMap<String, usize>,
    /// Digests of nested objects a scan must compute for the block lists.
    kinds: DigestKinds,
}

/// A rule-like name for a blocked entry: `ioc.NAME` in clamd replies.
fn rule_name(e: &pb::IocEntry) -> String {
    let n: String = e.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    if n.trim_matches('_').is_empty() { format!("Blocked_{}", e.kind) } else { n }
}

fn matched(e: &pb::IocEntry, object: &str) -> pb::IocMatch {
    pb::IocMatch {
        list: e.list.clone(),
        kind: e.kind.clone(),
        digest: e.digest.clone(),
        name: e.name.clone(),
        object: object.to_string(),
    }
}

/// The allow entry of the object at `i` or of a container it is in, if
/// any. Parents always come first in the list, so the walk ends.
fn inside<'a>(objects: &[pb::ObjectDigests], i: usize, allowed: &[Option<&'a pb::IocEntry>]) -> Option<&'a pb::IocEntry> {
    if allowed.is_empty() {
        return None;
    }
    let mut at = i;
    loop {
        if let Some(e) = allowed.get(at).copied().flatten() {
            return Some(e);
        }
        let parent = objects.get(at)?.parent as usize;
        if parent == 0 || parent > at {
            return None;
        }
        at = parent - 1;
    }
}

/// The order entries are listed in, and a page's cursor: `list:kind:digest`.
fn key(e: &pb::IocEntry) -> (&str, &str, &str) {
    (&e.list, &e.kind, &e.digest)
}

fn rank(kind: i32) -> u8 {
    match pb::VerdictKind::try_from(kind) {
        Ok(pb::VerdictKind::Malicious) => 3,
        Ok(pb::VerdictKind::Suspicious) => 2,
        _ => 1,
    }
}

impl Lists {
    /// The lists of `entries` (block entries of any kind, allow entries
    /// of sha256; duplicates of a (list, kind, digest) after the first dropped).
    pub fn new(mut entries: Vec<pb::IocEntry>) -> Self {
        entries.retain(|e| e.list == "block" || (e.list == "allow" && e.kind == "sha256"));
        entries.sort_by(|a, b| key(a).cmp(&key(b)));
        entries.dedup_by(|a, b| key(a) == key(b));
        let mut lists = Lists::default();
        for (i, e) in entries.iter().enumerate() {
            if e.list == "block" {
                lists.kinds.md5 |= e.kind == "md5";
                lists.kinds.sha1 |= e.kind == "sha1";
                lists.block.insert(format!("{}:{}", e.kind, e.digest), i);
            } else {
                lists.allow.insert(e.digest.clone(), i);
            }
        }
        lists.all = entries;
        lists
    }

    /// Entries on each list.
    pub fn counts(&self) -> (usize, usize) {
        (self.block.len(), self.allow.len())
    }

    /// The digests of nested objects scans must compute besides sha256:
    /// md5 and sha1 only while block entries of that kind exist.
    pub fn object_kinds(&self) -> DigestKinds {
        self.kinds
    }

    /// Whether a stored verdict carries every digest of its nested objects
    /// the lists need now; one that does not is scanned again when next
    /// submitted.
    pub fn covers(&self, v: &pb::Verdict) -> bool {
        let kinds = self.kinds;
        v.objects_scanned <= 1 || ((!kinds.md5 || v.objects_md5) && (!kinds.sha1 || v.objects_sha1))
    }

    /// At most `limit` entries after the cursor (list, kind, digest), in
    /// that order; and whether more follow.
    pub fn page(&self, after: Option<(&str, &str, &str)>, limit: usize) -> (Vec<pb::IocEntry>, bool) {
        let start = after.map_or(0, |c| self.all.partition_point(|e| key(e) <= c));
        let entries: Vec<pb::IocEntry> = self.all[start..].iter().take(limit).cloned().collect();
        let more = start + entries.len() < self.all.len();
        (entries, more)
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// What changed from `old` that can make a file held somewhere worse:
    /// block entries added, and allow entries removed (as they were).
    pub fn worsened_since(&self, old: &Lists) -> Vec<pb::IocEntry> {
        let added = self.block.iter().filter(|(k, _)| !old.block.contains_key(*k)).map(|(_, &i)| self.all[i].clone());
        let unallowed = old.allow.iter().filter(|(k, _)| !self.allow.contains_key(*k)).map(|(_, &i)| old.all[i].clone());
        added.chain(unallowed).collect()
    }

    pub fn blocked(&self, kind: &str, digest: &str) -> Option<&pb::IocEntry> {
        if digest.is_empty() || self.block.is_empty() {
            return None;
        }
        self.block.get(&format!("{kind}:{digest}")).map(|&i| &self.all[i])
    }

    pub fn allowed(&self, sha256: &str) -> Option<&pb::IocEntry> {
        self.allow.get(sha256).map(|&i| &self.all[i])
    }

    /// For each of the verdict's nested objects, its allow entry if listed
    /// (a truncated one never is: its digest is of part of it).
    fn allowed_objects(&self, v: &pb::Verdict) -> Vec<Option<&pb::IocEntry>> {
        if self.allow.is_empty() {
            return Vec::new();
        }
        v.objects.iter().map(|o| if o.truncated { None } else { self.allowed(&o.sha256) }).collect()
    }

    /// Drop the detections of allow-listed objects and of what is inside
    /// them (false-positive overrides), and lower the verdict to what is
    /// left. A detection is tied to its object by path, so only when the
    /// list of objects is whole and that path names one object: a member
    /// sharing the name of an allow-listed one keeps its detections.
    fn allow_inside(&self, v: &mut pb::Verdict, allowed: &[Option<&pb::IocEntry>]) {
        if v.objects_truncated || v.verdict == pb::VerdictKind::Unscannable as i32 {
            return;
        }
        let mut by_path: HashMap<&str, Option<usize>> = HashMap::new();
        for (i, o) in v.objects.iter().enumerate() {
            by_path.entry(o.object.as_str()).and_modify(|at| *at = None).or_insert(Some(i));
        }
        let was = v.verdict;
        let detected = v.detections.iter().map(|d| rank(d.severity)).max().unwrap_or(1);
        let mut first = None;
        let mut kept = Vec::with_capacity(v.detections.len());
        for d in std::mem::take(&mut v.detections) {
            let entry = match by_path.get(d.object.as_str()) {
                Some(Some(i)) => inside(&v.objects, *i, allowed),
                _ => None,
            };
            match entry {
                Some(e) => first = first.or(Some((e, d.object))),
                None => kept.push(d),
            }
        }
        v.detections = kept;
        let Some((e, object)) = first else { return };
        // What the policy added (limits hit, encrypted members) stays.
        let floor = if rank(was) > detected { was } else { pb::VerdictKind::Clean as i32 };
        let left = v.detections.iter().map(|d| d.severity).max_by_key(|&s| rank(s)).unwrap_or(pb::VerdictKind::Clean as i32);
        v.verdict = if rank(floor) > rank(left) { floor } else { left };
        v.ioc = Some(matched(e, &object));
    }

    /// Apply the lists to a verdict read from the store or a scan: to the
    /// file's own digests and to those of every object inside it.
    pub fn apply(&self, v: &mut pb::Verdict) {
        if let Some(e) = self.allowed(&v.sha256) {
            v.verdict = pb::VerdictKind::Clean as i32;
            v.ioc = Some(matched(e, ""));
            return;
        }
        let allowed = self.allowed_objects(v);
        if allowed.iter().any(|a| a.is_some()) {
            self.allow_inside(v, &allowed);
        }
        let mut hits: Vec<(&pb::IocEntry, String)> = Vec::new();
        if let Some(e) =
            self.blocked("sha256", &v.sha256).or_else(|| self.blocked("sha1", &v.sha1)).or_else(|| self.blocked("md5", &v.md5))
        {
            hits.push((e, String::new()));
        }
        // Every verdict read passes here: nothing to look up, no walk.
        let objects = if self.block.is_empty() { &[][..] } else { &v.objects[..] };
        for (i, o) in objects.iter().enumerate() {
            // A truncated object's digests are of its first bytes only, and
            // an allow-listed object's contents are cleared with it.
            if o.truncated || inside(&v.objects, i, &allowed).is_some() {
                continue;
            }
            let e = self
                .blocked("sha256", &o.sha256)
                .or_else(|| self.blocked("sha1", &o.sha1))
                .or_else(|| self.blocked("md5", &o.md5));
            if let Some(e) = e {
                hits.push((e, o.object.clone()));
            }
        }
        if let Some((first, object)) = hits.first() {
            v.verdict = pb::VerdictKind::Malicious as i32;
            v.ioc = Some(matched(first, object));
            let found: Vec<pb::Detection> = hits.iter().map(|(e, object)| Self::detection(e, object)).collect();
            v.detections.splice(0..0, found);
        }
    }

    fn detection(e: &pb::IocEntry, object: &str) -> pb::Detection {
        pb::Detection {
            rule: rule_name(e),
            namespace: "ioc".into(),
            tags: vec!["ioc".into(), format!("{}-list", e.list)],
            meta: [("name".to_string(), e.name.clone()), ("source".to_string(), e.source.clone())].into(),
            object: object.to_string(),
            severity: pb::VerdictKind::Malicious as i32,
            techniques: Vec::new(),
        }
    }

    /// The verdict of a blocked digest no scan has seen: malicious, by the list.
    pub fn blocked_verdict(&self, kind: &str, digest: &str, ruleset_id: &str) -> Option<pb::Verdict> {
        let e = self.blocked(kind, digest)?.clone();
        let mut v = pb::Verdict {
            verdict: pb::VerdictKind::Malicious as i32,
            detections: vec![Self::detection(&e, "")],
            ruleset_id: ruleset_id.into(),
            ioc: Some(matched(&e, "")),
            ..Default::default()
        };
        match kind {
            "sha256" => v.sha256 = digest.into(),
            "sha1" => v.sha1 = digest.into(),
            _ => v.md5 = digest.into(),
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::iocs::import::parse;

    #[test]
    fn a_listed_digest_blocks_and_names_its_entry() {
        let md5 = "44d88612fea8a8f36de82e1278abb02f";
        let sha256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
        let lists = Lists::new(parse("block", &format!("{md5},Eicar.Test\n{sha256}"), "t", 1).unwrap());
        let mut v =
            pb::Verdict { sha256: "0".repeat(64), md5: md5.into(), verdict: pb::VerdictKind::Clean as i32, ..Default::default() };
        lists.apply(&mut v);
        assert_eq!((v.verdict, v.detections[0].rule.as_str()), (pb::VerdictKind::Malicious as i32, "Eicar.Test"));
        assert_eq!(v.ioc.as_ref().unwrap().list, "block");
        assert!(
            lists.blocked_verdict("sha256", sha256, "rs").is_some()
                && lists.blocked_verdict("md5", &"1".repeat(32), "rs").is_none()
        );
    }

    fn object(path: &str, parent: u32, sha256: char) -> pb::ObjectDigests {
        pb::ObjectDigests { object: path.into(), parent, sha256: sha256.to_string().repeat(64), ..Default::default() }
    }

    fn hit(rule: &str, object: &str, kind: pb::VerdictKind) -> pb::Detection {
        pb::Detection { rule: rule.into(), object: object.into(), severity: kind as i32, ..Default::default() }
    }

    fn lists(block: &str, allow: &str) -> Lists {
        let mut e = parse("block", block, "t", 1).unwrap();
        e.extend(parse("allow", allow, "t", 1).unwrap());
        Lists::new(e)
    }

    /// An archive: `a.zip` (1) holding `a.zip/tool.exe` (2) and
    /// `a.zip/tool.exe/x.bin` (3, an object inside tool.exe), and `b.txt` (4).
    fn archive() -> pb::Verdict {
        use pb::VerdictKind::*;
        pb::Verdict {
            sha256: "0".repeat(64),
            verdict: Malicious as i32,
            objects_scanned: 5,
            objects: vec![
                object("a.zip", 0, 'a'),
                object("a.zip/tool.exe", 1, 'b'),
                object("a.zip/tool.exe/x.bin", 2, 'c'),
                object("b.txt", 0, 'd'),
            ],
            detections: vec![hit("Packed", "a.zip/tool.exe", Suspicious), hit("Dropper", "a.zip/tool.exe/x.bin", Malicious)],
            ..Default::default()
        }
    }

    #[test]
    fn block_entries_reach_objects_inside_archives() {
        let iocs = lists(&format!("{},Bad.Text\n{},Bad.Md5", "d".repeat(64), "e".repeat(32)), "");
        let mut v = archive();
        v.verdict = pb::VerdictKind::Clean as i32;
        v.detections.clear();
        v.objects[2].md5 = "e".repeat(32);
        iocs.apply(&mut v);
        assert_eq!(v.verdict, pb::VerdictKind::Malicious as i32);
        let found: Vec<(&str, &str)> = v.detections.iter().map(|d| (d.rule.as_str(), d.object.as_str())).collect();
        assert_eq!(found, [("Bad.Md5", "a.zip/tool.exe/x.bin"), ("Bad.Text", "b.txt")]);
        assert_eq!(v.ioc.as_ref().map(|m| m.object.as_str()), Some("a.zip/tool.exe/x.bin"));
        // A truncated object's digest is of its first bytes: no match.
        let mut v = archive();
        v.objects[3].truncated = true;
        v.detections.clear();
        iocs.apply(&mut v);
        assert!(v.ioc.is_none(), "{v:?}");
        // md5 entries make scans compute nested md5s, and older verdicts stale.
        assert_eq!(iocs.object_kinds(), DigestKinds { md5: true, sha1: false });
        assert!(!iocs.covers(&archive()));
        assert!(iocs.covers(&pb::Verdict { objects_md5: true, ..archive() }));
        assert!(iocs.covers(&pb::Verdict { objects_scanned: 1, ..Default::default() }), "nothing inside to hash");
    }

    #[test]
    fn allow_entries_clear_an_object_and_what_is_inside_it_only() {
        use pb::VerdictKind::*;
        // tool.exe allowed: its detection and x.bin's inside it go; clean.
        let iocs = lists("", &format!("{} FP ticket 12", "b".repeat(64)));
        let mut v = archive();
        iocs.apply(&mut v);
        assert_eq!((v.verdict, v.detections.len()), (Clean as i32, 0), "{v:?}");
        let m = v.ioc.unwrap();
        assert_eq!((m.list.as_str(), m.name.as_str(), m.object.as_str()), ("allow", "FP ticket 12", "a.zip/tool.exe"));

        // x.bin allowed: tool.exe's own detection stays (suspicious).
        let iocs = lists("", &"c".repeat(64));
        let mut v = archive();
        iocs.apply(&mut v);
        assert_eq!((v.verdict, v.detections.len()), (Suspicious as i32, 1), "{v:?}");

        // A member named like the allowed one keeps its detection; so does
        // every one when the list of objects is incomplete.
        let iocs = lists("", &"b".repeat(64));
        let mut v = archive();
        v.objects.push(object("a.zip/tool.exe", 1, 'f'));
        iocs.apply(&mut v);
        // (x.bin's path is unique, and it is inside the allowed tool.exe.)
        assert_eq!((v.verdict, v.detections.len()), (Suspicious as i32, 1), "{v:?}");
        assert_eq!(v.detections[0].rule, "Packed");
        let mut v = archive();
        v.objects_truncated = true;
        iocs.apply(&mut v);
        assert_eq!((v.verdict, v.detections.len(), v.ioc.is_none()), (Malicious as i32, 2, true));

        // What policy added stays: suspicious for a limit hit, no detections left.
        let mut v = archive();
        v.verdict = Suspicious as i32;
        v.detections.truncate(1);
        v.detections[0].severity = Clean as i32;
        iocs.apply(&mut v);
        assert_eq!((v.verdict, v.detections.len()), (Suspicious as i32, 0));

        // An allowed object's own block entry and those inside it are void.
        let iocs = lists(&"c".repeat(64), &"b".repeat(64));
        let mut v = archive();
        iocs.apply(&mut v);
        assert_eq!(v.verdict, Clean as i32, "{v:?}");
        // A parent index that does not point back (a malformed list) ties
        // the object to nothing: its detection stays, and the walk ends.
        let mut v = archive();
        v.objects[2].parent = 3;
        iocs.apply(&mut v);
        let objects: Vec<&str> = v.detections.iter().map(|d| d.object.as_str()).collect();
        assert_eq!(objects, ["a.zip/tool.exe/x.bin", "a.zip/tool.exe/x.bin"], "the block entry and the rule: {v:?}");
        assert_eq!(v.verdict, Malicious as i32);
    }
}
