//! The REST routes, each a thin call into the core, and the OpenAPI
//! document generated from their annotations (utoipa).

use super::error::ApiError;
use super::model::{self, *};
use super::request::{Peer, drain, json_body, peer, refused};
use super::state::AppState;
use crate::auth::Op;
use crate::core::digests::hash_kind;
use crate::core::error::CoreError;
use crate::core::feed::FeedQuery;
use crate::core::upload::unhashed::PushError;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use qala_proto::v1 as pb;
use serde::Deserialize;
use std::time::Duration;
use utoipa::OpenApi;

/// Most digests in one `POST /v1/lookup`.
const MAX_LOOKUP: usize = crate::core::lookups::MAX_LOOKUP;

#[derive(OpenApi)]
#[openapi(
    info(title = "Qala REST API", description = "Verdicts by sha256, sha1 or md5; scans; the detections feed; cluster, rules and IOC lists. Authenticate with `Authorization: Bearer <token>`."),
    paths(get_verdicts, lookup, scan, detections, sightings, agent, cluster, rules, crate::http::routes::iocs::list_iocs, crate::http::routes::iocs::add_iocs, crate::http::routes::iocs::remove_ioc, crate::http::hunts::start_hunt, crate::http::hunts::list_hunts, crate::http::hunts::get_hunt, crate::http::hunts::cancel_hunt, crate::http::hunts::hunt_matches, crate::http::session::login, crate::http::session::whoami, crate::http::session::logout, crate::http::views::fleet, crate::http::views::history, crate::http::views::stream, crate::http::views::reload, metrics),
    components(schemas(model::ApiError, Verdict, Detection, LimitHit, model::IocMatch, model::ObjectDigests, VerdictsByHash, LookupRequest, LookupResponse, LookupResult, ScanResponse, DetectionEvent, DetectionsPage, model::Sightings, Holder, Agent, Held, ClusterStatus, Worker, RulesStatus, RuleFile, RuleError, iocs::IocEntry, iocs::IocList, iocs::IocAdd, iocs::IocAdded, super::hunts::HuntStart, super::hunts::RuleFile, super::hunts::Hunt, super::hunts::HuntList, super::hunts::HuntMatch, super::hunts::HuntMatches, super::session::Login, super::session::WhoAmI, model::Fleet, model::FleetAgent, model::AgentRecord, model::Executable, model::Section, model::ObjectMeta, super::views::History, super::views::Reloaded, crate::core::history::Sample, crate::core::history::WorkerSample)),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

pub fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/v1/verdicts/{hash}", get(get_verdicts))
        .route("/v1/lookup", post(lookup))
        .route("/v1/scan", post(scan).layer(DefaultBodyLimit::max(max_body)))
        .route("/v1/detections", get(detections))
        .route("/v1/sightings/{hash}", get(sightings))
        .route("/v1/agents/{id}", get(agent))
        .route("/v1/cluster", get(cluster))
        .route("/v1/rules", get(rules))
        .route("/v1/iocs", get(iocs::list_iocs).post(iocs::add_iocs))
        .route("/v1/iocs/{list}/{kind}/{digest}", axum::routing::delete(iocs::remove_ioc))
        .route("/v1/hunts", get(super::hunts::list_hunts).post(super::hunts::start_hunt))
        .route("/v1/hunts/{id}", get(super::hunts::get_hunt).delete(super::hunts::cancel_hunt))
        .route("/v1/hunts/{id}/matches", get(super::hunts::hunt_matches))
        .route("/v1/agents", get(super::views::fleet))
        .route("/v1/history", get(super::views::history))
        .route("/v1/detections/stream", get(super::views::stream))
        .route("/v1/rules/reload", post(super::views::reload))
        .route("/", get(super::console::root))
        .route("/console", get(super::console::root))
        .route("/console/", get(super::console::index))
        .route("/console/{*path}", get(super::console::asset))
        .route("/v1/session", get(super::session::whoami).post(super::session::login).delete(super::session::logout))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint: see /v1/openapi.json") })
        .layer(axum::middleware::from_fn(super::session::csrf_guard))
        .layer(axum::middleware::from_fn(super::session::security_headers))
        .with_state(state)
}

/// The OpenAPI 3.1 document of this API (no authentication needed).
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], ApiDoc::openapi().to_pretty_json().unwrap_or_default()).into_response()
}

