//! A fixed pool of scan threads. Each thread owns one sandboxed scan child
//! ([`crate::sandbox`]) with the ruleset of the jobs it is given, starts a
//! new one when a job names another ruleset, and replaces one that dies.
//! When a worker loads new rules, idle threads start their children with
//! them at once ([`ScanPool::warm`]): loading a ruleset JIT-compiles it
//! (a third of a core-second for the ReversingLabs set), which then happens
//! before the first file, not in its scan.

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
    /// Verified by the coordinator: the child does not hash it again.
    pub sha256: String,
    /// The worker hashes the root itself: the child does not at all.
    pub unhashed: bool,
    /// Digests of nested objects computed besides sha256.
    pub kinds: qala_engine::DigestKinds,
    pub reply: oneshot::Sender<Outcome>,
    /// Set when the caller stops waiting: the child is asked to stop.
    pub cancel: Arc<AtomicBool>,
    /// If given, set once the file is scanned and no child holds it (a
    /// descriptor or a map): the worker may then write a later upload into
    /// it. Children that died are gone, and the one that answered is
    /// asked `/proc`.
    pub released: Option<Arc<AtomicBool>>,
}

/// What a scan thread is given.
enum Task {
    Scan(Job),
    /// Have a child with these rules ready (start one unless it is there).
    Warm {
        rules: Arc<Shipped>,
        reply: oneshot::Sender<Result<(), String>>,
    },
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
pub(crate) struct CancelOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Handle to the pool; dropping every handle stops the threads once the
/// queue is drained.
#[derive(Clone)]
pub struct ScanPool {
    tx: mpsc::Sender<Task>,
    threads: usize,
}

impl ScanPool {
    /// Start `threads` scan threads. The queue holds as many jobs as there
    /// are threads, so a busy worker pushes back on its callers.
    pub fn start(threads: usize, settings: Settings) -> ScanPool {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Task>(threads);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let settings = settings.clone();
            std::thread::Builder::new()
                .name(format!("qala-scan-{i}"))
                .spawn(move || scan_thread(rx, settings))
                .expect("spawn scan thread");
        }
        ScanPool { tx, threads }
    }

    /// Have every idle thread's child load `rules` now, and wait for them:
    /// one warm-up per thread is queued; a thread busy scanning takes none
    /// (another may take two: the second finds its child ready), and starts
    /// its child when its next file comes, as without warming. Returns how
    /// many children came up, or the first start failure if none did.
    pub async fn warm(&self, rules: Arc<Shipped>) -> Result<usize, String> {
        let mut replies = Vec::new();
        for _ in 0..self.threads {
            let (reply, rx) = oneshot::channel();
            if self.tx.try_send(Task::Warm { rules: rules.clone(), reply }).is_err() {
                break; // the queue is full of files: those threads are busy
            }
            replies.push(rx);
        }
        let (mut ready, mut failure) = (0, None);
        for rx in replies {
            match rx.await {
                Ok(Ok(())) => ready += 1,
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some("the pool is shutting down".to_string())),
            }
        }
        match failure {
            Some(e) if ready == 0 => Err(e),
            _ => Ok(ready),
        }
    }

    /// Queue a job and wait for its outcome. Dropping the returned future
    /// (its call was cancelled) cancels the scan.
    pub async fn scan(
        &self,
        rules: Arc<Shipped>,
        file: File,
        sha256: String,
        unhashed: bool,
        kinds: qala_engine::DigestKinds,
        released: Option<Arc<AtomicBool>>,
    ) -> Option<Outcome> {
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let (reply, rx) = oneshot::channel();
        self.tx.send(Task::Scan(Job { rules, file, sha256, unhashed, kinds, reply, cancel, released })).await.ok()?;
        rx.await.ok()
    }
}

fn next_task(rx: &Mutex<mpsc::Receiver<Task>>) -> Option<Task> {
    // One thread waits inside the lock, the others wait for the lock.
    rx.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv()
}

fn scan_thread(rx: Arc<Mutex<mpsc::Receiver<Task>>>, settings: Settings) {
    let mut child: Option<ScanChild> = None;
    while let Some(task) = next_task(&rx) {
        match task {
            Task::Scan(job) => {
                let outcome = run(&mut child, &job, &settings);
                let _ = job.reply.send(outcome);
            }
            Task::Warm { rules, reply } => {
                let _ = reply.send(ensure_child(&mut child, &rules, &settings).map_err(|f| f.to_string()));
            }
        }
    }
}

/// Have a child with `rules` in `slot`, starting one if needed.
fn ensure_child(slot: &mut Option<ScanChild>, rules: &Shipped, settings: &Settings) -> Result<(), Failure> {
    if slot.as_ref().is_none_or(|c| c.ruleset_id != rules.id) {
        *slot = None;
        let c = ScanChild::spawn(rules, settings)?;
        info!(ruleset_id = rules.id, confinement = c.confinement, "scan child started");
        *slot = Some(c);
    }
    Ok(())
}

/// Scan one job in this thread's child, replacing the child as needed. A
/// child scans one file at a time, so a file that kills one is retried
/// alone in a fresh child; after [`CRASHES_ALLOWED`] it is given up on.
fn run(slot: &mut Option<ScanChild>, job: &Job, settings: &Settings) -> Outcome {
    let deadline = job.rules.limits.max_scan_time + GRACE;
    let mut failures = Vec::new();
    while failures.len() < CRASHES_ALLOWED {
        if let Err(e) = ensure_child(slot, &job.rules, settings) {
            return Outcome::Failed(e.to_string());
        }
        let Some(child) = slot.as_mut() else { continue };
        let start = std::time::Instant::now();
        match child.scan(&job.file, &job.sha256, job.unhashed, job.kinds, deadline, &job.cancel) {
            Ok(verdict) => {
                if let Some(released) = &job.released {
                    let holds = child.holds(&job.file);
                    if holds {
                        warn!("the scan child still holds an upload after answering for it; its file is not reused");
                    }
                    released.store(!holds, Ordering::Relaxed);
                }
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
