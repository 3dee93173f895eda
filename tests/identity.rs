//! Identity end to end: delegation from a person to an agent is never
//! wider or longer-lived than the delegator's own credential, is recorded
//! with both identities, and dies with the delegator's credential.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A client command run with someone's own credential.
fn cli_as(gw: &Gateway, credential: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(&gw.config)
        .args(args)
        .env_remove("SLUICE_URL")
        .env("SLUICE_TOKEN", credential)
        .output()
        .unwrap()
}

fn cli_as_json(gw: &Gateway, credential: &str, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = cli_as(gw, credential, &a);
    assert!(out.status.success(), "sluice {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn delegated_tokens_are_never_wider_or_longer_and_die_with_their_delegator() {
    let target = PgServer::start(Auth::Scram, false);
    let gw = Gateway::start(
        "",
        "",
        &(connection_toml("shop", &target, "prefer", "env = \"dev\"")
            + &connection_toml("other", &target, "prefer", "env = \"dev\"")),
    );
    // Alice's own credential: the shop connection, for two minutes.
    let issued = gw.cli_json(&[
        "token",
        "issue",
        "--api",
        "--principal",
        "alice",
        "--connection",
        "shop",
        "--ttl",
        "2m",
    ]);
    let alice = issued["token"].as_str().unwrap().to_string();
    let alice_id = issued["record"]["id"].as_str().unwrap().to_string();
    let alice_expiry = issued["record"]["expires_at"].as_i64().unwrap();

    // Asking for an hour gets at most what alice has left.
    let d = cli_as_json(
        &gw,
        &alice,
        &[
            "token",
            "delegate",
            "--actor",
            "agent:claude",
            "--connection",
            "shop",
            "--ttl",
            "1h",
        ],
    );
    let agent = d["token"].as_str().unwrap().to_string();
    assert!(d["record"]["expires_at"].as_i64().unwrap() <= alice_expiry);
    assert_eq!(d["record"]["principal"], "alice");
    assert_eq!(d["record"]["actor"], "agent:claude");

    // Not a connection alice does not hold; not by the agent itself.
    let wider = cli_as(
        &gw,
        &alice,
        &[
            "token",
            "delegate",
            "--actor",
            "agent:claude",
            "--connection",
            "other",
        ],
    );
    assert!(!wider.status.success());
    assert!(
        stderr(&wider).contains("does not hold connection \"other\""),
        "{}",
        stderr(&wider)
    );
    let again = cli_as(
        &gw,
        &agent,
        &[
            "token",
            "delegate",
            "--actor",
            "agent:sub",
            "--connection",
            "shop",
        ],
    );
    assert!(
        stderr(&again).contains("cannot delegate further"),
        "{}",
        stderr(&again)
    );
    let admin = gw.cli(&[
        "token",
        "delegate",
        "--actor",
        "agent:x",
        "--connection",
        "shop",
    ]);
    assert!(!admin.status.success());

    // The agent works, and its session shows both identities.
    let info = gw.conninfo("shop", "alice", &agent);
    assert_eq!(psql_ok(&info, "SELECT count(*) FROM orders").trim(), "100");
    let sessions = gw.cli_json(&["sessions", "list", "--principal", "alice"]);
    assert_eq!(sessions[0]["actor"], "agent:claude");

    // A read-only delegation refuses writes.
    let ro = cli_as_json(
        &gw,
        &alice,
        &[
            "token",
            "delegate",
            "--actor",
            "agent:reader",
            "--connection",
            "shop",
            "--read-only",
        ],
    );
    let ro = ro["token"].as_str().unwrap().to_string();
    let write = psql(
        &gw.conninfo("shop", "alice", &ro),
        "UPDATE orders SET qty = 0 WHERE id = 1",
    );
    assert!(stderr(&write).contains("read-only"), "{}", stderr(&write));
    // And what is delegated from a read-only token stays read-only.
    let conn_token = gw
        .cli_ok(&[
            "token",
            "issue",
            "--principal",
            "alice",
            "--connection",
            "shop",
            "--role",
            "read-only",
            "--ttl",
            "10m",
        ])
        .trim()
        .to_string();
    let narrow = cli_as_json(
        &gw,
        &conn_token,
        &[
            "token",
            "delegate",
            "--actor",
            "agent:n",
            "--connection",
            "shop",
        ],
    );
    assert_eq!(narrow["record"]["role"], "read-only");

    // Revoking alice's credential revokes the agent's, and closes its session.
    let mut held = psql_command(&info, "SELECT pg_sleep(20)")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || target
        .admin_sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)'")
        .trim()
        == "1"));
    gw.cli_ok(&["token", "revoke", &alice_id]);
    let started = Instant::now();
    let out = loop {
        if held.try_wait().unwrap().is_some() {
            break held.wait_with_output().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the agent's session outlived the revocation"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(stderr(&out).contains("token revoked"), "{}", stderr(&out));
    let after = psql(&info, "SELECT 1");
    assert!(stderr(&after).contains("revoked"), "{}", stderr(&after));
    let ro_after = psql(&gw.conninfo("shop", "alice", &ro), "SELECT 1");
    assert!(
        stderr(&ro_after).contains("revoked"),
        "{}",
        stderr(&ro_after)
    );
}
