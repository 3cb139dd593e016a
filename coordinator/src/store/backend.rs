//! What every verdict store backend implements: verdicts by (ruleset id,
//! sha256) with their md5/sha1 index, the detections feed and the scan
//! locks, each with methods of its own; and tables of records (tokens,
//! agents, revoked ids, the poison list, IOC entries, ...) through five
//! generic operations on rows of bytes by key, which each backend writes
//! once. What a row holds is the typed layer's business ([`super::records`]).

use qala_proto::v1::{DetectionEvent, Verdict};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("embedded store: {0}")]
    Embedded(String),
    #[error("redis store: {0}")]
    Redis(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[from] prost::DecodeError),
    #[error(
        "invalid store spec {0:?}: use embedded:PATH, redis[s]://HOST:PORT, redis[s]+cluster://HOST:PORT[,...] or redis[s]+sentinel://HOST:PORT[,...]/MASTER"
    )]
    Spec(String),
    #[error("store unavailable (degraded, retried in the background): {0}")]
    Unavailable(String),
}

/// A table of records: rows of bytes by key, and a counter that moves
/// whenever a row is added, replaced or removed. Its name is the embedded
/// store's `NAME_v1` table and Redis's `qala:v1:NAME` hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table(pub &'static str);

impl Table {
    pub fn name(self) -> &'static str {
        self.0
    }
}

/// One agent holding one content, as of `last_seen_ms`: what a sighting
/// is (an agent id and a sha256, never a path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub agent_id: String,
    pub sha256: String,
    /// When this agent first reported this content.
    pub first_seen_ms: i64,
    /// When it last did.
    pub last_seen_ms: i64,
}

/// Storage of verdicts by (ruleset id, sha256), and of tables of records.
#[async_trait::async_trait]
pub trait VerdictStore: Send + Sync + 'static {
    /// The verdict for `sha256` produced by `ruleset_id`, if stored.
    async fn get(&self, ruleset_id: &str, sha256: &str) -> Result<Option<Verdict>, StoreError>;

    /// The stored verdicts among `sha256s` for `ruleset_id` (missing ones are left out).
    async fn get_many(&self, ruleset_id: &str, sha256s: &[String]) -> Result<Vec<Verdict>, StoreError>;

    /// Store unconditionally under (verdict.ruleset_id, verdict.sha256),
    /// until `verdict.expires_at_ms` if set; index its md5 and sha1
    /// ([`VerdictStore::resolve`]) and, for a detection, add `event` to the
    /// detections feed. Use [`super::save`], which decides what is kept.
    async fn put(&self, verdict: &Verdict, event: Option<&DetectionEvent>) -> Result<(), StoreError>;

    /// The sha256s of the submissions whose `kind` digest (`md5` or
    /// `sha1`, lower-case hex) is `digest`: one md5 may name several files.
    async fn resolve(&self, kind: &str, digest: &str) -> Result<Vec<String>, StoreError>;

    /// Detections feed: events at or after `since_ms`, oldest first, at most `limit`.
    async fn detections(&self, since_ms: i64, limit: usize) -> Result<Vec<DetectionEvent>, StoreError>;

    /// Drop feed events older than `before_ms`; how many went.
    async fn purge_detections(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Add or replace rows of `table` (key, bytes); moves its version once.
    async fn put_rows(&self, table: Table, rows: &[(String, Vec<u8>)]) -> Result<(), StoreError>;

    /// The bytes of row `key` of `table`, if any.
    async fn get_row(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Remove rows of `table`; how many there were (the version moves if any).
    async fn delete_rows(&self, table: Table, keys: &[String]) -> Result<u64, StoreError>;

    /// The bytes of every row of `table`.
    async fn rows(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreError>;

    /// A number that changes whenever `table` does (coordinators sharing a
    /// store reload what they keep in memory, the IOC lists, when it moves).
    async fn table_version(&self, table: Table) -> Result<u64, StoreError>;

    /// Record that each agent held each content at the sighting's
    /// `last_seen_ms` (a pair not known yet takes it as `first_seen_ms`
    /// too; an older report never moves `last_seen_ms` back). Past `cap`
    /// sightings of one agent, its least recently seen go and the agent is
    /// marked truncated.
    async fn record_sightings(&self, seen: &[Sighting], cap: u64) -> Result<(), StoreError>;

    /// `agent_id` no longer holds `sha256s`: their sightings go; how many
    /// there were.
    async fn forget_sightings(&self, agent_id: &str, sha256s: &[String]) -> Result<u64, StoreError>;

    /// The agents holding `sha256`, by agent id.
    async fn sightings_of(&self, sha256: &str) -> Result<Vec<Sighting>, StoreError>;

    /// What `agent_id` holds, most recently seen first, at most `limit`;
    /// and whether the cap ever dropped some of its sightings.
    async fn sightings_by(&self, agent_id: &str, limit: usize) -> Result<(Vec<Sighting>, bool), StoreError>;

    /// The distinct contents any agent was last seen holding at or after
    /// `since_ms`, at most `limit` (and whether some were left out).
    async fn sighted_since(&self, since_ms: i64, limit: usize) -> Result<(Vec<String>, bool), StoreError>;

    /// Drop the sightings last seen before `before_ms`; how many went.
    async fn purge_sightings(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Human-readable description for status output.
    fn describe(&self) -> String;

    /// Check that the store answers.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether several coordinators may use this store at once (and so need
    /// its scan locks).
    fn shared(&self) -> bool {
        false
    }

    /// Take the scan lock of `key` (ruleset id + sha256) for `ttl`, as
    /// `token`: false if another holder has it. Coordinators sharing the
    /// store take it before scanning, so one content is scanned once across
    /// all of them. A store only one coordinator can open (embedded) grants
    /// it always: that coordinator coalesces in memory.
    async fn lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let _ = (key, token, ttl);
        Ok(true)
    }

    /// Extend the lock for another `ttl` if `token` still holds it.
    async fn relock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let _ = (key, token, ttl);
        Ok(true)
    }

    /// Give the lock back if `token` holds it.
    async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let _ = (key, token);
        Ok(())
    }
}

/// The key of a verdict, and of its scan lock.
pub fn key(ruleset_id: &str, sha256: &str) -> String {
    format!("{ruleset_id}:{sha256}")
}

/// The index keys of a verdict's md5 and sha1 (`md5:HEX`, `sha1:HEX`).
pub fn alias_keys(v: &Verdict) -> Vec<String> {
    let mut out = Vec::new();
    if !v.md5.is_empty() {
        out.push(format!("md5:{}", v.md5));
    }
    if !v.sha1.is_empty() {
        out.push(format!("sha1:{}", v.sha1));
    }
    out
}

/// Whether a stored verdict is past its `expires_at_ms`.
pub fn expired(v: &Verdict) -> bool {
    v.expires_at_ms != 0 && v.expires_at_ms <= qala_common::now_ms()
}

pub fn decode(bytes: &[u8]) -> Result<Verdict, StoreError> {
    Ok(prost::Message::decode(bytes)?)
}
