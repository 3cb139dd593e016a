//! What the console reads beyond the scripting API: the fleet, the last
//! hour of the cluster's load, the detections feed live (server-sent
//! events), and a rules reload. Each a thin call into the core, like the
//! rest of the REST door, and usable from scripts with a bearer token.

use super::error::ApiError;
use super::model::{self, AgentRecord, DetectionEvent, Fleet, FleetAgent, RuleError};
use super::request::{Peer, peer};
use super::state::AppState;
use crate::auth::{Caller, Op};
use crate::core::Core;
use crate::core::feed::FeedQuery;
use crate::core::history::Sample;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use qala_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// Fleets up to this many agents get their detections counted in the list.
const COUNTED_FLEET: usize = 500;
/// How often a live feed looks at the store for new detections.
const POLL: Duration = Duration::from_secs(1);
/// How far back a live feed starts unless told (one hour).
const BACKLOG_MS: i64 = 3_600_000;

/// The fleet: every agent's inventory record, and what each holds that is
/// a detection now (counted for fleets up to 500 agents). Role `analyst`
/// or `admin`.
#[utoipa::path(get, path = "/v1/agents",
    responses((status = 200, body = Fleet), (status = 401, body = model::ApiError), (status = 403, body = model::ApiError),
        (status = 503, body = model::ApiError)))]
pub async fn fleet(State(s): State<AppState>, headers: HeaderMap, p: Peer) -> Result<Json<Fleet>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Inventory).await?;
    let list = s.core.agents().list(&caller).await?.agents;
    let count = list.len() <= COUNTED_FLEET;
    let mut agents = Vec::with_capacity(list.len());
    for a in list {
        let detections = if count {
            Some(s.core.sightings().holdings(&caller, &a.agent_id).await.map(|r| r.detections.len() as u64).unwrap_or(0))
        } else {
            None
        };
        agents.push(FleetAgent { record: AgentRecord::from(a), detections });
    }
    s.core.audit("fleet", Some(&caller), serde_json::json!({"agents": agents.len(), "counted": count}));
    Ok(Json(Fleet { agents }))
}

/// `GET /v1/history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// Seconds between samples.
    pub every_secs: u64,
    /// This coordinator's samples of the last hour, oldest first; the last
    /// one taken at the request.
    pub samples: Vec<Sample>,
}

/// The last hour of the cluster's load as this coordinator sampled it
/// (every 10 s): its scan calls, bytes and cache hits, and each worker's
/// files and bytes scanned and p99 scan time. Rates are differences.
#[utoipa::path(get, path = "/v1/history",
    responses((status = 200, body = History), (status = 401, body = model::ApiError), (status = 403, body = model::ApiError)))]
pub async fn history(State(s): State<AppState>, headers: HeaderMap, p: Peer) -> Result<Json<History>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Status).await?;
    let samples = s.core.history().samples(&caller)?;
    Ok(Json(History { every_secs: crate::core::history::EVERY.as_secs(), samples }))
}

/// `POST /v1/rules/reload`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reloaded {
    pub ruleset_id: String,
    /// A new ruleset is in force.
    pub changed: bool,
    /// Why the rules did not compile (the previous ones stay in force).
    pub errors: Vec<RuleError>,
}

/// Compile the rules again now (an admin token).
#[utoipa::path(post, path = "/v1/rules/reload",
    responses((status = 200, body = Reloaded), (status = 401, body = model::ApiError), (status = 403, body = model::ApiError)))]
