//! PostgreSQL statements into the core's protocol-neutral classification,
//! with PostgreSQL's own grammar (libpg_query), so the gateway never reads
//! a statement differently from the server.
//!
//! Rules (the corpus in `tests/corpus.toml` pins them down):
//! - every statement of a message, and every node of each statement, is
//!   looked at; the command's class is its most consequential effect;
//! - what cannot be parsed or understood is `unknown`;
//! - results are cached by exact text, and by the text with its constants
//!   replaced (PostgreSQL's own normalization: a full string, never a
//!   fingerprint or hash, which an attacker could collide with a harmless
//!   statement). So the classification must never depend on a constant's
//!   value, and never does: constants are data, not commands.

mod functions;
mod lineage;
mod walk;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pg_query::protobuf::{AlterTableType, DiscardMode, ObjectType, VariableSetKind};
use pg_query::{NodeEnum, ParserOptions};
use sluice_core::{Class, Classification};

pub use functions::{FunctionClass, FunctionTable};
pub use lineage::Lineage;
use lineage::LineageScan;
use walk::Visitor;

/// A classified message, with what the relay needs to follow prepared
/// statements across messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// What the message does, as far as its own text shows.
    pub classification: Arc<Classification>,
    /// `PREPARE name AS ...` statements it defines, with what they do.
    pub prepares: Vec<(String, Classification)>,
    /// `EXECUTE name` of statements prepared in an earlier message.
    pub executes: Vec<String>,
    /// `DECLARE name CURSOR ...`: portals it opens, with what they run.
    pub declares: Vec<(String, Classification)>,
    /// `FETCH`/`MOVE` from portals opened in an earlier message: fetching
    /// runs the portal's statement (a bound DELETE ... RETURNING included).
    pub fetches: Vec<String>,
    /// What its output columns may derive from, for masking.
    pub lineage: Lineage,
    /// `DEALLOCATE name`; `None` for `DEALLOCATE ALL` and `DISCARD ALL`.
    pub deallocates: Vec<Option<String>>,
    /// It may change `client_encoding`, which changes how later messages'
    /// bytes read.
    pub changes_encoding: bool,
    parse_failed: bool,
}

/// Statements longer than this are classified but not cached.
const MAX_CACHED_TEXT: usize = 64 * 1024;
/// Cached classifications; the cache is emptied when full.
const MAX_CACHED: usize = 8192;
/// Bytes of cached text, per cache, before it is emptied.
const MAX_CACHED_BYTES: usize = 16 * 1024 * 1024;

/// The classifier: the function table and caches of classified texts.
pub struct Classifier {
    functions: FunctionTable,
    /// By exact text.
    cache: Cache,
    /// By normalized text (constants replaced by `$n`): repeated statement
    /// shapes with new values, as simple-protocol clients send them.
    shapes: Cache,
}

impl Classifier {
    /// A classifier with the user's function entries (see [`FunctionTable::new`]).
    pub fn new(user_functions: HashMap<String, Class>) -> Classifier {
        Classifier {
            functions: FunctionTable::new(user_functions),
            cache: Cache::default(),
            shapes: Cache::default(),
        }
    }

    /// Classifies one message's text. `unsafe_encoding` says the session's
    /// client encoding may let a multibyte character swallow a quote or a
    /// backslash, so non-ASCII text cannot be read reliably.
    pub fn classify(&self, text: &str, unsafe_encoding: bool) -> Arc<Classified> {
        if unsafe_encoding && !text.is_ascii() {
            return Arc::new(Classified::from(Classification::unknown(
                "the session's client_encoding can hide quotes inside multibyte characters; \
                 only ASCII statements can be classified",
            )));
        }
        if text.len() > MAX_CACHED_TEXT {
            return Arc::new(self.classify_uncached(text));
        }
        if let Some(hit) = lock(&self.cache).0.get(text) {
            return hit.clone();
        }
        // A backslash reads differently with standard_conforming_strings
        // off, and normalization reads it one way only: such texts are
        // cached by exact text alone.
        let shape = if text.contains('\\') {
            None
        } else {
            pg_query::normalize(text).ok()
        };
        let hit = shape
            .as_deref()
            .and_then(|s| lock(&self.shapes).0.get(s).cloned());
        let classified = match &hit {
            Some(c) => c.clone(),
            None => Arc::new(self.classify_uncached(text)),
        };
        match shape {
            // Texts with constants rarely repeat exactly (simple-protocol
            // clients inline their values): their shape is what repeats.
            Some(s) if *s != *text => {
                if hit.is_none() {
                    insert(&self.shapes, s.into(), classified.clone());
                }
            }
            _ => insert(&self.cache, text.into(), classified.clone()),
        }
        classified
    }

