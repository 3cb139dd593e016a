//! Scan limits, ClamAV's defaults, and the names they are reported under.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Bounds on the work one submission may cause. Hitting one is recorded in
/// the report ([`crate::LimitHit`]); a clean verdict with a limit hit is never
/// cached by the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Deepest nesting of containers followed (the root is depth 0).
    pub max_depth: u32,
    /// Most objects (root included) scanned per submission.
    pub max_objects: u32,
    /// Most bytes extracted from containers per submission.
    pub max_total_bytes: u64,
    /// Largest single extracted object; larger ones are scanned truncated.
    pub max_object_size: u64,
    /// Largest ratio of extracted to compressed size of one member.
    pub max_ratio: u64,
    /// Most bytes of decoded objects held at once by one submission's walk
    /// (the submission itself and every extracted object on the way down to
    /// the one being scanned): a member that would take more is scanned
    /// truncated to what is left.
    pub max_scan_memory: u64,
    /// yara-x timeout per object (one-second granularity).
    pub object_timeout: Duration,
    /// Wall-clock budget for a whole submission; objects not reached by
    /// then are not scanned (ClamAV's MaxScanTime).
    pub max_scan_time: Duration,
    /// The work one submission may cause, in emulator instructions (what
    /// unpacking packed executables by emulation costs; a run takes at most
    /// 50 million of them, about half a second): this many at least...
    pub work_floor: u64,
    /// ...and this many per byte of the submission beyond that, so a small
    /// file cannot buy minutes of CPU with many never-ending stubs while a
    /// large installer still unpacks every packed program inside it.
    pub work_per_byte: u64,
    /// A submission that hit a limit is at least `suspicious` (ClamAV's
    /// AlertExceedsMax).
    pub alert_exceeded: bool,
    /// A submission with an encrypted member is at least `suspicious`
    /// (ClamAV's AlertEncrypted).
    pub alert_encrypted: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 17,
            max_objects: 10_000,
            max_total_bytes: 400 * 1024 * 1024,
            max_object_size: 100 * 1024 * 1024,
            max_ratio: 250,
            max_scan_memory: 512 * 1024 * 1024,
            object_timeout: Duration::from_secs(30),
            max_scan_time: Duration::from_secs(120),
            work_floor: 100_000_000,
            work_per_byte: 256,
            alert_exceeded: false,
            alert_encrypted: false,
        }
    }
}

/// Which limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    MaxDepth,
    MaxObjects,
    MaxTotalBytes,
    MaxObjectSize,
    MaxRatio,
    MaxScanMemory,
    ObjectTimeout,
    MaxScanTime,
    /// The submission's work budget ([`Limits::work_floor`],
    /// [`Limits::work_per_byte`]) ran out.
    MaxWork,
    /// Not a configured limit: whoever asked for the scan stopped waiting
    /// (the coordinator's deadline passed), so the rest was not looked at.
    Cancelled,
}

impl Limit {
    pub const ALL: [Limit; 10] = [
        Limit::MaxDepth,
        Limit::MaxObjects,
        Limit::MaxTotalBytes,
        Limit::MaxObjectSize,
        Limit::MaxRatio,
        Limit::MaxScanMemory,
        Limit::ObjectTimeout,
        Limit::MaxScanTime,
        Limit::MaxWork,
        Limit::Cancelled,
    ];

    /// Name used in verdicts and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxDepth => "max_depth",
            Limit::MaxObjects => "max_objects",
            Limit::MaxTotalBytes => "max_total_bytes",
            Limit::MaxObjectSize => "max_object_size",
            Limit::MaxRatio => "max_ratio",
            Limit::MaxScanMemory => "max_scan_memory",
            Limit::ObjectTimeout => "object_timeout",
            Limit::MaxScanTime => "max_scan_time",
            Limit::MaxWork => "max_work",
            Limit::Cancelled => "cancelled",
        }
    }
}

/// When a submission must stop: the end of its time budget, or earlier if
/// its caller sets the cancel flag. Decoders check it inside their long
/// loops (every chunk of output), not only the walk between objects.
#[derive(Clone, Debug)]
pub(crate) struct Deadline {
    end: Instant,
    cancel: Option<Arc<AtomicBool>>,
}

impl Deadline {
    pub(crate) fn new(budget: Duration, cancel: Option<Arc<AtomicBool>>) -> Self {
        let now = Instant::now();
        Self { end: now.checked_add(budget).unwrap_or(now + Duration::from_secs(86_400 * 365)), cancel }
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Time left; zero once cancelled.
    pub(crate) fn left(&self) -> Duration {
        if self.cancelled() { Duration::ZERO } else { self.end.saturating_duration_since(Instant::now()) }
    }

    pub(crate) fn passed(&self) -> bool {
        self.left().is_zero()
    }
}
