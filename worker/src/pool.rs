//! A fixed pool of scan threads. Each thread owns one sandboxed scan child
//! ([`crate::sandbox`]) with the ruleset of the jobs it is given, starts a
//! new one when a job names another ruleset, and replaces one that dies.

use crate::sandbox::{Failure, ScanChild, Settings, Shipped};
use qala_proto::v1 as pb;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// A child still busy this long after the policy's `max_scan_time` is
/// killed (the engine stops itself at the deadline; this is the backstop).
const GRACE: Duration = Duration::from_secs(30);

/// How many children one file may take down before it is given up on.
pub const CRASHES_ALLOWED: usize = 2;

/// One submission for a scan thread: a sealed memfd with its bytes.
pub struct Job {
    pub rules: Arc<Shipped>,
    pub file: File,
    pub reply: oneshot::Sender<Outcome>,
    /// Set when the caller stops waiting: the child is asked to stop.
    pub cancel: Arc<AtomicBool>,
}

/// What became of a job.
pub enum Outcome {
    Verdict(Box<pb::Verdict>),
    /// The file killed a child each time it was scanned, alone.
    Crashed(String),
    /// No child could be started, or the caller cancelled mid-crash.
    Failed(String),
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
    pub fn start(threads: usize, settings: Settings) -> ScanPool {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let settings = settings.clone();
            std::thread::Builder::new()
                .name(format!("qala-scan-{i}"))
                .spawn(move || scan_thread(rx, settings))
                .expect("spawn scan thread");
        }
        ScanPool { tx }
    }

    /// Queue a job and wait for its outcome. Dropping the returned future
    /// (its call was cancelled) cancels the scan.
    pub async fn scan(&self, rules: Arc<Shipped>, file: File) -> Option<Outcome> {
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { rules, file, reply, cancel }).await.ok()?;
        rx.await.ok()
    }
}

fn next_job(rx: &Mutex<mpsc::Receiver<Job>>) -> Option<Job> {
    // One thread waits inside the lock, the others wait for the lock.
    rx.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv()
}

fn scan_thread(rx: Arc<Mutex<mpsc::Receiver<Job>>>, settings: Settings) {
    let mut child: Option<ScanChild> = None;
    while let Some(job) = next_job(&rx) {
        let outcome = run(&mut child, &job, &settings);
        let _ = job.reply.send(outcome);
    }
}

/// Scan one job in this thread's child, replacing the child as needed. A
/// child scans one file at a time, so a file that kills one is retried
/// alone in a fresh child; after [`CRASHES_ALLOWED`] it is given up on.
fn run(slot: &mut Option<ScanChild>, job: &Job, settings: &Settings) -> Outcome {
    let deadline = job.rules.limits.max_scan_time + GRACE;
    let mut failures = Vec::new();
    while failures.len() < CRASHES_ALLOWED {
        if slot.as_ref().is_none_or(|c| c.ruleset_id != job.rules.id) {
            *slot = None;
            match ScanChild::spawn(&job.rules, settings) {
                Ok(c) => {
                    info!(ruleset_id = job.rules.id, confinement = c.confinement, "scan child started");
                    *slot = Some(c);
                }
                Err(e) => return Outcome::Failed(e.to_string()),
            }
        }
        let Some(child) = slot.as_mut() else { continue };
        let start = std::time::Instant::now();
        match child.scan(&job.file, deadline, &job.cancel) {
            Ok(verdict) => {
                if job.cancel.load(Ordering::Relaxed) {
                    info!(
                        objects = verdict.objects_scanned,
                        ms = start.elapsed().as_millis() as u64,
                        "scan cancelled: its caller stopped waiting"
                    );
                }
                return Outcome::Verdict(Box::new(verdict));
            }
            Err(failure) => {
                warn!(attempt = failures.len() + 1, "{failure}; replacing the scan child");
                *slot = None;
                if let Failure::Start(e) = failure {
                    return Outcome::Failed(e);
                }
                failures.push(failure.to_string());
                if job.cancel.load(Ordering::Relaxed) {
                    return Outcome::Failed("cancelled after the scan child died".into());
                }
            }
        }
    }
    Outcome::Crashed(failures.join("; then "))
}
