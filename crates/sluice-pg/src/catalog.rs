//! What the target's catalog says about the relations a result comes from:
//! the schema, table and column names behind RowDescription's table oid and
//! column number, which is what column rules are written in, and for views
//! the base columns they read. Looked up on a session of the gateway's own
//! (the client's session is never used), and cached briefly per connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls::ClientConfig;
use sluice_core::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wire::error_fields;

/// How long a relation's names are trusted: a rename takes at most this
/// long to be seen.
const FRESH: Duration = Duration::from_secs(30);
/// Most relations cached per connection.
const MAX_CACHED: usize = 4096;

/// A relation results can come from.
#[derive(Debug, Clone, Default)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    /// `pg_class.relkind`: `r` table, `p` partitioned, `v` view, `m`
    /// materialized view, `f` foreign table, ...
    pub kind: char,
    /// Column number to name.
    pub columns: HashMap<i16, String>,
    /// For views: the base columns (schema, table, column) they read,
    /// through nested views (`*` for a whole row).
    pub reads: Vec<(String, String, String)>,
    /// For views: what their own definition's outputs derive from (a
    /// whole-row reference next to a column, say, which `pg_depend` does
    /// not show).
    pub definition: Option<crate::classify::Lineage>,
    /// For views: they call functions of the database's own, which may
    /// read anything.
    pub calls_functions: bool,
    /// Tables it inherits from (a partition's parents, `INHERITS`), nearest
    /// first: their rules name its columns too.
    pub ancestors: Vec<(String, String)>,
}

impl Relation {
    /// Whether the relation stores its own rows, so a column of it is that column.
    pub fn is_table(&self) -> bool {
        matches!(self.kind, 'r' | 'p' | 'f')
    }
}

/// Catalog lookups for one connection.
pub struct Catalog {
    conn: Arc<Connection>,
    tls: Option<Arc<ClientConfig>>,
    cache: Mutex<HashMap<u32, (Instant, Arc<Relation>)>>,
    /// Relation name to the oids of the views (in any schema) of that name.
    views: Mutex<HashMap<String, (Instant, Vec<u32>)>>,
    /// Impact estimates under way at once (each opens a target session).
    estimates: tokio::sync::Semaphore,
}

impl Catalog {
    /// Lookups on `conn`'s target, over `tls` when it has any.
    pub fn new(conn: Arc<Connection>, tls: Option<Arc<ClientConfig>>) -> Catalog {
        Catalog {
            conn,
            tls,
            cache: Mutex::new(HashMap::new()),
            views: Mutex::new(HashMap::new()),
            estimates: tokio::sync::Semaphore::new(4),
        }
    }

