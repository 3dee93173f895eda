//! The PostgreSQL path end to end with real servers and `psql`/`pgbench`.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn psql_through_scram_tls_target_is_recorded_and_never_sees_the_credential() {
    let target = PgServer::start(Auth::Scram, true);
    let gw = Gateway::start(
        "",
        "",
        &connection_toml("shop", &target, "verify-full", "env = \"dev\""),
    );
    let token = gw.token("ci-bot", "shop", "10m");
    assert!(token.starts_with("slc_"), "{token}");
    let info = gw.conninfo("shop", "ci-bot", &token);

    let out = psql_ok(&info, "SELECT count(*), current_user FROM orders");
    assert_eq!(
        out.trim(),
        "100|app",
        "the gateway logs in as the target user"
    );
    let failed = psql(&info, "SELECT * FROM no_such_table");
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("no_such_table"),
        "{}",
        stderr(&failed)
    );
    // The gateway holds the session's TLS itself: the target saw TLS from the gateway.
    let ssl = psql_ok(
        &info,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert_eq!(ssl.trim(), "t");

    let show = gw.last_session("ci-bot");
    assert_eq!(
        commands(&show),
        vec!["SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"]
    );
    let sessions = gw.cli_json(&[
        "sessions",
        "list",
        "--principal",
        "ci-bot",
        "--connection",
        "shop",
    ]);
    assert_eq!(sessions.as_array().unwrap().len(), 3);
    let all: Vec<serde_json::Value> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| gw.cli_json(&["sessions", "show", s["id"].as_str().unwrap()]))
        .collect();
    let failed_session = all
        .iter()
        .find(|s| commands(s) == vec!["SELECT * FROM no_such_table"])
        .unwrap();
    let result = outcome_of(failed_session, "SELECT * FROM no_such_table");
    assert_eq!(result["error_code"], "42P01");
    assert_eq!(result["status"], "error");
    assert_eq!(failed_session["session"]["outcome"], "client terminated");
    let ok_session = all
        .iter()
        .find(|s| commands(s)[0].starts_with("SELECT count(*)"))
        .unwrap();
    let result = outcome_of(ok_session, "SELECT count(*), current_user FROM orders");
    assert_eq!(result["rows"], 1);
    assert_eq!(result["status"], "ok");

    let verify = gw.cli_json(&["audit", "verify"]);
    assert_eq!(verify["ok"], true, "{verify}");

    // Human-readable forms work too.
    let text = gw.cli_ok(&["sessions", "show", sessions[0]["id"].as_str().unwrap()]);
    assert!(text.contains("principal   ci-bot"), "{text}");
    assert!(gw.cli_ok(&["audit", "verify"]).contains("intact"));

    // The target credential appears nowhere the gateway writes.
    let mut seen = vec![gw.log_text()];
    for entry in walk(&gw.dir.path().join("data")) {
        seen.push(String::from_utf8_lossy(&std::fs::read(entry).unwrap()).to_string());
    }
    seen.push(gw.cli_ok(&["token", "list", "--all", "--json"]));
    seen.push(gw.cli_ok(&["connections", "list", "--json"]));
    for (i, text) in seen.iter().enumerate() {
        assert!(
            !text.contains(TARGET_PASSWORD),
            "target password leaked in item {i}"
        );
        assert!(!text.contains(&token), "token value leaked in item {i}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn md5_and_cleartext_password_targets_without_tls() {
    let md5 = PgServer::start(Auth::Md5, false);
    let clear = PgServer::start(Auth::Password, false);
    let conns = connection_toml("md5db", &md5, "disable", "env = \"dev\"")
        + &connection_toml("cleardb", &clear, "prefer", "env = \"dev\"")
            .replace("tags =", "allow_cleartext_password = true\ntags =")
        + &connection_toml("cleartext-refused", &clear, "prefer", "");
    let gw = Gateway::start("", "", &conns);
    let t = gw.cli_ok(&[
        "token",
        "issue",
        "--principal",
        "dev",
        "--connection",
        "md5db",
        "--connection",
        "cleardb",
        "--ttl",
        "5m",
    ]);
    let t = t.trim();
    for db in ["md5db", "cleardb"] {
        let out = psql_ok(&gw.conninfo(db, "dev", t), "SELECT sum(qty) FROM orders");
        assert_eq!(out.trim(), "5050", "{db}");
    }
    // Without the opt-in, a target asking for the cleartext password over
    // an unverified channel gets nothing.
    let t = gw.token("dev", "cleartext-refused", "5m");
    let out = psql(&gw.conninfo("cleartext-refused", "dev", &t), "SELECT 1");
    assert!(
        stderr(&out).contains("target is unavailable"),
        "{}",
        stderr(&out)
    );
    assert!(gw
        .log_text()
        .contains("asked for the password in cleartext"));
    // tls = require toward a server without TLS is refused, not downgraded.
    let conns = connection_toml("strict", &md5, "require", "");
    let gw2 = Gateway::start("", "", &conns);
    let t = gw2.token("dev", "strict", "5m");
    let out = psql(&gw2.conninfo("strict", "dev", &t), "SELECT 1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("target is unavailable"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(TARGET_PASSWORD));
}

#[test]
fn refusals_are_readable_and_the_gateway_keeps_serving() {
    let target = PgServer::start(Auth::Scram, false);
    let conns = connection_toml("shop", &target, "prefer", "env = \"dev\"")
        + &connection_toml("other", &target, "prefer", "env = \"dev\"");
    let gw = Gateway::start("", "", &conns);
    let good = gw.token("alice", "shop", "10m");

    let cases: Vec<(String, String, String, &str)> = {
        let expired = gw.token("alice", "shop", "1s");
        let revoked = gw.token("alice", "shop", "10m");
        let list = gw.cli_json(&["token", "list"]);
        let revoked_id = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["expires_at"].as_i64().unwrap() > sluice_now() + 300_000)
            .map(|t| t["id"].as_str().unwrap().to_string());
        // Revoke the newest 10-minute token (the one just issued).
        let newest = list.as_array().unwrap()[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let _ = revoked_id;
        gw.cli_ok(&["token", "revoke", &newest]);
        let other = gw.token("alice", "other", "10m");
        std::thread::sleep(Duration::from_millis(1500));
        vec![
            (
                "shop".into(),
                "alice".into(),
                "slc_0000000000000000000000000000000000000000000000ff".into(),
                "invalid token",
            ),
            (
                "shop".into(),
                "alice".into(),
                "not-even-a-token".into(),
                "invalid token",
            ),
            ("shop".into(), "alice".into(), expired, "token expired"),
            ("shop".into(), "alice".into(), revoked, "revoked"),
            (
                "shop".into(),
                "alice".into(),
                other,
                "not valid for connection \"shop\"",
            ),
            (
                "shop".into(),
                "mallory".into(),
                good.clone(),
                "connect with user=alice",
            ),
            (
                "nosuchdb".into(),
                "alice".into(),
                good.clone(),
                "not valid for connection \"nosuchdb\"",
            ),
        ]
    };
    for (db, user, token, expect) in &cases {
        let out = psql(&gw.conninfo(db, user, token), "SELECT 1");
        assert!(!out.status.success(), "{db}/{user} should be refused");
        assert!(
            stderr(&out).contains(expect),
            "expected {expect:?}, got {}",
            stderr(&out)
        );
    }

    // Plaintext is refused unless the listener allows it.
    let out = psql(
        &gw.conninfo("shop", "alice", &good)
            .replace("sslmode=require", "sslmode=disable"),
        "SELECT 1",
    );
    assert!(stderr(&out).contains("requires TLS"), "{}", stderr(&out));

    // A use-limited token works exactly that many times.
    let once = gw.cli_ok(&[
        "token",
        "issue",
        "--principal",
        "alice",
        "--connection",
        "shop",
        "--uses",
        "1",
    ]);
    let once = once.trim();
    psql_ok(&gw.conninfo("shop", "alice", once), "SELECT 1");
    let out = psql(&gw.conninfo("shop", "alice", once), "SELECT 1");
    assert!(stderr(&out).contains("no uses left"), "{}", stderr(&out));

    // Malformed startup packets get a protocol error or a close, never a crash.
    for garbage in [
        vec![0u8, 0, 0, 3],                                    // length too small
        vec![0x7f, 0xff, 0xff, 0xff],                          // absurd length
        vec![0, 0, 0, 8, 0x12, 0x34, 0x56, 0x78],              // unknown request code
        vec![0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'], // unterminated parameter
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.pg_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&garbage).unwrap();
        let mut reply = vec![];
        let _ = s.read_to_end(&mut reply);
        if let Some(&tag) = reply.first() {
            assert_eq!(tag, b'E', "a reply to garbage must be an ErrorResponse");
        }
    }
    // A client that connects and says nothing does not block others.
    let _idle = std::net::TcpStream::connect(("127.0.0.1", gw.pg_port)).unwrap();

    // Requests for GSSAPI encryption are declined the way the server does.
    let out = psql(
        &format!("{} gssencmode=prefer", gw.conninfo("shop", "alice", &good)),
        "SELECT 'still serving'",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "still serving",
        "{}",
        stderr(&out)
    );

    // No failed attempt opened a session; each was recorded as an event.
    let sessions = gw.cli_json(&["sessions", "list"]);
    assert_eq!(
        sessions.as_array().unwrap().len(),
        2,
        "only the two good logins opened sessions"
    );
    assert_eq!(gw.cli_json(&["audit", "verify"])["ok"], true);
}

fn sluice_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn pgbench_simple_extended_and_prepared_modes_are_recorded() {
    let target = PgServer::start(Auth::Scram, true);
    let gw = Gateway::start("", "", &connection_toml("bench", &target, "require", ""));
    let init = gw.token("setup", "bench", "10m");
    let out = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q"])
        .arg(gw.conninfo("bench", "setup", &init))
        .output()
        .unwrap();
    assert!(out.status.success(), "pgbench -i: {}", stderr(&out));
    for mode in ["simple", "extended", "prepared"] {
        let principal = format!("bench-{mode}");
        let t = gw.token(&principal, "bench", "10m");
        let out = Command::new("pgbench")
            .args(["-n", "-S", "-M", mode, "-c", "2", "-t", "25"])
            .arg(gw.conninfo("bench", &principal, &t))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "pgbench -M {mode}: {}", stderr(&out));
        assert!(
            text.contains("number of transactions actually processed: 50/50"),
            "{text}"
        );
        let mut selects = 0;
        let mut prepares = 0;
        let mut paths = std::collections::BTreeSet::new();
        for d in command_events(&gw, &principal) {
            if !d["text"]
                .as_str()
                .unwrap()
                .contains("SELECT abalance FROM pgbench_accounts")
            {
                continue;
            }
            if d["path"] == "prepare" {
                prepares += 1;
            } else {
                selects += 1;
                paths.insert(d["path"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(selects, 50, "every statement of -M {mode} is recorded");
        let expected_prepares = if mode == "prepared" { 2 } else { 0 };
        assert_eq!(
            prepares, expected_prepares,
            "named statements are recorded when prepared"
        );
        let expect = if mode == "simple" {
            "simple"
        } else {
            "extended"
        };
        assert_eq!(
            paths.into_iter().collect::<Vec<_>>(),
            vec![expect.to_string()]
        );
    }
    assert_eq!(gw.cli_json(&["audit", "verify"])["ok"], true);
}

#[test]
fn vanishing_clients_and_targets_do_not_disturb_other_sessions() {
    let stays = PgServer::start(Auth::Scram, false);
    let mut goes = PgServer::start(Auth::Scram, false);
    let conns = connection_toml("stays", &stays, "prefer", "")
        + &connection_toml("goes", &goes, "prefer", "");
    let gw = Gateway::start("", "allow_plaintext_loopback = true", &conns);
    let t = gw.cli_ok(&[
        "token",
        "issue",
        "--principal",
        "ops",
        "--connection",
        "stays",
        "--connection",
        "goes",
    ]);
    let t = t.trim().to_string();

    // A client killed in the middle of a query.
    let mut child = psql_command(&gw.conninfo("stays", "ops", &t), "SELECT pg_sleep(30)")
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || stays
        .admin_sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")
        .trim()
        == "1"));
    child.kill().unwrap();
    child.wait().unwrap();
    // The gateway lets go of the target session too.
    assert!(
        eventually(Duration::from_secs(10), || stays
            .admin_sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
            .trim()
            == "0"),
        "target backend left behind"
    );

    // A slow client that stops reading does not hold up anyone else.
    let mut stuck = raw_login(gw.pg_port, "ops", "stays", &t);
    stuck
        .write_all(&query_msg(
            "SELECT repeat('x', 100000) FROM generate_series(1, 2000)",
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        assert_eq!(
            psql_ok(&gw.conninfo("stays", "ops", &t), "SELECT 42").trim(),
            "42"
        );
    }

    // A target that goes away mid-session.
    let mut victim = raw_login(gw.pg_port, "ops", "goes", &t);
    goes.stop_now();
    victim.write_all(&query_msg("SELECT 1")).unwrap();
    let mut rest = vec![];
    let _ = victim.read_to_end(&mut rest);
    let out = psql(&gw.conninfo("goes", "ops", &t), "SELECT 1");
    assert!(
        stderr(&out).contains("target is unavailable"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        psql_ok(&gw.conninfo("stays", "ops", &t), "SELECT 'alive'").trim(),
        "alive"
    );
    drop(stuck);

    let sessions = gw.cli_json(&["sessions", "list", "--connection", "goes"]);
    let outcomes: Vec<String> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap().to_string())
        .collect();
    assert!(
        outcomes.iter().any(|o| o.starts_with("target unavailable")),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o.contains("target closed") || o.contains("target read error")),
        "{outcomes:?}"
    );
    let killed = gw.cli_json(&["sessions", "list", "--connection", "stays"]);
    assert!(killed
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["outcome"] == "client disconnected"
            || s["outcome"].as_str().unwrap().contains("client read error")));
}

#[test]
fn tampering_with_the_audit_log_is_detected() {
    let target = PgServer::start(Auth::Trust, false);
    let mut gw = Gateway::start(
        "audit_fsync = true",
        "",
        &connection_toml("shop", &target, "disable", ""),
    );
    let t = gw.token("auditor", "shop", "10m");
    for i in 0..3 {
        psql_ok(&gw.conninfo("shop", "auditor", &t), &format!("SELECT {i}"));
    }
    assert_eq!(gw.cli_json(&["audit", "verify"])["ok"], true);
    gw.stop();

    let db = rusqlite::Connection::open(gw.dir.path().join("data").join("sluice.db")).unwrap();
    // The database itself refuses edits...
    let refused = db.execute("UPDATE events SET data = '{}' WHERE seq = 5", []);
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    // ...and whoever drops the guard is caught by the chain.
    db.execute_batch("DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;")
        .unwrap();
    let seq: i64 = db
        .query_row(
            "SELECT seq FROM events WHERE kind = 'command' AND data LIKE '%SELECT 1%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        "UPDATE events SET data = replace(data, 'SELECT 1', 'SELECT 9') WHERE seq = ?1",
        [seq],
    )
    .unwrap();
    drop(db);
    let gw = restart(gw);
    let out = gw.cli(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("BROKEN at event {seq}")), "{text}");

    // Deleting events is caught as well.
    let db = rusqlite::Connection::open(gw.dir.path().join("data").join("sluice.db")).unwrap();
    db.execute("DELETE FROM events WHERE seq = 2", []).unwrap();
    drop(db);
    let report = gw.cli(&["audit", "verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_broken_seq"], 2);
}

/// Starts a new gateway process over the same config and data.
fn restart(mut old: Gateway) -> Gateway {
    old.stop();
    let config = old.config.clone();
    let log = old.log.clone();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["gateway", "--config", config.to_str().unwrap()])
        .env("SLUICE_TEST_TARGET_PASSWORD", TARGET_PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    Gateway::adopt(old, child)
}

#[test]
fn journaled_commands_survive_a_gateway_crash() {
    let target = PgServer::start(Auth::Trust, false);
    let mut gw = Gateway::start("", "", &connection_toml("shop", &target, "disable", ""));
    let t = gw.token("crashy", "shop", "10m");
    let script: String = (0..40).map(|i| format!("SELECT {i};\n")).collect();
    let mut child = Command::new("psql")
        .args(["-X", "-q", "-At", &gw.conninfo("shop", "crashy", &t)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    gw.kill(); // SIGKILL: no chance to finish ingesting
    let gw = restart(gw);
    let show = gw.last_session("crashy");
    let expected: Vec<String> = (0..40).map(|i| format!("SELECT {i};")).collect();
    assert_eq!(
        commands(&show),
        expected,
        "every command exactly once, in order"
    );
    assert_eq!(gw.cli_json(&["audit", "verify"])["ok"], true);
}

#[test]
fn a_redefined_prepared_statement_cannot_hide_what_runs() {
    let target = PgServer::start(Auth::Trust, false);
    let gw = Gateway::start(
        "",
        "allow_plaintext_loopback = true",
        &connection_toml("shop", &target, "disable", ""),
    );
    let t = gw.token("sneaky", "shop", "10m");
    let mut s = raw_login(gw.pg_port, "sneaky", "shop", &t);
    s.write_all(
        &[
            parse_msg("s1", "DELETE FROM orders WHERE id = 1"),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(read_until_ready(&mut s).1, Vec::<String>::new());
    // The server refuses to redefine s1 (42P05) and keeps the DELETE.
    s.write_all(&[parse_msg("s1", "SELECT 1"), sync_msg()].concat())
        .unwrap();
    assert_eq!(read_until_ready(&mut s).1, vec!["42P05".to_string()]);
    s.write_all(&[bind_msg("", "s1"), execute_msg(""), sync_msg()].concat())
        .unwrap();
    assert_eq!(read_until_ready(&mut s).1, Vec::<String>::new());
    drop(s);
    assert_eq!(
        target
            .admin_sql_db("shop", "SELECT count(*) FROM orders")
            .trim(),
        "99",
        "the DELETE ran"
    );

    let show = gw.last_session("sneaky");
    let executed: Vec<String> = show["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "command" && e["data"]["path"] == "extended")
        .map(|e| e["data"]["text"].as_str().unwrap().to_string())
        .collect();
    // The gateway follows the server's answer: the redefinition failed,
    // so s1 names the DELETE first; the failed definition stays on record
    // as the alternative the gateway also judged.
    assert_eq!(executed.len(), 1, "{executed:?}");
    assert!(
        executed[0].starts_with("DELETE FROM orders WHERE id = 1\n-- sluice: or, if")
            && executed[0].ends_with("\nSELECT 1"),
        "the log names what ran: {executed:?}"
    );
    let prepared: Vec<String> = show["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "command" && e["data"]["path"] == "prepare")
        .map(|e| e["data"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        prepared.len(),
        2,
        "both prepares are on record: {prepared:?}"
    );
}
