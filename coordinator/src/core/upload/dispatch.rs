//! The dispatch step of an upload: sending it, checked, to a worker: the
//! first in its rendezvous ranking once that worker has a free slot; if it
//! fails (killed, unreachable, lost its rules) the spool is replayed to the
//! next, up to [`MAX_FAILOVERS`] times. What the worker answers is judged
//! here; the verdict is checked and stored by the next step.

use super::spool::Spool;
use crate::cluster::{Cluster, Slot, WorkerHandle};
use crate::core::error::CoreError;
use crate::core::iocs::IocLists;
use crate::rules::LoadedRules;
use qala_engine::DigestKinds;
use qala_proto::v1 as pb;
use qala_proto::{Unscannable, limits};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Response, Status};
use tracing::{debug, warn};

/// Most workers a failed scan moves on to.
const MAX_FAILOVERS: usize = 3;

/// Pause before asking a busy worker again.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

type CallHandle = tokio::task::JoinHandle<Result<Response<pb::Verdict>, Status>>;

/// An open `ScanFile` call: its request stream and the pending answer.
pub struct WorkerCall {
    pub tx: mpsc::Sender<pb::WorkerScanRequest>,
    call: CallHandle,
}

impl WorkerCall {
    /// End the request stream cleanly; the answer is still to come.
    pub fn close(self) -> CallHandle {
        self.call
    }

    /// Cancel the call (its stream is reset): the worker, short of the
    /// announced bytes, scans nothing.
    pub fn cancel(self) {
        self.call.abort();
    }
}

/// Why one attempt failed.
pub enum Failed {
    /// The upload itself is bad (size, sha256, protocol): no other worker
    /// would answer differently, the client gets this error.
    Upload(Status),
    /// The worker failed: the next one in the ranking gets the upload.
    Worker(Status),
    /// The worker has no room (its slots are taken by other coordinators'
    /// calls): the same or another worker gets the upload in a moment.
    Busy(Status),
}

/// Sends uploads to workers.
pub struct Dispatcher {
    cluster: Arc<Cluster>,
    /// Which digests of nested objects scans compute (those the lists need).
    iocs: Arc<IocLists>,
}

/// A verdict and the worker that gave it.
pub type Answered = (pb::Verdict, Arc<WorkerHandle>);

impl Dispatcher {
    pub fn new(cluster: Arc<Cluster>, iocs: Arc<IocLists>) -> Self {
        Self { cluster, iocs }
    }

    /// A slot on the first worker in the ranking of `sha256`, if it has
    /// one free now (a cut-through call opens only then).
    pub fn try_slot(&self, sha256: &str, client: &str) -> Option<Slot> {
        self.cluster.try_acquire(sha256, client)
    }

    /// Open a `ScanFile` call for `header` on `worker`.
    pub async fn open(&self, worker: &WorkerHandle, header: &pb::ScanHeader, rules: &LoadedRules) -> Result<WorkerCall, Status> {
        open(worker, header, rules, self.iocs.object_kinds()).await
    }

    /// Scan one upload of `client`, received whole and checked (size,
    /// sha256), in the client's turn for a slot on its worker.
    ///
    /// The upload is read whole before any worker call opens: a worker is
    /// only ever sent a checked file, and never holds a stream it cannot
    /// read yet (unread streams fill the HTTP/2 connection window the calls
    /// it is serving need).
    pub async fn dispatch(
        &self,
        client: &str,
        header: &pb::ScanHeader,
        spool: &mut Spool,
        rules: &LoadedRules,
    ) -> Result<Answered, CoreError> {
        self.dispatch_after(client, header, spool, rules, Vec::new(), None).await
    }

