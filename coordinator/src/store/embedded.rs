//! Embedded backend: one redb file, no server. Everything but verdicts
//! without detections is durable when its write returns; those are durable
//! within [`LINGER`] + [`SYNC_WITHIN`] (a crash loses at most that much of
//! them, and the files are scanned again), so neither a sync nor a commit
//! is paid per clean verdict: they are committed in groups, and read from
//! memory until their group is committed.

use super::backend::{Sighting, StoreError, Table, VerdictStore, alias_keys, decode, expired, key};
use super::records::{Poisoned, Record, Revoked};
use prost::Message;
use qala_proto::v1::{DetectionEvent, Verdict};
use redb::{Database, Durability, MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const VERDICTS: TableDefinition<&str, &[u8]> = TableDefinition::new("verdicts_v1");
/// `md5:HEX` / `sha1:HEX` -> the sha256s of the files with that digest.
const HASHES: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("hashes_v1");
/// Detections feed: `AT_MS (20 digits):SHA256` -> protobuf `DetectionEvent`.
const DETECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("detections_v1");
/// Counters: `version:TABLE` for each table of records.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");
/// Sightings by (sha256 as 32 bytes, agent id): (first seen, last seen) in ms.
const SIGHTINGS: TableDefinition<([u8; 32], &str), (i64, i64)> = TableDefinition::new("sightings_v1");
/// The same by (agent id, last seen, sha256), for an agent's list, its
/// cap and retention.
const SIGHTINGS_BY_AGENT: TableDefinition<(&str, i64, [u8; 32]), ()> = TableDefinition::new("sightings_by_agent_v1");
/// Per agent: how many sightings, and whether the cap ever dropped some.
const SIGHTING_COUNTS: TableDefinition<&str, (u64, bool)> = TableDefinition::new("sighting_counts_v1");

/// A hex sha256 as its 32 bytes (None if it is not one).
fn raw(sha256: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(sha256, &mut out).ok()?;
    Some(out)
}

/// Revoked worker ids -> when (Unix ms), before revocations became records
/// of [`Revoked`]: moved to its table when the file is opened.
const OLD_REVOKED: TableDefinition<&str, i64> = TableDefinition::new("revoked_workers_v1");
/// The poison list before it became records of [`Poisoned`]: sha256 ->
/// (until_ms, what the file did); moved likewise.
const OLD_POISON: TableDefinition<&str, (i64, &str)> = TableDefinition::new("poison_v1");

/// The redb name of a table of records: `NAME_v1` (the tables of tokens,
/// agents and IOC entries kept their names and contents).
fn table_name(t: Table) -> String {
    format!("{}_v1", t.name())
}

fn version_key(t: Table) -> String {
    format!("version:{}", t.name())
}

fn feed_key(at_ms: i64, sha256: &str) -> String {
    format!("{:020}:{sha256}", at_ms.max(0))
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    /// Verdicts handed to the writer and not committed yet: reads see them.
    pending: Arc<Mutex<Pending>>,
    /// Verdicts to the writer thread (group commit).
    puts: Option<std::sync::mpsc::Sender<Put>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EmbeddedStore {
    /// The writer thread ends with its channel and is joined, so the file
    /// is closed (and can be opened again) when the store is dropped.
    fn drop(&mut self) {
        self.puts.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// One verdict to store, and who waits for its commit.
struct Put {
    key: String,
    bytes: Arc<[u8]>,
    sha256: String,
    /// `md5:HEX`, `sha1:HEX` to index.
    aliases: Arc<[String]>,
    /// (feed key, encoded event) for a detection.
    event: Option<(String, Vec<u8>)>,
    /// Who waits for the commit; `None` for a verdict in [`Pending`] (its
    /// `put` has returned).
    done: Option<tokio::sync::oneshot::Sender<Result<(), StoreError>>>,
    /// Its number in [`Pending`] (0: not there).
    seq: u64,
}

/// Verdicts whose `put` returned before their commit, by key: what reads
/// answer from until the writer has committed them.
#[derive(Default)]
struct Pending {
    by_key: HashMap<String, PendingVerdict>,
    next_seq: u64,
}

struct PendingVerdict {
    seq: u64,
    bytes: Arc<[u8]>,
    sha256: String,
    aliases: Arc<[String]>,
}

/// Most verdicts in one write transaction.
const GROUP_MAX: usize = 256;

/// How long the writer gathers verdicts nobody waits for before it commits
/// them (a commit's fixed cost was most of the writer's CPU at one commit
/// per verdict). A verdict with detections that arrives meanwhile waits
/// at most this long for its (synced) commit.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Most verdicts held in [`Pending`]: past it, a `put` waits for its commit
/// (a writer that falls behind slows the puts, not memory without bound).
const PENDING_MAX: usize = 1024;

/// A verdict without detections can always be computed again from its file,
/// so it is committed without a sync and made durable within this long: a
/// crash or a kill of the coordinator loses at most this much of them (those
/// files are scanned again when next submitted). A verdict with detections
/// (it carries a detection event) is synced before its `put` returns, as is
/// everything else the store holds (tokens, IOC lists, inventory).
const SYNC_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Group commit: every verdict waiting when a transaction starts goes into
/// it. Batches of clean verdicts commit without a sync ([`SYNC_WITHIN`]);
/// a batch with a detection, the first batch after `SYNC_WITHIN`, a quiet
/// moment after unsynced commits and the store's closing sync everything.
fn writer(db: Arc<Database>, puts: std::sync::mpsc::Receiver<Put>, pending: Arc<Mutex<Pending>>) {
    use std::sync::mpsc::RecvTimeoutError;
    // When the oldest commit not yet synced was made.
    let mut unsynced: Option<std::time::Instant> = None;
    loop {
        let first = match unsynced {
            None => match puts.recv() {
                Ok(p) => p,
                Err(_) => return,
            },
            Some(since) => match puts.recv_timeout(SYNC_WITHIN.saturating_sub(since.elapsed())) {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) => {
                    unsynced = match sync(&db) {
                        Ok(()) => None,
                        Err(e) => {
                            tracing::warn!(error = %e, "verdict store: sync failed, trying again");
                            Some(std::time::Instant::now())
                        }
                    };
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if let Err(e) = sync(&db) {
                        tracing::warn!(error = %e, "verdict store: last sync failed");
                    }
                    return;
                }
            },
        };
        // Nobody waits for this one: let others join its commit (they
        // arrive without waking this thread).
        if first.done.is_none() {
            std::thread::sleep(LINGER);
        }
        let mut batch = vec![first];
        while batch.len() < GROUP_MAX {
            match puts.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|p| p.event.is_some()) || unsynced.is_some_and(|t| t.elapsed() >= SYNC_WITHIN);
        let result = (|| -> Result<(), StoreError> {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(err)?;
            {
                let mut table = txn.open_table(VERDICTS).map_err(err)?;
                let mut hashes = txn.open_multimap_table(HASHES).map_err(err)?;
                let mut feed = txn.open_table(DETECTIONS).map_err(err)?;
                for p in &batch {
                    table.insert(p.key.as_str(), &*p.bytes).map_err(err)?;
                    for a in p.aliases.iter() {
                        hashes.insert(a.as_str(), p.sha256.as_str()).map_err(err)?;
                    }
                    if let Some((k, e)) = &p.event {
                        feed.insert(k.as_str(), e.as_slice()).map_err(err)?;
                    }
                }
            }
            txn.commit().map_err(err)
        })();
        if result.is_ok() {
            unsynced = if durable { None } else { unsynced.or_else(|| Some(std::time::Instant::now())) };
        }
        // Committed (or lost): reads go to the file again. A newer put of
        // the same key stays.
        {
            let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
            for p in batch.iter().filter(|p| p.seq != 0) {
                if pending.by_key.get(&p.key).is_some_and(|q| q.seq == p.seq) {
                    pending.by_key.remove(&p.key);
                }
            }
        }
        let unwaited = batch.iter().filter(|p| p.done.is_none()).count();
        if let (Err(e), 1..) = (&result, unwaited) {
            tracing::warn!(error = %e, verdicts = unwaited, "verdict store: commit failed, verdicts not stored");
        }
        for p in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Embedded(e.to_string())),
            };
            if let Some(done) = p.done {
                let _ = done.send(r);
            }
        }
    }
}

