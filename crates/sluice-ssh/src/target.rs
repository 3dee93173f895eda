//! The gateway's side toward a target: an SSH client that accepts only the
//! host keys pinned in the config and logs in with what the gateway holds.

use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use sluice_core::{Connection, Secret};

use crate::keys::{fingerprint, Authority, UserCert};

/// How the gateway logs in to a target.
pub enum TargetAuth {
    /// A password it holds.
    Password(Secret),
    /// A private key it holds.
    Key(Arc<PrivateKey>),
    /// A certificate its own authority signs for each session, for targets
    /// whose `TrustedUserCAKeys` lists it: no target credential exists.
    Certificate,
}

/// One SSH connection's target settings.
pub struct SshTarget {
    /// The only host keys the target may present.
    pub host_keys: Vec<PublicKey>,
    /// The login method.
    pub auth: TargetAuth,
}

/// Why the target could not be reached; shown to the client.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target presented a key that is not pinned.
    #[error("the target presented host key {0}, which is not pinned for this connection; refusing to connect")]
    HostKey(String),
    /// Login was refused.
    #[error("the target refused the gateway's login as \"{0}\"")]
    Login(String),
    /// Anything else (network, protocol).
    #[error("cannot reach the target: {0}")]
    Other(String),
}

/// The client handler: checks the target's host key against the pins.
pub struct Pinned {
    keys: Vec<PublicKey>,
    presented: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            // Host certificates are not configured; only pinned keys count.
            PublicKeyOrCertificate::Certificate(c) => {
                *self.presented.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("a host certificate for {}", c.key_id()));
                return Ok(false);
            }
        };
        let ok = self.keys.iter().any(|k| k.key_data() == key.key_data());
        if !ok {
            *self.presented.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint(key));
        }
        Ok(ok)
    }
}

/// An authenticated connection to a target.
pub type TargetHandle = client::Handle<Pinned>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The client configuration toward targets.
pub fn client_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        // Sessions live as long as the client's; the client's own keepalives
        // cross the gateway as channel traffic.
        inactivity_timeout: None,
        window_size: 8 * 1024 * 1024,
        maximum_packet_size: 65535,
        nodelay: true,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(crate::CIPHERS),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Connects and logs in as the connection's `user`. `label` names the
/// session in a gateway-signed certificate, for the target's own logs.
pub async fn connect(
    conn: &Connection,
    target: &SshTarget,
    ca: &Authority,
    config: Arc<client::Config>,
    label: &str,
) -> Result<TargetHandle, TargetError> {
    let presented = Arc::new(std::sync::Mutex::new(None));
    let handler = Pinned {
        keys: target.host_keys.clone(),
        presented: presented.clone(),
    };
    let connecting = client::connect(config, conn.address.as_str(), handler);
    let mut handle = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            if let Some(fp) = presented.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(TargetError::HostKey(fp));
            }
            return Err(TargetError::Other(e.to_string()));
        }
        Err(_) => return Err(TargetError::Other("timed out".into())),
    };
    let user = conn.user.as_str();
    let other = |e: russh::Error| TargetError::Other(e.to_string());
    let result = match &target.auth {
        TargetAuth::Password(p) => handle
            .authenticate_password(user, p.expose())
            .await
            .map_err(other)?,
        TargetAuth::Key(key) => {
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(other)?
                .flatten();
            handle
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                .await
                .map_err(other)?
        }
        TargetAuth::Certificate => {
            // A fresh key for every session: nothing reusable outlives it.
            let key = crate::keys::new_key();
            let principals = [conn.user.clone()];
            let cert = ca
                .sign_user(
                    key.public_key(),
                    &UserCert {
                        key_id: label,
                        principals: &principals,
                        valid_for: Duration::from_secs(120),
                        // The gateway asks for a terminal or a forwarding
                        // only when policy allowed it.
                        extensions: &["permit-port-forwarding", "permit-pty"],
                    },
                )
                .map_err(|e| TargetError::Other(e.to_string()))?;
            handle
                .authenticate_openssh_cert(user, Arc::new(key), cert)
                .await
                .map_err(other)?
        }
    };
    if !result.success() {
        return Err(TargetError::Login(user.to_string()));
    }
    Ok(handle)
}
