//! Identity routes: OAuth 2.0 Token Exchange (RFC 8693) for workloads
//! presenting their platform's OIDC token, and delegation from a person or
//! workload to an agent.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sluice_core::audit::EventDraft;
use sluice_core::delegation::DelegateRequest;
use sluice_core::identity::{match_trust, TrustRule};
use sluice_core::store::TokenRecord;
use sluice_core::{Core, IssueRequest};

use crate::api::{ApiError, ApiResult};
use crate::login::{CodeLogin, Logins, SignedIn};
use crate::oidc::Verifier;

/// What token exchange and sign-in check tokens against.
pub struct Exchange {
    /// Verifies the subject tokens and ID tokens.
    pub verifier: Verifier,
    /// Turns verified workload claims into principals.
    pub rules: Vec<TrustRule>,
    /// Sign-ins in progress and renewable ones.
    pub logins: Logins,
    /// Where clients reach the PostgreSQL listener, for `sluice connect`.
    pub postgres_listen: String,
    /// Where clients reach the SSH listener.
    pub ssh_listen: String,
    /// Signs the short-lived client certificates of `sluice connect` to SSH
    /// connections (the client authority, which no target trusts).
    pub ssh_ca: Arc<sluice_ssh::keys::Authority>,
    /// The gateway's SSH host key (OpenSSH line), for clients to pin.
    pub ssh_host_key: String,
    /// Refusals recorded in the current minute: (minute start, count).
    pub refusals: std::sync::Mutex<(i64, u32)>,
}

/// Most refusals of unauthenticated requests recorded per minute: anyone
/// can send them, and the audit chain is kept forever.
const MAX_REFUSALS_RECORDED: u32 = 120;

impl Exchange {
    /// Whether one more refusal may be recorded this minute.
    fn may_record_refusal(&self) -> bool {
        let now = sluice_core::time::now_ms();
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if now - r.0 >= 60_000 {
            *r = (now, 0);
        }
        r.1 += 1;
        if r.1 == MAX_REFUSALS_RECORDED + 1 {
            tracing::warn!("more than {MAX_REFUSALS_RECORDED} refused exchanges or sign-ins this minute; the rest are not recorded one by one");
        }
        r.1 <= MAX_REFUSALS_RECORDED
    }
}

/// Routes that take the caller's own credential, and the exchange, which
/// takes none (the subject token is the credential).
pub fn router(core: Arc<Core>, exchange: Arc<Exchange>) -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/tokens/delegate", post(delegate))
        .route("/v1/connect", post(connect))
        .route("/v1/login/refresh", post(login_refresh))
        .route("/v1/login/logout", post(logout))
        .layer(middleware::from_fn_with_state(
            core,
            crate::api_reviews::require_caller,
        ))
        .route("/v1/token/exchange", post(exchange_token))
        .route("/v1/login/providers", get(login_providers))
        .route("/v1/login/code", post(login_code))
        .route("/v1/login/device", post(login_device))
        .route("/v1/login/device/poll", post(login_device_poll))
        .layer(Extension(exchange))
        // Tokens and codes are small; nobody needs to send megabytes here.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
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
        let record = exchange.may_record_refusal();
        // Reasons can quote what the caller sent (a parse error, say).
        let why = crate::oidc::short_reason(&why);
        async move {
            if !record {
                return oauth_error(code, why);
            }
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
    if claims.get("nonce").is_some() {
        // An ID token from a person's sign-in is not a workload's token.
        return refuse(
            "invalid_grant",
            "the token is an ID token from a sign-in (it has a nonce), not a workload token".into(),
            Some(issuer),
        )
        .await;
    }
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
                parent: None,
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

/// The providers people can sign in with, and what the CLI needs to send
/// them to the provider (PKCE).
async fn login_providers(
    Extension(x): Extension<Arc<Exchange>>,
) -> ApiResult<Json<serde_json::Value>> {
    let mut out = Vec::new();
    for issuer in x.verifier.login_issuers() {
        let Some(login) = &issuer.login else { continue };
        let doc = x
            .verifier
            .discovery(issuer)
            .await
            .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e))?;
        out.push(json!({
            "name": issuer.name, "issuer": issuer.issuer, "client_id": login.client_id,
            "scopes": login.scopes, "authorization_endpoint": doc["authorization_endpoint"],
            "device": doc["device_authorization_endpoint"].is_string(),
        }));
    }
    Ok(Json(json!(out)))
}

fn signed_in(s: SignedIn) -> Json<serde_json::Value> {
    Json(json!({"token": s.token, "record": s.record}))
}

/// Records a refused sign-in and answers with the reason.
async fn login_refused(core: &Core, x: &Exchange, why: String) -> ApiError {
    let why = crate::oidc::short_reason(&why);
    if !x.may_record_refusal() {
        return ApiError(StatusCode::UNAUTHORIZED, why);
    }
    let ev = EventDraft::new("login.refused", json!({ "reason": why }));
    if let Err(e) = core.record(ev).await {
        return ApiError::from(e);
    }
    ApiError(StatusCode::UNAUTHORIZED, why)
}

async fn login_code(
    State(core): State<Arc<Core>>,
    Extension(x): Extension<Arc<Exchange>>,
    Json(req): Json<CodeLogin>,
) -> ApiResult<Json<serde_json::Value>> {
    match x.logins.code(&core, &x.verifier, &req).await {
        Ok(s) => Ok(signed_in(s)),
        Err(why) => Err(login_refused(&core, &x, why).await),
    }
}

