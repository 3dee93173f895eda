//! The review workflow on the core: a command policy sent for review, or an
//! access request, becomes a stored review; approvers decide it under its
//! rule; a held command waits for the decision, a deferred one is matched
//! by its hash when it comes back; every change is an audit event and a
//! notice for webhooks, and wakes waiters on every gateway sharing the store.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast;

use crate::audit::EventDraft;
use crate::core::{Core, CoreError, SessionHandle};
use crate::policy::{ApprovalContext, Effect, Principal};
use crate::review::{
    printable, statement_hash, tally, valid_role, Impact, ReviewKind, ReviewMode, ReviewRecord,
    ReviewSettings, ReviewState, Tally, Vote,
};
use crate::store::{StoreError, TokenRecord};
use crate::time::now_ms;
use crate::{token, Classification, Decision};

/// A review event, for notifications (webhooks, chat).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReviewNotice {
    /// `review.created`, `review.approved`, ...
    pub event: String,
    /// Who caused it (an approver, `policy:<id>`, `gateway`).
    pub by: Option<String>,
    /// Why, as given.
    pub reason: Option<String>,
    /// The review after the change.
    pub review: ReviewRecord,
}

/// A command that policy sent for review, as the adapter saw it.
pub struct CommandAsk {
    /// The statement as approvers should see it: its values masked by the
    /// adapter, its structure untouched (control characters are escaped here).
    pub display: String,
    /// Exactly what runs (text and parameters), for the hash.
    pub exact: Vec<u8>,
    /// What the classifier found.
    pub classification: Arc<Classification>,
    /// The decision that asked for a review.
    pub decision: Arc<Decision>,
    /// A cheap estimate of its impact, if the adapter has one.
    pub impact: Option<Impact>,
}

/// What became of a submitted command.
pub enum Submitted {
    /// It may run now: an earlier approval of this exact statement, or
    /// policy approved it. The review is already marked executed.
    Run(ReviewRecord),
    /// A human must decide; the review says which one to wait for.
    Pending(ReviewRecord),
}

/// A just-in-time access request.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AccessRequest {
    /// The connection asked for.
    pub connection: String,
    /// A narrower role, if any.
    #[serde(default)]
    pub role: Option<String>,
    /// The window asked for, in seconds.
    pub duration_secs: u64,
    /// Why, for approvers.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Most reviews one requester may have pending: a client that sends
/// endless distinct statements must not flood the store and the approvers.
const MAX_PENDING_PER_PRINCIPAL: usize = 50;

/// Most new reviews one principal may cause per minute on one gateway:
/// cancelled and expired ones count too, so create-and-cancel loops are
/// bounded as well.
const MAX_REVIEWS_PER_MINUTE: u32 = 30;

/// Longest statement a review shows; a longer one is not reviewed.
const MAX_SHOWN: usize = 64 * 1024;

/// How often a waiter looks at its review even without a notification,
/// in case one was lost.
const RECHECK: Duration = Duration::from_secs(30);

impl Core {
    /// The review settings in force.
    pub fn review_settings(&self) -> &ReviewSettings {
        &self.reviews
    }

    /// Review notices, for the notification senders.
    pub fn review_notices(&self) -> broadcast::Receiver<ReviewNotice> {
        self.review_notices.subscribe()
    }

