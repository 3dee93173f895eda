//! What a session's results are masked with: the masker (detectors and
//! styles) and the column rules that mark `schema.table.column` sensitive
//! whatever its values look like. Protocol-neutral: adapters find out which
//! source column an output column comes from; this says whether it is
//! sensitive and how to show it.

use std::collections::BTreeMap;

use crate::detect::Kind;
use crate::mask::{kind_name, Masked, Masker, Style};

/// A column marked sensitive by configuration.
#[derive(Debug, Clone)]
pub struct ColumnRule {
    /// As configured: `schema.table.column`, each part a glob (`*`, `?`).
    pub pattern: String,
    /// What the column holds (a detector kind, or a label of the user's).
    pub kind: Kind,
    /// How it is shown; the kind's style when unset.
    pub style: Option<Style>,
    /// Lower-cased pattern parts: schema, table, column.
    parts: [String; 3],
}

impl ColumnRule {
    /// A rule from `schema.table.column` (a two-part `table.column` means
    /// any schema); errors name what is wrong.
    pub fn new(pattern: &str, kind: Kind, style: Option<Style>) -> Result<ColumnRule, String> {
        let parts: Vec<String> = pattern.split('.').map(|p| p.to_lowercase()).collect();
        let parts: [String; 3] = match parts.len() {
            3 => [parts[0].clone(), parts[1].clone(), parts[2].clone()],
            2 => ["*".into(), parts[0].clone(), parts[1].clone()],
            _ => {
                return Err(format!(
                    "column rule {pattern:?}: expected schema.table.column (globs allowed)"
                ))
            }
        };
        if parts.iter().any(String::is_empty) {
            return Err(format!("column rule {pattern:?} has an empty part"));
        }
        Ok(ColumnRule {
            pattern: pattern.to_string(),
            kind,
            style,
            parts,
        })
    }

    fn matches_table(&self, schema: &str, table: &str) -> bool {
        glob(&self.parts[0], &schema.to_lowercase()) && glob(&self.parts[1], &table.to_lowercase())
    }
}

/// Masking for the sessions of one gateway.
pub struct Masking {
    /// Detectors and styles.
    pub masker: Masker,
    rules: Vec<ColumnRule>,
}

impl Masking {
    /// Masking with `masker` and the column `rules`.
    pub fn new(masker: Masker, rules: Vec<ColumnRule>) -> Masking {
        Masking { masker, rules }
    }

    /// The rule marking a source column sensitive, if any (the first that
    /// matches, in configuration order).
    pub fn column_rule(&self, schema: &str, table: &str, column: &str) -> Option<&ColumnRule> {
        let column = column.to_lowercase();
        self.rules
            .iter()
            .find(|r| r.matches_table(schema, table) && glob(&r.parts[2], &column))
    }

    /// Whether any rule can match a column of this table (`schema` unknown:
    /// any schema).
    pub fn table_has_rules(&self, schema: Option<&str>, table: &str) -> bool {
        let table = table.to_lowercase();
        self.rules.iter().any(|r| {
            glob(&r.parts[1], &table) && schema.is_none_or(|s| glob(&r.parts[0], &s.to_lowercase()))
        })
    }

    /// Whether a column of this name may be sensitive in some table.
    pub fn column_name_has_rules(&self, column: &str) -> bool {
        let column = column.to_lowercase();
        self.rules.iter().any(|r| glob(&r.parts[2], &column))
    }

    /// The first rule whose table part matches one of `tables` and whose
    /// column part matches one of `columns` (names as a statement wrote
    /// them, schema unknown).
    pub fn rule_for_names<'a>(
        &self,
        tables: impl Iterator<Item = &'a str> + Clone,
        columns: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<&ColumnRule> {
        self.rules.iter().find(|r| {
            tables.clone().any(|t| glob(&r.parts[1], &t.to_lowercase()))
                && columns
                    .clone()
                    .any(|c| glob(&r.parts[2], &c.to_lowercase()))
        })
    }

