//! The gateway's HTTP API: the one way in for every client command.
//! Every route here requires the admin credential as a bearer token; the
//! review routes (`api_reviews`) take any caller's credential.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sluice_core::audit::EventDraft;
use sluice_core::store::{SessionFilter, TokenRecord};
use sluice_core::{Core, CoreError, IssueRequest, StoreError};
use sluice_pg::tools::MaskTools;

/// An API error, rendered as `{"error": "..."}` with a status.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error in API");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unavailable".into(),
        )
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, m),
            CoreError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
            CoreError::Store(s) => s.into(),
        }
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

/// Builds the router.
pub fn router(
    core: Arc<Core>,
    tools: Arc<MaskTools>,
    exchange: Arc<crate::api_identity::Exchange>,
    recordings: Arc<Recordings>,
) -> Router {
    Router::new()
        .route("/v1/mask/test", post(mask_test))
        .route("/v1/mask/scan", post(mask_scan))
        .route("/v1/tokens", post(issue_token).get(list_tokens))
        .route("/v1/tokens/{id}/revoke", post(revoke_token))
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/{id}", get(show_session))
        .route("/v1/sessions/{id}/recordings/{file}", get(recording))
        .route("/v1/audit/verify", get(verify_audit))
        .route("/v1/connections", get(list_connections))
        .route("/v1/policy/reload", post(reload_policy))
        .layer(Extension(tools))
        .layer(Extension(recordings))
        .layer(middleware::from_fn_with_state(core.clone(), require_admin))
        .merge(crate::api_reviews::router(core.clone()))
        .merge(crate::api_identity::router(core.clone(), exchange))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(core)
}

async fn require_admin(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let found = core.check_admin(&bearer(&req)).await;
    admit(
        found,
        "missing or invalid admin credential: pass --config or set SLUICE_TOKEN",
        req,
        next,
    )
    .await
}

/// The bearer credential a request presents (empty without one).
pub(crate) fn bearer(req: &Request) -> String {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string()
}

/// Runs the request with the caller's record attached, or refuses it.
pub(crate) async fn admit(
    found: Result<Option<TokenRecord>, StoreError>,
    refusal: &str,
    mut req: Request,
    next: Next,
) -> Response {
    match found {
        Ok(Some(caller)) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Ok(None) => ApiError(StatusCode::UNAUTHORIZED, refusal.into()).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn issue_token(
    State(core): State<Arc<Core>>,
    Extension(admin): Extension<TokenRecord>,
    Json(req): Json<IssueRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let (token, rec) = core.issue_token(req, &admin.principal).await?;
    Ok(Json(json!({"token": token, "record": rec})))
}

#[derive(Deserialize)]
struct ListTokens {
    #[serde(default)]
    all: bool,
    /// API credentials instead of connection tokens.
    #[serde(default)]
    api: bool,
}

async fn list_tokens(
    State(core): State<Arc<Core>>,
    Query(q): Query<ListTokens>,
) -> ApiResult<Json<Vec<TokenRecord>>> {
    let now = sluice_core::time::now_ms();
    let kind = if q.api { "user" } else { "access" };
    let mut tokens = core.store().list_tokens(kind).await?;
    if !q.all {
        tokens.retain(|t| t.revoked_at.is_none() && t.expires_at.is_some_and(|e| e > now));
    }
    Ok(Json(tokens))
}

async fn revoke_token(
    State(core): State<Arc<Core>>,
    Extension(admin): Extension<TokenRecord>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    core.revoke_token(&id, &admin.principal).await?;
    Ok(Json(json!({"revoked": id})))
}

#[derive(Deserialize)]
struct ListSessions {
    connection: Option<String>,
    principal: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
}

fn parse_time(field: &str, v: Option<String>) -> ApiResult<Option<i64>> {
    v.map(|s| {
        sluice_core::time::parse_time_or_ago(&s).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("{field}: expected RFC 3339 time or a duration ago (2h), got {s:?}"),
            )
        })
    })
    .transpose()
}

async fn list_sessions(
    State(core): State<Arc<Core>>,
    Query(q): Query<ListSessions>,
) -> ApiResult<Json<serde_json::Value>> {
    let filter = SessionFilter {
        connection: q.connection,
        principal: q.principal,
        since: parse_time("since", q.since)?,
        until: parse_time("until", q.until)?,
        limit: q.limit,
    };
    Ok(Json(json!(core.store().list_sessions(filter).await?)))
}

