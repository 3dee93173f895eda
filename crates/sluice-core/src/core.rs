//! The core facade every protocol adapter talks to: authenticate a token for
//! a connection, open a recorded session, record commands before they are
//! forwarded, and learn when the session's token stops being valid.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast;

use crate::audit::EventDraft;
use crate::journal::Journal;
use crate::masking::Masking;
use crate::policy::{Decision, Effect, PolicyEngine, PolicySource, Principal, SessionDecider};
use crate::review::ReviewSettings;
use crate::reviews::ReviewNotice;
use crate::store::{SessionRecord, StoreError, TokenRecord};
use crate::time::now_ms;
use crate::{token, Classification, Command, CommandOutcome, Connection, Store};

/// Why a presented token was refused. Messages name the next step.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not a token the gateway issued.
    #[error("invalid token: present a token from `sluice token issue` as the password")]
    Invalid,
    /// Past its expiry.
    #[error("token expired at {0}; request a new one")]
    Expired(String),
    /// Revoked by an administrator.
    #[error("token was revoked; request a new one")]
    Revoked,
    /// Its use count is spent.
    #[error("token has no uses left; request a new one")]
    UsedUp,
    /// Valid, but for other connections.
    #[error("token is not valid for connection \"{0}\"")]
    WrongConnection(String),
    /// Issued to another principal than the user name given.
    #[error("token belongs to another principal: connect with user={0}")]
    WrongUser(String),
    /// The store could not be reached; fail closed.
    #[error("gateway store unavailable")]
    Store(#[from] StoreError),
}

/// Errors from core operations other than authentication.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The request is invalid; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// Nothing with that id.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Policy refused the connection; the decision says why.
    #[error("{}", .0.reason)]
    Refused(Decision),
    /// The session start could not be recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a valid token grants on one connection.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's public id.
    pub token_id: String,
    /// Accountable principal.
    pub principal: String,
    /// Acting agent, if any.
    pub actor: Option<String>,
    /// The connection it opens.
    pub connection: Arc<Connection>,
    /// Unix ms.
    pub expires_at: i64,
    /// The token's role on the connection, if narrowed.
    pub role: Option<String>,
    /// Groups from the principal's identity provider.
    pub groups: Vec<String>,
    /// The actor was named by a delegator, not an administrator.
    pub delegated: bool,
}

/// A request to issue an access token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IssueRequest {
    /// Accountable principal.
    pub principal: String,
    /// Agent acting for it.
    #[serde(default)]
    pub actor: Option<String>,
    /// Connections it opens.
    pub connections: Vec<String>,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
    /// Connection count limit.
    #[serde(default)]
    pub uses: Option<i64>,
    /// A narrower role (`read-only`, or a name policies read as `context.role`).
    #[serde(default)]
    pub role: Option<String>,
    /// An API credential for the principal (reviews, access requests)
    /// instead of a connection token.
    #[serde(default)]
    pub api: bool,
    /// Groups (sluice group names) the principal is in besides `[policy.groups]`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The token this one comes from (a renewed sign-in): revoking that
    /// revokes this. Set by the gateway only.
    #[serde(skip)]
    pub parent: Option<String>,
}

/// What a client presented to prove it holds a token.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// The token itself (a password).
    Secret(&'a str),
    /// A token's id, from a credential the gateway issued for that token
    /// and has verified itself (an SSH certificate signed by its CA).
    Vouched(&'a str),
}

/// The role every adapter enforces itself: reads only, whatever policy allows.
pub const READ_ONLY_ROLE: &str = "read-only";

/// The gateway core shared by all listeners.
pub struct Core {
    pub(crate) store: Store,
    journal: Arc<Journal>,
    pub(crate) connections: BTreeMap<String, Arc<Connection>>,
    revocations: broadcast::Sender<String>,
    pub(crate) max_ttl: Duration,
    policy: RwLock<Arc<PolicyEngine>>,
    policy_source: PolicySource,
    pub(crate) groups: BTreeMap<String, Vec<String>>,
    masking: Arc<Masking>,
    pub(crate) reviews: ReviewSettings,
    pub(crate) review_changes: broadcast::Sender<String>,
    pub(crate) review_notices: broadcast::Sender<ReviewNotice>,
    /// New reviews per principal in the current minute: (minute start, count).
    pub(crate) review_budget: Mutex<std::collections::HashMap<String, (i64, u32)>>,
}

/// Where the core's policies come from, and the groups they refer to.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// The policy files (or the defaults).
    pub source: PolicySource,
    /// Group name to members (principal or agent names).
    pub groups: BTreeMap<String, Vec<String>>,
}

