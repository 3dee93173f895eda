//! Identity end to end: delegation from a person to an agent is never
//! wider or longer-lived than the delegator's own credential, is recorded
//! with both identities, and dies with the delegator's credential.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn delegated_tokens_are_never_wider_or_longer_and_die_with_their_delegator() {
    let target = PgServer::start(Auth::Scram, false);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.cedar");
    std::fs::write(
        &policy,
        "@id(\"all\") permit (principal, action, resource);\n\
         @id(\"ddl-for-dba\") @reason(\"schema changes are for the dba group\")\n\
         forbid (principal, action == Sluice::Action::\"ddl\", resource) unless { principal in Sluice::Group::\"dba\" };\n",
    )
    .unwrap();
    let gw = Gateway::start(
        "",
        "",
        &format!(
            "[policy]\nfiles = [{:?}]\n[policy.groups]\ndba = [\"agent:migrator\"]\n\n{}{}",
            policy.to_str().unwrap(),
            connection_toml("shop", &target, "prefer", "env = \"dev\""),
            connection_toml("other", &target, "prefer", "env = \"dev\"")
        ),
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

    // A token derived from alice's credential cannot sign alice out.
    let out = cli_as(&gw, &agent, &["logout"]);
    assert!(
        stderr(&out).contains("sign out with your sign-in credential"),
        "{}",
        stderr(&out)
    );

    // The agent works, and its session shows both identities.
    let info = gw.conninfo("shop", "alice", &agent);
    assert_eq!(psql_ok(&info, "SELECT count(*) FROM orders").trim(), "100");
    let sessions = gw.cli_json(&["sessions", "list", "--principal", "alice"]);
    assert_eq!(sessions[0]["actor"], "agent:claude");

    // A delegator names its agent, but the name grants nothing: the
    // administrator's agent:migrator is in the dba group, a delegated one
    // of that name is not.
    let admins = gw
        .cli_ok(&[
            "token",
            "issue",
            "--principal",
            "alice",
            "--actor",
            "agent:migrator",
            "--connection",
            "shop",
            "--ttl",
            "5m",
        ])
        .trim()
        .to_string();
    psql_ok(
        &gw.conninfo("shop", "alice", &admins),
        "CREATE TABLE by_the_dba_agent (id int)",
    );
    let posing = cli_as_json(
        &gw,
        &alice,
        &[
            "token",
            "delegate",
            "--actor",
            "agent:migrator",
            "--connection",
            "shop",
        ],
    );
    let posing = posing["token"].as_str().unwrap().to_string();
    let ddl = psql(
        &gw.conninfo("shop", "alice", &posing),
        "CREATE TABLE by_a_pretender (id int)",
    );
    assert!(
        stderr(&ddl).contains("schema changes are for the dba group"),
        "{}",
        stderr(&ddl)
    );

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
/// keys the test rotates, ES256 signing, and for people's sign-in an
/// authorization endpoint (PKCE), a token endpoint (codes, device codes,
/// refresh tokens) and a device endpoint.
struct Idp {
    issuer: String,
    keys: std::sync::Arc<
        std::sync::Mutex<Vec<(String, jsonwebtoken::EncodingKey, serde_json::Value)>>,
    >,
    people: std::sync::Arc<std::sync::Mutex<IdpPeople>>,
}

/// Who signs in at the test provider, and its sign-ins in progress.
#[derive(Default)]
struct IdpPeople {
    /// The person who signs in: email and provider groups.
    person: (String, Vec<String>),
    /// Sign ID tokens with this nonce instead of the requested one.
    wrong_nonce: bool,
    codes: std::collections::HashMap<String, (String, String, String)>,
    devices: std::collections::HashMap<String, u32>,
    refresh: std::collections::HashSet<String>,
}

const CLIENT_ID: &str = "sluice-cli";
const CLIENT_SECRET: &str = "a-client-secret-for-tests";

/// One HTTP request: method, path with query, and body.
fn read_request(stream: &std::net::TcpStream) -> Option<(String, reqwest::Url, String)> {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let url = reqwest::Url::parse(&format!("http://idp{}", parts.next()?)).ok()?;
    let mut len = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((method, url, String::from_utf8_lossy(&body).to_string()))
}

fn pairs(url: &reqwest::Url) -> std::collections::HashMap<String, String> {
    url.query_pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Idp {
    fn start() -> Idp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let keys: std::sync::Arc<std::sync::Mutex<Vec<_>>> = Default::default();
        let people: std::sync::Arc<std::sync::Mutex<IdpPeople>> = Default::default();
        let idp = Idp {
            issuer: issuer.clone(),
            keys: keys.clone(),
            people: people.clone(),
        };
        let signer = Idp {
            issuer,
            keys,
            people,
        };
        std::thread::spawn(move || {
            use std::io::Write;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some((method, url, body)) = read_request(&stream) else {
                    continue;
                };
                let (status, headers, body) = signer.answer(&method, &url, &body);
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        idp
    }

    /// What the provider answers: status, extra headers, body.
    fn answer(&self, method: &str, url: &reqwest::Url, body: &str) -> (String, String, String) {
        use base64::Engine;
        let iss = &self.issuer;
        let ok = |v: serde_json::Value| ("200 OK".to_string(), String::new(), v.to_string());
        let err = |code: &str| {
            (
                "400 Bad Request".to_string(),
                String::new(),
                serde_json::json!({ "error": code }).to_string(),
            )
        };
        let form = pairs(&reqwest::Url::parse(&format!("http://x/?{body}")).unwrap());
        match (method, url.path()) {
            ("GET", "/.well-known/openid-configuration") => ok(serde_json::json!({
                "issuer": iss, "jwks_uri": format!("{iss}/jwks"),
                "authorization_endpoint": format!("{iss}/authorize"),
                "token_endpoint": format!("{iss}/token"),
                "device_authorization_endpoint": format!("{iss}/device"),
                "id_token_signing_alg_values_supported": ["ES256"],
            })),
            ("GET", "/jwks") => {
                let keys: Vec<serde_json::Value> = self
                    .keys
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|k| k.2.clone())
                    .collect();
                ok(serde_json::json!({ "keys": keys }))
            }
            ("GET", "/authorize") => {
                let q = pairs(url);
                let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
                if q.get("client_id").map(String::as_str) != Some(CLIENT_ID)
                    || !redirect.starts_with("http://127.0.0.1:")
                    || q.get("code_challenge_method").map(String::as_str) != Some("S256")
                {
                    return err("invalid_request");
                }
                let code = format!("code-{}", rand::random::<u64>());
                self.people.lock().unwrap().codes.insert(
                    code.clone(),
                    (
                        q.get("nonce").cloned().unwrap_or_default(),
                        q.get("code_challenge").cloned().unwrap_or_default(),
                        redirect.clone(),
                    ),
                );
                let to = format!(
                    "{redirect}?code={code}&state={}",
                    q.get("state").cloned().unwrap_or_default()
                );
                (
                    "302 Found".into(),
                    format!("location: {to}\r\n"),
                    String::new(),
                )
            }
            ("POST", "/device") => {
                let device = format!("dev-{}", rand::random::<u64>());
                self.people
                    .lock()
                    .unwrap()
                    .devices
                    .insert(device.clone(), 0);
                ok(
                    serde_json::json!({"device_code": device, "user_code": "WDJB-MJHT",
                    "verification_uri": format!("{iss}/activate"), "interval": 1, "expires_in": 600}),
                )
            }
            ("POST", "/token") => {
                if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
                    || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
                {
                    return err("invalid_client");
                }
                let mut people = self.people.lock().unwrap();
                let nonce = match form.get("grant_type").map(String::as_str) {
                    Some("authorization_code") => {
                        let Some((nonce, challenge, redirect)) = people
                            .codes
                            .remove(form.get("code").map(String::as_str).unwrap_or(""))
                        else {
                            return err("invalid_grant");
                        };
                        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                        let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
                        if computed != challenge || form.get("redirect_uri") != Some(&redirect) {
                            return err("invalid_grant");
                        }
                        Some(nonce)
                    }
                    Some("urn:ietf:params:oauth:grant-type:device_code") => {
                        let Some(polls) = people
                            .devices
                            .get_mut(form.get("device_code").map(String::as_str).unwrap_or(""))
                        else {
                            return err("invalid_grant");
                        };
                        *polls += 1;
                        if *polls < 2 {
                            return err("authorization_pending");
                        }
                        None
                    }
                    Some("refresh_token") => {
                        if !people
                            .refresh
                            .contains(form.get("refresh_token").map(String::as_str).unwrap_or(""))
                        {
                            return err("invalid_grant");
                        }
                        None
                    }
                    _ => return err("unsupported_grant_type"),
                };
                let now = sluice_core::time::now_ms() / 1000;
                let (email, groups) = people.person.clone();
                let mut claims = serde_json::json!({
                    "iss": iss, "aud": CLIENT_ID, "sub": format!("sub-{email}"), "email": email,
                    "email_verified": true, "groups": groups, "iat": now, "exp": now + 300,
                });
                if let Some(n) = nonce {
                    claims["nonce"] = if people.wrong_nonce {
                        "not-it".into()
                    } else {
                        n.into()
                    };
                }
                let refresh = format!("rt-{}", rand::random::<u64>());
                people.refresh.insert(refresh.clone());
                drop(people);
                let keys = self.keys.lock().unwrap();
                let (kid, key, _) = keys.last().expect("a signing key");
                let id_token = self.sign(key, kid, &claims);
                ok(
                    serde_json::json!({"access_token": "opaque", "token_type": "Bearer",
                    "id_token": id_token, "refresh_token": refresh, "expires_in": 300}),
                )
            }
            _ => ("404 Not Found".into(), String::new(), "{}".into()),
        }
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

/// An HTTP GET with a raw socket; returns the status line and the Location header.
fn http_get(url: &str) -> (String, Option<String>) {
    use std::io::{BufRead, BufReader, Write};
    let u = reqwest::Url::parse(url).unwrap();
    let mut s = std::net::TcpStream::connect((u.host_str().unwrap(), u.port().unwrap())).unwrap();
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut location = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.strip_prefix("location: ") {
            location = Some(v.trim().to_string());
        }
    }
    (status.trim().to_string(), location)
}

/// Runs `sluice login --no-browser` and plays the browser: follows the
/// printed page to the provider and its redirect back to the CLI. Returns
/// both answers' status lines, whether the CLI signed in, and its stderr.
fn browser_sign_in(mut login: Command) -> (String, String, bool, String) {
    let mut login = login.stderr(Stdio::piped()).spawn().unwrap();
    let mut err = std::io::BufReader::new(login.stderr.take().unwrap());
    let url = loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(!line.is_empty(), "the CLI printed no sign-in page");
        if let Some(u) = line.trim().strip_prefix("http") {
            break format!("http{u}");
        }
    };
    let (to_provider, to) = http_get(&url);
    let (to_cli, _) = http_get(&to.unwrap());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let signed_in = login.wait().unwrap().success();
    (to_provider, to_cli, signed_in, rest)
}

#[test]
fn people_sign_in_with_their_provider_and_connect_without_handling_a_secret() {
    let target = PgServer::start(Auth::Scram, false);
    let idp = Idp::start();
    idp.new_key("k1", true);
    idp.people.lock().unwrap().person = (
        "alice@example.com".into(),
        vec!["eng-dba".into(), "unrelated".into()],
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client.secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let gw = Gateway::start(
        "",
        "",
        &format!(
            "{}\n[[identity.issuers]]\nname = \"corp\"\nissuer = \"{}\"\naudience = \"sluice\"\n\
             client_id = \"{CLIENT_ID}\"\nclient_secret_file = {:?}\nconnections = [\"shop\"]\nsession_ttl = \"10m\"\n\
             [identity.issuers.group_map]\neng-dba = [\"dba\"]\n",
            connection_toml("shop", &target, "prefer", "env = \"dev\""),
            idp.issuer,
            secret.to_str().unwrap()
        ),
    );
    let home = tempfile::tempdir().unwrap();
    let sluice = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.arg("--config")
            .arg(&gw.config)
            .args(args)
            .env_remove("SLUICE_URL")
            .env_remove("SLUICE_TOKEN")
            .env("SLUICE_HOME", home.path());
        c
    };

    // Authorization code with PKCE: the CLI prints the provider's page;
    // the "browser" follows it to the CLI's loopback redirect.
    let (to_provider, to_cli, signed_in, rest) =
        browser_sign_in(sluice(&["login", "--no-browser"]));
    assert!(to_provider.contains("302"), "{to_provider}");
    assert!(to_cli.contains("200"), "{to_cli}");
    assert!(signed_in, "{rest}");
    assert!(
        rest.contains("signed in as alice@example.com") && rest.contains("groups dba"),
        "{rest}"
    );

    // The credential is kept for the next commands: connect runs psql with
    // a token in its environment, never on the command line.
    let out = sluice(&[
        "connect",
        "shop",
        "--",
        "psql",
        "-X",
        "-At",
        "-c",
        "SELECT count(*) FROM orders",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100");
    let sessions = gw.cli_json(&["sessions", "list", "--principal", "alice@example.com"]);
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    let not_mine = sluice(&["connect", "other-db"]).output().unwrap();
    assert!(
        stderr(&not_mine).contains("does not include connection"),
        "{}",
        stderr(&not_mine)
    );

    // Renewal without the browser, while the provider allows; the renewed
    // sign-in descends from the first, so signing out ends both.
    let before = sluice(&["connect", "shop"]).output().unwrap();
    let before = String::from_utf8_lossy(&before.stdout).trim().to_string();
    let renewed = sluice(&["login", "--renew"]).output().unwrap();
    assert!(renewed.status.success(), "{}", stderr(&renewed));

    // A token from the signed-in credential dies when the person signs out.
    let printed = sluice(&["connect", "shop"]).output().unwrap();
    let conninfo = String::from_utf8_lossy(&printed.stdout).trim().to_string();
    assert!(conninfo.contains("user=alice@example.com"), "{conninfo}");
    assert_eq!(psql_ok(&conninfo, "SELECT 1").trim(), "1");
    let out = sluice(&["logout"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after = psql(&conninfo, "SELECT 1");
    assert!(stderr(&after).contains("revoked"), "{}", stderr(&after));
    let first = psql(&before, "SELECT 1");
    assert!(stderr(&first).contains("revoked"), "{}", stderr(&first));

    // The device flow, for machines without a browser (the test provider
    // approves on the second poll).
    let out = sluice(&["login", "--device"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("enter the code WDJB-MJHT"),
        "{}",
        stderr(&out)
    );

    // An ID token whose nonce is not this sign-in's is refused.
    idp.people.lock().unwrap().wrong_nonce = true;
    let (_, _, signed_in, rest) = browser_sign_in(sluice(&["login", "--no-browser"]));
    assert!(!signed_in);
    assert!(rest.contains("nonce does not match"), "{rest}");
}