/// Verdicts of the files with this sha256, sha1 or md5.
#[utoipa::path(get, path = "/v1/verdicts/{hash}",
    params(("hash" = String, Path, description = "sha256, sha1 or md5 (hex)")),
    responses(
        (status = 200, description = "Every verdict of a file with that digest", body = VerdictsByHash),
        (status = 400, body = model::ApiError), (status = 401, body = model::ApiError), (status = 403, body = model::ApiError),
        (status = 404, description = "No verdict under the current rules", body = model::ApiError),
        (status = 503, body = model::ApiError)))]
async fn get_verdicts(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Peer,
    Path(hash): Path<String>,
) -> Result<Json<VerdictsByHash>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::GetVerdict).await?;
    let hash = hash.trim().to_ascii_lowercase();
    let verdicts = s.core.lookups().by_hash(&caller, &hash, "rest_verdicts").await?;
    let verdicts: Vec<Verdict> = verdicts.iter().map(Verdict::from).collect();
    if verdicts.is_empty() {
        return Err(ApiError::not_found(format!("no verdict for {hash} under the current rules")));
    }
    let kind = hash_kind(&hash).unwrap_or_default().to_string();
    Ok(Json(VerdictsByHash { hash, kind, ruleset_id: s.core.lookups().ruleset_id(), verdicts }))
}

/// Verdicts of many digests at once (sha256, sha1 or md5, mixed).
#[utoipa::path(post, path = "/v1/lookup", request_body = LookupRequest,
    responses((status = 200, body = LookupResponse), (status = 400, body = model::ApiError), (status = 401, body = model::ApiError),
        (status = 403, body = model::ApiError), (status = 503, body = model::ApiError)))]
async fn lookup(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Peer,
    request: Request,
) -> Result<Json<LookupResponse>, ApiError> {
    let caller = match s.caller(&headers, peer(&p), Op::Lookup).await {
        Ok(c) => c,
        Err(e) => return Err(refused(request, e).await),
    };
    let req: LookupRequest = json_body(request).await?;
    if req.hashes.len() > MAX_LOOKUP {
        return Err(ApiError::bad_request(format!("at most {MAX_LOOKUP} hashes per lookup")));
    }
    let hashes: Vec<String> = req.hashes.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
    if let Some(bad) = hashes.iter().find(|h| hash_kind(h).is_none()) {
        return Err(ApiError::bad_request(format!("not a hex sha256, sha1 or md5: {bad:?}")));
    }
    let results = s.core.lookups().lookup_any(&caller, &hashes).await?;
    Ok(Json(LookupResponse {
        ruleset_id: s.core.lookups().ruleset_id(),
        results: results
            .into_iter()
            .zip(hashes)
            .map(|(verdicts, hash)| LookupResult {
                kind: hash_kind(&hash).unwrap_or_default().into(),
                hash,
                verdicts: verdicts.iter().map(Verdict::from).collect(),
            })
            .collect(),
    }))
}

/// Scan a file: the raw request body, or the first file part of a
/// `multipart/form-data` body.
#[utoipa::path(post, path = "/v1/scan",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file (or multipart/form-data with a file part)"),
    responses((status = 200, body = ScanResponse), (status = 400, body = model::ApiError), (status = 401, body = model::ApiError),
        (status = 403, body = model::ApiError), (status = 413, body = model::ApiError), (status = 429, body = model::ApiError),
        (status = 503, body = model::ApiError)))]