    /// Classifies without the cache.
    pub fn classify_uncached(&self, text: &str) -> Classified {
        let mut out = self.parse_and_classify(text, ParserOptions::DEFAULT);
        // With standard_conforming_strings off, a backslash escapes a quote
        // in '...' literals. The session may turn it off at any time (even
        // in a message still in flight), so a statement with a backslash is
        // read both ways and must be acceptable both ways.
        // Where that reading does not parse, a server in that mode refuses
        // the statement, so only the first reading can run.
        if text.contains('\\') {
            let other =
                self.parse_and_classify(text, ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS);
            if other != out && !other.parse_failed {
                out.merge(&other);
            }
        }
        out
    }

    fn parse_and_classify(&self, text: &str, options: ParserOptions) -> Classified {
        let parsed = match pg_query::parse(text, options) {
            Ok(p) => p,
            Err(e) => {
                let mut out = Classified::from(Classification::unknown(format!(
                    "PostgreSQL's parser rejects it: {e}"
                )));
                out.parse_failed = true;
                return out;
            }
        };
        let mut out = Classified::from(Classification::of(Class::Read));
        let mut all = Classification::of(Class::Read);
        all.effects.clear();
        let mut local: HashMap<String, Classification> = HashMap::new();
        let stmts: Vec<&NodeEnum> = parsed
            .protobuf
            .stmts
            .iter()
            .filter_map(|s| s.stmt.as_ref()?.node.as_ref())
            .collect();
        for node in &stmts {
            let c = self.statement(node, &mut local, &mut out);
            all.merge(&c);
            let mut lineage = LineageScan::new(&self.functions);
            walk::walk(*node, &mut lineage);
            out.lineage.merge(&lineage.lineage);
        }
        if all.effects.is_empty() {
            // Only comments, or nothing: the server answers EmptyQueryResponse.
            all.effects.insert(Class::Read);
        }
        out.lineage.explain_only =
            !stmts.is_empty() && stmts.iter().all(|s| matches!(s, NodeEnum::ExplainStmt(_)));
        all.flags.statements = stmts.len() as u32;
        all.flags.multi_statement = stmts.len() > 1;
        out.classification = Arc::new(all);
        out
    }

