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

/// A test identity provider on a loopback port: discovery, a JWKS whose
/// keys the test rotates, and ES256 signing.
struct Idp {
    issuer: String,
    keys: std::sync::Arc<
        std::sync::Mutex<Vec<(String, jsonwebtoken::EncodingKey, serde_json::Value)>>,
    >,
}

impl Idp {
    fn start() -> Idp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let keys: std::sync::Arc<std::sync::Mutex<Vec<_>>> = Default::default();
        let (published, iss) = (keys.clone(), issuer.clone());
        std::thread::spawn(move || {
            use std::io::{BufRead, BufReader, Write};
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let body = match path.as_str() {
                    "/.well-known/openid-configuration" => serde_json::json!({
                        "issuer": iss, "jwks_uri": format!("{iss}/jwks"),
                        "id_token_signing_alg_values_supported": ["ES256"],
                    }),
                    "/jwks" => {
                        let keys: Vec<serde_json::Value> = published
                            .lock()
                            .unwrap()
                            .iter()
                            .map(
                                |(_, _, jwk): &(
                                    String,
                                    jsonwebtoken::EncodingKey,
                                    serde_json::Value,
                                )| jwk.clone(),
                            )
                            .collect();
                        serde_json::json!({ "keys": keys })
                    }
                    _ => serde_json::json!({}),
                }
                .to_string();
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Idp { issuer, keys }
    }

    /// A new signing key (published unless `publish` is false).
    fn new_key(&self, kid: &str, publish: bool) -> (jsonwebtoken::EncodingKey, serde_json::Value) {
        use base64::Engine;
        let kp = rcgen::KeyPair::generate().unwrap();
        let raw = kp.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
                                     "kid": kid, "use": "sig", "alg": "ES256"});
        let key = jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        if publish {
            self.keys
                .lock()
                .unwrap()
                .push((kid.to_string(), key.clone(), jwk.clone()));
        }
        (key, jwk)
    }

    fn sign(
        &self,
        key: &jsonwebtoken::EncodingKey,
        kid: &str,
        claims: &serde_json::Value,
    ) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    /// Claims shaped like a GitHub Actions OIDC token's.
    fn github_claims(&self, git_ref: &str) -> serde_json::Value {
        let now = sluice_core::time::now_ms() / 1000;
        serde_json::json!({
            "iss": self.issuer, "aud": "sluice", "jti": format!("j-{now}-{}", rand::random::<u32>()),
            "sub": format!("repo:acme/shop:ref:{git_ref}"),
            "repository": "acme/shop", "repository_owner": "acme", "repository_id": "42",
            "ref": git_ref, "ref_type": "branch", "sha": "0123456789abcdef",
            "environment": "prod", "workflow": "deploy", "event_name": "push",
            "job_workflow_ref": format!("acme/shop/.github/workflows/deploy.yml@{git_ref}"),
            "run_id": "7", "run_attempt": "1", "actor": "octocat", "runner_environment": "github-hosted",
            "iat": now, "nbf": now - 5, "exp": now + 300,
        })
    }
}

fn exchange(gw: &Gateway, jwt: &str, connection: &str) -> Output {
    let file = gw.dir.path().join(format!("jwt-{}", rand::random::<u32>()));
    std::fs::write(&file, jwt).unwrap();
    gw.cli(&[
        "token",
        "exchange",
        "--subject-token-file",
        file.to_str().unwrap(),
        "--connection",
        connection,
    ])
}

