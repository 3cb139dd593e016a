//! Redis backend: verdicts as protobuf bytes under
//! `qala:v1:verdict:<ruleset id>:<sha256>`, shared by every coordinator
//! pointed at the same Redis, and the scan locks that keep those
//! coordinators from scanning one content twice (`qala:v1:lock:<same>`: a
//! token naming the coordinator process and the scan, with a TTL extended
//! while the scan runs).

use super::{StoreError, VerdictStore, decode, key};
use prost::Message;
use qala_proto::v1::Verdict;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

pub struct RedisStore {
    client: redis::Client,
    /// Made on first use, so a coordinator starts (degraded) while Redis is
    /// down; once made, the manager reconnects by itself.
    conn: tokio::sync::OnceCell<ConnectionManager>,
    url: String,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redis(e.to_string())
}

fn redis_key(ruleset_id: &str, sha256: &str) -> String {
    format!("qala:v1:verdict:{}", key(ruleset_id, sha256))
}

fn lock_key(key: &str) -> String {
    format!("qala:v1:lock:{key}")
}

/// Extend a lock only if the caller still holds it.
const RELOCK: &str =
    r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// Delete a lock only if the caller holds it (an expired lock may be someone else's now).
const UNLOCK: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

impl RedisStore {
    /// Parse `url`; the connection is made on first use (see [`RedisStore::ping`]).
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| err(format!("{url}: {e}")))?;
        Ok(Self { client, conn: tokio::sync::OnceCell::new(), url: url.to_string() })
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        // Fail fast: a slow Redis must not hold a scan for long; the
        // manager reconnects in the background after a failure.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(3)));
        let conn = self
            .conn
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .map_err(|e| err(format!("{}: {e}", self.url)))?;
        Ok(conn.clone())
    }
}

#[async_trait::async_trait]
impl VerdictStore for RedisStore {
    async fn get(&self, ruleset_id: &str, sha256: &str) -> Result<Option<Verdict>, StoreError> {
        let bytes: Option<Vec<u8>> = self.conn().await?.get(redis_key(ruleset_id, sha256)).await.map_err(err)?;
        bytes.map(|b| decode(&b)).transpose()
    }

    async fn get_many(&self, ruleset_id: &str, sha256s: &[String]) -> Result<Vec<Verdict>, StoreError> {
        if sha256s.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = sha256s.iter().map(|s| redis_key(ruleset_id, s)).collect();
        let values: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut self.conn().await?).await.map_err(err)?;
        values.into_iter().flatten().map(|b| decode(&b)).collect()
    }

    async fn put(&self, verdict: &Verdict) -> Result<(), StoreError> {
        let k = redis_key(&verdict.ruleset_id, &verdict.sha256);
        self.conn().await?.set::<_, _, ()>(k, verdict.encode_to_vec()).await.map_err(err)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(lock_key(key))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(err)?;
        Ok(set.is_some())
    }

    async fn relock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let extended: i64 = redis::Script::new(RELOCK)
            .key(lock_key(key))
            .arg(token)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(err)?;
        Ok(extended == 1)
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let _: i64 =
            redis::Script::new(UNLOCK).key(lock_key(key)).arg(token).invoke_async(&mut self.conn().await?).await.map_err(err)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn().await?).await.map_err(err)?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("redis:{}", self.url.trim_start_matches("redis://"))
    }
}