async fn scan(State(s): State<AppState>, headers: HeaderMap, p: Peer, request: Request) -> Result<Json<ScanResponse>, ApiError> {
    let caller = match s.caller(&headers, peer(&p), Op::Scan).await {
        Ok(c) => c,
        Err(e) => return Err(refused(request, e).await),
    };
    let max = s.core.uploads().max_file_size();
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the file is over the {max} byte limit"));
    let push_err = |e: PushError| match e {
        PushError::TooLarge => too_large(),
        PushError::SpoolFull => ApiError::from(CoreError::busy("coordinator busy: spool full", Duration::from_secs(1))),
        PushError::Spool(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("spool: {e}")),
    };
    // A body that stalls is given up, as an agent's upload is (--upload-stall-secs).
    let stall = s.core.uploads().upload_stall();
    let stalled = || ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", format!("no data for {} s", stall.as_secs()));
    // Admitted under the caller's quotas before a byte of the body is read.
    let mut upload = match s.core.uploads().admit_unhashed(&caller, max).await {
        Ok(u) => u,
        Err(e) => return Err(refused(request, e.into()).await),
    };
    let multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if multipart {
        let mut form = <Multipart as axum::extract::FromRequest<()>>::from_request(request, &())
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let mut found = false;
        while let Some(mut field) = form.next_field().await.map_err(|e| ApiError::bad_request(e.body_text()))? {
            if field.file_name().is_none() && field.name() != Some("file") {
                continue;
            }
            found = true;
            while let Some(chunk) = tokio::time::timeout(stall, field.chunk())
                .await
                .map_err(|_| stalled())?
                .map_err(|e| ApiError::bad_request(e.body_text()))?
            {
                if let Err(e) = upload.push(chunk).await {
                    drain(field, stall).await;
                    return Err(push_err(e));
                }
            }
            break;
        }
        if !found {
            return Err(ApiError::bad_request("multipart body without a file part (a part with a filename, or named \"file\")"));
        }
    } else {
        let mut body = request.into_body().into_data_stream();
        while let Some(chunk) = tokio::time::timeout(stall, body.next()).await.map_err(|_| stalled())? {
            let chunk = chunk.map_err(|e| {
                if std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit")) {
                    too_large()
                } else {
                    ApiError::bad_request(format!("reading the body: {e}"))
                }
            })?;
            if let Err(e) = upload.push(chunk).await {
                drain(body, stall).await;
                return Err(push_err(e));
            }
        }
    }
    let r = s.core.uploads().scan_unhashed(&caller, upload).await?;
    let v = r.verdict.ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no verdict"))?;
    Ok(Json(ScanResponse { cached: r.cached, verdict: Verdict::from(&v) }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DetectionsQuery {
    /// Events at or after this Unix time in milliseconds (default: all kept).
    since: Option<i64>,
    /// Only events with this rule (`rule` or `namespace.rule`).
    rule: Option<String>,
    /// Only events with this ATT&CK technique (`T1059` also matches `T1059.001`).
    technique: Option<String>,
    /// Events per page, at most 1000 (default 100).
    limit: Option<usize>,
}

/// Recent detections, oldest first, paged by time.
#[utoipa::path(get, path = "/v1/detections", params(DetectionsQuery),
    responses((status = 200, body = DetectionsPage), (status = 400, body = model::ApiError), (status = 401, body = model::ApiError),
        (status = 403, body = model::ApiError), (status = 503, body = model::ApiError)))]
async fn detections(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Peer,
    q: Result<Query<DetectionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DetectionsPage>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::GetVerdict).await?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let query = FeedQuery {
        since: q.since.unwrap_or(0),
        rule: q.rule,
        technique: q.technique,
        limit: q.limit.map_or(0, |l| l.max(1)),
        level: None,
    };
    let page = s.core.feed().page(&caller, &query).await?;
    let (events, next_since) = (page.events, page.next_since);
    Ok(Json(DetectionsPage { events: events.iter().map(DetectionEvent::from).collect(), next_since }))
}

/// Which agents hold a content (sightings: agent id and sha256, never a
/// path), by sha256 or the md5/sha1 of a stored submission. Role `analyst`
/// or `admin`.
#[utoipa::path(get, path = "/v1/sightings/{hash}", params(("hash" = String, Path, description = "sha256, sha1 or md5 (hex)")),
    responses((status = 200, body = model::Sightings), (status = 400, body = model::ApiError), (status = 401, body = model::ApiError),
        (status = 403, body = model::ApiError), (status = 503, body = model::ApiError)))]
async fn sightings(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Peer,
    Path(hash): Path<String>,
) -> Result<Json<model::Sightings>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Inventory).await?;
    let hash = hash.trim().to_ascii_lowercase();
    let r = s.core.sightings().holders(&caller, &hash).await?;
    Ok(Json(model::Sightings::from(hash, &r)))
}

