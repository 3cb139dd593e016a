//! Hash IOC lists: block lists of sha256, sha1 and md5 (a listed file is
//! answered `malicious` without a scan, naming the list entry) and allow
//! lists of sha256 (a false-positive override: answered `clean`, with the
//! reason). md5 and sha1 collide too easily to whitelist anything.
//!
//! The lists live in the verdict store, shared by coordinators; each keeps
//! them in memory ([`lists`]) and reloads them when the store's version of
//! their table moves (checked every [`REFRESH`]). They are applied when a
//! verdict is read, against its stored digests, never stored with it and
//! never part of the ruleset id: changing a list never invalidates the cache.

pub mod import;
mod lists;

use crate::audit::Audit;
use crate::auth::{Caller, Op};
use crate::core::error::CoreError;
use crate::core::rate::PerClient;
use crate::store::Guarded;
use lists::Lists;
use qala_engine::DigestKinds;
use qala_proto::v1 as pb;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// How often the store's version of the IOC table is read.
pub const REFRESH: Duration = Duration::from_secs(2);
/// Entries listed per page by default, and at most.
pub const PAGE: usize = 1_000;
pub const MAX_PAGE: usize = 10_000;

/// One page of a listing.
pub struct Page {
    pub entries: Vec<pb::IocEntry>,
    /// The cursor of the next page; empty after the last.
    pub next: String,
    pub total: u64,
}

/// The IOC lists of the cluster: what this coordinator holds of them, and
/// their administration.
pub struct IocLists {
    lists: RwLock<Lists>,
    /// The store's version of the table when the lists were read; u64::MAX before that.
    version: AtomicU64,
    store: Arc<Guarded>,
    audit: Arc<Audit>,
    /// Writes (imports, removals) per token and minute.
    writes: PerClient,
    /// Block entries added and allow entries removed since the notices
    /// last took them ([`IocLists::take_worsened`]): the holders of those
    /// files are told.
    worsened: std::sync::Mutex<Vec<pb::IocEntry>>,
}

impl IocLists {
    pub fn new(store: Arc<Guarded>, audit: Arc<Audit>, writes_per_minute: u32) -> Self {
        let writes = PerClient::new("IOC list writes", writes_per_minute);
        Self {
            lists: RwLock::default(),
            version: AtomicU64::new(u64::MAX),
            store,
            audit,
            writes,
            worsened: std::sync::Mutex::default(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Lists> {
        self.lists.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries on each list (block, allow), for metrics.
    pub fn counts(&self) -> (usize, usize) {
        self.read().counts()
    }

    /// See [`Lists::object_kinds`].
    pub fn object_kinds(&self) -> DigestKinds {
        self.read().object_kinds()
    }

    /// See [`Lists::covers`].
    pub fn covers(&self, v: &pb::Verdict) -> bool {
        self.read().covers(v)
    }

    /// See [`Lists::apply`].
    pub fn apply(&self, v: &mut pb::Verdict) {
        self.read().apply(v)
    }

    /// See [`Lists::blocked_verdict`].
    pub fn blocked_verdict(&self, kind: &str, digest: &str, ruleset_id: &str) -> Option<pb::Verdict> {
        self.read().blocked_verdict(kind, digest, ruleset_id)
    }

    /// Read the lists again if the store's version of them moved.
    pub async fn refresh(&self) {
        let Ok(version) = self.store.version::<pb::IocEntry>().await else { return };
        if version == self.version.load(Ordering::Relaxed) {
            return;
        }
        match self.store.all::<pb::IocEntry>().await {
            Ok(entries) => {
                let new = Lists::new(entries);
                let mut lists = self.lists.write().unwrap_or_else(|p| p.into_inner());
                // The first read is where this coordinator starts, not a change.
                if self.version.load(Ordering::Relaxed) != u64::MAX {
                    let worse = new.worsened_since(&lists);
                    if !worse.is_empty() {
                        let mut pending = self.worsened.lock().unwrap_or_else(|p| p.into_inner());
                        // Bounded: a huge import is told in its first 100,000.
                        let room = 100_000usize.saturating_sub(pending.len());
                        pending.extend(worse.into_iter().take(room));
                    }
                }
                *lists = new;
                self.version.store(version, Ordering::Relaxed);
            }
            Err(e) => warn!(error = %e, "IOC lists: reading them failed; keeping the lists in force"),
        }
    }

    /// Block entries added and allow entries removed since the last call.
    pub fn take_worsened(&self) -> Vec<pb::IocEntry> {
        std::mem::take(&mut *self.worsened.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Keep the lists fresh until `stop`.
    pub async fn keep_fresh(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            self.refresh().await;
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One page of the lists in force, in (list, kind, digest) order: the
    /// entries after the cursor `after` (`list:kind:digest`, empty: from the
    /// start), at most `limit` (0: [`PAGE`]; at most [`MAX_PAGE`]).
    pub async fn list(&self, caller: &Caller, after: &str, limit: usize) -> Result<Page, CoreError> {
        caller.require(Op::GetVerdict)?;
        let limit = if limit == 0 { PAGE } else { limit.min(MAX_PAGE) };
        let cursor = if after.is_empty() {
            None
        } else {
            let mut parts = after.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(l), Some(k), Some(d)) => Some((l, k, d)),
                _ => return Err(CoreError::Invalid(format!("cursor {after:?}: expected list:kind:digest"))),
            }
        };
        // What this coordinator or another just changed shows at once.
        self.refresh().await;
        let lists = self.read();
        let (entries, more) = lists.page(cursor, limit);
        let next = match entries.last() {
            Some(e) if more => format!("{}:{}:{}", e.list, e.kind, e.digest),
            _ => String::new(),
        };
        Ok(Page { entries, next, total: lists.len() as u64 })
    }

    /// Import `text` (see [`import::parse`]) into `list`; how many entries.
    pub async fn add(&self, caller: &Caller, list: &str, text: &str, via: &str) -> Result<usize, CoreError> {
        caller.require(Op::Admin)?;
        self.writes.take(&caller.name, 1)?;
        let entries = import::parse(list, text, &caller.name, qala_common::now_ms()).map_err(CoreError::Invalid)?;
        self.store.put_all(&entries).await?;
        self.audit.event(
            "admin",
            Some(caller),
            json!({"action": "ioc_added", "list": list, "entries": entries.len(), "via": via}),
        );
        self.refresh().await;
        Ok(entries.len())
    }

    pub async fn remove(&self, caller: &Caller, list: &str, kind: &str, digest: &str) -> Result<bool, CoreError> {
        caller.require(Op::Admin)?;
        self.writes.take(&caller.name, 1)?;
        let removed = self.store.delete::<pb::IocEntry>(&crate::store::records::ioc_key(list, kind, digest)).await?;
        self.audit.event(
            "admin",
            Some(caller),
            json!({"action": "ioc_removed", "list": list, "kind": kind, "digest": digest, "removed": removed}),
        );
        self.refresh().await;
        Ok(removed)
    }
}
