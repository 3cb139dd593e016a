//! The receive and verify steps of an upload: its bytes into a spool under
//! the client's byte rate and stall timeout, checked against its header
//! (size and sha256); and a fast one cut through to its worker while it
//! arrives.
//!
//! Cut-through: an upload of at least [`CUT_THROUGH_MIN`] whose rest, at
//! the rate it has arrived so far, will be there within
//! [`CUT_THROUGH_HORIZON`] has its worker call opened at once, if this
//! coordinator leads that content (in-process coalescing), gets the store's
//! scan lock without waiting and the worker has a free slot now. Every
//! chunk still goes to the spool (a replay after a worker failure reads it)
//! and is forwarded to the worker, one chunk behind: the last chunk is sent
//! only once the whole upload is verified (size and sha256), so a worker
//! never holds all of a file that is not what its header says, and never
//! scans one (it scans only a complete stream). A client that then pauses
//! for [`LIVE_GAP`] loses the cut-through: the call is cancelled, the slot,
//! lock and leadership are given back, and the upload is dispatched from
//! the spool once complete, as a slow upload always is. A slow client thus
//! never holds a worker slot for long.

use super::cache::Cache;
use super::coalesce::{Coalescer, Leader, Turn};
use super::dispatch::{self, Dispatcher, Failed, WorkerCall};
use super::lock::{Locks, ScanLock, Taken};
use super::quota::ClientQuota;
use super::spool::Spool;
use crate::cluster::Slot;
use crate::core::error::CoreError;
use crate::rules::LoadedRules;
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::bytes::Bytes;
use qala_proto::v1 as pb;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The content of an upload after its header, as a front door hands it
/// over (an error ends it: the client went away, or broke its protocol).
pub type Body = BoxStream<'static, Result<Bytes, CoreError>>;

/// Smallest upload cut through (smaller ones gain nothing measurable).
pub const CUT_THROUGH_MIN: u64 = 8 << 20;

/// Bytes received before the rate is judged.
const PROBE: u64 = 1 << 20;

/// Cut through only when the rest of the upload will have arrived this
/// soon at its rate so far: the worker slot is held at most about this
/// long before its scan starts.
const CUT_THROUGH_HORIZON: Duration = Duration::from_secs(2);

/// A cut-through upload that sends nothing for this long is cut off from
/// its worker (it goes on arriving into the spool).
const LIVE_GAP: Duration = Duration::from_millis(250);

/// An upload received whole and verified.
pub struct Received {
    pub spool: Spool,
    /// The worker call fed while it arrived, waiting for the last chunk.
    pub live: Option<Live>,
    /// Its sha256 (checked), md5 and sha1.
    pub digests: qala_engine::Digests,
}

/// A worker call fed while the upload arrives. Dropped unfinished (an
/// error, a pause, a lie), the call is cancelled before its last chunk.
pub struct Live {
    pub slot: Slot,
    call: LiveCall,
    /// The newest chunk, held back until the next one (or verification).
    pending: Option<Bytes>,
    pub leader: Leader,
    pub lock: ScanLock,
}

/// The call of a [`Live`]: cancelled if dropped before it is finished.
struct LiveCall(Option<WorkerCall>);

impl Drop for LiveCall {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            call.cancel();
        }
    }
}

impl Live {
    /// Forward the chunk held back and hold `chunk`; false if the worker's
    /// call has ended (it failed or refused).
    async fn forward(&mut self, chunk: Bytes) -> bool {
        let Some(call) = self.call.0.as_ref() else { return false };
        match self.pending.replace(chunk) {
            Some(prev) => call.tx.send(chunk_msg(prev)).await.is_ok(),
            None => true,
        }
    }

    /// Send the last chunk of the verified upload and wait for the verdict.
    pub async fn finish(mut self, header: &pb::ScanHeader, ruleset_id: &str) -> (Result<pb::Verdict, Failed>, Self) {
        let call = self.call.0.take().expect("a live call");
        if let Some(last) = self.pending.take() {
            let _ = call.tx.send(chunk_msg(last)).await; // a closed call: its answer says why
        }
        let result = dispatch::answer(&self.slot.worker, header, ruleset_id, call.close()).await;
        (result, self)
    }
}

fn chunk_msg(chunk: Bytes) -> pb::WorkerScanRequest {
    pb::WorkerScanRequest { msg: Some(pb::worker_scan_request::Msg::Chunk(chunk)) }
}

/// What a cut-through needs: the steps it runs ahead of time (coalescing,
/// lock, a worker's slot and call), for an upload under `rules`.
pub struct CutThrough<'a> {
    /// Whose upload it is: worker slots are shared fairly between clients.
    pub client: &'a str,
    pub coalescer: &'a Coalescer,
    pub locks: &'a Locks,
    pub cache: &'a Cache,
    pub dispatcher: &'a Dispatcher,
    pub rules: &'a LoadedRules,
}

