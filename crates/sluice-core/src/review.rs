//! Reviews: one record for both kinds of human decision — a command that
//! policy sent for review, and a just-in-time access request — with the
//! rules that say who may decide and how many must agree.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What is being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewKind {
    /// One command, one decision.
    Command,
    /// A time-boxed grant on a connection.
    Access,
}

impl ReviewKind {
    /// The name used in config, records and policy context.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewKind::Command => "command",
            ReviewKind::Access => "access",
        }
    }
}

/// Where a review is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewState {
    /// Waiting for approvers.
    Pending,
    /// Approved; not used yet.
    Approved,
    /// Denied; final.
    Denied,
    /// Pending or approved for longer than allowed; final.
    Expired,
    /// The approved command ran, or the granted token was issued; final.
    Executed,
    /// Withdrawn by its requester or an administrator, or its client left; final.
    Cancelled,
}

impl ReviewState {
    /// The name used in records and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Pending => "pending",
            ReviewState::Approved => "approved",
            ReviewState::Denied => "denied",
            ReviewState::Expired => "expired",
            ReviewState::Executed => "executed",
            ReviewState::Cancelled => "cancelled",
        }
    }

    /// Whether nothing can happen to the review any more.
    pub fn is_final(self) -> bool {
        !matches!(self, ReviewState::Pending | ReviewState::Approved)
    }
}

/// How a client waits for a command review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReviewMode {
    /// Hold for humans (no actor), defer for agents.
    #[default]
    Auto,
    /// The statement waits on the open session until it is decided.
    Hold,
    /// The client gets an error at once and runs the statement again once approved.
    Defer,
}

/// One approver's decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vote {
    /// Who decided.
    pub by: String,
    /// Approve (true) or deny (false).
    pub approve: bool,
    /// Why, as they said it.
    pub reason: Option<String>,
    /// Unix ms.
    pub at: i64,
}

/// A cheap, safe estimate of what a command would touch.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Impact {
    /// Rows the target's planner expects the command to change.
    pub estimated_rows: Option<i64>,
    /// One line for approvers, such as "planner estimate: 12 rows".
    pub summary: String,
}

/// Who may approve what, and how many must agree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalRule {
    /// Cited in records.
    pub name: String,
    /// Connection-name globs (`*` any run); empty for all.
    #[serde(default)]
    pub connections: Vec<String>,
    /// Kinds it covers; empty for both.
    #[serde(default)]
    pub kinds: Vec<ReviewKind>,
    /// Groups whose members may approve or deny.
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub approvals: u32,
    /// Whether the requester may approve their own review.
    #[serde(default)]
    pub allow_self_approval: bool,
    /// Whether one denial decides (otherwise as many denials as approvals are needed).
    pub deny_wins: bool,
    /// Whether an access request must say why.
    pub require_reason: bool,
}

impl ApprovalRule {
    /// The rule when none is configured: one member of "approvers", not oneself.
    pub fn fallback() -> ApprovalRule {
        ApprovalRule {
            name: "default".into(),
            connections: vec![],
            kinds: vec![],
            approvers: vec!["approvers".into()],
            approvals: 1,
            allow_self_approval: false,
            deny_wins: true,
            require_reason: true,
        }
    }

    fn covers(&self, kind: ReviewKind, connection: &str) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && (self.connections.is_empty()
                || self
                    .connections
                    .iter()
                    .any(|g| crate::masking::glob(g, connection)))
    }
}

/// Review settings from the configuration.
#[derive(Debug, Clone)]
pub struct ReviewSettings {
    /// Rules, first match wins; [`ApprovalRule::fallback`] when none matches.
    pub rules: Vec<ApprovalRule>,
    /// How long a review may stay pending.
    pub pending_ttl: Duration,
    /// How long an approval may wait to be used.
    pub approval_ttl: Duration,
    /// Mode for connections that do not set their own.
    pub mode: ReviewMode,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        ReviewSettings {
            rules: vec![],
            pending_ttl: Duration::from_secs(15 * 60),
            approval_ttl: Duration::from_secs(15 * 60),
            mode: ReviewMode::Auto,
        }
    }
}

impl ReviewSettings {
    /// The rule that decides a review of this kind on this connection.
    pub fn rule_for(&self, kind: ReviewKind, connection: &str) -> ApprovalRule {
        self.rules
            .iter()
            .find(|r| r.covers(kind, connection))
            .cloned()
            .unwrap_or_else(ApprovalRule::fallback)
    }
}

