//! Identity routes: delegation from a person or workload to an agent.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::json;
use sluice_core::delegation::DelegateRequest;
use sluice_core::store::TokenRecord;
use sluice_core::Core;

use crate::api::{ApiError, ApiResult};

/// Routes that take the caller's own credential.
pub fn router(core: Arc<Core>) -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/tokens/delegate", post(delegate))
        .layer(middleware::from_fn_with_state(
            core,
            crate::api_reviews::require_caller,
        ))
}

/// Mints a token for an agent acting for the caller.
async fn delegate(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<TokenRecord>,
    Json(req): Json<DelegateRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    if caller.kind == "admin" {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "delegate with your own credential, not the admin credential".into(),
        ));
    }
    let (token, rec) = core.delegate(&caller, req).await?;
    Ok(Json(json!({"token": token, "record": rec})))
}
