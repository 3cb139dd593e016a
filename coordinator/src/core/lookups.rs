//! Verdicts by hash, without an upload: an agent's batched `Lookup` of the
//! sha256s it holds (the hash-first step of every scan), an analyst's
//! `GetVerdict` by sha256, sha1 or md5, and REST's batch of mixed digests.
//! Every answer goes through the IOC lists, and a blocked digest nobody
//! scanned yet is answered from its list.

use super::answer::Answers;
use super::digests::{hash_kind, valid_sha256};
use super::error::CoreError;
use super::iocs::IocLists;
use super::shared::Shared;
use super::sightings::Sightings;
use crate::auth::{Caller, Op};
use crate::metrics::Metrics;
use crate::rules::RulesManager;
use crate::store::Guarded;
use qala_proto::v1 as pb;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Most digests accepted by one `Lookup`.
pub const MAX_LOOKUP: usize = 10_000;

/// Largest `Lookup` answer, well under the 16 MiB message cap (a worker's
/// verdict is at most 4 MiB encoded, so one always fits).
const MAX_LOOKUP_BYTES: usize = 12 << 20;

pub struct Lookups {
    store: Arc<Guarded>,
    rules: Arc<RulesManager>,
    iocs: Arc<IocLists>,
    answers: Arc<Answers>,
    metrics: Arc<Metrics>,
    sightings: Arc<Sightings>,
}

impl Lookups {
    pub fn new(s: &Shared, sightings: Arc<Sightings>) -> Self {
        Self {
            store: s.store.clone(),
            rules: s.rules.clone(),
            iocs: s.iocs.clone(),
            answers: s.answers.clone(),
            metrics: s.metrics.clone(),
            sightings,
        }
    }

    /// The id of the ruleset in force: the one every answer is under.
    pub fn ruleset_id(&self) -> String {
        self.rules.current().id.clone()
    }

    /// The verdicts of `sha256s` known under the current rules.
    /// An agent holds what it asks about: recorded as its sightings unless
    /// `no_sightings`.
    pub async fn lookup(
        &self,
        caller: &Caller,
        sha256s: Vec<String>,
        brief: bool,
        no_sightings: bool,
    ) -> Result<pb::LookupResponse, CoreError> {
        caller.require(Op::Lookup)?;
        if sha256s.len() > MAX_LOOKUP {
            return Err(CoreError::Invalid(format!("at most {MAX_LOOKUP} digests per Lookup")));
        }
        if let Some(bad) = sha256s.iter().find(|s| !valid_sha256(s)) {
            return Err(CoreError::Invalid(format!("not a lower-case hex sha256: {bad:?}")));
        }
        let rules = self.rules.current();
        self.metrics.lookups.inc_by(sha256s.len() as u64);
        self.sightings.seen(caller, &sha256s, no_sightings);
        // With the store down every file is unknown: the agent uploads it
        // and it is scanned again (degraded, never wrong).
        let mut verdicts = self.store.call(|s| s.get_many(&rules.id, &sha256s)).await.unwrap_or_default();
        // One scanned before an md5/sha1 list needed its objects' digests
        // is unknown to agents: uploaded and scanned again.
        verdicts.retain(|v| self.iocs.covers(v));
        for v in &mut verdicts {
            self.iocs.apply(v);
        }
        // A blocked file nobody scanned yet is answered from its list.
        let known: HashSet<String> = verdicts.iter().map(|v| v.sha256.clone()).collect();
        for sha in sha256s.iter().filter(|s| !known.contains(*s)) {
            verdicts.extend(self.iocs.blocked_verdict("sha256", sha, &rules.id));
        }
        if brief {
            verdicts.iter_mut().for_each(Answers::brief);
        }
        // Bounded: a batch of large verdicts is cut, and the client asks again.
        let mut bytes = 0;
        let keep = verdicts
            .iter()
            .position(|v| {
                bytes += prost::Message::encoded_len(v) + 8;
                bytes > MAX_LOOKUP_BYTES
            })
            .unwrap_or(verdicts.len());
        let truncated = keep < verdicts.len();
        verdicts.truncate(keep.max(usize::from(truncated && keep == 0)));
        self.answers.audit().event(
            "lookup",
            Some(caller),
            json!({"asked": sha256s.len(), "answered": verdicts.len(), "truncated": truncated}),
        );
        for v in &mut verdicts {
            self.answers.served(caller, "lookup", v);
            Answers::for_caller(caller, v);
        }
        Ok(pb::LookupResponse { verdicts, ruleset_id: rules.id.clone(), truncated })
    }

