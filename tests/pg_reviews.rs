//! Reviews end to end: statements policy sends for review wait for a human
//! (held) or come back once approved (deferred); access requests become
//! tokens for the approved window; approvals follow their rules; webhooks
//! are signed; a second gateway on the same store wakes a held statement.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const WEBHOOK_SECRET: &str = "a-webhook-secret-of-some-length";

/// An API credential for a person.
fn api_credential(gw: &Gateway, principal: &str) -> String {
    gw.cli_ok(&[
        "token",
        "issue",
        "--api",
        "--principal",
        principal,
        "--ttl",
        "1h",
    ])
    .trim()
    .to_string()
}

/// The review id an error or notice names.
fn review_id(text: &str) -> String {
    let at = text
        .find("rev_")
        .unwrap_or_else(|| panic!("no review id in {text}"));
    text[at..at + 20].to_string()
}

/// The pending reviews the admin sees.
fn pending(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.cli_json(&["reviews", "list"])
        .as_array()
        .unwrap()
        .clone()
}

/// Waits for a pending review of a statement; returns it.
fn pending_review_of(gw: &Gateway, statement: &str) -> serde_json::Value {
    let mut found = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            found = pending(gw)
                .into_iter()
                .find(|r| r["statement"].as_str() == Some(statement));
            found.is_some()
        }),
        "no pending review of {statement}: {}",
        gw.log_text()
    );
    found.unwrap()
}

/// Every event of every session of a principal.
fn session_events(gw: &Gateway, principal: &str) -> Vec<serde_json::Value> {
    let sessions = gw.cli_json(&["sessions", "list", "--principal", principal]);
    let mut out = vec![];
    for s in sessions.as_array().unwrap() {
        let show = gw.cli_json(&["sessions", "show", s["id"].as_str().unwrap()]);
        out.extend(show["events"].as_array().unwrap().iter().cloned());
    }
    out
}

fn wait_output(mut child: std::process::Child, limit: Duration) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the client still waits after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One webhook delivery as the receiver saw it.
struct Delivery {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A webhook receiver on a loopback port: answers 500 to the first
/// delivery (to exercise retries) and 200 after.
fn webhook_receiver() -> (u16, Arc<Mutex<Vec<Delivery>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = HashMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let first = {
                let mut g = seen.lock().unwrap();
                g.push(Delivery { headers, body });
                g.len() == 1
            };
            let status = if first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (port, got)
}

/// Checks a delivery's signature as a receiver would.
fn signature_ok(d: &Delivery) -> bool {
    let (Some(ts), Some(sig)) = (
        d.headers.get("x-sluice-timestamp"),
        d.headers.get("x-sluice-signature"),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&d.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    *sig == expected
}

/// A gateway with a prod connection, approvers (bob, carol) and a webhook.
fn review_gateway(
    target: &PgServer,
    extra: &str,
    webhook_port: Option<u16>,
) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, format!("{WEBHOOK_SECRET}\n")).unwrap();
    let hook = match webhook_port {
        Some(port) => format!(
            "[[reviews.webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret_file = {:?}\n",
            secret.to_str().unwrap()
        ),
        None => String::new(),
    };
    let gw = Gateway::start(
        "",
        "allow_plaintext_loopback = true",
        &format!(
            "{}\n[policy.groups]\napprovers = [\"alice\", \"bob\", \"carol\"]\ndba = [\"carol\"]\n\n[reviews]\n{extra}\n{hook}",
            connection_toml("prod", target, "prefer", "env = \"prod\"")
        ),
    );
    (gw, dir)
}

