//! The console's sessions over REST, and the guards every response and
//! every cookie-authenticated request pass:
//!
//! - `POST /v1/session` logs in with a token (JSON `{"token": ...}` or a
//!   bearer header; `analyst` or `admin` only) and sets the session id in
//!   a `__Host-` cookie (Secure, HttpOnly, SameSite=Strict): never the
//!   token. `GET /v1/session` says who the caller is; `DELETE` logs out.
//! - A write (any method but GET, HEAD, OPTIONS) authenticated by the
//!   cookie must carry `x-qala-csrf: 1`, a header no cross-site form or
//!   simple request can send, and is refused if `Origin` names another
//!   origin or `Sec-Fetch-Site` says cross-site (`POST /v1/scan` takes
//!   bodies a cross-site form could send).
//! - Every answer carries `nosniff`, `no-referrer`, a Content-Security-
//!   Policy that allows nothing (the API serves data, not pages), no
//!   framing, and `no-store`.

use super::error::ApiError;
use super::request::{Peer, json_body, peer, refused};
use super::state::{AppState, SESSION_COOKIE, cookie};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/session`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// An `analyst` or `admin` token (or send it as a bearer header).
    #[serde(default)]
    pub token: String,
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub name: String,
    pub role: String,
    /// `session` (the console's cookie), `token` or `certificate`.
    pub via: String,
    /// A session's end at the latest (Unix ms; 0 otherwise).
    pub until_ms: i64,
    /// A session ends after this many seconds unused.
    pub idle_secs: u64,
}

/// Log in: a session for an analyst or admin token, in a cookie.
#[utoipa::path(post, path = "/v1/session", request_body = Login,
    responses((status = 200, body = WhoAmI), (status = 400, body = super::model::ApiError),
        (status = 401, body = super::model::ApiError), (status = 403, body = super::model::ApiError)))]
pub async fn login(State(s): State<AppState>, p: Peer, request: Request) -> Result<Response, ApiError> {
    let creds = s.credentials(request.headers(), peer(&p));
    let token = match creds.token {
        Some(t) => t,
        None => json_body::<Login>(request).await?.token.trim().to_string(),
    };
    if token.is_empty() {
        return Err(ApiError::bad_request("give the token: {\"token\": \"...\"} or an authorization header"));
    }
    let made = s.core.sessions().login(&token, creds.peer).await?;
    let max_age = (made.record.until_ms - made.record.created_ms) / 1000;
    let set = format!("{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}", made.id);
    let body = WhoAmI {
        name: made.caller.name.clone(),
        role: made.caller.role.label().to_string(),
        via: "session".into(),
        until_ms: made.record.until_ms,
        idle_secs: s.core.sessions().settings().idle.as_secs(),
    };
    let mut r = Json(body).into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&set).map_err(|e| ApiError::bad_request(e.to_string()))?);
    Ok(r)
}

/// Who the caller is (a session, a token or a client certificate).
#[utoipa::path(get, path = "/v1/session",
    responses((status = 200, body = WhoAmI), (status = 401, body = super::model::ApiError)))]
pub async fn whoami(State(s): State<AppState>, headers: HeaderMap, p: Peer) -> Result<Json<WhoAmI>, ApiError> {
    let creds = s.credentials(&headers, peer(&p));
    let idle_secs = s.core.sessions().settings().idle.as_secs();
    if creds.token.is_none()
        && creds.cert.is_none()
        && let Some(id) = cookie(&headers, SESSION_COOKIE)
    {
        let (caller, record) = s.core.sessions().resolve(id, creds.peer).await?;
        return Ok(Json(WhoAmI {
            name: caller.name,
            role: caller.role.label().into(),
            via: "session".into(),
            until_ms: record.until_ms,
            idle_secs,
        }));
    }
    let via = if creds.token.is_some() { "token" } else { "certificate" };
    let caller = s.core.identify(&creds)?;
    Ok(Json(WhoAmI { name: caller.name, role: caller.role.label().into(), via: via.into(), until_ms: 0, idle_secs: 0 }))
}

/// Log out: the session ends at every coordinator, the cookie is cleared.
#[utoipa::path(delete, path = "/v1/session",
    responses((status = 204, description = "Logged out"), (status = 401, body = super::model::ApiError)))]
pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(id) = cookie(&headers, SESSION_COOKIE) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "no session cookie"));
    };
    s.core.sessions().logout(id).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    let clear = format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear).expect("a fixed header"));
    Ok(r)
}

/// Refuse cross-site requests that ride on the console's cookie (and
/// logins from another site), before any handler runs.
pub async fn csrf_guard(request: Request, next: Next) -> Response {
    match cross_site(&request) {
        // The body is read (and dropped) first, so the client sees the answer.
        Some(why) => refused(
            request,
            ApiError::new(StatusCode::FORBIDDEN, "permission_denied", format!("cross-site request refused: {why}")),
        )
        .await
        .into_response(),
        None => next.run(request).await,
    }
}

/// Why `request` is a cross-site write riding on the session cookie (or a
/// login from another site), if it is one.
fn cross_site(request: &Request) -> Option<String> {
    let h = request.headers();
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let by_cookie = h.get(header::AUTHORIZATION).is_none() && cookie(h, SESSION_COOKIE).is_some();
    let login = request.uri().path() == "/v1/session" && request.method() == Method::POST;
    if safe || !(by_cookie || login) {
        return None;
    }
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if let Some(o) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && o != format!("https://{host}")
    {
        return Some(format!("origin {o:?} is not this server's"));
    }
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!("sec-fetch-site is {site:?}"));
    }
    if by_cookie && h.get("x-qala-csrf").and_then(|v| v.to_str().ok()) != Some("1") {
        return Some("a write with the session cookie needs the header x-qala-csrf: 1 (the console sends it)".into());
    }
    None
}

/// What every answer of the REST listener carries.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut r = next.run(request).await;
    let h = r.headers_mut();
    for (k, v) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    }
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    r
}
