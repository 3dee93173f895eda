//! Identity routes: OAuth 2.0 Token Exchange (RFC 8693) for workloads
//! presenting their platform's OIDC token, and delegation from a person or
//! workload to an agent.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sluice_core::audit::EventDraft;
use sluice_core::delegation::DelegateRequest;
use sluice_core::identity::{match_trust, TrustRule};
use sluice_core::store::TokenRecord;
use sluice_core::{Core, IssueRequest};

use crate::api::{ApiError, ApiResult};
use crate::oidc::Verifier;

/// What token exchange checks tokens against.
pub struct Exchange {
    /// Verifies the subject tokens.
    pub verifier: Verifier,
    /// Turns verified claims into principals.
    pub rules: Vec<TrustRule>,
}

/// Routes that take the caller's own credential, and the exchange, which
/// takes none (the subject token is the credential).
pub fn router(core: Arc<Core>, exchange: Arc<Exchange>) -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/tokens/delegate", post(delegate))
        .layer(middleware::from_fn_with_state(
            core,
            crate::api_reviews::require_caller,
        ))
        .route("/v1/token/exchange", post(exchange_token))
        .layer(Extension(exchange))
}

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An RFC 8693 request (form-encoded).
#[derive(Deserialize)]
struct ExchangeForm {
    grant_type: String,
    subject_token: String,
    subject_token_type: String,
    /// The connection wanted (RFC 8693 `resource`); all the rule allows when absent.
    resource: Option<String>,
    /// The lifetime wanted in seconds (sluice's extension); the rule's longest when absent.
    ttl: Option<u64>,
}

/// An OAuth error response (RFC 6749 section 5.2).
fn oauth_error(code: &str, description: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

/// Exchanges a workload's OIDC token for a sluice token under the trust
/// rules; every refusal is recorded with its reason (never the token).
async fn exchange_token(
    State(core): State<Arc<Core>>,
    Extension(exchange): Extension<Arc<Exchange>>,
    Form(form): Form<ExchangeForm>,
) -> Response {
    let refuse = |code: &'static str, why: String, issuer: Option<String>| {
        let core = core.clone();
        async move {
            let mut ev = EventDraft::new(
                "token.exchange_refused",
                json!({"issuer": issuer, "reason": why}),
            );
            ev.connection = None;
            if let Err(e) = core.record(ev).await {
                tracing::error!(error = %e, "could not record a refused exchange");
                return ApiError::from(e).into_response();
            }
            oauth_error(code, why)
        }
    };
    if form.grant_type != GRANT_TOKEN_EXCHANGE {
        return oauth_error(
            "unsupported_grant_type",
            format!("grant_type must be {GRANT_TOKEN_EXCHANGE}"),
        );
    }
    if form.subject_token_type != TYPE_JWT && form.subject_token_type != TYPE_ID_TOKEN {
        return oauth_error(
            "invalid_request",
            format!("subject_token_type must be {TYPE_JWT} or {TYPE_ID_TOKEN}"),
        );
    }
    if exchange.verifier.is_empty() {
        return oauth_error(
            "invalid_request",
            "this gateway trusts no identity provider ([[identity.issuers]])".into(),
        );
    }
    let (issuer, claims) = match exchange.verifier.verify(&form.subject_token).await {
        Ok(v) => v,
        Err(why) => return refuse("invalid_grant", why, None).await,
    };
    let trusted = match match_trust(&exchange.rules, &issuer, &claims) {
        Ok(t) => t,
        Err(why) => return refuse("invalid_grant", why, Some(issuer)).await,
    };
    let connections = match form.resource {
        Some(c) if trusted.connections.contains(&c) => vec![c],
        Some(c) => {
            return refuse(
                "invalid_target",
                format!(
                    "rule {:?} does not grant connection {c:?} (it grants: {})",
                    trusted.rule,
                    trusted.connections.join(", ")
                ),
                Some(issuer),
            )
            .await
        }
        None => trusted.connections.clone(),
    };
    let ttl = form
        .ttl
        .unwrap_or(u64::MAX)
        .min(trusted.max_ttl.as_secs())
        .max(1);
    let issued = core
        .issue_token(
            IssueRequest {
                principal: trusted.principal.clone(),
                actor: None,
                connections: connections.clone(),
                ttl_secs: ttl,
                uses: None,
                role: None,
                api: false,
                groups: trusted.groups.clone(),
            },
            &format!("exchange:{issuer}/{}", trusted.rule),
        )
        .await;
    match issued {
        Ok((token, rec)) => Json(json!({
            "access_token": token,
            "issued_token_type": TYPE_ACCESS_TOKEN,
            "token_type": "N_A",
            "expires_in": ttl,
            "principal": rec.principal,
            "connections": rec.connections,
            "sluice_token_id": rec.id,
        }))
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
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