    /// Classifies one statement. `local` holds the statements prepared by
    /// earlier statements of the same message.
    fn statement(
        &self,
        node: &NodeEnum,
        local: &mut HashMap<String, Classification>,
        out: &mut Classified,
    ) -> Classification {
        let mut scan = Scan::new(&self.functions, true);
        let mut cursor = None;
        match node {
            NodeEnum::ExplainStmt(e) => {
                // EXPLAIN plans without running; EXPLAIN ANALYZE runs.
                let analyze = e.options.iter().any(|o| match &o.node {
                    Some(NodeEnum::DefElem(d)) if d.defname == "analyze" => {
                        !explicitly_false(d.arg.as_deref().and_then(|a| a.node.as_ref()))
                    }
                    _ => false,
                });
                scan.effect(Class::Read);
                if let Some(q) = e.query.as_ref().and_then(|q| q.node.as_ref()) {
                    if analyze {
                        let inner = self.statement(q, local, out);
                        scan.c.merge(&inner);
                    } else {
                        // Planning can still evaluate functions: keep their effects.
                        scan.dml = false;
                        walk::walk(q, &mut scan);
                    }
                }
                return scan.finish();
            }
            NodeEnum::PrepareStmt(p) => {
                let inner = match p.query.as_ref().and_then(|q| q.node.as_ref()) {
                    Some(q) => self.statement(q, local, out),
                    None => Classification::unknown("PREPARE without a statement"),
                };
                walk::walk(&p.argtypes, &mut scan);
                scan.c.merge(&inner);
                local.insert(p.name.clone(), inner.clone());
                out.prepares.push((p.name.clone(), inner));
                return scan.finish();
            }
            NodeEnum::ExecuteStmt(e) => {
                walk::walk(&e.params, &mut scan);
                match local.get(&e.name) {
                    Some(prepared) => scan.c.merge(prepared),
                    None => out.executes.push(e.name.clone()),
                }
                return scan.finish();
            }
            NodeEnum::DeallocateStmt(d) => {
                scan.effect(Class::Session);
                out.deallocates.push((!d.isall).then(|| d.name.clone()));
                return scan.finish();
            }
            NodeEnum::DiscardStmt(d) => {
                scan.effect(Class::Session);
                if d.target == DiscardMode::DiscardAll as i32 {
                    out.deallocates.push(None);
                    out.changes_encoding = true;
                }
                return scan.finish();
            }
            NodeEnum::CopyStmt(c) => {
                scan.effect(if !c.filename.is_empty() || c.is_program {
                    // The server reads or writes its own files, or runs a program.
                    Class::Admin
                } else if c.is_from {
                    Class::Write
                } else {
                    Class::Read
                });
            }
            NodeEnum::VariableSetStmt(v) => {
                let name = v.name.to_ascii_lowercase();
                scan.effect(
                    if matches!(
                        name.as_str(),
                        // Who the session acts as, and settings that switch
                        // off triggers and constraints or load code.
                        "role"
                            | "session_authorization"
                            | "session_replication_role"
                            | "session_preload_libraries"
                            | "local_preload_libraries"
                    ) {
                        Class::Admin
                    } else {
                        Class::Session
                    },
                );
                if name == "client_encoding" || v.kind == VariableSetKind::VarResetAll as i32 {
                    out.changes_encoding = true;
                }
            }
            NodeEnum::AlterTableStmt(a) => {
                scan.effect(Class::Ddl);
                for cmd in &a.cmds {
                    if let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node {
                        if cmd.subtype == AlterTableType::AtDropColumn as i32
                            || cmd.subtype == AlterTableType::AtDropConstraint as i32
                        {
                            scan.effect(Class::Destructive);
                        } else if cmd.subtype == AlterTableType::AtChangeOwner as i32 {
                            scan.effect(Class::Admin);
                        }
                    }
                }
            }
            NodeEnum::TransactionStmt(_) => {
                scan.effect(Class::Session);
                // Ending a transaction or rolling back to a savepoint undoes
                // its SETs, client_encoding included.
                out.changes_encoding = true;
            }
            NodeEnum::CallStmt(c) => {
                let parts: Vec<String> = c
                    .funccall
                    .as_ref()
                    .map(|f| {
                        f.funcname
                            .iter()
                            .filter_map(|n| match &n.node {
                                Some(NodeEnum::String(s)) => Some(s.sval.clone()),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                match self.functions.lookup_procedure(&parts) {
                    FunctionClass::Known(class) => scan.effect(class),
                    _ => scan.unknown(format!(
                        "CALL {}: a procedure is not in [postgres.functions], so what it does is unknown",
                        parts.join(".")
                    )),
                }
            }
            NodeEnum::RenameStmt(r) => {
                scan.effect(if r.rename_type == ObjectType::ObjectRole as i32 {
                    Class::Admin
                } else {
                    Class::Ddl
                });
            }
            NodeEnum::DropStmt(d) => {
                scan.effect(Class::Destructive);
                scan.drop_kind = Some(d.remove_type);
            }
            NodeEnum::DeclareCursorStmt(d) => cursor = Some(d.portalname.clone()),
            NodeEnum::FetchStmt(f) => {
                scan.effect(Class::Read);
                match local.get(&cursor_key(&f.portalname)) {
                    Some(declared) => scan.c.merge(declared),
                    None => out.fetches.push(f.portalname.clone()),
                }
                return scan.finish();
            }
            _ => {}
        }
        walk::walk(node, &mut scan);
        // EXECUTE nested in another statement (CREATE TABLE AS EXECUTE,
        // EXPLAIN ANALYZE EXECUTE) runs the prepared statement too.
        for name in std::mem::take(&mut scan.executes) {
            match local.get(&name) {
                Some(prepared) => scan.c.merge(prepared),
                None => out.executes.push(name),
            }
        }
        if scan.c.effects.is_empty() || scan.only_nested {
            let base = statement_class(scan.top.unwrap_or(""));
            match base {
                Some(c) => scan.effect(c),
                None => {
                    let what = scan.top.unwrap_or("an empty statement");
                    scan.unknown(format!("statement type {what} is not classified"));
                }
            }
        }
        if scan.changes_encoding {
            out.changes_encoding = true;
        }
        let c = scan.finish();
        if let Some(name) = cursor {
            local.insert(cursor_key(&name), c.clone());
            out.declares.push((name, c.clone()));
        }
        c
    }
}

/// For a message that is one `COPY ... TO STDOUT`: a query returning the
/// same columns (the COPY's own query, or a SELECT of the table's listed
/// columns), which the gateway can Describe to learn their types.
pub fn copy_out_query(text: &str) -> Option<String> {
    let parsed = pg_query::parse(text, ParserOptions::DEFAULT).ok()?;
    let [stmt] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    let Some(NodeEnum::CopyStmt(c)) = stmt.stmt.as_ref()?.node.as_ref() else {
        return None;
    };
    if c.is_from || !c.filename.is_empty() || c.is_program {
        return None;
    }
    if let Some(q) = c.query.as_ref().and_then(|q| q.node.as_ref()) {
        return q.deparse(pg_query::DeparseOptions::default()).ok();
    }
    let rel = c.relation.as_ref()?;
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let columns: Vec<String> = c
        .attlist
        .iter()
        .filter_map(|n| match n.node.as_ref()? {
            NodeEnum::String(s) => Some(quote(&s.sval)),
            _ => None,
        })
        .collect();
    let table = if rel.schemaname.is_empty() {
        quote(&rel.relname)
    } else {
        format!("{}.{}", quote(&rel.schemaname), quote(&rel.relname))
    };
    Some(format!(
        "SELECT {} FROM ONLY {table}",
        if columns.is_empty() {
            "*".to_string()
        } else {
            columns.join(", ")
        }
    ))
}

/// Cursors share the statement-local map with prepared statements under a
/// key no statement name can have (names cannot hold a NUL).
fn cursor_key(name: &str) -> String {
    format!("\0cursor:{name}")
}

/// Classified texts, and the bytes of text they hold.
type CacheMap = (HashMap<Box<str>, Arc<Classified>>, usize);
type Cache = Mutex<CacheMap>;

fn lock(cache: &Cache) -> std::sync::MutexGuard<'_, CacheMap> {
    cache.lock().unwrap_or_else(|p| p.into_inner())
}

fn insert(cache: &Cache, key: Box<str>, value: Arc<Classified>) {
    let mut c = lock(cache);
    if c.0.len() >= MAX_CACHED || c.1 + key.len() > MAX_CACHED_BYTES {
        c.0.clear();
        c.1 = 0;
    }
    c.1 += key.len();
    c.0.insert(key, value);
}

impl Classified {
    /// Adds what another reading or definition found (most consequential wins).
    pub fn merge(&mut self, other: &Classified) {
        Arc::make_mut(&mut self.classification).merge(&other.classification);
        self.prepares.extend(other.prepares.iter().cloned());
        // Names once each: definitions merged again and again (failed
        // redefinitions) must not multiply what resolving them costs.
        for n in &other.executes {
            if !self.executes.contains(n) {
                self.executes.push(n.clone());
            }
        }
        self.declares.extend(other.declares.iter().cloned());
        for n in &other.fetches {
            if !self.fetches.contains(n) {
                self.fetches.push(n.clone());
            }
        }
        self.lineage.merge(&other.lineage);
        self.deallocates.extend(other.deallocates.iter().cloned());
        self.changes_encoding |= other.changes_encoding;
    }

    /// The full classification, with `EXECUTE` of earlier-prepared
    /// statements resolved against the session's `prepared` ones; a name the
    /// session never prepared is unknown.
    pub fn resolve<'a>(
        &self,
        prepared: impl Fn(&str) -> Option<&'a Classification>,
    ) -> Arc<Classification> {
        self.resolve_in(prepared, |_| None)
    }

    /// As [`Classified::resolve`], with `FETCH`/`MOVE` resolved against the
    /// session's `portals` too; a portal the session never opened is unknown.
    pub fn resolve_in<'a, 'b>(
        &self,
        prepared: impl Fn(&str) -> Option<&'a Classification>,
        portals: impl Fn(&str) -> Option<&'b Classification>,
    ) -> Arc<Classification> {
        if self.executes.is_empty() && self.fetches.is_empty() {
            return self.classification.clone();
        }
        let mut c = (*self.classification).clone();
        for name in &self.executes {
            match prepared(name) {
                Some(p) => c.merge(p),
                None => c.merge(&Classification::unknown(format!(
                    "EXECUTE {name}: no statement of that name was prepared in this session"
                ))),
            }
        }
        for name in &self.fetches {
            match portals(name) {
                Some(p) => c.merge(p),
                None => c.merge(&Classification::unknown(format!(
                    "FETCH from {name}: what that cursor runs is not known in this session"
                ))),
            }
        }
        Arc::new(c)
    }
}

impl From<Classification> for Classified {
    fn from(classification: Classification) -> Self {
        Classified {
            classification: Arc::new(classification),
            prepares: vec![],
            executes: vec![],
            declares: vec![],
            fetches: vec![],
            lineage: Lineage::default(),
            deallocates: vec![],
            changes_encoding: false,
            parse_failed: false,
        }
    }
}

/// An option argument that turns a boolean option off, as PostgreSQL's
/// `defGetBoolean` reads it; anything else (including no argument) is on.
fn explicitly_false(arg: Option<&NodeEnum>) -> bool {
    match arg {
        Some(NodeEnum::Boolean(b)) => !b.boolval,
        Some(NodeEnum::Integer(i)) => i.ival == 0,
        Some(NodeEnum::String(s)) => {
            matches!(s.sval.to_ascii_lowercase().as_str(), "false" | "off" | "0")
        }
        // The grammar makes option arguments Boolean, Integer or String
        // nodes, never constants (A_Const, which normalization replaces):
        // anything else counts as on.
        _ => false,
    }
}

/// The class of a statement by its node type, before what is inside it.
fn statement_class(node: &str) -> Option<Class> {
    const READ: &[&str] = &[
        "SelectStmt",
        "VariableShowStmt",
        "FetchStmt",
        "DeclareCursorStmt",
    ];
    const SESSION: &[&str] = &[
        "TransactionStmt",
        "ListenStmt",
        "UnlistenStmt",
        "ClosePortalStmt",
        "ConstraintsSetStmt",
    ];
    const WRITE: &[&str] = &[
        "InsertStmt",
        "UpdateStmt",
        "DeleteStmt",
        "MergeStmt",
        "NotifyStmt",
        "LockStmt",
        "RefreshMatViewStmt",
    ];
    const DESTRUCTIVE: &[&str] = &[
        "TruncateStmt",
        "DropdbStmt",
        "DropOwnedStmt",
        "DropTableSpaceStmt",
    ];
    const ADMIN: &[&str] = &[
        "GrantStmt",
        "GrantRoleStmt",
        "AlterDefaultPrivilegesStmt",
        "CreateRoleStmt",
        "AlterRoleStmt",
        "AlterRoleSetStmt",
        "DropRoleStmt",
        "AlterSystemStmt",
        "AlterOwnerStmt",
        "ReassignOwnedStmt",
        "LoadStmt",
        "CreateExtensionStmt",
        "AlterExtensionStmt",
        "AlterExtensionContentsStmt",
        "CreatedbStmt",
        "AlterDatabaseStmt",
        "AlterDatabaseSetStmt",
        "AlterDatabaseRefreshCollStmt",
        "VacuumStmt",
        "ClusterStmt",
        "ReindexStmt",
        "CheckPointStmt",
        "CreateEventTrigStmt",
        "AlterEventTrigStmt",
        "CreateFdwStmt",
        "AlterFdwStmt",
        "CreateForeignServerStmt",
        "AlterForeignServerStmt",
        "CreateUserMappingStmt",
        "AlterUserMappingStmt",
        "DropUserMappingStmt",
        "ImportForeignSchemaStmt",
        "CreatePublicationStmt",
        "AlterPublicationStmt",
        "CreateSubscriptionStmt",
        "AlterSubscriptionStmt",
        "DropSubscriptionStmt",
        "SecLabelStmt",
        "CreatePLangStmt",
        "CreateTableSpaceStmt",
        "AlterTableSpaceOptionsStmt",
        "AlterTableMoveAllStmt",
        "CreateAmStmt",
        "AlterSystemStmt",
    ];
    const DDL: &[&str] = &[
        "CommentStmt",
        "RenameStmt",
        "IndexStmt",
        "ViewStmt",
        "RuleStmt",
        "DefineStmt",
        "CompositeTypeStmt",
        "AlterObjectSchemaStmt",
        "AlterObjectDependsStmt",
        "CreateTableAsStmt",
        "AlterEnumStmt",
        "AlterSeqStmt",
        "AlterFunctionStmt",
        "AlterDomainStmt",
        "AlterTypeStmt",
        "AlterOperatorStmt",
        "AlterPolicyStmt",
        "AlterStatsStmt",
        "AlterCollationStmt",
        "AlterTsdictionaryStmt",
        "AlterTsconfigurationStmt",
        "AlterOpFamilyStmt",
    ];
    if ADMIN.contains(&node) {
        Some(Class::Admin)
    } else if READ.contains(&node) {
        Some(Class::Read)
    } else if SESSION.contains(&node) {
        Some(Class::Session)
    } else if WRITE.contains(&node) {
        Some(Class::Write)
    } else if DESTRUCTIVE.contains(&node) {
        Some(Class::Destructive)
    } else if DDL.contains(&node) || node.starts_with("Create") {
        Some(Class::Ddl)
    } else if node.starts_with("Drop") {
        Some(Class::Destructive)
    } else {
        None
    }
}

/// The visitor that collects effects, objects and flags from a tree.
struct Scan<'f> {
    functions: &'f FunctionTable,
    /// Whether data-modifying nodes count (not under a plain EXPLAIN).
    dml: bool,
    c: Classification,
    /// The first node type seen: the statement's own type.
    top: Option<&'static str>,
    /// Effects so far come only from nested nodes (functions, CTEs), so
    /// the statement's own type must still be classified.
    only_nested: bool,
    drop_kind: Option<i32>,
    rel_schema: String,
    rel_name: String,
    changes_encoding: bool,
    /// Names of nested `EXECUTE`s.
    executes: Vec<String>,
}

impl<'f> Scan<'f> {
    fn new(functions: &'f FunctionTable, dml: bool) -> Self {
        let mut c = Classification::of(Class::Read);
        c.effects.clear();
        Scan {
            functions,
            dml,
            c,
            top: None,
            only_nested: true,
            drop_kind: None,
            rel_schema: String::new(),
            rel_name: String::new(),
            changes_encoding: false,
            executes: Vec::new(),
        }
    }

