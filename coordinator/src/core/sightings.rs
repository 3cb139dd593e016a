//! Sightings: which agent holds which content (an agent id and a sha256
//! with first and last seen, never a path or a file name). Every agent's
//! lookup and upload says what it holds; they are gathered here, coalesced
//! in memory (an agent asking about one content twice within a flush is
//! one write) and written to the store in batches by [`Sightings::run`],
//! so a lookup never waits for them. Read by analysts and admins only:
//! who holds a content ([`Sightings::holders`]) and what one agent holds
//! that is a detection now ([`Sightings::agent`]).

use super::digests::hash_kind;
use super::error::CoreError;
use super::iocs::IocLists;
use super::shared::Shared;
use crate::audit::Audit;
use crate::auth::{Caller, Op, Role};
use crate::metrics::Metrics;
use crate::rules::RulesManager;
use crate::store::{Guarded, Sighting};
use qala_proto::v1 as pb;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

/// How often gathered sightings are written.
const FLUSH: Duration = Duration::from_secs(1);
/// Gathered sightings that make a write at once, before [`FLUSH`]: large,
/// as an embedded store's write costs by pages touched (random digests
/// touch a page each), not by rows.
const BATCH: usize = 100_000;
/// Sightings held in memory at most while the store does not take them
/// (degraded): past it new ones are dropped and counted, never a lookup
/// slowed or refused.
const MAX_PENDING: usize = 500_000;
/// A pair written this recently is not written again: repeated lookups of
/// the same files (every rescan) cost no store write, and `last_seen` is
/// exact to within twice this.
const REWRITE_AFTER: Duration = Duration::from_secs(15 * 60);
/// Slots of the table of pairs written recently (8 bytes each: 16 MiB).
const RECENT_SLOTS: usize = 1 << 21;
/// Most digests in one `Gone`.
const MAX_GONE: usize = 10_000;
/// Sightings of one agent read for its page.
const AGENT_READ: usize = 100_000;
/// Verdicts read from the store at a time.
const CHUNK: usize = 1000;

/// How sightings are kept, from the coordinator's flags.
#[derive(Debug, Clone, Copy)]
pub struct SightingSettings {
    /// Off: nothing is recorded (`--no-sightings`).
    pub enabled: bool,
    /// How long a sighting is kept after it was last seen.
    pub keep: Duration,
    /// Sightings kept per agent; past it the least recently seen go.
    pub per_agent: u64,
}

impl Default for SightingSettings {
    fn default() -> Self {
        Self { enabled: true, keep: Duration::from_secs(90 * 86_400), per_agent: 1_000_000 }
    }
}

pub struct Sightings {
    settings: SightingSettings,
    store: Arc<Guarded>,
    rules: Arc<RulesManager>,
    iocs: Arc<IocLists>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    gathered: Mutex<Gathered>,
    recent: Recent,
    full: Notify,
}

/// Sightings not written yet: (agent id, sha256) -> (first, last) seen.
type Gathered = HashMap<(String, String), (i64, i64)>;

/// The pairs written recently, by fingerprint: a fixed table of atomics,
/// read and written without a lock or an allocation (a lookup of digests
/// an agent asked about before costs one load per digest). A slot holds a
/// fingerprint's upper 56 bits and the generation ([`REWRITE_AFTER`] long,
/// 8 bits) it was gathered in; a pair is fresh unless its slot holds it
/// from this generation or the one before, so it is written again after
/// [`REWRITE_AFTER`] to twice that. Two pairs sharing a slot push each
/// other out: the other is written again sooner, nothing is lost.
struct Recent {
    slots: Box<[AtomicU64]>,
    started: std::time::Instant,
}

impl Recent {
    fn new(slots: usize) -> Self {
        Self { slots: (0..slots).map(|_| AtomicU64::new(0)).collect(), started: std::time::Instant::now() }
    }

    /// The generation now (read once per call).
    fn generation(&self) -> u64 {
        (self.started.elapsed().as_secs() / REWRITE_AFTER.as_secs()) & 0xff
    }

