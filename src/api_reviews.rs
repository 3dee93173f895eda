//! The review routes of the API: the approvers' inbox and decisions, the
//! requesters' access requests and waits. Any caller with a credential may
//! use them: the admin credential, a principal's API credential, or a
//! connection token (which sees, waits for and cancels its own reviews,
//! and nothing else).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sluice_core::policy::Principal;
use sluice_core::review::{ReviewRecord, ReviewState};
use sluice_core::reviews::AccessRequest;
use sluice_core::store::TokenRecord;
use sluice_core::Core;

use crate::api::{admit, bearer, ApiError, ApiResult};

/// Routes for reviews and access requests.
pub fn router(core: Arc<Core>) -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/reviews", get(list))
        .route("/v1/reviews/{id}", get(show))
        .route("/v1/reviews/{id}/wait", get(wait))
        .route("/v1/reviews/{id}/approve", post(approve))
        .route("/v1/reviews/{id}/deny", post(deny))
        .route("/v1/reviews/{id}/cancel", post(cancel))
        .route("/v1/requests", post(request_access))
        .route("/v1/requests/{id}/token", post(claim_token))
        .layer(middleware::from_fn_with_state(core, require_caller))
}

pub(crate) async fn require_caller(
    State(core): State<Arc<Core>>,
    req: Request,
    next: Next,
) -> Response {
    let found = core.check_caller(&bearer(&req)).await;
    admit(
        found,
        "missing, expired or revoked credential: set SLUICE_TOKEN to your API credential or connection token",
        req,
        next,
    )
    .await
}

fn is_admin(caller: &TokenRecord) -> bool {
    caller.kind == "admin"
}

/// Whether the caller (principal and agent alike) asked for the review.
fn is_own(caller: &TokenRecord, r: &ReviewRecord) -> bool {
    r.principal == caller.principal
        && r.actor == caller.actor
        && r.delegated == caller.delegated_agent()
}

/// The caller's own review, or one they may decide, or any for the admin.
fn may_see(core: &Core, caller: &TokenRecord, r: &ReviewRecord) -> bool {
    is_admin(caller)
        || is_own(caller, r)
        || (caller.kind == "user"
            && caller.actor.is_none()
            && core
                .may_decide(&caller.principal, &caller.groups, r)
                .is_ok())
}

async fn visible(core: &Core, caller: &TokenRecord, id: &str) -> ApiResult<ReviewRecord> {
    let r = core.review(id).await?;
    if !may_see(core, caller, &r) {
        // Not told apart from a missing one: ids are not to be probed.
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no review with id {id}"),
        ));
    }
    Ok(r)
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<i64>,
}

/// Pending reviews the caller may decide or asked for (all, for the admin).
async fn list(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<TokenRecord>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let state = match q.state.as_deref().unwrap_or("pending") {
        "pending" => ReviewState::Pending,
        "approved" => ReviewState::Approved,
        "denied" => ReviewState::Denied,
        "expired" => ReviewState::Expired,
        "executed" => ReviewState::Executed,
        "cancelled" => ReviewState::Cancelled,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                "unknown state {other:?} (pending, approved, denied, expired, executed, cancelled)"
            ),
            ))
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let reviews: Vec<ReviewRecord> = core
        .reviews(state, limit)
        .await?
        .into_iter()
        .filter(|r| may_see(&core, &caller, r))
        .collect();
    Ok(Json(json!(reviews)))
}

async fn show(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<TokenRecord>,
    Path(id): Path<String>,
) -> ApiResult<Json<ReviewRecord>> {
    Ok(Json(visible(&core, &caller, &id).await?))
}

#[derive(Deserialize)]
struct WaitQuery {
    timeout_secs: Option<u64>,
}

/// Long poll: answers when the review is no longer pending, or after the
/// timeout (at most 60 s) with it still pending.
async fn wait(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<TokenRecord>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<ReviewRecord>> {
    visible(&core, &caller, &id).await?;
    let timeout = Duration::from_secs(q.timeout_secs.unwrap_or(25).min(60));
    let deadline = sluice_core::time::now_ms() + timeout.as_millis() as i64;
    Ok(Json(core.wait_review(&id, deadline).await?))
}

#[derive(Deserialize, Default)]
struct Decision {
    reason: Option<String>,
}

/// Only people decide: agents (tokens with an actor) and connection tokens may not.
fn decider(caller: &TokenRecord) -> ApiResult<&str> {
    if caller.actor.is_some() || caller.kind != "user" {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "reviews are decided by people with their own API credential (sluice token issue --api), not by agents, connection tokens or the admin credential".into(),
        ));
    }
    Ok(&caller.principal)
}

/// Records the caller's approval (or denial) of a review.
async fn vote(
    core: &Core,
    caller: &TokenRecord,
    id: &str,
    body: Option<Json<Decision>>,
    approve: bool,
) -> ApiResult<Json<ReviewRecord>> {
    let by = decider(caller)?;
    let reason = body.and_then(|b| b.0.reason);
    Ok(Json(
        core.vote(id, by, &caller.groups, approve, reason).await?,
    ))
}

async fn approve(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<TokenRecord>,
    Path(id): Path<String>,
    body: Option<Json<Decision>>,
) -> ApiResult<Json<ReviewRecord>> {
    vote(&core, &caller, &id, body, true).await
}

async fn deny(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<TokenRecord>,
    Path(id): Path<String>,
    body: Option<Json<Decision>>,
) -> ApiResult<Json<ReviewRecord>> {
    vote(&core, &caller, &id, body, false).await
}

/// The requester or the admin withdraws a review.
async fn cancel(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<TokenRecord>,
    Path(id): Path<String>,
    body: Option<Json<Decision>>,
) -> ApiResult<Json<ReviewRecord>> {
    let r = visible(&core, &caller, &id).await?;
    if !(is_admin(&caller) || is_own(&caller, &r)) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "only the requester or the admin may cancel a review".into(),
        ));
    }
    let reason = body.and_then(|b| b.0.reason);
    Ok(Json(
        core.cancel_review(&id, &caller.principal, reason).await?,
    ))
}

/// Access is requested (and its token claimed) with an API credential
/// only: a connection token must not trade itself for a fresh, wider one.
fn requester(caller: &TokenRecord) -> ApiResult<Principal> {
    if caller.kind != "user" {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "access is requested with your own API credential (sluice token issue --api), not with the admin credential or a connection token".into(),
        ));
    }
    Ok(Principal {
        name: caller.principal.clone(),
        actor: caller.actor.clone(),
        groups: caller.groups.clone(),
        delegated: false,
    })
}

async fn request_access(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<TokenRecord>,
    Json(req): Json<AccessRequest>,
) -> ApiResult<Json<ReviewRecord>> {
    let who = requester(&caller)?;
    Ok(Json(core.request_access(&who, req).await?))
}

/// Issues the granted token, once, to the requester.
async fn claim_token(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<TokenRecord>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = requester(&caller)?;
    let (token, rec) = core.claim_access(&id, &who, &caller.id).await?;
    Ok(Json(json!({"token": token, "record": rec})))
}