    fn effect(&mut self, class: Class) {
        if self.top.is_none() {
            // Set from the statement's own type before walking it.
            self.only_nested = false;
        }
        self.c.effects.insert(class);
    }

    fn unknown(&mut self, reason: String) {
        self.c.effects.insert(Class::Unknown);
        if self.c.unknown_reason.is_none() {
            self.c.unknown_reason = Some(reason);
        }
    }

    fn finish(mut self) -> Classification {
        if self.c.effects.is_empty() {
            self.c.effects.insert(Class::Read);
        }
        self.c.flags.statements = 1;
        self.c
    }
}

impl Visitor for Scan<'_> {
    fn enter(&mut self, name: &'static str) {
        if self.top.is_none() {
            self.top = Some(name);
        }
        match name {
            "InsertStmt" | "MergeStmt" | "UpdateStmt" | "DeleteStmt" if self.dml => {
                self.c.effects.insert(Class::Write);
            }
            "IntoClause" if self.dml => {
                self.c.effects.insert(Class::Ddl);
                self.c.effects.insert(Class::Write);
            }
            "LockingClause" if self.dml => {
                self.c.effects.insert(Class::Write);
            }
            "DoStmt" => {
                self.c.flags.dynamic_sql = true;
                self.unknown("a DO block runs code the gateway cannot inspect".into());
            }
            "RangeVar" => {
                self.rel_schema.clear();
                self.rel_name.clear();
            }
            _ => {}
        }
    }

