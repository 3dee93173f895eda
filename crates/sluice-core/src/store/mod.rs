//! The store: tokens, sessions and the audit chain. SQLite (embedded, the
//! default) or PostgreSQL (shared by several gateways), behind one API.

mod postgres;
mod sqlite;
mod tls;

use serde::{Deserialize, Serialize};

use crate::audit::{ChainVerifier, Event, EventDraft, VerifyReport};
use crate::review::{ReviewRecord, ReviewState};

/// A review as the store keeps it: the searched fields, and the rest as JSON.
pub(crate) struct ReviewRow {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub principal: String,
    pub connection: String,
    pub statement_hash: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub version: i64,
    pub body: String,
}

impl ReviewRow {
    fn of(r: &ReviewRecord) -> Result<ReviewRow, StoreError> {
        Ok(ReviewRow {
            id: r.id.clone(),
            kind: r.kind.as_str().into(),
            state: r.state.as_str().into(),
            principal: r.principal.clone(),
            connection: r.connection.clone(),
            statement_hash: r.statement_hash.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            version: r.version,
            body: serde_json::to_string(r).map_err(|e| StoreError::Other(e.to_string()))?,
        })
    }

    fn decode(body: &str) -> Result<ReviewRecord, StoreError> {
        serde_json::from_str(body).map_err(|e| StoreError::Other(format!("stored review: {e}")))
    }
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("postgres store: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The store's worker is gone.
    #[error("store is shut down")]
    Closed,
    /// Anything else, described.
    #[error("store: {0}")]
    Other(String),
}

/// A stored token: everything but the token itself, which is never kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public identifier (`tok_...`), safe to show and log.
    pub id: String,
    /// SHA-256 of the token.
    #[serde(skip)]
    pub hash: String,
    /// `access` for connection tokens, `admin` for the API credential.
    pub kind: String,
    /// Who is accountable.
    pub principal: String,
    /// The agent acting for the principal, if any.
    pub actor: Option<String>,
    /// Connection names the token opens.
    pub connections: Vec<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms; `None` only for the admin credential.
    pub expires_at: Option<i64>,
    /// Remaining connection count, if limited.
    pub uses_left: Option<i64>,
    /// Unix ms when revoked.
    pub revoked_at: Option<i64>,
    /// Who issued it.
    pub created_by: Option<String>,
    /// A narrower role on the connection (`read-only`, or a name policy reads).
    #[serde(default)]
    pub role: Option<String>,
    /// The token this one was delegated from; revoking that revokes this.
    #[serde(default)]
    pub parent: Option<String>,
    /// Groups its identity provider put the principal in (mapped to sluice
    /// groups); policy and approval rules see them besides `[policy.groups]`.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl TokenRecord {
    /// Whether its actor was named by a delegator rather than by the
    /// administrator (recorded when the token was made).
    pub fn delegated_agent(&self) -> bool {
        self.actor.is_some()
            && self
                .created_by
                .as_deref()
                .is_some_and(|c| c.starts_with("delegated:"))
    }
}

/// One session through the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// `ses_...`
    pub id: String,
    /// Token it was opened with.
    pub token_id: Option<String>,
    /// Accountable principal.
    pub principal: String,
    /// Acting agent.
    pub actor: Option<String>,
    /// Connection name.
    pub connection: String,
    /// Protocol.
    pub protocol: String,
    /// Client address.
    pub client_addr: String,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms, once closed.
    pub ended_at: Option<i64>,
    /// Bytes from the client.
    pub bytes_in: i64,
    /// Bytes to the client.
    pub bytes_out: i64,
    /// How it ended (`open` while running).
    pub outcome: String,
}

/// Filters for listing sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionFilter {
    /// Only this connection.
    pub connection: Option<String>,
    /// Only this principal.
    pub principal: Option<String>,
    /// Started at or after (Unix ms).
    pub since: Option<i64>,
    /// Started before (Unix ms).
    pub until: Option<i64>,
    /// At most this many, newest first.
    pub limit: Option<i64>,
}

/// The store, whichever backend holds it.
#[derive(Clone)]
pub enum Store {
    /// Embedded SQLite file.
    Sqlite(sqlite::SqliteStore),
    /// Shared PostgreSQL database.
    Postgres(postgres::PgStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens the store named by `url` (`postgres://...`), or the SQLite file
    /// at `sqlite_path`. A PostgreSQL store is reached over verified TLS
    /// when the URL asks for it (`sslmode=require`), trusting `ca_file` if given.
    pub async fn open(
        url: Option<&str>,
        sqlite_path: &std::path::Path,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Store, StoreError> {
        match url {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Store::Postgres(postgres::PgStore::open(u, ca_file).await?))
            }
            Some(u) if u.starts_with("sqlite://") => Ok(Store::Sqlite(sqlite::SqliteStore::open(
                std::path::Path::new(&u["sqlite://".len()..]),
            )?)),
            Some(u) => Err(StoreError::Other(format!(
                "unsupported store URL scheme in {:?}: use postgres:// or sqlite://",
                u.split("://").next().unwrap_or("")
            ))),
            None => Ok(Store::Sqlite(sqlite::SqliteStore::open(sqlite_path)?)),
        }
    }

