//! The `scan` command: walk and hash in parallel, `Lookup` in batches,
//! upload what the cluster does not know (each distinct content once, a
//! bounded number at a time), print as results arrive.

use crate::cache::HashCache;
use crate::client::Client;
use crate::output::{FileResult, Summary, print_result, print_skipped, print_unknown};
use crate::walk::{Excludes, Found, WalkOptions, WalkStats, hash_file, walk};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Semaphore, mpsc};

/// Digests per `Lookup` call.
const LOOKUP_BATCH: usize = 512;
/// `Lookup` calls in flight at once.
const LOOKUPS_IN_FLIGHT: usize = 4;
/// Files waiting for an upload slot before the walk is made to wait.
const UPLOAD_QUEUE: usize = 4096;

pub struct ScanOptions {
    pub paths: Vec<PathBuf>,
    pub json: bool,
    /// Print only what is not clean (and the summary).
    pub infected: bool,
    /// A progress bar on standard error (a terminal).
    pub progress: bool,
    pub concurrency: usize,
    pub walk: WalkOptions,
    pub agent_id: String,
    /// Never upload content: files the cluster does not know are `unknown`.
    pub lookup_only: bool,
    /// Paths looked up but never uploaded (globs, as `--exclude`).
    pub upload_exclude: Vec<String>,
}

struct UploadDone {
    sha256: String,
    path: PathBuf,
    size: u64,
    result: Result<crate::client::Uploaded, String>,
}

/// Verdicts of uploads this run finished, kept while a lookup sent before
/// they finished is still to be answered.
#[derive(Default)]
struct Finished {
    /// Uploads finished so far.
    seq: u64,
    verdicts: HashMap<String, (u64, qala_proto::v1::Verdict)>,
    order: std::collections::VecDeque<(u64, String)>,
    /// Lookups in flight, by the `seq` when each was sent.
    lookups: std::collections::BTreeMap<u64, usize>,
}

impl Finished {
    fn insert(&mut self, sha256: &str, v: &qala_proto::v1::Verdict) {
        self.seq += 1;
        if self.lookups.is_empty() {
            return; // no lookup could have missed it
        }
        self.verdicts.insert(sha256.to_string(), (self.seq, v.clone()));
        self.order.push_back((self.seq, sha256.to_string()));
    }

    /// A lookup is sent: what it may miss is kept until it is answered.
    fn lookup_sent(&mut self) -> u64 {
        *self.lookups.entry(self.seq).or_default() += 1;
        self.seq
    }

    /// The lookup sent at `sent` is answered: the verdicts it may have
    /// missed, for now; then those no lookup in flight can miss go.
    fn lookup_answered(&mut self, sent: u64) -> FinishedView<'_> {
        if let Some(n) = self.lookups.get_mut(&sent) {
            *n -= 1;
            if *n == 0 {
                self.lookups.remove(&sent);
            }
        }
        FinishedView { f: self }
    }

    fn get(&self, sha256: &str) -> Option<&qala_proto::v1::Verdict> {
        self.verdicts.get(sha256).map(|(_, v)| v)
    }

    fn prune(&mut self) {
        let oldest = self.lookups.keys().next().copied().unwrap_or(u64::MAX);
        while let Some((seq, _)) = self.order.front()
            && *seq <= oldest
        {
            let (seq, sha) = self.order.pop_front().expect("front");
            if self.verdicts.get(&sha).is_some_and(|(s, _)| *s == seq) {
                self.verdicts.remove(&sha);
            }
        }
    }
}

/// [`Finished`] while one answered lookup is looked through; pruned after.
struct FinishedView<'a> {
    f: &'a mut Finished,
}

impl FinishedView<'_> {
    fn get(&self, sha256: &str) -> Option<&qala_proto::v1::Verdict> {
        self.f.get(sha256)
    }
}

impl Drop for FinishedView<'_> {
    fn drop(&mut self) {
        self.f.prune();
    }
}

