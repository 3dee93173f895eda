//! The protocol-neutral command model: what an adapter hands the core for
//! every command a client sends, how the command was classified, and what
//! the adapter reports once it completed.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

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
    /// What the classifier found, when the protocol classifies commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<std::sync::Arc<Classification>>,
    /// What policy decided about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<std::sync::Arc<crate::Decision>>,
    /// The review that let it run, when policy asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
}

/// What a command does, from least to most consequential. Every protocol
/// maps its commands onto these; policy is written against them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Reads data, changes nothing.
    Read,
    /// Transaction and session control (begin, commit, settings).
    Session,
    /// Changes data.
    Write,
    /// Changes the schema.
    Ddl,
    /// Removes data or objects wholesale (drop, truncate, unfiltered delete).
    Destructive,
    /// Privileges and administration: grants, roles, server files and
    /// programs, server configuration, other sessions.
    Admin,
    /// Could not be understood; treated as the riskiest class.
    Unknown,
}

impl Class {
    /// Every class, least consequential first.
    pub const ALL: [Class; 7] = [
        Class::Read,
        Class::Session,
        Class::Write,
        Class::Ddl,
        Class::Destructive,
        Class::Admin,
        Class::Unknown,
    ];

    /// The name used in policy, config and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Session => "session",
            Class::Write => "write",
            Class::Ddl => "ddl",
            Class::Destructive => "destructive",
            Class::Admin => "admin",
            Class::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Class {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Class::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown class \"{s}\" (one of: {})",
                    Class::ALL.map(Class::as_str).join(", ")
                )
            })
    }
}

/// What a classifier found in one command (which may hold several
/// statements): every effect, the objects touched, and flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Classification {
    /// Every class of effect found; the command's class is the greatest.
    pub effects: BTreeSet<Class>,
    /// Tables and other relations, as written (`schema.name` when qualified).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tables: BTreeSet<String>,
    /// Functions called or defined, as written.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub functions: BTreeSet<String>,
    /// Schemas named explicitly.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub schemas: BTreeSet<String>,
    /// Programs run (a shell command line's simple commands, by name).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub programs: BTreeSet<String>,
    /// Files and directories touched, as written (arguments, transfer paths).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub paths: BTreeSet<String>,
    /// Statement-level facts policy may use.
    #[serde(default, skip_serializing_if = "Flags::is_default")]
    pub flags: Flags,
    /// Why something was classified unknown, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
}

/// Statement-level facts. Records leave out the usual values (one
/// statement, every WHERE present, nothing dynamic) to stay small.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flags {
    /// Statements in the command.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub statements: u32,
    /// Every UPDATE and DELETE in it has a WHERE clause (true when there are none).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub has_where: bool,
    /// More than one statement in one message.
    #[serde(default, skip_serializing_if = "is_false")]
    pub multi_statement: bool,
    /// Runs SQL text the classifier cannot see (DO blocks, EXECUTE strings).
    #[serde(default, skip_serializing_if = "is_false")]
    pub dynamic_sql: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            statements: 1,
            has_where: true,
            multi_statement: false,
            dynamic_sql: false,
        }
    }
}

fn one() -> u32 {
    1
}
fn is_one(n: &u32) -> bool {
    *n == 1
}
fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}

impl Flags {
    fn is_default(&self) -> bool {
        *self == Flags::default()
    }
}

impl Classification {
    /// A classification with one effect and nothing else.
    pub fn of(class: Class) -> Self {
        let mut c = Classification::default();
        c.effects.insert(class);
        c
    }

    /// Unknown, with the reason (fail closed).
    pub fn unknown(reason: impl Into<String>) -> Self {
        let mut c = Classification::of(Class::Unknown);
        c.unknown_reason = Some(reason.into());
        c
    }

    /// The most consequential effect.
    pub fn class(&self) -> Class {
        self.effects.last().copied().unwrap_or(Class::Read)
    }

    /// Adds everything another classification found (a later statement of
    /// the same command, or a prepared statement it executes).
    pub fn merge(&mut self, other: &Classification) {
        self.effects.extend(other.effects.iter().copied());
        self.tables.extend(other.tables.iter().cloned());
        self.functions.extend(other.functions.iter().cloned());
        self.schemas.extend(other.schemas.iter().cloned());
        self.programs.extend(other.programs.iter().cloned());
        self.paths.extend(other.paths.iter().cloned());
        // The caller that combines statements counts them itself.
        self.flags.statements = self.flags.statements.max(other.flags.statements);
        self.flags.has_where &= other.flags.has_where;
        self.flags.multi_statement |= other.flags.multi_statement;
        self.flags.dynamic_sql |= other.flags.dynamic_sql;
        if self.unknown_reason.is_none() {
            self.unknown_reason = other.unknown_reason.clone();
        }
    }
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
    /// `ok`, `error`, `skipped` when the target never ran it, or `blocked`
    /// when policy kept it from the target.
    pub status: String,
    /// Time from forwarding to completion, in microseconds.
    pub duration_us: u64,
    /// Values masked in what it returned, by kind; never the values.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub masked: std::collections::BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_is_the_most_consequential_effect() {
        let mut c = Classification::of(Class::Read);
        c.merge(&Classification::of(Class::Write));
        assert_eq!(c.class(), Class::Write);
        c.merge(&Classification::unknown("syntax error"));
        assert_eq!(c.class(), Class::Unknown);
        assert_eq!(c.unknown_reason.as_deref(), Some("syntax error"));
        assert_eq!("ddl".parse::<Class>().unwrap(), Class::Ddl);
        assert!("drop".parse::<Class>().is_err());
    }
}
