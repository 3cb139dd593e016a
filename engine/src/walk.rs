//! The walk through one submission: type detection, executable summaries,
//! and recursive unpacking under [`Limits`], each object admitted, read
//! with the tightest cap and scanned; what was found is kept in a
//! [`Tally`]. What looks at each object's bytes (the yara-x rules) plugs in
//! through [`Inspect`], so the unpackers build, run and fuzz without yara-x;
//! what a container holds is each format module's business
//! ([`crate::formats`]), behind [`Walker`].

use crate::exe::{ExecutableSummary, panic_message, summarize_executable};
use crate::filetype::FileType;
use crate::formats::{self, Container, Flow, Read, Walker, at};
use crate::hash::{DigestKinds, Digests, Hasher, ObjectDigests};
use crate::limits::{Deadline, Limit, Limits};
use crate::report::Report;
use crate::tally::Tally;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// The compression-ratio cap only bites above this many extracted bytes:
/// small, very repetitive members (a few KiB of spaces) are normal and cheap.
const RATIO_FLOOR: u64 = 1024 * 1024;

/// One object about to be inspected, with what the walk knows of it.
#[cfg_attr(not(feature = "rules"), allow(dead_code))]
pub(crate) struct Object<'a> {
    pub data: &'a [u8],
    pub ty: FileType,
    /// Object path inside the submission (`mail.eml/a.zip/x.exe`).
    pub path: &'a str,
    pub depth: u32,
    pub parent_type: &'a str,
    /// Executable summaries of this object (empty if it is not one).
    pub exe: &'a [ExecutableSummary],
    /// What is left of the submission's time budget for this object.
    pub timeout: Duration,
}

/// Looks at the bytes of every object of a submission (root and extracted)
/// and records what it finds in the walk.
pub(crate) trait Inspect {
    fn inspect(&mut self, tally: &mut Tally, object: &Object<'_>);
}

/// Inspects nothing: unpacking and executable summaries only (fuzzing, and
/// measuring the unpackers alone).
pub(crate) struct NoInspection;

impl Inspect for NoInspection {
    fn inspect(&mut self, _: &mut Tally, _: &Object<'_>) {}
}

/// Which of the root's digests a walk computes. (Without the `rules`
/// feature, as `fuzz/` builds the crate, only `Hash` is used.)
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "rules"), allow(dead_code))]
pub(crate) enum Root<'a> {
    /// All of them.
    Hash,
    /// All but the sha256, which the caller verified and gives.
    Verified(&'a str),
    /// None: the sha256 is given, and the caller computes md5 and sha1
    /// itself (the report leaves them empty).
    HashedByCaller(&'a str),
}

/// Walk one submission held in memory: `name` is the root object's path
/// (empty: paths are relative to the submission). `root_type` overrides
/// detection (the fuzz targets force each unpacker on arbitrary bytes).
/// Setting `cancel` stops the walk (and any decoder) at its next check.
/// `root` says which of the root's digests are computed here (the caller
/// may have verified the sha256, or compute them all itself). `kinds` says which
/// digests of the objects inside it are computed besides sha256.
#[allow(clippy::too_many_arguments)]
pub(crate) fn walk(
    inspector: &mut impl Inspect,
    limits: &Limits,
    data: &[u8],
    name: &str,
    root_type: Option<FileType>,
    cancel: Option<Arc<AtomicBool>>,
    root: Root<'_>,
    kinds: DigestKinds,
) -> Report {
    let start = Instant::now();
    let digests = match root {
        Root::Hash => Hasher::digest(data),
        Root::Verified(sha256) => {
            let mut h = Hasher::without_sha256();
            h.update(data);
            Digests { sha256: sha256.to_string(), ..h.finish() }
        }
        Root::HashedByCaller(sha256) => Digests { sha256: sha256.to_string(), md5: String::new(), sha1: String::new() },
    };
    let root_type = root_type.unwrap_or_else(|| formats::detect(data));
    let mut walk = Tally::new(data.len() as u64, kinds);
    walk.budget_work(data.len() as u64, limits);
    // An empty name is the submission itself (the worker never has the
    // client's name): object paths are then relative to it, the root "".
    // The root's sha256 is already known: no second pass.
    let mut root = [0u8; 32];
    if hex::decode_to_slice(&digests.sha256, &mut root).is_ok() {
        walk.seen.insert(root);
    }
    let deadline = Deadline::new(limits.max_scan_time, cancel);
    let mut unpacker = Unpacker { inspector, limits, deadline, walk };
    unpacker.scan_object(data, root_type, name, 0, "");
    unpacker.walk.into_report(digests, data.len() as u64, root_type, limits, start.elapsed())
}

struct Unpacker<'a, I> {
    inspector: &'a mut I,
    limits: &'a Limits,
    deadline: Deadline,
    walk: Tally,
}

