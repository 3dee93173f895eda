//! Tools for the people who configure masking: see what a masked principal
//! would receive for a statement, column by column with the rule that fired,
//! and find columns whose values trip a detector but have no rule.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use sluice_core::masking::{MaskCounts, Masking};
use sluice_core::Class;

use crate::catalog::Catalog;
use crate::classify::Classifier;
use crate::mask::{apply_rules, mask_one, plans, Plan};

/// Rows shown by `mask test`.
const MAX_ROWS: usize = 100;
/// Tables and rows per table `mask scan` samples.
const SCAN_TABLES: usize = 500;
const SCAN_ROWS: usize = 200;

/// One column of a `mask test` result.
#[derive(Debug, Serialize)]
pub struct TestColumn {
    pub name: String,
    /// What masks it: a column rule (`public.customers.notes as notes`),
    /// `derived` (an expression that may come from a column under a rule),
    /// or `detectors` (values are masked where a detector finds something).
    pub masked_by: String,
    /// Values masked in the rows shown, by kind.
    pub masked: BTreeMap<String, u64>,
}

/// What a masked principal would receive.
#[derive(Debug, Serialize)]
pub struct TestReport {
    pub columns: Vec<TestColumn>,
    /// The masked rows, as text (`None` for NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows beyond those shown were not fetched.
    pub truncated: bool,
}

/// A column whose values trip a detector but that no rule covers.
#[derive(Debug, Serialize)]
pub struct ScanFinding {
    /// `schema.table.column`.
    pub column: String,
    /// Sampled values with a finding, by kind.
    pub kinds: BTreeMap<String, u64>,
    /// Values sampled.
    pub sampled: u64,
    /// A rule covers the column already (reported when `all` is asked for).
    pub rule: Option<String>,
}

/// `mask test` and `mask scan` for the PostgreSQL connections.
pub struct MaskTools {
    classifier: Arc<Classifier>,
    catalogs: HashMap<String, Arc<Catalog>>,
    masking: Arc<Masking>,
}

impl MaskTools {
    pub(crate) fn new(
        classifier: Arc<Classifier>,
        catalogs: HashMap<String, Arc<Catalog>>,
        masking: Arc<Masking>,
    ) -> MaskTools {
        MaskTools {
            classifier,
            catalogs,
            masking,
        }
    }

    fn catalog(&self, connection: &str) -> Result<&Arc<Catalog>, String> {
        self.catalogs
            .get(connection)
            .ok_or_else(|| format!("no PostgreSQL connection {connection:?}"))
    }

