//! The classifier on arbitrary input: it never panics, it is deterministic,
//! and it never calls something a read that PostgreSQL's parser reads as
//! anything else. Bounded and seeded (SLUICE_FUZZ_SEED to vary it).

use std::collections::HashMap;

mod sqlgen;

use sluice_core::Class;
use sluice_pg::classify::Classifier;

/// Statement kinds PostgreSQL itself treats as reading (what the read
/// class may contain), by the parse tree's top-level node.
fn parser_reads(sql: &str) -> bool {
    let Ok(tree) = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) else {
        return false;
    };
    tree.protobuf.stmts.iter().all(|s| {
        use pg_query::NodeEnum::*;
        match s.stmt.as_ref().and_then(|n| n.node.as_ref()) {
            Some(SelectStmt(sel)) => sel.into_clause.is_none() && sel.locking_clause.is_empty(),
            Some(VariableShowStmt(_)) | Some(FetchStmt(_)) | Some(DeclareCursorStmt(_)) => true,
            Some(ExplainStmt(_)) => true,
            Some(CopyStmt(c)) => !c.is_from && c.filename.is_empty() && !c.is_program,
            Some(ExecuteStmt(_)) | Some(PrepareStmt(_)) => true,
            _ => false,
        }
    })
}

#[test]
fn arbitrary_input_never_panics_and_reads_are_parser_reads() {
    let mut gen = sqlgen::Generator::new(include_str!("corpus.toml"));
    let classifier = Classifier::new(HashMap::new());
    let mut reads = 0;
    for _ in 0..20_000 {
        let sql = gen.next();
        let first = classifier.classify_uncached(&sql);
        assert_eq!(
            first,
            classifier.classify_uncached(&sql),
            "not deterministic: {sql:?}"
        );
        let c = first.resolve(|_| None);
        if c.class() == Class::Read {
            reads += 1;
            assert!(
                parser_reads(&sql),
                "classified read, but PostgreSQL parses it otherwise: {sql:?}"
            );
        }
    }
    assert!(
        reads > 100,
        "the generator should produce reads too ({reads})"
    );
}

#[test]
fn deeply_nested_and_huge_statements_are_classified_within_a_workers_stack() {
    // Tokio's worker threads have 2 MiB stacks; the classifier runs on them.
    let t = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let classifier = Classifier::new(HashMap::new());
            let mut out = Vec::new();
            for depth in [50, 500, 5_000, 50_000] {
                let nested = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
                out.push(classifier.classify(&nested, false).classification.class());
                let deep_cte = format!(
                    "{}SELECT 1{}",
                    "SELECT * FROM (".repeat(depth),
                    ") s".repeat(depth)
                );
                out.push(classifier.classify(&deep_cte, false).classification.class());
                let deep_delete = format!(
                    "SELECT {}(WITH d AS (DELETE FROM t RETURNING 1) SELECT 1){}",
                    "(".repeat(depth),
                    ")".repeat(depth)
                );
                out.push(
                    classifier
                        .classify(&deep_delete, false)
                        .classification
                        .class(),
                );
            }
            let wide = format!("SELECT {}", vec!["lower('x')"; 200_000].join(", "));
            out.push(classifier.classify(&wide, false).classification.class());
            out
        })
        .unwrap();
    let classes = t.join().expect("no stack overflow or panic");
    for (i, c) in classes.iter().enumerate() {
        // A read may only be a read; anything deeper than the parser or the
        // decoder accepts is unknown, never read.
        if i % 3 == 2 && i < 12 {
            assert_ne!(*c, Class::Read, "a nested DELETE was missed at case {i}");
        }
    }
    assert_eq!(classes[12], Class::Read, "a wide read is still a read");
}
