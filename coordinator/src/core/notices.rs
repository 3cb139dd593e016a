//! Notices to the agents that hold a content: its verdict changed (a block
//! entry added, an allow entry removed, a rescan under new rules), or a hunt
//! asks one of them for the file. A notice is made once, for the holders
//! its sightings name at that moment, and kept in the store's `notices`
//! table for a day, so that every coordinator sharing the store sends it to
//! the agents connected to it ([`Notices::run`] watches the table's
//! version) and an agent whose stream was down gets it at its next
//! check-in ([`Notices::for_agent`]). Agents act on a notice by looking the
//! content up again: a notice carries no verdict, only a sha256 and why.

use super::error::CoreError;
use super::iocs::IocLists;
use super::shared::Shared;
use super::sightings::Sightings;
use crate::audit::Audit;
use crate::auth::{Caller, Op};
use crate::metrics::Metrics;
use crate::store::Guarded;
use crate::store::records::Presence;
use qala_proto::v1 as pb;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tracing::warn;

/// How often the store's notices table is checked for other coordinators'.
const POLL: Duration = Duration::from_millis(250);
/// Notices queued per connected stream; past it the stream is closed (the
/// agent reconnects and gets the rest as missed ones).
const QUEUE: usize = 1024;
/// Most notices sent at a check-in or a reconnect.
const MAX_MISSED: usize = 10_000;
/// How often this coordinator says which agents have a stream open to it,
/// and how long each saying holds.
const PRESENCE_EVERY: Duration = Duration::from_secs(20);
const PRESENCE_FOR: Duration = Duration::from_secs(60);

type Subscribers = HashMap<String, Vec<mpsc::Sender<pb::Notice>>>;

pub struct Notices {
    store: Arc<Guarded>,
    iocs: Arc<IocLists>,
    sightings: Arc<Sightings>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    /// The agents with a stream open to this coordinator.
    subscribers: Mutex<Subscribers>,
    /// Of those, the ones that upload what a hunt asks for.
    uploaders: Mutex<HashSet<String>>,
    /// Notice ids this coordinator has sent (or that were there when it started).
    sent: Mutex<HashSet<String>>,
    /// The table's version when last read, and what it held then (check-ins
    /// are answered from it: thousands of agents checking in do not each
    /// read the table).
    version: AtomicU64,
    table: std::sync::RwLock<Arc<Vec<pb::NoticeRecord>>>,
    /// A notice was made here: send it now, not at the next poll.
    made: Notify,
    /// The coordinator is shutting down: streams are ended, none opened.
    closing: std::sync::atomic::AtomicBool,
}

fn presence(agent: &str, uploads: bool) -> Presence {
    Presence { agent_id: agent.to_string(), until_ms: qala_common::now_ms() + PRESENCE_FOR.as_millis() as i64, uploads }
}

/// A notice id: unique, and the same for the same cause wherever it is
/// made (two coordinators seeing one IOC change make one notice).
fn notice_id(cause: &str, sha256: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{cause}\0{sha256}").as_bytes());
    hex::encode(&d[..12])
}

impl Notices {
    pub fn new(s: &Shared, sightings: Arc<Sightings>) -> Self {
        Self {
            store: s.store.clone(),
            iocs: s.iocs.clone(),
            sightings,
            audit: s.audit.clone(),
            metrics: s.metrics.clone(),
            subscribers: Mutex::default(),
            uploaders: Mutex::default(),
            sent: Mutex::default(),
            version: AtomicU64::new(u64::MAX),
            table: Default::default(),
            made: Notify::new(),
            closing: Default::default(),
        }
    }

    /// End every notice stream (the coordinator is shutting down: a
    /// graceful shutdown waits for open calls, and these never end by
    /// themselves); agents reconnect to another coordinator or this one
    /// when it is back.
    pub fn close_streams(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.subscribers().clear();
    }