impl Core {
    /// Builds the core over a store and the configured connections;
    /// fails with a readable message when the policies are invalid.
    pub fn new(
        store: Store,
        journal: Arc<Journal>,
        connections: Vec<Connection>,
        max_ttl: Duration,
        policy: PolicyConfig,
        masking: Masking,
        reviews: ReviewSettings,
    ) -> Result<Arc<Core>, String> {
        let engine = PolicyEngine::load(&policy.source, &policy.groups)?;
        let (revocations, _) = broadcast::channel(1024);
        let (review_changes, _) = broadcast::channel(1024);
        let (review_notices, _) = broadcast::channel(1024);
        Ok(Arc::new(Core {
            store,
            journal,
            connections: connections
                .into_iter()
                .map(|c| (c.name.clone(), Arc::new(c)))
                .collect(),
            revocations,
            max_ttl,
            policy: RwLock::new(Arc::new(engine)),
            policy_source: policy.source,
            groups: policy.groups,
            masking: Arc::new(masking),
            reviews,
            review_changes,
            review_notices,
            review_budget: Mutex::default(),
        }))
    }

    /// How masked sessions are masked.
    pub fn masking(&self) -> Arc<Masking> {
        self.masking.clone()
    }

    /// The policies in force.
    pub fn policy(&self) -> Arc<PolicyEngine> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the policy files; on an invalid policy the old ones stay in
    /// force and the error is returned. Both outcomes are audit events.
    pub async fn reload_policy(&self, by: &str) -> Result<Arc<PolicyEngine>, CoreError> {
        match PolicyEngine::load(&self.policy_source, &self.groups) {
            Ok(engine) => {
                let engine = Arc::new(engine);
                *self.policy.write().unwrap_or_else(|p| p.into_inner()) = engine.clone();
                self.record(EventDraft::new(
                    "policy.reloaded",
                    json!({"digest": engine.digest, "policies": engine.ids, "by": by}),
                ))
                .await?;
                Ok(engine)
            }
            Err(e) => {
                self.record(EventDraft::new(
                    "policy.reload_failed",
                    json!({"error": e, "by": by}),
                ))
                .await?;
                Err(CoreError::Invalid(format!(
                    "policies not reloaded, the previous ones stay in force: {e}"
                )))
            }
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// All configured connections.
    pub fn connections(&self) -> impl Iterator<Item = &Arc<Connection>> {
        self.connections.values()
    }

    /// Records one event; on return it survives a gateway crash.
    pub async fn record(&self, draft: EventDraft) -> Result<(), StoreError> {
        self.journal.append(&[draft])
    }

    /// Waits until every event recorded so far is in the store's chain.
    pub async fn flush_audit(&self) -> Result<(), StoreError> {
        self.journal.flush().await
    }

    /// Issues an access token; returns the token (shown once) and its record.
    pub async fn issue_token(
        &self,
        req: IssueRequest,
        issued_by: &str,
    ) -> Result<(String, TokenRecord), CoreError> {
        if req.principal.trim().is_empty() {
            return Err(CoreError::Invalid("principal must not be empty".into()));
        }
        if req.connections.is_empty() && !req.api {
            return Err(CoreError::Invalid("name at least one connection".into()));
        }

        for c in &req.connections {
            if !self.connections.contains_key(c) {
                let known: Vec<&str> = self.connections.keys().map(String::as_str).collect();
                return Err(CoreError::Invalid(format!(
                    "unknown connection \"{c}\" (configured: {})",
                    known.join(", ")
                )));
            }
        }
        if req.ttl_secs == 0 || Duration::from_secs(req.ttl_secs) > self.max_ttl {
            return Err(CoreError::Invalid(format!(
                "ttl must be between 1s and {} (gateway.max_token_ttl)",
                humantime::format_duration(self.max_ttl)
            )));
        }
        if let Some(role) = req
            .role
            .as_deref()
            .filter(|r| !crate::review::valid_role(r))
        {
            return Err(CoreError::Invalid(format!(
                "role {role:?}: use lower-case ASCII letters, digits, - and _"
            )));
        }
        if matches!(req.uses, Some(n) if n < 1) {
            return Err(CoreError::Invalid("uses must be at least 1".into()));
        }
        let value = token::generate();
        let now = now_ms();
        let rec = TokenRecord {
            id: token::new_id("tok_"),
            hash: token::hash(&value),
            kind: if req.api { "user" } else { "access" }.into(),
            principal: req.principal.clone(),
            actor: req.actor.clone(),
            connections: req.connections.clone(),
            created_at: now,
            expires_at: Some(now + req.ttl_secs as i64 * 1000),
            uses_left: req.uses,
            revoked_at: None,
            created_by: Some(issued_by.to_string()),
            role: req.role.clone(),
            parent: req.parent.clone(),
            groups: req.groups.clone(),
        };
        self.store.insert_token(rec.clone()).await?;
        let mut ev = EventDraft::new(
            "token.issued",
            json!({"token_id": rec.id, "connections": rec.connections, "expires_at": rec.expires_at,
                   "uses": rec.uses_left, "role": rec.role, "issued_by": issued_by}),
        );
        ev.principal = Some(rec.principal.clone());
        ev.actor = rec.actor.clone();
        self.record(ev).await?;
        Ok((value, rec))
    }

    /// Creates a new admin credential for the API; returns the value once.
    pub async fn issue_admin_token(&self, label: &str) -> Result<String, StoreError> {
        let value = token::generate();
        let rec = TokenRecord {
            id: token::new_id("adm_"),
            hash: token::hash(&value),
            kind: "admin".into(),
            principal: label.to_string(),
            actor: None,
            connections: vec![],
            created_at: now_ms(),
            expires_at: None,
            uses_left: None,
            revoked_at: None,
            created_by: None,
            role: None,
            parent: None,
            groups: Vec::new(),
        };
        self.store.insert_token(rec.clone()).await?;
        let mut ev = EventDraft::new("admin.credential.created", json!({"token_id": rec.id}));
        ev.principal = Some(label.to_string());
        self.record(ev).await?;
        Ok(value)
    }

    /// The admin record for a presented API credential, if it is one.
    pub async fn check_admin(&self, presented: &str) -> Result<Option<TokenRecord>, StoreError> {
        if !token::looks_like_token(presented) {
            return Ok(None);
        }
        Ok(self
            .store
            .token_by_hash(&token::hash(presented))
            .await?
            .filter(|t| t.kind == "admin" && t.revoked_at.is_none()))
    }

    /// Who a presented API credential is: the admin credential, a
    /// principal's API credential, or a valid connection token (which may
    /// only see and wait for its own reviews).
    pub async fn check_caller(&self, presented: &str) -> Result<Option<TokenRecord>, StoreError> {
        if !token::looks_like_token(presented) {
            return Ok(None);
        }
        let now = now_ms();
        Ok(self
            .store
            .token_by_hash(&token::hash(presented))
            .await?
            .filter(|t| {
                t.revoked_at.is_none()
                    && t.uses_left != Some(0)
                    && (t.kind == "admin"
                        || (matches!(t.kind.as_str(), "user" | "access")
                            && t.expires_at.is_some_and(|e| e > now)))
            }))
    }

    /// Revokes a token; open sessions that depend on it are closed.
    pub async fn revoke_token(&self, id: &str, by: &str) -> Result<(), CoreError> {
        let Some(rec) = self.store.token_by_id(id).await? else {
            return Err(CoreError::NotFound(format!("no token with id {id}")));
        };
        if !self.store.revoke_token(id, now_ms()).await? {
            return Err(CoreError::Invalid(format!("token {id} is already revoked")));
        }
        let _ = self.revocations.send(id.to_string());
        let mut ev = EventDraft::new("token.revoked", json!({"token_id": id, "revoked_by": by}));
        ev.principal = Some(rec.principal);
        ev.actor = rec.actor;
        self.record(ev).await?;
        self.revoke_descendants(id, by).await
    }

    /// Revokes everything delegated, connected or renewed from a token,
    /// however deep (also below tokens revoked before).
    pub(crate) async fn revoke_descendants(&self, id: &str, by: &str) -> Result<(), CoreError> {
        let mut pending = vec![id.to_string()];
        let mut seen = std::collections::HashSet::new();
        while let Some(parent) = pending.pop() {
            if !seen.insert(parent.clone()) {
                continue;
            }
            for child in self.store.children_of(&parent).await? {
                pending.push(child.clone());
                if self.store.revoke_token(&child, now_ms()).await? {
                    let _ = self.revocations.send(child.clone());
                    let mut ev = EventDraft::new(
                        "token.revoked",
                        json!({"token_id": child, "revoked_by": by, "because_revoked": parent}),
                    );
                    if let Some(c) = self.store.token_by_id(&child).await? {
                        ev.principal = Some(c.principal);
                        ev.actor = c.actor;
                    }
                    self.record(ev).await?;
                }
            }
        }
        Ok(())
    }

    /// Checks a credential for a connection and, where the protocol names
    /// one, the client's user name (which must be the token's principal).
    /// Failures are recorded (without the token) and returned with a reason.
    pub async fn authenticate(
        &self,
        credential: Credential<'_>,
        user: Option<&str>,
        connection: &str,
        protocol: &str,
        client_addr: &str,
    ) -> Result<Grant, AuthError> {
        let result = self.check_token(credential, user, connection).await;
        if let Err(e) = &result {
            // Names chosen by an unauthenticated client: bounded in the log.
            let user = user.unwrap_or("");
            let user = &user[..user.floor_char_boundary(256)];
            let connection = &connection[..connection.floor_char_boundary(256)];
            let mut ev = EventDraft::new(
                "auth.failed",
                json!({"protocol": protocol, "client_addr": client_addr, "user": user, "reason": e.to_string()}),
            );
            ev.connection = Some(connection.to_string());
            ev.principal = Some(user.to_string());
            if let Err(store) = self.record(ev).await {
                tracing::error!(error = %store, "could not record a failed authentication");
            }
        }
        result
    }

    async fn check_token(
        &self,
        credential: Credential<'_>,
        user: Option<&str>,
        connection: &str,
    ) -> Result<Grant, AuthError> {
        let found = match credential {
            Credential::Secret(presented) => {
                if !token::looks_like_token(presented) {
                    return Err(AuthError::Invalid);
                }
                self.store.token_by_hash(&token::hash(presented)).await?
            }
            Credential::Vouched(id) => self.store.token_by_id(id).await?,
        };
        let Some(t) = found else {
            return Err(AuthError::Invalid);
        };
        if t.kind != "access" {
            return Err(AuthError::Invalid);
        }
        if t.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        let expires_at = t.expires_at.unwrap_or(0);
        if expires_at <= now_ms() {
            return Err(AuthError::Expired(crate::time::format_ms(expires_at)));
        }
        if !t.connections.iter().any(|c| c == connection) {
            return Err(AuthError::WrongConnection(connection.to_string()));
        }
        let Some(conn) = self.connections.get(connection) else {
            return Err(AuthError::WrongConnection(connection.to_string()));
        };
        if user.is_some_and(|u| u != t.principal) {
            return Err(AuthError::WrongUser(t.principal));
        }
        if t.uses_left.is_some() && !self.store.consume_token_use(&t.id).await? {
            return Err(AuthError::UsedUp);
        }
        // Recorded when the token was made, not guessed from its parent: an
        // administrator's agent keeps its name through an access grant.
        let delegated = t.delegated_agent();
        Ok(Grant {
            token_id: t.id,
            principal: t.principal,
            actor: t.actor,
            connection: conn.clone(),
            expires_at,
            role: t.role,
            groups: t.groups,
            delegated,
        })
    }

    /// Opens a recorded session for a grant; the start is durable on return.
    pub async fn open_session(
        self: &Arc<Self>,
        grant: &Grant,
        protocol: &str,
        client_addr: &str,
    ) -> Result<SessionHandle, OpenError> {
        let engine = self.policy();
        let who = Principal {
            name: grant.principal.clone(),
            actor: grant.actor.clone(),
            groups: grant.groups.clone(),
            delegated: grant.delegated,
        };
        let entities = engine
            .entities(&who, &grant.connection)
            .with_role(grant.role.clone());
        let connect = engine.decide_connect(&entities, now_ms());
        if connect.effect != Effect::Allow {
            let mut ev = EventDraft::new(
                "session.refused",
                json!({"protocol": protocol, "client_addr": client_addr,
                       "token_id": grant.token_id, "decision": connect}),
            );
            ev.principal = Some(grant.principal.clone());
            ev.actor = grant.actor.clone();
            ev.connection = Some(grant.connection.name.clone());
            self.record(ev).await?;
            return Err(OpenError::Refused(connect));
        }
        let rec = SessionRecord {
            id: token::new_id("ses_"),
            token_id: Some(grant.token_id.clone()),
            principal: grant.principal.clone(),
            actor: grant.actor.clone(),
            connection: grant.connection.name.clone(),
            protocol: protocol.to_string(),
            client_addr: client_addr.to_string(),
            started_at: now_ms(),
            ended_at: None,
            bytes_in: 0,
            bytes_out: 0,
            outcome: "open".into(),
        };
        self.store.insert_session(rec.clone()).await?;
        let unmask = engine.decide_unmask(&entities, now_ms());
        let handle = SessionHandle {
            core: self.clone(),
            id: rec.id,
            principal: rec.principal,
            actor: rec.actor,
            connection: rec.connection,
            token_id: grant.token_id.clone(),
            expires_at: grant.expires_at,
            role: grant.role.clone(),
            groups: grant.groups.clone(),
            delegated: grant.delegated,
            commands: AtomicU64::new(0),
            connection_config: grant.connection.clone(),
            policy: Mutex::new(SessionDecider::new(engine, entities)),
            masking: (unmask.effect != Effect::Allow).then(|| self.masking.clone()),
        };
        let mut start =
            json!({"protocol": protocol, "client_addr": client_addr, "token_id": grant.token_id});
        if connect.shadow.is_some() {
            start["decision"] = json!(connect);
        }
        self.record(handle.event("session.start", start)).await?;
        if unmask.effect == Effect::Allow {
            // Clear values are an exception worth a record of its own.
            self.record(handle.event("session.unmasked", json!({ "decision": unmask })))
                .await?;
        }
        Ok(handle)
    }

    /// Polls the store for revocations made by other gateways sharing it.
    pub fn spawn_revocation_watch(self: &Arc<Self>, every: Duration) {
        let core = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut since = now_ms();
            // Ids already announced: the window overlaps from poll to poll,
            // and each repeat would wake every open session.
            let mut announced = std::collections::HashSet::new();
            loop {
                tokio::time::sleep(every).await;
                let Some(core) = core.upgrade() else { return };
                let now = now_ms();
                // A generous window: other gateways' clocks may lag ours.
                match core
                    .store
                    .revoked_since(since - 30_000 - every.as_millis() as i64)
                    .await
                {
                    Ok(ids) => {
                        let ids: std::collections::HashSet<String> = ids.into_iter().collect();
                        for id in ids.difference(&announced) {
                            let _ = core.revocations.send(id.clone());
                        }
                        announced = ids;
                        since = now;
                    }
                    Err(e) => tracing::warn!(error = %e, "revocation poll failed"),
                }
            }
        });
    }
}

