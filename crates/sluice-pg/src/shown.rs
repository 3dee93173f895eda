//! What approvers are shown of a statement: its text exactly as it runs,
//! with only the values in it (string and number literals, bound
//! parameters) masked. Masking the whole text would let a crafted comment
//! that looks like a secret hide SQL from the person approving it; and
//! since code can live in literals too (function bodies, `DO` blocks,
//! dynamic SQL), literals are masked only where they can only be values.

use pg_query::protobuf::Token;
use sluice_core::mask::Masker;
use sluice_core::{Class, Classification};

/// The statement with its value literals masked; `None` when it cannot be
/// scanned, since then values and structure cannot be told apart.
///
/// Nothing is masked in a statement that may run text as code (anything
/// but plain reads, writes and session commands, or dynamic SQL), in
/// dollar-quoted or multi-line literals, or in a text with a backslash
/// (which reads differently with `standard_conforming_strings` off).
pub fn statement(masker: &Masker, sql: &str, c: &Classification) -> Option<String> {
    let tokens = pg_query::scan_tokens(sql).ok()?;
    if sql.contains('\\') {
        return Some(format!(
            "{sql}\n-- sluice: shown unmasked: a backslash makes this text read differently with standard_conforming_strings off (both readings were judged)"
        ));
    }
    let values_only = !c.flags.dynamic_sql
        && c.effects
            .iter()
            .all(|e| matches!(e, Class::Read | Class::Write | Class::Session));
    if !values_only {
        return Some(sql.to_string());
    }
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for t in tokens {
        let literal = [
            Token::Sconst,
            Token::Usconst,
            Token::Bconst,
            Token::Xconst,
            Token::Iconst,
            Token::Fconst,
        ]
        .iter()
        .any(|k| *k as i32 == t.token);
        if !literal {
            continue;
        }
        let (start, end) = (t.start as usize, t.end as usize);
        let text = sql.get(start..end)?;
        if start < at {
            return None;
        }
        if text.starts_with('$') || text.contains('\n') {
            continue;
        }
        if let Some((masked, _)) = masker.mask_text(text) {
            out.push_str(&sql[at..start]);
            out.push_str(&masked);
            at = end;
        }
    }
    out.push_str(&sql[at..]);
    Some(out)
}

/// One bound parameter as approvers see it: a text value quoted, with its
/// control characters escaped and detected values masked; a binary one in
/// hex; long ones cut.
pub fn parameter(masker: &Masker, binary: bool, value: Option<&[u8]>) -> String {
    match value {
        None => "NULL".to_string(),
        Some(b) if binary => format!(
            "(binary) {}{}",
            hex::encode(&b[..b.len().min(128)]),
            if b.len() > 128 { "..." } else { "" }
        ),
        Some(b) => {
            let s = String::from_utf8_lossy(b);
            let cut: String = s.chars().take(256).collect();
            let more = if cut.len() < s.len() { "..." } else { "" };
            let masked = masker.mask_text(&cut).map_or(cut, |(m, _)| m);
            format!("'{}'{more}", masked.escape_debug())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::detect::Detectors;
    use sluice_core::mask::Style;

    fn masker() -> Masker {
        Masker::new(
            Detectors::default(),
            Default::default(),
            Style::Redact,
            [7; 32],
        )
    }

    #[test]
    fn only_value_literals_are_masked() {
        let m = masker();
        let write = Classification::of(Class::Write);
        let sql = "UPDATE t SET note = 'mail alice@example.com' WHERE id = 1 \
                   /* -----BEGIN PRIVATE KEY----- */ OR true /* -----END PRIVATE KEY----- */";
        let shown = statement(&m, sql, &write).unwrap();
        assert!(!shown.contains("alice@example.com"), "{shown}");
        assert!(shown.contains("WHERE id = 1"), "{shown}");
        assert!(shown.contains("OR true"), "SQL is never hidden: {shown}");
        assert_eq!(statement(&m, "SELECT 1", &write).unwrap(), "SELECT 1");
        assert!(statement(&m, "SELECT 'unterminated", &write).is_none());
        // Code in literals is never masked.
        let ddl = Classification::of(Class::Ddl);
        let body = "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS \
                    '-----BEGIN PRIVATE KEY----- DELETE FROM t -----END PRIVATE KEY-----'";
        assert!(statement(&m, body, &ddl).unwrap().contains("DELETE FROM t"));
        let dollar =
            "UPDATE t SET note = $$-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----$$";
        assert!(statement(&m, dollar, &write).unwrap().contains("\nx\n"));
        let backslash = "UPDATE t SET a = 'p\\', b = ' alice@example.com'";
        assert!(statement(&m, backslash, &write)
            .unwrap()
            .contains("alice@example.com"));
        assert_eq!(parameter(&m, false, Some(b"a\nb")), "'a\\nb'");
        assert_eq!(parameter(&m, false, None), "NULL");
    }
}