    /// Runs a read-only statement in a read-only transaction and masks its
    /// result as the gateway would for a masked principal.
    pub async fn test(&self, connection: &str, sql: &str) -> Result<TestReport, String> {
        let catalog = self.catalog(connection)?;
        let classified = self.classifier.classify(sql, false);
        let c = classified.resolve(|_| None);
        if c.class() != Class::Read || c.flags.multi_statement {
            return Err(format!(
                "mask test runs one read statement; this is {}",
                if c.flags.multi_statement {
                    "several statements".to_string()
                } else {
                    format!("class {}", c.class())
                }
            ));
        }
        let fetch = format!("FETCH {} FROM sluice_mask_test", MAX_ROWS + 1);
        let declare = format!("DECLARE sluice_mask_test NO SCROLL CURSOR FOR {sql}");
        let sets = catalog
            .result_sets(&["BEGIN READ ONLY", &declare, &fetch, "ROLLBACK"])
            .await?;
        let set = sets
            .into_iter()
            .next()
            .ok_or("the statement returns no rows")?;
        let m = &*self.masking;
        let mut plan = plans(&set.columns, None);
        let oids: Vec<u32> = set
            .columns
            .iter()
            .map(|c| c.table_oid)
            .filter(|&o| o != 0)
            .collect();
        let relations = if m.has_rules() && !oids.is_empty() {
            catalog.relations(&oids).await.ok()
        } else {
            None
        };
        let views = if m.has_rules() && set.columns.iter().any(|c| c.table_oid == 0) {
            let names: Vec<&str> = classified
                .lineage
                .relations
                .iter()
                .map(String::as_str)
                .collect();
            catalog.views_named(&names).await?
        } else {
            Vec::new()
        };
        apply_rules(
            m,
            &mut plan,
            &set.columns,
            relations.as_ref(),
            Some(&classified.lineage),
            &views,
        );
        let mut counts: Vec<MaskCounts> =
            set.columns.iter().map(|_| MaskCounts::default()).collect();
        let truncated = set.rows.len() > MAX_ROWS;
        let rows = set
            .rows
            .iter()
            .take(MAX_ROWS)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let v = v.as_ref()?;
                        let p = plan.get(i).cloned().unwrap_or_else(Plan::unknown);
                        let shown = match mask_one(m, &p, v, &mut counts[i]) {
                            None => Some(v.clone()),
                            Some(masked) => masked,
                        };
                        shown.map(|b| String::from_utf8_lossy(&b).into_owned())
                    })
                    .collect()
            })
            .collect();
        let columns = set
            .columns
            .iter()
            .zip(plan)
            .zip(counts)
            .map(|((c, p), n)| TestColumn {
                name: c.name.clone(),
                masked_by: match &p.rule {
                    Some(r) if r.pattern == "*.*.*" => {
                        format!("derived ({})", sluice_core::mask::kind_name(&r.kind))
                    }
                    Some(r) => {
                        format!("{} as {}", r.pattern, sluice_core::mask::kind_name(&r.kind))
                    }
                    None => "detectors".into(),
                },
                masked: n.0,
            })
            .collect();
        Ok(TestReport {
            columns,
            rows,
            truncated,
        })
    }

    /// Samples the connection's tables; reports columns whose values trip
    /// a detector (and, with `all`, those a rule covers too). Never a value.
    pub async fn scan(&self, connection: &str, all: bool) -> Result<Vec<ScanFinding>, String> {
        let catalog = self.catalog(connection)?;
        let tables = catalog
            .result_sets(&[&format!(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'm', 'f') \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg_toast%' \
                   AND pg_catalog.has_table_privilege(c.oid, 'SELECT') \
                 ORDER BY 1, 2 LIMIT {SCAN_TABLES}"
            )])
            .await?;
        let names: Vec<(String, String)> = tables
            .into_iter()
            .flat_map(|s| s.rows)
            .filter_map(|r| {
                let text = |i: usize| {
                    r.get(i)?
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                };
                Some((text(0)?, text(1)?))
            })
            .collect();
        let m = &*self.masking;
        let mut findings = Vec::new();
        for (schema, table) in names {
            let q = format!(
                "SELECT * FROM {}.{} LIMIT {SCAN_ROWS}",
                quote_ident(&schema),
                quote_ident(&table)
            );
            let Ok(sets) = catalog
                .result_sets(&["BEGIN READ ONLY", &q, "ROLLBACK"])
                .await
            else {
                continue;
            };
            let Some(set) = sets.into_iter().next() else {
                continue;
            };
            for (i, col) in set.columns.iter().enumerate() {
                let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
                let mut sampled = 0;
                for row in &set.rows {
                    let Some(Some(v)) = row.get(i) else { continue };
                    sampled += 1;
                    if let Some((_, found)) = m.masker.mask_text(&String::from_utf8_lossy(v)) {
                        let mut seen = found;
                        seen.dedup();
                        for k in seen {
                            *kinds
                                .entry(sluice_core::mask::kind_name(&k).to_string())
                                .or_default() += 1;
                        }
                    }
                }
                let rule = m
                    .column_rule(&schema, &table, &col.name)
                    .map(|r| r.pattern.clone());
                if !kinds.is_empty() && (rule.is_none() || all) {
                    findings.push(ScanFinding {
                        column: format!("{schema}.{table}.{}", col.name),
                        kinds,
                        sampled,
                        rule,
                    });
                }
            }
        }
        Ok(findings)
    }
}

/// Quotes an identifier for a statement the gateway writes itself.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
