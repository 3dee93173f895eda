//! A named target connection: where the gateway connects and with what
//! credential. Protocol adapters read the fields that concern them.

use std::collections::BTreeMap;

use crate::Secret;

/// TLS toward the target, with libpq's meaning of each mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTls {
    /// Never use TLS.
    Disable,
    /// Use TLS when the target offers it, without verifying its certificate.
    Prefer,
    /// Require TLS, without verifying the certificate.
    Require,
    /// Require TLS and verify the chain and the host name.
    VerifyFull,
}

/// A named connection from the configuration.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The name clients select it by (the PostgreSQL `dbname`).
    pub name: String,
    /// Protocol kind, such as `postgres`.
    pub kind: String,
    /// Target `host:port`.
    pub address: String,
    /// Target database name.
    pub database: String,
    /// Login on the target.
    pub user: String,
    /// The target credential, held only by the gateway.
    pub password: Option<Secret>,
    /// TLS mode toward the target.
    pub tls: TargetTls,
    /// Extra CA certificates (PEM) to trust in `verify-full` mode.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Send the password in cleartext when the target asks, even without
    /// `verify-full` TLS (where a man in the middle could ask for it).
    pub allow_cleartext_password: bool,
    /// Free-form tags such as `env = "prod"`, used by policy.
    pub tags: BTreeMap<String, String>,
    /// Evaluate and record policy decisions without enforcing them.
    pub shadow: bool,
    /// How commands wait for review here; the gateway's default when unset.
    pub review_mode: Option<crate::review::ReviewMode>,
}

impl Connection {
    /// The host part of the address, for TLS server-name checks.
    pub fn host(&self) -> &str {
        match self.address.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => &self.address,
        }
    }
}
