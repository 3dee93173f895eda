//! The PostgreSQL backend, for several gateways sharing one store. The
//! audit chain is serialised across gateways by a row lock on its head.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{types::ToSql, Client, NoTls, Row};

use super::*;

type AppendReply = oneshot::Sender<Result<Vec<i64>, StoreError>>;

/// Handle to the PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    client: Arc<Client>,
    appends: mpsc::Sender<(Vec<EventDraft>, AppendReply)>,
}

async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::error!(error = %e, "store connection closed");
        }
    });
    Ok(client)
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // Gateways starting together must not migrate twice.
    tx.execute("SELECT pg_advisory_xact_lock(7350001)", &[])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS sluice_schema (version BIGINT NOT NULL)")
        .await?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM sluice_schema",
            &[],
        )
        .await?
        .get(0);
    for (i, m) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > current {
            tx.batch_execute(m).await?;
            if version == 1 {
                tx.batch_execute(
                    "CREATE FUNCTION sluice_events_append_only() RETURNS trigger LANGUAGE plpgsql AS
                       $f$ BEGIN RAISE EXCEPTION 'audit events are append-only'; END $f$;
                     CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
                       FOR EACH ROW EXECUTE FUNCTION sluice_events_append_only();",
                )
                .await?;
            }
            tx.execute(
                "INSERT INTO sluice_schema (version) VALUES ($1)",
                &[&version],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

fn token_from_row(r: &Row) -> TokenRecord {
    TokenRecord {
        id: r.get(0),
        hash: r.get(1),
        kind: r.get(2),
        principal: r.get(3),
        actor: r.get(4),
        connections: decode_list(r.get::<_, &str>(5)),
        created_at: r.get(6),
        expires_at: r.get(7),
        uses_left: r.get(8),
        revoked_at: r.get(9),
        created_by: r.get(10),
    }
}

fn session_from_row(r: &Row) -> SessionRecord {
    SessionRecord {
        id: r.get(0),
        token_id: r.get(1),
        principal: r.get(2),
        actor: r.get(3),
        connection: r.get(4),
        protocol: r.get(5),
        client_addr: r.get(6),
        started_at: r.get(7),
        ended_at: r.get(8),
        bytes_in: r.get(9),
        bytes_out: r.get(10),
        outcome: r.get(11),
    }
}

fn event_from_row(r: &Row) -> Event {
    Event {
        seq: r.get(0),
        ts: r.get(1),
        session_id: r.get(2),
        kind: r.get(3),
        principal: r.get(4),
        actor: r.get(5),
        connection: r.get(6),
        data: r.get(7),
        prev_hash: r.get(8),
        hash: r.get(9),
    }
}

async fn append_batch(client: &mut Client, drafts: &[EventDraft]) -> Result<Vec<i64>, StoreError> {
    let tx = client.transaction().await?;
    let head = tx
        .query_one(
            "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?;
    let events = chain_batch(head.get(0), head.get(1), drafts);
    let ins = tx.prepare(INSERT_EVENT).await?;
    for e in &events {
        tx.execute(
            &ins,
            &[
                &e.seq,
                &e.ts,
                &e.session_id,
                &e.kind,
                &e.principal,
                &e.actor,
                &e.connection,
                &e.data,
                &e.prev_hash,
                &e.hash,
            ],
        )
        .await?;
    }
    if let Some(last) = events.last() {
        tx.execute(UPDATE_HEAD, &[&last.seq, &last.hash]).await?;
    }
    tx.commit().await?;
    Ok(events.iter().map(|e| e.seq).collect())
}

async fn appender(mut client: Client, mut rx: mpsc::Receiver<(Vec<EventDraft>, AppendReply)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
            if batch.len() >= 512 {
                break;
            }
        }
        let all: Vec<EventDraft> = batch.iter().flat_map(|(d, _)| d.iter().cloned()).collect();
        match append_batch(&mut client, &all).await {
            Ok(seqs) => {
                let mut rest = &seqs[..];
                for (d, reply) in batch {
                    let (mine, tail) = rest.split_at(d.len());
                    rest = tail;
                    let _ = reply.send(Ok(mine.to_vec()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit append failed");
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Other(format!("audit append failed: {e}"))));
                }
            }
        }
    }
}

impl PgStore {
    /// Connects, migrates, and starts the audit appender.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let mut client = connect(url).await?;
        migrate(&mut client).await?;
        let append_client = connect(url).await?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(appender(append_client, rx));
        Ok(PgStore {
            client: Arc::new(client),
            appends: tx,
        })
    }

    pub(super) async fn insert_token(&self, t: TokenRecord) -> Result<(), StoreError> {
        let conns = encode_list(&t.connections);
        self.client
            .execute(
                INSERT_TOKEN,
                &[
                    &t.id,
                    &t.hash,
                    &t.kind,
                    &t.principal,
                    &t.actor,
                    &conns,
                    &t.created_at,
                    &t.expires_at,
                    &t.uses_left,
                    &t.revoked_at,
                    &t.created_by,
                ],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn token_by_hash(
        &self,
        hash: String,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_FIELDS} FROM tokens WHERE hash = $1");
        Ok(self
            .client
            .query_opt(&sql, &[&hash])
            .await?
            .as_ref()
            .map(token_from_row))
    }

    pub(super) async fn token_by_id(&self, id: String) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_FIELDS} FROM tokens WHERE id = $1");
        Ok(self
            .client
            .query_opt(&sql, &[&id])
            .await?
            .as_ref()
            .map(token_from_row))
    }

    pub(super) async fn list_tokens(&self, kind: String) -> Result<Vec<TokenRecord>, StoreError> {
        let sql =
            format!("SELECT {TOKEN_FIELDS} FROM tokens WHERE kind = $1 ORDER BY created_at DESC");
        Ok(self
            .client
            .query(&sql, &[&kind])
            .await?
            .iter()
            .map(token_from_row)
            .collect())
    }

    pub(super) async fn revoke_token(&self, id: String, at: i64) -> Result<bool, StoreError> {
        Ok(self.client.execute(REVOKE_TOKEN, &[&id, &at]).await? == 1)
    }

    pub(super) async fn consume_token_use(&self, id: String) -> Result<bool, StoreError> {
        Ok(self.client.execute(CONSUME_USE, &[&id]).await? == 1)
    }

    pub(super) async fn revoked_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        Ok(self
            .client
            .query(REVOKED_SINCE, &[&since])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub(super) async fn insert_session(&self, r: SessionRecord) -> Result<(), StoreError> {
        self.client
            .execute(
                INSERT_SESSION,
                &[
                    &r.id,
                    &r.token_id,
                    &r.principal,
                    &r.actor,
                    &r.connection,
                    &r.protocol,
                    &r.client_addr,
                    &r.started_at,
                    &r.ended_at,
                    &r.bytes_in,
                    &r.bytes_out,
                    &r.outcome,
                ],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn end_session(
        &self,
        id: String,
        ended_at: i64,
        bytes_in: i64,
        bytes_out: i64,
        outcome: String,
    ) -> Result<(), StoreError> {
        self.client
            .execute(
                END_SESSION,
                &[&id, &ended_at, &bytes_in, &bytes_out, &outcome],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn list_sessions(
        &self,
        f: SessionFilter,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let (sql, values) = session_filter_sql(&f);
        let bound: Vec<Box<dyn ToSql + Sync + Send>> = values
            .into_iter()
            .map(|v| -> Box<dyn ToSql + Sync + Send> {
                match v {
                    FilterValue::Text(s) => Box::new(s),
                    FilterValue::Int(i) => Box::new(i),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect();
        Ok(self
            .client
            .query(&sql, &refs)
            .await?
            .iter()
            .map(session_from_row)
            .collect())
    }

    pub(super) async fn session(&self, id: String) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_FIELDS} FROM sessions WHERE id = $1");
        Ok(self
            .client
            .query_opt(&sql, &[&id])
            .await?
            .as_ref()
            .map(session_from_row))
    }

    pub(super) async fn append(&self, drafts: Vec<EventDraft>) -> Result<Vec<i64>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.appends
            .send((drafts, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(super) async fn session_events(&self, id: String) -> Result<Vec<Event>, StoreError> {
        let sql = format!("SELECT {CHAIN_FIELDS} FROM events WHERE session_id = $1 ORDER BY seq");
        Ok(self
            .client
            .query(&sql, &[&id])
            .await?
            .iter()
            .map(event_from_row)
            .collect())
    }

    pub(super) async fn events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let sql = format!("SELECT {CHAIN_FIELDS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2");
        Ok(self
            .client
            .query(&sql, &[&after, &limit])
            .await?
            .iter()
            .map(event_from_row)
            .collect())
    }

    pub(super) async fn chain_head(&self) -> Result<(i64, String), StoreError> {
        let r = self
            .client
            .query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
            .await?;
        Ok((r.get(0), r.get(1)))
    }
}

impl PgStore {
    pub(super) fn append_background(&self, drafts: Vec<EventDraft>) {
        let (tx, _rx) = oneshot::channel();
        if let Err(mpsc::error::TrySendError::Full(item)) = self.appends.try_send((drafts, tx)) {
            let appends = self.appends.clone();
            tokio::spawn(async move {
                let _ = appends.send(item).await;
            });
        }
    }
}