/// One agent: its inventory record and what it holds that is a detection
/// now. Role `analyst` or `admin`.
#[utoipa::path(get, path = "/v1/agents/{id}", params(("id" = String, Path, description = "agent id")),
    responses((status = 200, body = Agent), (status = 400, body = model::ApiError), (status = 401, body = model::ApiError),
        (status = 403, body = model::ApiError), (status = 404, body = model::ApiError), (status = 503, body = model::ApiError)))]
async fn agent(State(s): State<AppState>, headers: HeaderMap, p: Peer, Path(id): Path<String>) -> Result<Json<Agent>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Inventory).await?;
    let r = s.core.sightings().agent(&caller, &id).await?;
    Ok(Json(Agent::from(&r)))
}

/// Workers, their load, and the ruleset in force.
#[utoipa::path(get, path = "/v1/cluster",
    responses((status = 200, body = ClusterStatus), (status = 401, body = model::ApiError), (status = 403, body = model::ApiError)))]
async fn cluster(State(s): State<AppState>, headers: HeaderMap, p: Peer) -> Result<Json<ClusterStatus>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Status).await?;
    let st = s.core.status(&caller)?;
    let threads: u64 = st.workers.iter().map(|w| u64::from(w.threads)).sum();
    let busy = st.workers.iter().map(|w| w.in_flight).sum::<u64>().min(threads);
    let now = s.core.history().now();
    let (hits, misses) = (now.cache_hits, now.cache_misses);
    Ok(Json(ClusterStatus {
        version: st.version,
        ruleset_id: st.rules.map(|r| r.ruleset_id).unwrap_or_default(),
        threads,
        busy_threads: busy,
        workers: st
            .workers
            .into_iter()
            .map(|w| Worker {
                worker_id: w.worker_id,
                address: w.address,
                threads: w.threads,
                in_flight: w.in_flight,
                scanned: w.scanned,
                bytes_scanned: w.bytes_scanned,
                p99_ms: w.p99_us as f64 / 1000.0,
                ruleset_id: w.ruleset_id,
                last_heartbeat_ms: w.last_heartbeat_ms,
            })
            .collect(),
        store: st.store,
        store_healthy: st.store_healthy,
        store_error: st.store_error,
        busy_rejections: st.busy_rejections,
        cache_hits: hits,
        cache_misses: misses,
    }))
}

/// The rule files compiled, and the errors of the last failed reload.
#[utoipa::path(get, path = "/v1/rules",
    responses((status = 200, body = RulesStatus), (status = 401, body = model::ApiError), (status = 403, body = model::ApiError)))]
async fn rules(State(s): State<AppState>, headers: HeaderMap, p: Peer) -> Result<Json<RulesStatus>, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Status).await?;
    let r = s.core.overview().rules(&caller)?;
    let st = r.status;
    Ok(Json(RulesStatus {
        ruleset_id: st.ruleset_id,
        rule_count: st.rule_count,
        file_count: st.file_count,
        loaded_at_ms: st.loaded_at_ms,
        files: r.files.into_iter().map(|f| RuleFile { path: f.path, bytes: f.bytes }).collect(),
        last_errors: st.last_errors.into_iter().map(|e| RuleError::of(e.path, e.message)).collect(),
        last_error_at_ms: st.last_error_at_ms,
        warnings: r.warnings.into_iter().map(|(path, message)| RuleError::of(path, message)).collect(),
    }))
}

/// Prometheus metrics (a `metrics` or `admin` token).
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain"),
        (status = 401, body = model::ApiError), (status = 403, body = model::ApiError)))]
async fn metrics(State(s): State<AppState>, headers: HeaderMap, p: Peer) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, peer(&p), Op::Metrics).await?;
    let text = s.core.metrics(&caller)?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}

pub mod iocs {
    //! IOC lists over REST: list, add (import), remove.
    use super::*;
    use serde::Serialize;
    use utoipa::ToSchema;

    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    pub struct IocEntry {
        /// `block` or `allow`.
        pub list: String,
        /// `sha256`, `sha1` or `md5` (allow lists: sha256 only).
        pub kind: String,
        pub digest: String,
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub added_ms: i64,
        #[serde(default)]
        pub source: String,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct IocList {
        pub entries: Vec<IocEntry>,
        /// Pass as `after` for the next page; empty after the last.
        pub next: String,
        /// Entries on all lists.
        pub total: u64,
        /// Entries on the block list and on the allow list.
        pub block: u64,
        pub allow: u64,
    }

    #[derive(Debug, Deserialize, utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct IocQuery {
        /// The `next` of the previous page (`list:kind:digest`); absent: from the start.
        after: Option<String>,
        /// Entries per page, at most 10,000 (default 1,000).
        limit: Option<usize>,
    }

