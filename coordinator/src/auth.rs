//! Who may call what: client tokens and their roles, revoked workers, and
//! the certificate revocation lists.
//!
//! A token is 256 random bits shown once (`qala_` + 64 hex digits); the
//! store keeps only its sha256, with a name, a role and an optional expiry
//! (and, for join tokens, a use count), so coordinators sharing a store
//! share the tokens. Each coordinator keeps the set in memory and reads it
//! again every few seconds: a revoked token stops working within that
//! time, and while the store is down the last set read stays in force
//! (degraded mode still authenticates). The revocation lists come the same
//! way; with none read yet (the store down at start and no auth cache),
//! no certificate is taken at the TLS layer.

use crate::core::error::CoreError;
use crate::store::records::CrlRecord;
use crate::store::{Guarded, Revoked, StoreError};
use qala_proto::v1::TokenRecord;
use qala_tls::CrlSet;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Lookup and Scan: what an endpoint agent does.
    Agent,
    /// Lookup, GetVerdict and Status.
    Analyst,
    /// Everything, token and rule administration included.
    Admin,
    /// Reading metrics.
    Metrics,
    /// Trading a certificate signing request for a worker certificate.
    WorkerEnroll,
    /// A fleet join token: trading it for an agent's own token.
    AgentEnroll,
}

impl Role {
    pub const ALL: [Role; 6] = [Role::Agent, Role::Analyst, Role::Admin, Role::Metrics, Role::WorkerEnroll, Role::AgentEnroll];

    pub fn label(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
            Role::Metrics => "metrics",
            Role::WorkerEnroll => "worker-enroll",
            Role::AgentEnroll => "agent-enroll",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.label() == s)
            .ok_or_else(|| format!("unknown role {s:?}: use one of {}", Role::ALL.map(Role::label).join(", ")))
    }

    fn allows(self, op: Op) -> bool {
        use Op::*;
        match self {
            Role::Admin => true,
            Role::Agent => matches!(op, Lookup | Scan | AgentReport),
            Role::Analyst => matches!(op, Lookup | GetVerdict | Status | Inventory),
            Role::Metrics => matches!(op, Metrics),
            Role::WorkerEnroll => matches!(op, Enroll),
            Role::AgentEnroll => matches!(op, EnrollAgent),
        }
    }
}

/// An operation a caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Scan,
    GetVerdict,
    Status,
    Admin,
    Metrics,
    Enroll,
    /// An agent's check-in and action reports.
    AgentReport,
    /// Listing the agent inventory.
    Inventory,
    /// Trading a fleet join token for an agent token.
    EnrollAgent,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Lookup => "Lookup",
            Op::Scan => "Scan",
            Op::GetVerdict => "GetVerdict",
            Op::Status => "Status",
            Op::Admin => "administration",
            Op::Metrics => "metrics",
            Op::Enroll => "Enroll",
            Op::AgentReport => "Checkin/ReportActions",
            Op::Inventory => "ListAgents",
            Op::EnrollAgent => "agent enrollment",
        }
    }
}

/// An authenticated client: the token's name and role, and where it called from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// Denied unless the role allows `op`.
    pub fn require(&self, op: Op) -> Result<(), CoreError> {
        if self.role.allows(op) {
            return Ok(());
        }
        let allowed: Vec<&str> = Role::ALL.into_iter().filter(|r| r.allows(op)).map(Role::label).collect();
        Err(CoreError::Denied(format!(
            "token {:?} has role {}; {} needs {}",
            self.name,
            self.role.label(),
            op.label(),
            allowed.join(" or ")
        )))
    }
}

/// Credentials a front door found on a request, before they are checked.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub token: Option<String>,
    pub peer: Option<SocketAddr>,
    /// A client certificate of the cluster CA, verified by the handshake.
    pub cert: Option<qala_tls::PeerCert>,
}

/// The revocation key of a client certificate name (beside worker ids).
pub fn client_revocation_key(name: &str) -> String {
    format!("client:{name}")
}

/// A new token: `qala_` and 256 random bits in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("qala_{}", hex::encode(bytes))
}

/// A token made elsewhere must be as hard to guess as one made here: 32
/// to 512 printable ASCII characters, no spaces.
fn check_given_token(t: &str) -> Result<(), String> {
    if !(32..=512).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a given token must be 32 to 512 printable characters without spaces (e.g. qala_ and 64 hex digits)".into());
    }
    Ok(())
}

pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Token names go into logs and audit lines: keep them plain.
pub fn check_token_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok { Ok(()) } else { Err(format!("token name {name:?}: use 1-64 letters, digits, '.', '_', '-' or '@'")) }
}

/// A token to make.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub role: Role,
    /// How long it works; `None`: until revoked.
    pub valid: Option<Duration>,
    /// Join tokens: most enrollments; 0: no limit.
    pub max_uses: u64,
    /// Replace a token of the same name (else an existing name is refused).
    pub replace: bool,
    /// This token instead of a new one (made elsewhere: a deployment's
    /// secret). Adding it again, same name, role and token, changes
    /// nothing (the uses spent stay).
    pub given: Option<String>,
}

impl NewToken {
    pub fn of(role: Role) -> Self {
        Self { role, valid: None, max_uses: 0, replace: false, given: None }
    }
}

/// Make a token for `name` as `new` says and store its hash. Returns the
/// token, shown this once. A name in use is refused unless `new.replace`:
/// a join token can never overwrite another client's token.
pub async fn add_token(store: &Guarded, name: &str, new: &NewToken) -> Result<(String, TokenRecord), CoreError> {
    check_token_name(name).map_err(CoreError::Invalid)?;
    if new.max_uses > 0 && !matches!(new.role, Role::WorkerEnroll | Role::AgentEnroll) {
        return Err(CoreError::Invalid(format!(
            "a use count is for join tokens (worker-enroll, agent-enroll), not role {}",
            new.role.label()
        )));
    }
    if let Some(t) = &new.given {
        check_given_token(t).map_err(CoreError::Invalid)?;
    }
    let held = store.get::<TokenRecord>(name).await?;
    if let (Some(held), Some(t)) = (&held, &new.given)
        && held.sha256 == token_sha256(t)
        && held.role == new.role.label()
    {
        return Ok((t.clone(), held.clone()));
    }
    if !new.replace && held.is_some() {
        return Err(CoreError::AlreadyExists(format!(
            "a token named {name:?} exists: revoke it first, or replace it (--replace)"
        )));
    }
    let token = new.given.clone().unwrap_or_else(new_token);
    let now = qala_common::now_ms();
    let record = TokenRecord {
        name: name.to_string(),
        role: new.role.label().to_string(),
        sha256: token_sha256(&token),
        created_ms: now,
        expires_ms: new.valid.map_or(0, |v| now.saturating_add(v.as_millis() as i64)),
        max_uses: new.max_uses,
        used: 0,
    };
    store.put(&record).await?;
    Ok((token, record))
}

/// A known token, by its hash.
struct Known {
    name: String,
    role: Role,
    /// Unix ms; 0: never.
    expires_ms: i64,
}

#[derive(Default)]
struct State {
    by_hash: HashMap<String, Known>,
    revoked_workers: HashSet<String>,
}

pub struct Auth {
    store: Arc<Guarded>,
    state: RwLock<State>,
    loaded: AtomicBool,
    /// Where the last set read is kept (hashes only, 0600), so a coordinator
    /// that starts while the store is down still authenticates.
    cache: Option<PathBuf>,
    /// The revocation lists in force, which every TLS endpoint of this
    /// coordinator follows.
    crls: Arc<CrlSet>,
}

/// The auth cache file: what the store said last.
#[derive(serde::Serialize, serde::Deserialize, PartialEq)]
struct CacheFile {
    /// (name, role, sha256 of the token, expires ms)
    tokens: Vec<(String, String, String, i64)>,
    revoked_workers: Vec<String>,
    /// Revocation lists, PEM.
    #[serde(default)]
    crls: Vec<String>,
}

