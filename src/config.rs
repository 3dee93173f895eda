//! The TOML configuration: gateway settings, listeners, named connections.
//! Unknown keys and bad values are errors naming the key and the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use sluice_core::detect::{Checksum, CustomDetector, Detectors, Kind};
use sluice_core::identity::TrustRule;
use sluice_core::mask::{Masker, Style};
use sluice_core::masking::{ColumnRule, Masking};
use sluice_core::review::{ApprovalRule, ReviewKind, ReviewMode, ReviewSettings};
use sluice_core::{Class, Connection, PolicyConfig, PolicySource, Secret, TargetTls};

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub postgres: PostgresSection,
    #[serde(default)]
    pub ssh: SshSection,
    #[serde(default)]
    pub connections: Vec<ConnectionSection>,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub masking: MaskingSection,
    #[serde(default)]
    pub reviews: ReviewsSection,
    #[serde(default)]
    pub identity: IdentitySection,
    /// Where the file was read from; relative paths resolve against its directory.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub source: String,
}

/// `[gateway]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default = "default_api_listen")]
    pub api_listen: String,
    /// `postgres://...` to share the store between gateways; SQLite otherwise.
    pub store: Option<String>,
    /// CA certificates (PEM) that sign the store server's certificate, for
    /// `sslmode=require` in the store URL; the system roots otherwise.
    pub store_ca_file: Option<PathBuf>,
    /// Serve the API (plain HTTP, admin credential in a header) on a
    /// non-loopback address; only behind a TLS-terminating proxy.
    #[serde(default)]
    pub api_insecure_remote: bool,
    /// Also fsync the audit journal before forwarding each command (survives
    /// power loss, at the cost of a disk flush per command).
    #[serde(default)]
    pub audit_fsync: bool,
    /// Longest lifetime a token may be issued with.
    #[serde(default = "default_max_ttl", with = "humantime_serde_compat")]
    pub max_token_ttl: Duration,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("sluice-data")
}
fn default_api_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            data_dir: default_data_dir(),
            api_listen: default_api_listen(),
            store: None,
            store_ca_file: None,
            api_insecure_remote: false,
            audit_fsync: false,
            max_token_ttl: default_max_ttl(),
        }
    }
}

/// `[reviews]`: who approves what, how long reviews live, where they are announced.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewsSection {
    /// How long a review may stay pending (a held statement waits as long).
    #[serde(default = "default_pending_ttl", with = "humantime_serde_compat")]
    pub pending_ttl: Duration,
    /// How long an approved deferred statement may wait to be run again.
    #[serde(default = "default_pending_ttl", with = "humantime_serde_compat")]
    pub approval_ttl: Duration,
    /// `auto` (hold for people, defer for agents), `hold` or `defer`.
    #[serde(default)]
    pub mode: ReviewMode,
    /// Approval rules; the first that covers a review decides it.
    #[serde(default)]
    pub rules: Vec<RuleSection>,
    /// Where review events are sent.
    #[serde(default)]
    pub webhooks: Vec<WebhookSection>,
}

fn default_pending_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}

impl Default for ReviewsSection {
    fn default() -> Self {
        ReviewsSection {
            pending_ttl: default_pending_ttl(),
            approval_ttl: default_pending_ttl(),
            mode: ReviewMode::Auto,
            rules: vec![],
            webhooks: vec![],
        }
    }
}

/// `[identity]`: identity providers whose tokens sluice verifies, and the
/// rules that turn workload tokens into sluice tokens.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    #[serde(default)]
    pub issuers: Vec<IssuerSection>,
    #[serde(default)]
    pub trust: Vec<TrustSection>,
}

