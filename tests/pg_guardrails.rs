//! Guardrails end to end: every statement is classified and decided by
//! policy before it reaches a real PostgreSQL; refused ones never arrive,
//! and the session, its transaction state and the record stay right.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn prod_gateway(target: &PgServer) -> Gateway {
    Gateway::start(
        "",
        "allow_plaintext_loopback = true",
        &(connection_toml("prod", target, "prefer", "env = \"prod\"")
            + &connection_toml("dev", target, "prefer", "env = \"dev\"")
            + &connection_toml("trial", target, "prefer", "env = \"prod\"")
            + "shadow = true\n"),
    )
}

/// A gateway whose only connection is `prod` (tagged `env = "prod"`),
/// under the given policies instead of the defaults.
fn prod_gateway_with_policy(target: &PgServer, policy: &str) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.cedar");
    std::fs::write(&file, policy).unwrap();
    let gw = Gateway::start(
        "",
        "allow_plaintext_loopback = true",
        &format!(
            "[policy]\nfiles = [{:?}]\n\n{}",
            file.to_str().unwrap(),
            connection_toml("prod", target, "prefer", "env = \"prod\"")
        ),
    );
    (gw, dir)
}

/// The recorded command event for a statement text, with its session.
fn command_event(gw: &Gateway, text: &str) -> (serde_json::Value, serde_json::Value) {
    let sessions = gw.cli_json(&["sessions", "list", "--principal", "alice"]);
    for s in sessions.as_array().unwrap() {
        let show = gw.cli_json(&["sessions", "show", s["id"].as_str().unwrap()]);
        if let Some(e) = show["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "command" && e["data"]["text"] == text)
        {
            return (e.clone(), show.clone());
        }
    }
    panic!("no command {text:?} recorded")
}

#[test]
fn psql_refusals_leave_the_target_untouched_and_are_recorded() {
    let target = PgServer::start(Auth::Scram, false);
    let gw = prod_gateway(&target);
    let token = agent_token(&gw, "prod");
    let info = gw.conninfo("prod", "alice", &token);

    // A read goes through untouched.
    assert_eq!(psql_ok(&info, "SELECT count(*) FROM orders").trim(), "100");

    for (sql, says) in [
        ("DROP TABLE orders", "sluice blocked this statement"),
        ("TRUNCATE orders", "sluice blocked this statement"),
        ("DELETE FROM orders", "sluice blocked this statement"),
        (
            "SELECT 1; DROP TABLE orders",
            "sluice blocked this statement",
        ),
        (
            "SELECT pg_terminate_backend(pg_backend_pid())",
            "sluice blocked this statement",
        ),
        (
            "DO $$ BEGIN EXECUTE 'DROP TABLE orders'; END $$",
            "sluice blocked this statement",
        ),
        (
            "/* harmless */ drop /* really */ TABLE \"orders\"",
            "sluice blocked this statement",
        ),
        ("DELETE FROM orders WHERE id = 1", "needs a human review"),
        (
            "WITH d AS (DELETE FROM orders WHERE id < 50 RETURNING *) SELECT count(*) FROM d",
            "needs a human review",
        ),
        (
            "CREATE TABLE sneaky AS SELECT * FROM orders",
            "needs a human review",
        ),
    ] {
        let out = psql(&info, sql);
        assert!(!out.status.success(), "{sql} ran");
        assert!(stderr(&out).contains(says), "{sql}: {}", stderr(&out));
    }
    let err = stderr(&psql(&info, "DROP TABLE orders"));
    assert!(
        err.contains("prod-block-risky"),
        "the reason names the policy: {err}"
    );

    // Nothing reached the target.
    assert_eq!(
        psql_ok(&direct(&target), "SELECT count(*) FROM orders").trim(),
        "100"
    );
    assert_eq!(
        psql_ok(
            &direct(&target),
            "SELECT count(*) FROM pg_tables WHERE tablename = 'sneaky'"
        )
        .trim(),
        "0"
    );

    // The record holds the decision, its reason and the classification.
    let (ev, show) = command_event(&gw, "DROP TABLE orders");
    let data = &ev["data"];
    assert_eq!(data["decision"]["effect"], "block", "{data}");
    assert_eq!(data["decision"]["policies"][0], "prod-block-risky");
    assert!(data["classification"]["effects"]
        .as_array()
        .unwrap()
        .contains(&"destructive".into()));
    assert!(data["classification"]["tables"]
        .as_array()
        .unwrap()
        .contains(&"orders".into()));
    assert_eq!(outcome_of(&show, "DROP TABLE orders")["status"], "blocked");
    let (review, show) = command_event(&gw, "DELETE FROM orders WHERE id = 1");
    assert_eq!(review["data"]["decision"]["effect"], "review");
    assert_eq!(
        outcome_of(&show, "DELETE FROM orders WHERE id = 1")["status"],
        "review"
    );
    let (read, _) = command_event(&gw, "SELECT count(*) FROM orders");
    assert_eq!(read["data"]["decision"]["effect"], "allow");
    assert_eq!(read["data"]["decision"]["policies"][0], "allow-otherwise");
}

#[test]
fn refusals_keep_the_session_and_transaction_state_right() {
    let target = PgServer::start(Auth::Scram, false);
    let gw = prod_gateway(&target);
    let token = agent_token(&gw, "prod");
    let mut s = raw_login(gw.pg_port, "alice", "prod", &token);

    // Outside a transaction: an error, then idle, and the session goes on.
    s.write_all(&query_msg("DROP TABLE orders")).unwrap();
    let (tags, codes) = read_until_ready(&mut s);
    assert_eq!((tags, codes), (vec![b'E', b'Z'], vec!["42501".to_string()]));
    s.write_all(&query_msg("SELECT 1")).unwrap();
    let (tags, codes) = read_until_ready(&mut s);
    assert_eq!(tags, vec![b'T', b'D', b'C', b'Z']);
    assert!(codes.is_empty());

    // Inside a transaction: the refusal aborts it, exactly as a server error would.
    s.write_all(&query_msg("BEGIN")).unwrap();
    read_until_ready(&mut s);
    s.write_all(&query_msg("TRUNCATE orders")).unwrap();
    let (_, codes) = read_until_ready(&mut s);
    assert_eq!(codes, vec!["42501"]);
    s.write_all(&query_msg("SELECT 1")).unwrap();
    let (_, codes) = read_until_ready(&mut s);
    assert_eq!(codes, vec!["25P02"], "the transaction is aborted");
    s.write_all(&query_msg("ROLLBACK")).unwrap();
    read_until_ready(&mut s);

    // An extended-protocol pipeline: the error arrives at the refused
    // Execute, and the rest up to Sync is skipped by the server itself.
    let mut batch = Vec::new();
    for (stmt, sql) in [
        ("a", "SELECT 1"),
        ("b", "DROP TABLE orders"),
        ("c", "SELECT 2"),
    ] {
        batch.extend(parse_msg(stmt, sql));
        batch.extend(bind_msg("", stmt));
        batch.extend(execute_msg(""));
    }
    batch.extend(sync_msg());
    s.write_all(&batch).unwrap();
    let (tags, codes) = read_until_ready(&mut s);
    assert_eq!(
        String::from_utf8(tags).unwrap(),
        "12DC1EZ",
        "parse, bind, row, complete; parse, then the refused bind's error; nothing more until ready"
    );
    assert_eq!(codes, vec!["42501"]);
    // A named statement prepared earlier does not change what a name runs.
    s.write_all(&[bind_msg("", "a"), execute_msg(""), sync_msg()].concat())
        .unwrap();
    let (tags, _) = read_until_ready(&mut s);
    assert_eq!(String::from_utf8(tags).unwrap(), "2DCZ");

    // A large statement is classified too (off the async worker), and a
    // large refused one is refused like a small one.
    let big = format!("SELECT length('{}')", "x".repeat(600_000));
    s.write_all(&query_msg(&big)).unwrap();
    let (tags, codes) = read_until_ready(&mut s);
    assert_eq!((tags, codes), (vec![b'T', b'D', b'C', b'Z'], vec![]));
    let big_drop = format!("DROP TABLE orders; -- {}", "x".repeat(600_000));
    s.write_all(&query_msg(&big_drop)).unwrap();
    assert_eq!(read_until_ready(&mut s).1, vec!["42501"]);
    assert_eq!(
        psql_ok(&direct(&target), "SELECT count(*) FROM orders").trim(),
        "100"
    );
}

#[test]
fn a_failed_prepare_cannot_smuggle_a_statement_under_a_harmless_name() {
    let target = PgServer::start(Auth::Scram, false);
    let gw = prod_gateway(&target);
    let token = agent_token(&gw, "prod");
    let mut s = raw_login(gw.pg_port, "alice", "prod", &token);
    // The first definition fails on the server (no such table), the second
    // succeeds under the same name: the gateway must judge by the second.
    let mut batch = parse_msg("x", "SELECT * FROM no_such_table");
    batch.extend(sync_msg());
    batch.extend(parse_msg("x", "DROP TABLE orders"));
    batch.extend(bind_msg("", "x"));
    batch.extend(execute_msg(""));
    batch.extend(sync_msg());
    s.write_all(&batch).unwrap();
    let (_, codes) = read_until_ready(&mut s);
    assert_eq!(codes, vec!["42P01"]);
    let (_, codes) = read_until_ready(&mut s);
    assert_eq!(codes, vec!["42501"], "the DROP is refused");
    // SQL-level PREPARE is decided by what it prepares: a refused one
    // defines nothing, so EXECUTE finds nothing to run.
    for sql in [
        "PREPARE y AS SELECT * FROM no_such_table",
        "PREPARE y AS DELETE FROM orders",
    ] {
        s.write_all(&query_msg(sql)).unwrap();
        read_until_ready(&mut s);
    }
    s.write_all(&query_msg("EXECUTE y")).unwrap();
    let (_, codes) = read_until_ready(&mut s);
    assert_eq!(codes, vec!["26000"]);
    assert_eq!(
        psql_ok(&direct(&target), "SELECT count(*) FROM orders").trim(),
        "100"
    );
}

#[test]
fn shadow_mode_and_unrestricted_connections_record_without_blocking() {
    let target = PgServer::start(Auth::Scram, false);
    let gw = prod_gateway(&target);
    psql_ok(
        &direct(&target),
        "CREATE TABLE scratch1 (id int); CREATE TABLE scratch2 (id int)",
    );

    let trial = agent_token(&gw, "trial");
    psql_ok(
        &gw.conninfo("trial", "alice", &trial),
        "DROP TABLE scratch1",
    );
    let (ev, _) = command_event(&gw, "DROP TABLE scratch1");
    assert_eq!(ev["data"]["decision"]["effect"], "allow");
    assert_eq!(ev["data"]["decision"]["shadow"]["effect"], "block", "{ev}");
    assert_eq!(
        ev["data"]["decision"]["shadow"]["policies"][0],
        "prod-block-risky"
    );

    let dev = agent_token(&gw, "dev");
    psql_ok(&gw.conninfo("dev", "alice", &dev), "DROP TABLE scratch2");
    assert_eq!(
        psql_ok(
            &direct(&target),
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'scratch%'"
        )
        .trim(),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_in_extended_mode_gets_refusals_as_database_errors() {
    let target = PgServer::start(Auth::Scram, false);
    let gw = prod_gateway(&target);
    let token = agent_token(&gw, "prod");
    let mut client = agent_client(&gw, &token).await;
    let delete = client
        .prepare("DELETE FROM orders WHERE id = $1")
        .await
        .unwrap();
    let err = client.execute(&delete, &[&1i32]).await.unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.message().contains("needs a human review"),
        "{}",
        db.message()
    );
    let rows = client
        .query("SELECT count(*) FROM orders WHERE id > $1", &[&0i32])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 100);

    let tx = client.transaction().await.unwrap();
    tx.query("SELECT 1", &[]).await.unwrap();
    assert!(tx.batch_execute("DROP TABLE orders").await.is_err());
    let aborted = tx.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(aborted.code().map(|c| c.code()), Some("25P02"));
    drop(tx);
    let rows = client
        .query("SELECT count(*) FROM orders", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 100);
}

#[test]
fn policies_are_files_validated_at_start_and_reloaded_without_a_restart() {
    let target = PgServer::start(Auth::Scram, false);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("team.cedar");
    let allow_all = "@id(\"everything\") permit (principal, action, resource);\n";
    std::fs::write(&file, allow_all).unwrap();
    let gw = Gateway::start(
        "",
        "allow_plaintext_loopback = true",
        &format!(
            "[policy]\nfiles = [{:?}]\n[policy.groups]\nreaders = [\"agent:reader\"]\n\n{}",
            file.to_str().unwrap(),
            connection_toml("prod", &target, "prefer", "env = \"prod\"")
        ),
    );
    let token = agent_token(&gw, "prod");
    let info = gw.conninfo("prod", "alice", &token);
    psql_ok(&info, "CREATE TABLE t1 (id int)");

    // A stricter policy, reloaded through the API.
    std::fs::write(
        &file,
        "@id(\"reads\") permit (principal, action in [Sluice::Action::\"read\", Sluice::Action::\"connect\"], resource);\n\
         @id(\"no-orders-for-agents\") @reason(\"agents may not read orders\")\n\
         forbid (principal is Sluice::Agent, action, resource) when { context.tables.contains(\"orders\") };\n",
    )
    .unwrap();
    let out = gw.cli_ok(&["policy", "reload"]);
    assert!(out.contains("policies reloaded: 2"), "{out}");
    let err = stderr(&psql(&info, "CREATE TABLE t2 (id int)"));
    assert!(err.contains("no policy permits \"ddl\""), "{err}");
    let err = stderr(&psql(&info, "SELECT * FROM orders"));
    assert!(err.contains("agents may not read orders"), "{err}");
    assert_eq!(psql_ok(&info, "SELECT 7").trim(), "7");

    // An invalid policy is refused, and the previous ones stay in force.
    std::fs::write(
        &file,
        "permit (principal, action == Sluice::Action::\"drop\", resource);",
    )
    .unwrap();
    let out = gw.cli(&["policy", "reload"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("previous ones stay in force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(psql_ok(&info, "SELECT 8").trim(), "8");

    // SIGHUP reloads too.
    std::fs::write(&file, allow_all).unwrap();
    gw.signal("HUP");
    assert!(eventually(Duration::from_secs(10), || psql(
        &info,
        "CREATE TABLE t3 (id int)"
    )
    .status
    .success()));

    // And a gateway does not start on an invalid policy.
    std::fs::write(
        &file,
        "permit (principal, action, resource) when { context.nope };",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["gateway", "--config", gw.config.to_str().unwrap()])
        .env("SLUICE_TEST_TARGET_PASSWORD", TARGET_PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid policy"), "{}", stderr(&out));
}

#[test]
fn policy_check_and_policy_test_decide_as_the_gateway_does() {
    let target = PgServer::start(Auth::Scram, false);
    let gw = prod_gateway(&target);
    let out = gw.cli_ok(&[
        "policy",
        "check",
        "--connection",
        "prod",
        "--principal",
        "alice",
        "--actor",
        "agent:x",
        "SELECT 1; DROP TABLE orders",
    ]);
    assert!(out.contains("class:      destructive"), "{out}");
    assert!(out.contains("decision:   block"), "{out}");
    assert!(out.contains("prod-block-risky"), "{out}");
    let json = gw.cli_json(&[
        "policy",
        "check",
        "--connection",
        "prod",
        "--principal",
        "alice",
        "UPDATE orders SET qty = 0 WHERE id = 3",
    ]);
    assert_eq!(json["decision"]["effect"], "review");
    assert_eq!(json["class"], "write");
    assert_eq!(json["flags"]["has_where"], true);
    assert_eq!(json["flags"]["multi_statement"], false);

    let cases = gw.dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        r#"
[[case]]
connection = "prod"
principal = "alice"
sql = "SELECT * FROM orders"
expect = "allow"

[[case]]
connection = "dev"
principal = "alice"
actor = "agent:x"
sql = "DROP TABLE orders"
expect = "allow"

[[case]]
connection = "prod"
principal = "alice"
sql = "DELETE FROM orders WHERE id = 1"
expect = "allow"
"#,
    )
    .unwrap();
    let out = gw.cli(&["policy", "test", cases.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "one case is wrong");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL case 3: expected allow, got review"),
        "{text}"
    );
    assert!(text.contains("3 cases, 2 passed, 1 failed"), "{text}");
}

#[test]
fn a_forbidden_connect_is_refused_at_login() {
    let target = PgServer::start(Auth::Scram, false);
    let (gw, _dir) = prod_gateway_with_policy(
        &target,
        "permit (principal, action, resource);\n\
         @id(\"no-agents-on-prod\") @reason(\"agents do not connect to production\")\n\
         forbid (principal is Sluice::Agent, action == Sluice::Action::\"connect\", resource)\n\
         when { resource.hasTag(\"env\") && resource.getTag(\"env\") == \"prod\" };\n",
    );
    let token = agent_token(&gw, "prod");
    let out = psql(&gw.conninfo("prod", "alice", &token), "SELECT 1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("agents do not connect to production"),
        "{}",
        stderr(&out)
    );
    let human = gw.token("bob", "prod", "5m");
    assert_eq!(
        psql_ok(&gw.conninfo("prod", "bob", &human), "SELECT 1").trim(),
        "1"
    );
}

#[path = "../crates/sluice-pg/tests/sqlgen/mod.rs"]
mod sqlgen;

/// The read class is a promise: a statement classified as a read is run on
/// a real server in a read-only transaction, which refuses any write with
/// SQLSTATE 25006. None may be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_classified_as_reads_never_write_on_a_real_server() {
    let target = PgServer::start(Auth::Scram, false);
    let classifier = sluice_pg::classify::Classifier::new(Default::default());
    let mut gen = sqlgen::Generator::new(include_str!("../crates/sluice-pg/tests/corpus.toml"));
    let connect = || async {
        let (client, conn) = tokio_postgres::connect(&direct(&target), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("SET statement_timeout = '1s'; CREATE SEQUENCE IF NOT EXISTS s")
            .await
            .unwrap();
        client
    };
    let mut client = connect().await;
    let (mut checked, mut tried) = (0, 0);
    while checked < 300 && tried < 50_000 {
        tried += 1;
        let sql = gen.next();
        let c = classifier.classify(&sql, false).resolve(|_| None);
        // COPY streams need a COPY-aware client; the parser test covers them.
        if c.class() != sluice_core::Class::Read || sql.to_ascii_lowercase().contains("copy") {
            continue;
        }
        checked += 1;
        if client.is_closed() {
            client = connect().await;
        }
        let _ = client.batch_execute("BEGIN READ ONLY").await;
        if let Err(e) = client.simple_query(&sql).await {
            assert_ne!(
                e.code().map(|c| c.code()),
                Some("25006"),
                "classified read, but the server refused it as a write: {sql:?}"
            );
        }
        let _ = client.batch_execute("ROLLBACK").await;
    }
    assert!(checked >= 300, "only {checked} reads in {tried} inputs");
    let client = connect().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100);
}

fn tags_codes(s: &mut std::net::TcpStream) -> (String, Vec<String>) {
    let (tags, codes) = read_until_ready(s);
    (String::from_utf8(tags).unwrap(), codes)
}

/// What a name runs is what the server holds under it, also after errors
/// made the server skip messages the gateway saw.
#[test]
fn statements_and_portals_are_tracked_as_the_server_has_them() {
    let target = PgServer::start(Auth::Scram, false);
    let gw = prod_gateway(&target);
    let token = agent_token(&gw, "prod");
    let orders = || {
        psql_ok(&direct(&target), "SELECT count(*) FROM orders")
            .trim()
            .to_string()
    };
    let mut s = raw_login(gw.pg_port, "alice", "prod", &token);

    // A Parse skipped after an error leaves the earlier unnamed statement.
    let mut b = parse_msg("", "DELETE FROM orders");
    b.extend(bind_msg("", ""));
    b.extend(execute_msg(""));
    b.extend(parse_msg("", "SELECT 1"));
    b.extend(sync_msg());
    b.extend(bind_msg("", ""));
    b.extend(execute_msg(""));
    b.extend(sync_msg());
    s.write_all(&b).unwrap();
    assert_eq!(tags_codes(&mut s).1, vec!["42501"]);
    let (tags, codes) = tags_codes(&mut s);
    assert_eq!(
        (tags.as_str(), codes),
        ("EZ", vec!["42501".to_string()]),
        "the DELETE is still refused (at its Bind)"
    );

    // Binding a refused statement is refused (a bound portal could be run
    // by SQL FETCH as well as by Execute), and the portal's name then runs
    // nothing the gateway would guess at.
    s.write_all(&query_msg("BEGIN")).unwrap();
    tags_codes(&mut s);
    s.write_all(
        &[
            parse_msg("d", "DELETE FROM orders"),
            bind_msg("p", "d"),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(
        tags_codes(&mut s),
        ("1EZ".to_string(), vec!["42501".into()])
    );
    s.write_all(&query_msg("ROLLBACK")).unwrap();
    tags_codes(&mut s);
    s.write_all(&[execute_msg("p"), sync_msg()].concat())
        .unwrap();
    assert_eq!(tags_codes(&mut s).1, vec!["42501"], "portal p is unknown");

    // A Query the server discards after an error (before Sync) gets no
    // answer; the pairing holds, and no stand-in's name reaches the client.
    let mut b = parse_msg("", "SELECT * FROM no_such_table");
    b.extend(query_msg("SELECT 1"));
    b.extend(sync_msg());
    s.write_all(&b).unwrap();
    assert_eq!(tags_codes(&mut s).1, vec!["42P01"]);
    s.write_all(
        &[
            parse_msg("", "TRUNCATE orders"),
            bind_msg("", ""),
            execute_msg(""),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    let (tags, codes) = tags_codes(&mut s);
    assert_eq!((tags.as_str(), codes), ("1EZ", vec!["42501".to_string()]));
    s.write_all(&query_msg("SELECT 2")).unwrap();
    assert_eq!(tags_codes(&mut s).0, "TDCZ");

    // EXECUTE inside a Parse runs what the name holds when it runs.
    s.write_all(&query_msg("PREPARE q AS SELECT 1")).unwrap();
    tags_codes(&mut s);
    s.write_all(&[parse_msg("x", "EXECUTE q"), sync_msg()].concat())
        .unwrap();
    tags_codes(&mut s);
    s.write_all(&query_msg("DEALLOCATE q")).unwrap();
    tags_codes(&mut s);
    s.write_all(&[parse_msg("q", "DELETE FROM orders"), sync_msg()].concat())
        .unwrap();
    tags_codes(&mut s);
    s.write_all(&[bind_msg("", "x"), execute_msg(""), sync_msg()].concat())
        .unwrap();
    assert_eq!(tags_codes(&mut s).1, vec!["42501"]);

    // CREATE TABLE AS EXECUTE runs the prepared statement.
    s.write_all(&query_msg(
        "PREPARE w AS WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
    ))
    .unwrap();
    assert_eq!(tags_codes(&mut s).1, vec!["42501"], "refused when prepared");
    assert_eq!(orders(), "100");
}

/// Reads backend messages up to ReadyForQuery or until the gateway closes
/// the connection; returns the tags, the SQLSTATEs of errors, and whether
/// it closed.
fn read_until_ready_or_closed(s: &mut std::net::TcpStream) -> (String, Vec<String>, bool) {
    use std::io::Read;
    let mut tags = String::new();
    let mut codes = vec![];
    loop {
        let mut head = [0u8; 5];
        if s.read_exact(&mut head).is_err() {
            return (tags, codes, true);
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        if s.read_exact(&mut body).is_err() {
            return (tags, codes, true);
        }
        tags.push(head[0] as char);
        if head[0] == b'E' {
            codes.extend(error_code(&body));
        }
        if head[0] == b'Z' {
            return (tags, codes, false);
        }
    }
}

/// A session whose answers no longer fit what was sent is closed rather
/// than guessed at: the gateway never judges one statement while the server
/// runs another. Sequences that used to desynchronise the pairing.
#[test]
fn answers_that_do_not_fit_close_the_session_instead_of_being_guessed() {
    let target = PgServer::start(Auth::Scram, false);
    let (gw, _dir) = prod_gateway_with_policy(
        &target,
        "@id(\"all\") permit (principal, action, resource);\n\
         @id(\"no-destruction\") @reason(\"destructive statements are blocked\")\n\
         forbid (principal, action in [Sluice::Action::\"destructive\", Sluice::Action::\"admin\", Sluice::Action::\"unknown\"], resource);\n",
    );
    let token = agent_token(&gw, "prod");
    let orders = || {
        psql_ok(&direct(&target), "SELECT count(*) FROM orders")
            .trim()
            .to_string()
    };
    let delete = [
        parse_msg("", "DELETE FROM orders"),
        sync_msg(),
        sync_msg(),
        bind_msg("", ""),
        execute_msg(""),
        sync_msg(),
    ]
    .concat();
    // Whatever the gateway does, the DELETE must not run: refused, or the
    // session closed with 08P01 before it.
    let delete_is_stopped = |s: &mut std::net::TcpStream, what: &str| {
        let _ = s.write_all(&delete);
        let mut seen = vec![];
        for _ in 0..3 {
            let (tags, codes, closed) = read_until_ready_or_closed(s);
            assert!(!tags.contains('C'), "{what}: the DELETE ran ({tags})");
            seen.extend(codes);
            if closed {
                break;
            }
        }
        assert!(
            seen.iter().any(|c| c == "42501" || c == "08P01"),
            "{what}: {seen:?}"
        );
        assert_eq!(orders(), "100", "{what}");
    };

    // A Describe that fails makes the server skip to Sync: it is paired.
    let mut s = raw_login(gw.pg_port, "alice", "prod", &token);
    s.write_all(&[parse_msg("", "SELECT 1"), sync_msg()].concat())
        .unwrap();
    assert_eq!(tags_codes(&mut s).0, "1Z");
    s.write_all(
        &[
            frontend_msg(b'D', b"Snope\0"),
            query_msg("SELECT 2"),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(tags_codes(&mut s), ("EZ".to_string(), vec!["26000".into()]));
    s.write_all(
        &[
            parse_msg("", "SELECT 3"),
            frontend_msg(b'D', b"S\0"),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(tags_codes(&mut s).0, "1tTZ", "a Describe answered in full");
    delete_is_stopped(&mut s, "after a failed Describe");

    // A batch that starts with a Describe first learns which of the last
    // batch's changes the server refused.
    s = raw_login(gw.pg_port, "alice", "prod", &token);
    s.write_all(
        &[
            parse_msg("s1", "DELETE FROM orders"),
            parse_msg("s1", "SELECT 1"),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(
        tags_codes(&mut s),
        ("1EZ".to_string(), vec!["42P05".into()])
    );
    s.write_all(
        &[
            frontend_msg(b'D', b"Ss1\0"),
            bind_msg("", "s1"),
            execute_msg(""),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(
        tags_codes(&mut s),
        ("tnEZ".to_string(), vec!["42501".into()]),
        "s1 is still the DELETE on the server"
    );
    assert_eq!(orders(), "100");

    // A SQL cursor shares the portals' names: executing it through the
    // protocol is judged (and recorded) as the cursor's statement.
    s.write_all(&[parse_msg("", "SELECT 1"), bind_msg("p1", ""), sync_msg()].concat())
        .unwrap();
    assert_eq!(tags_codes(&mut s).0, "12Z");
    s.write_all(&query_msg(
        "DECLARE p1 CURSOR WITH HOLD FOR SELECT item FROM orders ORDER BY id",
    ))
    .unwrap();
    assert_eq!(tags_codes(&mut s).0, "CZ");
    s.write_all(&[execute_msg("p1"), sync_msg()].concat())
        .unwrap();
    assert_eq!(tags_codes(&mut s).0.matches('D').count(), 100);
    assert!(
        eventually(Duration::from_secs(10), || command_events(&gw, "alice")
            .iter()
            .any(|c| c["path"] == "extended"
                && c["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains("DECLARE p1 CURSOR"))),
        "the Execute of p1 is recorded as the cursor's statement"
    );

    // A bound portal can be run by SQL FETCH/MOVE as well as by Execute:
    // the Bind is judged, and FETCH from a portal is judged as what it holds.
    s.write_all(
        &[
            parse_msg("", "DELETE FROM orders RETURNING id"),
            bind_msg("pd", ""),
            query_msg("MOVE ALL IN pd"),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(
        tags_codes(&mut s),
        ("1EZ".to_string(), vec!["42501".into()]),
        "refused at the Bind; the server skips the MOVE"
    );
    s.write_all(&query_msg("FETCH ALL FROM pd")).unwrap();
    assert_eq!(
        tags_codes(&mut s).1,
        vec!["42501"],
        "a portal the session never opened runs something unknown"
    );
    assert_eq!(orders(), "100");

    // COPY FROM STDIN: a data error with Syncs sent inside the copy cannot
    // be paired (the server ignores those it reads in copy mode).
    s = raw_login(gw.pg_port, "alice", "prod", &token);
    s.write_all(&query_msg("COPY orders (item, qty) FROM STDIN"))
        .unwrap();
    assert_eq!(read_msg(&mut s).0, b'G');
    s.write_all(
        &[
            frontend_msg(b'd', b"bad\n"),
            sync_msg(),
            frontend_msg(b'c', b""),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    delete_is_stopped(&mut s, "after a COPY error with Syncs inside");

    // Without Syncs inside, a COPY data error leaves a usable session, and
    // a COPY through the extended protocol works.
    s = raw_login(gw.pg_port, "alice", "prod", &token);
    s.write_all(&query_msg("COPY orders (item, qty) FROM STDIN"))
        .unwrap();
    assert_eq!(read_msg(&mut s).0, b'G');
    s.write_all(&[frontend_msg(b'd', b"bad\n"), frontend_msg(b'c', b"")].concat())
        .unwrap();
    let (tags, codes) = tags_codes(&mut s);
    assert_eq!((tags.as_str(), codes.len()), ("EZ", 1), "{codes:?}");
    s.write_all(
        &[
            parse_msg("", "COPY orders (item, qty) FROM STDIN"),
            bind_msg("", ""),
            execute_msg(""),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(read_msg(&mut s).0, b'1');
    assert_eq!(read_msg(&mut s).0, b'2');
    assert_eq!(read_msg(&mut s).0, b'G');
    s.write_all(
        &[
            frontend_msg(b'd', b"copied\t1\n"),
            frontend_msg(b'c', b""),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(tags_codes(&mut s).0, "CZ");
    s.write_all(&query_msg("DELETE FROM orders WHERE item = 'copied'"))
        .unwrap();
    assert_eq!(tags_codes(&mut s).0, "CZ");
    delete_is_stopped(&mut s, "after COPY");

    // A COPY the client itself fails (CopyFail) through the extended
    // protocol ends in an error, and the session goes on: the gateway marks
    // the CopyFail, so the error is known to come from it.
    s = raw_login(gw.pg_port, "alice", "prod", &token);
    s.write_all(
        &[
            parse_msg("", "COPY orders (item, qty) FROM STDIN"),
            bind_msg("", ""),
            execute_msg(""),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(read_msg(&mut s).0, b'1');
    assert_eq!(read_msg(&mut s).0, b'2');
    assert_eq!(read_msg(&mut s).0, b'G');
    s.write_all(
        &[
            frontend_msg(b'd', b"x\t1\n"),
            frontend_msg(b'f', b"client gave up\0"),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    let (tag, body) = read_msg(&mut s);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(tag, b'E', "{text}");
    assert!(
        text.contains("client gave up") && !text.contains("sluice-copyfail"),
        "{text}"
    );
    assert_eq!(read_msg(&mut s).0, b'Z');
    delete_is_stopped(&mut s, "after a failed COPY");

    // An error too large to inspect is paired by its SQLSTATE; its text
    // (which echoes the value) is withheld.
    s = raw_login(gw.pg_port, "alice", "prod", &token);
    s.write_all(&query_msg("SELECT repeat('x', 17 * 1024 * 1024)::int"))
        .unwrap();
    assert_eq!(
        tags_codes(&mut s),
        ("EZ".to_string(), vec!["22P02".to_string()])
    );
    delete_is_stopped(&mut s, "after a huge error");

    // Bookkeeping for an unsynced batch is bounded.
    s = raw_login(gw.pg_port, "alice", "prod", &token);
    let text = format!("SELECT 1 -- {}", "n".repeat(1 << 20));
    // The 64th crosses the 64 MiB bound; nothing is sent after it, so the
    // gateway's close does not reset the connection before the error is read.
    for i in 0..64 {
        s.write_all(&parse_msg(&format!("n{i}"), &text)).unwrap();
    }
    let (_, codes, closed) = read_until_ready_or_closed(&mut s);
    assert!(
        closed && codes.last().map(String::as_str) == Some("08P01"),
        "{codes:?}"
    );

    // The gateway keeps serving.
    let info = gw.conninfo("prod", "alice", &token);
    assert_eq!(psql_ok(&info, "SELECT count(*) FROM orders").trim(), "100");
}

/// Names are followed as the server follows them: it keeps 63 bytes of a
/// name, and a statement that executes another runs what that one is now.
#[test]
fn long_names_and_nested_executes_are_followed_as_the_server_does() {
    let target = PgServer::start(Auth::Scram, false);
    let (gw, _dir) = prod_gateway_with_policy(
        &target,
        "@id(\"all\") permit (principal, action, resource);\n\
         @id(\"no-writes\") @reason(\"writes are blocked\")\n\
         forbid (principal, action in [Sluice::Action::\"write\", Sluice::Action::\"destructive\", Sluice::Action::\"unknown\"], resource);\n",
    );
    let token = agent_token(&gw, "prod");
    let orders = || {
        psql_ok(&direct(&target), "SELECT count(*) FROM orders")
            .trim()
            .to_string()
    };
    let run = |s: &mut std::net::TcpStream, msgs: Vec<Vec<u8>>| -> Vec<String> {
        s.write_all(&msgs.concat()).unwrap();
        read_until_ready(s).1
    };

    // Two names equal in their first 63 bytes are one name on the server.
    let long = |c: char| format!("{}{c}", "a".repeat(63));
    let mut s = raw_login(gw.pg_port, "alice", "prod", &token);
    assert!(run(&mut s, vec![parse_msg(&long('1'), "SELECT 1"), sync_msg()]).is_empty());
    run(
        &mut s,
        vec![
            frontend_msg(
                b'C',
                &[b"S".as_slice(), long('2').as_bytes(), b"\0"].concat(),
            ),
            parse_msg(&long('2'), "DELETE FROM orders WHERE id > 0"),
            sync_msg(),
        ],
    );
    let codes = run(
        &mut s,
        vec![bind_msg("", &long('1')), execute_msg(""), sync_msg()],
    );
    assert_eq!(codes, vec!["42501"], "the DELETE is judged, not SELECT 1");
    assert_eq!(orders(), "100");

    // EXECUTE s, where s runs EXECUTE q and q was redefined since.
    let mut s = raw_login(gw.pg_port, "alice", "prod", &token);
    run(
        &mut s,
        vec![
            parse_msg("q", "SELECT 1"),
            parse_msg("s", "EXECUTE q"),
            sync_msg(),
        ],
    );
    run(
        &mut s,
        vec![
            frontend_msg(b'C', b"Sq\0"),
            parse_msg("q", "DELETE FROM orders WHERE id > 0"),
            sync_msg(),
        ],
    );
    s.write_all(&query_msg("EXECUTE s")).unwrap();
    let (_, codes) = read_until_ready(&mut s);
    assert_eq!(codes, vec!["42501"]);
    assert_eq!(orders(), "100");

    // FETCH from a portal that runs EXECUTE p, p redefined since the Bind.
    let mut s = raw_login(gw.pg_port, "alice", "prod", &token);
    s.write_all(&query_msg("BEGIN")).unwrap();
    read_until_ready(&mut s);
    run(
        &mut s,
        vec![
            parse_msg("p", "SELECT 1"),
            parse_msg("t", "EXECUTE p"),
            bind_msg("P", "t"),
            sync_msg(),
        ],
    );
    run(
        &mut s,
        vec![
            frontend_msg(b'C', b"Sp\0"),
            parse_msg("p", "DELETE FROM orders WHERE id > 0 RETURNING id"),
            sync_msg(),
        ],
    );
    s.write_all(&query_msg("FETCH ALL FROM \"P\"")).unwrap();
    let (_, codes) = read_until_ready(&mut s);
    assert_eq!(codes, vec!["42501"]);
    s.write_all(&query_msg("COMMIT")).unwrap();
    read_until_ready(&mut s);
    assert_eq!(orders(), "100");
}

/// What names hold is followed once per name, however often a statement
/// names it, so a statement cannot make the gateway do unbounded work; and
/// a non-ASCII name the server may shorten differently is unknown.
#[test]
fn names_cost_what_they_hold_once_and_ambiguous_names_are_unknown() {
    let target = PgServer::start(Auth::Scram, false);
    let gw = prod_gateway(&target);
    let token = agent_token(&gw, "dev");
    let mut s = raw_login(gw.pg_port, "alice", "dev", &token);
    let big = format!("SELECT 1 /* {} */", "x".repeat(1 << 20));
    s.write_all(&[parse_msg("p", &big), sync_msg()].concat())
        .unwrap();
    read_until_ready(&mut s);
    s.write_all(&query_msg(&"EXECUTE p;".repeat(4000))).unwrap();
    let (_, codes) = read_until_ready(&mut s);
    assert!(codes.is_empty(), "{codes:?}");
    // Each name runs the one before it eight times over.
    let mut batch = vec![parse_msg("q0", "SELECT 1")];
    for n in 1..8 {
        batch.push(parse_msg(
            &format!("q{n}"),
            &format!("EXECUTE q{};", n - 1).repeat(8),
        ));
    }
    batch.extend([bind_msg("", "q7"), execute_msg(""), sync_msg()]);
    s.write_all(&batch.concat()).unwrap();
    read_until_ready(&mut s);
    s.write_all(&query_msg("SELECT 1")).unwrap();
    assert!(
        read_until_ready(&mut s).1.is_empty(),
        "the session still serves"
    );

    // With client_encoding LATIN1, the server reads each byte of "é" as a
    // character: the name doubles in length and is cut where the gateway
    // cannot tell.
    let token = agent_token(&gw, "prod");
    let mut s = raw_login(gw.pg_port, "alice", "prod", &token);
    s.write_all(&query_msg("SET client_encoding TO 'LATIN1'"))
        .unwrap();
    read_until_ready(&mut s);
    let name = "é".repeat(16);
    s.write_all(&query_msg(&format!(
        "PREPARE \"{name}one\"(int) AS SELECT $1"
    )))
    .unwrap();
    let (_, codes) = read_until_ready(&mut s);
    assert_eq!(
        codes,
        vec!["42501"],
        "an ambiguous name is unknown, blocked on prod"
    );
}