    /// The views (and materialized views), in any schema, with one of
    /// these names, with the base columns they read; and the tables of
    /// those names that inherit from others (partitions, children), with
    /// their ancestors.
    pub async fn views_named(&self, names: &[&str]) -> Result<Vec<Arc<Relation>>, String> {
        let mut oids = Vec::new();
        let mut missing = Vec::new();
        {
            let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
            for &name in names {
                match views.get(name) {
                    Some((at, o)) if at.elapsed() < FRESH => oids.extend(o),
                    _ => missing.push(name),
                }
            }
        }
        if !missing.is_empty() {
            // Names come from the client's statement: each is quoted with a
            // random dollar tag it does not contain.
            let tag = format!("n{}", hex::encode(rand::random::<[u8; 6]>()));
            if missing.iter().any(|n| n.contains(&tag)) {
                return Err("catalog lookup: unusable relation name".into());
            }
            let list = missing
                .iter()
                .map(|n| format!("${tag}${n}${tag}$"))
                .collect::<Vec<_>>()
                .join(",");
            let rows = self
                .query(&format!(
                    "SELECT c.oid, c.relname FROM pg_catalog.pg_class c \
                     WHERE c.relname IN ({list}) AND (c.relkind IN ('v', 'm') \
                       OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid))"
                ))
                .await?;
            let mut found: HashMap<String, Vec<u32>> = missing
                .iter()
                .map(|n| (n.to_string(), Vec::new()))
                .collect();
            for (_, row) in rows {
                let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
                if let Ok(oid) = field(0).parse::<u32>() {
                    found.entry(field(1)).or_default().push(oid);
                    oids.push(oid);
                }
            }
            let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
            if views.len() + found.len() > MAX_CACHED {
                views.clear();
            }
            for (name, o) in found {
                views.insert(name, (Instant::now(), o));
            }
        }
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.relations(&oids).await?.into_values().collect())
    }

    /// Forgets everything: a statement through the gateway may have changed
    /// the catalog (a new view, a renamed column).
    pub fn invalidate(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.views.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The relations with these oids; an oid the target does not know is absent.
    pub async fn relations(&self, oids: &[u32]) -> Result<HashMap<u32, Arc<Relation>>, String> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            for &oid in oids {
                match cache.get(&oid) {
                    Some((at, r)) if at.elapsed() < FRESH => {
                        found.insert(oid, r.clone());
                    }
                    _ if !missing.contains(&oid) => missing.push(oid),
                    _ => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let fetched = self.fetch(&missing).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() + fetched.len() > MAX_CACHED {
            cache.clear();
        }
        for (oid, r) in fetched {
            let r = Arc::new(r);
            cache.insert(oid, (Instant::now(), r.clone()));
            found.insert(oid, r);
        }
        Ok(found)
    }

    async fn fetch(&self, oids: &[u32]) -> Result<HashMap<u32, Relation>, String> {
        let list = oids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // Oids are numbers: nothing a client sent is spliced into this text.
        let sql = format!(
            "SELECT c.oid, n.nspname, c.relname, c.relkind, a.attnum, a.attname \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE c.oid IN ({list}); \
             WITH RECURSIVE reads(view, rel, att) AS ( \
               SELECT r.ev_class, d.refobjid, d.refobjsubid FROM pg_catalog.pg_rewrite r \
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
                 AND d.refclassid = 'pg_catalog.pg_class'::regclass \
               WHERE r.ev_class IN ({list}) AND d.refobjid <> r.ev_class \
               UNION \
               SELECT reads.view, d.refobjid, d.refobjsubid FROM reads \
               JOIN pg_catalog.pg_rewrite r ON r.ev_class = reads.rel \
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
                 AND d.refclassid = 'pg_catalog.pg_class'::regclass \
               WHERE d.refobjid <> r.ev_class) \
             SELECT reads.view, n.nspname, c.relname, COALESCE(a.attname, '*') FROM reads \
             JOIN pg_catalog.pg_class c ON c.oid = reads.rel \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = reads.rel AND a.attnum = reads.att AND reads.att > 0; \
             SELECT c.oid, pg_catalog.pg_get_viewdef(c.oid), EXISTS ( \
               SELECT 1 FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_depend d \
                 ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
                 AND d.refclassid = 'pg_catalog.pg_proc'::regclass \
               WHERE r.ev_class = c.oid) \
             FROM pg_catalog.pg_class c WHERE c.oid IN ({list}) AND c.relkind IN ('v', 'm'); \
             WITH RECURSIVE up(child, parent, depth) AS ( \
               SELECT inhrelid, inhparent, 1 FROM pg_catalog.pg_inherits WHERE inhrelid IN ({list}) \
               UNION \
               SELECT up.child, i.inhparent, up.depth + 1 FROM up \
               JOIN pg_catalog.pg_inherits i ON i.inhrelid = up.parent WHERE up.depth < 16) \
             SELECT up.child, n.nspname, c.relname FROM up \
             JOIN pg_catalog.pg_class c ON c.oid = up.parent \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY up.depth"
        );
        let rows = self.query(&sql).await?;
        let mut out: HashMap<u32, Relation> = HashMap::new();
        for (set, row) in rows {
            let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let Ok(oid) = field(0).parse::<u32>() else {
                continue;
            };
            let r = out.entry(oid).or_default();
            if set == 0 {
                r.schema = field(1);
                r.name = field(2);
                r.kind = field(3).chars().next().unwrap_or('?');
                if let Ok(n) = field(4).parse() {
                    r.columns.insert(n, field(5));
                }
            } else if set == 1 {
                r.reads.push((field(1), field(2), field(3)));
            } else if set == 3 {
                r.ancestors.push((field(1), field(2)));
            } else {
                r.definition = Some(view_classifier().classify_uncached(&field(1)).lineage);
                // Built-in functions are pinned: a dependency is on one of the database's own.
                r.calls_functions = field(2) == "t";
            }
        }
        Ok(out)
    }

    /// Runs a simple query on a new session of the gateway's own; returns
    /// each row with the index of the result set it belongs to.
    async fn query(&self, sql: &str) -> Result<Vec<(usize, Vec<Option<String>>)>, String> {
        let sets = self.result_sets(&[sql]).await?;
        Ok(sets
            .into_iter()
            .enumerate()
            .flat_map(|(i, set)| {
                set.rows.into_iter().map(move |r| {
                    let text = r
                        .into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                        .collect();
                    (i, text)
                })
            })
            .collect())
    }

    /// Runs simple queries, one after the other, on a new session of the
    /// gateway's own; returns every result set (text format) they produce.
    /// Stops at the first error.
    pub async fn result_sets(&self, queries: &[&str]) -> Result<Vec<ResultSet>, String> {
        let requests: Vec<BytesMut> = queries
            .iter()
            .map(|sql| {
                let mut msg = BytesMut::new();
                crate::wire::query(&mut msg, sql);
                msg
            })
            .collect();
        let mut sets: Vec<ResultSet> = Vec::new();
        let mut error = None;
        self.converse(&requests, Duration::from_secs(30), |tag, body| {
            match tag {
                b'T' => sets.push(ResultSet {
                    columns: crate::mask::row_description(body)
                        .ok_or("catalog lookup: bad row description")?,
                    rows: Vec::new(),
                }),
                b'D' => {
                    let row = data_row(body).ok_or("catalog lookup: bad row")?;
                    if let Some(set) = sets.last_mut() {
                        set.rows.push(row);
                    }
                }
                b'E' => error = Some(error_fields(body).1.unwrap_or_default()),
                _ => {}
            }
            Ok(error.is_none())
        })
        .await?;
        match error {
            Some(e) => Err(format!("the target refused it: {e}")),
            None => Ok(sets),
        }
    }

    /// The result columns of a statement, by Parse and Describe on a
    /// session of the gateway's own: planned, never run.
    pub async fn describe(&self, sql: &str) -> Result<Vec<crate::mask::Column>, String> {
        let mut msg = BytesMut::new();
        crate::wire::parse_describe_sync(&mut msg, sql);
        let mut columns = None;
        let mut error = None;
        self.converse(&[msg], Duration::from_secs(10), |tag, body| {
            match tag {
                b'T' => columns = crate::mask::row_description(body),
                b'n' => columns = Some(Vec::new()),
                b'E' => error = Some(error_fields(body).1.unwrap_or_default()),
                _ => {}
            }
            Ok(true)
        })
        .await?;
        match (error, columns) {
            (Some(e), _) => Err(format!("describe failed: {e}")),
            (None, Some(c)) => Ok(c),
            (None, None) => Err("describe: no description".into()),
        }
    }

    /// The planner's estimate of the rows a statement touches, from
    /// `EXPLAIN` (never `ANALYZE`) on a session of the gateway's own, in a
    /// read-only transaction with a short statement timeout. Parse refuses
    /// more than one statement, so nothing can ride along.
    pub async fn estimate_rows(&self, sql: &str) -> Result<i64, String> {
        // Bounded: with every slot busy there is no estimate (and so no
        // approval by policy that needs one), rather than a queue.
        let _slot = self
            .estimates
            .try_acquire()
            .map_err(|_| "too many estimates under way".to_string())?;
        let mut begin = BytesMut::new();
        crate::wire::query(&mut begin, "BEGIN READ ONLY");
        let mut timeout = BytesMut::new();
        crate::wire::query(&mut timeout, "SET LOCAL statement_timeout = '2s'");
        let mut explain = BytesMut::new();
        crate::wire::parse_bind_execute_sync(&mut explain, &format!("EXPLAIN (FORMAT JSON) {sql}"));
        let mut rollback = BytesMut::new();
        crate::wire::query(&mut rollback, "ROLLBACK");
        let mut plan = None;
        let mut error = None;
        self.converse(
            &[begin, timeout, explain, rollback],
            Duration::from_secs(5),
            |tag, body| {
                match tag {
                    b'D' => {
                        plan = data_row(body)
                            .and_then(|r| r.into_iter().next().flatten())
                            .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
                    }
                    b'E' => error = Some(error_fields(body).1.unwrap_or_default()),
                    _ => {}
                }
                Ok(true)
            },
        )
        .await?;
        if let Some(e) = error {
            return Err(format!("no estimate: {e}"));
        }
        let top = plan
            .as_ref()
            .and_then(|p| p.get(0))
            .and_then(|p| p.get("Plan"))
            .ok_or("no plan")?;
        let mut writes = Vec::new();
        modify_nodes(top, &mut writes);
        let rows = |node: &serde_json::Value| {
            node.get("Plan Rows")
                .and_then(|r| r.as_f64())
                .map(|r| r.round() as i64)
        };
        if writes.is_empty() {
            return rows(top).ok_or_else(|| "the plan has no row estimate".to_string());
        }
        // Every write in the plan counts (a data-modifying CTE's too, which
        // a top node that aggregates it would hide). A ModifyTable reports
        // no rows itself; what it changes is what its input produces.
        let mut total = 0i64;
        for w in writes {
            let input = w.get("Plans").and_then(|p| p.get(0)).unwrap_or(w);
            total = total.saturating_add(rows(input).ok_or("the plan has no row estimate")?);
        }
        Ok(total)
    }

    /// Opens a session of the gateway's own, sends each request in turn and
    /// hands every answer to `on` up to its ReadyForQuery; stops early when
    /// `on` returns false, and ends the session. Bounded by `limit`.
    async fn converse(
        &self,
        requests: &[BytesMut],
        limit: Duration,
        mut on: impl FnMut(u8, &[u8]) -> Result<bool, String>,
    ) -> Result<(), String> {
        let session =
            crate::target::connect(&self.conn, self.tls.as_ref(), &[], Duration::from_secs(10))
                .await
                .map_err(|e| format!("catalog lookup: {e}"))?;
        let mut io = session.io;
        let result = tokio::time::timeout(limit, async {
            for request in requests {
                io.write_all(request).await.map_err(|e| e.to_string())?;
                loop {
                    let tag = io.read_u8().await.map_err(|e| e.to_string())?;
                    let len = io.read_u32().await.map_err(|e| e.to_string())? as usize;
                    if !(4..=64 * 1024 * 1024).contains(&len) {
                        return Err("catalog lookup: bad message length".to_string());
                    }
                    let mut body = vec![0u8; len - 4];
                    io.read_exact(&mut body).await.map_err(|e| e.to_string())?;
                    let go_on = on(tag, &body)?;
                    if tag == b'Z' {
                        if !go_on {
                            return Ok(());
                        }
                        break;
                    }
                }
            }
            Ok(())
        })
        .await;
        let mut bye = BytesMut::new();
        crate::wire::terminate(&mut bye);
        let _ = io.write_all(&bye).await;
        result.map_err(|_| "catalog lookup timed out".to_string())?
    }
}

/// Every ModifyTable node in a JSON plan, at any depth.
fn modify_nodes<'a>(node: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    if node.get("Node Type").and_then(|t| t.as_str()) == Some("ModifyTable") {
        out.push(node);
    }
    for child in node
        .get("Plans")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        modify_nodes(child, out);
    }
}

/// One result set of a query run by the gateway itself.
pub struct ResultSet {
    /// Its columns.
    pub columns: Vec<crate::mask::Column>,
    /// Its rows, values in text format (`None` for NULL).
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

/// Reads view definitions (built-in functions only: a view's own function
/// calls are known from `pg_depend`).
fn view_classifier() -> &'static crate::classify::Classifier {
    static C: std::sync::OnceLock<crate::classify::Classifier> = std::sync::OnceLock::new();
    C.get_or_init(|| crate::classify::Classifier::new(HashMap::new()))
}

/// The values of a DataRow.
fn data_row(body: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
    let n = u16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            out.push(None);
            continue;
        }
        let v = body.get(at..at + len as usize)?;
        at += len as usize;
        out.push(Some(v.to_vec()));
    }
    Some(out)
}
