//! The kinds of records the store keeps besides verdicts, each a protobuf
//! message in a table of its own, keyed by one of its fields. Backends store
//! rows of bytes ([`super::VerdictStore::put_rows`] and the rest); the typed
//! operations over them are written once, in [`super::Guarded`]. Adding a
//! kind of record is one `impl Record` here.

use super::backend::Table;
use qala_proto::v1::{ActionRecord, AgentRecord, Hunt, HuntMatch, IocEntry, NoticeRecord, RuleSource, TokenRecord};

/// A kind of record: its table and the key of each record in it.
pub trait Record: prost::Message + Default + Sized {
    const TABLE: Table;

    /// Records that expire (see [`Record::expired`]): the expired ones of
    /// the table are dropped whenever one is added.
    const EXPIRES: bool = false;

    fn key(&self) -> String;

    /// Whether the record has expired at `now_ms`: then it is neither read
    /// nor kept.
    fn expired(&self, now_ms: i64) -> bool {
        let _ = now_ms;
        false
    }
}

/// Client tokens by name (the token's sha256, never the token).
impl Record for TokenRecord {
    const TABLE: Table = Table("tokens");

    fn key(&self) -> String {
        self.name.clone()
    }
}

/// The agent inventory, by agent id.
impl Record for AgentRecord {
    const TABLE: Table = Table("agents");

    fn key(&self) -> String {
        self.agent_id.clone()
    }
}

/// IOC list entries, by `LIST:KIND:DIGEST`.
impl Record for IocEntry {
    const TABLE: Table = Table("iocs");

    fn key(&self) -> String {
        ioc_key(&self.list, &self.kind, &self.digest)
    }
}

/// How long a notice to agents is kept (and so reaches an agent whose
/// stream was down at its next check-in).
pub const NOTICE_KEEP_MS: i64 = 86_400_000;

/// Notices to agents, by notice id ([`crate::core::notices`]).
impl Record for NoticeRecord {
    const TABLE: Table = Table("notices");
    const EXPIRES: bool = true;

    fn key(&self) -> String {
        self.notice.as_ref().map(|n| n.id.clone()).unwrap_or_default()
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.notice.as_ref().is_none_or(|n| n.at_ms + NOTICE_KEEP_MS <= now_ms)
    }
}

/// How long the last action of an agent on a content is kept.
pub const ACTION_KEEP_MS: i64 = 90 * 86_400_000;

/// The last action of each agent on each content, by `SHA256:AGENT`.
impl Record for ActionRecord {
    const TABLE: Table = Table("actions");
    const EXPIRES: bool = true;

    fn key(&self) -> String {
        format!("{}:{}", self.sha256, self.agent_id)
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.at_ms + ACTION_KEEP_MS <= now_ms
    }
}

/// Hunts, queued, running and done, by id ([`crate::core::hunts`]).
impl Record for Hunt {
    const TABLE: Table = Table("hunts");

    fn key(&self) -> String {
        self.id.clone()
    }
}

/// A what-if hunt's rules, by hunt id: whichever coordinator runs the
/// hunt, or receives an upload for it, compiles them from here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HuntRules {
    #[prost(string, tag = "1")]
    pub hunt_id: String,
    #[prost(message, repeated, tag = "2")]
    pub sources: Vec<RuleSource>,
}

impl Record for HuntRules {
    const TABLE: Table = Table("hunt_rules");

    fn key(&self) -> String {
        self.hunt_id.clone()
    }
}

/// What a what-if hunt's scan of one content found, by `HUNT:SHA256`.
impl Record for HuntMatch {
    const TABLE: Table = Table("hunt_results");

    fn key(&self) -> String {
        format!("{}:{}", self.hunt_id, self.sha256)
    }
}

/// A ruleset that was in force, by id: a hunt finds a content's verdict
/// before the rules in force under the most recent of them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RulesetSeen {
    #[prost(string, tag = "1")]
    pub id: String,
    /// When a coordinator first had it in force.
    #[prost(int64, tag = "2")]
    pub first_ms: i64,
}

impl Record for RulesetSeen {
    const TABLE: Table = Table("rulesets");

    fn key(&self) -> String {
        self.id.clone()
    }
}

/// An agent with a notice stream open to some coordinator, until
/// `until_ms` unless renewed (each coordinator renews its agents'): the
/// agents a hunt may ask for a file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Presence {
    #[prost(string, tag = "1")]
    pub agent_id: String,
    #[prost(int64, tag = "2")]
    pub until_ms: i64,
    /// It uploads what a hunt asks for (not lookup-only).
    #[prost(bool, tag = "3")]
    pub uploads: bool,
}

impl Record for Presence {
    const TABLE: Table = Table("presence");
    const EXPIRES: bool = true;

    fn key(&self) -> String {
        self.agent_id.clone()
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.until_ms <= now_ms
    }
}

/// A worker registered with some coordinator, as that coordinator last
/// heard it (written every heartbeat interval while it heartbeats there):
/// with a shared store every coordinator dispatches to every live worker,
/// so a worker needs one address for all of them (a Service).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SharedWorker {
    #[prost(message, optional, tag = "1")]
    pub registration: Option<qala_proto::v1::RegisterRequest>,
    /// Its last heartbeat (Unix ms).
    #[prost(int64, tag = "2")]
    pub heartbeat_ms: i64,
    /// Gone from the table after this, unless written again.
    #[prost(int64, tag = "3")]
    pub until_ms: i64,
    #[prost(uint64, tag = "4")]
    pub in_flight: u64,
    #[prost(uint64, tag = "5")]
    pub scanned: u64,
    #[prost(uint64, tag = "6")]
    pub bytes_scanned: u64,
    #[prost(uint64, tag = "7")]
    pub p99_us: u64,
}

