//! Hash IOC lists: block lists of sha256, sha1 and md5 (a listed file is
//! answered `malicious` without a scan, naming the list entry) and allow
//! lists of sha256 (a false-positive override: answered `clean`, with the
//! reason). md5 and sha1 collide too easily to whitelist anything.
//!
//! The lists live in the verdict store, shared by coordinators; each keeps
//! them in memory and reloads them when the store's change counter moves
//! (checked every [`REFRESH`]). They are applied when a verdict is read,
//! against its stored digests, never stored with it and never part of the
//! ruleset id: changing a list never invalidates the cache.

use super::Core;
use crate::auth::{Caller, Op};
use qala_engine::DigestKinds;
use qala_proto::v1 as pb;
use serde_json::json;
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tonic::Status;
use tracing::warn;

/// How often the store's IOC change counter is read.
pub const REFRESH: Duration = Duration::from_secs(2);
/// Most entries one import takes.
pub const MAX_IMPORT: usize = 1_000_000;

#[derive(Default)]
struct Lists {
    /// Every entry, sorted by (list, kind, digest): listed page by page.
    all: Vec<pb::IocEntry>,
    /// `kind:digest` -> index in `all`.
    block: HashMap<String, usize>,
    /// sha256 -> index in `all`.
    allow: HashMap<String, usize>,
    /// Digests of nested objects a scan must compute for the block lists.
    kinds: DigestKinds,
}

#[derive(Default)]
pub struct Iocs {
    lists: RwLock<Lists>,
    /// The store's counter when the lists were read; u64::MAX before that.
    version: AtomicU64,
}

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
        let kind = super::hash_kind(&digest).ok_or_else(|| format!("line {}: {digest:?} is not a sha256, sha1 or md5", n + 1))?;
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

/// Entries listed per page by default, and at most.
pub const PAGE: usize = 1_000;
pub const MAX_PAGE: usize = 10_000;

/// One page of a listing.
pub struct Page {
    pub entries: Vec<pb::IocEntry>,
    /// The cursor of the next page; empty after the last.
    pub next: String,
    pub total: u64,
}

fn rank(kind: i32) -> u8 {
    match pb::VerdictKind::try_from(kind) {
        Ok(pb::VerdictKind::Malicious) => 3,
        Ok(pb::VerdictKind::Suspicious) => 2,
        _ => 1,
    }
}

impl Lists {
    fn blocked(&self, kind: &str, digest: &str) -> Option<&pb::IocEntry> {
        if digest.is_empty() || self.block.is_empty() {
            return None;
        }
        self.block.get(&format!("{kind}:{digest}")).map(|&i| &self.all[i])
    }

    fn allowed(&self, sha256: &str) -> Option<&pb::IocEntry> {
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
}

impl Iocs {
    pub fn new() -> Self {
        Self { lists: RwLock::default(), version: AtomicU64::new(u64::MAX) }
    }

    fn replace(&self, mut entries: Vec<pb::IocEntry>, version: u64) {
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
        *self.lists.write().unwrap_or_else(|p| p.into_inner()) = lists;
        self.version.store(version, Ordering::Relaxed);
    }

    /// Entries on each list, for metrics.
    pub fn counts(&self) -> (usize, usize) {
        let l = self.lists.read().unwrap_or_else(|p| p.into_inner());
        (l.block.len(), l.allow.len())
    }

    /// The block entry for a digest, if listed.
    fn blocked(&self, kind: &str, digest: &str) -> Option<pb::IocEntry> {
        self.lists.read().unwrap_or_else(|p| p.into_inner()).blocked(kind, digest).cloned()
    }

    /// The digests of nested objects scans must compute besides sha256:
    /// md5 and sha1 only while block entries of that kind exist.
    pub fn object_kinds(&self) -> DigestKinds {
        self.lists.read().unwrap_or_else(|p| p.into_inner()).kinds
    }

    /// Whether a stored verdict carries every digest of its nested objects
    /// the lists need now; one that does not is scanned again when next
    /// submitted.
    pub fn covers(&self, v: &pb::Verdict) -> bool {
        let kinds = self.object_kinds();
        v.objects_scanned <= 1 || ((!kinds.md5 || v.objects_md5) && (!kinds.sha1 || v.objects_sha1))
    }