/// Receive `body` whole into `spool`, checking it against `header`: no
/// more and no fewer bytes than announced, and the announced sha256. An
/// upload that sends nothing for `stall` is cancelled; a client above its
/// byte rate is read more slowly. A fast large upload is cut through to its
/// worker (see the module documentation) when `cut` is given.
pub async fn receive(
    header: &pb::ScanHeader,
    mut body: Body,
    quota: &ClientQuota,
    mut spool: Spool,
    stall: Duration,
    cut: Option<CutThrough<'_>>,
) -> Result<Received, CoreError> {
    // The sha256 to check, and the md5 and sha1 lookups need, in the one
    // pass the bytes make here (the worker hashes none of them again).
    let mut hasher = qala_engine::Hasher::new();
    let mut live: Option<Live> = None;
    let mut tried_live = header.size < CUT_THROUGH_MIN || cut.is_none();
    let mut first_byte: Option<Instant> = None;
    loop {
        let wait = if live.is_some() { LIVE_GAP } else { stall };
        let next = match tokio::time::timeout(wait, body.next()).await {
            Ok(next) => next,
            Err(_) if live.is_some() => {
                info!(sha256 = header.sha256, "upload paused: cut-through cancelled, the spool is dispatched once complete");
                live = None;
                continue;
            }
            Err(_) => {
                return Err(CoreError::Timeout(format!(
                    "upload stalled: nothing received for {} s after {} of {} bytes",
                    stall.as_secs(),
                    spool.len(),
                    header.size
                )));
            }
        };
        let Some(chunk) = next else { break };
        let chunk = chunk?;
        first_byte.get_or_insert_with(Instant::now);
        if spool.len() + chunk.len() as u64 > header.size {
            return Err(CoreError::Invalid(format!("upload is larger than the announced {} bytes", header.size)));
        }
        hasher.update(&chunk);
        let n = chunk.len();
        spool.write(chunk.clone()).await.map_err(|e| CoreError::Unavailable(format!("coordinator spool: {e}")))?;
        if let Some(l) = live.as_mut() {
            if !l.forward(chunk).await {
                info!(sha256 = header.sha256, "worker call ended during cut-through; dispatched from the spool");
                live = None;
            }
        } else if !tried_live && spool.len() >= PROBE && spool.len() < header.size {
            let secs = first_byte.map_or(0.0, |t| t.elapsed().as_secs_f64()).max(1e-3);
            let rest = (header.size - spool.len()) as f64 * secs / spool.len() as f64;
            if rest <= CUT_THROUGH_HORIZON.as_secs_f64()
                && let Some(cut) = &cut
            {
                tried_live = true;
                live = cut_through(cut, header, &mut spool).await;
            }
        }
        let wait = quota.throttle(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    if spool.len() != header.size {
        return Err(CoreError::Invalid(format!("upload has {} bytes, header announced {}", spool.len(), header.size)));
    }
    let digests = hasher.finish();
    let actual = &digests.sha256;
    if *actual != header.sha256 {
        warn!(claimed = header.sha256, actual, agent = header.agent_id, "sha256 mismatch");
        return Err(CoreError::Invalid(format!("sha256 mismatch: header claims {}, content is {actual}", header.sha256)));
    }
    Ok(Received { spool, live, digests })
}

/// Open the worker call of an upload still arriving, if this coordinator
/// may scan it now without waiting for anything, and send it what has
/// arrived so far.
async fn cut_through(cut: &CutThrough<'_>, header: &pb::ScanHeader, spool: &mut Spool) -> Option<Live> {
    let rules = cut.rules;
    let key = format!("{}:{}", rules.id, header.sha256);
    let Turn::Leader(leader) = cut.coalescer.turn(&key) else { return None };
    let lock = match cut.locks.try_take(cut.cache, &rules.id, &header.sha256).await? {
        Taken::Scan(lock) => lock,
        Taken::Done(_) => return None, // stored meanwhile: found once the upload is whole
    };
    let slot = cut.dispatcher.try_slot(&header.sha256, cut.client)?;
    let call = cut.dispatcher.open(&slot.worker, header, rules).await.ok()?;
    let live = Live { slot, call: LiveCall(Some(call)), pending: None, leader, lock };
    spool.rewind().await.ok()?;
    let tx = live.call.0.as_ref()?.tx.clone();
    while let Some(chunk) = spool.next_chunk(qala_proto::CHUNK_BYTES).await.ok()? {
        if tx.send(chunk_msg(chunk)).await.is_err() {
            return None;
        }
    }
    info!(
        sha256 = header.sha256,
        size = header.size,
        worker = live.slot.worker.id,
        "cut-through: upload streamed to its worker as it arrives"
    );
    Some(live)
}