/// One open session: records its commands and ends it.
pub struct SessionHandle {
    core: Arc<Core>,
    /// Session id (`ses_...`).
    pub id: String,
    /// Accountable principal.
    pub principal: String,
    /// Acting agent.
    pub actor: Option<String>,
    /// Connection name.
    pub connection: String,
    token_id: String,
    expires_at: i64,
    /// The token's role, if narrowed.
    pub role: Option<String>,
    /// Groups from the principal's identity provider.
    pub groups: Vec<String>,
    /// The actor was named by a delegator.
    pub delegated: bool,
    commands: AtomicU64,
    connection_config: Arc<Connection>,
    policy: Mutex<SessionDecider>,
    /// How results are masked; `None` when policy lets the principal see
    /// clear values.
    pub masking: Option<Arc<Masking>>,
}

/// Watches one token for expiry and revocation.
pub struct TokenWatch {
    core: Arc<Core>,
    token_id: String,
    expires_at: i64,
    revocations: broadcast::Receiver<String>,
}

impl TokenWatch {
    /// Resolves when the token expires or is revoked, with the reason.
    pub async fn wait(&mut self) -> &'static str {
        // A revocation between authentication and this watch's subscription
        // was broadcast before we listened: look once.
        if let Ok(Some(t)) = self.core.store.token_by_id(&self.token_id).await {
            if t.revoked_at.is_some() {
                return "token revoked";
            }
        }
        let left = (self.expires_at - now_ms()).max(0) as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(left);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return "token expired",
                r = self.revocations.recv() => match r {
                    Ok(id) if id == self.token_id => return "token revoked",
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Ok(Some(t)) = self.core.store.token_by_id(&self.token_id).await {
                            if t.revoked_at.is_some() {
                                return "token revoked";
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                },
            }
        }
    }
}

