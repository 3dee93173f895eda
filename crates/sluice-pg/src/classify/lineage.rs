//! What a statement's output columns may derive from, for masking: the
//! column names it references, the relations (and aliases) it reads, and
//! constructs that hide where a value comes from (`*` inside expressions,
//! whole-row references, functions the gateway does not know, JSON keys
//! extracted by name). Column rules are matched against these when a result
//! column is an expression rather than a plain column.

use std::collections::BTreeSet;

use super::functions::{FunctionClass, FunctionTable};
use super::walk::Visitor;

/// Longest constant kept (JSON keys are short).
const MAX_CONSTANT: usize = 128;

/// What a statement's outputs may derive from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Last parts of column references (`c.email` gives `email`).
    pub columns: BTreeSet<String>,
    /// Relations read, by bare name, and their aliases.
    pub relations: BTreeSet<String>,
    /// A `*` column reference appears (`SELECT *`, `c.*`).
    pub star: bool,
    /// Something hides what values derive from: a function that is not a
    /// known built-in, dynamic SQL, `EXECUTE` or `FETCH` of a name defined
    /// elsewhere.
    pub opaque: bool,
    /// JSON is taken apart by key (`->`, `->>`, `#>`, `json_extract_path`).
    pub json_extraction: bool,
    /// Short string constants (JSON keys, among others).
    pub constants: BTreeSet<String>,
    /// Every statement is an EXPLAIN: its output is a plan, not data.
    pub explain_only: bool,
}

impl Lineage {
    /// Adds what another statement may derive from.
    pub fn merge(&mut self, other: &Lineage) {
        self.columns.extend(other.columns.iter().cloned());
        self.relations.extend(other.relations.iter().cloned());
        self.star |= other.star;
        self.opaque |= other.opaque;
        self.json_extraction |= other.json_extraction;
        self.constants.extend(other.constants.iter().cloned());
        self.explain_only &= other.explain_only;
    }

    /// Whether a key naming a secret is extracted from JSON by name.
    pub fn extracts_secret_keys(&self) -> bool {
        self.json_extraction
            && self
                .constants
                .iter()
                .any(|c| sluice_core::detect::names_a_secret(c))
    }
}

/// Collects a statement's lineage.
pub struct LineageScan<'f> {
    functions: &'f FunctionTable,
    pub lineage: Lineage,
    /// The COPY being walked copies a query, not a table.
    copy_of_query: bool,
    /// Inside a function in FROM, whose alias names no relation.
    in_range_function: usize,
}

impl<'f> LineageScan<'f> {
    pub fn new(functions: &'f FunctionTable) -> Self {
        LineageScan {
            functions,
            lineage: Lineage::default(),
            copy_of_query: false,
            in_range_function: 0,
        }
    }
}

impl Visitor for LineageScan<'_> {
    fn enter(&mut self, name: &'static str) {
        match name {
            "AStar" => self.lineage.star = true,
            "ExecuteStmt" | "FetchStmt" | "DoStmt" | "CallStmt" => self.lineage.opaque = true,
            // Subscripts: `profile['db_password']`.
            "AIndirection" => self.lineage.json_extraction = true,
            "RangeFunction" => self.in_range_function += 1,
            _ => {}
        }
    }

    fn leave(&mut self, name: &'static str, parts: Vec<String>) {
        match name {
            "RangeFunction" => self.in_range_function = self.in_range_function.saturating_sub(1),
            // Column aliases (`customers c(a, b, x)`) rename columns where
            // the statement's names no longer show them: count as `*`.
            "Alias" if !parts.is_empty() => self.lineage.star = true,
            // COPY of a table: its listed columns, or all of them.
            "CopyStmt" if !std::mem::take(&mut self.copy_of_query) => {
                if parts.is_empty() {
                    self.lineage.star = true;
                }
                self.lineage
                    .columns
                    .extend(parts.iter().map(|p| p.to_lowercase()));
            }
            "ColumnRef" => {
                if let Some(last) = parts.last() {
                    self.lineage.columns.insert(last.to_lowercase());
                }
                if parts.len() == 1 {
                    // Could be a whole-row reference to a relation or alias.
                    self.lineage.columns.insert(parts[0].to_lowercase());
                }
            }
            "AExpr"
                if parts
                    .iter()
                    .any(|p| matches!(p.as_str(), "->" | "->>" | "#>" | "#>>")) =>
            {
                self.lineage.json_extraction = true;
            }
            "AConst" => {
                for p in parts {
                    if p.len() <= MAX_CONSTANT {
                        self.lineage.constants.insert(p);
                    }
                }
            }
            "FuncCall" if !parts.is_empty() => {
                let last = parts.last().map(String::as_str).unwrap_or("");
                if [
                    "extract_path",
                    "jsonb_path",
                    "_each",
                    "to_record",
                    "populate_",
                    "array_elements",
                ]
                .iter()
                .any(|f| last.contains(f))
                {
                    self.lineage.json_extraction = true;
                }
                if !matches!(self.functions.lookup(&parts), FunctionClass::Known(_)) {
                    self.lineage.opaque = true;
                }
            }
            _ => {}
        }
    }

    fn string(&mut self, node: &'static str, field: &'static str, value: &str) {
        match (node, field) {
            // As the parser folded them (quoted names keep their case).
            ("RangeVar", "relname") => {
                self.lineage.relations.insert(value.to_string());
            }
            ("Alias", "aliasname") if self.in_range_function == 0 => {
                self.lineage.relations.insert(value.to_string());
            }
            _ => {}
        }
    }

    fn none(&mut self, node: &'static str, field: &'static str) {
        if node == "CopyStmt" && field == "relation" {
            self.copy_of_query = true;
        }
    }

    fn int(&mut self, _: &'static str, _: &'static str, _: i64) {}
}
