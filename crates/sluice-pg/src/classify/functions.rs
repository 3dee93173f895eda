//! Which functions do what. A function call can do anything a statement
//! can (end other sessions, read server files, write data), so every call
//! is looked up: listed side effects first, then PostgreSQL's own catalog
//! (harmless built-ins), and anything else — a function the gateway knows
//! nothing about — is unknown.

use std::collections::{HashMap, HashSet};

use sluice_core::Class;

/// Names of the functions in PostgreSQL 15's `pg_catalog`, generated with
/// `SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace`.
const BUILTIN: &str = include_str!("../../data/builtin-functions.txt");

/// Built-in functions with effects beyond reading. The user's table
/// (`[postgres.functions]`) is consulted first and may override these.
const SIDE_EFFECTS: &[(&str, Class)] = &[
    // Other sessions and the server itself.
    ("pg_terminate_backend", Class::Admin),
    ("pg_cancel_backend", Class::Admin),
    ("pg_reload_conf", Class::Admin),
    ("pg_rotate_logfile", Class::Admin),
    ("pg_promote", Class::Admin),
    ("pg_log_backend_memory_contexts", Class::Admin),
    ("pg_switch_wal", Class::Admin),
    ("pg_create_restore_point", Class::Admin),
    ("pg_backup_start", Class::Admin),
    ("pg_backup_stop", Class::Admin),
    ("pg_wal_replay_pause", Class::Admin),
    ("pg_wal_replay_resume", Class::Admin),
    ("pg_stat_reset", Class::Admin),
    ("pg_stat_reset_shared", Class::Admin),
    ("pg_stat_reset_single_table_counters", Class::Admin),
    ("pg_stat_reset_single_function_counters", Class::Admin),
    ("pg_stat_reset_slru", Class::Admin),
    ("pg_stat_reset_replication_slot", Class::Admin),
    ("pg_stat_reset_subscription_stats", Class::Admin),
    ("pg_import_system_collations", Class::Admin),
    ("pg_stop_making_pinned_objects", Class::Admin),
    ("pg_nextoid", Class::Admin),
    ("pg_extension_config_dump", Class::Admin),
    ("pg_hba_file_rules", Class::Admin),
    ("pg_ident_file_mappings", Class::Admin),
    ("pg_rotate_logfile_old", Class::Admin),
    ("pg_read_file_old", Class::Admin),
    // pg_stat_statements is an extension, but nearly everywhere.
    ("pg_stat_statements_reset", Class::Admin),
    // Replication.
    ("pg_create_logical_replication_slot", Class::Admin),
    ("pg_create_physical_replication_slot", Class::Admin),
    ("pg_copy_logical_replication_slot", Class::Admin),
    ("pg_copy_physical_replication_slot", Class::Admin),
    ("pg_drop_replication_slot", Class::Admin),
    ("pg_replication_slot_advance", Class::Admin),
    ("pg_logical_slot_get_changes", Class::Admin),
    ("pg_logical_slot_get_binary_changes", Class::Admin),
    ("pg_logical_emit_message", Class::Admin),
    ("pg_logical_slot_peek_changes", Class::Admin),
    ("pg_logical_slot_peek_binary_changes", Class::Admin),
    ("pg_replication_origin_create", Class::Admin),
    ("pg_replication_origin_drop", Class::Admin),
    ("pg_replication_origin_advance", Class::Admin),
    ("pg_replication_origin_session_setup", Class::Admin),
    ("pg_replication_origin_session_reset", Class::Admin),
    ("pg_replication_origin_xact_setup", Class::Admin),
    ("pg_replication_origin_xact_reset", Class::Admin),
    // Server files.
    ("pg_read_file", Class::Admin),
    ("pg_read_binary_file", Class::Admin),
    ("pg_ls_dir", Class::Admin),
    ("pg_stat_file", Class::Admin),
    ("pg_ls_logdir", Class::Admin),
    ("pg_ls_waldir", Class::Admin),
    ("pg_ls_tmpdir", Class::Admin),
    ("pg_ls_archive_statusdir", Class::Admin),
    ("pg_ls_logicalsnapdir", Class::Admin),
    ("pg_ls_logicalmapdir", Class::Admin),
    ("pg_ls_replslotdir", Class::Admin),
    ("lo_import", Class::Admin),
    ("lo_export", Class::Admin),
    // Settings, including the role the session acts as.
    ("set_config", Class::Admin),
    // Data changes.
    ("nextval", Class::Write),
    ("brin_summarize_range", Class::Write),
    ("brin_summarize_new_values", Class::Write),
    ("brin_desummarize_range", Class::Write),
    ("gin_clean_pending_list", Class::Write),
    ("setval", Class::Write),
    ("pg_notify", Class::Write),
    ("lo_create", Class::Write),
    ("lo_creat", Class::Write),
    ("lo_unlink", Class::Write),
    ("lo_put", Class::Write),
    ("lo_from_bytea", Class::Write),
    ("lo_truncate", Class::Write),
    ("lo_truncate64", Class::Write),
    ("lowrite", Class::Write),
    ("lo_open", Class::Write),
    // Locks held by the session.
    ("pg_advisory_lock", Class::Session),
    ("pg_advisory_lock_shared", Class::Session),
    ("pg_advisory_unlock", Class::Session),
    ("pg_advisory_unlock_all", Class::Session),
    ("pg_advisory_unlock_shared", Class::Session),
    ("pg_advisory_xact_lock", Class::Session),
    ("pg_advisory_xact_lock_shared", Class::Session),
    ("pg_try_advisory_lock", Class::Session),
    ("pg_try_advisory_lock_shared", Class::Session),
    ("pg_try_advisory_xact_lock", Class::Session),
    ("pg_try_advisory_xact_lock_shared", Class::Session),
    ("setseed", Class::Session),
    ("pg_export_snapshot", Class::Session),
];