/// `[[identity.issuers]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    pub name: String,
    /// The `iss` its tokens carry; discovery starts there.
    pub issuer: String,
    /// The `aud` its tokens must carry for sluice.
    pub audience: String,
    /// Where its keys are, if not found by discovery.
    pub jwks_uri: Option<String>,
    /// For people's sign-in (`sluice login`): the client registered with
    /// the provider; login is off without it.
    pub client_id: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Provider group to sluice groups.
    #[serde(default)]
    pub group_map: BTreeMap<String, Vec<String>>,
    /// Connections signed-in people may reach and delegate.
    #[serde(default)]
    pub connections: Vec<String>,
    #[serde(default = "default_session_ttl", with = "humantime_serde_compat")]
    pub session_ttl: Duration,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}
fn default_principal_claim() -> String {
    "email".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_session_ttl() -> Duration {
    Duration::from_secs(3600)
}

/// `[[identity.trust]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    pub name: String,
    /// An `[[identity.issuers]]` name.
    pub issuer: String,
    /// `workload:...`, with `{claim}` placeholders.
    pub principal: String,
    pub connections: Vec<String>,
    /// Groups the workload is in, for policy.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default = "default_trust_ttl", with = "humantime_serde_compat")]
    pub max_ttl: Duration,
    /// Claim name to a value or a list of values (globs).
    #[serde(default)]
    pub claims: BTreeMap<String, OneOrMany>,
}

fn default_trust_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}

/// A value or a list of values.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[[reviews.rules]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub name: String,
    /// Connection-name globs; all when empty.
    #[serde(default)]
    pub connections: Vec<String>,
    /// `command`, `access`; both when empty.
    #[serde(default)]
    pub kinds: Vec<ReviewKind>,
    /// Groups (from `[policy.groups]`) whose members decide.
    pub approvers: Vec<String>,
    #[serde(default = "one")]
    pub approvals: u32,
    #[serde(default)]
    pub allow_self_approval: bool,
    #[serde(default = "yes")]
    pub deny_wins: bool,
    #[serde(default = "yes")]
    pub require_reason: bool,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// `[[reviews.webhooks]]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Where events are posted.
    pub url: String,
    /// `json` (signed event) or `chat` (a chat incoming-webhook message).
    #[serde(default)]
    pub format: WebhookFormat,
    /// The HMAC key, from an environment variable or a file.
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// Where approvers act, for links in messages (the API's public URL).
    pub link_base: Option<String>,
}

/// How a webhook's body is shaped.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Chat,
}

/// `[policy]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Cedar policy files or directories; the shipped defaults when empty.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Group name to members (principal or agent names).
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
}

/// `[masking]`: how sensitive values are masked. Who sees clear values is
/// policy's decision (the `unmask` action).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MaskingSection {
    /// Style for kinds without their own: `{ style = "redact" }` (the
    /// default), `{ style = "partial", keep = 4 }`, `{ style = "hash" }`, `{ style = "null" }`.
    pub default_style: Option<Style>,
    /// Style per kind (`email`, `card`, ..., or a custom detector's name).
    #[serde(default)]
    pub styles: BTreeMap<String, Style>,
    /// The key that makes `hash` deterministic; gateways sharing a store
    /// should share it. Created in the data directory when unset.
    pub key_file: Option<PathBuf>,
    /// Columns marked sensitive whatever their values look like.
    #[serde(default)]
    pub columns: Vec<ColumnRuleSection>,
    /// Detectors of the user's own.
    #[serde(default)]
    pub detectors: Vec<DetectorSection>,
}

/// `[[masking.columns]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRuleSection {
    /// `schema.table.column`, globs allowed (`public.customers.email`, `*.*.ssn`).
    pub column: String,
    /// What it holds: a detector kind or a label of your own (`salary`).
    pub kind: String,
    /// Overrides the kind's style.
    pub style: Option<Style>,
}

/// `[[masking.detectors]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSection {
    pub name: String,
    /// A regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// `luhn` or `mod97`: matches must pass it.
    pub checksum: Option<Checksum>,
}

/// `[postgres]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    #[serde(default = "default_pg_listen")]
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Accept non-TLS sessions from loopback clients (the token then crosses in clear on loopback).
    #[serde(default)]
    pub allow_plaintext_loopback: bool,
    /// Functions and their class (`"billing.refund" = "write"`), added to
    /// and overriding the built-in table of side-effecting functions.
    #[serde(default)]
    pub functions: BTreeMap<String, String>,
}

