//! `sluice gateway`: opens the store, ensures the admin credential, and
//! runs the listeners and the API until interrupted.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use sluice_core::audit::EventDraft;
use sluice_core::journal::Journal;
use sluice_core::{Core, Store};
use sluice_pg::classify::Classifier;
use sluice_pg::{PgGateway, PgOptions};

use crate::config::Config;

/// The file in the data directory that holds the CLI's admin credential.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Runs the gateway.
pub async fn run(cfg: Config) -> Result<()> {
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let connections = cfg.connections()?;
    let store_ca = cfg.gateway.store_ca_file.as_ref().map(|p| cfg.resolve(p));
    let store = Store::open(
        cfg.gateway.store.as_deref(),
        &data_dir.join("sluice.db"),
        store_ca.as_deref(),
    )
    .await
    .context("cannot open the store")?;
    let gateway_id = gateway_id(&data_dir)?;
    let journal = Journal::open(
        &data_dir.join("journal"),
        &gateway_id,
        store.clone(),
        cfg.gateway.audit_fsync,
    )
    .await
    .context("cannot open the audit journal")?;
    let pg_functions = cfg.pg_functions()?;
    let (issuers, trust) = cfg.identity()?;
    let core = Core::new(
        store,
        journal,
        connections,
        cfg.gateway.max_token_ttl,
        cfg.policy_config(),
        cfg.masking(masking_key(&cfg, &data_dir)?)?,
        cfg.review_settings()?,
    )
    .map_err(|e| anyhow::anyhow!("{}: invalid policy: {e}", cfg.source))?;
    core.spawn_revocation_watch(Duration::from_secs(1));
    core.spawn_review_tasks(Duration::from_secs(5));
    crate::webhooks::spawn(&core, cfg.webhooks()?);
    ensure_admin_credential(&core, &data_dir).await?;

    let server_tls = sluice_pg::tls::server_config(
        cfg.postgres
            .tls_cert
            .as_ref()
            .map(|p| cfg.resolve(p))
            .as_deref(),
        cfg.postgres
            .tls_key
            .as_ref()
            .map(|p| cfg.resolve(p))
            .as_deref(),
        &data_dir,
    )?;
    let pg = PgGateway::new(
        core.clone(),
        PgOptions {
            server_tls,
            allow_plaintext_loopback: cfg.postgres.allow_plaintext_loopback,
            classifier: Arc::new(Classifier::new(pg_functions)),
        },
    )?;
    let ssh = ssh_gateway(&cfg, &core, &data_dir)?;
    let ssh_listener = tokio::net::TcpListener::bind(&cfg.ssh.listen)
        .await
        .with_context(|| format!("ssh.listen: cannot listen on {}", cfg.ssh.listen))?;
    let pg_listener = tokio::net::TcpListener::bind(&cfg.postgres.listen)
        .await
        .with_context(|| format!("postgres.listen: cannot listen on {}", cfg.postgres.listen))?;
    let api_listener = tokio::net::TcpListener::bind(&cfg.gateway.api_listen)
        .await
        .with_context(|| {
            format!(
                "gateway.api_listen: cannot listen on {}",
                cfg.gateway.api_listen
            )
        })?;

    core.record(EventDraft::new(
        "gateway.start",
        json!({"version": env!("CARGO_PKG_VERSION"), "postgres": cfg.postgres.listen, "ssh": cfg.ssh.listen, "api": cfg.gateway.api_listen,
               "connections": core.connections().map(|c| c.name.clone()).collect::<Vec<_>>()}),
    ))
    .await?;
    tracing::info!(
        postgres = %pg_listener.local_addr()?, ssh = %ssh_listener.local_addr()?, api = %api_listener.local_addr()?, store = core.store().backend(),
        config = %cfg.source, data_dir = %data_dir.display(), "sluice gateway running"
    );
    eprintln!(
        "sluice gateway: postgres on {}, ssh on {} (host key {}), API on http://{}, store {} ({})",
        pg_listener.local_addr()?,
        ssh_listener.local_addr()?,
        ssh.host_fingerprint,
        api_listener.local_addr()?,
        core.store().backend(),
        data_dir.display()
    );

    let postgres_listen = pg_listener.local_addr()?.to_string();
    tokio::spawn(pg.clone().serve(pg_listener));
    let ssh_listen = ssh_listener.local_addr()?.to_string();
    let recordings = Arc::new(crate::api::Recordings(ssh.recordings.clone()));
    tokio::spawn(ssh.gateway.clone().serve(ssh_listener));
    tokio::spawn(reload_policy_on_sighup(core.clone()));
    let tools = Arc::new(pg.mask_tools());
    let exchange = Arc::new(crate::api_identity::Exchange {
        verifier: crate::oidc::Verifier::new(issuers),
        rules: trust,
        logins: Default::default(),
        postgres_listen,
        ssh_listen,
        ssh_ca: ssh.client_ca.clone(),
        ssh_host_key: ssh.host_public.clone(),
        refusals: Default::default(),
    });
    let api = axum::serve(
        api_listener,
        crate::api::router(core.clone(), tools, exchange, recordings),
    );
    tokio::select! {
        r = api => r.context("API server failed")?,
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

/// The SSH listener's parts the API needs too.
struct Ssh {
    gateway: Arc<sluice_ssh::SshGateway>,
    recordings: std::path::PathBuf,
    client_ca: Arc<sluice_ssh::keys::Authority>,
    host_public: String,
    host_fingerprint: String,
}

/// Loads (or creates) the SSH host and CA keys and prepares the listener.
fn ssh_gateway(cfg: &Config, core: &Arc<Core>, data_dir: &std::path::Path) -> Result<Ssh> {
    let key_path = |configured: &Option<std::path::PathBuf>, default: &str| match configured {
        Some(p) => cfg.resolve(p),
        None => data_dir.join(default),
    };
    let host_key =
        sluice_ssh::keys::load_or_create(&key_path(&cfg.ssh.host_key, "ssh_host_ed25519_key"))
            .context("ssh.host_key")?;
    let ca_key = sluice_ssh::keys::load_or_create(&key_path(&cfg.ssh.ca_key, "ssh_ca_key"))
        .context("ssh.ca_key")?;
    let host_public = host_key.public_key().to_openssh().context("ssh.host_key")?;
    let host_fingerprint = sluice_ssh::keys::fingerprint(host_key.public_key());
    let ca = Arc::new(sluice_ssh::keys::Authority::new(ca_key));
    let client_ca_key =
        sluice_ssh::keys::load_or_create(&key_path(&cfg.ssh.client_ca_key, "ssh_client_ca_key"))
            .context("ssh.client_ca_key")?;
    if client_ca_key.public_key() == ca.public_key() {
        anyhow::bail!("{}: ssh.client_ca_key must not be the same key as ssh.ca_key: targets trust ca_key, and client certificates must not log in to targets", cfg.source);
    }
    let client_ca = Arc::new(sluice_ssh::keys::Authority::new(client_ca_key));
    let connections: Vec<sluice_core::Connection> =
        core.connections().map(|c| (**c).clone()).collect();
    let pg_classifier = Arc::new(Classifier::new(cfg.pg_functions()?));
    let programs = sluice_ssh::classify::Programs::with_rules(cfg.ssh.programs.clone())
        .map_err(|e| anyhow::anyhow!("{}: ssh.programs: {e}", cfg.source))?
        .with_sql(Arc::new(move |sql: &str| {
            (*pg_classifier.classify(sql, false).classification).clone()
        }));
    let recordings = cfg
        .ssh
        .recordings
        .as_ref()
        .map(|p| cfg.resolve(p))
        .unwrap_or_else(|| data_dir.join("recordings"));
    let gateway = sluice_ssh::SshGateway::new(
        core.clone(),
        sluice_ssh::SshOptions {
            host_key,
            ca,
            client_ca: client_ca.clone(),
            targets: cfg.ssh_targets(&connections)?,
            programs: Arc::new(programs),
            recordings: recordings.clone(),
            max_recording: cfg.ssh.max_recording_mib.saturating_mul(1024 * 1024),
        },
    );
    Ok(Ssh {
        gateway,
        recordings,
        client_ca,
        host_public,
        host_fingerprint,
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Keeps the admin credential in the data directory valid: a missing or
/// unknown one (a fresh store, say) is replaced by a new one.
async fn ensure_admin_credential(core: &Arc<Core>, data_dir: &std::path::Path) -> Result<()> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if core.check_admin(existing.trim()).await?.is_some() {
            return Ok(());
        }
    }
    let value = core.issue_admin_token("admin").await?;
    sluice_pg::tls::write_private(&path, format!("{value}\n").as_bytes())?;
    eprintln!(
        "sluice: created the admin credential in {} (mode 0600)",
        path.display()
    );
    Ok(())
}

/// The key that makes hashed masks deterministic: from `[masking] key_file`,
/// or created (random, mode 0600) in the data directory on first start.
fn masking_key(cfg: &crate::config::Config, data_dir: &std::path::Path) -> Result<[u8; 32]> {
    let path = match &cfg.masking.key_file {
        Some(p) => cfg.resolve(p),
        None => data_dir.join("masking.key"),
    };
    let parse = |text: &str| -> Option<[u8; 32]> { hex::decode(text.trim()).ok()?.try_into().ok() };
    if let Ok(text) = std::fs::read_to_string(&path) {
        return parse(&text).with_context(|| format!("{}: expected 64 hex digits", path.display()));
    }
    if cfg.masking.key_file.is_some() {
        anyhow::bail!("cannot read the masking key {}", path.display());
    }
    let key: [u8; 32] = rand::random();
    sluice_pg::tls::write_private(&path, format!("{}\n", hex::encode(key)).as_bytes())?;
    Ok(key)
}

/// This gateway's stable identity, which names its journal in a shared store.
fn gateway_id(data_dir: &std::path::Path) -> Result<String> {
    let path = data_dir.join("gateway.id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let id = sluice_core::token::new_id("gw_");
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Re-reads the policy files on SIGHUP; an invalid file leaves the
/// previous policies in force (and says so in the log and the audit).
async fn reload_policy_on_sighup(core: Arc<Core>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match core.reload_policy("SIGHUP").await {
            Ok(p) => {
                tracing::info!(policies = p.ids.len(), digest = %p.digest, "policies reloaded")
            }
            Err(e) => tracing::error!(error = %e, "policy reload failed"),
        }
    }
}
