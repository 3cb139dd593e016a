//! The service's one path from "this file should be looked at" to a verdict
//! and an action: walk (exclusions, hash cache), `Lookup` in batches,
//! upload what the cluster does not know, act per verdict level. While the
//! coordinator is unreachable, files go to the offline spool instead; the
//! drain sends them once it answers again, and each file is answered once.

use super::events::Events;
use super::spool::{Entry, Spool};
use crate::client::{Client, retryable};
use crate::config::{Action, ActionsConfig};
use crate::held::HeldIndex;
use crate::os::FileStamp;
use crate::output::kind;
use crate::quarantine::Quarantine;
use crate::walk::{Excludes, Found, WalkOptions, WalkStats, hash_file, walk};
use qala_common::now_ms;
use qala_proto::VerdictKind;
use qala_proto::v1 as pb;
use rand::Rng;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

const BATCH: usize = 512;

/// Verdicts the service has seen, by sha256: what on-access decisions are
/// answered from first. Bounded (emptied when full); an entry holds for
/// [`MEMO_TTL`], so new rules are asked about soon after they load.
#[derive(Default)]
pub struct Memo {
    map: Mutex<HashMap<String, Remembered>>,
}

/// A verdict's level and rule names, and when it was seen.
type Remembered = (VerdictKind, Vec<String>, std::time::Instant);

const MEMO_MAX: usize = 200_000;
const MEMO_TTL: Duration = Duration::from_secs(600);

impl Memo {
    pub fn get(&self, sha256: &str) -> Option<(VerdictKind, Vec<String>)> {
        let m = self.map.lock().expect("memo lock");
        let (k, rules, at) = m.get(sha256)?;
        (at.elapsed() < MEMO_TTL).then(|| (*k, rules.clone()))
    }

    pub fn put(&self, sha256: &str, v: &pb::Verdict) {
        let mut m = self.map.lock().expect("memo lock");
        if m.len() >= MEMO_MAX {
            m.clear();
        }
        m.insert(sha256.to_string(), (kind(v), rule_names(v), std::time::Instant::now()));
    }
}

pub fn rule_names(v: &pb::Verdict) -> Vec<String> {
    v.detections.iter().map(|d| format!("{}.{}", d.namespace, d.rule)).collect()
}

pub fn kind_label(k: VerdictKind) -> &'static str {
    match k {
        VerdictKind::Clean => "clean",
        VerdictKind::Malicious => "malicious",
        VerdictKind::Suspicious => "suspicious",
        VerdictKind::Unscannable => "unscannable",
        VerdictKind::Unspecified => "unknown",
    }
}

pub struct Pipeline {
    pub client: Client,
    pub events: Events,
    pub spool: Arc<Spool>,
    pub memo: Arc<Memo>,
    pub quarantine: Option<Quarantine>,
    pub actions: ActionsConfig,
    pub walk: WalkOptions,
    pub excludes: Arc<Excludes>,
    pub private: Excludes,
    pub lookup_only: bool,
    pub agent_id: String,
    pub concurrency: usize,
    /// False once a call found the coordinator unreachable, until the
    /// spool drain gets an answer again.
    pub online: AtomicBool,
    /// When the hash cache was last written.
    pub cache_saved: Mutex<std::time::Instant>,
    /// Which paths hold which content (notices find files through it).
    pub held: Option<Arc<HeldIndex>>,
    /// Whether the coordinator records this agent's sightings (then
    /// contents no longer held are reported gone).
    pub sightings: bool,
    /// Contents no longer held, not reported yet.
    pub gone: Mutex<HashSet<String>>,
}

/// Gone contents held for reporting at most (while the coordinator does not answer).
const GONE_MAX: usize = 100_000;

const CACHE_SAVE_EVERY: Duration = Duration::from_secs(60);

struct File {
    path: PathBuf,
    sha256: String,
    size: u64,
}

fn unreachable(s: &tonic::Status) -> bool {
    retryable(s)
}

fn entry_for(path: &Path, sha256: &str, size: u64) -> Entry {
    let m = path.symlink_metadata().and_then(|m| FileStamp::at(path, &m)).unwrap_or_default();
    Entry {
        sha256: sha256.to_string(),
        size,
        dev: m.dev,
        ino: m.ino,
        mtime_ns: m.mtime_ns,
        ctime_ns: m.ctime_ns,
        spooled_ms: now_ms(),
    }
}

