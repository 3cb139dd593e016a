//! The verdict store: one trait, two backends (embedded redb file, Redis).
//!
//! Verdicts are keyed by ruleset id + sha256, so a verdict produced by other
//! rules is never served as current. Whether a verdict may be stored at all
//! is decided here, once, for every backend ([`cacheable`]).

mod embedded;
mod guard;
mod redis;

pub use embedded::EmbeddedStore;
pub use guard::Guarded;
pub use redis::RedisStore;

use prost::Message;
use qala_proto::v1::{AgentRecord, DetectionEvent, IocEntry, TokenRecord, Verdict, VerdictKind};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("embedded store: {0}")]
    Embedded(String),
    #[error("redis store: {0}")]
    Redis(String),
    #[error("stored verdict is corrupt: {0}")]
    Corrupt(#[from] prost::DecodeError),
    #[error(
        "invalid store spec {0:?}: use embedded:PATH, redis[s]://HOST:PORT, redis[s]+cluster://HOST:PORT[,...] or redis[s]+sentinel://HOST:PORT[,...]/MASTER"
    )]
    Spec(String),
    #[error("store unavailable (degraded, retried in the background): {0}")]
    Unavailable(String),
}

/// Storage of verdicts by (ruleset id, sha256).
#[async_trait::async_trait]
pub trait VerdictStore: Send + Sync + 'static {
    /// The verdict for `sha256` produced by `ruleset_id`, if stored.
    async fn get(&self, ruleset_id: &str, sha256: &str) -> Result<Option<Verdict>, StoreError>;

    /// The stored verdicts among `sha256s` for `ruleset_id` (missing ones are left out).
    async fn get_many(&self, ruleset_id: &str, sha256s: &[String]) -> Result<Vec<Verdict>, StoreError>;

    /// Store unconditionally under (verdict.ruleset_id, verdict.sha256),
    /// until `verdict.expires_at_ms` if set; index its md5 and sha1
    /// ([`VerdictStore::resolve`]) and, for a detection, add `event` to the
    /// detections feed. Use [`save`].
    async fn put(&self, verdict: &Verdict, event: Option<&DetectionEvent>) -> Result<(), StoreError>;

    /// The sha256s of the submissions whose `kind` digest (`md5` or
    /// `sha1`, lower-case hex) is `digest`: one md5 may name several files.
    async fn resolve(&self, kind: &str, digest: &str) -> Result<Vec<String>, StoreError>;

    /// Detections feed: events at or after `since_ms`, oldest first, at most `limit`.
    async fn detections(&self, since_ms: i64, limit: usize) -> Result<Vec<DetectionEvent>, StoreError>;

    /// Drop feed events older than `before_ms`; how many went.
    async fn purge_detections(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Add or replace IOC entries (keyed by list, kind and digest).
    async fn put_iocs(&self, entries: &[IocEntry]) -> Result<(), StoreError>;

    /// Remove one IOC entry; whether there was one.
    async fn remove_ioc(&self, list: &str, kind: &str, digest: &str) -> Result<bool, StoreError>;

    /// Every IOC entry.
    async fn iocs(&self) -> Result<Vec<IocEntry>, StoreError>;

    /// A number that changes whenever the IOC lists do (coordinators
    /// reload the lists when it moves).
    async fn ioc_version(&self) -> Result<u64, StoreError>;

    /// Human-readable description for status output.
    fn describe(&self) -> String;

    /// Add or replace the client token named `record.name` (its hash only).
    async fn put_token(&self, record: &TokenRecord) -> Result<(), StoreError>;

    /// Remove the token named `name`; whether there was one.
    async fn delete_token(&self, name: &str) -> Result<bool, StoreError>;

    /// Every client token.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Refuse worker `id` from now on (`at_ms`: when it was revoked).
    async fn revoke_worker(&self, id: &str, at_ms: i64) -> Result<(), StoreError>;

    /// Every revoked worker id.
    async fn revoked_workers(&self) -> Result<Vec<String>, StoreError>;

    /// Put `sha256` on the poison list until `until_ms`: a file that killed
    /// scan processes, sent to no worker until then (`detail`: what it did).
    async fn poison(&self, sha256: &str, detail: &str, until_ms: i64) -> Result<(), StoreError>;

    /// What `sha256` did, if it is on the poison list now.
    async fn poisoned(&self, sha256: &str) -> Result<Option<String>, StoreError>;

    /// Add or replace the inventory record of `record.agent_id`.
    async fn put_agent(&self, record: &AgentRecord) -> Result<(), StoreError>;

    /// The inventory record of `agent_id`, if any.
    async fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError>;

    /// Every agent in the inventory.
    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;

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

/// How long an incomplete verdict is kept: long enough that rescans do not
/// upload the file again every time, short enough that new rules or a new
/// engine soon retry it.
pub const PARTIAL_TTL: Duration = Duration::from_secs(3600);

/// How long a file that killed scan processes stays on the poison list.
pub const POISON_TTL: Duration = Duration::from_secs(3600);

/// The limit a poison file's verdict names (set by the worker).
pub const WORKER_CRASH: &str = "worker_crash";

/// How long a verdict may be kept.
#[derive(Debug, PartialEq, Eq)]
pub enum Retention {
    /// A complete verdict, or any detection: for good.
    Final,
    /// Clean, but some part of the submission was not looked at (a limit
    /// was hit, an error, an encrypted member, a contained panic): kept
    /// [`PARTIAL_TTL`] and marked `partial`, never as final. So is the
    /// `unscannable` of a file that killed its scan processes.
    Partial,
    /// Unscannable (a timeout, a crash): not kept.
    Never,
}

pub fn retention(v: &Verdict) -> Retention {
    match VerdictKind::try_from(v.verdict).unwrap_or(VerdictKind::Unspecified) {
        VerdictKind::Malicious | VerdictKind::Suspicious => Retention::Final,
        VerdictKind::Clean if v.limits_hit.is_empty() && v.errors.is_empty() && v.encrypted.is_empty() => Retention::Final,
        VerdictKind::Clean => Retention::Partial,
        // A poison file: lookups answer it for a while, so agents do not
        // upload it again, and a new engine or rules soon retry it.
        VerdictKind::Unscannable if v.limits_hit.iter().any(|l| l.limit == WORKER_CRASH) => Retention::Partial,
        VerdictKind::Unscannable | VerdictKind::Unspecified => Retention::Never,
    }
}

/// How long verdicts are kept, by level, from the coordinator's flags; 0
/// keeps them for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub clean: Duration,
    pub suspicious: Duration,
    pub malicious: Duration,
}

