//! The classification corpus: every statement in `corpus.toml` must get
//! its expected class, each as the first message of a fresh session.

use std::collections::HashMap;

use serde::Deserialize;
use sluice_core::Class;
use sluice_pg::classify::Classifier;

#[derive(Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    sql: String,
    class: String,
    #[serde(default)]
    note: Option<String>,
}

#[test]
fn every_corpus_statement_gets_its_expected_class() {
    let text = include_str!("corpus.toml");
    let corpus: Corpus = toml::from_str(text).expect("corpus.toml parses");
    assert!(
        corpus.case.len() >= 150,
        "the corpus has {} cases",
        corpus.case.len()
    );
    let classifier = Classifier::new(HashMap::new());
    let mut wrong = Vec::new();
    for case in &corpus.case {
        let expected: Class = case.class.parse().expect("a valid class in corpus.toml");
        let got = classifier.classify(&case.sql, false).resolve(|_| None);
        if got.class() != expected {
            wrong.push(format!(
                "expected {expected}, got {} ({}): {}{}",
                got.class(),
                got.unknown_reason.as_deref().unwrap_or("-"),
                case.sql.trim(),
                case.note
                    .as_deref()
                    .map(|n| format!("  [{n}]"))
                    .unwrap_or_default()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} corpus cases misclassified:\n{}",
        wrong.len(),
        corpus.case.len(),
        wrong.join("\n")
    );
}