    fn leave(&mut self, name: &'static str, parts: Vec<String>) {
        match name {
            "RangeVar" => {
                let rel = std::mem::take(&mut self.rel_name);
                let schema = std::mem::take(&mut self.rel_schema);
                // Both the name as written and the bare name, so a policy on
                // "payments" also sees "public.payments".
                if !schema.is_empty() {
                    self.c.tables.insert(format!("{schema}.{rel}"));
                    self.c.schemas.insert(schema);
                }
                self.c.tables.insert(rel);
            }
            "FuncCall" if !parts.is_empty() => {
                let name = parts.join(".");
                if parts.len() > 1 {
                    self.c.schemas.insert(parts[parts.len() - 2].clone());
                }
                if parts.last().is_some_and(|f| f == "set_config") {
                    // set_config('client_encoding', ...) is possible.
                    self.changes_encoding = true;
                }
                match self.functions.lookup(&parts) {
                    FunctionClass::Known(c) => {
                        self.c.effects.insert(c);
                    }
                    FunctionClass::DynamicSql => {
                        self.c.flags.dynamic_sql = true;
                        self.unknown(format!("{name}() runs SQL text the gateway cannot inspect"));
                    }
                    FunctionClass::Unlisted => self.unknown(format!(
                        "{name}() is not a PostgreSQL built-in and not in [postgres.functions], so what it does is unknown"
                    )),
                }
                self.c.functions.insert(name);
            }
            "DropStmt" => {
                let kind = self.drop_kind.take();
                let is = |t: ObjectType| kind == Some(t as i32);
                for object in parts {
                    if is(ObjectType::ObjectFunction)
                        || is(ObjectType::ObjectProcedure)
                        || is(ObjectType::ObjectRoutine)
                    {
                        self.c.functions.insert(object);
                    } else if is(ObjectType::ObjectSchema) {
                        self.c.schemas.insert(object);
                    } else if is(ObjectType::ObjectTable)
                        || is(ObjectType::ObjectView)
                        || is(ObjectType::ObjectMatview)
                        || is(ObjectType::ObjectForeignTable)
                        || is(ObjectType::ObjectSequence)
                        || is(ObjectType::ObjectIndex)
                    {
                        if let Some((schema, _)) = object.rsplit_once('.') {
                            self.c.schemas.insert(schema.to_string());
                        }
                        self.c.tables.insert(object);
                    }
                }
            }
            _ => {}
        }
    }

