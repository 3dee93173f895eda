//! What inspection costs per statement: parsing and classifying (with and
//! without the caches) and the policy decision, on pgbench's statements.
//! Run with `cargo bench -p sluice-pg --bench guardrails`.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use sluice_core::policy::{Principal, SessionDecider};
use sluice_core::{Connection, PolicyEngine, PolicySource, TargetTls};
use sluice_pg::classify::Classifier;

/// pgbench's TPC-B-like transaction, with the literals simple mode sends.
fn pgbench_statements(i: u32) -> [String; 7] {
    let (aid, bid, tid) = (i * 7919 % 100_000 + 1, i % 10 + 1, i % 100 + 1);
    let delta = (i % 10_000) as i32 - 5000;
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

/// The same, as extended/prepared mode sends them: parameters, not values.
const PREPARED: [&str; 7] = [
    "BEGIN;",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;",
    "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
    "END;",
];

fn per_statement(label: &str, n: usize, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{label:<52} {us:>8.2} µs/statement");
}

fn main() {
    let statements: Vec<String> = (0..3000u32).flat_map(pgbench_statements).collect();
    let n = statements.len();
    let classifier = Classifier::new(HashMap::new());

    per_statement("parse and classify, no cache", n, || {
        for s in &statements {
            black_box(classifier.classify_uncached(s));
        }
    });
    per_statement("normalize only (the shape cache's key)", n, || {
        for s in &statements {
            black_box(pg_query::normalize(s).ok());
        }
    });
    per_statement("classify: new text, known shape (simple mode)", n, || {
        for s in &statements {
            black_box(classifier.classify(s, false));
        }
    });
    per_statement("classify: same text (extended/prepared mode)", n, || {
        for i in 0..n {
            black_box(classifier.classify(PREPARED[i % 7], false));
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
        tags: BTreeMap::from([("env".to_string(), "prod".to_string())]),
        shadow: false,
        review_mode: None,
    };
    let who = Principal {
        name: "alice".into(),
        actor: Some("agent:bench".into()),
        groups: Vec::new(),
        delegated: false,
    };
    let entities = engine.entities(&who, &conn);
    let classified: Vec<_> = PREPARED
        .iter()
        .map(|s| classifier.classify(s, false).resolve(|_| None))
        .collect();
    per_statement("policy decision, evaluated by Cedar", n, || {
        for i in 0..n {
            black_box(engine.decide(&entities, &classified[i % 7], 0));
        }
    });
    let mut decider = SessionDecider::new(Arc::new(engine), entities);
    per_statement("simple mode: classify + remembered decision", n, || {
        for s in &statements {
            let c = classifier.classify(s, false).resolve(|_| None);
            black_box(decider.decide(&c, 0));
        }
    });
    per_statement("extended mode: classify + remembered decision", n, || {
        for i in 0..n {
            let c = classifier
                .classify(PREPARED[i % 7], false)
                .resolve(|_| None);
            black_box(decider.decide(&c, 0));
        }
    });
}
