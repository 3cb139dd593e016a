//! Hunts over REST: start one (admin), list them, one's status, cancel.

use super::error::ApiError;
use super::request::{Peer, json_body, peer, refused};
use super::state::AppState;
use crate::auth::Op;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use qala_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/hunts`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HuntStart {
    /// Content last seen at or after this time (Unix ms); absent: 30 days ago.
    #[serde(default)]
    pub since_ms: i64,
    /// Only content whose last known type is one of these (`pe`, `zip`, ...).
    #[serde(default)]
    pub types: Vec<String>,
    /// Only content whose last known size is at most this many bytes.
    #[serde(default)]
    pub max_size: u64,
    /// Uploads asked per second at most (default 5).
    #[serde(default)]
    pub rate: f64,
    /// Count the scope only; queue nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// A what-if hunt with these rules only: matches are reported, no
    /// verdict is stored or changed.
    #[serde(default)]
    pub rules: Vec<RuleFile>,
}

/// One rule file of a what-if hunt.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub name: String,
    pub text: String,
}

/// What a what-if hunt's rules matched.
#[derive(Debug, Serialize, ToSchema)]
pub struct HuntMatch {
    pub sha256: String,
    pub verdict: String,
    pub rules: Vec<String>,
    pub size: u64,
    pub at_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HuntMatches {
    pub matches: Vec<HuntMatch>,
}

/// A hunt and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct Hunt {
    pub id: String,
    /// `queued`, `running`, `done`, `cancelled` (`dry run` for a count).
    pub state: String,
    pub since_ms: i64,
    pub types: Vec<String>,
    pub max_size: u64,
    pub rate: f64,
    pub started_by: String,
    pub created_ms: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub ruleset_id: String,
    /// Contents in scope, their bytes (of those whose size is known), and
    /// how many have no known size.
    pub in_scope: u64,
    pub bytes_in_scope: u64,
    pub size_unknown: u64,
    pub scope_truncated: bool,
    pub rescanned: u64,
    /// Rescanned contents whose verdict changed.
    pub changed: u64,
    pub no_holder_online: u64,
    pub declined: u64,
    pub unanswered: u64,
    /// Judged meanwhile by a live upload.
    pub judged_meanwhile: u64,
    /// Uploads asked of agents.
    pub asked: u64,
    /// A what-if hunt, its rule count, and the contents its rules matched.
    pub what_if: bool,
    pub what_if_rules: u32,
    pub matched: u64,
}

impl From<pb::Hunt> for Hunt {
    fn from(h: pb::Hunt) -> Self {
        Hunt {
            id: h.id,
            state: h.state,
            since_ms: h.since_ms,
            types: h.types,
            max_size: h.max_size,
            rate: h.rate,
            started_by: h.started_by,
            created_ms: h.created_ms,
            started_ms: h.started_ms,
            finished_ms: h.finished_ms,
            ruleset_id: h.ruleset_id,
            in_scope: h.in_scope,
            bytes_in_scope: h.bytes_in_scope,
            size_unknown: h.size_unknown,
            scope_truncated: h.scope_truncated,
            rescanned: h.rescanned,
            changed: h.changed,
            no_holder_online: h.no_holder_online,
            declined: h.declined,
            unanswered: h.unanswered,
            judged_meanwhile: h.judged_meanwhile,
            asked: h.asked,
            what_if: h.what_if,
            what_if_rules: h.what_if_rules,
            matched: h.matched,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HuntList {
    /// Newest first.
    pub hunts: Vec<Hunt>,
}

/// Start a hunt (an admin token): the content agents were seen holding
/// whose verdict under the rules in force is unknown is asked of one
/// holder each and scanned; a changed detection reaches every holder.
#[utoipa::path(post, path = "/v1/hunts", request_body = HuntStart,
    responses((status = 200, body = Hunt), (status = 400, body = super::model::ApiError), (status = 401, body = super::model::ApiError),
        (status = 403, body = super::model::ApiError)))]
pub async fn start_hunt(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Peer,
    request: Request,
) -> Result<Json<Hunt>, ApiError> {
    let caller = match s.caller(&headers, peer(&p), Op::Admin).await {
        Ok(c) => c,
        Err(e) => return Err(refused(request, e).await),
    };
    let req: HuntStart = json_body(request).await?;
    let req = pb::StartHuntRequest {
        since_ms: req.since_ms,
        types: req.types,
        max_size: req.max_size,
        rate: req.rate,
        dry_run: req.dry_run,
        rules: req.rules.into_iter().map(|r| pb::RuleSource { name: r.name, text: r.text }).collect(),
    };
    Ok(Json(s.core.hunts().start(&caller, req).await?.into()))
}

/// Every hunt, newest first (an analyst or admin token).
#[utoipa::path(get, path = "/v1/hunts",
    responses((status = 200, body = HuntList), (status = 401, body = super::model::ApiError), (status = 403, body = super::model::ApiError)))]
pub async fn list_hunts(State(s): State<AppState>, headers: HeaderMap, p: Peer) -> Result<Json<HuntList>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Inventory).await?;
    let r = s.core.hunts().list(&caller).await?;
    Ok(Json(HuntList { hunts: r.hunts.into_iter().map(Hunt::from).collect() }))
}

/// One hunt's progress (an analyst or admin token).
#[utoipa::path(get, path = "/v1/hunts/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Hunt), (status = 404, body = super::model::ApiError), (status = 401, body = super::model::ApiError),
        (status = 403, body = super::model::ApiError)))]
pub async fn get_hunt(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Peer,
    Path(id): Path<String>,
) -> Result<Json<Hunt>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Inventory).await?;
    Ok(Json(s.core.hunts().get(&caller, &id).await?.into()))
}

/// What a what-if hunt's rules matched (an analyst or admin token).
#[utoipa::path(get, path = "/v1/hunts/{id}/matches", params(("id" = String, Path)),
    responses((status = 200, body = HuntMatches), (status = 404, body = super::model::ApiError), (status = 409, body = super::model::ApiError),
        (status = 401, body = super::model::ApiError), (status = 403, body = super::model::ApiError)))]
pub async fn hunt_matches(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Peer,
    Path(id): Path<String>,
) -> Result<Json<HuntMatches>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Inventory).await?;
    let r = s.core.hunts().matches(&caller, &id).await?;
    let matches = r
        .matches
        .into_iter()
        .map(|m| HuntMatch {
            verdict: qala_proto::VerdictKind::try_from(m.verdict).unwrap_or_default().label().to_string(),
            sha256: m.sha256,
            rules: m.rules,
            size: m.size,
            at_ms: m.at_ms,
        })
        .collect();
    Ok(Json(HuntMatches { matches }))
}

/// Stop a queued or running hunt (an admin token).
#[utoipa::path(delete, path = "/v1/hunts/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Hunt), (status = 404, body = super::model::ApiError), (status = 401, body = super::model::ApiError),
        (status = 403, body = super::model::ApiError)))]
pub async fn cancel_hunt(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Peer,
    Path(id): Path<String>,
) -> Result<Json<Hunt>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Admin).await?;
    Ok(Json(s.core.hunts().cancel(&caller, &id).await?.into()))
}