    /// Whether streams are being ended for a shutdown.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send `notice` (its kind, sha256, reason and hunt; its id and time
    /// are set here) to the holders of its content (all, or only `only`
    /// when given); `cause` names it uniquely (the same cause twice makes
    /// one notice). Returns how many agents it is for.
    pub async fn notify(&self, mut notice: pb::Notice, cause: &str, only: Option<Vec<String>>) -> Result<usize, CoreError> {
        let agents = match only {
            Some(a) => a,
            None => self.sightings.holders_of(&notice.sha256).await?,
        };
        if agents.is_empty() {
            return Ok(0);
        }
        notice.id = notice_id(cause, &notice.sha256);
        notice.at_ms = qala_common::now_ms();
        let n = agents.len();
        self.store.put(&pb::NoticeRecord { notice: Some(notice), agents }).await?;
        self.made.notify_one();
        Ok(n)
    }

    /// A notice that `sha256`'s verdict changed, for `reason`.
    pub fn verdict_changed(sha256: &str, reason: &str, hunt_id: &str) -> pb::Notice {
        pb::Notice {
            kind: "verdict".into(),
            sha256: sha256.into(),
            reason: reason.into(),
            hunt_id: hunt_id.into(),
            ..Default::default()
        }
    }

    /// The IOC changes since the last call, as notices to the holders of
    /// each file concerned (a blocked md5/sha1 names the submissions
    /// stored with it).
    async fn ioc_changes(&self) {
        for e in self.iocs.take_worsened() {
            let (reason, cause) = match e.list.as_str() {
                "block" => (format!("block entry added: {}", e.name), format!("block:{}:{}:{}", e.kind, e.digest, e.added_ms)),
                _ => (format!("allow entry removed: {}", e.name), format!("unallow:{}:{}", e.digest, e.added_ms)),
            };
            let sha256s = match e.kind.as_str() {
                "sha256" => vec![e.digest.clone()],
                kind => match self.store.call(|s| s.resolve(kind, &e.digest)).await {
                    Ok(v) => v,
                    Err(err) => {
                        warn!(error = %err, "notices: resolving a blocked digest failed");
                        continue;
                    }
                },
            };
            for sha in sha256s {
                match self.notify(Self::verdict_changed(&sha, &reason, ""), &cause, None).await {
                    Ok(0) => {}
                    Ok(n) => self.audit.event("notice", None, json!({"sha256": sha, "reason": reason, "agents": n})),
                    Err(err) => warn!(error = %err, sha256 = sha, "notices: a notice was not made"),
                }
            }
        }
    }