pub async fn reload(State(s): State<AppState>, headers: HeaderMap, p: Peer) -> Result<Json<Reloaded>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Admin).await?;
    let r = s.core.admin().reload_rules(&caller).await?;
    Ok(Json(Reloaded {
        ruleset_id: r.ruleset_id,
        changed: r.changed,
        errors: r.errors.into_iter().map(|e| RuleError::of(e.path, e.message)).collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Detections stored at or after this Unix time in ms (default: the last hour).
    since: Option<i64>,
    /// Only events with this rule (`rule` or `namespace.rule`).
    rule: Option<String>,
    /// Only events with this ATT&CK technique (`T1059` also matches `T1059.001`).
    technique: Option<String>,
    /// `suspicious` (suspicious and malicious) or `malicious`.
    level: Option<String>,
    /// Only contents this agent holds (its sightings).
    agent: Option<String>,
}

/// The detections feed, live: server-sent events (`event: detection`, the
/// event as JSON, `id` its time in ms), the backlog since `since` first,
/// then each new detection stored by any coordinator, read from the store
/// every second. Reconnecting with `Last-Event-ID` resumes there.
#[utoipa::path(get, path = "/v1/detections/stream", params(StreamQuery),
    responses((status = 200, description = "text/event-stream of DetectionEvent", content_type = "text/event-stream"),
        (status = 400, body = model::ApiError), (status = 401, body = model::ApiError), (status = 403, body = model::ApiError)))]
pub async fn stream(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Peer,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::GetVerdict).await?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let level = match q.level.as_deref().map(str::trim).unwrap_or("") {
        "" | "any" => None,
        "suspicious" => Some(pb::VerdictKind::Suspicious),
        "malicious" => Some(pb::VerdictKind::Malicious),
        other => return Err(ApiError::bad_request(format!("level is suspicious or malicious, not {other:?}"))),
    };
    let agent = q.agent.map(|a| a.trim().to_string()).filter(|a| !a.is_empty());
    if agent.is_some() {
        caller.require(Op::Inventory).map_err(ApiError::from)?;
    }
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok());
    let since = resume.or(q.since).unwrap_or_else(|| qala_common::now_ms() - BACKLOG_MS).max(0);
    let query = FeedQuery {
        since,
        rule: q.rule.filter(|r| !r.trim().is_empty()),
        technique: q.technique.filter(|t| !t.trim().is_empty()),
        limit: crate::core::feed::MAX_PAGE,
        level,
    };
    s.core.feed().watching(&caller, &query)?;
    let watch = Watch { core: s.core.clone(), caller, query, agent, seen: HashSet::new(), ready: VecDeque::new(), first: true };
    let events = futures::stream::unfold(watch, |mut w| async move {
        let event = w.next().await;
        Some((Ok(event), w))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A live watch of the feed: where it has read to, and what it read at
/// that millisecond (a later poll may find more of the same millisecond).
struct Watch {
    core: Arc<Core>,
    caller: Caller,
    query: FeedQuery,
    agent: Option<String>,
    seen: HashSet<String>,
    ready: VecDeque<pb::DetectionEvent>,
    first: bool,
}

impl Watch {
    /// The next event to send: a detection, or an error the page shows.
    async fn next(&mut self) -> Event {
        loop {
            if let Some(e) = self.ready.pop_front() {
                let json = serde_json::to_string(&DetectionEvent::from(&e)).unwrap_or_default();
                return Event::default().event("detection").id(e.at_ms.to_string()).data(json);
            }
            if !self.first {
                tokio::time::sleep(POLL).await;
            }
            self.first = false;
            match self.poll().await {
                Ok(()) => {}
                Err(e) => {
                    let (code, message) = e.parts();
                    let json = serde_json::json!({"code": code, "message": message}).to_string();
                    return Event::default().event("problem").data(json);
                }
            }
        }
    }

    async fn poll(&mut self) -> Result<(), ApiError> {
        let held = match &self.agent {
            Some(a) => Some(self.core.sightings().held_by(&self.caller, a).await?),
            None => None,
        };
        loop {
            let page = self.core.feed().read(&self.caller, &self.query).await?;
            let next = page.next_since;
            for e in page.events {
                if e.at_ms < self.query.since {
                    continue;
                }
                if e.at_ms > self.query.since {
                    self.query.since = e.at_ms;
                    self.seen.clear();
                }
                let key = format!("{}:{}", e.sha256, e.ruleset_id);
                if !self.seen.insert(key) {
                    continue;
                }
                if held.as_ref().is_none_or(|h| h.contains(&e.sha256)) {
                    self.ready.push_back(e);
                }
            }
            match next {
                Some(n) if self.ready.is_empty() && n > self.query.since => {
                    // A page all seen before: go on from where it ended.
                    self.query.since = n;
                    self.seen.clear();
                }
                _ => return Ok(()),
            }
        }
    }
}
