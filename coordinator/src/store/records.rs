//! The kinds of records the store keeps besides verdicts, each a protobuf
//! message in a table of its own, keyed by one of its fields. Backends store
//! rows of bytes ([`super::VerdictStore::put_rows`] and the rest); the typed
//! operations over them are written once, in [`super::Guarded`]. Adding a
//! kind of record is one `impl Record` here.

use super::backend::Table;
use qala_proto::v1::{AgentRecord, IocEntry, TokenRecord};

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
