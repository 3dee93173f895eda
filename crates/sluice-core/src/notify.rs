//! Review notifications as receivers get them: a signed JSON event, or a
//! chat incoming-webhook message. Delivery is the binary's job; the body
//! and the signature are defined here once.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::review::{ReviewKind, ReviewRecord};
use crate::reviews::ReviewNotice;

/// The header carrying `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-sluice-signature";
/// The header carrying the Unix-seconds timestamp covered by the signature,
/// so a receiver can refuse replays of old deliveries.
pub const TIMESTAMP_HEADER: &str = "x-sluice-timestamp";
/// The header naming the event (`review.created`, ...).
pub const EVENT_HEADER: &str = "x-sluice-event";
/// A unique id per delivery (the same on every retry), for de-duplication.
pub const DELIVERY_HEADER: &str = "x-sluice-delivery";

/// The signature of a body sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON event: what happened, who did it, and the review as it is now.
pub fn json_body(n: &ReviewNotice) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"event": n.event, "by": n.by, "reason": n.reason, "review": n.review}),
    )
    .unwrap_or_default()
}

/// A chat message (`{"text": ...}`, the incoming-webhook shape Slack,
/// Mattermost, Rocket.Chat and others accept) with the statement or grant,
/// the requester, the reasons, and how to approve or deny.
pub fn chat_body(n: &ReviewNotice, link_base: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "text": chat_text(n, link_base) })).unwrap_or_default()
}

/// Text safe inside a chat message: no code fence can be closed, no link
/// or mention (`<...>`) formed, no control character smuggled.
fn chat_safe(s: &str) -> String {
    crate::review::printable(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('`', "\u{02cb}")
}

fn chat_text(n: &ReviewNotice, link_base: Option<&str>) -> String {
    let r: &ReviewRecord = &n.review;
    let requester = chat_safe(&r.requester());
    let what = match r.kind {
        ReviewKind::Command => format!(
            "{requester} wants to run on *{}*:\n```\n{}\n```",
            chat_safe(&r.connection),
            chat_safe(r.statement.as_deref().unwrap_or(""))
        ),
        ReviewKind::Access => format!(
            "{requester} asks for access to *{}*{} for {}",
            chat_safe(&r.connection),
            r.role
                .as_deref()
                .map(|role| format!(" as {}", chat_safe(role)))
                .unwrap_or_default(),
            humantime::format_duration(std::time::Duration::from_secs(
                r.duration_secs.unwrap_or(0)
            ))
        ),
    };
    let mut text = format!(
        "*{}* `{}` ({}){}\n{what}",
        n.event,
        r.id,
        r.state.as_str(),
        n.by.as_deref()
            .map(|b| format!(" by {}", chat_safe(b)))
            .unwrap_or_default()
    );
    if let Some(reason) = &r.reason {
        text.push_str(&format!("\nreason: {}", chat_safe(reason)));
    }
    text.push_str(&format!("\npolicy: {}", chat_safe(&r.policy_reason)));
    if let Some(i) = &r.impact {
        text.push_str(&format!("\nimpact: {}", chat_safe(&i.summary)));
    }
    if let Some(reason) = n.reason.as_ref().filter(|_| n.event != "review.created") {
        text.push_str(&format!("\nsaid: {}", chat_safe(reason)));
    }
    if n.event == "review.created" {
        text.push_str(&format!(
            "\napprove: `sluice reviews approve {id}`  deny: `sluice reviews deny {id} --reason \"...\"`",
            id = r.id
        ));
        if let Some(base) = link_base {
            text.push_str(&format!(
                "\n{}/v1/reviews/{}",
                base.trim_end_matches('/'),
                r.id
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_messages_say_what_who_why_and_how_to_decide() {
        let review: ReviewRecord = serde_json::from_value(json!({
            "id": "rev_0123456789abcdef", "kind": "command", "state": "pending",
            "principal": "alice", "actor": "agent:claude", "connection": "prod",
            "mode": "defer", "statement": "DELETE FROM orders WHERE id = 1",
            "statement_hash": "x", "classification": null,
            "policy_reason": "writes on prod need a review", "policies": ["p"],
            "impact": {"estimated_rows": 1, "summary": "the planner estimates 1 row(s)"},
            "session_id": null, "role": null, "duration_secs": null, "reason": null,
            "rule": {"name": "default", "approvers": ["approvers"], "approvals": 1,
                     "deny_wins": true, "require_reason": true},
            "votes": [], "created_at": 0, "expires_at": 0, "decided_at": null,
            "decided_by": null, "decision_reason": null, "finished_at": null,
            "token_id": null, "version": 1
        }))
        .unwrap();
        let n = ReviewNotice {
            event: "review.created".into(),
            by: Some("alice via agent:claude".into()),
            reason: None,
            review,
        };
        let mut sneaky = n.clone();
        sneaky.review.statement = Some("x\n```\n<https://evil|approve> <!channel>".into());
        let body: serde_json::Value = serde_json::from_slice(&chat_body(&sneaky, None)).unwrap();
        let text = body["text"].as_str().unwrap();
        assert_eq!(text.matches("```").count(), 2, "{text}");
        assert!(!text.contains('<'), "{text}");
        let body: serde_json::Value =
            serde_json::from_slice(&chat_body(&n, Some("https://sluice.example/"))).unwrap();
        let text = body["text"].as_str().unwrap();
        for part in [
            "DELETE FROM orders WHERE id = 1",
            "alice via agent:claude",
            "writes on prod need a review",
            "estimates 1 row",
            "sluice reviews approve rev_0123456789abcdef",
            "sluice reviews deny rev_0123456789abcdef",
            "https://sluice.example/v1/reviews/rev_0123456789abcdef",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        let event: serde_json::Value = serde_json::from_slice(&json_body(&n)).unwrap();
        assert_eq!(event["review"]["id"], "rev_0123456789abcdef");
    }

    #[test]
    fn signatures_cover_time_and_body() {
        let a = sign(b"k", 1, b"body");
        assert!(a.starts_with("sha256="));
        assert_ne!(a, sign(b"k", 2, b"body"));
        assert_ne!(a, sign(b"k", 1, b"bodY"));
        assert_ne!(a, sign(b"j", 1, b"body"));
    }
}
