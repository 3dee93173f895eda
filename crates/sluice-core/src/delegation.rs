//! Delegation: a person or workload mints a token for an agent acting on
//! its behalf. What is delegated is never wider than what the delegator
//! holds (connections, role) nor longer-lived, and revoking the delegator's
//! token revokes everything delegated from it.

use serde_json::json;

use crate::audit::EventDraft;
use crate::core::{Core, CoreError, READ_ONLY_ROLE};
use crate::store::TokenRecord;
use crate::time::now_ms;
use crate::token;

/// What a delegator asks for.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DelegateRequest {
    /// The agent (`agent:NAME`).
    pub actor: String,
    /// Connections, each one the delegator's token holds.
    pub connections: Vec<String>,
    /// Lifetime in seconds (cut to the delegator's own expiry).
    pub ttl_secs: u64,
    /// Reads only.
    #[serde(default)]
    pub read_only: bool,
}

impl Core {
    /// When a token derived from `parent` for `ttl_secs` expires: never
    /// later than the parent itself, nor than the gateway's maximum.
    fn derived_expiry(&self, parent: &TokenRecord, ttl_secs: u64, now: i64) -> i64 {
        let wanted = now.saturating_add(ttl_secs.clamp(1, i64::MAX as u64 / 2000) as i64 * 1000);
        wanted
            .min(parent.expires_at.unwrap_or(now))
            .min(now + self.max_ttl.as_millis() as i64)
    }

    /// Saves a token derived from another; if the parent was revoked
    /// meanwhile (its cascade may have run before this insert), the child
    /// is revoked too and refused.
    async fn insert_child(&self, rec: &TokenRecord) -> Result<(), CoreError> {
        self.store.insert_token(rec.clone()).await?;
        let parent = match &rec.parent {
            Some(p) => self.store.token_by_id(p).await?,
            None => None,
        };
        if parent.is_none_or(|p| p.revoked_at.is_some()) {
            self.store.revoke_token(&rec.id, now_ms()).await?;
            return Err(CoreError::Invalid(
                "the credential it comes from was revoked".into(),
            ));
        }
        Ok(())
    }

    /// Issues a connection token for the holder of an API credential
    /// (`sluice connect`): one of its connections, its role and groups, no
    /// longer than it lives; revoking the credential revokes the token.
    pub async fn connect_token(
        &self,
        parent: &TokenRecord,
        connection: &str,
        ttl_secs: u64,
    ) -> Result<(String, TokenRecord), CoreError> {
        let now = now_ms();
        if parent.kind != "user" || parent.actor.is_some() || parent.uses_left.is_some() {
            return Err(CoreError::Invalid(
                "connect with your own API credential (sluice login)".into(),
            ));
        }
        if !parent.connections.iter().any(|c| c == connection) {
            return Err(CoreError::Invalid(format!(
                "your sign-in does not include connection \"{connection}\" (it includes: {}); ask for it with sluice request",
                parent.connections.join(", ")
            )));
        }
        let expires_at = self.derived_expiry(parent, ttl_secs, now);
        if expires_at <= now {
            return Err(CoreError::Invalid("your sign-in has expired".into()));
        }
        let value = token::generate();
        let rec = TokenRecord {
            id: token::new_id("tok_"),
            hash: token::hash(&value),
            kind: "access".into(),
            principal: parent.principal.clone(),
            actor: None,
            connections: vec![connection.to_string()],
            created_at: now,
            expires_at: Some(expires_at),
            uses_left: None,
            revoked_at: None,
            created_by: Some(format!("connect:{}", parent.id)),
            role: parent.role.clone(),
            parent: Some(parent.id.clone()),
            groups: parent.groups.clone(),
        };
        self.insert_child(&rec).await?;
        let mut ev = EventDraft::new(
            "token.issued",
            json!({"token_id": rec.id, "connections": rec.connections, "expires_at": rec.expires_at,
                   "issued_by": rec.created_by}),
        );
        ev.principal = Some(rec.principal.clone());
        self.record(ev).await?;
        Ok((value, rec))
    }

    /// Issues a token for an agent acting for the holder of `parent`.
    pub async fn delegate(
        &self,
        parent: &TokenRecord,
        req: DelegateRequest,
    ) -> Result<(String, TokenRecord), CoreError> {
        let now = now_ms();
        if !matches!(parent.kind.as_str(), "user" | "access")
            || parent.revoked_at.is_some()
            || parent.expires_at.is_none_or(|e| e <= now)
        {
            return Err(CoreError::Invalid(
                "delegate with your own live credential (an API credential or a connection token)"
                    .into(),
            ));
        }
        if parent.actor.is_some() {
            return Err(CoreError::Invalid(
                "an agent's token cannot delegate further".into(),
            ));
        }
        if parent.uses_left.is_some() {
            return Err(CoreError::Invalid(
                "a token limited to a number of uses cannot delegate".into(),
            ));
        }
        if parent
            .created_by
            .as_deref()
            .is_some_and(|c| c.starts_with("connect:"))
        {
            // It sits in a client's environment: it connects, nothing more.
            return Err(CoreError::Invalid(
                "a token from sluice connect cannot delegate; delegate with your sign-in".into(),
            ));
        }
        let name = req.actor.strip_prefix("agent:").unwrap_or("");
        if name.is_empty()
            || name.len() > 128
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(CoreError::Invalid(
                "the actor is agent:NAME, NAME of letters, digits, '-', '_' and '.'".into(),
            ));
        }
        if req.connections.is_empty() {
            return Err(CoreError::Invalid("name at least one connection".into()));
        }
        if let Some(c) = req
            .connections
            .iter()
            .find(|c| !parent.connections.contains(c))
        {
            return Err(CoreError::Invalid(format!(
                "your credential does not hold connection \"{c}\", so it cannot be delegated (you hold: {})",
                parent.connections.join(", ")
            )));
        }
        if req.ttl_secs == 0 {
            return Err(CoreError::Invalid("ttl must be at least 1s".into()));
        }
        let role = match (parent.role.as_deref(), req.read_only) {
            (None, false) => None,
            (None, true) | (Some(READ_ONLY_ROLE), _) => Some(READ_ONLY_ROLE.to_string()),
            (Some(r), false) => Some(r.to_string()),
            (Some(r), true) => {
                return Err(CoreError::Invalid(format!(
                    "your credential has role {r}, which a delegated token keeps; it cannot be changed to {READ_ONLY_ROLE}"
                )))
            }
        };
        let expires_at = self.derived_expiry(parent, req.ttl_secs, now);
        let value = token::generate();
        let rec = TokenRecord {
            id: token::new_id("tok_"),
            hash: token::hash(&value),
            kind: "access".into(),
            principal: parent.principal.clone(),
            actor: Some(req.actor.clone()),
            connections: req.connections.clone(),
            created_at: now,
            expires_at: Some(expires_at),
            uses_left: None,
            revoked_at: None,
            created_by: Some(format!("delegated:{}", parent.id)),
            role,
            parent: Some(parent.id.clone()),
            // An agent is not in its principal's groups.
            groups: Vec::new(),
        };
        self.insert_child(&rec).await?;
        let mut ev = EventDraft::new(
            "token.delegated",
            json!({"token_id": rec.id, "from_token": parent.id, "connections": rec.connections,
                   "expires_at": rec.expires_at, "role": rec.role}),
        );
        ev.principal = Some(rec.principal.clone());
        ev.actor = rec.actor.clone();
        self.record(ev).await?;
        Ok((value, rec))
    }
}