    /// Whether any column rule is configured.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Masks a whole value under a rule.
    pub fn mask_by_rule(&self, rule: &ColumnRule, value: &str) -> Masked {
        match rule.style {
            Some(Style::Null) => Masked::Null,
            Some(style) => Masked::Text(self.masker.render_as(style, &rule.kind, value)),
            None => self.masker.mask_value(&rule.kind, value),
        }
    }
}

/// How many values were masked, by kind, for one command's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskCounts(pub BTreeMap<String, u64>);

impl MaskCounts {
    /// Counts one masked value of `kind`.
    pub fn add(&mut self, kind: &Kind) {
        *self.0.entry(kind_name(kind).to_string()).or_default() += 1;
    }

    /// Counts a value masked for a reason other than a kind (a column
    /// whose origin could not be established, say).
    pub fn add_label(&mut self, label: &str) {
        *self.0.entry(label.to_string()).or_default() += 1;
    }

    /// Whether nothing was masked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether `text` matches `pattern`: `*` any run, `?` one character,
/// everything else literally. Rule patterns (column rules, program
/// arguments) are short, so this small matcher is all that is needed (a
/// glob crate would bring path semantics we do not want).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Detectors;

    fn masking(rules: &[(&str, Kind)]) -> Masking {
        Masking::new(
            Masker::new(
                Detectors::default(),
                BTreeMap::new(),
                Style::Redact,
                [1; 32],
            ),
            rules
                .iter()
                .map(|(p, k)| ColumnRule::new(p, k.clone(), None).unwrap())
                .collect(),
        )
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("cust*", "customers"));
        assert!(glob("*_ssn", "tax_ssn"));
        assert!(glob("c?t", "cat"));
        assert!(!glob("c?t", "cart"));
        assert!(!glob("cust*", "orders"));
        assert!(glob("*a*b*", "xxaxxbxx"));
        assert!(!glob("*a*b", "xxaxxbxx"));
    }

    #[test]
    fn rules_match_schema_table_and_column_case_insensitively() {
        let m = masking(&[
            ("public.customers.email", Kind::Email),
            ("*.*.ssn", Kind::Ssn),
            ("payments.card_*", Kind::Card),
        ]);
        assert_eq!(
            m.column_rule("public", "Customers", "EMAIL").unwrap().kind,
            Kind::Email
        );
        assert!(m.column_rule("other", "customers", "email").is_none());
        assert_eq!(
            m.column_rule("hr", "people", "ssn").unwrap().kind,
            Kind::Ssn
        );
        assert_eq!(
            m.column_rule("billing", "payments", "card_number")
                .unwrap()
                .kind,
            Kind::Card
        );
        assert!(m.column_rule("billing", "payments", "amount").is_none());
        assert!(m.table_has_rules(None, "payments"));
        assert!(m.table_has_rules(Some("anything"), "whatever"), "*.*.ssn");
        assert!(m.column_name_has_rules("card_expiry"));
        assert!(!m.column_name_has_rules("amount"));
        assert!(ColumnRule::new("just_a_table", Kind::Email, None).is_err());
        assert!(ColumnRule::new("a..b", Kind::Email, None).is_err());
    }

    #[test]
    fn rule_styles_override_the_kind_style() {
        let m = Masking::new(
            Masker::new(
                Detectors::default(),
                BTreeMap::new(),
                Style::Redact,
                [1; 32],
            ),
            vec![
                ColumnRule::new("t.salary", Kind::Custom("salary".into()), Some(Style::Null))
                    .unwrap(),
                ColumnRule::new("t.notes", Kind::Custom("notes".into()), None).unwrap(),
            ],
        );
        let salary = m.column_rule("public", "t", "salary").unwrap();
        assert_eq!(m.mask_by_rule(salary, "120000"), Masked::Null);
        let notes = m.column_rule("public", "t", "notes").unwrap();
        assert_eq!(
            m.mask_by_rule(notes, "call me"),
            Masked::Text("[redacted:notes]".into())
        );
    }
}