impl Keep {
    /// Unix ms a verdict of `v`'s level stored now expires at (0: never).
    fn expiry(&self, v: &Verdict) -> i64 {
        let keep = match VerdictKind::try_from(v.verdict).unwrap_or_default() {
            VerdictKind::Clean => self.clean,
            VerdictKind::Suspicious => self.suspicious,
            VerdictKind::Malicious => self.malicious,
            _ => Duration::ZERO,
        };
        if keep.is_zero() { 0 } else { now_ms() + keep.as_millis() as i64 }
    }
}

/// Most detections a feed event carries.
const EVENT_DETECTIONS: usize = 100;

/// The feed event of a verdict that is a detection.
pub fn detection_event(v: &Verdict) -> Option<DetectionEvent> {
    if !matches!(VerdictKind::try_from(v.verdict), Ok(VerdictKind::Malicious | VerdictKind::Suspicious)) {
        return None;
    }
    let detections = v
        .detections
        .iter()
        .take(EVENT_DETECTIONS)
        .map(|d| qala_proto::v1::Detection { meta: Default::default(), ..d.clone() })
        .collect();
    Some(DetectionEvent {
        at_ms: now_ms(),
        sha256: v.sha256.clone(),
        md5: v.md5.clone(),
        sha1: v.sha1.clone(),
        verdict: v.verdict,
        detections,
        ruleset_id: v.ruleset_id.clone(),
        size: v.size,
        file_type: v.file_type.clone(),
        worker_id: v.worker_id.clone(),
    })
}

/// The `partial` flag and expiry `v` is stored with, by [`retention`] and
/// `keep`; None if it is not kept at all. Idempotent (an expiry already
/// set stays), so the answer of a fresh scan can be put in this form first
/// ([`to_stored_form`]) and then equal every cached answer of it.
fn stored_fields(v: &Verdict, keep: &Keep) -> Option<(bool, i64)> {
    match retention(v) {
        Retention::Never => None,
        Retention::Final if v.expires_at_ms != 0 => Some((v.partial, v.expires_at_ms)),
        Retention::Final => Some((v.partial, keep.expiry(v))),
        Retention::Partial if v.partial && v.expires_at_ms != 0 => Some((true, v.expires_at_ms)),
        Retention::Partial => Some((true, now_ms() + PARTIAL_TTL.as_millis() as i64)),
    }
}

