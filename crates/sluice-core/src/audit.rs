//! The append-only, hash-chained audit log: each event's hash covers the
//! previous event's hash and every field of the event, so editing, deleting
//! or reordering a stored event breaks the chain from that point on.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash the first event chains from.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event before the store assigns its place in the chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventDraft {
    /// Unix milliseconds.
    pub ts: i64,
    /// The session it belongs to, if any.
    pub session_id: Option<String>,
    /// What happened: `session.start`, `command`, `token.issued`, ...
    pub kind: String,
    /// Who is accountable.
    pub principal: Option<String>,
    /// Who was typing, when an agent acts for the principal.
    pub actor: Option<String>,
    /// The connection concerned.
    pub connection: Option<String>,
    /// Event details as JSON; never holds a secret.
    pub data: serde_json::Value,
}

impl EventDraft {
    /// A draft stamped now, with no session or identity attached.
    pub fn new(kind: &str, data: serde_json::Value) -> Self {
        EventDraft {
            ts: crate::time::now_ms(),
            session_id: None,
            kind: kind.to_string(),
            principal: None,
            actor: None,
            connection: None,
            data,
        }
    }
}

/// A stored event with its chain position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix milliseconds.
    pub ts: i64,
    /// The session it belongs to.
    pub session_id: Option<String>,
    /// Event kind.
    pub kind: String,
    /// Accountable principal.
    pub principal: Option<String>,
    /// Acting agent, if any.
    pub actor: Option<String>,
    /// Connection concerned.
    pub connection: Option<String>,
    /// Details, as stored (JSON text).
    pub data: String,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

fn put(h: &mut Sha256, field: &[u8]) {
    // Length-prefixing makes the encoding unambiguous: no two different
    // field tuples hash the same bytes.
    h.update((field.len() as u64).to_le_bytes());
    h.update(field);
}

/// The hash of an event given its fields and its predecessor's hash.
#[allow(clippy::too_many_arguments)]
pub fn event_hash(
    prev_hash: &str,
    seq: i64,
    ts: i64,
    session_id: Option<&str>,
    kind: &str,
    principal: Option<&str>,
    actor: Option<&str>,
    connection: Option<&str>,
    data: &str,
) -> String {
    let mut h = Sha256::new();
    put(&mut h, prev_hash.as_bytes());
    put(&mut h, &seq.to_le_bytes());
    put(&mut h, &ts.to_le_bytes());
    for field in [session_id, Some(kind), principal, actor, connection] {
        match field {
            Some(v) => {
                h.update([1u8]);
                put(&mut h, v.as_bytes());
            }
            None => h.update([0u8]),
        }
    }
    put(&mut h, data.as_bytes());
    hex::encode(h.finalize())
}

/// Recomputes the hash of a stored event.
pub fn rehash(e: &Event) -> String {
    event_hash(
        &e.prev_hash,
        e.seq,
        e.ts,
        e.session_id.as_deref(),
        &e.kind,
        e.principal.as_deref(),
        e.actor.as_deref(),
        e.connection.as_deref(),
        &e.data,
    )
}

/// The result of checking the chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyReport {
    /// Whether the whole chain is intact.
    pub ok: bool,
    /// How many events were checked.
    pub checked: i64,
    /// The first event that does not verify, if any.
    pub first_broken_seq: Option<i64>,
    /// Why it does not verify.
    pub problem: Option<String>,
}

/// Incremental verifier: feed events in sequence order.
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
    checked: i64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            checked: 0,
        }
    }
}

impl ChainVerifier {
    /// Checks the next event; returns the problem if it breaks the chain.
    pub fn check(&mut self, e: &Event) -> Result<(), String> {
        if e.seq != self.expected_seq {
            return Err(format!(
                "expected event {} but found {} (an event was deleted or inserted)",
                self.expected_seq, e.seq
            ));
        }
        if e.prev_hash != self.prev_hash {
            return Err("its link to the previous event does not match".into());
        }
        if rehash(e) != e.hash {
            return Err("its content does not match its hash (the event was modified)".into());
        }
        self.prev_hash = e.hash.clone();
        self.expected_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// Checks the chain head the store keeps against the last event seen.
    pub fn finish(self, head_seq: i64, head_hash: &str) -> VerifyReport {
        if head_seq != self.expected_seq - 1 || head_hash != self.prev_hash {
            return VerifyReport {
                ok: false,
                checked: self.checked,
                first_broken_seq: Some(self.expected_seq),
                problem: Some(format!(
                    "the chain head says event {head_seq} is last, but the log ends at {} (events were removed from the end)",
                    self.expected_seq - 1
                )),
            };
        }
        VerifyReport {
            ok: true,
            checked: self.checked,
            first_broken_seq: None,
            problem: None,
        }
    }

    /// A failed report at the given event.
    pub fn broken(&self, seq: i64, problem: String) -> VerifyReport {
        VerifyReport {
            ok: false,
            checked: self.checked,
            first_broken_seq: Some(seq),
            problem: Some(problem),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Event> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let data = format!("{{\"n\":{seq}}}");
                let hash = event_hash(
                    &prev,
                    seq,
                    10,
                    None,
                    "command",
                    Some("p"),
                    None,
                    None,
                    &data,
                );
                let e = Event {
                    seq,
                    ts: 10,
                    session_id: None,
                    kind: "command".into(),
                    principal: Some("p".into()),
                    actor: None,
                    connection: None,
                    data,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies_and_edits_are_found() {
        let events = chain(5);
        let mut v = ChainVerifier::default();
        for e in &events {
            v.check(e).unwrap();
        }
        assert!(v.finish(5, &events[4].hash).ok);

        let mut edited = events.clone();
        edited[2].data = "{\"n\":99}".into();
        let mut v = ChainVerifier::default();
        let broken = edited.iter().find(|e| v.check(e).is_err()).unwrap();
        assert_eq!(broken.seq, 3);

        let mut v = ChainVerifier::default();
        for e in &events[..4] {
            v.check(e).unwrap();
        }
        assert!(!v.finish(5, &events[4].hash).ok, "truncation must be found");
    }
}
