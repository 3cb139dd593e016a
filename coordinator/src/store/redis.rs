//! Redis backend: verdicts as protobuf bytes under
//! `qala:v1:verdict:<ruleset id>:<sha256>`, shared by every coordinator
//! pointed at the same Redis, and the scan locks that keep those
//! coordinators from scanning one content twice (`qala:v1:lock:<same>`: a
//! token naming the coordinator process and the scan, with a TTL extended
//! while the scan runs). Each table of records is a hash, `qala:v1:NAME`,
//! with its version counter beside it (`qala:v1:NAME:version`).

use super::backend::{Sighting, StoreError, Table, VerdictStore, alias_keys, decode, key};
use super::records::{Record, Revoked};
use prost::Message;
use qala_proto::v1::{DetectionEvent, Verdict};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// A slow Redis must not hold a scan for long: fail fast, the guard marks
/// the store degraded and probes it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the verdicts live.
enum Target {
    /// One server (`redis://`, `rediss://`).
    Node(redis::Client),
    /// A Redis Cluster, found from its seed nodes (`redis+cluster://`).
    Cluster(redis::cluster::ClusterClient),
    /// The master of a Sentinel-monitored group (`redis+sentinel://`),
    /// looked up again after every failure (a failover moves it).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// A connection of any of the three kinds; cheap to clone, multiplexed.
#[derive(Clone)]
enum Conn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, cmd: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

pub struct RedisStore {
    target: Target,
    /// Made on first use, so a coordinator starts (degraded) while Redis is
    /// down. A single-node manager and a cluster connection reconnect by
    /// themselves; a Sentinel connection is dropped on failure and the
    /// master looked up again.
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// The spec without credentials, for status and errors.
    shown: String,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redis(e.to_string())
}

fn redis_key(ruleset_id: &str, sha256: &str) -> String {
    format!("qala:v1:verdict:{}", key(ruleset_id, sha256))
}

/// Prefix of the md5/sha1 index: `qala:v1:hash:md5:HEX` is a set of sha256s.
const HASH_PREFIX: &str = "qala:v1:hash:";
/// Sorted set of the detections feed: protobuf `DetectionEvent`s scored by Unix ms.
const DETECTIONS_KEY: &str = "qala:v1:detections";
/// Hash of revoked worker ids -> Unix ms, before revocations became
/// records of [`Revoked`]: moved to their hash on first connection.
const OLD_REVOKED_KEY: &str = "qala:v1:revoked-workers";

/// The hash of a table of records (those of tokens, agents and IOC entries
/// kept their names and contents).
/// Who holds a content, and since when: `qala:v1:sightfirst:SHA256`, a
/// hash of agent id -> Unix ms first seen (`HSETNX`: set once). When each
/// last saw it is the score in the agent's own sorted set (one command per
/// agent per batch, not per sighting).
fn sight_first_key(sha256: &str) -> String {
    format!("qala:v1:sightfirst:{sha256}")
}

/// What an agent holds: `qala:v1:sightby:AGENT`, a sorted set of sha256s
/// scored by last seen.
fn sight_by_key(agent_id: &str) -> String {
    format!("qala:v1:sightby:{agent_id}")
}

/// The agents with sightings, and those whose list the cap cut.
const SIGHT_AGENTS_KEY: &str = "qala:v1:sightagents";
const SIGHT_CUT_KEY: &str = "qala:v1:sightcut";

/// Commands sent at once on the multiplexed connection: a batch of
/// sightings costs a few round trips, not one per key.
const IN_FLIGHT: usize = 256;

fn table_key(t: Table) -> String {
    format!("qala:v1:{}", t.name())
}

fn version_key(t: Table) -> String {
    format!("qala:v1:{}:version", t.name())
}

fn lock_key(key: &str) -> String {
    format!("qala:v1:lock:{key}")
}

/// Extend a lock only if the caller still holds it.
const RELOCK: &str =
    r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// Delete a lock only if the caller holds it (an expired lock may be someone else's now).
const UNLOCK: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// The parts of a multi-host spec `SCHEME://[USER:PASS@]HOST:PORT[,HOST:PORT...][/PATH]`.
struct MultiHost<'a> {
    userinfo: Option<&'a str>,
    hosts: Vec<&'a str>,
    path: Vec<&'a str>,
}

