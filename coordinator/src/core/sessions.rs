//! Console sessions: a browser logs in once with a token (role `analyst`
//! or `admin`) and is known from then on by a random session id in a
//! cookie. The store keeps the id's sha256 and the token's sha256, never
//! either secret, so every coordinator sharing the store knows the
//! session; it ends at logout, after `idle` without use or `absolute`
//! after login, and as soon as its token is revoked, replaced or expires
//! (checked on every use against the token list in force). Logins and
//! failed logins are audited.

use super::error::CoreError;
use super::shared::Shared;
use crate::audit::Audit;
use crate::auth::{Auth, Caller, Credentials, Role, token_sha256};
use crate::store::Guarded;
use crate::store::records::SessionRecord;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a session read from the store is trusted before it is read
/// again (a logout at another coordinator holds within this).
const FRESH: Duration = Duration::from_secs(2);

/// Last use is written at most this often (and at least four times per
/// idle period): an idle expiry within a minute of the configured one.
const TOUCH_EVERY: i64 = 60_000;

#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    pub idle: Duration,
    pub absolute: Duration,
}

pub struct Sessions {
    store: Arc<Guarded>,
    auth: Arc<Auth>,
    audit: Arc<Audit>,
    settings: SessionSettings,
    cache: Mutex<HashMap<String, (SessionRecord, Instant)>>,
}

/// A session made by a login: the id for the cookie (shown this once).
pub struct NewSession {
    pub id: String,
    pub caller: Caller,
    pub record: SessionRecord,
}

impl Sessions {
    pub fn new(s: &Shared, settings: SessionSettings) -> Self {
        Self { store: s.store.clone(), auth: s.auth.clone(), audit: s.audit.clone(), settings, cache: Mutex::default() }
    }

    pub fn settings(&self) -> SessionSettings {
        self.settings
    }

    /// Log in with `token`: an analyst's or admin's makes a session.
    pub async fn login(&self, token: &str, peer: Option<SocketAddr>) -> Result<NewSession, CoreError> {
        let creds = Credentials { token: Some(token.to_string()), peer, cert: None };
        let caller = match self.auth.authenticate(&creds) {
            Ok(c) if matches!(c.role, Role::Analyst | Role::Admin) => c,
            Ok(c) => {
                self.failed(
                    peer,
                    &format!("token {:?} has role {}: the console is for analysts and admins", c.name, c.role.label()),
                );
                return Err(CoreError::Denied(format!(
                    "token {:?} has role {}: the console is for analyst and admin tokens",
                    c.name,
                    c.role.label()
                )));
            }
            Err(e) => {
                self.failed(peer, &e.to_string());
                return Err(e);
            }
        };
        let id = crate::auth::new_token().replacen("qala_", "", 1);
        let now = qala_common::now_ms();
        let record = SessionRecord {
            id_sha256: token_sha256(&id),
            token_sha256: token_sha256(token),
            name: caller.name.clone(),
            created_ms: now,
            last_ms: now,
            idle_until_ms: now + self.settings.idle.as_millis() as i64,
            until_ms: now + self.settings.absolute.as_millis() as i64,
        };
        self.store.put(&record).await?;
        self.audit.event("login", Some(&caller), json!({"session": &record.id_sha256[..16], "until_ms": record.until_ms}));
        Ok(NewSession { id, caller, record })
    }

    fn failed(&self, peer: Option<SocketAddr>, reason: &str) {
        self.audit.event("login_failed", None, json!({"peer": peer.map(|p| p.to_string()), "reason": reason}));
    }

    /// The caller session `id` stands for, if it is live and its token valid.
    pub async fn resolve(&self, id: &str, peer: Option<SocketAddr>) -> Result<(Caller, SessionRecord), CoreError> {
        let gone = || CoreError::Unauthenticated("no such session (logged out or expired): log in again".into());
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(gone());
        }
        let key = token_sha256(id);
        let cached =
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key).filter(|(_, at)| at.elapsed() < FRESH).cloned();
        let mut record = match cached {
            Some((r, _)) => r,
            None => {
                let r = self.store.get::<SessionRecord>(&key).await?.ok_or_else(gone)?;
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), (r.clone(), Instant::now()));
                r
            }
        };
        let now = qala_common::now_ms();
        if record.until_ms <= now || record.idle_until_ms <= now {
            self.forget(&key);
            return Err(CoreError::Unauthenticated("the session expired: log in again".into()));
        }
        let caller = self.auth.by_token_hash(&record.token_sha256, peer).inspect_err(|_| self.forget(&key))?;
        let every = (self.settings.idle.as_millis() as i64 / 4).clamp(1_000, TOUCH_EVERY);
        if now - record.last_ms >= every {
            record.last_ms = now;
            record.idle_until_ms = (now + self.settings.idle.as_millis() as i64).min(record.until_ms);
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (record.clone(), Instant::now()));
            let _ = self.store.put(&record).await;
        }
        Ok((caller, record))
    }

    /// End session `id` (logout).
    pub async fn logout(&self, id: &str) -> Result<bool, CoreError> {
        let key = token_sha256(id);
        self.forget(&key);
        let existed = self.store.delete::<SessionRecord>(&key).await?;
        if existed {
            self.audit.event("logout", None, json!({"session": &key[..16]}));
        }
        Ok(existed)
    }

    fn forget(&self, key: &str) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}
