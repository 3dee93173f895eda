//! The embedded SQLite backend. One dedicated thread owns the connection
//! (SQLite allows one writer anyway); callers send it closures.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::{params, OptionalExtension, Row};
use tokio::sync::oneshot;

use super::*;

type Job = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

/// Handle to the SQLite worker thread.
#[derive(Clone)]
pub struct SqliteStore {
    tx: mpsc::Sender<Job>,
}

/// SQLite reads `?N` placeholders; the shared statements use `$N`.
fn q(sql: &str) -> String {
    sql.replace('$', "?")
}

fn migrate(conn: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS sluice_schema (version BIGINT NOT NULL)")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM sluice_schema",
        [],
        |r| r.get(0),
    )?;
    for (i, m) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > current {
            tx.execute_batch(m)?;
            if version == 1 {
                // The database itself refuses edits to the audit log; the
                // hash chain catches whoever drops these triggers first.
                tx.execute_batch(
                    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
                     CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;",
                )?;
            }
            tx.execute("INSERT INTO sluice_schema (version) VALUES (?1)", [version])?;
        }
    }
    tx.commit()
}

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        hash: r.get(1)?,
        kind: r.get(2)?,
        principal: r.get(3)?,
        actor: r.get(4)?,
        connections: decode_list(&r.get::<_, String>(5)?),
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        uses_left: r.get(8)?,
        revoked_at: r.get(9)?,
        created_by: r.get(10)?,
        role: r.get(11)?,
        parent: r.get(12)?,
        groups: decode_list(&r.get::<_, Option<String>>(13)?.unwrap_or_default()),
    })
}

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get(0)?,
        token_id: r.get(1)?,
        principal: r.get(2)?,
        actor: r.get(3)?,
        connection: r.get(4)?,
        protocol: r.get(5)?,
        client_addr: r.get(6)?,
        started_at: r.get(7)?,
        ended_at: r.get(8)?,
        bytes_in: r.get(9)?,
        bytes_out: r.get(10)?,
        outcome: r.get(11)?,
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        seq: r.get(0)?,
        ts: r.get(1)?,
        session_id: r.get(2)?,
        kind: r.get(3)?,
        principal: r.get(4)?,
        actor: r.get(5)?,
        connection: r.get(6)?,
        data: r.get(7)?,
        prev_hash: r.get(8)?,
        hash: r.get(9)?,
    })
}

fn ingest_batch(
    conn: &mut rusqlite::Connection,
    gateway: &str,
    drafts: &[EventDraft],
    to: (u64, u64),
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (seq, prev): (i64, String) =
        tx.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let events = chain_batch(seq, prev, drafts);
    {
        let mut ins = tx.prepare_cached(&q(INSERT_EVENT))?;
        for e in &events {
            ins.execute(params![
                e.seq,
                e.ts,
                e.session_id,
                e.kind,
                e.principal,
                e.actor,
                e.connection,
                e.data,
                e.prev_hash,
                e.hash
            ])?;
        }
        if let Some(last) = events.last() {
            tx.prepare_cached(&q(UPDATE_HEAD))?
                .execute(params![last.seq, last.hash])?;
        }
        tx.prepare_cached(&q(UPSERT_JOURNAL))?.execute(params![
            gateway,
            to.0 as i64,
            to.1 as i64
        ])?;
    }
    tx.commit()
}

fn worker(mut conn: rusqlite::Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        job(&mut conn);
    }
}

