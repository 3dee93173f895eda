//! `sluice login`, `sluice logout` and `sluice connect`: signing in with
//! the identity provider (authorization code with PKCE through a loopback
//! redirect, or the device flow), keeping the short-lived credential in a
//! private file, and running a client with a connection token in its
//! environment so the token is never typed or pasted.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sluice_core::time::format_ms;

use crate::client::ApiClient;
use crate::config::Config;

/// Where the signed-in credential is kept: `$SLUICE_HOME/credential`, or
/// `~/.sluice/credential`.
pub fn credential_path() -> Option<PathBuf> {
    let home = std::env::var_os("SLUICE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".sluice")))?;
    Some(home.join("credential"))
}

fn save(resp: &Value) -> Result<()> {
    let path = credential_path().ok_or_else(|| anyhow!("set SLUICE_HOME or HOME"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let token = resp["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no token in the answer"))?;
    sluice_pg::tls::write_private(&path, format!("{token}\n").as_bytes())?;
    let rec = &resp["record"];
    eprintln!(
        "signed in as {} until {}{} (credential in {})",
        rec["principal"].as_str().unwrap_or("?"),
        rec["expires_at"]
            .as_i64()
            .map(format_ms)
            .unwrap_or_default(),
        match rec["groups"].as_array() {
            Some(g) if !g.is_empty() => format!(
                ", groups {}",
                g.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        },
        path.display()
    );
    Ok(())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs in; `issuer` picks the provider when several are configured.
pub async fn login(
    cfg: &Config,
    issuer: Option<String>,
    device: bool,
    no_browser: bool,
    renew: bool,
) -> Result<()> {
    if renew {
        let api = ApiClient::from_env_or_config(cfg)?;
        let resp = api.post("/v1/login/refresh", &json!({})).await?;
        return save(&resp);
    }
    let anon = ApiClient::anonymous(cfg);
    let providers = anon.get("/v1/login/providers", &[]).await?;
    let list = providers.as_array().cloned().unwrap_or_default();
    let provider = match &issuer {
        Some(n) => list.iter().find(|p| p["name"] == n.as_str()),
        None if list.len() == 1 => list.first(),
        None => bail!(
            "several identity providers: pick one with --issuer ({})",
            list.iter()
                .filter_map(|p| p["name"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    .ok_or_else(|| anyhow!("no identity provider for sign-in is configured on the gateway"))?
    .clone();
    let name = provider["name"].as_str().unwrap_or_default().to_string();
    if device {
        return device_login(&anon, &name).await;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let redirect = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let verifier = b64(&rand::random::<[u8; 32]>());
    let challenge = b64(&Sha256::digest(verifier.as_bytes()));
    let state = hex::encode(rand::random::<[u8; 16]>());
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let scopes: Vec<&str> = provider["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let url = reqwest::Url::parse_with_params(
        provider["authorization_endpoint"]
            .as_str()
            .ok_or_else(|| anyhow!("the provider has no authorization endpoint"))?,
        &[
            ("response_type", "code"),
            (
                "client_id",
                provider["client_id"].as_str().unwrap_or_default(),
            ),
            ("redirect_uri", &redirect),
            ("scope", &scopes.join(" ")),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )?;
    eprintln!("To sign in, open this page:\n  {url}");
    if !no_browser {
        let _ = std::process::Command::new("xdg-open")
            .arg(url.as_str())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let code = tokio::task::spawn_blocking(move || receive_code(listener, &state))
        .await
        .map_err(|e| anyhow!("{e}"))??;
    let resp = anon
        .post(
            "/v1/login/code",
            &json!({"issuer": name, "code": code, "code_verifier": verifier,
                    "redirect_uri": redirect, "nonce": nonce}),
        )
        .await?;
    save(&resp)
}

/// Waits (five minutes at most) for the provider's redirect to the
/// loopback address; returns the code once the state matches.
fn receive_code(listener: std::net::TcpListener, state: &str) -> Result<String> {
    let until = Instant::now() + Duration::from_secs(300);
    listener.set_nonblocking(true)?;
    loop {
        let (mut stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > until {
                    bail!("no sign-in within five minutes");
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // Anything that is not the provider's redirect is ignored: another
        // local process or a web page probing ports cannot end the sign-in.
        if stream.set_nonblocking(false).is_err()
            || stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .is_err()
        {
            continue;
        }
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        let Ok(url) = reqwest::Url::parse(&format!("http://127.0.0.1{path}")) else {
            continue;
        };
        let param = |k: &str| {
            url.query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string())
        };
        let (status, page, result) = match (param("code"), param("state"), param("error")) {
            (Some(code), Some(s), None) if s == state => (
                "200 OK",
                "Signed in to sluice. You can close this window.",
                Ok(code),
            ),
            (_, Some(s), Some(err)) if s == state => (
                "400 Bad Request",
                "Sign-in failed; see the terminal.",
                Err(anyhow!(
                    "the provider refused: {}",
                    sluice_core::review::printable(&format!(
                        "{err} {}",
                        param("error_description").unwrap_or_default()
                    ))
                )),
            ),
            _ => {
                // Not the provider's redirect (or a forged one): ignore it.
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            }
        };
        let _ = stream.write_all(
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            )
            .as_bytes(),
        );
        return result;
    }
}

async fn device_login(anon: &ApiClient, issuer: &str) -> Result<()> {
    let start = anon
        .post("/v1/login/device", &json!({ "issuer": issuer }))
        .await?;
    eprintln!(
        "To sign in, open {} and enter the code {}",
        start["verification_uri"].as_str().unwrap_or("?"),
        start["user_code"].as_str().unwrap_or("?")
    );
    let id = start["login_id"].as_str().unwrap_or_default().to_string();
    let every = Duration::from_secs(start["interval"].as_u64().unwrap_or(5).clamp(1, 60));
    let until = Instant::now() + Duration::from_secs(start["expires_in"].as_u64().unwrap_or(600));
    while Instant::now() < until {
        tokio::time::sleep(every).await;
        let resp = anon
            .post("/v1/login/device/poll", &json!({ "login_id": id }))
            .await?;
        if resp["pending"] != true {
            return save(&resp);
        }
    }
    bail!("the sign-in was not completed in time")
}

/// Ends the sign-in: the credential, and every token from it, is revoked.
pub async fn logout(cfg: &Config) -> Result<()> {
    let api = ApiClient::from_env_or_config(cfg)?;
    api.post("/v1/login/logout", &json!({})).await?;
    if let Some(path) = credential_path() {
        let _ = std::fs::remove_file(path);
    }
    eprintln!("signed out; tokens connected or delegated from this sign-in are revoked");
    Ok(())
}

/// Gets a connection token; runs `command` with it in the environment, or
/// prints a connection string.
pub async fn connect(
    cfg: &Config,
    connection: &str,
    ttl: Duration,
    command: &[String],
) -> Result<std::process::ExitCode> {
    let api = ApiClient::from_env_or_config(cfg)?;
    // A fresh key for SSH connections, which the gateway certifies for
    // the token's lifetime; PostgreSQL connections ignore it.
    let key = sluice_ssh::keys::new_key();
    let public = key.public_key().to_openssh()?;
    let resp = api
        .post(
            "/v1/connect",
            &json!({"connection": connection, "ttl_secs": ttl.as_secs(), "public_key": public}),
        )
        .await?;
    if resp["kind"] == "ssh" {
        return connect_ssh(connection, &resp, &key, command);
    }
    let field = |k: &str| resp[k].as_str().unwrap_or_default().to_string();
    let Some((program, args)) = command.split_first() else {
        println!(
            "host={} port={} dbname={} user={} password={} sslmode=require",
            field("host"),
            field("port"),
            field("database"),
            field("user"),
            field("token")
        );
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let status = std::process::Command::new(program)
        .args(args)
        .env("PGHOST", field("host"))
        .env("PGPORT", field("port"))
        .env("PGDATABASE", field("database"))
        .env("PGUSER", field("user"))
        .env("PGPASSWORD", field("token"))
        .env("PGSSLMODE", "require")
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    Ok(std::process::ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8,
    ))
}

/// Writes the key, its certificate, the gateway's pinned host key and an
/// ssh config naming the connection as a host, then runs `ssh`, `scp` or
/// `sftp` with that config (`sluice connect web-1 -- ssh web-1 uptime`).
/// Without a command the files stay, and how to use them is printed.
fn connect_ssh(
    connection: &str,
    resp: &Value,
    key: &sluice_ssh::keys::PrivateKey,
    command: &[String],
) -> Result<std::process::ExitCode> {
    let field = |k: &str| resp[k].as_str().unwrap_or_default().to_string();
    let home = credential_path()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .ok_or_else(|| anyhow!("set SLUICE_HOME or HOME"))?;
    let dir = home.join("ssh").join(format!(
        "{connection}-{}",
        hex::encode(rand::random::<[u8; 4]>())
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key_path = dir.join("id_ed25519");
    let text = key
        .to_openssh(sluice_ssh::keys::LineEnding::LF)
        .map_err(|e| anyhow!("cannot encode the key: {e}"))?;
    sluice_pg::tls::write_private(&key_path, text.as_bytes())?;
    let cert_path = dir.join("id_ed25519-cert.pub");
    std::fs::write(&cert_path, format!("{}\n", field("certificate")))?;
    let (host, port) = (field("host"), field("port"));
    let known = dir.join("known_hosts");
    std::fs::write(&known, format!("[{host}]:{port} {}\n", field("host_key")))?;
    let config = dir.join("config");
    std::fs::write(
        &config,
        format!(
            "Host {connection}\n  HostName {host}\n  Port {port}\n  User {connection}\n  IdentityFile {}\n  CertificateFile {}\n  IdentitiesOnly yes\n  PreferredAuthentications publickey\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  HostKeyAlias [{host}]:{port}\n",
            key_path.display(),
            cert_path.display(),
            known.display()
        ),
    )?;
    let until = resp["record"]["expires_at"]
        .as_i64()
        .map(format_ms)
        .unwrap_or_default();
    let Some((program, args)) = command.split_first() else {
        println!("ssh -F {} {connection}", config.display());
        eprintln!(
            "certificate valid until {until}; files in {}",
            dir.display()
        );
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let status = std::process::Command::new(program)
        .arg("-F")
        .arg(&config)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {program}"));
    // Nothing outlives the command: the certificate is short-lived, and
    // the key goes with it.
    let _ = std::fs::remove_dir_all(&dir);
    let status = status?;
    Ok(std::process::ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8,
    ))
}