impl Auth {
    /// Read the tokens and revocation lists once; a store that does not
    /// answer yet leaves them empty (every call refused) until a refresh
    /// succeeds, unless the auth cache has them.
    pub async fn start(store: Arc<Guarded>, cache: Option<PathBuf>, crls: Arc<CrlSet>) -> Arc<Self> {
        let auth = Arc::new(Self { store, state: RwLock::default(), loaded: AtomicBool::new(false), cache, crls });
        match auth.refresh().await {
            Ok(0) => warn!("no client tokens in the store: every call is refused; add one with `qala-coordinator token add`"),
            Ok(n) => info!(tokens = n, "client tokens loaded"),
            Err(e) => match auth.load_cache() {
                Some(n) => warn!(error = %e, tokens = n, "store unavailable: using the client tokens it gave last (auth cache)"),
                None => {
                    warn!(error = %e, "client tokens not loaded yet (store unavailable, no auth cache): calls are refused until they are")
                }
            },
        }
        auth
    }

    fn load_cache(&self) -> Option<usize> {
        let text = std::fs::read_to_string(self.cache.as_ref()?).ok()?;
        let file: CacheFile = serde_json::from_str(&text).ok()?;
        let n = file.tokens.len();
        self.install(
            file.tokens
                .into_iter()
                .map(|(name, role, sha256, expires_ms)| TokenRecord { name, role, sha256, expires_ms, ..Default::default() })
                .collect(),
            file.revoked_workers,
        );
        for pem in &file.crls {
            let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes());
            if let Ok(der) = der.map(|d: rustls::pki_types::CertificateRevocationListDer| d.as_ref().to_vec())
                && let Err(e) = self.crls.merge([der.as_slice()])
            {
                warn!(error = %e, "a revocation list in the auth cache was not taken");
            }
        }
        Some(n)
    }

    fn save_cache(&self, tokens: &[TokenRecord], revoked: &[String]) {
        let Some(path) = &self.cache else { return };
        let mut file = CacheFile {
            tokens: tokens.iter().map(|t| (t.name.clone(), t.role.clone(), t.sha256.clone(), t.expires_ms)).collect(),
            revoked_workers: revoked.to_vec(),
            crls: self.crls.lists().iter().map(|c| c.pem()).collect(),
        };
        file.tokens.sort();
        file.revoked_workers.sort();
        let Ok(text) = serde_json::to_string(&file) else { return };
        if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
            return;
        }
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            qala_common::files::replace(path, text.as_bytes(), 0o600)
        };
        if let Err(e) = write() {
            warn!(path = %path.display(), error = %e, "cannot write the auth cache");
        }
    }

    fn install(&self, tokens: Vec<TokenRecord>, revoked: Vec<String>) -> usize {
        let mut by_hash = HashMap::new();
        for t in tokens {
            match Role::parse(&t.role) {
                Ok(role) => {
                    by_hash.insert(t.sha256, Known { name: t.name, role, expires_ms: t.expires_ms });
                }
                Err(e) => warn!(token = t.name, error = e, "stored token has an unknown role; ignored"),
            }
        }
        let n = by_hash.len();
        *self.state.write().unwrap_or_else(|p| p.into_inner()) =
            State { by_hash, revoked_workers: revoked.into_iter().collect() };
        self.loaded.store(true, Ordering::Relaxed);
        n
    }

    /// Read tokens, revoked workers and revocation lists again; the number
    /// of tokens.
    pub async fn refresh(&self) -> Result<usize, StoreError> {
        let tokens = self.store.all::<TokenRecord>().await?;
        let revoked: Vec<String> = self.store.all::<Revoked>().await?.into_iter().map(|r| r.id).collect();
        let lists = self.store.all::<CrlRecord>().await?;
        if let Err(e) = self.crls.merge(lists.iter().map(|l| l.der.as_slice())) {
            warn!(error = %e, "a stored revocation list was not taken");
        }
        self.save_cache(&tokens, &revoked);
        Ok(self.install(tokens, revoked))
    }

    /// The revocation lists in force.
    pub fn crls(&self) -> &Arc<CrlSet> {
        &self.crls
    }

    /// Refresh every `every` until `stop`; `on_revoked` is told of each
    /// worker id newly revoked (by another coordinator, or offline).
    pub async fn keep_fresh(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>, on_revoked: impl Fn(&str) + Send) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let before = self.state.read().unwrap_or_else(|p| p.into_inner()).revoked_workers.clone();
            // A failure keeps the last set in force; the guard logs the outage.
            if self.refresh().await.is_ok() {
                let now = self.state.read().unwrap_or_else(|p| p.into_inner()).revoked_workers.clone();
                for id in now.difference(&before) {
                    on_revoked(id);
                }
            }
        }
    }

    /// The caller `creds` prove to be.
    pub fn authenticate(&self, creds: &Credentials) -> Result<Caller, CoreError> {
        let Some(token) = creds.token.as_deref() else {
            // A client certificate instead of a token: `qala:client:ROLE:NAME`.
            if let Some(qala_tls::CertRole::Client { role, name }) = creds.cert.as_ref().and_then(|c| c.role()) {
                let cert_revoked = creds.cert.as_ref().is_some_and(|c| self.crls.revokes(c));
                if self.worker_revoked(&client_revocation_key(&name)) || cert_revoked {
                    return Err(CoreError::Unauthenticated(format!("client certificate {name:?} is revoked")));
                }
                let role = Role::parse(&role).map_err(CoreError::Unauthenticated)?;
                return Ok(Caller { name, role, peer: creds.peer });
            }
            return Err(CoreError::Unauthenticated(
                "no token: send `authorization: Bearer <token>` (qala-agent --token-file)".into(),
            ));
        };
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        match state.by_hash.get(&token_sha256(token)) {
            Some(k) if k.expires_ms != 0 && k.expires_ms <= qala_common::now_ms() => {
                Err(CoreError::Unauthenticated(format!("token {:?} expired at {}", k.name, utc(k.expires_ms))))
            }
            Some(k) => Ok(Caller { name: k.name.clone(), role: k.role, peer: creds.peer }),
            None if !self.loaded.load(Ordering::Relaxed) => {
                Err(CoreError::Unavailable("client tokens not loaded yet: the verdict store has not answered".into()))
            }
            None => Err(CoreError::Unauthenticated("unknown or revoked token".into())),
        }
    }

    /// The caller a token's hash stands for while that token is valid: a
    /// console session keeps the hash, never the token, and ends when the
    /// token is revoked, replaced or expires.
    pub fn by_token_hash(&self, sha256: &str, peer: Option<SocketAddr>) -> Result<Caller, CoreError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        match state.by_hash.get(sha256) {
            Some(k) if k.expires_ms != 0 && k.expires_ms <= qala_common::now_ms() => {
                Err(CoreError::Unauthenticated(format!("token {:?} expired at {}", k.name, utc(k.expires_ms))))
            }
            Some(k) => Ok(Caller { name: k.name.clone(), role: k.role, peer }),
            None => Err(CoreError::Unauthenticated("the session's token was revoked or replaced: log in again".into())),
        }
    }

    pub fn worker_revoked(&self, id: &str) -> bool {
        self.state.read().unwrap_or_else(|p| p.into_inner()).revoked_workers.contains(id)
    }

    /// Record a revocation made here, before the next refresh sees it.
    pub fn note_revoked(&self, id: &str) {
        self.state.write().unwrap_or_else(|p| p.into_inner()).revoked_workers.insert(id.to_string());
    }
}

