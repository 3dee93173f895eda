//! The PostgreSQL backend, for several gateways sharing one store. The
//! audit chain is serialised across gateways by a row lock on its head.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::{types::ToSql, Client, NoTls, Row};

use super::tls::StoreTls;
use super::*;

/// Handle to the PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    target: Arc<Target>,
    client: Arc<Mutex<Arc<Client>>>,
    /// A second connection for the transactions that extend the chain.
    chain: Arc<Mutex<Client>>,
}

/// Where the store is and how to reach it, for reconnecting.
struct Target {
    config: tokio_postgres::Config,
    tls: Option<StoreTls>,
}

async fn connect(target: &Target) -> Result<Client, StoreError> {
    Ok(match &target.tls {
        Some(tls) => drive(target.config.connect(tls.clone()).await?),
        None => drive(target.config.connect(NoTls).await?),
    })
}

/// Runs a connection's I/O in the background; hands back its client.
fn drive<S, T>((client, conn): (Client, tokio_postgres::Connection<S, T>)) -> Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::error!(error = %e, "store connection closed");
        }
    });
    client
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
                       FOR EACH ROW EXECUTE FUNCTION sluice_events_append_only();
                     CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
                       FOR EACH STATEMENT EXECUTE FUNCTION sluice_events_append_only();",
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

/// The channel review changes are announced on.
const REVIEW_CHANNEL: &str = "sluice_reviews";