impl<I: Inspect> Unpacker<'_, I> {
    /// False once the submission's time is up or its caller cancelled it;
    /// the first time, the reason is recorded against `path`.
    fn in_time(&mut self, path: &str, depth: u32) -> bool {
        if !self.deadline.passed() {
            return true;
        }
        if !self.walk.out_of_time {
            self.walk.out_of_time = true;
            if self.deadline.cancelled() {
                self.walk.limit(Limit::Cancelled, path, "the scan was cancelled by its caller".into());
            } else {
                let detail = format!("submission took longer than {:?}", self.limits.max_scan_time);
                self.walk.limit(Limit::MaxScanTime, path, detail);
            }
        }
        self.walk.root_unscanned |= depth == 0;
        false
    }

    fn scan_object(&mut self, data: &[u8], ty: FileType, path: &str, depth: u32, parent_type: &str) {
        if !self.in_time(path, depth) {
            return;
        }
        let left = self.deadline.left();
        // yara-x counts whole seconds: round the rest of the budget up.
        let timeout = self.limits.object_timeout.min(Duration::from_secs(left.as_secs() + 1));
        self.walk.objects += 1;
        self.walk.bytes += data.len() as u64;
        // The executable report goes first: rules see it through globals.
        let exe = if ty.is_executable() { summarize_executable(data, ty, path) } else { Vec::new() };
        self.inspector.inspect(&mut self.walk, &Object { data, ty, path, depth, parent_type, exe: &exe, timeout });
        self.walk.executables.extend(exe);
        let Some(unpack) = formats::unpacker(ty) else { return };
        // A parser panic loses this container's children, not the
        // submission: everything found so far stays in the report.
        let unpacked = catch_unwind(AssertUnwindSafe(|| unpack(&mut Container { walker: self, path, depth, ty }, data)));
        if let Err(panic) = unpacked {
            self.walk.errors.push(at(path, format_args!("{} unpacker panicked: {}", ty.as_str(), panic_message(&panic))));
        }
    }
}

impl<I: Inspect> Walker for Unpacker<'_, I> {
    fn tally(&mut self) -> &mut Tally {
        &mut self.walk
    }

    fn limits(&self) -> &Limits {
        self.limits
    }

    fn deadline(&self) -> &Deadline {
        &self.deadline
    }

    /// Admit one child of a container under the limits, read it with the
    /// tightest cap, and scan it. Returns `Stop` when a submission-wide
    /// limit means no further sibling may be read.
    fn extract(&mut self, child: &str, stored_size: u64, depth: u32, parent_type: FileType, read: Read<'_>) -> Flow {
        let limits = self.limits;
        if !self.in_time(child, depth + 1) {
            return Flow::Stop;
        }
        let walk = &mut self.walk;
        if depth + 1 > limits.max_depth {
            walk.limit(Limit::MaxDepth, child, format!("nesting deeper than {}", limits.max_depth));
            return Flow::Stop;
        }
        if walk.objects >= limits.max_objects {
            walk.limit(Limit::MaxObjects, child, format!("more than {} objects", limits.max_objects));
            return Flow::Stop;
        }
        let budget = limits.max_total_bytes.saturating_sub(walk.extracted);
        if budget == 0 {
            walk.limit(Limit::MaxTotalBytes, child, format!("more than {} bytes extracted", limits.max_total_bytes));
            return Flow::Stop;
        }
        let memory = limits.max_scan_memory.saturating_sub(walk.live);
        if memory == 0 {
            walk.limit(Limit::MaxScanMemory, child, format!("{} bytes of decoded objects held already", walk.live));
            return Flow::Stop;
        }
        // The tightest bound wins, and names the limit if it truncates.
        let ratio_cap = stored_size.saturating_mul(limits.max_ratio).max(RATIO_FLOOR);
        let (cap, limit) = [
            (limits.max_object_size, Limit::MaxObjectSize),
            (budget, Limit::MaxTotalBytes),
            (ratio_cap, Limit::MaxRatio),
            (memory, Limit::MaxScanMemory),
        ]
        .into_iter()
        .min_by_key(|(cap, _)| *cap)
        .expect("four candidates");
        let member = match read(cap) {
            Ok(m) => m,
            Err(e) => {
                walk.errors.push(format!("{child}: {e}"));
                return Flow::Continue;
            }
        };
        // A decoder that stopped for time: the rest is not looked at.
        if !self.in_time(child, depth + 1) {
            return Flow::Stop;
        }
        let walk = &mut self.walk;
        walk.extracted += member.data.len() as u64;
        if member.truncated {
            walk.limit(limit, child, format!("scanned the first {cap} bytes only"));
        }
        if let Some(e) = member.error {
            walk.errors.push(format!("{child}: {e}"));
        }
        if member.data.is_empty() && !member.truncated {
            return Flow::Continue;
        }
        // sha256 names the object for the seen set and for IOC lists. Every
        // object scanned is listed (a truncated one too, marked: its digest
        // is its first bytes'), so a detection's path can be told apart.
        let (digest, md5, sha1) = walk.kinds.digest(&member.data);
        if !walk.seen.insert(digest) {
            return Flow::Continue;
        }
        let parent = walk.current;
        let truncated = member.truncated;
        let size = member.data.len() as u64;
        walk.digests.push(ObjectDigests { object: child.to_string(), parent, size, sha256: digest, md5, sha1, truncated });
        walk.current = walk.digests.len() as u32;
        let ty = formats::detect(&member.data);
        let held = member.data.len() as u64;
        walk.live += held;
        let limits_before = walk.limits_hit.len();
        self.scan_object(&member.data, ty, child, depth + 1, parent_type.as_str());
        self.walk.live -= held;
        self.walk.current = parent;
        // An object whose scan a limit cut short was not seen whole: a copy
        // of it elsewhere (shallower, say) is scanned again, not skipped as
        // a duplicate (ClamAV's `clam_cache_emax` case).
        if self.walk.limits_hit.len() > limits_before {
            self.walk.seen.remove(&digest);
        }
        Flow::Continue
    }
}