impl Pipeline {
    /// Take jobs (paths: files or directories) until the channel closes or
    /// `stop` is set (the job in progress is finished first).
    pub async fn run(self: Arc<Self>, mut jobs: mpsc::Receiver<Vec<PathBuf>>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let mut paths = tokio::select! {
                j = jobs.recv() => match j { Some(p) => p, None => return },
                _ = stop.changed() => return,
            };
            // Jobs that queued meanwhile go in the same walk.
            while let Ok(more) = jobs.try_recv() {
                paths.extend(more);
                if paths.len() >= BATCH {
                    break;
                }
            }
            paths.sort();
            paths.dedup();
            self.process(paths).await;
        }
    }

    /// `path` holds `sha256` now (answered).
    fn held_record(&self, path: &Path, sha256: &str) {
        if let Some(h) = &self.held {
            let gone = h.record(path, sha256);
            let mut g = self.gone.lock().expect("gone lock");
            g.remove(sha256);
            if g.len() < GONE_MAX {
                g.extend(gone);
            }
        }
    }

    /// Nothing is at `path` any more (deleted, quarantined, moved away).
    fn held_remove(&self, path: &Path) {
        if let Some(h) = &self.held
            && let Some(sha) = h.remove(path)
        {
            let mut g = self.gone.lock().expect("gone lock");
            if g.len() < GONE_MAX {
                g.insert(sha);
            }
        }
    }

    /// Tell the coordinator which contents this machine no longer holds.
    pub async fn report_gone(&self) {
        let gone: Vec<String> = std::mem::take(&mut *self.gone.lock().expect("gone lock")).into_iter().collect();
        if gone.is_empty() || !self.sightings {
            return;
        }
        for chunk in gone.chunks(5000) {
            if let Err(e) = self.client.gone(chunk.to_vec()).await {
                tracing::info!(error = %e.message(), "gone contents not reported; trying again later");
                let mut g = self.gone.lock().expect("gone lock");
                let room = GONE_MAX.saturating_sub(g.len());
                g.extend(chunk.iter().take(room).cloned());
            }
        }
    }

    /// Save the held index (at most once a minute while running, and at stop).
    pub fn save_held(&self) {
        if let Some(h) = &self.held
            && let Err(e) = h.save()
        {
            tracing::warn!(error = %e, "held index not saved");
        }
    }

    /// Walk and hash `paths`, then answer every file found.
    pub async fn process(&self, paths: Vec<PathBuf>) {
        let (tx, mut rx) = mpsc::channel::<Found>(4096);
        let (opts, excludes) = (self.walk.clone(), self.excludes.clone());
        let roots = paths.clone();
        let walker = tokio::task::spawn_blocking(move || walk(&paths, &opts, excludes, Arc::new(WalkStats::default()), tx));
        let mut batch = Vec::new();
        // Every path the walk met: an indexed path under the roots that it
        // did not meet may be gone.
        let mut met: HashSet<PathBuf> = HashSet::new();
        let track = self.held.as_ref().is_some_and(|h| !h.is_empty());
        loop {
            let next = rx.recv().await;
            let done = next.is_none();
            if track && let Some(Found::File { path, .. } | Found::Error { path, .. } | Found::Skipped { path, .. }) = &next {
                met.insert(path.clone());
            }
            match next {
                Some(Found::File { path, sha256, size }) => batch.push(File { path, sha256, size }),
                // A file gone before it settled is no news.
                Some(Found::Error { path, error }) if path.symlink_metadata().is_ok() => {
                    self.events.emit("error", Some(&path), json!({"error": error}));
                }
                Some(Found::Error { .. }) => {}
                Some(Found::Skipped { path, reason }) => self.events.emit("skipped", Some(&path), json!({"reason": reason})),
                None => {}
            }
            if batch.len() >= BATCH || (done && !batch.is_empty()) {
                self.answer(std::mem::take(&mut batch), false).await;
            }
            if done {
                break;
            }
        }
        let _ = walker.await;
        if track && let Some(h) = &self.held {
            for p in h.missing_under(&roots, &met) {
                // Excluded or unreadable now is still held; only what is no
                // longer a file there is gone.
                if !p.symlink_metadata().is_ok_and(|m| m.is_file()) {
                    self.held_remove(&p);
                }
            }
        }
        self.report_gone().await;
        // The cache file is rewritten whole: at most once a minute (and at
        // stop), not after every file the watch sends.
        let due = {
            let mut last = self.cache_saved.lock().expect("cache_saved lock");
            let due = last.elapsed() >= CACHE_SAVE_EVERY;
            if due {
                *last = std::time::Instant::now();
            }
            due
        };
        if due {
            if let Some(c) = &self.walk.cache
                && let Err(e) = c.save()
            {
                tracing::warn!(error = %e, "hash cache not saved");
            }
            self.save_held();
        }
    }

    fn spool(&self, files: Vec<File>, why: &str, quiet: bool) {
        if files.is_empty() {
            return;
        }
        let items: Vec<(PathBuf, Entry)> =
            files.iter().map(|f| (f.path.clone(), entry_for(&f.path, &f.sha256, f.size))).collect();
        match self.spool.add(items) {
            Ok(refused) => {
                for f in &files {
                    if refused.contains(&f.path) {
                        self.events.emit("error", Some(&f.path), json!({"error": "offline spool full: not queued"}));
                    } else if !quiet {
                        self.events.emit("spooled", Some(&f.path), json!({"sha256": f.sha256, "reason": why}));
                    }
                }
            }
            Err(e) => {
                for f in &files {
                    self.events.emit("error", Some(&f.path), json!({"error": format!("offline spool not written: {e}")}));
                }
            }
        }
    }

    /// Look up, upload the unknown, act. Returns the files answered (path,
    /// sha256), for the spool drain.
    /// `respool`: the files come from the spool (no new `spooled` lines).
    async fn answer(&self, files: Vec<File>, respool: bool) -> Vec<(PathBuf, String)> {
        if !self.online.load(Ordering::Relaxed) {
            self.spool(files, "coordinator unreachable", respool);
            return Vec::new();
        }
        let mut digests: Vec<String> = files.iter().map(|f| f.sha256.clone()).collect();
        digests.sort();
        digests.dedup();
        let known: HashMap<String, pb::Verdict> = match self.client.lookup_all(digests, true).await {
            Ok(r) => r.verdicts.into_iter().map(|v| (v.sha256.clone(), v)).collect(),
            Err(e) if unreachable(&e) => {
                tracing::warn!(error = %e.message(), "coordinator unreachable: spooling");
                self.online.store(false, Ordering::Relaxed);
                self.spool(files, "coordinator unreachable", respool);
                return Vec::new();
            }
            Err(e) => {
                for f in &files {
                    self.events.emit("error", Some(&f.path), json!({"error": format!("lookup failed: {}", e.message())}));
                }
                return Vec::new();
            }
        };
        let mut answered = Vec::new();
        let mut uploads: HashMap<String, Vec<File>> = HashMap::new();
        for f in files {
            if let Some(v) = known.get(&f.sha256) {
                self.verdict(&f.path, &f.sha256, v, true);
                answered.push((f.path, f.sha256));
            } else if self.lookup_only || self.private.matches(&f.path) {
                self.events.emit("unknown", Some(&f.path), json!({"sha256": f.sha256, "reason": "not uploaded (privacy)"}));
                self.held_record(&f.path, &f.sha256);
                answered.push((f.path, f.sha256));
            } else {
                uploads.entry(f.sha256.clone()).or_default().push(f);
            }
        }
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut tasks = Vec::new();
        for (sha, group) in uploads {
            let (client, permits, agent) = (self.client.clone(), permits.clone(), self.agent_id.clone());
            tasks.push(tokio::spawn(async move {
                let _p = permits.acquire_owned().await;
                let first = &group[0];
                let r = client.upload(&first.path, &sha, first.size, &agent, true).await;
                let r = match r {
                    Err(s) if s.code() == tonic::Code::InvalidArgument => {
                        // Changed since it was hashed: hash again, send once more.
                        let p = first.path.clone();
                        match tokio::task::spawn_blocking(move || hash_file(&p)).await {
                            Ok(Ok((new_sha, new_size))) if new_sha != sha => {
                                client.upload(&first.path, &new_sha, new_size, &agent, true).await
                            }
                            _ => Err(s),
                        }
                    }
                    other => other,
                };
                (sha, group, r)
            }));
        }
        let mut offline = Vec::new();
        for t in tasks {
            let Ok((sha, group, r)) = t.await else { continue };
            match r {
                Ok(up) => match up.response.verdict {
                    Some(v) => {
                        for f in group {
                            self.verdict(&f.path, &f.sha256, &v, up.response.cached);
                            answered.push((f.path, sha.clone()));
                        }
                    }
                    None => {
                        for f in group {
                            self.events.emit("error", Some(&f.path), json!({"error": "coordinator sent no verdict"}));
                        }
                    }
                },
                Err(e) if unreachable(&e) => {
                    self.online.store(false, Ordering::Relaxed);
                    offline.extend(group);
                }
                Err(e) => {
                    for f in group {
                        self.events.emit("error", Some(&f.path), json!({"error": format!("upload failed: {}", e.message())}));
                        answered.push((f.path, sha.clone()));
                    }
                }
            }
        }
        self.spool(offline, "coordinator unreachable", respool);
        answered
    }

    /// One verdict for one file: the event line, then the action.
    fn verdict(&self, path: &Path, sha256: &str, v: &pb::Verdict, cached: bool) {
        self.memo.put(sha256, v);
        self.held_record(path, sha256);
        let k = kind(v);
        let rules = rule_names(v);
        self.events.emit(
            "verdict",
            Some(path),
            json!({"sha256": sha256, "verdict": kind_label(k), "rules": rules, "cached": cached, "ruleset_id": v.ruleset_id}),
        );
        let action = match k {
            VerdictKind::Malicious => self.actions.malicious,
            VerdictKind::Suspicious => self.actions.suspicious,
            _ => return,
        };
        let label = kind_label(k);
        match action {
            Action::Report => {}
            Action::Quarantine => match self.quarantine.as_ref().map(|q| q.add(path, sha256, label, &rules)) {
                Some(Ok(r)) => {
                    self.held_remove(path);
                    self.events.action("quarantine", path, sha256, label, &rules, &r.id)
                }
                Some(Err(e)) => self.events.action("quarantine_failed", path, sha256, label, &rules, &e.to_string()),
                None => self.events.action("quarantine_failed", path, sha256, label, &rules, "no quarantine directory"),
            },
            Action::Delete => match delete_if_same(path, sha256) {
                Ok(()) => {
                    self.held_remove(path);
                    self.events.action("delete", path, sha256, label, &rules, "")
                }
                Err(e) => self.events.action("delete_failed", path, sha256, label, &rules, &e),
            },
        }
    }

    /// Send what the spool holds, with jittered backoff while the
    /// coordinator does not answer; forever, until `stop`.
    pub async fn drain(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut delay = Duration::from_millis(500);
        loop {
            let wait = if self.spool.is_empty() {
                Duration::from_millis(500)
            } else {
                let before = self.online.load(Ordering::Relaxed);
                let items = self.spool.peek(BATCH);
                // A file changed (or gone) since it was spooled is hashed again.
                let mut files = Vec::new();
                let mut gone = Vec::new();
                for (path, e) in items {
                    match path.symlink_metadata() {
                        Ok(m) if m.is_file() => {
                            let same = entry_for(&path, &e.sha256, e.size);
                            if same.dev == e.dev
                                && same.ino == e.ino
                                && same.mtime_ns == e.mtime_ns
                                && same.ctime_ns == e.ctime_ns
                            {
                                files.push(File { path, sha256: e.sha256, size: e.size });
                            } else {
                                let p = path.clone();
                                match tokio::task::spawn_blocking(move || hash_file(&p)).await {
                                    Ok(Ok((sha256, size))) => {
                                        // The entry now names the new content (replaced in place).
                                        let _ = self.spool.add(vec![(path.clone(), entry_for(&path, &sha256, size))]);
                                        files.push(File { path, sha256, size });
                                    }
                                    _ => gone.push((path, e.sha256)),
                                }
                            }
                        }
                        _ => {
                            self.events.emit(
                                "gone",
                                Some(&path),
                                json!({"sha256": e.sha256, "reason": "removed before it was answered"}),
                            );
                            gone.push((path, e.sha256));
                        }
                    }
                }
                let _ = self.spool.remove(&gone);
                // Probe: try as if online; an unreachable coordinator puts
                // the files back (the same entries) and backs off.
                self.online.store(true, Ordering::Relaxed);
                let answered = self.answer(files, true).await;
                if let Err(e) = self.spool.remove(&answered) {
                    tracing::warn!(error = %e, "spool not written");
                }
                if self.online.load(Ordering::Relaxed) {
                    if !before {
                        tracing::info!("coordinator reachable again: spool draining");
                    }
                    delay = Duration::from_millis(500);
                    Duration::ZERO
                } else {
                    let jitter = rand::rng().random_range(0..=delay.as_millis() as u64 / 2);
                    let d = delay + Duration::from_millis(jitter);
                    delay = (delay * 2).min(Duration::from_secs(60));
                    d
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// Delete `path` only if it still holds the content that was scanned.
fn delete_if_same(path: &Path, sha256: &str) -> Result<(), String> {
    let (f, m) = crate::os::open_regular(path).map_err(|e| e.to_string())?;
    let stamp = FileStamp::open(&f, &m).map_err(|e| e.to_string())?;
    let (now, _) = crate::walk::hash_reader(f, None).map_err(|e| e.to_string())?;
    if now != sha256 {
        return Err(format!("changed since it was scanned (sha256 {now}): not deleted"));
    }
    // Unlinked in its directory reached without links, if still this inode.
    crate::os::remove_same(path, &stamp).map_err(|e| e.to_string())
}