/// Put `v` in the form the store keeps it ([`stored_fields`]), in place;
/// a verdict that is not kept stays as it is.
pub fn to_stored_form(v: &mut Verdict, keep: &Keep) {
    if let Some((partial, expires_at_ms)) = stored_fields(v, keep) {
        v.partial = partial;
        v.expires_at_ms = expires_at_ms;
    }
}

/// `v` as the store keeps it, borrowed when it already is in that form
/// (a verdict of a fresh scan after [`to_stored_form`]: no copy); None if
/// it is not kept.
pub fn stored_form<'a>(v: &'a Verdict, keep: &Keep) -> Option<std::borrow::Cow<'a, Verdict>> {
    let (partial, expires_at_ms) = stored_fields(v, keep)?;
    Some(if (partial, expires_at_ms) == (v.partial, v.expires_at_ms) {
        std::borrow::Cow::Borrowed(v)
    } else {
        std::borrow::Cow::Owned(Verdict { partial, expires_at_ms, ..v.clone() })
    })
}

/// Store `verdict` as its [`retention`] and `keep` allow ([`stored_form`]);
/// returns whether it was stored. A detection also goes into the
/// detections feed.
pub async fn save(store: &dyn VerdictStore, verdict: &Verdict, keep: &Keep) -> Result<bool, StoreError> {
    let Some(v) = stored_form(verdict, keep) else { return Ok(false) };
    let event = detection_event(&v);
    store.put(&v, event.as_ref()).await.map(|_| true)
}

/// The index keys of a verdict's md5 and sha1 (`md5:HEX`, `sha1:HEX`).
pub(crate) fn alias_keys(v: &Verdict) -> Vec<String> {
    let mut out = Vec::new();
    if !v.md5.is_empty() {
        out.push(format!("md5:{}", v.md5));
    }
    if !v.sha1.is_empty() {
        out.push(format!("sha1:{}", v.sha1));
    }
    out
}

/// The key of an IOC entry: `LIST:KIND:DIGEST`.
pub(crate) fn ioc_key(list: &str, kind: &str, digest: &str) -> String {
    format!("{list}:{kind}:{digest}")
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Whether a stored verdict is past its `expires_at_ms`.
pub(crate) fn expired(v: &Verdict) -> bool {
    v.expires_at_ms != 0 && v.expires_at_ms <= now_ms()
}

/// The key of a verdict, and of its scan lock.
pub fn key(ruleset_id: &str, sha256: &str) -> String {
    format!("{ruleset_id}:{sha256}")
}

fn decode(bytes: &[u8]) -> Result<Verdict, StoreError> {
    Ok(Verdict::decode(bytes)?)
}

/// A store spec with the secrets and TLS material that never go into it.
#[derive(Debug, Clone, Default)]
pub struct StoreSpec {
    pub spec: String,
    /// Redis password (from a file or the environment).
    pub password: Option<String>,
    /// CA certificate of a `rediss://` server.
    pub ca: Option<std::path::PathBuf>,
}

impl From<&str> for StoreSpec {
    fn from(spec: &str) -> Self {
        StoreSpec { spec: spec.to_string(), ..Default::default() }
    }
}

/// Open the store named by `spec`: `embedded:PATH`, a bare path, or a Redis
/// spec (`redis://`, `rediss://`, `redis+cluster://`, `redis+sentinel://`;
/// see [`RedisStore::new`]).
pub async fn open(spec: &StoreSpec) -> Result<Arc<dyn VerdictStore>, StoreError> {
    let ca = match &spec.ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| StoreError::Redis(format!("{}: {e}", path.display())))?),
        None => None,
    };
    let (spec, password) = (spec.spec.as_str(), spec.password.as_deref());
    if spec.starts_with("redis://") || spec.starts_with("rediss://") || spec.starts_with("redis+") || spec.starts_with("rediss+")
    {
        let store = RedisStore::configure(spec, password, ca)?;
        // Not reachable yet is not fatal: the coordinator starts degraded.
        if let Err(e) = store.ping().await {
            tracing::warn!(error = %e, "verdict store unreachable at start: scanning without the cache until it answers");
        }
        Ok(Arc::new(store))
    } else {
        let path = spec.strip_prefix("embedded:").unwrap_or(spec);
        if path.is_empty() {
            return Err(StoreError::Spec(spec.to_string()));
        }
        let path = std::path::PathBuf::from(path);
        let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&path))
            .await
            .map_err(|e| StoreError::Embedded(e.to_string()))??;
        Ok(Arc::new(store))
    }
}