impl SqliteStore {
    /// Opens (creating and migrating) the SQLite file and starts its worker.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Other(format!("{}: {e}", dir.display())))?;
        }
        let mut conn = rusqlite::Connection::open(path)?;
        // WAL with synchronous=NORMAL: a commit is in the OS before the
        // statement is forwarded, so a gateway crash loses nothing; only a
        // power loss can drop the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The audit log grows fast under load: checkpoint in larger steps
        // and keep the hot B-tree pages in memory.
        conn.pragma_update(None, "wal_autocheckpoint", 16384)?;
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sluice-sqlite".into())
            .spawn(move || worker(conn, rx))
            .map_err(|e| StoreError::Other(e.to_string()))?;
        Ok(SqliteStore { tx })
    }

    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |c| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| StoreError::Closed)?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??)
    }

    pub(super) async fn insert_token(&self, t: TokenRecord) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                &q(INSERT_TOKEN),
                params![
                    t.id,
                    t.hash,
                    t.kind,
                    t.principal,
                    t.actor,
                    encode_list(&t.connections),
                    t.created_at,
                    t.expires_at,
                    t.uses_left,
                    t.revoked_at,
                    t.created_by,
                    t.role,
                    t.parent,
                    encode_list(&t.groups)
                ],
            )
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn token_by_hash(
        &self,
        hash: String,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.call(move |c| {
            c.prepare_cached(&format!(
                "SELECT {TOKEN_FIELDS} FROM tokens WHERE hash = ?1"
            ))?
            .query_row([hash], token_from_row)
            .optional()
        })
        .await
    }

    pub(super) async fn token_by_id(&self, id: String) -> Result<Option<TokenRecord>, StoreError> {
        self.call(move |c| {
            c.prepare_cached(&format!("SELECT {TOKEN_FIELDS} FROM tokens WHERE id = ?1"))?
                .query_row([id], token_from_row)
                .optional()
        })
        .await
    }

    pub(super) async fn list_tokens(&self, kind: String) -> Result<Vec<TokenRecord>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {TOKEN_FIELDS} FROM tokens WHERE kind = ?1 ORDER BY created_at DESC"
            ))?;
            let rows = st.query_map([kind], token_from_row)?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn revoke_token(&self, id: String, at: i64) -> Result<bool, StoreError> {
        self.call(move |c| c.execute(&q(REVOKE_TOKEN), params![id, at]).map(|n| n == 1))
            .await
    }

    pub(super) async fn consume_token_use(&self, id: String) -> Result<bool, StoreError> {
        self.call(move |c| c.execute(&q(CONSUME_USE), params![id]).map(|n| n == 1))
            .await
    }

    pub(super) async fn children_of(&self, id: String) -> Result<Vec<String>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(&q(CHILDREN_OF))?;
            let rows = st.query_map([id], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn revoked_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(&q(REVOKED_SINCE))?;
            let rows = st.query_map([since], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn insert_review(&self, r: ReviewRow) -> Result<(), StoreError> {
        self.call(move |c| {
            c.prepare_cached(&q(INSERT_REVIEW))?
                .execute(params![
                    r.id,
                    r.kind,
                    r.state,
                    r.principal,
                    r.connection,
                    r.statement_hash,
                    r.created_at,
                    r.expires_at,
                    r.version,
                    r.body
                ])
                .map(|_| ())
        })
        .await
    }

    pub(super) async fn update_review(&self, r: ReviewRow) -> Result<bool, StoreError> {
        self.call(move |c| {
            c.prepare_cached(&q(UPDATE_REVIEW))?
                .execute(params![
                    r.id,
                    r.version - 1,
                    r.state,
                    r.expires_at,
                    r.version,
                    r.body
                ])
                .map(|n| n == 1)
        })
        .await
    }

    pub(super) async fn review_body(&self, id: String) -> Result<Option<String>, StoreError> {
        self.call(move |c| {
            c.prepare_cached(&q(REVIEW_BY_ID))?
                .query_row([id], |r| r.get(0))
                .optional()
        })
        .await
    }

    pub(super) async fn review_bodies(
        &self,
        sql: &'static str,
        args: Vec<String>,
        last: Option<i64>,
    ) -> Result<Vec<String>, StoreError> {
        self.call(move |c| {
            let mut bound: Vec<Box<dyn rusqlite::ToSql>> = args
                .into_iter()
                .map(|a| Box::new(a) as Box<dyn rusqlite::ToSql>)
                .collect();
            if let Some(n) = last {
                bound.push(Box::new(n));
            }
            let mut st = c.prepare_cached(&q(sql))?;
            let rows = st.query_map(rusqlite::params_from_iter(bound.iter()), |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn insert_session(&self, r: SessionRecord) -> Result<(), StoreError> {
        self.call(move |c| {
            c.prepare_cached(&q(INSERT_SESSION))?
                .execute(params![
                    r.id,
                    r.token_id,
                    r.principal,
                    r.actor,
                    r.connection,
                    r.protocol,
                    r.client_addr,
                    r.started_at,
                    r.ended_at,
                    r.bytes_in,
                    r.bytes_out,
                    r.outcome
                ])
                .map(|_| ())
        })
        .await
    }

    pub(super) async fn end_session(
        &self,
        id: String,
        ended_at: i64,
        bytes_in: i64,
        bytes_out: i64,
        outcome: String,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            c.prepare_cached(&q(END_SESSION))?
                .execute(params![id, ended_at, bytes_in, bytes_out, outcome])
                .map(|_| ())
        })
        .await
    }

    pub(super) async fn list_sessions(
        &self,
        f: SessionFilter,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.call(move |c| {
            let (sql, values) = session_filter_sql(&f);
            let mut st = c.prepare(&q(&sql))?;
            let bound: Vec<Box<dyn rusqlite::ToSql>> = values
                .into_iter()
                .map(|v| -> Box<dyn rusqlite::ToSql> {
                    match v {
                        FilterValue::Text(s) => Box::new(s),
                        FilterValue::Int(i) => Box::new(i),
                    }
                })
                .collect();
            let rows = st.query_map(rusqlite::params_from_iter(bound.iter()), session_from_row)?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn session(&self, id: String) -> Result<Option<SessionRecord>, StoreError> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {SESSION_FIELDS} FROM sessions WHERE id = ?1"),
                [id],
                session_from_row,
            )
            .optional()
        })
        .await
    }

    pub(super) async fn ingest(
        &self,
        gateway: String,
        drafts: Vec<EventDraft>,
        to: (u64, u64),
    ) -> Result<(), StoreError> {
        self.call(move |c| ingest_batch(c, &gateway, &drafts, to))
            .await
    }

    pub(super) async fn journal_position(
        &self,
        gateway: String,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        self.call(move |c| {
            c.query_row(&q(JOURNAL_POSITION), [gateway], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .optional()
        })
        .await
    }

    pub(super) async fn session_events(&self, id: String) -> Result<Vec<Event>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {CHAIN_FIELDS} FROM events WHERE session_id = ?1 ORDER BY seq"
            ))?;
            let rows = st.query_map([id], event_from_row)?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {CHAIN_FIELDS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = st.query_map([after, limit], event_from_row)?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn chain_head(&self) -> Result<(i64, String), StoreError> {
        self.call(|c| {
            c.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .await
    }
}