    #[derive(Debug, Deserialize, ToSchema)]
    pub struct IocAdd {
        /// `block` or `allow`.
        pub list: String,
        /// Entries as `{"digest": ..., "name": ...}` (kind from the length), or
        /// a text body in `text`: one digest per line with an optional name, or CSV.
        #[serde(default)]
        pub entries: Vec<IocEntryIn>,
        #[serde(default)]
        pub text: String,
    }

    #[derive(Debug, Deserialize, ToSchema)]
    pub struct IocEntryIn {
        pub digest: String,
        #[serde(default)]
        pub name: String,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct IocAdded {
        pub added: usize,
    }

    impl From<pb::IocEntry> for IocEntry {
        fn from(e: pb::IocEntry) -> Self {
            IocEntry { list: e.list, kind: e.kind, digest: e.digest, name: e.name, added_ms: e.added_ms, source: e.source }
        }
    }

    /// IOC entries, a page at a time in (list, kind, digest) order (an
    /// analyst or admin token).
    #[utoipa::path(get, path = "/v1/iocs", params(IocQuery),
        responses((status = 200, body = IocList), (status = 400, body = model::ApiError), (status = 401, body = model::ApiError),
            (status = 403, body = model::ApiError)))]
    pub async fn list_iocs(
        State(s): State<AppState>,
        headers: HeaderMap,
        p: Peer,
        q: Result<Query<IocQuery>, axum::extract::rejection::QueryRejection>,
    ) -> Result<Json<IocList>, ApiError> {
        let caller = s.caller(&headers, peer(&p), Op::GetVerdict).await?;
        let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
        let page = s.core.iocs().list(&caller, q.after.as_deref().unwrap_or(""), q.limit.unwrap_or(0)).await?;
        let (block, allow) = s.core.iocs().counts();
        Ok(Json(IocList {
            entries: page.entries.into_iter().map(IocEntry::from).collect(),
            next: page.next,
            total: page.total,
            block: block as u64,
            allow: allow as u64,
        }))
    }

    /// Add entries to a list (an admin token).
    #[utoipa::path(post, path = "/v1/iocs", request_body = IocAdd,
        responses((status = 200, body = IocAdded), (status = 400, body = model::ApiError), (status = 401, body = model::ApiError),
            (status = 403, body = model::ApiError)))]
    pub async fn add_iocs(
        State(s): State<AppState>,
        headers: HeaderMap,
        p: Peer,
        request: Request,
    ) -> Result<Json<IocAdded>, ApiError> {
        let caller = match s.caller(&headers, peer(&p), Op::Admin).await {
            Ok(c) => c,
            Err(e) => return Err(refused(request, e).await),
        };
        let req: IocAdd = json_body(request).await?;
        let mut text = req.text;
        for e in &req.entries {
            text.push_str(&format!("\n{},{}", e.digest, e.name.replace([',', '\n'], " ")));
        }
        let added = s.core.iocs().add(&caller, &req.list, &text, "rest").await?;
        Ok(Json(IocAdded { added }))
    }

    /// Remove one entry (an admin token).
    #[utoipa::path(delete, path = "/v1/iocs/{list}/{kind}/{digest}",
        params(("list" = String, Path), ("kind" = String, Path), ("digest" = String, Path)),
        responses((status = 204, description = "Removed"), (status = 404, body = model::ApiError), (status = 401, body = model::ApiError),
            (status = 403, body = model::ApiError)))]
    pub async fn remove_ioc(
        State(s): State<AppState>,
        headers: HeaderMap,
        p: Peer,
        Path((list, kind, digest)): Path<(String, String, String)>,
    ) -> Result<StatusCode, ApiError> {
        let caller = s.caller(&headers, peer(&p), Op::Admin).await?;
        if s.core.iocs().remove(&caller, &list, &kind, &digest.to_ascii_lowercase()).await? {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::not_found(format!("no {kind} {digest} on the {list} list")))
        }
    }
}