/// A review as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewRecord {
    /// `rev_...`
    pub id: String,
    /// Command or access.
    pub kind: ReviewKind,
    /// Where it is in its life.
    pub state: ReviewState,
    /// Accountable principal (the requester).
    pub principal: String,
    /// The agent that asked, if any.
    pub actor: Option<String>,
    /// The agent's name was chosen by a delegator (not the administrator's
    /// agent of that name): the two are different requesters.
    #[serde(default)]
    pub delegated: bool,
    /// Connection name.
    pub connection: String,
    /// For a command: hold or defer.
    pub mode: Option<ReviewMode>,
    /// For a command: the statement as approvers see it (values masked).
    pub statement: Option<String>,
    /// For a command: SHA-256 of exactly what runs (text and parameters).
    pub statement_hash: Option<String>,
    /// For a command: what the classifier found.
    pub classification: Option<serde_json::Value>,
    /// Why policy asked for a review.
    pub policy_reason: String,
    /// Policy ids that asked.
    pub policies: Vec<String>,
    /// For a command: its estimated impact, when one was cheap and safe to get.
    pub impact: Option<Impact>,
    /// For a command: the session it came from.
    pub session_id: Option<String>,
    /// For access: the role asked for.
    pub role: Option<String>,
    /// For access: the window asked for, in seconds.
    pub duration_secs: Option<u64>,
    /// The requester's reason.
    pub reason: Option<String>,
    /// The rule that decides it.
    pub rule: ApprovalRule,
    /// Decisions so far.
    pub votes: Vec<Vote>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms: end of the pending time, or of the approval's lifetime.
    pub expires_at: i64,
    /// Unix ms, once approved or denied.
    pub decided_at: Option<i64>,
    /// Who decided: approvers' names, or `policy:<id>`.
    pub decided_by: Option<String>,
    /// Why it was decided so (a denial's reason, the auto-approving policy's).
    pub decision_reason: Option<String>,
    /// Unix ms, once executed, cancelled or expired.
    pub finished_at: Option<i64>,
    /// For access: the token issued.
    pub token_id: Option<String>,
    /// Bumped on every change; updates compare it, so two gateways cannot
    /// both move a review on.
    pub version: i64,
}

impl ReviewRecord {
    /// Why a held command did not run after this review ended without an
    /// approval, for the client: `what` names the command ("statement").
    pub fn not_run(&self, what: &str) -> String {
        let id = &self.id;
        match self.state {
            ReviewState::Denied => format!(
                "sluice: review {id} was denied by {}{}; the {what} was not run",
                self.decided_by.as_deref().unwrap_or("an approver"),
                self.decision_reason
                    .as_deref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default()
            ),
            ReviewState::Expired => {
                format!("sluice: review {id} expired before it was decided; the {what} was not run")
            }
            ReviewState::Cancelled => {
                format!("sluice: review {id} was cancelled; the {what} was not run")
            }
            other => format!(
                "sluice: review {id} is {}; the {what} was not run",
                other.as_str()
            ),
        }
    }

    /// Whether `who` (a principal or agent name) asked for it.
    pub fn requested_by(&self, who: &str) -> bool {
        self.principal == who || self.actor.as_deref() == Some(who)
    }

    /// "alice" or "alice via agent:claude".
    pub fn requester(&self) -> String {
        match &self.actor {
            Some(a) => format!("{} via {a}", self.principal),
            None => self.principal.clone(),
        }
    }
}

/// What a vote did to a pending review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// Still pending: more votes are needed.
    Open,
    /// Enough approvals.
    Approved,
    /// Denied.
    Denied,
}

/// Counts the votes under the review's rule.
pub fn tally(rule: &ApprovalRule, votes: &[Vote]) -> Tally {
    let approvals = votes.iter().filter(|v| v.approve).count() as u32;
    let denials = votes.len() as u32 - approvals;
    let needed = rule.approvals.max(1);
    if denials > 0 && (rule.deny_wins || denials >= needed) {
        Tally::Denied
    } else if approvals >= needed {
        Tally::Approved
    } else {
        Tally::Open
    }
}

/// Text fit to show on a terminal or in a chat: control characters (but
/// newlines and tabs) and bidirectional overrides are escaped, so what an
/// approver reads is what the text holds.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        // Controls, and the invisible format characters (zero-width,
        // direction marks and overrides, soft hyphen, line separators).
        let hidden = c.is_control()
            || matches!(c, '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
        if hidden && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a role name is well-formed: lower-case ASCII letters, digits,
/// `-` and `_`, at most 64 characters (so no look-alike of `read-only`).
pub fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The hash a deferred approval is matched by: SHA-256 over the exact bytes
/// that run, so an approval for one statement never covers another.
pub fn statement_hash(exact: &[u8]) -> String {
    hex::encode(Sha256::digest(exact))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(approve: bool) -> Vote {
        Vote {
            by: "x".into(),
            approve,
            reason: None,
            at: 0,
        }
    }

    #[test]
    fn votes_are_counted_under_the_rule() {
        let mut rule = ApprovalRule::fallback();
        rule.approvals = 2;
        assert_eq!(tally(&rule, &[vote(true)]), Tally::Open);
        assert_eq!(tally(&rule, &[vote(true), vote(true)]), Tally::Approved);
        assert_eq!(tally(&rule, &[vote(true), vote(false)]), Tally::Denied);
        rule.deny_wins = false;
        assert_eq!(tally(&rule, &[vote(true), vote(false)]), Tally::Open);
        assert_eq!(
            tally(&rule, &[vote(false), vote(true), vote(false)]),
            Tally::Denied
        );
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let mut prod = ApprovalRule::fallback();
        prod.name = "prod".into();
        prod.connections = vec!["prod-*".into()];
        prod.kinds = vec![ReviewKind::Command];
        let s = ReviewSettings {
            rules: vec![prod],
            ..Default::default()
        };
        assert_eq!(s.rule_for(ReviewKind::Command, "prod-db").name, "prod");
        assert_eq!(s.rule_for(ReviewKind::Access, "prod-db").name, "default");
        assert_eq!(s.rule_for(ReviewKind::Command, "staging").name, "default");
        assert_ne!(statement_hash(b"DELETE 1"), statement_hash(b"DELETE 2"));
        assert_eq!(printable("a\rb\u{202e}c\nd"), "a\\u{d}b\\u{202e}c\nd");
        assert_eq!(printable("read-only\u{200b}"), "read-only\\u{200b}");
        assert!(valid_role("read-only"));
        assert!(!valid_role("re\u{430}d-only"));
        assert!(!valid_role("Read-Only"));
    }
}