impl SessionHandle {
    fn event(&self, kind: &str, data: serde_json::Value) -> EventDraft {
        let mut ev = EventDraft::new(kind, data);
        ev.session_id = Some(self.id.clone());
        ev.principal = Some(self.principal.clone());
        ev.actor = self.actor.clone();
        ev.connection = Some(self.connection.clone());
        ev
    }

    /// Decides a classified command under the policies in force.
    pub fn decide(&self, c: &Arc<Classification>) -> Arc<Decision> {
        let mut decider = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(decider.engine(), &self.core.policy()) {
            let (current, entities) = self.fresh_entities();
            *decider = SessionDecider::new(current, entities);
        }
        let decision = decider.decide(c, now_ms());
        if self.role.as_deref() == Some(READ_ONLY_ROLE)
            && decision.effect != Effect::Block
            && c.effects
                .iter()
                .any(|e| !matches!(e, crate::Class::Read | crate::Class::Session))
        {
            return Arc::new(Decision {
                effect: Effect::Block,
                action: c.class().as_str().to_string(),
                policies: vec![],
                reason: format!(
                    "this session's token is {READ_ONLY_ROLE}, and this statement is {}",
                    c.class()
                ),
                shadow: None,
            });
        }
        decision
    }

    /// Records an event of this session durably (a refused tunnel, a file
    /// transfer, a recording's digest).
    pub async fn record_event(
        &self,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.core.record(self.event(kind, data)).await
    }