/// Make every commit so far durable (an empty transaction, synced).
fn sync(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(err)?;
    txn.set_durability(Durability::Immediate).map_err(err)?;
    txn.commit().map_err(err)
}

fn bump_version(txn: &redb::WriteTransaction, t: Table) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(err)?;
    let k = version_key(t);
    let v = meta.get(k.as_str()).map_err(err)?.map(|v| v.value()).unwrap_or(0);
    meta.insert(k.as_str(), v + 1).map_err(err)?;
    Ok(())
}

/// Add `records` to their kind's table, by key.
fn insert_records<R: Record>(txn: &redb::WriteTransaction, records: &[R]) -> Result<(), StoreError> {
    let name = table_name(R::TABLE);
    let mut table = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)).map_err(err)?;
    for r in records {
        table.insert(r.key().as_str(), r.encode_to_vec().as_slice()).map_err(err)?;
    }
    Ok(())
}

/// Move the records an older Qala kept in tables of their own types into
/// tables of rows: revoked worker ids, the poison list (what has not
/// expired of it).
fn migrate(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let names: Vec<String> = txn.list_tables().map_err(err)?.map(|t| t.name().to_string()).collect();
    let has = |t: &str| names.iter().any(|n| n == t);
    if has(OLD_REVOKED.name()) {
        let table = txn.open_table(OLD_REVOKED).map_err(err)?;
        let old: Vec<Revoked> = table
            .iter()
            .map_err(err)?
            .map(|r| r.map(|(k, v)| Revoked { id: k.value().to_string(), at_ms: v.value() }))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        drop(table);
        insert_records(txn, &old)?;
        txn.delete_table(OLD_REVOKED).map_err(err)?;
        tracing::info!(revoked = old.len(), "verdict store: revoked ids moved to their records table");
    }
    if has(OLD_POISON.name()) {
        let now = qala_common::now_ms();
        let table = txn.open_table(OLD_POISON).map_err(err)?;
        let old: Vec<Poisoned> = table
            .iter()
            .map_err(err)?
            .map(|r| {
                r.map(|(k, v)| Poisoned { sha256: k.value().to_string(), detail: v.value().1.to_string(), until_ms: v.value().0 })
            })
            .collect::<Result<_, _>>()
            .map_err(err)?;
        drop(table);
        insert_records(txn, &old.into_iter().filter(|p| !p.expired(now)).collect::<Vec<_>>())?;
        txn.delete_table(OLD_POISON).map_err(err)?;
    }
    Ok(())
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Embedded(e.to_string())
}