async fn show_session(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    core.flush_audit().await?;
    let Some(session) = core.store().session(&id).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no session with id {id}"),
        ));
    };
    let events = core.store().session_events(&id).await?;
    let events: Vec<serde_json::Value> = events
        .into_iter()
        .map(|e| {
            json!({"seq": e.seq, "ts": e.ts, "kind": e.kind,
                   "data": serde_json::from_str::<serde_json::Value>(&e.data).unwrap_or(json!(e.data))})
        })
        .collect();
    Ok(Json(json!({"session": session, "events": events})))
}

/// Where recordings are kept.
pub struct Recordings(pub std::path::PathBuf);

/// One recording of a session, only as the audit chain names it and only
/// if its bytes still have the digest recorded when it was closed.
async fn recording(
    State(core): State<Arc<Core>>,
    Extension(dir): Extension<Arc<Recordings>>,
    Path((id, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    core.flush_audit().await?;
    let events = core.store().session_events(&id).await?;
    let recorded = events
        .iter()
        .filter(|e| e.kind == "recording")
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
        .find(|d| d["file"].as_str() == Some(file.as_str()));
    let Some(recorded) = recorded else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("session {id} has no recording named {file:?}"),
        ));
    };
    let bytes = tokio::fs::read(dir.0.join(&file)).await.map_err(|e| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("recording {file} cannot be read: {e}"),
        )
    })?;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    if recorded["sha256"].as_str() != Some(digest.as_str()) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("recording {file} was altered after it was closed: its SHA-256 is not the one in the audit chain"),
        ));
    }
    Ok(([(header::CONTENT_TYPE, "application/x-asciicast")], bytes).into_response())
}

async fn verify_audit(State(core): State<Arc<Core>>) -> ApiResult<Json<serde_json::Value>> {
    core.flush_audit().await?;
    Ok(Json(json!(core.store().verify_chain().await?)))
}

async fn list_connections(State(core): State<Arc<Core>>) -> Json<serde_json::Value> {
    let list: Vec<serde_json::Value> = core
        .connections()
        .map(|c| json!({"name": c.name, "kind": c.kind, "address": c.address, "database": c.database, "tags": c.tags}))
        .collect();
    Json(json!(list))
}

#[derive(Deserialize)]
struct MaskTestBody {
    connection: String,
    sql: String,
}

/// What a masked principal would receive for a read; recorded as an admin
/// action (the record holds the statement, never a value).
async fn mask_test(
    State(core): State<Arc<Core>>,
    Extension(admin): Extension<TokenRecord>,
    Extension(tools): Extension<Arc<MaskTools>>,
    Json(body): Json<MaskTestBody>,
) -> ApiResult<Json<serde_json::Value>> {
    record_admin_action(
        &core,
        &admin,
        "mask.test",
        &body.connection,
        json!({"connection": body.connection, "sql": body.sql}),
    )
    .await?;
    let report = tools
        .test(&body.connection, &body.sql)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(json!(report)))
}

#[derive(Deserialize)]
struct MaskScanBody {
    connection: String,
    #[serde(default)]
    all: bool,
}

/// Columns whose sampled values trip a detector, with no rule (or all).
async fn mask_scan(
    State(core): State<Arc<Core>>,
    Extension(admin): Extension<TokenRecord>,
    Extension(tools): Extension<Arc<MaskTools>>,
    Json(body): Json<MaskScanBody>,
) -> ApiResult<Json<serde_json::Value>> {
    record_admin_action(
        &core,
        &admin,
        "mask.scan",
        &body.connection,
        json!({"connection": body.connection}),
    )
    .await?;
    let findings = tools
        .scan(&body.connection, body.all)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(json!({"findings": findings})))
}

/// Records an admin's action on a connection before it is carried out.
async fn record_admin_action(
    core: &Core,
    admin: &TokenRecord,
    kind: &str,
    connection: &str,
    data: serde_json::Value,
) -> Result<(), StoreError> {
    let mut ev = EventDraft::new(kind, data);
    ev.principal = Some(admin.principal.clone());
    ev.connection = Some(connection.to_string());
    core.record(ev).await
}

async fn reload_policy(
    State(core): State<Arc<Core>>,
    Extension(admin): Extension<TokenRecord>,
) -> ApiResult<Json<serde_json::Value>> {
    let engine = core.reload_policy(&admin.principal).await?;
    Ok(Json(
        json!({"policies": engine.ids, "digest": engine.digest}),
    ))
}