    /// Whether policy lets this session open an interactive terminal.
    pub fn decide_shell(&self) -> Decision {
        let (engine, entities) = self.fresh_entities();
        engine.decide_shell(&entities, now_ms())
    }

    /// Whether policy lets this session open a tunnel (`local`, `remote`,
    /// `agent`, `x11`), toward `destination` when it names one.
    pub fn decide_tunnel(&self, kind: &str, destination: Option<&str>) -> Decision {
        let (engine, entities) = self.fresh_entities();
        engine.decide_tunnel(&entities, kind, destination, now_ms())
    }

    fn fresh_entities(&self) -> (Arc<PolicyEngine>, crate::policy::PolicyEntities) {
        let engine = self.core.policy();
        let who = Principal {
            name: self.principal.clone(),
            actor: self.actor.clone(),
            groups: self.groups.clone(),
            delegated: self.delegated,
        };
        let entities = engine
            .entities(&who, &self.connection_config)
            .with_role(self.role.clone());
        (engine, entities)
    }

    /// Whether policy approves a reviewed command without a human.
    pub fn decide_approval(
        &self,
        c: &Classification,
        approval: &crate::policy::ApprovalContext,
    ) -> Decision {
        let (engine, entities) = self.fresh_entities();
        engine.decide_approve(&entities, c.class().as_str(), c, approval, now_ms())
    }