fn default_pg_listen() -> String {
    "127.0.0.1:15432".into()
}

impl Default for PostgresSection {
    fn default() -> Self {
        PostgresSection {
            listen: default_pg_listen(),
            tls_cert: None,
            tls_key: None,
            allow_plaintext_loopback: false,
            functions: BTreeMap::new(),
        }
    }
}

/// `[ssh]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSection {
    #[serde(default = "default_ssh_listen")]
    pub listen: String,
    /// The gateway's host key (OpenSSH format); created on first start.
    pub host_key: Option<PathBuf>,
    /// The key of the authority targets trust (`TrustedUserCAKeys`); created on first start.
    pub ca_key: Option<PathBuf>,
    /// The key of the authority for client certificates; created on first start.
    pub client_ca_key: Option<PathBuf>,
    /// Where recordings are written (default: `recordings` in the data directory).
    pub recordings: Option<PathBuf>,
    /// Largest recording of one channel, in MiB; the rest is dropped (and marked).
    #[serde(default = "default_max_recording_mib")]
    pub max_recording_mib: u64,
    /// Programs added to (and overriding) the built-in program table.
    #[serde(default)]
    pub programs: Vec<sluice_ssh::classify::ProgramRule>,
}

fn default_ssh_listen() -> String {
    "127.0.0.1:2222".into()
}

fn default_max_recording_mib() -> u64 {
    256
}

impl Default for SshSection {
    fn default() -> Self {
        SshSection {
            listen: default_ssh_listen(),
            host_key: None,
            ca_key: None,
            client_ca_key: None,
            recordings: None,
            max_recording_mib: default_max_recording_mib(),
            programs: Vec::new(),
        }
    }
}

/// How the gateway logs in to an SSH target.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SshAuth {
    /// A certificate the gateway signs for each session.
    Certificate,
    /// `private_key_file`.
    Key,
    /// `password_env` or `password_file`.
    Password,
}

/// `[[connections]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSection {
    pub name: String,
    pub kind: String,
    pub address: String,
    #[serde(default)]
    pub database: Option<String>,
    pub user: String,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Present only to refuse it with a helpful message.
    password: Option<toml::Value>,
    #[serde(default)]
    pub tls: TlsMode,
    pub tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_cleartext_password: bool,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Evaluate and record policy without enforcing it.
    #[serde(default)]
    pub shadow: bool,
    /// How statements wait for review here (`auto`, `hold`, `defer`).
    pub review_mode: Option<ReviewMode>,
    /// SSH: how the gateway logs in (default: `key` with a private key
    /// file, `password` with a password, `certificate` otherwise).
    pub auth: Option<SshAuth>,
    /// SSH: the gateway's private key for the target login.
    pub private_key_file: Option<PathBuf>,
    /// SSH: the target's host keys (`ssh-ed25519 AAAA...`, as `ssh-keyscan` prints them without the host).
    #[serde(default)]
    pub host_keys: Vec<String>,
}

/// TLS toward the target.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyFull,
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