fn multi_host(rest: &str) -> MultiHost<'_> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    MultiHost {
        userinfo,
        hosts: hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).collect(),
        path: path.split('/').filter(|p| !p.is_empty()).collect(),
    }
}

/// `spec` with any password replaced, for logs and status.
fn redact(spec: &str) -> String {
    let Some((scheme, rest)) = spec.split_once("://") else { return spec.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
            format!("{scheme}://{user}:***@{hosts}{}", &rest[authority_end..])
        }
        None => spec.to_string(),
    }
}

impl RedisStore {
    /// Parse `spec`; the connection is made on first use (see
    /// [`RedisStore::ping`]). Accepted:
    /// - `redis://[USER:PASS@]HOST:PORT[/DB]` (or `rediss://`): one server;
    /// - `redis+cluster://[USER:PASS@]HOST:PORT[,HOST:PORT...]`: a Redis
    ///   Cluster, from any of its nodes;
    /// - `redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]`, with
    ///   `USER:PASS@` before the hosts for the master: the master Sentinel
    ///   names for MASTER, followed through failovers.
    pub fn new(spec: &str) -> Result<Self, StoreError> {
        Self::configure(spec, None, None)
    }

    /// [`RedisStore::new`], with the password (for the ACL user named in
    /// the spec, or `default`) given apart from the spec, so it never has to
    /// be on a command line, and the CA certificate (PEM) of a TLS server:
    /// `rediss://`, `rediss+cluster://`, `rediss+sentinel://` (without a CA,
    /// the system's roots).
    pub fn configure(spec: &str, password: Option<&str>, ca_pem: Option<Vec<u8>>) -> Result<Self, StoreError> {
        let shown = redact(spec);
        let bad = |e: &dyn std::fmt::Display| err(format!("{shown}: {e}"));
        let tls = spec.starts_with("rediss");
        let certs = || redis::TlsCertificates { client_tls: None, root_cert: ca_pem.clone() };
        // USER:PASS@ or USER@ (the password then given apart).
        let credentials = |userinfo: Option<&str>| -> (Option<String>, Option<String>) {
            let (user, pass) = match userinfo {
                Some(u) => match u.split_once(':') {
                    Some((user, pass)) => (Some(user.to_string()), Some(pass.to_string())),
                    None if password.is_some() => (Some(u.to_string()), None),
                    None => (None, Some(u.to_string())),
                },
                None => (None, None),
            };
            (user.filter(|u| !u.is_empty()), password.map(str::to_string).or(pass))
        };
        let node_scheme = if tls { "rediss" } else { "redis" };
        let target = if let Some(rest) = spec.strip_prefix("redis+cluster://").or_else(|| spec.strip_prefix("rediss+cluster://"))
        {
            let m = multi_host(rest);
            if m.hosts.is_empty() || !m.path.is_empty() {
                return Err(bad(&"expected redis+cluster://[USER@]HOST:PORT[,HOST:PORT...]"));
            }
            let nodes: Vec<String> = m.hosts.iter().map(|h| format!("{node_scheme}://{h}")).collect();
            let mut builder = redis::cluster::ClusterClient::builder(nodes);
            let (user, pass) = credentials(m.userinfo);
            if let Some(u) = user {
                builder = builder.username(u);
            }
            if let Some(p) = pass {
                builder = builder.password(p);
            }
            if tls {
                builder = builder.tls(redis::TlsMode::Secure).certs(certs());
            }
            let client = builder
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(1)
                .build()
                .map_err(|e| bad(&e))?;
            Target::Cluster(client)
        } else if let Some(rest) = spec.strip_prefix("redis+sentinel://").or_else(|| spec.strip_prefix("rediss+sentinel://")) {
            let m = multi_host(rest);
            let (Some(master), false) = (m.path.first(), m.hosts.is_empty()) else {
                return Err(bad(&"expected redis+sentinel://[USER@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]"));
            };
            let mut addrs = Vec::new();
            for h in &m.hosts {
                let (host, port) = h.rsplit_once(':').ok_or_else(|| bad(&format!("{h}: expected HOST:PORT")))?;
                let port: u16 = port.parse().map_err(|_| bad(&format!("{h}: bad port")))?;
                addrs.push(if tls {
                    redis::ConnectionAddr::TcpTls { host: host.to_string(), port, insecure: false, tls_params: None }
                } else {
                    redis::ConnectionAddr::Tcp(host.to_string(), port)
                });
            }
            let mut builder =
                redis::sentinel::SentinelClientBuilder::new(addrs, master, SentinelServerType::Master).map_err(|e| bad(&e))?;
            if let Some(db) = m.path.get(1) {
                builder =
                    builder.set_client_to_redis_db(db.parse().map_err(|_| bad(&format!("database {db:?} is not a number")))?);
            }
            let (user, pass) = credentials(m.userinfo);
            if let Some(u) = user {
                builder = builder.set_client_to_redis_username(u);
            }
            if let Some(p) = pass {
                builder = builder.set_client_to_redis_password(p);
            }
            if tls {
                builder = builder
                    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_redis_certificates(certs())
                    .set_client_to_sentinel_certificates(certs());
            }
            Target::Sentinel(tokio::sync::Mutex::new(builder.build().map_err(|e| bad(&e))?))
        } else {
            let mut info = redis::IntoConnectionInfo::into_connection_info(spec).map_err(|e| bad(&e))?;
            if let Some(p) = password {
                let settings = info.redis_settings().clone().set_password(p);
                info = info.set_redis_settings(settings);
            }
            let client = if tls { redis::Client::build_with_tls(info, certs()) } else { redis::Client::open(info) };
            Target::Node(client.map_err(|e| bad(&e))?)
        };
        Ok(Self { target, conn: tokio::sync::Mutex::new(None), shown })
    }

