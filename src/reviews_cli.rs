//! `sluice reviews ...` and `sluice request ...`: the approvers' inbox and
//! decisions, and just-in-time access requests, over the API.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sluice_core::time::format_ms;

use crate::client::ApiClient;
use crate::{print_json, rows, s, table, JsonFlag};

/// `sluice reviews`
#[derive(Subcommand)]
pub enum ReviewsCmd {
    /// Pending reviews you may decide (or asked for); all of them for the admin.
    List {
        /// pending, approved, denied, expired, executed or cancelled.
        #[arg(long, default_value = "pending")]
        state: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// One review in full: statement, requester, reasons, impact, votes.
    Show {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Approve a review (with your own API credential in SLUICE_TOKEN).
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Deny a review; the reason is shown to the requester.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Withdraw your own review.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Wait until a review is decided; exit status 0 when approved (or
    /// already used), 1 when denied, expired or cancelled, 2 on timeout.
    Wait {
        id: String,
        /// Give up after this long.
        #[arg(long, default_value = "15m")]
        timeout: humantime::Duration,
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// `sluice request`
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RequestArgs {
    #[command(subcommand)]
    sub: Option<RequestSub>,
    /// The connection you need.
    #[arg(long)]
    connection: Option<String>,
    /// A narrower role (read-only, or one your policies know).
    #[arg(long)]
    role: Option<String>,
    /// How long you need it, such as 30m.
    #[arg(long = "for")]
    duration: Option<humantime::Duration>,
    /// Why: shown to approvers, required by default.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(Subcommand)]
enum RequestSub {
    /// Wait for the request's decision; once approved, print the token
    /// (issued now, once) on stdout.
    Wait {
        id: String,
        #[arg(long, default_value = "15m")]
        timeout: humantime::Duration,
        #[command(flatten)]
        out: JsonFlag,
    },
}

fn show(r: &Value) {
    println!(
        "review     {} ({}, {})",
        s(r, "id"),
        s(r, "kind"),
        s(r, "state")
    );
    let who = match r["actor"].as_str() {
        Some(a) => format!("{} via {a}", s(r, "principal")),
        None => s(r, "principal"),
    };
    println!("requester  {who}");
    println!("connection {}", s(r, "connection"));
    if let Some(st) = r["statement"].as_str() {
        println!("statement  {}", st.replace('\n', "\n           "));
    }
    if let Some(role) = r["role"].as_str() {
        println!("role       {role}");
    }
    if let Some(d) = r["duration_secs"].as_u64() {
        println!(
            "for        {}",
            humantime::format_duration(std::time::Duration::from_secs(d))
        );
    }
    if let Some(reason) = r["reason"].as_str() {
        println!("reason     {reason}");
    }
    println!("policy     {}", s(r, "policy_reason"));
    if let Some(i) = r["impact"]["summary"].as_str() {
        println!("impact     {i}");
    }
    let rule = &r["rule"];
    println!(
        "rule       {}: {} approval(s) from {}{}",
        s(rule, "name"),
        rule["approvals"],
        rule["approvers"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        if rule["allow_self_approval"].as_bool() == Some(true) {
            ", self-approval allowed"
        } else {
            ""
        }
    );
    for v in r["votes"].as_array().into_iter().flatten() {
        println!(
            "vote       {} {} {}{}",
            if v["approve"].as_bool() == Some(true) {
                "approved"
            } else {
                "denied"
            },
            s(v, "by"),
            v["at"].as_i64().map(format_ms).unwrap_or_default(),
            v["reason"]
                .as_str()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        );
    }
    if let Some(by) = r["decided_by"].as_str() {
        println!(
            "decided    by {by}{}",
            r["decision_reason"]
                .as_str()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        );
    }
    let expires = r["expires_at"].as_i64().map(format_ms).unwrap_or_default();
    match r["state"].as_str() {
        Some("pending") => println!("expires    {expires} unless decided"),
        Some("approved") => println!("valid until {expires}"),
        _ => {}
    }
}

/// Waits with repeated long polls until the review leaves `pending` or the
/// timeout passes; returns the review as last seen.
async fn wait_for(api: &ApiClient, id: &str, timeout: std::time::Duration) -> Result<Value> {
    let until = std::time::Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let poll = left.as_secs().clamp(1, 25);
        let r = api
            .get(
                &format!("/v1/reviews/{id}/wait"),
                &[("timeout_secs", poll.to_string())],
            )
            .await?;
        if r["state"] != "pending" || left.is_zero() {
            return Ok(r);
        }
    }
}

/// Approves, denies or cancels a review, with a reason.
async fn act(api: &ApiClient, id: &str, verb: &str, reason: Option<String>) -> Result<Value> {
    api.post(
        &format!("/v1/reviews/{id}/{verb}"),
        &json!({ "reason": reason }),
    )
    .await
}

/// Runs `sluice reviews ...`; returns the exit status.
pub async fn reviews(api: &ApiClient, cmd: ReviewsCmd) -> Result<std::process::ExitCode> {
    let (resp, out) = match cmd {
        ReviewsCmd::List { state, out } => {
            let list = api.get("/v1/reviews", &[("state", state)]).await?;
            if out.json {
                print_json(&list);
            } else {
                let rows = rows(&list, |r| {
                    let what = match r["statement"].as_str() {
                        Some(st) => st.lines().next().unwrap_or("").chars().take(60).collect(),
                        None => format!(
                            "access{} for {}s",
                            r["role"]
                                .as_str()
                                .map(|x| format!(" as {x}"))
                                .unwrap_or_default(),
                            r["duration_secs"]
                        ),
                    };
                    vec![
                        s(r, "id"),
                        s(r, "state"),
                        match r["actor"].as_str() {
                            Some(a) => format!("{} via {a}", s(r, "principal")),
                            None => s(r, "principal"),
                        },
                        s(r, "connection"),
                        r["expires_at"].as_i64().map(format_ms).unwrap_or_default(),
                        what,
                    ]
                });
                table(
                    &["ID", "STATE", "REQUESTER", "CONNECTION", "EXPIRES", "WHAT"],
                    rows,
                );
            }
            return Ok(std::process::ExitCode::SUCCESS);
        }
        ReviewsCmd::Show { id, out } => (api.get(&format!("/v1/reviews/{id}"), &[]).await?, out),
        ReviewsCmd::Approve { id, reason, out } => (act(api, &id, "approve", reason).await?, out),
        ReviewsCmd::Deny { id, reason, out } => (act(api, &id, "deny", Some(reason)).await?, out),
        ReviewsCmd::Cancel { id, reason, out } => (act(api, &id, "cancel", reason).await?, out),
        ReviewsCmd::Wait { id, timeout, out } => {
            let r = wait_for(api, &id, timeout.into()).await?;
            if out.json {
                print_json(&r);
            } else {
                show(&r);
            }
            return Ok(match r["state"].as_str() {
                Some("approved" | "executed") => std::process::ExitCode::SUCCESS,
                Some("pending") => std::process::ExitCode::from(2),
                _ => std::process::ExitCode::from(1),
            });
        }
    };
    if out.json {
        print_json(&resp);
    } else {
        show(&resp);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Runs `sluice request ...`; returns the exit status.
pub async fn request(api: &ApiClient, args: RequestArgs) -> Result<std::process::ExitCode> {
    if let Some(RequestSub::Wait { id, timeout, out }) = args.sub {
        let r = wait_for(api, &id, timeout.into()).await?;
        match r["state"].as_str() {
            Some("approved") => {}
            Some("pending") => {
                eprintln!("access request {id} is still pending");
                return Ok(std::process::ExitCode::from(2));
            }
            _ => {
                if !out.json {
                    show(&r);
                }
                bail!("access request {id} is {}", s(&r, "state"));
            }
        }
        let resp = api
            .post(&format!("/v1/requests/{id}/token"), &json!({}))
            .await?;
        if out.json {
            print_json(&resp);
        } else {
            eprintln!(
                "token {} for {} expires {} (shown once; store it now)",
                s(&resp["record"], "id"),
                s(&r, "connection"),
                resp["record"]["expires_at"]
                    .as_i64()
                    .map(format_ms)
                    .unwrap_or_default()
            );
            println!("{}", s(&resp, "token"));
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let (Some(connection), Some(duration)) = (args.connection, args.duration) else {
        bail!("sluice request needs --connection and --for (or: sluice request wait ID)");
    };
    let resp = api
        .post(
            "/v1/requests",
            &json!({"connection": connection, "role": args.role,
                    "duration_secs": std::time::Duration::from(duration).as_secs(),
                    "reason": args.reason}),
        )
        .await?;
    if args.out.json {
        print_json(&resp);
    } else {
        show(&resp);
        eprintln!(
            "wait for it, then get the token: sluice request wait {}",
            s(&resp, "id")
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
