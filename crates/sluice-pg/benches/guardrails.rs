//! What inspection costs per statement: parsing and classifying (with and
//! without the cache) and the policy decision, on pgbench's statements.
//! Run with `cargo bench -p sluice-pg --bench guardrails`.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::Instant;

use sluice_core::policy::{Principal, SessionDecider};
use sluice_core::{Connection, PolicyEngine, PolicySource, TargetTls};
use sluice_pg::classify::Classifier;

/// pgbench's TPC-B-like transaction, with the literals simple mode sends.
fn pgbench_statements(i: u32) -> [String; 7] {
    let (aid, bid, tid, delta) = (
        i * 7919 % 100_000 + 1,
        i % 10 + 1,
        i % 100 + 1,
        (i % 10_000) as i32 - 5000,
    );
    [
        "BEGIN;".to_string(),
        format!("UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};"),
        format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"),
        format!("UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};"),
        format!("UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};"),
        format!("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP);"),
        "END;".to_string(),
    ]
}

fn per_statement(label: &str, n: usize, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{label:<48} {us:>8.2} µs/statement");
}

fn main() {
    let rounds = 3000u32;
    let statements: Vec<String> = (0..rounds).flat_map(pgbench_statements).collect();
    let n = statements.len();
    let classifier = Classifier::new(HashMap::new());

    per_statement("classify, every text new (simple mode)", n, || {
        for s in &statements {
            black_box(classifier.classify_uncached(s));
        }
    });
    per_statement("normalize only", n, || {
        for s in &statements {
            black_box(pg_query::normalize(s).ok());
        }
    });
    per_statement("classify, new text, known shape (simple mode)", n, || {
        for s in &statements {
            black_box(classifier.classify(s, false));
        }
    });
    per_statement("classify, cached (prepared/extended mode)", n, || {
        for s in statements.iter().take(7) {
            classifier.classify(s, false);
        }
        for i in 0..n {
            black_box(classifier.classify(&statements[i % 7], false));
        }
    });

    let engine = PolicyEngine::load(&PolicySource::Default, &BTreeMap::new()).unwrap();
    let conn = Connection {
        name: "prod".into(),
        kind: "postgres".into(),
        address: "127.0.0.1:5432".into(),
        database: "bench".into(),
        user: "bench".into(),
        password: None,
        tls: TargetTls::Disable,
        tls_ca_file: None,
        allow_cleartext_password: false,
        tags: BTreeMap::from([("env".to_string(), "dev".to_string())]),
        shadow: false,
    };
    let who = Principal {
        name: "alice".into(),
        actor: Some("agent:bench".into()),
    };
    let entities = engine.entities(&who, &conn);
    let classified: Vec<_> = statements
        .iter()
        .take(7)
        .map(|s| classifier.classify(s, false).resolve(|_| None))
        .collect();
    per_statement("policy decision, evaluated (default policies)", n, || {
        for i in 0..n {
            black_box(engine.decide(&entities, &classified[i % 7], 0));
        }
    });
    // Simple mode with new literals every time: a new parse, but the same
    // classification, so the session's decision is remembered.
    let mut decider = SessionDecider::new(std::sync::Arc::new(engine), entities);
    per_statement("new text, known shape + remembered decision", n, || {
        for s in &statements {
            let c = classifier.classify(s, false).resolve(|_| None);
            black_box(decider.decide(&c, 0));
        }
    });
    per_statement("cached text + remembered decision", n, || {
        for i in 0..n {
            let c = classifier
                .classify(&statements[i % 7], false)
                .resolve(|_| None);
            black_box(decider.decide(&c, 0));
        }
    });
}
