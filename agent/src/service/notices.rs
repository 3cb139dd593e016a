//! Notices from the coordinator about contents this machine holds: "its
//! verdict changed" (a block entry added, an allow entry removed, a rescan
//! under new rules). The service keeps one long-lived stream open
//! ([`Listener::run`], reconnecting with jittered backoff, to whichever
//! coordinator answers at the server address) and takes what a broken
//! stream missed from each check-in. A notice carries a sha256 and why,
//! never a verdict: the paths the held index names for it are walked again
//! (hashed again if changed, through the hash cache), looked up, and acted
//! on by the action policy, as any watch event is; each action is
//! reported as usual.
//!
//! A hunt's "upload" notice asks this machine for a content the
//! coordinator wants to scan under new rules: the paths the held index
//! names for it that are not private, hashed again, go through the
//! ordinary pipeline (a lookup first, then the upload if the verdict is
//! still unknown) only if they still hold that content; otherwise, or on
//! a lookup-only agent, the agent declines (a `hunt_declined` action), so
//! the hunt asks another holder.

use super::events::Events;
use crate::client::Client;
use crate::held::HeldIndex;
use crate::walk::Excludes;
use qala_proto::v1 as pb;
use rand::Rng;
use serde_json::json;
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Notice ids remembered (so a notice from the stream and again from a
/// check-in is acted on once).
const SEEN: usize = 10_000;
/// How far back the first stream asks (the coordinator keeps a day).
const FIRST_LOOK_BACK_MS: i64 = 86_400_000;

pub struct Listener {
    pub client: Client,
    pub held: Arc<HeldIndex>,
    pub jobs: mpsc::Sender<Vec<PathBuf>>,
    pub events: Events,
    /// Whether it uploads what a hunt asks for (not lookup-only), and the
    /// private paths it never uploads from.
    uploads: bool,
    private: Excludes,
    /// The newest notice's time: a reconnect or check-in asks for what
    /// came after.
    after_ms: AtomicI64,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Listener {
    pub fn new(
        client: Client,
        held: Arc<HeldIndex>,
        jobs: mpsc::Sender<Vec<PathBuf>>,
        events: Events,
        uploads: bool,
        private: Excludes,
    ) -> Self {
        Self {
            client,
            held,
            jobs,
            events,
            uploads,
            private,
            after_ms: AtomicI64::new(qala_common::now_ms() - FIRST_LOOK_BACK_MS),
            seen: Mutex::default(),
        }
    }

    /// Notices after this time are the ones not had yet.
    pub fn after_ms(&self) -> i64 {
        self.after_ms.load(Ordering::Relaxed)
    }

    /// Whether `id` is new (and remember it).
    fn first_time(&self, id: &str) -> bool {
        let mut g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !g.0.insert(id.to_string()) {
            return false;
        }
        g.1.push_back(id.to_string());
        if g.1.len() > SEEN
            && let Some(old) = g.1.pop_front()
        {
            g.0.remove(&old);
        }
        true
    }

    /// Act on one notice (once per id).
    pub async fn handle(&self, n: pb::Notice) {
        self.after_ms.fetch_max(n.at_ms - 1, Ordering::Relaxed);
        if !self.first_time(&n.id) {
            return;
        }
        match n.kind.as_str() {
            "verdict" => {
                let paths = self.held.paths_of(&n.sha256);
                self.events.emit(
                    "notice",
                    None,
                    json!({"sha256": n.sha256, "kind": n.kind, "reason": n.reason, "paths": paths.len()}),
                );
                if !paths.is_empty() {
                    let _ = self.jobs.send(paths).await;
                }
            }
            "upload" if n.what_if => match self.uploadable(&n.sha256).await {
                Ok(paths) => self.what_if(&n, &paths[0]).await,
                Err(why) => self.decline(&n, why).await,
            },
            "upload" => match self.uploadable(&n.sha256).await {
                Ok(paths) => {
                    self.events.emit("hunt_upload", None, json!({"sha256": n.sha256, "hunt": n.hunt_id, "paths": paths.len()}));
                    let _ = self.jobs.send(paths).await;
                }
                Err(why) => self.decline(&n, why).await,
            },
            other => tracing::debug!(kind = other, "notice of a kind this agent does not handle"),
        }
    }

    /// Tell the coordinator this agent will not upload what a hunt asked for.
    async fn decline(&self, n: &pb::Notice, why: &str) {
        self.events.emit("hunt_declined", None, json!({"sha256": n.sha256, "hunt": n.hunt_id, "reason": why}));
        let declined = pb::AgentAction {
            action: "hunt_declined".into(),
            sha256: n.sha256.clone(),
            at_ms: qala_common::now_ms(),
            detail: format!("{}: {why}", n.hunt_id),
            ..Default::default()
        };
        if let Err(e) = self.client.report_actions(vec![declined]).await {
            tracing::warn!(error = %e.message(), "declining a hunt's upload: the report failed");
        }
    }

    /// Upload `path` for a what-if hunt: scanned with its rules only; what
    /// it finds is logged, never acted on (no verdict changed).
    async fn what_if(&self, n: &pb::Notice, path: &std::path::Path) {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        match self.client.upload_for_hunt(path, &n.sha256, size, &n.hunt_id).await {
            Ok(up) => {
                let verdict = up.response.verdict.as_ref().map(|v| qala_proto::VerdictKind::of(v).label()).unwrap_or("none");
                self.events.emit(
                    "hunt_upload",
                    None,
                    json!({"sha256": n.sha256, "hunt": n.hunt_id, "what_if": true, "verdict": verdict}),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e.message(), hunt = n.hunt_id, "a what-if hunt's upload failed");
                self.decline(n, "the upload failed").await;
            }
        }
    }

    /// The paths a hunt's upload of `sha256` may come from: held here, not
    /// private, and still that content; or why there are none.
    async fn uploadable(&self, sha256: &str) -> Result<Vec<PathBuf>, &'static str> {
        if !self.uploads {
            return Err("lookup-only agent");
        }
        let held = self.held.paths_of(sha256);
        if held.is_empty() {
            return Err("not held here");
        }
        let open: Vec<PathBuf> = held.into_iter().filter(|p| !self.private.matches(p)).collect();
        if open.is_empty() {
            return Err("held only on private paths");
        }
        let want = sha256.to_string();
        let same = tokio::task::spawn_blocking(move || {
            open.into_iter().filter(|p| crate::walk::hash_file(p).is_ok_and(|(h, _)| h == want)).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        if same.is_empty() {
            return Err("the file changed or is gone");
        }
        Ok(same)
    }

    /// Keep a notice stream open until `stop`, reconnecting with backoff.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut delay = Duration::from_millis(500);
        loop {
            let opened = tokio::select! {
                r = self.client.notices(self.after_ms(), self.uploads) => r,
                _ = stop.changed() => return,
            };
            match opened {
                Ok(mut stream) => {
                    tracing::info!("notice stream open");
                    delay = Duration::from_millis(500);
                    loop {
                        let next = tokio::select! {
                            m = stream.message() => m,
                            _ = stop.changed() => return,
                        };
                        match next {
                            Ok(Some(n)) => self.handle(n).await,
                            Ok(None) => break,
                            Err(e) => {
                                tracing::info!(error = %e.message(), "notice stream ended");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::info!(error = %e.message(), "notice stream not open"),
            }
            let jitter = rand::rng().random_range(0..=delay.as_millis() as u64 / 2);
            tokio::select! {
                _ = tokio::time::sleep(delay + Duration::from_millis(jitter)) => {}
                _ = stop.changed() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }
}