    async fn connect(&self) -> redis::RedisResult<Conn> {
        match &self.target {
            Target::Node(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                Ok(Conn::Node(ConnectionManager::new_with_config(client.clone(), config).await?))
            }
            Target::Cluster(client) => Ok(Conn::Cluster(client.get_async_connection().await?)),
            Target::Sentinel(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                Ok(Conn::Sentinel(client.lock().await.get_async_connection_with_config(&config).await?))
            }
        }
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT * 3, self.connect()).await {
            Ok(r) => r.map_err(|e| err(format!("{}: {e}", self.shown)))?,
            Err(_) => return Err(err(format!("{}: no connection within {:?}", self.shown, CONNECT_TIMEOUT * 3))),
        };
        *slot = Some(conn.clone());
        drop(slot);
        if let Err(e) = self.migrate(&mut conn.clone()).await {
            tracing::warn!(store = self.shown, error = %e, "verdict store: revoked ids of an older Qala not moved yet");
        }
        Ok(conn)
    }

    /// Move what an older Qala kept in its own form: revoked worker ids
    /// (a hash of id -> Unix ms) become records of [`Revoked`]. Cheap when
    /// there is nothing to move (one HGETALL of a missing key).
    async fn migrate(&self, c: &mut Conn) -> redis::RedisResult<()> {
        let old: Vec<(String, i64)> = redis::cmd("HGETALL").arg(OLD_REVOKED_KEY).query_async(c).await?;
        if old.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(table_key(Revoked::TABLE));
        for (id, at_ms) in &old {
            let r = Revoked { id: id.clone(), at_ms: *at_ms };
            cmd.arg(r.key()).arg(r.encode_to_vec());
        }
        cmd.query_async::<()>(c).await?;
        redis::cmd("INCR").arg(version_key(Revoked::TABLE)).query_async::<()>(c).await?;
        redis::cmd("DEL").arg(OLD_REVOKED_KEY).query_async::<()>(c).await?;
        tracing::info!(revoked = old.len(), "verdict store: revoked ids moved to their records hash");
        Ok(())
    }

    /// Run one command (or script) on the store's connection. After a
    /// failure a Sentinel connection is dropped, so the next call asks the
    /// sentinels where the master is now.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Conn) -> redis::RedisResult<T>,
    {
        let mut conn = self.conn().await?;
        let result = f(&mut conn).await;
        if result.is_err() && matches!(self.target, Target::Sentinel(_)) {
            *self.conn.lock().await = None;
        }
        result.map_err(|e| err(format!("{}: {e}", self.shown)))
    }

    /// Run `cmds` concurrently on the one multiplexed connection (each may
    /// name a key on another node of a cluster, which a pipeline may not),
    /// answers in order.
    async fn run_all<T: redis::FromRedisValue + Send>(&self, cmds: Vec<Cmd>) -> Result<Vec<T>, StoreError> {
        use futures::StreamExt;
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn().await?;
        let results: Vec<redis::RedisResult<T>> = futures::stream::iter(cmds)
            .map(|cmd| {
                let mut c = conn.clone();
                async move { cmd.query_async::<T>(&mut c).await }
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        let out: redis::RedisResult<Vec<T>> = results.into_iter().collect();
        if out.is_err() && matches!(self.target, Target::Sentinel(_)) {
            *self.conn.lock().await = None;
        }
        out.map_err(|e| err(format!("{}: {e}", self.shown)))
    }
}

#[async_trait::async_trait]
impl VerdictStore for RedisStore {
    async fn get(&self, ruleset_id: &str, sha256: &str) -> Result<Option<Verdict>, StoreError> {
        let k = redis_key(ruleset_id, sha256);
        let bytes: Option<Vec<u8>> = self.run(async |c| redis::cmd("GET").arg(&k).query_async(c).await).await?;
        bytes.map(|b| decode(&b)).transpose()
    }

    async fn get_many(&self, ruleset_id: &str, sha256s: &[String]) -> Result<Vec<Verdict>, StoreError> {
        if sha256s.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = sha256s.iter().map(|s| redis_key(ruleset_id, s)).collect();
        // In a cluster the client splits MGET by slot and joins the answers.
        let values: Vec<Option<Vec<u8>>> = self.run(async |c| redis::cmd("MGET").arg(&keys).query_async(c).await).await?;
        values.into_iter().flatten().map(|b| decode(&b)).collect()
    }

    async fn put(&self, verdict: &Verdict, event: Option<&DetectionEvent>) -> Result<(), StoreError> {
        let k = redis_key(&verdict.ruleset_id, &verdict.sha256);
        let bytes = verdict.encode_to_vec();
        if verdict.expires_at_ms != 0 {
            let ms = (verdict.expires_at_ms - qala_common::now_ms()).max(1);
            self.run(async |c| redis::cmd("SET").arg(&k).arg(&bytes).arg("PX").arg(ms).query_async::<()>(c).await).await?;
        } else {
            self.run(async |c| redis::cmd("SET").arg(&k).arg(&bytes).query_async::<()>(c).await).await?;
        }
        // One key per command: each may live on another node of a cluster.
        for alias in alias_keys(verdict) {
            let key = format!("{HASH_PREFIX}{alias}");
            self.run(async |c| redis::cmd("SADD").arg(&key).arg(&verdict.sha256).query_async::<()>(c).await).await?;
        }
        if let Some(e) = event {
            let member = e.encode_to_vec();
            self.run(async |c| redis::cmd("ZADD").arg(DETECTIONS_KEY).arg(e.at_ms).arg(&member).query_async::<()>(c).await)
                .await?;
        }
        Ok(())
    }

    async fn resolve(&self, kind: &str, digest: &str) -> Result<Vec<String>, StoreError> {
        let key = format!("{HASH_PREFIX}{kind}:{digest}");
        self.run(async |c| redis::cmd("SMEMBERS").arg(&key).query_async(c).await).await
    }

    async fn detections(&self, since_ms: i64, limit: usize) -> Result<Vec<DetectionEvent>, StoreError> {
        let rows: Vec<Vec<u8>> = self
            .run(async |c| {
                redis::cmd("ZRANGE")
                    .arg(DETECTIONS_KEY)
                    .arg(since_ms)
                    .arg("+inf")
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(c)
                    .await
            })
            .await?;
        rows.iter().map(|r| DetectionEvent::decode(r.as_slice()).map_err(StoreError::from)).collect()
    }

    async fn purge_detections(&self, before_ms: i64) -> Result<u64, StoreError> {
        let max = format!("({before_ms}");
        self.run(async |c| redis::cmd("ZREMRANGEBYSCORE").arg(DETECTIONS_KEY).arg("-inf").arg(&max).query_async(c).await).await
    }

    async fn record_sightings(&self, seen: &[Sighting], cap: u64) -> Result<(), StoreError> {
        let mut by_agent: std::collections::BTreeMap<&str, Vec<&Sighting>> = Default::default();
        let mut cmds = Vec::with_capacity(seen.len() + 64);
        for s in seen {
            let first = s.first_seen_ms.min(s.last_seen_ms);
            cmds.push(redis::cmd("HSETNX").arg(sight_first_key(&s.sha256)).arg(&s.agent_id).arg(first).clone());
            by_agent.entry(s.agent_id.as_str()).or_default().push(s);
        }
        if by_agent.is_empty() {
            return Ok(());
        }
        for (agent, list) in &by_agent {
            for chunk in list.chunks(1000) {
                let mut zadd = redis::cmd("ZADD");
                zadd.arg(sight_by_key(agent)).arg("GT");
                for s in chunk {
                    zadd.arg(s.last_seen_ms).arg(&s.sha256);
                }
                cmds.push(zadd);
            }
        }
        let mut add = redis::cmd("SADD");
        add.arg(SIGHT_AGENTS_KEY).arg(by_agent.keys().collect::<Vec<_>>());
        cmds.push(add);
        self.run_all::<Value>(cmds).await?;
        // The cap: each agent's least recently seen go.
        let agents: Vec<&str> = by_agent.into_keys().collect();
        let counts: Vec<u64> =
            self.run_all(agents.iter().map(|a| redis::cmd("ZCARD").arg(sight_by_key(a)).clone()).collect()).await?;
        for (agent, n) in agents.into_iter().zip(counts) {
            if n <= cap {
                continue;
            }
            let zk = sight_by_key(agent);
            let popped: Vec<(String, f64)> =
                self.run(async |c| redis::cmd("ZPOPMIN").arg(&zk).arg(n - cap).query_async(c).await).await?;
            let mut cmds: Vec<Cmd> =
                popped.iter().map(|(sha, _)| redis::cmd("HDEL").arg(sight_first_key(sha)).arg(agent).clone()).collect();
            cmds.push(redis::cmd("SADD").arg(SIGHT_CUT_KEY).arg(agent).clone());
            self.run_all::<Value>(cmds).await?;
        }
        Ok(())
    }

    async fn forget_sightings(&self, agent_id: &str, sha256s: &[String]) -> Result<u64, StoreError> {
        if sha256s.is_empty() {
            return Ok(0);
        }
        let zk = sight_by_key(agent_id);
        let gone: u64 = self.run(async |c| redis::cmd("ZREM").arg(&zk).arg(sha256s).query_async(c).await).await?;
        let cmds = sha256s.iter().map(|sha| redis::cmd("HDEL").arg(sight_first_key(sha)).arg(agent_id).clone()).collect();
        self.run_all::<Value>(cmds).await?;
        Ok(gone)
    }

    async fn sightings_of(&self, sha256: &str) -> Result<Vec<Sighting>, StoreError> {
        let fk = sight_first_key(sha256);
        let firsts: std::collections::BTreeMap<String, i64> =
            self.run(async |c| redis::cmd("HGETALL").arg(&fk).query_async(c).await).await?;
        let lasts: Vec<Option<f64>> = self
            .run_all(firsts.keys().map(|agent| redis::cmd("ZSCORE").arg(sight_by_key(agent)).arg(sha256).clone()).collect())
            .await?;
        // An agent whose list no longer has it (cut, purged) half-way does not hold it.
        Ok(firsts
            .into_iter()
            .zip(lasts)
            .filter_map(|((agent, first), last)| {
                let last = last? as i64;
                Some(Sighting { agent_id: agent, sha256: sha256.to_string(), first_seen_ms: first, last_seen_ms: last })
            })
            .collect())
    }

    async fn sightings_by(&self, agent_id: &str, limit: usize) -> Result<(Vec<Sighting>, bool), StoreError> {
        let zk = sight_by_key(agent_id);
        let held: Vec<(String, f64)> = self
            .run(async |c| {
                redis::cmd("ZRANGE")
                    .arg(&zk)
                    .arg("+inf")
                    .arg("-inf")
                    .arg("BYSCORE")
                    .arg("REV")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .arg("WITHSCORES")
                    .query_async(c)
                    .await
            })
            .await?;
        let firsts: Vec<Option<i64>> = self
            .run_all(held.iter().map(|(sha, _)| redis::cmd("HGET").arg(sight_first_key(sha)).arg(agent_id).clone()).collect())
            .await?;
        let out = held
            .into_iter()
            .zip(firsts)
            .map(|((sha, last), first)| {
                let last = last as i64;
                Sighting { agent_id: agent_id.to_string(), sha256: sha, first_seen_ms: first.unwrap_or(last), last_seen_ms: last }
            })
            .collect();
        let cut: bool = self.run(async |c| redis::cmd("SISMEMBER").arg(SIGHT_CUT_KEY).arg(agent_id).query_async(c).await).await?;
        Ok((out, cut))
    }

    async fn sighted_since(&self, since_ms: i64, limit: usize) -> Result<(Vec<String>, bool), StoreError> {
        let agents: Vec<String> = self.run(async |c| redis::cmd("SMEMBERS").arg(SIGHT_AGENTS_KEY).query_async(c).await).await?;
        let mut seen = std::collections::BTreeSet::new();
        // A few agents' lists at a time, each command to its own node.
        for chunk in agents.chunks(64) {
            let cmds = chunk
                .iter()
                .map(|a| redis::cmd("ZRANGE").arg(sight_by_key(a)).arg(since_ms).arg("+inf").arg("BYSCORE").clone())
                .collect();
            let lists: Vec<Vec<String>> = self.run_all(cmds).await?;
            for sha in lists.into_iter().flatten() {
                if seen.len() >= limit && !seen.contains(&sha) {
                    return Ok((seen.into_iter().collect(), true));
                }
                seen.insert(sha);
            }
        }
        Ok((seen.into_iter().collect(), false))
    }

    async fn purge_sightings(&self, before_ms: i64) -> Result<u64, StoreError> {
        let agents: Vec<String> = self.run(async |c| redis::cmd("SMEMBERS").arg(SIGHT_AGENTS_KEY).query_async(c).await).await?;
        let max = format!("({before_ms}");
        let mut gone = 0u64;
        for agent in agents {
            let zk = sight_by_key(&agent);
            loop {
                let old: Vec<String> = self
                    .run(async |c| {
                        redis::cmd("ZRANGE")
                            .arg(&zk)
                            .arg("-inf")
                            .arg(&max)
                            .arg("BYSCORE")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(10_000)
                            .query_async(c)
                            .await
                    })
                    .await?;
                if old.is_empty() {
                    break;
                }
                gone += self.forget_sightings(&agent, &old).await?;
            }
            let left: u64 = self.run(async |c| redis::cmd("ZCARD").arg(&zk).query_async(c).await).await?;
            if left == 0 {
                self.run_all::<Value>(vec![
                    redis::cmd("SREM").arg(SIGHT_AGENTS_KEY).arg(&agent).clone(),
                    redis::cmd("SREM").arg(SIGHT_CUT_KEY).arg(&agent).clone(),
                ])
                .await?;
            }
        }
        Ok(gone)
    }

    async fn put_rows(&self, t: Table, rows: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let key = table_key(t);
        for batch in rows.chunks(1000) {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(&key);
            for (k, v) in batch {
                cmd.arg(k).arg(v);
            }
            self.run(async |c| cmd.query_async::<()>(c).await).await?;
        }
        self.run(async |c| redis::cmd("INCR").arg(version_key(t)).query_async::<()>(c).await).await
    }

    async fn get_row(&self, t: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(async |c| redis::cmd("HGET").arg(table_key(t)).arg(key).query_async(c).await).await
    }

    async fn delete_rows(&self, t: Table, keys: &[String]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let gone: u64 = self.run(async |c| redis::cmd("HDEL").arg(table_key(t)).arg(keys).query_async(c).await).await?;
        if gone > 0 {
            self.run(async |c| redis::cmd("INCR").arg(version_key(t)).query_async::<()>(c).await).await?;
        }
        Ok(gone)
    }

    async fn rows(&self, t: Table) -> Result<Vec<Vec<u8>>, StoreError> {
        self.run(async |c| redis::cmd("HVALS").arg(table_key(t)).query_async(c).await).await
    }

    async fn table_version(&self, t: Table) -> Result<u64, StoreError> {
        let v: Option<u64> = self.run(async |c| redis::cmd("GET").arg(version_key(t)).query_async(c).await).await?;
        Ok(v.unwrap_or(0))
    }

    fn shared(&self) -> bool {
        true
    }

    async fn lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let k = lock_key(key);
        let ms = ttl.as_millis().max(1) as u64;
        let set: Option<String> =
            self.run(async |c| redis::cmd("SET").arg(&k).arg(token).arg("NX").arg("PX").arg(ms).query_async(c).await).await?;
        Ok(set.is_some())
    }

    async fn relock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let k = lock_key(key);
        let ms = ttl.as_millis().max(1) as u64;
        let extended: i64 =
            self.run(async |c| redis::Script::new(RELOCK).key(&k).arg(token).arg(ms).invoke_async(c).await).await?;
        Ok(extended == 1)
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let k = lock_key(key);
        let _: i64 = self.run(async |c| redis::Script::new(UNLOCK).key(&k).arg(token).invoke_async(c).await).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // In a cluster, PING goes to every primary.
        let _: Value = self.run(async |c| redis::cmd("PING").query_async(c).await).await?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_passwords_never_show() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis+sentinel://:secret@a:1,b:2/mymaster"), "redis+sentinel://:***@a:1,b:2/mymaster");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        let m = multi_host("u:p@a:1, b:2/master/3");
        assert_eq!((m.userinfo, m.hosts, m.path), (Some("u:p"), vec!["a:1", "b:2"], vec!["master", "3"]));

        for ok in ["redis://127.0.0.1:6379", "redis+cluster://a:1,b:2", "redis+sentinel://a:1,b:2/mymaster/2"] {
            let s = RedisStore::new(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(s.describe(), ok);
        }
        assert!(
            matches!(RedisStore::new("redis+sentinel://a:1,b:2").map(|_| ()), Err(StoreError::Redis(m)) if m.contains("MASTER"))
        );
        assert!(RedisStore::new("redis+sentinel://a:1/m/notanumber").is_err());
        assert!(RedisStore::new("redis+cluster://").is_err());
        assert!(RedisStore::new("redis+cluster://a:1/0").is_err(), "a cluster has no databases");
        let e = RedisStore::new("redis+sentinel://:hunter2@a:1").map(|_| ()).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