    fn slot(&self, fp: u64) -> Option<&AtomicU64> {
        self.slots.get(fp as usize & self.slots.len().wrapping_sub(1))
    }

    /// What the pair's slot holds now.
    fn peek(&self, fp: u64) -> u64 {
        self.slot(fp).map_or(0, |s| s.load(Ordering::Relaxed))
    }

    /// Whether the pair was not gathered in generation `generation` or
    /// the one before (and mark it gathered now).
    #[cfg(test)]
    fn fresh(&self, fp: u64, generation: u64) -> bool {
        self.fresh_given(fp, self.peek(fp), generation)
    }

    /// [`Recent::fresh`], its slot read already (`held`).
    fn fresh_given(&self, fp: u64, held: u64, generation: u64) -> bool {
        let Some(slot) = self.slot(fp) else { return true };
        let tag = fp & !0xff;
        if held & !0xff == tag && generation.wrapping_sub(held & 0xff) & 0xff <= 1 {
            return false;
        }
        slot.store(tag | generation, Ordering::Relaxed);
        true
    }

    fn forget(&self, fp: u64) {
        if let Some(slot) = self.slot(fp)
            && slot.load(Ordering::Relaxed) & !0xff == fp & !0xff
        {
            slot.store(0, Ordering::Relaxed);
        }
    }
}