    fn string(&mut self, node: &'static str, field: &'static str, value: &str) {
        if node == "ExecuteStmt" && field == "name" {
            self.executes.push(value.to_string());
        }
        if node == "RangeVar" {
            match field {
                "schemaname" => self.rel_schema = value.to_string(),
                "relname" => self.rel_name = value.to_string(),
                _ => {}
            }
        }
    }

    fn none(&mut self, node: &'static str, field: &'static str) {
        if self.dml && field == "where_clause" && matches!(node, "UpdateStmt" | "DeleteStmt") {
            self.c.effects.insert(Class::Destructive);
            self.c.flags.has_where = false;
        }
    }

    fn int(&mut self, _: &'static str, _: &'static str, _: i64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(sql: &str) -> Class {
        Classifier::new(HashMap::new())
            .classify_uncached(sql)
            .classification
            .class()
    }

    #[test]
    fn basics() {
        assert_eq!(class("SELECT 1"), Class::Read);
        assert_eq!(class("DROP TABLE orders"), Class::Destructive);
        assert_eq!(class("DELETE FROM orders"), Class::Destructive);
        assert_eq!(class("DELETE FROM orders WHERE id = 1"), Class::Write);
        assert_eq!(
            class("WITH d AS (DELETE FROM o WHERE id = 1 RETURNING *) SELECT * FROM d"),
            Class::Write
        );
        assert_eq!(class("SELECT pg_terminate_backend(1)"), Class::Admin);
        assert_eq!(class("SELECT my_func()"), Class::Unknown);
        assert_eq!(class("EXPLAIN DELETE FROM t"), Class::Read);
        assert_eq!(class("EXPLAIN ANALYZE DELETE FROM t"), Class::Destructive);
        assert_eq!(class("SELCT 1"), Class::Unknown);
        assert_eq!(class("-- nothing"), Class::Read);
        assert_eq!(class("PREPARE p AS SELECT 1; EXECUTE p"), Class::Read);
        assert_eq!(class("EXECUTE p"), Class::Read);
        let lone = Classifier::new(HashMap::new()).classify_uncached("EXECUTE p");
        assert_eq!(lone.resolve(|_| None).class(), Class::Unknown);
        assert_eq!(class("SET ROLE postgres"), Class::Admin);
        assert_eq!(class("BEGIN"), Class::Session);
    }

    #[test]
    fn backslashes_are_read_both_ways() {
        // With standard_conforming_strings off, the server reads a DROP here.
        assert_eq!(
            class(r"SELECT 'x\'' ; DROP TABLE t; --'"),
            Class::Destructive
        );
    }

    #[test]
    fn objects_and_flags() {
        let c = Classifier::new(HashMap::new())
            .classify_uncached("SELECT lower(email) FROM shop.customers c JOIN orders o ON o.cid = c.id; UPDATE orders SET x = 1")
            .classification;
        assert!(
            c.tables.contains("shop.customers") && c.tables.contains("orders"),
            "{c:?}"
        );
        assert!(c.schemas.contains("shop"));
        assert!(c.functions.contains("lower"));
        assert!(c.flags.multi_statement && !c.flags.has_where);
        assert_eq!(c.flags.statements, 2);
    }

    #[test]
    fn lineage_names_what_outputs_may_derive_from() {
        let c = Classifier::new(HashMap::new());
        let l = c
            .classify_uncached("SELECT upper(c.email) AS x, row_to_json(c), p.profile->>'db_password' FROM customers c JOIN payments p USING (id)")
            .lineage;
        assert!(
            l.columns.contains("email") && l.columns.contains("c"),
            "{l:?}"
        );
        assert!(l.relations.contains("customers") && l.relations.contains("c"));
        assert!(l.extracts_secret_keys(), "{l:?}");
        assert!(!l.star && !l.opaque);
        let l = c
            .classify_uncached("SELECT t.*, count(*), my_fn(x) FROM t")
            .lineage;
        assert!(l.star && l.opaque, "{l:?}");
        assert!(!c
            .classify_uncached("SELECT 'password'")
            .lineage
            .extracts_secret_keys());
    }
}