    /// [`Dispatcher::dispatch`] once the workers in `tried` have failed (the
    /// last with `last`): a cut-through call whose worker died goes on here.
    pub async fn dispatch_after(
        &self,
        client: &str,
        header: &pb::ScanHeader,
        spool: &mut Spool,
        rules: &LoadedRules,
        mut tried: Vec<String>,
        mut last: Option<Status>,
    ) -> Result<Answered, CoreError> {
        let busy_until = tokio::time::Instant::now() + self.cluster.scan_timeout;
        loop {
            let Some(slot) = self.cluster.acquire(&header.sha256, &tried, client).await else { break };
            let worker = slot.worker.clone();
            if let Some(e) = &last {
                warn!(sha256 = header.sha256, failed = tried.last().map(String::as_str), next = worker.id, error = %e.message(), "worker failed; replaying the upload to the next worker");
            }
            match send_to(&worker, header, rules, spool, self.iocs.object_kinds()).await {
                Ok(v) => return Ok((v, worker)),
                Err(Failed::Upload(s)) => return Err(CoreError::Invalid(s.message().to_string())),
                // Another coordinator's calls fill it: wait a moment and ask
                // again, for as long as a scan may take.
                Err(Failed::Busy(s)) => {
                    drop(slot);
                    if tokio::time::Instant::now() < busy_until {
                        debug!(sha256 = header.sha256, worker = worker.id, "worker busy; waiting for a slot");
                        tokio::time::sleep(BUSY_PAUSE).await;
                    } else {
                        tried.push(worker.id.clone());
                        last = Some(s);
                    }
                }
                Err(Failed::Worker(s)) => {
                    worker.suspend();
                    tried.push(worker.id.clone());
                    last = Some(s);
                    if tried.len() > MAX_FAILOVERS {
                        break;
                    }
                }
            }
        }
        Err(CoreError::Unavailable(match last {
            None => "no live workers".to_string(),
            Some(last) => format!("no worker could scan {} (tried {}): {}", header.sha256, tried.join(", "), last.message()),
        }))
    }
}

/// Open a `ScanFile` call on `worker` and send it the header.
/// `kinds`: the digests of nested objects the worker computes besides
/// sha256 (those the IOC lists need now).
async fn open(
    worker: &WorkerHandle,
    header: &pb::ScanHeader,
    rules: &LoadedRules,
    kinds: DigestKinds,
) -> Result<WorkerCall, Status> {
    worker.ensure_rules(rules).await?;
    let (tx, rx) = mpsc::channel(2);
    tx.send(header_msg(header, rules, kinds)).await.map_err(|_| Status::internal("worker stream closed"))?;
    let mut client = worker.client.clone();
    let call = tokio::spawn(async move { client.scan_file(ReceiverStream::new(rx)).await });
    Ok(WorkerCall { tx, call })
}

/// The first message of a `ScanFile` call.
fn header_msg(header: &pb::ScanHeader, rules: &LoadedRules, kinds: DigestKinds) -> pb::WorkerScanRequest {
    pb::WorkerScanRequest {
        msg: Some(pb::worker_scan_request::Msg::Header(pb::WorkerScanHeader {
            sha256: header.sha256.clone(),
            size: header.size,
            // A verdict is a function of content and ruleset: the client's
            // name for the file never reaches a worker.
            file_name: String::new(),
            ruleset_id: rules.id.clone(),
            object_md5: kinds.md5,
            object_sha1: kinds.sha1,
        })),
    }
}

/// Send the checked upload from the spool to `worker` and wait for its verdict.
async fn send_to(
    worker: &WorkerHandle,
    header: &pb::ScanHeader,
    rules: &LoadedRules,
    spool: &mut Spool,
    kinds: DigestKinds,
) -> Result<pb::Verdict, Failed> {
    if let Some(chunks) = spool.memory_chunks(qala_proto::CHUNK_BYTES) {
        // Held in memory: the whole call is ready at once, sent from this
        // task (no task, no channel, header and content in the same frames).
        worker.ensure_rules(rules).await.map_err(Failed::Worker)?;
        let chunks = chunks.into_iter().map(|c| pb::WorkerScanRequest { msg: Some(pb::worker_scan_request::Msg::Chunk(c)) });
        let request = tokio_stream::iter(std::iter::once(header_msg(header, rules, kinds)).chain(chunks));
        let answered = worker.client.clone().scan_file(request).await;
        return judge(worker, header, &rules.id, answered).await;
    }
    let WorkerCall { tx, call } = open(worker, header, rules, kinds).await.map_err(Failed::Worker)?;
    let spool_error = |e: std::io::Error| Failed::Upload(Status::unavailable(format!("coordinator spool: {e}")));
    spool.rewind().await.map_err(spool_error)?;
    while let Some(chunk) = spool.next_chunk(qala_proto::CHUNK_BYTES).await.map_err(spool_error)? {
        let m = pb::WorkerScanRequest { msg: Some(pb::worker_scan_request::Msg::Chunk(chunk)) };
        if tx.send(m).await.is_err() {
            break; // the worker's answer says why
        }
    }
    drop(tx);
    answer(worker, header, &rules.id, call).await
}