impl Config {
    /// Target settings of every SSH connection: pinned host keys and the
    /// login method, with the credential it needs.
    pub fn ssh_targets(
        &self,
        connections: &[Connection],
    ) -> Result<std::collections::HashMap<String, sluice_ssh::target::SshTarget>> {
        use sluice_ssh::target::{SshTarget, TargetAuth};
        let mut out = std::collections::HashMap::new();
        for (i, c) in self.connections.iter().enumerate() {
            if c.kind != "ssh" {
                continue;
            }
            let at = format!("{}: connections[{i}] ({:?})", self.source, c.name);
            let password = connections
                .iter()
                .find(|x| x.name == c.name)
                .and_then(|x| x.password.clone());
            let auth = c.auth.unwrap_or(if c.private_key_file.is_some() {
                SshAuth::Key
            } else if password.is_some() {
                SshAuth::Password
            } else {
                SshAuth::Certificate
            });
            let auth = match auth {
                SshAuth::Certificate => TargetAuth::Certificate,
                SshAuth::Password => TargetAuth::Password(password.ok_or_else(|| {
                    anyhow!("{at}: auth = \"password\" needs password_env or password_file")
                })?),
                SshAuth::Key => {
                    let file = c
                        .private_key_file
                        .as_ref()
                        .ok_or_else(|| anyhow!("{at}: auth = \"key\" needs private_key_file"))?;
                    let key = sluice_ssh::keys::load(&self.resolve(file))
                        .map_err(|e| anyhow!("{at}: private_key_file: {e}"))?;
                    TargetAuth::Key(std::sync::Arc::new(key))
                }
            };
            let host_keys = c
                .host_keys
                .iter()
                .map(|l| {
                    sluice_ssh::keys::parse_public(l).map_err(|e| anyhow!("{at}: host_keys: {e}"))
                })
                .collect::<Result<Vec<_>>>()?;
            out.insert(c.name.clone(), SshTarget { host_keys, auth });
        }
        Ok(out)
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut cfg: Config = toml::from_str(&text)
            .map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.source = path.display().to_string();
        cfg.validate()?;
        Ok(cfg)
    }

    /// The embedded defaults, relative to the working directory.
    pub fn embedded() -> Config {
        Config {
            source: "embedded defaults".into(),
            ..Config::default()
        }
    }

    /// Resolves a configured path against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.gateway.data_dir)
    }

    fn validate(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.connections.iter().enumerate() {
            let at = format!("{}: connections[{i}] ({:?})", self.source, c.name);
            if c.name.is_empty() {
                bail!("{}: connections[{i}].name must not be empty", self.source);
            }
            if !seen.insert(&c.name) {
                bail!("{at}: name: another connection has the same name");
            }
            if c.kind != "postgres" && c.kind != "ssh" {
                bail!(
                    "{at}: kind: unsupported kind {:?} (supported: \"postgres\", \"ssh\")",
                    c.kind
                );
            }
            if c.kind == "ssh" {
                if c.host_keys.is_empty() {
                    bail!("{at}: host_keys: pin the target's host key (the output of `ssh-keyscan -t ed25519 HOST` without the host name); the gateway connects to no unpinned SSH target");
                }
                for (k, line) in c.host_keys.iter().enumerate() {
                    sluice_ssh::keys::parse_public(line)
                        .map_err(|e| anyhow!("{at}: host_keys[{k}]: {e}"))?;
                }
            } else if c.auth.is_some() || c.private_key_file.is_some() || !c.host_keys.is_empty() {
                bail!("{at}: auth, private_key_file and host_keys apply to kind = \"ssh\" only");
            }
            if c.address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                bail!("{at}: address: expected host:port, got {:?}", c.address);
            }
            if c.password.is_some() {
                bail!("{at}: password: inline passwords are not accepted; use password_env or password_file");
            }
            if c.password_env.is_some() && c.password_file.is_some() {
                bail!("{at}: set only one of password_env and password_file");
            }
        }
        for (key, addr) in [
            ("gateway.api_listen", &self.gateway.api_listen),
            ("postgres.listen", &self.postgres.listen),
            ("ssh.listen", &self.ssh.listen),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                bail!("{}: {key}: expected ip:port, got {addr:?}", self.source);
            }
        }
        let api_ip = self
            .gateway
            .api_listen
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip());
        if api_ip.is_ok_and(|ip| !ip.is_loopback()) && !self.gateway.api_insecure_remote {
            bail!(
                "{}: gateway.api_listen: the API speaks plain HTTP and carries the admin credential; \
                 listen on a loopback address, or put it behind a TLS proxy and set api_insecure_remote = true",
                self.source
            );
        }
        if self.postgres.tls_cert.is_some() != self.postgres.tls_key.is_some() {
            bail!(
                "{}: postgres: set both tls_cert and tls_key, or neither",
                self.source
            );
        }
        Ok(())
    }

    /// The connections, with their target credentials read from env or file.
    pub fn connections(&self) -> Result<Vec<Connection>> {
        self.connections
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let at = format!("{}: connections[{i}] ({:?})", self.source, c.name);
                let password = match (&c.password_env, &c.password_file) {
                    (Some(var), None) => Some(Secret::new(std::env::var(var).map_err(|_| {
                        anyhow!("{at}: password_env: environment variable {var} is not set")
                    })?)),
                    (None, Some(file)) => {
                        let path = self.resolve(file);
                        let text = std::fs::read_to_string(&path).map_err(|e| {
                            anyhow!("{at}: password_file: cannot read {}: {e}", path.display())
                        })?;
                        Some(Secret::new(text.trim_end_matches(['\r', '\n'])))
                    }
                    _ => None,
                };
                Ok(Connection {
                    name: c.name.clone(),
                    kind: c.kind.clone(),
                    address: c.address.clone(),
                    database: c.database.clone().unwrap_or_else(|| c.name.clone()),
                    user: c.user.clone(),
                    password,
                    tls: match c.tls {
                        TlsMode::Disable => TargetTls::Disable,
                        TlsMode::Prefer => TargetTls::Prefer,
                        TlsMode::Require => TargetTls::Require,
                        TlsMode::VerifyFull => TargetTls::VerifyFull,
                    },
                    tls_ca_file: c.tls_ca_file.as_ref().map(|p| self.resolve(p)),
                    allow_cleartext_password: c.allow_cleartext_password,
                    tags: c.tags.clone(),
                    shadow: c.shadow,
                    review_mode: c.review_mode,
                })
            })
            .collect()
    }
}