#[derive(Deserialize)]
struct DeviceStart {
    issuer: String,
}

async fn login_device(
    Extension(x): Extension<Arc<Exchange>>,
    Json(req): Json<DeviceStart>,
) -> ApiResult<Json<serde_json::Value>> {
    x.logins
        .device_start(&x.verifier, &req.issuer)
        .await
        .map(Json)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))
}

#[derive(Deserialize)]
struct DevicePoll {
    login_id: String,
}

async fn login_device_poll(
    State(core): State<Arc<Core>>,
    Extension(x): Extension<Arc<Exchange>>,
    Json(req): Json<DevicePoll>,
) -> ApiResult<Json<serde_json::Value>> {
    match x
        .logins
        .device_poll(&core, &x.verifier, &req.login_id)
        .await
    {
        Ok(Some(s)) => Ok(signed_in(s)),
        Ok(None) => Ok(Json(json!({"pending": true}))),
        Err(why) => Err(login_refused(&core, &x, why).await),
    }
}

async fn login_refresh(
    State(core): State<Arc<Core>>,
    Extension(x): Extension<Arc<Exchange>>,
    Extension(caller): Extension<TokenRecord>,
) -> ApiResult<Json<serde_json::Value>> {
    if caller.kind != "user" {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "renew a sign-in with its own credential".into(),
        ));
    }
    match x.logins.refresh(&core, &x.verifier, &caller).await {
        Ok(s) => Ok(signed_in(s)),
        Err(why) => Err(login_refused(&core, &x, why).await),
    }
}

/// Ends the caller's sign-in: its credential is revoked, and with it every
/// token connected or delegated from it.
async fn logout(
    State(core): State<Arc<Core>>,
    Extension(x): Extension<Arc<Exchange>>,
    Extension(caller): Extension<TokenRecord>,
) -> ApiResult<Json<serde_json::Value>> {
    // Only the person's own sign-in signs out: a token derived from it
    // (an agent's, a client's) must not end it.
    if caller.kind != "user" || caller.actor.is_some() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "sign out with your sign-in credential".into(),
        ));
    }
    // A renewed sign-in descends from the first: ending it ends them all.
    let mut root = caller.clone();
    while let Some(parent) = root.parent.clone() {
        match core.store().token_by_id(&parent).await? {
            Some(p)
                if p.kind == "user"
                    && p.principal == caller.principal
                    && p.actor.is_none()
                    && p.created_by
                        .as_deref()
                        .is_some_and(|c| c.starts_with("login:")) =>
            {
                root = p
            }
            _ => break,
        }
    }
    x.logins.forget(&[&caller.id, &root.id]).await;
    if root.revoked_at.is_none() {
        core.revoke_token(&root.id, &caller.principal).await?;
    } else {
        core.revoke_token(&caller.id, &caller.principal).await?;
    }
    Ok(Json(json!({"revoked": root.id})))
}

#[derive(Deserialize)]
struct ConnectRequest {
    connection: String,
    #[serde(default = "default_connect_ttl")]
    ttl_secs: u64,
    /// SSH connections: the client's new public key, to certify.
    #[serde(default)]
    public_key: Option<String>,
}

fn default_connect_ttl() -> u64 {
    1800
}

/// A connection token for the signed-in person, with where to connect.
async fn connect(
    State(core): State<Arc<Core>>,
    Extension(x): Extension<Arc<Exchange>>,
    Extension(caller): Extension<TokenRecord>,
    Json(req): Json<ConnectRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let kind = core
        .connections()
        .find(|c| c.name == req.connection)
        .map(|c| c.kind.clone())
        .unwrap_or_default();
    let subject = match (kind.as_str(), &req.public_key) {
        ("ssh", Some(k)) => Some(
            sluice_ssh::keys::parse_public(k)
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("public_key: {e}")))?,
        ),
        ("ssh", None) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "SSH connections need public_key: the key the certificate is for".into(),
            ))
        }
        _ => None,
    };
    let (token, rec) = core
        .connect_token(&caller, &req.connection, req.ttl_secs)
        .await?;
    if let Some(subject) = subject {
        // The certificate is the credential: it names the token, which
        // keeps expiry and revocation in one place; the token itself is
        // not handed out.
        let left = (rec.expires_at.unwrap_or(0) - sluice_core::time::now_ms()).max(0) as u64;
        let principals = [req.connection.clone()];
        let cert = x
            .ssh_ca
            .sign_user(
                &subject,
                &sluice_ssh::keys::UserCert {
                    key_id: &rec.id,
                    principals: &principals,
                    valid_for: std::time::Duration::from_millis(left),
                    extensions: &["permit-pty"],
                },
            )
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let cert = cert
            .to_openssh()
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let (host, port) = x
            .ssh_listen
            .rsplit_once(':')
            .unwrap_or((x.ssh_listen.as_str(), "2222"));
        return Ok(Json(json!({
            "record": rec, "kind": kind, "certificate": cert, "host_key": x.ssh_host_key,
            "host": host.trim_start_matches('[').trim_end_matches(']'), "port": port,
            "user": req.connection,
        })));
    }
    let (host, port) = x
        .postgres_listen
        .rsplit_once(':')
        .unwrap_or((x.postgres_listen.as_str(), "5432"));
    Ok(Json(json!({
        "token": token, "record": rec, "kind": kind,
        "host": host.trim_start_matches('[').trim_end_matches(']'), "port": port,
        "user": rec.principal, "database": req.connection,
    })))
}