/// Run a scan; returns the summary (its `exit_code` is the process's).
pub async fn run(client: Client, opts: ScanOptions) -> Summary {
    let start = Instant::now();
    let (found_tx, mut found_rx) = mpsc::channel::<Found>(4096);
    let globs = |flag: &str, list: &[String]| Excludes::new(list).map_err(|e| eprintln!("qala-agent: {flag}: {e}"));
    let (Ok(excludes), Ok(private)) = (globs("--exclude", &opts.walk.exclude), globs("--upload-exclude", &opts.upload_exclude))
    else {
        return Summary { errors: 1, ..Summary::default() };
    };
    let excludes = Arc::new(excludes);
    let stats = Arc::new(WalkStats::default());
    let (paths, walk_opts, walk_stats, walk_excludes) = (opts.paths.clone(), opts.walk.clone(), stats.clone(), excludes.clone());
    let walker = tokio::task::spawn_blocking(move || walk(&paths, &walk_opts, walk_excludes, walk_stats, found_tx));

    let (done_tx, mut done_rx) = mpsc::channel::<UploadDone>(1024);
    let uploads = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    // Content being uploaded -> other files with the same content.
    let mut pending: HashMap<String, Vec<(PathBuf, u64)>> = HashMap::new();
    // Content this run uploaded and got a verdict for, while a lookup sent
    // before that upload ended may still answer "unknown" for it (it must
    // not be uploaded again): kept only that long, so memory does not grow
    // with the uploads. Lookups sent later find it in the cluster.
    let mut finished = Finished::default();
    let mut summary = Summary::default();
    let bar = opts.progress.then(|| crate::progress::Bar::start(&opts.paths, &opts.walk, excludes.clone()));
    let infected = opts.infected;
    let emit = |mut r: FileResult, summary: &mut Summary| {
        r.outcome = r.outcome.map(|v| crate::local::localize(v, &r.path));
        summary.add(&r);
        let clean = matches!(&r.outcome, Ok(v) if crate::output::kind(v) == qala_proto::VerdictKind::Clean);
        if let Some(b) = &bar {
            b.file(r.size, summary.malicious + summary.suspicious);
        }
        if !(infected && clean) {
            crate::progress::above(bar.as_ref(), || print_result(&r, opts.json));
        }
    };

    type Looked = (Vec<(PathBuf, String, u64)>, u64, Result<qala_proto::v1::LookupResponse, tonic::Status>);
    let (looked_tx, mut looked_rx) = mpsc::channel::<Looked>(LOOKUPS_IN_FLIGHT * 2);
    let mut lookups_in_flight = 0usize;
    // Files to upload, waiting for a slot: a task is spawned only with one,
    // and the walk waits while lookups and this queue are full, so memory
    // stays the same however many files the tree holds.
    let mut to_upload: std::collections::VecDeque<(PathBuf, String, u64)> = std::collections::VecDeque::new();
    let mut walking = true;
    while walking || !pending.is_empty() || lookups_in_flight > 0 {
        while !to_upload.is_empty()
            && let Ok(permit) = uploads.clone().try_acquire_owned()
        {
            let (path, sha256, size) = to_upload.pop_front().expect("not empty");
            let (client, tx, agent) = (client.clone(), done_tx.clone(), opts.agent_id.clone());
            // As the lookups: text output needs no executable summaries.
            let brief = !opts.json;
            tokio::spawn(async move {
                let result = upload(&client, &path, &sha256, size, &agent, brief).await;
                drop(permit); // free before the loop hears of it
                let _ = tx.send(UploadDone { sha256, path, size, result }).await;
            });
        }
        let room = lookups_in_flight < LOOKUPS_IN_FLIGHT && to_upload.len() < UPLOAD_QUEUE;
        tokio::select! {
            found = found_rx.recv(), if walking && room => {
                let Some(first) = found else { walking = false; continue };
                let mut batch = vec![first];
                while batch.len() < LOOKUP_BATCH {
                    match found_rx.try_recv() {
                        Ok(f) => batch.push(f),
                        Err(_) => break,
                    }
                }
                let mut files = Vec::new();
                for f in batch {
                    match f {
                        Found::File { path, sha256, size } => files.push((path, sha256, size)),
                        Found::Error { path, error } => emit(FileResult { path, sha256: String::new(), size: 0, outcome: Err(error), cached: false, uploaded: 0 }, &mut summary),
                        Found::Skipped { path, reason } => {
                            summary.skipped += 1;
                            if !infected {
                                crate::progress::above(bar.as_ref(), || print_skipped(&path, &reason, opts.json));
                            }
                        }
                    }
                }
                let mut digests: Vec<String> = files.iter().map(|f| f.1.clone()).filter(|s| !pending.contains_key(s)).collect();
                digests.sort();
                digests.dedup();
                // Several batches in flight (at most LOOKUPS_IN_FLIGHT: this
                // branch waits otherwise): the coordinator answers them on
                // all its cores while the walk goes on.
                lookups_in_flight += 1;
                let (client, tx, brief) = (client.clone(), looked_tx.clone(), !opts.json);
                let sent = finished.lookup_sent();
                tokio::spawn(async move {
                    // Text output needs no executable summaries: brief answers.
                    let result = client.lookup_all(digests, brief).await;
                    let _ = tx.send((files, sent, result)).await;
                });
            }
            Some((files, sent, result)) = looked_rx.recv() => {
                lookups_in_flight -= 1;
                let finished = finished.lookup_answered(sent);
                let known = match result {
                    Ok(resp) => resp.verdicts.into_iter().map(|v| (v.sha256.clone(), v)).collect(),
                    Err(e) => {
                        for (path, sha256, size) in files {
                            emit(FileResult { path, sha256, size, outcome: Err(format!("lookup failed: {}", e.message())), cached: false, uploaded: 0 }, &mut summary);
                        }
                        continue;
                    }
                };
                let known: HashMap<String, _> = known;
                for (path, sha256, size) in files {
                    if let Some(v) = known.get(&sha256).or_else(|| finished.get(&sha256)) {
                        emit(FileResult { path, sha256, size, outcome: Ok(v.clone()), cached: true, uploaded: 0 }, &mut summary);
                    } else if opts.lookup_only || private.matches(&path) {
                        // Privacy: looked up, never uploaded.
                        summary.unknown += 1;
                        crate::progress::above(bar.as_ref(), || print_unknown(&path, &sha256, size, opts.json));
                    } else if let Some(waiting) = pending.get_mut(&sha256) {
                        waiting.push((path, size));
                    } else {
                        pending.insert(sha256.clone(), Vec::new());
                        to_upload.push_back((path, sha256, size));
                    }
                }
            }
            Some(done) = done_rx.recv() => {
                let waiting = pending.remove(&done.sha256).unwrap_or_default();
                match done.result {
                    Ok(up) => {
                        let verdict = up.response.verdict.ok_or_else(|| "coordinator sent no verdict".to_string());
                        if let Ok(v) = &verdict {
                            finished.insert(&done.sha256, v);
                        }
                        for (path, size) in waiting {
                            emit(FileResult { path, sha256: done.sha256.clone(), size, outcome: verdict.clone(), cached: true, uploaded: 0 }, &mut summary);
                        }
                        emit(FileResult { path: done.path, sha256: done.sha256, size: done.size, outcome: verdict, cached: up.response.cached, uploaded: up.bytes }, &mut summary);
                    }
                    Err(e) => {
                        for (path, size) in waiting {
                            emit(FileResult { path, sha256: done.sha256.clone(), size, outcome: Err(e.clone()), cached: false, uploaded: 0 }, &mut summary);
                        }
                        emit(FileResult { path: done.path, sha256: done.sha256, size: done.size, outcome: Err(e), cached: false, uploaded: 0 }, &mut summary);
                    }
                }
            }
        }
    }
    let _ = walker.await;
    if let Some(b) = &bar {
        b.finish();
    }
    if let Some(cache) = &opts.walk.cache
        && let Err(e) = cache.save()
    {
        eprintln!("qala-agent: hash cache not saved: {e}");
    }
    summary.read_bytes = stats.bytes_read.load(std::sync::atomic::Ordering::Relaxed);
    summary.from_hash_cache = stats.from_cache.load(std::sync::atomic::Ordering::Relaxed);
    summary.rchar = crate::os::bytes_read();
    let line = summary.line(start.elapsed().as_secs_f64());
    if opts.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    summary
}