impl EmbeddedStore {
    /// Open or create the database file (and its parent directory), with
    /// redb's default page cache.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, None)
    }

    /// [`EmbeddedStore::open`] with a page cache of `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: Option<u64>) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        }
        let mut builder = redb::Builder::new();
        if let Some(bytes) = cache_bytes {
            builder.set_cache_size(usize::try_from(bytes).unwrap_or(usize::MAX));
        }
        let db = builder.create(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(VERDICTS).map_err(err)?;
        txn.open_multimap_table(HASHES).map_err(err)?;
        txn.open_table(DETECTIONS).map_err(err)?;
        txn.open_table(META).map_err(err)?;
        migrate(&txn)?;
        txn.commit().map_err(err)?;
        let db = Arc::new(db);
        let (puts, rx) = std::sync::mpsc::channel();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (writer_db, writer_pending) = (db.clone(), pending.clone());
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer(writer_db, rx, writer_pending))
            .map_err(|e| err(format!("store writer thread: {e}")))?;
        Ok(Self { db, path: path.to_path_buf(), pending, puts: Some(puts), writer: Some(writer) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(err)?
    }
}

fn read_many(db: &Database, pending: &Mutex<Pending>, ruleset_id: &str, sha256s: &[String]) -> Result<Vec<Verdict>, StoreError> {
    // Those waiting for their commit first, then the file in a transaction
    // begun after: a verdict committed (and so no longer pending) in
    // between is in that transaction.
    let keys: Vec<String> = sha256s.iter().map(|sha| key(ruleset_id, sha)).collect();
    let held: Vec<Option<Arc<[u8]>>> = {
        let pending = pending.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().map(|k| pending.by_key.get(k).map(|p| p.bytes.clone())).collect()
    };
    let txn = db.begin_read().map_err(err)?;
    let table = txn.open_table(VERDICTS).map_err(err)?;
    let mut out = Vec::new();
    for (k, held) in keys.iter().zip(held) {
        let v = match held {
            Some(bytes) => decode(&bytes)?,
            None => match table.get(k.as_str()).map_err(err)? {
                Some(v) => decode(v.value())?,
                None => continue,
            },
        };
        // An expired partial verdict is gone (its bytes stay until overwritten).
        if !expired(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl VerdictStore for EmbeddedStore {
    async fn get(&self, ruleset_id: &str, sha256: &str) -> Result<Option<Verdict>, StoreError> {
        // One key (every upload asks twice): a read transaction over pages
        // redb keeps cached costs less in place than a thread hand-off.
        Ok(read_many(&self.db, &self.pending, ruleset_id, &[sha256.to_string()])?.pop())
    }

    async fn get_many(&self, ruleset_id: &str, sha256s: &[String]) -> Result<Vec<Verdict>, StoreError> {
        let (r, s, pending) = (ruleset_id.to_string(), sha256s.to_vec(), self.pending.clone());
        self.blocking(move |db| read_many(db, &pending, &r, &s)).await
    }

    /// A verdict with detections returns once committed and synced; one
    /// without returns once handed to the writer (reads see it from then
    /// on), unless [`PENDING_MAX`] are already waiting for their commit.
    async fn put(&self, verdict: &Verdict, event: Option<&DetectionEvent>) -> Result<(), StoreError> {
        let puts = self.puts.as_ref().ok_or_else(|| err("the store is closing"))?;
        let mut put = Put {
            key: key(&verdict.ruleset_id, &verdict.sha256),
            bytes: verdict.encode_to_vec().into(),
            sha256: verdict.sha256.clone(),
            aliases: alias_keys(verdict).into(),
            event: event.map(|e| (feed_key(e.at_ms, &e.sha256), e.encode_to_vec())),
            done: None,
            seq: 0,
        };
        if put.event.is_none() {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.by_key.len() < PENDING_MAX {
                pending.next_seq += 1;
                put.seq = pending.next_seq;
                let entry = PendingVerdict {
                    seq: put.seq,
                    bytes: put.bytes.clone(),
                    sha256: put.sha256.clone(),
                    aliases: put.aliases.clone(),
                };
                pending.by_key.insert(put.key.clone(), entry);
                drop(pending);
                let key = put.key.clone();
                return puts.send(put).map_err(|_| {
                    self.pending.lock().unwrap_or_else(|p| p.into_inner()).by_key.remove(&key);
                    err("the store writer has stopped")
                });
            }
        }
        let (done, committed) = tokio::sync::oneshot::channel();
        put.done = Some(done);
        puts.send(put).map_err(|_| err("the store writer has stopped"))?;
        committed.await.map_err(|_| err("the store writer has stopped"))?
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.path.display())
    }

    async fn resolve(&self, kind: &str, digest: &str) -> Result<Vec<String>, StoreError> {
        let k = format!("{kind}:{digest}");
        let pending = self.pending.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_multimap_table(HASHES).map_err(err)?;
            let mut out = Vec::new();
            for v in table.get(k.as_str()).map_err(err)? {
                out.push(v.map_err(err)?.value().to_string());
            }
            // Verdicts not committed yet answer too (the index is written
            // with them).
            let pending = pending.lock().unwrap_or_else(|p| p.into_inner());
            for p in pending.by_key.values().filter(|p| p.aliases.contains(&k)) {
                if !out.contains(&p.sha256) {
                    out.push(p.sha256.clone());
                }
            }
            Ok(out)
        })
        .await
    }

    async fn detections(&self, since_ms: i64, limit: usize) -> Result<Vec<DetectionEvent>, StoreError> {
        let from = format!("{:020}", since_ms.max(0));
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(DETECTIONS).map_err(err)?;
            let mut out = Vec::new();
            for row in table.range(from.as_str()..).map_err(err)?.take(limit) {
                let (_, v) = row.map_err(err)?;
                out.push(DetectionEvent::decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn purge_detections(&self, before_ms: i64) -> Result<u64, StoreError> {
        let to = format!("{:020}", before_ms.max(0));
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let n = {
                let mut table = txn.open_table(DETECTIONS).map_err(err)?;
                let old: Vec<String> = table
                    .range(..to.as_str())
                    .map_err(err)?
                    .map(|r| r.map(|(k, _)| k.value().to_string()))
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
                for k in &old {
                    table.remove(k.as_str()).map_err(err)?;
                }
                old.len() as u64
            };
            txn.commit().map_err(err)?;
            Ok(n)
        })
        .await
    }

    async fn record_sightings(&self, seen: &[Sighting], cap: u64) -> Result<(), StoreError> {
        let seen: Vec<(String, [u8; 32], i64, i64)> = seen
            .iter()
            .filter_map(|s| Some((s.agent_id.clone(), raw(&s.sha256)?, s.first_seen_ms.min(s.last_seen_ms), s.last_seen_ms)))
            .collect();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut by_sha = txn.open_table(SIGHTINGS).map_err(err)?;
                let mut by_agent = txn.open_table(SIGHTINGS_BY_AGENT).map_err(err)?;
                let mut counts = txn.open_table(SIGHTING_COUNTS).map_err(err)?;
                let mut added: std::collections::BTreeMap<&str, u64> = Default::default();
                for (agent, sha, first, last) in &seen {
                    let (agent, sha, first, last) = (agent.as_str(), *sha, *first, *last);
                    // One write for a new pair (the common case); an update
                    // is fixed up from the value the write replaced.
                    let old = by_sha.insert((sha, agent), (first, last)).map_err(err)?.map(|v| v.value());
                    match old {
                        None => *added.entry(agent).or_default() += 1,
                        Some(old @ (_, old_last)) if old_last >= last => {
                            by_sha.insert((sha, agent), old).map_err(err)?;
                            continue;
                        }
                        Some((old_first, old_last)) => {
                            by_sha.insert((sha, agent), (old_first.min(first), last)).map_err(err)?;
                            by_agent.remove((agent, old_last, sha)).map_err(err)?;
                        }
                    }
                    by_agent.insert((agent, last, sha), ()).map_err(err)?;
                }
                // The cap: each agent's least recently seen go.
                for (agent, more) in added {
                    let (n, cut) = counts.get(agent).map_err(err)?.map(|v| v.value()).unwrap_or((0, false));
                    let n = n + more;
                    if n <= cap {
                        counts.insert(agent, (n, cut)).map_err(err)?;
                        continue;
                    }
                    let over = (n - cap) as usize;
                    let oldest: Vec<(i64, [u8; 32])> = by_agent
                        .range((agent, i64::MIN, [0u8; 32])..=(agent, i64::MAX, [0xffu8; 32]))
                        .map_err(err)?
                        .take(over)
                        .map(|r| r.map(|(k, _)| (k.value().1, k.value().2)))
                        .collect::<Result<_, _>>()
                        .map_err(err)?;
                    for (last, sha) in &oldest {
                        by_agent.remove((agent, *last, *sha)).map_err(err)?;
                        by_sha.remove((*sha, agent)).map_err(err)?;
                    }
                    counts.insert(agent, (n - oldest.len() as u64, true)).map_err(err)?;
                }
            }
            txn.commit().map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn forget_sightings(&self, agent_id: &str, sha256s: &[String]) -> Result<u64, StoreError> {
        let (agent, shas) = (agent_id.to_string(), sha256s.iter().filter_map(|s| raw(s)).collect::<Vec<_>>());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let mut gone = 0u64;
            {
                let mut by_sha = txn.open_table(SIGHTINGS).map_err(err)?;
                let mut by_agent = txn.open_table(SIGHTINGS_BY_AGENT).map_err(err)?;
                let mut counts = txn.open_table(SIGHTING_COUNTS).map_err(err)?;
                for sha in &shas {
                    let old = by_sha.remove((*sha, agent.as_str())).map_err(err)?.map(|v| v.value());
                    if let Some((_, last)) = old {
                        by_agent.remove((agent.as_str(), last, *sha)).map_err(err)?;
                        gone += 1;
                    }
                }
                if gone > 0 {
                    let (n, cut) = counts.get(agent.as_str()).map_err(err)?.map(|v| v.value()).unwrap_or((0, false));
                    if n <= gone {
                        counts.remove(agent.as_str()).map_err(err)?;
                    } else {
                        counts.insert(agent.as_str(), (n - gone, cut)).map_err(err)?;
                    }
                }
            }
            txn.commit().map_err(err)?;
            Ok(gone)
        })
        .await
    }

    async fn sightings_of(&self, sha256: &str) -> Result<Vec<Sighting>, StoreError> {
        let Some(sha) = raw(sha256) else { return Ok(Vec::new()) };
        let shown = sha256.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = match txn.open_table(SIGHTINGS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(err(e)),
            };
            let mut out = Vec::new();
            for row in table.range((sha, "")..).map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let (s, agent) = k.value();
                if s != sha {
                    break;
                }
                let (first, last) = v.value();
                out.push(Sighting {
                    agent_id: agent.to_string(),
                    sha256: shown.clone(),
                    first_seen_ms: first,
                    last_seen_ms: last,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn sighted_since(&self, since_ms: i64, limit: usize) -> Result<(Vec<String>, bool), StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let (by_agent, counts) = match (txn.open_table(SIGHTINGS_BY_AGENT), txn.open_table(SIGHTING_COUNTS)) {
                (Ok(a), Ok(c)) => (a, c),
                (Err(redb::TableError::TableDoesNotExist(_)), _) | (_, Err(redb::TableError::TableDoesNotExist(_))) => {
                    return Ok((Vec::new(), false));
                }
                (Err(e), _) | (_, Err(e)) => return Err(err(e)),
            };
            let mut seen = std::collections::BTreeSet::new();
            let mut truncated = false;
            'agents: for row in counts.iter().map_err(err)? {
                let (agent, _) = row.map_err(err)?;
                let agent = agent.value();
                let range = (agent, since_ms, [0u8; 32])..=(agent, i64::MAX, [0xffu8; 32]);
                for row in by_agent.range(range).map_err(err)? {
                    let (k, _) = row.map_err(err)?;
                    let sha = k.value().2;
                    if seen.len() >= limit && !seen.contains(&sha) {
                        truncated = true;
                        break 'agents;
                    }
                    seen.insert(sha);
                }
            }
            Ok((seen.into_iter().map(hex::encode).collect(), truncated))
        })
        .await
    }

    async fn sightings_by(&self, agent_id: &str, limit: usize) -> Result<(Vec<Sighting>, bool), StoreError> {
        let agent = agent_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let (by_agent, by_sha, counts) =
                match (txn.open_table(SIGHTINGS_BY_AGENT), txn.open_table(SIGHTINGS), txn.open_table(SIGHTING_COUNTS)) {
                    (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                    (Err(redb::TableError::TableDoesNotExist(_)), ..) => return Ok((Vec::new(), false)),
                    (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => return Err(err(e)),
                };
            let truncated = counts.get(agent.as_str()).map_err(err)?.is_some_and(|v| v.value().1);
            let mut out = Vec::new();
            let range = (agent.as_str(), i64::MIN, [0u8; 32])..=(agent.as_str(), i64::MAX, [0xffu8; 32]);
            for row in by_agent.range(range).map_err(err)?.rev() {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = row.map_err(err)?;
                let (_, last, sha) = k.value();
                let first = by_sha.get((sha, agent.as_str())).map_err(err)?.map_or(last, |v| v.value().0);
                out.push(Sighting {
                    agent_id: agent.clone(),
                    sha256: hex::encode(sha),
                    first_seen_ms: first,
                    last_seen_ms: last,
                });
            }
            Ok((out, truncated))
        })
        .await
    }

    async fn purge_sightings(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let mut gone = 0u64;
            {
                let mut by_sha = txn.open_table(SIGHTINGS).map_err(err)?;
                let mut by_agent = txn.open_table(SIGHTINGS_BY_AGENT).map_err(err)?;
                let mut counts = txn.open_table(SIGHTING_COUNTS).map_err(err)?;
                let agents: Vec<(String, u64, bool)> = counts
                    .iter()
                    .map_err(err)?
                    .map(|r| r.map(|(k, v)| (k.value().to_string(), v.value().0, v.value().1)))
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
                for (agent, n, cut) in agents {
                    let old: Vec<(i64, [u8; 32])> = by_agent
                        .range((agent.as_str(), i64::MIN, [0u8; 32])..(agent.as_str(), before_ms, [0u8; 32]))
                        .map_err(err)?
                        .map(|r| r.map(|(k, _)| (k.value().1, k.value().2)))
                        .collect::<Result<_, _>>()
                        .map_err(err)?;
                    for (last, sha) in &old {
                        by_agent.remove((agent.as_str(), *last, *sha)).map_err(err)?;
                        by_sha.remove((*sha, agent.as_str())).map_err(err)?;
                    }
                    gone += old.len() as u64;
                    let left = n.saturating_sub(old.len() as u64);
                    if left == 0 {
                        counts.remove(agent.as_str()).map_err(err)?;
                    } else if !old.is_empty() {
                        counts.insert(agent.as_str(), (left, cut)).map_err(err)?;
                    }
                }
            }
            txn.commit().map_err(err)?;
            Ok(gone)
        })
        .await
    }

    async fn put_rows(&self, t: Table, rows: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let rows = rows.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let name = table_name(t);
                let mut table = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)).map_err(err)?;
                for (k, v) in &rows {
                    table.insert(k.as_str(), v.as_slice()).map_err(err)?;
                }
            }
            bump_version(&txn, t)?;
            txn.commit().map_err(err)
        })
        .await
    }

    /// Read in place (the poison list is asked once per upload): a read
    /// transaction over pages redb keeps cached costs less than a thread
    /// hand-off.
    async fn get_row(&self, t: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = table_name(t);
        let txn = self.db.begin_read().map_err(err)?;
        let table = match txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        Ok(table.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    async fn delete_rows(&self, t: Table, keys: &[String]) -> Result<u64, StoreError> {
        let keys = keys.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let mut gone = 0;
            {
                let name = table_name(t);
                let mut table = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)).map_err(err)?;
                for k in &keys {
                    gone += u64::from(table.remove(k.as_str()).map_err(err)?.is_some());
                }
            }
            if gone > 0 {
                bump_version(&txn, t)?;
            }
            txn.commit().map_err(err)?;
            Ok(gone)
        })
        .await
    }

    async fn rows(&self, t: Table) -> Result<Vec<Vec<u8>>, StoreError> {
        self.blocking(move |db| {
            let name = table_name(t);
            let txn = db.begin_read().map_err(err)?;
            let table = match txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(err(e)),
            };
            let mut out = Vec::new();
            for row in table.iter().map_err(err)? {
                out.push(row.map_err(err)?.1.value().to_vec());
            }
            Ok(out)
        })
        .await
    }

    async fn table_version(&self, t: Table) -> Result<u64, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(META).map_err(err)?;
            Ok(table.get(version_key(t).as_str()).map_err(err)?.map(|v| v.value()).unwrap_or(0))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written by an older Qala, with revoked ids and the poison
    /// list in tables of their own types: opened, both are records, and
    /// the old tables are gone.
    #[tokio::test]
    async fn revocations_and_the_poison_list_of_an_older_file_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("v.redb");
        let now = qala_common::now_ms();
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(OLD_REVOKED).unwrap().insert("w3", 5).unwrap();
            let mut poison = txn.open_table(OLD_POISON).unwrap();
            poison.insert("aa", (now + 60_000, "killed by SIGSEGV")).unwrap();
            poison.insert("bb", (now - 1, "expired")).unwrap();
            drop(poison);
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        let revoked: Vec<Revoked> =
            store.rows(Revoked::TABLE).await.unwrap().iter().map(|b| Revoked::decode(b.as_slice()).unwrap()).collect();
        assert_eq!(revoked, [Revoked { id: "w3".into(), at_ms: 5 }]);
        let poisoned: Vec<Poisoned> =
            store.rows(Poisoned::TABLE).await.unwrap().iter().map(|b| Poisoned::decode(b.as_slice()).unwrap()).collect();
        assert_eq!(poisoned.len(), 1, "the expired entry was not carried over");
        assert_eq!((poisoned[0].sha256.as_str(), poisoned[0].detail.as_str()), ("aa", "killed by SIGSEGV"));
        let db = store.db.clone();
        let names: Vec<String> = tokio::task::spawn_blocking(move || {
            db.begin_read().unwrap().list_tables().unwrap().map(|t| t.name().to_string()).collect()
        })
        .await
        .unwrap();
        assert!(!names.iter().any(|n| n == "revoked_workers_v1" || n == "poison_v1"), "{names:?}");
        drop(store);
        // Opened again: nothing moves twice.
        let again = EmbeddedStore::open(&path).unwrap();
        assert_eq!(again.rows(Revoked::TABLE).await.unwrap().len(), 1);
    }

    /// Concurrent puts share commits (group commit), and every one of them
    /// is on disk once the store is closed (its writer's last sync): all
    /// there after the store is dropped and opened again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_puts_are_all_durable() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("v.redb");
        let store = std::sync::Arc::new(EmbeddedStore::open(&path).unwrap());
        let mut tasks = Vec::new();
        for i in 0..300 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let v = Verdict { ruleset_id: "r".into(), sha256: format!("{i:064x}"), ..Default::default() };
                s.put(&v, None).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        drop(store);
        let again = EmbeddedStore::open(&path).unwrap();
        let all: Vec<String> = (0..300).map(|i| format!("{i:064x}")).collect();
        assert_eq!(again.get_many("r", &all).await.unwrap().len(), 300);
    }

    /// What the file itself holds under `key` (no pending verdicts).
    fn in_file(store: &EmbeddedStore, key: &str) -> bool {
        let txn = store.db.begin_read().unwrap();
        txn.open_table(VERDICTS).unwrap().get(key).unwrap().is_some()
    }

    fn pending_len(store: &EmbeddedStore) -> usize {
        store.pending.lock().unwrap().by_key.len()
    }

    /// A clean verdict's put returns before its commit: from then on every
    /// read (by sha256, in a batch, by md5) answers it, and within a short
    /// while it is in the file and no longer held in memory.
    #[tokio::test]
    async fn a_clean_verdict_is_read_before_its_commit_and_committed_soon_after() {
        let d = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&d.path().join("v.redb")).unwrap();
        let sha = "ab".repeat(32);
        let v = Verdict { ruleset_id: "r".into(), sha256: sha.clone(), md5: "cd".repeat(16), size: 7, ..Default::default() };
        store.put(&v, None).await.unwrap();
        assert_eq!(store.get("r", &sha).await.unwrap().as_ref(), Some(&v));
        assert_eq!(store.get_many("r", std::slice::from_ref(&sha)).await.unwrap(), vec![v.clone()]);
        assert_eq!(store.resolve("md5", &"cd".repeat(16)).await.unwrap(), vec![sha.clone()]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pending_len(&store) > 0 {
            assert!(std::time::Instant::now() < deadline, "still not committed");
            tokio::time::sleep(LINGER).await;
        }
        assert!(in_file(&store, &key("r", &sha)));
        assert_eq!(store.get("r", &sha).await.unwrap(), Some(v));
        assert_eq!(store.resolve("md5", &"cd".repeat(16)).await.unwrap(), vec![sha]);
    }

    /// A verdict with detections is in the file (committed, synced) when
    /// its put returns; it is never only in memory.
    #[tokio::test]
    async fn a_detection_is_committed_before_its_put_returns() {
        let d = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&d.path().join("v.redb")).unwrap();
        let sha = "ef".repeat(32);
        let v = Verdict { ruleset_id: "r".into(), sha256: sha.clone(), ..Default::default() };
        let event = DetectionEvent { at_ms: 5, sha256: sha.clone(), ..Default::default() };
        store.put(&v, Some(&event)).await.unwrap();
        assert_eq!(pending_len(&store), 0);
        assert!(in_file(&store, &key("r", &sha)));
        assert_eq!(store.detections(0, 10).await.unwrap().len(), 1);
    }

    /// Puts faster than the writer commits hold at most `PENDING_MAX`
    /// verdicts in memory: past that a put waits for its commit.
    #[tokio::test]
    async fn verdicts_waiting_for_their_commit_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&d.path().join("v.redb")).unwrap();
        let n = PENDING_MAX + 200;
        for i in 0..n {
            let v = Verdict { ruleset_id: "r".into(), sha256: format!("{i:064x}"), ..Default::default() };
            store.put(&v, None).await.unwrap();
            assert!(pending_len(&store) <= PENDING_MAX);
        }
        let all: Vec<String> = (0..n).map(|i| format!("{i:064x}")).collect();
        assert_eq!(store.get_many("r", &all).await.unwrap().len(), n);
    }
}
