//! What is kept of a verdict, and for how long: decided here, once, for
//! every backend. A detection or a complete clean scan is kept for good (or
//! as the retention flags say); a clean verdict that may be incomplete for
//! an hour, marked `partial`; an `unscannable` one not at all (except a
//! poison file's, for an hour).

use super::backend::{StoreError, VerdictStore};
use qala_common::now_ms;
use qala_proto::v1::{DetectionEvent, Verdict, VerdictKind};
use std::time::Duration;

/// How long an incomplete verdict is kept: long enough that rescans do not
/// upload the file again every time, short enough that new rules or a new
/// engine soon retry it.
pub const PARTIAL_TTL: Duration = Duration::from_secs(3600);

/// How long a file that killed scan processes stays on the poison list.
pub const POISON_TTL: Duration = Duration::from_secs(3600);

/// The limit a poison file's verdict names (set by the worker).
pub const WORKER_CRASH: &str = qala_proto::limits::WORKER_CRASH;

/// How long a verdict may be kept.
#[derive(Debug, PartialEq, Eq)]
pub enum Retention {
    /// A complete verdict, or any detection: for good.
    Final,
    /// Clean, but some part of the submission was not looked at (a limit
    /// was hit, an error, an encrypted member, a contained panic): kept
    /// [`PARTIAL_TTL`] and marked `partial`, never as final. So is the
    /// `unscannable` of a file that killed its scan processes.
    Partial,
    /// Unscannable (a timeout, a crash): not kept.
    Never,
}

pub fn retention(v: &Verdict) -> Retention {
    match VerdictKind::try_from(v.verdict).unwrap_or(VerdictKind::Unspecified) {
        VerdictKind::Malicious | VerdictKind::Suspicious => Retention::Final,
        VerdictKind::Clean if v.limits_hit.is_empty() && v.errors.is_empty() && v.encrypted.is_empty() => Retention::Final,
        VerdictKind::Clean => Retention::Partial,
        // A poison file: lookups answer it for a while, so agents do not
        // upload it again, and a new engine or rules soon retry it.
        VerdictKind::Unscannable if v.limits_hit.iter().any(|l| l.limit == WORKER_CRASH) => Retention::Partial,
        VerdictKind::Unscannable | VerdictKind::Unspecified => Retention::Never,
    }
}

/// How long verdicts are kept, by level, from the coordinator's flags; 0
/// keeps them for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub clean: Duration,
    pub suspicious: Duration,
    pub malicious: Duration,
}

impl Keep {
    /// Unix ms a verdict of `v`'s level stored now expires at (0: never).
    fn expiry(&self, v: &Verdict) -> i64 {
        let keep = match VerdictKind::try_from(v.verdict).unwrap_or_default() {
            VerdictKind::Clean => self.clean,
            VerdictKind::Suspicious => self.suspicious,
            VerdictKind::Malicious => self.malicious,
            _ => Duration::ZERO,
        };
        if keep.is_zero() { 0 } else { now_ms() + keep.as_millis() as i64 }
    }
}

/// Most detections a feed event carries.
const EVENT_DETECTIONS: usize = 100;

/// The feed event of a verdict that is a detection.
pub fn detection_event(v: &Verdict) -> Option<DetectionEvent> {
    if !matches!(VerdictKind::try_from(v.verdict), Ok(VerdictKind::Malicious | VerdictKind::Suspicious)) {
        return None;
    }
    let detections = v
        .detections
        .iter()
        .take(EVENT_DETECTIONS)
        .map(|d| qala_proto::v1::Detection { meta: Default::default(), ..d.clone() })
        .collect();
    Some(DetectionEvent {
        at_ms: now_ms(),
        sha256: v.sha256.clone(),
        md5: v.md5.clone(),
        sha1: v.sha1.clone(),
        verdict: v.verdict,
        detections,
        ruleset_id: v.ruleset_id.clone(),
        size: v.size,
        file_type: v.file_type.clone(),
        worker_id: v.worker_id.clone(),
    })
}

/// The `partial` flag and expiry `v` is stored with, by [`retention`] and
/// `keep`; None if it is not kept at all. Idempotent (an expiry already
/// set stays), so the answer of a fresh scan can be put in this form first
/// ([`to_stored_form`]) and then equal every cached answer of it.
fn stored_fields(v: &Verdict, keep: &Keep) -> Option<(bool, i64)> {
    match retention(v) {
        Retention::Never => None,
        Retention::Final if v.expires_at_ms != 0 => Some((v.partial, v.expires_at_ms)),
        Retention::Final => Some((v.partial, keep.expiry(v))),
        Retention::Partial if v.partial && v.expires_at_ms != 0 => Some((true, v.expires_at_ms)),
        Retention::Partial => Some((true, now_ms() + PARTIAL_TTL.as_millis() as i64)),
    }
}

/// Put `v` in the form the store keeps it ([`stored_fields`]), in place;
/// a verdict that is not kept stays as it is.
pub fn to_stored_form(v: &mut Verdict, keep: &Keep) {
    if let Some((partial, expires_at_ms)) = stored_fields(v, keep) {
        v.partial = partial;
        v.expires_at_ms = expires_at_ms;
    }
}

/// `v` as the store keeps it, borrowed when it already is in that form
/// (a verdict of a fresh scan after [`to_stored_form`]: no copy); None if
/// it is not kept.
pub fn stored_form<'a>(v: &'a Verdict, keep: &Keep) -> Option<std::borrow::Cow<'a, Verdict>> {
    let (partial, expires_at_ms) = stored_fields(v, keep)?;
    Some(if (partial, expires_at_ms) == (v.partial, v.expires_at_ms) {
        std::borrow::Cow::Borrowed(v)
    } else {
        std::borrow::Cow::Owned(Verdict { partial, expires_at_ms, ..v.clone() })
    })
}

/// Store `verdict` as its [`retention`] and `keep` allow ([`stored_form`]);
/// returns whether it was stored. A detection also goes into the
/// detections feed.
pub async fn save(store: &dyn VerdictStore, verdict: &Verdict, keep: &Keep) -> Result<bool, StoreError> {
    let Some(v) = stored_form(verdict, keep) else { return Ok(false) };
    let event = detection_event(&v);
    store.put(&v, event.as_ref()).await.map(|_| true)
}
