//! What a scan found: the engine's own report types (the worker maps them to
//! the wire format).

use crate::exe::ExecutableSummary;
use crate::limits::Limit;
use std::time::Duration;

/// How bad one detection, or a whole submission, is. Ordered: the verdict of
/// a submission is the highest severity among its detections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Clean,
    Suspicious,
    Malicious,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Clean => "clean",
            Severity::Suspicious => "suspicious",
            Severity::Malicious => "malicious",
        }
    }
}

/// One rule that matched one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub rule: String,
    pub namespace: String,
    pub tags: Vec<String>,
    /// Rule meta as strings (integers, floats and booleans formatted).
    pub meta: Vec<(String, String)>,
    /// Object path inside the submission (`outer.zip/inner.zip/eicar.com`).
    pub object: String,
    pub severity: Severity,
    /// MITRE ATT&CK technique ids (`T1059.001`) from the rule's
    /// `mitre_attack`, `attack` or `mitre_att` meta.
    pub techniques: Vec<String>,
}

/// A limit reached while scanning, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitHit {
    pub limit: Limit,
    pub object: String,
    pub detail: String,
}

/// Facts about one object that are not detections (a message's headers).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectMeta {
    pub object: String,
    pub meta: Vec<(String, String)>,
}

/// Everything one submission produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub sha256: String,
    pub md5: String,
    pub sha1: String,
    pub size: u64,
    pub file_type: &'static str,
    /// `None` when the root could not be scanned at all (unscannable).
    pub verdict: Option<Severity>,
    pub detections: Vec<Detection>,
    pub executables: Vec<ExecutableSummary>,
    pub limits_hit: Vec<LimitHit>,
    pub errors: Vec<String>,
    /// Objects that are encrypted and so were not unpacked.
    pub encrypted: Vec<String>,
    /// Metadata of objects that have some (message headers).
    pub object_meta: Vec<ObjectMeta>,
    /// Digests of every distinct object found inside the submission (not
    /// the root, whose digests are above), in the order they were reached.
    pub objects: Vec<crate::hash::ObjectDigests>,
    /// The md5/sha1 kinds computed for `objects`.
    pub object_digest_kinds: crate::hash::DigestKinds,
    pub objects_scanned: u32,
    /// Bytes of all objects scanned (the root and everything extracted).
    pub bytes_scanned: u64,
    pub duration: Duration,
}

impl Report {
    /// True when some part of the submission was not looked at.
    pub fn incomplete(&self) -> bool {
        !self.limits_hit.is_empty()
    }
}