#[test]
fn ci_jobs_trade_their_oidc_token_for_a_sluice_token_under_trust_rules() {
    let target = PgServer::start(Auth::Scram, false);
    let idp = Idp::start();
    let gw = Gateway::start(
        "",
        "",
        &format!(
            "{}{}\n[[identity.issuers]]\nname = \"github\"\nissuer = \"{}\"\naudience = \"sluice\"\n\n\
             [[identity.trust]]\nname = \"shop-deploys\"\nissuer = \"github\"\n\
             principal = \"workload:github:{{repository}}\"\nconnections = [\"shop\"]\nmax_ttl = \"10m\"\n\
             [identity.trust.claims]\nrepository = \"acme/shop\"\nref = [\"refs/heads/main\", \"refs/tags/v*\"]\n\
             environment = \"prod\"\njob_workflow_ref = \"acme/shop/.github/workflows/deploy.yml@*\"\n",
            connection_toml("shop", &target, "prefer", "env = \"dev\""),
            connection_toml("other", &target, "prefer", "env = \"dev\""),
            idp.issuer
        ),
    );
    let (key1, _) = idp.new_key("k1", true);

    // A GitHub-shaped token from main: a token for the shop connection, used with psql.
    let jwt = idp.sign(&key1, "k1", &idp.github_claims("refs/heads/main"));
    let out = exchange(&gw, &jwt, "shop");
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let info = gw.conninfo("shop", "workload:github:acme/shop", &token);
    assert_eq!(psql_ok(&info, "SELECT count(*) FROM orders").trim(), "100");
    let issued = gw.cli_json(&["token", "list"]);
    let rec = issued
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["principal"] == "workload:github:acme/shop")
        .unwrap()
        .clone();
    assert_eq!(rec["created_by"], "exchange:github/shop-deploys");
    let lifetime = rec["expires_at"].as_i64().unwrap() - rec["created_at"].as_i64().unwrap();
    assert!(
        lifetime <= 600_000,
        "at most the rule's max_ttl: {lifetime}"
    );

    // Every way a token can be wrong is refused, with a reason for the job's log.
    let refused = |jwt: &str, connection: &str, says: &str| {
        let out = exchange(&gw, jwt, connection);
        assert!(!out.status.success(), "accepted: {says}");
        assert!(stderr(&out).contains(says), "{says}: {}", stderr(&out));
    };
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = idp.github_claims("refs/heads/main");
        f(&mut c);
        idp.sign(&key1, "k1", &c)
    };
    let now = sluice_core::time::now_ms() / 1000;
    refused(
        &with(&|c| c["iss"] = "https://evil.example".into()),
        "shop",
        "is not trusted",
    );
    refused(
        &with(&|c| c["aud"] = "someone-else".into()),
        "shop",
        "audience",
    );
    refused(&with(&|c| c["exp"] = (now - 120).into()), "shop", "expired");
    refused(
        &with(&|c| c["nbf"] = (now + 600).into()),
        "shop",
        "not valid yet",
    );
    refused(
        &with(&|c| c["ref"] = "refs/heads/feature".into()),
        "shop",
        "ref is \"refs/heads/feature\"",
    );
    refused(
        &with(&|c| c["environment"] = "dev".into()),
        "shop",
        "environment is \"dev\"",
    );
    refused(&jwt, "other", "does not grant connection \"other\"");
    // Tampered: a claim changed under the original signature.
    let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
    {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut c: serde_json::Value =
            serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
        c["repository"] = "acme/other".into();
        parts[1] = b64.encode(c.to_string());
    }
    refused(&parts.join("."), "shop", "signature does not verify");
    // alg none, and HMAC keyed with the public key.
    {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = b64.encode(idp.github_claims("refs/heads/main").to_string());
        let none = format!(
            "{}.{claims}.",
            b64.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#)
        );
        refused(&none, "shop", "not a signed JWT");
        let jwk = idp.keys.lock().unwrap()[0].2.clone();
        let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        hs.kid = Some("k1".into());
        let forged = jsonwebtoken::encode(
            &hs,
            &idp.github_claims("refs/heads/main"),
            &jsonwebtoken::EncodingKey::from_secret(jwk.to_string().as_bytes()),
        )
        .unwrap();
        refused(&forged, "shop", "is not accepted");
    }
    // A key the provider never published.
    let (rogue, _) = idp.new_key("rogue", false);
    refused(
        &idp.sign(&rogue, "rogue", &idp.github_claims("refs/heads/main")),
        "shop",
        "is not among",
    );

    // Rotation: the provider publishes k2 and drops k1; the gateway fetches
    // the new set when it meets k2, and k1 stops working.
    std::thread::sleep(Duration::from_millis(2100));
    idp.keys.lock().unwrap().clear();
    let (key2, _) = idp.new_key("k2", true);
    let out = exchange(
        &gw,
        &idp.sign(&key2, "k2", &idp.github_claims("refs/tags/v1.0")),
        "shop",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    refused(
        &idp.sign(&key1, "k1", &idp.github_claims("refs/heads/main")),
        "shop",
        "is not among",
    );
}