    /// Which backend this is, for display.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Saves a new token record.
    pub async fn insert_token(&self, t: TokenRecord) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_token(t).await)
    }

    /// Finds a token by the hash of its value.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        dispatch!(self, s => s.token_by_hash(hash.to_string()).await)
    }

    /// Finds a token by its public id.
    pub async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        dispatch!(self, s => s.token_by_id(id.to_string()).await)
    }

    /// All tokens of a kind, newest first.
    pub async fn list_tokens(&self, kind: &str) -> Result<Vec<TokenRecord>, StoreError> {
        dispatch!(self, s => s.list_tokens(kind.to_string()).await)
    }

    /// Marks a token revoked; false if it was unknown or already revoked.
    pub async fn revoke_token(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        dispatch!(self, s => s.revoke_token(id.to_string(), at).await)
    }

    /// Takes one use of a use-limited token; false if none is left.
    pub async fn consume_token_use(&self, id: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.consume_token_use(id.to_string()).await)
    }

    /// Ids of the tokens delegated (or renewed, or connected) from `id`.
    pub async fn children_of(&self, id: &str) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.children_of(id.to_string()).await)
    }

    /// Ids of tokens revoked at or after `since` (Unix ms).
    pub async fn revoked_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.revoked_since(since).await)
    }

    /// Saves a new review.
    pub async fn insert_review(&self, r: &ReviewRecord) -> Result<(), StoreError> {
        let row = ReviewRow::of(r)?;
        dispatch!(self, s => s.insert_review(row).await)
    }

    /// Saves a changed review if nobody changed it since `r.version - 1`
    /// was read; false if somebody did (read it again and retry).
    pub async fn update_review(&self, r: &ReviewRecord) -> Result<bool, StoreError> {
        let row = ReviewRow::of(r)?;
        dispatch!(self, s => s.update_review(row).await)
    }

    /// One review.
    pub async fn review(&self, id: &str) -> Result<Option<ReviewRecord>, StoreError> {
        let body = dispatch!(self, s => s.review_body(id.to_string()).await)?;
        body.map(|b| ReviewRow::decode(&b)).transpose()
    }

    /// Reviews in a state, newest first.
    pub async fn reviews_in_state(
        &self,
        state: ReviewState,
        limit: i64,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let sql = REVIEWS_IN_STATE;
        let bodies = dispatch!(self, s => s.review_bodies(sql, vec![state.as_str().into()], Some(limit)).await)?;
        bodies.iter().map(|b| ReviewRow::decode(b)).collect()
    }

    /// Open (pending or approved) reviews of one principal's statement.
    pub async fn reviews_of_statement(
        &self,
        principal: &str,
        connection: &str,
        hash: &str,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let args = vec![principal.into(), connection.into(), hash.into()];
        let bodies =
            dispatch!(self, s => s.review_bodies(REVIEWS_OF_STATEMENT, args.clone(), None).await)?;
        bodies.iter().map(|b| ReviewRow::decode(b)).collect()
    }

    /// Pending reviews of a principal (any agent), at most `limit`.
    pub async fn pending_reviews_of(
        &self,
        principal: &str,
        limit: i64,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let args = vec![principal.to_string()];
        let bodies = dispatch!(self, s => s.review_bodies(REVIEWS_PENDING_OF, args.clone(), Some(limit)).await)?;
        bodies.iter().map(|b| ReviewRow::decode(b)).collect()
    }

    /// Open reviews whose time ran out by `now`.
    pub async fn reviews_due(&self, now: i64) -> Result<Vec<ReviewRecord>, StoreError> {
        let bodies = dispatch!(self, s => s.review_bodies(REVIEWS_DUE, vec![], Some(now)).await)?;
        bodies.iter().map(|b| ReviewRow::decode(b)).collect()
    }

    /// Forwards the ids of reviews changed by any gateway sharing the
    /// store; `"*"` after a reconnect, when some may have been missed.
    /// Only the PostgreSQL store has other gateways to hear from.
    pub fn listen_reviews(&self, tx: tokio::sync::broadcast::Sender<String>) {
        if let Store::Postgres(s) = self {
            s.listen_reviews(tx);
        }
    }

    /// Saves a new session record.
    pub async fn insert_session(&self, r: SessionRecord) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_session(r).await)
    }

    /// Closes a session record.
    pub async fn end_session(
        &self,
        id: &str,
        ended_at: i64,
        bytes_in: i64,
        bytes_out: i64,
        outcome: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.end_session(id.to_string(), ended_at, bytes_in, bytes_out, outcome.to_string()).await)
    }

    /// Sessions matching the filter, newest first.
    pub async fn list_sessions(&self, f: SessionFilter) -> Result<Vec<SessionRecord>, StoreError> {
        dispatch!(self, s => s.list_sessions(f).await)
    }

    /// One session.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        dispatch!(self, s => s.session(id.to_string()).await)
    }

    /// Moves journaled events into the chain and records the journal
    /// position reached, in one transaction.
    pub async fn ingest(
        &self,
        gateway: &str,
        drafts: Vec<EventDraft>,
        to: (u64, u64),
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.ingest(gateway.to_string(), drafts, to).await)
    }

    /// How far a gateway's journal has been ingested.
    pub async fn journal_position(&self, gateway: &str) -> Result<Option<(u64, u64)>, StoreError> {
        dispatch!(self, s => s.journal_position(gateway.to_string()).await)
    }

    /// Events of a session, in order.
    pub async fn session_events(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        dispatch!(self, s => s.session_events(id.to_string()).await)
    }

    /// Events with `seq > after`, at most `limit`, in order.
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        dispatch!(self, s => s.events_after(after, limit).await)
    }

    /// The chain head: last sequence number and hash.
    pub async fn chain_head(&self) -> Result<(i64, String), StoreError> {
        dispatch!(self, s => s.chain_head().await)
    }

    /// Walks the chain up to the head read at the start (appends continue
    /// meanwhile) and reports the first broken event.
    pub async fn verify_chain(&self) -> Result<VerifyReport, StoreError> {
        let (head_seq, head_hash) = self.chain_head().await?;
        let mut v = ChainVerifier::default();
        let mut after = 0;
        loop {
            let page = self.events_after(after, 5000).await?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                // Events appended after the head was read are checked next time.
                if e.seq > head_seq {
                    return Ok(v.finish(head_seq, &head_hash));
                }
                if let Err(problem) = v.check(e) {
                    // A gap (a deleted event) is reported at the first
                    // missing number; any other break at the failing event.
                    let at = if e.seq > after + 1 { after + 1 } else { e.seq };
                    return Ok(v.broken(at, problem));
                }
                after = e.seq;
            }
        }
        Ok(v.finish(head_seq, &head_hash))
    }
}

