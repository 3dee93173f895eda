//! Two gateways sharing one PostgreSQL store: tokens, sessions, revocations
//! and one audit chain are common to both.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn two_gateways_share_tokens_sessions_revocations_and_one_audit_chain() {
    let store = PgServer::start(Auth::Trust, true);
    store.admin_sql("CREATE DATABASE sluice");
    let target = PgServer::start(Auth::Scram, false);
    let store_url = format!(
        "postgres://postgres@127.0.0.1:{}/sluice?sslmode=require",
        store.port
    );
    let store_cfg = format!(
        "store = \"{store_url}\"\nstore_ca_file = {:?}",
        store.ca_cert.as_ref().unwrap().to_str().unwrap()
    );

    // The store's certificate is verified: without its CA the gateway refuses to start.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("untrusting.toml");
    std::fs::write(
        &cfg,
        format!("[gateway]\ndata_dir = \"data\"\nstore = \"{store_url}\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["gateway", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the store") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    let conns = connection_toml("shop", &target, "prefer", "env = \"dev\"");
    let a = Gateway::start(&store_cfg, "", &conns);
    let b = Gateway::start(&store_cfg, "", &conns);

    // Both gateways reach the store over TLS only.
    let conns = store.admin_sql(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'sluice'",
    );
    let (tls, all) = conns.trim().split_once('|').unwrap();
    assert!(
        all.parse::<i32>().unwrap() >= 4 && tls == all,
        "store connections (tls|all): {conns}"
    );

    // A token issued through one gateway opens sessions on the other.
    let token = a.token("shared", "shop", "10m");
    assert_eq!(
        psql_ok(
            &b.conninfo("shop", "shared", &token),
            "SELECT count(*) FROM orders"
        )
        .trim(),
        "100"
    );
    // B ingests its journal within a fraction of a second; A then sees it.
    assert!(eventually(Duration::from_secs(5), || commands(
        &a.last_session("shared")
    ) == vec![
        "SELECT count(*) FROM orders"
    ]));

    // Both gateways append to the one chain at once.
    let mut runs = vec![];
    for gw in [&a, &b] {
        runs.push(
            Command::new("pgbench")
                .args(["-n", "-c", "2", "-t", "40", "-f", "-"])
                .arg(gw.conninfo("shop", "shared", &token))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for mut r in runs {
        use std::io::Write;
        r.stdin
            .take()
            .unwrap()
            .write_all(b"SELECT qty FROM orders WHERE id = 7;\n")
            .unwrap();
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each gateway flushes its own journal before verifying.
    let mut checked = 0;
    for gw in [&b, &a] {
        let v = gw.cli_json(&["audit", "verify"]);
        assert_eq!(v["ok"], true, "{v}");
        checked = v["checked"].as_i64().unwrap();
    }
    assert!(
        checked > 160,
        "both gateways' 160 statements are in the one chain: {checked}"
    );

    // A revocation made on A closes B's open session within seconds.
    let mut held = psql_command(&b.conninfo("shop", "shared", &token), "SELECT pg_sleep(20)")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || target
        .admin_sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)'")
        .trim()
        == "1"));
    let id = a.cli_json(&["token", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.cli_ok(&["token", "revoke", &id]);
    let started = std::time::Instant::now();
    let out = loop {
        if let Some(_status) = held.try_wait().unwrap() {
            break held.wait_with_output().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "session on B outlived the revocation"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token revoked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Tampering in the shared store is caught by either gateway.
    store.admin_sql_db(
        "sluice",
        "ALTER TABLE events DISABLE TRIGGER events_append_only; UPDATE events SET data = '{}' WHERE seq = 3;",
    );
    let out = b.cli(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("BROKEN at event 3"));
}