impl Config {
    /// The review rules and lifetimes, checked against the groups.
    pub fn review_settings(&self) -> Result<ReviewSettings> {
        let mut rules = Vec::new();
        for (i, r) in self.reviews.rules.iter().enumerate() {
            let at = format!("{}: reviews.rules[{i}] ({:?})", self.source, r.name);
            if r.approvers.is_empty() {
                bail!("{at}: approvers: name at least one group");
            }
            for g in &r.approvers {
                if !self.policy.groups.contains_key(g) {
                    bail!("{at}: approvers: no group {g:?} in [policy.groups]");
                }
            }
            if r.approvals == 0 {
                bail!("{at}: approvals must be at least 1");
            }
            rules.push(ApprovalRule {
                name: r.name.clone(),
                connections: r.connections.clone(),
                kinds: r.kinds.clone(),
                approvers: r.approvers.clone(),
                approvals: r.approvals,
                allow_self_approval: r.allow_self_approval,
                deny_wins: r.deny_wins,
                require_reason: r.require_reason,
            });
        }
        Ok(ReviewSettings {
            rules,
            pending_ttl: self.reviews.pending_ttl,
            approval_ttl: self.reviews.approval_ttl,
            mode: self.reviews.mode,
        })
    }

    /// The trusted issuers and the trust rules, checked.
    pub fn identity(&self) -> Result<(Vec<crate::oidc::Issuer>, Vec<TrustRule>)> {
        let mut issuers: Vec<crate::oidc::Issuer> = Vec::new();
        for (i, s) in self.identity.issuers.iter().enumerate() {
            let at = format!("{}: identity.issuers[{i}] ({:?})", self.source, s.name);
            if issuers
                .iter()
                .any(|o| o.name == s.name || o.issuer == s.issuer)
            {
                bail!("{at}: another issuer has this name or issuer URL");
            }
            let loopback =
                reqwest::Url::parse(&s.issuer).is_ok_and(|u| crate::oidc::loopback_http(&u));
            if !s.issuer.starts_with("https://") && !loopback {
                bail!("{at}: issuer must be an https:// URL");
            }
            if s.audience.is_empty() {
                bail!("{at}: audience must not be empty");
            }
            if s.client_id.as_deref() == Some(s.audience.as_str()) {
                bail!("{at}: audience must differ from client_id, or people's ID tokens could be exchanged as workload tokens");
            }
            for c in &s.connections {
                if !self.connections.iter().any(|k| &k.name == c) {
                    bail!("{at}: connections: no connection {c:?}");
                }
            }
            let login = match &s.client_id {
                None => None,
                Some(client_id) => {
                    let client_secret = match (&s.client_secret_env, &s.client_secret_file) {
                        (Some(var), None) => {
                            Some(Secret::new(std::env::var(var).map_err(|_| {
                                anyhow!("{at}: client_secret_env: {var} is not set")
                            })?))
                        }
                        (None, Some(file)) => {
                            let path = self.resolve(file);
                            Some(Secret::new(
                                std::fs::read_to_string(&path)
                                    .map_err(|e| {
                                        anyhow!("{at}: client_secret_file: {}: {e}", path.display())
                                    })?
                                    .trim_end_matches(['\r', '\n']),
                            ))
                        }
                        _ => None,
                    };
                    if s.session_ttl.is_zero() || s.session_ttl > self.gateway.max_token_ttl {
                        bail!("{at}: session_ttl must be between 1s and gateway.max_token_ttl");
                    }
                    Some(crate::oidc::Login {
                        client_id: client_id.clone(),
                        client_secret,
                        scopes: s.scopes.clone(),
                        principal_claim: s.principal_claim.clone(),
                        groups_claim: s.groups_claim.clone(),
                        group_map: s.group_map.clone(),
                        connections: s.connections.clone(),
                        session_ttl: s.session_ttl,
                    })
                }
            };
            issuers.push(crate::oidc::Issuer {
                name: s.name.clone(),
                issuer: s.issuer.clone(),
                audience: s.audience.clone(),
                jwks_uri: s.jwks_uri.clone(),
                login,
            });
        }
        let mut rules = Vec::new();
        for (i, t) in self.identity.trust.iter().enumerate() {
            let at = format!("{}: identity.trust[{i}] ({:?})", self.source, t.name);
            if !issuers.iter().any(|s| s.name == t.issuer) {
                bail!("{at}: issuer: no [[identity.issuers]] named {:?}", t.issuer);
            }
            if t.claims.is_empty() {
                bail!("{at}: claims: name at least one condition (for GitHub, the repository or its owner): without one, every token of the issuer would match");
            }
            if !t.principal.starts_with("workload:") {
                bail!("{at}: principal must start with \"workload:\" (workload identities never pass for people)");
            }
            for c in &t.connections {
                if !self.connections.iter().any(|k| &k.name == c) {
                    bail!("{at}: connections: no connection {c:?}");
                }
            }
            if t.max_ttl.is_zero() || t.max_ttl > self.gateway.max_token_ttl {
                bail!("{at}: max_ttl must be between 1s and gateway.max_token_ttl");
            }
            rules.push(TrustRule {
                name: t.name.clone(),
                issuer: t.issuer.clone(),
                claims: t
                    .claims
                    .iter()
                    .map(|(k, v)| {
                        let values = match v {
                            OneOrMany::One(s) => vec![s.clone()],
                            OneOrMany::Many(l) => l.clone(),
                        };
                        (k.clone(), values)
                    })
                    .collect(),
                principal: t.principal.clone(),
                connections: t.connections.clone(),
                groups: t.groups.clone(),
                max_ttl: t.max_ttl,
            });
        }
        Ok((issuers, rules))
    }

