//! Real-time watch: files created, written and closed, or moved into the
//! watched paths are scanned once when they settle. Events from either
//! backend (on Linux inotify, `os::inotify`, or fanotify as root; elsewhere
//! the `notify` crate) go through one [`Debouncer`]: a path is sent on once
//! no event has touched it for the debounce period, however many writes it
//! took.

use crate::walk::Excludes;
#[cfg(not(target_os = "linux"))]
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
#[cfg(not(target_os = "linux"))]
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
                    // A path gone since (a temporary file) is not news, nor
                    // a link (never followed); a directory (moved in) is
                    // its files, listed without following a link.
                    let ex = excludes.clone();
                    let settled = tokio::task::spawn_blocking(move || files_of(settled, &ex)).await.unwrap_or_default();
                    if !settled.is_empty() && jobs.send(settled).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The files `paths` name: files as they are, directories by the regular
/// files below them (reached without following a link, excludes left
/// out); links and paths gone are dropped.
fn files_of(paths: Vec<PathBuf>, excludes: &Excludes) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in paths {
        match p.symlink_metadata() {
            Ok(m) if m.is_dir() => {
                files.extend(crate::os::files_below(&p, &|q| excludes.matches(q)).unwrap_or_default());
            }
            Ok(m) if !m.file_type().is_symlink() => files.push(p),
            _ => {}
        }
    }
    files
}

/// Which events mean "look at this path".
#[cfg(not(target_os = "linux"))]
fn wanted(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(CreateKind::File | CreateKind::Folder | CreateKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any)
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both | RenameMode::Any))
    )
}

/// Watch `paths` recursively with the `notify` crate (not on Linux, where
/// `os::inotify` never follows a link); events go to `tx`. The watcher
/// stops when the returned value is dropped.
#[cfg(not(target_os = "linux"))]
pub fn portable(paths: &[PathBuf], tx: mpsc::Sender<PathBuf>) -> notify::Result<notify::RecommendedWatcher> {
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = notify::RecommendedWatcher::new(
        move |res: notify::Result<notify::Event>| match res {
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
            Err(e) => tracing::warn!(error = %e, "watch: events lost"),
        },
        config,
    )?;
    for p in paths {
        watcher.watch(p, RecursiveMode::Recursive)?;
    }
    Ok(watcher)
}