/// Listens on one connection until it fails, forwarding review ids.
async fn listen_on<S, T>(
    client: Client,
    mut conn: tokio_postgres::Connection<S, T>,
    tx: &tokio::sync::broadcast::Sender<String>,
) -> Result<(), StoreError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let sql = format!("LISTEN {REVIEW_CHANNEL}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            r = &mut listen, if !listening => {
                r?;
                listening = true;
                // Changes made while we were not listening: look again.
                let _ = tx.send("*".into());
            }
            m = std::future::poll_fn(|cx| conn.poll_message(cx)) => match m {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    let _ = tx.send(n.payload().to_string());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
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
        role: r.get(11),
        parent: r.get(12),
        groups: decode_list(r.get::<_, Option<&str>>(13).unwrap_or_default()),
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

async fn ingest_batch(
    client: &mut Client,
    gateway: &str,
    drafts: &[EventDraft],
    to: (u64, u64),
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // The row lock on the head serialises gateways appending to one chain.
    let head = tx
        .query_one(
            "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?;
    let events = chain_batch(head.get(0), head.get(1), drafts);
    // One round trip for the whole batch: columns as arrays, unnested.
    let seq: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let ts: Vec<i64> = events.iter().map(|e| e.ts).collect();
    let session: Vec<Option<&str>> = events.iter().map(|e| e.session_id.as_deref()).collect();
    let kind: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let principal: Vec<Option<&str>> = events.iter().map(|e| e.principal.as_deref()).collect();
    let actor: Vec<Option<&str>> = events.iter().map(|e| e.actor.as_deref()).collect();
    let connection: Vec<Option<&str>> = events.iter().map(|e| e.connection.as_deref()).collect();
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    let prev: Vec<&str> = events.iter().map(|e| e.prev_hash.as_str()).collect();
    let hash: Vec<&str> = events.iter().map(|e| e.hash.as_str()).collect();
    if !events.is_empty() {
        tx.execute(
            "INSERT INTO events (seq, ts, session_id, kind, principal, actor, connection, data, prev_hash, hash)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])",
            &[&seq, &ts, &session, &kind, &principal, &actor, &connection, &data, &prev, &hash],
        )
        .await?;
    }
    if let Some(last) = events.last() {
        tx.execute(UPDATE_HEAD, &[&last.seq, &last.hash]).await?;
    }
    tx.execute(UPSERT_JOURNAL, &[&gateway, &(to.0 as i64), &(to.1 as i64)])
        .await?;
    tx.commit().await?;
    Ok(())
}

impl PgStore {
    /// Connects and migrates. TLS is used when the URL's `sslmode` is not
    /// `disable`, and then the server's certificate is verified.
    pub async fn open(url: &str, ca_file: Option<&std::path::Path>) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url.parse()?;
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => None,
            _ => Some(StoreTls::new(ca_file)?),
        };
        let target = Target { config, tls };
        let mut client = connect(&target).await?;
        migrate(&mut client).await?;
        let chain = connect(&target).await?;
        Ok(PgStore {
            target: Arc::new(target),
            client: Arc::new(Mutex::new(Arc::new(client))),
            chain: Arc::new(Mutex::new(chain)),
        })
    }

    /// The shared connection, reconnected if the store went away.
    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let mut guard = self.client.lock().await;
        if guard.is_closed() {
            tracing::warn!("reconnecting to the store");
            *guard = Arc::new(connect(&self.target).await?);
        }
        Ok(guard.clone())
    }

    /// Rows of a query, each mapped.
    async fn rows<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        map: fn(&Row) -> T,
    ) -> Result<Vec<T>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(sql, params)
            .await?
            .iter()
            .map(map)
            .collect())
    }

    /// At most one row of a query, mapped.
    async fn row<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        map: fn(&Row) -> T,
    ) -> Result<Option<T>, StoreError> {
        Ok(self
            .client()
            .await?
            .query_opt(sql, params)
            .await?
            .as_ref()
            .map(map))
    }

    pub(super) async fn insert_token(&self, t: TokenRecord) -> Result<(), StoreError> {
        let conns = encode_list(&t.connections);
        self.client()
            .await?
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
                    &t.role,
                    &t.parent,
                    &encode_list(&t.groups),
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
        self.row(&sql, &[&hash], token_from_row).await
    }

    pub(super) async fn token_by_id(&self, id: String) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_FIELDS} FROM tokens WHERE id = $1");
        self.row(&sql, &[&id], token_from_row).await
    }

    pub(super) async fn list_tokens(&self, kind: String) -> Result<Vec<TokenRecord>, StoreError> {
        let sql =
            format!("SELECT {TOKEN_FIELDS} FROM tokens WHERE kind = $1 ORDER BY created_at DESC");
        self.rows(&sql, &[&kind], token_from_row).await
    }

    pub(super) async fn revoke_token(&self, id: String, at: i64) -> Result<bool, StoreError> {
        Ok(self
            .client()
            .await?
            .execute(REVOKE_TOKEN, &[&id, &at])
            .await?
            == 1)
    }

    pub(super) async fn consume_token_use(&self, id: String) -> Result<bool, StoreError> {
        Ok(self.client().await?.execute(CONSUME_USE, &[&id]).await? == 1)
    }

    pub(super) async fn children_of(&self, id: String) -> Result<Vec<String>, StoreError> {
        self.rows(CHILDREN_OF, &[&id], |r| r.get(0)).await
    }

    pub(super) async fn revoked_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        self.rows(REVOKED_SINCE, &[&since], |r| r.get(0)).await
    }

    pub(super) async fn insert_review(&self, r: ReviewRow) -> Result<(), StoreError> {
        // The notification goes out when the insert commits.
        let sql = format!(
            "WITH w AS ({INSERT_REVIEW} RETURNING id) SELECT pg_notify('{REVIEW_CHANNEL}', id) FROM w"
        );
        self.client()
            .await?
            .query(
                &sql,
                &[
                    &r.id,
                    &r.kind,
                    &r.state,
                    &r.principal,
                    &r.connection,
                    &r.statement_hash,
                    &r.created_at,
                    &r.expires_at,
                    &r.version,
                    &r.body,
                ],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn update_review(&self, r: ReviewRow) -> Result<bool, StoreError> {
        let sql = format!(
            "WITH w AS ({UPDATE_REVIEW} RETURNING id) SELECT pg_notify('{REVIEW_CHANNEL}', id) FROM w"
        );
        let rows = self
            .client()
            .await?
            .query(
                &sql,
                &[
                    &r.id,
                    &(r.version - 1),
                    &r.state,
                    &r.expires_at,
                    &r.version,
                    &r.body,
                ],
            )
            .await?;
        Ok(rows.len() == 1)
    }

    pub(super) async fn review_body(&self, id: String) -> Result<Option<String>, StoreError> {
        self.row(REVIEW_BY_ID, &[&id], |r| r.get(0)).await
    }

    pub(super) async fn review_bodies(
        &self,
        sql: &'static str,
        args: Vec<String>,
        last: Option<i64>,
    ) -> Result<Vec<String>, StoreError> {
        let mut bound: Vec<&(dyn ToSql + Sync)> =
            args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        if let Some(n) = &last {
            bound.push(n);
        }
        self.rows(sql, &bound, |r| r.get(0)).await
    }

    /// Keeps a connection listening for review changes, reconnecting
    /// with back-off; each reconnect is announced as `"*"`.
    pub(super) fn listen_reviews(&self, tx: tokio::sync::broadcast::Sender<String>) {
        let target = self.target.clone();
        tokio::spawn(async move {
            let mut pause = std::time::Duration::from_millis(500);
            loop {
                let started = std::time::Instant::now();
                let result = match &target.tls {
                    Some(tls) => match target.config.connect(tls.clone()).await {
                        Ok((client, conn)) => listen_on(client, conn, &tx).await,
                        Err(e) => Err(e.into()),
                    },
                    None => match target.config.connect(NoTls).await {
                        Ok((client, conn)) => listen_on(client, conn, &tx).await,
                        Err(e) => Err(e.into()),
                    },
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "review notifications interrupted; reconnecting");
                }
                let _ = tx.send("*".into());
                if started.elapsed() > std::time::Duration::from_secs(60) {
                    // It had been listening fine: a new outage starts small.
                    pause = std::time::Duration::from_millis(500);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(10));
            }
        });
    }

    pub(super) async fn insert_session(&self, r: SessionRecord) -> Result<(), StoreError> {
        self.client()
            .await?
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
        self.client()
            .await?
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
        self.rows(&sql, &refs, session_from_row).await
    }

    pub(super) async fn session(&self, id: String) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_FIELDS} FROM sessions WHERE id = $1");
        self.row(&sql, &[&id], session_from_row).await
    }

    pub(super) async fn ingest(
        &self,
        gateway: String,
        drafts: Vec<EventDraft>,
        to: (u64, u64),
    ) -> Result<(), StoreError> {
        let mut chain = self.chain.lock().await;
        if chain.is_closed() {
            tracing::warn!("reconnecting the audit chain's store connection");
            *chain = connect(&self.target).await?;
        }
        ingest_batch(&mut chain, &gateway, &drafts, to).await
    }

    pub(super) async fn journal_position(
        &self,
        gateway: String,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(JOURNAL_POSITION, &[&gateway])
            .await?;
        Ok(row.map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)))
    }

    pub(super) async fn session_events(&self, id: String) -> Result<Vec<Event>, StoreError> {
        let sql = format!("SELECT {CHAIN_FIELDS} FROM events WHERE session_id = $1 ORDER BY seq");
        self.rows(&sql, &[&id], event_from_row).await
    }

    pub(super) async fn events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let sql = format!("SELECT {CHAIN_FIELDS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2");
        self.rows(&sql, &[&after, &limit], event_from_row).await
    }

    pub(super) async fn chain_head(&self) -> Result<(i64, String), StoreError> {
        let r = self
            .client()
            .await?
            .query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
            .await?;
        Ok((r.get(0), r.get(1)))
    }
}
