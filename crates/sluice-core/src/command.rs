//! The protocol-neutral command model: what an adapter hands the core for
//! every command a client sends, and what it reports once it completed.

use serde::{Deserialize, Serialize};

/// One command as the client sent it, before it is forwarded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Command {
    /// Protocol that carried it (`postgres`, `mysql`, `ssh`, ...).
    pub protocol: String,
    /// How it arrived within the protocol (`simple`, `extended`, `exec`, ...).
    pub path: String,
    /// The command text as the target will read it.
    pub text: String,
}

/// How a recorded command ended, as observed on the way back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// Rows reported by the target, when it reports any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// The target's error code (a SQLSTATE for SQL protocols).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// `ok`, `error`, or `skipped` when the target never ran it.
    pub status: String,
    /// Time from forwarding to completion, in microseconds.
    pub duration_us: u64,
}