pub(crate) const CHAIN_FIELDS: &str =
    "seq, ts, session_id, kind, principal, actor, connection, data, prev_hash, hash";
pub(crate) const TOKEN_FIELDS: &str =
    "id, hash, kind, principal, actor, connections, created_at, expires_at, uses_left, revoked_at, created_by, role, parent, groups";
pub(crate) const SESSION_FIELDS: &str =
    "id, token_id, principal, actor, connection, protocol, client_addr, started_at, ended_at, bytes_in, bytes_out, outcome";

pub(crate) fn encode_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn decode_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// Portable schema, applied in order; each entry is one migration.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    principal TEXT NOT NULL,
    actor TEXT,
    connections TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    uses_left BIGINT,
    revoked_at BIGINT,
    created_by TEXT
);
CREATE INDEX tokens_revoked ON tokens (revoked_at);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    token_id TEXT,
    principal TEXT NOT NULL,
    actor TEXT,
    connection TEXT NOT NULL,
    protocol TEXT NOT NULL,
    client_addr TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    bytes_in BIGINT NOT NULL DEFAULT 0,
    bytes_out BIGINT NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL
);
CREATE INDEX sessions_started ON sessions (started_at);
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    ts BIGINT NOT NULL,
    session_id TEXT,
    kind TEXT NOT NULL,
    principal TEXT,
    actor TEXT,
    connection TEXT,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX events_session ON events (session_id, seq);
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
"#,
    r#"