    /// The core this session belongs to.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The connection's configuration.
    pub fn connection_config(&self) -> &Arc<Connection> {
        &self.connection_config
    }

    /// Records commands durably; call before forwarding them. Returns each
    /// command's event number, to attach its outcome to.
    pub async fn record_commands(&self, commands: &[Command]) -> Result<Vec<u64>, StoreError> {
        let first = self
            .commands
            .fetch_add(commands.len() as u64, Ordering::Relaxed)
            + 1;
        let drafts: Vec<EventDraft> = commands
            .iter()
            .zip(first..)
            .map(|(c, n)| {
                let mut data = serde_json::to_value(c).unwrap_or_default();
                data["n"] = json!(n);
                self.event("command", data)
            })
            .collect();
        self.core.journal.append(&drafts)?;
        Ok((first..first + commands.len() as u64).collect())
    }

    /// Records how command number `n` of this session ended.
    pub fn record_outcome(&self, n: u64, outcome: &CommandOutcome) {
        let mut data = serde_json::to_value(outcome).unwrap_or_default();
        data["command"] = json!(n);
        self.core
            .journal
            .append_deferred(self.event("command.result", data));
    }

    /// A watch that resolves when the session's token expires or is revoked.
    pub fn token_watch(&self) -> TokenWatch {
        TokenWatch {
            core: self.core.clone(),
            token_id: self.token_id.clone(),
            expires_at: self.expires_at,
            revocations: self.core.revocations.subscribe(),
        }
    }

    /// Ends the session: updates its record and appends the end event.
    pub async fn close(&self, bytes_in: u64, bytes_out: u64, outcome: &str) {
        let store = &self.core.store;
        if let Err(e) = store
            .end_session(
                &self.id,
                now_ms(),
                bytes_in as i64,
                bytes_out as i64,
                outcome,
            )
            .await
        {
            tracing::error!(session = %self.id, error = %e, "could not close session record");
        }
        let ev = self.event(
            "session.end",
            json!({"outcome": outcome, "bytes_in": bytes_in, "bytes_out": bytes_out}),
        );
        if let Err(e) = self.core.journal.append(&[ev]) {
            tracing::error!(session = %self.id, error = %e, "could not record session end");
        }
    }
}