    /// Apply the lists to a verdict read from the store or a scan: to the
    /// file's own digests and to those of every object inside it.
    pub fn apply(&self, v: &mut pb::Verdict) {
        let lists = self.lists.read().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = lists.allowed(&v.sha256) {
            v.verdict = pb::VerdictKind::Clean as i32;
            v.ioc = Some(matched(e, ""));
            return;
        }
        let allowed = lists.allowed_objects(v);
        if allowed.iter().any(|a| a.is_some()) {
            lists.allow_inside(v, &allowed);
        }
        let mut hits: Vec<(&pb::IocEntry, String)> = Vec::new();
        if let Some(e) =
            lists.blocked("sha256", &v.sha256).or_else(|| lists.blocked("sha1", &v.sha1)).or_else(|| lists.blocked("md5", &v.md5))
        {
            hits.push((e, String::new()));
        }
        // Every verdict read passes here: nothing to look up, no walk.
        let objects = if lists.block.is_empty() { &[][..] } else { &v.objects[..] };
        for (i, o) in objects.iter().enumerate() {
            // A truncated object's digests are of its first bytes only, and
            // an allow-listed object's contents are cleared with it.
            if o.truncated || inside(&v.objects, i, &allowed).is_some() {
                continue;
            }
            let e = lists
                .blocked("sha256", &o.sha256)
                .or_else(|| lists.blocked("sha1", &o.sha1))
                .or_else(|| lists.blocked("md5", &o.md5));
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
        let e = self.blocked(kind, digest)?;
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

impl Core {
    /// Read the lists again if the store's change counter moved.
    pub async fn refresh_iocs(&self) {
        let Ok(version) = self.store.ioc_version().await else { return };
        if version == self.iocs.version.load(Ordering::Relaxed) {
            return;
        }
        match self.store.iocs().await {
            Ok(entries) => self.iocs.replace(entries, version),
            Err(e) => warn!(error = %e, "IOC lists: reading them failed; keeping the lists in force"),
        }
    }

    /// Keep the lists fresh until `stop`.
    pub async fn keep_iocs_fresh(self: std::sync::Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            self.refresh_iocs().await;
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One page of the lists in force, in (list, kind, digest) order: the
    /// entries after the cursor `after` (`list:kind:digest`, empty: from the
    /// start), at most `limit` (0: [`PAGE`]; at most [`MAX_PAGE`]).
    pub async fn list_iocs(&self, caller: &Caller, after: &str, limit: usize) -> Result<Page, Status> {
        caller.require(Op::GetVerdict)?;
        let limit = if limit == 0 { PAGE } else { limit.min(MAX_PAGE) };
        let cursor = if after.is_empty() {
            None
        } else {
            let mut parts = after.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(l), Some(k), Some(d)) => Some((l, k, d)),
                _ => return Err(Status::invalid_argument(format!("cursor {after:?}: expected list:kind:digest"))),
            }
        };
        // What this coordinator or another just changed shows at once.
        self.refresh_iocs().await;
        let lists = self.iocs.lists.read().unwrap_or_else(|p| p.into_inner());
        let start = cursor.map_or(0, |c| lists.all.partition_point(|e| key(e) <= c));
        let entries: Vec<pb::IocEntry> = lists.all[start..].iter().take(limit).cloned().collect();
        let more = start + entries.len() < lists.all.len();
        let next = match entries.last() {
            Some(e) if more => format!("{}:{}:{}", e.list, e.kind, e.digest),
            _ => String::new(),
        };
        Ok(Page { entries, next, total: lists.all.len() as u64 })
    }

    /// Import `text` (see [`parse`]) into `list`; how many entries.
    pub async fn add_iocs(&self, caller: &Caller, list: &str, text: &str, via: &str) -> Result<usize, Status> {
        caller.require(Op::Admin)?;
        let entries = parse(list, text, &caller.name, crate::rules::now_ms()).map_err(Status::invalid_argument)?;
        self.store.put_iocs(&entries).await.map_err(super::store_unavailable)?;
        self.audit.event(
            "admin",
            Some(caller),
            json!({"action": "ioc_added", "list": list, "entries": entries.len(), "via": via}),
        );
        self.refresh_iocs().await;
        Ok(entries.len())
    }

    pub async fn remove_ioc(&self, caller: &Caller, list: &str, kind: &str, digest: &str) -> Result<bool, Status> {
        caller.require(Op::Admin)?;
        let removed = self.store.remove_ioc(list, kind, digest).await.map_err(super::store_unavailable)?;
        self.audit.event(
            "admin",
            Some(caller),
            json!({"action": "ioc_removed", "list": list, "kind": kind, "digest": digest, "removed": removed}),
        );
        self.refresh_iocs().await;
        Ok(removed)
    }
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

        let iocs = Iocs::new();
        iocs.replace(e, 1);
        let mut v =
            pb::Verdict { sha256: "0".repeat(64), md5: md5.into(), verdict: pb::VerdictKind::Clean as i32, ..Default::default() };
        iocs.apply(&mut v);
        assert_eq!((v.verdict, v.detections[0].rule.as_str()), (pb::VerdictKind::Malicious as i32, "Eicar.Test"));
        assert_eq!(v.ioc.as_ref().unwrap().list, "block");
        assert!(
            iocs.blocked_verdict("sha256", sha256, "rs").is_some()
                && iocs.blocked_verdict("md5", &"1".repeat(32), "rs").is_none()
        );
    }

    fn object(path: &str, parent: u32, sha256: char) -> pb::ObjectDigests {
        pb::ObjectDigests { object: path.into(), parent, sha256: sha256.to_string().repeat(64), ..Default::default() }
    }

    fn hit(rule: &str, object: &str, kind: pb::VerdictKind) -> pb::Detection {
        pb::Detection { rule: rule.into(), object: object.into(), severity: kind as i32, ..Default::default() }
    }

    fn lists(block: &str, allow: &str) -> Iocs {
        let iocs = Iocs::new();
        let mut e = parse("block", block, "t", 1).unwrap();
        e.extend(parse("allow", allow, "t", 1).unwrap());
        iocs.replace(e, 1);
        iocs
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