    /// `GetVerdict`: every verdict of the files with the digest `hash`.
    pub async fn get_verdict(&self, caller: &Caller, hash: &str) -> Result<pb::GetVerdictResponse, CoreError> {
        let verdicts = self.by_hash(caller, hash, "get_verdict").await?;
        Ok(pb::GetVerdictResponse { verdict: verdicts.first().cloned(), ruleset_id: self.ruleset_id(), verdicts })
    }

    /// For each of `hashes` (sha256, sha1 or md5, checked by the caller),
    /// the verdicts under the current rules of the files with that digest.
    pub async fn lookup_any(&self, caller: &Caller, hashes: &[String]) -> Result<Vec<Vec<pb::Verdict>>, CoreError> {
        caller.require(Op::Lookup)?;
        let rules = self.rules.current();
        let mut wanted: Vec<Vec<String>> = Vec::with_capacity(hashes.len());
        for h in hashes {
            wanted.push(match hash_kind(h) {
                Some("sha256") => vec![h.clone()],
                Some(kind) => self.store.call(|s| s.resolve(kind, h)).await?,
                None => return Err(CoreError::Invalid(format!("not a hex sha256, sha1 or md5: {h:?}"))),
            });
        }
        let mut all: Vec<String> = wanted.iter().flatten().cloned().collect();
        all.sort();
        all.dedup();
        let found: HashMap<String, pb::Verdict> =
            self.store.call(|s| s.get_many(&rules.id, &all)).await?.into_iter().map(|v| (v.sha256.clone(), v)).collect();
        let mut out = Vec::with_capacity(hashes.len());
        let mut answered = 0;
        for (h, shas) in hashes.iter().zip(wanted) {
            let mut vs: Vec<pb::Verdict> = shas.iter().filter_map(|s| found.get(s).cloned()).collect();
            for v in &mut vs {
                self.iocs.apply(v);
                self.answers.served(caller, "rest_lookup", v);
                Answers::for_caller(caller, v);
            }
            if vs.is_empty() {
                vs.extend(self.iocs.blocked_verdict(hash_kind(h).unwrap_or("sha256"), h, &rules.id));
            }
            answered += usize::from(!vs.is_empty());
            out.push(vs);
        }
        self.answers.audit().event("lookup", Some(caller), json!({"asked": hashes.len(), "answered": answered, "via": "rest"}));
        Ok(out)
    }

    /// Every verdict under the current rules of a file whose sha256, sha1
    /// or md5 (told apart by length) is `hash`.
    pub async fn by_hash(&self, caller: &Caller, hash: &str, via: &str) -> Result<Vec<pb::Verdict>, CoreError> {
        caller.require(Op::GetVerdict)?;
        let hash = hash.trim().to_ascii_lowercase();
        let kind = hash_kind(&hash).ok_or_else(|| CoreError::Invalid(format!("not a hex sha256, sha1 or md5: {hash:?}")))?;
        let rules = self.rules.current();
        let sha256s = match kind {
            "sha256" => vec![hash.clone()],
            _ => self.store.call(|s| s.resolve(kind, &hash)).await?,
        };
        let mut verdicts = self.store.call(|s| s.get_many(&rules.id, &sha256s)).await?;
        verdicts.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        for v in &mut verdicts {
            self.iocs.apply(v);
        }
        if verdicts.is_empty() {
            verdicts.extend(self.iocs.blocked_verdict(kind, &hash, &rules.id));
        }
        self.answers.audit().event(via, Some(caller), json!({"hash": hash, "kind": kind, "found": verdicts.len()}));
        for v in &mut verdicts {
            self.answers.served(caller, via, v);
            Answers::for_caller(caller, v);
        }
        Ok(verdicts)
    }
}
