//! `sluice policy check|test`: the gateway's own classifier and policy
//! engine, run locally on the same configuration, so what they print is
//! what the gateway decides.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_core::policy::Principal;
use sluice_core::{Classification, Connection, Decision, Effect, PolicyEngine, TargetTls};
use sluice_pg::classify::Classifier;

use crate::config::Config;

/// The configured policies, classifier and connections.
pub struct LocalPolicy {
    engine: PolicyEngine,
    classifier: Classifier,
    connections: HashMap<String, Connection>,
}

impl LocalPolicy {
    /// Loads and validates what the gateway would load from `cfg`.
    pub fn load(cfg: &Config) -> Result<LocalPolicy> {
        let pc = cfg.policy_config();
        let engine = PolicyEngine::load(&pc.source, &pc.groups)
            .map_err(|e| anyhow!("{}: invalid policy: {e}", cfg.source))?;
        // Policy needs a connection's name, kind, tags and shadow flag, not
        // its credentials (which the person checking may not hold).
        let connections = cfg
            .connections
            .iter()
            .map(|c| {
                let conn = Connection {
                    name: c.name.clone(),
                    kind: c.kind.clone(),
                    address: c.address.clone(),
                    database: c.database.clone().unwrap_or_else(|| c.name.clone()),
                    user: c.user.clone(),
                    password: None,
                    tls: TargetTls::Disable,
                    tls_ca_file: None,
                    allow_cleartext_password: false,
                    tags: c.tags.clone(),
                    shadow: c.shadow,
                    review_mode: c.review_mode,
                };
                (c.name.clone(), conn)
            })
            .collect();
        Ok(LocalPolicy {
            engine,
            classifier: Classifier::new(cfg.pg_functions()?),
            connections,
        })
    }

    /// Classifies `sql` and decides it for a principal on a connection.
    pub fn check(
        &self,
        connection: &str,
        principal: &str,
        actor: Option<&str>,
        sql: &str,
    ) -> Result<(Classification, Decision)> {
        let Some(conn) = self.connections.get(connection) else {
            let mut known: Vec<&str> = self.connections.keys().map(String::as_str).collect();
            known.sort();
            bail!(
                "unknown connection \"{connection}\" (configured: {})",
                known.join(", ")
            );
        };
        if conn.kind != "postgres" {
            bail!(
                "connection \"{connection}\" is of kind {}, which has no statement classifier yet",
                conn.kind
            );
        }
        let who = Principal {
            name: principal.to_string(),
            actor: actor.map(str::to_string),
            groups: Vec::new(),
            delegated: false,
        };
        let entities = self.engine.entities(&who, conn);
        // As the first statement of a fresh session.
        let classification = self.classifier.classify(sql, false).resolve(|_| None);
        let decision = self
            .engine
            .decide(&entities, &classification, sluice_core::time::now_ms());
        Ok(((*classification).clone(), decision))
    }
}

/// Prints a check's result.
pub fn print_check(c: &Classification, d: &Decision, json_out: bool) {
    if json_out {
        // Records leave out usual flag values; here every flag is shown.
        let f = &c.flags;
        crate::print_json(&json!({
            "class": c.class(),
            "classification": c,
            "flags": {"statements": f.statements, "has_where": f.has_where,
                      "multi_statement": f.multi_statement, "dynamic_sql": f.dynamic_sql},
            "decision": d,
        }));
        return;
    }
    println!("class:      {}", c.class());
    let effects: Vec<&str> = c.effects.iter().map(|e| e.as_str()).collect();
    println!("effects:    {}", effects.join(", "));
    for (label, set) in [
        ("tables:", &c.tables),
        ("functions:", &c.functions),
        ("schemas:", &c.schemas),
    ] {
        if !set.is_empty() {
            println!(
                "{label:<11} {}",
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    println!(
        "flags:      statements={} has_where={} multi_statement={} dynamic_sql={}",
        c.flags.statements, c.flags.has_where, c.flags.multi_statement, c.flags.dynamic_sql
    );
    if let Some(why) = &c.unknown_reason {
        println!("unknown:    {why}");
    }
    println!("decision:   {} ({})", d.effect.as_str(), d.explain());
    if let Some(s) = &d.shadow {
        println!("shadow:     would {} ({})", s.effect.as_str(), s.explain());
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    case: Vec<TestCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    connection: String,
    principal: String,
    #[serde(default)]
    actor: Option<String>,
    sql: String,
    expect: String,
}

/// Runs a file of cases; returns whether all passed.
pub fn run_tests(policy: &LocalPolicy, file: &Path, json_out: bool) -> Result<bool> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let cases: TestFile =
        toml::from_str(&text).with_context(|| format!("{}: invalid test file", file.display()))?;
    let mut results = Vec::new();
    let mut failed = 0;
    for (i, case) in cases.case.iter().enumerate() {
        let expect: Effect = case
            .expect
            .parse()
            .map_err(|e| anyhow!("{}: case {}: {e}", file.display(), i + 1))?;
        let (c, d) = policy
            .check(
                &case.connection,
                &case.principal,
                case.actor.as_deref(),
                &case.sql,
            )
            .with_context(|| format!("{}: case {}", file.display(), i + 1))?;
        let ok = d.effect == expect;
        if !ok {
            failed += 1;
            if !json_out {
                println!(
                    "FAIL case {}: expected {}, got {} ({}; class {}): {}",
                    i + 1,
                    expect.as_str(),
                    d.effect.as_str(),
                    d.explain(),
                    c.class(),
                    case.sql.trim()
                );
            }
        }
        results.push(
            json!({"case": i + 1, "sql": case.sql, "expected": expect, "got": d.effect,
                            "class": c.class(), "policies": d.policies, "ok": ok}),
        );
    }
    if json_out {
        crate::print_json(&Value::Array(results));
    } else {
        println!(
            "{} cases, {} passed, {failed} failed",
            cases.case.len(),
            cases.case.len() - failed
        );
    }
    Ok(failed == 0)
}