impl Record for SharedWorker {
    const TABLE: Table = Table("workers");
    const EXPIRES: bool = true;

    fn key(&self) -> String {
        self.registration.as_ref().map(|r| r.worker_id.clone()).unwrap_or_default()
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.until_ms <= now_ms
    }
}

/// A console session: a browser's cookie stands for the token it logged in
/// with. Keyed by the sha256 of the session id (the cookie's value is never
/// stored); holds the token's hash, never the token.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionRecord {
    #[prost(string, tag = "1")]
    pub id_sha256: String,
    #[prost(string, tag = "2")]
    pub token_sha256: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(int64, tag = "4")]
    pub created_ms: i64,
    /// Last use written (at most once a minute).
    #[prost(int64, tag = "5")]
    pub last_ms: i64,
    /// Idle expiry, then absolute expiry (Unix ms).
    #[prost(int64, tag = "6")]
    pub idle_until_ms: i64,
    #[prost(int64, tag = "7")]
    pub until_ms: i64,
}

impl Record for SessionRecord {
    const TABLE: Table = Table("sessions");
    const EXPIRES: bool = true;

    fn key(&self) -> String {
        self.id_sha256.clone()
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.until_ms <= now_ms || self.idle_until_ms <= now_ms
    }
}

/// The key of an IOC entry: `LIST:KIND:DIGEST`.
pub fn ioc_key(list: &str, kind: &str, digest: &str) -> String {
    format!("{list}:{kind}:{digest}")
}

/// A revoked worker id (or `client:NAME` for a client certificate).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Revoked {
    #[prost(string, tag = "1")]
    pub id: String,
    /// When it was revoked (Unix ms).
    #[prost(int64, tag = "2")]
    pub at_ms: i64,
}

impl Record for Revoked {
    const TABLE: Table = Table("revoked");

    fn key(&self) -> String {
        self.id.clone()
    }
}

/// A file on the poison list: it killed scan processes, and goes to no
/// worker until `until_ms`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Poisoned {
    #[prost(string, tag = "1")]
    pub sha256: String,
    /// What it did (`killed by SIGSEGV`, ...).
    #[prost(string, tag = "2")]
    pub detail: String,
    #[prost(int64, tag = "3")]
    pub until_ms: i64,
}

impl Record for Poisoned {
    const TABLE: Table = Table("poisoned");
    const EXPIRES: bool = true;

    fn key(&self) -> String {
        self.sha256.clone()
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.until_ms <= now_ms
    }
}

/// A certificate a coordinator's issuing CA signed for a worker (at
/// enrollment or renewal), or one a worker registered with: while it is
/// unexpired and unrevoked, its id is not given to anyone else. By serial;
/// dropped once expired.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IssuedCert {
    #[prost(string, tag = "1")]
    pub serial: String,
    /// The issuer's distinguished name.
    #[prost(string, tag = "2")]
    pub issuer: String,
    #[prost(string, tag = "3")]
    pub worker_id: String,
    #[prost(string, repeated, tag = "4")]
    pub hosts: Vec<String>,
    #[prost(int64, tag = "5")]
    pub issued_ms: i64,
    #[prost(int64, tag = "6")]
    pub not_after_ms: i64,
    /// Signed by the root (made by `pki worker`): only the root's list,
    /// made where the root is kept, revokes it.
    #[prost(bool, tag = "7")]
    pub by_root: bool,
}

impl Record for IssuedCert {
    const TABLE: Table = Table("issued_certs");
    const EXPIRES: bool = true;

    fn key(&self) -> String {
        self.serial.clone()
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.not_after_ms <= now_ms
    }
}

/// A certificate revoked by serial: each coordinator puts the ones its
/// issuing CA signed on its revocation list. Dropped once the certificate
/// has expired (no verifier takes it then anyway).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RevokedCert {
    #[prost(string, tag = "1")]
    pub serial: String,
    /// The issuer's distinguished name (whose list it goes on).
    #[prost(string, tag = "2")]
    pub issuer: String,
    /// Whose it was (`worker:ID`), for people.
    #[prost(string, tag = "3")]
    pub subject: String,
    #[prost(int64, tag = "4")]
    pub at_ms: i64,
    #[prost(int64, tag = "5")]
    pub not_after_ms: i64,
}

impl Record for RevokedCert {
    const TABLE: Table = Table("revoked_certs");
    const EXPIRES: bool = true;

    fn key(&self) -> String {
        self.serial.clone()
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.not_after_ms != 0 && self.not_after_ms <= now_ms
    }
}

/// The newest revocation list of one issuer (the root's, published by an
/// administrator; each issuing CA's, by its coordinator), by issuer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CrlRecord {
    #[prost(string, tag = "1")]
    pub issuer: String,
    #[prost(bytes = "vec", tag = "2")]
    pub der: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub stored_ms: i64,
}

impl Record for CrlRecord {
    const TABLE: Table = Table("crls");

    fn key(&self) -> String {
        self.issuer.clone()
    }
}

/// A coordinator's names (its certificate's hosts), put at its start:
/// no enrolled worker's certificate may name one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CoordinatorNames {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, repeated, tag = "2")]
    pub hosts: Vec<String>,
    #[prost(int64, tag = "3")]
    pub started_ms: i64,
}

impl Record for CoordinatorNames {
    const TABLE: Table = Table("coordinators");

    fn key(&self) -> String {
        self.name.clone()
    }
}
