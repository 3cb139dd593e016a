//! Real-time watch: files created, written and closed, or moved into the
//! watched paths are scanned once when they settle. Events from either
//! backend (inotify through the `notify` crate, or fanotify as root) go
//! through one [`Debouncer`]: a path is sent on once no event has touched it
//! for the debounce period, however many writes it took.

use crate::walk::Excludes;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Paths from a backend, debounced, then sent to the pipeline as jobs.
pub struct Debouncer {
    pub quiet: Duration,
}

impl Debouncer {
    /// Run until `events` closes.
    pub async fn run(self, mut events: mpsc::Receiver<PathBuf>, excludes: Arc<Excludes>, jobs: mpsc::Sender<Vec<PathBuf>>) {
        let mut waiting: HashMap<PathBuf, Instant> = HashMap::new();
        let tick = (self.quiet / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let mut timer = tokio::time::interval(tick);
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Some(p) => {
                        if !excludes.matches(&p) {
                            waiting.insert(p, Instant::now());
                        }
                    }
                    None => return,
                },
                _ = timer.tick() => {
                    let now = Instant::now();
                    let settled: Vec<PathBuf> =
                        waiting.iter().filter(|(_, t)| now.duration_since(**t) >= self.quiet).map(|(p, _)| p.clone()).collect();
                    if settled.is_empty() {
                        continue;
                    }
                    for p in &settled {
                        waiting.remove(p);
                    }
                    // A path gone since (a temporary file) is not news.
                    let settled: Vec<PathBuf> = settled.into_iter().filter(|p| p.symlink_metadata().is_ok()).collect();
                    if !settled.is_empty() && jobs.send(settled).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Which inotify events mean "look at this path".
fn wanted(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(CreateKind::File | CreateKind::Folder | CreateKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any)
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both | RenameMode::Any))
    )
}

/// Watch `paths` recursively with inotify; events go to `tx`. The watcher
/// stops when the returned value is dropped.
pub fn inotify(paths: &[PathBuf], tx: mpsc::Sender<PathBuf>) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if wanted(&ev.kind) => {
            // Rename events carry (from, to): the last path is where it is now.
            let path = match ev.kind {
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => ev.paths.last().cloned(),
                _ => ev.paths.first().cloned(),
            };
            if let Some(p) = path {
                let _ = tx.blocking_send(p);
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "inotify: events lost (raise fs.inotify.max_queued_events?)"),
    })?;
    for p in paths {
        watcher.watch(p, RecursiveMode::Recursive)?;
    }
    Ok(watcher)
}
