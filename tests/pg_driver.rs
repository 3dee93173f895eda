//! A language driver (tokio-postgres: extended protocol, binary results)
//! through the gateway: prepared statements, transactions, COPY both ways,
//! notifications, cancellation, and sessions closed when the token ends.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls};

type ConnTask = tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>;

async fn connect(
    gw: &Gateway,
    user: &str,
    token: &str,
) -> Result<(Client, ConnTask), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} dbname=shop user={user} password={token}",
            gw.pg_port
        ),
        NoTls,
    )
    .await?;
    Ok((client, tokio::spawn(conn)))
}

/// Connects and forwards notifications to a channel.
async fn connect_listening(
    gw: &Gateway,
    user: &str,
    token: &str,
) -> (
    Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    let (client, mut conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} dbname=shop user={user} password={token}",
            gw.pg_port
        ),
        NoTls,
    )
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = msg {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    (client, rx)
}

fn plaintext_gateway(target: &PgServer) -> Gateway {
    Gateway::start(
        "",
        "allow_plaintext_loopback = true",
        &connection_toml("shop", target, "prefer", "env = \"dev\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_binary_results_copy_and_notifications() {
    let target = PgServer::start(Auth::Scram, true);
    let gw = plaintext_gateway(&target);
    let token = gw.token("driver", "shop", "10m");
    let (client, _conn) = connect(&gw, "driver", &token).await.unwrap();

    // Prepared statement, typed parameters, binary results.
    let stmt = client
        .prepare("SELECT id, item, qty FROM orders WHERE qty > $1 ORDER BY id LIMIT $2")
        .await
        .unwrap();
    let rows = client.query(&stmt, &[&95i32, &10i64]).await.unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        (96..=100)
            .map(|i| (i, format!("item{i}")))
            .collect::<Vec<_>>()
    );
    let blob: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    let echoed: Vec<u8> = client
        .query_one("SELECT $1::bytea", &[&blob])
        .await
        .unwrap()
        .get(0);
    assert_eq!(echoed, blob, "large binary values survive both ways");

    // Errors inside the extended protocol leave the session usable.
    let err = client.query("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    assert_eq!(
        client
            .query_one("SELECT 2::int4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );

    // Transactions.
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO orders (item, qty) VALUES ('rolled back', 1)",
        &[],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100);

    // COPY FROM STDIN and COPY TO STDOUT.
    let sink = client
        .copy_in("COPY orders (item, qty) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!("copied{i}\t{i}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 5000);
    let stream = client
        .copy_out("COPY (SELECT id FROM orders ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.map(|c| c.unwrap()).collect().await;
    let lines = chunks
        .iter()
        .map(|c| c.iter().filter(|&&b| b == b'\n').count())
        .sum::<usize>();
    assert_eq!(lines, 5100);
    // Outcomes stay paired with their statements after a COPY (whose Sync
    // the server ignores during copy-in).
    client.simple_query("SELECT 41").await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM orders WHERE qty > $1", &[&4990i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 9);

    // LISTEN/NOTIFY across two gateway sessions.
    let (listener, mut notes) = connect_listening(&gw, "driver", &token).await;
    listener
        .batch_execute("LISTEN orders_changed")
        .await
        .unwrap();
    client
        .batch_execute("NOTIFY orders_changed, 'order 42 shipped'")
        .await
        .unwrap();
    let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        note,
        ("orders_changed".to_string(), "order 42 shipped".to_string())
    );

    // The recording has the statements as the target read them.
    drop(client);
    drop(listener);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sessions = gw.cli_json(&["sessions", "list", "--principal", "driver"]);
    let texts: Vec<(String, String)> = command_events(&gw, "driver")
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(texts.contains(&(
        "extended".into(),
        "SELECT id, item, qty FROM orders WHERE qty > $1 ORDER BY id LIMIT $2".into()
    )));
    assert!(texts.contains(&(
        "simple".into(),
        "NOTIFY orders_changed, 'order 42 shipped'".into()
    )));
    assert!(texts.contains(&(
        "extended".into(),
        "COPY orders (item, qty) FROM STDIN".into()
    )));
    let main = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| gw.cli_json(&["sessions", "show", s["id"].as_str().unwrap()]))
        .find(|show| commands(show).contains(&"SELECT 41".to_string()))
        .unwrap();
    assert_eq!(
        outcome_of(&main, "COPY orders (item, qty) FROM STDIN")["rows"],
        5000
    );
    assert_eq!(outcome_of(&main, "SELECT 41")["rows"], 1);
    assert_eq!(
        outcome_of(&main, "SELECT count(*) FROM orders WHERE qty > $1")["rows"],
        1
    );
    assert_eq!(outcome_of(&main, "SELECT 1/0")["error_code"], "22012");
    assert_eq!(gw.cli_json(&["audit", "verify"])["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_reach_the_right_backend() {
    let target = PgServer::start(Auth::Scram, false);
    let gw = plaintext_gateway(&target);
    let token = gw.token("canceller", "shop", "10m");
    let (client, _conn) = connect(&gw, "canceller", &token).await.unwrap();
    let (bystander, _conn2) = connect(&gw, "canceller", &token).await.unwrap();
    let cancel = client.cancel_token();
    let by_cancel = bystander.cancel_token();
    let slow = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    let other = tokio::spawn(async move { bystander.simple_query("SELECT pg_sleep(1.5)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(by_cancel);
    cancel.cancel_query(NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    // The other session's query was not touched.
    assert!(tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .unwrap()
        .unwrap()
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_their_token_expires_or_is_revoked() {
    let target = PgServer::start(Auth::Trust, false);
    let gw = plaintext_gateway(&target);

    let short = gw.token("shortlived", "shop", "3s");
    let (client, conn) = connect(&gw, "shortlived", &short).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(8), conn)
        .await
        .expect("closed within seconds of expiry");
    let err = ended.unwrap().unwrap_err();
    let db = err.as_db_error().expect("a FATAL the client can read");
    assert_eq!(db.severity(), "FATAL");
    assert!(db.message().contains("token expired"), "{}", db.message());
    assert!(client.simple_query("SELECT 1").await.is_err());

    let long = gw.token("revokee", "shop", "10m");
    let (client, conn) = connect(&gw, "revokee", &long).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let id = gw
        .cli_json(&["token", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["principal"] == "revokee")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    gw.cli_ok(&["token", "revoke", &id]);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("closed within seconds of revocation");
    let err = ended.unwrap().unwrap_err();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("token revoked"),
        "{err}"
    );
    assert!(
        connect(&gw, "revokee", &long).await.is_err(),
        "a revoked token opens nothing"
    );

    let outcomes: Vec<String> = gw
        .cli_json(&["sessions", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap().to_string())
        .collect();
    assert!(
        outcomes.contains(&"token expired".to_string()),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&"token revoked".to_string()),
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_carry_the_right_sqlstate() {
    let target = PgServer::start(Auth::Trust, false);
    let gw = Gateway::start(
        "",
        "allow_plaintext_loopback = true",
        &(connection_toml("shop", &target, "disable", "")
            + &connection_toml("other", &target, "disable", "")),
    );
    let token = gw.token("sam", "other", "10m");
    let err = connect(&gw, "sam", "slc_nope").await.err().unwrap();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD));
    let err = connect(&gw, "sam", &token).await.err().unwrap();
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    );
    let msg = err.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("not valid for connection \"shop\""), "{msg}");
}