/// Built-ins that run SQL given as a string: what they run is invisible.
const DYNAMIC_SQL: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    // Fetching from a cursor runs whatever statement the cursor holds.
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",
    // These read tables named in a string, out of policy's sight.
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    // dblink is an extension, not a built-in, but common enough to name.
    "dblink",
    "dblink_exec",
    "dblink_open",
    "dblink_send_query",
];

/// The result of looking a function up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionClass {
    /// A known class.
    Known(Class),
    /// Runs SQL text the gateway cannot see.
    DynamicSql,
    /// Not a built-in and not in the user's table.
    Unlisted,
}

/// The function table: built-ins, their side effects, and the user's entries.
#[derive(Debug)]
pub struct FunctionTable {
    builtin: HashSet<&'static str>,
    side_effects: HashMap<&'static str, Class>,
    user: HashMap<String, Class>,
}

impl FunctionTable {
    /// The built-in table extended (and overridden) by `user`, whose keys
    /// are function names as written in SQL, `schema.name` or `name`.
    pub fn new(user: HashMap<String, Class>) -> FunctionTable {
        FunctionTable {
            builtin: BUILTIN.lines().filter(|l| !l.is_empty()).collect(),
            side_effects: SIDE_EFFECTS.iter().copied().collect(),
            user,
        }
    }

    /// Classifies `CALL` of the procedure named by `parts`: PostgreSQL
    /// ships no procedures, so only the user's table can say what one does.
    pub fn lookup_procedure(&self, parts: &[String]) -> FunctionClass {
        match self.user.get(&parts.join(".")) {
            Some(c) => FunctionClass::Known(*c),
            None => FunctionClass::Unlisted,
        }
    }

    /// Classifies a call to the function named by `parts` (as written:
    /// `["pg_sleep"]`, `["pg_catalog", "pg_sleep"]`, `["billing", "refund"]`).
    pub fn lookup(&self, parts: &[String]) -> FunctionClass {
        let full = parts.join(".");
        if let Some(c) = self.user.get(&full) {
            return FunctionClass::Known(*c);
        }
        let (schema, name) = match parts {
            [name] => (None, name.as_str()),
            [schema, name] => (Some(schema.as_str()), name.as_str()),
            // catalog.schema.name: the catalog must be the current database,
            // which the gateway cannot check.
            _ => return FunctionClass::Unlisted,
        };
        if !matches!(schema, None | Some("pg_catalog")) {
            return FunctionClass::Unlisted;
        }
        if schema.is_some() {
            if let Some(c) = self.user.get(name) {
                return FunctionClass::Known(*c);
            }
        }
        if DYNAMIC_SQL.contains(&name) {
            return FunctionClass::DynamicSql;
        }
        if let Some(c) = self.side_effects.get(name) {
            return FunctionClass::Known(*c);
        }
        if name.starts_with("binary_upgrade_") {
            return FunctionClass::Known(Class::Admin);
        }
        if self.builtin.contains(name) {
            return FunctionClass::Known(Class::Read);
        }
        FunctionClass::Unlisted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn lookups() {
        let t = FunctionTable::new(HashMap::from([
            ("billing.refund".to_string(), Class::Write),
            ("set_config".to_string(), Class::Session),
        ]));
        assert_eq!(t.lookup(&parts("lower")), FunctionClass::Known(Class::Read));
        assert_eq!(
            t.lookup(&parts("pg_catalog.now")),
            FunctionClass::Known(Class::Read)
        );
        assert_eq!(
            t.lookup(&parts("pg_catalog.pg_terminate_backend")),
            FunctionClass::Known(Class::Admin)
        );
        assert_eq!(t.lookup(&parts("public.lower")), FunctionClass::Unlisted);
        assert_eq!(t.lookup(&parts("LOWER")), FunctionClass::Unlisted);
        assert_eq!(
            t.lookup(&parts("billing.refund")),
            FunctionClass::Known(Class::Write)
        );
        assert_eq!(t.lookup(&parts("refund")), FunctionClass::Unlisted);
        assert_eq!(
            t.lookup(&parts("set_config")),
            FunctionClass::Known(Class::Session)
        );
        assert_eq!(t.lookup(&parts("query_to_xml")), FunctionClass::DynamicSql);
    }
}
