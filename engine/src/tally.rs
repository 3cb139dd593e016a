//! The bookkeeping of one submission's walk: what it has read (objects,
//! bytes, memory held), which contents it has seen, and what it has found
//! (detections, executable summaries, limits hit, errors, encrypted
//! members, object metadata), from which the report is made. Format
//! modules add to it through their container; the rules through the
//! walk's inspector.

use crate::exe::ExecutableSummary;
use crate::filetype::FileType;
use crate::hash::{DigestKinds, Digests, ObjectDigests};
use crate::limits::{Limit, Limits};
use crate::report::{Detection, LimitHit, ObjectMeta, Report, Severity};
use std::collections::HashSet;
use std::time::Duration;

/// Per-submission bookkeeping.
pub(crate) struct Tally {
    /// Set when the submission's time budget ran out: nothing more is read.
    pub(crate) out_of_time: bool,
    pub(crate) objects: u32,
    /// Bytes of the objects counted in `objects`.
    pub(crate) bytes: u64,
    pub(crate) extracted: u64,
    /// Bytes of decoded objects alive now: the submission and the objects
    /// on the way down to the one being scanned.
    pub(crate) live: u64,
    /// sha256 of every object already scanned in this submission.
    pub(crate) seen: HashSet<[u8; 32]>,
    /// Digests of the distinct objects inside the submission, and the
    /// kinds asked for besides sha256.
    pub(crate) digests: Vec<ObjectDigests>,
    pub(crate) kinds: DigestKinds,
    /// 1-based index in `digests` of the object being scanned; 0: the root.
    pub(crate) current: u32,
    pub(crate) detections: Vec<Detection>,
    pub(crate) executables: Vec<ExecutableSummary>,
    pub(crate) limits_hit: Vec<LimitHit>,
    pub(crate) errors: Vec<String>,
    pub(crate) encrypted: Vec<String>,
    pub(crate) object_meta: Vec<ObjectMeta>,
    pub(crate) root_unscanned: bool,
    /// Work (emulator instructions) the submission may cause, and may
    /// still cause.
    pub(crate) work_budget: u64,
    pub(crate) work_left: u64,
    /// Whether running out of it was recorded.
    pub(crate) work_spent: bool,
    /// Stubs (blake3 of the section holding the entry point, and the
    /// entry point) that ran out of their instructions already: the same
    /// stub in another member is not run again.
    pub(crate) endless_stubs: HashSet<[u8; 32]>,
}

impl Tally {
    /// The bookkeeping of a submission of `size` bytes, computing `kinds`
    /// of digests of the objects inside it besides sha256.
    pub(crate) fn new(size: u64, kinds: DigestKinds) -> Self {
        Tally {
            live: size,
            objects: 0,
            bytes: 0,
            extracted: 0,
            out_of_time: false,
            seen: HashSet::new(),
            digests: Vec::new(),
            kinds,
            current: 0,
            detections: Vec::new(),
            executables: Vec::new(),
            limits_hit: Vec::new(),
            errors: Vec::new(),
            encrypted: Vec::new(),
            object_meta: Vec::new(),
            root_unscanned: false,
            work_budget: u64::MAX,
            work_left: u64::MAX,
            work_spent: false,
            endless_stubs: HashSet::new(),
        }
    }

    /// Take up to `want` units of the submission's work budget; what was
    /// granted (less than asked once it runs low, 0 when spent). Running
    /// short is recorded once, against `object`.
    pub(crate) fn take_work(&mut self, want: u64, object: &str, limits: &Limits) -> u64 {
        let granted = want.min(self.work_left);
        self.work_left -= granted;
        if granted < want && !self.work_spent {
            self.work_spent = true;
            let detail = format!(
                "the submission's work budget ({} emulator instructions: {} per byte, at least {}) is spent",
                self.work_budget, limits.work_per_byte, limits.work_floor
            );
            self.limit(Limit::MaxWork, object, detail);
        }
        granted
    }

    /// The budget of a submission of `size` bytes under `limits`.
    pub(crate) fn budget_work(&mut self, size: u64, limits: &Limits) {
        self.work_budget = limits.work_floor.max(limits.work_per_byte.saturating_mul(size));
        self.work_left = self.work_budget;
    }

    /// Give back what a grant did not use.
    pub(crate) fn return_work(&mut self, unused: u64) {
        self.work_left = self.work_left.saturating_add(unused);
    }

    /// The report of the submission walked, whose own digests are `root`:
    /// the verdict is the most severe detection, raised by the policy in
    /// `limits` for what was not looked at; none if the submission itself
    /// was not scanned and nothing was found.
    pub(crate) fn into_report(
        self,
        root: Digests,
        size: u64,
        root_type: FileType,
        limits: &Limits,
        duration: Duration,
    ) -> Report {
        let verdict = if self.root_unscanned && self.detections.is_empty() {
            None
        } else {
            let mut v = self.detections.iter().map(|d| d.severity).max().unwrap_or(Severity::Clean);
            // Policy: what was not looked at may count against the file.
            if (limits.alert_exceeded && !self.limits_hit.is_empty()) || (limits.alert_encrypted && !self.encrypted.is_empty()) {
                v = v.max(Severity::Suspicious);
            }
            Some(v)
        };
        Report {
            sha256: root.sha256,
            md5: root.md5,
            sha1: root.sha1,
            size,
            file_type: root_type.as_str(),
            verdict,
            detections: self.detections,
            executables: self.executables,
            limits_hit: self.limits_hit,
            errors: self.errors,
            encrypted: self.encrypted,
            object_meta: self.object_meta,
            objects: self.digests,
            object_digest_kinds: self.kinds,
            objects_scanned: self.objects,
            bytes_scanned: self.bytes,
            duration,
        }
    }

    pub(crate) fn limit(&mut self, limit: Limit, object: &str, detail: String) {
        self.limits_hit.push(LimitHit { limit, object: object.to_string(), detail });
    }
}
