//! `sluice`: the gateway and its command-line client.

mod api;
mod api_identity;
mod api_reviews;
mod client;
mod config;
mod gateway;
mod login;
mod login_cli;
mod oidc;
mod policy_cli;
mod reviews_cli;
mod webhooks;

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use sluice_core::time::format_ms;

use crate::client::ApiClient;
use crate::config::Config;

/// Just-in-time access gateway for tool-using agents.
#[derive(Parser)]
#[command(name = "sluice", version)]
struct Cli {
    /// Configuration file; client commands read the API address and the admin credential from it.
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Gateway,
    /// Issue, list and revoke access tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Inspect recorded sessions.
    #[command(subcommand)]
    Sessions(SessionsCmd),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// List configured connections.
    #[command(subcommand)]
    Connections(ConnectionsCmd),
    /// Check, test and reload policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Verify masking: what a masked principal receives, and what is not covered.
    #[command(subcommand)]
    Mask(MaskCmd),
    /// Decide, inspect and wait for reviews (commands and access requests).
    #[command(subcommand)]
    Reviews(reviews_cli::ReviewsCmd),
    /// Ask for time-boxed access to a connection, or wait for a request's token.
    Request(reviews_cli::RequestArgs),
    /// Sign in with your identity provider; the short-lived credential is
    /// kept in $SLUICE_HOME/credential (default ~/.sluice) for the commands
    /// that follow.
    Login {
        /// The provider, when the gateway has several.
        #[arg(long)]
        issuer: Option<String>,
        /// Device flow, for machines without a browser.
        #[arg(long)]
        device: bool,
        /// Print the sign-in page's address instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
        /// Renew the current sign-in without the browser, while the provider allows.
        #[arg(long)]
        renew: bool,
    },
    /// End your sign-in; tokens connected or delegated from it are revoked.
    Logout,
    /// Get a token for a connection as yourself and run a client with it in
    /// its environment (PGHOST, PGUSER, PGPASSWORD, ...), or print a
    /// connection string.
    Connect {
        /// The connection.
        connection: String,
        /// How long the token lives (cut to your sign-in's).
        #[arg(long = "for", default_value = "30m")]
        ttl: humantime::Duration,
        /// The client to run, after `--`: `sluice connect shop -- psql`.
        #[arg(last = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum MaskCmd {
    /// Run a read through the gateway's masking and show, column by column,
    /// what a masked principal would receive and the rule that fired.
    Test {
        #[arg(long)]
        connection: String,
        /// One read statement (run in a read-only transaction).
        sql: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Sample the connection's tables and list columns whose values trip a
    /// detector but have no column rule (values are never shown).
    Scan {
        #[arg(long)]
        connection: String,
        /// List covered columns too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Classify a statement and decide it, exactly as the gateway would.
    Check {
        /// The connection it would run on.
        #[arg(long)]
        connection: String,
        /// The accountable principal.
        #[arg(long)]
        principal: String,
        /// The agent acting for the principal.
        #[arg(long)]
        actor: Option<String>,
        /// The statement (one message; several statements allowed).
        sql: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Run a file of cases (connection, principal, actor, sql, expect) and
    /// report mismatches; exit status 1 when any case fails.
    Test {
        /// TOML file with [[case]] tables.
        file: PathBuf,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Ask the running gateway to re-read its policy files.
    Reload {
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Args)]
pub(crate) struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Issue a short-lived token; the token is printed once, on stdout.
    Issue {
        /// Who is accountable (the user name clients connect with).
        #[arg(long)]
        principal: String,
        /// The agent acting for the principal.
        #[arg(long)]
        actor: Option<String>,
        /// Connection the token opens (repeat for several).
        #[arg(long = "connection", required_unless_present = "api")]
        connections: Vec<String>,
        /// Issue an API credential for the principal (to approve reviews,
        /// request access, and delegate the connections given) instead of
        /// a connection token.
        #[arg(long)]
        api: bool,
        /// A narrower role: read-only, or a name policies read as context.role.
        #[arg(long)]
        role: Option<String>,
        /// Lifetime, such as 10m or 1h.
        #[arg(long, default_value = "15m")]
        ttl: humantime::Duration,
        /// Number of connections it may open.
        #[arg(long)]
        uses: Option<i64>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Mint a token for an agent acting for you (your credential in
    /// SLUICE_TOKEN): never more connections, a longer life or a wider
    /// role than yours; revoking yours revokes it.
    Delegate {
        /// The agent, as agent:NAME.
        #[arg(long)]
        actor: String,
        /// Connection it opens (repeat for several); yours must hold it.
        #[arg(long = "connection", required = true)]
        connections: Vec<String>,
        /// Lifetime, cut to your credential's.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Reads only.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Trade a workload's OIDC token (a CI job's) for a sluice token
    /// (OAuth 2.0 Token Exchange); needs no sluice credential. The token is
    /// printed on stdout.
    Exchange {
        /// File holding the subject token (a JWT), such as the one GitHub
        /// Actions hands the job.
        #[arg(long)]
        subject_token_file: PathBuf,
        /// The connection wanted; all the trust rule grants when absent.
        #[arg(long)]
        connection: Option<String>,
        /// Lifetime wanted, cut to the rule's longest.
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List live tokens (never their values).
    List {
        /// Include expired and revoked tokens.
        #[arg(long)]
        all: bool,
        /// List people's API credentials instead of connection tokens.
        #[arg(long)]
        api: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Revoke a token; sessions opened with it are closed within seconds.
    Revoke {
        /// Token id (tok_...).
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Subcommand)]
enum SessionsCmd {
    /// List sessions, newest first.
    List {
        #[arg(long)]
        connection: Option<String>,
        #[arg(long)]
        principal: Option<String>,
        /// RFC 3339 time, or a duration ago (2h).
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time, or a duration ago.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show one session's timeline.
    Show {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Play a session's terminal recordings with their timing.
    Replay {
        id: String,
        /// Playback speed (2 = twice as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Longest pause played, in seconds (after --speed).
        #[arg(long, default_value_t = 2.0)]
        max_idle: f64,
        /// Only this recording (a channel number; all in order by default).
        #[arg(long)]
        channel: Option<u64>,
        /// Write the recording (asciicast v2) to stdout instead of playing it.
        #[arg(long)]
        raw: bool,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the hash chain; names the first broken record.
    Verify {
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Subcommand)]
enum ConnectionsCmd {
    /// List connections.
    List {
        #[command(flatten)]
        out: JsonFlag,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One crypto provider for every TLS client and server in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<std::process::ExitCode> {
    let cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded(),
    };
    match cli.command {
        Cmd::Gateway => {
            gateway::run(cfg).await?;
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Cmd::Policy(PolicyCmd::Check {
            connection,
            principal,
            actor,
            sql,
            out,
        }) => {
            let policy = policy_cli::LocalPolicy::load(&cfg)?;
            let (c, d) = policy.check(&connection, &principal, actor.as_deref(), &sql)?;
            policy_cli::print_check(&c, &d, out.json);
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Cmd::Login {
            issuer,
            device,
            no_browser,
            renew,
        } => {
            login_cli::login(&cfg, issuer, device, no_browser, renew).await?;
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Cmd::Logout => {
            login_cli::logout(&cfg).await?;
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Cmd::Connect {
            connection,
            ttl,
            command,
        } => return login_cli::connect(&cfg, &connection, ttl.into(), &command).await,
        Cmd::Policy(PolicyCmd::Test { file, out }) => {
            let policy = policy_cli::LocalPolicy::load(&cfg)?;
            return Ok(if policy_cli::run_tests(&policy, &file, out.json)? {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            });
        }
        _ => {}
    }
    if let Cmd::Token(TokenCmd::Exchange {
        subject_token_file,
        connection,
        ttl,
        out,
    }) = cli.command
    {
        let subject = std::fs::read_to_string(&subject_token_file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", subject_token_file.display()))?;
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange".to_string(),
            ),
            ("subject_token", subject.trim().to_string()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:jwt".to_string(),
            ),
        ];
        if let Some(c) = connection {
            form.push(("resource", c));
        }
        if let Some(t) = ttl {
            form.push(("ttl", t.as_secs().to_string()));
        }
        let resp = ApiClient::anonymous(&cfg)
            .post_form("/v1/token/exchange", &form)
            .await?;
        if out.json {
            print_json(&resp);
        } else {
            eprintln!(
                "token {} for {} on {} for {}s (shown once)",
                s(&resp, "sluice_token_id"),
                s(&resp, "principal"),
                resp["connections"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default(),
                resp["expires_in"]
            );
            println!("{}", s(&resp, "access_token"));
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let api = ApiClient::from_env_or_config(&cfg)?;
    match cli.command {
        Cmd::Gateway
        | Cmd::Login { .. }
        | Cmd::Logout
        | Cmd::Connect { .. }
        | Cmd::Policy(PolicyCmd::Check { .. } | PolicyCmd::Test { .. }) => {
            unreachable!("handled above")
        }
        Cmd::Policy(PolicyCmd::Reload { out }) => {
            let resp = api.post("/v1/policy/reload", &json!({})).await?;
            if out.json {
                print_json(&resp);
            } else {
                println!(
                    "policies reloaded: {} ({})",
                    resp["policies"].as_array().map(|a| a.len()).unwrap_or(0),
                    s(&resp, "digest")
                );
            }
        }
        Cmd::Token(t) => token(&api, t).await?,
        Cmd::Reviews(r) => return reviews_cli::reviews(&api, r).await,
        Cmd::Request(r) => return reviews_cli::request(&api, r).await,
        Cmd::Mask(m) => mask(&api, m).await?,
        Cmd::Sessions(s) => sessions(&api, s).await?,
        Cmd::Connections(ConnectionsCmd::List { out }) => {
            let list = api.get("/v1/connections", &[]).await?;
            if out.json {
                print_json(&list);
            } else {
                let rows = rows(&list, |c| {
                    vec![
                        s(c, "name"),
                        s(c, "kind"),
                        s(c, "address"),
                        s(c, "database"),
                        c["tags"].to_string(),
                    ]
                });
                table(&["NAME", "KIND", "ADDRESS", "DATABASE", "TAGS"], rows);
            }
        }
        Cmd::Audit(AuditCmd::Verify { out }) => {
            let report = api.get("/v1/audit/verify", &[]).await?;
            let ok = report["ok"].as_bool().unwrap_or(false);
            if out.json {
                print_json(&report);
            } else if ok {
                println!("audit chain intact: {} events verified", report["checked"]);
            } else {
                println!(
                    "audit chain BROKEN at event {}: {}",
                    report["first_broken_seq"],
                    report["problem"].as_str().unwrap_or("unknown problem")
                );
            }
            if !ok {
                return Ok(std::process::ExitCode::from(1));
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn token(api: &ApiClient, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Issue {
            principal,
            actor,
            connections,
            api: api_credential,
            role,
            ttl,
            uses,
            out,
        } => {
            let ttl_secs = ttl.as_secs();
            if ttl_secs == 0 {
                bail!("--ttl must be at least 1s");
            }
            let resp = api
                .post(
                    "/v1/tokens",
                    &json!({"principal": principal, "actor": actor, "connections": connections, "ttl_secs": ttl_secs,
                            "uses": uses, "role": role, "api": api_credential}),
                )
                .await?;
            if out.json {
                print_json(&resp);
            } else {
                let rec = &resp["record"];
                eprintln!(
                    "token {} for {} on {} expires {} (shown once; store it now)",
                    s(rec, "id"),
                    s(rec, "principal"),
                    rec["connections"]
                        .as_array()
                        .map(|a| a
                            .iter()
                            .map(|v| v.as_str().unwrap_or(""))
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default(),
                    rec["expires_at"]
                        .as_i64()
                        .map(format_ms)
                        .unwrap_or_default()
                );
                println!("{}", s(&resp, "token"));
            }
        }
        TokenCmd::Exchange { .. } => unreachable!("handled before a credential is needed"),
        TokenCmd::Delegate {
            actor,
            connections,
            ttl,
            read_only,
            out,
        } => {
            let resp = api
                .post(
                    "/v1/tokens/delegate",
                    &json!({"actor": actor, "connections": connections,
                            "ttl_secs": ttl.as_secs(), "read_only": read_only}),
                )
                .await?;
            if out.json {
                print_json(&resp);
            } else {
                let rec = &resp["record"];
                eprintln!(
                    "token {} for {} acting for {} expires {} (shown once)",
                    s(rec, "id"),
                    s(rec, "actor"),
                    s(rec, "principal"),
                    rec["expires_at"]
                        .as_i64()
                        .map(format_ms)
                        .unwrap_or_default()
                );
                println!("{}", s(&resp, "token"));
            }
        }
        TokenCmd::List {
            all,
            api: api_credentials,
            out,
        } => {
            let list = api
                .get(
                    "/v1/tokens",
                    &[
                        ("all", all.to_string()),
                        ("api", api_credentials.to_string()),
                    ],
                )
                .await?;
            if out.json {
                print_json(&list);
            } else {
                let now = sluice_core::time::now_ms();
                let rows = rows(&list, |t| {
                    let state = if !t["revoked_at"].is_null() {
                        "revoked"
                    } else if t["expires_at"].as_i64().unwrap_or(0) <= now {
                        "expired"
                    } else {
                        "active"
                    };
                    vec![
                        s(t, "id"),
                        s(t, "principal"),
                        s(t, "actor"),
                        t["connections"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default(),
                        t["expires_at"].as_i64().map(format_ms).unwrap_or_default(),
                        t["uses_left"]
                            .as_i64()
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "-".into()),
                        state.into(),
                    ]
                });
                table(
                    &[
                        "ID",
                        "PRINCIPAL",
                        "ACTOR",
                        "CONNECTIONS",
                        "EXPIRES",
                        "USES",
                        "STATE",
                    ],
                    rows,
                );
            }
        }
        TokenCmd::Revoke { id, out } => {
            let resp = api
                .post(&format!("/v1/tokens/{id}/revoke"), &json!({}))
                .await?;
            if out.json {
                print_json(&resp);
            } else {
                println!("revoked {id}; sessions opened with it are being closed");
            }
        }
    }
    Ok(())
}

async fn sessions(api: &ApiClient, cmd: SessionsCmd) -> Result<()> {
    match cmd {
        SessionsCmd::List {
            connection,
            principal,
            since,
            until,
            limit,
            out,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("connection", connection),
                ("principal", principal),
                ("since", since),
                ("until", until),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let list = api.get("/v1/sessions", &q).await?;
            if out.json {
                print_json(&list);
            } else {
                let rows = rows(&list, |r| {
                    vec![
                        s(r, "id"),
                        s(r, "principal"),
                        s(r, "actor"),
                        s(r, "connection"),
                        s(r, "client_addr"),
                        r["started_at"].as_i64().map(format_ms).unwrap_or_default(),
                        r["ended_at"]
                            .as_i64()
                            .map(format_ms)
                            .unwrap_or_else(|| "-".into()),
                        s(r, "outcome"),
                    ]
                });
                table(
                    &[
                        "ID",
                        "PRINCIPAL",
                        "ACTOR",
                        "CONNECTION",
                        "CLIENT",
                        "STARTED",
                        "ENDED",
                        "OUTCOME",
                    ],
                    rows,
                );
            }
        }
        SessionsCmd::Replay {
            id,
            speed,
            max_idle,
            channel,
            raw,
        } => replay(api, &id, speed, max_idle, channel, raw).await?,
        SessionsCmd::Show { id, out } => {
            let resp = api.get(&format!("/v1/sessions/{id}"), &[]).await?;
            if out.json {
                print_json(&resp);
                return Ok(());
            }
            let ses = &resp["session"];
            println!("session     {}", s(ses, "id"));
            println!("principal   {}", s(ses, "principal"));
            if !ses["actor"].is_null() {
                println!("actor       {}", s(ses, "actor"));
            }
            println!(
                "connection  {} ({})",
                s(ses, "connection"),
                s(ses, "protocol")
            );
            println!("client      {}", s(ses, "client_addr"));
            println!(
                "started     {}",
                ses["started_at"]
                    .as_i64()
                    .map(format_ms)
                    .unwrap_or_default()
            );
            println!(
                "ended       {}",
                ses["ended_at"]
                    .as_i64()
                    .map(format_ms)
                    .unwrap_or_else(|| "(open)".into())
            );
            println!(
                "bytes       in {} / out {}",
                ses["bytes_in"], ses["bytes_out"]
            );
            println!("outcome     {}", s(ses, "outcome"));
            println!();
            for e in resp["events"].as_array().into_iter().flatten() {
                let ts = e["ts"].as_i64().map(format_ms).unwrap_or_default();
                let d = &e["data"];
                let line = match e["kind"].as_str().unwrap_or("") {
                    "command" => {
                        let mut l = format!("#{} [{}] {}", d["n"], s(d, "path"), s(d, "text"));
                        if d["decision"].is_object() {
                            l.push_str(&format!("  [{}]", decision_text(d)));
                        }
                        if d["outcome"].is_object() {
                            l.push_str(&format!("  => {}", outcome_text(&d["outcome"])));
                        }
                        l
                    }
                    "command.result" => format!("#{} {}", d["command"], outcome_text(d)),
                    _ => d.to_string(),
                };
                println!("{ts}  #{:<6} {:<15} {line}", e["seq"], s(e, "kind"));
            }
        }
    }
    Ok(())
}

/// Fetches a session's recordings (the gateway checks each against the
/// digest in the audit chain) and plays them one after the other.
async fn replay(
    api: &ApiClient,
    id: &str,
    speed: f64,
    max_idle: f64,
    channel: Option<u64>,
    raw: bool,
) -> Result<()> {
    if !(speed > 0.0 && speed.is_finite()) {
        bail!("--speed must be a positive number");
    }
    let resp = api.get(&format!("/v1/sessions/{id}"), &[]).await?;
    let files: Vec<String> = resp["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "recording")
        .filter(|e| channel.is_none_or(|c| e["data"]["channel"].as_u64() == Some(c)))
        .filter_map(|e| e["data"]["file"].as_str().map(str::to_string))
        .collect();
    if files.is_empty() {
        bail!("session {id} has no recordings (only SSH exec and shell channels are recorded)");
    }
    let mut stdout = tokio::io::stdout();
    for file in files {
        let bytes = api
            .get_bytes(&format!("/v1/sessions/{id}/recordings/{file}"))
            .await?;
        if raw {
            use tokio::io::AsyncWriteExt;
            stdout.write_all(&bytes).await?;
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        let cast = sluice_core::recording::read_cast(&text)
            .map_err(|e| anyhow::anyhow!("recording {file}: {e}"))?;
        sluice_core::recording::replay(
            &cast,
            speed,
            std::time::Duration::from_secs_f64(max_idle.max(0.0)),
            &mut stdout,
        )
        .await?;
    }
    Ok(())
}

/// `class, decision by policy`, and what shadow policy would have done.
fn decision_text(d: &Value) -> String {
    let dec = &d["decision"];
    let class = d["classification"]["effects"]
        .as_array()
        .and_then(|e| e.last())
        .and_then(|c| c.as_str())
        .unwrap_or("?");
    let policies = |x: &Value| {
        x["policies"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let mut t = format!("{class}, {} by {}", s(dec, "effect"), policies(dec));
    if dec["shadow"].is_object() {
        let sh = &dec["shadow"];
        t.push_str(&format!(
            "; shadow: would {} by {}",
            s(sh, "effect"),
            policies(sh)
        ));
    }
    t
}

fn outcome_text(o: &Value) -> String {
    let mut l = format!("{} in {}us", s(o, "status"), o["duration_us"]);
    if let Some(r) = o["rows"].as_u64() {
        l.push_str(&format!(", {r} rows"));
    }
    if let Some(c) = o["error_code"].as_str() {
        l.push_str(&format!(", SQLSTATE {c}"));
    }
    l
}

pub(crate) fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn rows(list: &Value, f: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array()
        .map(|a| a.iter().map(f).collect())
        .unwrap_or_default()
}

pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

async fn mask(api: &ApiClient, cmd: MaskCmd) -> Result<()> {
    match cmd {
        MaskCmd::Test {
            connection,
            sql,
            out,
        } => {
            let r = api
                .post(
                    "/v1/mask/test",
                    &json!({"connection": connection, "sql": sql}),
                )
                .await?;
            if out.json {
                print_json(&r);
                return Ok(());
            }
            let cols = r["columns"].as_array().cloned().unwrap_or_default();
            for (i, c) in cols.iter().enumerate() {
                let counts = c["masked"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k} x{v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                println!(
                    "column {} {:?}: {}{}",
                    i + 1,
                    s(c, "name"),
                    s(c, "masked_by"),
                    if counts.is_empty() {
                        String::new()
                    } else {
                        format!(" (masked: {counts})")
                    }
                );
            }
            println!();
            for row in r["rows"].as_array().cloned().unwrap_or_default() {
                let cells: Vec<String> = row
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| "NULL".into())
                    })
                    .collect();
                println!("{}", cells.join(" | "));
            }
            if r["truncated"].as_bool() == Some(true) {
                println!("(more rows not shown)");
            }
        }
        MaskCmd::Scan {
            connection,
            all,
            out,
        } => {
            let r = api
                .post(
                    "/v1/mask/scan",
                    &json!({"connection": connection, "all": all}),
                )
                .await?;
            if out.json {
                print_json(&r);
                return Ok(());
            }
            let findings = r["findings"].as_array().cloned().unwrap_or_default();
            if findings.is_empty() {
                println!("no uncovered column holds values a detector recognises");
            }
            for f in findings {
                let kinds = f["kinds"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k} in {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                println!(
                    "{}: {kinds} of {} sampled values; {}",
                    s(&f, "column"),
                    f["sampled"],
                    match f["rule"].as_str() {
                        Some(r) => format!("covered by {r}"),
                        None => "no column rule".into(),
                    }
                );
            }
        }
    }
    Ok(())
}

pub(crate) fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