    /// Open a stream for the calling agent: notices made after `after_ms`
    /// first, then new ones as they come. `uploads`: the agent uploads what
    /// a hunt asks for; it is said present in the store (for hunts run by
    /// any coordinator) while its stream stays open.
    pub async fn subscribe(
        &self,
        caller: &Caller,
        after_ms: i64,
        uploads: bool,
    ) -> Result<mpsc::Receiver<pb::Notice>, CoreError> {
        caller.require(Op::AgentReport)?;
        if self.closing() {
            return Err(CoreError::Unavailable("the coordinator is shutting down".into()));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        // Registered first, so nothing made meanwhile falls between.
        self.subscribers().entry(caller.name.clone()).or_default().push(tx.clone());
        {
            let mut up = self.uploaders.lock().unwrap_or_else(|p| p.into_inner());
            if uploads {
                up.insert(caller.name.clone());
            } else {
                up.remove(&caller.name);
            }
        }
        self.store.put(&presence(&caller.name, uploads)).await?;
        if after_ms > 0 {
            for n in self.for_agent(&caller.name, after_ms).await? {
                let _ = tx.try_send(n);
            }
        }
        Ok(rx)
    }

    /// The notices for `agent` made after `after_ms` (check-in fallback).
    pub async fn for_agent(&self, agent: &str, after_ms: i64) -> Result<Vec<pb::Notice>, CoreError> {
        if after_ms <= 0 {
            return Ok(Vec::new());
        }
        let table = if self.version.load(Ordering::Relaxed) == u64::MAX {
            Arc::new(self.store.all::<pb::NoticeRecord>().await?)
        } else {
            self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
        };
        let mut out: Vec<pb::Notice> = table
            .iter()
            .filter(|r| r.agents.iter().any(|a| a == agent))
            .filter_map(|r| r.notice.clone())
            .filter(|n| n.at_ms > after_ms)
            .collect();
        out.sort_by_key(|n| n.at_ms);
        out.truncate(MAX_MISSED);
        if !out.is_empty() {
            // As in [`Notices::deliver`]: the change is in force here first.
            self.iocs.refresh().await;
        }
        Ok(out)
    }

    /// Send the notices in the store this coordinator has not sent to the
    /// agents connected here.
    async fn deliver(&self) {
        let Ok(version) = self.store.version::<pb::NoticeRecord>().await else { return };
        let first = self.version.load(Ordering::Relaxed) == u64::MAX;
        if version == self.version.load(Ordering::Relaxed) {
            return;
        }
        let records = match self.store.all::<pb::NoticeRecord>().await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "notices: reading them failed; trying again");
                return;
            }
        };
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(records.clone());
        self.version.store(version, Ordering::Relaxed);
        let fresh: Vec<pb::NoticeRecord> = {
            let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            let live: HashSet<String> = records.iter().filter_map(|r| r.notice.as_ref().map(|n| n.id.clone())).collect();
            sent.retain(|id| live.contains(id));
            records.into_iter().filter(|r| r.notice.as_ref().is_some_and(|n| sent.insert(n.id.clone()))).collect()
        };
        // At start, what is in the table was for streams of before: agents
        // reconnecting ask for what they missed.
        if first || fresh.is_empty() {
            return;
        }
        // An agent told now looks the content up here at once: this
        // coordinator's IOC lists must already have the change that made
        // the notice (another coordinator may have made it).
        self.iocs.refresh().await;
        let mut subs = self.subscribers();
        for r in fresh {
            let Some(notice) = r.notice else { continue };
            for agent in &r.agents {
                let Some(streams) = subs.get_mut(agent) else {
                    tracing::debug!(agent, id = notice.id, "notice for an agent not connected here");
                    continue;
                };
                tracing::debug!(agent, id = notice.id, streams = streams.len(), "notice sent");
                streams.retain(|tx| match tx.try_send(notice.clone()) {
                    Ok(()) => {
                        self.metrics.notices.inc();
                        true
                    }
                    // A full queue closes the stream: the agent reconnects
                    // and asks for what it missed.
                    Err(_) => false,
                });
            }
        }
        subs.retain(|_, v| !v.is_empty());
    }

    /// Say again which agents have a stream open here.
    async fn renew_presence(&self) {
        let agents: Vec<String> = self.subscribers().keys().cloned().collect();
        if agents.is_empty() {
            return;
        }
        let records: Vec<Presence> = {
            let mut up = self.uploaders.lock().unwrap_or_else(|p| p.into_inner());
            up.retain(|a| agents.contains(a));
            agents.iter().map(|a| presence(a, up.contains(a))).collect()
        };
        if let Err(e) = self.store.put_all(&records).await {
            warn!(error = %e, "notices: saying which agents are connected failed");
        }
    }

    /// Turn IOC changes into notices and send notices, until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut presence_at = std::time::Instant::now();
        loop {
            self.ioc_changes().await;
            self.deliver().await;
            // Streams whose agent went away.
            self.subscribers().retain(|_, v| {
                v.retain(|tx| !tx.is_closed());
                !v.is_empty()
            });
            if presence_at.elapsed() >= PRESENCE_EVERY {
                presence_at = std::time::Instant::now();
                self.renew_presence().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = self.made.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