    /// Starts listening for changes made by other gateways, and the sweeper
    /// that expires reviews whose time ran out.
    pub fn spawn_review_tasks(self: &Arc<Self>, sweep_every: Duration) {
        self.store.listen_reviews(self.review_changes.clone());
        let core = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(sweep_every).await;
                let Some(core) = core.upgrade() else { return };
                match core.store.reviews_due(now_ms()).await {
                    Ok(due) => {
                        for r in due {
                            if let Err(e) = core.review(&r.id).await {
                                tracing::warn!(review = %r.id, error = %e, "could not expire a review");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "review sweep failed"),
                }
            }
        });
    }

    /// One review; one whose time ran out is expired first.
    pub async fn review(&self, id: &str) -> Result<ReviewRecord, CoreError> {
        let r = self.load_review(id).await?;
        if r.state.is_final() || r.expires_at > now_ms() {
            return Ok(r);
        }
        self.transition(id, |r| {
            if r.state.is_final() || r.expires_at > now_ms() {
                return Ok(None);
            }
            let was = r.state;
            r.state = ReviewState::Expired;
            r.finished_at = Some(now_ms());
            Ok(Some(Change::new(
                "review.expired",
                "gateway",
                Some(format!("{} for too long", was.as_str())),
            )))
        })
        .await
    }

    async fn load_review(&self, id: &str) -> Result<ReviewRecord, CoreError> {
        self.store
            .review(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("no review with id {id}")))
    }

    /// Reviews in a state, newest first, each expired if due.
    pub async fn reviews(
        &self,
        state: ReviewState,
        limit: i64,
    ) -> Result<Vec<ReviewRecord>, CoreError> {
        let mut out = Vec::new();
        for r in self.store.reviews_in_state(state, limit).await? {
            let r = self.review(&r.id).await?;
            if r.state == state {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Whether `who` (in `groups` by its identity provider, besides
    /// `[policy.groups]`) may approve or deny the review; the error says why not.
    pub fn may_decide(&self, who: &str, groups: &[String], r: &ReviewRecord) -> Result<(), String> {
        if r.requested_by(who) && !r.rule.allow_self_approval {
            return Err(format!(
                "{who} asked for review {} and may not decide it: self-approval is not allowed (rule \"{}\")",
                r.id, r.rule.name
            ));
        }
        let member = r.rule.approvers.iter().any(|g| {
            groups.contains(g)
                || self
                    .groups
                    .get(g)
                    .is_some_and(|m| m.iter().any(|x| x == who))
        });
        if !member {
            return Err(format!(
                "{who} may not decide review {}: approvers are members of {} (rule \"{}\")",
                r.id,
                r.rule.approvers.join(", "),
                r.rule.name
            ));
        }
        Ok(())
    }

    /// Records an approver's decision; the review is approved or denied
    /// once the rule's count is reached.
    pub async fn vote(
        &self,
        id: &str,
        by: &str,
        groups: &[String],
        approve: bool,
        reason: Option<String>,
    ) -> Result<ReviewRecord, CoreError> {
        let reason = reason
            .filter(|r| !r.trim().is_empty())
            .map(|r| printable(&r));
        if !approve && reason.is_none() {
            return Err(CoreError::Invalid(
                "a denial needs a reason (--reason)".into(),
            ));
        }
        // Expire first, so a late vote is refused with the right reason.
        let current = self.review(id).await?;
        self.may_decide(by, groups, &current)
            .map_err(CoreError::Invalid)?;
        let approval_ttl = self.reviews.approval_ttl;
        self.transition(id, |r| {
            if r.state != ReviewState::Pending {
                return Err(CoreError::Invalid(format!(
                    "review {} is {}, not pending",
                    r.id,
                    r.state.as_str()
                )));
            }
            if r.expires_at <= now_ms() {
                return Err(CoreError::Invalid(format!("review {} has expired", r.id)));
            }
            if r.votes.iter().any(|v| v.by == by) {
                return Err(CoreError::Invalid(format!(
                    "{by} has already decided review {}",
                    r.id
                )));
            }
            let now = now_ms();
            r.votes.push(Vote {
                by: by.to_string(),
                approve,
                reason: reason.clone(),
                at: now,
            });
            let voters = |approve: bool| {
                r.votes
                    .iter()
                    .filter(|v| v.approve == approve)
                    .map(|v| v.by.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let event = match tally(&r.rule, &r.votes) {
                Tally::Open => "review.vote",
                Tally::Approved => {
                    r.state = ReviewState::Approved;
                    r.decided_at = Some(now);
                    r.decided_by = Some(voters(true));
                    r.decision_reason = reason.clone();
                    r.expires_at = match (r.kind, r.duration_secs) {
                        // A grant's window starts when it is approved.
                        (ReviewKind::Access, Some(s)) => now + s as i64 * 1000,
                        _ => now + approval_ttl.as_millis() as i64,
                    };
                    "review.approved"
                }
                Tally::Denied => {
                    r.state = ReviewState::Denied;
                    r.decided_at = Some(now);
                    r.decided_by = Some(voters(false));
                    r.decision_reason = reason.clone();
                    r.finished_at = Some(now);
                    "review.denied"
                }
            };
            Ok(Some(Change::new(event, by, reason.clone())))
        })
        .await
    }

    /// Withdraws a pending or approved review.
    pub async fn cancel_review(
        &self,
        id: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<ReviewRecord, CoreError> {
        let reason = reason.map(|r| printable(&r));
        self.transition(id, |r| {
            if r.state.is_final() {
                return Err(CoreError::Invalid(format!(
                    "review {} is already {}",
                    r.id,
                    r.state.as_str()
                )));
            }
            r.state = ReviewState::Cancelled;
            r.finished_at = Some(now_ms());
            Ok(Some(Change::new("review.cancelled", by, reason.clone())))
        })
        .await
    }

    /// Waits until the review is no longer pending, or until `deadline`
    /// (Unix ms); returns it as it is then.
    pub async fn wait_review(&self, id: &str, deadline: i64) -> Result<ReviewRecord, CoreError> {
        // Subscribed before reading, so no change falls between the two.
        let mut changes = self.review_changes.subscribe();
        loop {
            let r = self.review(id).await?;
            let now = now_ms();
            if r.state != ReviewState::Pending || now >= deadline {
                return Ok(r);
            }
            let until = deadline.min(r.expires_at).max(now) - now;
            let nap = Duration::from_millis(until as u64).min(RECHECK);
            let sleep = tokio::time::sleep(nap);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    changed = changes.recv() => match changed {
                        Ok(c) if c == id || c == "*" => break,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(CoreError::Invalid("the gateway is shutting down".into()))
                        }
                    },
                }
            }
        }
    }

    /// Creates an access request for `who`; policy may approve it at once.
    pub async fn request_access(
        &self,
        who: &Principal,
        req: AccessRequest,
    ) -> Result<ReviewRecord, CoreError> {
        let Some(conn) = self.connections.get(&req.connection) else {
            return Err(CoreError::Invalid(format!(
                "unknown connection \"{}\"",
                req.connection
            )));
        };
        if req.duration_secs == 0 || Duration::from_secs(req.duration_secs) > self.max_ttl {
            return Err(CoreError::Invalid(format!(
                "the window must be between 1s and {} (gateway.max_token_ttl)",
                humantime::format_duration(self.max_ttl)
            )));
        }
        if let Some(role) = req.role.as_deref().filter(|r| !valid_role(r)) {
            return Err(CoreError::Invalid(format!(
                "role {:?}: use lower-case ASCII letters, digits, - and _",
                printable(role)
            )));
        }
        let rule = self.reviews.rule_for(ReviewKind::Access, &conn.name);
        let reason = req
            .reason
            .filter(|r| !r.trim().is_empty())
            .map(|r| printable(&r));
        if rule.require_reason && reason.is_none() {
            return Err(CoreError::Invalid(format!(
                "access to {} needs a reason (--reason), shown to approvers (rule \"{}\")",
                conn.name, rule.name
            )));
        }
        let now = now_ms();
        let mut r = ReviewRecord {
            id: token::new_id("rev_"),
            kind: ReviewKind::Access,
            state: ReviewState::Pending,
            principal: who.name.clone(),
            actor: who.actor.clone(),
            delegated: who.delegated,
            connection: conn.name.clone(),
            mode: None,
            statement: None,
            statement_hash: None,
            classification: None,
            policy_reason: "access requested".into(),
            policies: vec![],
            impact: None,
            session_id: None,
            role: req.role.clone(),
            duration_secs: Some(req.duration_secs),
            reason,
            rule,
            votes: vec![],
            created_at: now,
            expires_at: now + self.reviews.pending_ttl.as_millis() as i64,
            decided_at: None,
            decided_by: None,
            decision_reason: None,
            finished_at: None,
            token_id: None,
            version: 1,
        };
        let engine = self.policy();
        let entities = engine.entities(who, conn).with_role(req.role);
        let mut connect = Classification::default();
        connect.flags.statements = 0;
        let auto = engine.decide_approve(
            &entities,
            "connect",
            &connect,
            &ApprovalContext {
                review: "access".into(),
                estimated_rows: None,
                duration_secs: Some(req.duration_secs),
            },
            now,
        );
        let by_policy = auto.effect == Effect::Allow;
        if by_policy {
            r.state = ReviewState::Approved;
            decided_by_policy(&mut r, &auto, now);
            r.expires_at = now + req.duration_secs as i64 * 1000;
        }
        self.create(&r).await?;
        if by_policy {
            self.announce_decision(&r, "review.approved").await?;
        }
        Ok(r)
    }

    /// Issues the token an approved access request grants, once, to the
    /// requester; it expires when the approved window ends.
    pub async fn claim_access(
        &self,
        id: &str,
        who: &Principal,
        from_token: &str,
    ) -> Result<(String, TokenRecord), CoreError> {
        let r = self.review(id).await?;
        if r.kind != ReviewKind::Access || r.principal != who.name || r.actor != who.actor {
            return Err(CoreError::NotFound(format!(
                "no access request {id} of yours"
            )));
        }
        if r.state != ReviewState::Approved {
            return Err(CoreError::Invalid(format!(
                "access request {id} is {}{}",
                r.state.as_str(),
                match r.state {
                    ReviewState::Executed => ": its token was already issued",
                    _ => "",
                }
            )));
        }
        let value = token::generate();
        let rec = TokenRecord {
            id: token::new_id("tok_"),
            hash: token::hash(&value),
            kind: "access".into(),
            principal: r.principal.clone(),
            actor: r.actor.clone(),
            connections: vec![r.connection.clone()],
            created_at: now_ms(),
            expires_at: Some(r.expires_at),
            uses_left: None,
            revoked_at: None,
            created_by: Some(format!("review:{id}")),
            role: r.role.clone(),
            // Signing out (revoking the claiming credential) revokes it.
            parent: Some(from_token.to_string()),
            groups: who.groups.clone(),
        };
        self.store.insert_token(rec.clone()).await?;
        // The claiming credential signed out meanwhile: no grant for it.
        if self
            .store
            .token_by_id(from_token)
            .await?
            .is_none_or(|t| t.revoked_at.is_some())
        {
            self.store.revoke_token(&rec.id, now_ms()).await?;
            return Err(CoreError::Invalid(
                "the credential claiming this grant was revoked".into(),
            ));
        }
        let claimed = self
            .transition(id, |r| {
                if r.state != ReviewState::Approved || r.expires_at <= now_ms() {
                    return Err(CoreError::Invalid(format!(
                        "access request {} is {}",
                        r.id,
                        if r.state == ReviewState::Approved {
                            "past its window"
                        } else {
                            r.state.as_str()
                        }
                    )));
                }
                r.state = ReviewState::Executed;
                r.finished_at = Some(now_ms());
                r.token_id = Some(rec.id.clone());
                Ok(Some(Change::new("review.executed", &who.name, None)))
            })
            .await;
        if let Err(e) = claimed {
            // Another claim won the race: this token must never work.
            let _ = self.store.revoke_token(&rec.id, now_ms()).await;
            return Err(e);
        }
        let mut ev = EventDraft::new(
            "token.issued",
            json!({"token_id": rec.id, "connections": rec.connections, "expires_at": rec.expires_at,
                   "role": rec.role, "issued_by": format!("review:{id}")}),
        );
        ev.principal = Some(rec.principal.clone());
        ev.actor = rec.actor.clone();
        ev.connection = Some(r.connection.clone());
        self.record(ev).await?;
        Ok((value, rec))
    }

    /// Saves a new review and announces it; refused when its principal
    /// already has too many pending.
    async fn create(&self, r: &ReviewRecord) -> Result<(), CoreError> {
        // Per requester (principal and agent): an agent that floods must
        // not lock its principal's own requests out.
        let requester = r.requester();
        self.check_review_budget(&requester, true)?;
        if r.state == ReviewState::Pending {
            self.check_pending(&r.principal, &r.actor, &requester)
                .await?;
        }
        self.store.insert_review(r).await?;
        let reason = r.reason.clone().or_else(|| Some(r.policy_reason.clone()));
        self.announce(r, "review.created", Some(&r.requester()), reason)
            .await?;
        Ok(())
    }

    /// Refuses when a requester has too many reviews pending.
    async fn check_pending(
        &self,
        principal: &str,
        actor: &Option<String>,
        requester: &str,
    ) -> Result<(), CoreError> {
        let pending = self.store.pending_reviews_of(principal, 1000).await?;
        if pending.iter().filter(|p| &p.actor == actor).count() >= MAX_PENDING_PER_PRINCIPAL {
            return Err(CoreError::Invalid(format!(
                "{requester} already has {MAX_PENDING_PER_PRINCIPAL} reviews pending; wait for them to be decided or to expire"
            )));
        }
        Ok(())
    }

    /// Checks (and with `take`, counts) a new review against its
    /// requester's budget on this gateway: at most
    /// [`MAX_REVIEWS_PER_MINUTE`] a minute, however they end.
    fn check_review_budget(&self, principal: &str, take: bool) -> Result<(), CoreError> {
        let now = now_ms();
        let mut budget = self.review_budget.lock().unwrap_or_else(|p| p.into_inner());
        if budget.len() > 10_000 {
            budget.retain(|_, (since, _)| now - *since < 60_000);
        }
        let (since, count) = budget.entry(principal.to_string()).or_insert((now, 0));
        if now - *since >= 60_000 {
            *since = now;
            *count = 0;
        }
        if *count >= MAX_REVIEWS_PER_MINUTE {
            return Err(CoreError::Invalid(format!(
                "{principal} asked for more than {MAX_REVIEWS_PER_MINUTE} reviews within a minute; try again later"
            )));
        }
        if take {
            *count += 1;
        }
        Ok(())
    }

    /// Applies a change with compare-and-set, retrying when another gateway
    /// changed the review in between; records and announces it.
    async fn transition(
        &self,
        id: &str,
        change: impl Fn(&mut ReviewRecord) -> Result<Option<Change>, CoreError>,
    ) -> Result<ReviewRecord, CoreError> {
        for _ in 0..8 {
            let mut r = self.load_review(id).await?;
            let Some(what) = change(&mut r)? else {
                return Ok(r);
            };
            r.version += 1;
            if self.store.update_review(&r).await? {
                self.announce(&r, what.event, Some(&what.by), what.reason)
                    .await?;
                return Ok(r);
            }
        }
        Err(CoreError::Store(StoreError::Other(format!(
            "review {id} keeps changing; try again"
        ))))
    }

    /// Announces a review change made by its decider, with their reason.
    async fn announce_decision(&self, r: &ReviewRecord, event: &str) -> Result<(), StoreError> {
        self.announce(r, event, r.decided_by.as_deref(), r.decision_reason.clone())
            .await
    }

    /// Records the audit event of a review change, wakes local waiters and
    /// queues the notice for webhooks.
    async fn announce(
        &self,
        r: &ReviewRecord,
        event: &str,
        by: Option<&str>,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let mut data = json!({"review_id": r.id, "kind": r.kind, "state": r.state, "by": by,
                   "reason": reason, "rule": r.rule.name, "statement_hash": r.statement_hash,
                   "votes": r.votes.len()});
        if event == "review.created" {
            // What was asked for, once, in the chain (values masked).
            data["statement"] = json!(r.statement);
            data["impact"] = json!(r.impact);
            data["role"] = json!(r.role);
            data["duration_secs"] = json!(r.duration_secs);
        }
        let mut ev = EventDraft::new(event, data);
        ev.session_id = r.session_id.clone();
        ev.principal = Some(r.principal.clone());
        ev.actor = r.actor.clone();
        ev.connection = Some(r.connection.clone());
        self.record(ev).await?;
        let _ = self.review_changes.send(r.id.clone());
        let _ = self.review_notices.send(ReviewNotice {
            event: event.to_string(),
            by: by.map(str::to_string),
            reason,
            review: r.clone(),
        });
        Ok(())
    }
}

/// Marks a review decided by the policy that approved it, never silently:
/// the policy's ids and reason are its decider and reason.
fn decided_by_policy(r: &mut ReviewRecord, auto: &Decision, now: i64) {
    r.decided_at = Some(now);
    r.decided_by = Some(format!("policy:{}", auto.policies.join(",")));
    r.decision_reason = Some(auto.reason.clone());
}

/// One change to a review: its event, who made it and why.
struct Change {
    event: &'static str,
    by: String,
    reason: Option<String>,
}

impl Change {
    fn new(event: &'static str, by: &str, reason: Option<String>) -> Change {
        Change {
            event,
            by: by.to_string(),
            reason,
        }
    }
}

impl SessionHandle {
    /// How this session's commands wait for review.
    pub fn review_mode(&self) -> ReviewMode {
        let configured = self
            .connection_config()
            .review_mode
            .unwrap_or(self.core().review_settings().mode);
        match configured {
            ReviewMode::Auto if self.actor.is_some() => ReviewMode::Defer,
            ReviewMode::Auto => ReviewMode::Hold,
            m => m,
        }
    }

    /// An earlier review of exactly this statement (same hash, principal,
    /// agent and role): an approved deferred one is used at once (marked
    /// executed, so it runs once); a pending deferred one is returned for a
    /// deferred session to wait for. `None` when a new review is needed.
    pub async fn existing_review(&self, exact: &[u8]) -> Result<Option<Submitted>, CoreError> {
        let core = self.core();
        let mode = self.review_mode();
        let hash = statement_hash(exact);
        let open = core
            .store()
            .reviews_of_statement(&self.principal, &self.connection, &hash)
            .await?;
        let now = now_ms();
        for r in open.iter().filter(|r| {
            r.actor == self.actor
                && r.delegated == self.delegated
                && r.role == self.role
                && r.mode == Some(ReviewMode::Defer)
        }) {
            if r.expires_at <= now {
                continue;
            }
            if r.state == ReviewState::Approved {
                let session = self.id.clone();
                let used = core
                    .transition(&r.id, |r| {
                        if r.state != ReviewState::Approved || r.expires_at <= now_ms() {
                            return Err(CoreError::Invalid("no longer approved".into()));
                        }
                        r.state = ReviewState::Executed;
                        r.finished_at = Some(now_ms());
                        r.session_id = Some(session.clone());
                        Ok(Some(Change::new("review.executed", "gateway", None)))
                    })
                    .await;
                match used {
                    Ok(r) => return Ok(Some(Submitted::Run(r))),
                    // Used by another session in between: look further.
                    Err(CoreError::Invalid(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            if mode == ReviewMode::Defer && r.state == ReviewState::Pending {
                return Ok(Some(Submitted::Pending(r.clone())));
            }
        }
        Ok(None)
    }

    /// Whether this session's requester may open another review now (its
    /// rate and its pending reviews within their limits); the error says why.
    pub async fn may_open_review(&self) -> Result<(), CoreError> {
        let core = self.core();
        let requester = match &self.actor {
            Some(a) => format!("{} via {a}", self.principal),
            None => self.principal.clone(),
        };
        core.check_review_budget(&requester, false)?;
        core.check_pending(&self.principal, &self.actor, &requester)
            .await
    }

    /// Creates a review of a command (after [`Self::existing_review`]
    /// found none); policy may approve it at once.
    pub async fn submit_review(&self, ask: CommandAsk) -> Result<Submitted, CoreError> {
        let core = self.core();
        let mode = self.review_mode();
        let hash = statement_hash(&ask.exact);
        let now = now_ms();
        // What approvers cannot read in full, they cannot approve.
        if ask.display.len() > MAX_SHOWN {
            return Err(CoreError::Invalid(format!(
                "the statement is too long to show approvers in full ({} bytes, at most {MAX_SHOWN})",
                ask.display.len()
            )));
        }
        let shown = ask.display.clone();
        let mut r = ReviewRecord {
            id: token::new_id("rev_"),
            kind: ReviewKind::Command,
            state: ReviewState::Pending,
            principal: self.principal.clone(),
            actor: self.actor.clone(),
            delegated: self.delegated,
            connection: self.connection.clone(),
            mode: Some(mode),
            statement: Some(printable(&shown)),
            statement_hash: Some(hash),
            classification: serde_json::to_value(&*ask.classification).ok(),
            policy_reason: ask.decision.reason.clone(),
            policies: ask.decision.policies.clone(),
            impact: ask.impact.clone(),
            session_id: Some(self.id.clone()),
            role: self.role.clone(),
            duration_secs: None,
            reason: None,
            rule: core
                .review_settings()
                .rule_for(ReviewKind::Command, &self.connection),
            votes: vec![],
            created_at: now,
            expires_at: now + core.review_settings().pending_ttl.as_millis() as i64,
            decided_at: None,
            decided_by: None,
            decision_reason: None,
            finished_at: None,
            token_id: None,
            version: 1,
        };
        let auto = self.decide_approval(
            &ask.classification,
            &ApprovalContext {
                review: "command".into(),
                estimated_rows: ask.impact.as_ref().and_then(|i| i.estimated_rows),
                duration_secs: None,
            },
        );
        if auto.effect != Effect::Allow {
            core.create(&r).await?;
            return Ok(Submitted::Pending(r));
        }
        // Approved by policy: recorded like any approval, never silently.
        r.state = ReviewState::Executed;
        decided_by_policy(&mut r, &auto, now);
        r.finished_at = Some(now);
        core.create(&r).await?;
        core.announce_decision(&r, "review.approved").await?;
        core.announce(&r, "review.executed", Some("gateway"), None)
            .await?;
        Ok(Submitted::Run(r))
    }

    /// Holds until a held review is decided; an approval is used at once
    /// (marked executed) and returned approved. A review still pending when
    /// it expires comes back expired.
    pub async fn await_review(&self, id: &str) -> Result<ReviewRecord, CoreError> {
        let core = self.core();
        let r = core.wait_review(id, i64::MAX).await?;
        if r.state != ReviewState::Approved {
            return Ok(r);
        }
        let session = self.id.clone();
        core.transition(id, |r| {
            if r.state != ReviewState::Approved {
                return Ok(None);
            }
            r.state = ReviewState::Executed;
            r.finished_at = Some(now_ms());
            r.session_id = Some(session.clone());
            Ok(Some(Change::new("review.executed", "gateway", None)))
        })
        .await
    }
}