CREATE TABLE journal_positions (
    gateway TEXT PRIMARY KEY,
    segment BIGINT NOT NULL,
    pos BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE tokens ADD COLUMN role TEXT;
CREATE TABLE reviews (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    principal TEXT NOT NULL,
    connection TEXT NOT NULL,
    statement_hash TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX reviews_state ON reviews (state, expires_at);
CREATE INDEX reviews_statement ON reviews (principal, connection, statement_hash);
"#,
    r#"
ALTER TABLE tokens ADD COLUMN parent TEXT;
ALTER TABLE tokens ADD COLUMN groups TEXT;
CREATE INDEX tokens_parent ON tokens (parent);
"#,
];

/// Builds the WHERE clause of a session listing with `$n` placeholders;
/// returns the clause and the string/integer values in placeholder order.
pub(crate) fn session_filter_sql(f: &SessionFilter) -> (String, Vec<FilterValue>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    if let Some(c) = &f.connection {
        values.push(FilterValue::Text(c.clone()));
        clauses.push(format!("connection = ${}", values.len()));
    }
    if let Some(p) = &f.principal {
        values.push(FilterValue::Text(p.clone()));
        clauses.push(format!("principal = ${}", values.len()));
    }
    if let Some(s) = f.since {
        values.push(FilterValue::Int(s));
        clauses.push(format!("started_at >= ${}", values.len()));
    }
    if let Some(u) = f.until {
        values.push(FilterValue::Int(u));
        clauses.push(format!("started_at < ${}", values.len()));
    }
    values.push(FilterValue::Int(f.limit.unwrap_or(100).clamp(1, 10_000)));
    let limit = values.len();
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (
        format!("SELECT {SESSION_FIELDS} FROM sessions {filter} ORDER BY started_at DESC LIMIT ${limit}"),
        values,
    )
}

/// A value bound into a filter query.
pub(crate) enum FilterValue {
    Text(String),
    Int(i64),
}

/// Computes chain positions and hashes for a batch after the given head.
pub(crate) fn chain_batch(mut seq: i64, mut prev: String, drafts: &[EventDraft]) -> Vec<Event> {
    drafts
        .iter()
        .map(|d| {
            seq += 1;
            let data = d.data.to_string();
            let hash = crate::audit::event_hash(
                &prev,
                seq,
                d.ts,
                d.session_id.as_deref(),
                &d.kind,
                d.principal.as_deref(),
                d.actor.as_deref(),
                d.connection.as_deref(),
                &data,
            );
            let e = Event {
                seq,
                ts: d.ts,
                session_id: d.session_id.clone(),
                kind: d.kind.clone(),
                principal: d.principal.clone(),
                actor: d.actor.clone(),
                connection: d.connection.clone(),
                data,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            };
            prev = hash;
            e
        })
        .collect()
}

pub(crate) const INSERT_EVENT: &str = "INSERT INTO events (seq, ts, session_id, kind, principal, actor, connection, data, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
pub(crate) const INSERT_TOKEN: &str = "INSERT INTO tokens (id, hash, kind, principal, actor, connections, created_at, expires_at, uses_left, revoked_at, created_by, role, parent, groups) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
pub(crate) const INSERT_REVIEW: &str = "INSERT INTO reviews (id, kind, state, principal, connection, statement_hash, created_at, expires_at, version, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
pub(crate) const UPDATE_REVIEW: &str = "UPDATE reviews SET state = $3, expires_at = $4, version = $5, body = $6 WHERE id = $1 AND version = $2";
pub(crate) const REVIEW_BY_ID: &str = "SELECT body FROM reviews WHERE id = $1";
pub(crate) const REVIEWS_IN_STATE: &str =
    "SELECT body FROM reviews WHERE state = $1 ORDER BY created_at DESC LIMIT $2";
pub(crate) const REVIEWS_OF_STATEMENT: &str = "SELECT body FROM reviews WHERE principal = $1 AND connection = $2 AND statement_hash = $3 AND state IN ('pending', 'approved') ORDER BY created_at";
pub(crate) const REVIEWS_PENDING_OF: &str =
    "SELECT body FROM reviews WHERE state = 'pending' AND principal = $1 LIMIT $2";
pub(crate) const REVIEWS_DUE: &str = "SELECT body FROM reviews WHERE state IN ('pending', 'approved') AND expires_at <= $1 LIMIT 500";
pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions (id, token_id, principal, actor, connection, protocol, client_addr, started_at, ended_at, bytes_in, bytes_out, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
pub(crate) const END_SESSION: &str =
    "UPDATE sessions SET ended_at = $2, bytes_in = $3, bytes_out = $4, outcome = $5 WHERE id = $1";
pub(crate) const REVOKE_TOKEN: &str =
    "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
pub(crate) const CONSUME_USE: &str =
    "UPDATE tokens SET uses_left = uses_left - 1 WHERE id = $1 AND (uses_left IS NULL OR uses_left > 0)";
pub(crate) const REVOKED_SINCE: &str = "SELECT id FROM tokens WHERE revoked_at >= $1";
pub(crate) const CHILDREN_OF: &str = "SELECT id FROM tokens WHERE parent = $1";
pub(crate) const UPDATE_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";

pub(crate) const UPSERT_JOURNAL: &str = "INSERT INTO journal_positions (gateway, segment, pos) VALUES ($1, $2, $3) ON CONFLICT (gateway) DO UPDATE SET segment = excluded.segment, pos = excluded.pos";
pub(crate) const JOURNAL_POSITION: &str =
    "SELECT segment, pos FROM journal_positions WHERE gateway = $1";