/// A pair's fingerprint for [`Recent`]: the agent's (keyed) hash mixed
/// with the digest's first 32 hex characters (128 random bits), read as
/// two words and multiplied through, without decoding the hex (this runs
/// for every digest of every lookup). A collision only delays one
/// `last_seen` update (or a first sighting) by at most [`REWRITE_AFTER`] x 2.
fn fingerprint(agent: u64, sha256: &str) -> u64 {
    let b = sha256.as_bytes();
    let word = |i: usize| b.get(i..i + 8).and_then(|w| w.try_into().ok()).map_or(0, u64::from_le_bytes);
    let x = (word(0) ^ agent).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ word(8).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let y = (x ^ word(16)).wrapping_mul(0x1656_67B1_9E37_79F9) ^ word(24);
    (y ^ (y >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (y >> 32)
}

/// The agent's part of [`fingerprint`], once per call.
fn agent_key(agent: &str) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one(agent)
}

impl Sightings {
    pub fn new(s: &Shared, settings: SightingSettings) -> Self {
        Self {
            settings,
            store: s.store.clone(),
            rules: s.rules.clone(),
            iocs: s.iocs.clone(),
            audit: s.audit.clone(),
            metrics: s.metrics.clone(),
            gathered: Mutex::default(),
            recent: Recent::new(if settings.enabled { RECENT_SLOTS } else { 0 }),
            full: Notify::new(),
        }
    }

    fn gathered(&self) -> std::sync::MutexGuard<'_, Gathered> {
        self.gathered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `caller` holds `sha256s` now (checked digests). Only agents' are
    /// recorded (an analyst looking a hash up holds nothing), and not when
    /// the agent asked not to (`no_sightings`) or the coordinator records none.
    pub fn seen<'a>(&self, caller: &Caller, sha256s: impl IntoIterator<Item = &'a String>, no_sightings: bool) {
        if !self.settings.enabled || no_sightings || caller.role != Role::Agent {
            return;
        }
        let agent = agent_key(&caller.name);
        let generation = self.recent.generation();
        // Most digests of a lookup were asked about before: those cost a
        // load each, and take no lock. The slots are read first, all at
        // once (random reads of a 16 MiB table: the CPU overlaps them),
        // then decided on.
        let asked: Vec<(&String, u64)> = sha256s.into_iter().map(|sha| (sha, fingerprint(agent, sha))).collect();
        let held: Vec<u64> = asked.iter().map(|(_, fp)| self.recent.peek(*fp)).collect();
        let mut fresh = asked
            .iter()
            .zip(held)
            .filter(|((_, fp), held)| self.recent.fresh_given(*fp, *held, generation))
            .map(|((sha, _), _)| *sha)
            .peekable();
        if fresh.peek().is_none() {
            return;
        }
        let now = qala_common::now_ms();
        let mut dropped = 0u64;
        let len = {
            let mut g = self.gathered();
            for sha in fresh {
                if g.len() < MAX_PENDING {
                    g.insert((caller.name.clone(), sha.clone()), (now, now));
                } else {
                    // Not remembered as written: the next lookup tries again.
                    self.recent.forget(fingerprint(agent, sha));
                    dropped += 1;
                }
            }
            g.len()
        };
        if dropped > 0 {
            self.metrics.sightings_dropped.inc_by(dropped);
        }
        if len >= BATCH {
            self.full.notify_one();
        }
    }

    /// Write what was gathered; kept for the next try if the store fails.
    pub async fn flush(&self) {
        let taken: Vec<Sighting> = {
            let mut g = self.gathered();
            if g.is_empty() {
                return;
            }
            std::mem::take(&mut *g)
                .into_iter()
                .map(|((agent_id, sha256), (first, last))| Sighting {
                    agent_id,
                    sha256,
                    first_seen_ms: first,
                    last_seen_ms: last,
                })
                .collect()
        };
        let cap = self.settings.per_agent;
        for chunk in taken.chunks(BATCH) {
            match self.store.call(|s| s.record_sightings(chunk, cap)).await {
                Ok(()) => {
                    self.metrics.sightings.inc_by(chunk.len() as u64);
                }
                Err(e) => {
                    warn!(error = %e, sightings = chunk.len(), "sightings not written; kept for the next try");
                    let mut g = self.gathered();
                    for s in chunk {
                        if g.len() >= MAX_PENDING {
                            self.metrics.sightings_dropped.inc();
                            continue;
                        }
                        let seen = g.entry((s.agent_id.clone(), s.sha256.clone())).or_insert((s.first_seen_ms, 0));
                        seen.0 = seen.0.min(s.first_seen_ms);
                        seen.1 = seen.1.max(s.last_seen_ms);
                    }
                }
            }
        }
    }

    /// Write gathered sightings every [`FLUSH`] (sooner when a batch is
    /// full), and drop those past their retention hourly, until `stop`
    /// (then write what is left).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.settings.enabled {
            return;
        }
        let mut next_purge = tokio::time::Instant::now();
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(FLUSH) => false,
                _ = self.full.notified() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            self.flush().await;
            if stopping {
                return;
            }
            if tokio::time::Instant::now() >= next_purge && !self.settings.keep.is_zero() {
                next_purge += Duration::from_secs(3600);
                let before = qala_common::now_ms() - self.settings.keep.as_millis().min(i64::MAX as u128) as i64;
                match self.store.call(|s| s.purge_sightings(before)).await {
                    Ok(n) if n > 0 => info!(sightings = n, "sightings: dropped those past their retention"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "sightings: purge failed; trying again later"),
                }
            }
        }
    }

    /// The calling agent no longer holds `sha256s`.
    pub async fn gone(&self, caller: &Caller, sha256s: &[String]) -> Result<u32, CoreError> {
        caller.require(Op::AgentReport)?;
        if sha256s.len() > MAX_GONE {
            return Err(CoreError::Invalid(format!("at most {MAX_GONE} digests per call")));
        }
        if let Some(bad) = sha256s.iter().find(|s| !super::digests::valid_sha256(s)) {
            return Err(CoreError::Invalid(format!("not a lower-case hex sha256: {bad:?}")));
        }
        {
            let agent = agent_key(&caller.name);
            let mut g = self.gathered();
            for sha in sha256s {
                g.remove(&(caller.name.clone(), sha.clone()));
                self.recent.forget(fingerprint(agent, sha));
            }
        }
        let n = self.store.call(|s| s.forget_sightings(&caller.name, sha256s)).await?;
        Ok(n as u32)
    }

    /// Who holds the content named by `hash` (a sha256, or the md5/sha1 of
    /// a stored submission): each holder with its host name and last check-in.
    pub async fn holders(&self, caller: &Caller, hash: &str) -> Result<pb::SightingsResponse, CoreError> {
        caller.require(Op::Inventory)?;
        let hash = hash.trim().to_ascii_lowercase();
        let kind = hash_kind(&hash).ok_or_else(|| CoreError::Invalid(format!("not a hex sha256, sha1 or md5: {hash:?}")))?;
        // What is gathered now counts too: "who holds it" includes the last second.
        self.flush().await;
        let r = holders_in(&self.store, kind, &hash).await?;
        let holders = &r.holders;
        self.audit.event("sightings", Some(caller), json!({"hash": hash, "kind": kind, "holders": holders.len()}));
        Ok(r)
    }

    /// The agents holding `sha256` (for notices; no caller, no audit line).
    pub async fn holders_of(&self, sha256: &str) -> Result<Vec<String>, CoreError> {
        self.flush().await;
        Ok(self.store.call(|s| s.sightings_of(sha256)).await?.into_iter().map(|s| s.agent_id).collect())
    }

    /// The contents agent `agent_id` holds (its most recent sightings, up
    /// to the per-agent read), for a feed filtered by agent.
    pub async fn held_by(&self, caller: &Caller, agent_id: &str) -> Result<std::collections::HashSet<String>, CoreError> {
        caller.require(Op::Inventory)?;
        crate::auth::check_token_name(agent_id).map_err(CoreError::Invalid)?;
        self.flush().await;
        let (held, _) = self.store.call(|s| s.sightings_by(agent_id, AGENT_READ)).await?;
        Ok(held.into_iter().map(|s| s.sha256).collect())
    }

    /// One agent's record and what it holds that is a detection now (under
    /// the current rules and IOC lists).
    pub async fn agent(&self, caller: &Caller, agent_id: &str) -> Result<pb::GetAgentResponse, CoreError> {
        let r = self.holdings(caller, agent_id).await?;
        self.audit.event("agent_holdings", Some(caller), json!({"agent_id": agent_id, "detections": r.detections.len()}));
        Ok(r)
    }

    /// [`Sightings::agent`] without its audit line: one row of the fleet
    /// view (audited once, as the whole list).
    pub async fn holdings(&self, caller: &Caller, agent_id: &str) -> Result<pb::GetAgentResponse, CoreError> {
        caller.require(Op::Inventory)?;
        crate::auth::check_token_name(agent_id).map_err(CoreError::Invalid)?;
        let Some(agent) = self.store.get::<pb::AgentRecord>(agent_id).await? else {
            return Err(CoreError::NotFound(format!("no agent {agent_id:?}")));
        };
        self.flush().await;
        let (held, truncated) = self.store.call(|s| s.sightings_by(agent_id, AGENT_READ)).await?;
        let rules = self.rules.current();
        let mut detections = Vec::new();
        for chunk in held.chunks(CHUNK) {
            let shas: Vec<String> = chunk.iter().map(|s| s.sha256.clone()).collect();
            let found: HashMap<String, pb::Verdict> =
                self.store.call(|s| s.get_many(&rules.id, &shas)).await?.into_iter().map(|v| (v.sha256.clone(), v)).collect();
            for s in chunk {
                let verdict = match found.get(&s.sha256) {
                    Some(v) => {
                        let mut v = v.clone();
                        self.iocs.apply(&mut v);
                        Some(v)
                    }
                    None => self.iocs.blocked_verdict("sha256", &s.sha256, &rules.id),
                };
                let Some(v) = verdict else { continue };
                if matches!(pb::VerdictKind::try_from(v.verdict), Ok(pb::VerdictKind::Malicious | pb::VerdictKind::Suspicious)) {
                    detections.push(pb::Held {
                        sha256: s.sha256.clone(),
                        first_seen_ms: s.first_seen_ms,
                        last_seen_ms: s.last_seen_ms,
                        verdict: v.verdict,
                        rules: v.detections.iter().map(|d| d.rule.clone()).collect(),
                    });
                }
            }
        }
        Ok(pb::GetAgentResponse { agent: Some(agent), detections, sightings: held.len() as u64, truncated })
    }
}

