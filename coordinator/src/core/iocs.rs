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
    /// `kind:digest` -> entry.
    block: HashMap<String, pb::IocEntry>,
    /// sha256 -> entry.
    allow: HashMap<String, pb::IocEntry>,
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

fn matched(e: &pb::IocEntry) -> pb::IocMatch {
    pb::IocMatch { list: e.list.clone(), kind: e.kind.clone(), digest: e.digest.clone(), name: e.name.clone() }
}

impl Iocs {
    pub fn new() -> Self {
        Self { lists: RwLock::default(), version: AtomicU64::new(u64::MAX) }
    }

    fn replace(&self, entries: Vec<pb::IocEntry>, version: u64) {
        let mut lists = Lists::default();
        for e in entries {
            match e.list.as_str() {
                "block" => {
                    lists.block.insert(format!("{}:{}", e.kind, e.digest), e);
                }
                "allow" if e.kind == "sha256" => {
                    lists.allow.insert(e.digest.clone(), e);
                }
                _ => {}
            }
        }
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
        if digest.is_empty() {
            return None;
        }
        self.lists.read().unwrap_or_else(|p| p.into_inner()).block.get(&format!("{kind}:{digest}")).cloned()
    }

    /// Apply the lists to a verdict read from the store or a scan.
    pub fn apply(&self, v: &mut pb::Verdict) {
        let allow = self.lists.read().unwrap_or_else(|p| p.into_inner()).allow.get(&v.sha256).cloned();
        if let Some(e) = allow {
            v.verdict = pb::VerdictKind::Clean as i32;
            v.ioc = Some(matched(&e));
            return;
        }
        let hit =
            self.blocked("sha256", &v.sha256).or_else(|| self.blocked("sha1", &v.sha1)).or_else(|| self.blocked("md5", &v.md5));
        if let Some(e) = hit {
            v.verdict = pb::VerdictKind::Malicious as i32;
            v.detections.insert(0, Self::detection(&e));
            v.ioc = Some(matched(&e));
        }
    }

    fn detection(e: &pb::IocEntry) -> pb::Detection {
        pb::Detection {
            rule: rule_name(e),
            namespace: "ioc".into(),
            tags: vec!["ioc".into(), format!("{}-list", e.list)],
            meta: [("name".to_string(), e.name.clone()), ("source".to_string(), e.source.clone())].into(),
            object: String::new(),
            severity: pb::VerdictKind::Malicious as i32,
            techniques: Vec::new(),
        }
    }

    /// The verdict of a blocked digest no scan has seen: malicious, by the list.
    pub fn blocked_verdict(&self, kind: &str, digest: &str, ruleset_id: &str) -> Option<pb::Verdict> {
        let e = self.blocked(kind, digest)?;
        let mut v = pb::Verdict {
            verdict: pb::VerdictKind::Malicious as i32,
            detections: vec![Self::detection(&e)],
            ruleset_id: ruleset_id.into(),
            ioc: Some(matched(&e)),
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

    pub async fn list_iocs(&self, caller: &Caller) -> Result<Vec<pb::IocEntry>, Status> {
        caller.require(Op::GetVerdict)?;
        let mut entries = self.store.iocs().await.map_err(super::store_unavailable)?;
        entries.sort_by(|a, b| (&a.list, &a.kind, &a.digest).cmp(&(&b.list, &b.kind, &b.digest)));
        Ok(entries)
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
}
