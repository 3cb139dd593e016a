//! A fixed pool of scan threads. Each thread keeps one engine (and so one
//! yara-x scanner) for the ruleset of the jobs it is given, and builds a new
//! one only when a job names another ruleset.

use qala_engine::{Engine, Hasher, Report, Ruleset};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

/// Stack of each scan thread (the default 2 MiB is tight for nested parsers).
const SCAN_STACK_BYTES: usize = 32 * 1024 * 1024;

/// One submission for a scan thread.
pub struct Job {
    pub ruleset: Arc<Ruleset>,
    pub data: Vec<u8>,
    pub name: String,
    pub reply: oneshot::Sender<Report>,
    /// Set when the caller stops waiting: the scan stops at its next object.
    pub cancel: Arc<AtomicBool>,
}

/// Cancels a job when the call waiting for it goes away (the coordinator's
/// deadline passed and the call was reset): dropped with the call's future.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Handle to the pool; dropping every handle stops the threads once the
/// queue is drained.
#[derive(Clone)]
pub struct ScanPool {
    tx: mpsc::Sender<Job>,
}

impl ScanPool {
    /// Start `threads` scan threads. The queue holds as many jobs as there
    /// are threads, so a busy worker pushes back on its callers.
    pub fn start(threads: usize) -> ScanPool {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("qala-scan-{i}"))
                // Parsers recurse on nested input; a stack overflow would
                // abort the worker, which catch_unwind cannot prevent.
                .stack_size(SCAN_STACK_BYTES)
                .spawn(move || scan_thread(rx))
                .expect("spawn scan thread");
        }
        ScanPool { tx }
    }

    /// Queue a job and wait for its report. Dropping the returned future
    /// (its call was cancelled) cancels the scan: it stops at its next object.
    pub async fn scan(&self, ruleset: Arc<Ruleset>, data: Vec<u8>, name: String) -> Option<Report> {
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { ruleset, data, name, reply, cancel }).await.ok()?;
        rx.await.ok()
    }
}

fn next_job(rx: &Mutex<mpsc::Receiver<Job>>) -> Option<Job> {
    // One thread waits inside the lock, the others wait for the lock.
    rx.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv()
}

fn scan_thread(rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut pending = next_job(&rx);
    while let Some(first) = pending.take() {
        let ruleset = first.ruleset.clone();
        // The scan policy comes with the rules: every worker judges alike.
        let mut engine = Engine::new(&ruleset, ruleset.limits.clone());
        let mut job = first;
        loop {
            let start = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| engine.scan_cancellable(&job.data, &job.name, job.cancel.clone())));
            let report = match outcome {
                Ok(r) => {
                    if job.cancel.load(Ordering::Relaxed) {
                        info!(
                            name = job.name,
                            objects = r.objects_scanned,
                            ms = start.elapsed().as_millis() as u64,
                            "scan cancelled: its caller stopped waiting"
                        );
                    }
                    r
                }
                Err(panic) => {
                    error!(name = job.name, "engine panicked; answering unscannable");
                    let _ = job.reply.send(panicked(&job.data, start, &panic));
                    // Rebuild the engine: its scanner may be in any state.
                    pending = next_job(&rx);
                    break;
                }
            };
            let _ = job.reply.send(report);
            match next_job(&rx) {
                Some(next) if next.ruleset.id == ruleset.id => job = next,
                other => {
                    if let Some(next) = &other {
                        info!(ruleset_id = next.ruleset.id, "scan thread switching ruleset");
                    }
                    pending = other;
                    break;
                }
            }
        }
    }
}

fn panicked(data: &[u8], start: Instant, panic: &Box<dyn std::any::Any + Send>) -> Report {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    let d = Hasher::digest(data);
    Report {
        sha256: d.sha256,
        blake3: d.blake3,
        size: data.len() as u64,
        file_type: qala_engine::FileType::detect(data).as_str(),
        verdict: None,
        detections: Vec::new(),
        executables: Vec::new(),
        limits_hit: Vec::new(),
        errors: vec![format!("engine panicked: {msg}")],
        encrypted: Vec::new(),
        object_meta: Vec::new(),
        objects_scanned: 0,
        bytes_scanned: 0,
        duration: start.elapsed(),
    }
}