    /// The webhooks with their signing keys read.
    pub fn webhooks(&self) -> Result<Vec<(WebhookSection, Secret)>> {
        self.reviews
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let at = format!("{}: reviews.webhooks[{i}]", self.source);
                if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                    bail!("{at}: url must be http:// or https://");
                }
                let secret = match (&w.secret_env, &w.secret_file) {
                    (Some(var), None) => std::env::var(var).map_err(|_| {
                        anyhow!("{at}: secret_env: environment variable {var} is not set")
                    })?,
                    (None, Some(file)) => {
                        let path = self.resolve(file);
                        std::fs::read_to_string(&path)
                            .map_err(|e| {
                                anyhow!("{at}: secret_file: cannot read {}: {e}", path.display())
                            })?
                            .trim_end_matches(['\r', '\n'])
                            .to_string()
                    }
                    _ => bail!("{at}: set secret_env or secret_file: receivers verify the signature with it"),
                };
                if secret.len() < 16 {
                    bail!("{at}: the secret must be at least 16 characters");
                }
                Ok((w.clone(), Secret::new(secret)))
            })
            .collect()
    }

    /// Where policies come from and the groups they use.
    pub fn policy_config(&self) -> PolicyConfig {
        PolicyConfig {
            source: if self.policy.files.is_empty() {
                PolicySource::Default
            } else {
                PolicySource::Files(self.policy.files.iter().map(|p| self.resolve(p)).collect())
            },
            groups: self.policy.groups.clone(),
        }
    }

    /// The masking configuration, checked; `key` makes hashes deterministic.
    pub fn masking(&self, key: [u8; 32]) -> Result<Masking> {
        let m = &self.masking;
        let custom = m
            .detectors
            .iter()
            .map(|d| {
                CustomDetector::new(&d.name, &d.pattern, d.checksum)
                    .map_err(|e| anyhow!("{}: [[masking.detectors]]: {e}", self.source))
            })
            .collect::<Result<Vec<_>>>()?;
        let styles = m.styles.iter().map(|(k, s)| (Kind::named(k), *s)).collect();
        let columns = m
            .columns
            .iter()
            .map(|c| {
                ColumnRule::new(&c.column, Kind::named(&c.kind), c.style)
                    .map_err(|e| anyhow!("{}: [[masking.columns]]: {e}", self.source))
            })
            .collect::<Result<Vec<_>>>()?;
        let masker = Masker::new(
            Detectors::new(custom),
            styles,
            m.default_style.unwrap_or(Style::Redact),
            key,
        );
        Ok(Masking::new(masker, columns))
    }

    /// The `[postgres.functions]` table, with its classes checked.
    pub fn pg_functions(&self) -> Result<std::collections::HashMap<String, Class>> {
        self.postgres
            .functions
            .iter()
            .map(|(name, class)| {
                let class: Class = class.parse().map_err(|e| {
                    anyhow!("{}: [postgres.functions] \"{name}\": {e}", self.source)
                })?;
                Ok((name.clone(), class))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, text)?;
        Config::load(&path)
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let e = load_str("[gateway]\nbogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("sluice.toml") && e.contains("bogus"), "{e}");
        let e = load_str("[[connections]]\nname='a'\nkind='postgres'\naddress='h:1'\nuser='u'\ntls='sometimes'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sometimes") && e.contains("tls"), "{e}");
        let e = load_str(
            "[[connections]]\nname='a'\nkind='postgres'\naddress='h:1'\nuser='u'\npassword='x'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("inline passwords"), "{e}");
        let e =
            load_str("[[connections]]\nname='a'\nkind='postgres'\naddress='nohost'\nuser='u'\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("address"), "{e}");
    }

    #[test]
    fn a_remote_plaintext_api_needs_an_explicit_opt_in() {
        let e = load_str("[gateway]\napi_listen = '0.0.0.0:8080'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_listen") && e.contains("plain HTTP"), "{e}");
        assert!(
            load_str("[gateway]\napi_listen = '0.0.0.0:8080'\napi_insecure_remote = true\n")
                .is_ok()
        );
    }

    #[test]
    fn quickstart_example_parses() {
        let cfg = Config::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/quickstart.toml"
        )))
        .unwrap();
        assert_eq!(cfg.connections[0].name, "shop");
        assert_eq!(
            cfg.connections[0].tags.get("env").map(String::as_str),
            Some("prod")
        );
    }
}