#[test]
fn held_statements_run_after_approval_and_denied_ones_never_reach_the_target() {
    let target = PgServer::start(Auth::Scram, false);
    let (port, deliveries) = webhook_receiver();
    let (gw, _dir) = review_gateway(&target, "", Some(port));
    let alice = gw.token("alice", "prod", "10m");
    let alice_api = api_credential(&gw, "alice");
    let bob_api = api_credential(&gw, "bob");
    let info = gw.conninfo("prod", "alice", &alice);

    // A person's write on prod is held: psql waits and is told where to approve.
    let update = "UPDATE orders SET qty = 0 WHERE id = 1";
    let held = psql_command(&info, update)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let review = pending_review_of(&gw, update);
    let id = review["id"].as_str().unwrap().to_string();
    assert_eq!(review["mode"], "hold");
    assert_eq!(review["principal"], "alice");
    assert_eq!(review["impact"]["estimated_rows"], 1, "{review}");
    assert!(review["policy_reason"]
        .as_str()
        .unwrap()
        .contains("need a human review"));
    // Not run while held.
    assert_eq!(
        psql_ok(&direct(&target), "SELECT qty FROM orders WHERE id = 1").trim(),
        "1"
    );

    // The requester may not approve their own statement; an outsider may not either.
    let own = cli_as(&gw, &alice_api, &["reviews", "approve", &id]);
    assert!(!own.status.success());
    assert!(
        stderr(&own).contains("self-approval is not allowed"),
        "{}",
        stderr(&own)
    );
    let admin = gw.cli(&["reviews", "approve", &id]);
    assert!(
        !admin.status.success(),
        "the admin credential is no approver"
    );
    assert!(
        stderr(&admin).contains("admin credential"),
        "{}",
        stderr(&admin)
    );
    // The approver's inbox shows it, with what it is about.
    let inbox = cli_as_json(&gw, &bob_api, &["reviews", "list"]);
    assert!(inbox.as_array().unwrap().iter().any(|r| r["id"] == id));
    let shown = cli_as(&gw, &bob_api, &["reviews", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        shown.contains(update) && shown.contains("estimates 1 row"),
        "{shown}"
    );

    let approved = Instant::now();
    cli_as_json(
        &gw,
        &bob_api,
        &["reviews", "approve", &id, "--reason", "ticket 7"],
    );
    let out = wait_output(held, Duration::from_secs(10));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        approved.elapsed() < Duration::from_secs(3),
        "ran {:?} after the approval",
        approved.elapsed()
    );
    assert!(
        stderr(&out).contains(&format!("waits for review {id}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        psql_ok(&direct(&target), "SELECT qty FROM orders WHERE id = 1").trim(),
        "0"
    );
    let done = gw.cli_json(&["reviews", "show", &id]);
    assert_eq!(done["state"], "executed");
    assert_eq!(done["decided_by"], "bob");

    // A denied statement errors with the reason and never reaches the target.
    let delete = "DELETE FROM orders WHERE id = 2";
    let held = psql_command(&info, delete)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id2 = pending_review_of(&gw, delete)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let no_reason = cli_as(&gw, &bob_api, &["reviews", "deny", &id2, "--reason", " "]);
    assert!(!no_reason.status.success(), "a denial needs a reason");
    cli_as_json(
        &gw,
        &bob_api,
        &["reviews", "deny", &id2, "--reason", "use the archive job"],
    );
    let out = wait_output(held, Duration::from_secs(10));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "review {id2} was denied by bob: use the archive job"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        psql_ok(&direct(&target), "SELECT count(*) FROM orders WHERE id = 2").trim(),
        "1"
    );

    // Ctrl-C in psql (a CancelRequest) withdraws a held statement.
    let truncate_like = "UPDATE orders SET qty = 5 WHERE id = 3";
    let held = psql_command(&info, truncate_like)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id3 = pending_review_of(&gw, truncate_like)["id"]
        .as_str()
        .unwrap()
        .to_string();
    Command::new("kill")
        .args(["-INT", &held.id().to_string()])
        .status()
        .unwrap();
    let out = wait_output(held, Duration::from_secs(10));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was cancelled"), "{}", stderr(&out));
    assert_eq!(
        gw.cli_json(&["reviews", "show", &id3])["state"],
        "cancelled"
    );
    assert_eq!(
        psql_ok(&direct(&target), "SELECT qty FROM orders WHERE id = 3").trim(),
        "3"
    );

    // The session's record cites the review that let the update run, and
    // every review change is in the audit chain.
    let events = session_events(&gw, "alice");
    let ran = events
        .iter()
        .find(|e| e["kind"] == "command" && e["data"]["text"] == update)
        .expect("the update is recorded");
    assert_eq!(ran["data"]["review"], id);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    for k in [
        "review.created",
        "review.approved",
        "review.executed",
        "review.denied",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert_eq!(gw.cli_json(&["audit", "verify"])["ok"], true);

    // Every event reached the webhook, signed; the first failed delivery was retried.
    assert!(
        eventually(Duration::from_secs(15), || {
            let d = deliveries.lock().unwrap();
            let events: Vec<&str> = d
                .iter()
                .filter_map(|d| d.headers.get("x-sluice-event").map(String::as_str))
                .collect();
            let retried = d.len() > 1
                && d.iter().skip(1).any(|x| {
                    x.headers.get("x-sluice-delivery") == d[0].headers.get("x-sluice-delivery")
                });
            retried
                && [
                    "review.created",
                    "review.approved",
                    "review.executed",
                    "review.denied",
                ]
                .iter()
                .all(|e| events.contains(e))
        }),
        "webhook deliveries: {:?}",
        deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.headers.get("x-sluice-event").cloned())
            .collect::<Vec<_>>()
    );
    let d = deliveries.lock().unwrap();
    assert!(d.iter().all(signature_ok), "every delivery verifies");
    let first = d[0].headers["x-sluice-delivery"].clone();
    assert!(
        d.iter()
            .skip(1)
            .any(|x| x.headers["x-sluice-delivery"] == first),
        "the delivery answered 500 was retried"
    );
    let body: serde_json::Value = serde_json::from_slice(&d[0].body).unwrap();
    assert_eq!(body["event"], "review.created");
    assert_eq!(body["review"]["statement"], update);
    // A tampered body does not verify.
    let mut forged = Delivery {
        headers: d[0].headers.clone(),
        body: d[0].body.clone(),
    };
    forged.body[5] ^= 1;
    assert!(!signature_ok(&forged));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_statements_run_once_after_approval_and_changed_ones_get_a_new_review() {
    let target = PgServer::start(Auth::Scram, false);
    let (gw, _dir) = review_gateway(&target, "", None);
    let agent = agent_token(&gw, "prod");
    let bob_api = api_credential(&gw, "bob");
    let info = gw.conninfo("prod", "alice", &agent);

    // An agent is not held: it gets the review id and how to wait, at once.
    let update = "UPDATE orders SET qty = 7 WHERE id = 3";
    let out = psql(&info, update);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("sluice reviews wait rev_"), "{err}");
    let id = review_id(&err);
    // Asking again before the decision names the same review.
    assert_eq!(review_id(&stderr(&psql(&info, update))), id);
    // The agent waits with its own connection token; still pending.
    let wait = cli_as(&gw, &agent, &["reviews", "wait", &id, "--timeout", "1s"]);
    assert_eq!(wait.status.code(), Some(2), "{}", stderr(&wait));
    // Agents decide nothing, not even with an approver's name.
    let by_agent = cli_as(&gw, &agent, &["reviews", "approve", &id]);
    assert!(!by_agent.status.success());
    // A connection token cannot trade itself for a fresh grant.
    let traded = cli_as(
        &gw,
        &agent,
        &[
            "request",
            "--connection",
            "prod",
            "--for",
            "8h",
            "--reason",
            "more",
        ],
    );
    assert!(
        stderr(&traded).contains("own API credential"),
        "{}",
        stderr(&traded)
    );

    cli_as_json(&gw, &bob_api, &["reviews", "approve", &id]);
    let wait = cli_as(&gw, &agent, &["reviews", "wait", &id, "--timeout", "5s"]);
    assert_eq!(wait.status.code(), Some(0), "{}", stderr(&wait));
    // Approvers see the statement as it runs: values in literals are
    // masked, but nothing that looks like a secret can hide SQL.
    let sneaky = "UPDATE orders SET item = 'mail alice@example.com' WHERE id = 1 \
                  /* -----BEGIN PRIVATE KEY----- */ OR qty >= 0 /* -----END PRIVATE KEY----- */";
    let e = stderr(&psql(&info, sneaky));
    let shown = gw.cli_json(&["reviews", "show", &review_id(&e)])["statement"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(shown.contains("OR qty >= 0"), "{shown}");
    assert!(!shown.contains("alice@example.com"), "{shown}");

    // A different statement is not covered by the approval.
    let changed = psql(&info, "UPDATE orders SET qty = 8 WHERE id = 3");
    assert!(!changed.status.success());
    assert_ne!(review_id(&stderr(&changed)), id);
    // The approved one runs, exactly once.
    psql_ok(&info, update);
    assert_eq!(
        psql_ok(&direct(&target), "SELECT qty FROM orders WHERE id = 3").trim(),
        "7"
    );
    let again = psql(&info, update);
    assert!(!again.status.success());
    assert_ne!(review_id(&stderr(&again)), id, "a used approval is spent");
    assert_eq!(gw.cli_json(&["reviews", "show", &id])["state"], "executed");

    // An approval of `EXECUTE p` covers p as it was defined when reviewed.
    let client = agent_client(&gw, &agent).await;
    // Preparing a write is itself reviewed: approve, then run it again.
    let approved_run = |sql: &'static str| {
        let client = &client;
        let gw = &gw;
        let bob_api = &bob_api;
        async move {
            let e = client.simple_query(sql).await.unwrap_err();
            let id = review_id(e.as_db_error().unwrap().message());
            cli_as_json(gw, bob_api, &["reviews", "approve", &id]);
            client.simple_query(sql).await.unwrap();
        }
    };
    approved_run("PREPARE p AS UPDATE orders SET qty = 1 WHERE id = 10").await;
    let e = client.simple_query("EXECUTE p").await.unwrap_err();
    let id = review_id(e.as_db_error().unwrap().message());
    let shown = gw.cli_json(&["reviews", "show", &id]);
    assert!(
        shown["statement"]
            .as_str()
            .unwrap()
            .contains("runs: PREPARE p AS UPDATE orders SET qty = 1 WHERE id = 10"),
        "{shown}"
    );
    cli_as_json(&gw, &bob_api, &["reviews", "approve", &id]);
    approved_run("DEALLOCATE p; PREPARE p AS UPDATE orders SET qty = 1 WHERE id < 50").await;
    let e = client.simple_query("EXECUTE p").await.unwrap_err();
    assert_ne!(review_id(e.as_db_error().unwrap().message()), id);
    assert_eq!(
        psql_ok(
            &direct(&target),
            "SELECT count(*) FROM orders WHERE qty = 1"
        )
        .trim(),
        "1",
        "the redefined statement did not run"
    );
    // Defined exactly as reviewed (in a new session: a redefinition in the
    // same one is followed conservatively), the approval applies.
    drop(client);
    let client = agent_client(&gw, &agent).await;
    let e = client
        .simple_query("PREPARE p AS UPDATE orders SET qty = 1 WHERE id = 10")
        .await
        .unwrap_err();
    cli_as_json(
        &gw,
        &bob_api,
        &[
            "reviews",
            "approve",
            &review_id(e.as_db_error().unwrap().message()),
        ],
    );
    client
        .simple_query("PREPARE p AS UPDATE orders SET qty = 1 WHERE id = 10")
        .await
        .unwrap();
    client.simple_query("EXECUTE p").await.unwrap();
    assert_eq!(gw.cli_json(&["reviews", "show", &id])["state"], "executed");
    assert_eq!(
        psql_ok(&direct(&target), "SELECT qty FROM orders WHERE id = 10").trim(),
        "1"
    );
    drop(client);

    // Through a driver: the parameters are part of what is approved.
    let client = agent_client(&gw, &agent).await;
    let sql = "UPDATE orders SET qty = $1 WHERE id = $2";
    let e = client.execute(sql, &[&9i32, &4i32]).await.unwrap_err();
    let msg = e.as_db_error().unwrap().message().to_string();
    let id = review_id(&msg);
    let shown = gw.cli_json(&["reviews", "show", &id]);
    assert!(
        shown["statement"]
            .as_str()
            .unwrap()
            .contains("$1 = (binary) 00000009"),
        "approvers see the values: {shown}"
    );
    cli_as_json(&gw, &bob_api, &["reviews", "approve", &id]);
    let other = client.execute(sql, &[&10i32, &4i32]).await.unwrap_err();
    assert_ne!(review_id(other.as_db_error().unwrap().message()), id);
    assert_eq!(client.execute(sql, &[&9i32, &4i32]).await.unwrap(), 1);
    assert_eq!(
        psql_ok(&direct(&target), "SELECT qty FROM orders WHERE id = 4").trim(),
        "9"
    );
}

#[test]
fn access_requests_grant_a_token_for_the_approved_window_only() {
    let target = PgServer::start(Auth::Scram, false);
    let (gw, _dir) = review_gateway(
        &target,
        "[[reviews.rules]]\nname = \"two-for-access\"\nkinds = [\"access\"]\napprovers = [\"approvers\"]\napprovals = 2\n",
        None,
    );
    let alice_api = api_credential(&gw, "alice");
    let bob_api = api_credential(&gw, "bob");
    let carol_api = api_credential(&gw, "carol");

    let no_reason = cli_as(
        &gw,
        &alice_api,
        &["request", "--connection", "prod", "--for", "6s"],
    );
    assert!(!no_reason.status.success());
    assert!(
        stderr(&no_reason).contains("needs a reason"),
        "{}",
        stderr(&no_reason)
    );
    let req = cli_as_json(
        &gw,
        &alice_api,
        &[
            "request",
            "--connection",
            "prod",
            "--for",
            "6s",
            "--reason",
            "incident 42",
        ],
    );
    let id = req["id"].as_str().unwrap().to_string();
    assert_eq!(req["state"], "pending");
    // Nothing to fetch yet, and nobody else may fetch it.
    let early = cli_as(
        &gw,
        &alice_api,
        &["request", "wait", &id, "--timeout", "1s"],
    );
    assert_eq!(early.status.code(), Some(2));
    // Two approvals are needed: one is not enough.
    cli_as_json(&gw, &bob_api, &["reviews", "approve", &id]);
    assert_eq!(gw.cli_json(&["reviews", "show", &id])["state"], "pending");
    let twice = cli_as(&gw, &bob_api, &["reviews", "approve", &id]);
    assert!(
        stderr(&twice).contains("already decided"),
        "{}",
        stderr(&twice)
    );
    cli_as_json(&gw, &carol_api, &["reviews", "approve", &id]);
    let stolen = cli_as(&gw, &bob_api, &["request", "wait", &id, "--timeout", "1s"]);
    assert!(
        !stolen.status.success(),
        "only the requester gets the token"
    );

    let out = cli_as(
        &gw,
        &alice_api,
        &["request", "wait", &id, "--timeout", "5s"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let granted = Instant::now();
    let info = gw.conninfo("prod", "alice", &token);
    assert_eq!(psql_ok(&info, "SELECT count(*) FROM orders").trim(), "100");
    // Shown once.
    let again = cli_as(
        &gw,
        &alice_api,
        &["request", "wait", &id, "--timeout", "1s"],
    );
    assert!(!again.status.success());
    // When the window ends, the token stops working.
    std::thread::sleep(Duration::from_secs(7).saturating_sub(granted.elapsed()));
    let late = psql(&info, "SELECT 1");
    assert!(!late.status.success());
    assert!(stderr(&late).contains("expired"), "{}", stderr(&late));

    // A read-only grant refuses writes, whatever policy would allow.
    let req = cli_as_json(
        &gw,
        &alice_api,
        &[
            "request",
            "--connection",
            "prod",
            "--role",
            "read-only",
            "--for",
            "5m",
            "--reason",
            "look only",
        ],
    );
    let id = req["id"].as_str().unwrap().to_string();
    cli_as_json(&gw, &bob_api, &["reviews", "approve", &id]);
    cli_as_json(&gw, &carol_api, &["reviews", "approve", &id]);
    let out = cli_as(&gw, &alice_api, &["request", "wait", &id]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let info = gw.conninfo("prod", "alice", &token);
    assert_eq!(psql_ok(&info, "SELECT count(*) FROM orders").trim(), "100");
    let write = psql(&info, "UPDATE orders SET qty = 1 WHERE id = 9");
    assert!(stderr(&write).contains("read-only"), "{}", stderr(&write));

    // A denial decides at once, and the requester may cancel their own.
    let req = cli_as_json(
        &gw,
        &alice_api,
        &[
            "request",
            "--connection",
            "prod",
            "--for",
            "5m",
            "--reason",
            "again",
        ],
    );
    let id = req["id"].as_str().unwrap().to_string();
    cli_as_json(
        &gw,
        &carol_api,
        &["reviews", "deny", &id, "--reason", "not now"],
    );
    let out = cli_as(&gw, &alice_api, &["request", "wait", &id]);
    assert!(stderr(&out).contains("denied"), "{}", stderr(&out));
    let req = cli_as_json(
        &gw,
        &alice_api,
        &[
            "request",
            "--connection",
            "prod",
            "--for",
            "5m",
            "--reason",
            "oops",
        ],
    );
    let id = req["id"].as_str().unwrap().to_string();
    let cancelled = cli_as_json(&gw, &alice_api, &["reviews", "cancel", &id]);
    assert_eq!(cancelled["state"], "cancelled");
}

#[test]
fn policy_approves_small_writes_and_unanswered_reviews_expire() {
    let target = PgServer::start(Auth::Scram, false);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.cedar");
    std::fs::write(
        &policy,
        format!(
            "{}\n@id(\"etl-small-order-writes\")\n@reason(\"the etl job may change a few orders without a human\")\n\
             permit (principal == Sluice::Workload::\"workload:etl\", action == Sluice::Action::\"approve\", resource)\n\
             when {{ context has review && context.review == \"command\" && context.class == \"write\" && \
             context has estimated_rows && context.estimated_rows <= 5 && context.tables.contains(\"orders\") }};\n",
            include_str!("../crates/sluice-core/policies/default.cedar")
        ),
    )
    .unwrap();
    let gw = Gateway::start(
        "",
        "allow_plaintext_loopback = true",
        &format!(
            "[policy]\nfiles = [{:?}]\n[policy.groups]\napprovers = [\"bob\"]\n\n[reviews]\npending_ttl = \"2s\"\nmode = \"defer\"\n\n{}",
            policy.to_str().unwrap(),
            connection_toml("prod", &target, "prefer", "env = \"prod\"")
        ),
    );
    target.admin_sql_db("shop", "ANALYZE orders");
    let etl = gw.token("workload:etl", "prod", "10m");
    let info = gw.conninfo("prod", "workload:etl", &etl);

    // A one-row write by the etl workload is approved by policy and runs now.
    psql_ok(&info, "UPDATE orders SET qty = 11 WHERE id = 5");
    assert_eq!(
        psql_ok(&direct(&target), "SELECT qty FROM orders WHERE id = 5").trim(),
        "11"
    );
    let done = gw.cli_json(&["reviews", "list", "--state", "executed"]);
    let r = done
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["statement"] == "UPDATE orders SET qty = 11 WHERE id = 5")
        .expect("recorded as a review");
    assert_eq!(r["decided_by"], "policy:etl-small-order-writes");
    assert!(r["decision_reason"]
        .as_str()
        .unwrap()
        .contains("without a human"));

    // Once the session may resolve names unlike the gateway's own session
    // (another search_path), there is no estimate, so no approval by it.
    let out = Command::new("psql")
        .args([
            "-X",
            "-At",
            &info,
            "-c",
            "SET search_path = public",
            "-c",
            "UPDATE orders SET qty = 12 WHERE id = 5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "approved without an estimate");
    let r = gw.cli_json(&["reviews", "show", &review_id(&stderr(&out))]);
    assert!(r["impact"].is_null(), "{r}");

    // A write hidden in a CTE counts in full, whatever the top node says.
    let out = psql(
        &info,
        "WITH u AS (UPDATE orders SET qty = 0 WHERE qty > 0 RETURNING 1) SELECT count(*) FROM u",
    );
    assert!(!out.status.success(), "not approved by policy");
    let r = gw.cli_json(&["reviews", "show", &review_id(&stderr(&out))]);
    assert_eq!(r["impact"]["estimated_rows"], 100, "{r}");

    // A write of every row is not small: a human must decide.
    let out = psql(&info, "UPDATE orders SET qty = qty + 1 WHERE qty > 0");
    assert!(!out.status.success());
    let id = review_id(&stderr(&out));
    let r = gw.cli_json(&["reviews", "show", &id]);
    assert_eq!(r["impact"]["estimated_rows"], 100, "{r}");
    // Nobody decides: it expires, and an expired review is no approval.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(gw.cli_json(&["reviews", "show", &id])["state"], "expired");
    let bob_api = api_credential(&gw, "bob");
    let late = cli_as(&gw, &bob_api, &["reviews", "approve", &id]);
    assert!(stderr(&late).contains("expired"), "{}", stderr(&late));
    assert_eq!(
        psql_ok(&direct(&target), "SELECT sum(qty) FROM orders").trim(),
        "5056"
    );
}

#[test]
fn an_approval_on_one_gateway_wakes_a_statement_held_on_another() {
    let store = PgServer::start(Auth::Trust, false);
    store.admin_sql("CREATE DATABASE sluice");
    let target = PgServer::start(Auth::Scram, false);
    let store_cfg = format!(
        "store = \"postgres://postgres@127.0.0.1:{}/sluice?sslmode=disable\"",
        store.port
    );
    let conns = format!(
        "{}\n[policy.groups]\napprovers = [\"bob\"]\n",
        connection_toml("prod", &target, "prefer", "env = \"prod\"")
    );
    let a = Gateway::start(&store_cfg, "allow_plaintext_loopback = true", &conns);
    let b = Gateway::start(&store_cfg, "allow_plaintext_loopback = true", &conns);
    let alice = a.token("alice", "prod", "10m");
    let bob_api = api_credential(&b, "bob");

    let update = "UPDATE orders SET qty = 42 WHERE id = 6";
    let held = psql_command(&a.conninfo("prod", "alice", &alice), update)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // B sees the review A created, and approves it.
    let id = pending_review_of(&b, update)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let approved = Instant::now();
    cli_as_json(&b, &bob_api, &["reviews", "approve", &id]);
    let out = wait_output(held, Duration::from_secs(10));
    let took = approved.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        took < Duration::from_secs(2),
        "held statement ran {took:?} after the approval on the other gateway"
    );
    assert_eq!(
        psql_ok(&direct(&target), "SELECT qty FROM orders WHERE id = 6").trim(),
        "42"
    );
    assert_eq!(a.cli_json(&["reviews", "show", &id])["state"], "executed");
}

/// Reads up to ReadyForQuery; returns the texts of the errors.
fn errors_until_ready(s: &mut std::net::TcpStream) -> Vec<String> {
    let mut errors = vec![];
    loop {
        let (tag, body) = read_msg(s);
        if tag == b'E' {
            errors.push(String::from_utf8_lossy(&body).to_string());
        }
        if tag == b'Z' {
            return errors;
        }
    }
}

#[test]
fn an_approved_portal_runs_only_what_was_approved() {
    let target = PgServer::start(Auth::Scram, false);
    let (gw, _dir) = review_gateway(&target, "", None);
    let agent = agent_token(&gw, "prod");
    let bob_api = api_credential(&gw, "bob");
    let mut s = raw_login(gw.pg_port, "alice", "prod", &agent);

    // The portal runs `EXECUTE p`: its approval covers p as it was then.
    let mut batch = parse_msg("p", "UPDATE orders SET qty = 1 WHERE id = 11");
    batch.extend(parse_msg("s", "EXECUTE p"));
    batch.extend(bind_msg("portal", "s"));
    batch.extend(sync_msg());
    s.write_all(&batch).unwrap();
    let errors = errors_until_ready(&mut s);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let id = review_id(&errors[0]);
    assert!(gw.cli_json(&["reviews", "show", &id])["statement"]
        .as_str()
        .unwrap()
        .contains("runs: UPDATE orders SET qty = 1 WHERE id = 11"));
    cli_as_json(&gw, &bob_api, &["reviews", "approve", &id]);

    // Bound under the approval, then p is redefined before the Execute.
    let mut batch = bind_msg("portal", "s");
    batch.extend(frontend_msg(b'C', b"Sp\0"));
    batch.extend(parse_msg("p", "UPDATE orders SET qty = 0 WHERE qty >= 0"));
    batch.extend(execute_msg("portal"));
    batch.extend(sync_msg());
    s.write_all(&batch).unwrap();
    let errors = errors_until_ready(&mut s);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_ne!(review_id(&errors[0]), id, "{errors:?}");
    assert_eq!(
        psql_ok(
            &direct(&target),
            "SELECT count(*) FROM orders WHERE qty = 0"
        )
        .trim(),
        "0",
        "the redefined statement never ran"
    );
}