/// Unix ms as `2026-12-06T11:02:55Z`.
pub fn utc(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_readme_says() {
        let c = |role| Caller { name: "t".into(), role, peer: None };
        assert!(c(Role::Agent).require(Op::Scan).is_ok() && c(Role::Agent).require(Op::Lookup).is_ok());
        assert!(c(Role::Agent).require(Op::Status).is_err() && c(Role::Agent).require(Op::GetVerdict).is_err());
        let denied = c(Role::Analyst).require(Op::Scan).unwrap_err();
        assert!(matches!(&denied, CoreError::Denied(m) if m.contains("analyst") && m.contains("agent or admin")), "{denied}");
        assert!(c(Role::Analyst).require(Op::GetVerdict).is_ok() && c(Role::Analyst).require(Op::Admin).is_err());
        assert!(c(Role::WorkerEnroll).require(Op::Enroll).is_ok() && c(Role::WorkerEnroll).require(Op::Lookup).is_err());
        assert!(Role::ALL.iter().all(|r| {
            c(Role::Admin)
                .require(match r {
                    Role::Metrics => Op::Metrics,
                    _ => Op::Admin,
                })
                .is_ok()
        }));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.label()), Ok(r));
        }
        let t = new_token();
        assert!(t.starts_with("qala_") && t.len() == 69 && t != new_token());
        assert!(check_token_name("ws-17@corp").is_ok() && check_token_name("a b").is_err());
    }
}
