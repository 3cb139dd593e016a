//! The detections feed: every detection stored, oldest first, paged by
//! time and filtered by rule or ATT&CK technique, for analysts and SIEM
//! pollers. A page ends on a millisecond boundary, so a client that asks
//! again from `next_since` loses nothing and sees nothing twice.

use super::error::CoreError;
use super::shared::Shared;
use crate::audit::Audit;
use crate::auth::{Caller, Op};
use crate::store::Guarded;
use qala_proto::v1 as pb;
use serde_json::json;
use std::sync::Arc;

/// Most events in one page.
pub const MAX_PAGE: usize = 1000;
/// Events in a page unless asked otherwise.
pub const DEFAULT_PAGE: usize = 100;
/// Feed events read (and filtered) at most per request.
const MAX_FEED_SCAN: usize = 20_000;
/// Events read from the store at a time.
const BATCH: usize = 1000;

/// Which events of the feed, and how many.
#[derive(Debug, Clone, Default)]
pub struct FeedQuery {
    /// Events at or after this Unix time in milliseconds.
    pub since: i64,
    /// Only events with this rule (`rule` or `namespace.rule`).
    pub rule: Option<String>,
    /// Only events with this ATT&CK technique (`T1059` also matches `T1059.001`).
    pub technique: Option<String>,
    /// Events per page (0: [`DEFAULT_PAGE`]; at most [`MAX_PAGE`]).
    pub limit: usize,
    /// Only events whose verdict is at least this (`suspicious`: both).
    pub level: Option<pb::VerdictKind>,
}

pub struct FeedPage {
    pub events: Vec<pb::DetectionEvent>,
    /// Where the next page starts; `None` once the feed is read to its end.
    pub next_since: Option<i64>,
}

pub struct Feed {
    store: Arc<Guarded>,
    audit: Arc<Audit>,
}

impl FeedQuery {
    fn matches(&self, technique: Option<&str>, e: &pb::DetectionEvent) -> bool {
        let rule_ok = self
            .rule
            .as_deref()
            .is_none_or(|r| e.detections.iter().any(|d| d.rule == r || format!("{}.{}", d.namespace, d.rule) == r));
        let technique_ok = technique.is_none_or(|t| {
            e.detections
                .iter()
                .flat_map(|d| &d.techniques)
                .any(|x| x == t || x.strip_prefix(t).is_some_and(|rest| rest.starts_with('.')))
        });
        let (suspicious, malicious) = (pb::VerdictKind::Suspicious as i32, pb::VerdictKind::Malicious as i32);
        let level_ok = match self.level {
            None => true,
            Some(pb::VerdictKind::Suspicious) => e.verdict == suspicious || e.verdict == malicious,
            Some(l) => e.verdict == l as i32,
        };
        rule_ok && technique_ok && level_ok
    }
}

impl Feed {
    pub fn new(s: &Shared) -> Self {
        Self { store: s.store.clone(), audit: s.audit.clone() }
    }

    /// One page of the feed as `q` asks.
    pub async fn page(&self, caller: &Caller, q: &FeedQuery) -> Result<FeedPage, CoreError> {
        let page = self.read(caller, q).await?;
        self.audit.event("rest_detections", Some(caller), json!({"events": page.events.len()}));
        Ok(page)
    }

    /// A live watch of the feed begins (audited once, not each poll).
    pub fn watching(&self, caller: &Caller, q: &FeedQuery) -> Result<(), CoreError> {
        caller.require(Op::GetVerdict)?;
        self.audit.event(
            "detections_stream",
            Some(caller),
            json!({"since": q.since, "rule": q.rule, "technique": q.technique, "level": q.level.map(|l| l.label())}),
        );
        Ok(())
    }

    /// One page, unaudited: a live watch's poll.
    pub async fn read(&self, caller: &Caller, q: &FeedQuery) -> Result<FeedPage, CoreError> {
        caller.require(Op::GetVerdict)?;
        let limit = if q.limit == 0 { DEFAULT_PAGE } else { q.limit.min(MAX_PAGE) };
        let technique = q.technique.as_deref().map(str::to_ascii_uppercase);
        let mut since = q.since.max(0);
        let mut events = Vec::new();
        let mut read = 0;
        let mut exhausted = false;
        while events.len() <= limit && read < MAX_FEED_SCAN {
            let batch = self.store.call(|s| s.detections(since, BATCH)).await?;
            read += batch.len();
            let full = batch.len() == BATCH;
            let Some(last) = batch.last().map(|e| e.at_ms) else {
                exhausted = true;
                break;
            };
            // Events of the last millisecond may continue in the next batch:
            // keep them for it unless the whole batch is that millisecond.
            let cut = if full && batch.iter().any(|e| e.at_ms != last) { last } else { i64::MAX };
            events.extend(batch.into_iter().filter(|e| e.at_ms < cut).filter(|e| q.matches(technique.as_deref(), e)));
            if !full {
                exhausted = true;
                break;
            }
            since = if cut == i64::MAX { last + 1 } else { last };
        }
        // A full page ends on a millisecond boundary, so `next_since` loses nothing.
        let mut next_since = (!exhausted).then_some(since);
        if events.len() > limit {
            let boundary = events[limit].at_ms;
            events.truncate(limit);
            if events.iter().any(|e| e.at_ms != boundary) {
                events.retain(|e| e.at_ms < boundary);
            }
            next_since = Some(if events.last().is_some_and(|e| e.at_ms == boundary) { boundary + 1 } else { boundary });
        }
        Ok(FeedPage { events, next_since })
    }
}