/// Who holds the content `hash` of `kind` (`sha256`, or `md5`/`sha1` of a
/// stored submission) in `store`, with each holder's host name and last
/// check-in from the inventory (the core's answer, and the offline
/// `qala-coordinator sightings --store`).
pub async fn holders_in(store: &Guarded, kind: &str, hash: &str) -> Result<pb::SightingsResponse, CoreError> {
    let sha256s = match kind {
        "sha256" => vec![hash.to_string()],
        _ => store.call(|s| s.resolve(kind, hash)).await?,
    };
    let mut holders = Vec::new();
    let mut records: HashMap<String, Option<pb::AgentRecord>> = HashMap::new();
    for sha in &sha256s {
        for s in store.call(|st| st.sightings_of(sha)).await? {
            if !records.contains_key(&s.agent_id) {
                records.insert(s.agent_id.clone(), store.get::<pb::AgentRecord>(&s.agent_id).await?);
            }
            let record = records.get(&s.agent_id).and_then(Option::as_ref);
            holders.push(pb::Holder {
                hostname: record.map(|r| r.hostname.clone()).unwrap_or_default(),
                last_checkin_ms: record.map_or(0, |r| r.last_seen_ms),
                agent_id: s.agent_id,
                sha256: s.sha256,
                first_seen_ms: s.first_seen_ms,
                last_seen_ms: s.last_seen_ms,
                holds: true,
                ..Default::default()
            });
        }
    }
    // What was done about it: each agent's last action, also by agents
    // that no longer hold it (quarantined, deleted).
    let actions: Vec<pb::ActionRecord> =
        store.all::<pb::ActionRecord>().await?.into_iter().filter(|a| sha256s.contains(&a.sha256)).collect();
    for a in actions {
        if let Some(h) = holders.iter_mut().find(|h| h.agent_id == a.agent_id && h.sha256 == a.sha256) {
            h.action = a.action;
            h.action_ms = a.at_ms;
            continue;
        }
        let record = store.get::<pb::AgentRecord>(&a.agent_id).await?;
        holders.push(pb::Holder {
            hostname: record.as_ref().map(|r| r.hostname.clone()).unwrap_or_default(),
            last_checkin_ms: record.as_ref().map_or(0, |r| r.last_seen_ms),
            agent_id: a.agent_id,
            sha256: a.sha256,
            action: a.action,
            action_ms: a.at_ms,
            holds: false,
            ..Default::default()
        });
    }
    holders.sort_by(|a, b| (&a.sha256, &a.agent_id).cmp(&(&b.sha256, &b.agent_id)));
    Ok(pb::SightingsResponse { sha256s, holders })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_written_again_only_after_a_generation_has_passed() {
        let r = Recent::new(1 << 10);
        let (a, b) = (fingerprint(agent_key("a"), &"ab".repeat(32)), fingerprint(agent_key("b"), &"ab".repeat(32)));
        assert!(r.fresh(a, 7) && !r.fresh(a, 7), "gathered once");
        assert!(r.fresh(b, 7), "another agent, the same content: its own pair");
        assert!(!r.fresh(a, 8), "still recent in the next generation");
        assert!(r.fresh(a, 9), "written again two generations on");
        assert!(!r.fresh(a, 9));
        // The generation wraps at 256.
        assert!(r.fresh(a, 255) && !r.fresh(a, 0) && r.fresh(a, 1));
        r.forget(a);
        assert!(r.fresh(a, 1), "forgotten (gone): fresh again");
        // A pair sharing a slot pushes the other out: written again, not lost.
        let other = a ^ (1 << 40);
        assert!(r.fresh(other, 1) && r.fresh(a, 1));
        let off = Recent::new(0);
        assert!(off.fresh(a, 1) && off.fresh(a, 1), "no table: everything is fresh");
        off.forget(a);
    }
}