/// `unscannable` with `limit` hit, for an answer the worker could not give:
/// a scan past the coordinator's deadline (`scan_timeout`), a verdict too
/// large to send (`verdict_size`). Never cached, never replayed elsewhere.
fn unscannable(
    header: &pb::ScanHeader,
    ruleset_id: &str,
    worker: &WorkerHandle,
    limit: &'static str,
    detail: String,
    e: &Status,
) -> pb::Verdict {
    let error = format!("{limit}: {}", e.message());
    Unscannable { limit, detail, error }.verdict(&header.sha256, header.size, ruleset_id, qala_engine::ENGINE_VERSION, &worker.id)
}

/// The worker's answer to a call whose upload was sent whole.
pub async fn answer(
    worker: &WorkerHandle,
    header: &pb::ScanHeader,
    ruleset_id: &str,
    call: CallHandle,
) -> Result<pb::Verdict, Failed> {
    match call.await {
        Ok(answered) => judge(worker, header, ruleset_id, answered).await,
        Err(e) => Err(Failed::Worker(Status::internal(format!("worker call task failed: {e}")))),
    }
}

/// What the worker's answer to a whole upload means for it.
async fn judge(
    worker: &WorkerHandle,
    header: &pb::ScanHeader,
    ruleset_id: &str,
    answered: Result<Response<pb::Verdict>, Status>,
) -> Result<pb::Verdict, Failed> {
    match answered {
        Ok(v) => Ok(v.into_inner()),
        // Past the deadline the call is cancelled (the worker's stream is
        // reset). Another worker would most likely take as long: the answer
        // is `unscannable`, reason timeout, which is never cached.
        Err(e) if e.code() == Code::DeadlineExceeded || e.code() == Code::Cancelled && e.message().contains("Timeout") => {
            warn!(sha256 = header.sha256, worker = worker.id, "scan exceeded the coordinator's deadline");
            let detail = format!("no verdict from worker {} within the coordinator's deadline", worker.id);
            Ok(unscannable(header, ruleset_id, worker, limits::SCAN_TIMEOUT, detail, &e))
        }
        // A verdict too large to encode or decode says nothing about the
        // worker's health: the worker is not failed over.
        Err(e) if e.code() == Code::OutOfRange || e.message().contains("message length too large") => {
            warn!(sha256 = header.sha256, worker = worker.id, error = %e.message(), "verdict too large to send");
            let detail = format!("worker {}'s verdict exceeds the message size limit", worker.id);
            Ok(unscannable(header, ruleset_id, worker, limits::VERDICT_SIZE, detail, &e))
        }
        Err(e) if e.code() == Code::InvalidArgument => Err(Failed::Upload(e)),
        Err(e) if e.code() == Code::ResourceExhausted => Err(Failed::Busy(e)),
        Err(e) if e.code() == Code::FailedPrecondition => {
            worker.rules_lost().await;
            Err(Failed::Worker(Status::unavailable(format!("worker {} lacked the rules: {}", worker.id, e.message()))))
        }
        Err(e) => Err(Failed::Worker(Status::unavailable(format!("worker {} failed: {}", worker.id, e.message())))),
    }
}