/// The hash cache at `path`, if any.
pub fn open_cache(path: Option<PathBuf>) -> Option<Arc<HashCache>> {
    Some(Arc::new(HashCache::open(path?)))
}

/// Upload one file; if it changed since it was hashed, hash it again and
/// retry once with the new content.
async fn upload(
    client: &Client,
    path: &std::path::Path,
    sha256: &str,
    size: u64,
    agent: &str,
    brief: bool,
) -> Result<crate::client::Uploaded, String> {
    match client.upload(path, sha256, size, agent, brief).await {
        Ok(u) => Ok(u),
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            let p = path.to_path_buf();
            let (new_sha, new_size) = tokio::task::spawn_blocking(move || hash_file(&p))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot read: {e}"))?;
            if new_sha == sha256 && new_size == size {
                return Err(format!("rejected by coordinator: {}", s.message()));
            }
            client
                .upload(path, &new_sha, new_size, agent, brief)
                .await
                .map_err(|s| format!("file changed while scanning; retry failed: {}", s.message()))
        }
        Err(s) => Err(format!("upload failed: {}", s.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_verdicts_are_kept_only_while_a_lookup_could_have_missed_them() {
        let v = qala_proto::v1::Verdict::default();
        let mut f = Finished::default();
        f.insert("a", &v);
        assert!(f.verdicts.is_empty(), "no lookup in flight: nothing to keep");
        let first = f.lookup_sent();
        let second = f.lookup_sent();
        f.insert("b", &v);
        let third = f.lookup_sent();
        f.insert("c", &v);
        assert!(f.lookup_answered(first).get("b").is_some(), "b finished after the first lookup was sent");
        // The second (sent before b) still in flight: b and c stay.
        assert_eq!(f.verdicts.len(), 2);
        drop(f.lookup_answered(second));
        assert!(f.get("b").is_none() && f.get("c").is_some(), "b finished before the third was sent; c after");
        drop(f.lookup_answered(third));
        assert!(f.verdicts.is_empty() && f.order.is_empty());
        for i in 0..10_000 {
            let s = f.lookup_sent();
            f.insert(&i.to_string(), &v);
            drop(f.lookup_answered(s));
        }
        assert!(f.verdicts.is_empty(), "memory does not grow with the uploads");
    }
}
